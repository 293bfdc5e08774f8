//! The compiled workflow the engine runs: names checked, durations parsed,
//! expressions compiled. Built only by `dsl::validate`.

use chrono::Duration;
use indexmap::IndexMap;

use super::expr::Expr;
use super::model::{FieldSpec, Outcome};

#[derive(Debug, Clone)]
pub struct WorkflowDef {
    pub name: String,
    pub label: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub inputs: IndexMap<String, FieldSpec>,
    pub data: IndexMap<String, FieldSpec>,
    /// Computes the business key outside events correlate on.
    pub correlation: Option<Expr>,
    /// How long each event type is kept when it arrives early.
    pub keep_events_for: IndexMap<String, Duration>,
    /// The declared payload fields of event types, checked at the door.
    pub event_payloads: IndexMap<String, IndexMap<String, FieldSpec>>,
    pub schedules: Vec<ScheduleDef>,
    pub start: String,
    pub states: IndexMap<String, StateDef>,
}

#[derive(Debug, Clone, Default)]
pub struct StateDef {
    pub enter: Vec<Action>,
    pub exit: Vec<Action>,
    /// Transitions by event type, tried in order.
    pub on: IndexMap<String, Vec<TransitionDef>>,
    pub timers: Vec<TimerDef>,
    pub on_cancel: Vec<Action>,
    pub final_outcome: Option<Outcome>,
    /// A final state where the instance may end keeping money it was paid, and why.
    pub keeps_payment: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TransitionDef {
    pub goto: Option<String>,
    pub when: Option<Expr>,
    pub actions: Vec<Action>,
    /// The event is refused with this reason; nothing changes.
    pub refuse: Option<Expr>,
}

#[derive(Debug, Clone)]
pub enum Due {
    After(Duration),
    At(Expr),
    /// Fires at each time of a cron expression, re-armed after each firing.
    Every(Box<super::CronSpec>),
}

/// A schedule that starts instances.
#[derive(Debug, Clone)]
pub struct ScheduleDef {
    pub cron: super::CronSpec,
    /// The (checked, normalised) input of each started instance.
    pub input: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct TimerDef {
    pub due: Due,
    pub goto: Option<String>,
    pub actions: Vec<Action>,
}

/// What an action evaluates: every checked action implements it.
pub trait ActionExprs {
    /// The expressions the action evaluates.
    fn exprs(&self) -> Vec<&Expr>;
}

macro_rules! action_enum {
    ($($name:ident => $variant:ident($spec:ty, $action:ty) check $check:path, run $run:path, $doc:literal;)*) => {
        /// A checked action; the kinds are listed once, in `crate::kinds`,
        /// and each kind's behaviour lives in `engine::actions`.
        #[derive(Debug, Clone)]
        pub enum Action {
            $($variant($action),)*
        }

        impl Action {
            /// The expressions the action evaluates.
            pub fn exprs(&self) -> Vec<&Expr> {
                match self {
                    $(Action::$variant(action) => ActionExprs::exprs(action),)*
                }
            }
        }
    };
}
crate::step_kinds!(action_enum);

/// Asks a party to pay an amount or a bill.
#[derive(Debug, Clone)]
pub struct PayAction {
    /// The payment's name in the workflow.
    pub key: String,
    pub amount: Option<Expr>,
    pub bill: Option<Expr>,
    pub description: Expr,
    /// The `party` input who pays.
    pub payer: String,
    pub scene: super::model::PayScene,
    pub expires_in: Duration,
}

/// Refunds a payment of the instance.
#[derive(Debug, Clone)]
pub struct RefundAction {
    /// The `key` of the payment to refund.
    pub payment: Option<String>,
    pub amount: Option<Expr>,
    pub reason: Option<Expr>,
    /// The 医保 part the hospital refunded through the insurance bureau.
    pub insurance: Option<Expr>,
}

/// How long an order stays payable unless the workflow says otherwise.
pub const DEFAULT_PAY_EXPIRES_IN: Duration = Duration::minutes(30);

/// Starts a child instance.
#[derive(Debug, Clone)]
pub struct StartAction {
    pub workflow: String,
    pub input: Vec<(String, Expr)>,
}

#[derive(Debug, Clone)]
pub struct SetAction {
    pub fields: Vec<(String, Expr)>,
}

/// The channels a message can go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The built-in web inbox (`GET /api/v1/inbox/{party_id}`).
    Inbox,
    /// A signed POST to the hospital's or hotel's own system
    /// (`--webhook-url`), with the effect key as `Idempotency-Key`.
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Inbox, Channel::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Inbox => "inbox",
            Channel::Webhook => "webhook",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SendAction {
    /// The `party` input the message goes to.
    pub to: String,
    pub template: String,
    pub channels: Vec<Channel>,
    pub purpose: Option<String>,
    /// The retry policy written in the file, if any (else the runtime's default).
    pub retry: Option<crate::domain::RetryPolicy>,
}

/// How long an early correlated event is kept unless the workflow says otherwise.
pub const DEFAULT_KEEP_EVENTS_FOR: Duration = Duration::hours(1);

impl ActionExprs for SetAction {
    fn exprs(&self) -> Vec<&Expr> {
        self.fields.iter().map(|(_, e)| e).collect()
    }
}

impl ActionExprs for SendAction {
    fn exprs(&self) -> Vec<&Expr> {
        Vec::new()
    }
}

impl ActionExprs for StartAction {
    fn exprs(&self) -> Vec<&Expr> {
        self.input.iter().map(|(_, e)| e).collect()
    }
}

impl ActionExprs for PayAction {
    fn exprs(&self) -> Vec<&Expr> {
        [
            self.amount.as_ref(),
            self.bill.as_ref(),
            Some(&self.description),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl ActionExprs for RefundAction {
    fn exprs(&self) -> Vec<&Expr> {
        [
            self.amount.as_ref(),
            self.reason.as_ref(),
            self.insurance.as_ref(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl WorkflowDef {
    /// Whether state `name` handles events of `event_type`.
    pub fn handles(&self, name: &str, event_type: &str) -> bool {
        self.states.get(name).is_some_and(|s| {
            s.on.contains_key(event_type)
                || (event_type == crate::domain::events::CANCEL && s.final_outcome.is_none())
        })
    }

    pub fn state(&self, name: &str) -> Option<&StateDef> {
        self.states.get(name)
    }

    /// Every `(from, event label, to)` edge, for graphs and reachability.
    pub fn edges(&self) -> Vec<(&str, String, &str)> {
        let mut edges = Vec::new();
        for (name, state) in &self.states {
            for (event, transitions) in &state.on {
                for transition in transitions {
                    if let Some(target) = &transition.goto {
                        let label = match &transition.when {
                            Some(guard) => format!("{event} [{}]", guard.source),
                            None => event.clone(),
                        };
                        edges.push((name.as_str(), label, target.as_str()));
                    }
                }
            }
            for timer in &state.timers {
                if let Some(target) = &timer.goto {
                    let label = match &timer.due {
                        Due::After(duration) => format!("after {}", super::graph::human(*duration)),
                        Due::At(expr) => format!("at {}", expr.source),
                        Due::Every(cron) => format!("every {}", cron.source),
                    };
                    edges.push((name.as_str(), label, target.as_str()));
                }
            }
        }
        edges
    }
}

#[cfg(test)]
mod tests {
    use crate::dsl::{validate, Catalog};

    const FLOW: &str = r#"
name: edges
inputs:
  patient: party
  fee: money
data:
  n: { type: integer, default: 0 }
start: open
states:
  open:
    enter:
      - set: { n: data.n + 1 }
      - send: { to: patient, template: note }
      - start: { workflow: other, input: { who: patient.id } }
      - pay: { key: reg, amount: fee, description: "'挂号'", payer: patient }
    on:
      payment.succeeded:
        - when: data.n > 1
          goto: paid
        - goto: open
      cancel: { refuse: "'being paid'" }
    timers:
      - after: 1h
        goto: closed
  paid:
    enter:
      - refund: { payment: reg, amount: "'1.00'", reason: "'退'" }
    on:
      refund.succeeded: closed
      cancel: { refuse: "'being refunded'" }
  closed: { final: cancelled }
"#;

    #[test]
    fn a_definition_knows_its_edges_what_each_state_handles_and_what_its_actions_read() {
        let (def, diagnostics) = validate("edges.yaml", FLOW, &Catalog::with_templates(["note"]));
        assert_eq!(diagnostics, vec![]);
        let def = def.unwrap_or_else(|| panic!("no definition"));
        let mut edges: Vec<(String, String, String)> = def
            .edges()
            .into_iter()
            .map(|(from, label, to)| (from.to_owned(), label, to.to_owned()))
            .collect();
        edges.sort();
        let expected: Vec<(String, String, String)> = [
            ("open", "after 1h", "closed"),
            ("open", "payment.succeeded", "open"),
            ("open", "payment.succeeded [data.n > 1]", "paid"),
            ("paid", "refund.succeeded", "closed"),
        ]
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect();
        assert_eq!(edges, expected);
        assert!(def.handles("open", "payment.succeeded"));
        assert!(!def.handles("open", "refund.succeeded"));
        assert!(
            def.handles("paid", "cancel"),
            "cancel reaches every active state"
        );
        assert!(!def.handles("closed", "cancel"));
        assert!(!def.handles("nowhere", "cancel"));
        let reads = |state: &str| -> Vec<Vec<String>> {
            def.states[state]
                .enter
                .iter()
                .map(|a| a.exprs().iter().map(|e| e.source.clone()).collect())
                .collect()
        };
        assert_eq!(
            reads("open"),
            vec![
                vec!["data.n + 1".to_owned()],
                vec![],
                vec!["patient.id".to_owned()],
                vec!["fee".to_owned(), "'挂号'".to_owned()],
            ]
        );
        assert_eq!(
            reads("paid"),
            vec![vec!["'1.00'".to_owned(), "'退'".to_owned()]]
        );
    }
}

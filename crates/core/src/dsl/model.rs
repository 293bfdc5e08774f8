//! The workflow file as written: serde types that mirror the YAML one to
//! one. They carry no meaning beyond shape; `dsl::validate` turns them into
//! a `WorkflowDef`. The JSON Schema (`o2flow schema`) is derived from these
//! types, so the schema and the parser cannot drift apart.

use std::borrow::Cow;
use std::fmt;

use indexmap::IndexMap;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// One workflow: a state machine over typed inputs and instance data.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WorkflowFile {
    /// Machine name, snake_case, unique per tenant: `follow_up_reminder`.
    pub name: Option<String>,
    /// A version label for people (`"2026.11"`); the server numbers versions itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionLabel>,
    /// A title shown in the console: `复诊提醒 / Follow-up reminder`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Typed inputs given when an instance starts. Write `name: type` or
    /// `name: { type, optional, default, values, description }`.
    #[serde(default)]
    pub inputs: IndexMap<String, FieldSpec>,
    /// Instance data: fields that actions (`set`) change while the flow runs.
    #[serde(default)]
    pub data: IndexMap<String, FieldSpec>,
    /// A CEL expression over the inputs giving the instance's business key
    /// (an order, bill or booking number), by which outside events find it:
    /// `prescription_id`, or `patient.id + "/" + department`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
    /// Settings per event type: how long an event that arrives before any
    /// instance waits for it is kept.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub events: IndexMap<String, EventSpec>,
    /// Schedules that start instances: `- { cron: "0 0 8 * * *", input: {…} }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleSpec>,
    /// The state every instance starts in.
    pub start: Option<String>,
    /// The states, by name.
    #[serde(default)]
    pub states: IndexMap<String, StateSpec>,
}

/// A version label may be written as text or as a number (`1.2`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum VersionLabel {
    Text(String),
    Number(serde_json::Number),
}

impl fmt::Display for VersionLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionLabel::Text(text) => f.write_str(text),
            VersionLabel::Number(number) => write!(f, "{number}"),
        }
    }
}

/// A schedule that starts an instance at every time its cron expression
/// names. Redeploying the workflow replaces its schedules.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// `sec min hour day month weekday [year]`: `0 0 8 * * *` is 08:00 daily.
    pub cron: String,
    /// An IANA time zone; default Asia/Shanghai.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The input of each started instance, checked against `inputs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Settings of one event type.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EventSpec {
    /// How long a correlated event is kept when nothing waits for it yet
    /// (default 1h): a payment callback that beats the state change is
    /// delivered when the instance gets there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_for: Option<String>,
    /// The fields the event carries, typed as inputs are (`amount: money`,
    /// `critical: boolean`): an event whose payload does not match is
    /// refused at the door (`422 invalid_payload`, field by field), and
    /// expressions may read only these fields of `event.payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<IndexMap<String, FieldSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The value types of inputs and data fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    String,
    Integer,
    Boolean,
    /// Yuan written as a decimal string (`"15.00"`), held as integer fen.
    Money,
    /// An RFC 3339 date and time: `2026-11-23T09:30:00+08:00`.
    Datetime,
    /// A duration literal: `15m`, `7d`, `1h30m`.
    Duration,
    /// One of the `values` listed beside it.
    Enum,
    /// A person reachable by channels: `{ id, name, phone, email, openid, time_zone }`.
    Party,
    /// A bill: `{ items: [{name, amount}], insurance: {pooled_fund, personal_account,
    /// other_funds, self_pay}, add: [{type, amount}], reduce: [...] }`, amounts in
    /// yuan as quoted decimals; refused unless it adds up.
    Bill,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Integer => "integer",
            ValueType::Boolean => "boolean",
            ValueType::Money => "money",
            ValueType::Datetime => "datetime",
            ValueType::Duration => "duration",
            ValueType::Enum => "enum",
            ValueType::Party => "party",
            ValueType::Bill => "bill",
        }
    }
}

/// An input or data field: `string`, or `{ type: string, optional: true }`.
#[derive(Debug, Clone, Serialize)]
pub struct FieldSpec {
    #[serde(rename = "type")]
    pub ty: ValueType,
    /// An optional field may be left out; it is then `null` unless it has a default.
    #[serde(default)]
    pub optional: bool,
    /// The value used when the field is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// The allowed values of an `enum` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// An input or data field written in full.
#[derive(Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct FieldSpecFull {
    #[serde(rename = "type")]
    ty: ValueType,
    /// An optional field may be left out; it is then `null` unless it has a default.
    #[serde(default)]
    optional: bool,
    /// The value used when the field is not given.
    #[serde(default)]
    default: Option<serde_json::Value>,
    /// The allowed values of an `enum` field.
    #[serde(default)]
    values: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
}

impl JsonSchema for FieldSpec {
    fn schema_name() -> Cow<'static, str> {
        "FieldSpec".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let short = generator.subschema_for::<ValueType>();
        let full = generator.subschema_for::<FieldSpecFull>();
        json_schema!({
            "description": "A type name such as `string`, or `{ type, optional, default, values, description }`.",
            "anyOf": [short, full]
        })
    }
}

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a type name (string, integer, boolean, money, datetime, duration, enum, party) or a map with `type`")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<FieldSpec, E> {
                let ty = ValueType::deserialize(de::value::StrDeserializer::<E>::new(value))?;
                Ok(FieldSpec {
                    ty,
                    optional: false,
                    default: None,
                    values: None,
                    description: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldSpec, A::Error> {
                let full = FieldSpecFull::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FieldSpec {
                    ty: full.ty,
                    optional: full.optional,
                    default: full.default,
                    values: full.values,
                    description: full.description,
                })
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}

/// The outcome a final state records on the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    Cancelled,
    Expired,
    NoShow,
    Rejected,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Cancelled => "cancelled",
            Outcome::Expired => "expired",
            Outcome::NoShow => "no_show",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        [
            Outcome::Completed,
            Outcome::Cancelled,
            Outcome::Expired,
            Outcome::NoShow,
            Outcome::Rejected,
            Outcome::Failed,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == text)
    }
}

/// One state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StateSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Actions run, in order, every time the state is entered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enter: Vec<ActionSpec>,
    /// Actions run, in order, every time the state is left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit: Vec<ActionSpec>,
    /// Transitions by event type: `payment.succeeded: paid`, or
    /// `{ goto, when, actions }`, or a list of those tried in order.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub on: IndexMap<String, Handlers>,
    /// Timers armed on entry and disarmed on exit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timers: Vec<TimerSpec>,
    /// Actions run when the instance is cancelled while in this state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_cancel: Vec<ActionSpec>,
    /// Makes the state final, with this outcome.
    #[serde(rename = "final", default, skip_serializing_if = "Option::is_none")]
    pub final_outcome: Option<Outcome>,
    /// On a final state other than `completed`: why the instance may end
    /// here keeping money it was paid (`"no-show: the night is charged"`).
    /// Without it, an instance that ends holding money not refunded opens
    /// a `money_held` incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeps_payment: Option<String>,
}

/// What an event does in a state: one target state, one transition, or a
/// list of guarded transitions tried in order (the first whose `when` holds wins).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Handlers {
    Target(String),
    One(TransitionSpec),
    Many(Vec<TransitionSpec>),
}

impl<'de> Deserialize<'de> for Handlers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HandlersVisitor;
        impl<'de> Visitor<'de> for HandlersVisitor {
            type Value = Handlers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a state name, a transition `{ goto, when, actions }`, or a list of transitions")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Handlers, E> {
                Ok(Handlers::Target(value.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Handlers, A::Error> {
                TransitionSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(Handlers::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Handlers, A::Error> {
                Vec::<TransitionSpec>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(Handlers::Many)
            }
        }
        deserializer.deserialize_any(HandlersVisitor)
    }
}

/// A transition. Without `goto` it is internal: its actions run and the
/// state is neither left nor re-entered.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TransitionSpec {
    /// The target state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goto: Option<String>,
    /// A guard: a CEL expression that must be true for this transition to be taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Actions run between leaving the source and entering the target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionSpec>,
    /// Refuses the event: a CEL expression giving the reason, answered
    /// `409 refused` with nothing changed (`cancel: { refuse: "'已取药'" }`).
    /// Not with `goto` or `actions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse: Option<ExprText>,
}

/// A timer: fires once, `after` a duration from entry or `at` a computed time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TimerSpec {
    /// A duration literal from entry: `15m`, `7d`, `1h30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// A CEL expression giving a timestamp, e.g. `visit_ended_at + days(7)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// A cron expression: the timer fires at each of its times while the
    /// state lasts (`0 0 9 * * *`: 09:00 every day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// The time zone of `every`; default Asia/Shanghai.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The state to go to when the timer fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goto: Option<String>,
    /// Actions run when the timer fires.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionSpec>,
}

/// A CEL expression written where a value goes: a string, or a plain YAML
/// `true`, `3` or `1.5`, which is the CEL literal of the same value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ExprText(pub String);

impl JsonSchema for ExprText {
    fn schema_name() -> Cow<'static, str> {
        "ExprText".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A CEL expression (`data.count + 1`, `'text'`), or a plain boolean or number.",
            "type": ["string", "boolean", "number"]
        })
    }
}

impl<'de> Deserialize<'de> for ExprText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ExprVisitor;
        impl Visitor<'_> for ExprVisitor {
            type Value = ExprText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CEL expression, a boolean or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExprText, E> {
                Ok(ExprText(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ExprText, E> {
                Ok(ExprText(format!("{v:?}")))
            }
        }
        deserializer.deserialize_any(ExprVisitor)
    }
}

macro_rules! action_spec_enum {
    ($($name:ident => $variant:ident($spec:ty, $action:ty) check $check:path, run $run:path, $doc:literal;)*) => {
        /// One action of a state, transition or timer, run in order.
        // The kinds are listed once, in `crate::kinds`.
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ActionSpec {
            $(#[doc = $doc] $variant($spec),)*
        }
    };
}
crate::step_kinds!(action_spec_enum);

/// Where the payer pays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayScene {
    /// Inside WeChat (the Official Account page): needs the payer's `openid`.
    #[default]
    Jsapi,
    /// A QR code shown on a PC, kiosk or poster (`code_url`).
    Native,
    /// A mobile browser outside WeChat.
    H5,
}

impl PayScene {
    pub fn as_str(self) -> &'static str {
        match self {
            PayScene::Jsapi => "jsapi",
            PayScene::Native => "native",
            PayScene::H5 => "h5",
        }
    }
}

/// `pay: { amount: fee, description: "'挂号费'", payer: patient, expires_in: 15m }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PaySpec {
    /// The payment's name in this workflow (default `payment`): `refund`
    /// names it, events carry it as `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What to pay: a `money` input (`fee`) or yuan text (`"'15.00'"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<ExprText>,
    /// Or a `bill` input (`bill`): the payer pays its self-paid part
    /// plus additions minus reductions; 医保 settles the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill: Option<ExprText>,
    /// What the payer sees on the order (at most 127 characters): a CEL expression.
    pub description: ExprText,
    /// The `party` input who pays.
    pub payer: String,
    /// `jsapi` (default), `native` or `h5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<PayScene>,
    /// How long the order stays payable (default 30m, 1m to 7d); after it
    /// the order is queried, closed if unpaid, and the flow gets `payment.expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// `refund: { amount: "'5.00'", reason: "'号源取消'" }`; every field optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RefundSpec {
    /// The `key` of the `pay` to refund; default: this instance's latest
    /// paid payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<String>,
    /// How much: a `money` value or yuan text; default everything not yet refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<ExprText>,
    /// Why (shown to the payer; at most 80 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ExprText>,
    /// For a 医保 payment: what the hospital refunded through the insurance
    /// bureau, `{ pooled_fund, personal_account, other_funds }` (money values
    /// or yuan text), reported to WeChat Pay with this refund's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insurance: Option<ExprText>,
}

/// `start: { workflow: follow_up_reminder, input: { patient: patient, department: "'心内科'" } }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StartSpec {
    /// The name of a workflow deployed for the same tenant.
    pub workflow: String,
    /// The child's input: each value is a CEL expression over this instance.
    #[serde(default)]
    pub input: IndexMap<String, ExprText>,
}

/// `send: { to: patient, template: follow_up_reminder }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SendSpec {
    /// The name of a `party` input.
    pub to: String,
    /// A directory under `templates/` with `title.txt.tera` and `body.txt.tera`.
    pub template: String,
    /// Channels to try, in order. Only `inbox` (the built-in web inbox) exists yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Why the message is sent (`reminder`, `transactional`), for consent and quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// How a failed delivery is retried; defaults: 5 attempts, 1s doubling up to 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

/// `retry: { max_attempts: 3, initial: 10s, max: 10m, multiplier: 2 }`;
/// every field optional. When the attempts run out the flow gets
/// `action.failed`; a state that does not handle it opens an incident.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included (1 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The wait before the second attempt: a duration literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<String>,
    /// The longest wait between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    /// Each wait is the previous one times this (1 to 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<u32>,
}

/// Schema for the whole file, with the `$schema` header editors use.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<WorkflowFile>();
    let mut value = serde_json::to_value(schema).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "title".into(),
            serde_json::Value::String("o2flow workflow".into()),
        );
    }
    value
}

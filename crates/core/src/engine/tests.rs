//! Engine rules, one test each, on the real follow-up flow and a small
//! inline flow.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value as Json};

use super::*;
use crate::dsl::{validate, Catalog, WorkflowDef};

fn follow_up() -> WorkflowDef {
    let source = include_str!("../../../../workflows/follow_up_reminder.yaml");
    let (def, diagnostics) = validate(
        "follow_up_reminder.yaml",
        source,
        &Catalog::with_templates(["follow_up_reminder"]),
    );
    assert_eq!(diagnostics, vec![]);
    def.unwrap_or_else(|| panic!("no definition"))
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0)
        .single()
        .unwrap_or_default()
}

fn input() -> Json {
    json!({
        "patient": {"id": "p1", "name": "张三", "time_zone": "Asia/Shanghai"},
        "department": "心内科",
        "visit_ended_at": "2026-11-20T15:30:00+08:00"
    })
}

struct Stored {
    state: String,
    status: Status,
    input: Json,
    data: Json,
    entry_seq: i64,
    revision: i64,
}

impl Stored {
    fn view(&self) -> Instance<'_> {
        Instance {
            id: "i1",
            state: &self.state,
            status: self.status,
            input: &self.input,
            data: &self.data,
            entry_seq: self.entry_seq,
            revision: self.revision,
            business_key: None,
            parent_id: None,
            time_zone: chrono_tz::Asia::Shanghai,
        }
    }

    fn apply(&mut self, transition: &Transition) {
        self.state = transition.state.clone();
        self.status = transition.status;
        self.data = transition.data.clone();
        self.entry_seq = transition.entry_seq;
        self.revision += 1;
    }
}

fn started(def: &WorkflowDef) -> (Stored, Transition) {
    let Started {
        input, transition, ..
    } = start(
        def,
        "i1",
        &input(),
        None,
        None,
        now(),
        chrono_tz::Asia::Shanghai,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stored = Stored {
        state: transition.state.clone(),
        status: transition.status,
        input,
        data: transition.data.clone(),
        entry_seq: transition.entry_seq,
        revision: 1,
    };
    (stored, transition)
}

fn named(event_type: &str) -> Event {
    Event::Named {
        event_type: event_type.into(),
        payload: json!({}),
    }
}

#[test]
fn start_enters_the_start_state_and_arms_its_timer_at_ten_local_time() {
    let def = follow_up();
    let (stored, transition) = started(&def);
    assert_eq!(stored.state, "waiting");
    assert_eq!(stored.status, Status::Active);
    assert_eq!(stored.data, json!({"reminders_sent": 0}));
    // Visit ended 2026-11-20 15:30 +08:00; 7 days later at 10:00 Shanghai = 02:00 UTC.
    let due = Utc.with_ymd_and_hms(2026, 11, 27, 2, 0, 0).single();
    assert_eq!(
        transition
            .timers
            .iter()
            .map(|t| Some(t.due_at))
            .collect::<Vec<_>>(),
        vec![due]
    );
    assert!(transition.effects.is_empty());
}

#[test]
fn start_refuses_bad_input_listing_every_problem() {
    let def = follow_up();
    let error = start(
        &def,
        "i1",
        &json!({"patient": {"name": "x"}, "colour": "red", "visit_ended_at": "yesterday"}),
        None,
        None,
        now(),
        chrono_tz::Asia::Shanghai,
    )
    .err();
    let Some(Error::InvalidInput(problems)) = error else {
        panic!("expected invalid input, got {error:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        vec!["colour", "patient", "department", "visit_ended_at"]
    );
}

#[test]
fn a_due_timer_moves_to_reminding_and_plans_one_send_with_a_deterministic_key() {
    let def = follow_up();
    let (mut stored, transition) = started(&def);
    let timer = &transition.timers[0];
    let fired = step(
        &def,
        &stored.view(),
        &Event::Timer {
            entry_seq: timer.entry_seq,
            index: 0,
        },
        timer.due_at,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    stored.apply(&fired);
    assert_eq!(stored.state, "reminding");
    assert!(fired.cancel_timers);
    assert_eq!(stored.data, json!({"reminders_sent": 1}));
    assert_eq!(fired.effects.len(), 1);
    assert_eq!(fired.effects[0].key, "i1/2/enter/0");
    let EffectKind::Send(send) = &fired.effects[0].kind else {
        panic!("expected a send")
    };
    assert_eq!(send.template, "follow_up_reminder");
    assert_eq!(send.to.id, "p1");
    assert_eq!(fired.timers.len(), 1);
    assert_eq!(fired.timers[0].due_at, timer.due_at + Duration::days(14));
}

#[test]
fn a_stale_timer_is_a_recorded_no_op() {
    let def = follow_up();
    let (stored, _) = started(&def);
    let result = step(
        &def,
        &stored.view(),
        &Event::Timer {
            entry_seq: 0,
            index: 0,
        },
        now(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!result.applied);
    assert_eq!(result.state, "waiting");
    assert_eq!(result.history[0].kind, "event_ignored");
}

#[test]
fn an_unhandled_event_is_refused_and_names_what_the_state_handles() {
    let def = follow_up();
    let (stored, _) = started(&def);
    let error = step(&def, &stored.view(), &named("payment.succeeded"), now()).err();
    assert_eq!(
        error,
        Some(Error::EventNotHandled {
            state: "waiting".into(),
            event_type: "payment.succeeded".into(),
            handled: vec!["registration.booked".into(), "consent.withdrawn".into()],
        })
    );
}

#[test]
fn every_final_state_absorbs_late_events_and_cancels_as_recorded_no_ops() {
    let def = follow_up();
    for (event, expected) in [
        ("registration.booked", "completed"),
        ("consent.withdrawn", "cancelled"),
    ] {
        let (mut stored, _) = started(&def);
        let done =
            step(&def, &stored.view(), &named(event), now()).unwrap_or_else(|e| panic!("{e}"));
        stored.apply(&done);
        assert_eq!(stored.status.as_str(), expected);
        for late in [
            named("registration.booked"),
            Event::Cancel { reason: None },
            Event::Timer {
                entry_seq: stored.entry_seq,
                index: 0,
            },
        ] {
            let result = step(&def, &stored.view(), &late, now()).unwrap_or_else(|e| panic!("{e}"));
            assert!(!result.applied);
            assert_eq!(result.state, stored.state);
            assert_eq!(result.status, stored.status);
            assert!(result.effects.is_empty() && result.timers.is_empty());
        }
    }
}

#[test]
fn cancel_ends_the_instance_and_drops_its_timers() {
    let def = follow_up();
    let (stored, _) = started(&def);
    let result = step(
        &def,
        &stored.view(),
        &Event::Cancel {
            reason: Some("visit voided".into()),
        },
        now(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.status, Status::Final(crate::dsl::Outcome::Cancelled));
    assert!(result.cancel_timers);
    assert_eq!(result.state, "waiting");
}

const STAY: &str = r#"
name: stay
data:
  checked_in: { type: boolean, default: false }
start: booked
states:
  booked:
    on:
      checked_in:
        actions: [ { set: { checked_in: true } } ]
      cancel:
        when: "!data.checked_in"
        goto: refunding
      checked_out: done
  refunding:
    on:
      refund.succeeded: cancelled
  cancelled: { final: cancelled }
  done: { final: completed }
"#;

fn stay() -> (WorkflowDef, Stored) {
    let (def, diagnostics) = validate("stay.yaml", STAY, &Catalog::default());
    assert_eq!(diagnostics, vec![]);
    let def = def.unwrap_or_else(|| panic!("no definition"));
    let Started { transition, .. } = start(
        &def,
        "i1",
        &json!({}),
        None,
        None,
        now(),
        chrono_tz::Asia::Shanghai,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stored = Stored {
        state: transition.state.clone(),
        status: transition.status,
        input: json!({}),
        data: transition.data.clone(),
        entry_seq: transition.entry_seq,
        revision: 1,
    };
    (def, stored)
}

#[test]
fn a_state_that_handles_cancel_decides_what_cancelling_does() {
    let (def, mut stored) = stay();
    let cancel = Event::Cancel {
        reason: Some("guest changed plans".into()),
    };
    let result = step(&def, &stored.view(), &cancel, now()).unwrap_or_else(|e| panic!("{e}"));
    // Not the default end: the flow goes to refund first.
    assert_eq!(result.state, "refunding");
    assert_eq!(result.status, Status::Active);
    assert!(result.history.iter().any(|h| h.kind == "event"
        && h.detail["type"] == "cancel"
        && h.detail["payload"]["reason"] == "guest changed plans"));
    stored.apply(&result);
    // In `refunding` nothing handles cancel: the default applies.
    let result =
        step(&def, &stored.view(), &named("cancel"), now()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.status, Status::Final(crate::dsl::Outcome::Cancelled));
    assert_eq!(result.state, "refunding");
}

#[test]
fn a_cancel_guard_can_refuse_the_cancel() {
    let (def, mut stored) = stay();
    let checked_in =
        step(&def, &stored.view(), &named("checked_in"), now()).unwrap_or_else(|e| panic!("{e}"));
    stored.apply(&checked_in);
    let refused = step(&def, &stored.view(), &Event::Cancel { reason: None }, now());
    assert!(
        matches!(&refused, Err(Error::GuardRejected { event_type, .. }) if event_type == "cancel"),
        "{refused:?}"
    );
    // The named form of cancel takes the same path.
    let refused = step(&def, &stored.view(), &named("cancel"), now());
    assert!(
        matches!(refused, Err(Error::GuardRejected { .. })),
        "{refused:?}"
    );
}

#[test]
fn a_named_cancel_event_cancels_a_state_that_does_not_handle_it() {
    let def = follow_up();
    let (stored, _) = started(&def);
    assert!(def.handles(&stored.state, "cancel"));
    let result =
        step(&def, &stored.view(), &named("cancel"), now()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.status, Status::Final(crate::dsl::Outcome::Cancelled));
    assert!(result.history.iter().any(|h| h.kind == "cancel_requested"));
}

const GUARDED: &str = r#"
name: guarded
inputs:
  limit: { type: integer, default: 2 }
data:
  count: { type: integer, default: 0 }
start: counting
states:
  counting:
    on:
      tick:
        - when: data.count + 1 >= limit
          goto: done
          actions: [ { set: { count: data.count + 1 } } ]
        - actions: [ { set: { count: data.count + 1 } } ]
      reset:
        goto: counting
    timers:
      - after: 1h
        goto: timed_out
  done: { final: completed }
  timed_out: { final: expired }
"#;

fn guarded() -> WorkflowDef {
    let (def, diagnostics) = validate("guarded.yaml", GUARDED, &Catalog::default());
    assert_eq!(diagnostics, vec![]);
    def.unwrap_or_else(|| panic!("no definition"))
}

#[test]
fn guards_pick_the_first_transition_that_holds_and_internal_transitions_keep_the_state() {
    let def = guarded();
    let Started {
        input,
        transition: first,
        ..
    } = start(
        &def,
        "g",
        &json!({}),
        None,
        None,
        now(),
        chrono_tz::Asia::Shanghai,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut stored = Stored {
        state: first.state.clone(),
        status: first.status,
        input,
        data: first.data.clone(),
        entry_seq: first.entry_seq,
        revision: 1,
    };
    let tick = step(&def, &stored.view(), &named("tick"), now()).unwrap_or_else(|e| panic!("{e}"));
    stored.apply(&tick);
    assert_eq!(
        (stored.state.as_str(), stored.data["count"].as_i64()),
        ("counting", Some(1))
    );
    assert!(
        !tick.cancel_timers,
        "an internal transition keeps the state's timers"
    );
    let tick = step(&def, &stored.view(), &named("tick"), now()).unwrap_or_else(|e| panic!("{e}"));
    stored.apply(&tick);
    assert_eq!(
        (stored.state.as_str(), stored.status.as_str()),
        ("done", "completed")
    );
}

#[test]
fn a_self_transition_re_enters_and_re_arms_timers() {
    let def = guarded();
    let Started {
        input,
        transition: first,
        ..
    } = start(
        &def,
        "g",
        &json!({}),
        None,
        None,
        now(),
        chrono_tz::Asia::Shanghai,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stored = Stored {
        state: first.state.clone(),
        status: first.status,
        input,
        data: first.data.clone(),
        entry_seq: first.entry_seq,
        revision: 1,
    };
    let later = now() + Duration::minutes(30);
    let reset =
        step(&def, &stored.view(), &named("reset"), later).unwrap_or_else(|e| panic!("{e}"));
    assert!(reset.cancel_timers);
    assert_eq!(reset.entry_seq, 2);
    assert_eq!(
        reset.timers,
        vec![TimerSet {
            entry_seq: 2,
            index: 0,
            due_at: later + Duration::hours(1)
        }]
    );
}

proptest! {
    /// No sequence of events, timers and cancels leaves the declared state set.
    #[test]
    fn no_event_sequence_leaves_the_declared_states(choices in proptest::collection::vec(0usize..7, 0..40)) {
        for def in [follow_up(), guarded()] {
            let Started { input, transition: first, .. } = start(&def, "p", &input_for(&def), None, None, now(), chrono_tz::Asia::Shanghai).unwrap_or_else(|e| panic!("{e}"));
            let mut stored = Stored { state: first.state.clone(), status: first.status, input, data: first.data.clone(), entry_seq: first.entry_seq, revision: 1 };
            let mut events: Vec<String> = def.states.values().flat_map(|s| s.on.keys().cloned()).collect();
            events.push("unknown.event".into());
            for choice in &choices {
                let event = match choice {
                    0 => Event::Cancel { reason: None },
                    1 => Event::Timer { entry_seq: stored.entry_seq, index: 0 },
                    2 => Event::Timer { entry_seq: stored.entry_seq - 1, index: 0 },
                    n => named(&events[n % events.len()]),
                };
                if let Ok(transition) = step(&def, &stored.view(), &event, now()) {
                    prop_assert!(def.states.contains_key(&transition.state));
                    if stored.status.is_final() {
                        prop_assert!(!transition.applied);
                    }
                    stored.apply(&transition);
                }
                prop_assert!(def.states.contains_key(&stored.state));
            }
        }
    }
}

fn input_for(def: &WorkflowDef) -> Json {
    if def.name == "follow_up_reminder" {
        input()
    } else {
        json!({})
    }
}

const PINGED: &str = r#"
name: pinged
inputs:
  patient: party
data:
  pings: { type: integer, default: 0 }
start: open
states:
  open:
    on:
      ping:
        actions:
          - set: { pings: data.pings + 1 }
          - send: { to: patient, template: pong }
      close: closed
  closed: { final: completed }
"#;

#[test]
fn each_occurrence_of_an_internal_transition_gets_its_own_effect_key_and_a_replay_the_same() {
    let (def, diagnostics) = validate("pinged.yaml", PINGED, &Catalog::with_templates(["pong"]));
    assert_eq!(diagnostics, vec![]);
    let def = def.unwrap_or_else(|| panic!("no definition"));
    let Started {
        input,
        transition: first,
        ..
    } = start(
        &def,
        "p",
        &json!({"patient": {"id": "p1"}}),
        None,
        None,
        now(),
        chrono_tz::Asia::Shanghai,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut stored = Stored {
        state: first.state.clone(),
        status: first.status,
        input,
        data: first.data.clone(),
        entry_seq: first.entry_seq,
        revision: 1,
    };
    let one = step(&def, &stored.view(), &named("ping"), now()).unwrap_or_else(|e| panic!("{e}"));
    let replay =
        step(&def, &stored.view(), &named("ping"), now()).unwrap_or_else(|e| panic!("{e}"));
    stored.apply(&one);
    let two = step(&def, &stored.view(), &named("ping"), now()).unwrap_or_else(|e| panic!("{e}"));
    stored.apply(&two);
    assert_eq!(stored.data["pings"], 2);
    let key = |t: &Transition| t.effects.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
    assert_eq!(key(&one), vec!["i1/1/on.ping.0@1/1".to_owned()]);
    assert_eq!(key(&replay), key(&one), "the same occurrence, the same key");
    assert_eq!(key(&two), vec!["i1/1/on.ping.0@2/1".to_owned()]);
}

#[test]
fn effects_are_stored_tagged_and_read_back_exactly() {
    use super::{EffectKind, StartChildEffect};
    let effect = EffectKind::StartChild(StartChildEffect {
        workflow: "follow_up_reminder".into(),
        input: serde_json::json!({"patient": {"id": "p-1"}}),
        parent_id: "parent".into(),
    });
    let payload = effect.payload().unwrap_or_default();
    assert_eq!(
        payload,
        r#"{"workflow":"follow_up_reminder","input":{"patient":{"id":"p-1"}},"parent_id":"parent"}"#
    );
    assert_eq!(effect.name(), "start_child");
    assert_eq!(
        EffectKind::from_stored("start_child", &payload).ok(),
        Some(effect)
    );
    // A tag no kind has, or data that does not fit, is an error.
    assert!(EffectKind::from_stored("door_key", &payload).is_err());
    assert!(EffectKind::from_stored("send", &payload).is_err());
    assert!(EffectKind::from_stored("start_child", "not json").is_err());
}

//! The step kinds' planning (`pay`, `refund`, `start`, `call`), the
//! business key, declared payloads and the small pure helpers: what the
//! mutation run over the core found untested by the core's own tests.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value as Json};

use super::*;
use crate::dsl::{validate, Catalog, FieldSpec, Outcome, WorkflowDef};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0)
        .single()
        .unwrap_or_default()
}

fn def(source: &str) -> WorkflowDef {
    let (def, diagnostics) = validate("kinds.yaml", source, &Catalog::with_templates(["note"]));
    assert_eq!(diagnostics, vec![], "{source}");
    def.unwrap_or_else(|| panic!("no definition"))
}

fn started(def: &WorkflowDef, input: &Json) -> Result<Started, Error> {
    start(
        def,
        "i1",
        input,
        None,
        None,
        now(),
        chrono_tz::Asia::Shanghai,
    )
}

/// Steps an instance that has just started, with `event`.
fn step_after_start(
    def: &WorkflowDef,
    started: &Started,
    event: &Event,
) -> Result<Transition, Error> {
    let view = Instance {
        id: "i1",
        state: &started.transition.state,
        status: started.transition.status,
        input: &started.input,
        data: &started.transition.data,
        entry_seq: started.transition.entry_seq,
        revision: 1,
        business_key: started.business_key.as_deref(),
        parent_id: None,
        time_zone: chrono_tz::Asia::Shanghai,
    };
    step(def, &view, event, now())
}

fn only_effect(transition: &Transition) -> &EffectKind {
    assert_eq!(transition.effects.len(), 1, "{:?}", transition.effects);
    &transition.effects[0].kind
}

const PAY: &str = r#"
name: pay_kinds
inputs:
  patient: party
  fee: { type: money, optional: true }
  text_fee: { type: string, optional: true }
  title: { type: string, default: "挂号费" }
start: paying
states:
  paying:
    enter:
      - pay: { key: reg, amount: "fee != null ? fee : text_fee", description: title, payer: patient, expires_in: 15m }
    on:
      payment.succeeded: paid
  paid:
    on:
      cancel:
        goto: done
        actions:
          - refund: { payment: reg, amount: "'5.00'", reason: "'号源取消'", insurance: "{'pooled_fund': '1.50', 'personal_account': 200}" }
  done: { final: cancelled }
"#;

#[test]
fn pay_plans_an_order_for_the_amount_in_fen_and_refuses_nothing_to_pay() {
    let def = def(PAY);
    let patient = json!({"id": "p1"});
    let by_money = started(&def, &json!({"patient": patient, "fee": "15.00"}))
        .unwrap_or_else(|e| panic!("{e}"));
    let EffectKind::Pay(pay) = only_effect(&by_money.transition) else {
        panic!("not a pay effect");
    };
    assert_eq!(pay.amount, 1500);
    assert_eq!(pay.name, "reg");
    assert_eq!(pay.description, "挂号费");
    assert_eq!(pay.payer.id, "p1");
    assert_eq!(pay.expires_at, now() + Duration::minutes(15));
    assert_eq!(
        pay.out_trade_no,
        business_number("O2", &by_money.transition.effects[0].key)
    );
    // Yuan text is an amount too.
    let by_text = started(&def, &json!({"patient": patient, "text_fee": "0.01"}))
        .unwrap_or_else(|e| panic!("{e}"));
    let EffectKind::Pay(pay) = only_effect(&by_text.transition) else {
        panic!("not a pay effect");
    };
    assert_eq!(pay.amount, 1);
    // Nothing to pay, or not an amount: refused.
    for input in [
        json!({"patient": patient, "text_fee": "0.00"}),
        json!({"patient": patient, "text_fee": "a lot"}),
        json!({"patient": patient}),
    ] {
        assert!(
            matches!(started(&def, &input), Err(Error::Expression(_))),
            "{input}"
        );
    }
}

#[test]
fn refund_plans_the_amount_reason_and_insurance_part_in_fen() {
    let def = def(PAY);
    let first = started(&def, &json!({"patient": {"id": "p1"}, "fee": "15.00"}))
        .unwrap_or_else(|e| panic!("{e}"));
    let paid = step_after_start(
        &def,
        &first,
        &Event::Named {
            event_type: PAYMENT_SUCCEEDED.into(),
            payload: json!({}),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let view = Instance {
        id: "i1",
        state: &paid.state,
        status: paid.status,
        input: &first.input,
        data: &paid.data,
        entry_seq: paid.entry_seq,
        revision: 2,
        business_key: None,
        parent_id: None,
        time_zone: chrono_tz::Asia::Shanghai,
    };
    let cancelled =
        step(&def, &view, &Event::Cancel { reason: None }, now()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cancelled.status, Status::Final(Outcome::Cancelled));
    let EffectKind::Refund(refund) = only_effect(&cancelled) else {
        panic!("not a refund");
    };
    assert_eq!(refund.payment.as_deref(), Some("reg"));
    assert_eq!(refund.amount, Some(500));
    assert_eq!(refund.reason.as_deref(), Some("号源取消"));
    assert_eq!(
        refund.insurance,
        Some(InsuranceRefund {
            pooled_fund: 150,
            personal_account: 200,
            other_funds: 0
        })
    );
    assert_eq!(
        refund.out_refund_no,
        business_number("R2", &cancelled.effects[0].key)
    );
    // Nothing to refund, a negative fund, no fund at all, an unknown fund: refused.
    for (amount, insurance) in [
        ("'0.00'", "null"),
        ("'5.00'", "{'pooled_fund': -1, 'personal_account': 2}"),
        ("'5.00'", "{'pooled_fund': 0}"),
        ("'5.00'", "{'dental': 100}"),
        ("'5.00'", "{'pooled_fund': true}"),
        ("'5.00'", "'1.00'"),
        ("'5.00'", "{'pooled_fund': 1.5}"),
        ("3.0 / 2.0", "null"),
    ] {
        let source = PAY
            .replace("amount: \"'5.00'\"", &format!("amount: \"{amount}\""))
            .replace(
                "insurance: \"{'pooled_fund': '1.50', 'personal_account': 200}\"",
                &format!("insurance: \"{insurance}\""),
            );
        let def = self::def(&source);
        let refused = step(&def, &view, &Event::Cancel { reason: None }, now());
        let Err(Error::Expression(message)) = refused else {
            panic!("{amount} {insurance}: {refused:?}");
        };
        // A fraction of a fen is named as what it is, not read as nothing.
        if amount.contains('/') || insurance.contains("1.5") {
            assert!(
                message.contains("a money value or yuan text"),
                "{amount} {insurance}: {message}"
            );
        }
    }
    // No insurance part: none.
    let source = PAY.replace(
        "insurance: \"{'pooled_fund': '1.50', 'personal_account': 200}\"",
        "insurance: \"null\"",
    );
    let plain = step(
        &self::def(&source),
        &view,
        &Event::Cancel { reason: None },
        now(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let EffectKind::Refund(refund) = only_effect(&plain) else {
        panic!("not a refund");
    };
    assert_eq!(refund.insurance, None);
}

const CHILD_AND_CALL: &str = r#"
name: child_and_call
inputs:
  patient: party
  slot: string
data:
  hold_id: { type: string, default: "" }
  tries: { type: integer, default: 0 }
start: asking
states:
  asking:
    enter:
      - start: { workflow: follow_up_reminder, input: { patient: patient, department: "'心内科'" } }
      - call: { endpoint: his, path: /slots/hold, body: { patient_id: patient.id, slot: slot }, result: { hold_id: hold.id } }
    on:
      done: held
  held:
    on:
      call.succeeded: confirmed
  confirmed: { final: completed }
"#;

#[test]
fn start_and_call_plan_their_effects_with_the_values_of_now() {
    let def = def(CHILD_AND_CALL);
    let first = started(&def, &json!({"patient": {"id": "p1"}, "slot": "S-1"}))
        .unwrap_or_else(|e| panic!("{e}"));
    let effects: Vec<&EffectKind> = first.transition.effects.iter().map(|e| &e.kind).collect();
    assert_eq!(effects.len(), 2, "{effects:?}");
    let EffectKind::StartChild(child) = effects[0] else {
        panic!("not a start");
    };
    assert_eq!(child.workflow, "follow_up_reminder");
    assert_eq!(child.parent_id, "i1");
    assert_eq!(child.input["patient"]["id"], json!("p1"));
    assert_eq!(child.input["department"], json!("心内科"));
    let EffectKind::Call(call) = effects[1] else {
        panic!("not a call");
    };
    assert_eq!(call.endpoint, "his");
    assert_eq!(call.path.as_deref(), Some("/slots/hold"));
    assert_eq!(call.body, json!({"patient_id": "p1", "slot": "S-1"}));
    assert_eq!(
        call.result.get("hold_id").map(String::as_str),
        Some("hold.id")
    );
}

#[test]
fn a_call_answer_fills_data_whether_or_not_the_state_handles_it() {
    let def = def(CHILD_AND_CALL);
    let first = started(&def, &json!({"patient": {"id": "p1"}, "slot": "S-1"}))
        .unwrap_or_else(|e| panic!("{e}"));
    let answered = Event::Named {
        event_type: CALL_SUCCEEDED.into(),
        payload: json!({"endpoint": "his", "fields": {"hold_id": "H-1", "undeclared": 1}}),
    };
    // `asking` does not handle it: the data is written, the state stays.
    let absorbed = step_after_start(&def, &first, &answered).unwrap_or_else(|e| panic!("{e}"));
    assert!(absorbed.applied);
    assert_eq!(absorbed.state, "asking");
    assert_eq!(absorbed.data["hold_id"], json!("H-1"));
    assert!(absorbed.data.get("undeclared").is_none());
    assert_eq!(absorbed.history[0].kind, "call_answered");
    // A value of the wrong type for its field is refused.
    let wrong = Event::Named {
        event_type: CALL_SUCCEEDED.into(),
        payload: json!({"fields": {"tries": "many"}}),
    };
    assert!(matches!(
        step_after_start(&def, &first, &wrong),
        Err(Error::InvalidPayload(_))
    ));
    // `held` handles it: the data is written and the transition taken.
    let view = Instance {
        id: "i1",
        state: "held",
        status: Status::Active,
        input: &first.input,
        data: &first.transition.data,
        entry_seq: 2,
        revision: 2,
        business_key: None,
        parent_id: None,
        time_zone: chrono_tz::Asia::Shanghai,
    };
    let taken = step(&def, &view, &answered, now()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(taken.state, "confirmed");
    assert_eq!(taken.data["hold_id"], json!("H-1"));
}

const KEYED: &str = r#"
name: keyed
correlation: patient.id
inputs:
  patient: party
start: open
states:
  open:
    on:
      cancel: closed
  closed: { final: cancelled }
"#;

#[test]
fn the_business_key_is_computed_and_a_different_one_given_is_refused() {
    let def = def(KEYED);
    let input = json!({"patient": {"id": "p-7"}});
    let computed = |given: Option<&str>| {
        start(
            &def,
            "i1",
            &input,
            given,
            None,
            now(),
            chrono_tz::Asia::Shanghai,
        )
        .map(|s| s.business_key)
    };
    assert_eq!(computed(None).ok(), Some(Some("p-7".to_owned())));
    assert_eq!(computed(Some("p-7")).ok(), Some(Some("p-7".to_owned())));
    assert!(matches!(computed(Some("p-8")), Err(Error::InvalidInput(_))));
    // A key computed empty is refused.
    let by_ward = self::def(
        &KEYED
            .replace("correlation: patient.id", "correlation: ward")
            .replace(
                "  patient: party\n",
                "  patient: party\n  ward: { type: string, default: \"\" }\n",
            ),
    );
    assert!(matches!(
        start(
            &by_ward,
            "i1",
            &input,
            None,
            None,
            now(),
            chrono_tz::Asia::Shanghai
        ),
        Err(Error::Expression(_))
    ));
    // Without `correlation`, the given key is kept as it is.
    let plain = self::def(&KEYED.replace("correlation: patient.id\n", ""));
    let given = start(
        &plain,
        "i1",
        &input,
        Some("B-1"),
        None,
        now(),
        chrono_tz::Asia::Shanghai,
    )
    .map(|s| s.business_key);
    assert_eq!(given.ok(), Some(Some("B-1".to_owned())));
}

#[test]
fn a_named_cancel_keeps_its_payload_for_the_state_that_handles_it() {
    let def = def(KEYED);
    let first = started(&def, &json!({"patient": {"id": "p-7"}})).unwrap_or_else(|e| panic!("{e}"));
    let cancelled = step_after_start(
        &def,
        &first,
        &Event::Named {
            event_type: CANCEL.into(),
            payload: json!({"insurance": {"pooled_fund": 100}}),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cancelled.state, "closed");
    let event = &cancelled.history[0].detail;
    assert_eq!(event["payload"]["insurance"], json!({"pooled_fund": 100}));
    assert_eq!(event["payload"]["reason"], Json::Null);
}

#[test]
fn declared_payloads_are_normalised_and_checked() {
    let fields: indexmap::IndexMap<String, FieldSpec> = serde_json::from_value(json!({
        "room": {"type": "string"},
        "floor": {"type": "integer", "default": 1}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let payloads: indexmap::IndexMap<_, _> =
        [("visit.called".to_owned(), fields)].into_iter().collect();
    let normalised = normalize_payload(
        &payloads,
        "visit.called",
        &json!({"room": "3", "floor": null}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(normalised, json!({"room": "3", "floor": 1}));
    let Err(Error::InvalidPayload(problems)) = normalize_payload(
        &payloads,
        "visit.called",
        &json!({"room": "3", "wing": "B"}),
    ) else {
        panic!("an undeclared field is refused");
    };
    assert_eq!(problems[0].code, "unknown_field");
    // A null payload is an empty one: the missing required field is named.
    let Err(Error::InvalidPayload(problems)) =
        normalize_payload(&payloads, "visit.called", &Json::Null)
    else {
        panic!("a missing field is refused");
    };
    assert_eq!(problems[0].field, "room");
    // An event type with no declared payload passes as it is.
    assert_eq!(
        normalize_payload(&payloads, "other", &json!({"x": 1})).ok(),
        Some(json!({"x": 1}))
    );
}

#[test]
fn statuses_business_numbers_reserved_events_and_messages() {
    assert_eq!(Status::parse("active"), Some(Status::Active));
    assert_eq!(
        Status::parse("completed"),
        Some(Status::Final(Outcome::Completed))
    );
    assert_eq!(Status::parse("paused"), None);
    // SHA-256("abc") = BA7816BF8F01CFEA414140DE5DAE2223…
    assert_eq!(
        business_number("O2", "abc"),
        "O2BA7816BF8F01CFEA414140DE5DAE22"
    );
    assert_eq!(business_number("RR", "abc").len(), 32);
    for reserved in [
        "payment.succeeded",
        "call.succeeded",
        "door_key.opened",
        "start",
        "timer",
    ] {
        assert!(is_reserved_event(reserved), "{reserved}");
    }
    for free in [
        "visit.completed",
        "cancel",
        "payment",
        "registration.booked",
    ] {
        assert!(!is_reserved_event(free), "{free}");
    }
    let error = Error::EventNotHandled {
        state: "waiting".into(),
        event_type: "ping".into(),
        handled: vec!["a".into(), "b".into()],
    };
    assert_eq!(
        error.to_string(),
        "state `waiting` does not handle `ping` (it handles: a, b)"
    );
    assert_eq!(
        crate::domain::parse_duration("2w").ok(),
        Some(Duration::days(14))
    );
    let policy = crate::domain::RetryPolicy {
        max_attempts: 3,
        initial: Duration::seconds(10),
        max: Duration::minutes(10),
        multiplier: 3,
    };
    let stored = serde_json::to_value(policy).unwrap_or_default();
    let back: crate::domain::RetryPolicy =
        serde_json::from_value(stored).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, policy);
}

#[test]
fn a_duration_input_is_a_duration_in_expressions() {
    let def = def(r#"
name: waiting
inputs:
  wait: duration
start: waiting
states:
  waiting:
    timers:
      - at: now + wait
        goto: done
  done: { final: completed }
"#);
    let first = started(&def, &json!({"wait": "2h"})).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.transition.timers.len(), 1);
    assert_eq!(
        first.transition.timers[0].due_at,
        now() + Duration::hours(2)
    );
}

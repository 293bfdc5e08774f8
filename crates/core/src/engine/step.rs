use chrono::{DateTime, Utc};
use serde_json::{json, Value as Json};

use super::actions::{self, ActionContext};
use super::scope::{self, ScopeParts};
use super::{
    Effect, EffectKind, Error, Event, HistoryEntry, InputProblem, Instance, NotifyParentEffect,
    Status, TimerSet, Transition,
};
use crate::dsl::{check_value, Action, Due, Outcome, Scope, WorkflowDef};

/// Checks a start input against the declared inputs and normalises it
/// (money to fen, datetimes to UTC, defaults filled in).
///
/// # Errors
/// Every problem at once: unknown, missing and ill-typed fields.
pub fn normalize_input(def: &WorkflowDef, input: &Json) -> Result<Json, Error> {
    normalize_fields(&def.inputs, input, &format!("an input of `{}`", def.name))
        .map_err(Error::InvalidInput)
}

/// Checks an event's payload against the fields its workflow declares for
/// it (`events: { type: { payload: {…} } }`) and normalises it as inputs
/// are; a payload of an undeclared type passes as it is.
///
/// # Errors
/// `InvalidPayload` with every problem at once.
pub fn normalize_payload(
    payloads: &indexmap::IndexMap<String, indexmap::IndexMap<String, crate::dsl::FieldSpec>>,
    event_type: &str,
    payload: &Json,
) -> Result<Json, Error> {
    match payloads.get(event_type) {
        Some(fields) => normalize_fields(
            fields,
            payload,
            &format!("a declared field of `{event_type}`"),
        )
        .map_err(Error::InvalidPayload),
        None => Ok(payload.clone()),
    }
}

fn normalize_fields(
    fields: &indexmap::IndexMap<String, crate::dsl::FieldSpec>,
    input: &Json,
    what: &str,
) -> Result<Json, Vec<InputProblem>> {
    let empty = serde_json::Map::new();
    let given = match input {
        Json::Object(map) => map,
        Json::Null => &empty,
        _ => {
            return Err(vec![InputProblem {
                field: "input".into(),
                message: "the input must be a JSON object".into(),
                code: "invalid_value",
            }])
        }
    };
    let mut problems = Vec::new();
    for name in given.keys() {
        if !fields.contains_key(name) {
            problems.push(InputProblem {
                field: name.clone(),
                message: format!(
                    "`{name}` is not {what} (declared: {})",
                    fields.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                code: "unknown_field",
            });
        }
    }
    let mut out = serde_json::Map::new();
    for (name, field) in fields {
        let value = match (given.get(name), &field.default) {
            (Some(value), _) if !value.is_null() => value,
            (_, Some(default)) => default,
            (_, None) if field.optional => {
                out.insert(name.clone(), Json::Null);
                continue;
            }
            _ => {
                problems.push(InputProblem {
                    field: name.clone(),
                    message: format!("`{name}` ({}) is required", field.ty.as_str()),
                    code: "missing_field",
                });
                continue;
            }
        };
        match check_value(field, value) {
            Ok(normal) => {
                out.insert(name.clone(), normal);
            }
            Err((code, message)) => problems.push(InputProblem {
                field: name.clone(),
                message,
                code,
            }),
        }
    }
    if problems.is_empty() {
        Ok(Json::Object(out))
    } else {
        Err(problems)
    }
}

/// Starts an instance: normalises the input, fills data defaults and
/// enters the start state. Returns the normalised input and the transition.
///
/// # Errors
/// An invalid input, or an expression that fails on entry.
pub fn start(
    def: &WorkflowDef,
    id: &str,
    input: &Json,
    business_key: Option<&str>,
    parent_id: Option<&str>,
    now: DateTime<Utc>,
    time_zone: chrono_tz::Tz,
) -> Result<Started, Error> {
    let input = normalize_input(def, input)?;
    let business_key = business_key_of(def, &input, business_key, now, time_zone)?;
    let business_key = business_key.as_deref();
    let mut data = serde_json::Map::new();
    for (name, field) in &def.data {
        let value = field
            .default
            .as_ref()
            .and_then(|d| check_value(field, d).ok())
            .unwrap_or(Json::Null);
        data.insert(name.clone(), value);
    }
    let mut run = Run {
        def,
        id,
        input: &input,
        business_key,
        parent_id,
        was_final: false,
        revision: 0,
        time_zone,
        now,
        event: json!({"type": "start", "payload": {}}),
        state: String::new(),
        status: Status::Active,
        data: Json::Object(data),
        entry_seq: 0,
        effects: Vec::new(),
        cancel_timers: false,
        timers: Vec::new(),
        history: vec![HistoryEntry {
            kind: "started",
            detail: json!({"workflow": def.name, "state": def.start}),
        }],
    };
    run.enter(&def.start)?;
    let transition = run.finish(true);
    let business_key = business_key.map(str::to_owned);
    Ok(Started {
        input,
        business_key,
        transition,
    })
}

/// A started instance: its normalised input, its business key and its first transition.
#[derive(Debug, Clone)]
pub struct Started {
    pub input: Json,
    pub business_key: Option<String>,
    pub transition: Transition,
}

/// The business key: computed by the workflow's `correlation`, or given by the caller.
fn business_key_of(
    def: &WorkflowDef,
    input: &Json,
    given: Option<&str>,
    now: DateTime<Utc>,
    time_zone: chrono_tz::Tz,
) -> Result<Option<String>, Error> {
    let Some(correlation) = &def.correlation else {
        return Ok(given.map(str::to_owned));
    };
    let instance =
        json!({"id": null, "state": def.start, "business_key": null, "workflow": def.name});
    let scope = scope::build(&ScopeParts {
        inputs: &def.inputs,
        data_fields: &def.data,
        input,
        data: &json!({}),
        event: &json!({"type": "start", "payload": {}}),
        instance: &instance,
        now,
        time_zone,
    });
    let key = match correlation.eval_json(&scope).map_err(Error::Expression)? {
        Json::String(text) if !text.is_empty() => text,
        Json::Number(number) => number.to_string(),
        other => {
            return Err(Error::Expression(format!(
                "`{}` must give a non-empty text or a number, gave {other}",
                correlation.source
            )))
        }
    };
    match given {
        Some(given) if given != key => Err(Error::InvalidInput(vec![InputProblem {
            field: "business_key".into(),
            message: format!("`{}` computes the business key from its `correlation` (`{key}` here); leave `business_key` out or send that", def.name),
            code: "invalid_value",
        }])),
        _ => Ok(Some(key)),
    }
}

use crate::domain::events::{CALL_SUCCEEDED, CANCEL};

/// Applies one event to an instance.
///
/// # Errors
/// The event is not handled in the current state, no guard holds, or an
/// expression failed. The instance must then be left unchanged.
pub fn step(
    def: &WorkflowDef,
    instance: &Instance<'_>,
    event: &Event,
    now: DateTime<Utc>,
) -> Result<Transition, Error> {
    let event_json = match event {
        Event::Named {
            event_type,
            payload,
        } => json!({"type": event_type, "payload": payload}),
        Event::Timer { entry_seq, index } => {
            json!({"type": "timer", "payload": {"entry_seq": entry_seq, "index": index}})
        }
        Event::Cancel { reason } => json!({"type": "cancel", "payload": {"reason": reason}}),
    };
    let mut run = Run {
        def,
        id: instance.id,
        input: instance.input,
        business_key: instance.business_key,
        parent_id: instance.parent_id,
        was_final: instance.status.is_final(),
        revision: instance.revision,
        time_zone: instance.time_zone,
        now,
        event: event_json.clone(),
        state: instance.state.to_owned(),
        status: instance.status,
        data: instance.data.clone(),
        entry_seq: instance.entry_seq,
        effects: Vec::new(),
        cancel_timers: false,
        timers: Vec::new(),
        history: Vec::new(),
    };
    if instance.status.is_final() {
        run.history.push(HistoryEntry {
            kind: "event_ignored",
            detail: json!({"event": event_json, "reason": format!("the instance is final ({})", instance.status.as_str())}),
        });
        return Ok(run.finish(false));
    }
    let state = def
        .state(instance.state)
        .ok_or_else(|| Error::UnknownState(instance.state.to_owned()))?;
    // Cancel is an event like any other: a state that handles `cancel` in
    // `on:` decides (guards, compensation states); elsewhere the default
    // runs the state's `on_cancel` actions and ends the instance cancelled.
    // A named `cancel` keeps its payload (a refund's 医保 part, say); the
    // payload always has `reason`, null when none was given.
    let cancel_payload = match event {
        Event::Cancel { reason } => Some(json!({"reason": reason})),
        Event::Named {
            event_type,
            payload,
        } if event_type == CANCEL => {
            let mut payload = match payload {
                Json::Object(object) => object.clone(),
                _ => serde_json::Map::new(),
            };
            payload.entry("reason").or_insert(Json::Null);
            Some(Json::Object(payload))
        }
        _ => None,
    };
    let handled_cancel;
    let event = match cancel_payload {
        Some(payload) if state.on.contains_key(CANCEL) => {
            run.event = json!({"type": CANCEL, "payload": payload});
            handled_cancel = Event::Named {
                event_type: CANCEL.to_owned(),
                payload,
            };
            &handled_cancel
        }
        Some(payload) => {
            handled_cancel = Event::Cancel {
                reason: payload
                    .get("reason")
                    .and_then(Json::as_str)
                    .map(str::to_owned),
            };
            &handled_cancel
        }
        None => event,
    };
    let event_json = run.event.clone();
    match event {
        Event::Named {
            event_type,
            payload,
        } => {
            // A `call` was answered: the fields its `result` named go into
            // data, whether or not the state handles `call.succeeded`.
            if event_type == CALL_SUCCEEDED {
                if let Some(fields) = payload.get("fields").and_then(Json::as_object) {
                    for (field, value) in fields {
                        let Some(spec) = def.data.get(field) else {
                            continue;
                        };
                        let value = crate::dsl::check_data_value(spec, value).map_err(
                            |(code, message)| {
                                Error::InvalidPayload(vec![super::InputProblem {
                                    code,
                                    field: field.clone(),
                                    message: format!(
                                        "the answer gave {value} for `{field}` ({}): {message}",
                                        spec.ty.as_str()
                                    ),
                                }])
                            },
                        )?;
                        if let Some(data) = run.data.as_object_mut() {
                            data.insert(field.clone(), value);
                        }
                    }
                }
                if !state.on.contains_key(event_type) {
                    run.history.push(HistoryEntry {
                        kind: "call_answered",
                        detail: event_json,
                    });
                    return Ok(run.finish(true));
                }
            }
            let Some(transitions) = state.on.get(event_type) else {
                return Err(Error::EventNotHandled {
                    state: instance.state.to_owned(),
                    event_type: event_type.clone(),
                    handled: state.on.keys().cloned().collect(),
                });
            };
            let scope = run.scope();
            let mut chosen = None;
            for (i, transition) in transitions.iter().enumerate() {
                let holds = match &transition.when {
                    Some(guard) => guard.eval_bool(&scope).map_err(Error::Expression)?,
                    None => true,
                };
                if holds {
                    chosen = Some((i, transition));
                    break;
                }
            }
            let Some((i, transition)) = chosen else {
                return Err(Error::GuardRejected {
                    state: instance.state.to_owned(),
                    event_type: event_type.clone(),
                });
            };
            if let Some(refuse) = &transition.refuse {
                let reason = match refuse.eval_json(&scope).map_err(Error::Expression)? {
                    Json::String(text) => text,
                    other => other.to_string(),
                };
                return Err(Error::Refused {
                    state: instance.state.to_owned(),
                    event_type: event_type.clone(),
                    reason,
                });
            }
            run.history.push(HistoryEntry {
                kind: "event",
                detail: event_json,
            });
            let site = format!("on.{event_type}.{i}");
            run.take(transition.goto.as_deref(), &transition.actions, &site)?;
        }
        Event::Timer { entry_seq, index } => {
            let timer = state.timers.get(*index);
            match timer {
                Some(timer) if *entry_seq == instance.entry_seq => {
                    run.history.push(HistoryEntry {
                        kind: "timer_fired",
                        detail: json!({"state": instance.state, "index": index}),
                    });
                    let site = format!("timer.{index}");
                    run.take(timer.goto.as_deref(), &timer.actions, &site)?;
                    // A repeating timer of a state the instance stays in is re-armed.
                    if let (Due::Every(cron), None) = (&timer.due, &timer.goto) {
                        if let Some(due_at) =
                            cron.with_default_zone(instance.time_zone).next_after(now)
                        {
                            run.history.push(HistoryEntry {
                                kind: "timer_set",
                                detail: json!({"state": instance.state, "index": index, "due_at": due_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
                            });
                            run.timers.push(TimerSet {
                                entry_seq: instance.entry_seq,
                                index: *index,
                                due_at,
                            });
                        }
                    }
                }
                _ => {
                    run.history.push(HistoryEntry {
                        kind: "event_ignored",
                        detail: json!({"event": event_json, "reason": "the timer belongs to an earlier state entry"}),
                    });
                    return Ok(run.finish(false));
                }
            }
        }
        Event::Cancel { reason } => {
            run.history.push(HistoryEntry {
                kind: "cancel_requested",
                detail: json!({"reason": reason}),
            });
            let on_cancel = state.on_cancel.clone();
            run.actions(&on_cancel, "cancel")?;
            run.cancel_timers = true;
            run.status = Status::Final(Outcome::Cancelled);
            run.history.push(HistoryEntry {
                kind: "finished",
                detail: json!({"state": run.state, "outcome": Outcome::Cancelled.as_str()}),
            });
        }
    }
    Ok(run.finish(true))
}

/// The mutable state of one step.
struct Run<'a> {
    def: &'a WorkflowDef,
    id: &'a str,
    input: &'a Json,
    business_key: Option<&'a str>,
    parent_id: Option<&'a str>,
    /// The instance was final before this step.
    was_final: bool,
    /// The revision the step is planned from (0 at start).
    revision: i64,
    /// The tenant's time zone.
    time_zone: chrono_tz::Tz,
    now: DateTime<Utc>,
    event: Json,
    state: String,
    status: Status,
    data: Json,
    entry_seq: i64,
    effects: Vec<Effect>,
    cancel_timers: bool,
    timers: Vec<TimerSet>,
    history: Vec<HistoryEntry>,
}

impl Run<'_> {
    fn scope(&self) -> Scope {
        let instance = json!({"id": self.id, "state": self.state, "business_key": self.business_key, "workflow": self.def.name});
        scope::build(&ScopeParts {
            inputs: &self.def.inputs,
            data_fields: &self.def.data,
            input: self.input,
            data: &self.data,
            event: &self.event,
            instance: &instance,
            now: self.now,
            time_zone: self.time_zone,
        })
    }

    /// Takes a transition: exit, transition actions, enter; or only the
    /// actions when it has no target.
    fn take(
        &mut self,
        goto: Option<&str>,
        transition_actions: &[Action],
        site: &str,
    ) -> Result<(), Error> {
        match goto {
            Some(target) => {
                let from = self.state.clone();
                if let Some(state) = self.def.state(&from) {
                    let exit = state.exit.clone();
                    self.actions(&exit, "exit")?;
                }
                self.cancel_timers = true;
                self.actions(transition_actions, site)?;
                self.history.push(HistoryEntry {
                    kind: "transition",
                    detail: json!({"from": from, "to": target}),
                });
                self.enter(target)
            }
            None => self.actions(transition_actions, site),
        }
    }

    fn enter(&mut self, target: &str) -> Result<(), Error> {
        let state = self
            .def
            .state(target)
            .ok_or_else(|| Error::UnknownState(target.to_owned()))?;
        self.entry_seq += 1;
        self.state = target.to_owned();
        self.history.push(HistoryEntry {
            kind: "entered",
            detail: json!({"state": target, "entry": self.entry_seq}),
        });
        let enter = state.enter.clone();
        self.actions(&enter, "enter")?;
        if let Some(outcome) = state.final_outcome {
            self.status = Status::Final(outcome);
            self.cancel_timers = true;
            self.timers.clear();
            self.history.push(HistoryEntry {
                kind: "finished",
                detail: json!({"state": target, "outcome": outcome.as_str()}),
            });
            return Ok(());
        }
        let scope = self.scope();
        for (index, timer) in state.timers.iter().enumerate() {
            let due_at = match &timer.due {
                Due::After(duration) => self.now + *duration,
                Due::At(expr) => expr.eval_time(&scope).map_err(Error::Expression)?,
                // Validation refused cron expressions that never fire.
                Due::Every(cron) => {
                    match cron.with_default_zone(self.time_zone).next_after(self.now) {
                        Some(next) => next,
                        None => continue,
                    }
                }
            };
            self.history.push(HistoryEntry {
                kind: "timer_set",
                detail: json!({"state": target, "index": index, "due_at": due_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
            });
            self.timers.push(TimerSet {
                entry_seq: self.entry_seq,
                index,
                due_at,
            });
        }
        Ok(())
    }

    fn actions(&mut self, list: &[Action], site: &str) -> Result<(), Error> {
        for (index, action) in list.iter().enumerate() {
            let scope = self.scope();
            // Entry and exit happen once per entry; anything else in an
            // entry can happen again and carries the revision it happened at.
            let key = if matches!(site, "enter" | "exit") {
                format!("{}/{}/{}/{}", self.id, self.entry_seq, site, index)
            } else {
                format!(
                    "{}/{}/{}@{}/{}",
                    self.id, self.entry_seq, site, self.revision, index
                )
            };
            let mut context = ActionContext {
                def: self.def,
                input: self.input,
                data: &mut self.data,
                scope: &scope,
                event: &self.event,
                instance_id: self.id,
                state: &self.state,
                now: self.now,
                key,
                effects: &mut self.effects,
                history: &mut self.history,
            };
            actions::run(action, &mut context)?;
        }
        Ok(())
    }

    fn finish(mut self, applied: bool) -> Transition {
        // A child that ends tells its parent, once: it can end only once.
        if let (true, false, Status::Final(outcome), Some(parent_id)) =
            (applied, self.was_final, self.status, self.parent_id)
        {
            self.effects.push(Effect {
                key: format!("{}/final", self.id),
                kind: EffectKind::NotifyParent(NotifyParentEffect {
                    parent_id: parent_id.to_owned(),
                    child_id: self.id.to_owned(),
                    workflow: self.def.name.clone(),
                    state: self.state.clone(),
                    outcome: outcome.as_str().to_owned(),
                    data: self.data.clone(),
                }),
            });
        }
        Transition {
            applied,
            state: self.state,
            status: self.status,
            data: self.data,
            entry_seq: self.entry_seq,
            effects: self.effects,
            cancel_timers: self.cancel_timers,
            timers: self.timers,
            history: self.history,
        }
    }
}

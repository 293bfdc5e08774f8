//! Strict validation: every problem in a file at once, each with file,
//! line, column, YAML path and a hint.

use std::collections::{BTreeSet, VecDeque};

use chrono::{DateTime, Duration};
use indexmap::IndexMap;

use super::cron::CronSpec;
use super::def::{
    Action, Channel, Due, PayAction, RefundAction, ScheduleDef, SendAction, SetAction, StartAction,
    StateDef, TimerDef, TransitionDef, WorkflowDef,
};
use super::diagnostic::{did_you_mean, Anchor, Diagnostic, Sink};
use super::expr::{Expr, RESERVED_NAMES};
use super::model::{
    ActionSpec, ExprText, FieldSpec, Handlers, Outcome, PaySpec, RefundSpec, RetrySpec, SendSpec,
    StartSpec, StateSpec, TimerSpec, TransitionSpec, ValueType, WorkflowFile,
};
use super::yaml::{self, Seg, YamlPath};
use crate::domain::{parse_duration, Money, Party, RetryPolicy};

/// What a workflow may refer to outside itself: the templates that exist.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub templates: BTreeSet<String>,
}

impl Catalog {
    pub fn with_templates<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Catalog {
        Catalog {
            templates: names.into_iter().map(Into::into).collect(),
        }
    }
}

/// Parses and checks one workflow file.
///
/// Returns the compiled definition when there is no problem, and every
/// problem found otherwise. `file` is only used to label diagnostics.
pub fn validate(
    file: &str,
    source: &str,
    catalog: &Catalog,
) -> (Option<WorkflowDef>, Vec<Diagnostic>) {
    let (value, map) = match yaml::load(source) {
        Ok(loaded) => loaded,
        Err(error) => {
            let duplicate = error.message.contains("duplicate");
            return (
                None,
                vec![Diagnostic::at(
                    if duplicate {
                        "duplicate_key"
                    } else {
                        "yaml_syntax"
                    },
                    file,
                    error.pos,
                    format!("the file is not valid YAML: {}", error.message),
                    Some(if duplicate {
                        "each state, input and field name may appear once; rename or merge the two"
                            .into()
                    } else {
                        "check indentation, quotes and brackets around this place".into()
                    }),
                )],
            );
        }
    };
    let mut sink = Sink::new(file, &map);
    if !value.is_object() {
        sink.push(
            "not_a_workflow",
            &YamlPath::root(),
            Anchor::Value,
            "a workflow file must be a mapping with `name`, `start` and `states`",
            Some("start from workflows/follow_up_reminder.yaml".into()),
        );
        return (None, sink.diagnostics);
    }
    let mut unknown = Vec::new();
    let parsed: Result<WorkflowFile, _> = {
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
        let deserializer = serde_ignored::Deserializer::new(&value, &mut record);
        serde_path_to_error::deserialize(deserializer)
    };
    for path in &unknown {
        let field = match path.0.last() {
            Some(Seg::Key(key)) => key.clone(),
            _ => String::new(),
        };
        sink.push(
            "unknown_field",
            path,
            Anchor::Key,
            format!("unknown field `{field}`"),
            Some(
                match did_you_mean(&field, known_fields().iter().map(String::as_str)) {
                    Some(close) => {
                        format!("did you mean `{close}`? (`o2flow schema` lists every field)")
                    }
                    None => "remove it; `o2flow schema` lists every field".to_owned(),
                },
            ),
        );
    }
    let file_spec = match parsed {
        Ok(spec) => spec,
        Err(error) => {
            let path = error_path(error.path());
            let message = error.inner().to_string();
            let (code, hint) = classify_serde_error(&message);
            sink.push(code, &path, Anchor::Value, message, hint);
            return (None, sink.diagnostics);
        }
    };
    let mut checker = Checker {
        sink,
        catalog,
        spec: &file_spec,
    };
    let def = checker.check();
    let diagnostics = checker.sink.diagnostics;
    if diagnostics.is_empty() {
        (def, diagnostics)
    } else {
        (None, diagnostics)
    }
}

/// Every field name the DSL knows, read from its JSON Schema.
fn known_fields() -> &'static Vec<String> {
    static FIELDS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        fn walk(value: &serde_json::Value, out: &mut BTreeSet<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::Object(properties)) = map.get("properties") {
                        out.extend(properties.keys().cloned());
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = BTreeSet::new();
        walk(&super::model::json_schema(), &mut out);
        out.into_iter().collect()
    });
    &FIELDS
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> YamlPath {
    use serde_ignored::Path;
    match path {
        Path::Root => YamlPath::root(),
        Path::Seq { parent, index } => ignored_path(parent).index(*index),
        Path::Map { parent, key } => ignored_path(parent).key(key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

fn error_path(path: &serde_path_to_error::Path) -> YamlPath {
    use serde_path_to_error::Segment;
    let mut out = YamlPath::root();
    for segment in path.iter() {
        out = match segment {
            Segment::Seq { index } => out.index(*index),
            Segment::Map { key } => out.key(key),
            Segment::Enum { variant } => out.key(variant),
            Segment::Unknown => out,
        };
    }
    out
}

fn classify_serde_error(message: &str) -> (&'static str, Option<String>) {
    if message.starts_with("missing field") {
        (
            "missing_field",
            Some("add the field; see `o2flow schema`".into()),
        )
    } else if message.starts_with("unknown variant") && message.contains("`set`") {
        (
            "unknown_action",
            Some("actions available now: set, send, start, pay, refund".into()),
        )
    } else if message.starts_with("unknown variant") {
        (
            "invalid_value",
            Some("use one of the values the message lists".into()),
        )
    } else {
        (
            "invalid_type",
            Some("see `o2flow schema` for the shape of this field".into()),
        )
    }
}

/// A name of a workflow, state or endpoint: lower-case letters, digits and
/// `_`, starting with a letter.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An event type: lower-case words joined by dots (`payment.succeeded`).
pub fn is_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

pub(crate) struct Checker<'a> {
    sink: Sink<'a>,
    catalog: &'a Catalog,
    spec: &'a WorkflowFile,
}

/// What a step kind's own checks use (`dsl/call.rs`).
impl Checker<'_> {
    /// Reports a problem at `path` (its value), with a hint.
    pub(crate) fn problem(
        &mut self,
        code: &'static str,
        path: &YamlPath,
        message: String,
        hint: &str,
    ) {
        self.sink
            .push(code, path, Anchor::Value, message, Some(hint.to_owned()));
    }

    /// Compiles a CEL expression and checks the names it reads.
    pub(crate) fn expr(&mut self, source: &str, path: &YamlPath) -> Option<Expr> {
        self.check_expr(source, path)
    }

    /// Whether `field` is declared under `data:`.
    pub(crate) fn is_data_field(&self, field: &str) -> bool {
        self.spec.data.contains_key(field)
    }

    /// Checks a `retry:` block.
    pub(crate) fn retry(&mut self, spec: &RetrySpec, path: &YamlPath) -> Option<RetryPolicy> {
        self.check_retry(spec, path)
    }
}

impl Checker<'_> {
    fn check(&mut self) -> Option<WorkflowDef> {
        let root = YamlPath::root();
        let name = match &self.spec.name {
            Some(name) if is_identifier(name) => name.clone(),
            Some(name) => {
                self.sink.push(
                    "invalid_name",
                    &root.key("name"),
                    Anchor::Value,
                    format!("`{name}` is not a valid workflow name"),
                    Some("use lower-case snake_case: letters, digits and `_`, starting with a letter".into()),
                );
                String::new()
            }
            None => {
                self.sink.push(
                    "missing_field",
                    &root,
                    Anchor::Value,
                    "missing field `name`",
                    Some("add `name: my_flow` at the top of the file".into()),
                );
                String::new()
            }
        };
        self.check_fields("inputs", &self.spec.inputs, true);
        self.check_fields("data", &self.spec.data, false);
        if self.spec.states.is_empty() {
            self.sink.push(
                "no_states",
                &root,
                Anchor::Value,
                "the workflow has no states",
                Some("add `states:` with at least a start state and a final state".into()),
            );
        }
        let state_names: Vec<&str> = self.spec.states.keys().map(String::as_str).collect();
        let start = match &self.spec.start {
            Some(start) => {
                if !self.spec.states.contains_key(start) && !self.spec.states.is_empty() {
                    self.unknown_state(&root.key("start"), start, &state_names);
                }
                start.clone()
            }
            None => {
                self.sink.push(
                    "missing_start",
                    &root,
                    Anchor::Value,
                    "the workflow has no start state",
                    Some(match state_names.first() {
                        Some(first) => {
                            format!("add `start: {first}` (or the state instances begin in)")
                        }
                        None => "add `start:` naming the state instances begin in".into(),
                    }),
                );
                String::new()
            }
        };
        let mut states = IndexMap::new();
        for (state_name, state) in &self.spec.states {
            let path = root.key("states").key(state_name);
            if !is_identifier(state_name) {
                self.sink.push(
                    "invalid_name",
                    &path,
                    Anchor::Key,
                    format!("`{state_name}` is not a valid state name"),
                    Some("use lower-case snake_case: letters, digits and `_`".into()),
                );
            }
            let def = self.check_state(state_name, state, &path, &state_names);
            states.insert(state_name.clone(), def);
        }
        self.check_reachability(&start);
        self.check_money(&states);
        let correlation = self
            .spec
            .correlation
            .as_ref()
            .and_then(|source| self.check_expr(source, &root.key("correlation")));
        let mut keep_events_for = IndexMap::new();
        let mut event_payloads = IndexMap::new();
        for (event, spec) in &self.spec.events {
            let path = root.key("events").key(event);
            if !is_event_name(event) {
                self.sink.push(
                    "invalid_event_name",
                    &path,
                    Anchor::Key,
                    format!("`{event}` is not a valid event type"),
                    Some(
                        "event types are lower-case words joined by dots: `payment.succeeded`"
                            .into(),
                    ),
                );
            }
            if let Some(payload) = &spec.payload {
                self.check_field_specs(&path.key("payload"), payload);
                event_payloads.insert(event.clone(), payload.clone());
            }
            if let Some(keep_for) = &spec.keep_for {
                match parse_duration(keep_for) {
                    Ok(duration) => {
                        keep_events_for.insert(event.clone(), duration);
                    }
                    Err(error) => self.sink.push(
                        "bad_duration",
                        &path.key("keep_for"),
                        Anchor::Value,
                        error.to_string(),
                        Some("write a number and a unit: 15m, 2h, 7d, 2w or 1h30m".into()),
                    ),
                }
            }
        }
        self.check_payload_reads(&states, &event_payloads);
        let schedules = self.check_schedules();
        Some(WorkflowDef {
            name,
            label: self.spec.version.as_ref().map(ToString::to_string),
            title: self.spec.title.clone(),
            description: self.spec.description.clone(),
            inputs: self.spec.inputs.clone(),
            data: self.spec.data.clone(),
            correlation,
            keep_events_for,
            event_payloads,
            schedules,
            start,
            states,
        })
    }

    fn check_fields(&mut self, section: &str, fields: &IndexMap<String, FieldSpec>, inputs: bool) {
        self.check_fields_at(&YamlPath::root().key(section), fields, inputs);
    }

    /// An event's declared payload: fields as inputs are written.
    fn check_field_specs(&mut self, base: &YamlPath, fields: &IndexMap<String, FieldSpec>) {
        self.check_fields_at(base, fields, false);
    }

    /// Expressions on a transition for an event with a declared payload
    /// (its guard, refusal and actions, and the target's enter actions)
    /// read only declared fields of `event.payload`.
    fn check_payload_reads(
        &mut self,
        states: &IndexMap<String, StateDef>,
        payloads: &IndexMap<String, IndexMap<String, FieldSpec>>,
    ) {
        for (name, state) in states {
            for (event, transitions) in &state.on {
                let Some(declared) = payloads.get(event) else {
                    continue;
                };
                let mut read = BTreeSet::new();
                for transition in transitions {
                    let target_enter = transition
                        .goto
                        .as_deref()
                        .and_then(|t| states.get(t))
                        .map(|t| t.enter.as_slice())
                        .unwrap_or_default();
                    let exprs = transition
                        .when
                        .iter()
                        .chain(transition.refuse.iter())
                        .chain(
                            transition
                                .actions
                                .iter()
                                .chain(target_enter)
                                .flat_map(Action::exprs),
                        );
                    for expr in exprs {
                        read.extend(expr.payload_fields());
                    }
                }
                for field in read.iter().filter(|f| !declared.contains_key(*f)) {
                    let hint = match did_you_mean(field, declared.keys().map(String::as_str)) {
                        Some(close) => format!("did you mean `{close}`? declared: {}", declared.keys().cloned().collect::<Vec<_>>().join(", ")),
                        None => format!("declare it under `events: {{ {event}: {{ payload: {{ {field}: <type> }} }} }}`"),
                    };
                    self.sink.push(
                        "unknown_payload_field",
                        &YamlPath::root().key("states").key(name).key("on").key(event),
                        Anchor::Key,
                        format!("`event.payload.{field}` is read here, but `{event}` does not declare `{field}`"),
                        Some(hint),
                    );
                }
            }
        }
    }

    fn check_fields_at(
        &mut self,
        base: &YamlPath,
        fields: &IndexMap<String, FieldSpec>,
        inputs: bool,
    ) {
        for (name, field) in fields {
            let path = base.key(name);
            if !is_identifier(name) {
                self.sink.push(
                    "invalid_name",
                    &path,
                    Anchor::Key,
                    format!("`{name}` is not a valid field name"),
                    Some("use lower-case snake_case so expressions can name it".into()),
                );
            }
            if inputs && RESERVED_NAMES.contains(&name.as_str()) {
                self.sink.push(
                    "reserved_name",
                    &path,
                    Anchor::Key,
                    format!("`{name}` is reserved in expressions"),
                    Some(format!(
                        "rename the input; reserved names: {}",
                        RESERVED_NAMES.join(", ")
                    )),
                );
            }
            if inputs && self.spec.data.contains_key(name) {
                // Both would be visible under the same name in templates.
                self.sink.push(
                    "duplicate_name",
                    &path,
                    Anchor::Key,
                    format!("`{name}` is both an input and a data field"),
                    Some("rename one of them".into()),
                );
            }
            match (field.ty, &field.values) {
                (ValueType::Enum, None) => self.sink.push(
                    "enum_without_values",
                    &path,
                    Anchor::Value,
                    format!("`{name}` is an enum but lists no `values`"),
                    Some("add `values: [a, b]`".into()),
                ),
                (ValueType::Enum, Some(values)) if values.is_empty() => self.sink.push(
                    "enum_without_values",
                    &path.key("values"),
                    Anchor::Value,
                    format!("`{name}` is an enum with an empty `values` list"),
                    Some("list at least one value: `values: [a, b]`".into()),
                ),
                (ty, Some(_)) if ty != ValueType::Enum => self.sink.push(
                    "values_without_enum",
                    &path.key("values"),
                    Anchor::Key,
                    format!(
                        "`values` only applies to `type: enum`, and `{name}` is a {}",
                        ty.as_str()
                    ),
                    Some("remove `values`, or make the type `enum`".into()),
                ),
                _ => {}
            }
            if let Some(default) = &field.default {
                if let Err((code, message)) = check_value(field, default) {
                    self.sink.push(
                        code,
                        &path.key("default"),
                        Anchor::Value,
                        format!(
                            "the default of `{name}` is not a valid {}: {message}",
                            field.ty.as_str()
                        ),
                        Some(example_of(field.ty).into()),
                    );
                }
            }
        }
    }

    fn unknown_state(&mut self, path: &YamlPath, target: &str, states: &[&str]) {
        let hint = match did_you_mean(target, states.iter().copied()) {
            Some(close) => format!("did you mean `{close}`? states: {}", states.join(", ")),
            None => format!("states: {}", states.join(", ")),
        };
        self.sink.push(
            "unknown_state",
            path,
            Anchor::Value,
            format!("there is no state `{target}`"),
            Some(hint),
        );
    }

    fn check_state(
        &mut self,
        name: &str,
        state: &StateSpec,
        path: &YamlPath,
        states: &[&str],
    ) -> StateDef {
        let is_final = state.final_outcome.is_some();
        if is_final && (!state.on.is_empty() || !state.timers.is_empty()) {
            let key = if state.on.is_empty() { "timers" } else { "on" };
            self.sink.push(
                "final_state_has_transitions",
                &path.key(key),
                Anchor::Key,
                format!("final state `{name}` cannot have `{key}`: final states absorb every later event"),
                Some("remove `final:` or the transitions".into()),
            );
        }
        if !is_final && state.on.is_empty() && state.timers.is_empty() {
            self.sink.push(
                "dead_end_state",
                path,
                Anchor::Key,
                format!("state `{name}` is not final and has no way out"),
                Some(
                    "add `final: completed` (or another outcome), an `on:` transition or a timer"
                        .into(),
                ),
            );
        }
        if state.on.contains_key(crate::domain::events::CANCEL) && !state.on_cancel.is_empty() {
            self.sink.push(
                "cancel_handled_twice",
                &path.key("on_cancel"),
                Anchor::Key,
                format!("state `{name}` handles `cancel` in `on:`, so its `on_cancel` actions would never run"),
                Some("move these actions into the `cancel` transition's `actions:`".into()),
            );
        }
        let enter = self.check_actions(&state.enter, &path.key("enter"));
        let exit = self.check_actions(&state.exit, &path.key("exit"));
        let on_cancel = self.check_actions(&state.on_cancel, &path.key("on_cancel"));
        let mut on = IndexMap::new();
        for (event, handlers) in &state.on {
            let event_path = path.key("on").key(event);
            if !is_event_name(event) {
                self.sink.push(
                    "invalid_event_name",
                    &event_path,
                    Anchor::Key,
                    format!("`{event}` is not a valid event type"),
                    Some(
                        "event types are lower-case words joined by dots: `payment.succeeded`"
                            .into(),
                    ),
                );
            }
            let transitions = match handlers {
                Handlers::Target(target) => {
                    if !states.contains(&target.as_str()) {
                        self.unknown_state(&event_path, target, states);
                    }
                    vec![TransitionDef {
                        goto: Some(target.clone()),
                        when: None,
                        actions: Vec::new(),
                        refuse: None,
                    }]
                }
                Handlers::One(spec) => vec![self.check_transition(spec, &event_path, states)],
                Handlers::Many(specs) => specs
                    .iter()
                    .enumerate()
                    .map(|(i, spec)| self.check_transition(spec, &event_path.index(i), states))
                    .collect(),
            };
            on.insert(event.clone(), transitions);
        }
        let timers = state
            .timers
            .iter()
            .enumerate()
            .filter_map(|(i, timer)| self.check_timer(timer, &path.key("timers").index(i), states))
            .collect();
        StateDef {
            enter,
            exit,
            on,
            timers,
            on_cancel,
            final_outcome: state.final_outcome,
            keeps_payment: state.keeps_payment.clone(),
        }
    }

    fn check_transition(
        &mut self,
        spec: &TransitionSpec,
        path: &YamlPath,
        states: &[&str],
    ) -> TransitionDef {
        if let Some(target) = &spec.goto {
            if !states.contains(&target.as_str()) {
                self.unknown_state(&path.key("goto"), target, states);
            }
        }
        if spec.refuse.is_some() && (spec.goto.is_some() || !spec.actions.is_empty()) {
            self.sink.push(
                "refuse_with_goto",
                &path.key("refuse"),
                Anchor::Key,
                "a transition that refuses the event cannot also have `goto` or `actions`",
                Some("keep `refuse` (and `when`) alone in this transition".into()),
            );
        }
        if spec.goto.is_none() && spec.actions.is_empty() && spec.refuse.is_none() {
            self.sink.push(
                "transition_does_nothing",
                path,
                Anchor::Value,
                "this transition has neither `goto` nor `actions`",
                Some("add `goto: <state>`, some `actions` or `refuse: \"'reason'\"`".into()),
            );
        }
        let refuse = spec
            .refuse
            .as_ref()
            .and_then(|source| self.check_expr(&source.0, &path.key("refuse")));
        let when = spec
            .when
            .as_ref()
            .and_then(|source| self.check_expr(source, &path.key("when")));
        TransitionDef {
            goto: spec.goto.clone(),
            when,
            actions: self.check_actions(&spec.actions, &path.key("actions")),
            refuse,
        }
    }

    fn check_timer(
        &mut self,
        spec: &TimerSpec,
        path: &YamlPath,
        states: &[&str],
    ) -> Option<TimerDef> {
        if let Some(target) = &spec.goto {
            if !states.contains(&target.as_str()) {
                self.unknown_state(&path.key("goto"), target, states);
            }
        }
        if spec.goto.is_none() && spec.actions.is_empty() {
            self.sink.push(
                "timer_does_nothing",
                path,
                Anchor::Value,
                "this timer has neither `goto` nor `actions`",
                Some("add `goto: <state>` or some `actions`".into()),
            );
        }
        let actions = self.check_actions(&spec.actions, &path.key("actions"));
        let given: Vec<&str> = [
            spec.after.as_ref().map(|_| "after"),
            spec.at.as_ref().map(|_| "at"),
            spec.every.as_ref().map(|_| "every"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if spec.time_zone.is_some() && spec.every.is_none() {
            self.sink.push(
                "timer_due",
                &path.key("time_zone"),
                Anchor::Key,
                "`time_zone` only applies to `every`",
                Some("for `at`, pass the zone to local_time(…)".into()),
            );
        }
        let due = match given.as_slice() {
            ["after"] => match spec.after.as_deref().map(parse_duration) {
                Some(Ok(duration)) => Some(Due::After(duration)),
                Some(Err(error)) => {
                    self.sink.push(
                        "bad_duration",
                        &path.key("after"),
                        Anchor::Value,
                        error.to_string(),
                        Some("write a number and a unit: 15m, 2h, 7d, 2w or 1h30m".into()),
                    );
                    None
                }
                None => None,
            },
            ["at"] => spec
                .at
                .as_deref()
                .and_then(|at| self.check_expr(at, &path.key("at")))
                .map(Due::At),
            [_] => spec
                .every
                .as_deref()
                .and_then(|every| {
                    self.check_cron(every, spec.time_zone.as_deref(), &path.key("every"))
                })
                .map(|cron| Due::Every(Box::new(cron))),
            [] => {
                self.sink.push(
                    "timer_due",
                    path,
                    Anchor::Value,
                    "a timer needs `after: <duration>`, `at: <expression>` or `every: <cron>`",
                    Some("for example `after: 7d`".into()),
                );
                None
            }
            [_, second, ..] => {
                self.sink.push(
                    "timer_due",
                    &path.key(second),
                    Anchor::Key,
                    format!("a timer takes one of `after`, `at` and `every`; this one has `{}`", given.join("` and `")),
                    Some("keep `after` for a delay from entry, `at` for a computed time, `every` for a repeating one".into()),
                );
                None
            }
        };
        due.map(|due| TimerDef {
            due,
            goto: spec.goto.clone(),
            actions,
        })
    }

    fn check_cron(
        &mut self,
        source: &str,
        zone: Option<&str>,
        path: &YamlPath,
    ) -> Option<CronSpec> {
        match CronSpec::parse(source, zone) {
            Ok(cron) => Some(cron),
            Err((code, message)) => {
                let (at, hint) = if code == "bad_time_zone" {
                    (
                        path.parent()
                            .map(|p| p.key("time_zone"))
                            .unwrap_or_else(|| path.clone()),
                        "use an IANA name such as Asia/Shanghai or Asia/Hong_Kong",
                    )
                } else if code == "cron_never_fires" {
                    (
                        path.clone(),
                        "check the day and month: this date does not occur",
                    )
                } else {
                    (
                        path.clone(),
                        "six fields: second minute hour day-of-month month day-of-week",
                    )
                };
                self.sink
                    .push(code, &at, Anchor::Value, message, Some(hint.into()));
                None
            }
        }
    }

    fn check_schedules(&mut self) -> Vec<ScheduleDef> {
        let mut out = Vec::new();
        for (i, spec) in self.spec.schedules.iter().enumerate() {
            let path = YamlPath::root().key("schedules").index(i);
            let cron = self.check_cron(&spec.cron, spec.time_zone.as_deref(), &path.key("cron"));
            let input = self.check_schedule_input(spec.input.as_ref(), &path.key("input"));
            if let (Some(cron), Some(input)) = (cron, input) {
                out.push(ScheduleDef { cron, input });
            }
        }
        out
    }

    /// A schedule's input, checked and normalised like a start request's.
    fn check_schedule_input(
        &mut self,
        input: Option<&serde_json::Value>,
        path: &YamlPath,
    ) -> Option<serde_json::Value> {
        let empty = serde_json::Map::new();
        let given = match input {
            None => &empty,
            Some(serde_json::Value::Object(map)) => map,
            Some(_) => {
                self.sink.push(
                    "invalid_type",
                    path,
                    Anchor::Value,
                    "a schedule's `input` is a map of input names to values",
                    Some("for example `input: { department: 心内科 }`".into()),
                );
                return None;
            }
        };
        let mut ok = true;
        let mut out = serde_json::Map::new();
        for name in given.keys() {
            if !self.spec.inputs.contains_key(name) {
                ok = false;
                self.sink.push(
                    "undeclared_reference",
                    &path.key(name),
                    Anchor::Key,
                    format!("`{name}` is not an input"),
                    Some("schedule inputs must be declared under `inputs:`".into()),
                );
            }
        }
        for (name, field) in &self.spec.inputs {
            let value = match (given.get(name), &field.default) {
                (Some(value), _) => value,
                (None, Some(default)) => default,
                (None, None) if field.optional => continue,
                (None, None) => {
                    ok = false;
                    self.sink.push(
                        "missing_field",
                        path,
                        Anchor::Value,
                        format!("the schedule gives no `{name}`, which has no default"),
                        Some(format!("add `{name}` to the schedule's `input`")),
                    );
                    continue;
                }
            };
            match check_value(field, value) {
                Ok(normal) => {
                    out.insert(name.clone(), normal);
                }
                Err((code, message)) => {
                    ok = false;
                    self.sink.push(
                        code,
                        &path.key(name),
                        Anchor::Value,
                        message,
                        Some(example_of(field.ty).into()),
                    );
                }
            }
        }
        ok.then_some(serde_json::Value::Object(out))
    }

    fn check_actions(&mut self, specs: &[ActionSpec], path: &YamlPath) -> Vec<Action> {
        specs
            .iter()
            .enumerate()
            .filter_map(|(i, spec)| self.check_action(spec, &path.index(i)))
            .collect()
    }

    /// Checks that `name` is a `party` input; `path` points at the reference.
    fn check_party(&mut self, name: &str, path: &YamlPath) -> bool {
        match self.spec.inputs.get(name) {
            Some(field) if field.ty == ValueType::Party => true,
            Some(field) => {
                self.sink.push(
                    "not_a_party",
                    path,
                    Anchor::Value,
                    format!("`{name}` is a {} input, not a party", field.ty.as_str()),
                    Some("messages and payments go to inputs of type `party`".into()),
                );
                false
            }
            None => {
                let parties: Vec<&str> = self
                    .spec
                    .inputs
                    .iter()
                    .filter(|(_, f)| f.ty == ValueType::Party)
                    .map(|(n, _)| n.as_str())
                    .collect();
                self.sink.push(
                    "undeclared_reference",
                    path,
                    Anchor::Value,
                    format!("`{name}` is not an input"),
                    Some(match did_you_mean(name, parties.iter().copied()) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!("party inputs: {}", list_or_none(&parties)),
                    }),
                );
                false
            }
        }
    }

    /// A literal written where a value of type `ty` goes: a bare number
    /// where money is expected is ambiguous (fen or yuan?), and text or a
    /// number of the wrong type would be stored as it is.
    fn check_literal(&mut self, source: &str, ty: ValueType, path: &YamlPath) {
        let source = source.trim();
        let number = source.parse::<f64>().ok().filter(|_| {
            source
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        });
        let text = ['\'', '"'].iter().find_map(|q| {
            source
                .strip_prefix(*q)
                .and_then(|rest| rest.strip_suffix(*q))
                .filter(|inner| !inner.contains(*q))
        });
        let boolean = matches!(source, "true" | "false");
        let problem = match ty {
            ValueType::Money if number.is_some() => Some((
                "bare_number_for_money",
                format!("`{source}` is a bare number where money is expected: fen or yuan?"),
                format!("write yuan as text (\"'{source}.00'\") or fen explicitly (`fen({source})`)"),
            )),
            ValueType::Money => text.and_then(|t| Money::parse_yuan(t).err()).map(|e| {
                (
                    "bad_money",
                    format!("`{source}` is not an amount: {e}"),
                    "write yuan as text with at most 2 decimals: \"'30.00'\"".to_owned(),
                )
            }),
            ValueType::Integer if text.is_some() || boolean || source.contains('.') && number.is_some() => Some((
                "type_mismatch",
                format!("`{source}` is not a whole number, and this field is an integer"),
                "write a whole number or an expression giving one".to_owned(),
            )),
            ValueType::Boolean if text.is_some() || number.is_some() => Some((
                "type_mismatch",
                format!("`{source}` is not true or false, and this field is a boolean"),
                "write true, false or a condition".to_owned(),
            )),
            ValueType::String | ValueType::Enum if number.is_some() || boolean => Some((
                "type_mismatch",
                format!(
                    "`{source}` is not text, and this field is {} {}",
                    if ty == ValueType::Enum { "an" } else { "a" },
                    ty.as_str()
                ),
                format!("quote text inside the expression: \"'{source}'\""),
            )),
            ValueType::Datetime => match (text, number.is_some() || boolean) {
                (Some(t), _) if DateTime::parse_from_rfc3339(t).is_err() => Some((
                    "type_mismatch",
                    format!("`{t}` is not an RFC 3339 date and time, and this field is a datetime"),
                    "write a time such as '2026-11-23T09:30:00+08:00', or compute one: now + days(1)".to_owned(),
                )),
                (_, true) => Some((
                    "type_mismatch",
                    format!("`{source}` is not a date and time, and this field is a datetime"),
                    "compute a time: now + days(1)".to_owned(),
                )),
                _ => None,
            },
            _ => None,
        };
        if let Some((code, message, hint)) = problem {
            self.sink
                .push(code, path, Anchor::Value, message, Some(hint));
        }
    }

    fn check_pay(&mut self, spec: &PaySpec, path: &YamlPath) -> Option<PayAction> {
        let mut ok = self.check_party(&spec.payer, &path.key("payer"));
        if let Some(amount) = &spec.amount {
            self.check_literal(&amount.0, ValueType::Money, &path.key("amount"));
        }
        let amount = spec
            .amount
            .as_ref()
            .map(|e| self.check_expr(&e.0, &path.key("amount")));
        let bill = spec
            .bill
            .as_ref()
            .map(|e| self.check_expr(&e.0, &path.key("bill")));
        match (&amount, &bill) {
            (Some(_), Some(_)) => {
                ok = false;
                self.sink.push(
                    "amount_and_bill",
                    &path.key("bill"),
                    Anchor::Key,
                    "a payment has an `amount` or a `bill`, not both".to_owned(),
                    Some("a bill's amount due is computed from its split".into()),
                );
            }
            (None, None) => {
                ok = false;
                self.sink.push(
                    "missing_field",
                    path,
                    Anchor::Key,
                    "`pay` needs an `amount` or a `bill`".to_owned(),
                    Some("amount: fee, or bill: bill (inputs of type money or bill)".into()),
                );
            }
            _ => {}
        }
        let description = self.check_expr(&spec.description.0, &path.key("description"));
        let expires_in = match spec.expires_in.as_deref().map(parse_duration) {
            None => Some(crate::dsl::DEFAULT_PAY_EXPIRES_IN),
            Some(Ok(d)) if d >= Duration::minutes(1) && d <= Duration::days(7) => Some(d),
            Some(Ok(_)) => {
                self.sink.push(
                    "invalid_value",
                    &path.key("expires_in"),
                    Anchor::Value,
                    "`expires_in` must be between 1m and 7d".to_owned(),
                    Some("15m for a registration fee, 1d for a prescription".into()),
                );
                None
            }
            Some(Err(error)) => {
                self.sink.push(
                    "bad_duration",
                    &path.key("expires_in"),
                    Anchor::Value,
                    error.to_string(),
                    Some("write a number and a unit: 15m, 1h".into()),
                );
                None
            }
        };
        let amount = amount.map(|a| a.ok_or(())).transpose().ok()?;
        let bill = bill.map(|b| b.ok_or(())).transpose().ok()?;
        if !ok {
            return None;
        }
        let key = spec.key.clone().unwrap_or_else(|| "payment".into());
        if !is_identifier(&key) {
            self.sink.push(
                "invalid_name",
                &path.key("key"),
                Anchor::Value,
                format!("`{key}` is not a valid payment key"),
                Some("use snake_case letters, digits and _: rx, registration_fee".into()),
            );
            return None;
        }
        Some(PayAction {
            key,
            amount,
            bill,
            description: description?,
            payer: spec.payer.clone(),
            scene: spec.scene.unwrap_or_default(),
            expires_in: expires_in?,
        })
    }

    fn check_refund(&mut self, spec: &RefundSpec, path: &YamlPath) -> Option<RefundAction> {
        let mut ok = true;
        let payment = spec.payment.clone();
        if let Some(name) = &payment {
            let keys = pay_keys(self.spec);
            if !keys.contains(name) {
                ok = false;
                let known: Vec<&str> = keys.iter().map(String::as_str).collect();
                self.sink.push(
                    "unknown_payment",
                    &path.key("payment"),
                    Anchor::Value,
                    format!("no `pay` in this workflow has key `{name}`"),
                    Some(match did_you_mean(name, known.iter().copied()) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!("payment keys: {}", list_or_none(&known)),
                    }),
                );
            }
        }
        let mut compile = |this: &mut Self, source: &Option<ExprText>, key: &str| {
            source.as_ref().and_then(|e| {
                let expr = this.check_expr(&e.0, &path.key(key));
                ok &= expr.is_some();
                expr
            })
        };
        if let Some(amount) = &spec.amount {
            self.check_literal(&amount.0, ValueType::Money, &path.key("amount"));
        }
        let amount = compile(self, &spec.amount, "amount");
        let reason = compile(self, &spec.reason, "reason");
        let insurance = compile(self, &spec.insurance, "insurance");
        ok.then_some(RefundAction {
            payment,
            amount,
            reason,
            insurance,
        })
    }

    fn check_send(&mut self, spec: &SendSpec, path: &YamlPath) -> Option<SendAction> {
        let mut ok = self.check_party(&spec.to, &path.key("to"));
        if !self.catalog.templates.contains(&spec.template) {
            ok = false;
            let known: Vec<&str> = self.catalog.templates.iter().map(String::as_str).collect();
            self.sink.push(
                "unknown_template",
                &path.key("template"),
                Anchor::Value,
                format!("there is no template `{}`", spec.template),
                Some(match did_you_mean(&spec.template, known.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!(
                        "create templates/{}/title.txt.tera and body.txt.tera (known: {})",
                        spec.template,
                        list_or_none(&known)
                    ),
                }),
            );
        }
        let mut channels = Vec::new();
        for (i, name) in spec.channels.iter().flatten().enumerate() {
            match Channel::ALL.iter().find(|c| c.as_str() == name) {
                Some(channel) => channels.push(*channel),
                None => {
                    ok = false;
                    let known: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
                    self.sink.push(
                        "unknown_channel",
                        &path.key("channels").index(i),
                        Anchor::Value,
                        format!("there is no channel `{name}`"),
                        Some(format!("channels: {}", known.join(", "))),
                    );
                }
            }
        }
        if channels.is_empty() {
            channels.push(Channel::Inbox);
        }
        let retry = spec
            .retry
            .as_ref()
            .map(|retry| self.check_retry(retry, &path.key("retry")));
        let retry = match retry {
            Some(None) => return None,
            Some(Some(policy)) => Some(policy),
            None => None,
        };
        ok.then(|| SendAction {
            to: spec.to.clone(),
            template: spec.template.clone(),
            channels,
            purpose: spec.purpose.clone(),
            retry,
        })
    }

    fn check_retry(&mut self, spec: &RetrySpec, path: &YamlPath) -> Option<RetryPolicy> {
        let mut policy = RetryPolicy::default();
        let mut ok = true;
        if let Some(attempts) = spec.max_attempts {
            if (1..=100).contains(&attempts) {
                policy.max_attempts = attempts;
            } else {
                ok = false;
                self.sink.push(
                    "invalid_value",
                    &path.key("max_attempts"),
                    Anchor::Value,
                    format!("`max_attempts` is {attempts}; it must be 1 to 100"),
                    Some("1 means no retry".into()),
                );
            }
        }
        if let Some(multiplier) = spec.multiplier {
            if (1..=10).contains(&multiplier) {
                policy.multiplier = multiplier;
            } else {
                ok = false;
                self.sink.push(
                    "invalid_value",
                    &path.key("multiplier"),
                    Anchor::Value,
                    format!("`multiplier` is {multiplier}; it must be 1 to 10"),
                    Some("1 keeps the wait constant, 2 doubles it".into()),
                );
            }
        }
        for (field, value, slot) in [
            ("initial", &spec.initial, &mut policy.initial),
            ("max", &spec.max, &mut policy.max),
        ] {
            if let Some(text) = value {
                match parse_duration(text) {
                    Ok(duration) => *slot = duration,
                    Err(error) => {
                        ok = false;
                        self.sink.push(
                            "bad_duration",
                            &path.key(field),
                            Anchor::Value,
                            error.to_string(),
                            Some("write a number and a unit: 15m, 2h, 7d, 2w or 1h30m".into()),
                        );
                    }
                }
            }
        }
        if ok && policy.initial > policy.max {
            ok = false;
            self.sink.push(
                "invalid_value",
                path,
                Anchor::Value,
                "`initial` is longer than `max`",
                Some("make `max` at least `initial`".into()),
            );
        }
        ok.then_some(policy)
    }

    fn check_expr(&mut self, source: &str, path: &YamlPath) -> Option<Expr> {
        let expr = match Expr::compile(source) {
            Ok(expr) => expr,
            Err(error) => {
                self.sink.push(
                    "expression_syntax",
                    path,
                    Anchor::Inside(error.column),
                    format!("`{source}` is not a valid CEL expression: {}", error.message),
                    Some("expressions are CEL (https://cel.dev): `data.count > 2 && patient.id != ''`".into()),
                );
                return None;
            }
        };
        let mut ok = true;
        for name in expr.variables() {
            if RESERVED_NAMES.contains(&name.as_str()) || self.spec.inputs.contains_key(&name) {
                continue;
            }
            ok = false;
            let inputs: Vec<&str> = self.spec.inputs.keys().map(String::as_str).collect();
            let hint = match did_you_mean(&name, inputs.iter().copied().chain(RESERVED_NAMES)) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!(
                    "expressions can read the inputs ({}) and {}",
                    list_or_none(&inputs),
                    RESERVED_NAMES.join(", ")
                ),
            };
            self.sink.push(
                "undeclared_reference",
                path,
                Anchor::Value,
                format!("`{name}` is not a declared input"),
                Some(hint),
            );
        }
        for field in expr.data_fields() {
            if !self.spec.data.contains_key(&field) {
                ok = false;
                self.sink.push(
                    "unknown_data_field",
                    path,
                    Anchor::Value,
                    format!("`data.{field}` is not a declared data field"),
                    Some("declare it under `data:`".into()),
                );
            }
        }
        ok.then_some(expr)
    }

    /// Walks the file as written (not the compiled states), so a transition
    /// with a mistake elsewhere still counts for reachability.
    /// The rules that keep money exact (docs/payments.md, "Money is never
    /// held by an ended instance"):
    /// - an event raised by o2flow (`payment.*`, `refund.*`, …) that it
    ///   never raises is a typo;
    /// - in a state that takes a payment, no outside event leads where
    ///   `payment.succeeded` does: it would stand in for the payment;
    /// - in every state reachable after `payment.succeeded`, a cancel
    ///   refunds, is refused, or ends in a final state that says why it
    ///   keeps the money (`keeps_payment`);
    /// - `keeps_payment` sits only on final states that are not `completed`.
    fn check_money(&mut self, states: &IndexMap<String, StateDef>) {
        use crate::domain::events::{is_reserved_event, CANCEL, RAISED_EVENTS};
        let root = YamlPath::root().key("states");
        for (name, state) in states {
            let path = root.key(name);
            for event in state.on.keys() {
                if is_reserved_event(event) && !RAISED_EVENTS.contains(&event.as_str()) {
                    let hint = match did_you_mean(event, RAISED_EVENTS.iter().copied()) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!("o2flow raises: {}", RAISED_EVENTS.join(", ")),
                    };
                    self.sink.push(
                        "unknown_raised_event",
                        &path.key("on").key(event),
                        Anchor::Key,
                        format!(
                            "o2flow never raises `{event}`, and the API refuses it from outside"
                        ),
                        Some(hint),
                    );
                }
            }
            if state.keeps_payment.is_some()
                && matches!(state.final_outcome, None | Some(Outcome::Completed))
            {
                self.sink.push(
                    "keeps_payment_not_final",
                    &path.key("keeps_payment"),
                    Anchor::Key,
                    format!("`keeps_payment` only applies to a final state that is not `completed`, and `{name}` is not one"),
                    Some("a completed instance keeps its payment anyway; remove `keeps_payment`".into()),
                );
            }
            let paid_targets: Vec<&str> = state
                .on
                .get(crate::domain::events::PAYMENT_SUCCEEDED)
                .into_iter()
                .flatten()
                .filter_map(|t| t.goto.as_deref())
                .collect();
            if state.enter.iter().any(|a| matches!(a, Action::Pay(_))) {
                for (event, transitions) in &state.on {
                    if is_reserved_event(event) || event == CANCEL {
                        continue;
                    }
                    for transition in transitions {
                        if let Some(target) = transition.goto.as_deref() {
                            if paid_targets.contains(&target) {
                                self.sink.push(
                                    "event_stands_in_for_payment",
                                    &path.key("on").key(event),
                                    Anchor::Key,
                                    format!("`{event}` leads to `{target}` as `payment.succeeded` does: anyone who can send it would skip the payment"),
                                    Some(format!("only a payment o2flow took leads to `{target}`; for money taken elsewhere (a counter), go to a state of its own")),
                                );
                            }
                        }
                    }
                }
            }
        }
        // Every state the instance can be in once it has been paid.
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut queue: VecDeque<&str> = states
            .values()
            .flat_map(|s| {
                s.on.get(crate::domain::events::PAYMENT_SUCCEEDED)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|t| t.goto.as_deref())
            .collect();
        while let Some(name) = queue.pop_front() {
            if !seen.insert(name) {
                continue;
            }
            let Some(state) = states.get(name) else {
                continue;
            };
            let on = state
                .on
                .values()
                .flatten()
                .filter_map(|t| t.goto.as_deref());
            let timers = state.timers.iter().filter_map(|t| t.goto.as_deref());
            queue.extend(on.chain(timers));
        }
        let refunds = |actions: &[Action]| actions.iter().any(|a| matches!(a, Action::Refund(_)));
        for name in seen {
            let Some(state) = states.get(name) else {
                continue;
            };
            if state.final_outcome.is_some() {
                continue;
            }
            let path = root.key(name);
            let Some(transitions) = state.on.get(CANCEL) else {
                if !refunds(&state.on_cancel) {
                    self.sink.push(
                        "cancel_keeps_payment",
                        &path,
                        Anchor::Key,
                        format!("state `{name}` comes after a payment, but a cancel there would end the instance keeping the money"),
                        Some("under `on:`, add `cancel: <a state that refunds>`, or `cancel: { refuse: \"'reason'\" }`".into()),
                    );
                }
                continue;
            };
            for transition in transitions {
                if transition.refuse.is_some() || refunds(&transition.actions) {
                    continue;
                }
                let Some(target) = transition
                    .goto
                    .as_deref()
                    .and_then(|t| states.get(t).map(|s| (t, s)))
                else {
                    continue;
                };
                let (target_name, target) = target;
                let ends_keeping = match target.final_outcome {
                    Some(Outcome::Completed) | None => false,
                    Some(_) => target.keeps_payment.is_none() && !refunds(&target.enter),
                };
                if ends_keeping {
                    self.sink.push(
                        "cancel_keeps_payment",
                        &path.key("on").key(CANCEL),
                        Anchor::Key,
                        format!("`cancel` in `{name}` ends the instance in `{target_name}` keeping the money it was paid"),
                        Some(format!("go to a state that refunds, refuse the cancel, or say why `{target_name}` keeps the money: `keeps_payment: \"…\"`")),
                    );
                }
            }
        }
    }

    fn check_reachability(&mut self, start: &str) {
        let states = &self.spec.states;
        if !states.contains_key(start) {
            return;
        }
        let mut seen = BTreeSet::from([start.to_owned()]);
        let mut queue = VecDeque::from([start.to_owned()]);
        while let Some(current) = queue.pop_front() {
            let Some(state) = states.get(&current) else {
                continue;
            };
            let mut targets: Vec<&String> = Vec::new();
            for handlers in state.on.values() {
                match handlers {
                    Handlers::Target(target) => targets.push(target),
                    Handlers::One(one) => targets.extend(one.goto.as_ref()),
                    Handlers::Many(many) => {
                        targets.extend(many.iter().filter_map(|t| t.goto.as_ref()))
                    }
                }
            }
            targets.extend(state.timers.iter().filter_map(|t| t.goto.as_ref()));
            for target in targets {
                if seen.insert(target.clone()) {
                    queue.push_back(target.clone());
                }
            }
        }
        for name in states.keys() {
            if !seen.contains(name) {
                self.sink.push(
                    "unreachable_state",
                    &YamlPath::root().key("states").key(name),
                    Anchor::Key,
                    format!("state `{name}` cannot be reached from the start state `{start}`"),
                    Some("add a transition to it, or remove it".into()),
                );
            }
        }
    }
}

/// The keys of every `pay` action in the file (default `payment`).
fn pay_keys(spec: &WorkflowFile) -> BTreeSet<String> {
    fn collect(actions: &[ActionSpec], keys: &mut BTreeSet<String>) {
        for action in actions {
            if let ActionSpec::Pay(pay) = action {
                keys.insert(pay.key.clone().unwrap_or_else(|| "payment".into()));
            }
        }
    }
    let mut keys = BTreeSet::new();
    for state in spec.states.values() {
        collect(&state.enter, &mut keys);
        collect(&state.exit, &mut keys);
        collect(&state.on_cancel, &mut keys);
        for timer in &state.timers {
            collect(&timer.actions, &mut keys);
        }
        for handlers in state.on.values() {
            match handlers {
                Handlers::Target(_) => {}
                Handlers::One(t) => collect(&t.actions, &mut keys),
                Handlers::Many(list) => {
                    for t in list {
                        collect(&t.actions, &mut keys);
                    }
                }
            }
        }
    }
    keys
}

/// An example of a valid value of each type, for hints.
fn example_of(ty: ValueType) -> &'static str {
    match ty {
        ValueType::String => "write text, quoted if it could be read as a number: \"10:00\"",
        ValueType::Integer => "write a whole number: 7",
        ValueType::Boolean => "write true or false",
        ValueType::Money => "write yuan as a quoted decimal with at most two places: \"15.00\"",
        ValueType::Datetime => "write an RFC 3339 time: \"2026-11-23T09:30:00+08:00\"",
        ValueType::Duration => "write a number and a unit: 15m, 2h, 7d, 1h30m",
        ValueType::Enum => "write one of the listed `values`",
        ValueType::Party => "write a map with at least an id: { id: p1, name: 张三 }",
        ValueType::Bill => "write { items: [{ name: 挂号费, amount: \"15.00\" }], insurance: { pooled_fund, personal_account, other_funds, self_pay } }",
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Checks a value against a field's type and returns it normalised: money
/// as integer fen, datetimes as UTC RFC 3339 text, durations as seconds.
///
/// # Errors
/// A code and a message saying what is wrong.
/// A value an expression gives for a data field (`set`), checked against
/// the field's type: money and durations may be given as they are held
/// (fen, seconds) or as written in inputs (yuan text, `7d`); datetimes are
/// normalised to UTC; `null` clears the field.
///
/// # Errors
/// `(code, message)` when the value is not of the field's type.
pub fn check_data_value(
    field: &FieldSpec,
    value: &serde_json::Value,
) -> Result<serde_json::Value, (&'static str, String)> {
    use serde_json::Value as J;
    match (field.ty, value) {
        (_, J::Null) => Ok(J::Null),
        (ValueType::Money | ValueType::Duration, J::Number(n)) if n.is_i64() => Ok(value.clone()),
        _ => check_value(field, value),
    }
}

pub fn check_value(
    field: &FieldSpec,
    value: &serde_json::Value,
) -> Result<serde_json::Value, (&'static str, String)> {
    use serde_json::Value as J;
    let wrong = |what: &str| ("invalid_value", format!("expected {what}, got {value}"));
    match (field.ty, value) {
        (_, J::Null) if field.optional => Ok(J::Null),
        (ValueType::String, J::String(_)) => Ok(value.clone()),
        (ValueType::Integer, J::Number(n)) if n.is_i64() => Ok(value.clone()),
        (ValueType::Boolean, J::Bool(_)) => Ok(value.clone()),
        (ValueType::Money, J::String(text)) => Money::parse_yuan(text)
            .map(|m| J::from(m.fen()))
            .map_err(|e| ("bad_money", e.to_string())),
        (ValueType::Money, _) => Err((
            "bad_money",
            format!("write money as a decimal string in yuan such as \"15.00\", got {value}"),
        )),
        (ValueType::Datetime, J::String(text)) => DateTime::parse_from_rfc3339(text)
            .map(|t| J::String(t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
            .map_err(|_| ("invalid_value", format!("`{text}` is not an RFC 3339 date and time such as 2026-11-23T09:30:00+08:00"))),
        (ValueType::Duration, J::String(text)) => parse_duration(text)
            .map(|d| J::from(d.num_seconds()))
            .map_err(|e| ("bad_duration", e.to_string())),
        (ValueType::Enum, J::String(text)) => {
            let values = field.values.as_deref().unwrap_or_default();
            if values.iter().any(|v| v == text) {
                Ok(value.clone())
            } else {
                Err(("invalid_value", format!("`{text}` is not one of {}", values.join(", "))))
            }
        }
        (ValueType::Party, J::Object(_)) => serde_json::from_value::<Party>(value.clone())
            .map_err(|e| ("invalid_value", format!("not a party: {e}")))
            .and_then(|party| {
                if party.id.trim().is_empty() {
                    Err(("invalid_value", "a party needs a non-empty `id`".to_owned()))
                } else {
                    serde_json::to_value(party).map_err(|e| ("invalid_value", e.to_string()))
                }
            }),
        (ValueType::Bill, J::Object(_)) => crate::domain::bill::from_yuan_json(value)
            .map(|checked| serde_json::to_value(checked.bill).unwrap_or_default())
            .map_err(|message| ("bad_bill", message)),
        (ValueType::Bill, _) => Err(wrong("a bill `{ items: [{ name, amount }], insurance: {…} }`")),
        (ValueType::String, _) => Err(wrong("text")),
        (ValueType::Integer, _) => Err(wrong("a whole number")),
        (ValueType::Boolean, _) => Err(wrong("true or false")),
        (ValueType::Datetime, _) => Err(wrong("an RFC 3339 date and time")),
        (ValueType::Duration, _) => Err(wrong("a duration such as 7d")),
        (ValueType::Enum, _) => Err(wrong("one of the enum's values")),
        (ValueType::Party, _) => Err(wrong("a party `{ id, name, phone, … }`")),
    }
}

// ---- the checks of each step kind (listed in `crate::kinds`) ----------------

macro_rules! check_action_kinds {
    ($($name:ident => $variant:ident($spec:ty, $action:ty) check $check:path, run $run:path, $doc:literal;)*) => {
        impl Checker<'_> {
            fn check_action(&mut self, spec: &ActionSpec, path: &YamlPath) -> Option<Action> {
                match spec {
                    $(ActionSpec::$variant(spec) => {
                        $check(self, spec, &path.key(stringify!($name))).map(Action::$variant)
                    })*
                }
            }
        }
    };
}
crate::step_kinds!(check_action_kinds);

pub(crate) fn kind_set(
    checker: &mut Checker<'_>,
    fields: &IndexMap<String, ExprText>,
    path: &YamlPath,
) -> Option<SetAction> {
    let mut compiled = Vec::new();
    for (field, source) in fields {
        let field_path = path.key(field);
        if !checker.spec.data.contains_key(field) {
            let declared: Vec<&str> = checker.spec.data.keys().map(String::as_str).collect();
            checker.sink.push(
                "unknown_data_field",
                &field_path,
                Anchor::Key,
                format!("`{field}` is not a data field"),
                Some(match did_you_mean(field, declared.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!(
                        "declare it under `data:` (declared: {})",
                        list_or_none(&declared)
                    ),
                }),
            );
        }
        if let Some(declared) = checker.spec.data.get(field) {
            checker.check_literal(&source.0, declared.ty, &field_path);
        }
        if let Some(expr) = checker.check_expr(&source.0, &field_path) {
            compiled.push((field.clone(), expr));
        }
    }
    Some(SetAction { fields: compiled })
}

pub(crate) fn kind_send(
    checker: &mut Checker<'_>,
    spec: &SendSpec,
    path: &YamlPath,
) -> Option<SendAction> {
    checker.check_send(spec, path)
}

pub(crate) fn kind_pay(
    checker: &mut Checker<'_>,
    spec: &PaySpec,
    path: &YamlPath,
) -> Option<PayAction> {
    checker.check_pay(spec, path)
}

pub(crate) fn kind_refund(
    checker: &mut Checker<'_>,
    spec: &RefundSpec,
    path: &YamlPath,
) -> Option<RefundAction> {
    checker.check_refund(spec, path)
}

pub(crate) fn kind_start(
    checker: &mut Checker<'_>,
    start: &StartSpec,
    path: &YamlPath,
) -> Option<StartAction> {
    if !is_identifier(&start.workflow) {
        checker.sink.push(
            "invalid_name",
            &path.key("workflow"),
            Anchor::Value,
            format!("`{}` is not a valid workflow name", start.workflow),
            Some("name a workflow deployed for the same tenant, e.g. follow_up_reminder".into()),
        );
    }
    let mut input = Vec::new();
    let mut ok = true;
    for (field, source) in &start.input {
        match checker.check_expr(&source.0, &path.key("input").key(field)) {
            Some(expr) => input.push((field.clone(), expr)),
            None => ok = false,
        }
    }
    ok.then(|| StartAction {
        workflow: start.workflow.clone(),
        input,
    })
}

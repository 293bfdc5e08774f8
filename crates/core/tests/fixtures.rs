//! Workflow files, data-driven, in the crate that owns the format: every
//! invalid fixture (`tests/fixtures/invalid` at the workspace root) gets
//! its diagnostics snapshotted, and the committed JSON Schema is the
//! generated one. Here rather than in the application's tests so that
//! `cargo mutants` over this crate runs them.

use std::path::{Path, PathBuf};

use o2flow_core::dsl::{json_schema, validate, Catalog};

/// A path from the workspace root.
fn root(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn catalog() -> Catalog {
    Catalog::with_templates(["follow_up_reminder"])
}

fn check(path: &Path) -> (usize, String) {
    let source = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    let name = path
        .file_name()
        .unwrap_or_else(|| panic!("{} has no file name", path.display()));
    let label = format!("tests/fixtures/invalid/{}", name.to_string_lossy());
    let (def, diagnostics) = validate(&label, &source, &catalog());
    assert!(def.is_none(), "{label} should be refused");
    let rendered: String = diagnostics
        .iter()
        .map(|d| d.render(&source))
        .collect::<Vec<_>>()
        .join("\n");
    (diagnostics.len(), rendered)
}

#[test]
fn every_invalid_fixture_is_refused_with_located_diagnostics() {
    let mut files: Vec<_> = std::fs::read_dir(root("tests/fixtures/invalid"))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "expected the fixtures, found {}",
        files.len()
    );
    for path in files {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| panic!("{} has no name", path.display()));
        let (count, rendered) = check(&path);
        assert!(count > 0, "{name}");
        insta::assert_snapshot!(name, rendered);
    }
}

#[test]
fn a_file_with_many_mistakes_reports_them_all_at_once() {
    let (count, _) = check(&root("tests/fixtures/invalid/many_problems.yaml"));
    assert!(count >= 4, "only {count} diagnostics");
}

#[test]
fn the_committed_json_schema_is_the_generated_one() {
    let committed = std::fs::read_to_string(root("docs/workflow.schema.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let generated = serde_json::to_string_pretty(&json_schema()).unwrap_or_else(|e| panic!("{e}"));
    // Not assert_eq!: the whole schema twice would bury the message.
    assert!(
        committed.trim_end() == generated,
        "docs/workflow.schema.json is out of date: run `cargo run -- schema > docs/workflow.schema.json`"
    );
}

const DOOR: &str = r#"
name: door
version: 1.2
data:
  note: { type: string, default: "" }
start: closed
states:
  closed:
    timers:
      - after: 1h
        goto: locked
    on:
      opened: open
  open:
    on:
      closed:
        when: 'data.note != "a:b"'
        goto: closed
  locked: { final: expired }
"#;

#[test]
fn a_definition_draws_as_a_mermaid_state_diagram_and_keeps_its_version() {
    let (def, diagnostics) = validate("door.yaml", DOOR, &Catalog::default());
    assert_eq!(diagnostics, vec![]);
    let def = def.unwrap_or_else(|| panic!("no definition"));
    insta::assert_snapshot!("door_mermaid", o2flow_core::dsl::mermaid(&def));
    assert_eq!(def.label.as_deref(), Some("1.2"));
}

#[test]
fn a_retry_written_in_the_file_is_the_policy_of_its_action() {
    let source = r#"
name: nudge
inputs:
  patient: party
start: nudging
states:
  nudging:
    enter:
      - send:
          to: patient
          template: follow_up_reminder
          channels: [inbox]
          retry: { max_attempts: 4, initial: 2s, max: 1m, multiplier: 3 }
      - send:
          to: patient
          template: follow_up_reminder
          channels: [inbox]
          retry: { initial: 1m, max: 1m }
    on:
      done: over
  over: { final: completed }
"#;
    let (def, diagnostics) = validate("nudge.yaml", source, &catalog());
    assert_eq!(diagnostics, vec![]);
    let def = def.unwrap_or_else(|| panic!("no definition"));
    let state = def
        .state("nudging")
        .unwrap_or_else(|| panic!("no state `nudging`"));
    let Some(o2flow_core::dsl::Action::Send(send)) = state.enter.first() else {
        panic!("the first action is not a send: {:?}", state.enter);
    };
    let policy = send
        .retry
        .unwrap_or_else(|| panic!("the retry written was dropped"));
    assert_eq!(
        (
            policy.max_attempts,
            policy.initial,
            policy.max,
            policy.multiplier
        ),
        (
            4,
            chrono::Duration::seconds(2),
            chrono::Duration::minutes(1),
            3
        )
    );
}

fn field(spec: serde_json::Value) -> o2flow_core::dsl::FieldSpec {
    serde_json::from_value(spec).unwrap_or_else(|e| panic!("{e}"))
}

/// Values given for inputs and data, field type by field type: what is
/// taken (and how it is stored) and what is refused with which code.
#[test]
fn a_value_is_taken_or_refused_by_its_fields_type() {
    use o2flow_core::dsl::{check_data_value, check_value};
    use serde_json::json;
    let code = |r: Result<serde_json::Value, (&'static str, String)>| match r {
        Ok(value) => format!("ok {value}"),
        Err((code, _)) => code.to_owned(),
    };
    let integer = field(json!({"type": "integer"}));
    let optional = field(json!({"type": "integer", "optional": true}));
    let money = field(json!({"type": "money"}));
    let duration = field(json!({"type": "duration"}));
    let level = field(json!({"type": "enum", "values": ["low", "high"]}));
    let cases = [
        (code(check_value(&integer, &json!(3))), "ok 3"),
        (code(check_value(&integer, &json!(1.5))), "invalid_value"),
        (code(check_value(&integer, &json!(null))), "invalid_value"),
        (code(check_value(&optional, &json!(null))), "ok null"),
        (code(check_value(&money, &json!("15.00"))), "ok 1500"),
        (code(check_value(&money, &json!(1500))), "bad_money"),
        (code(check_value(&duration, &json!("1h"))), "ok 3600"),
        (code(check_value(&level, &json!("high"))), "ok \"high\""),
        (code(check_value(&level, &json!("medium"))), "invalid_value"),
        // Data already stored: money in fen and durations in seconds are
        // taken as they are, and any field may be null.
        (code(check_data_value(&money, &json!(1500))), "ok 1500"),
        (code(check_data_value(&money, &json!(15.5))), "bad_money"),
        (code(check_data_value(&duration, &json!(60))), "ok 60"),
        (code(check_data_value(&integer, &json!(null))), "ok null"),
        (
            code(check_data_value(&integer, &json!("3"))),
            "invalid_value",
        ),
    ];
    for (i, (got, expected)) in cases.iter().enumerate() {
        assert_eq!(got, expected, "case {i}");
    }
}

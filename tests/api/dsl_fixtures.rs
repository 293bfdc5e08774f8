//! Workflow files, data-driven: every invalid fixture gets its diagnostics
//! snapshotted, every shipped workflow validates, the committed schema is current.

use o2flow::dsl::{json_schema, validate, Catalog};

fn catalog() -> Catalog {
    Catalog::with_templates(["follow_up_reminder"])
}

/// The templates shipped in `templates/`.
fn shipped_catalog() -> Catalog {
    let templates = o2flow::templates::Templates::load(std::path::Path::new("templates"))
        .unwrap_or_else(|e| panic!("{e}"));
    Catalog::with_templates(templates.names().iter().cloned())
}

fn check(path: &std::path::Path) -> (usize, String) {
    let source = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    let label = format!(
        "tests/fixtures/invalid/{}",
        path.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    );
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
    let mut files: Vec<_> = std::fs::read_dir("tests/fixtures/invalid")
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
            .unwrap_or_default();
        let (count, rendered) = check(&path);
        assert!(count > 0, "{name}");
        insta::assert_snapshot!(name, rendered);
    }
}

#[test]
fn a_file_with_many_mistakes_reports_them_all_at_once() {
    let (count, _) = check(std::path::Path::new(
        "tests/fixtures/invalid/many_problems.yaml",
    ));
    assert!(count >= 4, "only {count} diagnostics");
}

#[test]
fn every_shipped_workflow_is_valid() {
    for entry in std::fs::read_dir("workflows")
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let source = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let (def, diagnostics) = validate(
            &entry.path().display().to_string(),
            &source,
            &shipped_catalog(),
        );
        assert_eq!(diagnostics, vec![], "{}", entry.path().display());
        assert!(def.is_some());
    }
}

#[test]
fn the_committed_json_schema_is_the_generated_one() {
    let committed = std::fs::read_to_string("docs/workflow.schema.json").unwrap_or_default();
    let generated = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    // Not assert_eq!: the whole schema twice would bury the message.
    assert!(
        committed.trim_end() == generated,
        "docs/workflow.schema.json is out of date: run `cargo run -- schema > docs/workflow.schema.json`"
    );
}

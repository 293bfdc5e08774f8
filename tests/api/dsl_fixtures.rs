//! Every shipped workflow validates against the shipped templates. (The
//! invalid fixtures' diagnostics and the committed schema are checked in
//! the core crate, `crates/core/tests/fixtures.rs`.)

use o2flow::dsl::{validate, Catalog};

/// The templates shipped in `templates/`.
fn shipped_catalog() -> Catalog {
    let templates = o2flow::templates::Templates::load(std::path::Path::new("templates"))
        .unwrap_or_else(|e| panic!("{e}"));
    Catalog::with_templates(templates.names().iter().cloned())
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

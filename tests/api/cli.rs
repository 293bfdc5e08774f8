//! The binary as a user runs it.

use std::process::Command;

fn o2flow(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_o2flow"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn validate_accepts_the_shipped_workflows() {
    let (code, stdout, _) = o2flow(&["validate"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("ok: 1 workflow file(s) valid"), "{stdout}");
}

#[test]
fn validate_exits_1_and_prints_located_diagnostics() {
    let (code, _, stderr) = o2flow(&[
        "validate",
        "tests/fixtures/invalid/unknown_state_in_transition.yaml",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("error[unknown_state]"), "{stderr}");
    assert!(
        stderr.contains("--> tests/fixtures/invalid/unknown_state_in_transition.yaml:"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `rebooked`?"), "{stderr}");
}

#[test]
fn graph_prints_mermaid_and_schema_prints_json() {
    let (code, stdout, _) = o2flow(&["graph", "workflows/follow_up_reminder.yaml"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("stateDiagram-v2"));
    let (code, stdout, _) = o2flow(&["schema"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
    assert_eq!(schema["title"], "o2flow workflow");
}

#[test]
fn keys_create_prints_only_a_key_that_the_database_knows() {
    let path =
        std::env::temp_dir().join(format!("o2flow-keys-{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite:{}", path.display());
    let (code, stdout, stderr) = o2flow(&[
        "keys",
        "create",
        "--tenant",
        "cityhotel",
        "--role",
        "operator",
        "--database-url",
        &url,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let key = stdout.trim();
    assert!(key.starts_with("o2f_") && !key.contains(' '), "{stdout}");
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let found = runtime.block_on(async {
        let store = o2flow::store::Store::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store.authenticate(key).await.unwrap_or_default()
    });
    assert_eq!(found, Some(("cityhotel".to_owned(), "operator".to_owned())));
    let (code, _, stderr) = o2flow(&[
        "keys",
        "create",
        "--tenant",
        "x",
        "--role",
        "root",
        "--database-url",
        &url,
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("root"), "{stderr}");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

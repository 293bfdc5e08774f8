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
    let shipped = std::fs::read_dir("workflows")
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .count();
    assert!(shipped >= 3, "{shipped}");
    assert!(
        stdout.contains(&format!("ok: {shipped} workflow file(s) valid")),
        "{stdout}"
    );
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

    // The tenant's time zone, checked before it is stored.
    let set = |zone: &str, tenant: &str| {
        o2flow(&[
            "tenants",
            "set-time-zone",
            "--tenant",
            tenant,
            "--time-zone",
            zone,
            "--database-url",
            &url,
        ])
    };
    let (code, stdout, stderr) = set("Europe/Berlin", "cityhotel");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Europe/Berlin"), "{stdout}");
    let (code, _, stderr) = set("Mars/Olympus", "cityhotel");
    assert_eq!(code, 1);
    assert!(stderr.contains("not an IANA time zone"), "{stderr}");
    let (code, _, stderr) = set("Asia/Shanghai", "nobody");
    assert_eq!(code, 1);
    assert!(stderr.contains("no tenant `nobody`"), "{stderr}");
    let zone = runtime.block_on(async {
        let store = o2flow::store::Store::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .tenant("cityhotel")
            .await
            .ok()
            .flatten()
            .map(|t| t.time_zone)
    });
    assert_eq!(zone.as_deref(), Some("Europe/Berlin"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[test]
fn serve_refuses_to_start_when_a_workflow_is_invalid() {
    let path = std::env::temp_dir().join(format!(
        "o2flow-refuse-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let url = format!("sqlite:{}", path.display());
    let (code, _, stderr) = o2flow(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--workflows",
        "tests/fixtures/invalid",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(stderr.contains("error[unknown_state]"), "{stderr}");
    assert!(
        !path.exists(),
        "no database is created for a server that does not start"
    );
}

/// Starts `serve` on port 0 and returns the child, its address and the key it printed, if any.
fn serve(url: &str) -> (std::process::Child, String, Option<String>) {
    crate::helpers::spawn_serve(crate::helpers::serve_command(url))
}

#[test]
fn serve_on_a_fresh_database_prints_a_key_once_that_works_at_once() {
    let path =
        std::env::temp_dir().join(format!("o2flow-serve-{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite:{}", path.display());
    let (mut child, address, key) = serve(&url);
    let key = key.unwrap_or_else(|| panic!("no key printed"));
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{address}/api/v1/workflows"))
            .bearer_auth(&key)
            .send()
            .await;
        crate::helpers::read(response.unwrap_or_else(|e| panic!("{e}"))).await
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workflows"][0]["name"], "follow_up_reminder");
    assert!(path.exists(), "the SQLite file is created on first run");

    // The second start finds the tenant and prints no key.
    let (mut again, _, second_key) = serve(&url);
    let _ = again.kill();
    let _ = again.wait();
    assert_eq!(second_key, None);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// A hospital points o2flow at its merchant account by configuration alone;
/// a production tenant never runs on the sandbox; secrets are checked, never printed.
#[test]
fn merchants_are_configured_by_reference_and_production_refuses_the_sandbox() {
    let dir = std::env::temp_dir().join(format!("o2flow-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let db = format!("sqlite:{}", dir.join("o2flow.db").display());
    let (code, _, stderr) = o2flow(&[
        "keys",
        "create",
        "--tenant",
        "city",
        "--role",
        "admin",
        "--database-url",
        &db,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = o2flow(&[
        "tenants",
        "set-production",
        "--tenant",
        "city",
        "--database-url",
        &db,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("production: true"), "{stdout}");

    // No merchant: serve refuses to start rather than take sandbox "payments".
    let (code, _, stderr) = o2flow(&["serve", "--bind", "127.0.0.1:0", "--database-url", &db]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("tenant `city` is marked production"),
        "{stderr}"
    );

    // A secret that cannot be read is named, not shown; nothing is stored.
    let key_file = dir.join("apiv3.key");
    std::fs::write(&key_file, crate::wechat_pay::API_V3_KEY).unwrap_or_else(|e| panic!("{e}"));
    let api_v3 = format!("file:{}", key_file.display());
    let mut args = vec![
        "merchants",
        "set",
        "--tenant",
        "city",
        "--mchid",
        crate::wechat_pay::MCHID,
        "--appid",
        crate::wechat_pay::APPID,
        "--serial-no",
        crate::wechat_pay::MERCHANT_SERIAL,
        "--api-v3-key",
        &api_v3,
        "--public-key",
        "file:tests/vectors/wechat/platform_public_key.pem",
        "--public-key-id",
        crate::wechat_pay::PUB_KEY_ID,
        "--database-url",
        &db,
    ];
    let mut missing = args.clone();
    missing.extend(["--private-key", "file:/nonexistent/apiclient_key.pem"]);
    let (code, _, stderr) = o2flow(&missing);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("private key: cannot read file:/nonexistent/apiclient_key.pem"),
        "{stderr}"
    );
    let (_, stdout, _) = o2flow(&["merchants", "list", "--database-url", &db]);
    assert!(stdout.trim().is_empty(), "{stdout}");

    args.extend([
        "--private-key",
        "file:tests/vectors/wechat/merchant_private_key.pem",
    ]);
    let (code, stdout, stderr) = o2flow(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("/callbacks/wechatpay/1"), "{stdout}");
    let (_, listed, _) = o2flow(&["merchants", "list", "--database-url", &db]);
    assert!(listed.contains(crate::wechat_pay::MCHID), "{listed}");
    for output in [&stdout, &stderr, &listed] {
        assert!(!output.contains(crate::wechat_pay::API_V3_KEY), "{output}");
        assert!(!output.contains("PRIVATE KEY"), "{output}");
    }

    // With its merchant, the production tenant starts.
    let (mut child, address, _) = crate::helpers::spawn_serve(crate::helpers::serve_command(&db));
    assert!(address.starts_with("http://127.0.0.1:"), "{address}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

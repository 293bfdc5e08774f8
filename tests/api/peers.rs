//! An independent WeChat Pay client, the Python SDK wechatpayv3 2.0.4
//! (`tests/peers/wechatpayv3_peer.py`, installed by `.ci/run` from
//! `tests/peers/requirements.txt`), against the fake WeChat Pay server: the
//! fake must verify another implementation's signatures (over Python's
//! `json.dumps` bytes), answer with signatures that implementation accepts,
//! serve `/v3/certificates` it can use, keep WeChat Pay's order and refund
//! rules, and send notifications its `callback()` verifies and decrypts
//! (and a probe it refuses). So the fake o2flow is tested against behaves
//! like WeChat Pay to a client that is not ours. Without the SDK in
//! `python3`, the test makes a virtual environment for it under the target
//! directory the first time.

use crate::helpers::text;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use o2flow::runtime::SystemClock;
use o2flow_wechat_fake::{AnswerFault, FakeWechatPay, NotifyMode};
use serde_json::{json, Value};

use crate::wechat_pay::PUB_KEY_ID;

const PEER: &str = "tests/peers/wechatpayv3_peer.py";

/// A Python that has the SDK: `python3` when it is installed there (as
/// `.ci/run` does), else a virtual environment under the target directory,
/// made and filled from `tests/peers/requirements.txt` the first time, so
/// `cargo test` passes on a fresh machine.
fn peer_python() -> std::path::PathBuf {
    static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let has_sdk = |python: &std::path::Path| {
                std::process::Command::new(python)
                    .args(["-c", "import wechatpayv3"])
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            let system = std::path::PathBuf::from("python3");
            if has_sdk(&system) {
                return system;
            }
            let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("peer-venv");
            let python = venv.join("bin/python");
            if !has_sdk(&python) {
                let run = |command: &mut std::process::Command| {
                    let status = command
                        .status()
                        .unwrap_or_else(|e| panic!("python3 must be installed: {e}"));
                    assert!(status.success(), "{command:?} failed");
                };
                run(std::process::Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv));
                run(std::process::Command::new(&python).args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                    "tests/peers/requirements.txt",
                ]));
            }
            python
        })
        .clone()
}

/// Runs the peer and returns its JSON lines.
async fn python(args: Vec<String>, stdin: String) -> Vec<Value> {
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(peer_python())
            .arg(PEER)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 must be installed: {e}"));
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "the wechatpayv3 peer failed (install it: python3 -m pip install -r tests/peers/requirements.txt): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

fn step<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {lines:?}"))
}

/// Keeps every notification exactly as sent (headers and raw body), answering 204.
#[derive(Default)]
struct Capture {
    messages: Mutex<Vec<Value>>,
}

async fn capture(request: HttpRequest, body: web::Bytes, sink: web::Data<Capture>) -> HttpResponse {
    let headers: serde_json::Map<String, Value> = request
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("wechatpay-"))
        .map(|(name, value)| {
            // As WeChat Pay writes them (the SDK looks headers up by this case).
            let canonical = name
                .as_str()
                .split('-')
                .map(|part| {
                    let mut chars = part.chars();
                    chars
                        .next()
                        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("-");
            (canonical, json!(value.to_str().unwrap_or_default()))
        })
        .collect();
    if let Ok(mut messages) = sink.messages.lock() {
        messages.push(json!({"headers": headers, "body": String::from_utf8_lossy(&body)}));
    }
    HttpResponse::NoContent().finish()
}

fn take(sink: &Capture) -> String {
    let messages = sink
        .messages
        .lock()
        .map(|mut m| std::mem::take(&mut *m))
        .unwrap_or_default();
    messages
        .iter()
        .map(|m| m.to_string() + "\n")
        .collect::<String>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_talks_to_the_fake_as_to_wechat_pay() {
    // The SDK reads the real time: so does this fake.
    let fake = FakeWechatPay::start(crate::wechat_pay::fake_config(
        PUB_KEY_ID,
        Arc::new(SystemClock),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let sink = web::Data::new(Capture::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let notify_url = format!(
        "http://{}/notify",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let data = sink.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(capture))
    })
    .workers(1)
    .listen(listener)
    .unwrap_or_else(|e| panic!("{e}"))
    .run();
    let server_handle = server.handle();
    tokio::spawn(server);
    let base = fake.base_url.clone();

    // Orders: signed by the SDK, verified by the fake; answered, verified by the SDK.
    let lines = python(
        vec!["orders".into(), base.clone(), notify_url.clone()],
        String::new(),
    )
    .await;
    let pay = step(&lines, "pay");
    assert_eq!(pay["code"], 200, "{lines:?}");
    let prepay = text(pay, "body.prepay_id");
    assert!(prepay.starts_with("wx"), "{pay}");
    assert_eq!(step(&lines, "pay_again")["body"]["prepay_id"], prepay);
    let other = step(&lines, "pay_other_amount");
    assert_eq!(
        (other["code"].as_i64(), other["body"]["code"].as_str()),
        (Some(403), Some("OUT_TRADE_NO_USED"))
    );
    assert_eq!(step(&lines, "query")["body"]["trade_state"], "NOTPAY");
    assert!(step(&lines, "native")["body"]["code_url"]
        .as_str()
        .is_some_and(|u| u.starts_with("weixin://wxpay/bizpayurl?pr=")));
    assert_eq!(step(&lines, "close")["code"], 204);
    assert_eq!(
        step(&lines, "query_closed")["body"]["trade_state"],
        "CLOSED"
    );
    let missing = step(&lines, "query_missing");
    assert_eq!(
        (missing["code"].as_i64(), missing["body"]["code"].as_str()),
        (Some(404), Some("ORDER_NOT_EXIST"))
    );
    assert!(
        fake.requests().iter().all(|(_, _, status)| *status != 401),
        "the fake accepted every signature the SDK made: {:?}",
        fake.requests()
    );

    // Notifications: the SDK's callback() verifies and decrypts the fake's,
    // and refuses its probe.
    assert_eq!(
        fake.user_pays("PEER000000000001", NotifyMode::Normal).await,
        vec![204]
    );
    assert_eq!(
        fake.user_pays("PEER000000000001", NotifyMode::Probe).await,
        vec![204]
    );
    let results = python(vec!["callbacks".into()], take(&sink)).await;
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(
        results[0]["event_type"], "TRANSACTION.SUCCESS",
        "{results:?}"
    );
    assert_eq!(results[0]["resource"]["out_trade_no"], "PEER000000000001");
    assert_eq!(results[0]["resource"]["trade_state"], "SUCCESS");
    assert_eq!(results[0]["resource"]["amount"]["total"], 1500);
    assert_eq!(results[1], Value::Null, "the probe is refused: {results:?}");

    // Paid: the SDK refunds part of it; the refund notification verifies too.
    let lines = python(
        vec!["paid".into(), base.clone(), notify_url.clone()],
        String::new(),
    )
    .await;
    assert_eq!(step(&lines, "query_paid")["body"]["trade_state"], "SUCCESS");
    let refund = step(&lines, "refund");
    assert_eq!(refund["code"], 200, "{lines:?}");
    assert_eq!(refund["body"]["status"], "PROCESSING");
    assert_eq!(refund["body"]["amount"]["refund"], 500);
    assert_eq!(step(&lines, "query_refund")["body"]["status"], "PROCESSING");
    assert_eq!(
        fake.refund_completes("PEERRFD000000001", "SUCCESS", NotifyMode::Normal)
            .await,
        vec![204]
    );
    let results = python(vec!["callbacks".into()], take(&sink)).await;
    assert_eq!(results[0]["event_type"], "REFUND.SUCCESS", "{results:?}");
    assert_eq!(results[0]["resource"]["refund_status"], "SUCCESS");
    assert_eq!(results[0]["resource"]["out_refund_no"], "PEERRFD000000001");

    // Certificate mode: answers under the platform certificate make the SDK
    // download /v3/certificates from the fake and verify with it.
    fake.sign_as("7E57C0DE0000000000000000000000000000B002");
    let lines = python(vec!["certificates".into(), base.clone()], String::new()).await;
    assert_eq!(
        step(&lines, "query_under_certificate")["body"]["trade_state"],
        "REFUND",
        "{lines:?}"
    );
    assert!(fake
        .requests()
        .iter()
        .any(|(method, path, status)| method == "GET"
            && path == "/v3/certificates"
            && *status == 200));

    // A forged answer injected into the fake is caught by the SDK as well.
    fake.sign_as(PUB_KEY_ID);
    fake.inject(AnswerFault::ForgedSignature);
    let lines = python(vec!["paid".into(), base, notify_url], String::new()).await;
    assert!(
        step(&lines, "query_paid")["error"]
            .as_str()
            .is_some_and(|e| e.contains("verify")),
        "{lines:?}"
    );
    server_handle.stop(false).await;
    fake.stop().await;
}

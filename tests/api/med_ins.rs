//! 医保 mixed payments end to end against the fake WeChat Pay server, on
//! SQLite and PostgreSQL: a prescription whose bill carries the insurance
//! bureau's pre-settlement becomes a self-paid JSAPI order plus a
//! `/v3/med-ins/orders` mixed order (payer fields RSA-OAEP-encrypted; the ID
//! number never stored); only `MEDICAL_INSURANCE.SUCCESS` (or a query that
//! says `MIX_PAY_SUCCESS`) pays the flow, never the self-paid leg alone; a
//! refund returns the self-paid part and reports the 医保 part; an
//! insurance failure after the self-paid leg was paid refunds that leg; an
//! insurance-only order that nobody confirms expires.

use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::{text, TestApp};
use crate::payments::{page_html, payments_of, state_of, with_merchant, workflow};
use crate::storage_test;
use crate::wechat_pay::OPENID;
use o2flow_wechat_fake::NotifyMode;

const ID_NUMBER: &str = "11010519491231002X";
const ID_DIGEST: &str = "ae05564031c21338aa8a2e7266e7855c";

/// ¥120.00 of drugs: ¥60 pooled fund, ¥20 personal account, ¥40 self-paid,
/// ¥5 delivery added: ¥45.00 through WeChat Pay. `cash: false` makes it
/// insurance only.
pub fn prescription(id: &str, cash: bool) -> Value {
    let insurance = if cash {
        json!({"pooled_fund": "60.00", "personal_account": "20.00", "other_funds": "0.00", "self_pay": "40.00"})
    } else {
        json!({"pooled_fund": "90.00", "personal_account": "30.00", "other_funds": "0.00", "self_pay": "0.00"})
    };
    json!({
        "workflow": "prescription_billing",
        "input": {
            "patient": {"id": format!("p-{id}"), "name": "张三", "openid": OPENID},
            "prescription_id": id,
            "bill": {
                "items": [{"name": "阿莫西林胶囊", "amount": "30.00", "quantity": 2}, {"name": "布洛芬缓释胶囊", "amount": "60.00"}],
                "insurance": insurance,
                "add": if cash { json!([{"type": "FREIGHT", "amount": "5.00"}]) } else { json!([]) },
                "settlement": {
                    "order_type": "PHARMACY_PAY", "city_id": "440300",
                    "med_inst_no": "H44030000001", "med_inst_name": "深圳市人民医院",
                    "serial_no": format!("S-{id}"), "pay_order_id": format!("ORD-{id}"), "pay_auth_no": format!("AUTH-{id}"),
                    "payer": {"name": "张三", "id_number": ID_NUMBER}
                }
            }
        }
    })
}

pub async fn start(app: &TestApp, id: &str, cash: bool) -> (String, Value) {
    let (status, body) = app.post("/api/v1/instances", &prescription(id, cash)).await;
    assert_eq!(status, 201, "{body}");
    let instance = text(&body, "id").to_owned();
    app.advance(Duration::zero()).await;
    let payments = payments_of(app, &instance).await;
    assert_eq!(payments.as_array().map(Vec::len), Some(1), "{payments}");
    (instance, payments[0].clone())
}

fn string(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not text"))
        .to_owned()
}

async fn mixed_order_pays_both_legs_at_once_and_refunds_both(app: TestApp) {
    let m = with_merchant(&app).await;
    let (status, body) = app.deploy(&workflow("prescription_billing")).await;
    assert!(status == 200 || status == 201, "{body}");
    let (instance, payment) = start(&app, "RX1", true).await;

    // The ID number became its digest on input: it is nowhere to be read.
    let (_, shown) = app.get(&format!("/api/v1/instances/{instance}")).await;
    assert!(!shown.to_string().contains(ID_NUMBER), "{shown}");

    // A JSAPI order for the self-paid ¥45.00, then the mixed order with its prepay id.
    assert_eq!(payment["provider"], "wechat", "{payment}");
    assert_eq!(payment["amount"], "45.00");
    assert_eq!(payment["state"], "pending");
    assert_eq!(payment["mix_pay_status"], "MIX_PAY_CREATED");
    assert_eq!(
        payment["bill"]["bill"]["settlement"]["payer"]["name"], "张*",
        "masked: {payment}"
    );
    let no = string(&payment["payment"]);
    let mix = string(&payment["mix_trade_no"]);
    assert!(mix.starts_with("MIX"), "{payment}");
    assert_eq!(m.fake.trade_state(&no).as_deref(), Some("NOTPAY"));
    // WeChat Pay decrypts the payer as the bureau knows them (RSA-OAEP under its key).
    assert_eq!(
        m.fake.med_payer(&mix),
        Some(("张三".to_owned(), ID_DIGEST.to_owned()))
    );
    let bodies = m.fake.bodies();
    assert!(
        !bodies
            .iter()
            .any(|b| b.contains("张三") || b.contains(ID_DIGEST)),
        "the payer's name and digest are only sent encrypted"
    );

    // The page shows the split and hands the mix number to the 医保 payment call, no name.
    let (message, link) = crate::payments::pay_message(&app, "p-RX1").await;
    assert!(message.contains("¥45.00"), "{message}");
    let (status, view) = crate::helpers::read(
        app.client
            .get(app.url(&format!("{link}/status")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["mix_trade_no"], mix.as_str());
    assert!(
        !view.to_string().contains("张三") && !view.to_string().contains(ID_DIGEST),
        "{view}"
    );
    let html = page_html(&app, &link).await;
    assert!(
        html.contains("统筹") && html.contains("60.00") && html.contains(&mix),
        "{html}"
    );

    // The patient confirms: the self-paid leg's TRANSACTION.SUCCESS comes first and
    // settles nothing alone; MEDICAL_INSURANCE.SUCCESS pays the flow, once.
    assert_eq!(
        m.fake.user_pays_med_ins(&mix, NotifyMode::Resend).await,
        vec![204, 204]
    );
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "paid");
    let notifications = app
        .runtime
        .store()
        .notifications(m.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let outcomes: Vec<(String, Option<String>)> = notifications
        .iter()
        .map(|n| (n.event_type.clone(), n.outcome.clone()))
        .collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(
        outcomes.contains(&("MEDICAL_INSURANCE.SUCCESS".into(), Some("applied".into()))),
        "{outcomes:?}"
    );
    let payment = &payments_of(&app, &instance).await[0];
    assert_eq!(payment["state"], "succeeded");
    assert_eq!(payment["mix_pay_status"], "MIX_PAY_SUCCESS");

    // A 医保 part that names no fund is refused with the reason; nothing changes.
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{instance}/events"),
            &json!({"type": "cancel", "payload": {"reason": "处方作废", "insurance": {"pooled": "60.00"}}}),
        )
        .await;
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("pooled_fund")),
        "{body}"
    );
    assert_eq!(state_of(&app, &instance).await, "paid");

    // Refund before dispensing: the hospital refunded ¥60 + ¥20 through the
    // bureau; o2flow refunds the ¥45.00 self-paid part and reports the 医保 part
    // under the same refund number.
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{instance}/events"),
            &json!({"type": "cancel", "payload": {"reason": "处方作废", "insurance": {"pooled_fund": "60.00", "personal_account": "20.00"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.advance(Duration::zero()).await;
    let payment = &payments_of(&app, &instance).await[0];
    let refund = &payment["refunds"][0];
    assert_eq!(refund["amount"], "45.00", "{payment}");
    assert_eq!(refund["insurance"]["pooled_fund"], "60.00");
    assert!(refund["insurance_reported_at"].is_string(), "{refund}");
    let refund_no = string(&refund["refund"]);
    let reported = m.fake.med_refunds(&mix);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0]["out_refund_no"], refund_no.as_str());
    assert_eq!(
        (
            reported[0]["med_refund_total_fee"].as_i64(),
            reported[0]["med_refund_gov_fee"].as_i64(),
            reported[0]["med_refund_self_fee"].as_i64()
        ),
        (Some(8000), Some(6000), Some(2000))
    );
    assert_eq!(
        m.fake
            .refund_completes(&refund_no, "SUCCESS", NotifyMode::Normal)
            .await,
        vec![204]
    );
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "refunded");
    let requests = m.fake.requests();
    let count = |prefix: &str| {
        requests
            .iter()
            .filter(|(method, path, _)| method == "POST" && path.starts_with(prefix))
            .count()
    };
    assert_eq!(
        (
            count("/v3/pay/transactions/jsapi"),
            count("/v3/med-ins/orders"),
            count("/v3/refund/domestic/refunds"),
            count("/v3/med-ins/refunds/notify")
        ),
        (1, 1, 1, 1),
        "{requests:?}"
    );
    m.stop().await;
}
storage_test!(mixed_order_pays_both_legs_at_once_and_refunds_both);

async fn a_failed_insurance_leg_refunds_the_paid_cash_leg_and_an_unconfirmed_order_expires(
    app: TestApp,
) {
    let m = with_merchant(&app).await;
    let (status, body) = app.deploy(&workflow("prescription_billing")).await;
    assert!(status == 200 || status == 201, "{body}");

    // A settlement that is not one is refused at start, nothing created.
    let mut bad = prescription("RX0", true);
    bad["input"]["bill"]["settlement"]["order_type"] = json!("PAY");
    let (status, body) = app.post("/api/v1/instances", &bad).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("order_type"), "{body}");
    let mut bad = prescription("RX0", true);
    bad["input"]["bill"]["settlement"]["payer"]["id_number"] = json!("110105194912310021");
    let (status, body) = app.post("/api/v1/instances", &bad).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("check digit"), "{body}");

    // The self-paid leg is paid, the bureau refuses its part (MIX_PAY_FAIL,
    // no notification). The cash leg's callback alone changes nothing; the
    // next query finds the failure: the flow gets payment.failed and the
    // self-paid ¥45.00 goes back automatically.
    let (failing, payment) = start(&app, "RX2", true).await;
    let mix = string(&payment["mix_trade_no"]);
    m.fake.med_ins_fails(&mix).await;
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &failing).await, "awaiting_payment");
    app.advance(Duration::minutes(5)).await;
    assert_eq!(state_of(&app, &failing).await, "expired");
    let payment = &payments_of(&app, &failing).await[0];
    assert_eq!(payment["state"], "failed", "{payment}");
    assert_eq!(payment["mix_pay_status"], "MIX_PAY_FAIL");
    assert_eq!(payment["refunds"][0]["automatic"], true, "{payment}");
    assert_eq!(payment["refunds"][0]["amount"], "45.00");

    // The same, while the mixed order still says its self-paid leg was not
    // paid: o2flow asks the leg's own order, finds it paid, refunds it.
    let (stale, payment) = start(&app, "RX2S", true).await;
    let mix = string(&payment["mix_trade_no"]);
    m.fake.med_ins_fails_saying(&mix, "SELF_PAY_CREATED").await;
    app.advance(Duration::minutes(5)).await;
    assert_eq!(state_of(&app, &stale).await, "expired");
    let payment = &payments_of(&app, &stale).await[0];
    assert_eq!(payment["state"], "failed", "{payment}");
    assert_eq!(payment["refunded"], "45.00", "{payment}");
    assert_eq!(payment["refunds"][0]["automatic"], true, "{payment}");

    // Insurance only: no JSAPI order, no prepay id; nobody confirms within a
    // day: queried at expiry, still MIX_PAY_CREATED, the flow expires.
    let (unconfirmed, payment) = start(&app, "RX3", false).await;
    assert_eq!(payment["amount"], "0.00", "{payment}");
    assert!(payment["mix_trade_no"].is_string(), "{payment}");
    let (mix_status, self_pay, _) = m
        .fake
        .med_order_state(&string(&payment["mix_trade_no"]))
        .unwrap_or_default();
    assert_eq!(
        (mix_status.as_str(), self_pay.as_str()),
        ("MIX_PAY_CREATED", "NO_SELF_PAY")
    );
    app.advance(Duration::days(1)).await;
    assert_eq!(state_of(&app, &unconfirmed).await, "expired");
    assert_eq!(payments_of(&app, &unconfirmed).await[0]["state"], "expired");
    let jsapi = m
        .fake
        .requests()
        .iter()
        .filter(|(method, path, _)| {
            method == "POST" && path.starts_with("/v3/pay/transactions/jsapi")
        })
        .count();
    assert_eq!(jsapi, 2, "only RX2 and RX2S had a self-paid leg");

    // Cancelled, then paid anyway: the self-paid part goes back on its own;
    // the insured part can only go back through the bureau, so staff are told.
    let (cancelled, payment) = start(&app, "RX4", true).await;
    let (status, body) = app
        .post(&format!("/api/v1/instances/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let mix = string(&payment["mix_trade_no"]);
    assert_eq!(
        m.fake.user_pays_med_ins(&mix, NotifyMode::Normal).await,
        vec![204]
    );
    app.advance(Duration::zero()).await;
    let payment = &payments_of(&app, &cancelled).await[0];
    assert_eq!(payment["late"], true, "{payment}");
    assert_eq!(payment["refunds"][0]["amount"], "45.00");
    assert_eq!(payment["refunds"][0]["automatic"], true);
    let (_, incidents) = app.get("/api/v1/incidents?status=open").await;
    assert!(
        incidents["incidents"]
            .as_array()
            .is_some_and(
                |all| all.iter().any(|i| i["instance_id"] == cancelled.as_str()
                    && i["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("insurance bureau")))
            ),
        "{incidents}"
    );

    // A 医保 refund report WeChat Pay refuses (more than insurance paid): the
    // self-paid part is refunded all the same, the report is tried again
    // hourly, and staff get one incident, not one per try.
    let (refused, payment) = start(&app, "RX5", true).await;
    let mix = string(&payment["mix_trade_no"]);
    assert_eq!(
        m.fake.user_pays_med_ins(&mix, NotifyMode::Normal).await,
        vec![204]
    );
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &refused).await, "paid");
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{refused}/events"),
            &json!({"type": "cancel", "payload": {"reason": "处方作废", "insurance": {"pooled_fund": "100.00"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.advance(Duration::zero()).await;
    let refund = payments_of(&app, &refused).await[0]["refunds"][0].clone();
    assert!(refund["insurance_reported_at"].is_null(), "{refund}");
    let refund_no = string(&refund["refund"]);
    assert_eq!(
        m.fake
            .refund_completes(&refund_no, "SUCCESS", NotifyMode::Normal)
            .await,
        vec![204]
    );
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &refused).await, "refunded");
    app.advance(Duration::hours(1)).await;
    app.advance(Duration::hours(1)).await;
    let reports = m
        .fake
        .requests()
        .iter()
        .filter(|(_, path, _)| {
            path.starts_with(&format!("/v3/med-ins/refunds/notify?mix_trade_no={mix}"))
        })
        .map(|(_, _, status)| *status)
        .collect::<Vec<_>>();
    assert!(
        reports.len() >= 3 && reports.iter().all(|s| *s == 400),
        "{reports:?}"
    );
    let (_, incidents) = app.get("/api/v1/incidents?status=open").await;
    let about_it = incidents["incidents"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|i| i["effect_key"] == refund_no.as_str())
                .count()
        })
        .unwrap_or_default();
    assert_eq!(about_it, 1, "{incidents}");
    m.stop().await;
}
storage_test!(a_failed_insurance_leg_refunds_the_paid_cash_leg_and_an_unconfirmed_order_expires);

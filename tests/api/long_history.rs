//! A long flow stays usable: 50,000 events on one instance, every one in
//! its history in order, and any page of that history read directly (by
//! sequence number, not by skipping rows). On both databases.

use o2flow::engine::Event;
use serde_json::{json, Value};

use crate::helpers::{list, text, TestApp};
use crate::storage_test;

const VITALS: &str = r#"
name: ward_vitals
title: 病房体征 / Ward vitals
inputs:
  patient: party
data:
  readings: { type: integer, default: 0 }
start: monitoring
states:
  monitoring:
    on:
      reading.taken:
        actions: [ { set: { readings: data.readings + 1 } } ]
      discharged: done
  done: { final: completed }
"#;

const EVENTS: i64 = 50_000;

async fn fifty_thousand_events_keep_their_order_and_every_page_reads_directly(app: TestApp) {
    assert_eq!(app.deploy(VITALS).await.0, 201);
    let (status, body) = app
        .post(
            "/api/v1/instances",
            &json!({"workflow": "ward_vitals", "input": {"patient": {"id": "bed-12"}}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = text(&body, "id").to_owned();
    for n in 0..EVENTS {
        let event = Event::Named {
            event_type: "reading.taken".into(),
            payload: json!({"n": n}),
        };
        app.runtime
            .send_event("acme", &id, event, None)
            .await
            .unwrap_or_else(|e| panic!("event {n}: {e}"));
    }
    let (status, _) = app
        .post(
            &format!("/api/v1/instances/{id}/events"),
            &json!({"type": "discharged"}),
        )
        .await;
    assert_eq!(status, 200);

    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(instance["data"]["readings"], EVENTS);
    assert_eq!(instance["status"], "completed");

    // The first page, and the next_from chain.
    let (status, first) = app
        .get(&format!("/api/v1/instances/{id}/history?limit=100"))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["entries"].as_array().map(Vec::len), Some(100));
    assert_eq!(first["next_from"], 100);

    // Find where the readings start, then check a page deep inside.
    let readings_from = first["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["kind"] == "event" && e["detail"]["type"] == "reading.taken")
        .and_then(|e| e["seq"].as_i64())
        .unwrap_or_else(|| panic!("no reading in {first}"));
    let per_event = entries_per_reading(&first, readings_from);
    let n = 41_234;
    let seq = readings_from + n * per_event;
    let (_, page) = app
        .get(&format!(
            "/api/v1/instances/{id}/history?from={seq}&limit=3"
        ))
        .await;
    let entries = list(&page, "entries");
    assert_eq!(entries.len(), 3, "{page}");
    assert_eq!(entries[0]["seq"], seq);
    assert_eq!(entries[0]["detail"]["payload"]["n"], n, "{page}");

    // The end: every entry is there, the last page says there is no more.
    let total = readings_from + EVENTS * per_event;
    let (_, last) = app
        .get(&format!(
            "/api/v1/instances/{id}/history?from={}&limit=1000",
            total - 2
        ))
        .await;
    let entries = list(&last, "entries");
    assert!(last["next_from"].is_null(), "{last}");
    let kinds: Vec<&str> = entries.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"finished"), "{kinds:?}");
    let seqs: Vec<i64> = entries.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(seqs.first(), Some(&(total - 2)));
}
storage_test!(fifty_thousand_events_keep_their_order_and_every_page_reads_directly);

/// History entries written per `reading.taken`, read off the first page.
fn entries_per_reading(page: &Value, from: i64) -> i64 {
    let readings: Vec<i64> = page["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "event" && e["detail"]["type"] == "reading.taken")
        .filter_map(|e| e["seq"].as_i64())
        .filter(|seq| *seq >= from)
        .collect();
    assert!(readings.len() >= 2, "{page}");
    readings[1] - readings[0]
}

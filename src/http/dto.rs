//! Request and response bodies. Kept apart from store rows and engine types.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::store::{from_ms, DefinitionRow, HistoryRow, InboxRow, InstanceRow, TimerRow};

fn time(ms: i64) -> String {
    from_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartInstance {
    pub workflow: String,
    #[serde(default)]
    pub input: Json,
    pub branch: Option<String>,
    pub business_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub payload: Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub correlation_key: String,
    #[serde(default)]
    pub payload: Json,
    pub message_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListInstances {
    pub workflow: Option<String>,
    pub state: Option<String>,
    pub status: Option<String>,
    pub business_key: Option<String>,
    pub after: Option<String>,
    pub limit: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    pub from: Option<i64>,
    pub limit: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    pub version: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployQuery {
    pub file: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Deployed {
    pub name: String,
    pub version: i32,
    pub hash: String,
}

#[derive(Debug, Serialize)]
pub struct WorkflowVersion {
    pub version: i32,
    pub hash: String,
    pub label: Option<String>,
    pub deployed_at: String,
}

impl From<&DefinitionRow> for WorkflowVersion {
    fn from(row: &DefinitionRow) -> WorkflowVersion {
        WorkflowVersion {
            version: row.version,
            hash: row.hash.clone(),
            label: row.label.clone(),
            deployed_at: time(row.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct WorkflowSummary {
    pub name: String,
    pub title: Option<String>,
    pub latest_version: i32,
    pub versions: Vec<WorkflowVersion>,
}

#[derive(Debug, Serialize)]
pub struct WorkflowDetail {
    pub name: String,
    pub title: Option<String>,
    pub version: i32,
    pub hash: String,
    pub label: Option<String>,
    pub deployed_at: String,
    pub source: String,
    pub versions: Vec<WorkflowVersion>,
    /// The cron schedules that start instances of this workflow.
    pub schedules: Vec<Schedule>,
}

#[derive(Debug, Serialize)]
pub struct Schedule {
    pub cron: String,
    pub time_zone: String,
    pub next_fire_at: String,
    pub version: i32,
}

#[derive(Debug, Serialize)]
pub struct Timer {
    pub index: i32,
    pub entry: i64,
    pub due_at: String,
}

impl From<&TimerRow> for Timer {
    fn from(row: &TimerRow) -> Timer {
        Timer {
            index: row.timer_index,
            entry: row.entry_seq,
            due_at: time(row.due_at_ms),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Instance {
    pub id: String,
    pub workflow: String,
    pub version: i32,
    pub branch: String,
    pub state: String,
    pub status: String,
    pub business_key: Option<String>,
    /// The instance that started this one with a `start` action.
    pub parent_id: Option<String>,
    pub input: Json,
    pub data: Json,
    pub created_at: String,
    pub updated_at: String,
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timers: Option<Vec<Timer>>,
}

impl Instance {
    pub fn from_row(row: &InstanceRow, timers: Option<&[TimerRow]>) -> Instance {
        Instance {
            id: row.id.clone(),
            workflow: row.workflow.clone(),
            version: row.version,
            branch: row.branch_id.clone(),
            state: row.state.clone(),
            status: row.status.clone(),
            business_key: row.business_key.clone(),
            parent_id: row.parent_id.clone(),
            input: serde_json::from_str(&row.input).unwrap_or_default(),
            data: serde_json::from_str(&row.data).unwrap_or_default(),
            created_at: time(row.created_at_ms),
            updated_at: time(row.updated_at_ms),
            ended_at: row.ended_at_ms.map(time),
            timers: timers.map(|t| t.iter().map(Timer::from).collect()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InstanceList {
    pub items: Vec<Instance>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EventApplied {
    /// False when the event was absorbed as a recorded no-op (the instance is final).
    pub applied: bool,
    pub instance: Instance,
}

#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    pub seq: i64,
    pub at: String,
    pub kind: String,
    pub detail: Json,
}

impl From<&HistoryRow> for HistoryEntry {
    fn from(row: &HistoryRow) -> HistoryEntry {
        HistoryEntry {
            seq: row.seq,
            at: time(row.at_ms),
            kind: row.kind.clone(),
            detail: serde_json::from_str(&row.detail).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct History {
    pub instance_id: String,
    pub entries: Vec<HistoryEntry>,
    pub next_from: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct InboxMessage {
    pub id: i64,
    pub instance_id: String,
    pub template: String,
    pub title: String,
    pub body: String,
    pub delivered_at: String,
}

impl From<&InboxRow> for InboxMessage {
    fn from(row: &InboxRow) -> InboxMessage {
        InboxMessage {
            id: row.id,
            instance_id: row.instance_id.clone(),
            template: row.template.clone(),
            title: row.title.clone(),
            body: row.body.clone(),
            delivered_at: time(row.created_at_ms),
        }
    }
}

//! `call`: reach the hospital's or hotel's own system (HIS, PMS) over
//! HTTP. Everything the core knows of the step kind is here: its YAML
//! (`CallSpec`), its checks, the checked action, the effect it plans and
//! how it plans it. The shell's executor (`src/steps/call.rs`) posts the
//! effect to a named endpoint and raises `call.succeeded` with the fields
//! picked from the answer, which the engine writes into `data`.
//!
//! ```yaml
//! - call:
//!     endpoint: his                 # configured per tenant and branch, never a URL here
//!     path: /slots/hold             # appended to the endpoint's URL
//!     body: { patient_id: patient.id, slot: slot_id }   # CEL, one per field
//!     result: { hold_id: hold.id }  # data field <- dotted path in the JSON answer
//!     retry: { max_attempts: 5 }
//! ```

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ActionContext;
use crate::domain::RetryPolicy;
use crate::dsl::call::CallAction;
use crate::engine::{Effect, EffectKind, Error, HistoryEntry};

/// The effect: post `body` to the endpoint, once per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEffect {
    pub endpoint: String,
    pub path: Option<String>,
    pub body: serde_json::Value,
    pub result: IndexMap<String, String>,
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
}

/// Evaluates the body now and plans the call, keyed by the action's key.
pub fn run(action: &CallAction, context: &mut ActionContext<'_>) -> Result<(), Error> {
    let mut body = serde_json::Map::new();
    for (field, expr) in &action.body {
        body.insert(
            field.clone(),
            expr.eval_json(context.scope).map_err(Error::Expression)?,
        );
    }
    context.history.push(HistoryEntry {
        kind: "effect_planned",
        detail: json!({"effect": "call", "key": context.key, "endpoint": action.endpoint}),
    });
    context.effects.push(Effect {
        key: context.key.clone(),
        kind: EffectKind::Call(CallEffect {
            endpoint: action.endpoint.clone(),
            path: action.path.clone(),
            body: serde_json::Value::Object(body),
            result: action.result.clone(),
            retry: action.retry,
        }),
    });
    Ok(())
}

/// The fields `result` picks from an answer: `None` for a path the answer
/// does not have (the call then fails: the system answered something else
/// than the flow expects).
pub fn pick_answer_fields(
    result: &IndexMap<String, String>,
    answer: &serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut fields = serde_json::Map::new();
    for (field, path) in result {
        let mut value = answer;
        for part in path.split('.') {
            value = match value {
                serde_json::Value::Object(object) => object.get(part),
                serde_json::Value::Array(items) => {
                    part.parse::<usize>().ok().and_then(|i| items.get(i))
                }
                _ => None,
            }
            .ok_or_else(|| format!("the answer has no `{path}` (for data field `{field}`)"))?;
        }
        fields.insert(field.clone(), value.clone());
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_fields_are_picked_by_path_or_the_call_fails() {
        let result: IndexMap<String, String> = [
            ("hold_id".to_owned(), "hold.id".to_owned()),
            ("first".to_owned(), "items.0.no".to_owned()),
        ]
        .into_iter()
        .collect();
        let answer = json!({"hold": {"id": "H-1"}, "items": [{"no": "INV-9"}]});
        let picked = pick_answer_fields(&result, &answer).unwrap_or_default();
        assert_eq!(
            serde_json::Value::Object(picked),
            json!({"hold_id": "H-1", "first": "INV-9"})
        );
        let missing = pick_answer_fields(&result, &json!({"hold": {}}))
            .err()
            .unwrap_or_default();
        assert!(missing.contains("hold.id"), "{missing}");
    }
}

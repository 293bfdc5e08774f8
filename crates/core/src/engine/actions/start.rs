use serde_json::json;

use super::ActionContext;
use crate::dsl::StartAction;
use crate::engine::{Effect, EffectKind, Error, HistoryEntry, StartChildEffect};

/// Evaluates the child's input now and emits a `StartChild` effect; the
/// runtime starts the child once, keyed by this effect's key.
pub fn run(action: &StartAction, context: &mut ActionContext<'_>) -> Result<(), Error> {
    let mut input = serde_json::Map::new();
    for (field, expr) in &action.input {
        input.insert(
            field.clone(),
            expr.eval_json(context.scope).map_err(Error::Expression)?,
        );
    }
    context.history.push(HistoryEntry {
        kind: "effect_planned",
        detail: json!({"effect": "start_child", "key": context.key, "workflow": action.workflow}),
    });
    context.effects.push(Effect {
        key: context.key.clone(),
        kind: EffectKind::StartChild(StartChildEffect {
            workflow: action.workflow.clone(),
            input: serde_json::Value::Object(input),
            parent_id: context.instance_id.to_owned(),
        }),
    });
    Ok(())
}

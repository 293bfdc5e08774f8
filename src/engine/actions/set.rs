use serde_json::json;

use super::ActionContext;
use crate::dsl::SetAction;
use crate::engine::{Error, HistoryEntry};

/// Evaluates every expression against the data as it was before the
/// action, then writes them all.
pub fn run(action: &SetAction, context: &mut ActionContext<'_>) -> Result<(), Error> {
    let mut values = Vec::with_capacity(action.fields.len());
    for (field, expr) in &action.fields {
        values.push((
            field,
            expr.eval_json(context.scope).map_err(Error::Expression)?,
        ));
    }
    let mut changed = serde_json::Map::new();
    if let Some(data) = context.data.as_object_mut() {
        for (field, value) in values {
            data.insert(field.clone(), value.clone());
            changed.insert(field.clone(), value);
        }
    }
    context.history.push(HistoryEntry {
        kind: "data_set",
        detail: json!({"fields": changed}),
    });
    Ok(())
}

use serde_json::json;

use super::ActionContext;
use crate::dsl::{check_data_value, SetAction};
use crate::engine::{Error, HistoryEntry};

/// Evaluates every expression against the data as it was before the
/// action, checks each value against its field's declared type, then
/// writes them all: a value of the wrong type fails the step, so nothing
/// is written.
pub fn run(action: &SetAction, context: &mut ActionContext<'_>) -> Result<(), Error> {
    let mut values = Vec::with_capacity(action.fields.len());
    for (field, expr) in &action.fields {
        let value = expr.eval_json(context.scope).map_err(Error::Expression)?;
        let value = match context.def.data.get(field) {
            Some(spec) => check_data_value(spec, &value).map_err(|(_, message)| {
                Error::Expression(format!(
                    "`{}` gave {value} for `{field}` ({}): {message}",
                    expr.source,
                    spec.ty.as_str()
                ))
            })?,
            None => value,
        };
        values.push((field, value));
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

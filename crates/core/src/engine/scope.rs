//! Builds the names an expression or a template sees.

use std::collections::HashMap;

use cel::objects::Value;
use chrono::{DateTime, Utc};
use indexmap::IndexMap;

use crate::dsl::expr::{from_json, timestamp};
use crate::dsl::{FieldSpec, Scope, ValueType};

fn typed(field: Option<&FieldSpec>, value: &serde_json::Value) -> Value {
    match (field.map(|f| f.ty), value) {
        (Some(ValueType::Datetime), serde_json::Value::String(text)) => {
            match DateTime::parse_from_rfc3339(text) {
                Ok(at) => timestamp(at.with_timezone(&Utc)),
                Err(_) => from_json(value),
            }
        }
        (Some(ValueType::Duration), serde_json::Value::Number(n)) => n
            .as_i64()
            .and_then(chrono::Duration::try_seconds)
            .map(Value::Duration)
            .unwrap_or_else(|| from_json(value)),
        _ => from_json(value),
    }
}

pub struct ScopeParts<'a> {
    pub inputs: &'a IndexMap<String, FieldSpec>,
    pub data_fields: &'a IndexMap<String, FieldSpec>,
    pub input: &'a serde_json::Value,
    pub data: &'a serde_json::Value,
    pub event: &'a serde_json::Value,
    pub instance: &'a serde_json::Value,
    pub now: DateTime<Utc>,
    pub time_zone: chrono_tz::Tz,
}

pub fn build(parts: &ScopeParts<'_>) -> Scope {
    let mut scope = Scope::default();
    scope.time_zone = parts.time_zone;
    for (name, field) in parts.inputs {
        let value = parts.input.get(name).unwrap_or(&serde_json::Value::Null);
        scope.set(name, typed(Some(field), value));
    }
    let mut data = HashMap::new();
    if let Some(object) = parts.data.as_object() {
        for (name, value) in object {
            data.insert(name.clone(), typed(parts.data_fields.get(name), value));
        }
    }
    scope.set("data", Value::from(data));
    scope.set("event", from_json(parts.event));
    scope.set("instance", from_json(parts.instance));
    scope.set("now", timestamp(parts.now));
    scope
}

//! The one expression language of workflow files: CEL (Common Expression
//! Language, <https://cel.dev>), through the `cel` crate. Guards (`when`),
//! computed times (`at`) and computed values (`set`) are CEL source text.
//!
//! Names an expression sees: every input by its name, `data` (instance
//! data), `event` (`{type, payload}`), `now` (a timestamp) and `instance`
//! (`{id, state, business_key}`). Extra functions: `days(n)`, `hours(n)`,
//! `minutes(n)` (durations) and `local_time(ts, "10:00", "Asia/Shanghai")`
//! (the same local date as `ts`, at that wall-clock time in that zone).
//!
//! Compiling happens in `dsl` (no IO); evaluating in `engine`, with `now`
//! passed in: nothing here reads the clock.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use cel::common::ast::Expr as Ast;
use cel::objects::Value;
use cel::{Context, Env, ExecutionError, Program};
use chrono::{DateTime, FixedOffset, NaiveTime, TimeZone, Utc};

/// Names every expression may use besides the inputs.
pub const RESERVED_NAMES: [&str; 4] = ["data", "event", "now", "instance"];

/// The time zone used where a party has none.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Shanghai";

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled CEL expression with its source text.
#[derive(Clone)]
pub struct Expr {
    pub source: String,
    program: Arc<Program>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

/// A syntax error inside an expression, with its column within the source (0-based).
#[derive(Debug)]
pub struct ExprSyntaxError {
    pub column: usize,
    pub message: String,
}

impl Expr {
    /// Compiles `source`.
    ///
    /// # Errors
    /// The first syntax error, with its column.
    pub fn compile(source: &str) -> Result<Expr, ExprSyntaxError> {
        if source.trim().is_empty() {
            return Err(ExprSyntaxError {
                column: 0,
                message: "the expression is empty".into(),
            });
        }
        let program = ENV.compile(source).map_err(|errors| {
            let first = errors.errors.first();
            ExprSyntaxError {
                column: first
                    .map(|e| usize::try_from(e.pos.1).unwrap_or(0))
                    .unwrap_or(0),
                message: first
                    .map(|e| e.msg.clone())
                    .unwrap_or_else(|| "syntax error".into()),
            }
        })?;
        Ok(Expr {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    /// Top-level names the expression reads (`patient`, `data`, …).
    pub fn variables(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        collect_variables(&self.program.expression().expr, &mut out);
        out
    }

    /// Fields read as `data.<field>`.
    pub fn data_fields(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        collect_selects(&self.program.expression().expr, "data", &mut out);
        out
    }

    /// Fields read as `event.payload.<field>`.
    pub fn payload_fields(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        collect_payload_selects(&self.program.expression().expr, &mut out);
        out
    }

    /// Evaluates the expression against `scope`.
    ///
    /// # Errors
    /// A runtime error (a missing field, a type mismatch), as text.
    pub fn eval(&self, scope: &Scope) -> Result<Value, String> {
        let mut context = Context::with_env(ENV.clone());
        register_functions(&mut context, scope.time_zone);
        for (name, value) in &scope.variables {
            context.add_variable_from_value(name.as_str(), value.clone());
        }
        self.program
            .execute(&context)
            .map_err(|e| format!("`{}`: {e}", self.source))
    }

    /// Evaluates a guard: it must give a boolean.
    ///
    /// # Errors
    /// A runtime error, or a value that is not a boolean.
    pub fn eval_bool(&self, scope: &Scope) -> Result<bool, String> {
        match self.eval(scope)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "`{}` must give true or false, gave {other:?}",
                self.source
            )),
        }
    }

    /// Evaluates an expression that must give a point in time.
    ///
    /// # Errors
    /// A runtime error, or a value that is not a timestamp.
    pub fn eval_time(&self, scope: &Scope) -> Result<DateTime<Utc>, String> {
        match self.eval(scope)? {
            Value::Timestamp(ts) => Ok(ts.with_timezone(&Utc)),
            Value::String(text) => DateTime::parse_from_rfc3339(&text)
                .map(|ts| ts.with_timezone(&Utc))
                .map_err(|_| format!("`{}` gave text that is not a timestamp", self.source)),
            other => Err(format!(
                "`{}` must give a timestamp, gave {other:?}",
                self.source
            )),
        }
    }

    /// Evaluates an expression to JSON (timestamps as RFC 3339 text,
    /// durations as seconds).
    ///
    /// # Errors
    /// A runtime error, or a value JSON cannot hold.
    pub fn eval_json(&self, scope: &Scope) -> Result<serde_json::Value, String> {
        let value = self.eval(scope)?;
        to_json(&value)
            .ok_or_else(|| format!("`{}` gave a value that cannot be stored", self.source))
    }
}

/// The variables an expression is evaluated with, and the time zone
/// `local_time` uses when it is given none (the tenant's; Asia/Shanghai
/// unless set).
#[derive(Clone)]
pub struct Scope {
    variables: Vec<(String, Value)>,
    pub time_zone: chrono_tz::Tz,
}

impl Default for Scope {
    fn default() -> Scope {
        Scope {
            variables: Vec::new(),
            time_zone: chrono_tz::Asia::Shanghai,
        }
    }
}

impl Scope {
    pub fn set(&mut self, name: &str, value: Value) {
        if let Some(slot) = self.variables.iter_mut().find(|(n, _)| n == name) {
            slot.1 = value;
        } else {
            self.variables.push((name.to_owned(), value));
        }
    }

    pub fn set_json(&mut self, name: &str, value: &serde_json::Value) {
        self.set(name, from_json(value));
    }
}

/// JSON to a CEL value. Text that is an RFC 3339 timestamp stays text;
/// the engine converts declared `datetime` fields itself.
pub fn from_json(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or_default())
            }
        }
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(from_json).collect()))
        }
        serde_json::Value::Object(map) => {
            let entries: std::collections::HashMap<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect();
            Value::from(entries)
        }
    }
}

/// A timestamp as a CEL value.
pub fn timestamp(at: DateTime<Utc>) -> Value {
    Value::Timestamp(at.fixed_offset())
}

fn to_json(value: &Value) -> Option<serde_json::Value> {
    Some(match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::UInt(u) => serde_json::Value::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map(serde_json::Value::Number)?,
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::Timestamp(ts) => serde_json::Value::String(
            ts.with_timezone(&Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        Value::Duration(d) => serde_json::Value::from(d.num_seconds()),
        Value::List(items) => {
            serde_json::Value::Array(items.iter().map(to_json).collect::<Option<Vec<_>>>()?)
        }
        other => other.json().ok()?,
    })
}

fn register_functions(context: &mut Context<'_, '_>, default_zone: chrono_tz::Tz) {
    fn duration_of(unit: i64, args: &[Value]) -> Result<Value, ExecutionError> {
        match args {
            [Value::Int(n)] => n
                .checked_mul(unit)
                .and_then(chrono::Duration::try_seconds)
                .map(Value::Duration)
                .ok_or_else(|| ExecutionError::function_error("duration", "out of range")),
            _ => Err(ExecutionError::function_error(
                "duration",
                "expects one integer",
            )),
        }
    }
    let _ = context.add_function("days", |cel::extractors::Arguments(args)| {
        duration_of(86_400, &args)
    });
    let _ = context.add_function("hours", |cel::extractors::Arguments(args)| {
        duration_of(3_600, &args)
    });
    let _ = context.add_function("minutes", |cel::extractors::Arguments(args)| {
        duration_of(60, &args)
    });
    // `fen(3000)`: an amount in fen, said explicitly (¥30.00).
    let _ = context.add_function("fen", |cel::extractors::Arguments(args)| {
        match args.as_slice() {
            [Value::Int(n)] => Ok(Value::Int(*n)),
            _ => Err(ExecutionError::function_error("fen", "expects one integer")),
        }
    });
    let _ = context.add_function("local_time", move |cel::extractors::Arguments(args)| {
        local_time(&args, default_zone)
    });
}

fn local_time(args: &[Value], default_zone: chrono_tz::Tz) -> Result<Value, ExecutionError> {
    let fail = |why: &str| ExecutionError::function_error("local_time", why);
    let (ts, clock, zone) = match args {
        [Value::Timestamp(ts), Value::String(clock)]
        | [Value::Timestamp(ts), Value::String(clock), Value::Null] => (ts, clock.as_str(), ""),
        [Value::Timestamp(ts), Value::String(clock), Value::String(zone)] => {
            (ts, clock.as_str(), zone.as_str())
        }
        _ => return Err(fail("expects (timestamp, \"HH:MM\", time zone)")),
    };
    let zone: chrono_tz::Tz = if zone.is_empty() {
        default_zone
    } else {
        zone.parse().map_err(|_| fail("unknown time zone"))?
    };
    let time = NaiveTime::parse_from_str(clock, "%H:%M").map_err(|_| fail("time must be HH:MM"))?;
    let local_date = ts.with_timezone(&zone).date_naive();
    let fixed: DateTime<FixedOffset> = wall_clock(zone, local_date.and_time(time)).fixed_offset();
    Ok(Value::Timestamp(fixed))
}

/// A wall-clock time in `zone`. In an autumn overlap the earlier of the two
/// instants; in a spring gap (02:30 on 2027-03-14 in New York) the time is
/// moved forward by the gap, as calendars do (RFC 5545): 03:30.
pub fn wall_clock(zone: chrono_tz::Tz, local: chrono::NaiveDateTime) -> DateTime<chrono_tz::Tz> {
    if let Some(at) = zone.from_local_datetime(&local).earliest() {
        return at;
    }
    // Read the wall time with the offset in force before the gap.
    use chrono::Offset;
    let before = zone
        .offset_from_local_datetime(&(local - chrono::Duration::hours(6)))
        .earliest()
        .map_or(0, |offset| offset.fix().local_minus_utc());
    let utc = local - chrono::Duration::seconds(i64::from(before));
    zone.from_utc_datetime(&utc)
}

fn collect_variables(expr: &Ast, out: &mut BTreeSet<String>) {
    match expr {
        Ast::Ident(name) => {
            out.insert(name.clone());
        }
        Ast::Select(select) => collect_variables(&select.operand.expr, out),
        Ast::Call(call) => {
            if let Some(target) = &call.target {
                collect_variables(&target.expr, out);
            }
            for arg in &call.args {
                collect_variables(&arg.expr, out);
            }
        }
        Ast::List(list) => {
            for element in &list.elements {
                collect_variables(&element.expr, out);
            }
        }
        Ast::Map(_) | Ast::Struct(_) | Ast::Comprehension(_) => {
            // Comprehensions bind their own names; the dependency check
            // stays conservative and does not look inside them or literals.
        }
        Ast::Literal(_) | Ast::Unspecified => {}
    }
}

fn collect_payload_selects(expr: &Ast, out: &mut BTreeSet<String>) {
    match expr {
        Ast::Select(select) => {
            let is_payload = matches!(&select.operand.expr, Ast::Select(inner)
                if inner.field == "payload" && matches!(&inner.operand.expr, Ast::Ident(name) if name == "event"));
            if is_payload {
                out.insert(select.field.clone());
            } else {
                collect_payload_selects(&select.operand.expr, out);
            }
        }
        Ast::Call(call) => {
            if let Some(target) = &call.target {
                collect_payload_selects(&target.expr, out);
            }
            for arg in &call.args {
                collect_payload_selects(&arg.expr, out);
            }
        }
        Ast::List(list) => {
            for element in &list.elements {
                collect_payload_selects(&element.expr, out);
            }
        }
        _ => {}
    }
}

fn collect_selects(expr: &Ast, root: &str, out: &mut BTreeSet<String>) {
    match expr {
        Ast::Select(select) => {
            if matches!(&select.operand.expr, Ast::Ident(name) if name == root) {
                out.insert(select.field.clone());
            } else {
                collect_selects(&select.operand.expr, root, out);
            }
        }
        Ast::Call(call) => {
            if let Some(target) = &call.target {
                collect_selects(&target.expr, root, out);
            }
            for arg in &call.args {
                collect_selects(&arg.expr, root, out);
            }
        }
        Ast::List(list) => {
            for element in &list.elements {
                collect_selects(&element.expr, root, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        let mut scope = Scope::default();
        scope.set_json("count", &serde_json::json!(2));
        scope.set_json("data", &serde_json::json!({"paid": true}));
        scope.set(
            "visit_ended_at",
            timestamp(
                DateTime::parse_from_rfc3339("2026-11-20T07:00:00Z")
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_default(),
            ),
        );
        scope
    }

    #[test]
    fn the_fields_an_expression_reads_are_found_inside_calls_and_lists() {
        let expr = Expr::compile(
            "event.payload.room + string(event.payload.floor) + [data.ward, event.payload.wing][0] + size(data.beds.list)",
        )
        .unwrap_or_else(|e| panic!("{}", e.message));
        let payload: Vec<String> = expr.payload_fields().into_iter().collect();
        assert_eq!(payload, ["floor", "room", "wing"]);
        let data: Vec<String> = expr.data_fields().into_iter().collect();
        assert_eq!(data, ["beds", "ward"]);
        let method = Expr::compile("event.payload.note.startsWith('x')")
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(
            method.payload_fields().into_iter().collect::<Vec<_>>(),
            ["note"]
        );
        assert!(format!("{method:?}").contains("event.payload.note.startsWith('x')"));
    }

    #[test]
    fn evaluates_guards_and_values() {
        let guard = Expr::compile("count > 1 && data.paid").ok();
        assert_eq!(guard.map(|g| g.eval_bool(&scope())), Some(Ok(true)));
        let value = Expr::compile("count + 1").ok();
        assert_eq!(
            value.map(|v| v.eval_json(&scope())),
            Some(Ok(serde_json::json!(3)))
        );
    }

    #[test]
    fn a_wall_clock_time_in_a_spring_gap_moves_forward_and_the_default_zone_is_the_scopes() {
        let mut scope = Scope {
            time_zone: chrono_tz::America::New_York,
            ..Scope::default()
        };
        scope.set(
            "at",
            timestamp(
                DateTime::parse_from_rfc3339("2027-03-14T12:00:00Z")
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_default(),
            ),
        );
        let gap = Expr::compile("local_time(at, \"02:30\")").unwrap_or_else(|e| panic!("{e:?}"));
        // 02:30 does not exist that night in New York: 03:30 EDT, 07:30 UTC.
        assert_eq!(
            gap.eval_json(&scope).unwrap_or_else(|e| panic!("{e}")),
            serde_json::json!("2027-03-14T07:30:00Z")
        );
        let berlin =
            Expr::compile("local_time(at, \"10:00\", null)").unwrap_or_else(|e| panic!("{e:?}"));
        scope.time_zone = chrono_tz::Europe::Berlin;
        assert_eq!(
            berlin.eval_json(&scope).unwrap_or_else(|e| panic!("{e}")),
            serde_json::json!("2027-03-14T09:00:00Z")
        );
    }

    #[test]
    fn computes_a_local_wall_clock_time_days_later() {
        let at =
            Expr::compile("local_time(visit_ended_at + days(7), \"10:00\", \"Asia/Shanghai\")")
                .ok()
                .map(|e| e.eval_time(&scope()).map(|t| t.to_rfc3339()));
        assert_eq!(at, Some(Ok("2026-11-27T02:00:00+00:00".to_owned())));
    }

    #[test]
    fn reports_syntax_errors_with_a_column() {
        let error = Expr::compile("count >").err();
        assert!(error.is_some());
    }

    #[test]
    fn lists_the_names_an_expression_reads() {
        let expr = Expr::compile("patient.id != '' && data.reminders < 3 && size(doctor) > 0").ok();
        let names: Vec<String> = expr
            .map(|e| e.variables().into_iter().collect())
            .unwrap_or_default();
        assert_eq!(names, vec!["data", "doctor", "patient"]);
        let fields: Vec<String> = Expr::compile("data.reminders < 3")
            .ok()
            .map(|e| e.data_fields().into_iter().collect())
            .unwrap_or_default();
        assert_eq!(fields, vec!["reminders"]);
    }
}

//! The `call` step kind as a workflow file writes it: its YAML, its checks
//! and the checked action. The engine plans it (`engine::actions::call`),
//! the shell executes it (`src/steps/call.rs`).

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::{ExprText, RetrySpec};
use super::validate::Checker;
use super::yaml::YamlPath;
use super::Expr;
use crate::domain::RetryPolicy;

/// `call: { endpoint: his, path: /slots/hold, body: {…}, result: {…} }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CallSpec {
    /// A named endpoint of the tenant (or of the instance's branch):
    /// `o2flow endpoints set his https://his.example/api --secret file:…`.
    pub endpoint: String,
    /// A path appended to the endpoint's URL, such as `/slots/hold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The JSON body: each field a CEL expression over this instance.
    #[serde(default)]
    pub body: IndexMap<String, ExprText>,
    /// Data fields to set from the answer: `data_field: path.in.answer`.
    #[serde(default)]
    pub result: IndexMap<String, String>,
    /// How a failed call is retried; defaults: 5 attempts, 1s doubling up to 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

/// A checked `call`.
#[derive(Debug, Clone)]
pub struct CallAction {
    pub endpoint: String,
    pub path: Option<String>,
    pub body: Vec<(String, Expr)>,
    pub result: IndexMap<String, String>,
    pub retry: Option<RetryPolicy>,
}

impl super::ActionExprs for CallAction {
    fn exprs(&self) -> Vec<&Expr> {
        self.body.iter().map(|(_, e)| e).collect()
    }
}

/// Checks a `call`; `path` points at the `call` key.
pub(crate) fn check(
    checker: &mut Checker<'_>,
    spec: &CallSpec,
    path: &YamlPath,
) -> Option<CallAction> {
    let mut ok = true;
    if !super::is_identifier(&spec.endpoint) {
        ok = false;
        checker.problem(
            "invalid_endpoint",
            &path.key("endpoint"),
            format!("`{}` is not an endpoint name", spec.endpoint),
            "name an endpoint configured for the tenant (`o2flow endpoints set his https://…`): URLs never go in a workflow file",
        );
    }
    if let Some(sub) = &spec.path {
        if !sub.starts_with('/') || sub.contains("://") || sub.contains("..") || sub.contains(' ') {
            ok = false;
            checker.problem(
                "invalid_call_path",
                &path.key("path"),
                format!("`{sub}` is not a path such as /slots/hold"),
                "a path starts with / and stays under the endpoint's URL",
            );
        }
    }
    let mut body = Vec::new();
    for (field, source) in &spec.body {
        match checker.expr(&source.0, &path.key("body").key(field)) {
            Some(expr) => body.push((field.clone(), expr)),
            None => ok = false,
        }
    }
    for (field, answer_path) in &spec.result {
        if !checker.is_data_field(field) {
            ok = false;
            checker.problem(
                "unknown_data_field",
                &path.key("result").key(field),
                format!("`{field}` is not a data field"),
                "the answer's fields are written into data: declare it under `data:`",
            );
        }
        let valid = !answer_path.is_empty()
            && answer_path.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !valid {
            ok = false;
            checker.problem(
                "invalid_result_path",
                &path.key("result").key(field),
                format!("`{answer_path}` is not a path in the answer"),
                "write the answer's field as a dotted path, such as hold.id or items.0.no",
            );
        }
    }
    let retry = match &spec.retry {
        Some(retry) => Some(checker.retry(retry, &path.key("retry"))?),
        None => None,
    };
    ok.then(|| CallAction {
        endpoint: spec.endpoint.clone(),
        path: spec.path.clone(),
        body,
        result: spec.result.clone(),
        retry,
    })
}

#[cfg(test)]
mod tests {
    use crate::dsl::{validate, Catalog};

    /// The diagnostic codes of a flow whose one step is this `call`.
    fn codes(endpoint: &str, path: &str, result: &str) -> Vec<String> {
        let source = format!(
            r#"
name: calling
inputs:
  patient: party
data:
  hold_id: {{ type: string, default: "" }}
start: asking
states:
  asking:
    enter:
      - call: {{ endpoint: "{endpoint}", path: "{path}", body: {{ id: patient.id }}, result: {{ hold_id: "{result}" }} }}
    on:
      call.succeeded: done
  done: {{ final: completed }}
"#
        );
        let (def, diagnostics) = validate("calling.yaml", &source, &Catalog::default());
        assert_eq!(def.is_some(), diagnostics.is_empty());
        diagnostics.into_iter().map(|d| d.code.to_owned()).collect()
    }

    #[test]
    fn endpoints_are_names_paths_stay_under_them_and_results_are_dotted_paths() {
        for endpoint in ["his", "his_2", "pms9"] {
            assert_eq!(
                codes(endpoint, "/slots/hold", "hold.id"),
                Vec::<String>::new(),
                "{endpoint}"
            );
        }
        for endpoint in ["HIS", "1his", "his-2", "", "https://his.example"] {
            assert_eq!(
                codes(endpoint, "/slots", "hold.id"),
                ["invalid_endpoint"],
                "{endpoint}"
            );
        }
        for path in ["slots", "/a/../b", "/x y", "/ok://x"] {
            assert_eq!(
                codes("his", path, "hold.id"),
                ["invalid_call_path"],
                "{path}"
            );
        }
        for result in ["items.0.no", "a-b.c_d", "invoice"] {
            assert_eq!(codes("his", "/x", result), Vec::<String>::new(), "{result}");
        }
        for result in ["hold..id", "hold id", "", ".x", "hold.id."] {
            assert_eq!(
                codes("his", "/x", result),
                ["invalid_result_path"],
                "{result}"
            );
        }
    }

    #[test]
    fn a_call_evaluates_its_body_expressions() {
        use crate::dsl::{Action, ActionExprs};
        let source = r#"
name: calling
inputs:
  patient: party
  slot: string
start: asking
states:
  asking:
    enter:
      - call: { endpoint: his, body: { id: patient.id, slot: slot } }
    on:
      call.succeeded: done
  done: { final: completed }
"#;
        let (def, diagnostics) = validate("calling.yaml", source, &Catalog::default());
        assert_eq!(diagnostics, vec![]);
        let def = def.unwrap_or_else(|| panic!("no definition"));
        let Some(Action::Call(call)) = def.states["asking"].enter.first() else {
            panic!("not a call");
        };
        let sources: Vec<&str> = call.exprs().iter().map(|e| e.source.as_str()).collect();
        assert_eq!(sources, ["patient.id", "slot"]);
    }
}

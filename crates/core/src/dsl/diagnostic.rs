use std::fmt::Write as _;

use serde::Serialize;

use super::yaml::{Pos, SourceMap, YamlPath};

/// One problem in a workflow file, with where it is and how to fix it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Diagnostic {
    /// A stable snake_case code, e.g. `unknown_state`.
    pub code: &'static str,
    pub message: String,
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The YAML path of the node the problem is about.
    pub path: String,
    /// How to fix it. Every diagnostic has one.
    pub hint: String,
    #[serde(skip)]
    width: usize,
}

/// Where a diagnostic points inside the node its path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// The mapping key (for unknown fields and names).
    Key,
    /// The value.
    Value,
    /// A column inside a scalar value (for errors inside expressions).
    Inside(usize),
}

/// Collects diagnostics for one file.
pub struct Sink<'a> {
    pub file: &'a str,
    pub map: &'a SourceMap,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub fn new(file: &'a str, map: &'a SourceMap) -> Sink<'a> {
        Sink {
            file,
            map,
            diagnostics: Vec::new(),
        }
    }

    pub fn push(
        &mut self,
        code: &'static str,
        path: &YamlPath,
        anchor: Anchor,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let (pos, width) = match self.map.find(path) {
            Some((found, span)) => {
                let exact = &found == path;
                match anchor {
                    Anchor::Key if exact => span.key.unwrap_or(span.value),
                    Anchor::Inside(column) if exact => {
                        let shift = usize::from(span.quoted);
                        (
                            Pos {
                                line: span.value.0.line,
                                col: span.value.0.col + shift + column,
                            },
                            1,
                        )
                    }
                    _ => span.value,
                }
            }
            None => (Pos { line: 1, col: 1 }, 1),
        };
        self.diagnostics.push(Diagnostic {
            code,
            message: message.into(),
            file: self.file.to_owned(),
            line: pos.line,
            column: pos.col,
            path: path.to_string(),
            hint: hint.unwrap_or_else(|| default_hint(code).to_owned()),
            width,
        });
    }
}

impl Diagnostic {
    pub fn at(
        code: &'static str,
        file: &str,
        pos: Pos,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            file: file.to_owned(),
            line: pos.line,
            column: pos.col,
            path: YamlPath::root().to_string(),
            hint: hint.unwrap_or_else(|| default_hint(code).to_owned()),
            width: 1,
        }
    }

    /// Prints the diagnostic the way rustc and cargo do, with the source line.
    pub fn render(&self, source: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "error[{}]: {}", self.code, self.message);
        let gutter = self.line.to_string().len();
        let pad = " ".repeat(gutter);
        let _ = writeln!(out, "{pad}--> {}:{}:{}", self.file, self.line, self.column);
        if let Some(text) = source.lines().nth(self.line.saturating_sub(1)) {
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{} | {}", self.line, text);
            let lead: String = text
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} | {lead}{}", "^".repeat(self.width.max(1)));
        }
        let _ = writeln!(out, "{pad} = at: {}", self.path);
        let _ = writeln!(out, "{pad} = help: {}", self.hint);
        out
    }
}

/// The hint of a diagnostic that was not given a specific one.
fn default_hint(code: &str) -> &'static str {
    match code {
        "yaml_syntax" => "check indentation, quotes and brackets around this place",
        "unknown_field" => "remove it; `o2flow schema` lists every field",
        _ => "see docs/dsl.md for this part of the workflow language",
    }
}

/// The closest of `candidates` to `name`, when it is close enough to be a typo.
pub fn did_you_mean<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|candidate| (levenshtein(name, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len().max(name.len()) / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edit distance counting a swap of two neighbours as one edit
/// (optimal string alignment), so `titel` is one step from `title`.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut table = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        table[i * width] = i;
    }
    for (j, cell) in table.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[(i - 1) * width + j] + 1)
                .min(table[i * width + j - 1] + 1)
                .min(table[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[(i - 2) * width + j - 2] + 1);
            }
            table[i * width + j] = best;
        }
    }
    table[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("rebookd", ["rebooked", "expired"]),
            Some("rebooked")
        );
        assert_eq!(did_you_mean("zzz", ["rebooked", "expired"]), None);
        assert_eq!(did_you_mean("titel", ["title", "timers"]), Some("title"));
    }

    #[test]
    fn edit_distance_counts_each_insertion_deletion_change_and_swap_once() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("abc", "abcd"), 1);
        assert_eq!(levenshtein("abcd", "abc"), 1);
        assert_eq!(levenshtein("abcd", "abxd"), 1);
        assert_eq!(levenshtein("titel", "title"), 1);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("ab", "ba"), 1);
    }

    #[test]
    fn a_diagnostic_without_its_own_hint_gets_its_codes() {
        assert_eq!(
            default_hint("yaml_syntax"),
            "check indentation, quotes and brackets around this place"
        );
        assert_eq!(
            default_hint("unknown_field"),
            "remove it; `o2flow schema` lists every field"
        );
        assert_eq!(
            default_hint("anything_else"),
            "see docs/dsl.md for this part of the workflow language"
        );
    }
}

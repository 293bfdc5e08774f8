//! YAML to JSON with positions: the workflow file is read into a
//! `serde_json::Value` for serde, and every node's position is kept in a
//! `SourceMap` keyed by its path, so any diagnostic can point at the line
//! and column it is about.

use std::collections::HashMap;
use std::fmt;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path from the document root, printed as `states.waiting.on."a.b"[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct YamlPath(pub Vec<Seg>);

impl YamlPath {
    pub fn root() -> YamlPath {
        YamlPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> YamlPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        YamlPath(segs)
    }

    pub fn index(&self, index: usize) -> YamlPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        YamlPath(segs)
    }

    pub fn parent(&self) -> Option<YamlPath> {
        let mut segs = self.0.clone();
        segs.pop().map(|_| YamlPath(segs))
    }
}

/// `k1.k2`, quoting keys that are not plain identifiers.
impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let plain = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if plain {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A position in the file: 1-based line and column, counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpan {
    /// Where the mapping key stands, for nodes that are mapping values.
    pub key: Option<(Pos, usize)>,
    /// Where the value starts, and how many characters it covers on its first line.
    pub value: (Pos, usize),
    /// The value is a quoted scalar (its text starts one column later).
    pub quoted: bool,
}

/// Positions of every node, by path.
#[derive(Debug, Default)]
pub struct SourceMap {
    spans: HashMap<YamlPath, NodeSpan>,
}

impl SourceMap {
    /// The span of the node at `path`, or of its nearest ancestor that exists.
    pub fn find(&self, path: &YamlPath) -> Option<(YamlPath, NodeSpan)> {
        let mut current = Some(path.clone());
        while let Some(candidate) = current {
            if let Some(span) = self.spans.get(&candidate) {
                return Some((candidate, *span));
            }
            current = candidate.parent();
        }
        None
    }
}

/// A YAML syntax error with its position.
#[derive(Debug)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Reads one YAML document into JSON plus positions.
///
/// # Errors
/// A syntax error, more than one document, or a YAML feature the DSL does
/// not use (aliases, tags, non-scalar keys).
pub fn load(source: &str) -> Result<(serde_json::Value, SourceMap), SyntaxError> {
    let docs = MarkedYaml::load_from_str(source).map_err(|error| SyntaxError {
        pos: Pos {
            line: error.marker().line(),
            col: error.marker().col() + 1,
        },
        message: error.info().to_owned(),
    })?;
    let lines: Vec<Vec<char>> = source.lines().map(|l| l.chars().collect()).collect();
    let mut map = SourceMap::default();
    match docs.len() {
        0 => Ok((serde_json::Value::Null, map)),
        1 => {
            let mut converter = Converter {
                lines: &lines,
                map: &mut map,
            };
            let root = &docs[0];
            let value = converter.node(root, &YamlPath::root(), None)?;
            Ok((value, map))
        }
        _ => Err(SyntaxError {
            pos: to_pos(&docs[1].span.start),
            message: "a workflow file holds one YAML document; remove the `---` and what follows, or split the file".into(),
        }),
    }
}

fn to_pos(marker: &saphyr::Marker) -> Pos {
    Pos {
        line: marker.line(),
        col: marker.col() + 1,
    }
}

struct Converter<'a> {
    lines: &'a [Vec<char>],
    map: &'a mut SourceMap,
}

impl Converter<'_> {
    fn width(&self, node: &MarkedYaml<'_>) -> usize {
        let start = node.span.start;
        let end = node.span.end;
        if end.line() == start.line() && end.col() > start.col() {
            end.col() - start.col()
        } else {
            let line = self
                .lines
                .get(start.line().saturating_sub(1))
                .map(|l| l.len())
                .unwrap_or(0);
            line.saturating_sub(start.col()).max(1)
        }
    }

    fn starts_with_quote(&self, node: &MarkedYaml<'_>) -> bool {
        let start = node.span.start;
        self.lines
            .get(start.line().saturating_sub(1))
            .and_then(|l| l.get(start.col()))
            .is_some_and(|c| *c == '"' || *c == '\'')
    }

    fn node(
        &mut self,
        node: &MarkedYaml<'_>,
        path: &YamlPath,
        key: Option<(Pos, usize)>,
    ) -> Result<serde_json::Value, SyntaxError> {
        let span = NodeSpan {
            key,
            value: (to_pos(&node.span.start), self.width(node)),
            quoted: self.starts_with_quote(node),
        };
        self.map.spans.insert(path.clone(), span);
        let unsupported = |what: &str| SyntaxError {
            pos: to_pos(&node.span.start),
            message: format!("{what} are not supported in workflow files"),
        };
        Ok(match &node.data {
            YamlData::Value(scalar) => scalar_to_json(scalar),
            YamlData::Representation(text, _, _) => serde_json::Value::String(text.to_string()),
            YamlData::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.node(item, &path.index(i), None)?);
                }
                serde_json::Value::Array(out)
            }
            YamlData::Mapping(entries) => {
                let mut out = serde_json::Map::with_capacity(entries.len());
                for (k, v) in entries {
                    let name = match &k.data {
                        YamlData::Value(Scalar::String(s)) => s.to_string(),
                        YamlData::Value(Scalar::Null) => String::new(),
                        YamlData::Value(scalar) => match scalar_to_json(scalar) {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        },
                        _ => {
                            return Err(SyntaxError {
                                pos: to_pos(&k.span.start),
                                message: "mapping keys must be plain text".into(),
                            })
                        }
                    };
                    let key_span = (to_pos(&k.span.start), self.width(k));
                    let value = self.node(v, &path.key(&name), Some(key_span))?;
                    out.insert(name, value);
                }
                serde_json::Value::Object(out)
            }
            YamlData::Tagged(_, _) => return Err(unsupported("YAML tags")),
            YamlData::Alias(_) => return Err(unsupported("YAML aliases")),
            YamlData::BadValue => return Err(unsupported("bad values")),
        })
    }
}

fn scalar_to_json(scalar: &Scalar<'_>) -> serde_json::Value {
    match scalar {
        Scalar::Null => serde_json::Value::Null,
        Scalar::Boolean(b) => serde_json::Value::Bool(*b),
        Scalar::Integer(i) => serde_json::Value::from(*i),
        Scalar::FloatingPoint(f) => serde_json::Number::from_f64(f.into_inner())
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Scalar::String(s) => serde_json::Value::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_position_of_every_node() {
        let source = "name: demo\nstates:\n  a:\n    on:\n      x.y: b\n";
        let (value, map) = load(source).map_err(|e| e.message).unwrap_or_default();
        assert_eq!(value["states"]["a"]["on"]["x.y"], "b");
        let path = YamlPath::root().key("states").key("a").key("on").key("x.y");
        let (_, span) = map.find(&path).unwrap_or_else(|| panic!("no span"));
        assert_eq!(span.value.0, Pos { line: 5, col: 12 });
        assert_eq!(span.key.map(|k| k.0), Some(Pos { line: 5, col: 7 }));
        assert_eq!(path.to_string(), "states.a.on.\"x.y\"");
    }

    #[test]
    fn reports_syntax_errors_with_a_position() {
        let error = load("name: [unclosed\n").err().map(|e| e.pos.line);
        assert_eq!(error, Some(2));
    }

    #[test]
    fn refuses_duplicate_keys() {
        let error = load("a: 1\na: 2\n").err().map(|e| e.message);
        assert!(error.is_some_and(|m| m.contains("duplicate")));
    }
}

//! Message templates: one directory per message under `templates/`, with
//! `title.txt.tera` and `body.txt.tera`. All are loaded and compiled at
//! start-up, so a syntax error stops the server before it serves.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use chrono::{DateTime, Utc};
use tera::{Context, Tera, Value};

use crate::domain::Money;
use crate::dsl::expr::DEFAULT_TIME_ZONE;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("templates in {dir}: {message}")]
    Load { dir: String, message: String },
    #[error("template `{0}` does not exist")]
    Unknown(String),
    #[error("template `{name}` failed to render: {message}")]
    Render { name: String, message: String },
}

/// The compiled templates.
pub struct Templates {
    tera: Tera,
    names: BTreeSet<String>,
}

/// A rendered message, in each channel's own form: every message has a
/// title and a text body (inbox, webhook, SMS); a template directory may
/// add a WeChat template message (`wechat.json.tera`: template id and keyed
/// data) and an e-mail (`subject.txt.tera`, `body.html.tera`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub title: String,
    pub body: String,
    /// The WeChat Official Account template message, when the template has one.
    pub wechat: Option<WechatForm>,
    /// The e-mail: its subject (default: the title), the text body and the HTML body, if any.
    pub email: EmailForm,
}

/// A WeChat template message: the template id from the Official Account's
/// back office and the value of each of its keys (`thing1`, `time2`, …).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WechatForm {
    pub template_id: String,
    pub data: indexmap::IndexMap<String, String>,
    /// Where tapping the message leads.
    #[serde(default)]
    pub url: Option<String>,
}

/// An e-mail: subject, text and, when the template has one, HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailForm {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// The optional parts of a message directory, each a channel's own form.
const OPTIONAL_PARTS: [&str; 3] = ["wechat.json.tera", "subject.txt.tera", "body.html.tera"];

impl Templates {
    /// Loads every `<name>/title.txt.tera` and `<name>/body.txt.tera` under `dir`.
    ///
    /// # Errors
    /// A directory that cannot be read, a template that does not compile,
    /// or a message directory missing one of its two files.
    pub fn load(dir: &Path) -> Result<Templates, Error> {
        let fail = |message: String| Error::Load {
            dir: dir.display().to_string(),
            message,
        };
        let mut tera = Tera::default();
        let mut names = BTreeSet::new();
        let entries = std::fs::read_dir(dir).map_err(|e| fail(e.to_string()))?;
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            for part in ["title.txt.tera", "body.txt.tera"] {
                let file = path.join(part);
                if !file.is_file() {
                    return Err(fail(format!("{name}/ has no {part}")));
                }
                files.push((file, Some(format!("{name}/{part}"))));
            }
            for part in OPTIONAL_PARTS {
                let file = path.join(part);
                if file.is_file() {
                    files.push((file, Some(format!("{name}/{part}"))));
                }
            }
            names.insert(name);
        }
        tera.add_template_files(files)
            .map_err(|e| fail(chain(&e)))?;
        register_filters(&mut tera);
        Ok(Templates { tera, names })
    }

    /// Builds templates from strings: `(name, title, body)`.
    ///
    /// # Errors
    /// A template that does not compile.
    pub fn from_strings(items: &[(&str, &str, &str)]) -> Result<Templates, Error> {
        let mut tera = Tera::default();
        let mut names = BTreeSet::new();
        for (name, title, body) in items {
            tera.add_raw_templates(vec![
                (format!("{name}/title.txt.tera"), *title),
                (format!("{name}/body.txt.tera"), *body),
            ])
            .map_err(|e| Error::Load {
                dir: "(memory)".into(),
                message: chain(&e),
            })?;
            names.insert((*name).to_owned());
        }
        register_filters(&mut tera);
        Ok(Templates { tera, names })
    }

    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// Renders message `name` with `context`.
    ///
    /// # Errors
    /// An unknown template, or one that fails on this context.
    pub fn render(&self, name: &str, context: &serde_json::Value) -> Result<Rendered, Error> {
        if !self.names.contains(name) {
            return Err(Error::Unknown(name.to_owned()));
        }
        let context = Context::from_value(context.clone()).map_err(|e| Error::Render {
            name: name.to_owned(),
            message: chain(&e),
        })?;
        let render = |part: &str| {
            self.tera
                .render(&format!("{name}/{part}"), &context)
                .map_err(|e| Error::Render {
                    name: name.to_owned(),
                    message: chain(&e),
                })
        };
        let has = |part: &str| {
            self.tera
                .get_template_names()
                .any(|t| t == format!("{name}/{part}"))
        };
        let title = render("title.txt.tera")?.trim().to_owned();
        let body = render("body.txt.tera")?.trim_end().to_owned();
        let wechat = if has("wechat.json.tera") {
            let text = render("wechat.json.tera")?;
            Some(
                serde_json::from_str::<WechatForm>(&text).map_err(|e| Error::Render {
                    name: name.to_owned(),
                    message: format!("wechat.json.tera is not a template message ({{\"template_id\", \"data\": {{key: text}}, \"url\"}}): {e}"),
                })?,
            )
        } else {
            None
        };
        let email = EmailForm {
            subject: if has("subject.txt.tera") {
                render("subject.txt.tera")?.trim().to_owned()
            } else {
                title.clone()
            },
            text: body.clone(),
            html: if has("body.html.tera") {
                Some(render("body.html.tera")?)
            } else {
                None
            },
        };
        Ok(Rendered {
            title,
            body,
            wechat,
            email,
        })
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn register_filters(tera: &mut Tera) {
    tera.register_filter("yuan", yuan);
    tera.register_filter("local_date", local_date);
    tera.register_filter("local_datetime", local_datetime);
}

/// `{{ amount | yuan }}`: integer fen as `¥15.00`.
fn yuan(value: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let fen = value
        .as_i64()
        .ok_or_else(|| tera::Error::msg("yuan: expects an amount in fen"))?;
    Ok(Value::String(Money::from_fen(fen).to_string()))
}

fn zoned(value: &Value, args: &HashMap<String, Value>, format: &str) -> tera::Result<Value> {
    let text = value
        .as_str()
        .ok_or_else(|| tera::Error::msg("expects an RFC 3339 date and time"))?;
    let at: DateTime<Utc> = DateTime::parse_from_rfc3339(text)
        .map_err(|_| tera::Error::msg("expects an RFC 3339 date and time"))?
        .with_timezone(&Utc);
    let zone = args
        .get("tz")
        .and_then(Value::as_str)
        .filter(|z| !z.is_empty())
        .unwrap_or(DEFAULT_TIME_ZONE);
    let zone: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
    Ok(Value::String(
        at.with_timezone(&zone).format(format).to_string(),
    ))
}

/// `{{ at | local_date(tz=party.time_zone) }}`: `2026-11-23`.
fn local_date(value: &Value, args: &HashMap<String, Value>) -> tera::Result<Value> {
    zoned(value, args, "%Y-%m-%d")
}

/// `{{ at | local_datetime(tz=party.time_zone) }}`: `2026-11-23 10:00`.
fn local_datetime(value: &Value, args: &HashMap<String, Value>) -> tera::Result<Value> {
    zoned(value, args, "%Y-%m-%d %H:%M")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_follow_up_reminder() {
        let templates = Templates::load(Path::new("templates")).unwrap_or_else(|e| panic!("{e}"));
        let rendered = templates
            .render(
                "follow_up_reminder",
                &serde_json::json!({
                    "input": {"department": "心内科", "doctor": "李明", "visit_ended_at": "2026-11-20T07:00:00Z"},
                    "party": {"id": "p1", "name": "张三", "time_zone": null},
                    "data": {},
                    "instance": {"id": "inst-1"},
                    "public_url": "http://127.0.0.1:8080"
                }),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!(format!("{}\n---\n{}", rendered.title, rendered.body));
    }

    #[test]
    fn formats_fen_as_yuan() {
        let templates = Templates::from_strings(&[("bill", "{{ amount | yuan }}", "x")])
            .unwrap_or_else(|e| panic!("{e}"));
        let rendered = templates.render("bill", &serde_json::json!({"amount": 1550}));
        assert_eq!(rendered.map(|r| r.title).ok(), Some("¥15.50".to_owned()));
    }

    #[test]
    fn a_message_carries_each_channels_form() {
        let dir = std::env::temp_dir().join(format!("o2flow-forms-{}", std::process::id()));
        let message = dir.join("visit_called");
        std::fs::create_dir_all(&message).unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, text: &str| {
            std::fs::write(message.join(name), text).unwrap_or_else(|e| panic!("{e}"));
        };
        write("title.txt.tera", "请就诊 / Your turn");
        write("body.txt.tera", "{{ party.name }}: room {{ input.room }}");
        write(
            "wechat.json.tera",
            r#"{"template_id": "TPL-1", "data": {"thing1": "{{ input.room }}", "time2": "09:30"}, "url": "{{ public_url }}/q"}"#,
        );
        write("subject.txt.tera", "Room {{ input.room }}");
        write("body.html.tera", "<p>Room <b>{{ input.room }}</b></p>");
        let context = serde_json::json!({"party": {"name": "张三"}, "input": {"room": "3"}, "public_url": "https://o2.example"});
        let templates = Templates::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let rendered = templates
            .render("visit_called", &context)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rendered.title, "请就诊 / Your turn");
        assert_eq!(rendered.body, "张三: room 3");
        let wechat = rendered.wechat.unwrap_or_else(|| panic!("no WeChat form"));
        assert_eq!(wechat.template_id, "TPL-1");
        assert_eq!(wechat.data.get("thing1").map(String::as_str), Some("3"));
        assert_eq!(wechat.url.as_deref(), Some("https://o2.example/q"));
        assert_eq!(rendered.email.subject, "Room 3");
        assert_eq!(rendered.email.text, "张三: room 3");
        assert_eq!(rendered.email.html.as_deref(), Some("<p>Room <b>3</b></p>"));
        // A WeChat form that is not a template message fails to render,
        // naming the file; without the optional files, only title and body.
        write("wechat.json.tera", r#"{"template": "TPL-1"}"#);
        let templates = Templates::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let error = templates
            .render("visit_called", &context)
            .err()
            .map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("wechat.json.tera")),
            "{error:?}"
        );
        for part in ["wechat.json.tera", "subject.txt.tera", "body.html.tera"] {
            std::fs::remove_file(message.join(part)).unwrap_or_else(|e| panic!("{e}"));
        }
        let plain = Templates::load(&dir)
            .and_then(|t| t.render("visit_called", &context))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plain.wechat, None);
        assert_eq!(plain.email.subject, "请就诊 / Your turn");
        assert_eq!(plain.email.html, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

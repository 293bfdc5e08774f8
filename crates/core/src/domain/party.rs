use serde::{Deserialize, Serialize};

/// A person o2flow can reach: a patient, a guest, a relative.
///
/// Only `id` is required; each channel uses the contact field it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub openid: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
}

impl Party {
    /// The name as shown to staff and in logs: the first character kept,
    /// the rest masked (`张**`), so personal data does not spread.
    pub fn masked_name(&self) -> String {
        self.name
            .as_deref()
            .map(Party::mask_name)
            .unwrap_or_default()
    }

    /// `张三` → `张*`: any name masked as `masked_name` does.
    pub fn mask_name(name: &str) -> String {
        let mut chars = name.chars();
        let first = chars.next().map(String::from).unwrap_or_default();
        let rest = chars.count().max(1);
        format!("{first}{}", "*".repeat(rest))
    }
}

/// `13800001234` → `138****1234`: the first three and last four digits
/// kept; a short number keeps only its last two.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() >= 8 {
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{head}****{tail}")
    } else {
        let keep = chars.len().min(2);
        let tail: String = chars[chars.len() - keep..].iter().collect();
        format!("{}{tail}", "*".repeat(chars.len() - keep))
    }
}

/// `zhang.san@example.com` → `z***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().map(String::from).unwrap_or_default();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// What is left of an identifier that must not be shown at all (an
/// openid, an ID number or its digest).
pub const HIDDEN: &str = "[hidden]";

/// Masks personal data wherever it sits in a JSON value (instance input
/// and data, history details, event payloads): names of people (`张*`),
/// phones (`138****1234`), e-mail addresses, and openids, unionids, ID
/// numbers and their digests hidden. A `name` is a person's when it sits
/// beside a person's fields (`id`, `phone`, `openid`, …); a bill item's
/// `name` (a drug) stays.
pub fn mask_personal(value: &mut serde_json::Value) {
    use serde_json::Value as J;
    match value {
        J::Array(items) => items.iter_mut().for_each(mask_personal),
        J::Object(object) => {
            let is_person = [
                "id",
                "phone",
                "openid",
                "email",
                "time_zone",
                "id_digest",
                "id_number",
            ]
            .iter()
            .any(|key| object.contains_key(*key));
            for (key, field) in object.iter_mut() {
                match (key.as_str(), &*field) {
                    ("phone" | "mobile", J::String(text)) => *field = J::String(mask_phone(text)),
                    ("email", J::String(text)) => *field = J::String(mask_email(text)),
                    (
                        "openid" | "unionid" | "sub_openid" | "id_number" | "id_digest",
                        J::String(_),
                    ) => {
                        *field = J::String(HIDDEN.into());
                    }
                    ("name", J::String(text)) if is_person => {
                        *field = J::String(Party::mask_name(text));
                    }
                    _ => mask_personal(field),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_people_wherever_they_sit_and_leaves_the_rest() {
        let mut value = serde_json::json!({
            "patient": {"id": "p1", "name": "张三", "phone": "13800001234", "openid": "o-abc", "email": "zhang@example.com"},
            "bill": {"items": [{"name": "阿莫西林", "amount": 1250}]},
            "events": [{"payer": {"name": "李四", "id_digest": "abcd"}}],
            "department": "心内科"
        });
        mask_personal(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "patient": {"id": "p1", "name": "张*", "phone": "138****1234", "openid": HIDDEN, "email": "z***@example.com"},
                "bill": {"items": [{"name": "阿莫西林", "amount": 1250}]},
                "events": [{"payer": {"name": "李*", "id_digest": HIDDEN}}],
                "department": "心内科"
            })
        );
        assert_eq!(mask_phone("5551234"), "*****34");
    }

    #[test]
    fn masks_all_but_the_first_character() {
        let party = Party {
            id: "p1".into(),
            name: Some("张三丰".into()),
            phone: None,
            email: None,
            openid: None,
            time_zone: None,
        };
        assert_eq!(party.masked_name(), "张**");
    }
}

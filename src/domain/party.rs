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

#[cfg(test)]
mod tests {
    use super::*;

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

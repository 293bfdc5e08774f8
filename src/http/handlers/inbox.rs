use actix_web::{web, HttpResponse};

use crate::http::auth::{Caller, INBOX_READERS};
use crate::http::dto::InboxMessage;
use crate::http::error::ApiError;
use crate::http::AppState;

/// What a staff key sees in place of a link.
pub const LINK_WITHHELD: &str = "[link withheld: only the patient's channel shows it]";

/// `GET /api/v1/inbox/{party_id}`: messages delivered to a party, newest
/// first. Not for `viewer` keys; links (pay pages, later codes and door
/// keys) are the party's capability and shown to `integration` keys only,
/// the system that delivers them.
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    party_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&INBOX_READERS)?;
    let rows = state
        .reads
        .inbox(&caller.tenant_id, &party_id, 200)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut messages: Vec<InboxMessage> = rows.iter().map(InboxMessage::from).collect();
    if !caller.sees_links() {
        for message in &mut messages {
            message.title = withhold_links(&message.title);
            message.body = withhold_links(&message.body);
        }
    }
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({"party_id": party_id.as_str(), "messages": messages})))
}

/// Replaces every `http://` or `https://` link in `text`.
fn withhold_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["http://", "https://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        out.push_str(&rest[..at]);
        out.push_str(LINK_WITHHELD);
        let link = &rest[at..];
        let end = link
            .find(|c: char| c.is_whitespace() || "，。；）)\"'<>".contains(c))
            .unwrap_or(link.len());
        rest = &link[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_withheld_and_the_rest_kept() {
        assert_eq!(
            withhold_links("请缴费：http://x/p/pay/abc 谢谢\n再见 https://y/z。"),
            format!("请缴费：{LINK_WITHHELD} 谢谢\n再见 {LINK_WITHHELD}。")
        );
        assert_eq!(withhold_links("no link"), "no link");
    }
}

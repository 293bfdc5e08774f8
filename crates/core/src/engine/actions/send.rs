use serde_json::json;

use super::ActionContext;
use crate::domain::Party;
use crate::dsl::SendAction;
use crate::engine::{Effect, EffectKind, Error, HistoryEntry, SendEffect};

/// Emits a `Send` effect whose template context is fixed now, so that the
/// message says what was true when the flow decided to send it.
pub fn run(action: &SendAction, context: &mut ActionContext<'_>) -> Result<(), Error> {
    let party_json = context.input.get(&action.to).cloned().unwrap_or_default();
    let party: Party = match serde_json::from_value(party_json.clone()) {
        Ok(party) => party,
        Err(_) => {
            // An optional party left out: nothing to send to.
            context.history.push(HistoryEntry {
                kind: "send_skipped",
                detail: json!({"to": action.to, "template": action.template, "reason": "no party given"}),
            });
            return Ok(());
        }
    };
    // A payment planned earlier in this step (`pay` then `send` in one
    // list): the message can show it and link to its pay page.
    let payment = context
        .effects
        .iter()
        .rev()
        .find_map(|effect| match &effect.kind {
            EffectKind::Pay(pay) => Some(json!({
                "id": pay.out_trade_no,
            "key": pay.name,
                "amount": pay.amount,
                "amount_yuan": crate::domain::Money::from_fen(pay.amount).to_yuan_string(),
                "description": pay.description,
                "expires_at": pay.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            })),
            _ => None,
        });
    let template_context = json!({
        "payment": payment,
        "input": context.input,
        "data": context.data,
        "party": party_json,
        "event": context.event,
        "instance": {"id": context.instance_id, "workflow": context.def.name, "state": context.state},
        "now": context.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    context.history.push(HistoryEntry {
        kind: "effect_planned",
        detail: json!({"effect": "send", "key": context.key, "template": action.template, "to": party.id}),
    });
    context.effects.push(Effect {
        key: context.key.clone(),
        kind: EffectKind::Send(SendEffect {
            to: party,
            template: action.template.clone(),
            channels: action.channels.clone(),
            purpose: action.purpose.clone(),
            context: template_context,
            retry: action.retry,
        }),
    });
    Ok(())
}

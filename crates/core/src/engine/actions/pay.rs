use serde_json::{json, Value as Json};

use super::ActionContext;
use crate::domain::{bill, Money, Party};
use crate::dsl::{Expr, PayAction, RefundAction};
use crate::engine::{
    business_number, Effect, EffectKind, Error, HistoryEntry, InsuranceRefund, PayEffect,
    RefundEffect,
};

/// WeChat Pay's limit on `description`, in characters.
const MAX_DESCRIPTION: usize = 127;

/// Evaluates the amount (or the bill's amount due) and emits a `Pay`
/// effect whose `out_trade_no` derives from the effect key.
pub fn run(action: &PayAction, context: &mut ActionContext<'_>) -> Result<(), Error> {
    let payer_json = context
        .input
        .get(&action.payer)
        .cloned()
        .unwrap_or_default();
    let payer: Party = serde_json::from_value(payer_json).map_err(|_| {
        Error::Expression(format!(
            "`{}` is not given: nobody to ask to pay",
            action.payer
        ))
    })?;
    let (amount, checked) = match (&action.amount, &action.bill) {
        (Some(expr), _) => (fen_of(expr, context)?, None),
        (None, Some(expr)) => {
            let value = expr.eval_json(context.scope).map_err(Error::Expression)?;
            let checked = bill::from_fen_json(&value)
                .map_err(|e| Error::Expression(format!("`{}`: {e}", expr.source)))?;
            (checked.wechat_pay_cash, Some(checked))
        }
        (None, None) => return Err(Error::Expression("`pay` has no amount".into())),
    };
    let insurance_only = checked.as_ref().is_some_and(|c| {
        c.bill.settlement.is_some() && c.mix_pay_type == bill::MixPayType::InsuranceOnly
    });
    if amount <= 0 && !insurance_only {
        return Err(Error::Expression(format!(
            "the amount to pay is {}: a payment is at least ¥0.01",
            Money::from_fen(amount)
        )));
    }
    let description = text_of(&action.description, context)?;
    let description: String = description.chars().take(MAX_DESCRIPTION).collect();
    let out_trade_no = business_number("O2", &context.key);
    let expires_at = context.now + action.expires_in;
    context.history.push(HistoryEntry {
        kind: "effect_planned",
        detail: json!({"effect": "pay", "key": context.key, "payment": out_trade_no, "name": action.key, "amount": amount, "payer": payer.id, "scene": action.scene.as_str(), "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}),
    });
    context.effects.push(Effect {
        key: context.key.clone(),
        kind: EffectKind::Pay(PayEffect {
            out_trade_no,
            name: action.key.clone(),
            payer,
            scene: action.scene,
            description,
            amount,
            bill: checked.map(Box::new),
            expires_at,
        }),
    });
    Ok(())
}

/// Emits a `Refund` effect; which payment and how much may be left to the runtime.
pub fn run_refund(action: &RefundAction, context: &mut ActionContext<'_>) -> Result<(), Error> {
    let payment = action.payment.clone();
    let amount = action
        .amount
        .as_ref()
        .map(|expr| fen_of(expr, context))
        .transpose()?;
    if amount.is_some_and(|a| a <= 0) {
        return Err(Error::Expression("a refund is at least ¥0.01".into()));
    }
    let reason = action
        .reason
        .as_ref()
        .map(|expr| text_of(expr, context))
        .transpose()?
        .map(|r| r.chars().take(80).collect::<String>());
    let insurance = match &action.insurance {
        Some(expr) => insurance_of(expr, context)?,
        None => None,
    };
    let out_refund_no = business_number("R2", &context.key);
    context.history.push(HistoryEntry {
        kind: "effect_planned",
        detail: json!({"effect": "refund", "key": context.key, "refund": out_refund_no, "payment": payment, "amount": amount, "insurance": insurance}),
    });
    context.effects.push(Effect {
        key: context.key.clone(),
        kind: EffectKind::Refund(RefundEffect {
            out_refund_no,
            payment,
            amount,
            reason,
            insurance,
        }),
    });
    Ok(())
}

/// `{ pooled_fund, personal_account, other_funds }`, each a money value or
/// yuan text (missing ones are 0); at least one above 0. `null`: none.
fn insurance_of(
    expr: &Expr,
    context: &ActionContext<'_>,
) -> Result<Option<InsuranceRefund>, Error> {
    let value = expr.eval_json(context.scope).map_err(Error::Expression)?;
    if value.is_null() {
        return Ok(None);
    }
    let Json::Object(object) = value else {
        return Err(Error::Expression(format!(
            "`{}` gave {value}: the 医保 part of a refund is {{ pooled_fund, personal_account, other_funds }}",
            expr.source
        )));
    };
    let mut funds = [0_i64; 3];
    for (name, amount) in &object {
        let slot = match name.as_str() {
            "pooled_fund" => 0,
            "personal_account" => 1,
            "other_funds" => 2,
            other => {
                return Err(Error::Expression(format!(
                    "`{}`: `{other}` is not a fund (pooled_fund, personal_account, other_funds)",
                    expr.source
                )))
            }
        };
        funds[slot] = match amount {
            Json::Number(n) if n.is_i64() => n.as_i64().unwrap_or_default(),
            Json::String(text) => Money::parse_yuan(text)
                .map(Money::fen)
                .map_err(|e| Error::Expression(format!("`{}.{name}`: {e}", expr.source)))?,
            other => {
                return Err(Error::Expression(format!(
                    "`{}.{name}` is {other}: a money value or yuan text",
                    expr.source
                )))
            }
        };
    }
    if funds.iter().any(|f| *f < 0) || funds.iter().all(|f| *f == 0) {
        return Err(Error::Expression(format!(
            "`{}`: the 医保 refund must be at least ¥0.01 and never negative",
            expr.source
        )));
    }
    Ok(Some(InsuranceRefund {
        pooled_fund: funds[0],
        personal_account: funds[1],
        other_funds: funds[2],
    }))
}

/// An amount: an integer is fen (a `money` value), text is yuan (`'15.00'`).
fn fen_of(expr: &Expr, context: &ActionContext<'_>) -> Result<i64, Error> {
    match expr.eval_json(context.scope).map_err(Error::Expression)? {
        Json::Number(n) if n.is_i64() => Ok(n.as_i64().unwrap_or_default()),
        Json::String(text) => Money::parse_yuan(&text)
            .map(Money::fen)
            .map_err(|e| Error::Expression(format!("`{}`: {e}", expr.source))),
        other => Err(Error::Expression(format!(
            "`{}` gave {other}: an amount is a money value or yuan text such as '15.00'",
            expr.source
        ))),
    }
}

fn text_of(expr: &Expr, context: &ActionContext<'_>) -> Result<String, Error> {
    match expr.eval_json(context.scope).map_err(Error::Expression)? {
        Json::String(text) => Ok(text),
        Json::Number(n) => Ok(n.to_string()),
        other => Err(Error::Expression(format!(
            "`{}` gave {other}, not text",
            expr.source
        ))),
    }
}

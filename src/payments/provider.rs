//! Who takes a payment: a WeChat Pay merchant, or the sandbox (the default
//! when a tenant has no merchant: orders exist only in o2flow, and the pay
//! page's button pays them through the same path a verified callback takes).

use std::sync::Arc;

use crate::domain::CheckedBill;
use crate::store::{self, PaymentRow};
use crate::wechat::pay::client::{
    MedInsOrder, Order, PayClient, PayError, Refund, RefundRequest, Transaction,
};

pub enum Provider {
    Sandbox,
    Wechat {
        merchant_id: i64,
        client: Arc<PayClient>,
    },
}

/// What the payer needs once the order exists.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    pub prepay_id: Option<String>,
    pub code_url: Option<String>,
    /// A 医保 mixed order's number.
    pub mix_trade_no: Option<String>,
}

/// The bill of a payment that is a 医保 mixed order (it has a settlement).
pub fn med_ins_bill(payment: &PaymentRow) -> Option<CheckedBill> {
    payment
        .bill
        .as_deref()
        .and_then(|b| serde_json::from_str::<CheckedBill>(b).ok())
        .filter(|b| b.bill.settlement.is_some())
}

fn needs_openid() -> PayError {
    PayError::Api {
        status: 400,
        code: "PARAM_ERROR".into(),
        message: "a JSAPI or 医保 payment needs the payer's openid (the party's `openid`)".into(),
    }
}

impl Provider {
    pub fn merchant_id(&self) -> Option<i64> {
        match self {
            Provider::Sandbox => None,
            Provider::Wechat { merchant_id, .. } => Some(*merchant_id),
        }
    }

    pub fn client(&self) -> Option<&PayClient> {
        match self {
            Provider::Sandbox => None,
            Provider::Wechat { client, .. } => Some(client),
        }
    }

    /// Creates the order (the same `out_trade_no` and numbers again give
    /// the same order).
    ///
    /// # Errors
    /// What WeChat Pay answered, or why it could not be reached.
    pub async fn open(&self, payment: &PaymentRow, time_expire: &str) -> Result<Opened, PayError> {
        let Provider::Wechat { client, .. } = self else {
            return Ok(Opened::default());
        };
        if let Some(bill) = med_ins_bill(payment) {
            return open_med_ins(client, payment, &bill, time_expire).await;
        }
        let order = Order {
            out_trade_no: payment.out_trade_no.clone(),
            description: payment.description.clone(),
            total: payment.amount_fen,
            payer_openid: payment.payer_openid.clone(),
            time_expire: Some(time_expire.to_owned()),
            attach: None,
        };
        match payment.scene.as_str() {
            "native" | "h5" => Ok(Opened {
                code_url: Some(client.native_order(&order).await?),
                ..Opened::default()
            }),
            _ => {
                if order.payer_openid.is_none() {
                    return Err(needs_openid());
                }
                Ok(Opened {
                    prepay_id: Some(client.jsapi_order(&order).await?),
                    ..Opened::default()
                })
            }
        }
    }

    /// What the provider says of the order. The sandbox has nothing the
    /// database does not: an unpaid sandbox order is `NOTPAY`.
    ///
    /// # Errors
    /// As `open`.
    pub async fn query(&self, payment: &PaymentRow) -> Result<Transaction, PayError> {
        match self {
            Provider::Wechat { client, .. } => client.query(&payment.out_trade_no).await,
            Provider::Sandbox => Ok(Transaction {
                appid: None,
                mchid: String::new(),
                out_trade_no: payment.out_trade_no.clone(),
                transaction_id: payment.transaction_id.clone(),
                trade_state: if payment.state == crate::store::PaymentState::Succeeded {
                    "SUCCESS"
                } else {
                    "NOTPAY"
                }
                .into(),
                trade_state_desc: None,
                success_time: None,
                attach: None,
                amount: None,
            }),
        }
    }

    /// Closes the order so it can no longer be paid. A 医保 payment's only
    /// closable order is its self-paid leg: an insurance-only one has none.
    ///
    /// # Errors
    /// As `open`.
    pub async fn close(&self, payment: &PaymentRow) -> Result<(), PayError> {
        match self {
            Provider::Wechat { .. }
                if payment.mix_trade_no.is_some() && payment.prepay_id.is_none() =>
            {
                Ok(())
            }
            Provider::Wechat { client, .. } => client.close(&payment.out_trade_no).await,
            Provider::Sandbox => Ok(()),
        }
    }

    /// Asks for a refund; the sandbox refunds at once.
    ///
    /// # Errors
    /// As `open`.
    pub async fn refund(&self, request: &RefundRequest) -> Result<Refund, PayError> {
        match self {
            Provider::Wechat { client, .. } => client.refund(request).await,
            Provider::Sandbox => Ok(Refund {
                out_refund_no: request.out_refund_no.clone(),
                out_trade_no: Some(request.out_trade_no.clone()),
                refund_id: Some(format!("SANDBOX-{}", request.out_refund_no)),
                status: "SUCCESS".into(),
                amount: None,
            }),
        }
    }

    /// # Errors
    /// As `open`.
    pub async fn query_refund(&self, out_refund_no: &str) -> Result<Refund, PayError> {
        match self {
            Provider::Wechat { client, .. } => client.query_refund(out_refund_no).await,
            Provider::Sandbox => Ok(Refund {
                out_refund_no: out_refund_no.to_owned(),
                out_trade_no: None,
                refund_id: Some(format!("SANDBOX-{out_refund_no}")),
                status: "SUCCESS".into(),
                amount: None,
            }),
        }
    }
}

/// A 医保 mixed order: the self-paid leg as a JSAPI order first (when there
/// is one), then `/v3/med-ins/orders` with its prepay id. Both numbers and
/// bodies derive from the payment row, so a retry asks for the same orders.
async fn open_med_ins(
    client: &PayClient,
    payment: &PaymentRow,
    bill: &CheckedBill,
    time_expire: &str,
) -> Result<Opened, PayError> {
    let openid = payment.payer_openid.as_deref().ok_or_else(needs_openid)?;
    let prepay_id = if bill.wechat_pay_cash > 0 {
        let order = Order {
            out_trade_no: payment.out_trade_no.clone(),
            description: payment.description.clone(),
            total: bill.wechat_pay_cash,
            payer_openid: Some(openid.to_owned()),
            time_expire: Some(time_expire.to_owned()),
            attach: None,
        };
        Some(client.jsapi_order(&order).await?)
    } else {
        None
    };
    let create_time = store::from_ms(payment.created_at_ms)
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let answer = client
        .med_ins_order(&MedInsOrder {
            out_trade_no: &payment.out_trade_no,
            openid,
            bill,
            prepay_id: prepay_id.as_deref(),
            create_time: &create_time,
        })
        .await?;
    Ok(Opened {
        prepay_id,
        code_url: None,
        mix_trade_no: Some(answer.mix_trade_no),
    })
}

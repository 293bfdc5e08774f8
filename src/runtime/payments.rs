//! Payments in the runtime: the `pay` and `refund` effects, WeChat Pay
//! callbacks, the reconciliation and expiry sweep, late payments refunded
//! automatically, and the pay page's view of a payment.
//!
//! Every path that learns a payment's or refund's outcome (callback,
//! query, sandbox button) ends in `payment_paid` / `refund_result`, whose
//! store updates are conditional: the first caller moves the state and owes
//! the instance its event (an outbox row keyed by payment and state), the
//! others change nothing. So duplicates, replays and races settle once.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::{Completion, Error, Failure, Runtime};
use crate::domain::{CheckedBill, Money};
use crate::engine::{
    self, business_number, Event, PayEffect, RefundEffect, PAYMENT_EXPIRED, PAYMENT_FAILED,
    PAYMENT_SUCCEEDED, REFUND_ABNORMAL, REFUND_FAILED, REFUND_SUCCEEDED,
};
use crate::engine::{InsuranceRefund, SendEffect};
use crate::payments::{load_merchant, med_ins_bill, LinkSigner, Provider};
use crate::store::{
    self, NewPayment, NewRefund, NotificationRow, OutboxRow, OwedEvent, PaymentRow, PaymentState,
    RefundRefused, RefundRow, RefundStatus,
};
use crate::wechat::pay::client::{
    verify_signed, MedInsRefund, MedInsStatus, NonceCache, PayClient, PayError, RefundRequest,
    Transaction,
};

/// How often a pending payment or processing refund is queried when no
/// callback came, unless configured otherwise.
pub const DEFAULT_RECONCILE_EVERY: Duration = Duration::minutes(5);

/// Waiting after a failed query before the next.
const RETRY_QUERY_AFTER: Duration = Duration::minutes(1);

/// How soon a 医保 refund report WeChat Pay refused is sent again.
const REPORT_AGAIN_AFTER: Duration = Duration::hours(1);

/// How soon a payment that arrived before its flow can take it is offered again.
const EARLY_RETRY: Duration = Duration::seconds(15);

/// The pay link stays readable this long after the order expires (to show its outcome).
const LINK_GRACE: Duration = Duration::days(1);

/// Payment state kept per runtime.
#[derive(Default)]
pub(super) struct PaymentsState {
    signer: tokio::sync::OnceCell<LinkSigner>,
    /// Clients by merchant id, with the `updated_at_ms` they were built from.
    clients: std::sync::RwLock<HashMap<i64, (i64, Arc<PayClient>)>>,
    /// Nonces of verified callbacks, per merchant.
    nonces: std::sync::RwLock<HashMap<i64, Arc<NonceCache>>>,
}

/// Why a callback was refused; nothing changed. `http` answers each with
/// its status and `{"code": "FAIL", "message": …}`, so WeChat Pay retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackRefused {
    /// The signature, timestamp or nonce does not verify.
    #[error("{0}")]
    Unverified(String),
    /// Not a notification we can read, or one for another merchant or app.
    #[error("{0}")]
    Malformed(String),
    /// No such merchant, order or refund here.
    #[error("{0}")]
    Unknown(String),
    /// Our side failed (the database, a lock): WeChat Pay sends it again.
    #[error("{0}")]
    Internal(String),
}

/// Why a step of the payment work (opening an order, a check, a refund, a
/// report to WeChat Pay) could not be done now. The sweep records it on
/// the payment or refund and asks again later; an effect executor turns it
/// into a `Failure` (`From`), retried when it may pass later.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Runtime(#[from] Error),
    /// WeChat Pay failed or refused (`PayError::is_transient` tells which).
    #[error(transparent)]
    Provider(#[from] PayError),
    /// The merchant's configuration cannot be used.
    #[error(transparent)]
    Merchant(#[from] crate::payments::MerchantError),
    /// The merchant that took a payment is gone.
    #[error("merchant {0} is gone")]
    UnknownMerchant(i64),
    /// A payment a refund or notification names is not (or no longer) here.
    #[error("payment {0} is not here")]
    UnknownPayment(String),
    /// What WeChat Pay says does not match our order.
    #[error("{0}")]
    Mismatch(String),
    /// A field a payload must carry is missing or not text.
    #[error("`{0}` is missing or not text")]
    Missing(String),
    /// A value we stored (a refund's 医保 part, a message) cannot be read or written.
    #[error("{0}")]
    Encoding(#[from] serde_json::Error),
}

impl From<PaymentError> for Failure {
    fn from(error: PaymentError) -> Failure {
        let transient = match &error {
            PaymentError::Store(_) | PaymentError::Runtime(Error::Store(_)) => true,
            PaymentError::Provider(error) => error.is_transient(),
            _ => false,
        };
        if transient {
            Failure::Transient(error.to_string())
        } else {
            Failure::Permanent(error.to_string())
        }
    }
}

/// What the pay page shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PayView {
    pub payment: String,
    pub description: String,
    pub amount: i64,
    pub amount_yuan: String,
    pub state: PaymentState,
    pub scene: String,
    pub sandbox: bool,
    pub expires_at: String,
    pub bill: Option<CheckedBill>,
    pub code_url: Option<String>,
    /// For `WeixinJSBridge.invoke('getBrandWCPayRequest', …)`.
    pub jsapi: Option<crate::wechat::pay::client::JsapiParams>,
    /// A 医保 mixed order's number.
    pub mix_trade_no: Option<String>,
    /// For `WeixinJSBridge.invoke('requestMedicalInsurancePay', …)`: the
    /// appid and `mixTradeNo`, plus the self-paid leg's signed parameters.
    pub med_ins: Option<serde_json::Value>,
    pub refunded: i64,
    /// Paid after its flow was over: refunded automatically.
    pub late: bool,
}

/// The message a payer gets when a payment that came after its flow was
/// over is refunded automatically (`templates/payment_refunded`).
pub const LATE_REFUND_TEMPLATE: &str = "payment_refunded";

/// Why the pay page cannot be shown or acted on.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("this link is not valid or has expired")]
    BadLink,
    #[error("the payment is {0}: it can no longer be paid here")]
    NotPayable(PaymentState),
    #[error("this payment is taken by WeChat Pay, not the sandbox")]
    NotSandbox,
    /// The link is good, and its order is being opened: the page waits.
    #[error("the payment is being prepared")]
    Preparing,
    #[error(transparent)]
    Runtime(#[from] Error),
}

fn shanghai(at: DateTime<Utc>) -> String {
    at.with_timezone(&chrono_tz::Asia::Shanghai)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// A text field of a JSON payload (WeChat Pay's, or an owed event's): a
/// missing one is an error naming it, never read as "".
fn text_field<'a>(value: &'a serde_json::Value, name: &str) -> Result<&'a str, PaymentError> {
    value
        .get(name)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| PaymentError::Missing(name.to_owned()))
}

fn store_failure(error: store::Error) -> Failure {
    Failure::Transient(error.to_string())
}

fn payment_event(event_type: &str, payment: &PaymentRow, extra: serde_json::Value) -> OwedEvent {
    let mut payload = json!({
        "payment": payment.out_trade_no,
        "key": payment.name,
        "amount": payment.amount_fen,
        "amount_yuan": Money::from_fen(payment.amount_fen).to_yuan_string(),
    });
    if let (Some(object), serde_json::Value::Object(more)) = (payload.as_object_mut(), extra) {
        object.extend(more);
    }
    OwedEvent {
        event_type: event_type.to_owned(),
        payload,
    }
}

fn refund_event(event_type: &str, refund: &RefundRow, refund_id: Option<&str>) -> OwedEvent {
    OwedEvent {
        event_type: event_type.to_owned(),
        payload: json!({
            "payment": refund.out_trade_no,
            "refund": refund.out_refund_no,
            "amount": refund.amount_fen,
            "amount_yuan": Money::from_fen(refund.amount_fen).to_yuan_string(),
            "refund_id": refund_id,
        }),
    }
}

impl Runtime {
    /// The key that signs pay links, made once per database.
    async fn signer(&self) -> Result<&LinkSigner, Error> {
        self.payments
            .signer
            .get_or_try_init(|| async {
                let secret = self
                    .store
                    .setting_or_insert("pay_link_key", || {
                        let mut bytes = [0u8; 32];
                        let _ = ring::rand::SecureRandom::fill(
                            &ring::rand::SystemRandom::new(),
                            &mut bytes,
                        );
                        hex::encode(bytes)
                    })
                    .await?;
                Ok::<_, Error>(LinkSigner::new(secret.as_bytes()))
            })
            .await
    }

    /// The pay page link of a payment.
    ///
    /// # Errors
    /// A store error.
    pub async fn pay_link(
        &self,
        out_trade_no: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<String, Error> {
        let token = self
            .signer()
            .await?
            .sign(out_trade_no, expires_at + LINK_GRACE);
        Ok(format!(
            "{}/p/pay/{token}",
            self.public_url.trim_end_matches('/')
        ))
    }

    /// The WeChat Pay client of a stored merchant, built once per version of its row.
    async fn client_of(&self, row: &store::MerchantRow) -> Result<Arc<PayClient>, PaymentError> {
        if let Some((_, client)) = self
            .payments
            .clients
            .read()
            .ok()
            .and_then(|c| c.get(&row.id).cloned())
            .filter(|(updated, _)| *updated == row.updated_at_ms)
        {
            return Ok(client);
        }
        let config = load_merchant(row, &self.public_url)?;
        let client = Arc::new(PayClient::new(Arc::new(config), self.clock.clone()));
        if row.platform_certificates {
            // A download that fails now (WeChat Pay unreachable) is not the
            // merchant's fault: the client asks again when an answer names a
            // serial it does not hold.
            match client.refresh_certificates().await {
                Ok(serials) => tracing::info!(
                    merchant.id = row.id,
                    "WeChat Pay keys held: {}",
                    serials.join(", ")
                ),
                Err(error) => tracing::warn!(
                    merchant.id = row.id,
                    "downloading the WeChat Pay platform certificates failed: {error}"
                ),
            }
        }
        if let Ok(mut clients) = self.payments.clients.write() {
            clients.insert(row.id, (row.updated_at_ms, client.clone()));
        }
        Ok(client)
    }

    /// Who takes a branch's payments: its merchant, else the sandbox,
    /// which a production tenant refuses.
    async fn provider_for(&self, tenant_id: &str, branch_id: &str) -> Result<Provider, Failure> {
        match self
            .store
            .merchant_for(tenant_id, branch_id)
            .await
            .map_err(store_failure)?
        {
            Some(row) => {
                let client = self.client_of(&row).await?;
                Ok(Provider::Wechat {
                    merchant_id: row.id,
                    client,
                })
            }
            None => {
                let tenant = self.store.tenant(tenant_id).await.map_err(store_failure)?;
                if tenant.is_some_and(|t| t.production) {
                    return Err(Failure::Permanent(format!(
                        "tenant `{tenant_id}` is marked production and has no WeChat Pay merchant: the sandbox takes no real money (o2flow merchants set)"
                    )));
                }
                Ok(Provider::Sandbox)
            }
        }
    }

    /// The provider that took a payment.
    async fn provider_of(&self, payment: &PaymentRow) -> Result<Provider, PaymentError> {
        let Some(id) = payment.merchant_id else {
            return Ok(Provider::Sandbox);
        };
        let row = self
            .store
            .merchant(id)
            .await?
            .ok_or(PaymentError::UnknownMerchant(id))?;
        Ok(Provider::Wechat {
            merchant_id: id,
            client: self.client_of(&row).await?,
        })
    }

    /// Gives a message's `payment` (planned in the same step, else the
    /// instance's latest) its pay page `link`.
    pub(super) async fn add_pay_link(
        &self,
        row: &OutboxRow,
        context: &mut serde_json::Value,
    ) -> Result<(), Error> {
        let planned = context["payment"]["id"].as_str().map(str::to_owned);
        let payment = match planned {
            Some(no) => self.store.payment(&no).await?,
            None => self.store.payments_of(&row.instance_id).await?.pop(),
        };
        let (no, expires_at) = match (&payment, context["payment"]["expires_at"].as_str()) {
            (Some(p), _) => (p.out_trade_no.clone(), store::from_ms(p.expires_at_ms)),
            (None, Some(at)) => match (
                context["payment"]["id"].as_str(),
                DateTime::parse_from_rfc3339(at),
            ) {
                (Some(no), Ok(at)) => (no.to_owned(), at.with_timezone(&Utc)),
                _ => return Ok(()),
            },
            (None, None) => return Ok(()),
        };
        let link = self.pay_link(&no, expires_at).await?;
        if let Some(object) = context.as_object_mut() {
            let entry = object.entry("payment").or_insert_with(|| json!({}));
            if entry.is_null() {
                *entry = json!({});
            }
            if let Some(payment_object) = entry.as_object_mut() {
                payment_object.insert("link".into(), json!(link));
                if let Some(p) = &payment {
                    payment_object
                        .entry("id")
                        .or_insert_with(|| json!(p.out_trade_no));
                    payment_object
                        .entry("amount")
                        .or_insert_with(|| json!(p.amount_fen));
                    payment_object
                        .entry("amount_yuan")
                        .or_insert_with(|| json!(Money::from_fen(p.amount_fen).to_yuan_string()));
                    payment_object
                        .entry("description")
                        .or_insert_with(|| json!(p.description));
                    payment_object.insert("state".into(), json!(p.state));
                }
            }
        }
        Ok(())
    }

    // ---- effects ----------------------------------------------------------------

    /// The `pay` effect: record the payment, then open the order. A
    /// provider error that retrying cannot fix fails the payment and tells
    /// the flow (`payment.failed`).
    pub(super) async fn execute_pay(
        &self,
        row: &OutboxRow,
        pay: &PayEffect,
    ) -> Result<Completion, Failure> {
        let now = self.now();
        let instance = self
            .store
            .instance(&row.tenant_id, &row.instance_id)
            .await
            .map_err(store_failure)?
            .ok_or_else(|| Failure::Permanent(format!("instance {} is gone", row.instance_id)))?;
        let provider = self
            .provider_for(&row.tenant_id, &instance.branch_id)
            .await?;
        let bill = pay
            .bill
            .as_ref()
            .and_then(|b| serde_json::to_string(b).ok());
        let (payment, _) = self
            .store
            .insert_payment(
                &NewPayment {
                    out_trade_no: &pay.out_trade_no,
                    tenant_id: &row.tenant_id,
                    branch_id: &instance.branch_id,
                    instance_id: &row.instance_id,
                    effect_key: &row.effect_key,
                    name: &pay.name,
                    merchant_id: provider.merchant_id(),
                    scene: pay.scene.as_str(),
                    description: &pay.description,
                    payer_id: &pay.payer.id,
                    payer_openid: pay.payer.openid.as_deref(),
                    amount_fen: pay.amount,
                    bill,
                    expires_at: pay.expires_at,
                },
                now,
            )
            .await
            .map_err(store_failure)?;
        let mut detail = json!({"payment": payment.out_trade_no, "provider": if provider.merchant_id().is_some() { "wechat" } else { "sandbox" }});
        if payment.state == PaymentState::Creating {
            let time_expire = shanghai(store::from_ms(payment.expires_at_ms));
            match provider.open(&payment, &time_expire).await {
                Ok(opened) => {
                    let next =
                        (now + self.reconcile_every).min(store::from_ms(payment.expires_at_ms));
                    self.store
                        .payment_opened(
                            &payment.out_trade_no,
                            opened.prepay_id.as_deref(),
                            opened.code_url.as_deref(),
                            opened.mix_trade_no.as_deref(),
                            next,
                            now,
                        )
                        .await
                        .map_err(store_failure)?;
                }
                Err(error) if error.is_transient() => {
                    return Err(Failure::Transient(error.to_string()));
                }
                Err(error) => {
                    let message = error.to_string();
                    tracing::warn!(instance.id = %row.instance_id, payment = %payment.out_trade_no, "payment {} refused: {message}", payment.out_trade_no);
                    let event = payment_event(PAYMENT_FAILED, &payment, json!({"error": message}));
                    self.store
                        .payment_moved(
                            &payment,
                            &[PaymentState::Creating],
                            PaymentState::Failed,
                            None,
                            Some(&message),
                            Some(&event),
                            now,
                        )
                        .await
                        .map_err(store_failure)?;
                    detail["failed"] = json!(message);
                }
            }
        }
        Ok(Completion::Done(detail))
    }

    /// The `refund` effect: pick the payment and amount, reserve it, ask the
    /// provider once; the sweep carries on from there.
    pub(super) async fn execute_refund(
        &self,
        row: &OutboxRow,
        refund: &RefundEffect,
    ) -> Result<Completion, Failure> {
        let now = self.now();
        let payments = self
            .store
            .payments_of(&row.instance_id)
            .await
            .map_err(store_failure)?;
        // The latest paid payment of that key (or of any key), else the latest of that key.
        let named = |p: &&PaymentRow| refund.payment.as_ref().is_none_or(|name| &p.name == name);
        let payment = payments
            .iter()
            .rev()
            .filter(named)
            .find(|p| p.state == PaymentState::Succeeded)
            .or_else(|| payments.iter().rev().find(named))
            .ok_or_else(|| {
                Failure::Permanent(match &refund.payment {
                    Some(name) => format!("this instance has no payment `{name}` to refund"),
                    None => "this instance has no paid payment to refund".into(),
                })
            })?;
        if payment.state != PaymentState::Succeeded {
            return Err(Failure::Permanent(format!(
                "payment {} is {}, not paid: nothing to refund",
                payment.out_trade_no, payment.state
            )));
        }
        let amount = refund
            .amount
            .unwrap_or(payment.amount_fen - payment.refunded_fen);
        let existing = self
            .store
            .refund(&refund.out_refund_no)
            .await
            .map_err(store_failure)?;
        let med_ins = payment.mix_trade_no.is_some();
        if refund.insurance.is_some() && !med_ins {
            return Err(Failure::Permanent(format!(
                "payment {} is not a 医保 payment: its refund has no `insurance` part",
                payment.out_trade_no
            )));
        }
        if existing.is_none() && amount <= 0 && refund.insurance.is_none() {
            return Err(Failure::Permanent(if med_ins {
                format!("the self-paid part of payment {} is refunded in full already: the 医保 part is refunded by the hospital through the insurance bureau, then given as `insurance:`", payment.out_trade_no)
            } else {
                format!(
                    "payment {} is refunded in full already",
                    payment.out_trade_no
                )
            }));
        }
        let recorded = match existing {
            Some(existing) => existing,
            None => match self
                .store
                .insert_refund(
                    &NewRefund {
                        out_refund_no: &refund.out_refund_no,
                        payment,
                        effect_key: &row.effect_key,
                        amount_fen: amount.max(0),
                        reason: refund.reason.as_deref(),
                        automatic: false,
                        insurance: refund
                            .insurance
                            .as_ref()
                            .and_then(|i| serde_json::to_string(i).ok()),
                    },
                    now,
                )
                .await
                .map_err(store_failure)?
            {
                Ok(recorded) => recorded,
                Err(RefundRefused::NotEnough { asked, left }) => {
                    return Err(Failure::Permanent(format!(
                        "a refund of {} asked, but only {} of payment {} is left to refund",
                        Money::from_fen(asked),
                        Money::from_fen(left),
                        payment.out_trade_no
                    )))
                }
            },
        };
        if recorded.status == RefundStatus::Pending {
            self.send_refund(&recorded)
                .await
                .map_err(|e| Failure::Transient(e.to_string()))?;
        }
        Ok(Completion::Done(
            json!({"refund": recorded.out_refund_no, "payment": recorded.out_trade_no, "amount": recorded.amount_fen}),
        ))
    }

    /// Delivers an event a payment or refund owes its instance. A payment
    /// that succeeded after the flow moved on (its state no longer waits
    /// for it, or it is over) is refunded automatically.
    pub(super) async fn deliver_owed(&self, row: &OutboxRow) -> Result<Completion, Failure> {
        let owed: serde_json::Value =
            serde_json::from_str(&row.payload).map_err(|e| Failure::Permanent(e.to_string()))?;
        let event_type = text_field(&owed, "event_type")?.to_owned();
        let payload = owed["payload"].clone();
        let event = Event::Named {
            event_type: event_type.clone(),
            payload: payload.clone(),
        };
        let idempotency = Some((
            row.effect_key.clone(),
            store::sha256_hex(row.effect_key.as_bytes()),
        ));
        let delivered = match self
            .raise(&row.tenant_id, &row.instance_id, event, idempotency)
            .await
        {
            Ok(result) => result.applied,
            Err(Error::Engine(
                engine::Error::EventNotHandled { .. } | engine::Error::GuardRejected { .. },
            )) => {
                // Early: the flow may still get to a state that takes the
                // payment (while the order could still be paid). Try again soon.
                let no = text_field(&payload, "payment")?;
                let payment = self.store.payment(no).await.map_err(store_failure)?;
                let now = self.now();
                if let Some(payment) = payment.filter(|_| event_type == PAYMENT_SUCCEEDED) {
                    let expires_at = store::from_ms(payment.expires_at_ms);
                    if now < expires_at {
                        let retry_at = (now + EARLY_RETRY).min(expires_at);
                        return Ok(Completion::Postponed {
                            at: retry_at,
                            reason: "the flow is not yet in a state that handles payment.succeeded"
                                .into(),
                        });
                    }
                }
                false
            }
            Err(Error::Store(error)) => return Err(Failure::Transient(error.to_string())),
            Err(error) => return Err(Failure::Permanent(error.to_string())),
        };
        let mut detail = json!({"event": event_type, "delivered": delivered});
        if !delivered && event_type == PAYMENT_SUCCEEDED {
            let no = text_field(&payload, "payment")?;
            if let Some(payment) = self.store.payment(no).await.map_err(store_failure)? {
                let refund = self
                    .refund_late(&payment)
                    .await
                    .map_err(|e| Failure::Transient(e.to_string()))?;
                detail["late_refund"] = json!(refund);
            }
        }
        Ok(Completion::Done(detail))
    }

    /// Refunds a payment the flow no longer wanted, in full; returns the refund number.
    async fn refund_late(&self, payment: &PaymentRow) -> Result<Option<String>, PaymentError> {
        tracing::warn!(instance.id = %payment.instance_id, payment = %payment.out_trade_no, "payment {} arrived after the flow moved on: refunding it", payment.out_trade_no);
        // The payer hears of it (and the pay page says so): a message
        // through the flow's channels, sent once with the change.
        let notice = SendEffect {
            to: crate::domain::Party {
                id: payment.payer_id.clone(),
                name: None,
                phone: None,
                email: None,
                openid: payment.payer_openid.clone(),
                time_zone: None,
            },
            template: LATE_REFUND_TEMPLATE.into(),
            channels: vec![crate::dsl::Channel::Inbox],
            purpose: Some("transactional".into()),
            context: json!({
                "party": {"id": payment.payer_id},
                "payment": {
                    "id": payment.out_trade_no,
                    "amount": payment.amount_fen,
                    "amount_yuan": Money::from_fen(payment.amount_fen).to_yuan_string(),
                    "description": payment.description,
                },
            }),
            retry: None,
        };
        let notice = serde_json::to_value(&notice)?;
        self.store
            .payment_late(payment, &notice, self.now())
            .await?;
        if payment.mix_trade_no.is_some() {
            // o2flow can give back the self-paid part; the insured part goes
            // back only through the hospital and the insurance bureau.
            self.store
                .open_incident_for(
                    &payment.tenant_id,
                    &payment.instance_id,
                    &payment.out_trade_no,
                    "refund",
                    "a 医保 payment arrived after the flow was over: its self-paid part is refunded automatically; refund the insured part through the insurance bureau (HIS)",
                    self.now(),
                )
                .await
                ?;
        }
        self.refund_automatically(
            payment,
            "late",
            "订单已失效，自动退款 / paid after the order was over",
        )
        .await
    }

    /// Refunds what is left of a payment, once per `why` (the refund's key).
    async fn refund_automatically(
        &self,
        payment: &PaymentRow,
        why: &str,
        reason: &str,
    ) -> Result<Option<String>, PaymentError> {
        let now = self.now();
        let key = format!("{why}:{}", payment.out_trade_no);
        let amount = payment.amount_fen - payment.refunded_fen;
        if amount <= 0 {
            return Ok(None);
        }
        let recorded = self
            .store
            .insert_refund(
                &NewRefund {
                    out_refund_no: &business_number("RL", &key),
                    payment,
                    effect_key: &key,
                    amount_fen: amount,
                    reason: Some(reason),
                    automatic: true,
                    insurance: None,
                },
                now,
            )
            .await?;
        match recorded {
            Ok(refund) => {
                if refund.status == RefundStatus::Pending {
                    self.send_refund(&refund).await?;
                }
                Ok(Some(refund.out_refund_no))
            }
            Err(RefundRefused::NotEnough { .. }) => Ok(None),
        }
    }

    /// Asks the provider for a recorded refund (the same `out_refund_no` on
    /// every try). A transient failure leaves it for the sweep.
    async fn send_refund(&self, refund: &RefundRow) -> Result<(), PaymentError> {
        let (payment, provider) = self.payment_of_refund(refund).await?;
        if refund.amount_fen == 0 {
            // Only the 医保 part: the hospital refunded it; WeChat Pay is told.
            return match self
                .report_insurance_refund(&provider, &payment, refund)
                .await?
            {
                true => Ok(self.refund_result(refund, "SUCCESS", None).await?),
                false => Ok(()),
            };
        }
        let request = RefundRequest {
            out_trade_no: payment.out_trade_no.clone(),
            out_refund_no: refund.out_refund_no.clone(),
            reason: refund.reason.clone(),
            refund: refund.amount_fen,
            total: payment.amount_fen,
        };
        match provider.refund(&request).await {
            Ok(answer) => {
                self.refund_result(refund, &answer.status, answer.refund_id.as_deref())
                    .await?;
                if answer.status != "CLOSED" {
                    self.report_insurance_refund(&provider, &payment, refund)
                        .await?;
                }
                Ok(())
            }
            Err(error) if error.is_transient() => {
                self.refund_retry_later(&refund.out_refund_no, &error)
                    .await?;
                Ok(())
            }
            Err(error) => {
                tracing::error!(refund = %refund.out_refund_no, "refund {} refused: {error}", refund.out_refund_no);
                Ok(self.refund_result(refund, "CLOSED", None).await?)
            }
        }
    }

    /// Asks about a refund again after `RETRY_QUERY_AFTER`, noting why the
    /// last try failed.
    async fn refund_retry_later(
        &self,
        out_refund_no: &str,
        error: &(dyn std::fmt::Display + Sync),
    ) -> Result<(), store::Error> {
        let now = self.now();
        self.store
            .refund_check_later(
                out_refund_no,
                now + RETRY_QUERY_AFTER,
                Some(&error.to_string()),
                now,
            )
            .await
    }

    /// Tells WeChat Pay a refund's 医保 part was refunded through the
    /// insurance bureau (after its self-paid part, same `out_refund_no`).
    /// True once reported (or when there is nothing to report); a transient
    /// failure leaves it for the sweep, a refusal opens an incident.
    async fn report_insurance_refund(
        &self,
        provider: &Provider,
        payment: &PaymentRow,
        refund: &RefundRow,
    ) -> Result<bool, PaymentError> {
        let (Some(insurance), Some(mix), None) = (
            refund.insurance.as_deref(),
            payment.mix_trade_no.as_deref(),
            refund.insurance_notified_at_ms,
        ) else {
            return Ok(true);
        };
        let Some(client) = provider.client() else {
            return Ok(true);
        };
        let funds: InsuranceRefund = serde_json::from_str(insurance)?;
        let now = self.now();
        let report = MedInsRefund {
            out_refund_no: refund.out_refund_no.clone(),
            gov: funds.pooled_fund,
            personal: funds.personal_account,
            other: funds.other_funds,
            refund_time: shanghai(store::from_ms(refund.created_at_ms)),
        };
        match client.med_ins_refund_notify(mix, &report).await {
            Ok(()) => {
                self.store
                    .refund_insurance_notified(&refund.out_refund_no, now)
                    .await?;
                Ok(true)
            }
            Err(error) if error.is_transient() => {
                self.refund_retry_later(&refund.out_refund_no, &error)
                    .await?;
                Ok(false)
            }
            Err(error) => {
                let message = format!(
                    "WeChat Pay refused the report of the 医保 part of refund {}: {error}",
                    refund.out_refund_no
                );
                tracing::error!(refund = %refund.out_refund_no, "{message}");
                // Asked again hourly (it may be accepted once the cause is
                // fixed); the incident opens once.
                self.store
                    .refund_check_later(
                        &refund.out_refund_no,
                        now + REPORT_AGAIN_AFTER,
                        Some(&message),
                        now,
                    )
                    .await?;
                self.store
                    .open_incident_for(
                        &refund.tenant_id,
                        &refund.instance_id,
                        &refund.out_refund_no,
                        "refund",
                        &message,
                        now,
                    )
                    .await?;
                Ok(false)
            }
        }
    }

    /// The payment a refund belongs to, and who took it.
    async fn payment_of_refund(
        &self,
        refund: &RefundRow,
    ) -> Result<(PaymentRow, Provider), PaymentError> {
        let payment = self
            .store
            .payment(&refund.out_trade_no)
            .await?
            .ok_or_else(|| PaymentError::UnknownPayment(refund.out_trade_no.clone()))?;
        let provider = self.provider_of(&payment).await?;
        Ok((payment, provider))
    }

    /// Reports the 医保 part of a refund whose self-paid part is done.
    async fn report_insurance_of(&self, refund: &RefundRow) -> Result<(), PaymentError> {
        let (payment, provider) = self.payment_of_refund(refund).await?;
        self.report_insurance_refund(&provider, &payment, refund)
            .await
            .map(|_| ())
    }

    /// The backstop behind `check_money` in validation: an instance that
    /// has just ended, other than `completed` and not in a final state that
    /// says why it keeps the money (`keeps_payment`), while money it was
    /// paid is neither refunded nor being refunded, opens a `money_held`
    /// incident: money is never held silently.
    ///
    /// # Errors
    /// A store error.
    pub(super) async fn check_money_held(
        &self,
        instance: &crate::store::InstanceRow,
        def: &crate::dsl::WorkflowDef,
        transition: &crate::engine::Transition,
    ) -> Result<(), Error> {
        let crate::engine::Status::Final(outcome) = transition.status else {
            return Ok(());
        };
        let keeps = def
            .state(&transition.state)
            .is_some_and(|s| s.keeps_payment.is_some());
        let refunding = transition
            .effects
            .iter()
            .any(|e| matches!(e.kind, crate::engine::EffectKind::Refund(_)));
        if outcome == crate::dsl::Outcome::Completed || keeps || refunding {
            return Ok(());
        }
        let held: i64 = self
            .store
            .payments_of(&instance.id)
            .await?
            .iter()
            .filter(|p| p.state == PaymentState::Succeeded && !p.late)
            .map(|p| p.amount_fen - p.refunded_fen)
            .sum();
        if held > 0 {
            let message = format!(
                "the instance ended {} in `{}` holding {} it was paid and did not refund: refund it in the merchant platform or fix the flow (a cancel that refunds, or `keeps_payment` on the final state)",
                outcome.as_str(),
                transition.state,
                Money::from_fen(held)
            );
            tracing::warn!(instance.id = %instance.id, "{message}");
            self.store
                .open_incident_for(
                    &instance.tenant_id,
                    &instance.id,
                    &format!("money_held:{}", instance.id),
                    "money_held",
                    &message,
                    self.now(),
                )
                .await?;
        }
        Ok(())
    }

    /// Retrying a refund incident. A `closed` refund is sent again as a new
    /// refund with a new `out_refund_no` (WeChat Pay refuses the old number
    /// after `CLOSED`) for the same amount; an `abnormal` one is queried and
    /// taken as done if WeChat Pay now says `SUCCESS` (settled in the
    /// merchant platform). Returns the new refund's number, if one was made.
    ///
    /// # Errors
    /// A store error.
    pub(super) async fn retry_refund(
        &self,
        out_refund_no: &str,
        incident: i64,
    ) -> Result<Option<String>, Error> {
        let Some(old) = self.store.refund(out_refund_no).await? else {
            return Ok(None);
        };
        let Some(payment) = self.store.payment(&old.out_trade_no).await? else {
            return Ok(None);
        };
        match old.status {
            RefundStatus::Closed => {
                let key = format!("reissue:{}:{incident}", old.out_refund_no);
                let recorded = self
                    .store
                    .insert_refund(
                        &NewRefund {
                            out_refund_no: &business_number("RR", &key),
                            payment: &payment,
                            effect_key: &key,
                            amount_fen: old.amount_fen,
                            reason: old.reason.as_deref(),
                            automatic: old.automatic,
                            // A 医保 part not reported yet goes with the new number.
                            insurance: old
                                .insurance
                                .clone()
                                .filter(|_| old.insurance_notified_at_ms.is_none()),
                        },
                        self.now(),
                    )
                    .await?;
                match recorded {
                    Ok(refund) => {
                        if refund.status == RefundStatus::Pending {
                            if let Err(error) = self.send_refund(&refund).await {
                                tracing::warn!(refund = %refund.out_refund_no, "sending refund {} failed: {error}; the sweep tries again", refund.out_refund_no);
                            }
                        }
                        Ok(Some(refund.out_refund_no))
                    }
                    Err(RefundRefused::NotEnough { .. }) => Ok(None),
                }
            }
            RefundStatus::Abnormal => {
                let answer = match self.provider_of(&payment).await {
                    Ok(provider) => provider
                        .query_refund(&old.out_refund_no)
                        .await
                        .map_err(PaymentError::from),
                    Err(error) => Err(error),
                };
                match answer {
                    Ok(answer) if answer.status == "SUCCESS" => {
                        let owed = (!old.automatic).then(|| {
                            refund_event(REFUND_SUCCEEDED, &old, answer.refund_id.as_deref())
                        });
                        self.store
                            .refund_moved(
                                &old,
                                &[RefundStatus::Abnormal],
                                RefundStatus::Succeeded,
                                answer.refund_id.as_deref(),
                                None,
                                owed.as_ref(),
                                self.now(),
                            )
                            .await?;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(refund = %old.out_refund_no, "querying refund {} failed: {error}", old.out_refund_no)
                    }
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Applies what WeChat Pay says of a refund (its answer, a callback or a query).
    async fn refund_result(
        &self,
        refund: &RefundRow,
        status: &str,
        refund_id: Option<&str>,
    ) -> Result<(), Error> {
        let now = self.now();
        let open = [RefundStatus::Pending, RefundStatus::Processing];
        let owed = |event_type: &str| {
            (!refund.automatic).then(|| refund_event(event_type, refund, refund_id))
        };
        match status {
            "SUCCESS" => {
                self.store
                    .refund_moved(
                        refund,
                        &open,
                        RefundStatus::Succeeded,
                        refund_id,
                        None,
                        owed(REFUND_SUCCEEDED).as_ref(),
                        now,
                    )
                    .await?;
            }
            "PROCESSING" => {
                self.store
                    .refund_moved(
                        refund,
                        &open,
                        RefundStatus::Processing,
                        refund_id,
                        Some(now + self.reconcile_every),
                        None,
                        now,
                    )
                    .await?;
            }
            "CLOSED" => {
                let moved = self
                    .store
                    .refund_moved(
                        refund,
                        &open,
                        RefundStatus::Closed,
                        refund_id,
                        None,
                        owed(REFUND_FAILED).as_ref(),
                        now,
                    )
                    .await?;
                if moved {
                    // Money is still owed to the payer: staff see it, and
                    // retrying the incident sends the refund again under a new number.
                    let message = if refund.automatic {
                        "the automatic refund closed (CLOSED: e.g. not enough balance): retry this incident to refund again under a new number"
                    } else {
                        "the refund closed (CLOSED: e.g. not enough balance); the flow got refund.failed: retry this incident to refund again under a new number"
                    };
                    self.store
                        .open_incident_for(
                            &refund.tenant_id,
                            &refund.instance_id,
                            &refund.out_refund_no,
                            "refund",
                            message,
                            now,
                        )
                        .await?;
                }
            }
            "ABNORMAL" => {
                let event = refund_event(REFUND_ABNORMAL, refund, refund_id);
                let moved = self
                    .store
                    .refund_moved(
                        refund,
                        &open,
                        RefundStatus::Abnormal,
                        refund_id,
                        None,
                        Some(&event),
                        now,
                    )
                    .await?;
                if moved {
                    self.store
                        .open_incident_for(&refund.tenant_id, &refund.instance_id, &refund.out_refund_no, "refund", "the refund went ABNORMAL (the payer's card or account cannot take it): settle it in the merchant platform", now)
                        .await?;
                }
            }
            other => {
                tracing::warn!(refund = %refund.out_refund_no, "refund {} has status {other}", refund.out_refund_no);
            }
        }
        Ok(())
    }

    /// A payment is paid (a verified callback, a query, the sandbox
    /// button): moves it to `succeeded` once and owes the flow `payment.succeeded`.
    ///
    /// # Errors
    /// A store error.
    pub async fn payment_paid(
        &self,
        payment: &PaymentRow,
        transaction_id: &str,
    ) -> Result<bool, Error> {
        let event = payment_event(
            PAYMENT_SUCCEEDED,
            payment,
            json!({"transaction_id": transaction_id}),
        );
        let moved = self
            .store
            .payment_moved(
                payment,
                &[
                    PaymentState::Creating,
                    PaymentState::Pending,
                    PaymentState::Expired,
                    PaymentState::Failed,
                ],
                PaymentState::Succeeded,
                Some(transaction_id),
                None,
                Some(&event),
                self.now(),
            )
            .await?;
        if moved {
            tracing::info!(instance.id = %payment.instance_id, payment = %payment.out_trade_no, "payment {} succeeded", payment.out_trade_no);
            self.wake();
        }
        Ok(moved)
    }

    // ---- the sweep --------------------------------------------------------------

    /// Queries pending payments and processing refunds whose callback has
    /// not come (and closes orders past their expiry), sends refunds that
    /// could not be sent, and processes notifications answered but not
    /// processed. Returns how many rows it looked at.
    ///
    /// # Errors
    /// A store error.
    pub async fn reconcile_payments(&self) -> Result<usize, Error> {
        let now = self.now();
        let mut seen = 0;
        for payment in self
            .store
            .claim_due_payments(now, self.lease, super::BATCH)
            .await?
        {
            seen += 1;
            if let Err(error) = self.check_payment(&payment).await {
                tracing::warn!(payment = %payment.out_trade_no, "checking payment {} failed: {error}", payment.out_trade_no);
                self.store
                    .payment_check_later(
                        &payment.out_trade_no,
                        now + RETRY_QUERY_AFTER,
                        Some(&error.to_string()),
                        now,
                    )
                    .await?;
            }
        }
        for refund in self
            .store
            .claim_due_refunds(now, self.lease, super::BATCH)
            .await?
        {
            seen += 1;
            let outcome = match refund.status {
                RefundStatus::Pending => self.send_refund(&refund).await,
                RefundStatus::Processing => self.check_refund(&refund).await,
                // Done, but its 医保 part not yet reported to WeChat Pay.
                _ => self.report_insurance_of(&refund).await,
            };
            if let Err(error) = outcome {
                self.refund_retry_later(&refund.out_refund_no, &error)
                    .await?;
            }
        }
        for notification in self.store.unprocessed_notifications(super::BATCH).await? {
            seen += 1;
            self.process_notification(&notification).await?;
        }
        Ok(seen)
    }

    async fn check_refund(&self, refund: &RefundRow) -> Result<(), PaymentError> {
        let (payment, provider) = self.payment_of_refund(refund).await?;
        // Not reported yet: it is tried again on the refund's next check.
        self.report_insurance_refund(&provider, &payment, refund)
            .await?;
        let answer = provider.query_refund(&refund.out_refund_no).await?;
        if answer.status == "PROCESSING" {
            let now = self.now();
            return Ok(self
                .store
                .refund_check_later(&refund.out_refund_no, now + self.reconcile_every, None, now)
                .await?);
        }
        Ok(self
            .refund_result(refund, &answer.status, answer.refund_id.as_deref())
            .await?)
    }

    /// One pending payment due for a check: paid, closed elsewhere, failed,
    /// or unpaid (closed and expired when past its expiry).
    async fn check_payment(&self, payment: &PaymentRow) -> Result<(), PaymentError> {
        let now = self.now();
        let provider = self.provider_of(payment).await?;
        let expires_at = store::from_ms(payment.expires_at_ms);
        if let (Some(mix), Some(client)) = (payment.mix_trade_no.as_deref(), provider.client()) {
            let answer = client.query_med_ins(mix).await?;
            return self.med_ins_checked(&provider, payment, &answer).await;
        }
        let answer = match provider.query(payment).await {
            Ok(answer) => answer,
            Err(PayError::Api { code, .. }) if code == "ORDER_NOT_EXIST" && now >= expires_at => {
                return Ok(self.expire(payment).await?);
            }
            Err(error) => return Err(error.into()),
        };
        match answer.trade_state.as_str() {
            "SUCCESS" | "REFUND" => {
                self.check_amount(payment, &answer)?;
                self.payment_paid(
                    payment,
                    answer.transaction_id.as_deref().unwrap_or_default(),
                )
                .await?;
            }
            "CLOSED" | "REVOKED" => self.expire(payment).await?,
            "PAYERROR" => {
                let reason = answer.trade_state_desc.as_deref().unwrap_or("PAYERROR");
                self.payment_failed(payment, reason).await?;
            }
            _ => self.still_unpaid(&provider, payment).await?,
        }
        Ok(())
    }

    /// What a query says of a 医保 mixed order. Only `MIX_PAY_SUCCESS`
    /// (both legs) pays the flow; `MIX_PAY_FAIL` fails it, and a self-paid
    /// leg that was paid anyway is refunded at once (never one leg alone);
    /// still `MIX_PAY_CREATED` past the expiry closes the self-paid leg.
    async fn med_ins_checked(
        &self,
        provider: &Provider,
        payment: &PaymentRow,
        answer: &MedInsStatus,
    ) -> Result<(), PaymentError> {
        if payment.mix_pay_status.as_deref() != Some(answer.mix_pay_status.as_str()) {
            self.store
                .payment_mix_status(&payment.out_trade_no, &answer.mix_pay_status)
                .await?;
        }
        match answer.mix_pay_status.as_str() {
            "MIX_PAY_SUCCESS" | "MIX_PAY_REFUND" => {
                self.check_med_amount(payment, answer)?;
                self.payment_paid(payment, &answer.mix_trade_no).await?;
            }
            "MIX_PAY_FAIL" => {
                let reason = answer
                    .med_ins_fail_reason
                    .as_deref()
                    .unwrap_or("MIX_PAY_FAIL");
                // Whatever the mixed order says of its self-paid leg, that
                // leg's own order tells whether the payer paid it. Asked
                // before the payment fails, so a failed query is asked again.
                let cash_paid = if payment.amount_fen > 0 {
                    match provider.query(payment).await {
                        Ok(leg) => matches!(leg.trade_state.as_str(), "SUCCESS" | "REFUND"),
                        Err(PayError::Api { code, .. }) if code == "ORDER_NOT_EXIST" => false,
                        Err(error) => return Err(error.into()),
                    }
                } else {
                    false
                };
                self.payment_failed(payment, reason).await?;
                if cash_paid {
                    tracing::warn!(payment = %payment.out_trade_no, "the 医保 part of payment {} failed after its self-paid part was paid: refunding that", payment.out_trade_no);
                    self.refund_automatically(
                        payment,
                        "med-ins-failed",
                        "医保结算失败，自费部分自动退款 / insurance failed",
                    )
                    .await?;
                }
            }
            _ => self.still_unpaid(provider, payment).await?,
        }
        Ok(())
    }

    /// A payment the provider says is not paid (yet): past its expiry, or
    /// once its instance is over (cancelled, the slot gone), the order is
    /// closed, so nobody pays for what no longer exists, and the flow gets
    /// `payment.expired`; before that, queried again later.
    async fn still_unpaid(
        &self,
        provider: &Provider,
        payment: &PaymentRow,
    ) -> Result<(), PaymentError> {
        let now = self.now();
        let expires_at = store::from_ms(payment.expires_at_ms);
        let instance_over = self
            .store
            .instance(&payment.tenant_id, &payment.instance_id)
            .await?
            .is_none_or(|i| i.status != crate::engine::Status::Active.as_str());
        if now < expires_at && !instance_over {
            let next = (now + self.reconcile_every).min(expires_at);
            return Ok(self
                .store
                .payment_check_later(&payment.out_trade_no, next, None, now)
                .await?);
        }
        match provider.close(payment).await {
            Ok(()) => Ok(self.expire(payment).await?),
            // Paid while we closed: the next check finds it paid.
            Err(PayError::Api { code, .. }) if code == "ORDERPAID" => Ok(self
                .store
                .payment_check_later(&payment.out_trade_no, now, None, now)
                .await?),
            Err(error) => Err(error.into()),
        }
    }

    /// The provider says the payment failed: the flow gets `payment.failed`.
    async fn payment_failed(&self, payment: &PaymentRow, reason: &str) -> Result<(), PaymentError> {
        let event = payment_event(PAYMENT_FAILED, payment, json!({"error": reason}));
        self.store
            .payment_moved(
                payment,
                &[PaymentState::Pending],
                PaymentState::Failed,
                None,
                Some(reason),
                Some(&event),
                self.now(),
            )
            .await?;
        Ok(())
    }

    /// A 医保 order's amounts against our bill.
    fn check_med_amount(
        &self,
        payment: &PaymentRow,
        answer: &MedInsStatus,
    ) -> Result<(), PaymentError> {
        let bill = med_ins_bill(payment);
        let cash_ok = answer
            .wechat_pay_cash_fee
            .is_none_or(|c| c == payment.amount_fen);
        let total_ok = match (answer.total_fee, &bill) {
            (Some(total), Some(bill)) => total == bill.total,
            _ => true,
        };
        if cash_ok && total_ok {
            Ok(())
        } else {
            Err(PaymentError::Mismatch(format!(
                "WeChat Pay's 医保 order {} does not match payment {}: total {:?}, self-paid {:?}",
                answer.mix_trade_no,
                payment.out_trade_no,
                answer.total_fee,
                answer.wechat_pay_cash_fee
            )))
        }
    }

    async fn expire(&self, payment: &PaymentRow) -> Result<(), Error> {
        let event = payment_event(PAYMENT_EXPIRED, payment, json!({}));
        self.store
            .payment_moved(
                payment,
                &[PaymentState::Pending, PaymentState::Creating],
                PaymentState::Expired,
                None,
                None,
                Some(&event),
                self.now(),
            )
            .await?;
        Ok(())
    }

    fn check_amount(&self, payment: &PaymentRow, answer: &Transaction) -> Result<(), PaymentError> {
        let total = answer.amount.as_ref().and_then(|a| a.total);
        match total {
            Some(total) if total != payment.amount_fen => Err(PaymentError::Mismatch(format!(
                "WeChat Pay says {} was paid for {}, but the order is for {}",
                Money::from_fen(total),
                payment.out_trade_no,
                Money::from_fen(payment.amount_fen)
            ))),
            _ => Ok(()),
        }
    }

    // ---- callbacks --------------------------------------------------------------

    /// A WeChat Pay notification for merchant `merchant_id`: verified over
    /// the raw body (signature by serial, ±300 s, nonce never seen),
    /// decrypted, checked against our order (mchid, appid, out_trade_no,
    /// amount), and persisted once per notification id. Returns the
    /// notification to process after answering, or none for a duplicate.
    ///
    /// # Errors
    /// `CallbackRefused` with the status to answer; nothing was recorded.
    pub async fn wechat_callback(
        &self,
        merchant_id: i64,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Result<Option<NotificationRow>, CallbackRefused> {
        let now = self.now();
        let row = self
            .store
            .merchant(merchant_id)
            .await
            .map_err(|e| CallbackRefused::Internal(e.to_string()))?
            .ok_or_else(|| CallbackRefused::Unknown(format!("no merchant {merchant_id}")))?;
        let client = self
            .client_of(&row)
            .await
            .map_err(|e| CallbackRefused::Internal(e.to_string()))?;
        let config = client.config();
        let nonces = {
            let mut map = self
                .payments
                .nonces
                .write()
                .map_err(|_| CallbackRefused::Internal("lock".into()))?;
            map.entry(merchant_id).or_default().clone()
        };
        client
            .learn_serial(&header("Wechatpay-Serial").unwrap_or_default())
            .await;
        verify_signed(
            &client.platform_keys(),
            &nonces,
            now.timestamp(),
            header,
            body,
        )
        .map_err(|error| {
            tracing::warn!(merchant.id = merchant_id, "refused a callback: {error}");
            CallbackRefused::Unverified(error.to_string())
        })?;
        let envelope: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| CallbackRefused::Malformed(format!("not JSON: {e}")))?;
        let resource = &envelope["resource"];
        let plain = config
            .api_v3_key
            .decrypt(
                text_field(resource, "nonce")
                    .map_err(|e| CallbackRefused::Malformed(e.to_string()))?,
                text_field(resource, "associated_data")
                    .map_err(|e| CallbackRefused::Malformed(e.to_string()))?,
                text_field(resource, "ciphertext")
                    .map_err(|e| CallbackRefused::Malformed(e.to_string()))?,
            )
            .map_err(|e| CallbackRefused::Malformed(format!("cannot decrypt the resource: {e}")))?;
        let plain: serde_json::Value = serde_json::from_slice(&plain)
            .map_err(|e| CallbackRefused::Malformed(format!("resource is not JSON: {e}")))?;
        let event_type = text_field(&envelope, "event_type")
            .map_err(|e| CallbackRefused::Malformed(e.to_string()))?
            .to_owned();
        let id = text_field(&envelope, "id")
            .map_err(|e| CallbackRefused::Malformed(e.to_string()))?
            .to_owned();
        if id.is_empty() {
            return Err(CallbackRefused::Malformed(
                "the notification has no id".into(),
            ));
        }
        let med_ins = event_type.starts_with("MEDICAL_INSURANCE.");
        if !med_ins && plain["mchid"].as_str() != Some(config.mchid.as_str()) {
            return Err(CallbackRefused::Malformed(
                "the notification is for another mchid".into(),
            ));
        }
        let business_key = if med_ins {
            // A 医保 mixed order names no mchid: the appid, our order, its mix number and amounts must match.
            let status: MedInsStatus = serde_json::from_value(plain.clone())
                .map_err(|e| CallbackRefused::Malformed(e.to_string()))?;
            if status.appid.as_deref() != Some(config.appid.as_str()) {
                return Err(CallbackRefused::Malformed(
                    "the notification is for another appid".into(),
                ));
            }
            let no = status.out_trade_no.clone().unwrap_or_default();
            let payment = self
                .store
                .payment(&no)
                .await
                .map_err(|e| CallbackRefused::Internal(e.to_string()))?
                .filter(|p| {
                    p.merchant_id == Some(merchant_id)
                        && p.mix_trade_no.as_deref() == Some(status.mix_trade_no.as_str())
                })
                .ok_or_else(|| {
                    CallbackRefused::Unknown(format!("no 医保 order {}", status.mix_trade_no))
                })?;
            self.check_med_amount(&payment, &status)
                .map_err(|e| CallbackRefused::Malformed(e.to_string()))?;
            format!("{}:{}", status.mix_trade_no, status.mix_pay_status)
        } else if event_type.starts_with("TRANSACTION.") {
            let transaction: Transaction = serde_json::from_value(plain.clone())
                .map_err(|e| CallbackRefused::Malformed(e.to_string()))?;
            if transaction
                .appid
                .as_deref()
                .is_some_and(|a| a != config.appid)
            {
                return Err(CallbackRefused::Malformed(
                    "the notification is for another appid".into(),
                ));
            }
            let payment = self
                .store
                .payment(&transaction.out_trade_no)
                .await
                .map_err(|e| CallbackRefused::Internal(e.to_string()))?
                .filter(|p| p.merchant_id == Some(merchant_id))
                .ok_or_else(|| {
                    CallbackRefused::Unknown(format!("no order {}", transaction.out_trade_no))
                })?;
            self.check_amount(&payment, &transaction)
                .map_err(|e| CallbackRefused::Malformed(e.to_string()))?;
            format!("{}:{}", transaction.out_trade_no, transaction.trade_state)
        } else if event_type.starts_with("REFUND.") {
            let out_refund_no = text_field(&plain, "out_refund_no")
                .map_err(|e| CallbackRefused::Malformed(e.to_string()))?;
            let refund = self
                .store
                .refund(out_refund_no)
                .await
                .map_err(|e| CallbackRefused::Internal(e.to_string()))?
                .ok_or_else(|| CallbackRefused::Unknown(format!("no refund {out_refund_no}")))?;
            let owner = self
                .store
                .payment(&refund.out_trade_no)
                .await
                .map_err(|e| CallbackRefused::Internal(e.to_string()))?;
            if owner.and_then(|p| p.merchant_id) != Some(merchant_id) {
                return Err(CallbackRefused::Unknown(format!(
                    "no refund {out_refund_no}"
                )));
            }
            if let Some(amount) = plain["amount"]["refund"].as_i64() {
                if amount != refund.amount_fen {
                    return Err(CallbackRefused::Malformed(
                        "the refund amount does not match ours".into(),
                    ));
                }
            }
            format!(
                "{out_refund_no}:{}",
                text_field(&plain, "refund_status")
                    .map_err(|e| CallbackRefused::Malformed(e.to_string()))?
            )
        } else {
            return Err(CallbackRefused::Malformed(format!(
                "unknown event type `{event_type}`"
            )));
        };
        let stored = self
            .store
            .record_notification(merchant_id, &id, &event_type, &business_key, &plain, now)
            .await
            .map_err(|e| CallbackRefused::Internal(e.to_string()))?;
        Ok(stored)
    }

    /// Applies a persisted notification (after the 204, or by the sweep).
    ///
    /// # Errors
    /// A store error.
    pub async fn process_notification(&self, notification: &NotificationRow) -> Result<(), Error> {
        let corrupt = |e: &dyn std::fmt::Display| {
            Error::Store(store::Error::Corrupt(format!(
                "notification {}: {e}",
                notification.id
            )))
        };
        let plain: serde_json::Value =
            serde_json::from_str(&notification.resource).map_err(|e| corrupt(&e))?;
        let outcome = if notification.event_type.starts_with("MEDICAL_INSURANCE.") {
            let no = text_field(&plain, "out_trade_no").map_err(|e| corrupt(&e))?;
            match (
                self.store.payment(no).await?,
                plain["mix_pay_status"].as_str(),
            ) {
                (Some(payment), Some("MIX_PAY_SUCCESS")) => {
                    self.store.payment_mix_status(no, "MIX_PAY_SUCCESS").await?;
                    let mix = text_field(&plain, "mix_trade_no").map_err(|e| corrupt(&e))?;
                    self.paid_outcome(&payment, mix).await?
                }
                _ => "ignored",
            }
        } else if notification.event_type.starts_with("TRANSACTION.") {
            let no = text_field(&plain, "out_trade_no").map_err(|e| corrupt(&e))?;
            match (self.store.payment(no).await?, plain["trade_state"].as_str()) {
                // The self-paid leg of a 医保 order: alone it settles nothing.
                (Some(payment), _) if payment.mix_trade_no.is_some() => {
                    "self-paid leg of a 医保 order: waits for MEDICAL_INSURANCE.SUCCESS"
                }
                (Some(payment), Some("SUCCESS")) => {
                    let transaction_id =
                        text_field(&plain, "transaction_id").map_err(|e| corrupt(&e))?;
                    self.paid_outcome(&payment, transaction_id).await?
                }
                _ => "ignored",
            }
        } else {
            let no = text_field(&plain, "out_refund_no").map_err(|e| corrupt(&e))?;
            match self.store.refund(no).await? {
                Some(refund) => {
                    let status = text_field(&plain, "refund_status").map_err(|e| corrupt(&e))?;
                    self.refund_result(&refund, status, plain["refund_id"].as_str())
                        .await?;
                    "applied"
                }
                None => "ignored",
            }
        };
        self.store
            .notification_processed(notification.id, outcome, self.now())
            .await?;
        Ok(())
    }

    /// `payment_paid`, as a processed notification's outcome.
    async fn paid_outcome(&self, payment: &PaymentRow, id: &str) -> Result<&'static str, Error> {
        Ok(if self.payment_paid(payment, id).await? {
            "applied"
        } else {
            "already known"
        })
    }

    // ---- the pay page -----------------------------------------------------------

    async fn payment_of_link(&self, token: &str) -> Result<PaymentRow, PageError> {
        let no = self
            .signer()
            .await?
            .verify(token, self.now())
            .ok_or(PageError::BadLink)?;
        // A link in a message may be opened before its order is recorded
        // (the message and the order are effects of one step): the page waits.
        self.store
            .payment(&no)
            .await
            .map_err(Error::from)?
            .ok_or(PageError::Preparing)
    }

    /// What the pay page behind a link shows.
    ///
    /// # Errors
    /// `BadLink` for a forged or expired link.
    pub async fn pay_view(&self, token: &str) -> Result<PayView, PageError> {
        let payment = self.payment_of_link(token).await?;
        let provider = match payment.state {
            PaymentState::Pending => self.provider_of(&payment).await.ok(),
            _ => None,
        };
        let client = provider.as_ref().and_then(Provider::client);
        let jsapi = match (&payment.prepay_id, client) {
            (Some(prepay), Some(client)) => client.jsapi_params(prepay).ok(),
            _ => None,
        };
        let med_ins = match (&payment.mix_trade_no, client) {
            (Some(mix), Some(client)) => {
                let mut params = json!({"appid": client.config().appid, "mixTradeNo": mix});
                if let (Some(object), Some(Ok(serde_json::Value::Object(signed)))) = (
                    params.as_object_mut(),
                    jsapi.as_ref().map(serde_json::to_value),
                ) {
                    object.extend(signed.into_iter().filter(|(k, _)| k != "appId"));
                }
                Some(params)
            }
            _ => None,
        };
        // A 医保 order is paid in one step with both legs, never through the plain JSAPI call.
        let jsapi = jsapi.filter(|_| med_ins.is_none());
        Ok(PayView {
            payment: payment.out_trade_no.clone(),
            description: payment.description.clone(),
            amount: payment.amount_fen,
            amount_yuan: Money::from_fen(payment.amount_fen).to_yuan_string(),
            state: payment.state,
            scene: payment.scene.clone(),
            sandbox: payment.merchant_id.is_none(),
            // The page shows times in the tenant's zone.
            expires_at: store::from_ms(payment.expires_at_ms)
                .with_timezone(
                    &self
                        .tenant_zone(&payment.tenant_id)
                        .await
                        .map_err(PageError::from)?,
                )
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            bill: payment
                .bill
                .as_deref()
                .and_then(|b| serde_json::from_str::<CheckedBill>(b).ok())
                // The page shows the split, never who the insured person is.
                .map(CheckedBill::masked),
            code_url: payment.code_url.clone(),
            jsapi,
            mix_trade_no: payment.mix_trade_no.clone(),
            med_ins,
            refunded: payment.refunded_fen,
            late: payment.late,
        })
    }

    /// The sandbox's "Pay" button: pays through the same path as a verified callback.
    ///
    /// # Errors
    /// `BadLink`, `NotSandbox`, `NotPayable`.
    pub async fn sandbox_pay(&self, token: &str) -> Result<PayView, PageError> {
        let payment = self.payment_of_link(token).await?;
        if payment.merchant_id.is_some() {
            return Err(PageError::NotSandbox);
        }
        let state = payment.state;
        if state != PaymentState::Pending && state != PaymentState::Succeeded {
            return Err(PageError::NotPayable(payment.state));
        }
        let transaction_id = format!("SANDBOX{}", &payment.out_trade_no[2..]);
        self.payment_paid(&payment, &transaction_id).await?;
        self.pay_view(token).await
    }

    /// The sandbox's "Cancel" button: the payer declines; the order closes
    /// and the flow gets `payment.failed`.
    ///
    /// # Errors
    /// `BadLink`, `NotSandbox`, `NotPayable`.
    pub async fn sandbox_decline(&self, token: &str) -> Result<PayView, PageError> {
        let payment = self.payment_of_link(token).await?;
        if payment.merchant_id.is_some() {
            return Err(PageError::NotSandbox);
        }
        if payment.state != PaymentState::Pending {
            return Err(PageError::NotPayable(payment.state));
        }
        let event = payment_event(
            PAYMENT_FAILED,
            &payment,
            json!({"error": "the payer cancelled"}),
        );
        self.store
            .payment_moved(
                &payment,
                &[PaymentState::Pending],
                PaymentState::Failed,
                None,
                Some("the payer cancelled"),
                Some(&event),
                self.now(),
            )
            .await
            .map_err(Error::from)?;
        self.wake();
        self.pay_view(token).await
    }
}

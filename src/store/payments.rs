//! Payments, refunds, merchant accounts and received notifications.
//!
//! Every change of a payment's or refund's state is a conditional update
//! (`WHERE state IN (…)`): of two callers racing (a callback and the
//! reconciliation query, two nodes), one changes it and the other sees
//! `false`. The change and the event it owes the instance (an outbox row
//! keyed by the payment and its new state) commit together.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, Statement, TransactionTrait,
};

use super::entities::{merchants, outbox, pay_notifications, payments, refunds, settings, tenants};
use super::instances::append_history;
use super::{ms, OutboxStatus, PaymentState, RefundStatus, Result, Store};

pub use super::entities::merchants::Model as MerchantRow;
pub use super::entities::pay_notifications::Model as NotificationRow;
pub use super::entities::payments::Model as PaymentRow;
pub use super::entities::refunds::Model as RefundRow;

/// The outbox kind that delivers a payment or refund event to its instance.
pub const DELIVER_EVENT: &str = "deliver_event";

/// A merchant account as configured (secrets by reference).
#[derive(Debug, Clone)]
pub struct NewMerchant {
    pub tenant_id: String,
    /// `None`: every branch of the tenant without its own.
    pub branch_id: Option<String>,
    pub mchid: String,
    pub appid: String,
    pub serial_no: String,
    pub private_key: String,
    pub api_v3_key: String,
    pub public_key: Option<String>,
    pub public_key_id: Option<String>,
    pub platform_certificates: bool,
    pub notify_url: Option<String>,
    pub base_url: String,
}

/// A payment to record before asking the provider for it.
#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    pub out_trade_no: &'a str,
    pub tenant_id: &'a str,
    pub branch_id: &'a str,
    pub instance_id: &'a str,
    pub effect_key: &'a str,
    pub name: &'a str,
    pub merchant_id: Option<i64>,
    pub scene: &'a str,
    pub description: &'a str,
    pub payer_id: &'a str,
    pub payer_openid: Option<&'a str>,
    pub amount_fen: i64,
    pub bill: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// A refund to record before asking the provider for it.
#[derive(Debug, Clone)]
pub struct NewRefund<'a> {
    pub out_refund_no: &'a str,
    pub payment: &'a PaymentRow,
    pub effect_key: &'a str,
    pub amount_fen: i64,
    pub reason: Option<&'a str>,
    pub automatic: bool,
    /// The 医保 part (JSON of `InsuranceRefund`), reported to WeChat Pay.
    pub insurance: Option<String>,
}

/// Why a refund could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRefused {
    /// More than what is left of the payment.
    NotEnough { asked: i64, left: i64 },
}

/// The event an instance is owed by a state change, delivered through the outbox.
#[derive(Debug, Clone)]
pub struct OwedEvent {
    pub event_type: String,
    pub payload: serde_json::Value,
}

impl Store {
    // ---- tenants and settings -------------------------------------------------

    /// Marks a tenant as production (real money only) or not. False when
    /// there is no such tenant.
    ///
    /// # Errors
    /// A database error.
    pub async fn set_tenant_production(&self, id: &str, production: bool) -> Result<bool> {
        let updated = tenants::Entity::update_many()
            .col_expr(tenants::Column::Production, Expr::value(production))
            .filter(tenants::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// A server setting, created with `make()` on first use (by whichever
    /// node gets there first).
    ///
    /// # Errors
    /// A database error.
    pub async fn setting_or_insert(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String> {
        if let Some(row) = settings::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
        {
            return Ok(row.value);
        }
        settings::Entity::insert(settings::ActiveModel {
            name: Set(name.to_owned()),
            value: Set(make()),
        })
        .on_conflict(
            OnConflict::column(settings::Column::Name)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(settings::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .map(|r| r.value)
            .unwrap_or_default())
    }

    // ---- merchants --------------------------------------------------------------

    /// Creates or replaces the merchant account of a tenant or branch.
    ///
    /// # Errors
    /// A database error.
    pub async fn upsert_merchant(
        &self,
        merchant: &NewMerchant,
        now: DateTime<Utc>,
    ) -> Result<MerchantRow> {
        let branch = merchant.branch_id.clone().unwrap_or_default();
        let existing = merchants::Entity::find()
            .filter(merchants::Column::TenantId.eq(&merchant.tenant_id))
            .filter(merchants::Column::BranchId.eq(&branch))
            .one(&self.db)
            .await?;
        let mut model = merchants::ActiveModel {
            tenant_id: Set(merchant.tenant_id.clone()),
            branch_id: Set(branch),
            mchid: Set(merchant.mchid.clone()),
            appid: Set(merchant.appid.clone()),
            serial_no: Set(merchant.serial_no.clone()),
            private_key: Set(merchant.private_key.clone()),
            api_v3_key: Set(merchant.api_v3_key.clone()),
            public_key: Set(merchant.public_key.clone()),
            public_key_id: Set(merchant.public_key_id.clone()),
            platform_certificates: Set(merchant.platform_certificates),
            notify_url: Set(merchant.notify_url.clone()),
            base_url: Set(merchant.base_url.clone()),
            updated_at_ms: Set(ms(now)),
            ..Default::default()
        };
        match existing {
            Some(row) => {
                model.id = Set(row.id);
                model.created_at_ms = Set(row.created_at_ms);
                Ok(merchants::Entity::update(model).exec(&self.db).await?)
            }
            None => {
                model.created_at_ms = Set(ms(now));
                Ok(merchants::Entity::insert(model)
                    .exec_with_returning(&self.db)
                    .await?)
            }
        }
    }

    /// The merchant that takes a branch's payments: its own, else the
    /// tenant's; none means the sandbox.
    ///
    /// # Errors
    /// A database error.
    pub async fn merchant_for(
        &self,
        tenant_id: &str,
        branch_id: &str,
    ) -> Result<Option<MerchantRow>> {
        let rows = merchants::Entity::find()
            .filter(merchants::Column::TenantId.eq(tenant_id))
            .filter(merchants::Column::BranchId.is_in([branch_id, ""]))
            .all(&self.db)
            .await?;
        Ok(rows
            .iter()
            .find(|m| m.branch_id == branch_id)
            .or_else(|| rows.iter().find(|m| m.branch_id.is_empty()))
            .cloned())
    }

    /// # Errors
    /// A database error.
    pub async fn merchant(&self, id: i64) -> Result<Option<MerchantRow>> {
        Ok(merchants::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// A tenant's merchants (every tenant's when `tenant_id` is `None`).
    ///
    /// # Errors
    /// A database error.
    pub async fn merchants(&self, tenant_id: Option<&str>) -> Result<Vec<MerchantRow>> {
        let mut query = merchants::Entity::find().order_by_asc(merchants::Column::Id);
        if let Some(tenant) = tenant_id {
            query = query.filter(merchants::Column::TenantId.eq(tenant));
        }
        Ok(query.all(&self.db).await?)
    }

    // ---- payments ---------------------------------------------------------------

    /// Records a payment in state `creating`; the same effect again returns
    /// the row already there. Returns the row and whether it is new.
    ///
    /// # Errors
    /// A database error.
    pub async fn insert_payment(
        &self,
        new: &NewPayment<'_>,
        now: DateTime<Utc>,
    ) -> Result<(PaymentRow, bool)> {
        let inserted = payments::Entity::insert(payments::ActiveModel {
            out_trade_no: Set(new.out_trade_no.to_owned()),
            tenant_id: Set(new.tenant_id.to_owned()),
            branch_id: Set(new.branch_id.to_owned()),
            instance_id: Set(new.instance_id.to_owned()),
            effect_key: Set(new.effect_key.to_owned()),
            name: Set(new.name.to_owned()),
            merchant_id: Set(new.merchant_id),
            scene: Set(new.scene.to_owned()),
            description: Set(new.description.to_owned()),
            payer_id: Set(new.payer_id.to_owned()),
            payer_openid: Set(new.payer_openid.map(str::to_owned)),
            amount_fen: Set(new.amount_fen),
            bill: Set(new.bill.clone()),
            state: Set(PaymentState::Creating),
            prepay_id: Set(None),
            code_url: Set(None),
            transaction_id: Set(None),
            refunded_fen: Set(0),
            late: Set(false),
            last_error: Set(None),
            expires_at_ms: Set(ms(new.expires_at)),
            next_check_at_ms: Set(ms(new.expires_at)),
            locked_until_ms: Set(None),
            paid_at_ms: Set(None),
            created_at_ms: Set(ms(now)),
            updated_at_ms: Set(ms(now)),
            mix_trade_no: Set(None),
            mix_pay_status: Set(None),
        })
        .on_conflict(
            OnConflict::column(payments::Column::OutTradeNo)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        let row = self
            .payment(new.out_trade_no)
            .await?
            .ok_or(super::Error::Conflict)?;
        Ok((row, inserted == 1))
    }

    /// # Errors
    /// A database error.
    pub async fn payment(&self, out_trade_no: &str) -> Result<Option<PaymentRow>> {
        Ok(payments::Entity::find_by_id(out_trade_no.to_owned())
            .one(&self.db)
            .await?)
    }

    /// An instance's payments, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn payments_of(&self, instance_id: &str) -> Result<Vec<PaymentRow>> {
        Ok(payments::Entity::find()
            .filter(payments::Column::InstanceId.eq(instance_id))
            .order_by_asc(payments::Column::CreatedAtMs)
            .order_by_asc(payments::Column::OutTradeNo)
            .all(&self.db)
            .await?)
    }

    /// The order exists at the provider: `creating` → `pending`, with what
    /// the payer needs (prepay id or code URL) and the first reconciliation time.
    ///
    /// # Errors
    /// A database error.
    #[allow(clippy::too_many_arguments)]
    pub async fn payment_opened(
        &self,
        out_trade_no: &str,
        prepay_id: Option<&str>,
        code_url: Option<&str>,
        mix_trade_no: Option<&str>,
        next_check_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let updated = payments::Entity::update_many()
            .col_expr(payments::Column::State, Expr::value(PaymentState::Pending))
            .col_expr(
                payments::Column::MixTradeNo,
                Expr::value(mix_trade_no.map(str::to_owned)),
            )
            .col_expr(
                payments::Column::MixPayStatus,
                Expr::value(mix_trade_no.map(|_| "MIX_PAY_CREATED".to_owned())),
            )
            .col_expr(
                payments::Column::PrepayId,
                Expr::value(prepay_id.map(str::to_owned)),
            )
            .col_expr(
                payments::Column::CodeUrl,
                Expr::value(code_url.map(str::to_owned)),
            )
            .col_expr(
                payments::Column::NextCheckAtMs,
                Expr::value(ms(next_check_at)),
            )
            .col_expr(payments::Column::UpdatedAtMs, Expr::value(ms(now)))
            .filter(payments::Column::OutTradeNo.eq(out_trade_no))
            .filter(payments::Column::State.eq("creating"))
            .exec(&self.db)
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// Moves a payment from one of `from` to `to`, recording the
    /// transaction and owing the instance `event`, all in one transaction.
    /// False when the payment was not in any of `from` (another caller did it).
    ///
    /// # Errors
    /// A database error.
    #[allow(clippy::too_many_arguments)]
    pub async fn payment_moved(
        &self,
        payment: &PaymentRow,
        from: &[PaymentState],
        to: PaymentState,
        transaction_id: Option<&str>,
        error: Option<&str>,
        event: Option<&OwedEvent>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let txn = self.db.begin().await?;
        let mut update = payments::Entity::update_many()
            .col_expr(payments::Column::State, Expr::value(to.as_str()))
            .col_expr(payments::Column::UpdatedAtMs, Expr::value(ms(now)))
            .col_expr(
                payments::Column::LockedUntilMs,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(
                payments::Column::LastError,
                Expr::value(error.map(str::to_owned)),
            );
        if let Some(id) = transaction_id {
            update = update.col_expr(payments::Column::TransactionId, Expr::value(id));
        }
        if to == PaymentState::Succeeded {
            update = update.col_expr(payments::Column::PaidAtMs, Expr::value(ms(now)));
        }
        let moved = update
            .filter(payments::Column::OutTradeNo.eq(&payment.out_trade_no))
            .filter(payments::Column::State.is_in(from.iter().map(|s| s.as_str())))
            .exec(&txn)
            .await?;
        if moved.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        append_history(
            &txn,
            &payment.instance_id,
            "payment_state",
            &serde_json::json!({"payment": payment.out_trade_no, "state": to, "transaction_id": transaction_id, "error": error}),
            now,
        )
        .await?;
        if let Some(event) = event {
            let key = format!("payment:{}:{to}", payment.out_trade_no);
            owe_event(
                &txn,
                &payment.tenant_id,
                &payment.instance_id,
                &key,
                event,
                now,
            )
            .await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// Marks a paid payment as late (the flow had moved on): it is refunded.
    ///
    /// # Errors
    /// A database error.
    pub async fn payment_late(
        &self,
        payment: &PaymentRow,
        notice: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.db.begin().await?;
        payments::Entity::update_many()
            .col_expr(payments::Column::Late, Expr::value(true))
            .col_expr(payments::Column::UpdatedAtMs, Expr::value(ms(now)))
            .filter(payments::Column::OutTradeNo.eq(&payment.out_trade_no))
            .exec(&txn)
            .await?;
        // The payer is told, once, with the same change: a `send` effect.
        insert_outbox(
            &txn,
            &payment.tenant_id,
            &payment.instance_id,
            &format!("late_notice:{}", payment.out_trade_no),
            "send",
            &notice.to_string(),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Puts a claimed payment back with its next check time.
    ///
    /// # Errors
    /// A database error.
    pub async fn payment_check_later(
        &self,
        out_trade_no: &str,
        at: DateTime<Utc>,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.check_later("payments", "out_trade_no", out_trade_no, at, error, now)
            .await
    }

    /// Claims pending payments due for a check (reconciliation or expiry).
    ///
    /// # Errors
    /// A database error.
    pub async fn claim_due_payments(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u64,
    ) -> Result<Vec<PaymentRow>> {
        self.claim::<payments::Entity>(super::claim::PAYMENTS, now, lease, limit)
            .await
    }

    // ---- refunds ----------------------------------------------------------------

    /// Records a refund and reserves its amount on the payment, in one
    /// transaction; the same effect again returns the row already there.
    ///
    /// # Errors
    /// `Ok(Err(NotEnough))` when the payment has less left; a database error.
    pub async fn insert_refund(
        &self,
        new: &NewRefund<'_>,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<RefundRow, RefundRefused>> {
        if let Some(row) = refunds::Entity::find()
            .filter(refunds::Column::EffectKey.eq(new.effect_key))
            .one(&self.db)
            .await?
        {
            return Ok(Ok(row));
        }
        let txn = self.db.begin().await?;
        let reserved = payments::Entity::update_many()
            .col_expr(
                payments::Column::RefundedFen,
                Expr::col(payments::Column::RefundedFen).add(new.amount_fen),
            )
            .filter(payments::Column::OutTradeNo.eq(&new.payment.out_trade_no))
            .filter(
                Expr::col(payments::Column::AmountFen)
                    .gte(Expr::col(payments::Column::RefundedFen).add(new.amount_fen)),
            )
            .exec(&txn)
            .await?;
        if reserved.rows_affected != 1 {
            txn.rollback().await?;
            let left = self
                .payment(&new.payment.out_trade_no)
                .await?
                .map_or(0, |p| p.amount_fen - p.refunded_fen);
            return Ok(Err(RefundRefused::NotEnough {
                asked: new.amount_fen,
                left,
            }));
        }
        let row = refunds::Entity::insert(refunds::ActiveModel {
            out_refund_no: Set(new.out_refund_no.to_owned()),
            tenant_id: Set(new.payment.tenant_id.clone()),
            instance_id: Set(new.payment.instance_id.clone()),
            out_trade_no: Set(new.payment.out_trade_no.clone()),
            effect_key: Set(new.effect_key.to_owned()),
            amount_fen: Set(new.amount_fen),
            reason: Set(new.reason.map(str::to_owned)),
            status: Set(RefundStatus::Pending),
            refund_id: Set(None),
            automatic: Set(new.automatic),
            last_error: Set(None),
            next_check_at_ms: Set(ms(now)),
            locked_until_ms: Set(None),
            created_at_ms: Set(ms(now)),
            updated_at_ms: Set(ms(now)),
            insurance: Set(new.insurance.clone()),
            insurance_notified_at_ms: Set(None),
        })
        .exec_with_returning(&txn)
        .await?;
        append_history(
            &txn,
            &new.payment.instance_id,
            "refund_state",
            &serde_json::json!({"refund": new.out_refund_no, "payment": new.payment.out_trade_no, "state": RefundStatus::Pending, "amount": new.amount_fen, "automatic": new.automatic}),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(Ok(row))
    }

    /// # Errors
    /// A database error.
    pub async fn refund(&self, out_refund_no: &str) -> Result<Option<RefundRow>> {
        Ok(refunds::Entity::find_by_id(out_refund_no.to_owned())
            .one(&self.db)
            .await?)
    }

    /// WeChat Pay accepted the report of a refund's 医保 part.
    ///
    /// # Errors
    /// A database error.
    pub async fn refund_insurance_notified(
        &self,
        out_refund_no: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        refunds::Entity::update_many()
            .col_expr(
                refunds::Column::InsuranceNotifiedAtMs,
                Expr::value(Some(ms(now))),
            )
            .col_expr(refunds::Column::UpdatedAtMs, Expr::value(ms(now)))
            .filter(refunds::Column::OutRefundNo.eq(out_refund_no))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The last `mix_pay_status` WeChat Pay reported for a 医保 payment.
    ///
    /// # Errors
    /// A database error.
    pub async fn payment_mix_status(&self, out_trade_no: &str, status: &str) -> Result<()> {
        payments::Entity::update_many()
            .col_expr(
                payments::Column::MixPayStatus,
                Expr::value(Some(status.to_owned())),
            )
            .filter(payments::Column::OutTradeNo.eq(out_trade_no))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// A payment's refunds, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn refunds_of(&self, out_trade_no: &str) -> Result<Vec<RefundRow>> {
        Ok(refunds::Entity::find()
            .filter(refunds::Column::OutTradeNo.eq(out_trade_no))
            .order_by_asc(refunds::Column::CreatedAtMs)
            .order_by_asc(refunds::Column::OutRefundNo)
            .all(&self.db)
            .await?)
    }

    /// Moves a refund from one of `from` to `to` (a `closed` refund gives
    /// its amount back to the payment), owing the instance `event`. False
    /// when it was not in any of `from`.
    ///
    /// # Errors
    /// A database error.
    #[allow(clippy::too_many_arguments)]
    pub async fn refund_moved(
        &self,
        refund: &RefundRow,
        from: &[RefundStatus],
        to: RefundStatus,
        refund_id: Option<&str>,
        next_check_at: Option<DateTime<Utc>>,
        event: Option<&OwedEvent>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let txn = self.db.begin().await?;
        let mut update = refunds::Entity::update_many()
            .col_expr(refunds::Column::Status, Expr::value(to.as_str()))
            .col_expr(refunds::Column::UpdatedAtMs, Expr::value(ms(now)))
            .col_expr(
                refunds::Column::LockedUntilMs,
                Expr::value(Option::<i64>::None),
            );
        if let Some(id) = refund_id {
            update = update.col_expr(refunds::Column::RefundId, Expr::value(id));
        }
        if let Some(at) = next_check_at {
            update = update.col_expr(refunds::Column::NextCheckAtMs, Expr::value(ms(at)));
        }
        let moved = update
            .filter(refunds::Column::OutRefundNo.eq(&refund.out_refund_no))
            .filter(refunds::Column::Status.is_in(from.iter().map(|s| s.as_str())))
            .exec(&txn)
            .await?;
        if moved.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        if to == RefundStatus::Closed {
            payments::Entity::update_many()
                .col_expr(
                    payments::Column::RefundedFen,
                    Expr::col(payments::Column::RefundedFen).sub(refund.amount_fen),
                )
                .filter(payments::Column::OutTradeNo.eq(&refund.out_trade_no))
                .exec(&txn)
                .await?;
        }
        if to != refund.status {
            append_history(
                &txn,
                &refund.instance_id,
                "refund_state",
                &serde_json::json!({"refund": refund.out_refund_no, "payment": refund.out_trade_no, "state": to, "refund_id": refund_id}),
                now,
            )
            .await?;
        }
        if let Some(event) = event {
            let key = format!("refund:{}:{to}", refund.out_refund_no);
            owe_event(
                &txn,
                &refund.tenant_id,
                &refund.instance_id,
                &key,
                event,
                now,
            )
            .await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// Puts a claimed refund back with its next check time.
    ///
    /// # Errors
    /// A database error.
    pub async fn refund_check_later(
        &self,
        out_refund_no: &str,
        at: DateTime<Utc>,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.check_later("refunds", "out_refund_no", out_refund_no, at, error, now)
            .await
    }

    /// Claims refunds due for sending (`pending`) or a check (`processing`).
    ///
    /// # Errors
    /// A database error.
    pub async fn claim_due_refunds(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u64,
    ) -> Result<Vec<RefundRow>> {
        self.claim::<refunds::Entity>(super::claim::REFUNDS, now, lease, limit)
            .await
    }

    /// Releases a claimed payment or refund until `at`, noting the last error.
    async fn check_later(
        &self,
        table: &str,
        key: &str,
        value: &str,
        at: DateTime<Utc>,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE {table} SET next_check_at_ms = $1, locked_until_ms = NULL, last_error = $2, \
             updated_at_ms = $3 WHERE {key} = $4"
        );
        let values = [
            ms(at).into(),
            error.map(str::to_owned).into(),
            ms(now).into(),
            value.to_owned().into(),
        ];
        self.db
            .execute(Statement::from_sql_and_values(self.backend(), sql, values))
            .await?;
        Ok(())
    }

    // ---- notifications ----------------------------------------------------------

    /// Persists a verified, decrypted notification. `None` when the same
    /// notification id was received before (a duplicate: nothing to do).
    ///
    /// # Errors
    /// A database error.
    pub async fn record_notification(
        &self,
        merchant_id: i64,
        notification_id: &str,
        event_type: &str,
        business_key: &str,
        resource: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<Option<NotificationRow>> {
        let inserted = pay_notifications::Entity::insert(pay_notifications::ActiveModel {
            merchant_id: Set(merchant_id),
            notification_id: Set(notification_id.to_owned()),
            event_type: Set(event_type.to_owned()),
            business_key: Set(business_key.to_owned()),
            resource: Set(resource.to_string()),
            received_at_ms: Set(ms(now)),
            processed_at_ms: Set(None),
            outcome: Set(None),
            ..Default::default()
        })
        .on_conflict(
            OnConflict::columns([
                pay_notifications::Column::MerchantId,
                pay_notifications::Column::NotificationId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        if inserted == 0 {
            return Ok(None);
        }
        Ok(pay_notifications::Entity::find()
            .filter(pay_notifications::Column::MerchantId.eq(merchant_id))
            .filter(pay_notifications::Column::NotificationId.eq(notification_id))
            .one(&self.db)
            .await?)
    }

    /// # Errors
    /// A database error.
    pub async fn notification_processed(
        &self,
        id: i64,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        pay_notifications::Entity::update_many()
            .col_expr(
                pay_notifications::Column::ProcessedAtMs,
                Expr::value(ms(now)),
            )
            .col_expr(pay_notifications::Column::Outcome, Expr::value(outcome))
            .filter(pay_notifications::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Notifications answered but not processed (the process stopped in between).
    ///
    /// # Errors
    /// A database error.
    pub async fn unprocessed_notifications(&self, limit: u64) -> Result<Vec<NotificationRow>> {
        use sea_orm::QuerySelect;
        Ok(pay_notifications::Entity::find()
            .filter(pay_notifications::Column::ProcessedAtMs.is_null())
            .order_by_asc(pay_notifications::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Every notification of a merchant, oldest first (for tests and audits).
    ///
    /// # Errors
    /// A database error.
    pub async fn notifications(&self, merchant_id: i64) -> Result<Vec<NotificationRow>> {
        Ok(pay_notifications::Entity::find()
            .filter(pay_notifications::Column::MerchantId.eq(merchant_id))
            .order_by_asc(pay_notifications::Column::Id)
            .all(&self.db)
            .await?)
    }
}

/// Owes an instance an event: an outbox row the runtime delivers once.
async fn owe_event(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    instance_id: &str,
    key: &str,
    event: &OwedEvent,
    now: DateTime<Utc>,
) -> Result<()> {
    let payload = serde_json::json!({"event_type": event.event_type, "payload": event.payload});
    insert_outbox(
        txn,
        tenant_id,
        instance_id,
        key,
        DELIVER_EVENT,
        &payload.to_string(),
        now,
    )
    .await
}

/// An outbox row the runtime executes once per key (a second insert with
/// the same key does nothing).
async fn insert_outbox(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    instance_id: &str,
    key: &str,
    kind: &str,
    payload: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    outbox::Entity::insert(outbox::ActiveModel {
        tenant_id: Set(tenant_id.to_owned()),
        instance_id: Set(instance_id.to_owned()),
        effect_key: Set(key.to_owned()),
        kind: Set(kind.to_owned()),
        payload: Set(payload.to_owned()),
        status: Set(OutboxStatus::Pending),
        attempts: Set(0),
        available_at_ms: Set(ms(now)),
        last_error: Set(None),
        created_at_ms: Set(ms(now)),
        done_at_ms: Set(None),
        locked_until_ms: Set(None),
        ..Default::default()
    })
    .on_conflict(
        OnConflict::column(outbox::Column::EffectKey)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

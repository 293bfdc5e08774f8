//! The outbox of effects, and the web inbox a `send` delivers to.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::entities::{inbox_messages, outbox};
use super::instances::*;
use super::OutboxStatus;
use super::*;
use super::{ms, Result, Store};

impl Store {
    /// Pending outbox rows whose time has come, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn pending_outbox(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<OutboxRow>> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::Status.eq(OutboxStatus::Pending))
            .filter(outbox::Column::AvailableAtMs.lte(ms(now)))
            .order_by_asc(outbox::Column::AvailableAtMs)
            .order_by_asc(outbox::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Claims up to `limit` pending outbox rows whose time has come, for
    /// `lease` (see `claim_due_timers`).
    ///
    /// # Errors
    /// A database error.
    pub async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u64,
    ) -> Result<Vec<OutboxRow>> {
        let mut rows = self
            .claim::<outbox::Entity>(super::claim::OUTBOX, now, lease, limit)
            .await?;
        rows.sort_by_key(|r| (r.available_at_ms, r.id));
        Ok(rows)
    }

    /// How many of an instance's effects are not yet done (pending or
    /// waiting for a retry).
    ///
    /// # Errors
    /// A database error.
    pub async fn pending_effects(&self, instance_id: &str) -> Result<u64> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::Status.eq(OutboxStatus::Pending))
            .filter(outbox::Column::InstanceId.eq(instance_id))
            .count(&self.db)
            .await?)
    }

    /// Counts outbox rows in a status.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_count(&self, status: &str) -> Result<u64> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::Status.eq(status))
            .count(&self.db)
            .await?)
    }

    /// Delivers a message to the web inbox and marks the outbox row done,
    /// in one transaction. The inbox row is unique per effect key, so a
    /// second delivery of the same effect changes nothing.
    ///
    /// # Errors
    /// A database error.
    pub async fn deliver_to_inbox(
        &self,
        row: &OutboxRow,
        party_id: &str,
        template: &str,
        title: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let message = inbox_messages::ActiveModel {
            tenant_id: Set(row.tenant_id.clone()),
            party_id: Set(party_id.to_owned()),
            instance_id: Set(row.instance_id.clone()),
            effect_key: Set(row.effect_key.clone()),
            template: Set(template.to_owned()),
            title: Set(title.to_owned()),
            body: Set(body.to_owned()),
            created_at_ms: Set(ms(now)),
            ..Default::default()
        };
        let row = row.clone();
        self.write(&row.instance_id.clone(), move |txn| {
            Box::pin(async move {
                inbox_messages::Entity::insert(message)
                    .on_conflict(
                        OnConflict::column(inbox_messages::Column::EffectKey)
                            .do_nothing()
                            .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await?;
                finish_outbox(txn, &row, OutboxStatus::Done, None, now).await?;
                append_history(
                    txn,
                    &row.instance_id,
                    "effect_done",
                    &serde_json::json!({"effect": row.kind, "key": row.effect_key, "channel": "inbox", "attempt": row.attempts + 1}),
                    now,
                )
                .await
            })
        })
        .await
    }

    /// Marks an outbox row done and records it in the instance's history.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_done(
        &self,
        row: &OutboxRow,
        detail: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (row, detail) = (row.clone(), detail.clone());
        self.write(&row.instance_id.clone(), move |txn| {
            Box::pin(async move {
                finish_outbox(txn, &row, OutboxStatus::Done, None, now).await?;
                append_history(txn, &row.instance_id, "effect_done", &detail, now).await
            })
        })
        .await
    }

    /// Records a failed attempt: retried at `retry_at`, or failed for good
    /// when `retry_at` is `None`.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_attempt_failed(
        &self,
        row: &OutboxRow,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (row, error) = (row.clone(), error.to_owned());
        self.write(&row.instance_id.clone(), move |txn| {
            Box::pin(async move {
                match retry_at {
                    Some(at) => {
                        offer_again(row.id, at, &error)
                            .col_expr(outbox::Column::Attempts, Expr::value(row.attempts + 1))
                            .exec(txn)
                            .await?;
                    }
                    None => {
                        finish_outbox(txn, &row, OutboxStatus::Failed, Some(&error), now).await?;
                    }
                }
                append_history(
                    txn,
                    &row.instance_id,
                    "effect_failed",
                    &serde_json::json!({"effect": row.kind, "key": row.effect_key, "attempt": row.attempts + 1, "error": error, "will_retry": retry_at.is_some()}),
                    now,
                )
                .await
            })
        })
        .await
    }

    /// Offers a pending outbox row again at `at` without counting an
    /// attempt; the instance's history notes it only the first time.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_postpone(
        &self,
        row: &OutboxRow,
        at: DateTime<Utc>,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (row, note) = (row.clone(), note.to_owned());
        self.write(&row.instance_id.clone(), move |txn| {
            Box::pin(async move {
                offer_again(row.id, at, &note).exec(txn).await?;
                if row.last_error.as_deref() != Some(note.as_str()) {
                    append_history(
                        txn,
                        &row.instance_id,
                        "effect_postponed",
                        &serde_json::json!({"effect": row.kind, "key": row.effect_key, "reason": note}),
                        now,
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// A party's web inbox, newest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn inbox(
        &self,
        tenant_id: &str,
        party_id: &str,
        limit: u64,
    ) -> Result<Vec<InboxRow>> {
        Ok(inbox_messages::Entity::find()
            .filter(inbox_messages::Column::TenantId.eq(tenant_id))
            .filter(inbox_messages::Column::PartyId.eq(party_id))
            .order_by_desc(inbox_messages::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }
}

/// The update that offers outbox row `id` again from `at`, unclaimed,
/// noting why (a retry adds its attempt count to it).
fn offer_again(id: i64, at: DateTime<Utc>, note: &str) -> sea_orm::UpdateMany<outbox::Entity> {
    outbox::Entity::update_many()
        .col_expr(outbox::Column::AvailableAtMs, Expr::value(ms(at)))
        .col_expr(outbox::Column::LastError, Expr::value(note.to_owned()))
        .col_expr(
            outbox::Column::LockedUntilMs,
            Expr::value(Option::<i64>::None),
        )
        .filter(outbox::Column::Id.eq(id))
}

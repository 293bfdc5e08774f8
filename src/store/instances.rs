//! Instances and the commit of a transition: state, history, timers and outbox rows in one transaction.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::entities::{correlated_events, history, idempotency_keys, instances, outbox, timers};
use super::*;
use super::{ms, Error, Result, Store};
use crate::engine::Transition;

impl Store {
    /// Inserts a new instance with its first transition, and the
    /// idempotency record when one is given, in one transaction.
    ///
    /// # Errors
    /// A database error; a unique violation on the idempotency key shows
    /// another request with the same key won.
    pub async fn insert_instance(
        &self,
        new: NewInstance<'_>,
        transition: &Transition,
        idempotency: Option<&IdempotencyRecord>,
        now: DateTime<Utc>,
    ) -> Result<InstanceRow> {
        let row = instances::ActiveModel {
            id: Set(new.id.to_owned()),
            tenant_id: Set(new.tenant_id.to_owned()),
            branch_id: Set(new.branch_id.to_owned()),
            definition_id: Set(new.definition.id),
            workflow: Set(new.definition.name.clone()),
            version: Set(new.definition.version),
            state: Set(transition.state.clone()),
            status: Set(transition.status.as_str().to_owned()),
            input: Set(new.input.to_string()),
            data: Set(transition.data.to_string()),
            business_key: Set(new.business_key.map(str::to_owned)),
            entry_seq: Set(transition.entry_seq),
            revision: Set(1),
            history_len: Set(i64::try_from(transition.history.len()).unwrap_or(i64::MAX)),
            created_at_ms: Set(ms(now)),
            updated_at_ms: Set(ms(now)),
            ended_at_ms: Set(transition.status.is_final().then(|| ms(now))),
            parent_id: Set(new.parent_id.map(str::to_owned)),
        };
        let (tenant_id, id) = (new.tenant_id.to_owned(), new.id.to_owned());
        let transition = transition.clone();
        let idempotency = idempotency.cloned();
        self.write(new.id, move |txn| {
            Box::pin(async move {
                let row = instances::Entity::insert(row)
                    .exec_with_returning(txn)
                    .await?;
                write_consequences(txn, &tenant_id, &id, 0, &transition, now).await?;
                if let Some(record) = &idempotency {
                    insert_idempotency(txn, &tenant_id, record, now).await?;
                }
                Ok(row)
            })
        })
        .await
    }

    /// Commits a transition if the instance is still at `revision`.
    /// `extras.fired_timer` is deleted in the same transaction: if another
    /// node already fired it, nothing is written and `Conflict` is returned.
    /// `extras.consume` marks a kept correlated event delivered in the same
    /// transaction: if another instance took it first, `Consumed`.
    ///
    /// # Errors
    /// `Conflict` when the instance or timer changed, `Consumed`; a database error.
    pub async fn commit(
        &self,
        current: &InstanceRow,
        transition: &Transition,
        extras: CommitExtras<'_>,
        now: DateTime<Utc>,
    ) -> Result<InstanceRow> {
        let current = current.clone();
        let transition = transition.clone();
        let fired_timer = extras.fired_timer;
        let consume = extras.consume.map(str::to_owned);
        let idempotency = extras.idempotency.cloned();
        let order = current.id.clone();
        self.write(&order, move |txn| {
            Box::pin(async move {
                commit_in(
                    txn,
                    &current,
                    &transition,
                    fired_timer,
                    consume.as_deref(),
                    idempotency.as_ref(),
                    now,
                )
                .await
            })
        })
        .await
    }

    /// # Errors
    /// A database error.
    pub async fn instance(&self, tenant_id: &str, id: &str) -> Result<Option<InstanceRow>> {
        Ok(instances::Entity::find_by_id(id.to_owned())
            .filter(instances::Column::TenantId.eq(tenant_id))
            .one(&self.db)
            .await?)
    }

    /// # Errors
    /// A database error.
    pub async fn list_instances(
        &self,
        tenant_id: &str,
        filter: &InstanceFilter,
    ) -> Result<Vec<InstanceRow>> {
        let mut query = instances::Entity::find().filter(instances::Column::TenantId.eq(tenant_id));
        if let Some(workflow) = &filter.workflow {
            query = query.filter(instances::Column::Workflow.eq(workflow));
        }
        if let Some(state) = &filter.state {
            query = query.filter(instances::Column::State.eq(state));
        }
        if let Some(status) = &filter.status {
            query = query.filter(instances::Column::Status.eq(status));
        }
        if let Some(key) = &filter.business_key {
            query = query.filter(instances::Column::BusinessKey.eq(key));
        }
        if let Some(after) = &filter.after {
            query = query.filter(instances::Column::Id.gt(after));
        }
        Ok(query
            .order_by_asc(instances::Column::Id)
            .limit(filter.limit)
            .all(&self.db)
            .await?)
    }

    /// History in order, from `from_seq`, at most `limit` rows.
    ///
    /// # Errors
    /// A database error.
    pub async fn history(
        &self,
        instance_id: &str,
        from_seq: i64,
        limit: u64,
    ) -> Result<Vec<HistoryRow>> {
        Ok(history::Entity::find()
            .filter(history::Column::InstanceId.eq(instance_id))
            .filter(history::Column::Seq.gte(from_seq))
            .order_by_asc(history::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?)
    }
}

/// The writes of `Store::commit`, on the group commit's transaction.
async fn commit_in(
    txn: &DatabaseTransaction,
    current: &InstanceRow,
    transition: &Transition,
    fired_timer: Option<i64>,
    consume: Option<&str>,
    idempotency: Option<&IdempotencyRecord>,
    now: DateTime<Utc>,
) -> Result<InstanceRow> {
    if let Some(timer_id) = fired_timer {
        let deleted = timers::Entity::delete_by_id(timer_id).exec(txn).await?;
        if deleted.rows_affected != 1 {
            return Err(Error::Conflict);
        }
    }
    if let Some(message_id) = consume {
        let taken = correlated_events::Entity::update_many()
            .col_expr(
                correlated_events::Column::Status,
                Expr::value(super::KeptEventStatus::Delivered),
            )
            .col_expr(
                correlated_events::Column::DeliveredAtMs,
                Expr::value(ms(now)),
            )
            .col_expr(
                correlated_events::Column::DeliveredTo,
                Expr::value(current.id.clone()),
            )
            .filter(correlated_events::Column::TenantId.eq(&current.tenant_id))
            .filter(correlated_events::Column::MessageId.eq(message_id))
            .filter(correlated_events::Column::Status.eq(super::KeptEventStatus::Pending))
            .exec(txn)
            .await?;
        if taken.rows_affected != 1 {
            return Err(Error::Consumed);
        }
    }
    // History rows are numbered from what the update returns, not from
    // the row as read: an effect's result appended meanwhile
    // (`append_history`) takes its number without bumping the revision,
    // so it never makes a transition conflict.
    let added = i64::try_from(transition.history.len()).unwrap_or(0);
    let mut update = instances::Entity::update_many()
        .col_expr(
            instances::Column::Revision,
            Expr::value(current.revision + 1),
        )
        .col_expr(
            instances::Column::HistoryLen,
            Expr::col(instances::Column::HistoryLen).add(added),
        )
        .col_expr(instances::Column::UpdatedAtMs, Expr::value(ms(now)))
        .filter(instances::Column::Id.eq(&current.id))
        .filter(instances::Column::Revision.eq(current.revision));
    if transition.applied {
        update = update
            .col_expr(
                instances::Column::State,
                Expr::value(transition.state.clone()),
            )
            .col_expr(
                instances::Column::Status,
                Expr::value(transition.status.as_str()),
            )
            .col_expr(
                instances::Column::Data,
                Expr::value(transition.data.to_string()),
            )
            .col_expr(
                instances::Column::EntrySeq,
                Expr::value(transition.entry_seq),
            );
        if transition.status.is_final() && current.ended_at_ms.is_none() {
            update = update.col_expr(instances::Column::EndedAtMs, Expr::value(ms(now)));
        }
    }
    let Some(row) = update.exec_with_returning(txn).await?.into_iter().next() else {
        return Err(Error::Conflict);
    };
    write_consequences(
        txn,
        &current.tenant_id,
        &current.id,
        row.history_len - added,
        transition,
        now,
    )
    .await?;
    if let Some(record) = idempotency {
        insert_idempotency(txn, &current.tenant_id, record, now).await?;
    }
    // The row as committed (returned by the update), not read back.
    Ok(row)
}

pub(super) async fn insert_idempotency(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    record: &IdempotencyRecord,
    now: DateTime<Utc>,
) -> Result<()> {
    idempotency_keys::Entity::insert(idempotency_keys::ActiveModel {
        tenant_id: Set(tenant_id.to_owned()),
        scope: Set(record.scope.clone()),
        key: Set(record.key.clone()),
        request_hash: Set(record.request_hash.clone()),
        response: Set(record.response.clone()),
        status_code: Set(record.status_code),
        created_at_ms: Set(ms(now)),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

pub(super) async fn finish_outbox(
    txn: &DatabaseTransaction,
    row: &OutboxRow,
    status: super::OutboxStatus,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    outbox::Entity::update_many()
        .col_expr(outbox::Column::Status, Expr::value(status.as_str()))
        .col_expr(outbox::Column::Attempts, Expr::value(row.attempts + 1))
        .col_expr(outbox::Column::DoneAtMs, Expr::value(ms(now)))
        .col_expr(
            outbox::Column::LastError,
            Expr::value(error.map(str::to_owned)),
        )
        .filter(outbox::Column::Id.eq(row.id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Appends one history row outside a transition (effect results), numbered
/// by the update that counts it. The revision stays: the instance's state
/// and data did not change, so a transition committing meanwhile does not
/// conflict.
pub(super) async fn append_history(
    txn: &DatabaseTransaction,
    instance_id: &str,
    kind: &str,
    detail: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(instance) = instances::Entity::update_many()
        .col_expr(
            instances::Column::HistoryLen,
            Expr::col(instances::Column::HistoryLen).add(1),
        )
        .filter(instances::Column::Id.eq(instance_id))
        .exec_with_returning(txn)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(());
    };
    history::Entity::insert(history::ActiveModel {
        instance_id: Set(instance_id.to_owned()),
        seq: Set(instance.history_len - 1),
        at_ms: Set(ms(now)),
        kind: Set(kind.to_owned()),
        detail: Set(detail.to_string()),
        ..Default::default()
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// History rows, timer changes and outbox rows of one transition.
pub(super) async fn write_consequences(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    instance_id: &str,
    history_start: i64,
    transition: &Transition,
    now: DateTime<Utc>,
) -> Result<()> {
    if !transition.history.is_empty() {
        let rows = transition
            .history
            .iter()
            .enumerate()
            .map(|(i, entry)| history::ActiveModel {
                instance_id: Set(instance_id.to_owned()),
                seq: Set(history_start + i64::try_from(i).unwrap_or(0)),
                at_ms: Set(ms(now)),
                kind: Set(entry.kind.to_owned()),
                detail: Set(entry.detail.to_string()),
                ..Default::default()
            });
        history::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    if transition.cancel_timers {
        timers::Entity::delete_many()
            .filter(timers::Column::InstanceId.eq(instance_id))
            .exec(txn)
            .await?;
    }
    if !transition.timers.is_empty() {
        let rows = transition.timers.iter().map(|timer| timers::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            instance_id: Set(instance_id.to_owned()),
            entry_seq: Set(timer.entry_seq),
            timer_index: Set(i32::try_from(timer.index).unwrap_or(i32::MAX)),
            due_at_ms: Set(ms(timer.due_at)),
            locked_until_ms: Set(None),
            ..Default::default()
        });
        timers::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    if !transition.effects.is_empty() {
        let mut rows = Vec::with_capacity(transition.effects.len());
        for effect in &transition.effects {
            let payload = effect.kind.payload()?;
            rows.push(outbox::ActiveModel {
                tenant_id: Set(tenant_id.to_owned()),
                instance_id: Set(instance_id.to_owned()),
                effect_key: Set(effect.key.clone()),
                kind: Set(effect.kind.name().to_owned()),
                payload: Set(payload),
                status: Set(super::OutboxStatus::Pending),
                attempts: Set(0),
                available_at_ms: Set(ms(now)),
                last_error: Set(None),
                created_at_ms: Set(ms(now)),
                done_at_ms: Set(None),
                locked_until_ms: Set(None),
                ..Default::default()
            });
        }
        outbox::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::column(outbox::Column::EffectKey)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

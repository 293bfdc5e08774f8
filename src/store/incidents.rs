//! Incidents: effects that failed for good, waiting for a person.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};

use super::entities::{incidents, outbox};
use super::instances::*;
use super::OutboxStatus;
use super::*;
use super::{ms, Result, Store};

impl Store {
    /// Opens an incident for a failed effect and records it in the instance's history.
    ///
    /// # Errors
    /// A database error.
    pub async fn open_incident(
        &self,
        row: &OutboxRow,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<IncidentRow> {
        self.open_incident_for(
            &row.tenant_id,
            &row.instance_id,
            &row.effect_key,
            &row.kind,
            error,
            now,
        )
        .await
    }

    /// Opens an incident about anything keyed (a refund that went
    /// `ABNORMAL`, a late payment whose refund closed).
    ///
    /// # Errors
    /// A database error.
    pub async fn open_incident_for(
        &self,
        tenant_id: &str,
        instance_id: &str,
        key: &str,
        kind: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<IncidentRow> {
        // One open incident per thing that needs a person: a failure that
        // repeats while the first is open does not open another.
        if let Some(open) = incidents::Entity::find()
            .filter(incidents::Column::TenantId.eq(tenant_id))
            .filter(incidents::Column::InstanceId.eq(instance_id))
            .filter(incidents::Column::EffectKey.eq(key))
            .filter(incidents::Column::Status.eq("open"))
            .one(&self.db)
            .await?
        {
            return Ok(open);
        }
        let txn = self.db.begin().await?;
        let incident = incidents::Entity::insert(incidents::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            instance_id: Set(instance_id.to_owned()),
            effect_key: Set(key.to_owned()),
            kind: Set(kind.to_owned()),
            error: Set(error.to_owned()),
            status: Set("open".to_owned()),
            created_at_ms: Set(ms(now)),
            resolved_at_ms: Set(None),
            ..Default::default()
        })
        .exec_with_returning(&txn)
        .await?;
        append_history(
            &txn,
            instance_id,
            "incident_opened",
            &serde_json::json!({"incident": incident.id, "effect": kind, "key": key, "error": error}),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(incident)
    }

    /// A tenant's incidents, newest first; `status` filters (`open`, `retried`).
    ///
    /// # Errors
    /// A database error.
    pub async fn incidents(
        &self,
        tenant_id: &str,
        status: Option<&str>,
        limit: u64,
    ) -> Result<Vec<IncidentRow>> {
        let mut query = incidents::Entity::find().filter(incidents::Column::TenantId.eq(tenant_id));
        if let Some(status) = status {
            query = query.filter(incidents::Column::Status.eq(status));
        }
        Ok(query
            .order_by_desc(incidents::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// # Errors
    /// A database error.
    pub async fn incident(&self, tenant_id: &str, id: i64) -> Result<Option<IncidentRow>> {
        Ok(incidents::Entity::find_by_id(id)
            .filter(incidents::Column::TenantId.eq(tenant_id))
            .one(&self.db)
            .await?)
    }

    /// Puts an open incident's effect back in the outbox, with fresh
    /// attempts, and marks the incident retried. False when it was not open.
    ///
    /// # Errors
    /// A database error.
    pub async fn retry_incident(&self, incident: &IncidentRow, now: DateTime<Utc>) -> Result<bool> {
        let txn = self.db.begin().await?;
        let marked = incidents::Entity::update_many()
            .col_expr(incidents::Column::Status, Expr::value("retried"))
            .col_expr(incidents::Column::ResolvedAtMs, Expr::value(ms(now)))
            .filter(incidents::Column::Id.eq(incident.id))
            .filter(incidents::Column::Status.eq("open"))
            .exec(&txn)
            .await?;
        if marked.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        outbox::Entity::update_many()
            .col_expr(outbox::Column::Status, Expr::value(OutboxStatus::Pending))
            .col_expr(outbox::Column::Attempts, Expr::value(0))
            .col_expr(outbox::Column::AvailableAtMs, Expr::value(ms(now)))
            .col_expr(
                outbox::Column::LockedUntilMs,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(outbox::Column::DoneAtMs, Expr::value(Option::<i64>::None))
            .filter(outbox::Column::EffectKey.eq(&incident.effect_key))
            .exec(&txn)
            .await?;
        append_history(
            &txn,
            &incident.instance_id,
            "incident_retried",
            &serde_json::json!({"incident": incident.id, "key": incident.effect_key}),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(true)
    }
}

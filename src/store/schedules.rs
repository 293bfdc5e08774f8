//! Schedules that start instances on a cron.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};

use super::entities::schedules;
use super::*;
use super::{ms, Result, Store};

impl Store {
    /// Replaces a workflow's schedules with those of the version just
    /// deployed, in one transaction: a redeploy never duplicates them.
    ///
    /// # Errors
    /// A database error.
    pub async fn replace_schedules(
        &self,
        tenant_id: &str,
        definition: &DefinitionRow,
        schedules: &[NewSchedule],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.db.begin().await?;
        schedules::Entity::delete_many()
            .filter(schedules::Column::TenantId.eq(tenant_id))
            .filter(schedules::Column::Workflow.eq(&definition.name))
            .exec(&txn)
            .await?;
        if !schedules.is_empty() {
            let rows = schedules.iter().map(|s| schedules::ActiveModel {
                tenant_id: Set(tenant_id.to_owned()),
                workflow: Set(definition.name.clone()),
                definition_id: Set(definition.id),
                schedule_index: Set(i32::try_from(s.index).unwrap_or(i32::MAX)),
                cron: Set(s.cron.clone()),
                time_zone: Set(s.time_zone.clone()),
                next_fire_at_ms: Set(ms(s.next_fire_at)),
                locked_until_ms: Set(None),
                created_at_ms: Set(ms(now)),
                ..Default::default()
            });
            schedules::Entity::insert_many(rows)
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// A tenant's schedules, by workflow.
    ///
    /// # Errors
    /// A database error.
    pub async fn schedules(&self, tenant_id: &str) -> Result<Vec<ScheduleRow>> {
        Ok(schedules::Entity::find()
            .filter(schedules::Column::TenantId.eq(tenant_id))
            .order_by_asc(schedules::Column::Workflow)
            .order_by_asc(schedules::Column::ScheduleIndex)
            .all(&self.db)
            .await?)
    }

    /// Claims due schedules for `lease` (see `claim_due_timers`).
    ///
    /// # Errors
    /// A database error.
    pub async fn claim_due_schedules(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u64,
    ) -> Result<Vec<ScheduleRow>> {
        let mut rows = self
            .claim::<schedules::Entity>(super::claim::SCHEDULES, now, lease, limit)
            .await?;
        rows.sort_by_key(|s| (s.next_fire_at_ms, s.id));
        Ok(rows)
    }

    /// Moves a schedule that fired at `fired_at_ms` to its next time and
    /// releases it (a schedule replaced meanwhile is left alone).
    ///
    /// # Errors
    /// A database error.
    pub async fn advance_schedule(
        &self,
        id: i64,
        fired_at_ms: i64,
        next: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let update = schedules::Entity::update_many()
            .filter(schedules::Column::Id.eq(id))
            .filter(schedules::Column::NextFireAtMs.eq(fired_at_ms));
        match next {
            Some(next) => {
                update
                    .col_expr(schedules::Column::NextFireAtMs, Expr::value(ms(next)))
                    .col_expr(
                        schedules::Column::LockedUntilMs,
                        Expr::value(Option::<i64>::None),
                    )
                    .exec(&self.db)
                    .await?;
            }
            None => {
                schedules::Entity::delete_many()
                    .filter(schedules::Column::Id.eq(id))
                    .filter(schedules::Column::NextFireAtMs.eq(fired_at_ms))
                    .exec(&self.db)
                    .await?;
            }
        }
        Ok(())
    }
}

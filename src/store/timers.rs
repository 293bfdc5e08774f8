//! Armed timers.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::timers;
use super::*;
use super::{ms, Result, Store};

impl Store {
    /// Timers due at or before `now`, earliest first (an index range scan).
    ///
    /// # Errors
    /// A database error.
    pub async fn due_timers(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<TimerRow>> {
        Ok(timers::Entity::find()
            .filter(timers::Column::DueAtMs.lte(ms(now)))
            .order_by_asc(timers::Column::DueAtMs)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Gives a claimed timer back, to be claimed again from `at`.
    ///
    /// # Errors
    /// A database error.
    pub async fn release_timer(&self, id: i64, at: chrono::DateTime<chrono::Utc>) -> Result<()> {
        timers::Entity::update_many()
            .col_expr(timers::Column::LockedUntilMs, Expr::value(super::ms(at)))
            .filter(timers::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Drops one timer.
    ///
    /// # Errors
    /// A database error.
    pub async fn delete_timer(&self, id: i64) -> Result<()> {
        timers::Entity::delete_by_id(id).exec(&self.db).await?;
        Ok(())
    }

    /// Claims up to `limit` due timers for `lease`: no other process gets
    /// them until the lease runs out (`FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL; SQLite has one writer). A timer is deleted when it fires;
    /// one whose process died comes due again when the lease ends.
    ///
    /// # Errors
    /// A database error.
    pub async fn claim_due_timers(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u64,
    ) -> Result<Vec<TimerRow>> {
        let mut rows = self
            .claim::<timers::Entity>(super::claim::TIMERS, now, lease, limit)
            .await?;
        rows.sort_by_key(|t| (t.due_at_ms, t.id));
        Ok(rows)
    }

    /// Armed timers of an instance.
    ///
    /// # Errors
    /// A database error.
    pub async fn timers_of(&self, instance_id: &str) -> Result<Vec<TimerRow>> {
        Ok(timers::Entity::find()
            .filter(timers::Column::InstanceId.eq(instance_id))
            .order_by_asc(timers::Column::DueAtMs)
            .all(&self.db)
            .await?)
    }
}

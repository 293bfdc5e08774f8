//! Moving running instances to another version of their workflow.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait};

use super::entities::{instances, timers};
use super::instances::*;
use super::*;
use super::{ms, Error, Result, Store};

impl Store {
    /// Active instances of a workflow version.
    ///
    /// # Errors
    /// A database error.
    pub async fn active_instances_of(
        &self,
        tenant_id: &str,
        workflow: &str,
        version: i32,
    ) -> Result<Vec<InstanceRow>> {
        Ok(instances::Entity::find()
            .filter(instances::Column::TenantId.eq(tenant_id))
            .filter(instances::Column::Workflow.eq(workflow))
            .filter(instances::Column::Version.eq(version))
            .filter(instances::Column::Status.eq(crate::engine::Status::Active.as_str()))
            .order_by_asc(instances::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Moves instances to another version, all or none, in one transaction.
    /// Each instance must still be at the revision it was planned from.
    ///
    /// # Errors
    /// `Conflict` when an instance changed meanwhile; a database error.
    pub async fn apply_migration(
        &self,
        target: &DefinitionRow,
        moves: &[InstanceMove],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.db.begin().await?;
        for change in moves {
            let updated = instances::Entity::update_many()
                .col_expr(instances::Column::DefinitionId, Expr::value(target.id))
                .col_expr(instances::Column::Version, Expr::value(target.version))
                .col_expr(instances::Column::State, Expr::value(change.state.clone()))
                .col_expr(
                    instances::Column::Data,
                    Expr::value(change.data.to_string()),
                )
                .col_expr(
                    instances::Column::Revision,
                    Expr::value(change.revision + 1),
                )
                .col_expr(instances::Column::UpdatedAtMs, Expr::value(ms(now)))
                .filter(instances::Column::Id.eq(&change.instance_id))
                .filter(instances::Column::Revision.eq(change.revision))
                .exec(&txn)
                .await?;
            if updated.rows_affected != 1 {
                txn.rollback().await?;
                return Err(Error::Conflict);
            }
            if !change.drop_timers.is_empty() {
                timers::Entity::delete_many()
                    .filter(timers::Column::Id.is_in(change.drop_timers.clone()))
                    .exec(&txn)
                    .await?;
            }
            append_history(&txn, &change.instance_id, "migrated", &change.detail, now).await?;
        }
        txn.commit().await?;
        Ok(())
    }
}

//! Correlated events, delivered or kept until an instance waits for them.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::entities::{correlated_events, instances};
use super::*;
use super::{ms, Result, Store};

impl Store {
    /// Keeps a correlated event as pending until `expires_at`. Returns false
    /// when its message id was seen before (the event is then dropped).
    ///
    /// # Errors
    /// A database error.
    #[allow(clippy::too_many_arguments)]
    pub async fn keep_event(
        &self,
        tenant_id: &str,
        message_id: &str,
        event_type: &str,
        correlation_key: &str,
        payload: &serde_json::Value,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let inserted = correlated_events::Entity::insert(correlated_events::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            message_id: Set(message_id.to_owned()),
            event_type: Set(event_type.to_owned()),
            correlation_key: Set(correlation_key.to_owned()),
            payload: Set(payload.to_string()),
            status: Set(KeptEventStatus::Pending),
            expires_at_ms: Set(ms(expires_at)),
            created_at_ms: Set(ms(now)),
            delivered_at_ms: Set(None),
            delivered_to: Set(None),
        })
        .on_conflict(
            OnConflict::columns([
                correlated_events::Column::TenantId,
                correlated_events::Column::MessageId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(inserted == 1)
    }

    /// # Errors
    /// A database error.
    pub async fn correlated_event(
        &self,
        tenant_id: &str,
        message_id: &str,
    ) -> Result<Option<CorrelatedEventRow>> {
        Ok(
            correlated_events::Entity::find_by_id((tenant_id.to_owned(), message_id.to_owned()))
                .one(&self.db)
                .await?,
        )
    }

    /// Kept events for a business key that have not expired, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn waiting_events(
        &self,
        tenant_id: &str,
        correlation_key: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<CorrelatedEventRow>> {
        Ok(correlated_events::Entity::find()
            .filter(correlated_events::Column::TenantId.eq(tenant_id))
            .filter(correlated_events::Column::CorrelationKey.eq(correlation_key))
            .filter(correlated_events::Column::Status.eq(KeptEventStatus::Pending))
            .filter(correlated_events::Column::ExpiresAtMs.gt(ms(now)))
            .order_by_asc(correlated_events::Column::CreatedAtMs)
            .order_by_asc(correlated_events::Column::MessageId)
            .all(&self.db)
            .await?)
    }

    /// Forgets a kept event that its instance refused (a guard or `set`
    /// failed on it): it is never delivered later, and its message id may
    /// be sent again, corrected.
    ///
    /// # Errors
    /// A database error.
    pub async fn forget_kept_event(&self, tenant_id: &str, message_id: &str) -> Result<()> {
        correlated_events::Entity::delete_many()
            .filter(correlated_events::Column::TenantId.eq(tenant_id))
            .filter(correlated_events::Column::MessageId.eq(message_id))
            .filter(correlated_events::Column::Status.eq(KeptEventStatus::Pending))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Active instances of a tenant with this business key.
    ///
    /// # Errors
    /// A database error.
    pub async fn active_instances_with_key(
        &self,
        tenant_id: &str,
        business_key: &str,
    ) -> Result<Vec<InstanceRow>> {
        Ok(instances::Entity::find()
            .filter(instances::Column::TenantId.eq(tenant_id))
            .filter(instances::Column::BusinessKey.eq(business_key))
            .filter(instances::Column::Status.eq(crate::engine::Status::Active.as_str()))
            .order_by_asc(instances::Column::Id)
            .all(&self.db)
            .await?)
    }
}

//! Named endpoints of a tenant's own systems: where `call` steps post.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::entities::endpoints;
use super::{ms, Result, Store};

pub use super::entities::endpoints::Model as EndpointRow;

impl Store {
    /// Sets (or replaces) endpoint `name` of a tenant, or of one of its
    /// branches (`branch_id` `Some`).
    ///
    /// # Errors
    /// A database error.
    pub async fn set_endpoint(
        &self,
        tenant_id: &str,
        branch_id: Option<&str>,
        name: &str,
        url: &str,
        secret_ref: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        endpoints::Entity::insert(endpoints::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            branch_id: Set(branch_id.unwrap_or_default().to_owned()),
            name: Set(name.to_owned()),
            url: Set(url.to_owned()),
            secret_ref: Set(secret_ref.map(str::to_owned)),
            updated_at_ms: Set(ms(now)),
        })
        .on_conflict(
            OnConflict::columns([
                endpoints::Column::TenantId,
                endpoints::Column::BranchId,
                endpoints::Column::Name,
            ])
            .update_columns([
                endpoints::Column::Url,
                endpoints::Column::SecretRef,
                endpoints::Column::UpdatedAtMs,
            ])
            .to_owned(),
        )
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// Endpoint `name` as an instance of `branch_id` sees it: the branch's
    /// own, else the tenant's.
    ///
    /// # Errors
    /// A database error.
    pub async fn endpoint(
        &self,
        tenant_id: &str,
        branch_id: &str,
        name: &str,
    ) -> Result<Option<EndpointRow>> {
        let rows = endpoints::Entity::find()
            .filter(endpoints::Column::TenantId.eq(tenant_id))
            .filter(endpoints::Column::Name.eq(name))
            .filter(endpoints::Column::BranchId.is_in([branch_id, ""]))
            .order_by_desc(endpoints::Column::BranchId)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().next())
    }

    /// A tenant's endpoints.
    ///
    /// # Errors
    /// A database error.
    pub async fn endpoints(&self, tenant_id: &str) -> Result<Vec<EndpointRow>> {
        Ok(endpoints::Entity::find()
            .filter(endpoints::Column::TenantId.eq(tenant_id))
            .order_by_asc(endpoints::Column::Name)
            .order_by_asc(endpoints::Column::BranchId)
            .all(&self.db)
            .await?)
    }
}

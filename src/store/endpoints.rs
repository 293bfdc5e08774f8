//! Named endpoints of a tenant's own systems: where `call` steps post.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Statement};

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

    /// Endpoint `name` as instance `instance_id` sees it: its branch's
    /// own, else its tenant's; one query.
    ///
    /// # Errors
    /// A database error.
    pub async fn endpoint_for_instance(
        &self,
        tenant_id: &str,
        instance_id: &str,
        name: &str,
    ) -> Result<Option<EndpointRow>> {
        let sql = "SELECT e.* FROM endpoints e JOIN instances i ON i.tenant_id = e.tenant_id \
                   WHERE i.id = $1 AND e.tenant_id = $2 AND e.name = $3 \
                   AND e.branch_id IN (i.branch_id, '') ORDER BY e.branch_id DESC LIMIT 1";
        let values = [
            instance_id.to_owned().into(),
            tenant_id.to_owned().into(),
            name.to_owned().into(),
        ];
        Ok(endpoints::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(self.backend(), sql, values))
            .one(&self.db)
            .await?)
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

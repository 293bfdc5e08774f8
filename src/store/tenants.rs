//! Tenants, their branches and API keys.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    TransactionTrait,
};

use super::entities::{api_keys, branches, tenants};
use super::*;
use super::{ms, Result, Store};

impl Store {
    /// # Errors
    /// A database error.
    pub async fn tenant_count(&self) -> Result<u64> {
        Ok(tenants::Entity::find().count(&self.db).await?)
    }

    /// # Errors
    /// A database error.
    pub async fn tenants(&self) -> Result<Vec<TenantRow>> {
        Ok(tenants::Entity::find()
            .order_by_asc(tenants::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// # Errors
    /// A database error.
    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRow>> {
        Ok(tenants::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// Sets the tenant's time zone (an IANA name, checked by the caller).
    /// Returns false when there is no such tenant.
    ///
    /// # Errors
    /// A database error.
    pub async fn set_tenant_time_zone(&self, id: &str, zone: &str) -> Result<bool> {
        let result = tenants::Entity::update_many()
            .col_expr(tenants::Column::TimeZone, Expr::value(zone))
            .filter(tenants::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Creates the tenant (and a first branch `main`) unless it exists.
    /// Returns true when it was created.
    ///
    /// # Errors
    /// A database error.
    pub async fn ensure_tenant(&self, id: &str, name: &str, now: DateTime<Utc>) -> Result<bool> {
        if tenants::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let txn = self.db.begin().await?;
        tenants::Entity::insert(tenants::ActiveModel {
            id: Set(id.to_owned()),
            name: Set(name.to_owned()),
            time_zone: Set(crate::dsl::expr::DEFAULT_TIME_ZONE.to_owned()),
            production: Set(false),
            created_at_ms: Set(ms(now)),
        })
        .exec(&txn)
        .await?;
        branches::Entity::insert(branches::ActiveModel {
            tenant_id: Set(id.to_owned()),
            id: Set("main".to_owned()),
            name: Set("Main".to_owned()),
            created_at_ms: Set(ms(now)),
        })
        .exec(&txn)
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Adds a branch to a tenant.
    ///
    /// # Errors
    /// A database error (including an existing branch id).
    pub async fn add_branch(
        &self,
        tenant_id: &str,
        id: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        branches::Entity::insert(branches::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            id: Set(id.to_owned()),
            name: Set(name.to_owned()),
            created_at_ms: Set(ms(now)),
        })
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// The tenant's branch ids, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn branches(&self, tenant_id: &str) -> Result<Vec<String>> {
        let rows = branches::Entity::find()
            .filter(branches::Column::TenantId.eq(tenant_id))
            .order_by_asc(branches::Column::CreatedAtMs)
            .order_by_asc(branches::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|b| b.id).collect())
    }

    /// Creates an API key and returns it; only its SHA-256 is stored.
    ///
    /// # Errors
    /// A database error.
    pub async fn create_api_key(
        &self,
        tenant_id: &str,
        role: &str,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let random =
            uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
        let key = format!("o2f_{random}");
        api_keys::Entity::insert(api_keys::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            tenant_id: Set(tenant_id.to_owned()),
            role: Set(role.to_owned()),
            key_hash: Set(sha256_hex(key.as_bytes())),
            created_at_ms: Set(ms(now)),
        })
        .exec(&self.db)
        .await?;
        Ok(key)
    }

    /// The tenant and role of a key, if it exists.
    ///
    /// # Errors
    /// A database error.
    pub async fn authenticate(&self, key: &str) -> Result<Option<(String, String)>> {
        let row = api_keys::Entity::find()
            .filter(api_keys::Column::KeyHash.eq(sha256_hex(key.as_bytes())))
            .one(&self.db)
            .await?;
        Ok(row.map(|r| (r.tenant_id, r.role)))
    }
}

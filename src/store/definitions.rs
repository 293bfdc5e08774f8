//! Deployed workflow definitions, versioned per tenant.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::workflow_definitions;
use super::*;
use super::{ms, Error, Result, Store};

impl Store {
    /// Deploys a definition: the same content again returns the existing
    /// version (false), changed content becomes the next version (true).
    ///
    /// # Errors
    /// A database error.
    pub async fn deploy(
        &self,
        tenant_id: &str,
        name: &str,
        source: &str,
        title: Option<&str>,
        label: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(DefinitionRow, bool)> {
        let hash = sha256_hex(source.as_bytes());
        for _ in 0..3 {
            if let Some(existing) = workflow_definitions::Entity::find()
                .filter(workflow_definitions::Column::TenantId.eq(tenant_id))
                .filter(workflow_definitions::Column::Name.eq(name))
                .filter(workflow_definitions::Column::Hash.eq(&hash))
                .one(&self.db)
                .await?
            {
                return Ok((existing, false));
            }
            let latest = self.latest_definition(tenant_id, name).await?;
            let version = latest.map(|d| d.version + 1).unwrap_or(1);
            let inserted =
                workflow_definitions::Entity::insert(workflow_definitions::ActiveModel {
                    tenant_id: Set(tenant_id.to_owned()),
                    name: Set(name.to_owned()),
                    version: Set(version),
                    hash: Set(hash.clone()),
                    source: Set(source.to_owned()),
                    title: Set(title.map(str::to_owned)),
                    label: Set(label.map(str::to_owned)),
                    created_at_ms: Set(ms(now)),
                    ..Default::default()
                })
                .exec_with_returning(&self.db)
                .await;
            match inserted {
                Ok(row) => return Ok((row, true)),
                // Someone deployed at the same moment: look again.
                Err(error) if is_unique_violation(&error) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Conflict)
    }

    /// # Errors
    /// A database error.
    pub async fn latest_definition(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<DefinitionRow>> {
        Ok(workflow_definitions::Entity::find()
            .filter(workflow_definitions::Column::TenantId.eq(tenant_id))
            .filter(workflow_definitions::Column::Name.eq(name))
            .order_by_desc(workflow_definitions::Column::Version)
            .one(&self.db)
            .await?)
    }

    /// Every version of every workflow of a tenant, by name then version.
    ///
    /// # Errors
    /// A database error.
    pub async fn definitions(&self, tenant_id: &str) -> Result<Vec<DefinitionRow>> {
        Ok(workflow_definitions::Entity::find()
            .filter(workflow_definitions::Column::TenantId.eq(tenant_id))
            .order_by_asc(workflow_definitions::Column::Name)
            .order_by_asc(workflow_definitions::Column::Version)
            .all(&self.db)
            .await?)
    }

    /// The highest definition id of a tenant: it changes exactly when a
    /// version is deployed, so caches of "all the tenant's workflows" key on it.
    ///
    /// # Errors
    /// A database error.
    pub async fn latest_definition_id(&self, tenant_id: &str) -> Result<Option<i64>> {
        Ok(workflow_definitions::Entity::find()
            .select_only()
            .column(workflow_definitions::Column::Id)
            .filter(workflow_definitions::Column::TenantId.eq(tenant_id))
            .order_by_desc(workflow_definitions::Column::Id)
            .limit(1)
            .into_tuple::<i64>()
            .one(&self.db)
            .await?)
    }

    /// # Errors
    /// A database error.
    pub async fn definition_by_id(&self, id: i64) -> Result<Option<DefinitionRow>> {
        Ok(workflow_definitions::Entity::find_by_id(id)
            .one(&self.db)
            .await?)
    }
}

//! Idempotency records of API requests.

use sea_orm::EntityTrait;

use super::entities::idempotency_keys;
use super::*;
use super::{Result, Store};

impl Store {
    /// # Errors
    /// A database error.
    pub async fn idempotency(
        &self,
        tenant_id: &str,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredIdempotency>> {
        Ok(idempotency_keys::Entity::find_by_id((
            tenant_id.to_owned(),
            scope.to_owned(),
            key.to_owned(),
        ))
        .one(&self.db)
        .await?)
    }
}

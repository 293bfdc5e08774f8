//! Message templates a tenant deployed through the API, beside the files
//! under `templates/`: every node renders from these rows.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};

use super::entities::message_templates;
use super::{ms, Result, Store};

pub use super::entities::message_templates::Model as TemplateRow;

/// A template to store: `(name, title, body)`.
pub type NewTemplate<'a> = (&'a str, &'a str, &'a str);

impl Store {
    /// Stores (or replaces) a tenant's templates, all or none.
    ///
    /// # Errors
    /// A database error.
    pub async fn save_templates(
        &self,
        tenant_id: &str,
        templates: &[NewTemplate<'_>],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.db.begin().await?;
        for (name, title, body) in templates {
            message_templates::Entity::insert(message_templates::ActiveModel {
                tenant_id: Set(tenant_id.to_owned()),
                name: Set((*name).to_owned()),
                title: Set((*title).to_owned()),
                body: Set((*body).to_owned()),
                updated_at_ms: Set(ms(now)),
            })
            .on_conflict(
                OnConflict::columns([
                    message_templates::Column::TenantId,
                    message_templates::Column::Name,
                ])
                .update_columns([
                    message_templates::Column::Title,
                    message_templates::Column::Body,
                    message_templates::Column::UpdatedAtMs,
                ])
                .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// A tenant's deployed templates.
    ///
    /// # Errors
    /// A database error.
    pub async fn templates_of(&self, tenant_id: &str) -> Result<Vec<TemplateRow>> {
        Ok(message_templates::Entity::find()
            .filter(message_templates::Column::TenantId.eq(tenant_id))
            .all(&self.db)
            .await?)
    }
}

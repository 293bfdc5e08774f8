//! Message templates deployed through the API with a workflow, per tenant:
//! every node renders from the same rows, so a hospital deploys a flow and
//! its templates in one request, without a restart.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000009_create_message_templates"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let text = |name: &'static str| {
            ColumnDef::new(Alias::new(name))
                .text()
                .not_null()
                .to_owned()
        };
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("message_templates"))
                    .col(text("tenant_id"))
                    .col(text("name"))
                    .col(text("title"))
                    .col(text("body"))
                    .col(
                        ColumnDef::new(Alias::new("updated_at_ms"))
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(Alias::new("tenant_id"))
                            .col(Alias::new("name")),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new("message_templates"))
                    .to_owned(),
            )
            .await
    }
}

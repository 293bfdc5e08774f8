//! Incidents: an effect whose retries ran out, in a state that does not
//! handle `action.failed`. Listed for operators and retried after the cause
//! is fixed.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000004_create_incidents"
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
                    .table(Alias::new("incidents"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(text("tenant_id"))
                    .col(text("instance_id"))
                    .col(text("effect_key"))
                    .col(text("kind"))
                    .col(text("error"))
                    .col(text("status"))
                    .col(
                        ColumnDef::new(Alias::new("created_at_ms"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("resolved_at_ms"))
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("incidents_tenant_status")
                    .table(Alias::new("incidents"))
                    .col(Alias::new("tenant_id"))
                    .col(Alias::new("status"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("incidents")).to_owned())
            .await
    }
}

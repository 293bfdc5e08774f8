//! Correlated events: outside events addressed by business key, kept until
//! an instance waits for them or their time runs out; deduplicated by the
//! sender's message id.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000003_create_correlated_events"
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
        let big = |name: &'static str| {
            ColumnDef::new(Alias::new(name))
                .big_integer()
                .not_null()
                .to_owned()
        };
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("correlated_events"))
                    .col(text("tenant_id"))
                    .col(text("message_id"))
                    .col(text("event_type"))
                    .col(text("correlation_key"))
                    .col(text("payload"))
                    .col(text("status"))
                    .col(big("expires_at_ms"))
                    .col(big("created_at_ms"))
                    .col(
                        ColumnDef::new(Alias::new("delivered_at_ms"))
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(Alias::new("delivered_to")).text().null())
                    .primary_key(
                        Index::create()
                            .col(Alias::new("tenant_id"))
                            .col(Alias::new("message_id")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("correlated_events_waiting")
                    .table(Alias::new("correlated_events"))
                    .col(Alias::new("tenant_id"))
                    .col(Alias::new("correlation_key"))
                    .col(Alias::new("status"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new("correlated_events"))
                    .to_owned(),
            )
            .await
    }
}

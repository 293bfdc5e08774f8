//! Named endpoints of a tenant's own systems (HIS, PMS), per tenant and
//! optionally per branch: where a `call` step posts. The secret that signs
//! the body is stored by reference (`file:` or `env:`), never by value.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000010_create_endpoints"
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
                    .table(Alias::new("endpoints"))
                    .col(text("tenant_id"))
                    // '' for the whole tenant.
                    .col(text("branch_id"))
                    .col(text("name"))
                    .col(text("url"))
                    .col(ColumnDef::new(Alias::new("secret_ref")).text().null())
                    .col(
                        ColumnDef::new(Alias::new("updated_at_ms"))
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(Alias::new("tenant_id"))
                            .col(Alias::new("branch_id"))
                            .col(Alias::new("name")),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("endpoints")).to_owned())
            .await
    }
}

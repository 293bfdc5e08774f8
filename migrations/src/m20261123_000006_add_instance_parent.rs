//! Child flows: an instance started by another one's `start` action
//! records its parent.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000006_add_instance_parent"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("instances"))
                    .add_column(ColumnDef::new(Alias::new("parent_id")).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("instances"))
                    .drop_column(Alias::new("parent_id"))
                    .to_owned(),
            )
            .await
    }
}

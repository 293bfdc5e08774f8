//! Cron schedules that start instances; replaced whenever a workflow
//! deploys a new version.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000005_create_schedules"
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
                    .table(Alias::new("schedules"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(text("tenant_id"))
                    .col(text("workflow"))
                    .col(big("definition_id"))
                    .col(
                        ColumnDef::new(Alias::new("schedule_index"))
                            .integer()
                            .not_null(),
                    )
                    .col(text("cron"))
                    .col(text("time_zone"))
                    .col(big("next_fire_at_ms"))
                    .col(
                        ColumnDef::new(Alias::new("locked_until_ms"))
                            .big_integer()
                            .null(),
                    )
                    .col(big("created_at_ms"))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            ("schedules_due", vec!["next_fire_at_ms"]),
            ("schedules_workflow", vec!["tenant_id", "workflow"]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Alias::new("schedules"));
            for column in columns {
                index.col(Alias::new(column));
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("schedules")).to_owned())
            .await
    }
}

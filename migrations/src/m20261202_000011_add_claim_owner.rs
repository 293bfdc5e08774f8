//! Who holds a claim: `claimed_by` on every queue of background work, as
//! `<node>/<boot>`. A process restarted under the same node name takes its
//! predecessor's claims back at once instead of waiting out their lease,
//! and a process renews the leases of the work it is still running.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000011_add_claim_owner"
    }
}

const QUEUES: [&str; 5] = ["timers", "outbox", "schedules", "payments", "refunds"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in QUEUES {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .add_column(ColumnDef::new(Alias::new("claimed_by")).text().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in QUEUES {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .drop_column(Alias::new("claimed_by"))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

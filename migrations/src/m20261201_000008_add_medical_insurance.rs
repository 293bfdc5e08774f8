//! 医保 mixed payments: a payment's `mix_trade_no` and the last
//! `mix_pay_status` WeChat Pay reported; a refund's 医保 part (the amounts
//! the hospital refunded through the insurance bureau, reported to WeChat
//! Pay with the refund's number) and when that report was accepted.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000008_add_medical_insurance"
    }
}

/// `(table, column, is text)`: SQLite adds one column per statement.
const COLUMNS: [(&str, &str, bool); 4] = [
    ("payments", "mix_trade_no", true),
    ("payments", "mix_pay_status", true),
    ("refunds", "insurance", true),
    ("refunds", "insurance_notified_at_ms", false),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, column, text) in COLUMNS {
            let mut definition = ColumnDef::new(Alias::new(column));
            if text {
                definition.text();
            } else {
                definition.big_integer();
            }
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .add_column(definition.null())
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("payments_mix_trade_no")
                    .table(Alias::new("payments"))
                    .col(Alias::new("mix_trade_no"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("payments_mix_trade_no")
                    .table(Alias::new("payments"))
                    .to_owned(),
            )
            .await?;
        for (table, column, _) in COLUMNS.iter().rev() {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(*table))
                        .drop_column(Alias::new(*column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

//! Payments: merchant accounts per tenant or branch (secrets by reference,
//! never by value), payment orders, refunds, received WeChat Pay
//! notifications (deduplicated by id) and server settings (the
//! link-signing key).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000007_create_payments"
    }
}

fn text(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .text()
        .not_null()
        .to_owned()
}

fn text_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name)).text().null().to_owned()
}

fn big(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .big_integer()
        .not_null()
        .to_owned()
}

fn big_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .big_integer()
        .null()
        .to_owned()
}

fn flag(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .boolean()
        .not_null()
        .default(false)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("settings"))
                    .col(text("name").primary_key())
                    .col(text("value"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("merchants"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(text("tenant_id"))
                    // '' for the whole tenant.
                    .col(text("branch_id"))
                    .col(text("mchid"))
                    .col(text("appid"))
                    .col(text("serial_no"))
                    // `file:/path` or `env:NAME`: never the secret itself.
                    .col(text("private_key"))
                    .col(text("api_v3_key"))
                    .col(text_null("public_key"))
                    .col(text_null("public_key_id"))
                    .col(flag("platform_certificates"))
                    .col(text_null("notify_url"))
                    .col(text("base_url"))
                    .col(big("created_at_ms"))
                    .col(big("updated_at_ms"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("merchants_tenant_branch")
                    .table(Alias::new("merchants"))
                    .col(Alias::new("tenant_id"))
                    .col(Alias::new("branch_id"))
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("payments"))
                    .col(text("out_trade_no").primary_key())
                    .col(text("tenant_id"))
                    .col(text("branch_id"))
                    .col(text("instance_id"))
                    .col(text("effect_key"))
                    // The `key` of the `pay` action (`rx`, `payment`).
                    .col(text("name"))
                    // None: the sandbox.
                    .col(big_null("merchant_id"))
                    .col(text("scene"))
                    .col(text("description"))
                    .col(text("payer_id"))
                    .col(text_null("payer_openid"))
                    .col(big("amount_fen"))
                    .col(text_null("bill"))
                    .col(text("state"))
                    .col(text_null("prepay_id"))
                    .col(text_null("code_url"))
                    .col(text_null("transaction_id"))
                    .col(big("refunded_fen"))
                    .col(flag("late"))
                    .col(text_null("last_error"))
                    .col(big("expires_at_ms"))
                    .col(big("next_check_at_ms"))
                    .col(big_null("locked_until_ms"))
                    .col(big_null("paid_at_ms"))
                    .col(big("created_at_ms"))
                    .col(big("updated_at_ms"))
                    .to_owned(),
            )
            .await?;
        for (name, table, cols, unique) in [
            ("payments_effect_key", "payments", &["effect_key"][..], true),
            (
                "payments_due",
                "payments",
                &["state", "next_check_at_ms"][..],
                false,
            ),
            ("payments_instance", "payments", &["instance_id"][..], false),
        ] {
            let mut index = Index::create();
            index.name(name).table(Alias::new(table));
            for col in cols {
                index.col(Alias::new(*col));
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("refunds"))
                    .col(text("out_refund_no").primary_key())
                    .col(text("tenant_id"))
                    .col(text("instance_id"))
                    .col(text("out_trade_no"))
                    .col(text("effect_key"))
                    .col(big("amount_fen"))
                    .col(text_null("reason"))
                    .col(text("status"))
                    .col(text_null("refund_id"))
                    .col(flag("automatic"))
                    .col(text_null("last_error"))
                    .col(big("next_check_at_ms"))
                    .col(big_null("locked_until_ms"))
                    .col(big("created_at_ms"))
                    .col(big("updated_at_ms"))
                    .to_owned(),
            )
            .await?;
        for (name, cols, unique) in [
            ("refunds_effect_key", &["effect_key"][..], true),
            ("refunds_due", &["status", "next_check_at_ms"][..], false),
            ("refunds_payment", &["out_trade_no"][..], false),
        ] {
            let mut index = Index::create();
            index.name(name).table(Alias::new("refunds"));
            for col in cols {
                index.col(Alias::new(*col));
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("pay_notifications"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(big("merchant_id"))
                    .col(text("notification_id"))
                    .col(text("event_type"))
                    .col(text("business_key"))
                    .col(text("resource"))
                    .col(big("received_at_ms"))
                    .col(big_null("processed_at_ms"))
                    .col(text_null("outcome"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("pay_notifications_id")
                    .table(Alias::new("pay_notifications"))
                    .col(Alias::new("merchant_id"))
                    .col(Alias::new("notification_id"))
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "pay_notifications",
            "refunds",
            "payments",
            "merchants",
            "settings",
        ] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

//! Tenants, branches, API keys, workflow definitions, instances, history,
//! timers, the outbox, the web inbox and idempotency keys.
//!
//! Times are BIGINT milliseconds since the Unix epoch (UTC) so that both
//! databases compare and index them the same way; JSON is TEXT.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000001_create_core_tables"
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

fn id_auto() -> ColumnDef {
    ColumnDef::new(Alias::new("id"))
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

fn index(
    table: &'static str,
    name: &'static str,
    columns: &[&'static str],
    unique: bool,
) -> IndexCreateStatement {
    let mut statement = Index::create();
    statement.name(name).table(Alias::new(table));
    for column in columns {
        statement.col(Alias::new(*column));
    }
    if unique {
        statement.unique();
    }
    statement.to_owned()
}

const TABLES: [&str; 10] = [
    "idempotency_keys",
    "inbox_messages",
    "outbox",
    "timers",
    "history",
    "instances",
    "workflow_definitions",
    "api_keys",
    "branches",
    "tenants",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("tenants"))
                    .col(text("id").primary_key())
                    .col(text("name"))
                    .col(text("time_zone"))
                    .col(
                        ColumnDef::new(Alias::new("production"))
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(big("created_at_ms"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("branches"))
                    .col(text("tenant_id"))
                    .col(text("id"))
                    .col(text("name"))
                    .col(big("created_at_ms"))
                    .primary_key(
                        Index::create()
                            .col(Alias::new("tenant_id"))
                            .col(Alias::new("id")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("api_keys"))
                    .col(text("id").primary_key())
                    .col(text("tenant_id"))
                    .col(text("role"))
                    .col(text("key_hash"))
                    .col(big("created_at_ms"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("api_keys", "api_keys_hash", &["key_hash"], true))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("workflow_definitions"))
                    .col(id_auto())
                    .col(text("tenant_id"))
                    .col(text("name"))
                    .col(ColumnDef::new(Alias::new("version")).integer().not_null())
                    .col(text("hash"))
                    .col(text("source"))
                    .col(text_null("title"))
                    .col(text_null("label"))
                    .col(big("created_at_ms"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "workflow_definitions",
                "workflow_definitions_version",
                &["tenant_id", "name", "version"],
                true,
            ))
            .await?;
        manager
            .create_index(index(
                "workflow_definitions",
                "workflow_definitions_hash",
                &["tenant_id", "name", "hash"],
                true,
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("instances"))
                    .col(text("id").primary_key())
                    .col(text("tenant_id"))
                    .col(text("branch_id"))
                    .col(big("definition_id"))
                    .col(text("workflow"))
                    .col(ColumnDef::new(Alias::new("version")).integer().not_null())
                    .col(text("state"))
                    .col(text("status"))
                    .col(text("input"))
                    .col(text("data"))
                    .col(text_null("business_key"))
                    .col(big("entry_seq"))
                    .col(big("revision"))
                    .col(big("history_len"))
                    .col(big("created_at_ms"))
                    .col(big("updated_at_ms"))
                    .col(big_null("ended_at_ms"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "instances",
                "instances_tenant_workflow_state",
                &["tenant_id", "workflow", "state"],
                false,
            ))
            .await?;
        manager
            .create_index(index(
                "instances",
                "instances_tenant_business_key",
                &["tenant_id", "business_key"],
                false,
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("history"))
                    .col(id_auto())
                    .col(text("instance_id"))
                    .col(big("seq"))
                    .col(big("at_ms"))
                    .col(text("kind"))
                    .col(text("detail"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "history",
                "history_instance_seq",
                &["instance_id", "seq"],
                true,
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("timers"))
                    .col(id_auto())
                    .col(text("tenant_id"))
                    .col(text("instance_id"))
                    .col(big("entry_seq"))
                    .col(
                        ColumnDef::new(Alias::new("timer_index"))
                            .integer()
                            .not_null(),
                    )
                    .col(big("due_at_ms"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("timers", "timers_due", &["due_at_ms"], false))
            .await?;
        manager
            .create_index(index("timers", "timers_instance", &["instance_id"], false))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("outbox"))
                    .col(id_auto())
                    .col(text("tenant_id"))
                    .col(text("instance_id"))
                    .col(text("effect_key"))
                    .col(text("kind"))
                    .col(text("payload"))
                    .col(text("status"))
                    .col(
                        ColumnDef::new(Alias::new("attempts"))
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(big("available_at_ms"))
                    .col(text_null("last_error"))
                    .col(big("created_at_ms"))
                    .col(big_null("done_at_ms"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("outbox", "outbox_effect_key", &["effect_key"], true))
            .await?;
        manager
            .create_index(index(
                "outbox",
                "outbox_pending",
                &["status", "available_at_ms"],
                false,
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("inbox_messages"))
                    .col(id_auto())
                    .col(text("tenant_id"))
                    .col(text("party_id"))
                    .col(text("instance_id"))
                    .col(text("effect_key"))
                    .col(text("template"))
                    .col(text("title"))
                    .col(text("body"))
                    .col(big("created_at_ms"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "inbox_messages",
                "inbox_effect_key",
                &["effect_key"],
                true,
            ))
            .await?;
        manager
            .create_index(index(
                "inbox_messages",
                "inbox_party",
                &["tenant_id", "party_id"],
                false,
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("idempotency_keys"))
                    .col(text("tenant_id"))
                    .col(text("scope"))
                    .col(text("key"))
                    .col(text("request_hash"))
                    .col(text("response"))
                    .col(
                        ColumnDef::new(Alias::new("status_code"))
                            .integer()
                            .not_null(),
                    )
                    .col(big("created_at_ms"))
                    .primary_key(
                        Index::create()
                            .col(Alias::new("tenant_id"))
                            .col(Alias::new("scope"))
                            .col(Alias::new("key")),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in TABLES {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

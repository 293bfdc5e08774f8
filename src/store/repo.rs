use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};

use super::entities::{
    api_keys, branches, correlated_events, history, idempotency_keys, inbox_messages, incidents,
    instances, outbox, schedules, tenants, timers, workflow_definitions,
};
use super::{ms, Error, Result, Store};
use crate::engine::Transition;

pub use super::entities::history::Model as HistoryRow;
pub use super::entities::inbox_messages::Model as InboxRow;
pub use super::entities::instances::Model as InstanceRow;
pub use super::entities::outbox::Model as OutboxRow;
pub use super::entities::tenants::Model as TenantRow;
pub use super::entities::timers::Model as TimerRow;
pub use super::entities::workflow_definitions::Model as DefinitionRow;

/// The roles an API key can have.
pub const ROLES: [&str; 4] = ["admin", "operator", "integration", "viewer"];

/// An idempotency record written with the change it guards.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
    pub response: String,
    pub status_code: i32,
}

/// A stored idempotency record.
pub type StoredIdempotency = idempotency_keys::Model;

/// What else a transition's commit does, atomically with it.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitExtras<'a> {
    /// The timer that fired, deleted in the same transaction.
    pub fired_timer: Option<i64>,
    /// The idempotency record of the request.
    pub idempotency: Option<&'a IdempotencyRecord>,
    /// A kept correlated event (its message id) this transition consumes.
    pub consume: Option<&'a str>,
}

/// One instance moved to another workflow version.
#[derive(Debug, Clone)]
pub struct InstanceMove {
    pub instance_id: String,
    /// The revision the move was planned from.
    pub revision: i64,
    pub state: String,
    pub data: serde_json::Value,
    /// Armed timers that have no counterpart in the target state.
    pub drop_timers: Vec<i64>,
    /// What the history records.
    pub detail: serde_json::Value,
}

/// A schedule that starts instances.
pub type ScheduleRow = schedules::Model;

/// A schedule to store for a deployed version.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub index: usize,
    pub cron: String,
    pub time_zone: String,
    pub next_fire_at: DateTime<Utc>,
}

/// An incident: an effect that failed for good.
pub type IncidentRow = incidents::Model;

/// A correlated event, kept or delivered.
pub type CorrelatedEventRow = correlated_events::Model;

/// A new instance to insert with its first transition.
pub struct NewInstance<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub branch_id: &'a str,
    pub definition: &'a DefinitionRow,
    pub input: &'a serde_json::Value,
    pub business_key: Option<&'a str>,
    pub parent_id: Option<&'a str>,
}

/// Filters for listing instances.
#[derive(Debug, Default, Clone)]
pub struct InstanceFilter {
    pub workflow: Option<String>,
    pub state: Option<String>,
    pub status: Option<String>,
    pub business_key: Option<String>,
    /// Only ids after this one (ids are time-ordered UUIDv7).
    pub after: Option<String>,
    pub limit: u64,
}

/// SHA-256 as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn is_unique_violation(error: &sea_orm::DbErr) -> bool {
    matches!(
        error.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

impl Store {
    // ---- tenants, branches, keys -------------------------------------

    /// # Errors
    /// A database error.
    pub async fn tenant_count(&self) -> Result<u64> {
        Ok(tenants::Entity::find().count(&self.db).await?)
    }

    /// # Errors
    /// A database error.
    pub async fn tenants(&self) -> Result<Vec<TenantRow>> {
        Ok(tenants::Entity::find()
            .order_by_asc(tenants::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// # Errors
    /// A database error.
    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRow>> {
        Ok(tenants::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// Sets the tenant's time zone (an IANA name, checked by the caller).
    /// Returns false when there is no such tenant.
    ///
    /// # Errors
    /// A database error.
    pub async fn set_tenant_time_zone(&self, id: &str, zone: &str) -> Result<bool> {
        let result = tenants::Entity::update_many()
            .col_expr(tenants::Column::TimeZone, Expr::value(zone))
            .filter(tenants::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Creates the tenant (and a first branch `main`) unless it exists.
    /// Returns true when it was created.
    ///
    /// # Errors
    /// A database error.
    pub async fn ensure_tenant(&self, id: &str, name: &str, now: DateTime<Utc>) -> Result<bool> {
        if tenants::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let txn = self.db.begin().await?;
        tenants::Entity::insert(tenants::ActiveModel {
            id: Set(id.to_owned()),
            name: Set(name.to_owned()),
            time_zone: Set(crate::dsl::expr::DEFAULT_TIME_ZONE.to_owned()),
            production: Set(false),
            created_at_ms: Set(ms(now)),
        })
        .exec(&txn)
        .await?;
        branches::Entity::insert(branches::ActiveModel {
            tenant_id: Set(id.to_owned()),
            id: Set("main".to_owned()),
            name: Set("Main".to_owned()),
            created_at_ms: Set(ms(now)),
        })
        .exec(&txn)
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Adds a branch to a tenant.
    ///
    /// # Errors
    /// A database error (including an existing branch id).
    pub async fn add_branch(
        &self,
        tenant_id: &str,
        id: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        branches::Entity::insert(branches::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            id: Set(id.to_owned()),
            name: Set(name.to_owned()),
            created_at_ms: Set(ms(now)),
        })
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// The tenant's branch ids, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn branches(&self, tenant_id: &str) -> Result<Vec<String>> {
        let rows = branches::Entity::find()
            .filter(branches::Column::TenantId.eq(tenant_id))
            .order_by_asc(branches::Column::CreatedAtMs)
            .order_by_asc(branches::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|b| b.id).collect())
    }

    /// Creates an API key and returns it; only its SHA-256 is stored.
    ///
    /// # Errors
    /// A database error.
    pub async fn create_api_key(
        &self,
        tenant_id: &str,
        role: &str,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let random =
            uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
        let key = format!("o2f_{random}");
        api_keys::Entity::insert(api_keys::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            tenant_id: Set(tenant_id.to_owned()),
            role: Set(role.to_owned()),
            key_hash: Set(sha256_hex(key.as_bytes())),
            created_at_ms: Set(ms(now)),
        })
        .exec(&self.db)
        .await?;
        Ok(key)
    }

    /// The tenant and role of a key, if it exists.
    ///
    /// # Errors
    /// A database error.
    pub async fn authenticate(&self, key: &str) -> Result<Option<(String, String)>> {
        let row = api_keys::Entity::find()
            .filter(api_keys::Column::KeyHash.eq(sha256_hex(key.as_bytes())))
            .one(&self.db)
            .await?;
        Ok(row.map(|r| (r.tenant_id, r.role)))
    }

    // ---- workflow definitions ------------------------------------------

    /// Deploys a definition: the same content again returns the existing
    /// version (false), changed content becomes the next version (true).
    ///
    /// # Errors
    /// A database error.
    pub async fn deploy(
        &self,
        tenant_id: &str,
        name: &str,
        source: &str,
        title: Option<&str>,
        label: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(DefinitionRow, bool)> {
        let hash = sha256_hex(source.as_bytes());
        for _ in 0..3 {
            if let Some(existing) = workflow_definitions::Entity::find()
                .filter(workflow_definitions::Column::TenantId.eq(tenant_id))
                .filter(workflow_definitions::Column::Name.eq(name))
                .filter(workflow_definitions::Column::Hash.eq(&hash))
                .one(&self.db)
                .await?
            {
                return Ok((existing, false));
            }
            let latest = self.latest_definition(tenant_id, name).await?;
            let version = latest.map(|d| d.version + 1).unwrap_or(1);
            let inserted =
                workflow_definitions::Entity::insert(workflow_definitions::ActiveModel {
                    tenant_id: Set(tenant_id.to_owned()),
                    name: Set(name.to_owned()),
                    version: Set(version),
                    hash: Set(hash.clone()),
                    source: Set(source.to_owned()),
                    title: Set(title.map(str::to_owned)),
                    label: Set(label.map(str::to_owned)),
                    created_at_ms: Set(ms(now)),
                    ..Default::default()
                })
                .exec_with_returning(&self.db)
                .await;
            match inserted {
                Ok(row) => return Ok((row, true)),
                // Someone deployed at the same moment: look again.
                Err(error) if is_unique_violation(&error) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Conflict)
    }

    /// # Errors
    /// A database error.
    pub async fn latest_definition(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<DefinitionRow>> {
        Ok(workflow_definitions::Entity::find()
            .filter(workflow_definitions::Column::TenantId.eq(tenant_id))
            .filter(workflow_definitions::Column::Name.eq(name))
            .order_by_desc(workflow_definitions::Column::Version)
            .one(&self.db)
            .await?)
    }

    /// Every version of every workflow of a tenant, by name then version.
    ///
    /// # Errors
    /// A database error.
    pub async fn definitions(&self, tenant_id: &str) -> Result<Vec<DefinitionRow>> {
        Ok(workflow_definitions::Entity::find()
            .filter(workflow_definitions::Column::TenantId.eq(tenant_id))
            .order_by_asc(workflow_definitions::Column::Name)
            .order_by_asc(workflow_definitions::Column::Version)
            .all(&self.db)
            .await?)
    }

    /// The highest definition id of a tenant: it changes exactly when a
    /// version is deployed, so caches of "all the tenant's workflows" key on it.
    ///
    /// # Errors
    /// A database error.
    pub async fn latest_definition_id(&self, tenant_id: &str) -> Result<Option<i64>> {
        Ok(workflow_definitions::Entity::find()
            .select_only()
            .column(workflow_definitions::Column::Id)
            .filter(workflow_definitions::Column::TenantId.eq(tenant_id))
            .order_by_desc(workflow_definitions::Column::Id)
            .limit(1)
            .into_tuple::<i64>()
            .one(&self.db)
            .await?)
    }

    /// # Errors
    /// A database error.
    pub async fn definition_by_id(&self, id: i64) -> Result<Option<DefinitionRow>> {
        Ok(workflow_definitions::Entity::find_by_id(id)
            .one(&self.db)
            .await?)
    }

    // ---- instances -------------------------------------------------------

    /// Inserts a new instance with its first transition, and the
    /// idempotency record when one is given, in one transaction.
    ///
    /// # Errors
    /// A database error; a unique violation on the idempotency key shows
    /// another request with the same key won.
    pub async fn insert_instance(
        &self,
        new: NewInstance<'_>,
        transition: &Transition,
        idempotency: Option<&IdempotencyRecord>,
        now: DateTime<Utc>,
    ) -> Result<InstanceRow> {
        let txn = self.db.begin().await?;
        let row = instances::ActiveModel {
            id: Set(new.id.to_owned()),
            tenant_id: Set(new.tenant_id.to_owned()),
            branch_id: Set(new.branch_id.to_owned()),
            definition_id: Set(new.definition.id),
            workflow: Set(new.definition.name.clone()),
            version: Set(new.definition.version),
            state: Set(transition.state.clone()),
            status: Set(transition.status.as_str().to_owned()),
            input: Set(new.input.to_string()),
            data: Set(transition.data.to_string()),
            business_key: Set(new.business_key.map(str::to_owned)),
            entry_seq: Set(transition.entry_seq),
            revision: Set(1),
            history_len: Set(i64::try_from(transition.history.len()).unwrap_or(i64::MAX)),
            created_at_ms: Set(ms(now)),
            updated_at_ms: Set(ms(now)),
            ended_at_ms: Set(transition.status.is_final().then(|| ms(now))),
            parent_id: Set(new.parent_id.map(str::to_owned)),
        };
        instances::Entity::insert(row)
            .exec_without_returning(&txn)
            .await?;
        write_consequences(&txn, new.tenant_id, new.id, 0, transition, now).await?;
        if let Some(record) = idempotency {
            insert_idempotency(&txn, new.tenant_id, record, now).await?;
        }
        txn.commit().await?;
        self.instance(new.tenant_id, new.id)
            .await?
            .ok_or(Error::Conflict)
    }

    /// Commits a transition if the instance is still at `revision`.
    /// `extras.fired_timer` is deleted in the same transaction: if another
    /// node already fired it, nothing is written and `Conflict` is returned.
    /// `extras.consume` marks a kept correlated event delivered in the same
    /// transaction: if another instance took it first, `Consumed`.
    ///
    /// # Errors
    /// `Conflict` when the instance or timer changed, `Consumed`; a database error.
    pub async fn commit(
        &self,
        current: &InstanceRow,
        transition: &Transition,
        extras: CommitExtras<'_>,
        now: DateTime<Utc>,
    ) -> Result<InstanceRow> {
        let txn = self.db.begin().await?;
        if let Some(timer_id) = extras.fired_timer {
            let deleted = timers::Entity::delete_by_id(timer_id).exec(&txn).await?;
            if deleted.rows_affected != 1 {
                txn.rollback().await?;
                return Err(Error::Conflict);
            }
        }
        if let Some(message_id) = extras.consume {
            let taken = correlated_events::Entity::update_many()
                .col_expr(correlated_events::Column::Status, Expr::value("delivered"))
                .col_expr(
                    correlated_events::Column::DeliveredAtMs,
                    Expr::value(ms(now)),
                )
                .col_expr(
                    correlated_events::Column::DeliveredTo,
                    Expr::value(current.id.clone()),
                )
                .filter(correlated_events::Column::TenantId.eq(&current.tenant_id))
                .filter(correlated_events::Column::MessageId.eq(message_id))
                .filter(correlated_events::Column::Status.eq("pending"))
                .exec(&txn)
                .await?;
            if taken.rows_affected != 1 {
                txn.rollback().await?;
                return Err(Error::Consumed);
            }
        }
        let idempotency = extras.idempotency;
        let history_len =
            current.history_len + i64::try_from(transition.history.len()).unwrap_or(0);
        let mut update = instances::Entity::update_many()
            .col_expr(
                instances::Column::Revision,
                Expr::value(current.revision + 1),
            )
            .col_expr(instances::Column::HistoryLen, Expr::value(history_len))
            .col_expr(instances::Column::UpdatedAtMs, Expr::value(ms(now)))
            .filter(instances::Column::Id.eq(&current.id))
            .filter(instances::Column::Revision.eq(current.revision));
        if transition.applied {
            update = update
                .col_expr(
                    instances::Column::State,
                    Expr::value(transition.state.clone()),
                )
                .col_expr(
                    instances::Column::Status,
                    Expr::value(transition.status.as_str()),
                )
                .col_expr(
                    instances::Column::Data,
                    Expr::value(transition.data.to_string()),
                )
                .col_expr(
                    instances::Column::EntrySeq,
                    Expr::value(transition.entry_seq),
                );
            if transition.status.is_final() && current.ended_at_ms.is_none() {
                update = update.col_expr(instances::Column::EndedAtMs, Expr::value(ms(now)));
            }
        }
        let result = update.exec(&txn).await?;
        if result.rows_affected != 1 {
            txn.rollback().await?;
            return Err(Error::Conflict);
        }
        write_consequences(
            &txn,
            &current.tenant_id,
            &current.id,
            current.history_len,
            transition,
            now,
        )
        .await?;
        if let Some(record) = idempotency {
            insert_idempotency(&txn, &current.tenant_id, record, now).await?;
        }
        txn.commit().await?;
        // The row as committed, without reading it back.
        let mut row = current.clone();
        row.revision += 1;
        row.history_len = history_len;
        row.updated_at_ms = ms(now);
        if transition.applied {
            row.state.clone_from(&transition.state);
            row.status = transition.status.as_str().to_owned();
            row.data = transition.data.to_string();
            row.entry_seq = transition.entry_seq;
            if transition.status.is_final() && row.ended_at_ms.is_none() {
                row.ended_at_ms = Some(ms(now));
            }
        }
        Ok(row)
    }

    /// # Errors
    /// A database error.
    pub async fn instance(&self, tenant_id: &str, id: &str) -> Result<Option<InstanceRow>> {
        Ok(instances::Entity::find_by_id(id.to_owned())
            .filter(instances::Column::TenantId.eq(tenant_id))
            .one(&self.db)
            .await?)
    }

    /// # Errors
    /// A database error.
    pub async fn list_instances(
        &self,
        tenant_id: &str,
        filter: &InstanceFilter,
    ) -> Result<Vec<InstanceRow>> {
        let mut query = instances::Entity::find().filter(instances::Column::TenantId.eq(tenant_id));
        if let Some(workflow) = &filter.workflow {
            query = query.filter(instances::Column::Workflow.eq(workflow));
        }
        if let Some(state) = &filter.state {
            query = query.filter(instances::Column::State.eq(state));
        }
        if let Some(status) = &filter.status {
            query = query.filter(instances::Column::Status.eq(status));
        }
        if let Some(key) = &filter.business_key {
            query = query.filter(instances::Column::BusinessKey.eq(key));
        }
        if let Some(after) = &filter.after {
            query = query.filter(instances::Column::Id.gt(after));
        }
        Ok(query
            .order_by_asc(instances::Column::Id)
            .limit(filter.limit)
            .all(&self.db)
            .await?)
    }

    /// History in order, from `from_seq`, at most `limit` rows.
    ///
    /// # Errors
    /// A database error.
    pub async fn history(
        &self,
        instance_id: &str,
        from_seq: i64,
        limit: u64,
    ) -> Result<Vec<HistoryRow>> {
        Ok(history::Entity::find()
            .filter(history::Column::InstanceId.eq(instance_id))
            .filter(history::Column::Seq.gte(from_seq))
            .order_by_asc(history::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    // ---- timers ------------------------------------------------------------

    /// Timers due at or before `now`, earliest first (an index range scan).
    ///
    /// # Errors
    /// A database error.
    pub async fn due_timers(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<TimerRow>> {
        Ok(timers::Entity::find()
            .filter(timers::Column::DueAtMs.lte(ms(now)))
            .order_by_asc(timers::Column::DueAtMs)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Gives a claimed timer back, to be claimed again at once.
    ///
    /// # Errors
    /// A database error.
    pub async fn release_timer(&self, id: i64) -> Result<()> {
        timers::Entity::update_many()
            .col_expr(
                timers::Column::LockedUntilMs,
                Expr::value(Option::<i64>::None),
            )
            .filter(timers::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Drops one timer.
    ///
    /// # Errors
    /// A database error.
    pub async fn delete_timer(&self, id: i64) -> Result<()> {
        timers::Entity::delete_by_id(id).exec(&self.db).await?;
        Ok(())
    }

    /// Claims up to `limit` due timers for `lease`: no other process gets
    /// them until the lease runs out (`FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL; SQLite has one writer). A timer is deleted when it fires;
    /// one whose process died comes due again when the lease ends.
    ///
    /// # Errors
    /// A database error.
    pub async fn claim_due_timers(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u64,
    ) -> Result<Vec<TimerRow>> {
        if !self
            .any_due(
                "SELECT id FROM timers WHERE due_at_ms <= $1 AND (locked_until_ms IS NULL OR locked_until_ms <= $1) LIMIT 1",
                now,
            )
            .await?
        {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE timers SET locked_until_ms = $1 WHERE id IN (\
             SELECT id FROM timers WHERE due_at_ms <= $2 AND (locked_until_ms IS NULL OR locked_until_ms <= $2) \
             ORDER BY due_at_ms LIMIT $3{}) \
             RETURNING id, tenant_id, instance_id, entry_seq, timer_index, due_at_ms, locked_until_ms",
            self.skip_locked()
        );
        let values = [
            ms(now + lease).into(),
            ms(now).into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
        ];
        let mut rows = timers::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(self.backend(), sql, values))
            .all(&self.db)
            .await?;
        rows.sort_by_key(|t| (t.due_at_ms, t.id));
        Ok(rows)
    }

    /// Whether a read-only probe finds anything due: an idle pass of the
    /// background loop then costs one read, never a write (on PostgreSQL a
    /// claim is a commit, and commits wait for the disk).
    pub(super) async fn any_due(&self, sql: &str, now: DateTime<Utc>) -> Result<bool> {
        let row = self
            .db
            .query_one(Statement::from_sql_and_values(
                self.backend(),
                sql,
                [ms(now).into()],
            ))
            .await?;
        Ok(row.is_some())
    }

    pub(super) fn skip_locked_clause(&self) -> &'static str {
        self.skip_locked()
    }

    fn skip_locked(&self) -> &'static str {
        match self.backend() {
            DbBackend::Postgres => " FOR UPDATE SKIP LOCKED",
            _ => "",
        }
    }

    /// Armed timers of an instance.
    ///
    /// # Errors
    /// A database error.
    pub async fn timers_of(&self, instance_id: &str) -> Result<Vec<TimerRow>> {
        Ok(timers::Entity::find()
            .filter(timers::Column::InstanceId.eq(instance_id))
            .order_by_asc(timers::Column::DueAtMs)
            .all(&self.db)
            .await?)
    }

    // ---- outbox and inbox --------------------------------------------------

    /// Pending outbox rows whose time has come, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn pending_outbox(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<OutboxRow>> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::Status.eq("pending"))
            .filter(outbox::Column::AvailableAtMs.lte(ms(now)))
            .order_by_asc(outbox::Column::AvailableAtMs)
            .order_by_asc(outbox::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Claims up to `limit` pending outbox rows whose time has come, for
    /// `lease` (see `claim_due_timers`).
    ///
    /// # Errors
    /// A database error.
    pub async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u64,
    ) -> Result<Vec<OutboxRow>> {
        if !self
            .any_due(
                "SELECT id FROM outbox WHERE status = 'pending' AND available_at_ms <= $1 \
                 AND (locked_until_ms IS NULL OR locked_until_ms <= $1) LIMIT 1",
                now,
            )
            .await?
        {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE outbox SET locked_until_ms = $1 WHERE id IN (\
             SELECT id FROM outbox WHERE status = 'pending' AND available_at_ms <= $2 \
             AND (locked_until_ms IS NULL OR locked_until_ms <= $2) \
             ORDER BY available_at_ms, id LIMIT $3{}) \
             RETURNING id, tenant_id, instance_id, effect_key, kind, payload, status, attempts, available_at_ms, \
             last_error, created_at_ms, done_at_ms, locked_until_ms",
            self.skip_locked()
        );
        let values = [
            ms(now + lease).into(),
            ms(now).into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
        ];
        let mut rows = outbox::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(self.backend(), sql, values))
            .all(&self.db)
            .await?;
        rows.sort_by_key(|r| (r.available_at_ms, r.id));
        Ok(rows)
    }

    /// Counts outbox rows in a status.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_count(&self, status: &str) -> Result<u64> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::Status.eq(status))
            .count(&self.db)
            .await?)
    }

    /// Delivers a message to the web inbox and marks the outbox row done,
    /// in one transaction. The inbox row is unique per effect key, so a
    /// second delivery of the same effect changes nothing.
    ///
    /// # Errors
    /// A database error.
    pub async fn deliver_to_inbox(
        &self,
        row: &OutboxRow,
        party_id: &str,
        template: &str,
        title: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.db.begin().await?;
        inbox_messages::Entity::insert(inbox_messages::ActiveModel {
            tenant_id: Set(row.tenant_id.clone()),
            party_id: Set(party_id.to_owned()),
            instance_id: Set(row.instance_id.clone()),
            effect_key: Set(row.effect_key.clone()),
            template: Set(template.to_owned()),
            title: Set(title.to_owned()),
            body: Set(body.to_owned()),
            created_at_ms: Set(ms(now)),
            ..Default::default()
        })
        .on_conflict(
            OnConflict::column(inbox_messages::Column::EffectKey)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        finish_outbox(&txn, row, "done", None, now).await?;
        append_history(
            &txn,
            &row.instance_id,
            "effect_done",
            &serde_json::json!({"effect": row.kind, "key": row.effect_key, "channel": "inbox", "attempt": row.attempts + 1}),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Marks an outbox row done and records it in the instance's history.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_done(
        &self,
        row: &OutboxRow,
        detail: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.db.begin().await?;
        finish_outbox(&txn, row, "done", None, now).await?;
        append_history(&txn, &row.instance_id, "effect_done", detail, now).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Records a failed attempt: retried at `retry_at`, or failed for good
    /// when `retry_at` is `None`.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_attempt_failed(
        &self,
        row: &OutboxRow,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.db.begin().await?;
        match retry_at {
            Some(at) => {
                outbox::Entity::update_many()
                    .col_expr(outbox::Column::Attempts, Expr::value(row.attempts + 1))
                    .col_expr(outbox::Column::AvailableAtMs, Expr::value(ms(at)))
                    .col_expr(outbox::Column::LastError, Expr::value(error.to_owned()))
                    .col_expr(
                        outbox::Column::LockedUntilMs,
                        Expr::value(Option::<i64>::None),
                    )
                    .filter(outbox::Column::Id.eq(row.id))
                    .exec(&txn)
                    .await?;
            }
            None => finish_outbox(&txn, row, "failed", Some(error), now).await?,
        }
        append_history(
            &txn,
            &row.instance_id,
            "effect_failed",
            &serde_json::json!({"effect": row.kind, "key": row.effect_key, "attempt": row.attempts + 1, "error": error, "will_retry": retry_at.is_some()}),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Offers a pending outbox row again at `at` without counting an
    /// attempt; the instance's history notes it only the first time.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_postpone(
        &self,
        row: &OutboxRow,
        at: DateTime<Utc>,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.db.begin().await?;
        outbox::Entity::update_many()
            .col_expr(outbox::Column::AvailableAtMs, Expr::value(ms(at)))
            .col_expr(outbox::Column::LastError, Expr::value(note.to_owned()))
            .col_expr(
                outbox::Column::LockedUntilMs,
                Expr::value(Option::<i64>::None),
            )
            .filter(outbox::Column::Id.eq(row.id))
            .exec(&txn)
            .await?;
        if row.last_error.as_deref() != Some(note) {
            append_history(
                &txn,
                &row.instance_id,
                "effect_postponed",
                &serde_json::json!({"effect": row.kind, "key": row.effect_key, "reason": note}),
                now,
            )
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// A party's web inbox, newest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn inbox(
        &self,
        tenant_id: &str,
        party_id: &str,
        limit: u64,
    ) -> Result<Vec<InboxRow>> {
        Ok(inbox_messages::Entity::find()
            .filter(inbox_messages::Column::TenantId.eq(tenant_id))
            .filter(inbox_messages::Column::PartyId.eq(party_id))
            .order_by_desc(inbox_messages::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    // ---- migrations ------------------------------------------------------------

    /// Active instances of a workflow version.
    ///
    /// # Errors
    /// A database error.
    pub async fn active_instances_of(
        &self,
        tenant_id: &str,
        workflow: &str,
        version: i32,
    ) -> Result<Vec<InstanceRow>> {
        Ok(instances::Entity::find()
            .filter(instances::Column::TenantId.eq(tenant_id))
            .filter(instances::Column::Workflow.eq(workflow))
            .filter(instances::Column::Version.eq(version))
            .filter(instances::Column::Status.eq("active"))
            .order_by_asc(instances::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Moves instances to another version, all or none, in one transaction.
    /// Each instance must still be at the revision it was planned from.
    ///
    /// # Errors
    /// `Conflict` when an instance changed meanwhile; a database error.
    pub async fn apply_migration(
        &self,
        target: &DefinitionRow,
        moves: &[InstanceMove],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.db.begin().await?;
        for change in moves {
            let updated = instances::Entity::update_many()
                .col_expr(instances::Column::DefinitionId, Expr::value(target.id))
                .col_expr(instances::Column::Version, Expr::value(target.version))
                .col_expr(instances::Column::State, Expr::value(change.state.clone()))
                .col_expr(
                    instances::Column::Data,
                    Expr::value(change.data.to_string()),
                )
                .col_expr(
                    instances::Column::Revision,
                    Expr::value(change.revision + 1),
                )
                .col_expr(instances::Column::UpdatedAtMs, Expr::value(ms(now)))
                .filter(instances::Column::Id.eq(&change.instance_id))
                .filter(instances::Column::Revision.eq(change.revision))
                .exec(&txn)
                .await?;
            if updated.rows_affected != 1 {
                txn.rollback().await?;
                return Err(Error::Conflict);
            }
            if !change.drop_timers.is_empty() {
                timers::Entity::delete_many()
                    .filter(timers::Column::Id.is_in(change.drop_timers.clone()))
                    .exec(&txn)
                    .await?;
            }
            append_history(&txn, &change.instance_id, "migrated", &change.detail, now).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    // ---- schedules -------------------------------------------------------------

    /// Replaces a workflow's schedules with those of the version just
    /// deployed, in one transaction: a redeploy never duplicates them.
    ///
    /// # Errors
    /// A database error.
    pub async fn replace_schedules(
        &self,
        tenant_id: &str,
        definition: &DefinitionRow,
        schedules: &[NewSchedule],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.db.begin().await?;
        schedules::Entity::delete_many()
            .filter(schedules::Column::TenantId.eq(tenant_id))
            .filter(schedules::Column::Workflow.eq(&definition.name))
            .exec(&txn)
            .await?;
        if !schedules.is_empty() {
            let rows = schedules.iter().map(|s| schedules::ActiveModel {
                tenant_id: Set(tenant_id.to_owned()),
                workflow: Set(definition.name.clone()),
                definition_id: Set(definition.id),
                schedule_index: Set(i32::try_from(s.index).unwrap_or(i32::MAX)),
                cron: Set(s.cron.clone()),
                time_zone: Set(s.time_zone.clone()),
                next_fire_at_ms: Set(ms(s.next_fire_at)),
                locked_until_ms: Set(None),
                created_at_ms: Set(ms(now)),
                ..Default::default()
            });
            schedules::Entity::insert_many(rows)
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// A tenant's schedules, by workflow.
    ///
    /// # Errors
    /// A database error.
    pub async fn schedules(&self, tenant_id: &str) -> Result<Vec<ScheduleRow>> {
        Ok(schedules::Entity::find()
            .filter(schedules::Column::TenantId.eq(tenant_id))
            .order_by_asc(schedules::Column::Workflow)
            .order_by_asc(schedules::Column::ScheduleIndex)
            .all(&self.db)
            .await?)
    }

    /// Claims due schedules for `lease` (see `claim_due_timers`).
    ///
    /// # Errors
    /// A database error.
    pub async fn claim_due_schedules(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u64,
    ) -> Result<Vec<ScheduleRow>> {
        if !self
            .any_due(
                "SELECT id FROM schedules WHERE next_fire_at_ms <= $1 AND (locked_until_ms IS NULL OR locked_until_ms <= $1) LIMIT 1",
                now,
            )
            .await?
        {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE schedules SET locked_until_ms = $1 WHERE id IN (\
             SELECT id FROM schedules WHERE next_fire_at_ms <= $2 AND (locked_until_ms IS NULL OR locked_until_ms <= $2) \
             ORDER BY next_fire_at_ms LIMIT $3{}) \
             RETURNING id, tenant_id, workflow, definition_id, schedule_index, cron, time_zone, next_fire_at_ms, locked_until_ms, created_at_ms",
            self.skip_locked()
        );
        let values = [
            ms(now + lease).into(),
            ms(now).into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
        ];
        let mut rows = schedules::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(self.backend(), sql, values))
            .all(&self.db)
            .await?;
        rows.sort_by_key(|s| (s.next_fire_at_ms, s.id));
        Ok(rows)
    }

    /// Moves a schedule that fired at `fired_at_ms` to its next time and
    /// releases it (a schedule replaced meanwhile is left alone).
    ///
    /// # Errors
    /// A database error.
    pub async fn advance_schedule(
        &self,
        id: i64,
        fired_at_ms: i64,
        next: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let update = schedules::Entity::update_many()
            .filter(schedules::Column::Id.eq(id))
            .filter(schedules::Column::NextFireAtMs.eq(fired_at_ms));
        match next {
            Some(next) => {
                update
                    .col_expr(schedules::Column::NextFireAtMs, Expr::value(ms(next)))
                    .col_expr(
                        schedules::Column::LockedUntilMs,
                        Expr::value(Option::<i64>::None),
                    )
                    .exec(&self.db)
                    .await?;
            }
            None => {
                schedules::Entity::delete_many()
                    .filter(schedules::Column::Id.eq(id))
                    .filter(schedules::Column::NextFireAtMs.eq(fired_at_ms))
                    .exec(&self.db)
                    .await?;
            }
        }
        Ok(())
    }

    // ---- incidents -------------------------------------------------------------

    /// Opens an incident for a failed effect and records it in the instance's history.
    ///
    /// # Errors
    /// A database error.
    pub async fn open_incident(
        &self,
        row: &OutboxRow,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<IncidentRow> {
        self.open_incident_for(
            &row.tenant_id,
            &row.instance_id,
            &row.effect_key,
            &row.kind,
            error,
            now,
        )
        .await
    }

    /// Opens an incident about anything keyed (a refund that went
    /// `ABNORMAL`, a late payment whose refund closed).
    ///
    /// # Errors
    /// A database error.
    pub async fn open_incident_for(
        &self,
        tenant_id: &str,
        instance_id: &str,
        key: &str,
        kind: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<IncidentRow> {
        // One open incident per thing that needs a person: a failure that
        // repeats while the first is open does not open another.
        if let Some(open) = incidents::Entity::find()
            .filter(incidents::Column::TenantId.eq(tenant_id))
            .filter(incidents::Column::InstanceId.eq(instance_id))
            .filter(incidents::Column::EffectKey.eq(key))
            .filter(incidents::Column::Status.eq("open"))
            .one(&self.db)
            .await?
        {
            return Ok(open);
        }
        let txn = self.db.begin().await?;
        let incident = incidents::Entity::insert(incidents::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            instance_id: Set(instance_id.to_owned()),
            effect_key: Set(key.to_owned()),
            kind: Set(kind.to_owned()),
            error: Set(error.to_owned()),
            status: Set("open".to_owned()),
            created_at_ms: Set(ms(now)),
            resolved_at_ms: Set(None),
            ..Default::default()
        })
        .exec_with_returning(&txn)
        .await?;
        append_history(
            &txn,
            instance_id,
            "incident_opened",
            &serde_json::json!({"incident": incident.id, "effect": kind, "key": key, "error": error}),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(incident)
    }

    /// A tenant's incidents, newest first; `status` filters (`open`, `retried`).
    ///
    /// # Errors
    /// A database error.
    pub async fn incidents(
        &self,
        tenant_id: &str,
        status: Option<&str>,
        limit: u64,
    ) -> Result<Vec<IncidentRow>> {
        let mut query = incidents::Entity::find().filter(incidents::Column::TenantId.eq(tenant_id));
        if let Some(status) = status {
            query = query.filter(incidents::Column::Status.eq(status));
        }
        Ok(query
            .order_by_desc(incidents::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// # Errors
    /// A database error.
    pub async fn incident(&self, tenant_id: &str, id: i64) -> Result<Option<IncidentRow>> {
        Ok(incidents::Entity::find_by_id(id)
            .filter(incidents::Column::TenantId.eq(tenant_id))
            .one(&self.db)
            .await?)
    }

    /// Puts an open incident's effect back in the outbox, with fresh
    /// attempts, and marks the incident retried. False when it was not open.
    ///
    /// # Errors
    /// A database error.
    pub async fn retry_incident(&self, incident: &IncidentRow, now: DateTime<Utc>) -> Result<bool> {
        let txn = self.db.begin().await?;
        let marked = incidents::Entity::update_many()
            .col_expr(incidents::Column::Status, Expr::value("retried"))
            .col_expr(incidents::Column::ResolvedAtMs, Expr::value(ms(now)))
            .filter(incidents::Column::Id.eq(incident.id))
            .filter(incidents::Column::Status.eq("open"))
            .exec(&txn)
            .await?;
        if marked.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        outbox::Entity::update_many()
            .col_expr(outbox::Column::Status, Expr::value("pending"))
            .col_expr(outbox::Column::Attempts, Expr::value(0))
            .col_expr(outbox::Column::AvailableAtMs, Expr::value(ms(now)))
            .col_expr(
                outbox::Column::LockedUntilMs,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(outbox::Column::DoneAtMs, Expr::value(Option::<i64>::None))
            .filter(outbox::Column::EffectKey.eq(&incident.effect_key))
            .exec(&txn)
            .await?;
        append_history(
            &txn,
            &incident.instance_id,
            "incident_retried",
            &serde_json::json!({"incident": incident.id, "key": incident.effect_key}),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    // ---- correlated events ---------------------------------------------------

    /// Keeps a correlated event as pending until `expires_at`. Returns false
    /// when its message id was seen before (the event is then dropped).
    ///
    /// # Errors
    /// A database error.
    #[allow(clippy::too_many_arguments)]
    pub async fn keep_event(
        &self,
        tenant_id: &str,
        message_id: &str,
        event_type: &str,
        correlation_key: &str,
        payload: &serde_json::Value,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let inserted = correlated_events::Entity::insert(correlated_events::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            message_id: Set(message_id.to_owned()),
            event_type: Set(event_type.to_owned()),
            correlation_key: Set(correlation_key.to_owned()),
            payload: Set(payload.to_string()),
            status: Set("pending".to_owned()),
            expires_at_ms: Set(ms(expires_at)),
            created_at_ms: Set(ms(now)),
            delivered_at_ms: Set(None),
            delivered_to: Set(None),
        })
        .on_conflict(
            OnConflict::columns([
                correlated_events::Column::TenantId,
                correlated_events::Column::MessageId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(inserted == 1)
    }

    /// # Errors
    /// A database error.
    pub async fn correlated_event(
        &self,
        tenant_id: &str,
        message_id: &str,
    ) -> Result<Option<CorrelatedEventRow>> {
        Ok(
            correlated_events::Entity::find_by_id((tenant_id.to_owned(), message_id.to_owned()))
                .one(&self.db)
                .await?,
        )
    }

    /// Kept events for a business key that have not expired, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn waiting_events(
        &self,
        tenant_id: &str,
        correlation_key: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<CorrelatedEventRow>> {
        Ok(correlated_events::Entity::find()
            .filter(correlated_events::Column::TenantId.eq(tenant_id))
            .filter(correlated_events::Column::CorrelationKey.eq(correlation_key))
            .filter(correlated_events::Column::Status.eq("pending"))
            .filter(correlated_events::Column::ExpiresAtMs.gt(ms(now)))
            .order_by_asc(correlated_events::Column::CreatedAtMs)
            .order_by_asc(correlated_events::Column::MessageId)
            .all(&self.db)
            .await?)
    }

    /// Forgets a kept event that its instance refused (a guard or `set`
    /// failed on it): it is never delivered later, and its message id may
    /// be sent again, corrected.
    ///
    /// # Errors
    /// A database error.
    pub async fn forget_kept_event(&self, tenant_id: &str, message_id: &str) -> Result<()> {
        correlated_events::Entity::delete_many()
            .filter(correlated_events::Column::TenantId.eq(tenant_id))
            .filter(correlated_events::Column::MessageId.eq(message_id))
            .filter(correlated_events::Column::Status.eq("pending"))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Active instances of a tenant with this business key.
    ///
    /// # Errors
    /// A database error.
    pub async fn active_instances_with_key(
        &self,
        tenant_id: &str,
        business_key: &str,
    ) -> Result<Vec<InstanceRow>> {
        Ok(instances::Entity::find()
            .filter(instances::Column::TenantId.eq(tenant_id))
            .filter(instances::Column::BusinessKey.eq(business_key))
            .filter(instances::Column::Status.eq("active"))
            .order_by_asc(instances::Column::Id)
            .all(&self.db)
            .await?)
    }

    // ---- idempotency -------------------------------------------------------

    /// # Errors
    /// A database error.
    pub async fn idempotency(
        &self,
        tenant_id: &str,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredIdempotency>> {
        Ok(idempotency_keys::Entity::find_by_id((
            tenant_id.to_owned(),
            scope.to_owned(),
            key.to_owned(),
        ))
        .one(&self.db)
        .await?)
    }
}

async fn insert_idempotency(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    record: &IdempotencyRecord,
    now: DateTime<Utc>,
) -> Result<()> {
    idempotency_keys::Entity::insert(idempotency_keys::ActiveModel {
        tenant_id: Set(tenant_id.to_owned()),
        scope: Set(record.scope.clone()),
        key: Set(record.key.clone()),
        request_hash: Set(record.request_hash.clone()),
        response: Set(record.response.clone()),
        status_code: Set(record.status_code),
        created_at_ms: Set(ms(now)),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

async fn finish_outbox(
    txn: &DatabaseTransaction,
    row: &OutboxRow,
    status: &str,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    outbox::Entity::update_many()
        .col_expr(outbox::Column::Status, Expr::value(status))
        .col_expr(outbox::Column::Attempts, Expr::value(row.attempts + 1))
        .col_expr(outbox::Column::DoneAtMs, Expr::value(ms(now)))
        .col_expr(
            outbox::Column::LastError,
            Expr::value(error.map(str::to_owned)),
        )
        .filter(outbox::Column::Id.eq(row.id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Appends one history row outside a transition (effect results); bumps
/// the instance's revision so a concurrent transition retries.
pub(super) async fn append_history(
    txn: &DatabaseTransaction,
    instance_id: &str,
    kind: &str,
    detail: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    instances::Entity::update_many()
        .col_expr(
            instances::Column::HistoryLen,
            Expr::col(instances::Column::HistoryLen).add(1),
        )
        .col_expr(
            instances::Column::Revision,
            Expr::col(instances::Column::Revision).add(1),
        )
        .filter(instances::Column::Id.eq(instance_id))
        .exec(txn)
        .await?;
    let Some(instance) = instances::Entity::find_by_id(instance_id.to_owned())
        .one(txn)
        .await?
    else {
        return Ok(());
    };
    history::Entity::insert(history::ActiveModel {
        instance_id: Set(instance_id.to_owned()),
        seq: Set(instance.history_len - 1),
        at_ms: Set(ms(now)),
        kind: Set(kind.to_owned()),
        detail: Set(detail.to_string()),
        ..Default::default()
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// History rows, timer changes and outbox rows of one transition.
async fn write_consequences(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    instance_id: &str,
    history_start: i64,
    transition: &Transition,
    now: DateTime<Utc>,
) -> Result<()> {
    if !transition.history.is_empty() {
        let rows = transition
            .history
            .iter()
            .enumerate()
            .map(|(i, entry)| history::ActiveModel {
                instance_id: Set(instance_id.to_owned()),
                seq: Set(history_start + i64::try_from(i).unwrap_or(0)),
                at_ms: Set(ms(now)),
                kind: Set(entry.kind.to_owned()),
                detail: Set(entry.detail.to_string()),
                ..Default::default()
            });
        history::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    if transition.cancel_timers {
        timers::Entity::delete_many()
            .filter(timers::Column::InstanceId.eq(instance_id))
            .exec(txn)
            .await?;
    }
    if !transition.timers.is_empty() {
        let rows = transition.timers.iter().map(|timer| timers::ActiveModel {
            tenant_id: Set(tenant_id.to_owned()),
            instance_id: Set(instance_id.to_owned()),
            entry_seq: Set(timer.entry_seq),
            timer_index: Set(i32::try_from(timer.index).unwrap_or(i32::MAX)),
            due_at_ms: Set(ms(timer.due_at)),
            locked_until_ms: Set(None),
            ..Default::default()
        });
        timers::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    if !transition.effects.is_empty() {
        let mut rows = Vec::with_capacity(transition.effects.len());
        for effect in &transition.effects {
            let payload = effect.kind.payload()?;
            rows.push(outbox::ActiveModel {
                tenant_id: Set(tenant_id.to_owned()),
                instance_id: Set(instance_id.to_owned()),
                effect_key: Set(effect.key.clone()),
                kind: Set(effect.kind.name().to_owned()),
                payload: Set(payload),
                status: Set("pending".to_owned()),
                attempts: Set(0),
                available_at_ms: Set(ms(now)),
                last_error: Set(None),
                created_at_ms: Set(ms(now)),
                done_at_ms: Set(None),
                locked_until_ms: Set(None),
                ..Default::default()
            });
        }
        outbox::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::column(outbox::Column::EffectKey)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

//! Durable storage through sea-orm, on SQLite (the embedded default) or
//! PostgreSQL, with the same migrations. Repositories here hand out plain
//! rows and take engine `Transition`s; nothing outside `store` builds a
//! query. A state change, its history rows, its timers and its outbox rows
//! are written in one transaction (`Store::commit`).
//!
//! Architecture invariant: `store` knows nothing of HTTP.

pub(crate) mod claim;
mod correlation;
mod definitions;
mod endpoints;
pub mod entities;
mod group;
mod idempotency;
mod incidents;
mod instances;
mod moves;
mod outbox;
mod payments;
mod reads;
mod rows;
mod schedules;
mod states;
mod templates;
mod tenants;
mod timers;

pub use endpoints::*;
pub use payments::*;
pub use reads::{PaymentWithRefunds, Reads};
pub use rows::*;
pub use states::{KeptEventStatus, OutboxStatus, PaymentState, RefundStatus};
pub use templates::*;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the row changed under us; retry")]
    Conflict,
    #[error("a stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("the kept event was already delivered")]
    Consumed,
    #[error("the group commit failed: {0}")]
    Commit(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The database behind o2flow.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: DatabaseConnection,
    group: std::sync::Arc<group::Group>,
    /// Who this process's claims are held by: `<node>/<boot>`.
    owner: std::sync::Arc<str>,
}

/// Committer tasks on PostgreSQL (SQLite has one writer, so one).
const POSTGRES_COMMITTERS: usize = 4;

impl Store {
    /// Connects, creating an SQLite file on first use (WAL mode), and runs
    /// pending migrations.
    ///
    /// # Errors
    /// The database cannot be reached, or a migration fails.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, None).await
    }

    /// `connect`, with `connections` to PostgreSQL (default 16; SQLite
    /// always has one).
    ///
    /// # Errors
    /// As `connect`.
    pub async fn connect_with(url: &str, connections: Option<u32>) -> Result<Store> {
        let url = normalize_url(url);
        let mut options = ConnectOptions::new(url.clone());
        options.sqlx_logging(false);
        if url.starts_with("sqlite:") {
            // One writer at a time is SQLite's model; one connection keeps
            // transactions from tripping over each other's locks.
            options.max_connections(1).min_connections(1);
        } else {
            options
                .max_connections(connections.unwrap_or(16).max(2))
                .min_connections(1);
        }
        let db = Database::connect(options).await?;
        if db.get_database_backend() == DbBackend::Sqlite {
            for pragma in [
                "PRAGMA journal_mode = WAL",
                // Every commit reaches the disk before it is answered: a
                // payment callback answered 204 must survive a power cut
                // (NORMAL in WAL mode may lose the last commits).
                "PRAGMA synchronous = FULL",
                "PRAGMA busy_timeout = 5000",
                "PRAGMA foreign_keys = ON",
            ] {
                db.execute_unprepared(pragma).await?;
            }
        }
        use migrations::MigratorTrait;
        migrations::Migrator::up(&db, None).await?;
        // Committers hold connections while they commit: at most a quarter
        // of the pool, so reads always find one.
        let committers = match db.get_database_backend() {
            DbBackend::Postgres => POSTGRES_COMMITTERS
                .min(connections.unwrap_or(16) as usize / 4)
                .max(1),
            _ => 1,
        };
        let group = std::sync::Arc::new(group::Group::start(&db, committers));
        let store = Store {
            db,
            group,
            owner: std::sync::Arc::from(""),
        };
        Ok(store.claiming_as("o2flow"))
    }

    /// The same store, its claims held as `<node>/<a new boot id>`: a
    /// process restarted under the same node name recognises its
    /// predecessor's claims (`take_back_claims`).
    #[must_use]
    pub fn claiming_as(&self, node: &str) -> Store {
        Store {
            owner: std::sync::Arc::from(format!("{node}/{}", uuid::Uuid::now_v7()).as_str()),
            ..self.clone()
        }
    }

    /// Who this store's claims are held by.
    pub fn claim_owner(&self) -> &str {
        &self.owner
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Closes the connection pool.
    pub async fn close(&self) {
        let _ = self.db.clone().close().await;
    }

    /// The SQLite journal mode (`wal`), for checks and tests.
    ///
    /// # Errors
    /// A database error.
    pub async fn journal_mode(&self) -> Result<Option<String>> {
        self.sqlite_pragma("journal_mode").await
    }

    /// SQLite's `synchronous` level (2 is `FULL`: every commit waits for
    /// the disk), for checks and tests.
    ///
    /// # Errors
    /// A database error.
    pub async fn synchronous(&self) -> Result<Option<i64>> {
        self.sqlite_pragma("synchronous").await
    }

    /// A pragma's value on SQLite; `None` on PostgreSQL.
    async fn sqlite_pragma<T: sea_orm::TryGetable>(&self, name: &str) -> Result<Option<T>> {
        use sea_orm::Statement;
        if self.backend() != DbBackend::Sqlite {
            return Ok(None);
        }
        let row = self
            .db
            .query_one(Statement::from_string(
                DbBackend::Sqlite,
                format!("PRAGMA {name}"),
            ))
            .await?;
        Ok(row.and_then(|r| r.try_get_by_index::<T>(0).ok()))
    }
}

/// `o2flow.db` and `sqlite:o2flow.db` both mean a file, created if missing.
fn normalize_url(url: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return url.to_owned();
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.contains("mode=") {
        format!("sqlite://{path}")
    } else if path.contains('?') {
        format!("sqlite://{path}&mode=rwc")
    } else {
        format!("sqlite://{path}?mode=rwc")
    }
}

/// Milliseconds since the Unix epoch.
pub fn ms(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_millis()
}

/// The time of a millisecond count.
pub fn from_ms(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

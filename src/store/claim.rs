//! The one lease-claim primitive behind every queue of background work:
//! due timers, pending outbox rows, schedules, and payments and refunds to
//! check. A claim marks rows as taken until `now + lease`; no other process
//! gets them until the lease runs out (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL; SQLite has one writer). A process that dies leaves its
//! claims to run out, and the work comes due again.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, Statement};

use super::{from_ms, ms, Result, Store};

/// A table whose rows are background work, due at a time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Queue {
    pub table: &'static str,
    pub key: &'static str,
    /// The column holding when a row is due, in ms.
    pub due: &'static str,
    /// Which rows are still work (an SQL condition).
    pub open: &'static str,
}

pub(crate) const TIMERS: Queue = Queue {
    table: "timers",
    key: "id",
    due: "due_at_ms",
    open: "1 = 1",
};

pub(crate) const OUTBOX: Queue = Queue {
    table: "outbox",
    key: "id",
    due: "available_at_ms",
    open: "status = 'pending'",
};

pub(crate) const SCHEDULES: Queue = Queue {
    table: "schedules",
    key: "id",
    due: "next_fire_at_ms",
    open: "1 = 1",
};

pub(crate) const PAYMENTS: Queue = Queue {
    table: "payments",
    key: "out_trade_no",
    due: "next_check_at_ms",
    open: "state = 'pending'",
};

/// Open refunds, and done ones whose 医保 part WeChat Pay has not yet
/// accepted the report of.
pub(crate) const REFUNDS: Queue = Queue {
    table: "refunds",
    key: "out_refund_no",
    due: "next_check_at_ms",
    open: "(status IN ('pending', 'processing') OR (status = 'succeeded' \
           AND insurance IS NOT NULL AND insurance_notified_at_ms IS NULL))",
};

/// Every queue: what the manual clock looks through for the next due time.
const QUEUES: [Queue; 5] = [TIMERS, OUTBOX, SCHEDULES, PAYMENTS, REFUNDS];

impl Store {
    /// One row of `sql`, whose `$1` is `now` in ms: every read the queues
    /// make between passes.
    async fn read_at(
        &self,
        sql: String,
        now: DateTime<Utc>,
    ) -> Result<Option<sea_orm::QueryResult>> {
        Ok(self
            .db
            .query_one(Statement::from_sql_and_values(
                self.backend(),
                sql,
                [ms(now).into()],
            ))
            .await?)
    }

    /// Claims up to `limit` rows of `queue` due at `now` for `lease`,
    /// earliest first (callers sort the returned rows; `RETURNING` keeps no
    /// order). An idle pass costs one read, never a write: on PostgreSQL a
    /// claim is a commit, and commits wait for the disk.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn claim<E>(
        &self,
        queue: Queue,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u64,
    ) -> Result<Vec<E::Model>>
    where
        E: EntityTrait,
        E::Model: Send + 'static,
    {
        let Queue {
            table,
            key,
            due,
            open,
        } = queue;
        let probe = format!(
            "SELECT {key} FROM {table} WHERE {open} AND {due} <= $1 \
             AND (locked_until_ms IS NULL OR locked_until_ms <= $1) LIMIT 1"
        );
        let found = self.read_at(probe, now).await?;
        if found.is_none() {
            return Ok(Vec::new());
        }
        let skip_locked = match self.backend() {
            DbBackend::Postgres => " FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let sql = format!(
            "UPDATE {table} SET locked_until_ms = $1, claimed_by = $4 WHERE {key} IN (\
             SELECT {key} FROM {table} WHERE {open} AND {due} <= $2 \
             AND (locked_until_ms IS NULL OR locked_until_ms <= $2) \
             ORDER BY {due}, {key} LIMIT $3{skip_locked}) RETURNING *"
        );
        let values = [
            ms(now + lease).into(),
            ms(now).into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
            self.claim_owner().into(),
        ];
        let statement = Statement::from_sql_and_values(self.backend(), sql, values);
        // A claim is a write: it shares the next group commit.
        self.write("", move |txn| {
            Box::pin(async move { Ok(E::find().from_raw_sql(statement).all(txn).await?) })
        })
        .await
    }

    /// Gives back the claims an earlier process of this node still holds
    /// (it died: this is its restart), so its work runs now instead of
    /// after the lease. Returns how many rows were given back.
    ///
    /// # Errors
    /// A database error.
    pub async fn take_back_claims(&self) -> Result<u64> {
        let owner = self.claim_owner();
        let node = owner.rsplit_once('/').map_or(owner, |(node, _)| node);
        let prefix = format!("{node}/");
        let mut taken = 0;
        for Queue { table, open, .. } in QUEUES {
            // Only rows still work (`open`, indexed): done rows keep their
            // last holder's name and need nothing back.
            let sql = format!(
                "UPDATE {table} SET locked_until_ms = NULL, claimed_by = NULL \
                 WHERE {open} AND substr(claimed_by, 1, CAST($1 AS INTEGER)) = $2 \
                 AND claimed_by <> $3"
            );
            let done = self
                .db
                .execute(Statement::from_sql_and_values(
                    self.backend(),
                    sql,
                    [
                        i64::try_from(prefix.chars().count())
                            .unwrap_or(i64::MAX)
                            .into(),
                        prefix.clone().into(),
                        owner.into(),
                    ],
                ))
                .await?;
            taken += done.rows_affected();
        }
        Ok(taken)
    }

    /// Renews the leases of the work this process still runs (claimed by
    /// it, still open and due), so a short lease is safe for long work.
    ///
    /// # Errors
    /// A database error.
    pub async fn renew_claims(&self, now: DateTime<Utc>, lease: chrono::Duration) -> Result<u64> {
        let mut renewed = 0;
        for Queue {
            table, due, open, ..
        } in QUEUES
        {
            let sql = format!(
                "UPDATE {table} SET locked_until_ms = $1 WHERE claimed_by = $2 \
                 AND locked_until_ms > $3 AND {open} AND {due} <= $3"
            );
            let done = self
                .db
                .execute(Statement::from_sql_and_values(
                    self.backend(),
                    sql,
                    [
                        ms(now + lease).into(),
                        self.claim_owner().into(),
                        ms(now).into(),
                    ],
                ))
                .await?;
            renewed += done.rows_affected();
        }
        Ok(renewed)
    }

    /// For each queue, when its earliest row that no process holds comes
    /// due (already, or later), in one read: what a background loop asks
    /// between passes, instead of a probe and a minimum per queue.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn queue_heads(
        &self,
        queues: &[Queue],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<DateTime<Utc>>>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let heads: Vec<String> = queues
            .iter()
            .map(
                |Queue {
                     table, due, open, ..
                 }| {
                    format!(
                        "(SELECT MIN({due}) FROM {table} WHERE {open} \
                     AND (locked_until_ms IS NULL OR locked_until_ms <= $1))"
                    )
                },
            )
            .collect();
        let sql = format!("SELECT {}", heads.join(", "));
        let row = self.read_at(sql, now).await?;
        Ok((0..queues.len())
            .map(|i| {
                row.as_ref()
                    .and_then(|r| r.try_get_by_index::<Option<i64>>(i).ok().flatten())
                    .map(from_ms)
            })
            .collect())
    }

    /// The backlog `/metrics` shows: pending effects, those due now, armed
    /// timers; one read.
    ///
    /// # Errors
    /// A database error.
    pub async fn backlog(&self, now: DateTime<Utc>) -> Result<crate::runtime::metrics::Backlog> {
        let Queue {
            table, due, open, ..
        } = OUTBOX;
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM {table} WHERE {open}), \
             (SELECT COUNT(*) FROM {table} WHERE {open} AND {due} <= $1), \
             (SELECT COUNT(*) FROM {timers})",
            timers = TIMERS.table
        );
        let row = self.read_at(sql, now).await?;
        let at = |i: usize| {
            row.as_ref()
                .and_then(|r| r.try_get_by_index::<i64>(i).ok())
                .unwrap_or(0)
        };
        Ok(crate::runtime::metrics::Backlog {
            outbox_pending: at(0),
            outbox_due: at(1),
            timers_pending: at(2),
        })
    }

    /// The earliest time after `now` at which any background work comes
    /// due: a timer, an outbox retry, a schedule, a payment or refund check.
    /// The manual clock moves to it, step by step, so work happens in order.
    ///
    /// # Errors
    /// A database error.
    pub async fn next_due_after(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        self.next_due_in(&QUEUES, now).await
    }

    /// The earliest time after `now` at which a row of `queues` comes due
    /// (rows due already, claimed or not, are not counted).
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn next_due_in(
        &self,
        queues: &[Queue],
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let mut next: Option<i64> = None;
        for Queue {
            table, due, open, ..
        } in queues
        {
            let sql = format!("SELECT MIN({due}) FROM {table} WHERE {open} AND {due} > $1");
            let row = self.read_at(sql, now).await?;
            let at = row.and_then(|r| r.try_get_by_index::<Option<i64>>(0).ok().flatten());
            next = match (next, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(next.map(from_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OutboxStatus, PaymentState, RefundStatus};

    /// The queues' SQL spells states as text: they must be the enums' texts.
    #[test]
    fn the_queues_name_states_as_the_enums_store_them() {
        assert_eq!(OUTBOX.open, format!("status = '{}'", OutboxStatus::Pending));
        assert_eq!(
            PAYMENTS.open,
            format!("state = '{}'", PaymentState::Pending)
        );
        assert_eq!(
            REFUNDS.open,
            format!(
                "(status IN ('{}', '{}') OR (status = '{}' AND insurance IS NOT NULL AND insurance_notified_at_ms IS NULL))",
                RefundStatus::Pending,
                RefundStatus::Processing,
                RefundStatus::Succeeded
            )
        );
    }
}

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
    /// Claims up to `limit` rows of `queue` due at `now` for `lease`,
    /// earliest first (callers sort the returned rows; `RETURNING` keeps no
    /// order). An idle pass costs one read, never a write: on PostgreSQL a
    /// claim is a commit, and commits wait for the disk.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn claim<E: EntityTrait>(
        &self,
        queue: Queue,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u64,
    ) -> Result<Vec<E::Model>> {
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
        let found = self
            .db
            .query_one(Statement::from_sql_and_values(
                self.backend(),
                probe,
                [ms(now).into()],
            ))
            .await?;
        if found.is_none() {
            return Ok(Vec::new());
        }
        let skip_locked = match self.backend() {
            DbBackend::Postgres => " FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let sql = format!(
            "UPDATE {table} SET locked_until_ms = $1 WHERE {key} IN (\
             SELECT {key} FROM {table} WHERE {open} AND {due} <= $2 \
             AND (locked_until_ms IS NULL OR locked_until_ms <= $2) \
             ORDER BY {due}, {key} LIMIT $3{skip_locked}) RETURNING *"
        );
        let values = [
            ms(now + lease).into(),
            ms(now).into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
        ];
        Ok(E::find()
            .from_raw_sql(Statement::from_sql_and_values(self.backend(), sql, values))
            .all(&self.db)
            .await?)
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
            let row = self
                .db
                .query_one(Statement::from_sql_and_values(
                    self.backend(),
                    sql,
                    [ms(now).into()],
                ))
                .await?;
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

//! Group commit: the writes of the hot path (a start, a transition, an
//! effect's result, a claim) are handed to a committer task, which runs
//! every write waiting when it becomes free in one database transaction,
//! each in a savepoint of its own, and commits once. One disk flush then
//! makes a whole batch durable, and each caller is answered only after it.
//!
//! - At low load a write is alone in its batch: no savepoint, no added
//!   wait (the committer never waits for company).
//! - A write that fails (a revision conflict, a unique key) rolls back its
//!   own savepoint; the others in the batch are unaffected.
//! - A batch's writes run in order of their instance id, and every
//!   committer follows that order, so two batches on two PostgreSQL
//!   connections never wait for each other in a cycle.
//! - A write must do all its work on the transaction it is given: the
//!   committer holds a connection, and on SQLite it is the only one.

use std::any::Any;
use std::sync::Arc;

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DatabaseTransaction, TransactionTrait};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{Error, Result, Store};

type Value = Box<dyn Any + Send>;
type Work = Box<dyn for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<Value>> + Send>;

struct Job {
    /// The instance (or queue) the write is about: a batch runs in this order.
    order: String,
    work: Work,
    reply: oneshot::Sender<Result<Value>>,
}

/// At most this many writes share one commit.
const MAX_BATCH: usize = 256;

/// The committers of one store.
pub(crate) struct Group {
    sender: mpsc::UnboundedSender<Job>,
}

impl Group {
    /// Starts `committers` committer tasks on `db` (each holds one
    /// connection while it commits a batch).
    pub(crate) fn start(db: &DatabaseConnection, committers: usize) -> Group {
        let (sender, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..committers.max(1) {
            tokio::spawn(run(db.clone(), receiver.clone()));
        }
        Group { sender }
    }
}

/// Takes every waiting write (up to `MAX_BATCH`) and commits them together,
/// until every `Store` is gone.
async fn run(db: DatabaseConnection, receiver: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        batch.sort_by(|a, b| a.order.cmp(&b.order));
        commit_batch(&db, batch).await;
    }
}

fn stopped(error: impl std::fmt::Display) -> Error {
    Error::Commit(error.to_string())
}

async fn commit_batch(db: &DatabaseConnection, batch: Vec<Job>) {
    let txn = match db.begin().await {
        Ok(txn) => txn,
        Err(error) => {
            let message = error.to_string();
            for job in batch {
                let _ = job.reply.send(Err(stopped(&message)));
            }
            return;
        }
    };
    let mut written = Vec::with_capacity(batch.len());
    if batch.len() == 1 {
        // Alone: the transaction is the write's own.
        for job in batch {
            match (job.work)(&txn).await {
                Ok(value) => written.push((job.reply, value)),
                Err(error) => {
                    let _ = txn.rollback().await;
                    let _ = job.reply.send(Err(error));
                    return;
                }
            }
        }
    } else {
        for job in batch {
            let savepoint = match txn.begin().await {
                Ok(savepoint) => savepoint,
                Err(error) => {
                    let _ = job.reply.send(Err(error.into()));
                    continue;
                }
            };
            match (job.work)(&savepoint).await {
                Ok(value) => match savepoint.commit().await {
                    Ok(()) => written.push((job.reply, value)),
                    Err(error) => {
                        let _ = job.reply.send(Err(error.into()));
                    }
                },
                Err(error) => {
                    let _ = savepoint.rollback().await;
                    let _ = job.reply.send(Err(error));
                }
            }
        }
    }
    match txn.commit().await {
        Ok(()) => {
            for (reply, value) in written {
                let _ = reply.send(Ok(value));
            }
        }
        Err(error) => {
            let message = error.to_string();
            for (reply, _) in written {
                let _ = reply.send(Err(stopped(&message)));
            }
        }
    }
}

impl Store {
    /// Runs `work` in the next group commit and answers once it is
    /// durable. `order` is the instance id the write is about.
    ///
    /// # Errors
    /// What `work` returned (its savepoint rolled back), or `Commit` when
    /// the batch's commit failed (nothing of the write is stored).
    pub(crate) async fn write<T, F>(&self, order: &str, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |txn| {
            Box::pin(async move { work(txn).await.map(|value| Box::new(value) as Value) })
        });
        self.group
            .sender
            .send(Job {
                order: order.to_owned(),
                work,
                reply,
            })
            .map_err(|_| stopped("the committer has stopped"))?;
        let value = answer
            .await
            .map_err(|_| stopped("the committer has stopped"))??;
        value
            .downcast::<T>()
            .map(|value| *value)
            .map_err(|_| Error::Corrupt("a group commit answered another type".into()))
    }
}

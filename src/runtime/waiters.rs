//! Callers waiting for an instance to end (`GET /api/v1/instances/{id}
//! ?wait=final`). A commit on this node that ends an instance wakes its
//! waiters at once; an instance ended by another node is seen by the
//! waiter's own re-read, at least every `RECHECK`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Error, Runtime};
use crate::store::InstanceRow;

/// How often a waiter reads its instance again when no commit on this
/// node woke it (the instance may end on another node).
const RECHECK: Duration = Duration::from_secs(1);

/// The longest wait one request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(120);

/// Waiters by instance id.
#[derive(Default)]
pub(super) struct Waiters {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

impl Waiters {
    /// A receiver that fires when `id` ends on this node.
    fn register(&self, id: &str) -> oneshot::Receiver<()> {
        let (sender, receiver) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            let senders = waiting.entry(id.to_owned()).or_default();
            senders.retain(|s| !s.is_closed());
            senders.push(sender);
        }
        receiver
    }

    /// Wakes everyone waiting for `id`.
    pub(super) fn ended(&self, id: &str) {
        let senders = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut waiting| waiting.remove(id));
        for sender in senders.into_iter().flatten() {
            let _ = sender.send(());
        }
    }

    /// Drops the waiters of `id` that went away.
    fn forget_gone(&self, id: &str) {
        if let Ok(mut waiting) = self.waiting.lock() {
            if let Some(senders) = waiting.get_mut(id) {
                senders.retain(|s| !s.is_closed());
                if senders.is_empty() {
                    waiting.remove(id);
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.lock().map(|w| w.len()).unwrap_or(usize::MAX)
    }
}

impl Runtime {
    /// Waits up to `timeout` (at most `MAX_WAIT`) for instance `id` of
    /// `tenant_id` to end, and returns it as it is then: ended, or still
    /// active when the time ran out. `None` when there is no such instance.
    ///
    /// # Errors
    /// A store error.
    pub async fn wait_final(
        &self,
        tenant_id: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<InstanceRow>, Error> {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        let outcome = loop {
            // Registered before the read, so an end committed between the
            // read and the wait still wakes it.
            let woken = self.waiters.register(id);
            let row = match self.store.instance(tenant_id, id).await {
                Ok(Some(row)) => row,
                Ok(None) => break Ok(None),
                Err(error) => break Err(error.into()),
            };
            let now = tokio::time::Instant::now();
            if row.status != crate::engine::Status::Active.as_str() || now >= deadline {
                break Ok(Some(row));
            }
            let _ = tokio::time::timeout((deadline - now).min(RECHECK), woken).await;
        };
        self.waiters.forget_gone(id);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_end_wakes_its_waiters_and_gone_waiters_are_forgotten() {
        let waiters = Waiters::default();
        let first = waiters.register("a");
        let second = waiters.register("a");
        let other = waiters.register("b");
        waiters.ended("a");
        assert!(first.await.is_ok());
        assert!(second.await.is_ok());
        drop(other);
        waiters.forget_gone("b");
        assert_eq!(waiters.len(), 0);
    }
}

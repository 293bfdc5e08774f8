//! Callers waiting for an instance to end (`GET /api/v1/instances/{id}
//! ?wait=final`), or to end with its last effects done (`?wait=settled`).
//! A commit on this node that ends an instance, or records one of its
//! effects done, wakes its waiters at once; what another node did is seen
//! by the waiter's own re-read, at least every `RECHECK`.

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

    /// Wakes everyone waiting for `id` (it ended, or an effect of it is done).
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
        self.wait_for(tenant_id, id, timeout, false)
            .await
            .map(|found| found.map(|(row, _)| row))
    }

    /// As `wait_final`, and also until the instance's last effects are
    /// done (a final state's message delivered): returns the instance and
    /// how many of its effects are still pending (0 unless the time ran out).
    ///
    /// # Errors
    /// A store error.
    pub async fn wait_settled(
        &self,
        tenant_id: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<(InstanceRow, u64)>, Error> {
        self.wait_for(tenant_id, id, timeout, true).await
    }

    async fn wait_for(
        &self,
        tenant_id: &str,
        id: &str,
        timeout: Duration,
        settled: bool,
    ) -> Result<Option<(InstanceRow, u64)>, Error> {
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
            let ended = row.status != crate::engine::Status::Active.as_str();
            let pending = if settled && ended {
                match self.store.pending_effects(id).await {
                    Ok(pending) => pending,
                    Err(error) => break Err(error.into()),
                }
            } else {
                0
            };
            let now = tokio::time::Instant::now();
            if (ended && pending == 0) || now >= deadline {
                break Ok(Some((row, pending)));
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

//! The background jobs, and the one place that runs them: `serve`, the
//! in-process test app and `settle` all go through `JOBS`. Each job is one
//! pass over a queue of due work (see `store::claim`); the loops run them
//! again on every commit and at least every tick. Payment checks, which
//! call WeChat Pay and may wait seconds for an answer, run in a loop of
//! their own so they never hold up timers and the outbox.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::watch;

use super::{Clock, Error, Runtime};
use crate::store;

/// One kind of background work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Start the instances of due schedules.
    Schedules,
    /// Fire due timers.
    Timers,
    /// Execute pending outbox effects.
    Outbox,
    /// Query payments and refunds whose callback has not come, expire
    /// unpaid orders, apply stored notifications.
    Payments,
}

impl Job {
    /// The queue a job works through, when it wakes by due time (payment
    /// checks run on their tick: minutes apart, and calls to WeChat Pay).
    fn queue(self) -> Option<store::claim::Queue> {
        match self {
            Job::Schedules => Some(store::claim::SCHEDULES),
            Job::Timers => Some(store::claim::TIMERS),
            Job::Outbox => Some(store::claim::OUTBOX),
            Job::Payments => None,
        }
    }
}

/// Every job, in the order one pass runs them.
pub const JOBS: [Job; 4] = [Job::Schedules, Job::Timers, Job::Outbox, Job::Payments];

/// What moving the manual clock did.
#[derive(Debug, Clone)]
pub struct ClockAdvance {
    pub from: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// The due times the clock stopped at on its way, in order.
    pub stops: usize,
}

/// Stops on the way of one advance, at most: a flow that re-arms a timer
/// every minute, advanced by a year, stops here and jumps to the end.
const MAX_STOPS: usize = 10_000;

impl Runtime {
    /// Runs one pass of `job`. Returns how much work it found.
    ///
    /// # Errors
    /// A store error.
    pub async fn run_job(&self, job: Job) -> Result<usize, Error> {
        match job {
            Job::Schedules => self.fire_due_schedules().await,
            Job::Timers => self.fire_due_timers().await,
            Job::Outbox => self.drain_outbox().await,
            Job::Payments => self.reconcile_payments().await,
        }
    }

    /// Runs `jobs` until `shutdown` turns true: again after every commit
    /// (`Runtime::wake`), when the next timer, retry or schedule of its
    /// queues comes due, and at least every `tick` (work another node
    /// committed). A failed pass is logged and tried again.
    pub async fn run_loop(
        self: Arc<Self>,
        jobs: &'static [Job],
        tick: std::time::Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let woken = if jobs.contains(&Job::Payments) {
            &self.wake_payments
        } else if jobs.contains(&Job::Outbox) {
            &self.wake_outbox
        } else {
            &self.wake
        };
        let queues: Vec<store::claim::Queue> = jobs.iter().filter_map(|job| job.queue()).collect();
        loop {
            // One read tells which queues have work now and when the next
            // comes due; a pass runs only the jobs with work.
            let now = self.now();
            let heads = match self.store.queue_heads(&queues, now).await {
                Ok(heads) => Some(heads),
                Err(error) => {
                    tracing::warn!("reading the queues' due times: {error}");
                    None
                }
            };
            let mut found = 0;
            for job in jobs {
                let due = match (job.queue(), &heads) {
                    (Some(queue), Some(heads)) => queues
                        .iter()
                        .position(|q| q.table == queue.table)
                        .and_then(|i| heads[i])
                        .is_some_and(|at| at <= now),
                    _ => true,
                };
                if !due {
                    continue;
                }
                match self.run_job(*job).await {
                    Ok(n) => found += n,
                    Err(error) => tracing::warn!("background job {job:?}: {error}"),
                }
            }
            // Sleep until the next due time, at most a tick; a commit wakes
            // the loop sooner. A pass that did work may have set new due
            // times (a retry) or left work due (more than a batch), so they
            // are read again. A pass that found nothing although a head was
            // due (rows another transaction holds) waits for a later one.
            let sleep = if found > 0 && !queues.is_empty() {
                let now = self.now();
                let heads = self.store.queue_heads(&queues, now).await.ok();
                self.until_next_due(heads.as_deref(), now, tick, true)
            } else {
                self.until_next_due(heads.as_deref(), now, tick, false)
            };
            tokio::select! {
                () = woken.notified() => {}
                () = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                }
            }
        }
    }

    /// How long a loop may sleep: until the earliest due time among its
    /// queues' heads (not at all if one is due already and `due_now`), at
    /// most `tick`. So a 1 s timer fires about
    /// when it is due, not up to a tick late. Under the manual clock time
    /// moves only when advanced, so the loop sleeps a tick.
    fn until_next_due(
        &self,
        heads: Option<&[Option<DateTime<Utc>>]>,
        now: DateTime<Utc>,
        tick: std::time::Duration,
        due_now: bool,
    ) -> std::time::Duration {
        if self.clock.manual().is_some() {
            return tick;
        }
        heads
            .unwrap_or_default()
            .iter()
            .flatten()
            .filter(|at| due_now || **at > now)
            .min()
            .map_or(tick, |at| {
                (*at - now).to_std().unwrap_or_default().min(tick)
            })
    }

    /// Spawns the background loops: schedules and timers, the outbox,
    /// payment checks, and lease renewal. They stop when `shutdown` turns true.
    pub fn spawn_jobs(
        self: &Arc<Self>,
        tick: std::time::Duration,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        // Timers and the outbox in loops of their own: a batch of
        // deliveries never waits for a batch of timers, nor the reverse.
        const FLOW: [Job; 2] = [Job::Schedules, Job::Timers];
        const OUTBOX: [Job; 1] = [Job::Outbox];
        const PAYMENTS: [Job; 1] = [Job::Payments];
        vec![
            tokio::spawn(self.clone().run_loop(&FLOW, tick, shutdown.clone())),
            tokio::spawn(self.clone().run_loop(&OUTBOX, tick, shutdown.clone())),
            tokio::spawn(self.clone().run_loop(&PAYMENTS, tick, shutdown.clone())),
            tokio::spawn(self.clone().renew_loop(shutdown.clone())),
        ]
    }

    /// Renews the leases of the work this process is running, every third
    /// of a lease, until `shutdown`.
    async fn renew_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let every = (self.lease / 3)
            .to_std()
            .unwrap_or_default()
            .max(std::time::Duration::from_millis(200));
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                }
            }
            if let Err(error) = self.store.renew_claims(self.now(), self.lease).await {
                tracing::warn!("renewing claims: {error}");
            }
        }
    }

    /// Runs every job until none finds work: what tests call after moving
    /// a manual clock, and what the clock advance does at each stop.
    ///
    /// # Errors
    /// A store error.
    pub async fn settle(&self) -> Result<(), Error> {
        for _ in 0..100 {
            let mut found = 0;
            for job in JOBS {
                found += self.run_job(job).await?;
            }
            if found == 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Moves a manual clock forward by `by`, stopping at every due time on
    /// the way (a timer, a retry, a schedule, a payment check) and running
    /// what is due there before going on, so a 7-day flow happens in the
    /// order it would in 7 days: a reminder after 24 h that arms another
    /// timer sees it fire at its own time, before the 7-day expiry.
    ///
    /// # Errors
    /// `ClockNotManual` on the system clock, `BadAdvance` for a step that
    /// is not forward or longer than 400 days, a store error.
    pub async fn advance_clock(&self, by: Duration) -> Result<ClockAdvance, Error> {
        let Some(clock) = self.clock.manual() else {
            return Err(Error::ClockNotManual);
        };
        if by <= Duration::zero() || by > Duration::days(400) {
            return Err(Error::BadAdvance(format!("{} s", by.num_seconds())));
        }
        let _one_at_a_time = self.advancing.lock().await;
        let from = clock.now();
        let target = from + by;
        self.settle().await?;
        let mut stops = 0;
        while stops < MAX_STOPS {
            match self.store.next_due_after(clock.now()).await? {
                Some(at) if at <= target => {
                    clock.move_to(at);
                    stops += 1;
                    self.settle().await?;
                }
                _ => break,
            }
        }
        clock.move_to(target);
        self.settle().await?;
        self.wake();
        Ok(ClockAdvance {
            from,
            now: clock.now(),
            stops,
        })
    }

    /// Whether the clock is a manual one (`serve --clock manual`).
    pub fn clock_is_manual(&self) -> bool {
        self.clock.manual().is_some()
    }
}

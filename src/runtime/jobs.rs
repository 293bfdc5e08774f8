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
        } else {
            &self.wake
        };
        loop {
            for job in jobs {
                if let Err(error) = self.run_job(*job).await {
                    tracing::warn!("background job {job:?}: {error}");
                }
            }
            let sleep = self.until_next_due(jobs, tick).await;
            tokio::select! {
                () = woken.notified() => {}
                () = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                }
            }
        }
    }

    /// How long a loop running `jobs` may sleep: until the earliest due
    /// time among its queues, at most `tick`. So a 1 s timer fires about
    /// when it is due, not up to a tick late. Under the manual clock time
    /// moves only when advanced, so the loop sleeps a tick.
    async fn until_next_due(&self, jobs: &[Job], tick: std::time::Duration) -> std::time::Duration {
        if self.clock.manual().is_some() {
            return tick;
        }
        let queues: Vec<store::claim::Queue> = jobs.iter().filter_map(|job| job.queue()).collect();
        let now = self.now();
        match self.store.next_due_in(&queues, now).await {
            Ok(Some(at)) => (at - now).to_std().unwrap_or_default().min(tick),
            Ok(None) => tick,
            Err(error) => {
                tracing::warn!("reading the next due time: {error}");
                tick
            }
        }
    }

    /// Spawns the background loops: schedules, timers and outbox in one,
    /// payment checks in another. They stop when `shutdown` turns true.
    pub fn spawn_jobs(
        self: &Arc<Self>,
        tick: std::time::Duration,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        const FLOW: [Job; 3] = [Job::Schedules, Job::Timers, Job::Outbox];
        const PAYMENTS: [Job; 1] = [Job::Payments];
        vec![
            tokio::spawn(self.clone().run_loop(&FLOW, tick, shutdown.clone())),
            tokio::spawn(self.clone().run_loop(&PAYMENTS, tick, shutdown.clone())),
        ]
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

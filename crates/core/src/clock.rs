use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// Where the runtime gets the time. The engine never reads it; the runtime
/// passes `now` in. Tests use `ManualClock`, so a 30-day flow runs in
/// milliseconds.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    /// The clock as one that moves only when told to, if it is one
    /// (`serve --clock manual`, tests).
    fn manual(&self) -> Option<&ManualClock> {
        None
    }
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    pub fn advance(&self, by: Duration) {
        if let Ok(mut now) = self.now.lock() {
            *now += by;
        }
    }

    /// Moves the clock to `at`; never backwards.
    pub fn move_to(&self, at: DateTime<Utc>) {
        if let Ok(mut now) = self.now.lock() {
            *now = (*now).max(at);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now.lock().map(|now| *now).unwrap_or_default()
    }

    fn manual(&self) -> Option<&ManualClock> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_forward_only_when_told() {
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::hours(24));
        assert_eq!(clock.now(), start + Duration::hours(24));
        clock.move_to(start);
        assert_eq!(clock.now(), start + Duration::hours(24), "never backwards");
        clock.move_to(start + Duration::days(7));
        assert_eq!(clock.now(), start + Duration::days(7));
        assert!(Clock::manual(&clock).is_some());
        assert!(SystemClock.manual().is_none());
    }
}

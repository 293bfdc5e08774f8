use chrono::Duration;
use serde::{Deserialize, Serialize};

/// How often and how far apart an effect is retried. Data, with a pure
/// `delay` function; written in the DSL as
/// `retry: { max_attempts: 5, initial: 1s, max: 5m, multiplier: 2 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RetryData", from = "RetryData")]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: u32,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial: Duration::seconds(1),
            max: Duration::minutes(5),
            multiplier: 2,
        }
    }
}

/// The stored form, in milliseconds.
#[derive(Serialize, Deserialize)]
struct RetryData {
    max_attempts: u32,
    initial_ms: i64,
    max_ms: i64,
    multiplier: u32,
}

impl From<RetryPolicy> for RetryData {
    fn from(policy: RetryPolicy) -> RetryData {
        RetryData {
            max_attempts: policy.max_attempts,
            initial_ms: policy.initial.num_milliseconds(),
            max_ms: policy.max.num_milliseconds(),
            multiplier: policy.multiplier,
        }
    }
}

impl From<RetryData> for RetryPolicy {
    fn from(data: RetryData) -> RetryPolicy {
        RetryPolicy {
            max_attempts: data.max_attempts,
            initial: Duration::milliseconds(data.initial_ms),
            max: Duration::milliseconds(data.max_ms),
            multiplier: data.multiplier,
        }
    }
}

impl RetryPolicy {
    /// The wait before the next try after `attempts` failed tries, or
    /// `None` when the attempts are used up.
    pub fn delay(&self, attempts: u32) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let factor = i32::try_from(self.multiplier.saturating_pow(attempts.saturating_sub(1)))
            .unwrap_or(i32::MAX);
        let delay = self.initial.checked_mul(factor).unwrap_or(self.max);
        Some(delay.min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_up_to_the_cap_then_stops() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1), Some(Duration::seconds(1)));
        assert_eq!(policy.delay(2), Some(Duration::seconds(2)));
        assert_eq!(policy.delay(4), Some(Duration::seconds(8)));
        assert_eq!(policy.delay(5), None);
        let long = RetryPolicy {
            max_attempts: 30,
            ..policy
        };
        assert_eq!(long.delay(20), Some(Duration::minutes(5)));
    }
}

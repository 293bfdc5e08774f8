use chrono::Duration;

/// How often and how far apart an effect is retried. Data, with a pure
/// `delay` function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

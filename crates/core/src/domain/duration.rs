use chrono::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{text}` is not a duration: write a number and a unit, such as 15m, 2h, 7d or 1h30m (units: s, m, h, d, w)")]
pub struct DurationError {
    pub text: String,
}

/// Parses the duration literals flow authors write: `0s`, `15m`, `2h`,
/// `7d`, `2w`, or several parts such as `1h30m`.
///
/// # Errors
/// Anything else, including an empty string, a missing unit or an overflow.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let error = || DurationError {
        text: text.to_owned(),
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(error());
    }
    let mut total = Duration::zero();
    let mut digits = String::new();
    for ch in trimmed.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let amount: i64 = digits.parse().map_err(|_| error())?;
        digits.clear();
        let part = match ch {
            's' => Duration::try_seconds(amount),
            'm' => Duration::try_minutes(amount),
            'h' => Duration::try_hours(amount),
            'd' => Duration::try_days(amount),
            'w' => Duration::try_weeks(amount),
            _ => None,
        }
        .ok_or_else(error)?;
        total = total.checked_add(&part).ok_or_else(error)?;
    }
    if !digits.is_empty() {
        return Err(error());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_durations() {
        assert_eq!(parse_duration("15m"), Ok(Duration::minutes(15)));
        assert_eq!(parse_duration("7d"), Ok(Duration::days(7)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::minutes(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::zero()));
    }

    #[test]
    fn refuses_missing_units_and_unknown_units() {
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("3y").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("-1d").is_err());
    }
}

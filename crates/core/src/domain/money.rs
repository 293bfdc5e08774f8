use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// An amount of renminbi held as integer fen (1 yuan = 100 fen).
///
/// Money is written by people as a decimal string in yuan (`"15.00"`) and
/// parsed with `rust_decimal`; it is never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money {
    fen: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("`{0}` is not a decimal amount in yuan such as \"15.00\"")]
    NotADecimal(String),
    #[error(
        "`{0}` has more than two decimal places: amounts are in yuan with at most fen precision"
    )]
    TooPrecise(String),
    #[error("`{0}` is negative")]
    Negative(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
}

impl Money {
    pub const ZERO: Money = Money { fen: 0 };

    pub fn from_fen(fen: i64) -> Money {
        Money { fen }
    }

    pub fn fen(self) -> i64 {
        self.fen
    }

    /// Parses a yuan amount such as `"15.00"`, `"15"` or `"0.5"`.
    ///
    /// # Errors
    /// Refuses anything that is not a non-negative decimal with at most two
    /// decimal places.
    pub fn parse_yuan(text: &str) -> Result<Money, MoneyError> {
        let trimmed = text.trim().trim_start_matches('¥');
        if trimmed.is_empty() || trimmed.contains(['e', 'E', '_', ' ']) {
            return Err(MoneyError::NotADecimal(text.to_owned()));
        }
        let value =
            Decimal::from_str(trimmed).map_err(|_| MoneyError::NotADecimal(text.to_owned()))?;
        if value.is_sign_negative() && !value.is_zero() {
            return Err(MoneyError::Negative(text.to_owned()));
        }
        if value.normalize().scale() > 2 {
            return Err(MoneyError::TooPrecise(text.to_owned()));
        }
        let fen = value
            .checked_mul(Decimal::ONE_HUNDRED)
            .and_then(|f| i64::try_from(f).ok())
            .ok_or_else(|| MoneyError::TooLarge(text.to_owned()))?;
        Ok(Money { fen })
    }

    /// The amount in yuan with two decimals, as people read it: `15.00`.
    pub fn to_yuan_string(self) -> String {
        Decimal::new(self.fen, 2).to_string()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "¥{}", self.to_yuan_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_yuan_into_fen() {
        assert_eq!(Money::parse_yuan("15.00").map(Money::fen), Ok(1500));
        assert_eq!(Money::parse_yuan("0.5").map(Money::fen), Ok(50));
        assert_eq!(Money::parse_yuan("¥86.50").map(Money::fen), Ok(8650));
        assert_eq!(Money::parse_yuan("7").map(Money::fen), Ok(700));
    }

    #[test]
    fn refuses_what_is_not_money() {
        assert!(matches!(
            Money::parse_yuan("abc"),
            Err(MoneyError::NotADecimal(_))
        ));
        assert!(matches!(
            Money::parse_yuan("1.005"),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            Money::parse_yuan("-1.00"),
            Err(MoneyError::Negative(_))
        ));
        assert!(matches!(
            Money::parse_yuan("1e3"),
            Err(MoneyError::NotADecimal(_))
        ));
        assert!(matches!(
            Money::parse_yuan(""),
            Err(MoneyError::NotADecimal(_))
        ));
    }

    #[test]
    fn displays_two_decimals() {
        assert_eq!(Money::from_fen(1500).to_string(), "¥15.00");
        assert_eq!(Money::from_fen(5).to_yuan_string(), "0.05");
    }

    proptest! {
        #[test]
        fn yuan_text_round_trips(fen in 0i64..10_000_000_000) {
            let money = Money::from_fen(fen);
            prop_assert_eq!(Money::parse_yuan(&money.to_yuan_string()), Ok(money));
        }
    }
}

//! The states of stored payments, refunds, outbox rows and kept events as
//! enums. They are the rows' column types (sea-orm `ActiveEnum`s stored as
//! text), so a row is read back parsed: a state no code knows is an error
//! when the row is read, never a default.

use super::Error;

macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, sea_orm::EnumIter, sea_orm::DeriveActiveEnum,
        )]
        #[sea_orm(rs_type = "String", db_type = "Text")]
        pub enum $name {
            $(#[sea_orm(string_value = $text)] $variant),*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The text stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }

            /// The stored text, parsed.
            ///
            /// # Errors
            /// `Corrupt` for a text no variant has.
            pub fn parse(text: &str) -> Result<$name, Error> {
                match text {
                    $($text => Ok($name::$variant),)*
                    other => Err(Error::Corrupt(format!(
                        "`{other}` is not a {} (one of: {})",
                        stringify!($name),
                        [$($text),*].join(", ")
                    ))),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_enum!(
    /// Where a payment is: `Creating` (recorded, the order not yet open at
    /// WeChat Pay), `Pending` (payable), then paid or not.
    PaymentState {
        Creating => "creating",
        Pending => "pending",
        Succeeded => "succeeded",
        Failed => "failed",
        Expired => "expired",
    }
);

stored_enum!(
    /// Where a refund is, following WeChat Pay's refund status.
    RefundStatus {
        Pending => "pending",
        Processing => "processing",
        Succeeded => "succeeded",
        Closed => "closed",
        Abnormal => "abnormal",
    }
);

stored_enum!(
    /// Where a correlated event is: kept until an instance takes it, or delivered.
    KeptEventStatus {
        Pending => "pending",
        Delivered => "delivered",
    }
);

stored_enum!(
    /// Where an outbox row is.
    OutboxStatus {
        Pending => "pending",
        Done => "done",
        Failed => "failed",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_and_an_unknown_one_is_an_error() {
        for state in PaymentState::ALL {
            assert_eq!(PaymentState::parse(state.as_str()).ok(), Some(*state));
        }
        for status in RefundStatus::ALL {
            assert_eq!(RefundStatus::parse(status.as_str()).ok(), Some(*status));
        }
        for status in OutboxStatus::ALL {
            assert_eq!(OutboxStatus::parse(status.as_str()).ok(), Some(*status));
        }
        for status in KeptEventStatus::ALL {
            assert_eq!(KeptEventStatus::parse(status.as_str()).ok(), Some(*status));
        }
        let error = PaymentState::parse("paid").err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("a stored row is corrupt: `paid` is not a PaymentState (one of: creating, pending, succeeded, failed, expired)")
        );
    }
}

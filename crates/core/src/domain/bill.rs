//! A medical bill: line items, the 医保 (medical insurance) split decided by
//! the insurance bureau's pre-settlement, and the hospital's add and reduce
//! adjustments. All integer fen. A bill that does not add up is refused.
//!
//! The invariants (WeChat 医保 mixed payment, `wechat-protocols` §3):
//!
//! ```text
//! Σ items = gov + personal + other + med_ins_cash   (what 医保 pre-settled)
//! total = Σ items + Σadd = gov + personal + other + med_ins_cash + Σadd
//! wechat_pay_cash = med_ins_cash + Σadd − Σreduce   (never negative)
//! so total = gov + personal + other + wechat_pay_cash + Σreduce
//! ```

use serde::{Deserialize, Serialize};

/// One line of the bill (a drug, an examination, the registration fee).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    pub name: String,
    /// Fen.
    pub amount: i64,
    #[serde(default = "one")]
    pub quantity: i64,
}

fn one() -> i64 {
    1
}

/// An amount the hospital adds to or takes off the self-paid part
/// (`FREIGHT`, `PRE_PAYMENT` 预交金, `HOSPITAL_REDUCE`…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adjustment {
    #[serde(rename = "type")]
    pub kind: String,
    /// Fen, positive.
    pub amount: i64,
}

/// The split decided by 医保 pre-settlement, in fen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsuranceSplit {
    /// 统筹基金: the pooled fund (`med_ins_gov_fee`).
    #[serde(default)]
    pub pooled_fund: i64,
    /// 个人账户: the personal account (`med_ins_self_fee`).
    #[serde(default)]
    pub personal_account: i64,
    /// Other funds and allowances (`med_ins_other_fee`).
    #[serde(default)]
    pub other_funds: i64,
    /// 自费: what insurance leaves to the patient (`med_ins_cash_fee`).
    #[serde(default)]
    pub self_pay: i64,
}

/// `order_type` values WeChat Pay's 医保 orders take; the scene must match.
pub const ORDER_TYPES: [&str; 11] = [
    "REG_PAY",
    "DIAG_PAY",
    "COVID_EXAM_PAY",
    "IN_HOSP_PAY",
    "PHARMACY_PAY",
    "INSURANCE_PAY",
    "INT_REG_PAY",
    "INT_RE_DIAG_PAY",
    "INT_RX_PAY",
    "COVID_ANTIGEN_PAY",
    "MED_PAY",
];

/// The insured person, as a 医保 order names them. The ID number itself is
/// never kept: on input it becomes `id_digest` (lowercase MD5 of the
/// upper-cased number), which is all WeChat Pay takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsuredPayer {
    pub name: String,
    pub id_digest: String,
}

/// What the insurance bureau's pre-settlement gave the hospital for this
/// bill: with it, o2flow makes a WeChat 医保 mixed order (both legs paid in
/// one step by the patient) instead of charging the self-paid part alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settlement {
    /// `REG_PAY`, `DIAG_PAY`, `PHARMACY_PAY`… (`ORDER_TYPES`).
    pub order_type: String,
    /// The city's 医保 code (`city_id`), e.g. `440300`.
    pub city_id: String,
    /// The hospital's code and name with the insurance bureau.
    pub med_inst_no: String,
    pub med_inst_name: String,
    /// The hospital's order number uploaded with the fee details (`serial_no`, 【6201】).
    pub serial_no: String,
    /// The bureau's pre-settlement ids.
    pub pay_order_id: String,
    pub pay_auth_no: String,
    pub payer: InsuredPayer,
    /// `longitude,latitude` of the patient, when the city asks for it.
    #[serde(default)]
    pub geo_location: Option<String>,
    /// The bureau's test environment.
    #[serde(default)]
    pub test_env: bool,
}

/// A bill as the HIS sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bill {
    pub items: Vec<LineItem>,
    /// Absent: everything is self-paid (no insurance).
    #[serde(default)]
    pub insurance: Option<InsuranceSplit>,
    #[serde(default)]
    pub add: Vec<Adjustment>,
    #[serde(default)]
    pub reduce: Vec<Adjustment>,
    /// Present when the insured part is paid through WeChat 医保 mixed payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Settlement>,
}

/// `mix_pay_type`: which legs the bill has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MixPayType {
    CashOnly,
    InsuranceOnly,
    CashAndInsurance,
}

/// A bill that adds up, with its derived amounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedBill {
    pub bill: Bill,
    /// `total_fee`: the items plus the additions.
    pub total: i64,
    pub split: InsuranceSplit,
    pub add_total: i64,
    pub reduce_total: i64,
    /// What the patient pays through WeChat Pay (`wechat_pay_cash_fee`).
    pub wechat_pay_cash: i64,
    pub mix_pay_type: MixPayType,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillError {
    #[error("the bill has no line items")]
    NoItems,
    #[error("{0} is negative ({1} fen): amounts are never negative")]
    Negative(String, i64),
    #[error("line item `{0}` has quantity {1}: quantities are at least 1")]
    BadQuantity(String, i64),
    #[error("the amounts are too large")]
    Overflow,
    #[error("the insurance split adds up to {split} fen, but the items total {total} fen: pooled fund + personal account + other funds + self-pay must equal the items")]
    SplitMismatch { total: i64, split: i64 },
    #[error(
        "the reductions ({reduce} fen) exceed the self-paid part plus additions ({available} fen)"
    )]
    ReduceTooLarge { reduce: i64, available: i64 },
    #[error("nothing to pay: the bill totals 0")]
    Empty,
    #[error("settlement: {0}")]
    Settlement(String),
}

/// Checks an 18-character resident ID number (17 digits, then a digit or
/// `X`, with the GB 11643 check digit) and gives its `id_digest`.
///
/// # Errors
/// Why the number is not one.
pub fn id_number_digest(id_number: &str) -> Result<String, String> {
    let number = id_number.trim().to_ascii_uppercase();
    let bytes = number.as_bytes();
    if bytes.len() != 18
        || !bytes[..17].iter().all(u8::is_ascii_digit)
        || !(bytes[17].is_ascii_digit() || bytes[17] == b'X')
    {
        return Err("`payer.id_number` must be 18 characters: 17 digits, then a digit or X".into());
    }
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = bytes[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize];
    if bytes[17] != check {
        return Err("`payer.id_number` has a wrong check digit: is it typed correctly?".into());
    }
    use md5::Digest;
    Ok(hex::encode(md5::Md5::digest(bytes)))
}

/// Reads a bill as people write it, amounts in yuan as quoted decimals
/// (`"15.00"`), converts them to fen and checks it.
///
/// # Errors
/// A message naming the field that is wrong, or the invariant that fails.
pub fn from_yuan_json(value: &serde_json::Value) -> Result<CheckedBill, String> {
    use serde_json::Value as J;
    fn to_fen(value: &mut J, path: &str) -> Result<(), String> {
        match value {
            J::String(text) => {
                let fen = super::Money::parse_yuan(text)
                    .map_err(|e| format!("`{path}`: {e}"))?
                    .fen();
                *value = J::from(fen);
                Ok(())
            }
            J::Null => Ok(()),
            other => Err(format!(
                "`{path}` is {other}: write yuan as a quoted decimal such as \"15.00\""
            )),
        }
    }
    let mut value = value.clone();
    // The ID number becomes its digest at once: the number is never stored.
    if let Some(payer) = value
        .get_mut("settlement")
        .and_then(|s| s.get_mut("payer"))
        .and_then(J::as_object_mut)
    {
        if let Some(number) = payer.remove("id_number") {
            let number = number
                .as_str()
                .ok_or("`settlement.payer.id_number` must be text")?;
            payer.insert("id_digest".into(), J::from(id_number_digest(number)?));
        }
    }
    if let Some(items) = value.get_mut("items").and_then(J::as_array_mut) {
        for (i, item) in items.iter_mut().enumerate() {
            if let Some(amount) = item.get_mut("amount") {
                to_fen(amount, &format!("items[{i}].amount"))?;
            }
        }
    }
    if let Some(insurance) = value.get_mut("insurance").and_then(J::as_object_mut) {
        for (name, amount) in insurance.iter_mut() {
            to_fen(amount, &format!("insurance.{name}"))?;
        }
    }
    for list in ["add", "reduce"] {
        if let Some(entries) = value.get_mut(list).and_then(J::as_array_mut) {
            for (i, entry) in entries.iter_mut().enumerate() {
                if let Some(amount) = entry.get_mut("amount") {
                    to_fen(amount, &format!("{list}[{i}].amount"))?;
                }
            }
        }
    }
    from_fen_json(&value)
}

/// Reads a bill whose amounts are already fen (as `from_yuan_json` leaves
/// it in an instance's input) and checks it.
///
/// # Errors
/// The shape is wrong, or an invariant fails.
pub fn from_fen_json(value: &serde_json::Value) -> Result<CheckedBill, String> {
    let bill: Bill =
        serde_json::from_value(value.clone()).map_err(|e| format!("not a bill: {e}"))?;
    bill.check().map_err(|e| e.to_string())
}

impl CheckedBill {
    /// The bill as people may see it (a page, an API answer): the insured
    /// person's name masked (`张*`) and the ID digest left out.
    #[must_use]
    pub fn masked(mut self) -> CheckedBill {
        if let Some(settlement) = self.bill.settlement.as_mut() {
            settlement.payer.name = super::Party::mask_name(&settlement.payer.name);
            settlement.payer.id_digest.clear();
        }
        self
    }
}

impl Bill {
    /// Checks the invariants and derives the amounts.
    ///
    /// # Errors
    /// The first rule the bill breaks, in words a billing clerk can act on.
    pub fn check(self) -> Result<CheckedBill, BillError> {
        if self.items.is_empty() {
            return Err(BillError::NoItems);
        }
        let mut items_total: i64 = 0;
        for item in &self.items {
            if item.amount < 0 {
                return Err(BillError::Negative(
                    format!("line item `{}`", item.name),
                    item.amount,
                ));
            }
            if item.quantity < 1 {
                return Err(BillError::BadQuantity(item.name.clone(), item.quantity));
            }
            let line = item
                .amount
                .checked_mul(item.quantity)
                .ok_or(BillError::Overflow)?;
            items_total = items_total.checked_add(line).ok_or(BillError::Overflow)?;
        }
        if items_total == 0 {
            return Err(BillError::Empty);
        }
        let sum = |list: &[Adjustment], what: &str| -> Result<i64, BillError> {
            list.iter().try_fold(0_i64, |acc, a| {
                if a.amount < 0 {
                    return Err(BillError::Negative(
                        format!("{what} `{}`", a.kind),
                        a.amount,
                    ));
                }
                acc.checked_add(a.amount).ok_or(BillError::Overflow)
            })
        };
        let add_total = sum(&self.add, "addition")?;
        let reduce_total = sum(&self.reduce, "reduction")?;
        let split = match self.insurance {
            Some(split) => {
                for (name, value) in [
                    ("the pooled fund", split.pooled_fund),
                    ("the personal account", split.personal_account),
                    ("other funds", split.other_funds),
                    ("the self-paid part", split.self_pay),
                ] {
                    if value < 0 {
                        return Err(BillError::Negative(name.into(), value));
                    }
                }
                split
            }
            // No insurance: the items are self-paid.
            None => InsuranceSplit {
                self_pay: items_total,
                ..InsuranceSplit::default()
            },
        };
        let total = items_total
            .checked_add(add_total)
            .ok_or(BillError::Overflow)?;
        let covered = [
            split.pooled_fund,
            split.personal_account,
            split.other_funds,
            split.self_pay,
            add_total,
        ]
        .into_iter()
        .try_fold(0_i64, i64::checked_add)
        .ok_or(BillError::Overflow)?;
        if covered != total || split.self_pay < 0 {
            return Err(BillError::SplitMismatch {
                total,
                split: covered,
            });
        }
        let available = split
            .self_pay
            .checked_add(add_total)
            .ok_or(BillError::Overflow)?;
        if reduce_total > available {
            return Err(BillError::ReduceTooLarge {
                reduce: reduce_total,
                available,
            });
        }
        let wechat_pay_cash = available - reduce_total;
        let insured = split.pooled_fund + split.personal_account + split.other_funds;
        let mix_pay_type = match (insured > 0, wechat_pay_cash > 0) {
            (false, _) => MixPayType::CashOnly,
            (true, false) => MixPayType::InsuranceOnly,
            (true, true) => MixPayType::CashAndInsurance,
        };
        if mix_pay_type == MixPayType::CashOnly && wechat_pay_cash == 0 {
            return Err(BillError::Empty);
        }
        if let Some(settlement) = &self.settlement {
            check_settlement(settlement, mix_pay_type)?;
        }
        Ok(CheckedBill {
            bill: self,
            total,
            split,
            add_total,
            reduce_total,
            wechat_pay_cash,
            mix_pay_type,
        })
    }
}

fn check_settlement(settlement: &Settlement, mix: MixPayType) -> Result<(), BillError> {
    let refuse = |why: String| Err(BillError::Settlement(why));
    if mix == MixPayType::CashOnly {
        return refuse("the bill has no insured part (pooled fund, personal account and other funds are 0): leave out `settlement` and it is paid as an ordinary order".into());
    }
    if !ORDER_TYPES.contains(&settlement.order_type.as_str()) {
        return refuse(format!(
            "`order_type` is `{}`: one of {}",
            settlement.order_type,
            ORDER_TYPES.join(", ")
        ));
    }
    for (name, value) in [
        ("city_id", &settlement.city_id),
        ("med_inst_no", &settlement.med_inst_no),
        ("med_inst_name", &settlement.med_inst_name),
        ("serial_no", &settlement.serial_no),
        ("pay_order_id", &settlement.pay_order_id),
        ("pay_auth_no", &settlement.pay_auth_no),
        ("payer.name", &settlement.payer.name),
    ] {
        if value.trim().is_empty() {
            return refuse(format!(
                "`{name}` is empty: the insurance pre-settlement gives it"
            ));
        }
    }
    let digest = &settlement.payer.id_digest;
    if digest.len() != 32
        || !digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return refuse(
            "`payer.id_digest` must be 32 lowercase hex digits (or give `payer.id_number`)".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(amount: i64) -> LineItem {
        LineItem {
            name: "药品".into(),
            amount,
            quantity: 1,
        }
    }

    fn bill(
        items: &[i64],
        split: Option<(i64, i64, i64, i64)>,
        add: &[i64],
        reduce: &[i64],
    ) -> Bill {
        let adjust = |list: &[i64], kind: &str| {
            list.iter()
                .map(|a| Adjustment {
                    kind: kind.into(),
                    amount: *a,
                })
                .collect()
        };
        Bill {
            items: items.iter().copied().map(item).collect(),
            insurance: split.map(|(g, p, o, c)| InsuranceSplit {
                pooled_fund: g,
                personal_account: p,
                other_funds: o,
                self_pay: c,
            }),
            add: adjust(add, "FREIGHT"),
            reduce: adjust(reduce, "PRE_PAYMENT"),
            settlement: None,
        }
    }

    #[test]
    fn a_prescription_splits_into_insurance_and_self_pay() {
        // ¥120.00 of drugs: ¥70 pooled fund, ¥20 personal account, ¥30 self-paid,
        // ¥5 delivery added, ¥10 pre-payment taken off: ¥25 through WeChat Pay.
        let checked = bill(&[8000, 4000], Some((7000, 2000, 0, 3000)), &[500], &[1000])
            .check()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(checked.total, 12500);
        assert_eq!(checked.wechat_pay_cash, 2500);
        assert_eq!(checked.mix_pay_type, MixPayType::CashAndInsurance);
    }

    #[test]
    fn bills_that_do_not_add_up_are_refused_with_the_numbers() {
        let wrong = bill(&[10000], Some((7000, 2000, 0, 500)), &[], &[]).check();
        assert_eq!(
            wrong,
            Err(BillError::SplitMismatch {
                total: 10000,
                split: 9500
            })
        );
        let too_much_off = bill(&[10000], Some((9000, 0, 0, 1000)), &[], &[1500]).check();
        assert_eq!(
            too_much_off,
            Err(BillError::ReduceTooLarge {
                reduce: 1500,
                available: 1000
            })
        );
        assert!(matches!(
            bill(&[-1, 5], None, &[], &[]).check(),
            Err(BillError::Negative(..))
        ));
        assert_eq!(bill(&[], None, &[], &[]).check(), Err(BillError::NoItems));
    }

    #[test]
    fn without_insurance_everything_is_cash_and_fully_insured_has_no_cash_leg() {
        let cash = bill(&[1500], None, &[], &[])
            .check()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (cash.wechat_pay_cash, cash.mix_pay_type),
            (1500, MixPayType::CashOnly)
        );
        let insured = bill(&[1500], Some((1000, 500, 0, 0)), &[], &[])
            .check()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (insured.wechat_pay_cash, insured.mix_pay_type),
            (0, MixPayType::InsuranceOnly)
        );
    }

    #[test]
    fn an_id_number_becomes_its_digest_and_is_not_kept() {
        assert_eq!(
            id_number_digest("11010519491231002x"),
            Ok("ae05564031c21338aa8a2e7266e7855c".to_owned())
        );
        assert!(
            id_number_digest("110105194912310021").is_err(),
            "check digit"
        );
        assert!(id_number_digest("1101051949").is_err());
        let checked = from_yuan_json(&serde_json::json!({
            "items": [{"name": "药", "amount": "100.00"}],
            "insurance": {"pooled_fund": "60.00", "personal_account": "20.00", "self_pay": "20.00"},
            "settlement": {"order_type": "PHARMACY_PAY", "city_id": "440300", "med_inst_no": "H44030000001",
                "med_inst_name": "市人民医院", "serial_no": "S1", "pay_order_id": "ORD1", "pay_auth_no": "AUTH1",
                "payer": {"name": "张三", "id_number": "11010519491231002X"}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let stored = serde_json::to_string(&checked.bill).unwrap_or_default();
        assert!(!stored.contains("11010519491231002X"), "{stored}");
        assert!(
            stored.contains("ae05564031c21338aa8a2e7266e7855c"),
            "{stored}"
        );
        let wrong_type = from_yuan_json(&serde_json::json!({
            "items": [{"name": "药", "amount": "100.00"}],
            "insurance": {"pooled_fund": "60.00", "self_pay": "40.00"},
            "settlement": {"order_type": "PAY", "city_id": "440300", "med_inst_no": "H1", "med_inst_name": "医院",
                "serial_no": "S1", "pay_order_id": "ORD1", "pay_auth_no": "AUTH1",
                "payer": {"name": "张三", "id_digest": "ae05564031c21338aa8a2e7266e7855c"}}
        }));
        assert!(
            wrong_type.as_ref().is_err_and(|e| e.contains("order_type")),
            "{wrong_type:?}"
        );
    }

    proptest! {
        /// Any generated bill is either refused, or keeps every invariant.
        #[test]
        fn every_accepted_bill_keeps_the_invariants(
            items in prop::collection::vec(-10i64..200_000, 0..6),
            split in prop::option::of((0i64..300_000, 0i64..100_000, 0i64..50_000, -10i64..300_000)),
            add in prop::collection::vec(0i64..5_000, 0..3),
            reduce in prop::collection::vec(0i64..50_000, 0..3),
        ) {
            if let Ok(c) = bill(&items, split, &add, &reduce).check() {
                let s = c.split;
                prop_assert_eq!(c.total, items.iter().sum::<i64>() + c.add_total);
                prop_assert_eq!(c.total, s.pooled_fund + s.personal_account + s.other_funds + s.self_pay + c.add_total);
                prop_assert_eq!(c.total, s.pooled_fund + s.personal_account + s.other_funds + c.wechat_pay_cash + c.reduce_total);
                prop_assert_eq!(c.wechat_pay_cash, s.self_pay + c.add_total - c.reduce_total);
                prop_assert!(c.wechat_pay_cash >= 0);
                prop_assert!([s.pooled_fund, s.personal_account, s.other_funds, s.self_pay].iter().all(|v| *v >= 0));
                match c.mix_pay_type {
                    MixPayType::CashOnly => prop_assert!(s.pooled_fund + s.personal_account + s.other_funds == 0 && c.wechat_pay_cash > 0),
                    MixPayType::InsuranceOnly => prop_assert_eq!(c.wechat_pay_cash, 0),
                    MixPayType::CashAndInsurance => prop_assert!(c.wechat_pay_cash > 0),
                }
            }
        }

        /// Splits built to add up are accepted.
        #[test]
        fn consistent_splits_are_accepted(
            gov in 0i64..100_000, personal in 0i64..100_000, other in 0i64..10_000,
            cash in 1i64..100_000, add in 0i64..5_000,
        ) {
            let total = gov + personal + other + cash;
            let checked = bill(&[total], Some((gov, personal, other, cash)), &[add], &[cash]).check();
            prop_assert!(checked.is_ok(), "{:?}", checked);
        }
    }

    #[test]
    fn the_boundaries_of_a_bill() {
        // A free line item, a free adjustment and a quantity above one are fine.
        let mut free = bill(&[0, 1000], None, &[0], &[0]);
        free.items[1].quantity = 2;
        assert_eq!(
            free.check().map(|c| c.wechat_pay_cash),
            Ok(2000),
            "a unit price times two"
        );
        // Insured by the personal account or by other funds alone: still mixed.
        for split in [(0, 100, 0, 900), (0, 0, 100, 900)] {
            let checked = bill(&[1000], Some(split), &[], &[]).check();
            assert_eq!(
                checked.map(|c| c.mix_pay_type),
                Ok(MixPayType::CashAndInsurance),
                "{split:?}"
            );
        }
        // An ID number is 17 digits and then a digit or X, checked before its check digit.
        assert!(id_number_digest("11010519491231002X").is_ok());
        for wrong in [
            "11010519491231002Y",
            "1101051949123100A2",
            "1101051949123100X",
        ] {
            let error = id_number_digest(wrong).err().unwrap_or_default();
            assert!(error.contains("must be 18 characters"), "{wrong}: {error}");
        }
    }
}

//! Money: a decimal amount with an ISO 4217 currency. Never a float.
//!
//! `Money` parses from `"1250000.00"` plus a currency, serialises amounts as strings
//! so no JSON or TOML reader can turn them into floats, and refuses to mix currencies.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Largest number of decimal places we accept (ISO 4217 minor units top out at 4).
pub(crate) const MAX_SCALE: u32 = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not an ISO 4217 currency code (three upper-case letters)")]
    UnknownCurrency(String),
    #[error("`{0}` is not a decimal amount")]
    NotADecimal(String),
    /// Well-formed, but more digits than a decimal holds exactly: refused, never rounded.
    #[error(
        "`{0}` has more digits than an amount can hold exactly (at most 28 significant digits, up to 79228162514264337593543950335)"
    )]
    TooManyDigits(String),
    #[error("amount {0} has more than {MAX_SCALE} decimal places")]
    TooPrecise(Decimal),
    #[error("amount {0} is negative")]
    Negative(Decimal),
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(CurrencyCode, CurrencyCode),
    /// A sum or product past the largest amount a decimal holds exactly
    /// (79228162514264337593543950335), or minor units past `i64`.
    #[error("the amount exceeds what can be computed exactly")]
    Overflow,
}

/// ISO 4217 alphabetic code, upper case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CurrencyCode([u8; 3]);

impl CurrencyCode {
    pub(crate) fn as_str(&self) -> &str {
        // Invariant: only ASCII upper-case letters get in (see `from_str`).
        std::str::from_utf8(&self.0).expect("currency code is ASCII")
    }
}

impl FromStr for CurrencyCode {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(CurrencyCode([b[0], b[1], b[2]]))
        } else {
            Err(MoneyError::UnknownCurrency(s.chars().take(16).collect()))
        }
    }
}
impl TryFrom<String> for CurrencyCode {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}
impl From<CurrencyCode> for String {
    fn from(c: CurrencyCode) -> String {
        c.as_str().to_owned()
    }
}
impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Debug for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CurrencyCode({})", self.as_str())
    }
}

/// A non-negative amount in one currency.
///
/// ```
/// use orderbridge::domain::Money;
/// let m = Money::parse("1250000.00", "CNY").unwrap();
/// assert_eq!(m.to_string(), "1250000.00 CNY");
/// assert!(Money::parse("1.5", "cny").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "RawMoney", into = "RawMoney")]
pub struct Money {
    amount: Decimal,
    currency: CurrencyCode,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMoney {
    amount: String,
    currency: String,
}

impl TryFrom<RawMoney> for Money {
    type Error = MoneyError;
    fn try_from(r: RawMoney) -> Result<Self, Self::Error> {
        Money::parse(&r.amount, &r.currency)
    }
}
impl From<Money> for RawMoney {
    fn from(m: Money) -> RawMoney {
        RawMoney { amount: m.amount.to_string(), currency: m.currency.to_string() }
    }
}

impl Money {
    /// # Errors
    /// `Negative` or `TooPrecise` when the amount is outside what an order may carry.
    pub(crate) fn new(amount: Decimal, currency: CurrencyCode) -> Result<Self, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative(amount));
        }
        if amount.scale() > MAX_SCALE {
            return Err(MoneyError::TooPrecise(amount));
        }
        Ok(Money { amount, currency })
    }

    /// Parses a plain decimal string (`"1250000.00"`, no exponent, no grouping).
    pub fn parse(amount: &str, currency: &str) -> Result<Self, MoneyError> {
        let currency = currency.parse()?;
        Money::new(parse_decimal(amount)?, currency)
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }
    pub(crate) fn currency(&self) -> CurrencyCode {
        self.currency
    }

    pub(crate) fn checked_add(&self, rhs: &Money) -> Result<Money, MoneyError> {
        if self.currency != rhs.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, rhs.currency));
        }
        let sum = self.amount.checked_add(rhs.amount).ok_or(MoneyError::Overflow)?;
        Money::new(sum, self.currency)
    }

    /// What is left of this amount once `rhs` is taken off it: never below zero (an
    /// overpayment leaves nothing owed).
    ///
    /// # Errors
    /// `CurrencyMismatch` when the currencies differ.
    pub fn left_after(&self, rhs: &Money) -> Result<Money, MoneyError> {
        if self.currency != rhs.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, rhs.currency));
        }
        let left = self.amount.checked_sub(rhs.amount).ok_or(MoneyError::Overflow)?.max(Decimal::ZERO);
        Money::new(left, self.currency)
    }

    /// The amount in the currency's minor unit (fen, cents; yen stay yen), as finance
    /// APIs such as Stripe take it.
    ///
    /// # Errors
    /// `TooPrecise` when the amount has more decimals than the currency has minor
    /// units (it would have to be rounded), `Overflow` past `i64`.
    ///
    /// ```
    /// use orderbridge::domain::Money;
    /// assert_eq!(Money::parse("1250000.50", "CNY").unwrap().to_minor_units().unwrap(), 125_000_050);
    /// assert_eq!(Money::parse("1500", "JPY").unwrap().to_minor_units().unwrap(), 1500);
    /// assert!(Money::parse("1.5", "JPY").unwrap().to_minor_units().is_err());
    /// ```
    pub fn to_minor_units(&self) -> Result<i64, MoneyError> {
        let exp = minor_unit_exponent(self.currency);
        let scaled = self.amount.checked_mul(Decimal::from(10i64.pow(exp))).ok_or(MoneyError::Overflow)?;
        if scaled.fract() != Decimal::ZERO {
            return Err(MoneyError::TooPrecise(self.amount));
        }
        i64::try_from(scaled.trunc()).map_err(|_| MoneyError::Overflow)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Decimal places of a currency's minor unit (ISO 4217): 2 unless listed.
pub(crate) fn minor_unit_exponent(c: CurrencyCode) -> u32 {
    match c.as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// Strict decimal parsing: digits, one optional dot, optional leading minus. No
/// exponents, no thousands separators, no surrounding blanks. Exact: a value with
/// more digits than a `Decimal` holds is `TooManyDigits`, never rounded.
pub(crate) fn parse_decimal(s: &str) -> Result<Decimal, MoneyError> {
    let ok = !s.is_empty()
        && s.len() <= 40
        && s.trim_start_matches('-').chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.matches('.').count() <= 1
        && s.trim_start_matches('-').chars().any(|c| c.is_ascii_digit())
        && !s[1..].contains('-');
    if !ok {
        return Err(MoneyError::NotADecimal(s.chars().take(40).collect()));
    }
    Decimal::from_str_exact(s).map_err(|_| MoneyError::TooManyDigits(s.chars().take(40).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_currency_and_amounts() {
        for c in ["cny", "CN", "CNYY", "C1Y", "", "人民币"] {
            assert!(c.parse::<CurrencyCode>().is_err(), "{c}");
        }
        for a in ["", "1e5", "1,000.00", " 1", "--1", "1.2.3", "0.00001", "-5", ".", "1-"] {
            assert!(Money::parse(a, "CNY").is_err(), "{a}");
        }
    }

    #[test]
    fn amounts_are_never_rounded() {
        let max = "79228162514264337593543950335";
        assert_eq!(parse_decimal(max).unwrap(), Decimal::MAX);
        assert_eq!(parse_decimal("12345678901234567.89").unwrap().to_string(), "12345678901234567.89");
        assert_eq!(parse_decimal("1.50").unwrap().to_string(), "1.50", "the scale is kept");
        // MAX / 10 still fits: its digits are those of MAX.
        assert_eq!(
            parse_decimal("7922816251426433759354395033.5").unwrap().to_string(),
            "7922816251426433759354395033.5"
        );
        for too_many in [
            "79228162514264337593543950336",
            "7922816251426433759354395033.6",
            "1.000000000000000000000000000001",
            "0.00000000000000000000000000001",
        ] {
            assert!(matches!(parse_decimal(too_many), Err(MoneyError::TooManyDigits(_))), "{too_many}");
        }
    }

    #[test]
    fn refuses_to_mix_currencies() {
        let a = Money::parse("1.00", "CNY").unwrap();
        let b = Money::parse("1.00", "USD").unwrap();
        assert!(matches!(a.checked_add(&b), Err(MoneyError::CurrencyMismatch(..))));
        assert_eq!(a.checked_add(&a).unwrap().to_string(), "2.00 CNY");
        assert!(matches!(a.left_after(&b), Err(MoneyError::CurrencyMismatch(..))));
    }

    #[test]
    fn what_is_left_never_goes_below_zero() {
        let m = |s: &str| Money::parse(s, "CNY").unwrap();
        assert_eq!(m("100.00").left_after(&m("30.00")).unwrap(), m("70.00"));
        assert_eq!(m("100.00").left_after(&m("130.00")).unwrap().amount(), Decimal::ZERO);
    }

    proptest! {
        #[test]
        fn money_round_trips_through_json(units in 0u64..10_000_000_000_000, scale in 0u32..=4, cur in "[A-Z]{3}") {
            let m = Money::new(Decimal::from_i128_with_scale(units as i128, scale), cur.parse().unwrap()).unwrap();
            let json = serde_json::to_string(&m).unwrap();
            let back: Money = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.amount().scale(), scale);
        }

        #[test]
        fn decimal_parser_never_panics(s in "\\PC{0,50}") {
            let _ = parse_decimal(&s);
        }
    }
}

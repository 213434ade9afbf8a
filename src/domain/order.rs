//! The canonical order: what every connector's mapping produces and every rule reads.
//!
//! Each field is a parsed type; serde goes through the same constructors, so a stored
//! record or an inbound payload cannot smuggle in an unchecked value. No I/O here.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::money::Money;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("must not be empty")]
    Empty,
    #[error("is longer than {0} characters")]
    TooLong(usize),
    #[error("contains control characters")]
    ControlCharacters,
    #[error("`{0}` is not an e-mail address")]
    BadEmail(String),
    #[error("`{0}` is not a phone number (digits, spaces, + - ( ) only)")]
    BadPhone(String),
    #[error("`{value}` is not one of: {allowed}")]
    NotInSet { value: String, allowed: &'static str },
    #[error("`{0}` is not an identity document number (letters, digits and - only)")]
    BadDocumentNumber(String),
    #[error("term of {0} months is outside 1..=600")]
    BadTerm(u32),
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Free text with a length limit counted in characters, so Chinese text is measured
/// as people read it, not in bytes. Leading and trailing blanks are trimmed.
macro_rules! bounded_text {
    ($(#[$m:meta])* $name:ident, $max:expr, multiline = $ml:expr) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);
        impl $name {
            pub const MAX_CHARS: usize = $max;
            pub fn as_str(&self) -> &str { &self.0 }
        }
        impl FromStr for $name {
            type Err = FieldError;
            fn from_str(s: &str) -> Result<Self, FieldError> {
                let t = s.trim();
                if t.is_empty() { return Err(FieldError::Empty); }
                if t.chars().count() > $max { return Err(FieldError::TooLong($max)); }
                let ml: bool = $ml;
                if t.chars().any(|c| c.is_control() && !(ml && (c == '\n' || c == '\t' || c == '\r'))) {
                    return Err(FieldError::ControlCharacters);
                }
                Ok($name(t.to_owned()))
            }
        }
        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(s: String) -> Result<Self, FieldError> { s.parse() }
        }
        impl From<$name> for String { fn from(v: $name) -> String { v.0 } }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{:?}", self.0) }
        }
    };
}

bounded_text!(
    /// A person's or company's name, e.g. `张伟`.
    PartyName, 200, multiline = false);
bounded_text!(
    /// The customer's need, as the salesperson wrote it.
    NeedDescription, 4000, multiline = true);
bounded_text!(
    /// A customer number in the CRM, a product code: short, single-line.
    Code, 100, multiline = false);

/// An e-mail address, checked for shape only (one `@`, a dotted domain, no blanks).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct Email(String);
impl Email {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}
impl FromStr for Email {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        let t = s.trim();
        if super::privacy::is_token(t) {
            return Ok(Email(t.to_owned()));
        }
        let ok = t.len() <= 254
            && !t.chars().any(|c| c.is_whitespace() || c.is_control())
            && matches!(t.split_once('@'), Some((l, d)) if !l.is_empty() && !d.contains('@')
                && d.contains('.') && !d.starts_with('.') && !d.ends_with('.'));
        if ok { Ok(Email(t.to_owned())) } else { Err(FieldError::BadEmail(clip(t))) }
    }
}
impl TryFrom<String> for Email {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        s.parse()
    }
}
impl From<Email> for String {
    fn from(v: Email) -> String {
        v.0
    }
}
impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A phone number as written (`+86 138 0013 8000`); at least six digits.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct Phone(String);
impl Phone {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}
impl FromStr for Phone {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        let t = s.trim();
        if super::privacy::is_token(t) {
            return Ok(Phone(t.to_owned()));
        }
        let ok = t.len() <= 32
            && t.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c))
            && t.chars().filter(char::is_ascii_digit).count() >= 6;
        if ok { Ok(Phone(t.to_owned())) } else { Err(FieldError::BadPhone(clip(t))) }
    }
}
impl TryFrom<String> for Phone {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        s.parse()
    }
}
impl From<Phone> for String {
    fn from(v: Phone) -> String {
        v.0
    }
}

/// Declares a closed, snake_case enum that parses from its wire name.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident = $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name { $($var),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            pub const NAMES: &'static str = concat!($($wire, " "),+);
            pub fn as_str(&self) -> &'static str { match self { $($name::$var => $wire),+ } }
        }
        impl FromStr for $name {
            type Err = FieldError;
            fn from_str(s: &str) -> Result<Self, FieldError> {
                match s { $($wire => Ok($name::$var),)+
                    _ => Err(FieldError::NotInSet { value: clip(s), allowed: $name::NAMES }) }
            }
        }
        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(s: String) -> Result<Self, FieldError> { s.parse() }
        }
        impl From<$name> for &'static str { fn from(v: $name) -> &'static str { v.as_str() } }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

wire_enum!(
    /// Who the customer is, legally.
    CustomerKind { Individual = "individual", Corporate = "corporate", Institution = "institution" });

wire_enum!(
/// Kind of identity document.
IdDocumentKind {
    CnResidentId = "cn_resident_id",
    Passport = "passport",
    HkMacauPermit = "hk_macau_permit",
    UnifiedSocialCreditCode = "unified_social_credit_code",
    Other = "other",
});

wire_enum!(
/// Product families a financial firm sells; the approval matrix and limits key on it.
ProductType {
    WealthManagement = "wealth_management",
    Loan = "loan",
    Insurance = "insurance",
    Fund = "fund",
    Deposit = "deposit",
    Brokerage = "brokerage",
    Advisory = "advisory",
});

wire_enum!(
/// Credit rating, best first. `Ord` follows declaration order, so `AAA < BBB`
/// means "better than": use [`CreditRating::at_least`] in rules.
CreditRating {
    Aaa = "AAA", Aa = "AA", A = "A", Bbb = "BBB", Bb = "BB", B = "B", Ccc = "CCC", Cc = "CC", C = "C", D = "D",
});

/// An identity document. The number is checked for shape here; checksum rules such
/// as the Chinese resident ID's are screening rules, so a typo is flagged for a
/// person to look at rather than bounced back to the CRM.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdDocument {
    #[serde(rename = "type")]
    pub(crate) kind: IdDocumentKind,
    pub(crate) number: DocumentNumber,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct DocumentNumber(String);
impl DocumentNumber {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}
impl FromStr for DocumentNumber {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        let t = s.trim();
        if super::privacy::is_token(t) {
            return Ok(DocumentNumber(t.to_owned()));
        }
        if !t.is_empty() && t.len() <= 64 && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            Ok(DocumentNumber(t.to_owned()))
        } else {
            Err(FieldError::BadDocumentNumber(clip(t)))
        }
    }
}
impl TryFrom<String> for DocumentNumber {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        s.parse()
    }
}
impl From<DocumentNumber> for String {
    fn from(v: DocumentNumber) -> String {
        v.0
    }
}

impl IdDocument {
    /// For a Chinese resident ID: 18 characters, ISO 7064 MOD 11-2 check character.
    /// Other kinds have no checksum we know, so they pass.
    pub(crate) fn checksum_ok(&self) -> bool {
        match self.kind {
            IdDocumentKind::CnResidentId => cn_resident_id_ok(self.number.as_str()),
            _ => true,
        }
    }
}

/// GB 11643-1999: 17 digits and a check character `0-9` or `X`.
pub(crate) fn cn_resident_id_ok(n: &str) -> bool {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let b = n.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = b[..17].iter().zip(W).map(|(d, w)| u32::from(d - b'0') * w).sum();
    b[17].to_ascii_uppercase() == CHECK[(sum % 11) as usize]
}

/// Service term in months, 1 to 600.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub(crate) struct TermMonths(u32);
impl TermMonths {
    pub(crate) fn get(self) -> u32 {
        self.0
    }
}
impl TryFrom<u32> for TermMonths {
    type Error = FieldError;
    fn try_from(n: u32) -> Result<Self, FieldError> {
        if (1..=600).contains(&n) { Ok(TermMonths(n)) } else { Err(FieldError::BadTerm(n)) }
    }
}
impl From<TermMonths> for u32 {
    fn from(t: TermMonths) -> u32 {
        t.0
    }
}

wire_enum!(
    /// Language for mail and pages.
    Locale { ZhCn = "zh-CN", En = "en" });

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// The customer's number in the source system.
    pub id: Code,
    pub name: PartyName,
    pub(crate) kind: CustomerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id_document: Option<IdDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) credit_rating: Option<CreditRating>,
    /// Whether the source system says KYC is complete; absent means "not verified".
    #[serde(default)]
    pub(crate) kyc_verified: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) email: Option<Email>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) phone: Option<Phone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) locale: Option<Locale>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    #[serde(rename = "type")]
    pub(crate) kind: ProductType,
    pub code: Code,
}

/// The canonical order, as mapped from a source system.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    pub customer: Customer,
    pub product: Product,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) need: Option<NeedDescription>,
    pub amount: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) term_months: Option<TermMonths>,
    /// The salesperson who owns the order (segregation of duties keys on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sales_owner: Option<Email>,
    /// When the source system says the order was placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) placed_at: Option<DateTime<Utc>>,
}

/// Canonical field paths, as mapping files and the order template name them.
pub(crate) const CANONICAL_FIELDS: &[&str] = &[
    "customer.id",
    "customer.name",
    "customer.kind",
    "customer.id_document.type",
    "customer.id_document.number",
    "customer.credit_rating",
    "customer.kyc_verified",
    "customer.email",
    "customer.phone",
    "customer.locale",
    "product.type",
    "product.code",
    "need",
    "amount.amount",
    "amount.currency",
    "term_months",
    "sales_owner",
    "placed_at",
];

impl Order {
    /// Whether the canonical field at `path` holds a value (for the order template).
    pub(crate) fn has_field(&self, path: &str) -> bool {
        let c = &self.customer;
        match path {
            "customer.id_document" | "customer.id_document.type" | "customer.id_document.number" => {
                c.id_document.is_some()
            }
            "customer.credit_rating" => c.credit_rating.is_some(),
            "customer.email" => c.email.is_some(),
            "customer.phone" => c.phone.is_some(),
            "customer.locale" => c.locale.is_some(),
            "need" => self.need.is_some(),
            "term_months" => self.term_months.is_some(),
            "sales_owner" => self.sales_owner.is_some(),
            "placed_at" => self.placed_at.is_some(),
            _ => CANONICAL_FIELDS.contains(&path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resident_id_checksum() {
        assert!(cn_resident_id_ok("11010519491231002X"));
        assert!(cn_resident_id_ok("11010519491231002x"));
        assert!(!cn_resident_id_ok("110105194912310021"));
        assert!(!cn_resident_id_ok("1101051949123100"));
        assert!(!cn_resident_id_ok("11010519491231002Ｘ"));
    }

    #[test]
    fn text_limits_count_characters_not_bytes() {
        let name: String = "张".repeat(200);
        assert!(name.parse::<PartyName>().is_ok(), "200 Chinese characters fit");
        assert_eq!(format!("{name}张").parse::<PartyName>(), Err(FieldError::TooLong(200)));
        assert_eq!("  ".parse::<PartyName>(), Err(FieldError::Empty));
        assert!("多行\n描述".parse::<NeedDescription>().is_ok());
        assert!("a\nb".parse::<PartyName>().is_err());
    }

    #[test]
    fn ratings_compare_best_first() {
        assert!(CreditRating::Aa <= CreditRating::A);
        assert!(CreditRating::Bb > CreditRating::Bbb);
        assert!(CreditRating::Bbb <= CreditRating::Bbb);
    }

    #[test]
    fn emails_and_phones() {
        assert!("li.na@bank.example".parse::<Email>().is_ok());
        for bad in ["li.na", "@bank.example", "a@b", "a b@c.d", "a@@b.c", "a@.b"] {
            assert!(bad.parse::<Email>().is_err(), "{bad}");
        }
        assert!("+86 138 0013 8000".parse::<Phone>().is_ok());
        assert!("call me".parse::<Phone>().is_err());
    }

    proptest! {
        #[test]
        fn text_round_trips(s in "[^\\p{Cc}]{1,150}") {
            if let Ok(n) = s.parse::<PartyName>() {
                let json = serde_json::to_string(&n).unwrap();
                prop_assert_eq!(serde_json::from_str::<PartyName>(&json).unwrap(), n);
            }
        }
        #[test]
        fn enums_round_trip(i in 0usize..10) {
            let r = CreditRating::ALL[i];
            prop_assert_eq!(r.as_str().parse::<CreditRating>().unwrap(), r);
        }
    }
}

//! Identifiers: order ids, connector ids, external ids and the external reference
//! that invariant 4 keys on. All parse; none is a bare `String` past the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("`{0}` is not an order id (expected ord_ followed by 32 hex digits)")]
    BadOrderId(String),
    #[error("connector id `{0}` must be 1-64 characters of a-z, 0-9, `-` or `_`, starting with a letter")]
    BadConnectorId(String),
    #[error("external id must be 1-200 printable characters without control characters")]
    BadExternalId,
}

/// Our id of an order: a UUIDv7 (time-ordered, so store keys append), shown as `ord_…`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId(Uuid);

/// A UUIDv7 for `ms` (milliseconds since 1970): the time in its first 48 bits, 74
/// random bits from the operating system in the rest.
pub(crate) fn uuid_v7_at(ms: u64) -> Uuid {
    uuid::Builder::from_unix_timestamp_millis(ms, &random_bytes()).into_uuid()
}

/// A UUIDv7 for now (request ids, file names).
pub(crate) fn uuid_v7_now() -> Uuid {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    uuid_v7_at(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Ten bytes from the operating system's random source, drawn a few thousand at a
/// time per thread: one `getrandom` call per id (two per webhook: the request's and
/// the order's) showed in intake profiles. Bytes handed out are wiped from the pool.
fn random_bytes() -> [u8; 10] {
    use ring::rand::SecureRandom as _;
    const POOL: usize = 4000;
    thread_local!(static RANDOM: std::cell::RefCell<(Box<[u8; POOL]>, usize)> =
        std::cell::RefCell::new((Box::new([0; POOL]), POOL)));
    RANDOM.with_borrow_mut(|(pool, used)| {
        if *used + 10 > POOL {
            ring::rand::SystemRandom::new().fill(&mut pool[..]).expect("the operating system gives random bytes");
            *used = 0;
        }
        let taken = &mut pool[*used..*used + 10];
        let out: [u8; 10] = (*taken).try_into().expect("ten bytes");
        taken.fill(0);
        *used += 10;
        out
    })
}

impl OrderId {
    pub fn new_v7() -> Self {
        OrderId(uuid_v7_now())
    }

    /// A new id for an order created at `at` (the daemon's clock, which tests control):
    /// its first 48 bits are `at` in ms, the rest random.
    pub(crate) fn at(at: chrono::DateTime<chrono::Utc>) -> Self {
        OrderId(uuid_v7_at(u64::try_from(at.timestamp_millis()).unwrap_or(0)))
    }

    /// An id below every order created at `at` or later (and above those created
    /// before): a scan's starting point after which the period's orders come.
    pub(crate) fn before(at: chrono::DateTime<chrono::Utc>) -> Self {
        let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0).to_be_bytes();
        let mut b = [0; 16];
        b[..6].copy_from_slice(&ms[2..]);
        OrderId::from_bytes(b)
    }

    /// When the order was created (from the id).
    pub(crate) fn created_ms(&self) -> i64 {
        let b = self.as_bytes();
        i64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    /// The id of no order: owns the daemon's own effects (digests).
    pub(crate) fn nil() -> Self {
        OrderId::from_bytes([0; 16])
    }

    pub(crate) fn is_nil(&self) -> bool {
        self.as_bytes() == &[0; 16]
    }

    pub(crate) fn from_bytes(b: [u8; 16]) -> Self {
        OrderId(Uuid::from_bytes(b))
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}
impl FromStr for OrderId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdError::BadOrderId(s.chars().take(48).collect());
        let hex = s.strip_prefix("ord_").ok_or_else(bad)?;
        if hex.len() != 32 {
            return Err(bad());
        }
        Uuid::try_parse(hex).map(OrderId).map_err(|_| bad())
    }
}
impl TryFrom<String> for OrderId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}
impl From<OrderId> for String {
    fn from(id: OrderId) -> String {
        id.to_string()
    }
}
impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ord_{}", self.0.simple())
    }
}
impl fmt::Debug for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident, $check:expr, $err:expr) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);
        impl $name {
            pub fn as_str(&self) -> &str { &self.0 }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let check: fn(&str) -> bool = $check;
                if check(s) { Ok($name(s.to_owned())) } else { Err($err(s)) }
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> { s.parse() }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String { id.0 }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{:?}", self.0) }
        }
    };
}

string_id!(
    /// The id of a connector instance: the file stem of `connectors/<id>.toml`.
    ConnectorId,
    |s| {
        !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    },
    |s: &str| IdError::BadConnectorId(s.chars().take(64).collect())
);

string_id!(
    /// The id an external system gives its record (a CRM deal id, an ERP order name).
    ExternalId,
    |s| !s.is_empty() && s.chars().count() <= 200 && !s.chars().any(char::is_control),
    |_s: &str| IdError::BadExternalId
);

/// Invariant 4's key: one order per (connector, external id).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct ExternalRef {
    pub connector: ConnectorId,
    pub id: ExternalId,
}

impl ExternalRef {
    /// Store key: connector, a NUL (never in a connector id), the external id.
    pub(crate) fn key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.connector.as_str().len() + 1 + self.id.as_str().len());
        k.extend_from_slice(self.connector.as_str().as_bytes());
        k.push(0);
        k.extend_from_slice(self.id.as_str().as_bytes());
        k
    }
}

impl fmt::Display for ExternalRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.connector, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn new_ids_are_v7_carry_their_time_and_never_repeat_across_pool_refills() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-07T08:00:00.123Z").unwrap().to_utc();
        // 1 000 ids take the pool (400 ids) through two refills.
        let ids: std::collections::HashSet<OrderId> = (0..1000).map(|_| OrderId::at(at)).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.0.get_version_num(), 7);
            assert_eq!(id.created_ms(), at.timestamp_millis());
        }
        // The random part is not a constant: some byte of it differs between two ids.
        let [a, b] = [OrderId::at(at), OrderId::at(at)].map(|i| i.0.as_bytes()[6..].to_vec());
        assert_ne!(a, b);
        let now = uuid_v7_now();
        assert_eq!(now.get_version_num(), 7);
        assert!(OrderId(now).created_ms() >= at.timestamp_millis());
    }

    #[test]
    fn connector_ids() {
        assert!("demo-crm".parse::<ConnectorId>().is_ok());
        for bad in ["", "Demo", "1crm", "a b", "a/b", "ü"] {
            assert!(bad.parse::<ConnectorId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn external_ids_accept_chinese_and_reject_control() {
        assert!("订单-10042".parse::<ExternalId>().is_ok());
        assert!("a\nb".parse::<ExternalId>().is_err());
        assert!("".parse::<ExternalId>().is_err());
    }

    proptest! {
        #[test]
        fn order_id_round_trips(b in any::<[u8; 16]>()) {
            let id = OrderId::from_bytes(b);
            prop_assert_eq!(id.to_string().parse::<OrderId>().unwrap(), id);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<OrderId>(&json).unwrap(), id);
        }

        #[test]
        fn order_id_parser_never_panics(s in "\\PC{0,60}") { let _ = s.parse::<OrderId>(); }

        #[test]
        fn external_id_round_trips(s in "[^\\p{Cc}]{1,100}") {
            let id: ExternalId = s.parse().unwrap();
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<ExternalId>(&json).unwrap(), id);
        }
    }
}

//! Row encoding: JSON (so rows stay readable by any tool once decoded), compressed
//! with LZ4 before it reaches sled. sled's cost grows with the bytes it writes
//! (it rewrites whole nodes as it consolidates them), and JSON compresses about 3:1.
//!
//! Format: `0x01` then an LZ4 block with its length prepended. A row starting with
//! `{` or `[` is plain JSON and is read as such.

use serde::Serialize;
use serde::de::DeserializeOwned;

const LZ4: u8 = 0x01;

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let json = serde_json::to_vec(v).expect("records serialise");
    let mut out = Vec::with_capacity(json.len() / 2 + 8);
    out.push(LZ4);
    out.extend_from_slice(&lz4_flex::block::compress_prepend_size(&json));
    out
}

/// # Errors
/// A message naming what is wrong with the row (unknown format, bad compression, JSON).
pub fn decode<T: DeserializeOwned>(row: &[u8]) -> Result<T, String> {
    serde_json::from_slice(&json(row)?).map_err(|e| e.to_string())
}

/// The JSON text of a row.
///
/// # Errors
/// An unknown format or bad compression.
pub fn json(row: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    match row.first() {
        Some(&LZ4) => lz4_flex::block::decompress_size_prepended(&row[1..])
            .map(std::borrow::Cow::Owned)
            .map_err(|e| format!("lz4: {e}")),
        Some(b'{' | b'[') => Ok(std::borrow::Cow::Borrowed(row)),
        _ => Err("unknown row format".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rows_round_trip(v in proptest::collection::vec("\\PC{0,40}", 0..20)) {
            prop_assert_eq!(decode::<Vec<String>>(&encode(&v)).unwrap(), v);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode::<serde_json::Value>(&bytes);
        }
    }

    #[test]
    fn plain_json_rows_are_still_read() {
        assert_eq!(decode::<Vec<u32>>(b"[1,2]").unwrap(), vec![1, 2]);
    }
}

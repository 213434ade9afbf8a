//! LZ4 block compression against a dictionary prepared once.
//!
//! `lz4_flex` compresses against a dictionary by hashing the whole dictionary into a
//! fresh, zeroed table on every call: for a 7 KiB dictionary and rows of a few
//! hundred bytes that was most of the cost of storing a row (a tenth of the
//! daemon's CPU under `scripts/bench.sh`). Here the dictionary's table is built
//! once and copied for each row. The output is a standard LZ4 block (the
//! dictionary as the history before the row), read back by `lz4_flex`'s checked
//! decoder, so rows written by either compressor are the same format.
//!
//! A greedy compressor as LZ4's own "fast" mode: a 4-byte hash of each position,
//! the last position seen with that hash as the candidate, a match extended both
//! ways. The block format's end rules are kept: the last 5 bytes are literals, and
//! no match starts within the last 12.

use std::cell::RefCell;
use std::sync::OnceLock;

const HASH_LOG: u32 = 12;
const TABLE: usize = 1 << HASH_LOG;
/// No position has this hash yet.
const EMPTY: u32 = u32::MAX;
const MIN_MATCH: usize = 4;
/// The last bytes of a block are literals.
const LAST_LITERALS: usize = 5;
/// No match starts in the last bytes of a block.
const MF_LIMIT: usize = 12;
const MAX_OFFSET: usize = u16::MAX as usize;

/// A dictionary with its hash table, positions counted from the dictionary's start.
pub struct Prepared {
    dict: &'static [u8],
    table: Box<[u32; TABLE]>,
}

impl Prepared {
    /// `dict` must be at most 64 KiB (an LZ4 offset reaches no further back).
    pub fn new(dict: &'static [u8]) -> Prepared {
        assert!(dict.len() <= MAX_OFFSET, "an LZ4 dictionary is at most 64 KiB");
        let mut table = Box::new([EMPTY; TABLE]);
        for i in 0..dict.len().saturating_sub(MIN_MATCH - 1) {
            table[hash_in(read_u32(dict, i), HASH_LOG)] = position(i);
        }
        Prepared { dict, table }
    }

    /// Compresses `input` against the dictionary into `out`: its length (u32,
    /// little-endian) then the block, as `lz4_flex::block::compress_prepend_size_with_dict`.
    pub fn compress_prepend_size(&self, input: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&u32::try_from(input.len()).expect("a row is under 4 GiB").to_le_bytes());
        SCRATCH.with(|scratch| {
            let (buf, table) = &mut *scratch.borrow_mut();
            buf.clear();
            buf.extend_from_slice(self.dict);
            buf.extend_from_slice(input);
            // The row's own positions go to a table sized to the row, cleared for it;
            // the dictionary's table is only read.
            let log = (usize::BITS - input.len().leading_zeros()).clamp(6, HASH_LOG);
            table.clear();
            table.resize(1 << log, EMPTY);
            block(buf, self.dict.len(), &self.table, (table, log), out);
        });
    }
}

thread_local! {
    /// The dictionary followed by the row, and the row's hash table.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The prepared dictionary for `dict`, built on first use.
pub fn prepared(cell: &'static OnceLock<Prepared>, dict: &'static [u8]) -> &'static Prepared {
    cell.get_or_init(|| Prepared::new(dict))
}

/// Compresses `buf[start..]`, with `buf[..start]` (the dictionary, its positions in
/// `dict_table`) as history, into `out`; `row` is the row's own table and its size.
fn block(buf: &[u8], start: usize, dict_table: &[u32; TABLE], row: (&mut [u32], u32), out: &mut Vec<u8>) {
    let (row_table, row_log) = row;
    let end = buf.len();
    let mut anchor = start;
    if end - start > MF_LIMIT {
        let match_limit = end - LAST_LITERALS;
        let last_start = end - MF_LIMIT;
        let usable =
            |c: u32, i: usize, seq: u32| c != EMPTY && i - c as usize <= MAX_OFFSET && read_u32(buf, c as usize) == seq;
        let mut i = start;
        while i < last_start {
            let seq = read_u32(buf, i);
            let h = hash_in(seq, row_log);
            let in_row = row_table[h];
            row_table[h] = position(i);
            let c = if usable(in_row, i, seq) {
                in_row as usize
            } else {
                let in_dict = dict_table[hash_in(seq, HASH_LOG)];
                if !usable(in_dict, i, seq) {
                    i += 1;
                    continue;
                }
                in_dict as usize
            };
            // Back over equal bytes not yet emitted, then forward as far as allowed.
            let (mut s, mut c) = (i, c);
            while s > anchor && c > 0 && buf[s - 1] == buf[c - 1] {
                s -= 1;
                c -= 1;
            }
            let mut len = MIN_MATCH + (i - s);
            while s + len < match_limit && buf[c + len] == buf[s + len] {
                len += 1;
            }
            sequence(out, &buf[anchor..s], s - c, len);
            i = s + len;
            anchor = i;
            if i < last_start {
                row_table[hash_in(read_u32(buf, i - 2), row_log)] = position(i - 2);
            }
        }
    }
    // The last literals.
    let literals = &buf[anchor..end];
    out.push(nibble(literals.len()) << 4);
    if literals.len() >= 15 {
        length(out, literals.len() - 15);
    }
    out.extend_from_slice(literals);
}

/// One sequence: literals, then a match `offset` back of `len` bytes.
fn sequence(out: &mut Vec<u8>, literals: &[u8], offset: usize, len: usize) {
    let ml = len - MIN_MATCH;
    out.push((nibble(literals.len()) << 4) | nibble(ml));
    if literals.len() >= 15 {
        length(out, literals.len() - 15);
    }
    out.extend_from_slice(literals);
    out.extend_from_slice(&u16::try_from(offset).expect("offsets are checked").to_le_bytes());
    if ml >= 15 {
        length(out, ml - 15);
    }
}

fn nibble(n: usize) -> u8 {
    u8::try_from(n.min(15)).expect("at most 15")
}

/// A length's remainder past 15: bytes of 255, then the rest.
fn length(out: &mut Vec<u8>, mut n: usize) {
    while n >= 255 {
        out.push(255);
        n -= 255;
    }
    out.push(u8::try_from(n).expect("under 255"));
}

fn read_u32(buf: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(buf[i..i + 4].try_into().expect("four bytes"))
}

/// The hash of four bytes in a table of `2^log` entries.
fn hash_in(seq: u32, log: u32) -> usize {
    (seq.wrapping_mul(2_654_435_761) >> (32 - log)) as usize
}

fn position(i: usize) -> u32 {
    // A row over 4 GiB is refused before (`compress_prepend_size`).
    u32::try_from(i).unwrap_or(EMPTY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    static DICT: &[u8] = include_bytes!("rows.dict");

    fn round_trip(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Prepared::new(DICT).compress_prepend_size(input, &mut out);
        let back = lz4_flex::block::decompress_size_prepended_with_dict(&out, DICT).expect("lz4_flex reads it");
        assert_eq!(back, input);
        out
    }

    proptest! {
        #[test]
        fn lz4_flex_reads_what_it_writes(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            round_trip(&input);
        }

        #[test]
        fn repetitive_rows_round_trip(parts in proptest::collection::vec(("[a-z_\":{},0-9]{0,12}", 1usize..40), 0..40)) {
            let input: String = parts.iter().map(|(p, n)| p.repeat(*n)).collect();
            round_trip(input.as_bytes());
        }
    }

    #[test]
    fn edges_round_trip() {
        for n in 0..40 {
            round_trip(&vec![b'a'; n]);
            round_trip(&DICT[..n]);
        }
        // Long literal and match lengths, and offsets at the 64 KiB limit.
        let noise: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        round_trip(&noise);
        let mut far = noise[..70_000].to_vec();
        far.extend_from_slice(&noise[..70_000]);
        round_trip(&far);
        round_trip(&[b'x'; 100_000]);
    }

    #[test]
    fn rows_compress_as_well_as_lz4_flex_does() {
        let row = &DICT[1000..2500];
        let ours = round_trip(row).len();
        let theirs = lz4_flex::block::compress_prepend_size_with_dict(row, DICT).len();
        assert!(ours <= theirs + theirs / 10, "{ours} B against lz4_flex's {theirs} B");
        assert!(ours * 10 < row.len(), "a row the dictionary holds is mostly one match: {ours} B");
    }
}

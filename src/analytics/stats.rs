//! The figures a report gives of a set of durations, and ratios as decimals.

use rust_decimal::Decimal;
use serde::Serialize;

/// Durations in whole seconds: how many, their mean, median, 90th percentile
/// (nearest rank) and sum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) mean_s: i64,
    pub(crate) median_s: i64,
    pub(crate) p90_s: i64,
    pub(crate) total_s: i64,
}

impl Summary {
    pub(crate) fn of(mut seconds: Vec<i64>) -> Summary {
        if seconds.is_empty() {
            return Summary::default();
        }
        seconds.sort_unstable();
        let n = seconds.len();
        let total: i64 = seconds.iter().sum();
        let count = u64::try_from(n).unwrap_or(u64::MAX);
        Summary {
            count,
            mean_s: total / i64::try_from(n).unwrap_or(i64::MAX),
            median_s: seconds[rank(n, 50)],
            p90_s: seconds[rank(n, 90)],
            total_s: total,
        }
    }
}

/// The index of the `pct`th percentile of `n` sorted values, by nearest rank.
fn rank(n: usize, pct: usize) -> usize {
    (n * pct).div_ceil(100).max(1) - 1
}

/// `part / whole` to four places; `None` when `whole` is zero.
pub(crate) fn share(part: u64, whole: u64) -> Option<Decimal> {
    (whole > 0).then(|| (Decimal::from(part) / Decimal::from(whole)).round_dp(4).normalize())
}

/// `part` per 100 of `whole`, to two places; `None` when `whole` is zero.
pub(crate) fn per_100(part: u64, whole: u64) -> Option<Decimal> {
    (whole > 0).then(|| (Decimal::from(part) * Decimal::ONE_HUNDRED / Decimal::from(whole)).round_dp(2).normalize())
}

/// The mean of small whole numbers (scores) to two places; `None` when empty.
pub(crate) fn mean(values: &[u8]) -> Option<Decimal> {
    let n = u64::try_from(values.len()).ok().filter(|n| *n > 0)?;
    let sum: u64 = values.iter().map(|v| u64::from(*v)).sum();
    Some((Decimal::from(sum) / Decimal::from(n)).round_dp(2).normalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90_by_nearest_rank() {
        let s = Summary::of((1..=10).rev().collect());
        assert_eq!(s, Summary { count: 10, mean_s: 5, median_s: 5, p90_s: 9, total_s: 55 });
        assert_eq!(Summary::of(vec![7]), Summary { count: 1, mean_s: 7, median_s: 7, p90_s: 7, total_s: 7 });
        assert_eq!(Summary::of(vec![]), Summary::default());
    }

    #[test]
    fn ratios_are_decimals_and_none_of_nothing() {
        assert_eq!(share(1, 3), Some(Decimal::new(3333, 4)));
        assert_eq!(per_100(1, 3), Some(Decimal::new(3333, 2)));
        assert_eq!(share(1, 0), None);
        assert_eq!(mean(&[5, 4, 4]), Some(Decimal::new(433, 2)));
        assert_eq!(mean(&[]), None);
    }
}

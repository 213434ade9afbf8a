//! Per-connector outbound limits: the `[limits]` table of a connector file (how many
//! calls may be in flight to the system, how fast they may start). Read and checked
//! here, with located errors; no I/O. The dispatcher enforces them
//! (`workers::dispatcher::fair`): an effect whose connector has no free slot or no
//! token waits in the outbox, and never holds a slot another system needs.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// `[limits]` as written.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Calls in flight to this system at once (default 8; `odoo`: 4), 1–1024.
    pub concurrency: Option<Spanned<usize>>,
    /// Calls started per second on average (default: no limit); a fraction is allowed
    /// (`0.5`: one every two seconds), at least 0.001.
    pub rate_per_second: Option<Spanned<f64>>,
    /// Calls that may start at once after a quiet spell: the token bucket's size
    /// (default: one second's worth, at least 1). Needs `rate_per_second`.
    pub burst: Option<Spanned<u32>>,
}

/// A token bucket's refill rate and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Tokens the bucket holds at most (and holds at start).
    pub burst: u32,
}

/// What the dispatcher enforces for one connector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Effects of this connector in flight at once.
    pub concurrency: usize,
    /// How fast effects may start; `None`: as fast as slots free up.
    pub rate: Option<Rate>,
    /// Slots outside `dispatcher.concurrency` (the built-in `mail` connector), so a
    /// slow system holding the shared slots never delays mail.
    pub own_slots: bool,
}

/// Calls in flight per connector unless its file says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 8;
const MAX_CONCURRENCY: usize = 1024;
/// The slowest rate accepted: one call every 1000 s (a slower one is a typo).
const MIN_RATE: f64 = 0.001;

impl Default for Limits {
    fn default() -> Self {
        Limits { concurrency: DEFAULT_CONCURRENCY, rate: None, own_slots: false }
    }
}

type Problem = (Option<Range<usize>>, String);

impl LimitsFile {
    /// The limits this table asks for. `legacy` is the file's top-level
    /// `max_concurrency` (the older spelling of `concurrency`), `default` the kind's
    /// default concurrency.
    ///
    /// # Errors
    /// Every problem, located at its value.
    pub fn validate(&self, legacy: Option<&Spanned<usize>>, default: usize) -> Result<Limits, Vec<Problem>> {
        let mut problems = Vec::new();
        let fallback = Spanned::new(0..0, default);
        let concurrency = match (&self.concurrency, legacy) {
            (Some(c), Some(_)) => {
                problems.push((
                    Some(c.span()),
                    "`max_concurrency` and `[limits] concurrency` say the same thing; keep only `[limits] concurrency`"
                        .to_owned(),
                ));
                c
            }
            (Some(c), None) | (None, Some(c)) => c,
            (None, None) => &fallback,
        };
        let name = if self.concurrency.is_some() { "limits.concurrency" } else { "max_concurrency" };
        if !(1..=MAX_CONCURRENCY).contains(concurrency.get_ref()) {
            problems.push((
                Some(concurrency.span()).filter(|s| !s.is_empty()),
                format!("{name} must be between 1 and {MAX_CONCURRENCY}, got {}", concurrency.get_ref()),
            ));
        }
        let rate = match (&self.rate_per_second, &self.burst) {
            (None, None) => None,
            (None, Some(b)) => {
                problems.push((Some(b.span()), "limits.burst needs limits.rate_per_second".to_owned()));
                None
            }
            (Some(r), burst) => {
                let per_second = *r.get_ref();
                if !per_second.is_finite() || per_second < MIN_RATE {
                    problems.push((
                        Some(r.span()),
                        format!(
                            "limits.rate_per_second must be a number of calls per second of at least {MIN_RATE} (e.g. 20, or 0.5 for one every two seconds), got {per_second}"
                        ),
                    ));
                }
                let burst = match burst {
                    Some(b) if *b.get_ref() == 0 => {
                        problems.push((Some(b.span()), "limits.burst must be at least 1".to_owned()));
                        1
                    }
                    Some(b) => *b.get_ref(),
                    // One second's worth: a steady sender never waits, a burst is bounded.
                    None => per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
                };
                Some(Rate { per_second, burst })
            }
        };
        if problems.is_empty() {
            Ok(Limits { concurrency: *concurrency.get_ref(), rate, own_slots: false })
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        max_concurrency: Option<Spanned<usize>>,
        #[serde(default)]
        limits: LimitsFile,
    }

    fn read(text: &str) -> Result<Limits, Vec<String>> {
        let f: File = toml::from_str(text).unwrap();
        f.limits.validate(f.max_concurrency.as_ref(), DEFAULT_CONCURRENCY).map_err(|ps| {
            ps.into_iter()
                .map(|(span, m)| {
                    let (line, col) = span.map_or((0, 0), |s| crate::diagnostics::line_col(text, s.start));
                    format!("{line}:{col}: {m}")
                })
                .collect()
        })
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(read("").unwrap(), Limits::default());
        assert_eq!(read("max_concurrency = 3").unwrap().concurrency, 3, "the older spelling still works");
        let l = read("[limits]\nconcurrency = 4\nrate_per_second = 20\nburst = 40\n").unwrap();
        assert_eq!(l, Limits { concurrency: 4, rate: Some(Rate { per_second: 20.0, burst: 40 }), own_slots: false });
        let l = read("[limits]\nrate_per_second = 2.5\n").unwrap();
        assert_eq!(l.rate, Some(Rate { per_second: 2.5, burst: 3 }), "burst defaults to one second's worth");
        assert_eq!(read("[limits]\nrate_per_second = 0.5\n").unwrap().rate.unwrap().burst, 1);
    }

    #[test]
    fn problems_are_located() {
        let text = "max_concurrency = 2\n[limits]\nconcurrency = 0\nrate_per_second = -1\nburst = 0\n";
        assert_eq!(
            read(text).unwrap_err(),
            [
                "3:15: `max_concurrency` and `[limits] concurrency` say the same thing; keep only `[limits] concurrency`",
                "3:15: limits.concurrency must be between 1 and 1024, got 0",
                "4:19: limits.rate_per_second must be a number of calls per second of at least 0.001 (e.g. 20, or 0.5 for one every two seconds), got -1",
                "5:9: limits.burst must be at least 1",
            ]
        );
        assert_eq!(read("[limits]\nburst = 5\n").unwrap_err(), ["2:9: limits.burst needs limits.rate_per_second"]);
        assert_eq!(
            read("max_concurrency = 5000\n").unwrap_err(),
            ["1:19: max_concurrency must be between 1 and 1024, got 5000"]
        );
        assert!(toml::from_str::<File>("[limits]\nconcurency = 4\n").is_err(), "unknown keys are refused");
        assert!(read("[limits]\nrate_per_second = nan\n").is_err());
    }
}

//! Fair outbound scheduling: which due effects may start now. Pure: no I/O, and the
//! times are arguments (`now` from the daemon's clock for pauses, a monotonic
//! `Instant` for token buckets), so each decision is unit-tested below.
//!
//! Each connector has slots of its own (`[limits] concurrency`) and, optionally, a
//! token bucket (`rate_per_second`, `burst`). A connector whose receiver answered 429
//! (or sent a `Retry-After`) is paused until then: none of its effects start. An
//! effect whose connector cannot take it now is skipped for this round: not
//! rescheduled, no attempt used, and effects of other connectors go ahead.
//! `dispatcher.concurrency` caps all connectors together, except those with slots
//! outside the cap (`Limits::own_slots`: mail), so no slow system can hold the slots
//! mail needs.
//!
//! The dispatcher (`mod.rs`) starts a `Round`, reads due effects of the connectors
//! it `keeps`, asks `choose` which to start, and gives each slot back (`release`)
//! once its attempt is recorded.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::connectors::limits::{Limits, Rate};
use crate::store::ConnectorFilter;

/// The longest pause a receiver's `Retry-After` (or the doubling without one) imposes.
pub(crate) const PAUSE_CEILING: Duration = Duration::from_secs(3600);
/// The shortest pause after a rate limit: `Retry-After: 0` must not become a busy loop.
const PAUSE_FLOOR: Duration = Duration::from_secs(1);

/// A token bucket: at most `burst` tokens, refilled at `per_second`; a call takes one.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: Rate, now: Instant) -> Self {
        TokenBucket { rate, tokens: f64::from(rate.burst), at: now }
    }

    /// The tokens there are at `now` (never more than `burst`).
    fn available(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.rate.per_second).min(f64::from(self.rate.burst))
    }

    /// Takes a token, or says how long until there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let tokens = self.available(now);
        if tokens >= 1.0 {
            self.tokens = tokens - 1.0;
            self.at = now.max(self.at);
            Ok(())
        } else {
            Err(self.wait(now))
        }
    }

    /// How long until a token is there (zero: one is).
    pub(crate) fn wait(&self, now: Instant) -> Duration {
        let missing = 1.0 - self.available(now);
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(missing / self.rate.per_second).unwrap_or(PAUSE_CEILING)
    }
}

/// Why an effect may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Every slot of its connector is taken; a finishing attempt wakes the dispatcher.
    Busy,
    /// `dispatcher.concurrency` effects are in flight (connectors without own slots).
    Full,
    /// Its connector has no token; the next comes in this long.
    Throttled(Duration),
    /// Its connector is paused after a rate limit until then.
    Paused(DateTime<Utc>),
}

/// One connector's slots, bucket and pause.
#[derive(Debug)]
struct Gate {
    limits: Limits,
    in_flight: usize,
    bucket: Option<TokenBucket>,
    /// No effect starts before this (a rate limit's `Retry-After`).
    paused_until: Option<DateTime<Utc>>,
    /// Rate limits in a row (a success resets it): a pause without `Retry-After`
    /// doubles with each.
    limited_in_a_row: u32,
}

impl Gate {
    fn new(limits: Limits, now: Instant) -> Gate {
        Gate {
            limits,
            in_flight: 0,
            bucket: limits.rate.map(|r| TokenBucket::new(r, now)),
            paused_until: None,
            limited_in_a_row: 0,
        }
    }

    fn paused_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.paused_until.filter(|until| *until > now)
    }
}

/// What one dispatcher round has learnt: connectors that cannot take an effect now
/// (their effects are not read again this round) and whether the shared slots are
/// all taken.
#[derive(Debug, Default)]
pub(crate) struct Round {
    blocked: HashSet<String>,
    full: bool,
    own_slots: HashSet<String>,
    /// When a throttled or paused connector may go on (the dispatcher sleeps no longer).
    pub(crate) wake_in: Option<Duration>,
}

impl Round {
    /// Whether effects of `connector` are worth reading this round.
    pub(crate) fn keeps(&self, connector: &str) -> bool {
        !self.blocked.contains(connector) && (!self.full || self.own_slots.contains(connector))
    }

    /// `keeps` for the store's read (`Store::due_effects_where`).
    pub(crate) fn filter(&self) -> ConnectorFilter {
        ConnectorFilter {
            skip: self.blocked.clone(),
            only: self.full.then(|| self.own_slots.clone()),
            performing: Default::default(),
        }
    }

    /// Something the round did not know: the dispatcher reads another page only then.
    pub(crate) fn learnt(&self) -> (usize, bool) {
        (self.blocked.len(), self.full)
    }

    fn wait(&mut self, connector: &str, wait: Wait, now: DateTime<Utc>) {
        let wake = match wait {
            Wait::Full => {
                self.full = true;
                return;
            }
            Wait::Busy => None,
            Wait::Throttled(d) => Some(d),
            Wait::Paused(until) => Some((until - now).to_std().unwrap_or_default()),
        };
        self.blocked.insert(connector.to_owned());
        if let Some(d) = wake {
            self.wake_in = Some(self.wake_in.map_or(d, |w| w.min(d)));
        }
    }
}

/// A pause after a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pause {
    pub(crate) until: DateTime<Utc>,
    /// False when the connector was paused already (the pause may have grown).
    pub(crate) started: bool,
}

/// How long a rate limit pauses its connector: the receiver's `Retry-After`, else
/// `first` doubled for each rate limit in a row up to `longest`; at least a second,
/// at most an hour.
pub(crate) fn pause_for(retry_after: Option<Duration>, in_a_row: u32, first: Duration, longest: Duration) -> Duration {
    let d = retry_after.unwrap_or_else(|| {
        let doubling = 1u32.checked_shl(in_a_row.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        first.saturating_mul(doubling).min(longest)
    });
    d.clamp(PAUSE_FLOOR, PAUSE_CEILING)
}

/// Every connector's slots, buckets and pauses, and the shared cap.
#[derive(Debug)]
pub(crate) struct Scheduler {
    /// `dispatcher.concurrency`: effects in flight at once without own slots.
    global_cap: usize,
    global_in_flight: usize,
    gates: HashMap<String, Gate>,
}

impl Scheduler {
    /// `limits` per connector; a connector not listed (an effect left from an earlier
    /// configuration) gets the defaults.
    pub(crate) fn new(
        global_cap: usize,
        limits: impl IntoIterator<Item = (String, Limits)>,
        now: Instant,
    ) -> Scheduler {
        let gates = limits.into_iter().map(|(c, l)| (c, Gate::new(l, now))).collect();
        Scheduler { global_cap, global_in_flight: 0, gates }
    }

    fn gate(&mut self, connector: &str) -> &mut Gate {
        if !self.gates.contains_key(connector) {
            // The default limits have no rate, so no bucket and no time to start it at.
            let unlisted =
                Gate { limits: Limits::default(), in_flight: 0, bucket: None, paused_until: None, limited_in_a_row: 0 };
            self.gates.insert(connector.to_owned(), unlisted);
        }
        self.gates.get_mut(connector).expect("inserted above")
    }

    /// Changes the shared cap (the dispatcher holds back under full intake load).
    /// Effects already in flight above a lowered cap go on; no new one starts until
    /// they are fewer than it.
    pub(crate) fn set_cap(&mut self, cap: usize) {
        self.global_cap = cap;
    }

    /// Total slots: the shared cap plus every connector's own slots (the dispatcher
    /// sizes its reads by it).
    pub(crate) fn capacity(&self) -> usize {
        self.global_cap
            + self.gates.values().filter(|g| g.limits.own_slots).map(|g| g.limits.concurrency).sum::<usize>()
    }

    /// A round that already skips what cannot start now: paused, busy and throttled
    /// connectors, and all but own-slot ones when the shared cap is reached.
    pub(crate) fn round(&self, now: DateTime<Utc>, mono: Instant) -> Round {
        let mut round = Round { full: self.global_in_flight >= self.global_cap, ..Round::default() };
        for (name, g) in &self.gates {
            if g.limits.own_slots {
                round.own_slots.insert(name.clone());
            }
            let wait = if let Some(until) = g.paused_at(now) {
                Some(Wait::Paused(until))
            } else if g.in_flight >= g.limits.concurrency {
                Some(Wait::Busy)
            } else {
                g.bucket.as_ref().map(|b| b.wait(mono)).filter(|d| !d.is_zero()).map(Wait::Throttled)
            };
            if let Some(w) = wait {
                round.wait(name, w, now);
            }
        }
        round
    }

    /// How many effects could start now among the connectors `round` keeps: their
    /// free slots, those without slots of their own no more than the shared cap
    /// leaves; at least one (a connector not met yet has no gate to count). The
    /// dispatcher reads no more due effects a page: a backlog for a connector with
    /// one free slot is then not read whole each time an attempt ends.
    pub(crate) fn room(&self, round: &Round) -> usize {
        let (mut own, mut shared) = (0usize, 0usize);
        for (name, g) in &self.gates {
            if round.keeps(name) {
                let free = g.limits.concurrency.saturating_sub(g.in_flight);
                if g.limits.own_slots { own += free } else { shared += free }
            }
        }
        let shared_free = self.global_cap.saturating_sub(self.global_in_flight);
        (own + shared.min(shared_free)).max(1)
    }

    /// Whether an effect of `connector` may start now; if so, its slot (and token) is
    /// taken, to be given back with `release`.
    ///
    /// # Errors
    /// Why not.
    pub(crate) fn admit(&mut self, connector: &str, now: DateTime<Utc>, mono: Instant) -> Result<(), Wait> {
        let shared_free = self.global_in_flight < self.global_cap;
        let gate = self.gate(connector);
        if let Some(until) = gate.paused_at(now) {
            return Err(Wait::Paused(until));
        }
        if gate.in_flight >= gate.limits.concurrency {
            return Err(Wait::Busy);
        }
        let own = gate.limits.own_slots;
        if !own && !shared_free {
            return Err(Wait::Full);
        }
        if let Some(b) = &mut gate.bucket {
            b.try_take(mono).map_err(Wait::Throttled)?;
        }
        gate.in_flight += 1;
        if !own {
            self.global_in_flight += 1;
        }
        Ok(())
    }

    /// From `connectors` (those of the due effects read, in due order), the positions
    /// of the effects to start now, their slots taken. A connector that cannot take
    /// one is left out for the rest of the round, so its later effects never overtake
    /// its earlier ones.
    pub(crate) fn choose(
        &mut self,
        connectors: &[&str],
        round: &mut Round,
        now: DateTime<Utc>,
        mono: Instant,
    ) -> Vec<usize> {
        let mut chosen = Vec::new();
        for (i, c) in connectors.iter().enumerate() {
            if !round.keeps(c) {
                continue;
            }
            match self.admit(c, now, mono) {
                Ok(()) => chosen.push(i),
                Err(w) => round.wait(c, w, now),
            }
        }
        chosen
    }

    /// Gives back a slot `admit` took.
    pub(crate) fn release(&mut self, connector: &str) {
        if let Some(g) = self.gates.get_mut(connector) {
            g.in_flight = g.in_flight.saturating_sub(1);
            if !g.limits.own_slots {
                self.global_in_flight = self.global_in_flight.saturating_sub(1);
            }
        }
    }

    /// Effects of `connector` in flight.
    pub(crate) fn in_flight(&self, connector: &str) -> usize {
        self.gates.get(connector).map_or(0, |g| g.in_flight)
    }

    /// A rate limit: pauses `connector` for `pause_for(…)` from `now` (a pause under
    /// way only grows). `first` and `longest` are the dispatcher's backoff bounds.
    pub(crate) fn rate_limited(
        &mut self,
        connector: &str,
        retry_after: Option<Duration>,
        now: DateTime<Utc>,
        first: Duration,
        longest: Duration,
    ) -> Pause {
        let gate = self.gate(connector);
        gate.limited_in_a_row = gate.limited_in_a_row.saturating_add(1);
        let d = pause_for(retry_after, gate.limited_in_a_row, first, longest);
        let until = now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(1));
        let current = gate.paused_at(now);
        let until = current.map_or(until, |c| c.max(until));
        gate.paused_until = Some(until);
        Pause { until, started: current.is_none() }
    }

    /// An effect of `connector` succeeded: the next rate limit starts the doubling anew.
    pub(crate) fn succeeded(&mut self, connector: &str) {
        if let Some(g) = self.gates.get_mut(connector) {
            g.limited_in_a_row = 0;
        }
    }

    /// Connectors whose pause is over by `now` (cleared here, reported once).
    pub(crate) fn ended_pauses(&mut self, now: DateTime<Utc>) -> Vec<String> {
        let mut ended = Vec::new();
        for (name, g) in &mut self.gates {
            if g.paused_until.is_some_and(|until| until <= now) {
                g.paused_until = None;
                ended.push(name.clone());
            }
        }
        ended.sort();
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(Rate { per_second: 2.0, burst: 3 }, t0);
        for _ in 0..3 {
            assert_eq!(b.try_take(t0), Ok(()));
        }
        assert_eq!(b.try_take(t0), Err(secs(0.5)), "empty: the next token in 1/rate");
        assert_eq!(b.wait(t0 + secs(0.2)), secs(0.3));
        assert_eq!(b.try_take(t0 + secs(0.5)), Ok(()));
        assert!(b.try_take(t0 + secs(0.6)).is_err());
        // A long quiet spell refills to the burst, not beyond.
        let later = t0 + secs(100.0);
        for _ in 0..3 {
            assert_eq!(b.try_take(later), Ok(()));
        }
        assert!(b.try_take(later).is_err());
        // An instant earlier than the last one (clocks compared across threads) takes nothing away.
        assert!(b.try_take(t0).is_err());
    }

    #[test]
    fn over_a_long_run_a_bucket_keeps_to_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(Rate { per_second: 20.0, burst: 40 }, t0);
        let mut taken = 0;
        // Ask every millisecond for ten seconds.
        for ms in 0..10_000u64 {
            if b.try_take(t0 + Duration::from_millis(ms)).is_ok() {
                taken += 1;
            }
        }
        assert!((239..=241).contains(&taken), "burst 40 + 10 s × 20/s, got {taken}");
    }

    fn limits(concurrency: usize) -> Limits {
        Limits { concurrency, ..Limits::default() }
    }

    fn now() -> DateTime<Utc> {
        "2026-03-01T08:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_busy_connector_is_skipped_and_the_others_go_ahead() {
        let t = Instant::now();
        let mail = Limits { concurrency: 2, own_slots: true, rate: None };
        let mut s = Scheduler::new(3, [("slow".into(), limits(2)), ("mail".into(), mail)], t);
        let due = ["slow", "slow", "slow", "slow", "erp", "mail", "erp", "erp", "mail", "mail"];
        let mut round = s.round(now(), t);
        let chosen = s.choose(&due, &mut round, now(), t);
        // slow takes its 2 slots, erp the third shared one; mail has slots of its own.
        assert_eq!(chosen, [0, 1, 4, 5, 8]);
        for c in ["slow", "erp", "other", "mail"] {
            assert!(!round.keeps(c), "{c}: {round:?}");
        }
        assert_eq!((s.in_flight("slow"), s.in_flight("erp"), s.in_flight("mail")), (2, 1, 2));

        // The next round skips what is still full without reading it; a free mail slot
        // is used even though the shared cap is reached.
        s.release("mail");
        let round = s.round(now(), t);
        assert!(round.keeps("mail") && !round.keeps("erp") && !round.keeps("slow"), "{round:?}");
        for c in ["mail", "erp", "slow", "other"] {
            assert_eq!(round.filter().keeps(c), round.keeps(c), "{c}: the store reads what the round keeps");
        }
        s.release("erp");
        let mut round = s.round(now(), t);
        assert!(round.keeps("erp") && !round.keeps("slow"));
        assert_eq!(s.choose(&["slow", "erp", "erp"], &mut round, now(), t), [1]);
        assert_eq!(round.wake_in, None, "a busy connector is woken by a finishing attempt, not a timer");
    }

    #[test]
    fn a_page_is_no_larger_than_the_free_slots_of_the_connectors_kept() {
        let t = Instant::now();
        let mail = Limits { concurrency: 2, own_slots: true, rate: None };
        let mut s = Scheduler::new(3, [("erp".into(), limits(8)), ("mail".into(), mail)], t);
        assert_eq!(s.room(&s.round(now(), t)), 2 + 3, "mail's own 2, and the shared cap bounds erp's 8");
        let mut round = s.round(now(), t);
        assert_eq!(s.choose(&["erp", "erp", "mail"], &mut round, now(), t), [0, 1, 2]);
        assert_eq!(s.room(&s.round(now(), t)), 1 + 1);
        let mut round = s.round(now(), t);
        assert_eq!(s.choose(&["erp", "mail"], &mut round, now(), t), [0, 1]);
        let round = s.round(now(), t);
        assert!(!round.keeps("erp") && !round.keeps("mail"));
        assert_eq!(s.room(&round), 1, "nothing kept has room: one effect is still read (a connector not met yet)");
        s.release("erp");
        s.release("mail");
        assert_eq!(s.room(&s.round(now(), t)), 1 + 1, "a slot each");
    }

    #[test]
    fn a_connector_without_tokens_waits_for_the_next_and_says_when() {
        let t = Instant::now();
        let rated = Limits { concurrency: 8, rate: Some(Rate { per_second: 4.0, burst: 2 }), own_slots: false };
        let mut s = Scheduler::new(16, [("crm".into(), rated)], t);
        let mut round = s.round(now(), t);
        assert_eq!(s.choose(&["crm", "crm", "crm", "erp"], &mut round, now(), t), [0, 1, 3]);
        assert_eq!(round.wake_in, Some(secs(0.25)));
        s.release("crm");
        s.release("crm");
        let round = s.round(now(), t + secs(0.1));
        assert!(!round.keeps("crm"), "a free slot is not enough without a token");
        let mut round = s.round(now(), t + secs(0.25));
        assert_eq!(s.choose(&["crm", "crm"], &mut round, now(), t + secs(0.25)), [0]);
    }

    #[test]
    fn a_rate_limit_pauses_the_whole_connector_until_retry_after() {
        let t = Instant::now();
        let mut s = Scheduler::new(16, [("erp".into(), limits(4))], t);
        let (first, longest) = (secs(1.0), secs(600.0));
        let p = s.rate_limited("erp", Some(secs(30.0)), now(), first, longest);
        assert_eq!(p, Pause { until: now() + chrono::Duration::seconds(30), started: true });
        // A second 429 from an attempt still in flight extends, never shortens.
        let p2 = s.rate_limited("erp", Some(secs(5.0)), now(), first, longest);
        assert_eq!(p2, Pause { until: p.until, started: false });

        let mut round = s.round(now(), t);
        assert!(!round.keeps("erp"));
        assert_eq!(round.wake_in, Some(secs(30.0)));
        assert_eq!(s.admit("erp", now(), t), Err(Wait::Paused(p.until)));
        assert_eq!(s.choose(&["erp", "crm"], &mut round, now(), t), [1]);

        let later = now() + chrono::Duration::seconds(30);
        assert!(s.ended_pauses(now()).is_empty());
        assert_eq!(s.admit("erp", later, t), Ok(()), "the pause is over at Retry-After");
        assert_eq!(s.ended_pauses(later), ["erp"]);
        assert!(s.ended_pauses(later).is_empty(), "reported once");
    }

    #[test]
    fn pauses_without_retry_after_double_and_are_bounded() {
        let (first, longest) = (secs(1.0), secs(600.0));
        assert_eq!(pause_for(None, 1, first, longest), secs(1.0));
        assert_eq!(pause_for(None, 4, first, longest), secs(8.0));
        assert_eq!(pause_for(None, 40, first, longest), secs(600.0));
        assert_eq!(pause_for(Some(secs(0.0)), 1, first, longest), secs(1.0), "Retry-After: 0 is not a busy loop");
        assert_eq!(pause_for(Some(secs(86_400.0)), 1, first, longest), PAUSE_CEILING);

        let t = Instant::now();
        let mut s = Scheduler::new(16, [], t);
        s.rate_limited("erp", None, now(), first, longest);
        let p = s.rate_limited("erp", None, now(), first, longest);
        assert_eq!(p.until, now() + chrono::Duration::seconds(2));
        s.succeeded("erp");
        let later = now() + chrono::Duration::seconds(10);
        assert_eq!(s.rate_limited("erp", None, later, first, longest).until, later + chrono::Duration::seconds(1));
    }
}

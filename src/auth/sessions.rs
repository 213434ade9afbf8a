//! Console sessions and one-time sign-in links: the layer a sign-in ends in, whatever
//! proved who the person is (a link mailed to their directory address, or an OpenID
//! Connect provider's answer: both call `Sessions::start`).
//!
//! A session is a random 32-byte id in an HttpOnly cookie (`cookie`: `Secure` when the
//! public URL is https, `SameSite=Lax`), kept here only as its SHA-256, with the
//! person, a CSRF token for its forms (session-bound, compared in constant time), and
//! two limits: idle (since the last request) and absolute (since sign-in). A sign-in
//! link's token is single use and short-lived, also kept hashed. Both live in memory:
//! a restart signs everyone out (they sign in again), and replicas need sticky sessions
//! until sessions move into the store.

#![allow(
    dead_code,
    reason = "the console's sign-in routes (issue 15, next step) call it; until then only its tests do"
)]

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use subtle::ConstantTimeEq;

/// A signed-in person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) person: String,
    pub(crate) csrf: String,
    pub(crate) started: DateTime<Utc>,
    pub(crate) last_seen: DateTime<Utc>,
    /// The ID token of a sign-in through an OpenID Connect provider, for signing out
    /// there too; `None` after a mailed link.
    pub(crate) id_token: Option<IdTokenHint>,
}

/// An ID token kept to be sent back to its provider as `id_token_hint` at sign-out.
/// It names the person, so it is never printed (`Debug` leaves it out).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct IdTokenHint(String);

impl IdTokenHint {
    pub(crate) fn new(token: String) -> IdTokenHint {
        IdTokenHint(token)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for IdTokenHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdTokenHint(…)")
    }
}

impl Session {
    /// Whether a form's CSRF token is this session's.
    pub(crate) fn csrf_matches(&self, given: &str) -> bool {
        bool::from(given.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// Why a cookie no longer signs anyone in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SessionEnded {
    #[error("not signed in")]
    Unknown,
    #[error("signed out after a while without activity")]
    Idle,
    #[error("signed out: sessions last at most their absolute limit")]
    Absolute,
}

/// How long sessions and sign-in links last.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) idle: Duration,
    pub(crate) absolute: Duration,
    pub(crate) sign_in_link: Duration,
}

/// The daemon's sessions and outstanding sign-in links.
#[derive(Debug)]
pub(crate) struct Sessions {
    limits: Limits,
    sessions: Mutex<HashMap<String, Session>>,
    /// Sign-in link hash → (person, expiry).
    links: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
}

fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system's random generator works");
    hex::encode(bytes)
}

fn hash(s: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// A new session: the cookie's value (shown to the browser only) and its session.
pub(crate) struct Started {
    pub(crate) cookie: String,
    pub(crate) session: Session,
}

impl Sessions {
    pub(crate) fn new(limits: Limits) -> Sessions {
        Sessions { limits, sessions: Mutex::default(), links: Mutex::default() }
    }

    /// Signs `person` in (after a sign-in link or an OIDC callback proved who they are).
    pub(crate) fn start(&self, person: &str, now: DateTime<Utc>) -> Started {
        self.start_holding(person, None, now)
    }

    /// Signs `person` in, keeping the ID token a provider signed them in with.
    pub(crate) fn start_holding(&self, person: &str, id_token: Option<IdTokenHint>, now: DateTime<Utc>) -> Started {
        let cookie = random_hex(32);
        let session =
            Session { person: person.to_owned(), csrf: random_hex(32), started: now, last_seen: now, id_token };
        let mut all = self.sessions.lock().expect("lock");
        // Ended sessions go as new ones start: the map holds live ones only.
        all.retain(|_, s| self.ended(s, now).is_none());
        all.insert(hash(&cookie), session.clone());
        Started { cookie, session }
    }

    fn ended(&self, s: &Session, now: DateTime<Utc>) -> Option<SessionEnded> {
        if now - s.started >= self.limits.absolute {
            Some(SessionEnded::Absolute)
        } else if now - s.last_seen >= self.limits.idle {
            Some(SessionEnded::Idle)
        } else {
            None
        }
    }

    /// The session of a cookie, still within both limits; a request counts as activity.
    pub(crate) fn find(&self, cookie: &str, now: DateTime<Utc>) -> Result<Session, SessionEnded> {
        let key = hash(cookie);
        let mut all = self.sessions.lock().expect("lock");
        let s = all.get_mut(&key).ok_or(SessionEnded::Unknown)?;
        if let Some(why) = self.ended(s, now) {
            all.remove(&key);
            return Err(why);
        }
        s.last_seen = now;
        Ok(s.clone())
    }

    /// Signs out: the session ended, if there was one.
    pub(crate) fn end(&self, cookie: &str) -> Option<Session> {
        self.sessions.lock().expect("lock").remove(&hash(cookie))
    }

    /// A one-time sign-in token for `person`, good for `limits.sign_in_link`.
    pub(crate) fn sign_in_link(&self, person: &str, now: DateTime<Utc>) -> String {
        let token = random_hex(32);
        let mut links = self.links.lock().expect("lock");
        links.retain(|_, (_, until)| *until > now);
        links.insert(hash(&token), (person.to_owned(), now + self.limits.sign_in_link));
        token
    }

    /// The person a sign-in token was made for, once; `None` when unknown, used or expired.
    pub(crate) fn redeem(&self, token: &str, now: DateTime<Utc>) -> Option<String> {
        let (person, until) = self.links.lock().expect("lock").remove(&hash(token))?;
        (until > now).then_some(person)
    }
}

/// The `Set-Cookie` value of a session cookie named `name`; `secure` when the public
/// URL is https. `value = None` clears it (sign-out).
pub(crate) fn cookie(name: &str, value: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(v) => format!("{name}={v}; Path=/; HttpOnly; SameSite=Lax{secure}"),
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(Limits {
            idle: Duration::minutes(30),
            absolute: Duration::hours(8),
            sign_in_link: Duration::minutes(15),
        })
    }

    #[test]
    fn a_session_ends_idle_at_its_absolute_limit_or_at_sign_out() {
        let s = sessions();
        let t0 = Utc::now();
        let started = s.start("wang.fang", t0);
        let found = s.find(&started.cookie, t0 + Duration::minutes(20)).unwrap();
        assert_eq!(found.person, "wang.fang");
        assert!(found.csrf_matches(&started.session.csrf) && !found.csrf_matches("forged"));
        // Active every 20 minutes: still in after 7 hours; not after 8.
        let mut t = t0;
        for _ in 0..21 {
            t += Duration::minutes(20);
            s.find(&started.cookie, t).unwrap();
        }
        assert_eq!(s.find(&started.cookie, t0 + Duration::hours(8)), Err(SessionEnded::Absolute));
        let idle = s.start("wang.fang", t0);
        assert_eq!(s.find(&idle.cookie, t0 + Duration::minutes(31)), Err(SessionEnded::Idle));
        let out = s.start("zhao.lei", t0);
        s.end(&out.cookie);
        assert_eq!(s.find(&out.cookie, t0), Err(SessionEnded::Unknown));
        assert_eq!(s.find("made-up", t0), Err(SessionEnded::Unknown));
    }

    #[test]
    fn a_sign_in_link_works_once_and_not_after_it_expires() {
        let s = sessions();
        let t0 = Utc::now();
        let token = s.sign_in_link("wang.fang", t0);
        assert_eq!(s.redeem(&token, t0 + Duration::minutes(1)), Some("wang.fang".into()));
        assert_eq!(s.redeem(&token, t0 + Duration::minutes(1)), None, "single use");
        let late = s.sign_in_link("wang.fang", t0);
        assert_eq!(s.redeem(&late, t0 + Duration::minutes(15)), None);
    }

    #[test]
    fn the_cookie_is_http_only_lax_and_secure_over_https() {
        assert_eq!(cookie("ob_session", Some("abc"), true), "ob_session=abc; Path=/; HttpOnly; SameSite=Lax; Secure");
        assert_eq!(cookie("ob_session", Some("abc"), false), "ob_session=abc; Path=/; HttpOnly; SameSite=Lax");
        assert!(cookie("ob_session", None, false).contains("Max-Age=0"));
    }
}

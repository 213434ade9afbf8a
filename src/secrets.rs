//! What a secret must be before `check` or `run` accept it: not empty, not a
//! placeholder left in an example file, not a value published in this repository
//! (the README's quick start, `deploy/orderbridge.env.example`, the scripts), and long
//! enough for what it does (HMAC keys and the admin token).
//!
//! The repository's own example configuration says so (`example = true` in
//! `config/orderbridge.toml`): there, published and short values are accepted (and
//! reported as one note), but only while the daemon listens on a loopback address.
//! Empty values and placeholders are refused everywhere. The example's `${NAME:-demo}`
//! references fall back to `config/demo-secrets.toml`, whose values are all published:
//! outside the example they are refused with a message naming that file. Pure: the loaders resolve the
//! secret and ask; messages name the reference, never the value.

/// The example configuration's demo secrets, relative to the configuration directory.
pub(crate) const DEMO_SECRETS_FILE: &str = "config/demo-secrets.toml";
/// How a reference ends when it falls back to `DEMO_SECRETS_FILE`.
pub(crate) const DEMO_FALLBACK: &str = ":-demo}";

/// Fewest bytes of an admin token (`server.admin_token`).
pub(crate) const MIN_ADMIN_TOKEN: usize = 32;
/// Fewest bytes of an HMAC key used as written (webhook secrets of every scheme but
/// `standard_webhooks`; link keys).
pub(crate) const MIN_HMAC_KEY: usize = 32;
/// Fewest bytes of a Standard Webhooks key, after `whsec_` and base64 (the
/// specification's lower bound; its own examples are 24 bytes).
pub(crate) const MIN_STANDARD_WEBHOOKS_KEY: usize = 24;

/// The Standard Webhooks specification's test vector, used by the README.
const TEST_VECTOR: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The example's evidence signing key (README quick start, `ORDERBRIDGE_EVIDENCE_KEY`).
const DEMO_EVIDENCE_KEY: &str = "29218f698af6658ffd99d22334e3f7b400c3176fd69f3005272aebdc9d63eb97";
/// Beginnings of the values this repository publishes for trying it out.
const PUBLISHED_PREFIXES: &[&str] = &["demo-", "example", "bench-"];
/// Beginning of the placeholders in `deploy/orderbridge.env.example`.
const PLACEHOLDER_PREFIX: &str = "replace-me";

/// Whether the example's published and short secrets are accepted, and where the
/// configuration said so.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `example = true` (and the daemon on loopback): where the key is, for the note.
    pub(crate) example: Option<crate::diagnostics::Diagnostic>,
    /// `example = true` but `server.host` or `server.admin.host` is not a loopback address, so it does not apply.
    pub(crate) example_off_loopback: bool,
}

/// What a secret's value is for, when it has a minimum length.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Need {
    /// Its length as used (bytes; a Standard Webhooks key: decoded).
    pub(crate) len: usize,
    pub(crate) min: usize,
    /// E.g. `an admin token`, `a stripe webhook key`.
    pub(crate) what: &'static str,
}

/// The policy's answer for one secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Fine,
    /// A problem: the message names the reference and the rule, never the value.
    Refused(String),
    /// Published or short, accepted because this is the example configuration.
    Accepted,
}

impl Policy {
    /// Judges the secret `reference` (e.g. `${DEMO_CRM_SECRET}`) resolved to `value`.
    pub(crate) fn judge(&self, reference: &str, value: &str, need: Option<Need>) -> Verdict {
        let lower = value.trim().to_ascii_lowercase();
        if value.trim().is_empty() {
            return Verdict::Refused(format!("secret {reference} is empty"));
        }
        if lower.starts_with(PLACEHOLDER_PREFIX) {
            return Verdict::Refused(format!(
                "secret {reference} still holds a placeholder from deploy/orderbridge.env.example; put a real secret there (e.g. `openssl rand -hex 32`)"
            ));
        }
        let weakness = if is_published(value) {
            Some("is a value published with orderbridge (README, examples, scripts), so anyone knows it; generate your own (e.g. `openssl rand -hex 32`)".to_owned())
        } else {
            need.filter(|n| n.len < n.min).map(|n| {
                format!("is {} bytes; {} needs at least {} (e.g. `openssl rand -hex 32`)", n.len, n.what, n.min)
            })
        };
        match (weakness, &self.example) {
            (None, _) => Verdict::Fine,
            (Some(_), Some(_)) => Verdict::Accepted,
            (Some(_), None) if reference.ends_with(DEMO_FALLBACK) && is_published(value) => Verdict::Refused(format!(
                "secret {reference} is a demo value from {} (the variable is not set, or holds a published value): only the example configuration (`example = true`, on loopback) may use them; set the variable to a secret of your own (e.g. `openssl rand -hex 32`)",
                DEMO_SECRETS_FILE
            )),
            (Some(why), None) => {
                let hint = if self.example_off_loopback {
                    " (`example = true` accepts the example's secrets only while server.host and server.admin.host are loopback addresses)"
                } else {
                    ""
                };
                Verdict::Refused(format!("secret {reference} {why}{hint}"))
            }
        }
    }

    /// The one note `check` prints (and `run` logs) for the example configuration:
    /// `accepted` are the references it let through.
    pub(crate) fn note(&self, accepted: &[String]) -> Option<crate::diagnostics::Diagnostic> {
        let mut note = self.example.clone()?;
        let demo = accepted.iter().any(|r| r.ends_with(DEMO_FALLBACK));
        note.message = if accepted.is_empty() {
            "note: this is the example configuration (`example = true`): it would accept the published demo secrets; remove the key for a real deployment".to_owned()
        } else {
            format!(
                "note: this is the example configuration (`example = true`): {} published or short secret{} accepted ({}); without the key each is refused. Never run it with real data",
                accepted.len(),
                if accepted.len() == 1 { "" } else { "s" },
                accepted.join(", ")
            )
        };
        if demo {
            note.message = format!(
                "{}. The `:-demo` ones are DEMO VALUES from {} (published with orderbridge, used because their variable is not set)",
                note.message, DEMO_SECRETS_FILE
            );
        }
        Some(note)
    }
}

/// One loader's secret checks: the policy, and the references it accepted only
/// because this is the example configuration (for the note).
#[derive(Debug)]
pub(crate) struct Checks<'a> {
    pub(crate) policy: &'a Policy,
    pub(crate) accepted: Vec<String>,
}

impl<'a> Checks<'a> {
    pub(crate) fn new(policy: &'a Policy) -> Self {
        Checks { policy, accepted: Vec::new() }
    }

    /// # Errors
    /// The refusal's message (naming `reference`, never the value).
    pub(crate) fn judge(&mut self, reference: &str, value: &str, need: Option<Need>) -> Result<(), String> {
        match self.policy.judge(reference, value, need) {
            Verdict::Fine => Ok(()),
            Verdict::Accepted => {
                if !self.accepted.iter().any(|r| r == reference) {
                    self.accepted.push(reference.to_owned());
                }
                Ok(())
            }
            Verdict::Refused(m) => Err(m),
        }
    }
}

/// A value this repository publishes (the test vector, `demo-…`, `example…`, `bench-…`).
pub(crate) fn is_published(value: &str) -> bool {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    v.strip_prefix("whsec_").unwrap_or(v) == TEST_VECTOR
        || v.eq_ignore_ascii_case(DEMO_EVIDENCE_KEY)
        || PUBLISHED_PREFIXES.iter().any(|p| lower.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> Policy {
        Policy::default()
    }

    fn example() -> Policy {
        Policy {
            example: Some(crate::diagnostics::Diagnostic::file(std::path::Path::new("o.toml"), "")),
            example_off_loopback: false,
        }
    }

    const ADMIN: fn(usize) -> Need = |len| Need { len, min: MIN_ADMIN_TOKEN, what: "an admin token" };

    #[test]
    fn empty_and_placeholders_are_refused_everywhere() {
        for p in [strict(), example()] {
            assert_eq!(p.judge("file:secrets/x", "", None), Verdict::Refused("secret file:secrets/x is empty".into()));
            assert_eq!(
                p.judge("file:secrets/x", " \n", None),
                Verdict::Refused("secret file:secrets/x is empty".into())
            );
            let Verdict::Refused(m) = p.judge("${T}", "REPLACE-ME-admin-token-openssl-rand-hex-32", None) else {
                panic!()
            };
            assert!(m.contains("placeholder") && !m.contains("admin-token-openssl"), "{m}");
        }
    }

    #[test]
    fn published_and_short_values_are_accepted_only_by_the_example() {
        let published = [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "demo-erp-token",
            "demo-link-key-change-me-0123456789abcdef",
            "example",
            "example-link-key-0123456789abcdef0123",
            "bench-admin-token",
        ];
        for v in published {
            let Verdict::Refused(m) = strict().judge("${X}", v, None) else { panic!("{v}") };
            assert!(m.starts_with("secret ${X} is a value published with orderbridge"), "{m}");
            // (The bare word `example` is in every such message.)
            assert!(v == "example" || !m.contains(v), "never the value: {m}");
            assert_eq!(example().judge("${X}", v, None), Verdict::Accepted, "{v}");
        }
        let short = "k".repeat(31);
        assert_eq!(
            strict().judge("${T}", &short, Some(ADMIN(31))),
            Verdict::Refused(
                "secret ${T} is 31 bytes; an admin token needs at least 32 (e.g. `openssl rand -hex 32`)".into()
            )
        );
        assert_eq!(example().judge("${T}", &short, Some(ADMIN(31))), Verdict::Accepted);
        let off = Policy { example: None, example_off_loopback: true };
        let Verdict::Refused(m) = off.judge("${T}", "demo-admin-token", None) else { panic!() };
        assert!(m.ends_with("only while server.host and server.admin.host are loopback addresses)"), "{m}");
    }

    #[test]
    fn real_secrets_pass() {
        let real = "3f6c1a9e0b7d4c2f8a5e6b1d9c0f7a3e2b4d6f8a1c3e5b7d9f0a2c4e6b8d0f1a";
        assert_eq!(strict().judge("${T}", real, Some(ADMIN(real.len()))), Verdict::Fine);
        assert_eq!(strict().judge("${T}", "whsec_ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=", None), Verdict::Fine);
        assert_eq!(strict().judge("${T}", "tok-9c1e", None), Verdict::Fine, "no minimum given");
    }

    #[test]
    fn every_demo_secret_is_a_published_value_refused_outside_the_example() {
        let demo: toml::Table = toml::from_str(include_str!("../config/demo-secrets.toml")).unwrap();
        assert_eq!(demo.len(), 9);
        for (name, value) in &demo {
            let value = value.as_str().unwrap();
            let reference = format!("${{{name}:-demo}}");
            let Verdict::Refused(m) = strict().judge(&reference, value, None) else { panic!("{name}") };
            assert!(m.contains("is a demo value from config/demo-secrets.toml") && !m.contains(value), "{m}");
            assert_eq!(example().judge(&reference, value, None), Verdict::Accepted);
        }
        let n = example().note(&["${A:-demo}".into()]).unwrap();
        assert!(n.message.contains("DEMO VALUES from config/demo-secrets.toml"), "{}", n.message);
    }

    #[test]
    fn the_note_lists_what_it_let_through() {
        assert_eq!(strict().note(&["${A}".into()]), None);
        let n = example().note(&["${A}".into(), "${B}".into()]).unwrap();
        assert!(n.message.contains("2 published or short secrets accepted (${A}, ${B})"), "{}", n.message);
        assert!(example().note(&[]).unwrap().message.contains("remove the key for a real deployment"));
    }
}

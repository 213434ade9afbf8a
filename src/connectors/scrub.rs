//! What an upstream answer may show of itself in an error, a log line or a dead
//! letter: at most [`EXCERPT_CHARS`] characters, after every secret the connector
//! holds and anything shaped like a credential (`Bearer …`/`Basic …`, JWTs,
//! `api_key=…`, `"password": "…"`, `X-Api-Key: …`) was replaced by `[redacted]`.
//!
//! Pure text handling, no I/O. Secrets are replaced on the whole text before it is
//! cut, so a secret that straddles the cut cannot leave a readable prefix.

use secrecy::{ExposeSecret, SecretString};

/// Longest excerpt of an upstream body kept in an error (in characters).
pub const EXCERPT_CHARS: usize = 300;
/// Longest connector error message kept (an excerpt plus what we say around it).
pub const MESSAGE_CHARS: usize = 600;
/// How much of an upstream body is looked at before it is scrubbed and cut.
pub const WINDOW_CHARS: usize = 4096;
/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// An upstream body as an error may quote it: scrubbed, then cut to `EXCERPT_CHARS`.
pub fn excerpt(body: &str, secrets: &[SecretString]) -> String {
    let window: String = body.chars().take(WINDOW_CHARS).collect();
    cut(scrub(&window, secrets).trim(), EXCERPT_CHARS)
}

/// `text` without the connector's `secrets` and without anything shaped like a
/// credential.
pub fn scrub(text: &str, secrets: &[SecretString]) -> String {
    let mut s = text.to_owned();
    for secret in secrets {
        let v = secret.expose_secret();
        // Shorter values would redact ordinary words; no real credential is that short.
        if v.len() >= 4 {
            s = s.replace(v, REDACTED);
            let encoded = crate::mapping::outbound::encode_segment(v);
            if encoded != v {
                s = s.replace(&encoded, REDACTED);
            }
        }
    }
    let s = scrub_schemes(&s);
    let s = scrub_named(&s);
    scrub_jwts(&s)
}

/// At most `max` characters of `text`, marked with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~+/=".contains(c)
}

/// `Bearer <token>`, `Basic <pair>`, `token <key>:<secret>` (any case).
fn scrub_schemes(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &lower[i..];
        let scheme = ["bearer ", "basic ", "token "].into_iter().find(|p| rest.starts_with(p));
        let word_start = i == 0 || !text[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric());
        if let (Some(p), true) = (scheme, word_start) {
            let start = i + p.len();
            let end = text[start..]
                .char_indices()
                .find(|(_, c)| !(is_token_char(*c) || *c == ':'))
                .map_or(text.len(), |(j, _)| start + j);
            // `token` is also an ordinary word: only `token <key>:<secret>` counts.
            let value = &text[start..end];
            let looks_like_one = if p == "token " { value.contains(':') } else { value.len() >= 8 };
            if looks_like_one && value.len() >= 8 {
                out.push_str(&text[i..start]);
                out.push_str(REDACTED);
                i = end;
                continue;
            }
        }
        let c = text[i..].chars().next().expect("inside the text");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Whether a field, parameter or header name names a credential.
fn names_a_secret(name: &str) -> bool {
    let n: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    const ENDINGS: &[&str] = &[
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "signature",
        "sig",
        "credential",
        "credentials",
        "authorization",
        "auth",
        "cookie",
        "session",
        "sessionid",
    ];
    ENDINGS.iter().any(|e| n.ends_with(e))
}

/// `name=value`, `"name": "value"`, `name: value` where the name names a credential.
fn scrub_named(text: &str) -> String {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let at = |k: usize| chars.get(k).map(|(_, c)| *c);
    let byte = |k: usize| chars.get(k).map_or(text.len(), |(b, _)| *b);
    let is_name = |c: char| c.is_ascii_alphanumeric() || "_-.[]".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k].1;
        if !is_name(c) || (k > 0 && at(k - 1).is_some_and(is_name)) {
            out.push(c);
            k += 1;
            continue;
        }
        // A name: then an optional closing quote, blanks, and `=` or `:`.
        let mut e = k;
        while at(e).is_some_and(is_name) {
            e += 1;
        }
        let name = &text[byte(k)..byte(e)];
        let mut s = e;
        let quoted_name = matches!(at(s), Some('"' | '\''));
        if quoted_name {
            s += 1;
        }
        while at(s) == Some(' ') {
            s += 1;
        }
        let sep = at(s);
        if !names_a_secret(name) || !matches!(sep, Some('=' | ':')) {
            out.push_str(name);
            k = e;
            continue;
        }
        s += 1;
        while at(s) == Some(' ') {
            s += 1;
        }
        // The value: quoted (to its closing quote), or up to a delimiter.
        let (v_start, v_end) = match at(s) {
            Some(q @ ('"' | '\'')) => {
                let mut j = s + 1;
                while let Some(c) = at(j) {
                    if c == '\\' {
                        j += 2;
                        continue;
                    }
                    if c == q {
                        break;
                    }
                    j += 1;
                }
                (s + 1, j.min(chars.len()))
            }
            _ => {
                // After `name:` (a header or YAML-ish line) the value runs to the line's end.
                let header = sep == Some(':') && !quoted_name;
                let mut j = s;
                while let Some(c) = at(j) {
                    let stop =
                        if header { ",;<>\"'\n\r".contains(c) } else { "&,;}])<>\"'".contains(c) || c.is_whitespace() };
                    if stop {
                        break;
                    }
                    j += 1;
                }
                (s, j)
            }
        };
        out.push_str(&text[byte(k)..byte(v_start)]);
        if v_end > v_start {
            out.push_str(REDACTED);
        }
        k = v_end;
    }
    out
}

/// JSON Web Tokens (`eyJ….….…`).
fn scrub_jwts(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(p) = rest.find("eyJ") {
        out.push_str(&rest[..p]);
        let tail = &rest[p..];
        let len = tail.find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c))).unwrap_or(tail.len());
        let candidate = &tail[..len];
        if candidate.matches('.').count() >= 2 && len >= 20 {
            out.push_str(REDACTED);
        } else {
            out.push_str(candidate);
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> String {
        scrub(text, &[])
    }

    #[test]
    fn the_connectors_own_secrets_go_even_when_cut_or_encoded() {
        let secret = SecretString::from("s3cr3t-token-value-0123456789");
        let body = format!("{}{}", "x".repeat(290), "echo: s3cr3t-token-value-0123456789 and more");
        let e = excerpt(&body, std::slice::from_ref(&secret));
        assert!(!e.contains("s3cr3t"), "not even a prefix at the cut: {e}");
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1, "cut and marked");
        assert!(e.ends_with('…'));
        let encoded = SecretString::from("a b/c+d=0123");
        assert_eq!(scrub("got a%20b%2Fc%2Bd%3D0123", &[encoded]), "got [redacted]");
    }

    #[test]
    fn credential_shapes_are_redacted() {
        assert_eq!(s("Authorization: Bearer abcdefgh12345678"), "Authorization: [redacted]");
        assert_eq!(s("sent bearer abcdefgh12345678 then"), "sent bearer [redacted] then");
        assert_eq!(s("Basic dXNlcjpwYXNzd29yZA=="), "Basic [redacted]");
        assert_eq!(s("Authorization: token abc123:def456"), "Authorization: [redacted]");
        assert_eq!(s("got token abc123:def456."), "got token [redacted]");
        assert_eq!(s("GET /x?api_key=k123&page=2"), "GET /x?api_key=[redacted]&page=2");
        assert_eq!(s("url?key=abc;next"), "url?key=[redacted];next");
        assert_eq!(
            s(r#"{"error":"bad","client_secret":"hunter2hunter2","password": "p\"w","n":1}"#),
            r#"{"error":"bad","client_secret":"[redacted]","password": "[redacted]","n":1}"#
        );
        assert_eq!(s("X-Api-Key: k-123, other"), "X-Api-Key: [redacted], other");
        assert_eq!(s("access_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"), "access_token=[redacted]");
        assert_eq!(s("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl here"), "jwt [redacted] here");
    }

    #[test]
    fn ordinary_text_is_kept() {
        for t in [
            "HTTP 400: product code unknown to ERP",
            r#"{"error": "invoice INV-1 not found", "status": 404}"#,
            "token endpoint HTTP 401: invalid_client",
            "a keyboard: fine; monkey business",
            "订单 D-10042 已存在",
        ] {
            assert_eq!(s(t), t);
        }
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc…");
        assert_eq!(cut("订单订单", 2), "订单…");
    }
}

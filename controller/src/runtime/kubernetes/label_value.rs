//! Free text (an owner id) as a valid Kubernetes label value.
//!
//! A label value is at most 63 characters of `[A-Za-z0-9_.-]`, beginning and
//! ending with an alphanumeric, or empty. Slack user ids (`U0123456`) already
//! are one and pass through unchanged; anything else (an e-mail address from
//! the admin API, a long or empty id) is made into one that stays distinct:
//! invalid characters become `_`, and a short digest of the original is
//! appended so two owners that sanitize alike still get different values.

use sha2::{Digest as _, Sha256};

/// Longest label value the API server accepts.
pub const MAX_LEN: usize = 63;
/// Hex characters of the digest appended to a changed value.
const DIGEST_LEN: usize = 8;

/// Whether the API server accepts `v` as a label value.
pub fn is_valid(v: &str) -> bool {
    let b = v.as_bytes();
    if b.is_empty() {
        return true;
    }
    b.len() <= MAX_LEN
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| allowed(*c))
}

/// `v` unchanged when it is a non-empty valid label value, else a valid,
/// deterministic value derived from it (see the module docs).
pub fn label_value(v: &str) -> String {
    if !v.is_empty() && is_valid(v) {
        return v.to_owned();
    }
    let digest = hex::encode(Sha256::digest(v.as_bytes()));
    let digest = &digest[..DIGEST_LEN];
    let cleaned: String = v
        .bytes()
        .map(|c| if allowed(c) { c as char } else { '_' })
        .collect();
    let cleaned = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let keep = MAX_LEN - DIGEST_LEN - 1;
    let cleaned = &cleaned[..cleaned.len().min(keep)];
    let cleaned = cleaned.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if cleaned.is_empty() {
        digest.to_owned()
    } else {
        format!("{cleaned}-{digest}")
    }
}

fn allowed(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_user_ids_pass_through_unchanged() {
        for id in ["U0123456", "W012ABCDEF", "U1"] {
            assert_eq!(label_value(id), id);
        }
    }

    #[test]
    fn invalid_values_become_valid_and_stay_distinct() {
        let cases = [
            "alice@example.com",
            "alice#example.com",
            "",
            "-leading",
            "trailing.",
            "ünïcödé",
            "@@@",
            &"x".repeat(64),
            &"y".repeat(200),
            "a b c",
        ];
        let mut seen = std::collections::BTreeSet::new();
        for v in cases {
            let out = label_value(v);
            assert!(is_valid(&out), "{v:?} -> {out:?} is not a label value");
            assert!(!out.is_empty(), "{v:?} -> empty");
            assert_eq!(out, label_value(v), "deterministic");
            assert!(seen.insert(out.clone()), "{v:?} -> {out:?} collides");
        }
        assert!(label_value("alice@example.com").starts_with("alice_example.com-"));
    }

    #[test]
    fn validity_follows_the_api_server_rule() {
        assert!(is_valid(""));
        assert!(is_valid("a.b-c_d"));
        assert!(is_valid(&"a".repeat(63)));
        assert!(!is_valid(&"a".repeat(64)));
        assert!(!is_valid("a@b"));
        assert!(!is_valid("_a"));
        assert!(!is_valid("a-"));
    }
}

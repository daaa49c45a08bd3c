//! Events API request verification, as Slack specifies it: `X-Slack-Signature`
//! is `v0=` + hex HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}`
//! under the app's signing secret. Requests whose timestamp is more than five
//! minutes from now are refused (replay protection), and the comparison runs
//! in constant time so the signature cannot be guessed byte by byte.

use std::time::Duration;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// Slack's recommended replay window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing {TIMESTAMP_HEADER} header")]
    MissingTimestamp,
    #[error("missing {SIGNATURE_HEADER} header")]
    MissingSignature,
    #[error("{TIMESTAMP_HEADER} is not a unix time")]
    BadTimestamp,
    #[error("request timestamp is {skew_secs} s away from now (limit {limit_secs} s)")]
    Stale { skew_secs: i64, limit_secs: u64 },
    #[error("{SIGNATURE_HEADER} is not v0=<64 hex digits>")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
}

impl SignatureError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingTimestamp => "missing_timestamp",
            Self::MissingSignature => "missing_signature",
            Self::BadTimestamp => "bad_timestamp",
            Self::Stale { .. } => "stale",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
        }
    }
}

/// Holds the signing secret; prints as `SignatureVerifier { .. }`.
#[derive(Clone)]
pub struct SignatureVerifier {
    secret: Vec<u8>,
    window: Duration,
}

impl std::fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureVerifier")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl SignatureVerifier {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
            window: DEFAULT_WINDOW,
        }
    }

    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    fn mac(&self, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length; new_from_slice cannot fail for it.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
        mac.update(b"v0:");
        mac.update(timestamp.as_bytes());
        mac.update(b":");
        mac.update(body);
        mac
    }

    /// The header value Slack would send for this body (tests and tools).
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        format!(
            "v0={}",
            hex::encode(self.mac(timestamp, body).finalize().into_bytes())
        )
    }

    /// Check a request; `now_unix` is the current unix time in seconds.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), SignatureError> {
        let ts = headers
            .get(TIMESTAMP_HEADER)
            .ok_or(SignatureError::MissingTimestamp)?
            .to_str()
            .map_err(|_| SignatureError::BadTimestamp)?;
        let sig = headers
            .get(SIGNATURE_HEADER)
            .ok_or(SignatureError::MissingSignature)?
            .to_str()
            .map_err(|_| SignatureError::Malformed)?;
        self.verify_parts(ts, sig, body, now_unix)
    }

    pub fn verify_parts(
        &self,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), SignatureError> {
        let sent: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        let skew = now_unix.saturating_sub(sent);
        if skew.unsigned_abs() > self.window.as_secs() {
            return Err(SignatureError::Stale {
                skew_secs: skew,
                limit_secs: self.window.as_secs(),
            });
        }
        let hex_sig = signature
            .strip_prefix("v0=")
            .ok_or(SignatureError::Malformed)?;
        if hex_sig.len() != 64 {
            return Err(SignatureError::Malformed);
        }
        let raw = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?;
        // verify_slice compares in constant time.
        self.mac(timestamp, body)
            .verify_slice(&raw)
            .map_err(|_| SignatureError::Mismatch)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // Slack's worked example from "Verifying requests from Slack".
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn headers(ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP_HEADER, ts.parse().unwrap());
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        h
    }

    fn verifier() -> SignatureVerifier {
        SignatureVerifier::new(SECRET)
    }

    #[test]
    fn accepts_slacks_documented_example() {
        assert_eq!(verifier().sign(TS, BODY.as_bytes()), SIG);
        assert_eq!(
            verifier().verify(&headers(TS, SIG), BODY.as_bytes(), 1531420618 + 10),
            Ok(())
        );
    }

    #[test]
    fn refuses_a_tampered_body_or_another_secret() {
        let v = verifier();
        let mut body = BODY.as_bytes().to_vec();
        body[10] ^= 1;
        assert_eq!(
            v.verify(&headers(TS, SIG), &body, 1531420618),
            Err(SignatureError::Mismatch)
        );
        let other = SignatureVerifier::new("another-secret");
        assert_eq!(
            other.verify(&headers(TS, SIG), BODY.as_bytes(), 1531420618),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn refuses_timestamps_outside_five_minutes_either_way() {
        let v = verifier();
        let now = 1531420618 + 301;
        assert!(matches!(
            v.verify(&headers(TS, SIG), BODY.as_bytes(), now),
            Err(SignatureError::Stale { skew_secs: 301, .. })
        ));
        let earlier = 1531420618 - 301;
        assert!(matches!(
            v.verify(&headers(TS, SIG), BODY.as_bytes(), earlier),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            v.verify(&headers(TS, SIG), BODY.as_bytes(), 1531420618 + 300),
            Ok(())
        );
    }

    #[test]
    fn refuses_missing_and_malformed_headers() {
        let v = verifier();
        assert_eq!(
            v.verify(&HeaderMap::new(), b"", 0),
            Err(SignatureError::MissingTimestamp)
        );
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP_HEADER, TS.parse().unwrap());
        assert_eq!(
            v.verify(&h, b"", 1531420618),
            Err(SignatureError::MissingSignature)
        );
        for bad in [
            "a2114d57",
            "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "v0=zz",
            "v0=",
        ] {
            assert_eq!(
                v.verify(&headers(TS, bad), BODY.as_bytes(), 1531420618),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            v.verify(&headers("yesterday", SIG), BODY.as_bytes(), 1531420618),
            Err(SignatureError::BadTimestamp)
        );
    }

    #[test]
    fn debug_output_hides_the_secret() {
        assert!(!format!("{:?}", verifier()).contains(SECRET));
    }
}

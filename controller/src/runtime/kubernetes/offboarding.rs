//! The HR off-boarding webhook: `POST /v1/offboarding` with `{"owner": ...}`
//! deletes that person's agent through the same path as `kubectl delete
//! agent` (the finalizer). Requests are HMAC-SHA256 signed over
//! `v1:<timestamp>:<body>` with a shared key, must be fresh (5 minutes) and
//! are accepted once (a replayed signature is refused).
//!
//! Headers: `X-Clawswarm-Timestamp: <unix seconds>`,
//! `X-Clawswarm-Signature: v1=<hex>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tracing::{info, warn};

use crate::runtime::{Runtime, RuntimeError};

pub const TIMESTAMP_HEADER: &str = "x-clawswarm-timestamp";
pub const SIGNATURE_HEADER: &str = "x-clawswarm-signature";
pub const PATH: &str = "/v1/offboarding";
/// Requests older or newer than this are refused.
pub const WINDOW: Duration = Duration::from_secs(300);
const MAX_BODY: usize = 16 * 1024;
/// Bound on remembered signatures (more than any HR system sends in 10 minutes).
const SEEN_MAX: usize = 65_536;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("timestamp is not unix seconds")]
    BadTimestamp,
    #[error("timestamp outside the {}s window", WINDOW.as_secs())]
    Stale,
    #[error("signature does not match")]
    BadSignature,
    #[error("request already processed (replay)")]
    Replay,
    #[error("body: {0}")]
    BadBody(String),
}

impl WebhookError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::BadTimestamp => "bad_timestamp",
            Self::Stale => "stale",
            Self::BadSignature => "bad_signature",
            Self::Replay => "replay",
            Self::BadBody(_) => "bad_body",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::MissingHeader(_) | Self::BadTimestamp | Self::Stale | Self::BadSignature => {
                StatusCode::UNAUTHORIZED
            }
            Self::Replay => StatusCode::CONFLICT,
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
        }
    }
}

pub struct Offboarding {
    runtime: Arc<dyn Runtime>,
    key: Vec<u8>,
    seen: Mutex<HashMap<Vec<u8>, SystemTime>>,
}

impl std::fmt::Debug for Offboarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offboarding")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OffboardRequest {
    owner: String,
    #[serde(default)]
    delete_data: bool,
}

impl Offboarding {
    pub fn new(runtime: Arc<dyn Runtime>, key: Vec<u8>) -> Self {
        Self {
            runtime,
            key,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Read the key from a file (trailing newline ignored); empty keys are refused.
    /// The key in `path`; `None` when the file is absent or empty (the
    /// shipped Secret leaves it empty: off-boarding is then off).
    pub fn key_from_file(path: &std::path::Path) -> Result<Option<Vec<u8>>, String> {
        let raw = match std::fs::read(path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let key: Vec<u8> = raw.trim_ascii().to_vec();
        if key.is_empty() {
            return Ok(None);
        }
        if key.len() < 16 {
            return Err(format!(
                "{}: the off-boarding key must be at least 16 bytes",
                path.display()
            ));
        }
        Ok(Some(key))
    }

    /// The routes to merge into the controller's HTTP server.
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route(PATH, post(handle))
            .with_state(self)
    }

    /// Check signature, freshness and replay; records the signature on success.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), WebhookError> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(WebhookError::MissingHeader(name))
        };
        let ts_raw = header(TIMESTAMP_HEADER)?;
        let sig_raw = header(SIGNATURE_HEADER)?;
        let ts: u64 = ts_raw.parse().map_err(|_| WebhookError::BadTimestamp)?;
        let now_s = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if now_s.abs_diff(ts) > WINDOW.as_secs() {
            return Err(WebhookError::Stale);
        }
        let sig = sig_raw
            .strip_prefix("v1=")
            .and_then(|h| hex::decode(h).ok())
            .ok_or(WebhookError::BadSignature)?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).map_err(|_| WebhookError::BadSignature)?;
        mac.update(b"v1:");
        mac.update(ts_raw.as_bytes());
        mac.update(b":");
        mac.update(body);
        mac.verify_slice(&sig)
            .map_err(|_| WebhookError::BadSignature)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| {
            now.duration_since(*at)
                .map(|d| d <= WINDOW * 2)
                .unwrap_or(true)
        });
        if seen.contains_key(&sig) {
            return Err(WebhookError::Replay);
        }
        if seen.len() >= SEEN_MAX {
            // Refuse rather than forget: forgetting would reopen replays.
            return Err(WebhookError::Replay);
        }
        seen.insert(sig, now);
        Ok(())
    }
}

/// Sign a body the way the webhook expects (for HR integrations and tests).
pub fn sign(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("v1:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn handle(State(hook): State<Arc<Offboarding>>, headers: HeaderMap, body: Bytes) -> Response {
    if body.len() > MAX_BODY {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    }
    if let Err(e) = hook.verify(&headers, &body, SystemTime::now()) {
        warn!(reason = e.metric_label(), "off-boarding request refused");
        return (e.status(), e.to_string()).into_response();
    }
    let req: OffboardRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let e = WebhookError::BadBody(e.to_string());
            return (e.status(), e.to_string()).into_response();
        }
    };
    let agent = match hook.runtime.find_by_owner(&req.owner).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return (
                StatusCode::OK,
                axum::Json(serde_json::json!({ "status": "no_agent" })),
            )
                .into_response();
        }
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    match hook.runtime.deprovision(&agent.id, req.delete_data).await {
        Ok(()) | Err(RuntimeError::NotFound(_)) => {
            info!(agent = %agent.id, delete_data = req.delete_data, "agent off-boarded");
            (
                StatusCode::ACCEPTED,
                axum::Json(
                    serde_json::json!({ "status": "deleting", "agent": agent.id.to_string() }),
                ),
            )
                .into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::runtime::kubernetes::tests::NullRuntime;

    const KEY: &[u8] = b"0123456789abcdef0123";

    fn hook() -> Offboarding {
        Offboarding::new(Arc::new(NullRuntime), KEY.to_vec())
    }

    fn headers(ts: u64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP_HEADER, ts.to_string().parse().unwrap());
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        h
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn offboarding_accepts_a_fresh_signed_request_once() {
        let h = hook();
        let body = br#"{"owner":"U1"}"#;
        let hd = headers(1000, &sign(KEY, 1000, body));
        assert_eq!(h.verify(&hd, body, at(1010)), Ok(()));
        assert_eq!(h.verify(&hd, body, at(1011)), Err(WebhookError::Replay));
    }

    #[test]
    fn offboarding_refuses_stale_tampered_and_unsigned_requests() {
        let h = hook();
        let body = br#"{"owner":"U1"}"#;
        let sig = sign(KEY, 1000, body);
        assert_eq!(
            h.verify(&headers(1000, &sig), body, at(1000 + 301)),
            Err(WebhookError::Stale)
        );
        assert_eq!(
            h.verify(&headers(1000, &sig), br#"{"owner":"U2"}"#, at(1000)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            h.verify(&headers(1001, &sig), body, at(1000)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            h.verify(
                &headers(1000, &sign(b"another key 123456", 1000, body)),
                body,
                at(1000)
            ),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            h.verify(&HeaderMap::new(), body, at(1000)),
            Err(WebhookError::MissingHeader(TIMESTAMP_HEADER))
        );
        assert_eq!(
            h.verify(&headers(1000, "v1=zz"), body, at(1000)),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn short_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "short\n").unwrap();
        assert!(Offboarding::key_from_file(&p).is_err());
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        assert_eq!(
            Offboarding::key_from_file(&p).unwrap().as_deref(),
            Some(&b"0123456789abcdef0123"[..])
        );
    }

    #[test]
    fn an_absent_or_empty_key_turns_the_webhook_off_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        assert_eq!(Offboarding::key_from_file(&p).unwrap(), None);
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(Offboarding::key_from_file(&p).unwrap(), None);
    }
}

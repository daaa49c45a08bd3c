//! The Events API side of the fake: posts events, slash commands and
//! interactions to the app's HTTP endpoint, signed as Slack signs them
//! (`X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:{ts}:{body}"))`),
//! optionally with retry headers, a stale timestamp or a bad signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;
use sha2::Sha256;

/// How to sign and decorate one request.
#[derive(Clone, Debug, Default)]
pub struct PostOptions {
    /// Seconds to shift the timestamp by (e.g. -600 for a stale request).
    pub timestamp_offset: i64,
    /// Sign with this secret instead of the real one.
    pub wrong_secret: Option<String>,
    /// Leave the signature headers out.
    pub unsigned: bool,
    /// `(X-Slack-Retry-Num, X-Slack-Retry-Reason)`.
    pub retry: Option<(u32, String)>,
    /// Give up on the answer after this long (default 10 s; Slack waits
    /// [`SLACK_ACK_TIMEOUT`]).
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct PostResult {
    pub status: u16,
    pub body: String,
    /// The `Retry-After` header, if the app sent one.
    pub retry_after: Option<String>,
    /// The app sent `X-Slack-No-Retry: 1` (Slack then does not retry).
    pub no_retry: bool,
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `v0=` + hex HMAC-SHA256 over `v0:{ts}:{body}`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts to one app endpoint (e.g. `http://127.0.0.1:P/slack/events`).
#[derive(Clone)]
pub struct EventsPoster {
    url: String,
    secret: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl EventsPoster {
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        // A fresh connection per request, as Slack's deliveries arrive: a
        // Service in between then picks its endpoint for each one.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(HttpConnector::new());
        Self {
            url: url.into(),
            secret: secret.into(),
            client,
        }
    }

    /// Post an Events API JSON payload (an `event_callback` or `url_verification`).
    pub async fn post_event(
        &self,
        payload: &Value,
        opts: &PostOptions,
    ) -> anyhow::Result<PostResult> {
        self.post_raw(payload.to_string().into_bytes(), "application/json", opts)
            .await
    }

    /// Post a slash command (form-encoded fields, as Slack sends them).
    pub async fn post_command(
        &self,
        fields: &Value,
        opts: &PostOptions,
    ) -> anyhow::Result<PostResult> {
        let obj = fields
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("command fields must be an object"))?;
        let pairs: Vec<(String, String)> = obj
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect();
        let body = serde_urlencoded::to_string(pairs)?;
        self.post_raw(body.into_bytes(), "application/x-www-form-urlencoded", opts)
            .await
    }

    /// Post an interaction (`payload=<json>` form field, as Slack sends it).
    pub async fn post_interaction(
        &self,
        payload: &Value,
        opts: &PostOptions,
    ) -> anyhow::Result<PostResult> {
        let body = serde_urlencoded::to_string([("payload", payload.to_string())])?;
        self.post_raw(body.into_bytes(), "application/x-www-form-urlencoded", opts)
            .await
    }

    /// Post exactly these bytes (for malformed payloads), signed per `opts`.
    pub async fn post_raw(
        &self,
        body: Vec<u8>,
        content_type: &str,
        opts: &PostOptions,
    ) -> anyhow::Result<PostResult> {
        let ts = (now_secs() + opts.timestamp_offset).to_string();
        let secret = opts.wrong_secret.as_deref().unwrap_or(&self.secret);
        let mut req =
            http::Request::post(&self.url).header(http::header::CONTENT_TYPE, content_type);
        if !opts.unsigned {
            req = req
                .header("x-slack-request-timestamp", &ts)
                .header("x-slack-signature", sign(secret, &ts, &body));
        }
        if let Some((num, reason)) = &opts.retry {
            req = req
                .header("x-slack-retry-num", num.to_string())
                .header("x-slack-retry-reason", reason);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let timeout = opts.timeout.unwrap_or(Duration::from_secs(10));
        let deadline = tokio::time::Instant::now() + timeout;
        let resp = tokio::time::timeout_at(deadline, self.client.request(req)).await??;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after");
        let no_retry = header("x-slack-no-retry").as_deref() == Some("1");
        let body = tokio::time::timeout_at(deadline, resp.into_body().collect())
            .await??
            .to_bytes();
        Ok(PostResult {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            retry_after,
            no_retry,
        })
    }
}

/// Slack's retry schedule for Events API deliveries: an attempt that is
/// not acknowledged with a 2xx within [`SLACK_ACK_TIMEOUT`] is retried
/// nearly immediately, then after about a minute, then after about five
/// (three retries, each with `X-Slack-Retry-Num` and `X-Slack-Retry-Reason`).
pub const SLACK_RETRY_DELAYS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(60),
    Duration::from_secs(300),
];
/// How long Slack waits for an Events API request to be acknowledged.
pub const SLACK_ACK_TIMEOUT: Duration = Duration::from_secs(3);

/// One attempt of a [`EventsPoster::deliver`]: its status (`None` for a
/// timeout or a failed connection) and the retry reason the next attempt
/// carries.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub status: Option<u16>,
    pub reason: &'static str,
}

impl EventsPoster {
    /// Deliver `payload` as Slack does: attempt, and on anything but a 2xx
    /// within [`SLACK_ACK_TIMEOUT`] retry on [`SLACK_RETRY_DELAYS`] divided
    /// by `time_scale` (tests shrink Slack's minutes), unless the app said
    /// `X-Slack-No-Retry: 1`. Returns every attempt; the last is a 2xx if
    /// the event was delivered.
    pub async fn deliver(&self, payload: &Value, time_scale: u32) -> Vec<Attempt> {
        let body = payload.to_string().into_bytes();
        let mut attempts: Vec<Attempt> = Vec::new();
        for retry in 0..=SLACK_RETRY_DELAYS.len() {
            let opts = PostOptions {
                retry: attempts.last().map(|a| {
                    (
                        u32::try_from(retry).unwrap_or(u32::MAX),
                        a.reason.to_string(),
                    )
                }),
                timeout: Some(SLACK_ACK_TIMEOUT),
                ..PostOptions::default()
            };
            let (attempt, no_retry) =
                match self.post_raw(body.clone(), "application/json", &opts).await {
                    Ok(r) if (200..300).contains(&r.status) => {
                        attempts.push(Attempt {
                            status: Some(r.status),
                            reason: "",
                        });
                        return attempts;
                    }
                    Ok(r) => (
                        Attempt {
                            status: Some(r.status),
                            reason: "http_error",
                        },
                        r.no_retry,
                    ),
                    Err(e) if e.is::<tokio::time::error::Elapsed>() => (
                        Attempt {
                            status: None,
                            reason: "http_timeout",
                        },
                        false,
                    ),
                    Err(_) => (
                        Attempt {
                            status: None,
                            reason: "connection_failed",
                        },
                        false,
                    ),
                };
            attempts.push(attempt);
            let Some(delay) = SLACK_RETRY_DELAYS.get(retry) else {
                break;
            };
            if no_retry {
                break;
            }
            tokio::time::sleep(*delay / time_scale.max(1)).await;
        }
        attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_slacks_documented_example() {
        // From Slack's "Verifying requests from Slack" guide.
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = sign(
            "8f742231b10e8888abcd99yyyzzz85a5",
            "1531420618",
            body.as_bytes(),
        );
        assert_eq!(
            sig,
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }
}

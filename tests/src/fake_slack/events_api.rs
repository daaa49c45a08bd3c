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
}

#[derive(Clone, Debug)]
pub struct PostResult {
    pub status: u16,
    pub body: String,
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
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
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
        let resp =
            tokio::time::timeout(Duration::from_secs(10), self.client.request(req)).await??;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
            .await??
            .to_bytes();
        Ok(PostResult {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
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

//! OpenClaw's `POST /api/v1/admin/rpc` (the bundled admin-http-rpc
//! plugin, enabled by `init`): the same control-plane methods as the
//! WebSocket protocol, over plain HTTP with the gateway's bearer token.

use std::{fmt, time::Duration};

use serde_json::{Value, json};

use super::{OpenClawArgs, notices::NoticesError};

/// Calls to OpenClaw's `POST /api/v1/admin/rpc` (admin-http-rpc plugin,
/// enabled by `init`).
pub struct AdminRpc {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl fmt::Debug for AdminRpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminRpc")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl AdminRpc {
    pub fn new(gateway: &OpenClawArgs) -> Result<Self, NoticesError> {
        let token = gateway.bearer_token()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(gateway.connect_timeout_secs.max(1)))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| NoticesError::Rpc {
                method: "client",
                message: e.to_string(),
            })?;
        let url = format!("{}/api/v1/admin/rpc", gateway.url.trim_end_matches('/'));
        Ok(Self { http, url, token })
    }

    pub async fn call(&self, method: &'static str, params: Value) -> Result<Value, NoticesError> {
        let err = |message: String| NoticesError::Rpc { method, message };
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&json!({"method": method, "params": params}))
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| err(format!("HTTP {status}, body not JSON: {e}")))?;
        if body.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(body.get("payload").cloned().unwrap_or(Value::Null));
        }
        let message = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}"));
        Err(err(message))
    }
}

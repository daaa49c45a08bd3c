//! The OpenClaw gateway running in the same pod, driven over its HTTP API on
//! loopback.
//!
//! Turns go through OpenClaw's `POST /v1/responses` (the only surface whose
//! usage includes prompt-cache reads and writes), one OpenClaw session per
//! conversation via `x-openclaw-session-key`. The generic relay owns queues,
//! retries and timeouts; this adapter adds what is specific to OpenClaw:
//! readiness from `/readyz`'s JSON body, valid session keys, and the bearer
//! token that never leaves the pod.

use std::{
    fmt,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{future::BoxFuture, stream::BoxStream};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::model_proxy::health::ModelHealth;

use super::{
    Readiness, ReplyStream, TurnRequest, Workload, WorkloadError, WorkloadNotice,
    responses::{ResponsesConfig, ResponsesWorkload, SessionBinding},
};

pub mod admin_rpc;
pub mod baseline;
pub mod config;
pub mod notices;
pub mod services;

pub const SESSION_HEADER: &str = "x-openclaw-session-key";
pub const DEFAULT_MODEL: &str = "openclaw/default";
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:18789";
/// Session-key namespaces OpenClaw keeps for itself (HTTP 400 if used).
pub const RESERVED_SESSION_PREFIXES: [&str; 3] = ["subagent:", "cron:", "acp:"];
const SESSION_PREFIX: &str = "clawswarm-";
/// Longest readable part of a session key; the hash keeps it unique.
const MAX_READABLE: usize = 48;
/// Largest `/readyz` body read; the real one is a few hundred bytes.
const MAX_READY_BODY: usize = 64 * 1024;

/// How the sidecar reaches the OpenClaw gateway. Flattened into the
/// sidecar's config.
#[derive(clap::Args, Clone)]
pub struct OpenClawArgs {
    /// The gateway's base URL (loopback: the token is full operator authority).
    #[arg(id = "openclaw-url", long = "openclaw-url", env = "CLAWSWARM_OPENCLAW_URL", default_value = DEFAULT_BASE_URL)]
    pub url: String,
    /// File holding the gateway's bearer token (preferred over the variable).
    #[arg(
        id = "openclaw-token-file",
        long = "openclaw-token-file",
        env = "CLAWSWARM_OPENCLAW_TOKEN_FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// The gateway's bearer token.
    #[arg(
        id = "openclaw-token",
        long = "openclaw-token",
        env = "CLAWSWARM_OPENCLAW_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Longest silence tolerated while a reply streams, in seconds. OpenClaw
    /// retries a failing model for 70–90 s before failing the stream, so this
    /// must be longer than that to let its error reach the person.
    #[arg(
        id = "openclaw-idle-timeout-secs",
        long = "openclaw-idle-timeout-secs",
        env = "CLAWSWARM_OPENCLAW_IDLE_TIMEOUT_SECS",
        default_value_t = 180
    )]
    pub idle_timeout_secs: u64,
    #[arg(
        id = "openclaw-connect-timeout-secs",
        long = "openclaw-connect-timeout-secs",
        env = "CLAWSWARM_OPENCLAW_CONNECT_TIMEOUT_SECS",
        default_value_t = 5
    )]
    pub connect_timeout_secs: u64,
}

impl fmt::Debug for OpenClawArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenClawArgs")
            .field("url", &self.url)
            .field("token_file", &self.token_file)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .finish()
    }
}

impl Default for OpenClawArgs {
    fn default() -> Self {
        Self {
            url: DEFAULT_BASE_URL.into(),
            token_file: None,
            token: None,
            idle_timeout_secs: 180,
            connect_timeout_secs: 5,
        }
    }
}

impl OpenClawArgs {
    /// The bearer token: the file wins over the variable; an empty token is
    /// an error rather than an unauthenticated gateway.
    pub fn bearer_token(&self) -> Result<String, WorkloadError> {
        let token = match (&self.token_file, &self.token) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                WorkloadError::NotConfigured(format!(
                    "cannot read CLAWSWARM_OPENCLAW_TOKEN_FILE {}: {e}",
                    path.display()
                ))
            })?,
            (None, Some(t)) => t.clone(),
            (None, None) => {
                return Err(WorkloadError::NotConfigured(
                    "set CLAWSWARM_OPENCLAW_TOKEN_FILE, CLAWSWARM_OPENCLAW_TOKEN or CLAWSWARM_WORKLOAD_TOKEN to the gateway's bearer token".into(),
                ));
            }
        };
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err(WorkloadError::NotConfigured(
                "the OpenClaw gateway token is empty".into(),
            ));
        }
        Ok(token)
    }
}

pub struct OpenClawWorkload {
    inner: ResponsesWorkload,
    http: reqwest::Client,
    ready_url: String,
    connect_timeout: Duration,
    notices: Mutex<Option<BoxStream<'static, WorkloadNotice>>>,
    /// The model proxy's findings, added to the readiness detail: a gateway
    /// that is up but whose key is rejected should say so where operators
    /// look (`clawswarm agents list`, `/agent status`).
    model_health: Option<Arc<ModelHealth>>,
}

impl OpenClawWorkload {
    pub fn new(args: &OpenClawArgs) -> Result<Self, WorkloadError> {
        let token = args.bearer_token()?;
        let base = args.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(WorkloadError::NotConfigured(format!(
                "CLAWSWARM_OPENCLAW_URL must be an http(s) URL, got {base:?}"
            )));
        }
        let connect_timeout = Duration::from_secs(args.connect_timeout_secs.max(1));
        let inner = ResponsesWorkload::new(ResponsesConfig {
            base_url: base.clone(),
            bearer_token: Some(token),
            model: DEFAULT_MODEL.into(),
            session: SessionBinding::Header(SESSION_HEADER.into()),
            // OpenClaw keeps its own sessions (by the session header).
            ready: super::responses::ReadyProbe::Path("/readyz".into()),
            history: super::responses::HistoryConfig::off(),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
            connect_timeout,
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|e| WorkloadError::NotConfigured(format!("http client: {e}")))?;
        Ok(Self {
            inner,
            http,
            ready_url: format!("{base}/readyz"),
            connect_timeout,
            notices: Mutex::new(None),
            model_health: None,
        })
    }

    /// Report the model proxy's findings with this workload's readiness.
    pub fn with_model_health(mut self, health: Arc<ModelHealth>) -> Self {
        self.model_health = Some(health);
        self
    }

    /// Hand this workload the notices stream (see the notices module); it
    /// is given to the relay once through [`Workload::take_notices`].
    pub fn with_notices(self, stream: BoxStream<'static, WorkloadNotice>) -> Self {
        if let Ok(mut slot) = self.notices.lock() {
            *slot = Some(stream);
        }
        self
    }
}

#[derive(Deserialize)]
struct ReadyBody {
    ready: Option<bool>,
}

impl Workload for OpenClawWorkload {
    fn kind(&self) -> &'static str {
        "openclaw"
    }

    fn check_ready(&self) -> BoxFuture<'_, Readiness> {
        Box::pin(async move {
            let resp = match self
                .http
                .get(&self.ready_url)
                .timeout(self.connect_timeout)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) if e.is_connect() => {
                    return Readiness::not_ready("openclaw gateway is not listening yet");
                }
                Err(e) if e.is_timeout() => {
                    return Readiness::not_ready("openclaw gateway readiness check timed out");
                }
                Err(_) => return Readiness::not_ready("openclaw gateway readiness check failed"),
            };
            let status = resp.status().as_u16();
            let body = match read_limited(resp, MAX_READY_BODY).await {
                Some(b) => b,
                None => {
                    return Readiness::not_ready(format!(
                        "openclaw /readyz body unreadable (HTTP {status})"
                    ));
                }
            };
            // Unknown paths answer 200 with the control UI, so only the JSON
            // `ready` field counts, whatever the status code.
            match serde_json::from_slice::<ReadyBody>(&body)
                .ok()
                .and_then(|b| b.ready)
            {
                Some(true) => match self.model_health.as_ref().and_then(|h| h.problem()) {
                    Some(problem) => {
                        Readiness::ready(format!("openclaw gateway ready, but {problem}"))
                    }
                    None => Readiness::ready("openclaw gateway ready"),
                },
                Some(false) => {
                    Readiness::not_ready(format!("openclaw gateway starting (HTTP {status})"))
                }
                None => Readiness::not_ready(format!(
                    "openclaw /readyz answered HTTP {status} without a ready field"
                )),
            }
        })
    }

    fn start_turn(&self, mut turn: TurnRequest) -> ReplyStream {
        turn.conversation = session_key(&turn.conversation);
        self.inner.start_turn(turn)
    }

    fn take_notices(&self) -> Option<BoxStream<'static, WorkloadNotice>> {
        self.notices.lock().ok().and_then(|mut slot| slot.take())
    }
}

async fn read_limited(mut resp: reqwest::Response, max: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        if out.len() + chunk.len() > max {
            return None;
        }
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

/// The OpenClaw session key for a conversation: `clawswarm-<readable>-<hash>`.
///
/// Stable (same conversation, same key, across restarts), collision-free
/// (the hash covers the whole original id, so ids that sanitize alike still
/// differ), only `[a-z0-9_-]`, and never in a reserved namespace because it
/// always starts with `clawswarm-`.
pub fn session_key(conversation: &str) -> String {
    let digest = Sha256::digest(conversation.as_bytes());
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let mut readable = String::with_capacity(MAX_READABLE);
    let mut last_dash = true;
    for c in conversation.chars() {
        if readable.len() >= MAX_READABLE {
            break;
        }
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '_' {
            readable.push(c);
            last_dash = false;
        } else if !last_dash {
            readable.push('-');
            last_dash = true;
        }
    }
    let readable = readable.trim_matches('-');
    if readable.is_empty() {
        format!("{SESSION_PREFIX}direct-{hash}")
    } else {
        format!("{SESSION_PREFIX}{readable}-{hash}")
    }
}

#[cfg(test)]
mod tests;

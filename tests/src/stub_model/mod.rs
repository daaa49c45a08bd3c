//! A faithful, deterministic stand-in for a model provider (and for OpenClaw's own `/v1/responses`).
//!
//! It speaks the three wire formats clawswarm meets — OpenAI Responses, OpenAI Chat Completions
//! and Anthropic Messages, streamed or not — with replies scripted by directives in the last user
//! message (see [`script`]), failures injectable per call, and every call logged (see [`log`]) so
//! tests can check what the sidecar or OpenClaw actually sent and what it should have metered.
//!
//! It runs in-process ([`StubModel::start`]) or as the `clawswarm-stub-model` binary.
//!
//! Endpoints: `POST /v1/responses`, `POST /v1/chat/completions`, `POST /v1/messages`,
//! `GET /v1/models`, `GET /readyz` (unless `readyz` is off), `GET /healthz`, and for tests `POST /_stub/fail`
//! (`{"mode":"down|http_500|http_429|in_band_error|none","count":N}`), `GET /_stub/requests`,
//! `DELETE /_stub/requests`.
//!
//! Quick reference for test authors:
//! - Reply: `echo: <last user text without directives>` in chunks of 8 chars; directives
//!   `[chunks=N]` (`w0 ` … `wN-1 `), `[delay_ms=N]`, `[fail_before_content]`, `[fail_after=N]`,
//!   `[hang]`, `[http_status=N]`, `[cache_read=N]`, `[cache_write=N]`.
//! - Usage: `input_tokens = max(1, ceil(chars of all input_texts / 4))`, `output_tokens` = chunks
//!   sent, cache figures from directives. Reported in each API's own fields, logged as billed:
//!   calls answered with an HTTP error or a dropped connection bill nothing; in-band failures and
//!   cancellations bill input, cache and the chunks that went out.
//! - Precedence: an injected failure (`fail_next`) beats directives; `[hang]` beats
//!   `[fail_before_content]` beats `[fail_after=N]`; `[http_status=N]` beats all of them.
//! - Only calls that reach the model are logged: a 401 or a malformed body is not a model call.

pub mod anthropic;
pub mod chat_completions;
mod common;
pub mod log;
pub mod responses;
pub mod script;
mod sse;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_failures;
#[cfg(test)]
mod tests_stored;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

pub use log::{Api, LoggedRequest, Outcome, Usage};
pub use script::FailMode;

pub(crate) use common::*;

use log::{CallRecord, RequestLog};
use script::Script;

/// Largest request body accepted. OpenClaw sends ~18k tokens of system prompt and tools plus the
/// whole history on every call, far beyond axum's 2 MB default.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Settings for one stub server.
#[derive(Debug, Clone)]
pub struct StubConfig {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// `/readyz` answers 503 until this long after start, to exercise readiness gating.
    pub ready_after: Duration,
    /// Pause before each chunk unless a `[delay_ms=N]` directive says otherwise.
    pub chunk_delay: Duration,
    /// When set, model calls must carry it (`Authorization: Bearer` for OpenAI, `x-api-key`
    /// for Anthropic) or get a 401.
    pub api_key: Option<String>,
    /// JSONL call log, appended to.
    pub log_path: Option<PathBuf>,
    /// Calls kept in memory for [`StubModel::requests`] and `GET /_stub/requests`; the oldest
    /// are dropped first. Bounded because OpenClaw calls carry ~70 kB of text each.
    pub keep_requests: usize,
    /// How long [`StubModel::shutdown`] lets in-flight replies finish before cutting them off.
    pub shutdown_grace: Duration,
    /// Turns of history `/v1/responses` keeps per `x-openclaw-session-key`, standing in for
    /// OpenClaw's sessions (see [`responses`]); 0 makes it stateless.
    pub session_turns: usize,
    /// Whether `/v1/responses` honours `store` / `previous_response_id` as OpenAI does.
    pub previous_response: PreviousResponse,
    /// Stored responses kept for `previous_response_id`; the oldest are forgotten first (a
    /// later reference to one gets OpenAI's 400, as an expired one would).
    pub keep_responses: usize,
    /// Serve `GET /readyz`; without it the path is a 404, as on a hosted provider.
    pub readyz: bool,
}

/// How `/v1/responses` treats `previous_response_id` (see [`responses`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreviousResponse {
    /// Like OpenAI: stored responses are continued from; an unknown id is a 400.
    #[default]
    Supported,
    /// Like a server that does not implement it: the field is ignored and not echoed.
    Ignored,
    /// Like a strict server that does not implement it: a 400 for an unknown argument.
    Rejected,
}

impl std::str::FromStr for PreviousResponse {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "supported" => Ok(Self::Supported),
            "ignored" => Ok(Self::Ignored),
            "rejected" => Ok(Self::Rejected),
            other => Err(format!(
                "{other:?}: expected supported, ignored or rejected"
            )),
        }
    }
}

impl Default for StubConfig {
    fn default() -> Self {
        StubConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ready_after: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            api_key: None,
            log_path: None,
            keep_requests: 10_000,
            shutdown_grace: Duration::from_secs(2),
            session_turns: 100,
            previous_response: PreviousResponse::Supported,
            keep_responses: 1000,
            readyz: true,
        }
    }
}

/// What the person wrote in a user message: the text without the context
/// blocks OpenClaw wraps in `<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>` …
/// `<<<END_OPENCLAW_INTERNAL_CONTEXT>>>` (it sends "Active exec sessions" as
/// a user message of its own when `exec` is allowed). `None` when nothing
/// else is left: that message is not the person's, and directives are read
/// from the person's last one.
pub(crate) fn person_text(text: &str) -> Option<String> {
    const BEGIN: &str = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>";
    const END: &str = "<<<END_OPENCLAW_INTERNAL_CONTEXT>>>";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        out.push_str(&rest[..start]);
        match rest[start..].find(END) {
            Some(end) => rest = &rest[start + end + END.len()..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    let out = out.trim();
    (!out.is_empty()).then(|| out.to_string())
}

/// State shared by all handlers.
pub(crate) struct Shared {
    config: StubConfig,
    started: Instant,
    log: Arc<RequestLog>,
    /// Pending injected failure and how many more calls it applies to.
    fail: Mutex<(FailMode, u32)>,
    ids: AtomicU64,
    id_salt: u32,
    sessions: Arc<responses::Sessions>,
    stored: Arc<responses::Stored>,
}

/// The API-independent view of one model call, produced by each API's parser.
pub(crate) struct Call {
    pub api: Api,
    pub model: String,
    pub input_texts: Vec<String>,
    pub last_user_text: String,
    pub stream: bool,
    pub user: Option<String>,
    pub session_key: Option<String>,
    /// Names of the tools the caller offers (Anthropic `tools[].name`).
    pub tools: Vec<String>,
    /// The last message carries a tool's result (Anthropic `tool_result`),
    /// and the text of every user message that carries none.
    pub tool_result_turn: bool,
    pub asked_text: String,
}

/// What to do with a parsed call.
#[allow(
    clippy::large_enum_variant,
    reason = "built once per call and matched immediately; boxing would only add an allocation"
)]
pub(crate) enum Begin {
    /// Drop the connection without answering (already logged).
    Down,
    /// Answer with this HTTP error status (already logged).
    Http(u16),
    /// Play the script; the record logs the call when it ends.
    Run(Script, CallRecord),
}

impl Shared {
    /// Decides how a call goes (injected failures first, then directives) and starts its record.
    pub(crate) fn begin(&self, call: Call) -> Begin {
        let mut script = Script::new(
            &call.input_texts,
            &call.last_user_text,
            self.config.chunk_delay,
        );
        let injected = self.take_fail();
        let entry = LoggedRequest {
            ts_ms: log::now_ms(),
            api: call.api,
            session_key: call.session_key,
            user: call.user,
            model: call.model,
            input_texts: call.input_texts,
            last_user_text: call.last_user_text,
            previous_response_id: None,
            stream: call.stream,
            usage: Usage::default(),
            outcome: Outcome::Error,
            chunks: 0,
        };
        let mut record = CallRecord::new(self.log.clone(), entry);
        if injected == Some(FailMode::Down) {
            record.finish(Outcome::Error, Usage::default(), 0);
            return Begin::Down;
        }
        if let Some(mode) = injected {
            script.inject(mode);
        }
        if let Some(status) = script.http_status {
            record.finish(Outcome::Error, Usage::default(), 0);
            return Begin::Http(status);
        }
        // Input is billed as soon as the model "starts", so a cancellation bills it too.
        record.progress(script.usage(0), 0);
        Begin::Run(script, record)
    }

    fn take_fail(&self) -> Option<FailMode> {
        let mut f = self.fail.lock().unwrap_or_else(PoisonError::into_inner);
        if f.1 == 0 || f.0 == FailMode::None {
            return None;
        }
        f.1 -= 1;
        Some(f.0)
    }

    fn set_fail(&self, mode: FailMode, count: u32) {
        *self.fail.lock().unwrap_or_else(PoisonError::into_inner) = (mode, count);
    }

    /// A fresh id like `resp_0000001f3a9c…`: unique per server, cheap, and recognisable.
    pub(crate) fn new_id(&self, prefix: &str) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_{:08x}{n:016x}", self.id_salt)
    }

    /// Whether a `Bearer` token or `x-api-key` value is acceptable.
    pub(crate) fn key_ok(&self, presented: Option<&str>) -> bool {
        match &self.config.api_key {
            None => true,
            Some(k) => presented == Some(k.as_str()),
        }
    }
}

/// Response extension telling the connection layer to drop the connection unanswered.
#[derive(Clone, Copy)]
pub(crate) struct DropConnection;

#[derive(Debug)]
struct ProviderDown;

impl std::fmt::Display for ProviderDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stub model: simulated provider outage")
    }
}

impl std::error::Error for ProviderDown {}

/// The `Down` failure: a marker response the connection layer turns into a dropped connection.
pub(crate) fn down_response() -> Response {
    let mut r = StatusCode::SERVICE_UNAVAILABLE.into_response();
    r.extensions_mut().insert(DropConnection);
    r
}

/// Builds the router (exposed for tests that want to mount it elsewhere).
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut router: Router<Arc<Shared>> = Router::new();
    if shared.config.readyz {
        router = router.route("/readyz", get(readyz));
    }
    router
        .route("/v1/responses", post(responses::handle))
        .route("/v1/chat/completions", post(chat_completions::handle))
        .route("/v1/messages", post(anthropic::handle))
        .route("/v1/models", get(models))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"ok": true})) }),
        )
        .route("/_stub/fail", post(set_fail))
        .route("/_stub/requests", get(list_requests).delete(clear_requests))
        .fallback(|| async {
            openai_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "stub model: no such endpoint",
                None,
                None,
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if s.started.elapsed() >= s.config.ready_after {
        axum::Json(json!({"ready": true})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false})),
        )
            .into_response()
    }
}

/// Model names the stub answers to (any name works; these are what `/v1/models` lists).
pub const MODELS: [&str; 3] = ["stub-model", "claude-sonnet-4-20250514", "gpt-4.1-mini"];

/// `GET /v1/models` in OpenAI shape, or Anthropic shape when `anthropic-version` is sent.
async fn models(headers: HeaderMap) -> Response {
    if headers.contains_key("anthropic-version") {
        let data: Vec<Value> = MODELS
            .iter()
            .map(|m| json!({"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}))
            .collect();
        return axum::Json(
            json!({"data": data, "has_more": false, "first_id": MODELS[0], "last_id": MODELS[2]}),
        )
        .into_response();
    }
    let data: Vec<Value> = MODELS
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "clawswarm-stub"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

#[derive(serde::Deserialize)]
struct FailRequest {
    mode: FailMode,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

async fn set_fail(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FailRequest>(&body) {
        Ok(f) => {
            s.set_fail(f.mode, f.count);
            axum::Json(json!({"mode": f.mode, "count": f.count})).into_response()
        }
        Err(e) => openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!(
                "expected {{\"mode\":\"down|http_500|http_429|in_band_error|none\",\"count\":N}}: {e}"
            ),
            Some("mode"),
            None,
        ),
    }
}

async fn list_requests(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.log.snapshot()).into_response()
}

async fn clear_requests(State(s): State<Arc<Shared>>) -> StatusCode {
    s.log.clear();
    StatusCode::NO_CONTENT
}

/// A running stub server. The server task belongs to this value: dropping it aborts the server,
/// [`StubModel::shutdown`] stops it gracefully.
pub struct StubModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl StubModel {
    /// Binds `config.listen` and serves on the current tokio runtime.
    pub async fn start(config: StubConfig) -> anyhow::Result<StubModel> {
        let log = RequestLog::open(config.log_path.as_deref(), config.keep_requests)
            .map_err(|e| anyhow::anyhow!("opening stub model log {:?}: {e}", config.log_path))?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding stub model to {}: {e}", config.listen))?;
        let addr = listener.local_addr()?;
        let grace = config.shutdown_grace;
        let session_turns = config.session_turns;
        let keep_responses = config.keep_responses;
        let shared = Arc::new(Shared {
            config,
            started: Instant::now(),
            log: Arc::new(log),
            fail: Mutex::new((FailMode::None, 0)),
            ids: AtomicU64::new(1),
            id_salt: rand::random(),
            sessions: Arc::new(responses::Sessions::new(session_turns)),
            stored: Arc::new(responses::Stored::new(keep_responses)),
        });
        let (stop, stopped) = watch::channel(false);
        let app = router(shared.clone());
        let task = tokio::spawn(serve(listener, app, stopped, grace));
        Ok(StubModel {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without `/v1` (what Anthropic clients and OpenClaw's
    /// `anthropic-messages` provider want).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1` (what OpenAI clients want).
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Calls logged so far (the most recent `keep_requests`), oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.log.snapshot()
    }

    /// Sum of the usage of the calls kept in memory: what a sidecar metering them should total.
    pub fn total_usage(&self) -> Usage {
        let mut total = Usage::default();
        for r in self.shared.log.snapshot() {
            total += r.usage;
        }
        total
    }

    /// Waits until at least `n` calls are logged, or `timeout` passes (then returns what there
    /// is). Cancellations are logged when the server notices the disconnect, which happens
    /// shortly after the client gives up, so tests checking them should wait with this.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<LoggedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.shared.log.snapshot();
            if r.len() >= n || tokio::time::Instant::now() >= deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Forgets the calls kept in memory.
    pub fn clear_requests(&self) {
        self.shared.log.clear()
    }

    /// Makes the next `n` model calls fail with `mode` (replacing any pending failure).
    pub fn fail_next(&self, mode: FailMode, n: u32) {
        self.shared.set_fail(mode, n)
    }

    /// Stops accepting, lets in-flight replies finish for up to `shutdown_grace`, then cuts off
    /// the rest.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for StubModel {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The accept loop. It is hand-rolled rather than `axum::serve` so that the `Down` failure can
/// drop a connection without a response, which only a failing hyper service can do.
async fn serve(
    listener: TcpListener,
    app: Router,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Connection tasks live in this set, so aborting or finishing the server ends them too.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "stub model: accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let svc = tower::service_fn(move |req: http::Request<Incoming>| {
                    let app = app.clone();
                    async move {
                        let resp = app.oneshot(req).await.unwrap_or_else(|e: Infallible| match e {});
                        if resp.extensions().get::<DropConnection>().is_some() {
                            Err(ProviderDown)
                        } else {
                            Ok(resp)
                        }
                    }
                });
                let conn = builder
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .into_owned();
                let conn = graceful.watch(conn);
                conns.spawn(async move {
                    let _ = conn.await;
                });
                while conns.try_join_next().is_some() {}
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}

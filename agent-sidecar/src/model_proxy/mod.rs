//! The model provider's API, served on loopback for OpenClaw, so the real
//! key stays in the sidecar's container and every model call is metered.
//!
//! `POST /v1/messages` (Anthropic) and `POST /v1/chat/completions`
//! (OpenAI-compatible) are forwarded to the real provider with the real key;
//! `GET /v1/models` passes through. Streams are forwarded chunk by chunk as
//! they arrive while a [`usage::UsageTap`] reads the provider's own usage
//! figures from them; the figures go to [`SidecarMetrics`] and to the
//! [`ledger::UsageLedger`], which also enforces the per-day and per-month
//! token budgets before a call goes out. Only this agent's workload may
//! spend the key: a call must present the agent's own proxy credential
//! (`CLAWSWARM_MODEL_PROXY_TOKEN_FILE`, which `init` writes into OpenClaw's
//! provider `apiKey`), so another local process that finds the port gets 401.

mod forward;
pub mod health;
pub mod ledger;
pub mod reply;
pub mod usage;

use std::{
    fmt,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::Value;
use time::OffsetDateTime;
use tracing::{debug, warn};

use crate::{
    metrics::{ModelCallLabels, SidecarMetrics},
    workload::Usage,
};
use forward::{
    MeteredBody, buffered, buffered_reply, copy_response_headers, unreachable_upstream,
    upstream_headers,
};
use ledger::{Budgets, UsageLedger};

/// OpenClaw sends ~18k tokens of system prompt and tools plus the whole
/// history on every call: far beyond axum's 2 MB default.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Largest non-streamed reply buffered to read its usage.
const MAX_BUFFERED_REPLY: usize = 32 * 1024 * 1024;

/// Which wire protocol a route speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderApi {
    /// Anthropic Messages (`POST /v1/messages`).
    Anthropic,
    /// OpenAI-compatible chat completions (`POST /v1/chat/completions`).
    Openai,
}

impl ProviderApi {
    pub fn label(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::Openai => "openai",
        }
    }
}

/// What the person gets when the proxy answers itself: a budget used up
/// (`CLAWSWARM_BUDGET_REPLY`), or a call the provider will not serve however
/// often it is retried, a rejected key or a model server that cannot be
/// reached (`CLAWSWARM_MODEL_FAILURE_REPLY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BudgetReply {
    /// An assistant message carrying the explanation (OpenClaw shows it
    /// as is, without retrying).
    Message,
    /// The provider's own 429 shape with `retry-after` until the reset.
    Error,
}

#[derive(clap::Args, Clone)]
pub struct ModelProxyArgs {
    /// Loopback address the proxy listens on (OpenClaw's provider baseUrl).
    #[arg(
        id = "model-proxy-listen",
        long = "model-proxy-listen",
        env = "CLAWSWARM_MODEL_PROXY_LISTEN",
        default_value = "127.0.0.1:18790"
    )]
    pub listen: SocketAddr,
    /// The real provider's base URL, without `/v1`.
    #[arg(
        id = "model-upstream-url",
        long = "model-upstream-url",
        env = "CLAWSWARM_MODEL_UPSTREAM_URL",
        default_value = "https://api.anthropic.com"
    )]
    pub upstream_url: String,
    /// File holding the real provider key (preferred over the variable).
    #[arg(
        id = "model-api-key-file",
        long = "model-api-key-file",
        env = "CLAWSWARM_MODEL_API_KEY_FILE"
    )]
    pub api_key_file: Option<PathBuf>,
    #[arg(
        id = "model-api-key",
        long = "model-api-key",
        env = "CLAWSWARM_MODEL_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Tokens per UTC day (all kinds, cached included); 0 = unlimited.
    #[arg(
        id = "daily-token-budget",
        long = "daily-token-budget",
        env = "CLAWSWARM_DAILY_TOKEN_BUDGET",
        default_value_t = 0
    )]
    pub daily_token_budget: u64,
    /// Tokens per UTC calendar month; 0 = unlimited.
    #[arg(
        id = "monthly-token-budget",
        long = "monthly-token-budget",
        env = "CLAWSWARM_MONTHLY_TOKEN_BUDGET",
        default_value_t = 0
    )]
    pub monthly_token_budget: u64,
    #[arg(id = "budget-reply", long = "budget-reply", env = "CLAWSWARM_BUDGET_REPLY", value_enum, default_value_t = BudgetReply::Message)]
    pub budget_reply: BudgetReply,
    /// A rejected key (401/403) or an unreachable model server: `message`
    /// tells the person why in the chat; `error` passes the provider's
    /// error (or a 502) through, for clients with their own failover.
    #[arg(id = "model-failure-reply", long = "model-failure-reply", env = "CLAWSWARM_MODEL_FAILURE_REPLY", value_enum, default_value_t = BudgetReply::Message)]
    pub failure_reply: BudgetReply,
    /// Where usage per day and month is kept; relative to CLAWSWARM_DATA_DIR.
    #[arg(
        id = "model-usage-file",
        long = "model-usage-file",
        env = "CLAWSWARM_MODEL_USAGE_FILE",
        default_value = "model-usage.json"
    )]
    pub usage_file: PathBuf,
    /// The credential callers must present (`x-api-key` or `Authorization:
    /// Bearer`); created when missing. Relative to CLAWSWARM_DATA_DIR.
    #[arg(
        id = "model-proxy-token-file",
        long = "model-proxy-token-file",
        env = "CLAWSWARM_MODEL_PROXY_TOKEN_FILE",
        default_value = "model-proxy-token"
    )]
    pub token_file: PathBuf,
    /// Longest silence from the provider while a reply streams, in seconds.
    #[arg(
        id = "model-read-timeout-secs",
        long = "model-read-timeout-secs",
        env = "CLAWSWARM_MODEL_READ_TIMEOUT_SECS",
        default_value_t = 300
    )]
    pub read_timeout_secs: u64,
    #[arg(
        id = "model-connect-timeout-secs",
        long = "model-connect-timeout-secs",
        env = "CLAWSWARM_MODEL_CONNECT_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub connect_timeout_secs: u64,
}

impl fmt::Debug for ModelProxyArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelProxyArgs")
            .field("listen", &self.listen)
            .field("upstream_url", &self.upstream_url)
            .field("api_key_file", &self.api_key_file)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("daily_token_budget", &self.daily_token_budget)
            .field("monthly_token_budget", &self.monthly_token_budget)
            .field("budget_reply", &self.budget_reply)
            .field("failure_reply", &self.failure_reply)
            .field("usage_file", &self.usage_file)
            .field("token_file", &self.token_file)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelProxyError {
    #[error(
        "set CLAWSWARM_MODEL_API_KEY_FILE or CLAWSWARM_MODEL_API_KEY to the model provider's key"
    )]
    NoKey,
    #[error("cannot read CLAWSWARM_MODEL_API_KEY_FILE {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the model provider key is empty or not a valid header value")]
    BadKey,
    #[error("cannot read or create CLAWSWARM_MODEL_PROXY_TOKEN_FILE {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CLAWSWARM_MODEL_UPSTREAM_URL must be an http(s) URL, got {0:?}")]
    BadUpstream(String),
    #[error("CLAWSWARM_MODEL_PROXY_LISTEN must be a loopback address, got {0}")]
    NotLoopback(SocketAddr),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error("http client: {0}")]
    Client(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("model proxy server: {0}")]
    Serve(std::io::Error),
}

impl ModelProxyError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NoKey | Self::KeyFile { .. } | Self::BadKey | Self::TokenFile { .. } => "key",
            Self::BadUpstream(_) | Self::NotLoopback(_) => "config",
            Self::Ledger(e) => e.metric_label(),
            Self::Client(_) => "client",
            Self::Bind { .. } => "bind",
            Self::Serve(_) => "serve",
        }
    }
}

/// Clock for budgets and the ledger (tests move it).
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

pub struct ModelProxy {
    http: reqwest::Client,
    upstream: String,
    key: HeaderValue,
    bearer: HeaderValue,
    /// What callers must present.
    client_token: String,
    daily_budget: AtomicU64,
    monthly_budget: AtomicU64,
    budget_reply: BudgetReply,
    failure_reply: BudgetReply,
    health: Arc<health::ModelHealth>,
    ledger: UsageLedger,
    metrics: Arc<SidecarMetrics>,
    clock: Clock,
}

impl ModelProxy {
    pub fn new(
        args: &ModelProxyArgs,
        metrics: Arc<SidecarMetrics>,
    ) -> Result<Arc<Self>, ModelProxyError> {
        Self::with_clock(args, metrics, Arc::new(OffsetDateTime::now_utc))
    }

    pub fn with_clock(
        args: &ModelProxyArgs,
        metrics: Arc<SidecarMetrics>,
        clock: Clock,
    ) -> Result<Arc<Self>, ModelProxyError> {
        if !args.listen.ip().is_loopback() {
            return Err(ModelProxyError::NotLoopback(args.listen));
        }
        let upstream = args.upstream_url.trim_end_matches('/').to_owned();
        if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
            return Err(ModelProxyError::BadUpstream(upstream));
        }
        let key = read_key(args)?;
        let mut key_header = HeaderValue::from_str(&key).map_err(|_| ModelProxyError::BadKey)?;
        let mut bearer =
            HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| ModelProxyError::BadKey)?;
        key_header.set_sensitive(true);
        bearer.set_sensitive(true);
        let client_token = crate::token_file::ensure(&args.token_file).map_err(|source| {
            ModelProxyError::TokenFile {
                path: args.token_file.clone(),
                source,
            }
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(args.connect_timeout_secs.max(1)))
            .read_timeout(Duration::from_secs(args.read_timeout_secs.max(1)))
            .build()
            .map_err(|e| ModelProxyError::Client(e.to_string()))?;
        Ok(Arc::new(Self {
            http,
            upstream,
            key: key_header,
            bearer,
            client_token,
            daily_budget: AtomicU64::new(args.daily_token_budget),
            monthly_budget: AtomicU64::new(args.monthly_token_budget),
            budget_reply: args.budget_reply,
            failure_reply: args.failure_reply,
            health: Arc::default(),
            ledger: UsageLedger::open(&args.usage_file)?,
            metrics,
            clock,
        }))
    }

    pub fn ledger(&self) -> &UsageLedger {
        &self.ledger
    }

    /// What the last calls found out about the provider (read by the
    /// workload's readiness check).
    pub fn health(&self) -> Arc<health::ModelHealth> {
        self.health.clone()
    }

    /// Answer a call the provider will not serve, remembering why.
    fn answer_problem(
        &self,
        api: ProviderApi,
        model: &str,
        stream: bool,
        problem: health::ModelProblem,
        passthrough: Response,
    ) -> Response {
        warn!(api = api.label(), problem = %problem, "model call failed");
        let reply = problem.reply_text();
        self.health.set(problem);
        match self.failure_reply {
            BudgetReply::Message => reply::assistant_text(api, model, stream, &reply),
            BudgetReply::Error => passthrough,
        }
    }

    pub fn budgets(&self) -> Budgets {
        Budgets {
            daily_tokens: self.daily_budget.load(Ordering::Relaxed),
            monthly_tokens: self.monthly_budget.load(Ordering::Relaxed),
        }
    }

    /// Change the budgets of a running proxy (an agent's override arriving
    /// from the controller); applies from the next call.
    pub fn set_budgets(&self, budgets: Budgets) {
        self.daily_budget
            .store(budgets.daily_tokens, Ordering::Relaxed);
        self.monthly_budget
            .store(budgets.monthly_tokens, Ordering::Relaxed);
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/models", get(models))
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(self.clone())
    }

    /// Serve until `shutdown` resolves. In-flight streams end with it.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ModelProxyError> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ModelProxyError::Serve)
    }

    fn count(&self, api: ProviderApi, result: &'static str) {
        self.metrics
            .model_calls
            .get_or_create(&ModelCallLabels {
                api: api.label(),
                result,
            })
            .inc();
    }

    fn record(&self, api: ProviderApi, usage: &Usage, result: &'static str) {
        self.count(api, result);
        self.metrics.add_usage(usage);
        // A synchronous write of a few hundred bytes, once per model call
        // (seconds apart): cheaper than a writer task, and the budget
        // survives a crash right after the call.
        if let Err(e) = self.ledger.record(usage, (self.clock)()) {
            warn!(error = %e, "usage ledger not persisted");
        }
        debug!(
            api = api.label(),
            result,
            input = usage.input_tokens,
            output = usage.output_tokens,
            "model call metered"
        );
    }

    /// The caller presented this agent's credential, the way its API
    /// presents a key.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let presented = |name: HeaderName| {
            headers
                .get(name)
                .map(|v| v.as_bytes().trim_ascii().to_vec())
        };
        let expected = self.client_token.as_bytes();
        let api_key = presented(HeaderName::from_static("x-api-key"));
        let bearer = presented(header::AUTHORIZATION).map(|v| {
            v.strip_prefix(b"Bearer ".as_slice())
                .map(<[u8]>::to_vec)
                .unwrap_or_default()
        });
        [api_key, bearer]
            .into_iter()
            .flatten()
            .any(|p| crate::token_file::matches(&p, expected))
    }

    /// Refuse a caller without the credential (counted, logged once per call).
    fn refuse_unauthorized(&self, api: ProviderApi) -> Response {
        self.count(api, "unauthorized");
        warn!(
            api = api.label(),
            "model call refused: the caller did not present this agent's proxy credential"
        );
        reply::unauthorized(api)
    }

    fn auth_headers(&self, api: ProviderApi) -> (HeaderName, HeaderValue) {
        match api {
            ProviderApi::Anthropic => (HeaderName::from_static("x-api-key"), self.key.clone()),
            ProviderApi::Openai => (header::AUTHORIZATION, self.bearer.clone()),
        }
    }
}

fn read_key(args: &ModelProxyArgs) -> Result<String, ModelProxyError> {
    use crate::secret::{SecretError, read};
    read(args.api_key_file.as_deref(), args.api_key.as_deref()).map_err(|e| match e {
        SecretError::Missing => ModelProxyError::NoKey,
        SecretError::File { path, source } => ModelProxyError::KeyFile { path, source },
        SecretError::Empty => ModelProxyError::BadKey,
    })
}

async fn messages(State(p): State<Arc<ModelProxy>>, headers: HeaderMap, body: Bytes) -> Response {
    forward_call(p, ProviderApi::Anthropic, "/v1/messages", headers, body).await
}

async fn chat_completions(
    State(p): State<Arc<ModelProxy>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    forward_call(
        p,
        ProviderApi::Openai,
        "/v1/chat/completions",
        headers,
        body,
    )
    .await
}

/// `GET /v1/models`: passed through with the real key; not a model call.
async fn models(State(p): State<Arc<ModelProxy>>, headers: HeaderMap) -> Response {
    let api = if headers.contains_key("anthropic-version") {
        ProviderApi::Anthropic
    } else {
        ProviderApi::Openai
    };
    if !p.authorized(&headers) {
        return p.refuse_unauthorized(api);
    }
    let (name, value) = p.auth_headers(api);
    let req = p
        .http
        .get(format!("{}/v1/models", p.upstream))
        .headers(upstream_headers(&headers))
        .header(name, value);
    match req.send().await {
        Ok(resp) => buffered(resp)
            .await
            .unwrap_or_else(|e| unreachable_upstream(api, &e)),
        Err(e) => unreachable_upstream(api, &e),
    }
}

async fn forward_call(
    p: Arc<ModelProxy>,
    api: ProviderApi,
    path: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !p.authorized(&headers) {
        return p.refuse_unauthorized(api);
    }
    let Ok(mut json) = serde_json::from_slice::<Value>(&body) else {
        return reply::invalid_request(api, "request body is not JSON");
    };
    let stream = json.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let model = json
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();

    if let Some(exhausted) = p.ledger.check(p.budgets(), (p.clock)()) {
        p.count(api, "budget_exhausted");
        warn!(
            api = api.label(),
            limit = exhausted.limit,
            "model call refused: token budget used up"
        );
        return match p.budget_reply {
            BudgetReply::Message => {
                reply::assistant_text(api, &model, stream, &exhausted.message())
            }
            BudgetReply::Error => reply::budget_error(
                api,
                &exhausted.message(),
                exhausted.retry_after_secs((p.clock)()),
            ),
        };
    }

    // Without this OpenAI-compatible servers send no usage on streams.
    let body = if api == ProviderApi::Openai && stream {
        if let Some(obj) = json.as_object_mut() {
            let opts = obj
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(opts) = opts.as_object_mut() {
                opts.insert("include_usage".into(), Value::Bool(true));
            }
        }
        Bytes::from(json.to_string())
    } else {
        body
    };

    let (name, value) = p.auth_headers(api);
    let req = p
        .http
        .post(format!("{}{path}", p.upstream))
        .headers(upstream_headers(&headers))
        .header(name, value)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            p.count(api, "unreachable");
            if e.is_connect() {
                let problem = health::ModelProblem::Unreachable {
                    upstream: p.upstream.clone(),
                    cause: crate::error_chain::innermost_cause(&e),
                };
                return p.answer_problem(
                    api,
                    &model,
                    stream,
                    problem,
                    unreachable_upstream(api, &e),
                );
            }
            return unreachable_upstream(api, &e);
        }
    };
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        p.count(api, "key_rejected");
        let (parts, bytes) = match buffered_reply(resp).await {
            Ok(r) => r,
            Err(e) => return unreachable_upstream(api, &e),
        };
        let problem = health::ModelProblem::KeyRejected {
            status: status.as_u16(),
            message: health::provider_message(&bytes),
        };
        let passthrough = Response::from_parts(parts, Body::from(bytes));
        return p.answer_problem(api, &model, stream, problem, passthrough);
    }
    if status.is_success() {
        p.health.clear();
    }
    if !status.is_success() {
        // Passed through faithfully (status, retry-after, body): OpenClaw's
        // own retry and failover logic knows these shapes.
        p.count(
            api,
            if status == StatusCode::TOO_MANY_REQUESTS {
                "rate_limited"
            } else {
                "error"
            },
        );
        return buffered(resp)
            .await
            .unwrap_or_else(|e| unreachable_upstream(api, &e));
    }
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        let (parts, bytes) = match buffered_reply(resp).await {
            Ok(r) => r,
            Err(e) => {
                p.count(api, "unreachable");
                return unreachable_upstream(api, &e);
            }
        };
        p.record(api, &usage::from_body(api, &bytes), "ok");
        return Response::from_parts(parts, Body::from(bytes));
    }
    let mut out = Response::builder().status(status);
    if let Some(h) = out.headers_mut() {
        copy_response_headers(resp.headers(), h);
    }
    let metered = MeteredBody::new(resp, api, p);
    out.body(Body::from_stream(metered))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests;

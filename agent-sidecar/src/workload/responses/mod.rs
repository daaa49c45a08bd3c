//! Adapter for any server speaking OpenAI-style streaming `/v1/responses`
//! (OpenAI itself, OpenClaw's gateway, vLLM, the tests' stub model).
//!
//! Between turns it keeps each conversation's context as its
//! [`HistoryMode`] says: by `previous_response_id` (the server keeps it),
//! by resending a bounded copy as `input` items (the sidecar keeps it), or
//! not at all (OpenClaw keeps its own sessions). The rule auto mode follows
//! is on [`ServerSupport`].

mod ready;
#[cfg(test)]
mod tests;
mod wire;

use std::{
    fmt,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, future::BoxFuture, stream::BoxStream};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

pub use ready::{DEFAULT_READY_PATH, ReadyProbe, is_loopback};
use wire::{ErrorBody, Event, MAX_ERROR_BODY, PreviousProblem, ResponseMeta};

use super::{
    Readiness, ReplyStream, TurnRequest, Workload, WorkloadError, WorkloadEvent,
    history::{
        Conversation, ConversationStore, HistoryLimits, HistoryMode, ServerSupport, Support,
    },
    sse::SseParser,
};

/// How a conversation is tied to one upstream session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionBinding {
    /// Send the conversation id in this header (OpenClaw: `x-openclaw-session-key`).
    Header(String),
    /// Send it as the request's `user` field (OpenAI).
    UserField,
}

/// Who keeps each conversation's context, and where the sidecar keeps its part.
#[derive(Clone, Debug)]
pub struct HistoryConfig {
    pub mode: HistoryMode,
    /// The sidecar's own directory for conversation state (never the workload's).
    pub dir: PathBuf,
    pub limits: HistoryLimits,
}

impl HistoryConfig {
    /// Every turn stands alone (the workload keeps sessions itself).
    pub fn off() -> Self {
        Self {
            mode: HistoryMode::Off,
            dir: PathBuf::new(),
            limits: HistoryLimits::default(),
        }
    }
}

#[derive(Clone)]
pub struct ResponsesConfig {
    /// Scheme, host and port (and optional path prefix), without `/v1/responses`.
    pub base_url: String,
    pub bearer_token: Option<String>,
    pub model: String,
    pub session: SessionBinding,
    pub ready: ReadyProbe,
    pub history: HistoryConfig,
    /// Longest silence tolerated while a reply streams.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

impl fmt::Debug for ResponsesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponsesConfig")
            .field("base_url", &self.base_url)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("model", &self.model)
            .field("session", &self.session)
            .field("ready", &self.ready)
            .field("history", &self.history)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

pub struct ResponsesWorkload {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    cfg: ResponsesConfig,
    endpoint: String,
    /// `None` with [`HistoryMode::Off`].
    store: Option<Arc<ConversationStore>>,
    support: ServerSupport,
    /// The provider's last refusal of our key, shown as readiness detail
    /// until a turn succeeds.
    rejection: Mutex<Option<String>>,
}

/// What one request carries besides the turn's text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Plan {
    previous: Option<String>,
    /// Send the sidecar's copy of earlier messages as `input` items.
    items: bool,
    store: Option<bool>,
}

impl ResponsesWorkload {
    pub fn new(cfg: ResponsesConfig) -> Result<Self, WorkloadError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| WorkloadError::NotConfigured(format!("http client: {e}")))?;
        let endpoint = format!("{}/v1/responses", cfg.base_url.trim_end_matches('/'));
        let store = (cfg.history.mode != HistoryMode::Off)
            .then(|| ConversationStore::new(cfg.history.dir.clone(), cfg.history.limits));
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                cfg,
                endpoint,
                store,
                support: ServerSupport::default(),
                rejection: Mutex::new(None),
            }),
        })
    }
}

impl Inner {
    fn plan(&self, conv: &Conversation) -> Plan {
        let sidecar = Plan {
            previous: None,
            items: true,
            store: Some(false),
        };
        match self.cfg.history.mode {
            HistoryMode::Off => Plan::default(),
            HistoryMode::Server => Plan {
                previous: conv.last_response_id.clone(),
                items: false,
                store: Some(true),
            },
            HistoryMode::Sidecar => sidecar,
            HistoryMode::Auto if self.support.get() == Support::Unsupported => sidecar,
            // The server may not know the id (expired, or it restarted):
            // the sidecar's copy then stands in, and the new id is kept.
            HistoryMode::Auto => match &conv.last_response_id {
                Some(id) => Plan {
                    previous: Some(id.clone()),
                    items: false,
                    store: Some(true),
                },
                None => Plan {
                    previous: None,
                    items: true,
                    store: Some(true),
                },
            },
        }
    }

    fn request(
        &self,
        turn: &TurnRequest,
        conv: &Conversation,
        plan: &Plan,
    ) -> reqwest::RequestBuilder {
        let input = if plan.items && !conv.items.is_empty() {
            let mut items: Vec<Value> = conv
                .items
                .iter()
                .map(|i| json!({"type": "message", "role": i.role.as_str(), "content": i.text}))
                .collect();
            items.push(json!({"type": "message", "role": "user", "content": turn.text}));
            Value::Array(items)
        } else {
            Value::String(turn.text.clone())
        };
        let mut body = json!({
            "model": self.cfg.model,
            "input": input,
            "stream": true,
        });
        if let Some(prev) = &plan.previous {
            body["previous_response_id"] = prev.clone().into();
        }
        if let Some(store) = plan.store {
            body["store"] = store.into();
        }
        let mut req = self.http.post(&self.endpoint);
        match &self.cfg.session {
            SessionBinding::Header(name) => req = req.header(name.as_str(), &turn.conversation),
            SessionBinding::UserField => body["user"] = turn.conversation.clone().into(),
        }
        if let Some(token) = &self.cfg.bearer_token {
            req = req.bearer_auth(token);
        }
        req.header("accept", "text/event-stream").json(&body)
    }

    fn http_error(&self, status: u16, body: ErrorBody) -> WorkloadError {
        if matches!(status, 401 | 403) {
            let e = WorkloadError::Rejected {
                status,
                message: body.message,
            };
            *lock(&self.rejection) = Some(e.to_string());
            return e;
        }
        WorkloadError::Http {
            status,
            message: body.message,
        }
    }

    /// A 400 about `previous_response_id`: how to ask again, or the error
    /// to report.
    fn after_refused_previous(
        &self,
        problem: PreviousProblem,
        body: &ErrorBody,
    ) -> Result<(), WorkloadError> {
        let mode = self.cfg.history.mode;
        match (problem, mode) {
            (PreviousProblem::NotFound, _) => {
                warn!(
                    history = %mode,
                    "the workload no longer knows this conversation's last response; asking again without it"
                );
                Ok(())
            }
            (PreviousProblem::Unsupported, HistoryMode::Auto) => {
                if self.support.set(Support::Unsupported) {
                    warn!(
                        "the workload refuses previous_response_id; the sidecar keeps conversation history from now on"
                    );
                }
                Ok(())
            }
            (PreviousProblem::Unsupported, _) => Err(WorkloadError::Http {
                status: 400,
                message: format!(
                    "the workload does not accept previous_response_id \
                     (CLAWSWARM_WORKLOAD_HISTORY={mode}; use auto or sidecar): {}",
                    body.message
                ),
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Workload for ResponsesWorkload {
    fn kind(&self) -> &'static str {
        "responses"
    }

    fn check_ready(&self) -> BoxFuture<'_, Readiness> {
        Box::pin(async move {
            let inner = &self.inner;
            let base = inner.cfg.base_url.trim_end_matches('/');
            let mut now = match &inner.cfg.ready {
                ReadyProbe::Off => Readiness::ready(format!(
                    "workload at {base} is not probed; turns report its errors"
                )),
                ReadyProbe::Path(path) => {
                    let url = format!("{base}{path}");
                    match inner
                        .http
                        .get(&url)
                        .timeout(inner.cfg.connect_timeout)
                        .send()
                        .await
                    {
                        Err(e) => Readiness::not_ready(format!(
                            "workload not reachable at {base}: {}",
                            short(&e)
                        )),
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let body = read_limited(resp, MAX_ERROR_BODY).await;
                            ready::verdict(status, &body, path)
                        }
                    }
                }
            };
            if let Some(rejected) = lock(&inner.rejection).clone() {
                now.detail = rejected;
            }
            now
        })
    }

    fn start_turn(&self, turn: TurnRequest) -> ReplyStream {
        let t = Turn {
            inner: self.inner.clone(),
            req: turn,
            conv: Conversation::default(),
            plan: None,
            resent: false,
            echo_checked: false,
            delivered: false,
            reply: String::new(),
            live: None,
        };
        futures::stream::unfold(State::Live(Box::new(t)), next).boxed()
    }
}

enum State {
    Live(Box<Turn>),
    Finished,
}

/// One turn: the request (asked at most twice, when the server refuses or
/// ignores `previous_response_id` before any content), its stream, and what
/// is remembered once it completes.
struct Turn {
    inner: Arc<Inner>,
    req: TurnRequest,
    conv: Conversation,
    /// `None` until the conversation is loaded and the first request planned.
    plan: Option<Plan>,
    resent: bool,
    echo_checked: bool,
    delivered: bool,
    /// The reply so far, for the sidecar's copy.
    reply: String,
    live: Option<Live>,
}

struct Live {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: SseParser,
}

type Item = Result<WorkloadEvent, WorkloadError>;

async fn next(state: State) -> Option<(Item, State)> {
    let State::Live(mut t) = state else {
        return None;
    };
    match t.step().await {
        Ok(ev @ WorkloadEvent::Delta(_)) => Some((Ok(ev), State::Live(t))),
        Ok(ev @ WorkloadEvent::Done(_)) => Some((Ok(ev), State::Finished)),
        Err(e) => Some((Err(e), State::Finished)),
    }
}

impl Turn {
    async fn step(&mut self) -> Result<WorkloadEvent, WorkloadError> {
        loop {
            if self.live.is_none() {
                self.open().await?;
            }
            match self.next_event().await? {
                Event::Started(meta) => {
                    let ignored = self.check_echo(&meta);
                    if ignored
                        && self.inner.cfg.history.mode == HistoryMode::Auto
                        && !self.delivered
                        && !self.resent
                    {
                        // Nothing reached the person yet: ask again, with the
                        // sidecar's copy, rather than answer without context.
                        self.live = None;
                        self.resent = true;
                        self.echo_checked = false;
                        self.plan = Some(self.inner.plan(&self.conv));
                    }
                }
                Event::Delta(d) => {
                    self.delivered = true;
                    if self.inner.cfg.history.mode.keeps_items()
                        && self.reply.len() <= self.inner.cfg.history.limits.max_bytes
                    {
                        self.reply.push_str(&d);
                    }
                    return Ok(WorkloadEvent::Delta(d));
                }
                Event::Done { meta, usage } => {
                    self.check_echo(&meta);
                    self.record(&meta).await;
                    return Ok(WorkloadEvent::Done(usage));
                }
            }
        }
    }

    async fn open(&mut self) -> Result<(), WorkloadError> {
        if self.plan.is_none() {
            if let Some(store) = &self.inner.store {
                self.conv = store.load_async(&self.req.conversation).await;
            }
            self.plan = Some(self.inner.plan(&self.conv));
        }
        let idle = self.inner.cfg.idle_timeout;
        loop {
            let plan = self.plan.clone().unwrap_or_default();
            let req = self.inner.request(&self.req, &self.conv, &plan);
            let resp = match tokio::time::timeout(idle, req.send()).await {
                Err(_) => return Err(WorkloadError::Timeout(idle)),
                Ok(Err(e)) => return Err(WorkloadError::Unavailable(short(&e))),
                Ok(Ok(r)) => r,
            };
            let status = resp.status().as_u16();
            if resp.status().is_success() {
                *lock(&self.inner.rejection) = None;
                self.live = Some(Live {
                    body: resp.bytes_stream().boxed(),
                    parser: SseParser::default(),
                });
                return Ok(());
            }
            let body = ErrorBody::parse(&read_limited(resp, MAX_ERROR_BODY).await);
            if status == 400
                && plan.previous.is_some()
                && !self.resent
                && let Some(problem) = body.previous_response_problem()
            {
                self.inner.after_refused_previous(problem, &body)?;
                self.resent = true;
                self.conv.last_response_id = None;
                self.plan = Some(self.inner.plan(&self.conv));
                continue;
            }
            return Err(self.inner.http_error(status, body));
        }
    }

    async fn next_event(&mut self) -> Result<Event, WorkloadError> {
        let idle = self.inner.cfg.idle_timeout;
        let Some(live) = self.live.as_mut() else {
            return Err(WorkloadError::Protocol("no request in flight".into()));
        };
        loop {
            match live.parser.next_event() {
                Err(e) => return Err(WorkloadError::Protocol(e.to_string())),
                Ok(Some(ev)) => match wire::interpret(&ev)? {
                    Some(event) => return Ok(event),
                    None => continue,
                },
                Ok(None) => {}
            }
            match tokio::time::timeout(idle, live.body.next()).await {
                Err(_) => return Err(WorkloadError::Timeout(idle)),
                Ok(None) => {
                    return Err(WorkloadError::Protocol(
                        "stream ended before response.completed".into(),
                    ));
                }
                Ok(Some(Err(e))) => return Err(WorkloadError::Unavailable(short(&e))),
                Ok(Some(Ok(bytes))) => live.parser.push(&bytes),
            }
        }
    }

    /// Whether the server ignored the `previous_response_id` this request
    /// sent (judged once per request, on the first response object seen).
    fn check_echo(&mut self, meta: &ResponseMeta) -> bool {
        if std::mem::replace(&mut self.echo_checked, true) {
            return false;
        }
        let Some(sent) = self.plan.as_ref().and_then(|p| p.previous.as_deref()) else {
            return false;
        };
        if meta.previous_response_id.as_deref() == Some(sent) {
            if self.inner.support.set(Support::Supported) {
                info!("the workload keeps conversation context (previous_response_id)");
            }
            return false;
        }
        if self.inner.support.set(Support::Unsupported) {
            match self.inner.cfg.history.mode {
                HistoryMode::Auto => warn!(
                    "the workload ignores previous_response_id; the sidecar keeps conversation history from now on"
                ),
                mode => warn!(
                    history = %mode,
                    "the workload ignores previous_response_id, so turns carry no context; set CLAWSWARM_WORKLOAD_HISTORY=auto or sidecar"
                ),
            }
        }
        true
    }

    /// Remember the finished turn. A failure to save costs the agent its
    /// memory of this turn, not the turn itself.
    async fn record(&mut self, meta: &ResponseMeta) {
        let Some(store) = self.inner.store.clone() else {
            return;
        };
        let mode = self.inner.cfg.history.mode;
        let plan = self.plan.clone().unwrap_or_default();
        let mut conv = std::mem::take(&mut self.conv);
        if mode.keeps_items() {
            conv.push_turn(&self.req.text, &self.reply, store.limits());
        }
        conv.last_response_id = match mode {
            HistoryMode::Server => meta.id.clone(),
            HistoryMode::Auto
                if plan.store == Some(true) && self.inner.support.get() != Support::Unsupported =>
            {
                meta.id.clone()
            }
            _ => None,
        };
        if mode == HistoryMode::Server && conv.last_response_id.is_none() {
            debug!("the workload's response has no id; the next turn starts without context");
        }
        if let Err(e) = store.save_async(&self.req.conversation, conv).await {
            warn!(error = %e, kind = e.metric_label(), "cannot save conversation history; the next turn will not remember this one");
        }
    }
}

async fn read_limited(mut resp: reqwest::Response, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = max.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= max {
            break;
        }
    }
    out
}

/// reqwest's Display chains sources only in `{:#}`; keep it on one line.
fn short(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

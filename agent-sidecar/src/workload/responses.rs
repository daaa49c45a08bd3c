//! Adapter for any server speaking OpenAI-style streaming `/v1/responses`
//! (OpenAI itself, OpenClaw's gateway, vLLM, the tests' stub model).

use std::{fmt, time::Duration};

use futures::{StreamExt, future::BoxFuture, stream::BoxStream};
use serde::Deserialize;

use super::{
    Readiness, ReplyStream, TurnRequest, Usage, Workload, WorkloadError, WorkloadEvent,
    sse::{SseEvent, SseParser},
};

/// Largest error body read from an upstream, to quote it to the person.
const MAX_ERROR_BODY: usize = 8 * 1024;

/// How a conversation is tied to one upstream session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionBinding {
    /// Send the conversation id in this header (OpenClaw: `x-openclaw-session-key`).
    Header(String),
    /// Send it as the request's `user` field (OpenAI).
    UserField,
}

#[derive(Clone)]
pub struct ResponsesConfig {
    /// Scheme, host and port (and optional path prefix), without `/v1/responses`.
    pub base_url: String,
    pub bearer_token: Option<String>,
    pub model: String,
    pub session: SessionBinding,
    /// Path whose answer says whether the server is ready; `None` probes by
    /// connecting only.
    pub ready_path: Option<String>,
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
            .field("ready_path", &self.ready_path)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

pub struct ResponsesWorkload {
    http: reqwest::Client,
    cfg: ResponsesConfig,
    endpoint: String,
}

impl ResponsesWorkload {
    pub fn new(cfg: ResponsesConfig) -> Result<Self, WorkloadError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| WorkloadError::NotConfigured(format!("http client: {e}")))?;
        let endpoint = format!("{}/v1/responses", cfg.base_url.trim_end_matches('/'));
        Ok(Self {
            http,
            cfg,
            endpoint,
        })
    }

    fn request(&self, turn: &TurnRequest) -> reqwest::RequestBuilder {
        let mut body = serde_json::json!({
            "model": self.cfg.model,
            "input": turn.text,
            "stream": true,
        });
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
}

impl Workload for ResponsesWorkload {
    fn kind(&self) -> &'static str {
        "responses"
    }

    fn check_ready(&self) -> BoxFuture<'_, Readiness> {
        Box::pin(async move {
            let base = self.cfg.base_url.trim_end_matches('/');
            let url = match &self.cfg.ready_path {
                Some(p) => format!("{base}{p}"),
                None => base.to_owned(),
            };
            let resp = match self
                .http
                .get(&url)
                .timeout(self.cfg.connect_timeout)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    return Readiness::not_ready(format!(
                        "workload not reachable at {base}: {}",
                        short(&e)
                    ));
                }
            };
            let status = resp.status();
            if self.cfg.ready_path.is_none() {
                return Readiness::ready(format!("workload answering at {base}"));
            }
            // Some servers answer unknown paths with 200 (a UI), so a JSON
            // `ready` field wins over the status code when present.
            let body = resp.bytes().await.unwrap_or_default();
            match serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("ready").and_then(|r| r.as_bool()))
            {
                Some(true) => Readiness::ready("workload ready"),
                Some(false) => Readiness::not_ready(format!(
                    "workload reports not ready (HTTP {})",
                    status.as_u16()
                )),
                None if status.is_success() => {
                    Readiness::ready(format!("workload answered HTTP {}", status.as_u16()))
                }
                None => Readiness::not_ready(format!(
                    "workload readiness check answered HTTP {}",
                    status.as_u16()
                )),
            }
        })
    }

    fn start_turn(&self, turn: TurnRequest) -> ReplyStream {
        let req = self.request(&turn);
        let idle = self.cfg.idle_timeout;
        let state = ReplyState::Pending(req);
        futures::stream::unfold(state, move |state| next(state, idle)).boxed()
    }
}

enum ReplyState {
    Pending(reqwest::RequestBuilder),
    Streaming {
        body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
        parser: SseParser,
    },
    Finished,
}

type Item = Result<WorkloadEvent, WorkloadError>;

async fn next(state: ReplyState, idle: Duration) -> Option<(Item, ReplyState)> {
    let (mut body, mut parser) = match state {
        ReplyState::Finished => return None,
        ReplyState::Streaming { body, parser } => (body, parser),
        ReplyState::Pending(req) => {
            let resp = match tokio::time::timeout(idle, req.send()).await {
                Err(_) => return Some((Err(WorkloadError::Timeout(idle)), ReplyState::Finished)),
                Ok(Err(e)) => {
                    return Some((
                        Err(WorkloadError::Unavailable(short(&e))),
                        ReplyState::Finished,
                    ));
                }
                Ok(Ok(r)) => r,
            };
            let status = resp.status();
            if !status.is_success() {
                let message = error_body(resp).await;
                return Some((
                    Err(WorkloadError::Http {
                        status: status.as_u16(),
                        message,
                    }),
                    ReplyState::Finished,
                ));
            }
            (resp.bytes_stream().boxed(), SseParser::default())
        }
    };
    loop {
        match parser.next_event() {
            Err(e) => {
                return Some((
                    Err(WorkloadError::Protocol(e.to_string())),
                    ReplyState::Finished,
                ));
            }
            Ok(Some(ev)) => match interpret(&ev) {
                Ok(None) => continue,
                Ok(Some(WorkloadEvent::Done(usage))) => {
                    return Some((Ok(WorkloadEvent::Done(usage)), ReplyState::Finished));
                }
                Ok(Some(item)) => return Some((Ok(item), ReplyState::Streaming { body, parser })),
                Err(e) => return Some((Err(e), ReplyState::Finished)),
            },
            Ok(None) => {}
        }
        match tokio::time::timeout(idle, body.next()).await {
            Err(_) => return Some((Err(WorkloadError::Timeout(idle)), ReplyState::Finished)),
            Ok(None) => {
                let e = WorkloadError::Protocol("stream ended before response.completed".into());
                return Some((Err(e), ReplyState::Finished));
            }
            Ok(Some(Err(e))) => {
                return Some((
                    Err(WorkloadError::Unavailable(short(&e))),
                    ReplyState::Finished,
                ));
            }
            Ok(Some(Ok(bytes))) => parser.push(&bytes),
        }
    }
}

#[derive(Deserialize)]
struct EventBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    delta: Option<String>,
    #[serde(default)]
    response: Option<ResponseBody>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct ResponseBody {
    #[serde(default)]
    usage: Option<ResponseUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    incomplete_details: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ResponseUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
}

#[derive(Deserialize, Default)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: u64,
    #[serde(default)]
    cache_write_tokens: u64,
}

/// One SSE event → at most one workload event. Unknown event types are
/// skipped: the Responses API adds new ones over time.
fn interpret(ev: &SseEvent) -> Result<Option<WorkloadEvent>, WorkloadError> {
    if ev.data == "[DONE]" {
        return Err(WorkloadError::Protocol(
            "stream ended before response.completed".into(),
        ));
    }
    let body: EventBody = serde_json::from_str(&ev.data)
        .map_err(|e| WorkloadError::Protocol(format!("event is not JSON: {e}")))?;
    if let Some(err) = &body.error {
        return Err(WorkloadError::Failed(error_text(err)));
    }
    let kind = if body.kind.is_empty() {
        ev.event.as_deref().unwrap_or_default()
    } else {
        body.kind.as_str()
    };
    match kind {
        "response.output_text.delta" => match body.delta {
            Some(d) if d.is_empty() => Ok(None),
            Some(d) => Ok(Some(WorkloadEvent::Delta(d))),
            None => Err(WorkloadError::Protocol(
                "output_text.delta without delta".into(),
            )),
        },
        "response.completed" | "response.incomplete" => {
            let usage = body.response.and_then(|r| r.usage).unwrap_or_default();
            let details = usage.input_tokens_details.unwrap_or_default();
            Ok(Some(WorkloadEvent::Done(Usage {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cache_read_tokens: details.cached_tokens,
                cache_write_tokens: details.cache_write_tokens,
            })))
        }
        "response.failed" | "error" => {
            let text = body
                .response
                .as_ref()
                .and_then(|r| r.error.as_ref().or(r.incomplete_details.as_ref()))
                .map(error_text)
                .or(body.message)
                .unwrap_or_else(|| "the model run failed".into());
            Err(WorkloadError::Failed(text))
        }
        _ => Ok(None),
    }
}

fn error_text(v: &serde_json::Value) -> String {
    v.get("message")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .or_else(|| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| v.to_string())
}

async fn error_body(resp: reqwest::Response) -> String {
    let bytes = resp.bytes().await.unwrap_or_default();
    let bytes = &bytes[..bytes.len().min(MAX_ERROR_BODY)];
    let text = String::from_utf8_lossy(bytes);
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").map(error_text))
        .unwrap_or_else(|| text.trim().to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    #[test]
    fn deltas_and_completion_with_cache_usage_are_understood() {
        assert_eq!(
            interpret(&ev(r#"{"type":"response.output_text.delta","delta":"hi"}"#)).unwrap(),
            Some(WorkloadEvent::Delta("hi".into()))
        );
        let done = r#"{"type":"response.completed","response":{"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":3,"cache_write_tokens":4},"output_tokens":5,"total_tokens":15}}}"#;
        assert_eq!(
            interpret(&ev(done)).unwrap(),
            Some(WorkloadEvent::Done(Usage {
                input_tokens: 10,
                output_tokens: 5,
                cache_read_tokens: 3,
                cache_write_tokens: 4
            }))
        );
    }

    #[test]
    fn in_band_failures_become_errors_with_the_upstream_message() {
        let failed =
            r#"{"type":"response.failed","response":{"error":{"message":"model overloaded"}}}"#;
        assert!(
            matches!(interpret(&ev(failed)), Err(WorkloadError::Failed(m)) if m == "model overloaded")
        );
        let raw = r#"{"error":{"message":"bad key","type":"auth"}}"#;
        assert!(matches!(interpret(&ev(raw)), Err(WorkloadError::Failed(m)) if m == "bad key"));
    }

    #[test]
    fn done_marker_before_completion_is_a_protocol_error() {
        assert!(matches!(
            interpret(&ev("[DONE]")),
            Err(WorkloadError::Protocol(_))
        ));
        assert!(matches!(
            interpret(&ev("not json")),
            Err(WorkloadError::Protocol(_))
        ));
    }

    #[test]
    fn unknown_event_types_are_skipped() {
        assert_eq!(
            interpret(&ev(r#"{"type":"response.output_item.added"}"#)).unwrap(),
            None
        );
    }
}

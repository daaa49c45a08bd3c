//! The Responses API on the wire: streamed events in, error bodies out.

use serde::Deserialize;

use super::super::{Usage, WorkloadError, sse::SseEvent};

/// Largest error body read from an upstream, to quote it to the person.
pub const MAX_ERROR_BODY: usize = 8 * 1024;

/// What one streamed event means to the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `response.created` / `response.in_progress`: the response object
    /// before any output.
    Started(ResponseMeta),
    Delta(String),
    /// `response.completed` / `response.incomplete`.
    Done {
        meta: ResponseMeta,
        usage: Usage,
    },
}

/// The parts of a response object that tie turns together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseMeta {
    pub id: Option<String>,
    /// What the server says it continued from: OpenAI echoes the
    /// `previous_response_id` it was sent; a server that ignores the field
    /// does not.
    pub previous_response_id: Option<String>,
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
    id: Option<String>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    usage: Option<ResponseUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    incomplete_details: Option<serde_json::Value>,
}

impl ResponseBody {
    fn meta(&self) -> ResponseMeta {
        ResponseMeta {
            id: self.id.clone().filter(|s| !s.is_empty()),
            previous_response_id: self.previous_response_id.clone().filter(|s| !s.is_empty()),
        }
    }
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

/// One SSE event → at most one adapter event. Unknown event types are
/// skipped: the Responses API adds new ones over time.
pub fn interpret(ev: &SseEvent) -> Result<Option<Event>, WorkloadError> {
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
        "response.created" | "response.in_progress" => {
            Ok(body.response.as_ref().map(|r| Event::Started(r.meta())))
        }
        "response.output_text.delta" => match body.delta {
            Some(d) if d.is_empty() => Ok(None),
            Some(d) => Ok(Some(Event::Delta(d))),
            None => Err(WorkloadError::Protocol(
                "output_text.delta without delta".into(),
            )),
        },
        "response.completed" | "response.incomplete" => {
            let meta = body
                .response
                .as_ref()
                .map(ResponseBody::meta)
                .unwrap_or_default();
            let usage = body.response.and_then(|r| r.usage).unwrap_or_default();
            let details = usage.input_tokens_details.unwrap_or_default();
            Ok(Some(Event::Done {
                meta,
                usage: Usage {
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    cache_read_tokens: details.cached_tokens,
                    cache_write_tokens: details.cache_write_tokens,
                },
            }))
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

pub fn error_text(v: &serde_json::Value) -> String {
    v.get("message")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .or_else(|| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| v.to_string())
}

/// An HTTP error answer, as far as the adapter cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    pub message: String,
    /// OpenAI's `error.param`, `error.code`.
    pub param: Option<String>,
    pub code: Option<String>,
}

impl ErrorBody {
    pub fn parse(bytes: &[u8]) -> Self {
        let bytes = &bytes[..bytes.len().min(MAX_ERROR_BODY)];
        let text = String::from_utf8_lossy(bytes);
        let err = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").cloned());
        let field = |name: &str| {
            err.as_ref()
                .and_then(|e| e.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        Self {
            message: err
                .as_ref()
                .map(error_text)
                .unwrap_or_else(|| text.trim().to_owned()),
            param: field("param"),
            code: field("code"),
        }
    }

    /// How a 400 relates to `previous_response_id`, if it does.
    pub fn previous_response_problem(&self) -> Option<PreviousProblem> {
        let lower = self.message.to_ascii_lowercase();
        let names_it = self.param.as_deref() == Some("previous_response_id")
            || lower.contains("previous_response_id")
            || lower.contains("previous response");
        if self.code.as_deref() == Some("previous_response_not_found")
            || (names_it && lower.contains("not found"))
        {
            Some(PreviousProblem::NotFound)
        } else if names_it {
            Some(PreviousProblem::Unsupported)
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviousProblem {
    /// The server keeps responses but not this one (expired, restarted,
    /// or stored elsewhere).
    NotFound,
    /// The server does not take the field at all.
    Unsupported,
}

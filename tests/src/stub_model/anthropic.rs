//! `POST /v1/messages`: Anthropic Messages, which OpenClaw speaks to providers configured with
//! `api: "anthropic-messages"` (its default provider).
//!
//! Streamed: `message_start` (usage with `input_tokens`, `cache_creation_input_tokens`,
//! `cache_read_input_tokens`, `output_tokens: 1`), `content_block_start`, `ping`,
//! `content_block_delta` × n, `content_block_stop`, `message_delta` (final `output_tokens`),
//! `message_stop`. An in-band failure is an `error` event, as the real API sends on overload.
//! Headers are checked like the real API: `x-api-key` (only when `--api-key` is set, else any
//! value is fine) and a required `anthropic-version`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use super::log::{Api, Outcome, Usage};
use super::script::{Ending, Script};
use super::sse::{self, TurnStream, Wire};
use super::{BadRequest, Begin, Call, Shared, content_text, opt_bool, parse_body, req_str};

/// Anthropic error body `{"type":"error","error":{"type","message"}}` with `request-id`.
pub(crate) fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut r = (
        status,
        axum::Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    r
}

/// The error type Anthropic uses for an HTTP status.
fn error_kind(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

fn status_error(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(
        code,
        error_kind(code.as_u16()),
        &format!("stub model: scripted HTTP {}", code.as_u16()),
    )
}

fn bad_request(e: BadRequest) -> Response {
    let message = match &e.param {
        Some(p) if e.message.starts_with("Missing") => format!("{p}: Field required"),
        _ => e.message,
    };
    error(StatusCode::BAD_REQUEST, "invalid_request_error", &message)
}

/// Parses a Messages body into a [`Call`]. `system` (string or text blocks) is the first input
/// text; each message contributes its text blocks, and `tool_result` blocks their text content.
pub(crate) fn parse(headers: &HeaderMap, body: &Bytes) -> Result<Call, BadRequest> {
    let m = parse_body(body)?;
    let model = req_str(&m, "model")?;
    match m.get("max_tokens") {
        None | Some(Value::Null) => return Err(BadRequest::missing("max_tokens")),
        Some(v) if v.is_u64() => {}
        Some(_) => return Err(BadRequest::invalid("max_tokens", "an integer")),
    }
    let stream = opt_bool(&m, "stream")?;
    let user = match m.get("metadata").and_then(|md| md.get("user_id")) {
        Some(Value::String(u)) => Some(u.clone()),
        _ => None,
    };
    let mut input_texts = Vec::new();
    match m.get("system") {
        None | Some(Value::Null) => {}
        Some(s) => input_texts.push(content_text(s, "system")?),
    }
    let messages = match m.get("messages") {
        None | Some(Value::Null) => return Err(BadRequest::missing("messages")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(BadRequest::invalid("messages", "an array")),
    };
    let mut last_user_text = String::new();
    let (mut tool_result_turn, mut asked_text) = (false, String::new());
    for (i, msg) in messages.iter().enumerate() {
        let Value::Object(o) = msg else {
            return Err(BadRequest::invalid(&format!("messages.{i}"), "an object"));
        };
        let role = match o.get("role") {
            Some(Value::String(r)) => r.as_str(),
            None => return Err(BadRequest::missing(&format!("messages.{i}.role"))),
            Some(_) => {
                return Err(BadRequest::invalid(
                    &format!("messages.{i}.role"),
                    "a string",
                ));
            }
        };
        let path = format!("messages.{i}.content");
        let text = match o.get("content") {
            None | Some(Value::Null) => return Err(BadRequest::missing(&path)),
            Some(Value::Array(blocks)) => blocks_text(blocks, &path)?,
            Some(c) => content_text(c, &path)?,
        };
        let carries_result = matches!(o.get("content"), Some(Value::Array(blocks))
            if blocks.iter().any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result")));
        // Judged by the last message with the person's side in it: OpenClaw
        // may add a message of internal context only after a tool's result.
        if role == "user"
            && let Some(person) = super::person_text(&text)
        {
            tool_result_turn = carries_result;
            if !carries_result {
                // Every message the person's side wrote: OpenClaw can add
                // context blocks of its own after the one with directives.
                if !asked_text.is_empty() {
                    asked_text.push('\n');
                }
                asked_text.push_str(&person);
            }
            last_user_text = person;
        }
        input_texts.push(text);
    }
    Ok(Call {
        api: Api::Anthropic,
        model,
        input_texts,
        last_user_text,
        stream,
        user,
        session_key: super::session_key(headers),
        tools: m
            .get("tools")
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        tool_result_turn,
        asked_text,
    })
}

/// Text of content blocks: `text` blocks, plus the text inside `tool_result` blocks.
fn blocks_text(blocks: &[Value], path: &str) -> Result<String, BadRequest> {
    let mut out = String::new();
    for (i, b) in blocks.iter().enumerate() {
        let Value::Object(o) = b else {
            return Err(BadRequest::invalid(&format!("{path}.{i}"), "an object"));
        };
        let text = match o.get("text") {
            Some(t) => content_text(t, &format!("{path}.{i}.text"))?,
            None if o.get("type").and_then(Value::as_str) == Some("tool_result") => {
                match o.get("content") {
                    Some(c) => content_text(c, &format!("{path}.{i}.content"))?,
                    None => String::new(),
                }
            }
            None => continue,
        };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&text);
    }
    Ok(out)
}

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if !shared.key_ok(key) {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    if !headers.contains_key("anthropic-version") {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    let call = match parse(&headers, &body) {
        Ok(c) => c,
        Err(e) => return bad_request(e),
    };
    let model = call.model.clone();
    let stream = call.stream;
    let offered = call.tools.clone();
    // An alert condition: answer the tool's result only when it holds.
    let silent = call.tool_result_turn
        && super::script::parse_directives(&call.asked_text)
            .0
            .notify_if
            .is_some_and(|want| !call.last_user_text.contains(&want));
    let (mut script, mut record) = match shared.begin(call) {
        Begin::Down => return super::down_response(),
        Begin::Http(status) => return status_error(status),
        Begin::Run(script, record) => (script, record),
    };
    if silent {
        script.reply_with("NO_REPLY");
    }
    let id = shared.new_id("msg");
    let request_id = shared.new_id("req");
    if let Some(asked) = &script.tool {
        // OpenClaw's Tool Search (on by default) offers catalog tools, MCP
        // tools among them, only through `tool_call {id, args}`: the call a
        // real model makes once it found the tool.
        let wrapped;
        let tool = if offered.iter().any(|t| t == &asked.name)
            || !offered.iter().any(|t| t == "tool_call")
        {
            asked
        } else {
            let args: Value = serde_json::from_str(&asked.input).unwrap_or_else(|_| json!({}));
            wrapped = super::script::ToolCall {
                name: "tool_call".into(),
                input: json!({"id": asked.name, "args": args}).to_string(),
            };
            &wrapped
        };
        if !offered.iter().any(|t| t == &tool.name) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!(
                    "stub model: [tool={}] but the request offers no such tool (offered: {})",
                    tool.name,
                    offered.join(", ")
                ),
            );
        }
        let usage = script.usage(1);
        record.complete(
            usage,
            1,
            &format!("[tool_use {} {}]", tool.name, tool.input),
        );
        return tool_use(&id, &model, tool, usage, stream, &shared.new_id("toolu"));
    }
    let mut resp = if stream {
        let wire = AnthropicWire { id, model };
        sse::sse_response(TurnStream::new(wire, script, record))
    } else {
        let n = sse::play_unstreamed(&script, &mut record).await;
        let usage = script.usage(n);
        if script.fails() {
            record.finish(Outcome::Error, usage, n);
            status_error(500)
        } else {
            record.complete(usage, n, script.text_upto(n));
            axum::Json(json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": script.text_upto(n)}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": usage_json(usage),
            }))
            .into_response()
        }
    };
    if let Ok(v) = http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}

/// The model asks for a tool: one `tool_use` block, `stop_reason: tool_use`.
fn tool_use(
    id: &str,
    model: &str,
    tool: &super::script::ToolCall,
    usage: Usage,
    stream: bool,
    tool_id: &str,
) -> Response {
    let input: Value = serde_json::from_str(&tool.input).unwrap_or_else(|_| json!({}));
    if !stream {
        return axum::Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "tool_use", "id": tool_id, "name": tool.name, "input": input}],
            "stop_reason": "tool_use", "stop_sequence": null, "usage": usage_json(usage),
        }))
        .into_response();
    }
    let mut out = BytesMut::new();
    let mut start_usage = usage;
    start_usage.output_tokens = 1;
    sse::event(
        &mut out,
        Some("message_start"),
        &json!({
            "type": "message_start",
            "message": {"id": id, "type": "message", "role": "assistant", "model": model,
                        "content": [], "stop_reason": null, "stop_sequence": null,
                        "usage": usage_json(start_usage)},
        }),
    );
    sse::event(
        &mut out,
        Some("content_block_start"),
        &json!({
            "type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": tool_id, "name": tool.name, "input": {}},
        }),
    );
    sse::event(
        &mut out,
        Some("content_block_delta"),
        &json!({
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": tool.input},
        }),
    );
    sse::event(
        &mut out,
        Some("content_block_stop"),
        &json!({"type": "content_block_stop", "index": 0}),
    );
    sse::event(
        &mut out,
        Some("message_delta"),
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": usage.output_tokens},
        }),
    );
    sse::event(
        &mut out,
        Some("message_stop"),
        &json!({"type": "message_stop"}),
    );
    (
        [(http::header::CONTENT_TYPE, "text/event-stream")],
        out.freeze(),
    )
        .into_response()
}

/// The Messages `usage` object.
pub fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "output_tokens": u.output_tokens,
    })
}

struct AnthropicWire {
    id: String,
    model: String,
}

impl Wire for AnthropicWire {
    fn open(&mut self, script: &Script, out: &mut BytesMut) {
        if script.ending == Ending::FailAfter(0) {
            return;
        }
        // The real API reports a placeholder output count of 1 until `message_delta`.
        let mut usage = script.usage(0);
        usage.output_tokens = 1;
        let start = json!({
            "type": "message_start",
            "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage_json(usage),
            },
        });
        sse::event(out, Some("message_start"), &start);
        out.put_slice(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        out.put_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
    }

    fn delta(&mut self, text: &str, out: &mut BytesMut) {
        out.put_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":");
        sse::json_str(out, text);
        out.put_slice(b"}}\n\n");
    }

    fn complete(&mut self, _script: &Script, chunks: u32, out: &mut BytesMut) {
        out.put_slice(
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        );
        out.put_slice(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
        sse::put_u64(out, u64::from(chunks));
        out.put_slice(b"}}\n\n");
        out.put_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    }

    fn fail(&mut self, _script: &Script, _chunks: u32, out: &mut BytesMut) {
        let err = json!({"type": "error", "error": {"type": "api_error",
                                                     "message": "stub model: scripted failure"}});
        sse::event(out, Some("error"), &err);
    }
}

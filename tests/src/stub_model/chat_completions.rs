//! `POST /v1/chat/completions`: OpenAI Chat Completions, which OpenClaw speaks to providers
//! configured with `api: "openai-completions"`.
//!
//! Streamed: a first chunk with `delta.role`, one chunk per content piece, a chunk with
//! `finish_reason: "stop"`, then — only with `stream_options.include_usage` — a usage chunk with
//! empty `choices`, then `data: [DONE]`. An in-band failure is `data: {"error":{...}}` and the
//! stream ends there, as OpenAI does. Chat usage has no field for prompt-cache writes, so
//! `[cache_write=N]` is logged but not reported here (the gap notes/openclaw.md describes).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use super::log::{Api, Outcome, Usage};
use super::script::{Ending, Script};
use super::sse::{self, TurnStream, Wire};
use super::{
    BadRequest, Begin, Call, Shared, content_text, openai_auth_error, openai_bad_request,
    openai_error, openai_status_error, opt_bool, opt_str, parse_body, req_str, session_key,
};

/// Parses a Chat Completions body into a [`Call`] and the `include_usage` flag.
pub(crate) fn parse(headers: &HeaderMap, body: &Bytes) -> Result<(Call, bool), BadRequest> {
    let m = parse_body(body)?;
    let model = req_str(&m, "model")?;
    let stream = opt_bool(&m, "stream")?;
    let user = opt_str(&m, "user")?;
    let include_usage = match m.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(BadRequest::invalid(
                    "stream_options.include_usage",
                    "a boolean",
                ));
            }
        },
        Some(_) => return Err(BadRequest::invalid("stream_options", "an object")),
    };
    let messages = match m.get("messages") {
        None | Some(Value::Null) => return Err(BadRequest::missing("messages")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(BadRequest::invalid("messages", "an array")),
    };
    let mut input_texts = Vec::with_capacity(messages.len());
    let mut last_user_text = String::new();
    for (i, msg) in messages.iter().enumerate() {
        let Value::Object(o) = msg else {
            return Err(BadRequest::invalid(&format!("messages[{i}]"), "an object"));
        };
        let role = match o.get("role") {
            Some(Value::String(r)) => r.as_str(),
            None => return Err(BadRequest::missing(&format!("messages[{i}].role"))),
            Some(_) => {
                return Err(BadRequest::invalid(
                    &format!("messages[{i}].role"),
                    "a string",
                ));
            }
        };
        let text = match o.get("content") {
            None => String::new(),
            Some(c) => content_text(c, &format!("messages[{i}].content"))?,
        };
        if role == "user"
            && let Some(person) = super::person_text(&text)
        {
            last_user_text = person;
        }
        input_texts.push(text);
    }
    let call = Call {
        api: Api::Chat,
        model,
        input_texts,
        last_user_text,
        stream,
        user,
        session_key: session_key(headers),
        tools: Vec::new(),
        tool_result_turn: false,
        asked_text: String::new(),
    };
    Ok((call, include_usage))
}

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = openai_auth_error(&shared, &headers) {
        return r;
    }
    let (call, include_usage) = match parse(&headers, &body) {
        Ok(c) => c,
        Err(e) => return openai_bad_request(e),
    };
    let model = call.model.clone();
    let stream = call.stream;
    let (script, mut record) = match shared.begin(call) {
        Begin::Down => return super::down_response(),
        Begin::Http(status) => return openai_status_error(status),
        Begin::Run(script, record) => (script, record),
    };
    let id = shared.new_id("chatcmpl");
    let created = super::log::now_ms() / 1000;
    if stream {
        let wire = ChatWire::new(id, &model, created, include_usage);
        return sse::sse_response(TurnStream::new(wire, script, record));
    }
    let n = sse::play_unstreamed(&script, &mut record).await;
    let usage = script.usage(n);
    if script.fails() {
        record.finish(Outcome::Error, usage, n);
        return openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "stub model: scripted failure",
            None,
            None,
        );
    }
    record.complete(usage, n, script.text_upto(n));
    axum::Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": script.text_upto(n), "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage_json(usage),
    }))
    .into_response()
}

/// The Chat Completions `usage` object.
pub fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": 0},
    })
}

/// Renders one streamed chat reply. Every chunk repeats id, created and model, so that common
/// prefix is rendered once per call and copied per chunk.
struct ChatWire {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// `data: {"id":..,"object":"chat.completion.chunk","created":..,"model":..,"choices":[`
    prefix: Vec<u8>,
}

impl ChatWire {
    fn new(id: String, model: &str, created: u64, include_usage: bool) -> ChatWire {
        let mut prefix = Vec::with_capacity(128 + model.len());
        prefix.extend_from_slice(b"data: {\"id\":\"");
        prefix.extend_from_slice(id.as_bytes());
        prefix.extend_from_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":");
        prefix.extend_from_slice(created.to_string().as_bytes());
        prefix.extend_from_slice(b",\"model\":");
        let _ = serde_json::to_writer(&mut prefix, model);
        prefix.extend_from_slice(b",\"choices\":[");
        ChatWire {
            id,
            model: model.to_owned(),
            created,
            include_usage,
            prefix,
        }
    }
}

impl Wire for ChatWire {
    fn open(&mut self, script: &Script, out: &mut BytesMut) {
        if script.ending == Ending::FailAfter(0) {
            return;
        }
        out.put_slice(&self.prefix);
        out.put_slice(br#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#);
        out.put_slice(b"\n\n");
    }

    fn delta(&mut self, text: &str, out: &mut BytesMut) {
        out.put_slice(&self.prefix);
        out.put_slice(br#"{"index":0,"delta":{"content":"#);
        sse::json_str(out, text);
        out.put_slice(br#"},"logprobs":null,"finish_reason":null}]}"#);
        out.put_slice(b"\n\n");
    }

    fn complete(&mut self, script: &Script, chunks: u32, out: &mut BytesMut) {
        out.put_slice(&self.prefix);
        out.put_slice(br#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#);
        out.put_slice(b"\n\n");
        if self.include_usage {
            let chunk = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage_json(script.usage(chunks)),
            });
            sse::event(out, None, &chunk);
        }
        sse::done(out);
    }

    fn fail(&mut self, _script: &Script, _chunks: u32, out: &mut BytesMut) {
        let err = json!({"error": {"message": "stub model: scripted failure",
                                   "type": "server_error", "param": null, "code": null}});
        sse::event(out, None, &err);
    }
}

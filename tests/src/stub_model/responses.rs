//! `POST /v1/responses`: the OpenAI Responses API, which is also what OpenClaw's gateway exposes
//! and what the sidecar's "responses" workload adapter calls.
//!
//! The streamed event sequence is OpenAI's: `response.created`, `response.in_progress`,
//! `response.output_item.added`, `response.content_part.added`, one
//! `response.output_text.delta` per chunk, `response.output_text.done`,
//! `response.content_part.done`, `response.output_item.done`, `response.completed` — then
//! `data: [DONE]` as OpenClaw sends it. Failures arrive in-band as `response.failed` after
//! HTTP 200, as they do from OpenClaw. Usage is on the final event, including
//! `input_tokens_details.cached_tokens` and `.cache_write_tokens`.
//!
//! Like OpenClaw, this endpoint is stateful per conversation: a request carrying
//! `x-openclaw-session-key` continues that conversation, so the stub prepends the
//! conversation's earlier user texts and replies (successful turns only) to the request's own
//! texts, logs them in `input_texts` and counts them in `input_tokens` — just as OpenClaw sends
//! the history to its model. That lets end-to-end tests check session continuity and isolation
//! with the stub standing in for OpenClaw. `user` is only an identifier, as at OpenAI.
//!
//! Like OpenAI, it keeps responses (`store`, default true) and continues from one named by
//! `previous_response_id`: that response's whole context (its input after `instructions`,
//! which do not carry over, and its reply) is prepended the same way, the response object
//! echoes `previous_response_id`, and an unknown or forgotten id is OpenAI's 400
//! (`param: previous_response_id`, `code: previous_response_not_found`). Only successful
//! replies are kept, at most `keep_responses`, oldest forgotten first.
//! [`PreviousResponse`] makes it a server that ignores the field (no echo) or refuses it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use super::log::{Api, Outcome, Usage};
use super::script::{Ending, Script};
use super::sse::{self, TurnStream, Wire};
use super::{
    BadRequest, Begin, Call, PreviousResponse, Shared, content_text, openai_auth_error,
    openai_bad_request, openai_error, openai_status_error, opt_bool, opt_str, parse_body, req_str,
    session_key,
};

/// Parses a Responses request body into a [`Call`].
///
/// `input` is a string (one user message) or an array of items `{role, content}` (optionally
/// `type: "message"`), content being a string or parts with `text`. Items without a role (tool
/// calls and their outputs) carry no message text and are skipped. `instructions`, if present,
/// is the first input text. Also returns where session history belongs (after instructions).
pub(crate) fn parse(headers: &HeaderMap, body: &Bytes) -> Result<Parsed, BadRequest> {
    let m = parse_body(body)?;
    let model = req_str(&m, "model")?;
    let stream = opt_bool(&m, "stream")?;
    let user = opt_str(&m, "user")?;
    let previous = opt_str(&m, "previous_response_id")?;
    let store = match m.get("store") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(BadRequest::invalid("store", "a boolean")),
    };
    let mut input_texts = Vec::new();
    if let Some(instr) = opt_str(&m, "instructions")? {
        input_texts.push(instr);
    }
    let history_at = input_texts.len();
    let mut last_user_text = String::new();
    match m.get("input") {
        None | Some(Value::Null) => return Err(BadRequest::missing("input")),
        Some(Value::String(s)) => {
            input_texts.push(s.clone());
            last_user_text = s.clone();
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Value::Object(o) = item else {
                    return Err(BadRequest::invalid(&format!("input[{i}]"), "an object"));
                };
                let role = match o.get("role") {
                    None => continue,
                    Some(Value::String(r)) => r.as_str(),
                    Some(_) => {
                        return Err(BadRequest::invalid(&format!("input[{i}].role"), "a string"));
                    }
                };
                let content = o
                    .get("content")
                    .ok_or_else(|| BadRequest::missing(&format!("input[{i}].content")))?;
                let text = content_text(content, &format!("input[{i}].content"))?;
                if role == "user" {
                    last_user_text.clone_from(&text);
                }
                input_texts.push(text);
            }
        }
        Some(_) => return Err(BadRequest::invalid("input", "a string or an array")),
    }
    let call = Call {
        api: Api::Responses,
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
    Ok(Parsed {
        call,
        history_at,
        previous,
        store,
    })
}

/// A parsed Responses request.
pub(crate) struct Parsed {
    pub call: Call,
    /// Where earlier context belongs in `call.input_texts` (after instructions).
    pub history_at: usize,
    pub previous: Option<String>,
    pub store: bool,
}

/// Responses kept for `previous_response_id`: each one's whole context, oldest first.
pub(crate) struct Stored {
    map: Mutex<StoredMap>,
    max: usize,
}

/// Context per response id, and the ids in the order they were stored.
type StoredMap = (HashMap<String, Arc<Vec<String>>>, VecDeque<String>);

impl Stored {
    pub(crate) fn new(max: usize) -> Stored {
        Stored {
            map: Mutex::new((HashMap::new(), VecDeque::new())),
            max,
        }
    }

    fn get(&self, id: &str) -> Option<Arc<Vec<String>>> {
        let g = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        g.0.get(id).cloned()
    }

    fn put(&self, id: String, context: Vec<String>) {
        let mut g = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let (map, order) = &mut *g;
        map.insert(id.clone(), Arc::new(context));
        order.push_back(id);
        while order.len() > self.max {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
}

/// Conversation history per session, standing in for OpenClaw's session store.
pub(crate) struct Sessions {
    /// Alternating user text / reply text, oldest first.
    map: Mutex<HashMap<String, Vec<String>>>,
    max_texts: usize,
}

impl Sessions {
    pub(crate) fn new(turns: usize) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max_texts: turns.saturating_mul(2),
        }
    }

    /// The conversation a call belongs to: its session key, else none.
    fn key(&self, call: &Call) -> Option<String> {
        if self.max_texts == 0 {
            return None;
        }
        call.session_key.as_ref().map(|k| format!("key:{k}"))
    }

    fn history(&self, key: &str) -> Vec<String> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key).cloned().unwrap_or_default()
    }

    fn append(&self, key: String, user_text: String, reply: &str) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let h = map.entry(key).or_default();
        h.push(user_text);
        h.push(reply.to_owned());
        if h.len() > self.max_texts {
            let excess = h.len() - self.max_texts;
            h.drain(..excess);
        }
    }
}

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = openai_auth_error(&shared, &headers) {
        return r;
    }
    let Parsed {
        mut call,
        history_at,
        previous,
        store,
    } = match parse(&headers, &body) {
        Ok(c) => c,
        Err(e) => return openai_bad_request(e),
    };
    let mode = shared.config.previous_response;
    let previous = match (mode, previous) {
        (PreviousResponse::Rejected, Some(_)) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "Unrecognized request argument supplied: previous_response_id",
                None,
                None,
            );
        }
        (PreviousResponse::Supported, Some(id)) => match shared.stored.get(&id) {
            Some(context) => {
                call.input_texts
                    .splice(history_at..history_at, context.iter().cloned());
                Some(id)
            }
            None => {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &format!("Previous response with id '{id}' not found."),
                    Some("previous_response_id"),
                    Some("previous_response_not_found"),
                );
            }
        },
        (_, _) => None,
    };
    let keeps = mode == PreviousResponse::Supported && store;
    let session = shared.sessions.key(&call);
    if let Some(key) = &session {
        let history = shared.sessions.history(key);
        call.input_texts.splice(history_at..history_at, history);
    }
    let model = call.model.clone();
    let stream = call.stream;
    let user_text = session.as_ref().map(|_| call.last_user_text.clone());
    let context = keeps.then(|| call.input_texts[history_at..].to_vec());
    let (script, mut record) = match shared.begin(call) {
        Begin::Down => return super::down_response(),
        Begin::Http(status) => return openai_status_error(status),
        Begin::Run(script, record) => (script, record),
    };
    record.continued_from(previous.clone());
    let id = shared.new_id("resp");
    let sessions = shared.sessions.clone();
    let stored = shared.stored.clone();
    let stored_id = id.clone();
    record.on_ok(Box::new(move |reply| {
        if let (Some(key), Some(user_text)) = (session, user_text) {
            sessions.append(key, user_text, reply);
        }
        if let Some(mut context) = context {
            context.push(reply.to_owned());
            stored.put(stored_id, context);
        }
    }));
    let wire = ResponsesWire {
        id,
        item_id: shared.new_id("msg"),
        model,
        created_at: super::log::now_ms() / 1000,
        seq: 0,
        previous_response_id: previous,
        store: keeps,
    };
    if stream {
        return sse::sse_response(TurnStream::new(wire, script, record));
    }
    let n = sse::play_unstreamed(&script, &mut record).await;
    let usage = script.usage(n);
    let text = script.text_upto(n);
    let body = if script.fails() {
        record.finish(Outcome::Error, usage, n);
        wire.response("failed", Some(text), Some(usage), Some(&injected_error()))
    } else {
        record.complete(usage, n, text);
        wire.response("completed", Some(text), Some(usage), None)
    };
    axum::Json(body).into_response()
}

/// The error a scripted in-band failure reports.
fn injected_error() -> Value {
    json!({"code": "server_error", "message": "stub model: scripted failure"})
}

/// The Responses `usage` object.
pub fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input_tokens + u.output_tokens,
    })
}

/// Renders one streamed Responses reply.
struct ResponsesWire {
    id: String,
    item_id: String,
    model: String,
    created_at: u64,
    /// `sequence_number` of the next event.
    seq: u64,
    /// Echoed in the response object, as OpenAI does (null when not honoured).
    previous_response_id: Option<String>,
    store: bool,
}

impl ResponsesWire {
    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    fn message_item(&self, status: &str, text: Option<&str>) -> Value {
        let content = match text {
            Some(t) => json!([{"type": "output_text", "text": t, "annotations": []}]),
            None => json!([]),
        };
        json!({
            "id": self.item_id, "type": "message", "status": status,
            "role": "assistant", "content": content,
        })
    }

    /// The response object; `text` None means no output item yet.
    fn response(
        &self,
        status: &str,
        text: Option<&str>,
        usage: Option<Usage>,
        error: Option<&Value>,
    ) -> Value {
        let output = match text {
            Some(t) => {
                let item_status = if status == "completed" {
                    "completed"
                } else {
                    "incomplete"
                };
                json!([self.message_item(item_status, Some(t))])
            }
            None => json!([]),
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": null,
            "model": self.model,
            "previous_response_id": self.previous_response_id,
            "store": self.store,
            "output": output,
            "usage": usage.map(usage_json),
        })
    }

    fn emit(&mut self, out: &mut BytesMut, kind: &str, mut data: Value) {
        if let Value::Object(o) = &mut data {
            o.insert("type".into(), Value::from(kind));
            o.insert("sequence_number".into(), Value::from(self.next_seq()));
        }
        sse::event(out, Some(kind), &data);
    }
}

impl Wire for ResponsesWire {
    fn open(&mut self, script: &Script, out: &mut BytesMut) {
        let r = self.response("in_progress", None, None, None);
        self.emit(out, "response.created", json!({"response": r}));
        self.emit(out, "response.in_progress", json!({"response": r}));
        if script.ending == Ending::FailAfter(0) {
            return;
        }
        let item = self.message_item("in_progress", None);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        );
        let item_id = self.item_id.clone();
        self.emit(
            out,
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
    }

    fn delta(&mut self, text: &str, out: &mut BytesMut) {
        let seq = self.next_seq();
        out.put_slice(b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":");
        sse::put_u64(out, seq);
        out.put_slice(b",\"item_id\":\"");
        out.put_slice(self.item_id.as_bytes());
        out.put_slice(b"\",\"output_index\":0,\"content_index\":0,\"delta\":");
        sse::json_str(out, text);
        out.put_slice(b",\"logprobs\":[]}\n\n");
    }

    fn complete(&mut self, script: &Script, chunks: u32, out: &mut BytesMut) {
        let text = script.text_upto(chunks);
        let item_id = self.item_id.clone();
        self.emit(
            out,
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
        );
        self.emit(
            out,
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": text, "annotations": []}}),
        );
        let item = self.message_item("completed", Some(text));
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        );
        let r = self.response("completed", Some(text), Some(script.usage(chunks)), None);
        self.emit(out, "response.completed", json!({"response": r}));
        sse::done(out);
    }

    fn fail(&mut self, script: &Script, chunks: u32, out: &mut BytesMut) {
        let text = (chunks > 0).then(|| script.text_upto(chunks));
        let r = self.response(
            "failed",
            text,
            Some(script.usage(chunks)),
            Some(&injected_error()),
        );
        self.emit(out, "response.failed", json!({"response": r}));
        sse::done(out);
    }
}

//! Answers the proxy makes itself, in each provider's own wire shape, so
//! the client (OpenClaw) handles them like the real provider's.

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::ProviderApi;

/// A provider-shaped error body with `status`.
pub fn error(api: ProviderApi, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match api {
        ProviderApi::Anthropic => {
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        ProviderApi::Openai => {
            json!({"error": {"message": message, "type": kind, "code": kind, "param": null}})
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The error type each API uses for a failure of ours or the upstream's.
pub fn upstream_error_kind(api: ProviderApi) -> &'static str {
    match api {
        ProviderApi::Anthropic => "api_error",
        ProviderApi::Openai => "server_error",
    }
}

pub fn invalid_request(api: ProviderApi, message: &str) -> Response {
    error(
        api,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
    )
}

/// A caller without this agent's proxy credential, as the provider answers
/// a bad key (401 `authentication_error`).
pub fn unauthorized(api: ProviderApi) -> Response {
    let kind = match api {
        ProviderApi::Anthropic => "authentication_error",
        ProviderApi::Openai => "invalid_api_key",
    };
    error(
        api,
        StatusCode::UNAUTHORIZED,
        kind,
        "this model proxy serves only its own agent: present the key from the agent's config",
    )
}

/// An exhausted budget as a 429 with `retry-after`, in the provider's shape.
pub fn budget_error(api: ProviderApi, message: &str, retry_after_secs: u64) -> Response {
    let kind = match api {
        ProviderApi::Anthropic => "rate_limit_error",
        ProviderApi::Openai => "insufficient_quota",
    };
    let mut resp = error(api, StatusCode::TOO_MANY_REQUESTS, kind, message);
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// A complete, successful assistant reply whose text is `text`, streamed or
/// not as the request asked, with zero usage. OpenClaw shows an assistant
/// message verbatim and does not retry it, unlike provider errors, which it
/// retries, fails over, or rewrites into its own wording.
pub fn assistant_text(api: ProviderApi, model: &str, stream: bool, text: &str) -> Response {
    let id = format!("clawswarm-budget-{}", rand::random::<u32>());
    match (api, stream) {
        (ProviderApi::Anthropic, false) => json_response(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        })),
        (ProviderApi::Anthropic, true) => {
            let events: [(&str, Value); 6] = [
                (
                    "message_start",
                    json!({"type": "message_start", "message": {
                    "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
                ),
                (
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ),
                (
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 0}}),
                ),
                ("message_stop", json!({"type": "message_stop"})),
            ];
            let body: String = events
                .iter()
                .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
                .collect();
            sse_response(body)
        }
        (ProviderApi::Openai, false) => json_response(json!({
            "id": id, "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        })),
        (ProviderApi::Openai, true) => {
            let chunk = |choices: Value, usage: Value| json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": choices, "usage": usage});
            let chunks = [
                chunk(
                    json!([{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": null}]),
                    Value::Null,
                ),
                chunk(
                    json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
                    Value::Null,
                ),
                chunk(
                    json!([]),
                    json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}),
                ),
            ];
            let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
            body.push_str("data: [DONE]\n\n");
            sse_response(body)
        }
    }
}

fn json_response(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn sse_response(body: String) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from(body),
    )
        .into_response()
}

//! Request parsing and error bodies shared by the API handlers.
//!
//! Bodies are parsed as untyped JSON and walked by hand rather than deserialized into structs, so
//! that a bad request gets a 400 naming the exact field (`messages[2].role`), shaped like the
//! real API's error, instead of a serde message or a panic.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::Shared;

/// A 400 naming the offending field, rendered in each API's own error shape.
#[derive(Debug)]
pub(crate) struct BadRequest {
    pub message: String,
    pub param: Option<String>,
}

impl BadRequest {
    pub(crate) fn missing(param: &str) -> BadRequest {
        BadRequest {
            message: format!("Missing required parameter: '{param}'."),
            param: Some(param.to_owned()),
        }
    }

    pub(crate) fn invalid(param: &str, what: &str) -> BadRequest {
        BadRequest {
            message: format!("Invalid type for '{param}': expected {what}."),
            param: Some(param.to_owned()),
        }
    }
}

/// Parses a JSON object body.
pub(crate) fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, BadRequest> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(BadRequest {
            message: "The request body must be a JSON object.".into(),
            param: None,
        }),
        Err(e) => Err(BadRequest {
            message: format!("We could not parse the JSON body of your request: {e}"),
            param: None,
        }),
    }
}

/// The required string field `name`.
pub(crate) fn req_str(
    m: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<String, BadRequest> {
    match m.get(name) {
        None | Some(Value::Null) => Err(BadRequest::missing(name)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(BadRequest::invalid(name, "a string")),
    }
}

/// The optional string field `name`.
pub(crate) fn opt_str(
    m: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<String>, BadRequest> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(BadRequest::invalid(name, "a string")),
    }
}

/// The optional boolean field `name` (false when absent).
pub(crate) fn opt_bool(m: &serde_json::Map<String, Value>, name: &str) -> Result<bool, BadRequest> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(BadRequest::invalid(name, "a boolean")),
    }
}

/// Text of an OpenAI/Anthropic message `content` at `path`: a string, or an array of parts
/// whose `text` fields are joined with newlines (non-text parts such as images are skipped).
pub(crate) fn content_text(content: &Value, path: &str) -> Result<String, BadRequest> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (i, part) in parts.iter().enumerate() {
                let text = match part {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) => match o.get("text") {
                        Some(Value::String(s)) => Some(s.as_str()),
                        Some(_) => {
                            return Err(BadRequest::invalid(
                                &format!("{path}[{i}].text"),
                                "a string",
                            ));
                        }
                        None => None,
                    },
                    _ => return Err(BadRequest::invalid(&format!("{path}[{i}]"), "an object")),
                };
                if let Some(t) = text {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(t);
                }
            }
            Ok(out)
        }
        _ => Err(BadRequest::invalid(path, "a string or an array")),
    }
}

/// The `x-openclaw-session-key` header, which OpenClaw uses to pick a conversation.
pub(crate) fn session_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-openclaw-session-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// OpenAI-shaped error body: `{"error":{"message","type","param","code"}}`.
pub(crate) fn openai_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let mut r = (
        status,
        axum::Json(
            json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
        ),
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

/// The OpenAI error for an HTTP status chosen by a directive or an injected failure.
pub(crate) fn openai_status_error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, code) = match status.as_u16() {
        400 => ("invalid_request_error", None),
        401 => ("invalid_request_error", Some("invalid_api_key")),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("requests", Some("rate_limit_exceeded")),
        _ => ("server_error", None),
    };
    let message = format!("stub model: scripted HTTP {}", status.as_u16());
    openai_error(status, kind, &message, None, code)
}

/// OpenAI 400 for a [`BadRequest`].
pub(crate) fn openai_bad_request(e: BadRequest) -> Response {
    let code = e
        .message
        .starts_with("Missing")
        .then_some("missing_required_parameter");
    openai_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        &e.message,
        e.param.as_deref(),
        code,
    )
}

/// OpenAI 401 when `--api-key` is set and the bearer token is missing or wrong.
pub(crate) fn openai_auth_error(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    if shared.key_ok(bearer(headers)) {
        return None;
    }
    Some(openai_error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "Incorrect API key provided.",
        None,
        Some("invalid_api_key"),
    ))
}

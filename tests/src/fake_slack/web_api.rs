//! `/api/<method>` and `/response/<id>`: token checks, payload shapes, rate
//! limits, canned failures, and Slack-shaped answers.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, post},
};
use serde_json::{Map, Value, json};

use super::{
    BOT_ID, BOT_USER_ID, Call, Failure, Shared, TEAM_ID,
    messages::{FakeMessage, MessageKind, dm_channel},
};

/// Slack's documented limits.
const MAX_TEXT_CHARS: usize = 40_000;
const MAX_MARKDOWN_CHARS: usize = 12_000;

pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/{method}", any(api))
        .route("/response/{id}", post(response_url))
        .with_state(shared)
}

type ApiResult = Result<Value, String>;

fn reply(status: StatusCode, body: &Value, retry_after: Option<u64>) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response();
    if let Some(secs) = retry_after
        && let Ok(v) = secs.to_string().parse()
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// JSON, form or query parameters, merged into one object.
fn params(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    if let Some(q) = query {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(q).map_err(|_| "invalid_form_data".to_owned())?;
        out.extend(pairs.into_iter().map(|(k, v)| (k, Value::String(v))));
    }
    if body.is_empty() {
        return Ok(out);
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.starts_with("application/json") {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => out.extend(m),
            _ => return Err("invalid_json".into()),
        }
    } else if ctype.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|_| "invalid_form_data".to_owned())?;
        out.extend(pairs.into_iter().map(|(k, v)| (k, Value::String(v))));
    } else {
        return Err("invalid_form_data".into());
    }
    Ok(out)
}

async fn api(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = std::time::Instant::now();
    let (status, body, retry_after, params) =
        handle(&shared, &method, query.as_deref(), &headers, &body);
    let call = Call {
        method: method.clone(),
        params: Value::Object(params),
        status: status.as_u16(),
        response: body.clone(),
        at,
    };
    shared.lock().calls.push(call);
    shared.notify();
    reply(status, &body, retry_after)
}

fn handle(
    shared: &Shared,
    method: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, Value, Option<u64>, Map<String, Value>) {
    let fail = |e: &str| json!({"ok": false, "error": e});
    let p = match params(headers, query, body) {
        Ok(p) => p,
        Err(e) => return (StatusCode::OK, fail(&e), None, Map::new()),
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| p.get("token").and_then(Value::as_str).map(str::to_owned));
    let Some(token) = bearer else {
        return (StatusCode::OK, fail("not_authed"), None, p);
    };
    let cfg = &shared.cfg;
    let wants_app_token = method == "apps.connections.open";
    let token_ok = if wants_app_token {
        if token.starts_with("xoxb-") {
            return (StatusCode::OK, fail("not_allowed_token_type"), None, p);
        }
        token == cfg.app_token
    } else {
        if token.starts_with("xapp-") {
            return (StatusCode::OK, fail("not_allowed_token_type"), None, p);
        }
        token == cfg.bot_token
    };
    if !token_ok {
        return (StatusCode::OK, fail("invalid_auth"), None, p);
    }

    let mut inner = shared.lock();
    if let Some(f) = inner.failures.get_mut(method).and_then(|q| q.pop_front()) {
        return match f {
            Failure::RateLimited(secs) => (
                StatusCode::TOO_MANY_REQUESTS,
                fail("ratelimited"),
                Some(secs),
                p,
            ),
            Failure::Error(code) => (StatusCode::OK, fail(&code), None, p),
        };
    }
    if cfg.rate_limits {
        let scope = str_of(&p, "channel")
            .or_else(|| str_of(&p, "channel_id"))
            .unwrap_or("")
            .to_owned();
        if let Err(secs) = inner.limiter.take(method, &scope) {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                fail("ratelimited"),
                Some(secs),
                p,
            );
        }
    }
    let result = match method {
        "auth.test" => Ok(json!({
            "url": "https://fake.slack.invalid/", "team": "Fake", "user": "clawswarm",
            "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": false,
        })),
        "apps.connections.open" => {
            let ticket = uuid::Uuid::new_v4().to_string();
            inner.seen_tickets.insert(ticket.clone());
            Ok(json!({"url": format!("ws://{}/link?ticket={ticket}", shared.ws_addr)}))
        }
        "chat.postMessage" => post_message(&mut inner.messages, &p),
        "chat.update" => update(&mut inner.messages, &p),
        "chat.postEphemeral" => post_ephemeral(&mut inner.messages, &p),
        "chat.startStream" => start_stream(&mut inner.messages, &p, cfg.native_streaming),
        "chat.appendStream" => append_stream(&mut inner.messages, &p),
        "chat.stopStream" => stop_stream(&mut inner.messages, &p),
        "assistant.threads.setStatus" => set_status(&p),
        "conversations.open" => conversations_open(&mut inner.dm_channels, &p),
        "users.info" => users_info(shared, &p),
        "usergroups.users.list" => usergroup_users(shared, &p),
        _ => Err("unknown_method".into()),
    };
    match result {
        Ok(Value::Object(mut m)) => {
            m.insert("ok".into(), Value::Bool(true));
            (StatusCode::OK, Value::Object(m), None, p)
        }
        Ok(other) => (StatusCode::OK, other, None, p),
        Err(e) => (StatusCode::OK, fail(&e), None, p),
    }
}

fn str_of<'a>(p: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    p.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn require<'a>(p: &'a Map<String, Value>, k: &str, missing: &str) -> Result<&'a str, String> {
    str_of(p, k).ok_or_else(|| missing.to_owned())
}

fn valid_channel(c: &str) -> Result<(), String> {
    let ok = c.len() >= 2
        && matches!(c.as_bytes()[0], b'C' | b'D' | b'G')
        && c.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("channel_not_found".into())
    }
}

fn valid_ts(ts: &str) -> Result<(), String> {
    let ok = ts.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    });
    if ok { Ok(()) } else { Err("invalid_ts".into()) }
}

/// Text of a message: `text`, or `markdown_text`, or markdown chunks.
fn text_of(p: &Map<String, Value>) -> Result<Option<String>, String> {
    if let Some(t) = str_of(p, "text") {
        if t.chars().count() > MAX_TEXT_CHARS {
            return Err("msg_too_long".into());
        }
        return Ok(Some(t.to_owned()));
    }
    let mut md = String::new();
    let mut any = false;
    if let Some(t) = str_of(p, "markdown_text") {
        md.push_str(t);
        any = true;
    }
    if let Some(chunks) = p.get("chunks") {
        let chunks = chunks.as_array().ok_or("invalid_chunks")?;
        for c in chunks {
            match (
                c.get("type").and_then(Value::as_str),
                c.get("text").and_then(Value::as_str),
            ) {
                (Some("markdown_text"), Some(t)) => {
                    md.push_str(t);
                    any = true;
                }
                (Some("task_update" | "plan_update" | "blocks"), _) => {}
                _ => return Err("invalid_chunks".into()),
            }
        }
    }
    if md.chars().count() > MAX_MARKDOWN_CHARS {
        return Err("markdown_text_too_long".into());
    }
    Ok(any.then_some(md))
}

fn message_json(m: &FakeMessage) -> Value {
    let mut v = json!({
        "type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "app_id": super::APP_ID,
        "team": TEAM_ID, "text": m.text, "ts": m.ts,
    });
    if let Some(t) = &m.thread_ts {
        v["thread_ts"] = Value::String(t.clone());
    }
    v
}

fn post_message(store: &mut super::messages::Store, p: &Map<String, Value>) -> ApiResult {
    let channel = require(p, "channel", "channel_not_found")?;
    valid_channel(channel)?;
    let text = match text_of(p)? {
        Some(t) => t,
        None if p.contains_key("blocks") => String::new(),
        None => return Err("no_text".into()),
    };
    let thread_ts = str_of(p, "thread_ts").map(str::to_owned);
    if let Some(t) = &thread_ts {
        valid_ts(t)?;
    }
    let ts = store.next_ts();
    let msg = FakeMessage {
        channel: channel.into(),
        ts: ts.clone(),
        thread_ts,
        text,
        kind: MessageKind::Posted,
        streaming: false,
        edits: 0,
    };
    let body = json!({"channel": channel, "ts": ts, "message": message_json(&msg)});
    store.insert(msg);
    Ok(body)
}

fn post_ephemeral(store: &mut super::messages::Store, p: &Map<String, Value>) -> ApiResult {
    let channel = require(p, "channel", "channel_not_found")?;
    valid_channel(channel)?;
    require(p, "user", "user_not_in_channel")?;
    if text_of(p)?.is_none() && !p.contains_key("blocks") {
        return Err("no_text".into());
    }
    Ok(json!({"message_ts": store.next_ts()}))
}

fn update(store: &mut super::messages::Store, p: &Map<String, Value>) -> ApiResult {
    let channel = require(p, "channel", "channel_not_found")?;
    let ts = require(p, "ts", "message_not_found")?;
    valid_ts(ts)?;
    let text = match text_of(p)? {
        Some(t) => t,
        None if p.contains_key("blocks") => String::new(),
        None => return Err("no_text".into()),
    };
    let msg = store.get_mut(channel, ts).ok_or("message_not_found")?;
    if msg.streaming {
        return Err("cant_update_message".into());
    }
    msg.text = text;
    msg.edits += 1;
    Ok(json!({"channel": channel, "ts": ts, "text": msg.text, "message": message_json(msg)}))
}

fn start_stream(
    store: &mut super::messages::Store,
    p: &Map<String, Value>,
    enabled: bool,
) -> ApiResult {
    let channel = require(p, "channel", "channel_not_found")?;
    valid_channel(channel)?;
    if !enabled {
        return Err("feature_not_enabled".into());
    }
    let thread_ts = require(p, "thread_ts", "invalid_arguments")?;
    valid_ts(thread_ts)?;
    if !channel.starts_with('D') {
        // Outside a DM Slack must know whose stream this is.
        require(p, "recipient_user_id", "missing_recipient_user_id")?;
        require(p, "recipient_team_id", "missing_recipient_team_id")?;
    }
    let text = text_of(p)?.unwrap_or_default();
    let ts = store.next_ts();
    store.insert(FakeMessage {
        channel: channel.into(),
        ts: ts.clone(),
        thread_ts: Some(thread_ts.into()),
        text,
        kind: MessageKind::Streamed,
        streaming: true,
        edits: 0,
    });
    Ok(json!({"channel": channel, "ts": ts}))
}

fn streaming_msg<'a>(
    store: &'a mut super::messages::Store,
    p: &Map<String, Value>,
) -> Result<&'a mut FakeMessage, String> {
    let channel = require(p, "channel", "channel_not_found")?;
    let ts = require(p, "ts", "invalid_arguments")?;
    valid_ts(ts)?;
    let msg = store.get_mut(channel, ts).ok_or("message_not_found")?;
    if !msg.streaming {
        return Err("message_not_in_streaming_state".into());
    }
    Ok(msg)
}

fn append_stream(store: &mut super::messages::Store, p: &Map<String, Value>) -> ApiResult {
    let text = text_of(p)?.ok_or("invalid_arguments")?;
    let msg = streaming_msg(store, p)?;
    msg.text.push_str(&text);
    msg.edits += 1;
    Ok(json!({"channel": msg.channel, "ts": msg.ts}))
}

fn stop_stream(store: &mut super::messages::Store, p: &Map<String, Value>) -> ApiResult {
    let text = text_of(p)?;
    let msg = streaming_msg(store, p)?;
    if let Some(t) = text {
        msg.text.push_str(&t);
    }
    msg.streaming = false;
    Ok(json!({"channel": msg.channel, "ts": msg.ts, "message": message_json(msg)}))
}

fn set_status(p: &Map<String, Value>) -> ApiResult {
    let channel = require(p, "channel_id", "channel_not_found")?;
    valid_channel(channel)?;
    valid_ts(require(p, "thread_ts", "invalid_arguments")?)?;
    // An empty status clears it, so only presence is required.
    if !p.get("status").is_some_and(Value::is_string) {
        return Err("invalid_arguments".into());
    }
    Ok(json!({}))
}

fn conversations_open(
    dms: &mut std::collections::HashMap<String, String>,
    p: &Map<String, Value>,
) -> ApiResult {
    let users: Vec<String> = match p.get("users") {
        Some(Value::String(s)) => s.split(',').map(str::to_owned).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => return Err("users_list_not_supplied".into()),
    };
    let [user] = users.as_slice() else {
        return Err("not_enough_users".into());
    };
    if !user.starts_with('U') && !user.starts_with('W') {
        return Err("user_not_found".into());
    }
    let id = dm_channel(dms, user);
    Ok(json!({"channel": {"id": id}, "already_open": false, "no_op": false}))
}

fn users_info(shared: &Shared, p: &Map<String, Value>) -> ApiResult {
    let id = require(p, "user", "user_not_found")?;
    let u = shared
        .cfg
        .users
        .iter()
        .find(|u| u.id == id)
        .ok_or("user_not_found")?;
    Ok(json!({"user": {
        "id": u.id, "team_id": TEAM_ID, "name": u.name, "deleted": false,
        "is_admin": u.is_admin, "is_owner": false, "is_bot": u.is_bot,
        "profile": {"real_name": u.name, "display_name": u.name},
    }}))
}

fn usergroup_users(shared: &Shared, p: &Map<String, Value>) -> ApiResult {
    let id = require(p, "usergroup", "no_such_subteam")?;
    let users = shared.cfg.usergroups.get(id).ok_or("no_such_subteam")?;
    Ok(json!({"users": users}))
}

async fn response_url(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = params(&headers, None, &body);
    let status = match parsed {
        Ok(m) if m.contains_key("text") || m.contains_key("blocks") => {
            shared.lock().responses.push((id, Value::Object(m)));
            StatusCode::OK
        }
        _ => StatusCode::BAD_REQUEST,
    };
    shared.notify();
    let body = if status == StatusCode::OK {
        json!({"ok": true})
    } else {
        json!({"ok": false, "error": "no_text"})
    };
    reply(status, &body, None)
}

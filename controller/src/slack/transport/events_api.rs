//! The Events API over HTTP (axum): every request's signature is verified
//! (five-minute window, constant-time compare) before its body is parsed;
//! the request is answered as soon as the work is queued. Events, slash
//! commands and interactions may share one URL or use the three paths.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::json;
use slack_morphism::prelude::*;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::slack::{
    Connector, SlackError,
    app::{Accepted, SlackApp},
    signature::SignatureVerifier,
};

struct Ctx<C: Connector> {
    app: Arc<SlackApp<C>>,
    verifier: SignatureVerifier,
}

pub fn routes<C: Connector>(app: Arc<SlackApp<C>>, verifier: SignatureVerifier) -> Router {
    let ctx = Arc::new(Ctx { app, verifier });
    Router::new()
        .route("/slack/events", post(handle::<C>))
        .route("/slack/commands", post(handle::<C>))
        .route("/slack/interactive", post(handle::<C>))
        .with_state(ctx)
}

pub async fn serve<C: Connector>(
    listener: TcpListener,
    app: Arc<SlackApp<C>>,
    verifier: SignatureVerifier,
    shutdown: CancellationToken,
) -> Result<(), SlackError> {
    let addr = listener
        .local_addr()
        .map_err(|e| SlackError::Serve(e.to_string()))?;
    info!(addr = %addr, "slack events api listening");
    axum::serve(listener, routes(app, verifier))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|e| SlackError::Serve(e.to_string()))
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn refuse<C: Connector>(app: &SlackApp<C>, status: StatusCode, why: &'static str) -> Response {
    app.api.metrics().event("request", why);
    warn!(
        status = status.as_u16(),
        reason = why,
        "slack request refused"
    );
    (status, why).into_response()
}

async fn handle<C: Connector>(
    State(ctx): State<Arc<Ctx<C>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = ctx.verifier.verify(&headers, &body, now_unix()) {
        ctx.app.api.metrics().event("request", e.metric_label());
        warn!(reason = e.metric_label(), "slack request signature refused");
        return (StatusCode::UNAUTHORIZED, "invalid signature").into_response();
    }
    let retry = headers
        .get("x-slack-retry-num")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .map(|n| {
            (
                n,
                headers
                    .get("x-slack-retry-reason")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned(),
            )
        });
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.starts_with("application/json") {
        return event(
            &ctx.app,
            &body,
            retry.as_ref().map(|(n, r)| (*n, r.as_str())),
        );
    }
    if ctype.starts_with("application/x-www-form-urlencoded") {
        let Ok(form) = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) else {
            return refuse(&ctx.app, StatusCode::BAD_REQUEST, "malformed form body");
        };
        if let Some(payload) = form.get("payload") {
            return match serde_json::from_str::<SlackInteractionEvent>(payload) {
                Ok(ev) => {
                    ctx.app.accept_interaction(&ev);
                    StatusCode::OK.into_response()
                }
                Err(_) => refuse(
                    &ctx.app,
                    StatusCode::BAD_REQUEST,
                    "malformed interaction payload",
                ),
            };
        }
        if form.contains_key("command") {
            return match serde_urlencoded::from_bytes::<SlackCommandEvent>(&body) {
                Ok(cmd) => {
                    let text = ctx.app.accept_command(&cmd);
                    Json(json!({"response_type": "ephemeral", "text": text})).into_response()
                }
                Err(_) => refuse(&ctx.app, StatusCode::BAD_REQUEST, "malformed slash command"),
            };
        }
        return refuse(
            &ctx.app,
            StatusCode::BAD_REQUEST,
            "form body is neither a command nor an interaction",
        );
    }
    refuse(
        &ctx.app,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported content type",
    )
}

fn event<C: Connector>(app: &SlackApp<C>, body: &[u8], retry: Option<(u32, &str)>) -> Response {
    let push = match serde_json::from_slice::<SlackPushEvent>(body) {
        Ok(p) => p,
        Err(_) => return refuse(app, StatusCode::BAD_REQUEST, "malformed events api payload"),
    };
    match push {
        SlackPushEvent::UrlVerification(v) => {
            Json(json!({"challenge": v.challenge})).into_response()
        }
        SlackPushEvent::AppRateLimited(_) => {
            warn!("slack reports this app exceeded the events api rate limit; events were dropped");
            StatusCode::OK.into_response()
        }
        SlackPushEvent::EventCallback(cb) => match app.accept_event(&cb, retry) {
            // Not acked: Slack delivers it again later.
            Accepted::Busy => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            _ => StatusCode::OK.into_response(),
        },
    }
}

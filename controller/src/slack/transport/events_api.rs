//! The Events API over HTTP (axum): every request's signature is verified
//! (five-minute window, constant-time compare) before its body is parsed;
//! the request is answered as soon as the work is queued. Events, slash
//! commands and interactions may share one URL or use the three paths.
//!
//! [`EventsDoor`] keeps the listener for the life of the process and hands
//! requests to whichever front door is open: on a standby (or while this
//! replica starts) none is, and Slack gets 503, which it retries.

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
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::slack::{
    Connector, SlackError,
    app::{Accepted, SlackApp},
    signature::SignatureVerifier,
};

/// How long a request waits for a front door to open (this replica is
/// starting, or taking over) before it is refused: inside Slack's 3 s.
pub const DOOR_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

/// The Events API listener, bound once for the process. Requests go to the
/// routes of the front door running now ([`EventsDoor::open`]); with none
/// open they wait up to a hold time, then get `503` and `Retry-After: 1`, so
/// Slack delivers them again (to the leader, once the Service follows it).
#[derive(Clone)]
pub struct EventsDoor {
    current: Arc<watch::Sender<Option<Router>>>,
    metrics: crate::slack::metrics::SlackMetrics,
}

impl EventsDoor {
    pub fn new(metrics: crate::slack::metrics::SlackMetrics) -> Self {
        Self {
            current: Arc::new(watch::Sender::new(None)),
            metrics,
        }
    }

    /// Serve `routes` from now on.
    pub fn open(&self, routes: Router) {
        self.current.send_replace(Some(routes));
    }

    /// Refuse from now on (the front door stopped).
    pub fn close(&self) {
        self.current.send_replace(None);
    }

    pub fn is_open(&self) -> bool {
        self.current.borrow().is_some()
    }

    /// Every request, whatever its path, through the door.
    pub fn router(&self, hold: std::time::Duration) -> Router {
        let door = self.clone();
        Router::new().fallback(move |req: axum::extract::Request| {
            let door = door.clone();
            async move { door.handle(req, hold).await }
        })
    }

    /// Serve `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        hold: std::time::Duration,
        shutdown: CancellationToken,
    ) -> Result<(), SlackError> {
        let addr = listener
            .local_addr()
            .map_err(|e| SlackError::Serve(e.to_string()))?;
        info!(addr = %addr, "slack events api listening");
        axum::serve(listener, self.router(hold))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|e| SlackError::Serve(e.to_string()))
    }

    async fn handle(&self, req: axum::extract::Request, hold: std::time::Duration) -> Response {
        let mut rx = self.current.subscribe();
        let routes = match tokio::time::timeout(hold, rx.wait_for(Option::is_some)).await {
            Ok(Ok(r)) => r.clone(),
            _ => None,
        };
        match routes {
            Some(r) => match tower::ServiceExt::oneshot(r, req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            },
            None => {
                self.metrics.event("request", "not_serving");
                warn!(
                    status = 503,
                    reason = "not_serving",
                    "slack request refused: this replica does not serve slack now"
                );
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    "this controller replica is not serving slack; retry",
                )
                    .into_response()
            }
        }
    }
}

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod door_tests {
    use axum::{body::Body, routing::get};
    use tower::ServiceExt as _;

    use super::*;

    fn request() -> axum::extract::Request {
        axum::extract::Request::builder()
            .uri("/slack/events")
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn closed_door_refuses_with_503_after_the_hold() {
        let door = EventsDoor::new(Default::default());
        let resp = door.router(DOOR_HOLD).oneshot(request()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let refused = door
            .metrics
            .events
            .get_or_create(&crate::slack::metrics::EventLabels {
                kind: "request",
                result: "not_serving",
            })
            .get();
        assert_eq!(refused, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn open_door_forwards_and_a_waiting_request_gets_the_new_front_door() {
        let door = EventsDoor::new(Default::default());
        let routes = Router::new().route("/slack/events", get(|| async { "front door" }));
        // A request that arrives while the replica is starting waits…
        let waiting = tokio::spawn(door.router(DOOR_HOLD).oneshot(request()));
        tokio::task::yield_now().await;
        door.open(routes);
        let resp = waiting.await.unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // …and once the front door stops, requests are refused again.
        door.close();
        assert!(!door.is_open());
        let resp = door.router(DOOR_HOLD).oneshot(request()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

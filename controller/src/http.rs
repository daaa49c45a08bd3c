//! Plain HTTP for operators and probes: `/metrics` (Prometheus text, or
//! OpenMetrics for scrapers that ask for it),
//! `/healthz` (alive), `/readyz` (200 once this replica knows its role, the
//! standby too, so rollouts proceed; 503 while starting or shutting down; the
//! body says the role and where the Slack front door stands).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use clawswarm_proto::exposition::Format;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{front_door::FrontDoor, metrics::Metrics};

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// False once shutdown began.
    pub ready: Arc<AtomicBool>,
    pub front_door: Arc<FrontDoor>,
}

/// `extra` adds routes of other components (the off-boarding webhook).
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    extra: Option<Router>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn metrics(State(s): State<HttpState>, headers: HeaderMap) -> impl IntoResponse {
    let (content_type, body) = Format::respond(&headers, s.metrics.encode());
    ([(header::CONTENT_TYPE, content_type)], body)
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let (known, detail) = s.front_door.readiness();
    if !s.ready.load(Ordering::Acquire) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: shutting down\n{detail}"),
        )
    } else if known {
        (StatusCode::OK, format!("ready\n{detail}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{detail}"),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::body::Body;
    use tokio::sync::watch;
    use tower::ServiceExt as _;

    use super::*;
    use crate::runtime::Role;

    async fn readyz_of(role: Role, ready: bool) -> (StatusCode, String) {
        let metrics = Metrics::new();
        let state = HttpState {
            front_door: FrontDoor::new(watch::channel(role).1, true, metrics.slack.clone()),
            metrics,
            ready: Arc::new(AtomicBool::new(ready)),
        };
        let app = Router::new()
            .route("/readyz", get(readyz))
            .with_state(state);
        let resp = app
            .oneshot(
                axum::http::Request::get("/readyz")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn standby_is_ready_and_says_it_holds_no_slack_connection() {
        let (status, body) = readyz_of(Role::Standby, true).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("role: standby"), "{body}");
        assert!(body.contains("slack: standby (no connection"), "{body}");
    }

    #[tokio::test]
    async fn starting_or_stopping_replica_is_not_ready() {
        let (status, body) = readyz_of(Role::Starting, true).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("role: starting"), "{body}");
        let (status, body) = readyz_of(Role::Leader, false).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("shutting down"), "{body}");
        let (status, _) = readyz_of(Role::Leader, true).await;
        assert_eq!(status, StatusCode::OK);
    }
}

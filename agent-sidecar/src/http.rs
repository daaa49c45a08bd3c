//! Plain HTTP for Prometheus and the kubelet: `/metrics`, `/healthz`
//! (alive), `/readyz` (holds a certificate and the link is up).

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

use crate::metrics::SidecarMetrics;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<SidecarMetrics>,
    pub certified: Arc<AtomicBool>,
    pub linked: Arc<AtomicBool>,
}

pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn metrics(State(s): State<HttpState>, headers: HeaderMap) -> impl IntoResponse {
    let (content_type, body) = Format::respond(&headers, s.metrics.encode());
    ([(header::CONTENT_TYPE, content_type)], body)
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    match (
        s.certified.load(Ordering::Acquire),
        s.linked.load(Ordering::Acquire),
    ) {
        (true, true) => (StatusCode::OK, "ready\n"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "no certificate yet\n"),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the controller\n",
        ),
    }
}

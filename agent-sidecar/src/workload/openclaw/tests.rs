// Tests may unwrap (house rule); the workspace lint is for input handling.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use futures::StreamExt;

use super::*;
use crate::workload::{Usage, WorkloadEvent};

#[derive(Default)]
struct Fake {
    /// What `/readyz` answers: status and body.
    ready: Mutex<(u16, String)>,
    /// (authorization, session key, body) of each /v1/responses call.
    calls: Mutex<Vec<(String, String, serde_json::Value)>>,
}

async fn readyz(State(f): State<Arc<Fake>>) -> impl IntoResponse {
    let (status, body) = f.ready.lock().unwrap().clone();
    (StatusCode::from_u16(status).unwrap(), body)
}

async fn responses(
    State(f): State<Arc<Fake>>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let get = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    f.calls
        .lock()
        .unwrap()
        .push((get("authorization"), get(SESSION_HEADER), json));
    let sse = concat!(
        "event: response.output_text.delta\n",
        "data: {\"type\":\"response.output_text.delta\",\"delta\":\"hel\"}\n\n",
        "data: {\"type\":\"response.output_text.delta\",\"delta\":\"lo\"}\n\n",
        "data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":20,",
        "\"input_tokens_details\":{\"cached_tokens\":5,\"cache_write_tokens\":7},\"output_tokens\":2,\"total_tokens\":22}}}\n\n",
        "data: [DONE]\n\n",
    );
    ([("content-type", "text/event-stream")], sse)
}

async fn serve(fake: Arc<Fake>) -> String {
    let app = Router::new()
        .route("/readyz", get(readyz))
        .route("/v1/responses", post(responses))
        // OpenClaw's control UI answers every unknown path with 200.
        .fallback(|| async { "<html>control ui</html>" })
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn args(url: &str) -> OpenClawArgs {
    // main installs the process-wide provider; unit tests do it themselves.
    let _ = rustls::crypto::ring::default_provider().install_default();
    OpenClawArgs {
        url: url.into(),
        token: Some("gw-secret".into()),
        ..OpenClawArgs::default()
    }
}

#[tokio::test]
async fn readiness_follows_the_json_body_not_the_status_code() {
    let fake = Arc::new(Fake::default());
    let url = serve(fake.clone()).await;
    let w = OpenClawWorkload::new(&args(&url)).unwrap();

    *fake.ready.lock().unwrap() = (503, r#"{"ready":false,"failing":["channels"]}"#.into());
    assert!(!w.check_ready().await.ready);
    *fake.ready.lock().unwrap() = (200, "<html>control ui</html>".into());
    let r = w.check_ready().await;
    assert!(
        !r.ready,
        "a 200 without a ready field is not readiness: {r:?}"
    );
    *fake.ready.lock().unwrap() = (200, r#"{"ready":true,"uptimeMs":1}"#.into());
    assert!(w.check_ready().await.ready);
}

#[tokio::test]
async fn readiness_reports_a_gateway_that_is_not_listening() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let w = OpenClawWorkload::new(&args(&url)).unwrap();
    let r = w.check_ready().await;
    assert!(!r.ready);
    assert!(r.detail.contains("not listening"), "{r:?}");
}

#[tokio::test]
async fn turns_carry_token_model_and_a_mapped_session_key() {
    let fake = Arc::new(Fake::default());
    let url = serve(fake.clone()).await;
    let w = OpenClawWorkload::new(&args(&url)).unwrap();
    let turn = TurnRequest {
        turn_id: "t1".into(),
        conversation: "C123/1700000000.0001".into(),
        text: "hi".into(),
    };
    let events: Vec<_> = w.start_turn(turn).map(|e| e.unwrap()).collect().await;
    assert_eq!(
        events,
        vec![
            WorkloadEvent::Delta("hel".into()),
            WorkloadEvent::Delta("lo".into()),
            WorkloadEvent::Done(Usage {
                input_tokens: 20,
                output_tokens: 2,
                cache_read_tokens: 5,
                cache_write_tokens: 7
            }),
        ]
    );
    let calls = fake.calls.lock().unwrap();
    let (auth, key, body) = &calls[0];
    assert_eq!(auth, "Bearer gw-secret");
    assert_eq!(key, &session_key("C123/1700000000.0001"));
    assert_eq!(body["model"], DEFAULT_MODEL);
    assert_eq!(body["stream"], true);
}

#[test]
fn session_keys_are_stable_valid_and_never_reserved() {
    for conv in [
        "cron:daily",
        "subagent:x",
        "acp:y",
        "",
        "C1/2",
        "ÄÖ ü",
        &"x".repeat(500),
    ] {
        let key = session_key(conv);
        assert_eq!(key, session_key(conv), "stable");
        assert!(key.starts_with("clawswarm-"), "{key}");
        assert!(
            !RESERVED_SESSION_PREFIXES.iter().any(|p| key.starts_with(p)),
            "{key}"
        );
        assert!(
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'),
            "{key}"
        );
        assert!(key.len() <= 10 + MAX_READABLE + 1 + 16, "{key}");
    }
    assert!(session_key("cron:daily").starts_with("clawswarm-cron-daily-"));
}

#[test]
fn ids_that_sanitize_alike_get_different_keys() {
    assert_ne!(session_key("C1/2"), session_key("C1:2"));
    assert_ne!(session_key("ABC"), session_key("abc"));
    assert_ne!(session_key(""), session_key("-"));
}

#[test]
fn token_comes_from_the_file_first_and_empty_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "from-file\n").unwrap();
    let mut a = args("http://127.0.0.1:1");
    a.token_file = Some(path.clone());
    assert_eq!(a.bearer_token().unwrap(), "from-file");
    std::fs::write(&path, "  \n").unwrap();
    assert!(matches!(
        a.bearer_token(),
        Err(WorkloadError::NotConfigured(_))
    ));
    a.token_file = Some(dir.path().join("missing"));
    let err = a.bearer_token().unwrap_err().to_string();
    assert!(err.contains("CLAWSWARM_OPENCLAW_TOKEN_FILE"), "{err}");
    let none = OpenClawArgs::default();
    assert!(none.bearer_token().is_err());
}

#[test]
fn debug_output_redacts_the_token() {
    let text = format!("{:?}", args("http://127.0.0.1:1"));
    assert!(!text.contains("gw-secret"), "{text}");
}

// Tests may unwrap (house rule); the workspace lint is for input handling.
#![allow(clippy::unwrap_used)]

//! The proxy against a scripted engine on loopback: what crosses to the
//! engine (credential, rewritten paths) and what the agent gets back when
//! the engine is slow, down or too talkative. The real engine's behaviour
//! (OpenSearch) is proven in tests/tests/company_data.rs.

use std::sync::Mutex;

use axum::{
    Router,
    extract::{Request, State as AxState},
    routing::any,
};

use super::*;

#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(String, String, Option<String>)>>,
}

/// A fake engine: answers `_resolve/index` from `indices`, searches with
/// `hits` hits, and `/slow/_search` after `delay`.
async fn engine(indices: &'static [&'static str], big: usize) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .fallback(any(
            move |AxState(seen): AxState<Arc<Seen>>, req: Request| async move {
                let path = req.uri().path().to_owned();
                let auth = req
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned());
                seen.requests.lock().unwrap().push((
                    req.method().to_string(),
                    format!("{}?{}", path, req.uri().query().unwrap_or("")),
                    auth,
                ));
                if path.starts_with("/_resolve/index/") {
                    let list: Vec<_> = indices
                        .iter()
                        .map(|n| serde_json::json!({"name": n}))
                        .collect();
                    return axum::Json(
                        serde_json::json!({"indices": list, "aliases": [], "data_streams": []}),
                    )
                    .into_response();
                }
                if path.starts_with("/slow") {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                if path.starts_with("/big") {
                    return "x".repeat(big).into_response();
                }
                axum::Json(serde_json::json!({"hits": {"hits": [{"_id": "1"}, {"_id": "2"}]}}))
                    .into_response()
            },
        ))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn args(url: Option<String>, dir: &std::path::Path) -> DataProxyArgs {
    let _ = rustls::crypto::ring::default_provider().install_default();
    DataProxyArgs {
        url,
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key_file: None,
        api_key: Some("real-cluster-key".into()),
        auth: DataAuth::Apikey,
        indices: "pipelines*,slow,big".into(),
        max_hits: 100,
        timeout_secs: 1,
        max_response_bytes: 1000,
        max_request_bytes: 200,
        token_file: dir.join("data-proxy-token"),
    }
}

async fn serve(proxy: Arc<DataProxy>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    format!("http://{addr}")
}

async fn call(
    base: &str,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn the_engine_gets_the_real_key_and_concrete_indices_the_caller_only_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = engine(&["pipelines-1", "pipelines-2"], 0).await;
    let metrics = SidecarMetrics::new();
    let counted = Arc::new(Mutex::new(DataCounts::default()));
    let into = counted.clone();
    let meter: DataMeter = Arc::new(move |q| {
        let mut c = into.lock().unwrap();
        c.queries += q.queries;
        c.refused += q.refused;
        c.documents += q.documents;
    });
    let proxy = DataProxy::new(&args(Some(url), dir.path()), metrics.clone(), Some(meter)).unwrap();
    let base = serve(proxy).await;
    let token = std::fs::read_to_string(dir.path().join("data-proxy-token")).unwrap();

    let (status, _) = call(
        &base,
        None,
        reqwest::Method::POST,
        "/pipelines*/_search",
        "{}",
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        &base,
        Some("real-cluster-key"),
        reqwest::Method::POST,
        "/pipelines*/_search",
        "{}",
    )
    .await;
    assert_eq!(
        status, 401,
        "the cluster key is not this proxy's credential"
    );
    assert!(
        seen.requests.lock().unwrap().is_empty(),
        "nothing reached the engine"
    );

    let (status, body) = call(
        &base,
        Some(&token),
        reqwest::Method::POST,
        "/pipelines*/_search",
        r#"{"size": 2}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests[0].1.starts_with("/_resolve/index/pipelines*?"),
        "{requests:?}"
    );
    assert_eq!(requests[1].0, "POST");
    assert_eq!(
        requests[1].1, "/pipelines-1,pipelines-2/_search?",
        "the wildcard went out as what it matched"
    );
    for (_, _, auth) in &requests {
        assert_eq!(auth.as_deref(), Some("ApiKey real-cluster-key"));
    }
    let text = metrics.encode();
    assert!(
        text.contains(r#"clawswarm_data_queries_total{kind="search",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"clawswarm_data_queries_total{kind="other",outcome="unauthorized"} 2"#),
        "{text}"
    );
    assert!(text.contains("clawswarm_data_documents_total 2"), "{text}");
    let c = *counted.lock().unwrap();
    assert_eq!(
        (c.queries, c.refused, c.documents),
        (1, 0, 2),
        "the ledger counts the agent's queries, not strangers' 401s"
    );
}

#[tokio::test]
async fn slow_down_and_oversized_each_get_an_error_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = engine(&["slow", "big"], 5000).await;
    let proxy = DataProxy::new(&args(Some(url), dir.path()), SidecarMetrics::new(), None).unwrap();
    let base = serve(proxy).await;
    let token = std::fs::read_to_string(dir.path().join("data-proxy-token")).unwrap();
    let post = reqwest::Method::POST;

    let started = Instant::now();
    let (status, body) = call(&base, Some(&token), post.clone(), "/slow/_search", "{}").await;
    assert_eq!(status, 504, "{body}");
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("CLAWSWARM_DATA_TIMEOUT_SECS")
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout holds"
    );

    let (status, body) = call(&base, Some(&token), post.clone(), "/big/_search", "{}").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "clawswarm_response_too_large");
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("CLAWSWARM_DATA_MAX_RESPONSE_BYTES")
    );

    let huge = format!(
        r#"{{"query": {{"match": {{"x": "{}"}}}}}}"#,
        "y".repeat(500)
    );
    let (status, body) = call(&base, Some(&token), post.clone(), "/big/_search", &huge).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("CLAWSWARM_DATA_MAX_REQUEST_BYTES")
    );

    let (status, body) = call(
        &base,
        Some(&token),
        post.clone(),
        "/big/_search",
        r#"{"size": 10000000}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "clawswarm_result_cap");

    let (status, body) = call(
        &base,
        Some(&token),
        post.clone(),
        "/big/_search",
        r#"{"size": "#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    // The engine goes away: a precise error, not a hang.
    let down = DataProxy::new(
        &args(Some("http://127.0.0.1:9".into()), dir.path()),
        SidecarMetrics::new(),
        None,
    )
    .unwrap();
    let base = serve(down).await;
    let (status, body) = call(&base, Some(&token), post, "/pipelines/_search", "{}").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "clawswarm_engine_unreachable");
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:9")
    );
}

#[tokio::test]
async fn without_a_cluster_every_query_says_none_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = DataProxy::new(&args(None, dir.path()), SidecarMetrics::new(), None).unwrap();
    let base = serve(proxy).await;
    let token = std::fs::read_to_string(dir.path().join("data-proxy-token")).unwrap();
    let (status, body) = call(
        &base,
        Some(&token),
        reqwest::Method::POST,
        "/pipelines/_search",
        "{}",
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("CLAWSWARM_DATA_URL")
    );
}

#[test]
fn a_configured_cluster_needs_a_credential_and_the_debug_output_hides_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(Some("http://127.0.0.1:9200".into()), dir.path());
    assert!(!format!("{a:?}").contains("real-cluster-key"));
    a.api_key = None;
    let err = DataProxy::new(&a, SidecarMetrics::new(), None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("CLAWSWARM_DATA_API_KEY"), "{err}");
    a.url = Some("elasticsearch:9200".into());
    assert!(matches!(
        DataProxy::new(&a, SidecarMetrics::new(), None),
        Err(DataProxyError::BadUrl(_))
    ));
}

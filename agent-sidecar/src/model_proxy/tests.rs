// Tests may unwrap (house rule); the workspace lint is for input handling.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use axum::{extract::State, routing::post};
use futures::StreamExt;
use serde_json::json;
use time::macros::datetime;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::*;

const REAL_KEY: &str = "sk-real-provider-key";

const ANTHROPIC_HEAD: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":90,\"cache_creation_input_tokens\":20,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n";
const ANTHROPIC_TAIL: [&str; 4] = [
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hel\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":6}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

/// A fake provider: behaviour chosen by the request's `model`.
#[derive(Default)]
struct Provider {
    calls: Mutex<Vec<(HeaderMap, Value)>>,
    /// Released by the test to let a `gated` stream continue.
    gate: Notify,
}

async fn provider_call(
    State(f): State<Arc<Provider>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Value = serde_json::from_slice(&body).unwrap();
    f.calls.lock().unwrap().push((headers, json.clone()));
    match json["model"].as_str().unwrap_or_default() {
        "limited" => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "17"), ("content-type", "application/json")],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        )
            .into_response(),
        "revoked" => (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/json")],
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        )
            .into_response(),
        "plain" => (
            [("content-type", "application/json")],
            r#"{"type":"message","content":[],"usage":{"input_tokens":4,"output_tokens":3}}"#,
        )
            .into_response(),
        "openai" => {
            let sse = concat!(
                "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
                "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":10}}}\n\n",
                "data: [DONE]\n\n",
            );
            ([("content-type", "text/event-stream")], sse).into_response()
        }
        "endless" => {
            // Deltas until the proxy hangs up on us.
            let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            let f = f.clone();
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Bytes::from_static(ANTHROPIC_HEAD.as_bytes())))
                    .await;
                while tx
                    .send(Ok(Bytes::from_static(ANTHROPIC_TAIL[0].as_bytes())))
                    .await
                    .is_ok()
                {
                    tokio::task::yield_now().await;
                }
                f.gate.notify_one();
            });
            (
                [("content-type", "text/event-stream")],
                Body::from_stream(ReceiverStream::new(rx)),
            )
                .into_response()
        }
        model => {
            let gated = model == "gated";
            let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
            let f = f.clone();
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Bytes::from_static(ANTHROPIC_HEAD.as_bytes())))
                    .await;
                if gated {
                    f.gate.notified().await;
                }
                for piece in ANTHROPIC_TAIL {
                    let _ = tx.send(Ok(Bytes::from_static(piece.as_bytes()))).await;
                }
            });
            (
                [("content-type", "text/event-stream")],
                Body::from_stream(ReceiverStream::new(rx)),
            )
                .into_response()
        }
    }
}

async fn listen(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Fixture {
    provider: Arc<Provider>,
    proxy: Arc<ModelProxy>,
    metrics: Arc<SidecarMetrics>,
    url: String,
    /// Sends the agent's proxy credential (`x-api-key`) unless a request
    /// sets its own, as OpenClaw does from its config.
    client: reqwest::Client,
    token: String,
    _dir: tempfile::TempDir,
}

async fn fixture(configure: impl FnOnce(&mut ModelProxyArgs)) -> Fixture {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(Provider::default());
    let upstream = listen(
        Router::new()
            .route("/v1/messages", post(provider_call))
            .route("/v1/chat/completions", post(provider_call))
            .route(
                "/v1/models",
                get(|headers: HeaderMap| async move {
                    let key = headers
                        .get("x-api-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    axum::Json(json!({"data": [], "key_seen": key == REAL_KEY}))
                }),
            )
            .with_state(provider.clone()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = ModelProxyArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream_url: upstream,
        api_key_file: None,
        api_key: Some(REAL_KEY.into()),
        daily_token_budget: 0,
        monthly_token_budget: 0,
        budget_reply: BudgetReply::Message,
        failure_reply: BudgetReply::Message,
        usage_file: dir.path().join("usage.json"),
        token_file: dir.path().join("model-proxy-token"),
        read_timeout_secs: 30,
        connect_timeout_secs: 5,
    };
    configure(&mut args);
    let metrics = SidecarMetrics::new();
    let clock: Clock = Arc::new(|| datetime!(2026-11-23 22:00 UTC));
    let proxy = ModelProxy::with_clock(&args, metrics.clone(), clock).unwrap();
    let url = listen(proxy.router()).await;
    let token = std::fs::read_to_string(&args.token_file).unwrap();
    let mut credential = reqwest::header::HeaderMap::new();
    credential.insert("x-api-key", token.parse().unwrap());
    Fixture {
        provider,
        proxy,
        metrics,
        url,
        client: reqwest::Client::builder()
            .default_headers(credential)
            .build()
            .unwrap(),
        token,
        _dir: dir,
    }
}

impl Fixture {
    fn anthropic(&self, model: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/messages", self.url))
            .header("x-api-key", &self.token)
            .header("authorization", "Bearer client-side")
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": model, "stream": true, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
    }

    fn calls(&self, api: &'static str, result: &'static str) -> u64 {
        self.metrics
            .model_calls
            .get_or_create(&ModelCallLabels { api, result })
            .get()
    }
}

#[tokio::test]
async fn anthropic_stream_is_forwarded_chunk_by_chunk_and_metered_from_the_providers_usage() {
    let f = fixture(|_| {}).await;
    let resp = f.anthropic("gated").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    // The provider holds the rest of its reply until we have seen the first
    // chunk: a buffering proxy would never deliver it.
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("first chunk held back")
        .unwrap()
        .unwrap();
    assert_eq!(first, ANTHROPIC_HEAD.as_bytes());
    f.provider.gate.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        String::from_utf8(rest).unwrap(),
        ANTHROPIC_TAIL.concat(),
        "bytes and order unchanged"
    );

    let expected = Usage {
        input_tokens: 90,
        output_tokens: 6,
        cache_read_tokens: 5,
        cache_write_tokens: 20,
    };
    let text = f.metrics.encode();
    assert!(
        text.contains("clawswarm_tokens_total{kind=\"input\"} 90"),
        "{text}"
    );
    assert!(
        text.contains("clawswarm_tokens_total{kind=\"cache_write\"} 20"),
        "{text}"
    );
    assert_eq!(f.calls("anthropic", "ok"), 1);
    let (day, month) = f.proxy.ledger().totals(datetime!(2026-11-23 23:00 UTC));
    assert_eq!((day.total(), month.total()), (121, 121));
    assert_eq!(
        (
            day.input_tokens,
            day.output_tokens,
            day.cache_read_tokens,
            day.cache_write_tokens
        ),
        (
            expected.input_tokens,
            expected.output_tokens,
            expected.cache_read_tokens,
            expected.cache_write_tokens
        )
    );
}

#[tokio::test]
async fn the_real_key_goes_upstream_and_the_clients_credentials_do_not() {
    let f = fixture(|_| {}).await;
    f.anthropic("plain")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    f.client
        .post(format!("{}/v1/chat/completions", f.url))
        .bearer_auth(&f.token)
        .json(&json!({"model": "openai", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let calls = f.provider.calls.lock().unwrap();
    let (anthropic, _) = &calls[0];
    assert_eq!(anthropic["x-api-key"], REAL_KEY);
    assert!(anthropic.get("authorization").is_none());
    assert_eq!(
        anthropic["anthropic-version"], "2023-06-01",
        "protocol headers pass"
    );
    let (openai, _) = &calls[1];
    assert_eq!(
        openai["authorization"],
        format!("Bearer {REAL_KEY}").as_str()
    );
    assert!(openai.get("x-api-key").is_none());
    for (headers, _) in calls.iter() {
        assert!(!format!("{headers:?}").contains(&f.token));
        assert!(!format!("{headers:?}").contains("client-side"));
    }
}

#[tokio::test]
async fn openai_streams_ask_for_usage_and_cached_tokens_are_split_out() {
    let f = fixture(|_| {}).await;
    let text = f
        .client
        .post(format!("{}/v1/chat/completions", f.url))
        .json(&json!({"model": "openai", "stream": true, "stream_options": {"foo": 1}, "messages": []}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let calls = f.provider.calls.lock().unwrap();
    assert_eq!(
        calls[0].1["stream_options"],
        json!({"foo": 1, "include_usage": true})
    );
    let m = f.metrics.encode();
    assert!(
        m.contains("clawswarm_tokens_total{kind=\"input\"} 20"),
        "{m}"
    );
    assert!(
        m.contains("clawswarm_tokens_total{kind=\"cache_read\"} 10"),
        "{m}"
    );
    assert_eq!(f.calls("openai", "ok"), 1);
}

#[tokio::test]
async fn non_streamed_replies_are_metered_too() {
    let f = fixture(|_| {}).await;
    let body: Value = f
        .anthropic("plain")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["usage"]["output_tokens"], 3);
    assert_eq!(
        f.proxy
            .ledger()
            .totals(datetime!(2026-11-23 22:00 UTC))
            .0
            .total(),
        7
    );
}

#[tokio::test]
async fn a_used_up_budget_answers_the_person_without_calling_the_provider() {
    let f = fixture(|a| a.daily_token_budget = 100).await;
    // Under budget: goes out, uses 121 tokens.
    f.anthropic("default")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The next call of the same conversation is refused before forwarding.
    let resp = f.anthropic("default").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("event: message_stop"),
        "a complete Anthropic stream: {text}"
    );
    assert!(
        text.contains("daily token budget of 100 tokens is used up; it resets at 00:00 UTC"),
        "{text}"
    );
    assert_eq!(
        f.provider.calls.lock().unwrap().len(),
        1,
        "the provider saw only the first call"
    );
    assert_eq!(f.calls("anthropic", "budget_exhausted"), 1);
    // Raising the budget on the running proxy lets calls through again.
    f.proxy.set_budgets(Budgets {
        daily_tokens: 1_000,
        monthly_tokens: 0,
    });
    f.anthropic("plain")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(f.provider.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn budget_error_mode_answers_429_in_the_providers_shape() {
    let f = fixture(|a| {
        a.monthly_token_budget = 1;
        a.budget_reply = BudgetReply::Error;
    })
    .await;
    f.anthropic("plain")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let resp = f.anthropic("plain").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    // 2026-11-23 22:00 → 2026-12-01 00:00.
    assert_eq!(
        resp.headers()["retry-after"],
        (7 * 86400 + 2 * 3600).to_string().as_str()
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("monthly token budget of 1 tokens")
    );
}

#[tokio::test]
async fn provider_429s_pass_through_with_retry_after_and_body() {
    let f = fixture(|_| {}).await;
    let resp = f.anthropic("limited").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "17");
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
    );
    assert_eq!(f.calls("anthropic", "rate_limited"), 1);
    assert_eq!(
        f.proxy
            .ledger()
            .totals(datetime!(2026-11-23 22:00 UTC))
            .0
            .total(),
        0
    );
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_still_pays_what_the_provider_reported() {
    let f = fixture(|_| {}).await;
    let resp = f.anthropic("endless").send().await.unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    // The provider's stream ends only when the proxy closes the upstream
    // request, which it does once it sees the client gone.
    tokio::time::timeout(Duration::from_secs(10), f.provider.gate.notified())
        .await
        .expect("upstream request closed");
    assert_eq!(f.calls("anthropic", "cancelled"), 1);
    assert_eq!(
        f.proxy
            .ledger()
            .totals(datetime!(2026-11-23 22:00 UTC))
            .0
            .input_tokens,
        90
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_a_502_in_the_providers_shape_in_error_mode() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let f = fixture(|a| {
        a.upstream_url = url;
        a.failure_reply = BudgetReply::Error;
    })
    .await;
    let resp = f.anthropic("x").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error");
    assert_eq!(f.calls("anthropic", "unreachable"), 1);
}

#[tokio::test]
async fn callers_without_the_agents_credential_are_refused_and_nothing_goes_upstream() {
    let f = fixture(|_| {}).await;
    let stranger = reqwest::Client::new();
    let body = json!({"model": "plain", "max_tokens": 10, "messages": []});
    let anthropic = |key: Option<&str>| {
        let req = stranger
            .post(format!("{}/v1/messages", f.url))
            .header("anthropic-version", "2023-06-01")
            .json(&body);
        match key {
            Some(k) => req.header("x-api-key", k),
            None => req,
        }
    };
    for req in [
        anthropic(None),
        anthropic(Some("clawswarm-model-proxy")),
        anthropic(Some(&f.token[..63])),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["type"], "authentication_error", "{err}");
    }
    let resp = stranger
        .post(format!("{}/v1/chat/completions", f.url))
        .bearer_auth("sk-guessed")
        .json(&json!({"model": "openai", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_api_key", "{err}");
    let models = stranger
        .get(format!("{}/v1/models", f.url))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), StatusCode::UNAUTHORIZED);

    assert!(f.provider.calls.lock().unwrap().is_empty(), "nothing spent");
    assert_eq!(f.calls("anthropic", "unauthorized"), 3);
    assert_eq!(f.calls("openai", "unauthorized"), 2);
    // The agent's own workload, with the credential from its config, is served.
    let ok = f
        .client
        .post(format!("{}/v1/messages", f.url))
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_requests_and_models_listing() {
    let f = fixture(|_| {}).await;
    let resp = f
        .client
        .post(format!("{}/v1/messages", f.url))
        .body("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let models: Value = f
        .client
        .get(format!("{}/v1/models", f.url))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["key_seen"], true);
}

#[test]
fn configuration_errors_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = ModelProxyArgs {
        listen: "0.0.0.0:1".parse().unwrap(),
        upstream_url: "https://api.anthropic.com".into(),
        api_key_file: None,
        api_key: Some("k".into()),
        daily_token_budget: 0,
        monthly_token_budget: 0,
        budget_reply: BudgetReply::Message,
        failure_reply: BudgetReply::Message,
        usage_file: dir.path().join("u.json"),
        token_file: dir.path().join("t"),
        read_timeout_secs: 1,
        connect_timeout_secs: 1,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let err = |a: &ModelProxyArgs| {
        ModelProxy::new(a, SidecarMetrics::new())
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err(&args).contains("CLAWSWARM_MODEL_PROXY_LISTEN"));
    args.listen = "127.0.0.1:1".parse().unwrap();
    args.api_key = None;
    assert!(err(&args).contains("CLAWSWARM_MODEL_API_KEY"));
    args.api_key = Some("k".into());
    args.upstream_url = "api.anthropic.com".into();
    assert!(err(&args).contains("CLAWSWARM_MODEL_UPSTREAM_URL"));
    let text = format!(
        "{:?}",
        ModelProxyArgs {
            api_key: Some("secret-k".into()),
            ..args
        }
    );
    assert!(!text.contains("secret-k"));
}

#[tokio::test]
async fn an_unreachable_model_server_is_explained_to_the_person_and_remembered() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let f = fixture(|a| a.upstream_url = url.clone()).await;
    let resp = f.anthropic("x").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "an assistant message");
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("event: message_stop")
            && text.contains(&format!("the model server at {url} cannot be reached")),
        "{text}"
    );
    let problem = f.proxy.health().problem().unwrap().to_string();
    assert!(problem.contains("refused"), "the cause is named: {problem}");
    assert_eq!(f.calls("anthropic", "unreachable"), 1);
}

#[tokio::test]
async fn a_rejected_key_is_explained_until_a_call_succeeds() {
    let f = fixture(|_| {}).await;
    let resp = f.anthropic("revoked").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "an assistant message");
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("the model provider rejected the key (HTTP 401: invalid x-api-key)"),
        "{text}"
    );
    assert_eq!(f.calls("anthropic", "key_rejected"), 1);
    assert!(f.proxy.health().problem().is_some());

    // Non-streamed, OpenAI-shaped callers get their own shape.
    let resp = f
        .client
        .post(format!("{}/v1/chat/completions", f.url))
        .json(&json!({"model": "revoked", "messages": []}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("rejected the key"),
        "{body}"
    );

    f.anthropic("plain")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(f.proxy.health().problem(), None, "cleared by a success");
    // In error mode the provider's own 401 passes through.
    let f = fixture(|a| a.failure_reply = BudgetReply::Error).await;
    let resp = f.anthropic("revoked").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.text().await.unwrap().contains("invalid x-api-key"));
}

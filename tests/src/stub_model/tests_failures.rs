//! Stub model tests for the unhappy paths: scripted and injected failures, hangs, client
//! disconnects, authentication and malformed requests.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use super::tests::{ANTHROPIC, client, parse_sse, post, stub};
use super::*;

/// Waits (bounded) until the stub has logged `n` calls.
async fn logged(stub: &StubModel, n: usize) -> Vec<LoggedRequest> {
    let r = stub.wait_for_requests(n, Duration::from_secs(5)).await;
    assert!(r.len() >= n, "expected {n} logged calls, have {r:?}");
    r
}

#[tokio::test]
async fn fail_before_content_is_in_band_after_http_200_on_every_api() {
    let stub = stub().await;
    let text = "x [fail_before_content]";

    let (s, _, body) = post(
        &stub,
        "/v1/responses",
        &[],
        json!({"model": "m", "input": text, "stream": true}),
    )
    .await;
    assert_eq!(s, 200);
    let ev = parse_sse(&body);
    let names: Vec<&str> = ev.iter().filter_map(|e| e.name.as_deref()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
    let failed = ev[2].json();
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(failed["response"]["error"]["code"], "server_error");
    assert_eq!(ev.last().map(|e| e.data.as_str()), Some("[DONE]"));

    let (s, _, body) = post(
        &stub,
        "/v1/chat/completions",
        &[],
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": text}]}),
    )
    .await;
    assert_eq!(s, 200);
    let ev = parse_sse(&body);
    assert_eq!(ev.len(), 1, "{body}");
    assert_eq!(ev[0].json()["error"]["type"], "server_error");

    let (s, _, body) = post(
        &stub,
        "/v1/messages",
        &ANTHROPIC,
        json!({"model": "c", "max_tokens": 9, "stream": true, "messages": [{"role": "user", "content": text}]}),
    )
    .await;
    assert_eq!(s, 200);
    let ev = parse_sse(&body);
    assert_eq!(ev.len(), 1, "{body}");
    assert_eq!(ev[0].name.as_deref(), Some("error"));
    assert_eq!(ev[0].json()["error"]["type"], "api_error");

    for r in stub.requests() {
        assert_eq!(
            (r.outcome, r.chunks, r.usage.output_tokens),
            (Outcome::Error, 0, 0)
        );
    }
}

#[tokio::test]
async fn fail_after_sends_n_chunks_then_an_in_band_error_and_bills_them() {
    let stub = stub().await;
    let (_, _, body) = post(
        &stub,
        "/v1/responses",
        &[],
        json!({"model": "m", "input": "[chunks=5] [fail_after=2]", "stream": true}),
    )
    .await;
    let ev = parse_sse(&body);
    let deltas: Vec<String> = ev
        .iter()
        .filter(|e| e.name.as_deref() == Some("response.output_text.delta"))
        .map(|e| e.json()["delta"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(deltas, ["w0 ", "w1 "]);
    let failed = ev
        .iter()
        .find(|e| e.name.as_deref() == Some("response.failed"))
        .expect("response.failed")
        .json();
    assert_eq!(failed["response"]["usage"]["output_tokens"], 2);

    let (_, _, body) = post(
        &stub,
        "/v1/messages",
        &ANTHROPIC,
        json!({"model": "c", "max_tokens": 9, "stream": true,
               "messages": [{"role": "user", "content": "[chunks=5] [fail_after=2]"}]}),
    )
    .await;
    let names: Vec<String> = parse_sse(&body)
        .into_iter()
        .filter_map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "error"
        ]
    );
    for r in stub.requests() {
        assert_eq!(
            (r.outcome, r.chunks, r.usage.output_tokens),
            (Outcome::Error, 2, 2)
        );
    }
}

#[tokio::test]
async fn http_status_directive_returns_api_shaped_error_and_429_carries_retry_after() {
    let stub = stub().await;
    let (s, h, body) = post(
        &stub,
        "/v1/responses",
        &[],
        json!({"model": "m", "input": "[http_status=429]", "stream": true}),
    )
    .await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "1");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    let (s, _, body) = post(
        &stub,
        "/v1/messages",
        &ANTHROPIC,
        json!({"model": "c", "max_tokens": 9, "messages": [{"role": "user", "content": "[http_status=529]"}]}),
    )
    .await;
    assert_eq!(s, 529);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");

    let r = stub.requests();
    assert_eq!(r.len(), 2);
    assert!(
        r.iter()
            .all(|r| r.outcome == Outcome::Error && r.usage == Usage::default())
    );
}

#[tokio::test]
async fn injected_http_failures_apply_to_the_next_n_calls_only() {
    let stub = stub().await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    stub.fail_next(FailMode::Http500, 2);
    for _ in 0..2 {
        let (s, _, b) = post(&stub, "/v1/chat/completions", &[], body.clone()).await;
        assert_eq!(s, 500);
        assert_eq!(
            serde_json::from_str::<Value>(&b).expect("json")["error"]["type"],
            "server_error"
        );
    }
    let (s, _, _) = post(&stub, "/v1/chat/completions", &[], body.clone()).await;
    assert_eq!(s, 200);

    // The same through the HTTP control endpoint, as an out-of-process test would do it.
    let resp = client()
        .post(format!("{}/_stub/fail", stub.base_url()))
        .json(&json!({"mode": "http_429", "count": 1}))
        .send()
        .await
        .expect("control");
    assert_eq!(resp.status(), 200);
    let (s, h, _) = post(&stub, "/v1/chat/completions", &[], body.clone()).await;
    assert_eq!(s, 429);
    assert!(h.contains_key("retry-after"));
    let (s, _, _) = post(&stub, "/v1/chat/completions", &[], body).await;
    assert_eq!(s, 200);
    let outcomes: Vec<Outcome> = stub.requests().iter().map(|r| r.outcome).collect();
    use Outcome::{Error, Ok};
    assert_eq!(outcomes, [Error, Error, Ok, Error, Ok]);
}

#[tokio::test]
async fn injected_in_band_error_overrides_the_script_and_none_clears_it() {
    let stub = stub().await;
    stub.fail_next(FailMode::InBandError, 5);
    let req = json!({"model": "m", "input": "hello", "stream": true});
    let (s, _, body) = post(&stub, "/v1/responses", &[], req.clone()).await;
    assert_eq!(s, 200);
    assert!(body.contains("event: response.failed"));
    assert!(!body.contains("output_text.delta"));
    stub.fail_next(FailMode::None, 0);
    let (_, _, body) = post(&stub, "/v1/responses", &[], req).await;
    assert!(body.contains("event: response.completed"));
}

#[tokio::test]
async fn injected_down_drops_the_connection_without_a_response() {
    let stub = stub().await;
    stub.fail_next(FailMode::Down, 1);
    let err = client()
        .post(format!("{}/v1/responses", stub.base_url()))
        .json(&json!({"model": "m", "input": "x", "stream": true}))
        .send()
        .await;
    assert!(err.is_err(), "expected a transport error, got {err:?}");
    let (s, _, _) = post(
        &stub,
        "/v1/responses",
        &[],
        json!({"model": "m", "input": "x"}),
    )
    .await;
    assert_eq!(s, 200);
    let r = stub.requests();
    assert_eq!((r[0].outcome, r[1].outcome), (Outcome::Error, Outcome::Ok));
}

#[tokio::test]
async fn hang_sends_headers_then_nothing_and_disconnect_logs_cancelled() {
    let stub = stub().await;
    let resp = client()
        .post(format!("{}/v1/messages", stub.base_url()))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "c", "max_tokens": 9, "stream": true,
                      "messages": [{"role": "user", "content": "[hang]"}]}))
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let next = tokio::time::timeout(Duration::from_millis(200), body.next()).await;
    assert!(next.is_err(), "hang must send no body, got {next:?}");
    drop(body);
    let r = logged(&stub, 1).await;
    assert_eq!((r[0].outcome, r[0].chunks), (Outcome::Cancelled, 0));
    assert_eq!((r[0].usage.input_tokens, r[0].usage.output_tokens), (2, 0));
}

#[tokio::test]
async fn client_disconnect_mid_stream_logs_cancelled_with_chunks_sent() {
    let stub = stub().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", stub.base_url()))
        .json(&json!({"model": "m", "stream": true,
                      "messages": [{"role": "user", "content": "[chunks=100] [delay_ms=20]"}]}))
        .send()
        .await
        .expect("response");
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while seen.matches("w1 ").count() == 0 {
        let bytes = body.next().await.expect("more body").expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&bytes));
    }
    drop(body);
    let r = logged(&stub, 1).await;
    assert_eq!(r[0].outcome, Outcome::Cancelled);
    assert!(
        r[0].chunks >= 2 && r[0].chunks < 100,
        "chunks {}",
        r[0].chunks
    );
    assert_eq!(r[0].usage.output_tokens, u64::from(r[0].chunks));
}

#[tokio::test]
async fn api_key_is_enforced_per_api_when_configured() {
    let stub = StubModel::start(StubConfig {
        api_key: Some("k1".into()),
        ..StubConfig::default()
    })
    .await
    .expect("start");
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let (s, _, body) = post(&stub, "/v1/chat/completions", &[], chat.clone()).await;
    assert_eq!(s, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["error"]["code"],
        "invalid_api_key"
    );
    let (s, _, _) = post(
        &stub,
        "/v1/chat/completions",
        &[("authorization", "Bearer k1")],
        chat,
    )
    .await;
    assert_eq!(s, 200);

    let msg =
        json!({"model": "c", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]});
    let (s, _, body) = post(
        &stub,
        "/v1/messages",
        &[("x-api-key", "wrong"), ANTHROPIC[0]],
        msg.clone(),
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["error"]["type"],
        "authentication_error"
    );
    let (s, _, body) = post(&stub, "/v1/messages", &[("x-api-key", "k1")], msg.clone()).await;
    assert_eq!(s, 400, "anthropic-version is required: {body}");
    assert!(body.contains("anthropic-version"));
    let (s, _, _) = post(
        &stub,
        "/v1/messages",
        &[("x-api-key", "k1"), ANTHROPIC[0]],
        msg,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        stub.requests().len(),
        2,
        "rejected calls are not model calls"
    );
}

#[tokio::test]
async fn malformed_or_incomplete_bodies_get_400_naming_the_field() {
    let stub = stub().await;
    let raw = client()
        .post(format!("{}/v1/responses", stub.base_url()))
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(raw.status(), 400);
    let v: Value = raw.json().await.expect("json error body");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let cases = [
        ("/v1/responses", json!({"input": "x"}), "model"),
        ("/v1/responses", json!({"model": "m"}), "input"),
        (
            "/v1/responses",
            json!({"model": "m", "input": [{"role": "user"}]}),
            "input[0].content",
        ),
        ("/v1/responses", json!({"model": 3, "input": "x"}), "model"),
        ("/v1/chat/completions", json!({"model": "m"}), "messages"),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"content": "x"}]}),
            "messages[0].role",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "stream": "yes", "messages": []}),
            "stream",
        ),
    ];
    for (path, body, field) in cases {
        let (s, _, text) = post(&stub, path, &[], body).await;
        assert_eq!(s, 400, "{path} {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["error"]["param"], field, "{path} {text}");
    }
    let anthropic_cases = [
        (json!({"model": "c", "messages": []}), "max_tokens"),
        (json!({"model": "c", "max_tokens": 1}), "messages"),
        (
            json!({"model": "c", "max_tokens": 1, "messages": [{"role": "user"}]}),
            "messages.0.content",
        ),
    ];
    for (body, field) in anthropic_cases {
        let (s, _, text) = post(&stub, "/v1/messages", &ANTHROPIC, body).await;
        assert_eq!(s, 400, "{text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(field), "{msg} should name {field}");
    }
    let (s, _, _) = post(&stub, "/_stub/fail", &[], json!({"mode": "sometimes"})).await;
    assert_eq!(s, 400);
    assert!(stub.requests().is_empty(), "bad requests are not logged");
}

#[tokio::test]
async fn client_giving_up_on_a_non_streamed_call_logs_cancelled() {
    let stub = stub().await;
    let resp = client()
        .post(format!("{}/v1/responses", stub.base_url()))
        .timeout(Duration::from_millis(150))
        .json(&json!({"model": "m", "input": "[chunks=50] [delay_ms=20]"}))
        .send()
        .await;
    assert!(resp.is_err(), "the call should time out: {resp:?}");
    let r = logged(&stub, 1).await;
    assert_eq!(r[0].outcome, Outcome::Cancelled);
    assert!(r[0].chunks < 50);
}

#[tokio::test]
async fn shutdown_cuts_off_a_hanging_reply_after_the_grace_period_and_logs_it_cancelled() {
    let stub = StubModel::start(StubConfig {
        shutdown_grace: Duration::from_millis(100),
        ..StubConfig::default()
    })
    .await
    .expect("start");
    let resp = client()
        .post(format!("{}/v1/responses", stub.base_url()))
        .json(&json!({"model": "m", "input": "[hang]", "stream": true}))
        .send()
        .await
        .expect("headers");
    let log = stub.shared.log.clone();
    tokio::time::timeout(Duration::from_secs(5), stub.shutdown())
        .await
        .expect("shutdown returns after the grace period");
    assert!(resp.bytes().await.is_err(), "the hanging body is cut off");
    let r = log.snapshot();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].outcome, Outcome::Cancelled);
}

#[tokio::test]
async fn total_usage_sums_every_logged_call() {
    let stub = stub().await;
    for text in [
        "abcd [chunks=2] [cache_read=1]",
        "[chunks=3] [cache_write=4]",
    ] {
        post(
            &stub,
            "/v1/chat/completions",
            &[],
            json!({"model": "m", "messages": [{"role": "user", "content": text}]}),
        )
        .await;
    }
    let total = stub.total_usage();
    // 30 chars → 8 tokens; 26 chars → 7 tokens.
    assert_eq!(
        total,
        Usage {
            input_tokens: 15,
            output_tokens: 5,
            cache_read_tokens: 1,
            cache_write_tokens: 4
        }
    );
}

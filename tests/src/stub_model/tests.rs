//! Stub model tests over real loopback HTTP: each API's event sequence and usage, directives and
//! the call log. Failure injection, disconnects and bad input are in `tests_failures.rs`.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

/// One parsed SSE event: its `event:` name (if any) and its `data:` payload.
#[derive(Debug)]
pub(super) struct Event {
    pub name: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

pub(super) fn parse_sse(body: &str) -> Vec<Event> {
    body.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            Event { name, data }
        })
        .collect()
}

pub(super) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("reqwest client")
}

pub(super) async fn stub() -> StubModel {
    StubModel::start(StubConfig::default())
        .await
        .expect("stub starts")
}

/// POSTs `body` to `path` and returns status, headers and the whole body text.
pub(super) async fn post(
    stub: &StubModel,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = client()
        .post(format!("{}{path}", stub.base_url()))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body read");
    (status, headers, text)
}

pub(super) const ANTHROPIC: [(&str, &str); 1] = [("anthropic-version", "2023-06-01")];

fn responses_deltas(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.name.as_deref() == Some("response.output_text.delta"))
        .map(|e| e.json()["delta"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn responses_stream_emits_openai_event_sequence_with_usage_then_done() {
    let stub = stub().await;
    let (status, headers, body) = post(
        &stub,
        "/v1/responses",
        &[("x-openclaw-session-key", "agent-a:dm")],
        json!({"model": "openclaw/default", "input": "hello world [cache_read=3] [cache_write=2]",
               "stream": true, "user": "U1"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = parse_sse(&body);
    let names: Vec<&str> = events.iter().filter_map(|e| e.name.as_deref()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let created = events[0].json();
    assert_eq!(created["type"], "response.created");
    assert_eq!(created["response"]["status"], "in_progress");
    let delta = events[4].json();
    assert_eq!(delta["type"], "response.output_text.delta");
    assert_eq!(delta["output_index"], 0);
    assert_eq!(delta["content_index"], 0);
    assert_eq!(delta["item_id"], events[2].json()["item"]["id"]);
    assert_eq!(responses_deltas(&events), "echo: hello world");
    let done = events[10].json();
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(done["response"]["id"], created["response"]["id"]);
    assert_eq!(
        done["response"]["output"][0]["content"][0]["text"],
        "echo: hello world"
    );
    // 42 chars of input → ceil(43/4) = 11; "echo: hello world" is 17 chars → 3 chunks.
    assert_eq!(
        done["response"]["usage"],
        json!({"input_tokens": 11, "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 2},
               "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 14})
    );
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));

    let log = stub.requests();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!(r.api, Api::Responses);
    assert_eq!(r.session_key.as_deref(), Some("agent-a:dm"));
    assert_eq!(r.user.as_deref(), Some("U1"));
    assert_eq!(r.model, "openclaw/default");
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.chunks, 3);
    assert!(r.stream);
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 11,
            output_tokens: 3,
            cache_read_tokens: 3,
            cache_write_tokens: 2
        }
    );
}

#[tokio::test]
async fn responses_item_array_input_logs_every_text_in_order_and_replies_to_last_user() {
    let stub = stub().await;
    let input = json!([
        {"role": "user", "content": "first"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "echo: first"}]},
        {"type": "function_call_output", "call_id": "c1", "output": "ignored"},
        {"role": "user", "content": [{"type": "input_text", "text": "second"}, {"type": "input_image", "image_url": "x"}]},
    ]);
    let (status, _, body) = post(
        &stub,
        "/v1/responses",
        &[],
        json!({"model": "m", "instructions": "be brief", "input": input}),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], "echo: second");
    // "be brief" + "first" + "echo: first" + "second" = 8 + 5 + 11 + 6 = 30 chars → 8 tokens.
    assert_eq!(v["usage"]["input_tokens"], 8);
    assert_eq!(v["usage"]["output_tokens"], 2);
    assert_eq!(v["usage"]["total_tokens"], 10);
    let r = &stub.requests()[0];
    assert_eq!(
        r.input_texts,
        ["be brief", "first", "echo: first", "second"]
    );
    assert_eq!(r.last_user_text, "second");
    assert!(!r.stream);
}

#[tokio::test]
async fn chat_stream_sends_role_then_content_then_stop_then_usage_then_done() {
    let stub = stub().await;
    let (status, _, body) = post(
        &stub,
        "/v1/chat/completions",
        &[],
        json!({"model": "gpt", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "system", "content": "sys"},
                            {"role": "user", "content": [{"type": "text", "text": "hi [chunks=3] [cache_read=5]"}]}]}),
    )
    .await;
    assert_eq!(status, 200);
    let events = parse_sse(&body);
    assert_eq!(events.len(), 7, "{body}");
    let chunks: Vec<Value> = events[..6].iter().map(Event::json).collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: Vec<&str> = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(content, ["w0 ", "w1 ", "w2 "]);
    assert!(
        chunks[1..4]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"], json!([]));
    // "sys" + "hi [chunks=3] [cache_read=5]" = 3 + 28 chars → 8 tokens.
    assert_eq!(
        chunks[5]["usage"],
        json!({"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11,
               "prompt_tokens_details": {"cached_tokens": 5},
               "completion_tokens_details": {"reasoning_tokens": 0}})
    );
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    assert_eq!(events[6].data, "[DONE]");
    let r = &stub.requests()[0];
    assert_eq!((r.api, r.chunks, r.outcome), (Api::Chat, 3, Outcome::Ok));
    assert_eq!(r.input_texts, ["sys", "hi [chunks=3] [cache_read=5]"]);
}

#[tokio::test]
async fn chat_stream_omits_usage_chunk_unless_asked_and_non_stream_returns_completion() {
    let stub = stub().await;
    let msgs = json!([{"role": "user", "content": "abc"}]);
    let (_, _, body) = post(
        &stub,
        "/v1/chat/completions",
        &[],
        json!({"model": "m", "stream": true, "messages": msgs}),
    )
    .await;
    let events = parse_sse(&body);
    assert!(events.iter().all(|e| !e.data.contains("usage")), "{body}");
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));

    let (status, _, body) = post(
        &stub,
        "/v1/chat/completions",
        &[],
        json!({"model": "m", "messages": msgs}),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: abc");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 1);
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn anthropic_stream_emits_messages_event_sequence_with_cache_usage() {
    let stub = stub().await;
    let (status, headers, body) = post(
        &stub,
        "/v1/messages",
        &ANTHROPIC,
        json!({"model": "claude-sonnet-4-20250514", "max_tokens": 1024, "stream": true,
               "metadata": {"user_id": "U2"},
               "system": [{"type": "text", "text": "you are a bot"}],
               "messages": [{"role": "user", "content": "go [chunks=2] [cache_read=100] [cache_write=40]"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("request-id"));
    let events = parse_sse(&body);
    let names: Vec<&str> = events.iter().filter_map(|e| e.name.as_deref()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let start = events[0].json();
    // "you are a bot" + the user text = 13 + 47 chars → 15 tokens.
    assert_eq!(
        start["message"]["usage"],
        json!({"input_tokens": 15, "cache_creation_input_tokens": 40,
               "cache_read_input_tokens": 100, "output_tokens": 1})
    );
    assert_eq!(start["message"]["role"], "assistant");
    let d = events[3].json();
    assert_eq!(d["delta"], json!({"type": "text_delta", "text": "w0 "}));
    assert_eq!(events[4].json()["delta"]["text"], "w1 ");
    let md = events[6].json();
    assert_eq!(md["delta"]["stop_reason"], "end_turn");
    assert_eq!(md["usage"]["output_tokens"], 2);
    let r = &stub.requests()[0];
    assert_eq!(r.api, Api::Anthropic);
    assert_eq!(r.user.as_deref(), Some("U2"));
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 15,
            output_tokens: 2,
            cache_read_tokens: 100,
            cache_write_tokens: 40
        }
    );
}

#[tokio::test]
async fn anthropic_non_stream_returns_message_and_reads_tool_result_text() {
    let stub = stub().await;
    let (status, _, body) = post(
        &stub,
        "/v1/messages",
        &ANTHROPIC,
        json!({"model": "c", "max_tokens": 5, "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42"},
                                         {"type": "text", "text": "and?"}]}]}),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "echo: 42\nand?");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 2);
    assert_eq!(stub.requests()[0].input_texts, ["q", "", "42\nand?"]);
}

#[tokio::test]
async fn directives_come_from_the_persons_message_not_openclaws_context_blocks() {
    let stub = stub().await;
    let (status, _, body) = post(
        &stub,
        "/v1/messages",
        &ANTHROPIC,
        json!({"model": "c", "max_tokens": 5, "messages": [
            {"role": "user", "content": "[chunks=2] hi"},
            {"role": "user", "content": "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>\nActive exec sessions:\nnone\n<<<END_OPENCLAW_INTERNAL_CONTEXT>>>"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["content"][0]["text"], "w0 w1 ");
    assert_eq!(stub.requests()[0].last_user_text, "[chunks=2] hi");
    assert_eq!(
        person_text(
            "a <<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>x<<<END_OPENCLAW_INTERNAL_CONTEXT>>> b"
        )
        .as_deref(),
        Some("a  b")
    );
}

#[tokio::test]
async fn delay_directive_paces_chunks_and_chunk_delay_config_is_the_default() {
    let stub = StubModel::start(StubConfig {
        chunk_delay: Duration::from_millis(20),
        ..StubConfig::default()
    })
    .await
    .expect("start");
    let t = std::time::Instant::now();
    let (_, _, body) = post(
        &stub,
        "/v1/responses",
        &[],
        json!({"model": "m", "input": "[chunks=3]", "stream": true}),
    )
    .await;
    assert!(t.elapsed() >= Duration::from_millis(60));
    assert_eq!(responses_deltas(&parse_sse(&body)), "w0 w1 w2 ");
    let t = std::time::Instant::now();
    post(
        &stub,
        "/v1/responses",
        &[],
        json!({"model": "m", "input": "[chunks=2] [delay_ms=80]", "stream": true}),
    )
    .await;
    assert!(t.elapsed() >= Duration::from_millis(160));
}

#[tokio::test]
async fn log_file_gets_one_json_line_per_call_and_never_the_api_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("calls.jsonl");
    let stub = StubModel::start(StubConfig {
        log_path: Some(path.clone()),
        api_key: Some("sk-secret-123".into()),
        ..StubConfig::default()
    })
    .await
    .expect("start");
    let auth = [("authorization", "Bearer sk-secret-123")];
    for text in ["one", "two"] {
        let (status, _, _) = post(
            &stub,
            "/v1/responses",
            &auth,
            json!({"model": "m", "input": text, "stream": true}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _, _) = post(
        &stub,
        "/v1/messages",
        &[("x-api-key", "sk-secret-123"), ANTHROPIC[0]],
        json!({"model": "c", "max_tokens": 1, "messages": [{"role": "user", "content": "three"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let file = std::fs::read_to_string(&path).expect("log file");
    assert!(!file.contains("sk-secret-123"));
    let lines: Vec<LoggedRequest> = file
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a LoggedRequest"))
        .collect();
    assert_eq!(lines, stub.requests());
    let texts: Vec<&str> = lines.iter().map(|r| r.last_user_text.as_str()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    let raw: Value = serde_json::from_str(file.lines().next().unwrap_or("")).expect("json");
    for key in [
        "ts_ms",
        "api",
        "session_key",
        "user",
        "model",
        "input_texts",
        "last_user_text",
        "stream",
        "usage",
        "outcome",
        "chunks",
    ] {
        assert!(raw.get(key).is_some(), "log line lacks {key}");
    }
    assert_eq!(raw["api"], "responses");
    assert_eq!(raw["outcome"], "ok");
}

#[tokio::test]
async fn control_endpoint_lists_and_clears_logged_requests() {
    let stub = stub().await;
    post(
        &stub,
        "/v1/chat/completions",
        &[],
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    let url = format!("{}/_stub/requests", stub.base_url());
    let listed: Vec<LoggedRequest> = client()
        .get(&url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(listed, stub.requests());
    assert_eq!(listed[0].api, Api::Chat);
    let resp = client().delete(&url).send().await.expect("delete");
    assert_eq!(resp.status(), 204);
    assert!(stub.requests().is_empty());
}

#[tokio::test]
async fn readyz_is_503_until_ready_after_then_200_and_healthz_and_models_answer() {
    let stub = StubModel::start(StubConfig {
        ready_after: Duration::from_millis(300),
        ..StubConfig::default()
    })
    .await
    .expect("start");
    let c = client();
    let url = format!("{}/readyz", stub.base_url());
    let first = c.get(&url).send().await.expect("readyz");
    assert_eq!(first.status(), 503);
    assert_eq!(
        first.json::<Value>().await.ok(),
        Some(json!({"ready": false}))
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let later = c.get(&url).send().await.expect("readyz");
    assert_eq!(later.status(), 200);
    assert_eq!(
        later.json::<Value>().await.ok(),
        Some(json!({"ready": true}))
    );
    let health = c
        .get(format!("{}/healthz", stub.base_url()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let models: Value = c
        .get(format!("{}/models", stub.openai_base_url()))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "stub-model");
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let stub = stub().await;
    let url = format!("{}/healthz", stub.base_url());
    stub.shutdown().await;
    assert!(client().get(&url).send().await.is_err());
}

#[tokio::test]
async fn responses_keep_history_per_session_key_and_isolate_sessions_like_openclaw() {
    let stub = stub().await;
    let turn = |key: &'static str, text: &'static str| {
        let stub = &stub;
        async move {
            post(
                stub,
                "/v1/responses",
                &[("x-openclaw-session-key", key)],
                json!({"model": "m", "input": text, "stream": true}),
            )
            .await
        }
    };
    turn("alice", "my cat is Tom").await;
    turn("bob", "my dog is Rex").await;
    turn("alice", "what is my cat called?").await;
    // `user` is only an identifier, as at OpenAI: without a session key every call stands alone.
    for _ in 0..2 {
        post(
            &stub,
            "/v1/responses",
            &[],
            json!({"model": "m", "input": "hi", "user": "carol"}),
        )
        .await;
        post(
            &stub,
            "/v1/responses",
            &[],
            json!({"model": "m", "input": "anon"}),
        )
        .await;
    }
    let r = stub.requests();
    assert_eq!(r[0].input_texts, ["my cat is Tom"]);
    assert_eq!(r[1].input_texts, ["my dog is Rex"]);
    assert_eq!(
        r[2].input_texts,
        [
            "my cat is Tom",
            "echo: my cat is Tom",
            "what is my cat called?"
        ]
    );
    assert_eq!(r[2].last_user_text, "what is my cat called?");
    assert!(r[2].input_texts.iter().all(|t| !t.contains("Rex")));
    // History counts as input, as it would when OpenClaw sends it to its model: 13+19+22 chars.
    assert_eq!(r[2].usage.input_tokens, 14);
    assert_eq!(r[5].input_texts, ["hi"]);
    assert_eq!(r[6].input_texts, ["anon"]);
}

#[tokio::test]
async fn failed_turns_stay_out_of_session_history_and_zero_turns_is_stateless() {
    let stub = stub().await;
    let key = [("x-openclaw-session-key", "s")];
    post(
        &stub,
        "/v1/responses",
        &key,
        json!({"model": "m", "input": "a [fail_after=1]", "stream": true}),
    )
    .await;
    post(
        &stub,
        "/v1/responses",
        &key,
        json!({"model": "m", "input": "b"}),
    )
    .await;
    assert_eq!(stub.requests()[1].input_texts, ["b"]);

    let stateless = StubModel::start(StubConfig {
        session_turns: 0,
        ..StubConfig::default()
    })
    .await
    .expect("start");
    for _ in 0..2 {
        post(
            &stateless,
            "/v1/responses",
            &key,
            json!({"model": "m", "input": "c"}),
        )
        .await;
    }
    assert_eq!(stateless.requests()[1].input_texts, ["c"]);
}

#[tokio::test]
async fn a_tool_directive_calls_the_offered_tool_and_the_next_call_echoes_its_result() {
    let stub = stub().await;
    let ask =
        r#"status of etl? [tool=company_data__search {"index": "pipelines", "body": {"size": 1}}]"#;
    let tools = json!([{"name": "company_data__search", "input_schema": {"type": "object"}}]);
    let (status, _, body) = post(
        &stub,
        "/v1/messages",
        &ANTHROPIC,
        json!({"model": "c", "max_tokens": 5, "stream": true, "tools": tools,
               "messages": [{"role": "user", "content": ask}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events = parse_sse(&body);
    let start = events
        .iter()
        .find(|e| e.name.as_deref() == Some("content_block_start"))
        .unwrap();
    assert_eq!(start.json()["content_block"]["type"], "tool_use");
    assert_eq!(
        start.json()["content_block"]["name"],
        "company_data__search"
    );
    let delta = events
        .iter()
        .find(|e| e.name.as_deref() == Some("content_block_delta"))
        .unwrap();
    let input: Value =
        serde_json::from_str(delta.json()["delta"]["partial_json"].as_str().unwrap()).unwrap();
    assert_eq!(input, json!({"index": "pipelines", "body": {"size": 1}}));
    let stop = events
        .iter()
        .find(|e| e.name.as_deref() == Some("message_delta"))
        .unwrap();
    assert_eq!(stop.json()["delta"]["stop_reason"], "tool_use");

    let (status, _, body) = post(
        &stub,
        "/v1/messages",
        &ANTHROPIC,
        json!({"model": "c", "max_tokens": 5, "tools": tools, "messages": [
            {"role": "user", "content": ask},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "company_data__search", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "status: failed"}]}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["content"][0]["text"], "echo: status: failed");

    let (status, _, body) = post(
        &stub,
        "/v1/messages",
        &ANTHROPIC,
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": ask}]}),
    )
    .await;
    assert_eq!(
        status, 400,
        "a tool the caller does not offer is an error: {body}"
    );
    assert!(body.contains("offers no such tool"), "{body}");
}

#[tokio::test]
async fn notify_if_answers_a_tool_result_only_when_it_holds() {
    let stub = stub().await;
    let ask = r#"[notify_if=quota] [tool=tool_call {"id": "x"}]"#;
    let turn = |result: &str| {
        json!({"model": "c", "max_tokens": 5, "messages": [
            {"role": "user", "content": ask},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "tool_call", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": result}]}]})
    };
    let (_, _, body) = post(
        &stub,
        "/v1/messages",
        &ANTHROPIC,
        turn("error: disk quota exceeded"),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["content"][0]["text"], "echo: error: disk quota exceeded");
    let (_, _, body) = post(
        &stub,
        "/v1/messages",
        &ANTHROPIC,
        turn("all runs succeeded"),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["content"][0]["text"], "NO_REPLY",
        "the condition does not hold: {v}"
    );
}

#[tokio::test]
async fn notify_if_still_applies_when_openclaw_adds_context_after_the_result() {
    let stub = stub().await;
    let context = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>active exec sessions: none<<<END_OPENCLAW_INTERNAL_CONTEXT>>>";
    let body = json!({"model": "c", "max_tokens": 5, "messages": [
        {"role": "user", "content": "[notify_if=quota] [tool=tool_call {\"id\": \"x\"}]"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "tool_call", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "all runs succeeded"}]},
        {"role": "user", "content": context}]});
    let (_, _, body) = post(&stub, "/v1/messages", &ANTHROPIC, body).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["content"][0]["text"], "NO_REPLY", "{v}");
}

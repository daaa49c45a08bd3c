//! The fake must refuse what Slack refuses, or tests against it prove little.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::*;

struct Api {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    fn new(fake: &FakeSlack) -> Self {
        Self {
            base: fake.api_url(),
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    /// (HTTP status, Retry-After, body).
    async fn call(
        &self,
        method: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Option<String>, Value) {
        let mut req = http::Request::post(format!("{}/{method}", self.base))
            .header("content-type", "application/json; charset=utf-8");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    async fn bot(&self, method: &str, body: Value) -> Value {
        self.call(method, Some("xoxb-fake-bot-token"), body).await.2
    }
}

fn error(v: &Value) -> &str {
    assert_eq!(v["ok"], false, "{v}");
    v["error"].as_str().unwrap()
}

#[tokio::test]
async fn tokens_are_checked_like_slack() {
    let fake = FakeSlack::start().await.unwrap();
    let api = Api::new(&fake);
    let msg = json!({"channel": "D1", "text": "hi"});
    assert_eq!(
        error(&api.call("chat.postMessage", None, msg.clone()).await.2),
        "not_authed"
    );
    assert_eq!(
        error(
            &api.call("chat.postMessage", Some("xoxb-wrong"), msg.clone())
                .await
                .2
        ),
        "invalid_auth"
    );
    assert_eq!(
        error(
            &api.call("chat.postMessage", Some("xapp-fake-app-token"), msg.clone())
                .await
                .2
        ),
        "not_allowed_token_type"
    );
    assert_eq!(
        error(
            &api.call(
                "apps.connections.open",
                Some("xoxb-fake-bot-token"),
                json!({})
            )
            .await
            .2
        ),
        "not_allowed_token_type"
    );
    let open = api
        .call(
            "apps.connections.open",
            Some("xapp-fake-app-token"),
            json!({}),
        )
        .await
        .2;
    assert!(open["url"].as_str().unwrap().starts_with("ws://127.0.0.1:"));
}

#[tokio::test]
async fn payload_shapes_are_checked_and_answers_carry_what_clients_parse() {
    let fake = FakeSlack::start().await.unwrap();
    let api = Api::new(&fake);
    assert_eq!(
        error(&api.bot("chat.postMessage", json!({"channel": "D1"})).await),
        "no_text"
    );
    assert_eq!(
        error(
            &api.bot(
                "chat.postMessage",
                json!({"channel": "#general", "text": "x"})
            )
            .await
        ),
        "channel_not_found"
    );
    assert_eq!(
        error(
            &api.bot(
                "chat.postMessage",
                json!({"channel": "D1", "text": "x".repeat(40_001)})
            )
            .await
        ),
        "msg_too_long"
    );
    let posted = api
        .bot(
            "chat.postMessage",
            json!({"channel": "D1", "text": "hello", "thread_ts": "1.000001"}),
        )
        .await;
    assert_eq!(
        (
            posted["ok"].clone(),
            posted["message"]["text"].clone(),
            posted["message"]["thread_ts"].clone()
        ),
        (json!(true), json!("hello"), json!("1.000001"))
    );
    assert_eq!(
        error(
            &api.bot(
                "chat.update",
                json!({"channel": "D1", "ts": "9.000009", "text": "x"})
            )
            .await
        ),
        "message_not_found"
    );

    assert_eq!(
        error(
            &api.bot(
                "chat.startStream",
                json!({"channel": "C1", "thread_ts": "1.000001"})
            )
            .await
        ),
        "missing_recipient_user_id"
    );
    let started = api
        .bot(
            "chat.startStream",
            json!({"channel": "D1", "thread_ts": "1.000001", "markdown_text": "Hel"}),
        )
        .await;
    let ts = started["ts"].as_str().unwrap().to_owned();
    api.bot(
        "chat.appendStream",
        json!({"channel": "D1", "ts": ts, "markdown_text": "lo"}),
    )
    .await;
    assert_eq!(
        error(
            &api.bot(
                "chat.appendStream",
                json!({"channel": "D1", "ts": ts, "markdown_text": "x".repeat(12_001)})
            )
            .await
        ),
        "markdown_text_too_long"
    );
    let stopped = api
        .bot(
            "chat.stopStream",
            json!({"channel": "D1", "ts": ts, "markdown_text": "!"}),
        )
        .await;
    assert_eq!(stopped["message"]["text"], "Hello!");
    assert_eq!(
        error(
            &api.bot(
                "chat.appendStream",
                json!({"channel": "D1", "ts": ts, "markdown_text": "late"})
            )
            .await
        ),
        "message_not_in_streaming_state"
    );
    assert_eq!(fake.thread_text("D1", Some("1.000001")), "hello\nHello!");
    assert_eq!(
        error(
            &api.bot(
                "assistant.threads.setStatus",
                json!({"channel_id": "D1", "thread_ts": "1.000001"})
            )
            .await
        ),
        "invalid_arguments"
    );
    assert_eq!(
        error(
            &api.bot("usergroups.users.list", json!({"usergroup": "SNOPE"}))
                .await
        ),
        "no_such_subteam"
    );
}

#[tokio::test]
async fn rate_limits_and_injected_failures_answer_429_with_retry_after() {
    let fake = FakeSlack::start().await.unwrap();
    let api = Api::new(&fake);
    for _ in 0..5 {
        assert_eq!(
            api.call(
                "chat.postMessage",
                Some("xoxb-fake-bot-token"),
                json!({"channel": "D1", "text": "x"})
            )
            .await
            .0,
            200
        );
    }
    let (status, retry, body) = api
        .call(
            "chat.postMessage",
            Some("xoxb-fake-bot-token"),
            json!({"channel": "D1", "text": "x"}),
        )
        .await;
    assert_eq!(
        (status, retry.as_deref(), error(&body)),
        (429, Some("1"), "ratelimited")
    );

    fake.fail_next("chat.update", Failure::RateLimited(7));
    let (status, retry, _) = api
        .call(
            "chat.update",
            Some("xoxb-fake-bot-token"),
            json!({"channel": "D1", "ts": "1.1", "text": "x"}),
        )
        .await;
    assert_eq!((status, retry.as_deref()), (429, Some("7")));
    fake.fail_next("auth.test", Failure::Error("account_inactive".into()));
    assert_eq!(
        error(&api.bot("auth.test", json!({})).await),
        "account_inactive"
    );
    assert_eq!(
        api.bot("auth.test", json!({})).await["user_id"],
        BOT_USER_ID,
        "only the next call fails"
    );
}

#[tokio::test]
async fn socket_mode_says_hello_delivers_records_acks_and_redelivers() {
    let fake = FakeSlack::start_with(FakeSlackConfig {
        redeliver_after: Duration::from_millis(200),
        max_redeliveries: 1,
        ..FakeSlackConfig::default()
    })
    .await
    .unwrap();
    let api = Api::new(&fake);
    let url = api
        .call(
            "apps.connections.open",
            Some("xapp-fake-app-token"),
            json!({}),
        )
        .await
        .2["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let next = |m: Option<Result<Message, _>>| -> Value {
        serde_json::from_str(m.unwrap().unwrap().to_text().unwrap()).unwrap()
    };
    assert_eq!(next(ws.next().await)["type"], "hello");
    assert!(
        tokio_tungstenite::connect_async(&url).await.is_err(),
        "a connection URL works once"
    );

    let ev = payloads::event_callback("Ev1", payloads::dm("U1", "D1", "1.000001", "hi"));
    let id = fake.socket().send_event(ev).unwrap();
    let first = next(ws.next().await);
    assert_eq!(
        (
            first["type"].clone(),
            first["envelope_id"].clone(),
            first["retry_attempt"].clone()
        ),
        (json!("events_api"), json!(id), json!(0))
    );
    // Not acked: Slack sends it again.
    let again = next(ws.next().await);
    assert_eq!(
        (
            again["envelope_id"].clone(),
            again["retry_attempt"].clone(),
            again["retry_reason"].clone()
        ),
        (json!(id), json!(1), json!("timeout"))
    );
    ws.send(Message::text(json!({"envelope_id": id}).to_string()))
        .await
        .unwrap();
    fake.wait_ack(&id, Duration::from_secs(5)).await.unwrap();
    assert_eq!(fake.socket().redeliveries(&id), 1);

    let cmd = fake
        .socket()
        .send_command(payloads::slash_command(
            "U1",
            "D1",
            "/agent",
            "help",
            &fake.response_url("r"),
        ))
        .unwrap();
    let frame = next(ws.next().await);
    assert_eq!(
        (
            frame["type"].clone(),
            frame["accepts_response_payload"].clone()
        ),
        (json!("slash_commands"), json!(true))
    );
    ws.send(Message::text(
        json!({"envelope_id": cmd, "payload": {"text": "help text"}}).to_string(),
    ))
    .await
    .unwrap();
    let ack = fake.wait_ack(&cmd, Duration::from_secs(5)).await.unwrap();
    assert_eq!(ack.frame["payload"]["text"], "help text");
}

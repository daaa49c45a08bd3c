//! `store` / `previous_response_id` on `/v1/responses`, as OpenAI answers them, and the modes
//! where the stub plays a server without them; `/readyz` switched off.

use serde_json::{Value, json};

use super::tests::{client, post};
use super::*;

async fn start(config: StubConfig) -> StubModel {
    StubModel::start(config).await.expect("stub starts")
}

/// A non-streamed Responses call; returns status and the JSON body.
async fn respond(stub: &StubModel, body: Value) -> (u16, Value) {
    let (status, _, text) = post(stub, "/v1/responses", &[], body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn previous_response_id_continues_the_stored_context_and_is_echoed() {
    let stub = start(StubConfig::default()).await;
    let (_, first) = respond(
        &stub,
        json!({"model": "m", "instructions": "be brief", "input": "my cat is Tom"}),
    )
    .await;
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(first["store"], true);
    assert_eq!(first["previous_response_id"], Value::Null);
    let (status, second) = respond(
        &stub,
        json!({"model": "m", "input": "its name?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["previous_response_id"], id.as_str());
    let third_prev = second["id"].as_str().unwrap().to_owned();
    respond(
        &stub,
        json!({"model": "m", "input": [{"role": "user", "content": "and again?"}], "previous_response_id": third_prev}),
    )
    .await;
    let r = stub.requests();
    // Instructions do not carry over; input and replies do, chained.
    assert_eq!(
        r[1].input_texts,
        ["my cat is Tom", "echo: my cat is Tom", "its name?"]
    );
    assert_eq!(
        r[2].input_texts,
        [
            "my cat is Tom",
            "echo: my cat is Tom",
            "its name?",
            "echo: its name?",
            "and again?"
        ]
    );
}

#[tokio::test]
async fn an_unknown_or_unstored_previous_response_is_openais_400() {
    let stub = start(StubConfig::default()).await;
    let (_, unstored) = respond(&stub, json!({"model": "m", "input": "a", "store": false})).await;
    assert_eq!(unstored["store"], false);
    for id in ["resp_nope", unstored["id"].as_str().unwrap()] {
        let (status, body) = respond(
            &stub,
            json!({"model": "m", "input": "b", "previous_response_id": id}),
        )
        .await;
        assert_eq!(status, 400);
        let e = &body["error"];
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["param"], "previous_response_id");
        assert_eq!(e["code"], "previous_response_not_found");
        assert_eq!(
            e["message"],
            format!("Previous response with id '{id}' not found.")
        );
    }
    // Refused calls never reached the model: only the first is logged.
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn the_oldest_stored_responses_are_forgotten_beyond_the_bound() {
    let stub = start(StubConfig {
        keep_responses: 1,
        ..StubConfig::default()
    })
    .await;
    let (_, a) = respond(&stub, json!({"model": "m", "input": "a"})).await;
    respond(&stub, json!({"model": "m", "input": "b"})).await;
    let (status, _) = respond(
        &stub,
        json!({"model": "m", "input": "c", "previous_response_id": a["id"]}),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_server_without_previous_response_id_ignores_it_or_refuses_it() {
    let ignoring = start(StubConfig {
        previous_response: PreviousResponse::Ignored,
        ..StubConfig::default()
    })
    .await;
    let (_, first) = respond(&ignoring, json!({"model": "m", "input": "a"})).await;
    let (status, second) = respond(
        &ignoring,
        json!({"model": "m", "input": "b", "previous_response_id": first["id"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(second["previous_response_id"], Value::Null);
    assert_eq!(ignoring.requests()[1].input_texts, ["b"]);

    let refusing = start(StubConfig {
        previous_response: PreviousResponse::Rejected,
        ..StubConfig::default()
    })
    .await;
    let (status, body) = respond(
        &refusing,
        json!({"model": "m", "input": "b", "previous_response_id": "resp_1"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("previous_response_id")
    );
}

#[tokio::test]
async fn readyz_can_be_absent_like_a_hosted_provider() {
    let stub = start(StubConfig {
        readyz: false,
        ..StubConfig::default()
    })
    .await;
    let resp = client()
        .get(format!("{}/readyz", stub.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

use super::*;
use crate::workload::{Usage, history::Role, sse::SseEvent};

fn ev(data: &str) -> SseEvent {
    SseEvent {
        event: None,
        data: data.into(),
    }
}

#[test]
fn deltas_and_completion_with_cache_usage_are_understood() {
    assert_eq!(
        wire::interpret(&ev(r#"{"type":"response.output_text.delta","delta":"hi"}"#)).unwrap(),
        Some(Event::Delta("hi".into()))
    );
    let done = r#"{"type":"response.completed","response":{"id":"resp_2","previous_response_id":"resp_1","usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":3,"cache_write_tokens":4},"output_tokens":5,"total_tokens":15}}}"#;
    assert_eq!(
        wire::interpret(&ev(done)).unwrap(),
        Some(Event::Done {
            meta: ResponseMeta {
                id: Some("resp_2".into()),
                previous_response_id: Some("resp_1".into()),
            },
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                cache_read_tokens: 3,
                cache_write_tokens: 4
            }
        })
    );
}

#[test]
fn the_created_event_carries_what_the_server_continued_from() {
    let created =
        r#"{"type":"response.created","response":{"id":"resp_9","previous_response_id":null}}"#;
    assert_eq!(
        wire::interpret(&ev(created)).unwrap(),
        Some(Event::Started(ResponseMeta {
            id: Some("resp_9".into()),
            previous_response_id: None,
        }))
    );
}

#[test]
fn in_band_failures_become_errors_with_the_upstream_message() {
    let failed =
        r#"{"type":"response.failed","response":{"error":{"message":"model overloaded"}}}"#;
    assert!(
        matches!(wire::interpret(&ev(failed)), Err(WorkloadError::Failed(m)) if m == "model overloaded")
    );
    let raw = r#"{"error":{"message":"bad key","type":"auth"}}"#;
    assert!(matches!(wire::interpret(&ev(raw)), Err(WorkloadError::Failed(m)) if m == "bad key"));
}

#[test]
fn done_marker_before_completion_is_a_protocol_error() {
    assert!(matches!(
        wire::interpret(&ev("[DONE]")),
        Err(WorkloadError::Protocol(_))
    ));
    assert!(matches!(
        wire::interpret(&ev("not json")),
        Err(WorkloadError::Protocol(_))
    ));
}

#[test]
fn unknown_event_types_are_skipped() {
    assert_eq!(
        wire::interpret(&ev(r#"{"type":"response.output_item.added"}"#)).unwrap(),
        None
    );
}

#[test]
fn openai_errors_about_previous_response_id_are_told_apart() {
    let not_found = ErrorBody::parse(
        br#"{"error":{"message":"Previous response with id 'resp_x' not found.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}"#,
    );
    assert_eq!(
        not_found.previous_response_problem(),
        Some(PreviousProblem::NotFound)
    );
    let unknown = ErrorBody::parse(
        br#"{"error":{"message":"Unrecognized request argument supplied: previous_response_id","type":"invalid_request_error","param":null,"code":null}}"#,
    );
    assert_eq!(
        unknown.previous_response_problem(),
        Some(PreviousProblem::Unsupported)
    );
    let other = ErrorBody::parse(br#"{"error":{"message":"input is too long","param":"input"}}"#);
    assert_eq!(other.previous_response_problem(), None);
    assert_eq!(ErrorBody::parse(b"  plain text  ").message, "plain text");
}

fn workload(mode: HistoryMode, dir: &std::path::Path) -> ResponsesWorkload {
    ResponsesWorkload::new(ResponsesConfig {
        base_url: "http://127.0.0.1:9".into(),
        bearer_token: None,
        model: "m".into(),
        session: SessionBinding::UserField,
        ready: ReadyProbe::Off,
        history: HistoryConfig {
            mode,
            dir: dir.to_owned(),
            limits: HistoryLimits::default(),
        },
        idle_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
    })
    .unwrap()
}

fn conv_with_id() -> Conversation {
    let mut c = Conversation {
        last_response_id: Some("resp_1".into()),
        ..Conversation::default()
    };
    c.push_turn("q", "a", &HistoryLimits::default());
    c
}

#[test]
fn auto_continues_from_the_last_response_until_the_server_proves_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let w = workload(HistoryMode::Auto, dir.path());
    let c = conv_with_id();
    assert_eq!(
        w.inner.plan(&c),
        Plan {
            previous: Some("resp_1".into()),
            items: false,
            store: Some(true)
        }
    );
    // No id yet (first turn, or the server forgot it): the sidecar's copy.
    assert_eq!(
        w.inner.plan(&Conversation::default()),
        Plan {
            previous: None,
            items: true,
            store: Some(true)
        }
    );
    w.inner.support.set(Support::Unsupported);
    assert_eq!(
        w.inner.plan(&c),
        Plan {
            previous: None,
            items: true,
            store: Some(false)
        }
    );
}

#[test]
fn fixed_modes_plan_the_same_whatever_the_server_showed() {
    let dir = tempfile::tempdir().unwrap();
    let c = conv_with_id();
    let server = workload(HistoryMode::Server, dir.path());
    server.inner.support.set(Support::Unsupported);
    assert_eq!(server.inner.plan(&c).previous.as_deref(), Some("resp_1"));
    let sidecar = workload(HistoryMode::Sidecar, dir.path());
    assert_eq!(
        sidecar.inner.plan(&c),
        Plan {
            previous: None,
            items: true,
            store: Some(false)
        }
    );
    let off = workload(HistoryMode::Off, dir.path());
    assert_eq!(off.inner.plan(&c), Plan::default());
    assert!(off.inner.store.is_none());
}

#[test]
fn sidecar_history_goes_out_as_input_items_before_the_new_message() {
    let dir = tempfile::tempdir().unwrap();
    let w = workload(HistoryMode::Sidecar, dir.path());
    let c = conv_with_id();
    assert_eq!(c.items[0].role, Role::User);
    let turn = TurnRequest {
        turn_id: "t".into(),
        conversation: "cli".into(),
        text: "and now?".into(),
    };
    let req = w
        .inner
        .request(&turn, &c, &w.inner.plan(&c))
        .build()
        .unwrap();
    let body: Value = serde_json::from_slice(req.body().unwrap().as_bytes().unwrap()).unwrap();
    assert_eq!(body["store"], false);
    assert!(body.get("previous_response_id").is_none());
    let roles: Vec<_> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["role"].as_str().unwrap(), i["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [("user", "q"), ("assistant", "a"), ("user", "and now?")]
    );
    assert_eq!(body["user"], "cli");
}

#[test]
fn a_refused_key_is_reported_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let w = workload(HistoryMode::Off, dir.path());
    let e = w.inner.http_error(
        401,
        ErrorBody::parse(br#"{"error":{"message":"Incorrect API key provided"}}"#),
    );
    assert!(matches!(e, WorkloadError::Rejected { status: 401, .. }));
    assert!(!e.is_retryable());
    let text = e.to_string();
    assert!(
        text.starts_with("the model provider rejected the key (401): Incorrect API key provided"),
        "{text}"
    );
    assert_eq!(lock(&w.inner.rejection).as_deref(), Some(text.as_str()));
    assert!(matches!(
        w.inner.http_error(429, ErrorBody::parse(b"slow down")),
        WorkloadError::Http { status: 429, .. }
    ));
}

#[tokio::test]
async fn an_unprobed_endpoint_is_ready_and_shows_a_refused_key_as_detail() {
    let dir = tempfile::tempdir().unwrap();
    let w = workload(HistoryMode::Off, dir.path());
    let r = w.check_ready().await;
    assert!(r.ready, "{r:?}");
    w.inner.http_error(403, ErrorBody::parse(b"forbidden"));
    let r = w.check_ready().await;
    assert!(r.ready);
    assert!(r.detail.contains("rejected the key (403)"), "{r:?}");
}

//! An agent on a plain OpenAI-style `/v1/responses` endpoint, end to end:
//! it remembers each conversation (by `previous_response_id`, or by the
//! sidecar's own copy of the history), across a sidecar restart, and it is
//! ready on a server without a readiness endpoint. Real controller, real
//! sidecars, the stub model as the workload; what the stub received is the
//! evidence.

// A panic is how a test reports failure; these helpers only run in tests.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clawswarm_proto::v1::{self as pb};
use clawswarm_tests::{
    harness::{Controller, ControllerOptions, chat, stub_workload_command, wait_for},
    stub_model::LoggedRequest,
};

const READY: Duration = Duration::from_secs(30);

const T1: &str = "my cat is Tom";
const T2: &str = "what is my cat called?";
const T3: &str = "and after a restart?";

/// One agent, alice, whose stub takes `stub_flags` and whose sidecar gets `env`.
async fn start(stub_flags: &str, env: &[(&str, &str)]) -> Controller {
    clawswarm_certs::install_default_crypto_provider();
    let opts = ControllerOptions {
        workload_command: Some(stub_workload_command(stub_flags).unwrap()),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ControllerOptions::with_agents(&["alice"])
    };
    let c = Controller::start(opts).await.unwrap();
    c.wait_ready("alice", READY).await.unwrap();
    c
}

async fn say(c: &Controller, conversation: &str, text: &str) {
    let mut gw = c.gateway().await.unwrap();
    let reply = chat(&mut gw, "alice", conversation, text).await.unwrap();
    assert_eq!(
        reply.outcome(),
        Some(pb::Outcome::Ok),
        "{reply:?}\nsidecar log:\n{}",
        c.sidecar_log("alice")
    );
    assert_eq!(reply.text(), format!("echo: {text}"));
}

/// The last model call for this turn text (auto mode may ask twice).
fn call_for(c: &Controller, text: &str) -> LoggedRequest {
    c.model_requests("alice")
        .into_iter()
        .rev()
        .find(|r| r.last_user_text == text)
        .unwrap_or_else(|| {
            panic!(
                "no model call for {text:?}: {:?}",
                c.model_requests("alice")
            )
        })
}

fn conversation(turns: &[&str], then: &str) -> Vec<String> {
    let mut v: Vec<String> = turns
        .iter()
        .flat_map(|t| [t.to_string(), format!("echo: {t}")])
        .collect();
    v.push(then.to_owned());
    v
}

fn assert_state_is_the_sidecars_own(c: &Controller) {
    let files = std::fs::read_dir(c.sidecar_dir("alice").join("conversations"))
        .unwrap()
        .count();
    assert!(files >= 1, "no conversation state in the sidecar's dir");
    assert!(
        !c.agent_dir("alice").join("data/conversations").exists(),
        "conversation state must stay out of the workload's dir"
    );
}

#[tokio::test]
async fn the_server_keeps_the_context_by_previous_response_id_across_a_sidecar_restart() {
    let c = start("", &[]).await;
    say(&c, "dm", T1).await;
    say(&c, "dm", T2).await;

    let second = call_for(&c, T2);
    let continued = second
        .previous_response_id
        .clone()
        .expect("turn 2 continues from turn 1's response");
    // Exactly once: the stub rebuilt it from the stored response; had the
    // sidecar also sent its copy, the history would appear twice.
    assert_eq!(second.input_texts, conversation(&[T1], T2));

    c.restart_sidecar("alice", READY).await.unwrap();
    say(&c, "dm", T3).await;
    let third = call_for(&c, T3);
    assert!(
        third
            .previous_response_id
            .as_ref()
            .is_some_and(|id| *id != continued),
        "turn 3 continues from turn 2's response: {third:?}"
    );
    assert_eq!(third.input_texts, conversation(&[T1, T2], T3));

    // Another conversation of the same person starts fresh.
    say(&c, "thread-2", "hello").await;
    let other = call_for(&c, "hello");
    assert_eq!(other.input_texts, ["hello"]);
    assert_eq!(other.previous_response_id, None);
    assert_state_is_the_sidecars_own(&c);
}

#[tokio::test]
async fn the_sidecar_keeps_the_history_itself_across_a_sidecar_restart() {
    let c = start("", &[("CLAWSWARM_WORKLOAD_HISTORY", "sidecar")]).await;
    say(&c, "dm", T1).await;
    say(&c, "dm", T2).await;

    let second = call_for(&c, T2);
    assert_eq!(second.previous_response_id, None);
    assert_eq!(second.input_texts, conversation(&[T1], T2));

    c.restart_sidecar("alice", READY).await.unwrap();
    say(&c, "dm", T3).await;
    let third = call_for(&c, T3);
    assert_eq!(third.previous_response_id, None);
    assert_eq!(third.input_texts, conversation(&[T1, T2], T3));
    assert_state_is_the_sidecars_own(&c);
}

#[tokio::test]
async fn auto_falls_back_to_the_sidecars_history_when_the_server_ignores_previous_response_id() {
    let c = start("--previous-response-id ignored", &[]).await;
    say(&c, "dm", T1).await;
    say(&c, "dm", T2).await;

    // The server answered the id without context (no echo): the sidecar
    // asked again, before anything reached the person, with its own copy.
    assert_eq!(call_for(&c, T2).input_texts, conversation(&[T1], T2));
    assert!(
        c.sidecar_log("alice")
            .contains("the workload ignores previous_response_id"),
        "{}",
        c.sidecar_log("alice")
    );

    c.restart_sidecar("alice", READY).await.unwrap();
    say(&c, "dm", T3).await;
    let thirds: Vec<_> = c
        .model_requests("alice")
        .into_iter()
        .filter(|r| r.last_user_text == T3)
        .collect();
    // The restarted sidecar kept no id to try: one call, with the history.
    assert_eq!(thirds.len(), 1, "{thirds:?}");
    assert_eq!(thirds[0].input_texts, conversation(&[T1, T2], T3));
}

#[tokio::test]
async fn a_server_that_forgot_the_last_response_gets_the_sidecars_copy() {
    let c = start("", &[]).await;
    say(&c, "dm", T1).await;
    say(&c, "dm", T2).await;
    // Workload and sidecar die together (a pod lost with its node): the
    // new stub knows no stored response, the new sidecar still holds its id.
    let before = c.sidecar_pid("alice").unwrap();
    c.kill_agent_processes("alice").unwrap();
    wait_for("a new sidecar", READY, || {
        c.sidecar_pid("alice").is_some_and(|p| p != before)
    })
    .await
    .unwrap();
    c.wait_ready("alice", READY).await.unwrap();

    say(&c, "dm", T3).await;
    let third = call_for(&c, T3);
    assert_eq!(third.previous_response_id, None);
    assert_eq!(third.input_texts, conversation(&[T1, T2], T3));
    assert!(
        c.sidecar_log("alice")
            .contains("no longer knows this conversation's last response"),
        "{}",
        c.sidecar_log("alice")
    );
}

#[tokio::test]
async fn a_loopback_workload_without_a_readiness_endpoint_becomes_ready_and_answers() {
    let c = start("--no-readyz", &[]).await;
    say(&c, "dm", "are you there?").await;
    let a = c
        .wait_listed("alice", READY, |a| {
            a.detail.contains("no readiness endpoint")
        })
        .await
        .unwrap();
    assert!(a.workload_ready, "{a:?}");
    assert!(a.detail.contains("HTTP 404"), "{a:?}");
}

#[tokio::test]
async fn a_refused_key_is_reported_plainly_in_the_reply_and_the_readiness_detail() {
    let c = start(
        "--api-key right-key",
        &[("CLAWSWARM_WORKLOAD_TOKEN", "wrong-key")],
    )
    .await;
    let mut gw = c.gateway().await.unwrap();
    let reply = chat(&mut gw, "alice", "dm", "hello").await.unwrap();
    assert_eq!(reply.outcome(), Some(pb::Outcome::Error), "{reply:?}");
    let error = reply
        .end
        .as_ref()
        .map(|e| e.error.clone())
        .unwrap_or_default();
    assert!(
        error.contains("the model provider rejected the key (401)"),
        "{error}"
    );
    let a = c
        .wait_listed("alice", READY, |a| a.detail.contains("rejected the key"))
        .await
        .unwrap();
    assert!(a.detail.contains("rejected the key (401)"), "{a:?}");
}

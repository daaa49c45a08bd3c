//! Turn and process lifecycle: cancellation, shutdown, metrics.

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clawswarm_proto::v1::{self as pb, chat_request::Kind};
use clawswarm_tests::{
    harness::{Controller, ControllerOptions, chat, collect, wait_for},
    stub_model::Outcome,
};

fn init() {
    clawswarm_certs::install_default_crypto_provider();
}

#[tokio::test]
async fn a_turn_is_cancelled_when_its_requester_goes_away() {
    init();
    let c = Controller::start_ready(&["alice"]).await.unwrap();
    let mut gw = c.gateway().await.unwrap();
    let start = pb::ChatRequest {
        agent: "alice".into(),
        kind: Some(Kind::Start(pb::StartTurn {
            conversation: "dm".into(),
            text: "[chunks=200] [delay_ms=100]".into(),
            turn_id: String::new(),
        })),
    };
    let stream = gw.chat(start).await.unwrap().into_inner();
    let partial = collect(stream, Some(3)).await.unwrap(); // drops the stream
    drop(gw);

    wait_for(
        "the model call to be cancelled",
        Duration::from_secs(10),
        || {
            c.model_requests("alice")
                .iter()
                .any(|r| r.outcome == Outcome::Cancelled)
        },
    )
    .await
    .unwrap();
    assert!(
        c.sidecar_log("alice")
            .contains("turn cancelled by the controller")
    );
    let cancelled = c
        .model_requests("alice")
        .into_iter()
        .find(|r| r.outcome == Outcome::Cancelled)
        .unwrap();
    assert!(cancelled.chunks < 200 && cancelled.chunks as usize >= partial.chunks.len());
}

#[tokio::test]
async fn sigterm_stops_the_controller_and_its_agents_cleanly() {
    init();
    let mut c = Controller::start_ready(&["alice", "bob"]).await.unwrap();
    let pids: Vec<i32> = ["alice", "bob"]
        .iter()
        .map(|a| c.sidecar_pid(a).unwrap())
        .collect();

    let status = c.terminate().await.unwrap();

    assert!(status.success(), "{status}\n{}", c.logs());
    assert!(c.logs().contains("controller stopped"), "{}", c.logs());
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "sidecar {pid} still running"
        );
    }
}

#[tokio::test]
async fn metrics_report_streams_turns_and_latencies() {
    init();
    let c = Controller::start_ready(&["alice"]).await.unwrap();
    let mut gw = c.gateway().await.unwrap();
    chat(&mut gw, "alice", "dm", "[chunks=3]").await.unwrap();
    let failed = chat(&mut gw, "alice", "dm", "[fail_after=1]")
        .await
        .unwrap();
    assert_eq!(failed.outcome(), Some(pb::Outcome::Error));
    assert!(failed.end.unwrap().error.contains("workload failed"));

    let text = reqwest::get(format!("{}/metrics", c.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "clawswarm_link_streams 1",
        "clawswarm_turns_total{result=\"ok\"} 1",
        "clawswarm_turns_total{result=\"error\"} 1",
        "clawswarm_turn_first_chunk_seconds_count 2",
        "clawswarm_turn_duration_seconds_count 2",
        "clawswarm_tokens_total{agent=\"local/alice\",kind=\"output\"} 3",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let ready = reqwest::get(format!("{}/readyz", c.http_url()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn a_message_wakes_a_suspended_agent_and_is_answered() {
    init();
    let c = Controller::start_ready(&["alice"]).await.unwrap();
    let mut gw = c.gateway().await.unwrap();
    let pid = c.sidecar_pid("alice").unwrap();
    let suspended = gw
        .suspend_agent(pb::SuspendAgentRequest {
            name: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(suspended.mode(), pb::AgentMode::Suspended);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "suspend must stop the sidecar"
    );
    std::fs::write(c.agent_dir("alice").join("data/keep.txt"), "mine").unwrap();

    let reply = chat(&mut gw, "alice", "dm", "are you awake?")
        .await
        .unwrap();

    assert_eq!(reply.text(), "echo: are you awake?");
    assert!(
        reply.progress.iter().any(|p| p.contains("Waking")),
        "{:?}",
        reply.progress
    );
    assert_eq!(
        std::fs::read_to_string(c.agent_dir("alice").join("data/keep.txt")).unwrap(),
        "mine"
    );
    let a = gw
        .get_agent(pb::GetAgentRequest {
            name: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.mode(), pb::AgentMode::Running);
}

#[tokio::test]
async fn an_idle_agent_is_suspended_and_woken_by_the_next_message() {
    init();
    let mut opts = ControllerOptions::with_agents(&["alice"]);
    opts.env
        .push(("CLAWSWARM_IDLE_TIMEOUT".into(), "3s".into()));
    let c = Controller::start(opts).await.unwrap();
    let mut gw = c.gateway().await.unwrap();
    wait_for("idle suspension", Duration::from_secs(30), || {
        c.logs().contains("suspending idle agent")
    })
    .await
    .unwrap();
    let a = gw
        .get_agent(pb::GetAgentRequest {
            name: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.mode(), pb::AgentMode::Suspended);

    let reply = chat(&mut gw, "alice", "dm", "wake up").await.unwrap();
    assert_eq!(reply.text(), "echo: wake up");
}

#[tokio::test]
async fn a_workload_process_never_sees_the_controllers_secrets() {
    init();
    let stub = clawswarm_tests::harness::binaries()
        .unwrap()
        .stub_model
        .display()
        .to_string();
    let mut opts = ControllerOptions::with_agents(&["alice"]);
    opts.workload_command = Some(format!(
        "sh -c 'env > {{data_dir}}/workload-env.txt; exec {stub} --listen 127.0.0.1:{{port}}'"
    ));
    opts.env.push((
        "CLAWSWARM_WORKLOAD_TOKEN".into(),
        "secret-workload-token".into(),
    ));
    opts.env
        .push(("OPENCLAW_DISABLE_BONJOUR".into(), "1".into()));
    let c = Controller::start(opts).await.unwrap();
    c.wait_ready("alice", Duration::from_secs(30))
        .await
        .unwrap();

    let env = std::fs::read_to_string(c.agent_dir("alice").join("data/workload-env.txt")).unwrap();
    assert!(!env.contains("secret-workload-token"), "{env}");
    assert!(!env.contains("CLAWSWARM_STATE_DIR"), "{env}");
    assert!(
        env.contains("OPENCLAW_DISABLE_BONJOUR=1") && env.contains("CLAWSWARM_AGENT=local/alice"),
        "{env}"
    );
}

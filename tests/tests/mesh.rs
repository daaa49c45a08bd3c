//! The mesh end to end: real controller, real sidecars, stub model workloads.

// A panic is how a test reports failure; these helpers only run in tests.
#![allow(clippy::unwrap_used, clippy::err_expect)]

use std::time::{Duration, SystemTime};

use clawswarm_certs::{AgentId, Authority, LeafPolicy, SpiffeId, TrustDomain};
use clawswarm_proto::v1::{self as pb, chat_request::Kind};
use clawswarm_tests::harness::{
    Controller, ControllerOptions, chat, collect, controller_authority, hello, raw_agent_link,
    wait_for,
};

const READY: Duration = Duration::from_secs(30);

fn init() {
    clawswarm_certs::install_default_crypto_provider();
}

fn agent_cert(
    authority: &Authority,
    name: &str,
    policy: &LeafPolicy,
    now: SystemTime,
) -> clawswarm_certs::Credentials {
    let id = SpiffeId::agent(
        authority.trust_domain().clone(),
        AgentId::new("local", name).unwrap(),
    );
    authority.issue(&id, policy, now).unwrap()
}

#[tokio::test]
async fn a_reply_streams_in_order_and_carries_the_models_usage() {
    init();
    let c = Controller::start_ready(&["alice"]).await.unwrap();
    let mut gw = c.gateway().await.unwrap();

    let reply = chat(
        &mut gw,
        "alice",
        "dm-1",
        "[chunks=50] [cache_read=7] [cache_write=2]",
    )
    .await
    .unwrap();

    assert_eq!(reply.outcome(), Some(pb::Outcome::Ok), "{reply:?}");
    let seqs: Vec<u64> = reply.chunks.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (0..50).collect::<Vec<_>>());
    let expected: String = (0..50).map(|i| format!("w{i} ")).collect();
    assert_eq!(reply.text(), expected);
    let end = reply.end.unwrap();
    assert_eq!(end.chunks, 50);
    let logged = c.model_requests("alice");
    assert_eq!(logged.len(), 1);
    let usage = end.usage.unwrap();
    assert_eq!(usage.input_tokens, logged[0].usage.input_tokens);
    assert_eq!(usage.output_tokens, 50);
    assert_eq!(usage.cache_read_tokens, 7);
    assert_eq!(usage.cache_write_tokens, 2);
    // And the controller keeps the total for the agent.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = gw
            .get_agent(pb::GetAgentRequest {
                name: "alice".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if a.usage.unwrap_or_default().output_tokens == 50 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "usage never recorded: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_peoples_agents_never_see_each_others_turns() {
    init();
    let c = Controller::start_ready(&["alice", "bob"]).await.unwrap();
    let gw = c.gateway().await.unwrap();

    let turns = (0..6).map(|i| {
        let mut gw = gw.clone();
        let who = if i % 2 == 0 { "alice" } else { "bob" };
        async move {
            let reply = chat(&mut gw, who, "dm", &format!("secret-of-{who}-{i}"))
                .await
                .unwrap();
            (who, i, reply)
        }
    });
    for (who, i, reply) in futures::future::join_all(turns).await {
        assert_eq!(reply.outcome(), Some(pb::Outcome::Ok));
        assert_eq!(reply.text(), format!("echo: secret-of-{who}-{i}"));
    }
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        let seen = c.model_requests(me);
        assert_eq!(seen.len(), 3, "{me} saw {seen:?}");
        for r in seen {
            let all = r.input_texts.join(" ");
            assert!(
                all.contains(&format!("secret-of-{me}")) && !all.contains(other),
                "{me}'s model saw {all:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    init();
    let c = Controller::start(ControllerOptions::with_agents(&["alice"]))
        .await
        .unwrap();
    let td = TrustDomain::new("clawswarm.local").unwrap();
    let rogue = Authority::generate(&td).unwrap();
    let creds = agent_cert(&rogue, "alice", &LeafPolicy::default(), SystemTime::now());

    let err = raw_agent_link(&c, creds, vec![hello("alice")])
        .await
        .err()
        .expect("refused");

    wait_for(
        "the controller to log the refusal",
        Duration::from_secs(5),
        || c.logs().contains("UnknownIssuer"),
    )
    .await
    .unwrap();
    assert!(c.logs().contains("tls handshake refused"), "{}", c.logs());
    let _ = err;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    init();
    let c = Controller::start(ControllerOptions::with_agents(&["alice"]))
        .await
        .unwrap();
    let authority = controller_authority(&c).unwrap();
    // The CA cannot sign in the past (its issuer did not exist then), so
    // take a one-second certificate and let it lapse.
    let policy = LeafPolicy {
        lifetime: Duration::from_secs(1),
        clock_skew: Duration::ZERO,
        ..LeafPolicy::default()
    };
    let creds = agent_cert(&authority, "alice", &policy, SystemTime::now());
    tokio::time::sleep(Duration::from_millis(2100)).await;

    assert!(
        raw_agent_link(&c, creds, vec![hello("alice")])
            .await
            .is_err()
    );

    let logged = wait_for(
        "the controller to log the refusal",
        Duration::from_secs(5),
        || c.logs().contains("xpired"),
    )
    .await;
    assert!(logged.is_ok(), "{}", c.logs());
}

#[tokio::test]
async fn agent_as_certificate_cannot_register_as_agent_b() {
    init();
    let c = Controller::start(ControllerOptions::with_agents(&["alice", "bob"]))
        .await
        .unwrap();
    let authority = controller_authority(&c).unwrap();
    let alice = agent_cert(
        &authority,
        "alice",
        &LeafPolicy::default(),
        SystemTime::now(),
    );

    let err = raw_agent_link(&c, alice, vec![hello("bob")])
        .await
        .err()
        .expect("refused");

    let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("certificate is for agent local/alice"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_valid_certificate_for_an_unknown_agent_is_refused() {
    init();
    let c = Controller::start(ControllerOptions::with_agents(&["alice"]))
        .await
        .unwrap();
    let authority = controller_authority(&c).unwrap();
    let carol = agent_cert(
        &authority,
        "carol",
        &LeafPolicy::default(),
        SystemTime::now(),
    );

    let err = raw_agent_link(&c, carol, vec![hello("carol")])
        .await
        .err()
        .expect("refused");

    let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("not known"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_reply_survives_the_controller_being_killed_mid_turn() {
    init();
    let mut c = Controller::start_ready(&["alice"]).await.unwrap();
    let mut gw = c.gateway().await.unwrap();
    let start = pb::ChatRequest {
        agent: "alice".into(),
        kind: Some(Kind::Start(pb::StartTurn {
            conversation: "dm".into(),
            text: "[chunks=40] [delay_ms=50]".into(),
            turn_id: String::new(),
        })),
    };
    let stream = gw.chat(start).await.unwrap().into_inner();
    let first = collect(stream, Some(5)).await.unwrap();
    assert_eq!(first.chunks.len(), 5);

    c.kill().await.unwrap();
    c.restart().await.unwrap();

    let mut gw = c.gateway().await.unwrap();
    let resume = pb::ChatRequest {
        agent: "alice".into(),
        kind: Some(Kind::Resume(pb::ResumeTurn {
            turn_id: first.turn_id.clone(),
            from_seq: 5,
        })),
    };
    let rest = collect(gw.chat(resume).await.unwrap().into_inner(), None)
        .await
        .unwrap();
    assert_eq!(
        rest.outcome(),
        Some(pb::Outcome::Ok),
        "{rest:?}\n{}",
        c.logs()
    );
    let seqs: Vec<u64> = first
        .chunks
        .iter()
        .chain(&rest.chunks)
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(seqs, (0..40).collect::<Vec<_>>());
    let whole: String = first.text() + &rest.text();
    assert_eq!(whole, (0..40).map(|i| format!("w{i} ")).collect::<String>());
    // The same sidecar process reconnected: nothing was restarted.
    assert_eq!(c.model_requests("alice").len(), 1);
}

#[tokio::test]
async fn a_killed_sidecar_is_restarted_and_serves_again() {
    init();
    let c = Controller::start_ready(&["alice"]).await.unwrap();
    let before = c.sidecar_pid("alice").unwrap();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    wait_for("a new sidecar", Duration::from_secs(20), || {
        c.sidecar_pid("alice").is_some_and(|p| p != before)
    })
    .await
    .unwrap();
    c.wait_ready("alice", READY).await.unwrap();
    let mut gw = c.gateway().await.unwrap();
    let reply = chat(&mut gw, "alice", "dm", "still there?").await.unwrap();
    assert_eq!(reply.text(), "echo: still there?");
    assert!(
        c.logs().contains("agent process died; restarting"),
        "{}",
        c.logs()
    );
}

#[tokio::test]
async fn certificate_rotation_during_an_open_stream_loses_no_chunk() {
    init();
    // A 10 s certificate is renewed about every second, so a 6 s reply
    // spans several rotations of both ends' certificates.
    let opts = ControllerOptions {
        cert_lifetime: Some("10s".into()),
        ..ControllerOptions::with_agents(&["alice"])
    };
    let c = Controller::start(opts).await.unwrap();
    c.wait_ready("alice", READY).await.unwrap();
    let renewals_before = c
        .sidecar_log("alice")
        .matches("certificate renewed")
        .count();
    let mut gw = c.gateway().await.unwrap();

    let reply = chat(&mut gw, "alice", "dm", "[chunks=30] [delay_ms=200]")
        .await
        .unwrap();

    assert_eq!(reply.outcome(), Some(pb::Outcome::Ok));
    assert_eq!(
        reply.chunks.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (0..30).collect::<Vec<_>>()
    );
    let renewals = c
        .sidecar_log("alice")
        .matches("certificate renewed")
        .count()
        - renewals_before;
    assert!(
        renewals >= 2,
        "only {renewals} renewals during the reply:\n{}",
        c.sidecar_log("alice")
    );
    assert_eq!(
        c.logs().matches("agent connected").count(),
        1,
        "the stream was re-established:\n{}",
        c.logs()
    );
}

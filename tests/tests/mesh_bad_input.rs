//! Bad input gets a precise status and a log line, never a panic, and
//! never disturbs another agent's stream.

// A panic is how a test reports failure; these helpers only run in tests.
#![allow(clippy::unwrap_used, clippy::err_expect)]

use std::time::Duration;

use clawswarm_certs::{ChannelOptions, CredentialStore, Credentials, ServerIdentity, SpiffeId};
use clawswarm_proto::v1::{
    self as pb, chat_request::Kind, controller_frame::Frame as In, identity_client::IdentityClient,
    sidecar_frame::Frame as Out,
};
use clawswarm_tests::harness::{
    Controller, ControllerOptions, agent_credentials, collect, hello, raw_agent_link, raw_grpc_call,
};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};

fn init() {
    clawswarm_certs::install_default_crypto_provider();
}

/// Agents exist as records only; the test plays their sidecars.
async fn records_only(names: &[&str]) -> Controller {
    let mut opts = ControllerOptions::with_agents(names);
    opts.no_workload = true;
    opts.env
        .push(("CLAWSWARM_LOCAL_PROCESSES".into(), "false".into()));
    Controller::start(opts).await.unwrap()
}

fn creds_for(c: &Controller, name: &str) -> Credentials {
    agent_credentials(c, name).unwrap()
}

fn frame(f: Out) -> pb::SidecarFrame {
    pb::SidecarFrame { frame: Some(f) }
}

/// Answer the next turn on a hand-driven link with `text`, as a sidecar would.
async fn answer_next_turn(
    tx: &tokio::sync::mpsc::Sender<pb::SidecarFrame>,
    rx: &mut tonic::Streaming<pb::ControllerFrame>,
    text: &str,
) {
    loop {
        let f = tokio::time::timeout(Duration::from_secs(20), rx.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(In::Turn(t)) = f.frame {
            tx.send(frame(Out::Chunk(pb::ReplyChunk {
                turn_id: t.turn_id.clone(),
                seq: 0,
                delta: text.into(),
            })))
            .await
            .unwrap();
            let end = pb::ReplyEnd {
                turn_id: t.turn_id,
                chunks: 1,
                outcome: pb::Outcome::Ok as i32,
                ..Default::default()
            };
            tx.send(frame(Out::End(end))).await.unwrap();
            return;
        }
    }
}

async fn ask(c: &Controller, agent: &str, text: &str) -> clawswarm_tests::harness::Reply {
    let mut gw = c.gateway().await.unwrap();
    clawswarm_tests::harness::chat(&mut gw, agent, "dm", text)
        .await
        .unwrap()
}

#[tokio::test]
async fn oversized_and_empty_frames_end_only_the_offenders_stream() {
    init();
    let c = records_only(&["alice", "mallory"]).await;
    let (alice_tx, mut alice_rx) = raw_agent_link(&c, creds_for(&c, "alice"), vec![hello("alice")])
        .await
        .unwrap();
    let (mallory_tx, mut mallory_rx) =
        raw_agent_link(&c, creds_for(&c, "mallory"), vec![hello("mallory")])
            .await
            .unwrap();
    for rx in [&mut alice_rx, &mut mallory_rx] {
        assert!(matches!(
            rx.message().await.unwrap().unwrap().frame,
            Some(In::Welcome(_))
        ));
    }

    // An empty frame is counted and ignored; a 2 MiB frame breaks the 1 MiB limit.
    mallory_tx
        .send(pb::SidecarFrame { frame: None })
        .await
        .unwrap();
    let huge = pb::ReplyChunk {
        turn_id: "x".into(),
        seq: 0,
        delta: "x".repeat(2 * 1024 * 1024),
    };
    let _ = mallory_tx.send(frame(Out::Chunk(huge))).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match mallory_rx.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    let status = ended.expect_err("mallory's stream ends with a status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("the limit is 1048576 bytes"),
        "{}",
        status.message()
    );

    // Alice's stream is untouched: a turn still goes through it.
    let (reply, ()) = tokio::join!(
        ask(&c, "alice", "hi"),
        answer_next_turn(&alice_tx, &mut alice_rx, "hello back")
    );
    assert_eq!(reply.text(), "hello back");
    let metrics = reqwest::get(format!("{}/metrics", c.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("clawswarm_link_frames_rejected_total{reason=\"empty_frame\"} 1"),
        "{metrics}"
    );
    assert!(c.logs().contains("sidecar frame rejected"), "{}", c.logs());
}

#[tokio::test]
async fn a_second_connection_for_the_same_agent_replaces_the_first_cleanly() {
    init();
    let c = records_only(&["alice"]).await;
    let (_tx1, mut rx1) = raw_agent_link(&c, creds_for(&c, "alice"), vec![hello("alice")])
        .await
        .unwrap();
    assert!(matches!(
        rx1.message().await.unwrap().unwrap().frame,
        Some(In::Welcome(_))
    ));

    let (tx2, mut rx2) = raw_agent_link(&c, creds_for(&c, "alice"), vec![hello("alice")])
        .await
        .unwrap();
    assert!(matches!(
        rx2.message().await.unwrap().unwrap().frame,
        Some(In::Welcome(_))
    ));

    let first = tokio::time::timeout(Duration::from_secs(5), rx1.message())
        .await
        .unwrap();
    let status = first.expect_err("the old stream ends with a status");
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert!(
        status.message().contains("superseded"),
        "{}",
        status.message()
    );
    let (reply, ()) = tokio::join!(
        ask(&c, "alice", "who is there?"),
        answer_next_turn(&tx2, &mut rx2, "the new one")
    );
    assert_eq!(reply.text(), "the new one");
}

#[tokio::test]
async fn a_sidecar_cannot_inject_chunks_into_a_turn_it_was_not_given() {
    init();
    let c = records_only(&["alice", "mallory"]).await;
    let (alice_tx, mut alice_rx) = raw_agent_link(&c, creds_for(&c, "alice"), vec![hello("alice")])
        .await
        .unwrap();
    let (mallory_tx, _mallory_rx) =
        raw_agent_link(&c, creds_for(&c, "mallory"), vec![hello("mallory")])
            .await
            .unwrap();
    let mut gw = c.gateway().await.unwrap();
    let start = pb::ChatRequest {
        agent: "alice".into(),
        kind: Some(Kind::Start(pb::StartTurn {
            conversation: "dm".into(),
            text: "hi".into(),
            turn_id: "turn-alice-1".into(),
        })),
    };
    let stream = gw.chat(start).await.unwrap().into_inner();
    // Mallory guesses alice's turn id.
    let forged = pb::ReplyChunk {
        turn_id: "turn-alice-1".into(),
        seq: 0,
        delta: "FORGED".into(),
    };
    mallory_tx.send(frame(Out::Chunk(forged))).await.unwrap();
    answer_next_turn(&alice_tx, &mut alice_rx, "genuine").await;
    let reply = collect(stream, None).await.unwrap();
    assert_eq!(reply.text(), "genuine");
}

#[tokio::test]
async fn the_gateway_answers_bad_requests_with_precise_statuses() {
    init();
    let c = records_only(&["alice"]).await;
    let mut gw = c.gateway().await.unwrap();
    let start = |agent: &str, text: String| pb::ChatRequest {
        agent: agent.into(),
        kind: Some(Kind::Start(pb::StartTurn {
            conversation: "dm".into(),
            text,
            turn_id: String::new(),
        })),
    };

    let big = gw
        .chat(start("alice", "x".repeat(300 * 1024)))
        .await
        .unwrap_err();
    assert_eq!(big.code(), tonic::Code::InvalidArgument);
    assert!(
        big.message().contains("limit is 262144"),
        "{}",
        big.message()
    );

    let nobody = gw.chat(start("nobody", "hi".into())).await.unwrap_err();
    assert_eq!(nobody.code(), tonic::Code::NotFound);

    let bad_name = gw.chat(start("Not A Name", "hi".into())).await.unwrap_err();
    assert_eq!(bad_name.code(), tonic::Code::InvalidArgument);

    let empty = gw
        .chat(pb::ChatRequest {
            agent: "alice".into(),
            kind: None,
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);

    let bad_turn = pb::ChatRequest {
        agent: "alice".into(),
        kind: Some(Kind::Resume(pb::ResumeTurn {
            turn_id: "has space".into(),
            from_seq: 0,
        })),
    };
    assert_eq!(
        gw.chat(bad_turn).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
}

#[tokio::test]
async fn resuming_a_turn_the_agent_does_not_hold_is_not_found() {
    init();
    let c = Controller::start_ready(&["alice"]).await.unwrap();
    let mut gw = c.gateway().await.unwrap();
    let resume = pb::ChatRequest {
        agent: "alice".into(),
        kind: Some(Kind::Resume(pb::ResumeTurn {
            turn_id: "never-started".into(),
            from_seq: 0,
        })),
    };
    let mut stream = gw.chat(resume).await.unwrap().into_inner();
    let err = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without an error"),
            Err(s) => break s,
        }
    };
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("never-started"), "{}", err.message());
}

/// An Identity client over TLS (one connection, so one source address),
/// presenting `current` (a renewal) or no certificate.
async fn identity_client(
    c: &Controller,
    current: Option<Credentials>,
) -> IdentityClient<tonic::transport::Channel> {
    let server = SpiffeId::controller(
        clawswarm_certs::TrustDomain::new("clawswarm.local").unwrap(),
        "local",
    )
    .unwrap();
    let tls = clawswarm_certs::client_config(
        current.map(CredentialStore::new),
        &c.trust_bundle().unwrap(),
        ServerIdentity::Spiffe(server),
    )
    .unwrap();
    let ch = clawswarm_certs::mtls_channel(&c.identity_url(), tls, &ChannelOptions::default())
        .await
        .unwrap();
    IdentityClient::new(ch)
}

/// Identity.Certify over TLS, presenting `current` (a renewal) or nothing.
async fn certify(
    c: &Controller,
    current: Option<Credentials>,
    req: pb::CertifyRequest,
) -> Result<pb::CertifyResponse, tonic::Status> {
    identity_client(c, current)
        .await
        .certify(req)
        .await
        .map(|r| r.into_inner())
}

fn csr(edit: impl FnOnce(&mut CertificateParams)) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(
        "spiffe://clawswarm.local/ns/local/agent/alice"
            .try_into()
            .unwrap(),
    )];
    edit(&mut params);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

#[tokio::test]
async fn certify_refuses_csrs_asking_for_more_than_a_workload_certificate() {
    init();
    let c = records_only(&["alice"]).await;
    let alice = creds_for(&c, "alice");
    let req = |csr_pem: String| pb::CertifyRequest {
        identity: "local/alice".into(),
        csr_pem,
        token: String::new(),
    };

    let ca = certify(
        &c,
        Some(alice.clone()),
        req(csr(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained))),
    )
    .await
    .unwrap_err();
    assert_eq!(ca.code(), tonic::Code::InvalidArgument);
    assert!(ca.message().contains("CA"), "{}", ca.message());

    let eku = certify(
        &c,
        Some(alice.clone()),
        req(csr(|p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning]
        })),
    )
    .await
    .unwrap_err();
    assert_eq!(eku.code(), tonic::Code::InvalidArgument);
    assert!(
        eku.message().contains("extended key usage"),
        "{}",
        eku.message()
    );

    let san = certify(
        &c,
        Some(alice.clone()),
        req(csr(|p| {
            p.subject_alt_names
                .push(SanType::DnsName("evil.example".try_into().unwrap()))
        })),
    )
    .await
    .unwrap_err();
    assert_eq!(san.code(), tonic::Code::InvalidArgument);
    assert!(san.message().contains("evil.example"), "{}", san.message());

    let garbage = certify(
        &c,
        Some(alice.clone()),
        req(
            "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n"
                .into(),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument);

    // And a proper CSR renews.
    let ok = certify(&c, Some(alice), req(csr(|_| {}))).await.unwrap();
    assert_eq!(
        ok.spiffe_id,
        "spiffe://clawswarm.local/ns/local/agent/alice"
    );
}

#[tokio::test]
async fn certify_refuses_garbage_tokens_and_other_agents_certificates() {
    init();
    let c = records_only(&["alice", "bob"]).await;
    let req = |identity: &str, token: &str| pb::CertifyRequest {
        identity: identity.into(),
        csr_pem: csr(|_| {}),
        token: token.into(),
    };

    let none = certify(&c, None, req("local/alice", "")).await.unwrap_err();
    assert_eq!(none.code(), tonic::Code::Unauthenticated);
    let garbage = certify(&c, None, req("local/alice", "csb1.0000garbage\u{7f}"))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), tonic::Code::Unauthenticated);
    assert!(
        garbage.message().contains("unknown or already used"),
        "{}",
        garbage.message()
    );

    let bobs_cert = creds_for(&c, "bob");
    let stolen = certify(&c, Some(bobs_cert), req("local/alice", ""))
        .await
        .unwrap_err();
    assert_eq!(stolen.code(), tonic::Code::PermissionDenied);

    let elsewhere = certify(&c, None, req("other-ns/alice", "x"))
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), tonic::Code::PermissionDenied);
    let malformed = certify(&c, None, req("alice", "x")).await.unwrap_err();
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
    assert!(c.logs().contains("certify refused"));
}

/// A stranger floods Identity.Certify with tokens: the controller checks a
/// burst of them, then answers RESOURCE_EXHAUSTED without checking, and a
/// token it just refused is refused again from memory (the shipped binary;
/// the limits are docs/metrics.md's).
#[tokio::test]
async fn a_flood_of_garbage_tokens_is_cut_off_before_it_costs_a_check_each() {
    init();
    let c = records_only(&["alice"]).await;
    let one = identity_client(&c, None).await;
    let req = |token: String| pb::CertifyRequest {
        identity: "local/alice".into(),
        csr_pem: String::new(),
        token,
    };
    let mut codes = std::collections::BTreeMap::new();
    for i in 0..260 {
        let e = one
            .clone()
            .certify(req(format!("csb1.flood{i}")))
            .await
            .unwrap_err();
        *codes.entry(format!("{:?}", e.code())).or_insert(0) += 1;
    }
    let exhausted = codes.get("ResourceExhausted").copied().unwrap_or(0);
    assert!(
        exhausted >= 40 && codes.get("Unauthenticated").copied().unwrap_or(0) >= 200,
        "a burst is checked, the rest refused unchecked: {codes:?}"
    );
    let (_, metrics) = c.http_get("/metrics").await.unwrap();
    let stopped = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("clawswarm_identity_certify_stopped_total{reason=\"rate_limited\"} ")
        })
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(stopped, Some(exhausted as u64), "{metrics}");
}

/// A message that is not protobuf at all: field 1 with wire type 7, which
/// does not exist.
const UNDECODABLE: &[u8] = &[0x0f, 0x01];

#[tokio::test]
async fn undecodable_and_oversized_messages_get_invalid_argument_and_resource_exhausted() {
    init();
    let c = Controller::start_ready(&["alice"]).await.unwrap();

    let garbage = raw_grpc_call(
        c.admin_channel().await.unwrap(),
        "/clawswarm.v1.Gateway/ListAgents",
        UNDECODABLE.to_vec(),
    )
    .await
    .unwrap_err();
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument, "{garbage:?}");

    // Chat streams its answer; the request is decoded before the stream starts.
    let garbage_chat = raw_grpc_call(
        c.admin_channel().await.unwrap(),
        "/clawswarm.v1.Gateway/Chat",
        UNDECODABLE.to_vec(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        garbage_chat.code(),
        tonic::Code::InvalidArgument,
        "{garbage_chat:?}"
    );

    // docs/protocol.md: 1 MiB per message on the mesh port.
    let huge = raw_grpc_call(
        c.admin_channel().await.unwrap(),
        "/clawswarm.v1.Gateway/Chat",
        vec![0; 2 * 1024 * 1024],
    )
    .await
    .unwrap_err();
    assert_eq!(huge.code(), tonic::Code::ResourceExhausted, "{huge:?}");
    assert!(
        huge.message().contains("the limit is 1048576 bytes"),
        "{}",
        huge.message()
    );

    // The sidecar's debug endpoint answers the same way.
    let debug = raw_grpc_call(
        c.debug_channel("alice").await.unwrap(),
        "/clawswarm.v1.SidecarDebug/Chat",
        UNDECODABLE.to_vec(),
    )
    .await
    .unwrap_err();
    assert_eq!(debug.code(), tonic::Code::InvalidArgument, "{debug:?}");

    // And the servers are fine afterwards.
    let mut gw = c.gateway().await.unwrap();
    let reply = clawswarm_tests::harness::chat(&mut gw, "alice", "dm", "still there?")
        .await
        .unwrap();
    assert_eq!(reply.outcome(), Some(pb::Outcome::Ok), "{reply:?}");
}

/// The next `Turn` the controller sends, keeping every other frame in `seen`.
async fn next_turn(rx: &mut tonic::Streaming<pb::ControllerFrame>, seen: &mut Vec<In>) -> String {
    loop {
        let f = tokio::time::timeout(Duration::from_secs(20), rx.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match f.frame {
            Some(In::Turn(t)) => return t.turn_id,
            other => seen.extend(other),
        }
    }
}

/// One requester that stops reading holds up its own turn only: the same
/// agent's next turn streams and ends meanwhile, nothing cancels the first,
/// and once read it has every chunk (the shipped binary; the test plays
/// the sidecar).
#[tokio::test]
async fn a_requester_that_stops_reading_holds_up_only_its_own_turn() {
    const SLOW_CHUNKS: u64 = 1200;
    init();
    let c = records_only(&["alice"]).await;
    let (tx, mut rx) = raw_agent_link(&c, creds_for(&c, "alice"), vec![hello("alice")])
        .await
        .unwrap();
    let start = |conversation: &str, turn_id: &str| pb::ChatRequest {
        agent: "alice".into(),
        kind: Some(Kind::Start(pb::StartTurn {
            conversation: conversation.into(),
            text: "hi".into(),
            turn_id: turn_id.into(),
        })),
    };
    // Every frame the controller sends the sidecar, as it arrives.
    let mut seen: Vec<In> = Vec::new();
    let chunk = |turn_id: &str, seq: u64, delta: &str| {
        frame(Out::Chunk(pb::ReplyChunk {
            turn_id: turn_id.into(),
            seq,
            delta: delta.into(),
        }))
    };
    let end = |turn_id: &str, chunks: u64| {
        frame(Out::End(pb::ReplyEnd {
            turn_id: turn_id.into(),
            chunks,
            outcome: pb::Outcome::Ok as i32,
            ..Default::default()
        }))
    };

    // The slow requester asks and then reads nothing: its reply (1,200
    // chunks of 4 KiB) is more than its HTTP/2 window (2 MiB), h2's send
    // buffer and its queue of 256 events hold, and less than the 4 MiB a
    // turn may fall behind beyond them.
    let slow = c
        .gateway()
        .await
        .unwrap()
        .chat(start("slow", "turn-slow"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_turn(&mut rx, &mut seen).await, "turn-slow");
    let piece = "x".repeat(4 * 1024);
    for seq in 0..SLOW_CHUNKS {
        tx.send(chunk("turn-slow", seq, &piece)).await.unwrap();
    }
    tx.send(end("turn-slow", SLOW_CHUNKS)).await.unwrap();

    // Another conversation of the same agent meanwhile: answered in full.
    let fast = c
        .gateway()
        .await
        .unwrap()
        .chat(start("fast", "turn-fast"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_turn(&mut rx, &mut seen).await, "turn-fast");
    tx.send(chunk("turn-fast", 0, "quick")).await.unwrap();
    tx.send(end("turn-fast", 1)).await.unwrap();
    let reply = collect(fast, None).await.unwrap();
    assert_eq!(
        (reply.text().as_str(), reply.outcome()),
        ("quick", Some(pb::Outcome::Ok))
    );

    // Nothing gave the slow turn up while it waited…
    while let Ok(Ok(Some(f))) = tokio::time::timeout(Duration::from_millis(200), rx.message()).await
    {
        seen.extend(f.frame);
    }
    assert!(
        !seen.iter().any(|f| matches!(f, In::Cancel(_))),
        "no turn was cancelled: {seen:?}"
    );
    // …and read now, it has every chunk, in order.
    let reply = collect(slow, None).await.unwrap();
    assert_eq!(reply.chunks.len() as u64, SLOW_CHUNKS);
    assert!(
        reply
            .chunks
            .iter()
            .enumerate()
            .all(|(i, (seq, _))| *seq == i as u64)
    );
    assert_eq!(reply.outcome(), Some(pb::Outcome::Ok));
}

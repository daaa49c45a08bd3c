//! Issue 15, "bad input": an agent that cannot work says why where people
//! look (the chat and `clawswarm agents list`), the controller keeps
//! running, and no other agent is affected. Real binaries, embedded mode,
//! sandboxed workloads (the stub model as each agent's workload).
//!
//! A rejected key and a model server that is down are proven with the real
//! OpenClaw in `openclaw_mesh.rs`.

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::{os::unix::fs::PermissionsExt, time::Duration};

use clawswarm_proto::v1 as pb;
use clawswarm_tests::harness::{Controller, ControllerOptions, binaries, chat};

const START: Duration = Duration::from_secs(90);

fn init() {
    clawswarm_certs::install_default_crypto_provider();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_that_crashes_on_start_is_named_in_the_chat_and_in_agents_list_and_others_answer()
 {
    init();
    let stub = binaries().unwrap().stub_model.display().to_string();
    // bob's workload dies at once, as a program with a broken install does.
    let command = format!(
        "/bin/sh -c 'case {{agent}} in *bob) echo \"fatal: cannot open the model weights\" >&2; exit 3;; esac; \
         exec {stub} --listen 127.0.0.1:{{port}} --log {{data_dir}}/model.jsonl'"
    );
    let mut opts = ControllerOptions::with_agents(&["alice", "bob"]);
    opts.workload_command = Some(command);
    let c = Controller::start(opts).await.unwrap();
    c.wait_ready("alice", START).await.unwrap();

    let bob = c
        .wait_listed_detail(
            "bob",
            "the workload exited with status 3: fatal: cannot open the model weights",
            START,
        )
        .await
        .unwrap();
    assert!(!bob.workload_ready, "{bob:?}");
    // After a few crashes in a row it shows as Failed (and is still retried).
    let bob = c
        .wait_listed_detail("bob", "restart 3", START)
        .await
        .unwrap();
    assert_eq!(bob.phase, "Failed", "{bob:?}");

    // A message to bob is answered at once with the reason, not after a
    // readiness timeout.
    let mut gw = c.gateway().await.unwrap();
    let asked = tokio::time::Instant::now();
    let reply = chat(&mut gw, "bob", "dm", "hello?").await.unwrap();
    let end = reply.end.clone().unwrap();
    assert_eq!(end.outcome(), pb::Outcome::Error, "{reply:?}");
    assert!(
        end.error.contains("cannot start") && end.error.contains("exited with status 3"),
        "{:?}",
        end.error
    );
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "told at once, took {:?}",
        asked.elapsed()
    );

    // alice is untouched and the controller keeps serving.
    let reply = chat(&mut gw, "alice", "dm", "[chunks=2] still there?")
        .await
        .unwrap();
    assert_eq!(reply.outcome(), Some(pb::Outcome::Ok), "{reply:?}");
    assert_eq!(reply.text().trim(), "w0 w1");
    let alice = c.listed("alice").await.unwrap();
    assert_eq!(alice.phase, "Running", "{alice:?}");
    assert!(
        alice.workload_ready && !alice.detail.contains("exited"),
        "{alice:?}"
    );
}

/// A data volume that fills up: the agent says so in `agents list` and
/// answers a message at once with the reason (its workload would fail in
/// its own words, or not at all); its neighbour answers; once space is
/// freed it answers again. bob's directory is a 64 MiB tmpfs of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_volume_is_named_in_the_chat_and_in_agents_list_and_others_answer() {
    init();
    let mut opts = ControllerOptions::with_agents(&["alice", "bob"]);
    opts.small_volumes = vec![("bob".into(), 64 << 20)];
    let c = Controller::start(opts).await.unwrap();
    c.wait_ready("bob", START).await.unwrap();
    c.wait_ready("alice", START).await.unwrap();

    // Fill bob's volume to under the 16 MiB floor.
    let filler = c.agent_dir("bob").join("data/filler");
    std::fs::write(&filler, vec![0u8; 52 << 20]).unwrap();
    let bob = c
        .wait_listed_detail("bob", "the agent's data volume is full", START)
        .await
        .unwrap();
    assert!(!bob.workload_ready, "{bob:?}");

    let mut gw = c.gateway().await.unwrap();
    let asked = tokio::time::Instant::now();
    let reply = chat(&mut gw, "bob", "dm", "hello?").await.unwrap();
    let end = reply.end.clone().unwrap();
    assert_eq!(end.outcome(), pb::Outcome::Error, "{reply:?}");
    assert!(end.error.contains("data volume is full"), "{:?}", end.error);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "told at once, took {:?}",
        asked.elapsed()
    );
    let reply = chat(&mut gw, "alice", "dm", "[chunks=1] hi").await.unwrap();
    assert_eq!(reply.outcome(), Some(pb::Outcome::Ok), "{reply:?}");

    // Space freed: bob answers again.
    std::fs::remove_file(&filler).unwrap();
    c.wait_ready("bob", START).await.unwrap();
    let reply = chat(&mut gw, "bob", "dm", "[chunks=2] better?")
        .await
        .unwrap();
    assert_eq!(reply.outcome(), Some(pb::Outcome::Ok), "{reply:?}");
    assert_eq!(reply.text().trim(), "w0 w1");
}

/// A sandbox that cannot be created for one agent (here bubblewrap
/// refuses that agent's binds, as it does for a path it cannot mount):
/// that agent's detail quotes bubblewrap instead of a generic "not ready",
/// its neighbour answers, the controller stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_that_cannot_be_created_for_one_agent_is_named_in_agents_list() {
    init();
    let real = std::env::var("CLAWSWARM_BWRAP")
        .expect("CLAWSWARM_BWRAP (scripts/deps.sh bwrap) for sealed workloads");
    let dir = tempfile::tempdir().unwrap();
    let bwrap = fake_bwrap(
        dir.path(),
        &format!(
            "case \"$*\" in *carol*) echo \"bwrap: Can't mount tmpfs on /newroot/tmp: No space left on device\" >&2; exit 1;; esac\nexec {real} \"$@\"\n"
        ),
    );
    let mut opts = ControllerOptions::with_agents(&["carol", "dave"]);
    opts.env = vec![("CLAWSWARM_BWRAP".into(), bwrap)];
    let c = Controller::start(opts).await.unwrap();

    let carol = c
        .wait_listed_detail(
            "carol",
            "the workload exited with status 1: bwrap: Can't mount tmpfs on /newroot/tmp: No space left on device",
            START,
        )
        .await
        .unwrap();
    assert!(!carol.workload_ready, "{carol:?}");
    c.wait_ready("dave", START).await.unwrap();
    let mut gw = c.gateway().await.unwrap();
    let reply = chat(&mut gw, "dave", "dm", "[chunks=1] hi").await.unwrap();
    assert_eq!(reply.outcome(), Some(pb::Outcome::Ok), "{reply:?}");
    assert!(
        c.http_get("/healthz").await.is_ok_and(|(s, _)| s == 200),
        "the controller keeps running"
    );
}

/// A sandbox tool that cannot create any sandbox here (user namespaces
/// off: what bubblewrap prints then) is found at start: the controller
/// refuses to run workloads unsealed and says why and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_tool_that_cannot_create_sandboxes_stops_the_controller_with_the_reason() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let bwrap = fake_bwrap(
        dir.path(),
        "echo 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n",
    );
    let mut opts = ControllerOptions::with_agents(&["erin"]);
    opts.env = vec![("CLAWSWARM_BWRAP".into(), bwrap)];
    let err = Controller::start(opts)
        .await
        .err()
        .expect("refused")
        .to_string();
    for said in [
        "cannot create a sandbox here",
        "bwrap: setting up uid map: Permission denied",
        "--unsandboxed",
    ] {
        assert!(err.contains(said), "{said:?} not in {err}");
    }
}

/// An executable `bwrap` in `dir` running `body` (a shell script body).
fn fake_bwrap(dir: &std::path::Path, body: &str) -> String {
    let path = dir.join("bwrap");
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

//! Local agents are sealed off from each other: the shipped controller runs
//! every workload under bubblewrap, and a workload that tries to leave its
//! sandbox fails at each attempt while its agent still answers.
//!
//! The workload here is a probe script (kept in a directory exposed with
//! CLAWSWARM_SANDBOX_READ_ONLY) that tries each escape, writes one line per
//! attempt to its data dir, then becomes the stub model. The same probe run
//! `--unsandboxed` escapes, which shows each probe can tell the two apart.
//! Needs `scripts/deps.sh bwrap` (CLAWSWARM_BWRAP).

// Helpers here are test code too.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use clawswarm_proto::v1 as pb;
use clawswarm_tests::harness::{Controller, ControllerOptions, binaries, chat};

/// Set on the controller; a workload that sees it has the controller's
/// environment.
const SENTINEL: &str = "CLAWSWARM_SANDBOX_TEST_SENTINEL";

/// `try NAME CMD…`: CMD succeeding means the workload got out.
const PROBE: &str = r#"#!/bin/sh
data="$1" run="$2" side="$3" host_port="$4"
shift 4
out="$data/escape.txt"
: > "$out"
try() {
    name="$1"; shift
    if "$@" >/dev/null 2>&1; then echo "escaped $name" >> "$out"; else echo "blocked $name" >> "$out"; fi
}
# Bob may be provisioned a moment after alice starts: give his directory time to appear.
try other-agents-data sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do ls "$0" && exit 0; sleep 1; done; exit 1' "$data/../../bob/data"
try controller-ca ls "$data/../../../ca"
try own-bootstrap-token cat "$run/bootstrap-token"
try sidecar-ledger-dir ls "$side"
try sidecar-environment sh -c 'cat /proc/[0-9]*/environ 2>/dev/null | tr "\0" "\n" | grep -q CLAWSWARM_CONTROLLER_URL'
try controller-environment sh -c 'env | grep -q CLAWSWARM_SANDBOX_TEST_SENTINEL'
try host-loopback timeout 3 bash -c "echo > /dev/tcp/127.0.0.1/$host_port"
try system-files touch /usr/clawswarm-escape
echo done >> "$out"
exec "$@"
"#;

const PROBES: [&str; 8] = [
    "other-agents-data",
    "controller-ca",
    "own-bootstrap-token",
    "sidecar-ledger-dir",
    "sidecar-environment",
    "controller-environment",
    "host-loopback",
    "system-files",
];

struct Probed {
    controller: Controller,
    /// Held so the host port stays open for the loopback probe.
    _host_listener: std::net::TcpListener,
    _dir: tempfile::TempDir,
}

async fn start_probed(sandboxed: bool) -> Probed {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe.sh");
    std::fs::write(&probe, PROBE).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Something on the host's loopback that no workload should reach.
    let host_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_listener.local_addr().unwrap().port();

    let stub = &binaries().unwrap().stub_model;
    let mut opts = ControllerOptions::with_agents(&["alice", "bob"]);
    opts.workload_command = Some(format!(
        "{} {{data_dir}} {{run_dir}} {{sidecar_dir}} {host_port} {} --listen 127.0.0.1:{{port}}",
        probe.display(),
        stub.display()
    ));
    opts.env = vec![
        (
            "CLAWSWARM_SANDBOX_READ_ONLY".into(),
            dir.path().display().to_string(),
        ),
        (SENTINEL.into(), "the controller's own".into()),
    ];
    if !sandboxed {
        opts.env
            .push(("CLAWSWARM_UNSANDBOXED".into(), "true".into()));
    }
    let controller = Controller::start(opts).await.unwrap();
    Probed {
        controller,
        _host_listener: host_listener,
        _dir: dir,
    }
}

/// `probe name → "blocked" | "escaped"`, once the probe has finished.
async fn outcomes(data_dir: &Path) -> BTreeMap<String, String> {
    let path = data_dir.join("escape.txt");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().any(|l| l == "done") {
            return text
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(verdict, name)| (name.to_owned(), verdict.to_owned()))
                .collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the probe did not finish: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_workload_cannot_reach_anything_but_its_own_and_still_answers() {
    clawswarm_certs::install_default_crypto_provider();
    let p = start_probed(true).await;
    let c = &p.controller;
    for agent in ["alice", "bob"] {
        c.wait_ready(agent, Duration::from_secs(60)).await.unwrap();
    }
    let seen = outcomes(&c.agent_dir("alice").join("data")).await;
    for probe in PROBES {
        assert_eq!(
            seen.get(probe).map(String::as_str),
            Some("blocked"),
            "{probe}: {seen:?}\nworkload log:\n{}",
            std::fs::read_to_string(c.agent_dir("alice").join("run/workload.log"))
                .unwrap_or_default()
        );
    }

    // The product works inside: a turn goes sidecar → sandbox → stub and back.
    let mut gw = c.gateway().await.unwrap();
    let reply = chat(&mut gw, "alice", "dm-1", "[chunks=2] hello from inside")
        .await
        .unwrap();
    assert_eq!(reply.outcome(), Some(pb::Outcome::Ok), "{reply:?}");
    assert_eq!(reply.text().trim(), "w0 w1");

    // A workload killed with its whole sandbox comes back sealed.
    c.kill_agent_processes("alice").unwrap();
    std::fs::remove_file(c.agent_dir("alice").join("data/escape.txt")).unwrap();
    c.wait_ready("alice", Duration::from_secs(60))
        .await
        .unwrap();
    let again = outcomes(&c.agent_dir("alice").join("data")).await;
    assert!(again.values().all(|v| v == "blocked"), "{again:?}");
}

/// The control: the same probes, unsandboxed, get out. Without this the
/// test above could pass on probes that can never succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_probes_escape_when_told_unsandboxed() {
    clawswarm_certs::install_default_crypto_provider();
    let p = start_probed(false).await;
    let c = &p.controller;
    c.wait_ready("alice", Duration::from_secs(60))
        .await
        .unwrap();
    let seen = outcomes(&c.agent_dir("alice").join("data")).await;
    // Writing to /usr needs root, and the clean environment is the
    // runtime's with or without a sandbox (tests/tests/lifecycle.rs); the
    // rest needs only the same user.
    let sandbox_only = ["system-files", "controller-environment"];
    for probe in PROBES.iter().filter(|p| !sandbox_only.contains(p)) {
        assert_eq!(
            seen.get(*probe).map(String::as_str),
            Some("escaped"),
            "{probe}: {seen:?}"
        );
    }
    let _ = std::fs::remove_file("/usr/clawswarm-escape");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bubblewrap_the_controller_refuses_and_names_the_way_out() {
    let mut opts = ControllerOptions::with_agents(&["alice"]);
    opts.env = vec![("CLAWSWARM_BWRAP".into(), "/nonexistent/bwrap".into())];
    let err = match Controller::start(opts).await {
        Ok(_) => panic!("the controller started local agents without a sandbox"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("bubblewrap") && err.contains("--unsandboxed"),
        "{err}"
    );
}

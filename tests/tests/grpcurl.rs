//! The grpcurl command lines the README gives, read from README.md and run
//! for real through `scripts/grpcurl`.

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use clawswarm_proto::v1::{self as pb, chat_request::Kind};
use clawswarm_tests::{
    harness::{Controller, ControllerOptions, collect, grpcurl, output_text},
    readme,
};

fn init() {
    clawswarm_certs::install_default_crypto_provider();
}

fn run<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Output {
    std::process::Command::new(grpcurl().unwrap())
        .args(args)
        .output()
        .unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One README line run by bash from the repository root (where
/// `scripts/grpcurl` resolves), after the section's variable assignments.
fn run_readme_line(prelude: &str, line: &str) -> (bool, String) {
    let out = std::process::Command::new("bash")
        .args(["-o", "pipefail", "-c", &format!("{prelude}\n{line}")])
        .current_dir(repo())
        .output()
        .unwrap();
    let text = output_text(&out);
    (out.status.success(), text)
}

/// What each README grpcurl line must answer, by what the line calls.
fn expected_output(line: &str) -> &'static [&'static str] {
    if line.contains(":7444 list") {
        &["clawswarm.v1.Identity"]
    } else if line.ends_with(" list") {
        &[
            "clawswarm.v1.AgentLink",
            "clawswarm.v1.Gateway",
            "grpc.health.v1.Health",
        ]
    } else if line.contains("describe clawswarm.v1.Gateway") {
        &["rpc Chat"]
    } else if line.contains("Health/Check") {
        &["SERVING"]
    } else if line.contains("Gateway/ListAgents") {
        &["\"alice\""]
    } else if line.contains("\"start\"") {
        &["\"accepted\"", "OUTCOME_OK"]
    } else if line.contains("\"resume\"") {
        &["OUTCOME_OK"]
    } else if line.contains("SidecarDebug/GetStatus") {
        &[
            "\"linkConnected\": true",
            "spiffe://clawswarm.local/ns/local/agent/alice",
        ]
    } else if line.contains("SidecarDebug/Chat") {
        &["OUTCOME_OK"]
    } else {
        panic!("README.md has a grpcurl line this test does not know what to expect of: {line}")
    }
}

/// The README's "Debug with grpcurl" lines, run for real with only their
/// placeholders replaced: the state directory, the ports, the agent name
/// and a turn id. An edit that breaks a line fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_grpcurl_lines_work_against_controller_and_sidecar() {
    init();
    let mut c = Controller::start_ready(&["alice"]).await.unwrap();
    let state = c.state_dir();
    let mesh = c.mesh_addr();
    let identity = c.identity_url().trim_start_matches("https://").to_owned();
    let place = |line: &str| -> String {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (from, to) in [
            ("~/.local/share/clawswarm", p(&state)),
            ("127.0.0.1:7443", mesh.as_str()),
            ("127.0.0.1:7444", identity.as_str()),
            ("demo", "alice"),
        ] {
            if line.contains(from) {
                pairs.push((from, to));
            }
        }
        readme::substitute(line, &pairs).unwrap()
    };

    let lines = readme::section_lines("Debug with grpcurl").unwrap();
    let (assignments, commands): (Vec<&String>, Vec<&String>) = lines
        .iter()
        .partition(|l| l.split_once('=').is_some_and(|(v, _)| !v.contains(' ')));
    let prelude = assignments
        .iter()
        .map(|l| place(l))
        .collect::<Vec<_>>()
        .join("\n");
    // Every line calls scripts/grpcurl (directly or through $G), which
    // installs grpcurl on a fresh machine; none relies on one on PATH.
    assert!(
        assignments
            .iter()
            .any(|l| l.starts_with("G=\"scripts/grpcurl ")),
        "{assignments:#?}"
    );
    assert!(
        commands.len() >= 9
            && commands
                .iter()
                .all(|l| l.starts_with("$G ") || l.starts_with("scripts/grpcurl ")),
        "README lines must call scripts/grpcurl: {commands:#?}"
    );

    let mut resume = None;
    for line in commands {
        if line.contains("TURN_ID") {
            resume = Some(line);
            continue;
        }
        let cmd = place(line);
        let (ok, out) = run_readme_line(&prelude, &cmd);
        assert!(ok, "README line failed: {line}\nran: {cmd}\n{out}");
        for want in expected_output(line) {
            assert!(out.contains(want), "{line}: wanted {want:?} in\n{out}");
        }
    }

    // The resume line picks up a reply after a disconnect: a turn whose
    // controller died mid-reply, resumed from the restarted one.
    let resume = resume.expect("README.md shows how to resume a turn with TURN_ID");
    let mut gw = c.gateway().await.unwrap();
    let start = pb::ChatRequest {
        agent: "alice".into(),
        kind: Some(Kind::Start(pb::StartTurn {
            conversation: "readme".into(),
            text: "[chunks=20] [delay_ms=50]".into(),
            turn_id: String::new(),
        })),
    };
    let first = collect(gw.chat(start).await.unwrap().into_inner(), Some(2))
        .await
        .unwrap();
    c.kill().await.unwrap();
    c.restart().await.unwrap();
    c.wait_connected("alice", Duration::from_secs(30))
        .await
        .unwrap();
    let cmd = readme::substitute(&place(resume), &[("TURN_ID", &first.turn_id)]).unwrap();
    let (ok, out) = run_readme_line(&prelude, &cmd);
    assert!(ok, "README line failed: {resume}\nran: {cmd}\n{out}");
    for want in expected_output(resume) {
        assert!(out.contains(want), "{resume}: wanted {want:?} in\n{out}");
    }

    // Without the admin certificate the mesh port refuses to talk at all.
    let (ca, _, _) = c.admin_files();
    let mesh = c.mesh_addr();
    let anonymous = run(&["-connect-timeout", "3", "-cacert", p(&ca), &mesh, "list"]);
    assert!(!anonymous.status.success());
    let debug = c.sidecar_addr("alice", "debug").unwrap();
    assert!(
        !run(&["-connect-timeout", "3", "-insecure", &debug, "list"])
            .status
            .success(),
        "the debug endpoint must require a client certificate"
    );
}

/// `scripts/grpcurl` on a machine whose environment names no grpcurl:
/// it gets the pinned one through scripts/deps.sh (cached after the
/// first install) and runs it.
#[test]
fn scripts_grpcurl_installs_grpcurl_through_deps_sh_and_runs_it() {
    let deps = std::fs::read_to_string(repo().join("scripts/deps.sh")).unwrap();
    let pinned = deps
        .lines()
        .find_map(|l| l.strip_prefix("GRPCURL_VERSION="))
        .unwrap()
        .to_owned();
    let out = std::process::Command::new(repo().join("scripts/grpcurl"))
        .arg("-version")
        .env_remove("CLAWSWARM_GRPCURL")
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&pinned), "wanted grpcurl {pinned}: {text}");
    assert!(
        !text.contains("cached in"),
        "the cache hit is not news: {text}"
    );
}

#[tokio::test]
async fn reflection_v1alpha_is_served_for_older_grpcurl() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    init();
    let c = Controller::start(ControllerOptions {
        no_workload: true,
        ..ControllerOptions::default()
    })
    .await
    .unwrap();
    let identity = c.identity_url();
    let tls = clawswarm_certs::client_config(
        None,
        &c.trust_bundle().unwrap(),
        clawswarm_certs::ServerIdentity::DnsName("127.0.0.1".into()),
    )
    .unwrap();
    let ch =
        clawswarm_certs::mtls_channel(&identity, tls, &clawswarm_certs::ChannelOptions::default())
            .await
            .unwrap();
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = ServerReflectionClient::new(ch)
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("{msg:?}")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "clawswarm.v1.Identity"),
        "{list:?}"
    );
}

//! The grpcurl command lines the README gives, run for real.

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::{path::Path, process::Output};

use clawswarm_tests::harness::{Controller, ControllerOptions, grpcurl};

fn init() {
    clawswarm_certs::install_default_crypto_provider();
}

fn run<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Output {
    std::process::Command::new(grpcurl().unwrap())
        .args(args)
        .output()
        .unwrap()
}

fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = run(args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn the_readmes_grpcurl_commands_work_against_controller_and_sidecar() {
    init();
    let c = Controller::start_ready(&["alice"]).await.unwrap();
    let (ca, cert, key) = c.admin_files();
    let mesh = c.mesh_addr();
    let admin = ["-cacert", p(&ca), "-cert", p(&cert), "-key", p(&key)];
    let with = |rest: &[&str]| {
        admin
            .iter()
            .chain(rest)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };

    let services = ok(&with(&[&mesh, "list"]));
    for s in [
        "clawswarm.v1.AgentLink",
        "clawswarm.v1.Gateway",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(s), "{services}");
    }
    assert!(ok(&with(&[&mesh, "describe", "clawswarm.v1.Gateway"])).contains("rpc Chat"));
    assert!(ok(&with(&[&mesh, "grpc.health.v1.Health/Check"])).contains("SERVING"));
    let reply = ok(&with(&[
        "-d",
        r#"{"agent":"alice","start":{"text":"hello from grpcurl"}}"#,
        &mesh,
        "clawswarm.v1.Gateway/Chat",
    ]));
    assert!(
        reply.contains("OUTCOME_OK") && reply.contains("\"accepted\""),
        "{reply}"
    );
    assert!(ok(&with(&[&mesh, "clawswarm.v1.Gateway/ListAgents"])).contains("\"alice\""));

    // Without the admin certificate the mesh port refuses to talk at all.
    let anonymous = run(&["-connect-timeout", "3", "-cacert", p(&ca), &mesh, "list"]);
    assert!(!anonymous.status.success());

    // The identity port serves anyone with the trust bundle (sidecars have no certificate yet).
    let identity = c.identity_url().trim_start_matches("https://").to_owned();
    assert!(ok(&["-cacert", p(&ca), &identity, "list"]).contains("clawswarm.v1.Identity"));

    // The sidecar's own debug endpoint. Its certificate names only its SPIFFE
    // id, so grpcurl cannot check a host name: -insecure skips that check,
    // while the sidecar still demands the admin certificate.
    let ports: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(c.agent_dir("alice").join("run/ports.json")).unwrap(),
    )
    .unwrap();
    let debug = ports["debug"].as_str().unwrap().to_owned();
    let sidecar = |rest: &[&str]| {
        ["-insecure", "-cert", p(&cert), "-key", p(&key)]
            .iter()
            .chain(rest)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let status = ok(&sidecar(&[&debug, "clawswarm.v1.SidecarDebug/GetStatus"]));
    assert!(
        status.contains("\"linkConnected\": true")
            && status.contains("spiffe://clawswarm.local/ns/local/agent/alice"),
        "{status}"
    );
    let direct = ok(&sidecar(&[
        "-d",
        r#"{"text":"straight to the workload"}"#,
        &debug,
        "clawswarm.v1.SidecarDebug/Chat",
    ]));
    assert!(direct.contains("OUTCOME_OK"), "{direct}");
    assert!(
        !run(&["-connect-timeout", "3", "-insecure", &debug, "list"])
            .status
            .success(),
        "the debug endpoint must require a client certificate"
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

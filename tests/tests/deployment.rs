//! The install test: the shipped deployment, run as an operator installs it.
//!
//! Runs what ships, not pieces: everything `kustomize build deploy/` renders
//! is applied unchanged to a real etcd + kube-apiserver, the shipped Secret
//! templates are filled in, and the real `clawswarm` binary runs as a pod
//! made from the rendered Deployment's pod template: its env, envFrom,
//! mounted Secret, emptyDirs, securityContext and automounted
//! ServiceAccount token, nothing else (`clawswarm_tests::install`). The
//! sandboxed test kubelet runs the agent pods that controller builds from
//! the shipped `default` template exactly as written: the real
//! `clawswarm-sidecar init`, the real OpenClaw gateway, the real sidecar
//! with its model proxy in front of the stub model. Slack is the fake Slack.
//!
//! One installation for the file (~1.5 GB for OpenClaw, a minute to start),
//! so the checks are steps of one test. Needs `scripts/deps.sh kube openclaw`
//! and root (namespaces); fails, never skips, without them.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{Context as _, Result};
use clawswarm_controller::runtime::kubernetes::crd::Agent;
use clawswarm_tests::fake_slack::payloads;
use clawswarm_tests::install::{Install, MODEL_KEY, NAMESPACE};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt as _};

const START: Duration = Duration::from_secs(240);
const REPLY: Duration = Duration::from_secs(120);
const ALICE: &str = "U0ALICE";

/// The agent pod of Alice's agent, once it runs.
async fn agent_pod(install: &Install, agent: &str) -> Result<Pod> {
    let api = Api::<Pod>::namespaced(install.cp.admin(), NAMESPACE);
    let pods = api
        .list(&ListParams::default().labels(&format!("clawswarm.dev/agent={agent}")))
        .await?;
    pods.into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .with_context(|| format!("no pod for agent {agent}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shipped_deployment_answers_a_slack_dm_through_a_real_openclaw_pod() -> Result<()> {
    let install = Install::new().await?;

    // The controller, as the Deployment's ReplicaSet would start it.
    let ctl = install.start_controller("a").await?;
    let ctl_name = ctl.name_any();
    install
        .wait_pod_ready(&ctl_name, START)
        .await
        .context("the controller pod never became Ready")?;
    install
        .fake
        .wait_socket_connections(1, START)
        .await
        .with_context(|| {
            format!(
                "the controller never opened Socket Mode: the Slack secret did not reach it?\n{}",
                install.pod_logs(&ctl_name)
            )
        })?;

    // `/agent setup` with no template: the shipped `default` template.
    let dm = install.fake.dm_channel_for(ALICE);
    install.fake.socket().send_command(payloads::slash_command(
        ALICE,
        &dm,
        "/agent",
        "setup",
        &install.fake.response_url("setup"),
    ))?;
    install
        .fake
        .response_containing("setup", "is starting", START)
        .await?;
    let ready = install
        .fake
        .response_containing("setup", "is ready", START)
        .await;
    let agent_name = clawswarm_controller::slack::commands::agent_name_for(ALICE);
    if let Err(e) = ready {
        let pod = agent_pod(&install, &agent_name).await.ok();
        let logs = pod
            .map(|p| install.pod_logs(&p.name_any()))
            .unwrap_or_default();
        return Err(e.context(format!(
            "the agent never became ready\nagent pod:\n{logs}\ncontroller:\n{}",
            install.pod_logs(&ctl_name)
        )));
    }
    let agents = Api::<Agent>::namespaced(install.cp.admin(), NAMESPACE);
    let agent = agents.get(&agent_name).await?;
    assert_eq!(agent.spec.template, "default");
    assert_eq!(agent.spec.owner, ALICE);

    // A DM: the reply streams from the real OpenClaw into the thread.
    install.fake.socket().send_event(payloads::event_callback(
        "Ev1",
        payloads::dm(
            ALICE,
            &dm,
            "1700000100.000001",
            "[chunks=3] hello from slack",
        ),
    ))?;
    let pod = agent_pod(&install, &agent_name).await?;
    let reply = install
        .fake
        .wait_for(REPLY, |f| {
            Some(f.thread_text(&dm, Some("1700000100.000001"))).filter(|t| t.contains("w2"))
        })
        .await
        .with_context(|| {
            format!(
                "no streamed reply; agent pod:\n{}\ncontroller:\n{}",
                install.pod_logs(&pod.name_any()),
                install.pod_logs(&ctl_name)
            )
        })?;
    assert_eq!(reply.trim(), "w0 w1 w2", "{reply:?}");
    assert!(
        !install.fake.calls_to("chat.startStream").is_empty(),
        "streamed natively"
    );
    let billed = install.stub.total_usage();
    assert!(
        billed.input_tokens > 0,
        "the stub billed the turn: {billed:?}"
    );
    assert!(
        install
            .stub
            .requests()
            .iter()
            .all(|r| r.api == clawswarm_tests::stub_model::Api::Anthropic),
        "every model call went through the sidecar's proxy with the real key"
    );

    // Token totals: Agent.status and `/agent usage` equal the stub's billing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status_tokens = loop {
        let a = agents.get(&agent_name).await?;
        let t = a.status.as_ref().and_then(|s| s.usage);
        if let Some(t) = t.filter(|t| t.input == billed.input_tokens) {
            break t;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "Agent.status tokens never matched the stub's billing {billed:?}: {:?}",
                a.status.map(|s| s.usage)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(status_tokens.output, billed.output_tokens);
    install.fake.socket().send_command(payloads::slash_command(
        ALICE,
        &dm,
        "/agent",
        "usage",
        &install.fake.response_url("usage"),
    ))?;
    let usage = install
        .fake
        .response_containing(
            "usage",
            &billed.input_tokens.to_string(),
            Duration::from_secs(30),
        )
        .await?;
    assert!(usage.contains(&billed.output_tokens.to_string()), "{usage}");

    // The workload's container holds its own part of the volume only: the
    // sidecar's ledger, outbox and tokens are out of its reach, and so are
    // the sidecar's processes and the provider key.
    let pod_name = pod.name_any();
    let probe = install
        .kubelet
        .exec(
            &pod_name,
            "workload",
            &[
                "/bin/sh",
                "-c",
                "id -u; ls /var/lib/clawswarm 2>&1; ls /data; \
                 cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c CLAWSWARM_MODEL_API_KEY; \
                 grep -rl CLAWSWARM /data 2>/dev/null | head -3; touch /data/sidecar-probe && echo wrote",
            ],
        )
        .await?;
    let out = String::from_utf8_lossy(&probe.stdout).into_owned();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("65532"), "runs as the pod's user: {out}");
    assert!(
        out.contains("No such file or directory"),
        "the sidecar's data is not mounted in the workload: {out}"
    );
    assert!(!out.contains("model-usage.json"), "{out}");
    assert!(
        out.lines().any(|l| l.trim() == "0"),
        "no process the workload sees has the provider key: {out}"
    );
    assert!(out.contains("wrote"), "its own part is writable: {out}");
    assert!(!out.contains(MODEL_KEY), "{out}");
    let sidecar = install
        .kubelet
        .exec(
            &pod_name,
            "sidecar",
            &["/bin/sh", "-c", "ls /var/lib/clawswarm; ls /data 2>&1"],
        )
        .await?;
    let sidecar_view = String::from_utf8_lossy(&sidecar.stdout).into_owned();
    assert!(
        sidecar_view.contains("model-usage.json"),
        "the sidecar keeps its ledger in its own part: {sidecar_view}"
    );
    assert!(
        !sidecar_view.contains("sidecar-probe"),
        "the workload's part is not the sidecar's: {sidecar_view}"
    );

    // An admin on the cluster uses the CLI in the leader's pod, with the
    // admin certificate the controller keeps in its state dir (docs/kubernetes.md).
    let cli = install
        .kubelet
        .exec(
            &ctl_name,
            "controller",
            &[
                "/usr/local/bin/clawswarm",
                "agents",
                "--gateway",
                "https://127.0.0.1:7443",
                "list",
            ],
        )
        .await?;
    let listed = String::from_utf8_lossy(&cli.stdout).into_owned();
    assert!(
        listed.contains(&agent_name) && listed.contains(ALICE),
        "{listed}\n{}",
        String::from_utf8_lossy(&cli.stderr)
    );

    // Not yet here: a standby replica and the leader SIGKILLed mid-reply
    // (issue 9 item 2). Tried on 2026-12-02: the standby came up as
    // `standby`, but the fake Slack then counted two Socket Mode
    // connections; not investigated yet. The resume itself is proven on the
    // real binary in tests/tests/slack.rs.
    Ok(())
}

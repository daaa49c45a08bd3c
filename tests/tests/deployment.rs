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
//! The real Prometheus, configured with the shipped PodMonitor, scrapes the
//! running sidecar. Then a second replica joins as a standby, and the leader is killed with
//! SIGKILL mid-reply: the reply must finish, through the new leader, in the
//! same Slack message.
//!
//! One installation for the file (~1.5 GB for OpenClaw, a minute to start),
//! so the checks are steps of one test. Needs `scripts/deps.sh kube openclaw promtool`
//! and root (namespaces); fails, never skips, without them.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{Context as _, Result};
use clawswarm_controller::runtime::kubernetes::crd::Agent;
use clawswarm_tests::fake_slack::payloads;
use clawswarm_tests::install::{Install, MODEL_KEY, NAMESPACE};
use clawswarm_tests::openclaw::{cron_job, every, job_id, once_in};
use clawswarm_tests::prometheus::{Prometheus, pod_targets};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt as _};

/// Run in the agent's workload container: read the library skill, try to
/// change it, try OpenClaw's installer on a git source, and report any
/// skill that got installed anyway.
const SKILLS_PROBE: &str = "\
cat /opt/clawswarm/skills/pipeline-status/scripts/latest.sh
touch /opt/clawswarm/skills/pipeline-status/x 2>/dev/null || echo read-only
mkdir -p /tmp/weather && cd /tmp/weather
printf -- '---\\nname: weather\\ndescription: w\\n---\\n' > SKILL.md
git init -q && git add . && git -c user.email=t@example.invalid -c user.name=t commit -qm w
openclaw skills install git:file:///tmp/weather 2>&1 | tail -5
find /data -path '*skills/weather' | sed 's/^/INSTALLED /'
";

const START: Duration = Duration::from_secs(240);
const REPLY: Duration = Duration::from_secs(120);
const ALICE: &str = "U0ALICE";

/// Call OpenClaw's admin RPC (`POST /api/v1/admin/rpc`) from inside the
/// agent pod's workload container, with the gateway token it was given.
async fn openclaw_rpc(
    install: &Install,
    pod: &str,
    method: &str,
    params: serde_json::Value,
) -> Result<serde_json::Value> {
    const CALL: &str = "fetch('http://127.0.0.1:18789/api/v1/admin/rpc', { method: 'POST', \
        headers: { 'content-type': 'application/json', authorization: 'Bearer ' + process.env.OPENCLAW_GATEWAY_TOKEN }, \
        body: JSON.stringify({ method: process.argv[1], params: JSON.parse(process.argv[2]) }) }) \
        .then(r => r.text()).then(t => console.log(t)).catch(e => { console.error(String(e)); process.exit(1); })";
    let params = params.to_string();
    let out = install
        .kubelet
        .exec(pod, "workload", &["node", "-e", CALL, method, &params])
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let body: serde_json::Value = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "{method}: not JSON: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    anyhow::ensure!(body["ok"] == true, "{method} failed: {body}");
    Ok(body)
}

/// What the stub billed, once no call has been added for longer than the
/// cron job's interval (a run that had started when it was removed is in).
async fn settled_billing(install: &Install) -> clawswarm_tests::stub_model::Usage {
    let mut last = install.stub.requests().len();
    loop {
        tokio::time::sleep(Duration::from_secs(8)).await;
        let now = install.stub.requests().len();
        if now == last {
            return install.stub.total_usage();
        }
        last = now;
    }
}

/// `Agent.status.usage` reaches the stub's billing, every kind.
async fn status_tokens_equal_billing(
    install: &Install,
    agents: &Api<Agent>,
    name: &str,
) -> Result<()> {
    let billed = install.stub.total_usage();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let a = agents.get(name).await?;
        let t = a.status.as_ref().and_then(|s| s.usage).unwrap_or_default();
        let status = (t.input, t.output, t.cache_read, t.cache_write);
        let want = (
            billed.input_tokens,
            billed.output_tokens,
            billed.cache_read_tokens,
            billed.cache_write_tokens,
        );
        if status == want {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "Agent.status tokens never matched the stub's billing {want:?}: {status:?} ({:?})",
            a.status.and_then(|s| s.metered)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `/agent usage` answers with the stub's billing.
async fn usage_command_shows_billing(install: &Install, dm: &str, url: &str) -> Result<()> {
    let billed = install.stub.total_usage();
    install.fake.socket().send_command(payloads::slash_command(
        ALICE,
        dm,
        "/agent",
        "usage",
        &install.fake.response_url(url),
    ))?;
    let want = format!(
        "{} input, {} output, {} cache read, {} cache write",
        billed.input_tokens,
        billed.output_tokens,
        billed.cache_read_tokens,
        billed.cache_write_tokens
    );
    install
        .fake
        .response_containing(url, &want, Duration::from_secs(30))
        .await
        .with_context(|| format!("`/agent usage` never said {want:?}"))?;
    Ok(())
}

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
    // The company's search cluster, in the shared Secret before any agent.
    let _engine = install.add_search_engine().await?;

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
    status_tokens_equal_billing(&install, &agents, &agent_name).await?;
    usage_command_shows_billing(&install, &dm, "usage").await?;

    // Background work counts too. A cron job (added over OpenClaw's admin
    // RPC from inside the workload container, as the agent adds one from
    // chat) runs with no turn; its output reaches Alice as a DM, and the
    // tokens it spent show in Agent.status and `/agent usage`.
    let pod_name = pod.name_any();
    let added = openclaw_rpc(
        &install,
        &pod_name,
        "cron.add",
        cron_job(
            "install-test reminder",
            every(5000),
            "[chunks=2] a reminder",
        ),
    )
    .await?;
    let job_id = job_id(&added)?;
    let before_cron = billed;
    install
        .fake
        .wait_for(START, |f| {
            f.bot_messages()
                .into_iter()
                .find(|m| m.channel == dm && m.thread_ts.is_none() && m.text.contains("w0 w1"))
        })
        .await
        .with_context(|| {
            format!(
                "the cron job's output never reached Alice; agent pod:\n{}",
                install.pod_logs(&pod_name)
            )
        })?;
    // Delivered notices are remembered on the Agent (recorded after the
    // post, before the ack), so a sidecar that resends its outbox after a
    // reconnect is not posted twice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while agents
        .get(&agent_name)
        .await?
        .status
        .is_none_or(|s| s.delivered_notices.is_empty())
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the cron notice was posted but Agent.status.deliveredNotices stayed empty"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    openclaw_rpc(
        &install,
        &pod_name,
        "cron.remove",
        serde_json::json!({ "id": job_id }),
    )
    .await?;
    let billed = settled_billing(&install).await;
    assert!(
        billed.input_tokens > before_cron.input_tokens,
        "the cron runs called the model: {billed:?} after {before_cron:?}"
    );
    status_tokens_equal_billing(&install, &agents, &agent_name).await?;
    usage_command_shows_billing(&install, &dm, "usage-after-cron").await?;

    // A personal alert on company data: two one-shot cron jobs query the
    // pipeline runs through the data proxy (the shipped `default` template
    // reads `pipelines*`); the scripted model notifies only when a failed
    // run's error is in the answer. Alice gets one DM, from the job whose
    // condition held, and none from the other.
    for (name, query) in [
        ("failed-runs alert", r#"{"match": {"status": "failed"}}"#),
        (
            "billing alert",
            r#"{"match": {"pipeline": "billing-export"}}"#,
        ),
    ] {
        let message = format!(
            r#"[notify_if=quota] [tool=company_data__search {{"index": "pipelines", "body": {{"query": {query}}}}}]"#
        );
        openclaw_rpc(
            &install,
            &pod_name,
            "cron.add",
            cron_job(name, once_in(1), &message),
        )
        .await?;
    }
    let alerted = |f: &clawswarm_tests::fake_slack::FakeSlack| {
        f.bot_messages()
            .into_iter()
            .filter(|m| {
                m.channel == dm && m.thread_ts.is_none() && m.text.contains("disk quota exceeded")
            })
            .count()
    };
    install
        .fake
        .wait_for(START, |f| (alerted(f) > 0).then_some(()))
        .await
        .with_context(|| {
            format!(
                "the failed-runs alert never reached Alice; agent pod:\n{}",
                install.pod_logs(&pod_name)
            )
        })?;
    // Both jobs have run once the model is quiet; still one alert. (Their
    // model calls are billed: the figure below is what Prometheus must show.)
    let billed = settled_billing(&install).await;
    assert_eq!(alerted(&install.fake), 1, "the alert is delivered once");
    // Each job's answer would quote its tool's result; only one was sent.
    let answers: Vec<String> = install
        .fake
        .bot_messages()
        .into_iter()
        .filter(|m| m.channel == dm && m.thread_ts.is_none() && m.text.contains("_index"))
        .map(|m| m.text)
        .collect();
    assert_eq!(
        answers.len(),
        1,
        "the job whose condition did not hold notified no one: {answers:#?}"
    );
    assert!(!answers[0].contains("billing-export"), "{answers:#?}");
    // Its queries count in Agent.status, per person.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let data = agents
            .get(&agent_name)
            .await?
            .status
            .and_then(|s| s.metered)
            .and_then(|m| m.data)
            .unwrap_or_default();
        if data.queries >= 2 && data.documents >= 1 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "Agent.status.metered.data never counted the alert queries: {data:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And `/agent usage` says so.
    install.fake.socket().send_command(payloads::slash_command(
        ALICE,
        &dm,
        "/agent",
        "usage",
        &install.fake.response_url("usage-after-alert"),
    ))?;
    let said = install
        .fake
        .response_containing(
            "usage-after-alert",
            "Company data:",
            Duration::from_secs(30),
        )
        .await?;
    anyhow::ensure!(
        !said.contains("Company data: 0 queries"),
        "`/agent usage` counts the alert's queries: {said}"
    );

    // Monitoring that matches: the real Prometheus, configured with the
    // shipped PodMonitor, discovers every pod of the namespace (the agent
    // pod and the controller's, as pod discovery presents them), keeps the
    // agent's sidecar only and answers tokens by owner with the stub's bill.
    let pods = Api::<Pod>::namespaced(install.cp.admin(), NAMESPACE)
        .list(&ListParams::default())
        .await?
        .items;
    let prometheus = Prometheus::with_shipped_pod_monitor(&pod_targets(&pods))?;
    let billed_sum = billed.input_tokens
        + billed.output_tokens
        + billed.cache_read_tokens
        + billed.cache_write_tokens;
    let by_owner = prometheus
        .query_until(
            "sum by (owner) (clawswarm_tokens_total)",
            Duration::from_secs(90),
            |r| r.first().and_then(|s| s["value"][1].as_str()) == Some(&billed_sum.to_string()),
        )
        .await?;
    assert_eq!(by_owner.len(), 1, "{by_owner:?}");
    assert_eq!(by_owner[0]["metric"]["owner"], ALICE, "{by_owner:?}");
    let active = prometheus.active_targets().await?;
    assert_eq!(
        active.len(),
        1,
        "only the agent's sidecar is scraped: {active:?}"
    );
    assert_eq!(active[0]["labels"]["pod"], pod_name.as_str(), "{active:?}");
    drop(prometheus);

    // The workload's container holds its own part of the volume only: the
    // sidecar's ledger, outbox and tokens are out of its reach, and so are
    // the sidecar's processes and the provider key.
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
    // Nor the search cluster's key: not in any process it sees, not in
    // any file of its part of the volume.
    let probe = install
        .kubelet
        .exec(
            &pod_name,
            "workload",
            &[
                "/bin/sh",
                "-c",
                &format!(
                    "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -cF '{key}'; \
                     grep -rlF '{key}' /data 2>/dev/null | wc -l",
                    key = clawswarm_tests::search::API_KEY
                ),
            ],
        )
        .await?;
    let out = String::from_utf8_lossy(&probe.stdout).into_owned();
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "0"],
        "the workload never sees the search key: {out}"
    );
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

    // The company skills library on the cluster: an admin adds a skill as
    // a labelled ConfigMap (docs/skills.md), as `kubectl apply` would.
    let skill_md = "---\nname: pipeline-status\ndescription: Report a CI pipeline's latest run.\n---\nSearch the pipelines index and report the newest run.\n";
    let library_entry: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "skill-pipeline-status",
            "labels": {"clawswarm.dev/skill-library": "true", "clawswarm.dev/skill": "pipeline-status"},
        },
        "data": {"SKILL.md": skill_md, "scripts__latest.sh": "echo latest\n"},
    }))?;
    Api::<ConfigMap>::namespaced(install.cp.admin(), NAMESPACE)
        .create(&PostParams::default(), &library_entry)
        .await?;
    // Alice sees it offered, and installs it.
    install.fake.socket().send_command(payloads::slash_command(
        ALICE,
        &dm,
        "/agent",
        "skills",
        &install.fake.response_url("skills"),
    ))?;
    let said = install
        .fake
        .response_containing("skills", "pipeline-status", Duration::from_secs(60))
        .await
        .with_context(|| install.pod_logs(&ctl_name))?;
    anyhow::ensure!(said.contains("library offers"), "{said}");
    install.fake.socket().send_command(payloads::slash_command(
        ALICE,
        &dm,
        "/agent",
        "skills add pipeline-status",
        &install.fake.response_url("skills-add"),
    ))?;
    install
        .fake
        .response_containing(
            "skills-add",
            "Installed `pipeline-status`",
            Duration::from_secs(60),
        )
        .await
        .with_context(|| {
            format!(
                "controller:\n{}\nagent pod:\n{}",
                install.pod_logs(&ctl_name),
                install.pod_logs(&pod_name)
            )
        })?;
    // The workload reads it and cannot change it, and OpenClaw's installer
    // installs nothing from git. (In a pod it stops before the sidecar's
    // policy: it will not stage an install under /tmp, an emptyDir that is
    // group-writable without the sticky bit. The policy's own refusal is
    // proven with the shipped local binary, tests/tests/skills.rs.)
    let probe = install
        .kubelet
        .exec(&pod_name, "workload", &["/bin/sh", "-c", SKILLS_PROBE])
        .await?;
    let out = String::from_utf8_lossy(&probe.stdout).into_owned();
    anyhow::ensure!(out.starts_with("echo latest"), "the skill's files: {out}");
    anyhow::ensure!(out.contains("read-only"), "{out}");
    anyhow::ensure!(
        out.contains("does not install from public registries or git")
            || out.contains("group/world writable without sticky protection"),
        "OpenClaw's installer refused the git source: {out}\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    anyhow::ensure!(!out.contains("INSTALLED"), "nothing was installed: {out}");
    // OpenClaw offers it to the model on the next turn.
    install.fake.socket().send_event(payloads::event_callback(
        "Ev-skills",
        payloads::dm(ALICE, &dm, "1700000300.000001", "how is the nightly run?"),
    ))?;
    let deadline = tokio::time::Instant::now() + REPLY;
    loop {
        let seen = install.stub.requests().iter().any(|r| {
            r.last_user_text.contains("how is the nightly run?")
                && r.input_texts.iter().any(|t| t.contains("pipeline-status"))
        });
        if seen {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no model call saw the library skill\nagent pod:\n{}",
            install.pod_logs(&pod_name)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    install
        .fake
        .wait_for(REPLY, |f| {
            Some(f.thread_text(&dm, Some("1700000300.000001"))).filter(|t| !t.is_empty())
        })
        .await
        .context("the turn after the install was not answered")?;

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

    // Both replicas, one front door: a second replica from the same
    // Deployment is Ready as a standby and opens no Slack connection (the
    // leader holds `CLAWSWARM_SLACK_SOCKET_CONNECTIONS` of them, 2 by default).
    let leader_connections = install.fake.socket().connections();
    let accepted_before = install.fake.socket().accepted_total();
    let standby = install.start_controller("b").await?.name_any();
    install
        .wait_pod_ready(&standby, START)
        .await
        .context("the second replica never became Ready")?;
    let readyz = install
        .wait_http_ok(&standby, "http", "/readyz", START)
        .await?;
    assert!(readyz.contains("standby"), "{readyz}");
    let (_, metrics) = install.http_get(&standby, "http", "/metrics").await?;
    assert!(
        metrics.contains(r#"clawswarm_slack_front_door{state="standby"} 1"#),
        "{metrics}"
    );
    assert_eq!(
        (
            install.fake.socket().connections(),
            install.fake.socket().accepted_total()
        ),
        (leader_connections, accepted_before),
        "the standby opened a Socket Mode connection"
    );

    // The leader dies with SIGKILL (its node is gone) in the middle of a
    // streamed reply: the standby takes the Lease, the sidecar moves to it,
    // and the reply finishes in the same Slack message, whole and once.
    let asked = "1700000200.000001";
    install.fake.socket().send_event(payloads::event_callback(
        "Ev2",
        payloads::dm(ALICE, &dm, asked, "[chunks=30] [delay_ms=400] a long one"),
    ))?;
    let in_thread = |f: &clawswarm_tests::fake_slack::FakeSlack| -> Vec<_> {
        f.bot_messages()
            .into_iter()
            .filter(|m| m.channel == dm && m.thread_ts.as_deref() == Some(asked))
            .collect()
    };
    let partial = install
        .fake
        .wait_for(REPLY, |f| {
            in_thread(f)
                .into_iter()
                .find(|m| m.streaming && m.text.contains("w1 "))
        })
        .await
        .with_context(|| {
            format!(
                "the long reply never streamed: {:?}\n{}",
                in_thread(&install.fake),
                install.pod_logs(&ctl_name)
            )
        })?;
    install.kubelet.crash_pod(&ctl_name)?;
    let expected: String = (0..30).map(|i| format!("w{i} ")).collect();
    let finished = install
        .fake
        .wait_for(REPLY + START, |f| {
            in_thread(f)
                .into_iter()
                .find(|m| !m.streaming && m.text.contains("w29"))
        })
        .await
        .with_context(|| {
            format!(
                "the reply never finished after the leader died: {:?}\nstandby:\n{}\nagent pod:\n{}",
                in_thread(&install.fake),
                install.pod_logs(&standby),
                install.pod_logs(&pod_name)
            )
        })?;
    assert_eq!(finished.ts, partial.ts, "the same message continued");
    assert_eq!(
        finished.text.trim_end(),
        expected.trim_end(),
        "whole, and once"
    );
    assert_eq!(
        in_thread(&install.fake).len(),
        1,
        "one message for one reply"
    );
    let (_, metrics) = install.http_get(&standby, "http", "/metrics").await?;
    assert!(
        metrics.contains(r#"clawswarm_slack_front_door{state="serving"} 1"#),
        "the standby now leads: {metrics}"
    );
    assert!(
        metrics.contains(r#"clawswarm_slack_events_total{kind="resume",result="resumed"} 1"#),
        "{metrics}"
    );
    Ok(())
}

//! Turns through every real binary:
//!
//!   Gateway client → controller → sidecar (OpenClaw workload) → OpenClaw
//!   gateway → sidecar's model proxy (real key, metering) → stub model
//!
//! The shipped product: the controller's built-in OpenClaw profile
//! (`CLAWSWARM_WORKLOAD=openclaw`, what `scripts/run-local.sh` uses) starts
//! both processes from the local runtime's generic per-agent templates
//! (`{port:NAME}`, `{secret:NAME}`, `{run_dir}`). The gateway's bearer token
//! is one `{secret:gateway}` given to the gateway and the sidecar; the model
//! proxy's and notice receiver's ports are `{port:proxy}` and
//! `{port:notices}`.
//!
//! One gateway for the whole file (~20 s cold start, ~1.3 GB), so the
//! checks are steps of one test. Needs `scripts/deps.sh openclaw`
//! (CLAWSWARM_OPENCLAW); without it the test fails saying so.

// Helpers here are test code too.
#![allow(clippy::unwrap_used)]

use std::{path::Path, time::Duration};

use clawswarm_proto::v1 as pb;
use clawswarm_tests::{
    harness::{Controller, ControllerOptions, chat, tail_of as tail, workload_tree},
    openclaw::{openclaw_bin, wait_ready_with_log},
    stub_model::{Api, StubConfig, StubModel, Usage},
};

const REAL_KEY: &str = "sk-ant-real-provider-key-only-the-sidecar-holds";

/// The person's own OpenClaw config, seeded into the agent's volume on
/// first start. Denying exec also keeps OpenClaw from appending an "active
/// exec sessions" block after the person's text, which the stub would
/// read as the last user message.
const PERSON_CONFIG: &str = "{ tools: { deny: ['exec', 'process'] } }";

/// `clawswarm_tokens_total{kind=...}` from the sidecar's /metrics.
async fn sidecar_tokens(run_dir: &Path) -> Usage {
    let ports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("ports.json")).unwrap())
            .unwrap();
    let url = format!("http://{}/metrics", ports["http"].as_str().unwrap());
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let get = |kind: &str| {
        let prefix = format!("clawswarm_tokens_total{{kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap_or_else(|| panic!("no {prefix} in the sidecar's metrics"))
    };
    Usage {
        input_tokens: get("input"),
        output_tokens: get("output"),
        cache_read_tokens: get("cache_read"),
        cache_write_tokens: get("cache_write"),
    }
}

fn ledger_day(data_dir: &Path) -> Usage {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir.join("model-usage.json")).unwrap())
            .unwrap();
    let n = |k: &str| v["day_usage"][k].as_u64().unwrap_or(0);
    Usage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_read_tokens: n("cache_read_tokens"),
        cache_write_tokens: n("cache_write_tokens"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_flow_from_the_controller_through_openclaw_to_the_model() {
    let openclaw = openclaw_bin().unwrap_or_else(|e| panic!("{e}"));
    clawswarm_certs::install_default_crypto_provider();
    let dir = tempfile::tempdir().unwrap();

    // The stub insists on the real key: every call proves the proxy put it there.
    let stub = StubModel::start(StubConfig {
        api_key: Some(REAL_KEY.into()),
        ..StubConfig::default()
    })
    .await
    .unwrap();
    let key_file = dir.path().join("model-key");
    std::fs::write(&key_file, REAL_KEY).unwrap();
    let seed = dir.path().join("person-openclaw.json");
    std::fs::write(&seed, PERSON_CONFIG).unwrap();

    // The controller's built-in OpenClaw profile, configured as a user
    // would: the CLI, a seed config, the provider's URL and key file.
    let mut opts = ControllerOptions::with_agents(&["alice"]);
    opts.no_workload = true;
    opts.env = vec![
        ("CLAWSWARM_WORKLOAD".into(), "openclaw".into()),
        (
            "CLAWSWARM_OPENCLAW_BIN".into(),
            openclaw.display().to_string(),
        ),
        (
            "CLAWSWARM_OPENCLAW_SEED_CONFIG".into(),
            seed.display().to_string(),
        ),
        // Provider settings reach the sidecar only (workloads start clean).
        ("CLAWSWARM_MODEL_UPSTREAM_URL".into(), stub.base_url()),
        (
            "CLAWSWARM_MODEL_API_KEY_FILE".into(),
            key_file.display().to_string(),
        ),
    ];
    let c = Controller::start(opts).await.unwrap();
    let agent = c.agent_dir("alice");
    let (run_dir, data_dir) = (agent.join("run"), agent.join("data"));
    let workload_log = || std::fs::read_to_string(run_dir.join("workload.log")).unwrap_or_default();
    wait_ready_with_log(&c, "alice").await;

    // The key is in no OpenClaw process's environment, nor its config; the
    // gateway token is, as generated for this agent.
    let pids = workload_tree(&run_dir);
    let secret = std::fs::read_to_string(run_dir.join("values/secret.gateway")).unwrap();
    let mut saw_token = false;
    for pid in &pids {
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            let env = String::from_utf8_lossy(&env);
            assert!(
                !env.contains(REAL_KEY),
                "key in the environment of pid {pid}"
            );
            assert!(
                !env.contains("CLAWSWARM_MODEL_API_KEY_FILE"),
                "controller settings leaked into pid {pid}"
            );
            saw_token |= env.contains(&format!("OPENCLAW_GATEWAY_TOKEN={}", secret.trim()));
        }
    }
    assert!(
        saw_token,
        "no gateway environment with the agent's token among {pids:?}"
    );
    let config = std::fs::read_to_string(data_dir.join("openclaw/openclaw.json")).unwrap();
    assert!(
        !config.contains(REAL_KEY),
        "the provider key is not in OpenClaw's config"
    );
    assert!(
        config.contains("gateway"),
        "init applied the baseline: {config}"
    );

    // A streamed reply from the stub, via OpenClaw.
    let mut gw = c.gateway().await.unwrap();
    let reply = chat(&mut gw, "alice", "dm-1", "[chunks=3] hello from turn one")
        .await
        .unwrap_or_else(|e| panic!("{e}\nworkload log:\n{}", tail(&workload_log())));
    assert_eq!(
        reply.outcome(),
        Some(pb::Outcome::Ok),
        "{reply:?}\nworkload log:\n{}\nsidecar log:\n{}",
        tail(&workload_log()),
        tail(&c.sidecar_log("alice"))
    );
    assert_eq!(reply.text().trim(), "w0 w1 w2", "{reply:?}");
    assert!(!reply.chunks.is_empty());

    // The same conversation again: the model call carries the first turn.
    let reply = chat(&mut gw, "alice", "dm-1", "[chunks=2] and a second one")
        .await
        .unwrap();
    assert_eq!(reply.outcome(), Some(pb::Outcome::Ok), "{reply:?}");
    assert_eq!(reply.text().trim(), "w0 w1", "{reply:?}");
    let calls = stub.requests();
    let last = calls
        .iter()
        .rev()
        .find(|r| r.last_user_text.contains("and a second one"))
        .unwrap_or_else(|| panic!("no model call for the second turn: {calls:?}"));
    assert!(
        last.input_texts.join("\n").contains("hello from turn one"),
        "second call lacks the first turn"
    );
    assert!(calls.iter().all(|r| r.api == Api::Anthropic));

    // The sidecar metered exactly what the provider billed.
    let billed = stub.total_usage();
    assert!(
        billed.input_tokens > 0 && billed.output_tokens > 0,
        "{billed:?}"
    );
    assert_eq!(sidecar_tokens(&run_dir).await, billed, "token metrics");
    assert_eq!(ledger_day(&c.sidecar_dir("alice")), billed, "usage ledger");
    // And the controller's totals are the metered ones: every kind, every call.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let recorded = loop {
        let report = gw
            .get_usage(pb::GetUsageRequest {
                name: "alice".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let u = report.by_agent.get("alice").copied().unwrap_or_default();
        let u = Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_write_tokens: u.cache_write_tokens,
        };
        if u == billed || tokio::time::Instant::now() >= deadline {
            break u;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(recorded, billed, "the controller's GetUsage");

    // Bad input, a key the provider rejects: the sidecar reads its key at
    // start, so it is restarted with a revoked one (OpenClaw stays up).
    // The person reads why in the chat; `agents list` says it too.
    std::fs::write(&key_file, "sk-ant-revoked-key").unwrap();
    let old = c.sidecar_pid("alice").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    clawswarm_tests::harness::wait_for("a new sidecar", Duration::from_secs(60), || {
        c.sidecar_pid("alice").is_some_and(|p| p != old)
    })
    .await
    .unwrap();
    c.wait_ready("alice", Duration::from_secs(120))
        .await
        .unwrap();
    let mut gw = c.gateway().await.unwrap();
    let reply = chat(&mut gw, "alice", "dm-2", "[chunks=2] are you there?")
        .await
        .unwrap();
    assert!(
        reply
            .text()
            .contains("the model provider rejected the key (HTTP 401"),
        "{reply:?}\nsidecar log:\n{}",
        tail(&c.sidecar_log("alice"))
    );
    let listed = c
        .wait_listed_detail("alice", "rejected the key", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        listed.workload_ready,
        "the gateway itself is up: {listed:?}"
    );

    // A model server that is down: named, with its address.
    let url = stub.base_url();
    stub.shutdown().await;
    let reply = chat(&mut gw, "alice", "dm-3", "[chunks=2] anyone?")
        .await
        .unwrap();
    assert!(
        reply
            .text()
            .contains(&format!("the model server at {url} cannot be reached")),
        "{reply:?}"
    );
    c.wait_listed_detail("alice", "cannot be reached", Duration::from_secs(30))
        .await
        .unwrap();
}

/// A new user with no model key: the controller and agents start (no
/// OpenClaw is launched to burn memory for nothing), and the first turn
/// says which variable to set instead of pretending to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_key_every_turn_says_which_variable_to_set() {
    clawswarm_certs::install_default_crypto_provider();
    let mut opts = ControllerOptions::with_agents(&["newcomer"]);
    opts.no_workload = true;
    opts.env = vec![("CLAWSWARM_WORKLOAD".into(), "openclaw".into())];
    let c = Controller::start(opts).await.unwrap();
    c.wait_connected("newcomer", Duration::from_secs(60))
        .await
        .unwrap();

    let mut gw = c.gateway().await.unwrap();
    let reply = chat(&mut gw, "newcomer", "dm-1", "hello?").await.unwrap();
    let end = reply.end.clone().unwrap();
    assert_ne!(end.outcome(), pb::Outcome::Ok, "{reply:?}");
    assert!(
        reply.text().is_empty(),
        "nothing pretends to answer: {reply:?}"
    );
    for named in [
        "CLAWSWARM_MODEL_API_KEY",
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
    ] {
        assert!(end.error.contains(named), "{named} not in {:?}", end.error);
    }
    assert!(
        !c.agent_dir("newcomer").join("run/workload.pid").exists(),
        "no workload was started"
    );
}

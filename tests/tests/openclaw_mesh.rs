//! Turns through every real binary:
//!
//!   Gateway client → controller → sidecar (OpenClaw workload) → OpenClaw
//!   gateway → sidecar's model proxy (real key, metering) → stub model
//!
//! The controller's local runtime starts both processes from generic
//! per-agent templates (`{port:NAME}`, `{secret:NAME}`, `{run_dir}`); it
//! knows nothing of OpenClaw. The gateway's bearer token is one
//! `{secret:gateway}` given to the gateway and the sidecar; the model
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
    harness::{Controller, ControllerOptions, binaries, chat},
    openclaw::openclaw_bin,
    stub_model::{Api, StubConfig, StubModel, Usage},
};

const REAL_KEY: &str = "sk-ant-real-provider-key-only-the-sidecar-holds";

/// The person's own OpenClaw config, seeded into the agent's volume on
/// first start. Denying exec also keeps OpenClaw from appending an "active
/// exec sessions" block after the person's text, which the stub would
/// read as the last user message.
const PERSON_CONFIG: &str = "{ tools: { deny: ['exec', 'process'] } }";

/// The workload command: seed the person's config, let the sidecar's
/// `init` apply the baseline, then become the gateway.
fn workload_command(sidecar: &Path, openclaw: &Path, seed: &Path) -> String {
    let (sidecar, openclaw, seed) = (sidecar.display(), openclaw.display(), seed.display());
    format!(
        "sh -c 'mkdir -p {{data_dir}}/openclaw/state {{data_dir}}/home {{data_dir}}/tmp && \
         {{ test -f {{data_dir}}/openclaw/openclaw.json || cp {seed} {{data_dir}}/openclaw/openclaw.json; }} && \
         {sidecar} init --openclaw-config {{data_dir}}/openclaw/openclaw.json --openclaw-port {{port}} \
         --model-proxy-url http://127.0.0.1:{{port:proxy}} \
         --cron-webhook-token-file {{run_dir}}/cron-webhook-token \
         --model-proxy-token-file {{run_dir}}/model-proxy-token --openclaw-bin {openclaw} && \
         exec {openclaw} gateway run --port {{port}}'"
    )
}

/// What only the gateway process gets.
const WORKLOAD_ENV: &str = "OPENCLAW_CONFIG_PATH={data_dir}/openclaw/openclaw.json;\
    OPENCLAW_STATE_DIR={data_dir}/openclaw/state;\
    OPENCLAW_GATEWAY_TOKEN={secret:gateway};\
    HOME={data_dir}/home;TMPDIR={data_dir}/tmp;\
    OPENCLAW_DISABLE_BONJOUR=1;OPENCLAW_SKIP_CHANNELS=1;OPENCLAW_NO_RESPAWN=1;\
    OPENCLAW_NO_AUTO_UPDATE=1;OPENCLAW_OFFLINE=1";

/// What each sidecar gets on top of the controller's environment.
const SIDECAR_ENV: &str = "CLAWSWARM_OPENCLAW_URL=http://127.0.0.1:{port};\
    CLAWSWARM_OPENCLAW_TOKEN={secret:gateway};\
    CLAWSWARM_MODEL_PROXY_LISTEN=127.0.0.1:{port:proxy};\
    CLAWSWARM_NOTICES_LISTEN=127.0.0.1:{port:notices};\
    CLAWSWARM_CRON_WEBHOOK_TOKEN_FILE={run_dir}/cron-webhook-token;\
    CLAWSWARM_MODEL_PROXY_TOKEN_FILE={run_dir}/model-proxy-token;\
    CLAWSWARM_MODEL_USAGE_FILE={data_dir}/model-usage.json;\
    CLAWSWARM_NOTICES_STATE_FILE={data_dir}/notices.json";

/// The gateway process and its descendants, from the run dir's pid file.
fn workload_tree(run_dir: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(run_dir.join("workload.pid")).unwrap();
    let mut pids: Vec<u32> = vec![text.split_whitespace().next().unwrap().parse().unwrap()];
    let mut i = 0;
    while i < pids.len() {
        let p = pids[i];
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    pids
}

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
    let bins = binaries().unwrap();
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

    let mut opts = ControllerOptions::with_agents(&["alice"]);
    opts.workload_command = Some(workload_command(&bins.sidecar, &openclaw, &seed));
    opts.env = vec![
        ("CLAWSWARM_WORKLOAD".into(), "openclaw".into()),
        ("CLAWSWARM_LOCAL_WORKLOAD_ENV".into(), WORKLOAD_ENV.into()),
        ("CLAWSWARM_LOCAL_SIDECAR_ENV".into(), SIDECAR_ENV.into()),
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
    if let Err(e) = c.wait_ready("alice", Duration::from_secs(240)).await {
        panic!("{e}\nworkload log:\n{}", tail(&workload_log()));
    }

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
        "{reply:?}\nsidecar log:\n{}",
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
    assert_eq!(ledger_day(&data_dir), billed, "usage ledger");
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

    stub.shutdown().await;
}

fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(6000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

//! The real OpenClaw gateway (pinned 2026.9.6 on Node 24) between the
//! sidecar's OpenClaw workload and the stub model, with the sidecar's model
//! proxy in front of the stub:
//!
//!   OpenClawWorkload → OpenClaw → model proxy (real key, metering, budget) → stub model
//!
//! One gateway for the whole file (~20 s to start, ~1.3 GB), so the checks
//! run as steps of one test: the baseline re-applied and validated, the key
//! absent from OpenClaw's config and environment, streamed text, session
//! continuity, metering equal to the stub's billing, a cron job's output
//! arriving as a notice, a used-up budget, the provider down. Needs `scripts/deps.sh openclaw`
//! (CLAWSWARM_OPENCLAW); without it the test fails saying so.
//! The controller → sidecar leg is covered by the lead's end-to-end tier.

// Helpers here are test code too (clippy's allow-unwrap-in-tests only
// covers #[test] bodies).
#![allow(clippy::unwrap_used)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clawswarm_sidecar::{
    metrics::{ModelCallLabels, SidecarMetrics},
    model_proxy::{BudgetReply, ModelProxy, ModelProxyArgs, ProviderApi, ledger::Budgets},
    workload::{
        TurnRequest, Usage, Workload, WorkloadEvent,
        openclaw::{
            OpenClawArgs, OpenClawWorkload,
            config::{InitArgs, init},
            notices::{AdminRpc, Notices, NoticesArgs},
        },
    },
};
use clawswarm_tests::{
    openclaw::{Gateway, free_port, openclaw_bin},
    stub_model::{Api, FailMode, StubConfig, StubModel},
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

const REAL_KEY: &str = "sk-ant-real-provider-key-only-the-sidecar-holds";
const GATEWAY_TOKEN: &str = "gateway-token-for-the-test";

async fn turn(
    w: &OpenClawWorkload,
    conversation: &str,
    text: &str,
) -> Result<(String, Usage), String> {
    let req = TurnRequest {
        turn_id: format!("t-{text}"),
        conversation: conversation.into(),
        text: text.into(),
    };
    let mut stream = w.start_turn(req);
    let mut out = String::new();
    let deadline = Duration::from_secs(240);
    loop {
        match tokio::time::timeout(deadline, stream.next()).await {
            Err(_) => return Err("no reply within 240 s".into()),
            Ok(None) => return Err("stream ended without Done".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(WorkloadEvent::Delta(d)))) => out.push_str(&d),
            Ok(Some(Ok(WorkloadEvent::Done(u)))) => return Ok((out, u)),
        }
    }
}

fn stub_usage_equals_ledger(stub: &StubModel, proxy: &ModelProxy) {
    let billed = stub.total_usage();
    let (day, _) = proxy.ledger().totals(time::OffsetDateTime::now_utc());
    assert_eq!(
        (
            day.input_tokens,
            day.output_tokens,
            day.cache_read_tokens,
            day.cache_write_tokens
        ),
        (
            billed.input_tokens,
            billed.output_tokens,
            billed.cache_read_tokens,
            billed.cache_write_tokens
        ),
        "the sidecar's metering must equal what the stub billed, call for call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_between_the_sidecar_and_the_stub_model() {
    let bin = openclaw_bin().unwrap_or_else(|e| panic!("{e}"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sidecar_dir = dir.path().join("sidecar");
    std::fs::create_dir_all(&sidecar_dir).unwrap();

    // The stub insists on the real key, so every call proves the proxy put it there.
    let stub = StubModel::start(StubConfig {
        api_key: Some(REAL_KEY.into()),
        // Set to keep the stub's JSONL call log for a failing run.
        log_path: std::env::var_os("CLAWSWARM_OPENCLAW_STUB_LOG").map(Into::into),
        ..StubConfig::default()
    })
    .await
    .unwrap();
    let key_file = sidecar_dir.join("model-key");
    std::fs::write(&key_file, REAL_KEY).unwrap();
    let proxy_port = free_port().unwrap();
    let proxy_args = ModelProxyArgs {
        listen: format!("127.0.0.1:{proxy_port}").parse().unwrap(),
        upstream_url: stub.base_url(),
        api_key_file: Some(key_file),
        api_key: None,
        daily_token_budget: 0,
        monthly_token_budget: 0,
        budget_reply: BudgetReply::Message,
        failure_reply: BudgetReply::Message,
        usage_file: sidecar_dir.join("model-usage.json"),
        token_file: sidecar_dir.join("model-proxy-token"),
        read_timeout_secs: 120,
        connect_timeout_secs: 5,
    };
    let metrics = SidecarMetrics::new();
    let proxy = ModelProxy::new(&proxy_args, metrics.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind(proxy_args.listen)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(Arc::clone(&proxy).serve(listener, stop.clone().cancelled_owned()));

    // The person's config already enables elevated tools and drops the denials.
    let config = dir.path().join("openclaw").join("openclaw.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    // Their own denial of exec also keeps OpenClaw from appending an
    // "active exec sessions" context block after the person's text, which
    // the stub would otherwise read as the last user message.
    std::fs::write(
        &config,
        "{ tools: { elevated: { enabled: true }, deny: ['exec', 'process'] }, skills: { entries: { weather: { enabled: true } } } }",
    )
    .unwrap();
    let port = free_port().unwrap();
    let report = init(&InitArgs {
        config_path: config.clone(),
        gateway_port: port,
        primary_model: "anthropic/claude-sonnet-4-20250514".into(),
        provider_api: ProviderApi::Anthropic,
        model_proxy_url: format!("http://127.0.0.1:{proxy_port}"),
        utility_model: None,
        webhook_token_file: sidecar_dir.join("cron-webhook-token"),
        // The proxy made it; init writes the same credential into the config.
        model_proxy_token_file: sidecar_dir.join("model-proxy-token"),
        data_proxy_url: "http://127.0.0.1:18792".into(),
        data_proxy_token_file: sidecar_dir.join("data-proxy-token"),
        seed_config: sidecar_dir.join("no-seed.json"),
        openclaw_bin: Some(bin),
        skills_dir: sidecar_dir.join("skills"),
        install_policy_command: Some(
            clawswarm_tests::harness::binaries()
                .unwrap()
                .sidecar
                .clone(),
        ),
    })
    .unwrap();
    assert!(report.validated, "checked by the pinned openclaw");
    assert!(
        report
            .overridden
            .iter()
            .any(|p| p == "tools.elevated.enabled"),
        "{:?}",
        report.overridden
    );
    let written = std::fs::read_to_string(&config).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&written).unwrap();
    assert_eq!(cfg["tools"]["elevated"]["enabled"], false);
    assert_eq!(
        cfg["tools"]["deny"],
        serde_json::json!(["exec", "process", "gateway", "sessions_spawn"])
    );
    assert_eq!(
        cfg["skills"]["entries"]["weather"]["enabled"], true,
        "the person's skill stays"
    );
    assert!(
        !written.contains(REAL_KEY),
        "the provider key is not in OpenClaw's config"
    );

    let mut gateway = Gateway::start(
        &config,
        &dir.path().join("openclaw/state"),
        &dir.path().join("home"),
        port,
        GATEWAY_TOKEN,
    )
    .unwrap();
    let workload = OpenClawWorkload::new(&OpenClawArgs {
        url: gateway.base_url.clone(),
        token: Some(GATEWAY_TOKEN.into()),
        ..OpenClawArgs::default()
    })
    .unwrap();
    let started = Instant::now();
    loop {
        let r = workload.check_ready().await;
        if r.ready {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "gateway not ready: {r:?}\n{}",
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("openclaw ready after {:?}", started.elapsed());

    // The key is in no process of OpenClaw's (environment), nor its state.
    let pids = gateway.process_tree();
    let mut read_any = false;
    for pid in &pids {
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            read_any |= String::from_utf8_lossy(&env).contains("OPENCLAW_CONFIG_PATH");
            assert!(
                !String::from_utf8_lossy(&env).contains(REAL_KEY),
                "key in the environment of pid {pid}"
            );
        }
    }
    assert!(read_any, "could read no gateway environment among {pids:?}");

    // Streamed text through the whole chain.
    let (text, usage) = turn(&workload, "D1/first", "[chunks=3] hello from turn one")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gateway.log_tail()));
    // The stub's `[chunks=N]` reply: an echo would repeat OpenClaw's internal
    // context block, which OpenClaw strips from its output and then refuses
    // as "not append-only".
    assert_eq!(text.trim(), "w0 w1 w2", "reply: {text:?}");
    assert!(
        usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens > 0,
        "{usage:?}"
    );

    // Session continuity: the second call of the conversation carries the first turn.
    let (text, _) = turn(&workload, "D1/first", "[chunks=2] and a second one")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gateway.log_tail()));
    assert_eq!(text.trim(), "w0 w1", "reply: {text:?}");
    let calls = stub.requests();
    let last = calls
        .iter()
        .rev()
        .find(|c| c.api == Api::Anthropic)
        .expect("an Anthropic call");
    let history = last.input_texts.join("\n");
    assert!(
        history.contains("hello from turn one"),
        "second call lacks the first turn"
    );

    // Every model call OpenClaw made was metered from the provider's figures.
    assert!(
        calls.iter().all(|c| c.api == Api::Anthropic),
        "all calls went through the proxy's Anthropic route"
    );
    stub_usage_equals_ledger(&stub, &proxy);
    let ok_calls = metrics
        .model_calls
        .get_or_create(&ModelCallLabels {
            api: "anthropic",
            result: "ok",
        })
        .get();
    assert_eq!(ok_calls, calls.len() as u64);

    // Proactive notices: a job the agent set up (here added over the admin
    // RPC as "announce", like a chat-created one) is routed to the sidecar's
    // webhook by the sweep, and its run arrives as a notice.
    let gateway_args = OpenClawArgs {
        url: gateway.base_url.clone(),
        token: Some(GATEWAY_TOKEN.into()),
        ..OpenClawArgs::default()
    };
    let notices_args = NoticesArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        state_file: sidecar_dir.join("notices.json"),
        webhook_token_file: sidecar_dir.join("cron-webhook-token"),
        reconcile_secs: 2,
    };
    let (notices, mut notice_stream) =
        Notices::start(&notices_args, &gateway_args, metrics.clone(), stop.clone())
            .await
            .unwrap();
    let rpc = AdminRpc::new(&gateway_args).unwrap();
    let added = rpc
        .call(
            "cron.add",
            serde_json::json!({
                "name": "e2e reminder",
                "schedule": {"kind": "every", "everyMs": 5000},
                "sessionTarget": "isolated",
                "wakeMode": "now",
                "payload": {"kind": "agentTurn", "message": "[chunks=2] remind me"},
                "delivery": {"mode": "announce"},
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gateway.log_tail()));
    let job_id = added
        .pointer("/job/id")
        .or_else(|| added.get("id"))
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no job id in {added}"))
        .to_owned();
    let notice = tokio::time::timeout(Duration::from_secs(120), notice_stream.next())
        .await
        .unwrap_or_else(|_| panic!("no notice within 120 s\n{}", gateway.log_tail()))
        .unwrap();
    eprintln!("notice: {notice:?}");
    assert!(
        notice.notice_id.starts_with(&format!("cron-{job_id}-")),
        "{notice:?}"
    );
    assert_eq!(notice.text.trim(), "w0 w1");
    let listed = rpc
        .call("cron.list", serde_json::json!({"includeDisabled": true}))
        .await
        .unwrap();
    let job = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == job_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        job["delivery"]["mode"], "webhook",
        "routed by the sweep: {job}"
    );
    assert_eq!(
        job["delivery"]["to"],
        format!("http://{}/openclaw/cron", notices.webhook_addr).as_str()
    );
    rpc.call("cron.remove", serde_json::json!({"id": job_id}))
        .await
        .unwrap();

    // A budget that is used up: the person reads why, the provider sees nothing.
    let (today, _) = proxy.ledger().totals(time::OffsetDateTime::now_utc());
    proxy.set_budgets(Budgets {
        daily_tokens: today.total(),
        monthly_tokens: 0,
    });
    let before = stub.requests().len();
    let outcome = turn(&workload, "D1/first", "[chunks=2] a third one").await;
    eprintln!("budget exhausted outcome: {outcome:?}");
    let shown = match &outcome {
        Ok((text, _)) => text.clone(),
        Err(e) => e.clone(),
    };
    assert!(
        shown.contains("daily token budget of"),
        "what OpenClaw showed: {shown:?}"
    );
    assert_eq!(
        stub.requests().len(),
        before,
        "no call reached the provider"
    );
    proxy.set_budgets(Budgets::default());

    // The provider down: OpenClaw retries, then the turn fails with an error
    // (not a hang) and nothing is billed.
    stub.fail_next(FailMode::Down, 1000);
    let outcome = turn(&workload, "D2/other", "[chunks=2] anyone there").await;
    eprintln!("provider down outcome: {outcome:?}");
    assert!(
        outcome.is_err() || outcome.as_ref().is_ok_and(|(t, _)| t.trim() != "w0 w1"),
        "{outcome:?}"
    );
    let unreachable = metrics
        .model_calls
        .get_or_create(&ModelCallLabels {
            api: "anthropic",
            result: "unreachable",
        })
        .get();
    assert!(unreachable > 0, "the proxy saw the provider down");
    stub.fail_next(FailMode::None, 0);
    stub_usage_equals_ledger(&stub, &proxy);

    gateway.stop();
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    tokio::time::timeout(Duration::from_secs(10), notices.join())
        .await
        .expect("notices stop");
    stub.shutdown().await;
}

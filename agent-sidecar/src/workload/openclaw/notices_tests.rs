// Tests may unwrap (house rule); the workspace lint is for input handling.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use axum::{Json, routing::post};
use futures::StreamExt;

use super::*;

const URL: &str = "http://127.0.0.1:18791/openclaw/cron";

fn heartbeat_job() -> Value {
    // As listed by a fresh openclaw 2026.9.6.
    json!({"id": "sys-1", "declarationKey": "heartbeat:main", "name": "heartbeat-main", "sessionTarget": "main", "payload": {"kind": "heartbeat"}})
}

fn chat_job(id: &str) -> Value {
    json!({"id": id, "name": "morning anomalies", "sessionTarget": "current", "delivery": {"mode": "announce"},
           "owner": {"sessionKey": "agent:main:clawswarm-d1-0011"}, "payload": {"kind": "agentTurn", "message": "check"}})
}

#[test]
fn system_jobs_are_recognised_by_their_declaration_key() {
    assert!(is_system_job(&heartbeat_job()));
    assert!(is_system_job(
        &json!({"declarationKey": "memory-core:memory-dreaming-promotion"})
    ));
    assert!(is_system_job(
        &json!({"declarationKey": "skill-collection-review:main"})
    ));
    assert!(!is_system_job(&chat_job("j1")));
}

#[test]
fn routing_patches_follow_the_measured_delivery_rules() {
    assert_eq!(
        routing_patch(&chat_job("j1"), URL),
        Some(json!({"delivery": {"completionDestination": {"mode": "webhook", "to": URL}}}))
    );
    let mut routed = chat_job("j1");
    routed["delivery"]["completionDestination"] = json!({"mode": "webhook", "to": URL});
    assert_eq!(routing_patch(&routed, URL), None, "already routed");
    let isolated =
        json!({"id": "j2", "sessionTarget": "isolated", "delivery": {"mode": "announce"}});
    assert_eq!(
        routing_patch(&isolated, URL),
        Some(json!({"delivery": {"mode": "webhook", "to": URL}}))
    );
    let public = json!({"id": "j3", "sessionTarget": "isolated", "delivery": {"mode": "webhook", "to": "https://evil.example/x"}});
    assert_eq!(
        routing_patch(&public, URL),
        Some(json!({"delivery": {"mode": "webhook", "to": URL}}))
    );
    let silent = json!({"id": "j4", "sessionTarget": "isolated", "delivery": {"mode": "none"}});
    assert_eq!(routing_patch(&silent, URL), None);
    assert_eq!(routing_patch(&heartbeat_job(), URL), None);
}

#[test]
fn only_successful_runs_with_a_real_answer_are_forwardable() {
    let run = |status: Option<&str>, summary: Option<&str>| CronRun {
        job_id: "j".into(),
        run_at_ms: Some(1),
        status: status.map(Into::into),
        summary: summary.map(Into::into),
        ..CronRun::default()
    };
    assert_eq!(
        run(Some("ok"), Some(" all quiet ")).forwardable_text(),
        Some("all quiet")
    );
    assert_eq!(run(None, Some("hi")).forwardable_text(), Some("hi"));
    assert_eq!(run(Some("ok"), Some("NO_REPLY")).forwardable_text(), None);
    assert_eq!(run(Some("error"), None).forwardable_text(), None);
    assert_eq!(run(Some("ok"), None).forwardable_text(), None);
}

#[test]
fn a_run_whose_only_failure_was_openclaws_delivery_is_forwarded() {
    // As cron.runs reports a one-shot job that ran before it was routed
    // here (measured on 2026.9.6).
    let entry = json!({
        "jobId": "alert", "runAtMs": 5, "status": "error",
        "deliveryStatus": "not-delivered",
        "error": "Channel is required (no configured channels detected).",
        "deliveryError": "Channel is required (no configured channels detected).",
        "summary": "pipeline etl-nightly failed: disk quota exceeded",
    });
    let run: CronRun = serde_json::from_value(entry.clone()).unwrap();
    assert_eq!(
        run.forwardable_text(),
        Some("pipeline etl-nightly failed: disk quota exceeded")
    );
    // A run that itself failed stays unforwarded, delivered or not.
    let mut failed = entry;
    failed["error"] = json!("model unreachable");
    let run: CronRun = serde_json::from_value(failed).unwrap();
    assert_eq!(run.forwardable_text(), None);
}

/// A fake OpenClaw admin RPC: fixed jobs and run history, records updates.
#[derive(Default)]
struct FakeRpc {
    jobs: Vec<Value>,
    runs: Vec<Value>,
    updates: Mutex<Vec<Value>>,
}

async fn rpc(
    State(f): State<Arc<FakeRpc>>,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> Json<Value> {
    assert_eq!(headers["authorization"], "Bearer gw-token");
    let payload = match req["method"].as_str().unwrap() {
        "cron.list" => json!({"jobs": f.jobs, "total": f.jobs.len(), "hasMore": false}),
        "cron.runs" => {
            assert_eq!(req["params"]["scope"], "all");
            json!({"entries": f.runs, "total": f.runs.len(), "hasMore": false, "nextOffset": null})
        }
        "cron.update" => {
            f.updates.lock().unwrap().push(req["params"].clone());
            json!({})
        }
        other => panic!("unexpected method {other}"),
    };
    Json(json!({"id": "x", "ok": true, "payload": payload}))
}

async fn fake_gateway(fake: Arc<FakeRpc>) -> OpenClawArgs {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/api/v1/admin/rpc", post(rpc))
        .with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    OpenClawArgs {
        url: format!("http://{addr}"),
        token: Some("gw-token".into()),
        ..OpenClawArgs::default()
    }
}

fn history(later: u64) -> Vec<Value> {
    vec![
        json!({"ts": later, "jobId": "sys-1", "action": "finished", "status": "ok", "summary": "HEARTBEAT_OK", "runAtMs": later}),
        json!({"ts": later, "jobId": "chat-1", "action": "finished", "status": "ok", "summary": "No anomalies yesterday.", "runAtMs": later}),
        json!({"ts": later, "jobId": "chat-1", "action": "finished", "status": "ok", "summary": "NO_REPLY", "runAtMs": later + 1}),
        json!({"ts": later, "jobId": "chat-1", "action": "finished", "status": "error", "error": "model down", "runAtMs": later + 2}),
        json!({"ts": later, "jobId": "iso-1", "action": "finished", "status": "ok", "summary": "Disk at 91%.", "runAtMs": later + 3}),
        // Before this sidecar's state existed: never replayed.
        json!({"ts": 1, "jobId": "chat-1", "action": "finished", "status": "ok", "summary": "ancient", "runAtMs": 1}),
    ]
}

async fn next_notice(stream: &mut BoxStream<'static, WorkloadNotice>) -> WorkloadNotice {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a notice")
        .expect("stream open")
}

#[tokio::test]
async fn webhook_and_history_each_forward_a_run_once_and_jobs_get_routed() {
    let dir = tempfile::tempdir().unwrap();
    let later = now_ms() + 60_000;
    let fake = Arc::new(FakeRpc {
        jobs: vec![
            heartbeat_job(),
            chat_job("chat-1"),
            json!({"id": "iso-1", "sessionTarget": "isolated", "delivery": {"mode": "announce"}}),
        ],
        runs: history(later),
        ..FakeRpc::default()
    });
    let gateway = fake_gateway(fake.clone()).await;
    std::fs::write(dir.path().join("token"), "hook-token\n").unwrap();
    let args = NoticesArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        state_file: dir.path().join("notices.json"),
        webhook_token_file: dir.path().join("token"),
        reconcile_secs: 3600,
    };
    let metrics = SidecarMetrics::new();
    let shutdown = CancellationToken::new();
    let (notices, mut stream) = Notices::start(&args, &gateway, metrics.clone(), shutdown.clone())
        .await
        .unwrap();
    let hook = format!("http://{}{WEBHOOK_PATH}", notices.webhook_addr);
    let client = reqwest::Client::new();

    // OpenClaw posts the chat job's run too: it must not arrive twice.
    let body = json!({"jobId": "chat-1", "status": "ok", "summary": "No anomalies yesterday.", "runAtMs": later, "job": chat_job("chat-1")});
    let wrong = client
        .post(&hook)
        .bearer_auth("nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let ok = client
        .post(&hook)
        .bearer_auth("hook-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::ACCEPTED);
    let system = json!({"jobId": "sys-1", "status": "ok", "summary": "HEARTBEAT_OK", "runAtMs": later + 9, "job": heartbeat_job()});
    client
        .post(&hook)
        .bearer_auth("hook-token")
        .json(&system)
        .send()
        .await
        .unwrap();

    let mut got = [
        next_notice(&mut stream).await,
        next_notice(&mut stream).await,
    ];
    got.sort_by(|a, b| a.notice_id.cmp(&b.notice_id));
    assert_eq!(got[0].notice_id, format!("cron-chat-1-{later}"));
    assert_eq!(got[0].text, "No anomalies yesterday.");
    assert_eq!(got[1].notice_id, format!("cron-iso-1-{}", later + 3));
    assert_eq!(got[1].text, "Disk at 91%.");

    // A new run after both: proves nothing else (duplicates, NO_REPLY,
    // failures, system or ancient runs) was queued before it.
    let fresh = json!({"jobId": "chat-1", "status": "ok", "summary": "Reminder: standup.", "runAtMs": later + 10});
    client
        .post(&hook)
        .bearer_auth("hook-token")
        .json(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(next_notice(&mut stream).await.text, "Reminder: standup.");

    let updates = fake.updates.lock().unwrap().clone();
    assert_eq!(updates.len(), 2, "{updates:?}");
    assert!(updates.iter().any(|u| u["id"] == "chat-1"
        && u["patch"]["delivery"]["completionDestination"]["mode"] == "webhook"));
    assert!(
        updates
            .iter()
            .any(|u| u["id"] == "iso-1" && u["patch"]["delivery"]["mode"] == "webhook")
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), notices.join())
        .await
        .unwrap();
    let m = metrics.encode();
    assert!(
        m.contains("clawswarm_notices_total{result=\"forwarded\"} 3"),
        "{m}"
    );
}

#[tokio::test]
async fn a_restarted_sidecar_does_not_forward_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("notices.json");
    let later = now_ms() + 60_000;
    let fake = Arc::new(FakeRpc {
        jobs: vec![heartbeat_job(), chat_job("chat-1")],
        runs: history(later),
        ..FakeRpc::default()
    });
    let rpc = AdminRpc::new(&fake_gateway(fake).await).unwrap();

    // Two lives of the processor over the same state file, each fed the
    // whole history by reconciliation and then a sentinel run.
    for (life, expect_history) in [(1, true), (2, false)] {
        let (runs_tx, runs_rx) = mpsc::channel(64);
        let (out_tx, mut out_rx) = mpsc::channel(64);
        let seen = SeenStore::open(state.clone(), now_ms()).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(process(
            runs_rx,
            out_tx,
            seen,
            SidecarMetrics::new(),
            stop.clone(),
        ));
        reconcile_once(&rpc, URL, &runs_tx).await.unwrap();
        let sentinel = later + 100 + life;
        runs_tx
            .send(CronRun {
                job_id: "chat-1".into(),
                run_at_ms: Some(sentinel),
                summary: Some("sentinel".into()),
                ..CronRun::default()
            })
            .await
            .unwrap();
        let mut texts = Vec::new();
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), out_rx.recv())
                .await
                .unwrap()
                .unwrap();
            if n.text == "sentinel" {
                break;
            }
            texts.push(n.text);
        }
        if expect_history {
            // iso-1 is not listed (a deleted job): still the person's.
            assert_eq!(
                texts,
                ["No anomalies yesterday.", "Disk at 91%."],
                "life {life}"
            );
        } else {
            assert!(texts.is_empty(), "life {life} re-sent {texts:?}");
        }
        stop.cancel();
        task.await.unwrap();
    }
}

#[tokio::test]
async fn start_refuses_a_public_listen_address_and_an_empty_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "").unwrap();
    let mut args = NoticesArgs {
        listen: "0.0.0.0:0".parse().unwrap(),
        state_file: dir.path().join("n.json"),
        webhook_token_file: dir.path().join("token"),
        reconcile_secs: 60,
    };
    let gateway = OpenClawArgs {
        token: Some("t".into()),
        ..OpenClawArgs::default()
    };
    let start = |a: NoticesArgs| {
        let g = gateway.clone();
        async move {
            Notices::start(&a, &g, SidecarMetrics::new(), CancellationToken::new())
                .await
                .err()
                .unwrap()
        }
    };
    assert_eq!(start(args.clone()).await.metric_label(), "config");
    args.listen = "127.0.0.1:0".parse().unwrap();
    assert_eq!(start(args.clone()).await.metric_label(), "token");
    std::fs::write(dir.path().join("n.json"), "{broken").unwrap();
    std::fs::write(dir.path().join("token"), "t").unwrap();
    assert_eq!(start(args).await.metric_label(), "corrupt");
}

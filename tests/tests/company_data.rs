//! Company data, read-only, through every real part:
//!
//!   Gateway client → controller → sidecar → OpenClaw → stub model, which
//!   calls the `company_data__search` tool → OpenClaw's MCP client → the
//!   sidecar's data proxy (MCP endpoint, allowlist, caps, the real key) →
//!   OpenSearch (real, from Maven Central, requiring an API key)
//!
//! The shipped product: the controller's built-in OpenClaw profile (what
//! `scripts/run-local.sh` runs), `init`'s baseline writing the tool into
//! OpenClaw's config, the cluster settings given to the controller as an
//! operator would (`CLAWSWARM_DATA_URL`, `CLAWSWARM_DATA_API_KEY_FILE`,
//! `CLAWSWARM_DATA_INDICES`). Then what an agent with `exec` could try,
//! straight at the proxy with the credential from its own config: writes,
//! deletes and other indices, each refused, the index unchanged after.
//!
//! One gateway and one engine for the file (~20 s each to start), so the
//! checks are steps of one test.

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::{path::Path, time::Duration};

use clawswarm_proto::v1 as pb;
use clawswarm_tests::{
    harness::{Controller, chat, tail_of as tail, workload_tree},
    openclaw::{openclaw_bin, profile_options, wait_ready_with_log},
    search::{API_KEY, SearchEngine, pipeline_runs},
    stub_model::{StubConfig, StubModel},
};
use reqwest::Method;
use serde_json::{Value, json};

/// Deny exec so OpenClaw adds no "active exec sessions" block after the
/// person's text (the stub reads the last user message for directives).
const PERSON_CONFIG: &str = "{ tools: { deny: ['exec', 'process'] } }";

/// The data proxy as the workload finds it: its own OpenClaw config.
struct WorkloadView {
    base: String,
    token: String,
}

impl WorkloadView {
    fn from_config(data_dir: &Path) -> Self {
        let text = std::fs::read_to_string(data_dir.join("openclaw/openclaw.json")).unwrap();
        let cfg: Value = serde_json::from_str(&text).unwrap();
        let server = &cfg["mcp"]["servers"]["company_data"];
        let url = server["url"].as_str().unwrap();
        let token = server["headers"]["Authorization"].as_str().unwrap();
        Self {
            base: url.strip_suffix("/_clawswarm/mcp").unwrap().to_owned(),
            token: token.strip_prefix("Bearer ").unwrap().to_owned(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json");
        if let Some(b) = body {
            req = req.body(b.to_owned());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A request the proxy must refuse with `kind`; the reason it gives.
    async fn refused(&self, method: Method, path: &str, body: Option<&str>, kind: &str) -> String {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert!(status >= 400, "{method} {path} was served: {status} {v}");
        assert_eq!(v["error"]["type"], kind, "{method} {path}: {status} {v}");
        v["error"]["reason"].as_str().unwrap().to_owned()
    }
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .map_or(0, |v| v.parse().unwrap())
}

/// Every file under `dir` holding `needle` (bounded reads).
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && meta.len() < 64 * 1024 * 1024
                && let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_answers_from_company_data_and_nothing_it_does_can_write() {
    let openclaw = openclaw_bin().unwrap_or_else(|e| panic!("{e}"));
    clawswarm_certs::install_default_crypto_provider();
    let engine = SearchEngine::shared().unwrap();
    engine.seed("pipelines", &pipeline_runs()).await.unwrap();
    engine
        .seed("hr-salaries", &[json!({"person": "someone", "salary": 1})])
        .await
        .unwrap();
    let (status, body) = engine
        .admin(
            Method::POST,
            "/_aliases",
            Some(json!({"actions": [{"add": {"indices": ["pipelines", "hr-salaries"], "alias": "all-runs"}}]})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let pipelines_before = engine.documents("pipelines").await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let stub = StubModel::start(StubConfig::default()).await.unwrap();
    let seed = dir.path().join("person-openclaw.json");
    std::fs::write(&seed, PERSON_CONFIG).unwrap();
    let key_file = dir.path().join("search-key");
    std::fs::write(&key_file, API_KEY).unwrap();

    let opts = profile_options(
        &["alice"],
        &openclaw,
        &seed,
        stub.base_url(),
        vec![
            ("CLAWSWARM_MODEL_API_KEY".into(), "stub-key".into()),
            // The operator's part: where the cluster is, its key, what is readable.
            ("CLAWSWARM_DATA_URL".into(), engine.url().to_owned()),
            (
                "CLAWSWARM_DATA_API_KEY_FILE".into(),
                key_file.display().to_string(),
            ),
            ("CLAWSWARM_DATA_INDICES".into(), "pipelines".into()),
        ],
    );
    let c = Controller::start(opts).await.unwrap();
    let agent = c.agent_dir("alice");
    let (run_dir, data_dir) = (agent.join("run"), agent.join("data"));
    let workload_log = || std::fs::read_to_string(run_dir.join("workload.log")).unwrap_or_default();
    wait_ready_with_log(&c, "alice").await;

    // The key is in no OpenClaw process's environment and no file the
    // workload has: only the sidecar was given it.
    for pid in workload_tree(&run_dir) {
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            let env = String::from_utf8_lossy(&env);
            assert!(
                !env.contains(API_KEY),
                "the cluster key is in pid {pid}'s environment"
            );
            for setting in [
                "CLAWSWARM_DATA_URL",
                "CLAWSWARM_DATA_API_KEY",
                "CLAWSWARM_DATA_INDICES",
            ] {
                assert!(
                    !env.contains(setting),
                    "{setting} leaked into pid {pid}: {env}"
                );
            }
        }
    }
    assert_eq!(files_containing(&data_dir, API_KEY), Vec::<String>::new());
    // Without the key the engine serves nothing: the proxy is the only way.
    let direct = reqwest::Client::new()
        .post(format!("{}/pipelines/_search", engine.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status().as_u16(), 401);

    // The person asks; the model calls the tool; the answer has the status.
    let mut gw = c.gateway().await.unwrap();
    let ask = r#"what's the status of etl-nightly? [tool=company_data__search {"index": "pipelines", "body": {"query": {"match": {"pipeline": "etl-nightly"}}, "size": 5}}]"#;
    let reply = chat(&mut gw, "alice", "dm-1", ask)
        .await
        .unwrap_or_else(|e| panic!("{e}\nworkload log:\n{}", tail(&workload_log())));
    assert_eq!(
        reply.outcome(),
        Some(pb::Outcome::Ok),
        "{reply:?}\nworkload log:\n{}\nsidecar log:\n{}",
        tail(&workload_log()),
        tail(&c.sidecar_log("alice"))
    );
    let text = reply.text();
    assert!(
        text.contains("disk quota exceeded on stage load") && text.contains("failed"),
        "the reply carries the indexed status: {text}\nsidecar log:\n{}",
        tail(&c.sidecar_log("alice"))
    );

    // The same tool on an index the template does not allow: the refusal,
    // with its reason, is what the model sees and relays.
    let ask = r#"and salaries? [tool=company_data__search {"index": "hr-salaries"}]"#;
    let reply = chat(&mut gw, "alice", "dm-2", ask).await.unwrap();
    assert!(
        reply.text().contains("not readable by this agent"),
        "{:?}",
        reply.text()
    );

    // What an agent with exec could send, with the credential in its config.
    let w = WorkloadView::from_config(&data_dir);
    let doc = Some(r#"{"pipeline": "etl-nightly", "status": "succeeded"}"#);
    for (method, path, body) in [
        (Method::POST, "/pipelines/_doc", doc),
        (Method::PUT, "/pipelines/_doc/1", doc),
        (
            Method::POST,
            "/pipelines/_update/1",
            Some(r#"{"doc": {"status": "ok"}}"#),
        ),
        (
            Method::POST,
            "/pipelines/_delete_by_query",
            Some(r#"{"query": {"match_all": {}}}"#),
        ),
        (
            Method::POST,
            "/pipelines/_update_by_query",
            Some(r#"{"query": {"match_all": {}}}"#),
        ),
        (
            Method::POST,
            "/_bulk",
            Some("{\"delete\": {\"_index\": \"pipelines\", \"_id\": \"1\"}}\n"),
        ),
        (
            Method::POST,
            "/_reindex",
            Some(r#"{"source": {"index": "pipelines"}, "dest": {"index": "copy"}}"#),
        ),
        (Method::DELETE, "/pipelines", None),
        (
            Method::PUT,
            "/_cluster/settings",
            Some(r#"{"persistent": {}}"#),
        ),
        (Method::GET, "/_cluster/settings", None),
    ] {
        let reason = w.refused(method, path, body, "clawswarm_read_only").await;
        assert!(reason.contains("read-only"), "{reason}");
    }
    for (path, names) in [
        ("/hr-salaries/_search", "hr-salaries"),
        ("/pipelines,hr-salaries/_search", "hr-salaries"),
        ("/*/_search", "hr-salaries"),
        ("/all-runs/_search", "all-runs"),
    ] {
        let reason = w
            .refused(
                Method::POST,
                path,
                Some("{}"),
                "clawswarm_index_not_allowed",
            )
            .await;
        assert!(reason.contains(names), "{path}: {reason}");
    }
    let msearch = "{\"index\": \"pipelines\"}\n{}\n{\"index\": \"hr-salaries\"}\n{}\n";
    w.refused(
        Method::POST,
        "/_msearch",
        Some(msearch),
        "clawswarm_index_not_allowed",
    )
    .await;
    let reason = w
        .refused(
            Method::POST,
            "/pipelines/_search",
            Some(r#"{"size": 10000000}"#),
            "clawswarm_result_cap",
        )
        .await;
    assert!(reason.contains("CLAWSWARM_DATA_MAX_HITS"), "{reason}");
    // (reqwest resolves `..` itself; an encoded slash it leaves alone.)
    w.refused(
        Method::POST,
        "/pipelines%2f_bulk/_search",
        Some("{}"),
        "clawswarm_bad_request",
    )
    .await;
    w.refused(
        Method::POST,
        "/pipelines/_search",
        Some("{\"query\": "),
        "clawswarm_bad_request",
    )
    .await;
    w.refused(
        Method::POST,
        "/_search/scroll",
        Some(r#"{"scroll_id": "made-up"}"#),
        "clawswarm_bad_request",
    )
    .await;

    // Reads work, the ones that continue included.
    let (status, v) = w.call(Method::POST, "/pipelines/_count", None).await;
    assert_eq!((status, v["count"].as_u64()), (200, Some(4)), "{v}");
    let (status, v) = w.call(Method::GET, "/pipelines/_mapping", None).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["pipelines"]["mappings"]["properties"]["status"].is_object(),
        "{v}"
    );
    let (status, v) = w
        .call(
            Method::POST,
            "/pipelines/_search?scroll=1m",
            Some(r#"{"size": 2}"#),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let scroll = v["_scroll_id"].as_str().unwrap().to_owned();
    let (status, v) = w
        .call(
            Method::POST,
            "/_search/scroll",
            Some(&json!({"scroll": "1m", "scroll_id": scroll}).to_string()),
        )
        .await;
    assert_eq!(
        (status, v["hits"]["hits"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{v}"
    );
    let (status, v) = w
        .call(
            Method::POST,
            "/pipelines/_msearch",
            Some("{}\n{\"size\": 1}\n"),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = w.call(Method::GET, "/_cat/indices?format=json", None).await;
    assert_eq!(status, 200, "{v}");
    let listed: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["index"].as_str())
        .collect();
    assert_eq!(
        listed,
        ["pipelines"],
        "only what this agent may read is listed"
    );

    // Nothing changed in either index.
    assert_eq!(
        engine.documents("pipelines").await.unwrap(),
        pipelines_before
    );
    assert_eq!(engine.count("hr-salaries").await.unwrap(), 1);

    // Metered and audited in the sidecar.
    let ports: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("ports.json")).unwrap())
            .unwrap();
    let url = format!("http://{}/metrics", ports["http"].as_str().unwrap());
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        metric(
            &text,
            r#"clawswarm_data_queries_total{kind="search",outcome="ok"}"#
        ) >= 2,
        "{text}"
    );
    assert!(
        metric(
            &text,
            r#"clawswarm_data_queries_total{kind="other",outcome="refused_write"}"#
        ) >= 9,
        "{text}"
    );
    assert!(
        metric(
            &text,
            r#"clawswarm_data_queries_total{kind="search",outcome="refused_index"}"#
        ) >= 5,
        "{text}"
    );
    assert!(
        metric(&text, "clawswarm_data_documents_total") >= 3,
        "{text}"
    );
    let log = c.sidecar_log("alice");
    assert!(
        log.lines().any(|l| l.contains("data query")
            && l.contains(r#"indices="pipelines""#)
            && l.contains(r#"outcome="ok""#)),
        "an audit line per query:\n{}",
        tail(&log)
    );
    assert!(
        log.lines().any(|l| l.contains("data query")
            && l.contains(r#"indices="hr-salaries""#)
            && l.contains(r#"outcome="refused_index""#)),
        "refusals are audited with what was asked for:\n{}",
        tail(&log)
    );
    assert!(!log.contains(API_KEY), "the key is never logged");

    // And per person in the agent's record (what `/agent usage` and the
    // Gateway show), from the sidecar's usage ledger on the agent's volume.
    let served = metric(
        &text,
        r#"clawswarm_data_queries_total{kind="search",outcome="ok"}"#,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let data = loop {
        let a = c.listed("alice").await.unwrap();
        let d = a.data.unwrap_or_default();
        if d.queries >= 20 && d.refused >= 15 || std::time::Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(data.queries >= 20 && data.refused >= 15, "{data:?}");
    assert!(
        data.queries - data.refused >= served,
        "{data:?} vs {served} served searches"
    );
    assert!(data.documents >= 3, "{data:?}");
    let ledger: Value = serde_json::from_str(
        &std::fs::read_to_string(c.sidecar_dir("alice").join("model-usage.json"))
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(
        ledger["data"]["queries"].as_u64(),
        Some(data.queries),
        "{ledger}"
    );
}

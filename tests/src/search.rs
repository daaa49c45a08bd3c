//! A real search engine on loopback: OpenSearch's own jars (Maven Central,
//! `scripts/deps.sh search`) started by tests/search-engine/SearchEngine.java,
//! with an API key required on every call, as a secured Elasticsearch
//! cluster requires one. One engine serves every test of a test binary
//! (it takes ~20 s to start); each test seeds indices of its own names.
//!
//! The engine stops when this process goes away: it exits when its stdin
//! closes, so no test run leaves it behind, however it ends.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// The API key every engine call must carry (`Authorization: ApiKey …`).
pub const API_KEY: &str = "search-key-the-workload-must-never-see";

pub struct SearchEngine {
    url: String,
    /// Held so stdin stays open: the engine lives as long as this process
    /// (or this value: dropping it stops the engine).
    child: std::sync::Mutex<Child>,
    _home: tempfile::TempDir,
}

impl Drop for SearchEngine {
    fn drop(&mut self) {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

static ENGINE: OnceLock<std::result::Result<SearchEngine, String>> = OnceLock::new();

impl SearchEngine {
    /// The test binary's engine, started on first use.
    pub fn shared() -> Result<&'static SearchEngine> {
        ENGINE
            .get_or_init(|| {
                Self::start_on("127.0.0.1".parse().expect("an IP")).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// An engine of its own serving HTTP on `host` (e.g. a pod network's
    /// gateway, so sandboxed pods reach it), stopped when dropped. Blocks
    /// while it starts (~20 s): call it from `spawn_blocking`.
    pub fn start_on(host: std::net::IpAddr) -> Result<Self> {
        let classpath = std::env::var("CLAWSWARM_SEARCH_ENGINE_CLASSPATH").context(
            "CLAWSWARM_SEARCH_ENGINE_CLASSPATH is not set: run the tests with scripts/test.sh, \
             or `eval \"$(scripts/deps.sh search)\"` first",
        )?;
        let home = tempfile::Builder::new()
            .prefix("clawswarm-search-")
            .tempdir()?;
        let log = std::fs::File::create(home.path().join("engine.log"))?;
        let child = Command::new("java")
            .args([
                "-Xms256m",
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-cp",
                &classpath,
            ])
            .arg("dev.clawswarm.SearchEngine")
            .arg(home.path())
            .arg("0")
            .arg(host.to_string())
            .env("SEARCH_ENGINE_API_KEY", API_KEY)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting java (the search engine)")?;
        let mut child = child;
        let addr_file: PathBuf = home.path().join("http.addr");
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                break a.trim().to_owned();
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the search engine exited with {status}:\n{}",
                    std::fs::read_to_string(home.path().join("engine.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the search engine did not serve within 120 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Ok(Self {
            url: format!("http://{addr}"),
            child: std::sync::Mutex::new(child),
            _home: home,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A call with the real key, as an admin would make it.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .header("authorization", format!("ApiKey {API_KEY}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Create `index` with `docs` (ids `1`, `2`, ...), searchable at once.
    pub async fn seed(&self, index: &str, docs: &[Value]) -> Result<()> {
        let (status, body) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/{index}"),
                Some(json!({
                    "settings": {"number_of_shards": 1, "number_of_replicas": 0}
                })),
            )
            .await?;
        if status != 200 {
            bail!("creating index {index}: {status} {body}");
        }
        for (i, doc) in docs.iter().enumerate() {
            let (status, body) = self
                .admin(
                    reqwest::Method::PUT,
                    &format!("/{index}/_doc/{}?refresh=true", i + 1),
                    Some(doc.clone()),
                )
                .await?;
            if !(200..300).contains(&status) {
                bail!("indexing into {index}: {status} {body}");
            }
        }
        Ok(())
    }

    /// The documents in `index`, counted with the real key.
    pub async fn count(&self, index: &str) -> Result<u64> {
        let (status, body) = self
            .admin(reqwest::Method::GET, &format!("/{index}/_count"), None)
            .await?;
        if status != 200 {
            bail!("counting {index}: {status} {body}");
        }
        body["count"].as_u64().context("count missing")
    }

    /// Every document of `index`, by id, in id order (to compare before and after).
    pub async fn documents(&self, index: &str) -> Result<Vec<Value>> {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                &format!("/{index}/_search"),
                Some(json!({"size": 1000, "sort": ["_doc"]})),
            )
            .await?;
        if status != 200 {
            bail!("reading {index}: {status} {body}");
        }
        let mut hits: Vec<Value> = body["hits"]["hits"].as_array().cloned().unwrap_or_default();
        hits.sort_by_key(|h| h["_id"].as_str().unwrap_or_default().to_owned());
        Ok(hits
            .into_iter()
            .map(|h| json!({"id": h["_id"], "source": h["_source"]}))
            .collect())
    }
}

/// Pipeline runs, the index the product's first question is about.
pub fn pipeline_runs() -> Vec<Value> {
    vec![
        json!({"pipeline": "etl-nightly", "status": "failed", "finished_at": "2026-12-03T02:10:00Z", "error": "disk quota exceeded on stage load"}),
        json!({"pipeline": "etl-nightly", "status": "succeeded", "finished_at": "2026-12-02T02:05:00Z"}),
        json!({"pipeline": "billing-export", "status": "succeeded", "finished_at": "2026-12-03T06:00:00Z"}),
        json!({"pipeline": "ml-train", "status": "running", "finished_at": null}),
    ]
}

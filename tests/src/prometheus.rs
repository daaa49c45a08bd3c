//! The real Prometheus for tests, configured the way the Prometheus operator
//! configures it from the shipped PodMonitor: Kubernetes pod discovery is a
//! file of targets with the `__meta_kubernetes_*` labels discovery would
//! give them ([`pod_targets`]), and the PodMonitor becomes the scrape job the
//! operator generates ([`scrape_job_from_pod_monitor`]).
//!
//! Needs `scripts/deps.sh promtool` (it prints `CLAWSWARM_PROMETHEUS`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};

/// The Prometheus binary `scripts/deps.sh promtool` installed.
pub fn prometheus_bin() -> anyhow::Result<PathBuf> {
    match std::env::var_os("CLAWSWARM_PROMETHEUS") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => bail!(
            "CLAWSWARM_PROMETHEUS is not set: run `scripts/deps.sh promtool` and export what it prints \
             (or `source ~/.cache/clawswarm/env.sh`)"
        ),
    }
}

/// deploy/monitoring/podmonitor.yaml, parsed.
pub fn shipped_pod_monitor() -> anyhow::Result<Value> {
    let path = crate::install::deploy_dir().join("monitoring/podmonitor.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    serde_saphyr::from_str(&text).context("podmonitor.yaml is not YAML")
}

/// A Kubernetes label name as Prometheus discovery spells it.
pub fn prom_label_name(k: &str) -> String {
    k.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The container port named `name`, with its container.
pub fn named_port<'a>(
    pod: &'a Pod,
    name: &str,
) -> Option<(&'a k8s_openapi::api::core::v1::Container, i32)> {
    pod.spec.as_ref()?.containers.iter().find_map(|c| {
        c.ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| (c, p.container_port))
    })
}

/// The `__meta_kubernetes_*` labels Kubernetes discovery (role: pod) gives
/// the target of `pod`'s container port `port`.
pub fn pod_discovery_labels(pod: &Pod, port: &str) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in pod.metadata.labels.iter().flatten() {
        let n = prom_label_name(k);
        m.insert(format!("__meta_kubernetes_pod_label_{n}"), v.clone().into());
        m.insert(
            format!("__meta_kubernetes_pod_labelpresent_{n}"),
            "true".into(),
        );
    }
    m.insert(
        "__meta_kubernetes_namespace".into(),
        pod.metadata.namespace.clone().unwrap_or_default().into(),
    );
    m.insert(
        "__meta_kubernetes_pod_name".into(),
        pod.metadata.name.clone().unwrap_or_default().into(),
    );
    if let Some((c, number)) = named_port(pod, port) {
        m.insert(
            "__meta_kubernetes_pod_container_name".into(),
            c.name.clone().into(),
        );
        m.insert(
            "__meta_kubernetes_pod_container_port_name".into(),
            port.into(),
        );
        m.insert(
            "__meta_kubernetes_pod_container_port_number".into(),
            number.to_string().into(),
        );
    }
    m
}

/// What pod discovery finds on running pods: one target per named container
/// port, at the pod's IP, as `file_sd` target groups.
pub fn pod_targets(pods: &[Pod]) -> Value {
    let mut groups = Vec::new();
    for pod in pods {
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        for c in pod.spec.iter().flat_map(|s| &s.containers) {
            for p in c.ports.iter().flatten() {
                let Some(name) = p.name.as_deref() else {
                    continue;
                };
                groups.push(json!({
                    "targets": [format!("{ip}:{}", p.container_port)],
                    "labels": pod_discovery_labels(pod, name),
                }));
            }
        }
    }
    Value::Array(groups)
}

/// The scrape job the Prometheus operator generates from a PodMonitor
/// endpoint, translated from the parsed YAML: keep only targets the
/// selector and the port name select (the operator's own relabellings),
/// then the endpoint's `relabelings`, camelCase keys in snake_case. Scrapes
/// every second (the shipped interval is for production).
pub fn scrape_job_from_pod_monitor(
    monitor: &Value,
    ep: &Value,
    sd_file: &Path,
) -> anyhow::Result<Value> {
    let mut relabel = Vec::new();
    let selector = &monitor["spec"]["selector"];
    if !selector["matchExpressions"].is_null() {
        bail!("translate matchExpressions into keep rules too");
    }
    for (k, v) in selector["matchLabels"].as_object().into_iter().flatten() {
        let n = prom_label_name(k);
        relabel.push(json!({
            "action": "keep",
            "source_labels": [format!("__meta_kubernetes_pod_label_{n}"), format!("__meta_kubernetes_pod_labelpresent_{n}")],
            "regex": format!("({});true", v.as_str().context("matchLabels value is not a string")?),
        }));
    }
    relabel.push(json!({
        "action": "keep",
        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
        "regex": ep["port"].as_str().context("the endpoint names no port")?,
    }));
    for rule in ep["relabelings"].as_array().into_iter().flatten() {
        let mut out = Map::new();
        for (k, v) in rule.as_object().context("a relabeling is not an object")? {
            let key = match k.as_str() {
                "sourceLabels" => "source_labels",
                "targetLabel" => "target_label",
                "separator" | "regex" | "modulus" | "replacement" => k.as_str(),
                "action" => {
                    let action = v.as_str().context("action is not a string")?.to_lowercase();
                    out.insert("action".into(), action.into());
                    continue;
                }
                other => bail!("translate relabeling key {other}"),
            };
            out.insert(key.into(), v.clone());
        }
        relabel.push(out.into());
    }
    Ok(json!({
        "job_name": format!("podMonitor/{}", monitor["metadata"]["name"].as_str().unwrap_or_default()),
        "metrics_path": ep["path"].as_str().unwrap_or("/metrics"),
        "scheme": ep["scheme"].as_str().unwrap_or("http"),
        "scrape_interval": "1s",
        "file_sd_configs": [{"files": [sd_file.display().to_string()], "refresh_interval": "1s"}],
        "relabel_configs": relabel,
    }))
}

/// A running Prometheus with the shipped PodMonitor's job over `targets`
/// (file_sd target groups, see [`pod_targets`]). Killed on drop.
pub struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    web: std::net::SocketAddr,
    config: Value,
    client: reqwest::Client,
}

impl Prometheus {
    pub fn with_shipped_pod_monitor(targets: &Value) -> anyhow::Result<Self> {
        let monitor = shipped_pod_monitor()?;
        let ep = &monitor["spec"]["podMetricsEndpoints"][0];
        let dir = tempfile::tempdir()?;
        let sd_file = dir.path().join("pods.json");
        std::fs::write(&sd_file, serde_json::to_vec_pretty(targets)?)?;
        let config = json!({
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [scrape_job_from_pod_monitor(&monitor, ep, &sd_file)?],
        });
        let config_file = dir.path().join("prometheus.yml");
        // JSON is YAML.
        std::fs::write(&config_file, serde_json::to_vec_pretty(&config)?)?;
        let web = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = Command::new(prometheus_bin()?)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log"))?)
            .spawn()
            .context("start prometheus")?;
        Ok(Self {
            child,
            dir,
            web,
            config,
            client: reqwest::Client::new(),
        })
    }

    /// The result vector of instant query `query`, once `done` accepts it
    /// (at most `timeout`); the error shows the config and Prometheus' log.
    pub async fn query_until(
        &self,
        query: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let url = format!(
            "http://{}/api/v1/query?{}",
            self.web,
            serde_urlencoded::to_string([("query", query)])?
        );
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = Vec::new();
        loop {
            let answer = self.client.get(&url).send().await;
            if let Ok(resp) = answer
                && let Ok(body) = resp.json::<Value>().await
                && let Some(r) = body.pointer("/data/result").and_then(Value::as_array)
            {
                if done(r) {
                    return Ok(r.clone());
                }
                last = r.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "prometheus: {query} never gave the expected answer in {timeout:?} (last: {last:?})\nconfig:\n{}\nlog:\n{}",
                    serde_json::to_string_pretty(&self.config).unwrap_or_default(),
                    std::fs::read_to_string(self.dir.path().join("prometheus.log"))
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `activeTargets` of `/api/v1/targets`: the targets relabelling kept.
    pub async fn active_targets(&self) -> anyhow::Result<Vec<Value>> {
        let body: Value = self
            .client
            .get(format!("http://{}/api/v1/targets", self.web))
            .send()
            .await?
            .json()
            .await?;
        Ok(body["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

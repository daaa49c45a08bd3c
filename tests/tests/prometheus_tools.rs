//! The monitoring we ship passes Prometheus' own tools: `promtool check
//! rules` on deploy/monitoring's alert rules, `promtool check metrics` on
//! what the sidecar exports, every series the dashboard and the rules query
//! is one the sidecar actually exports, the shipped PodMonitor selects the
//! pods the controller builds (the real `build_pod`, the shipped templates),
//! and the real Prometheus, configured with that PodMonitor's relabelling,
//! scrapes the sidecar's metrics server and answers tokens per owner.
//!
//! A freshly started controller and sidecar (the real binaries) pass the
//! README's `curl … | promtool check metrics` line and export every family
//! docs/metrics.md lists from the start.
//!
//! Needs promtool and prometheus: `scripts/deps.sh promtool` prints
//! CLAWSWARM_PROMTOOL and CLAWSWARM_PROMETHEUS.

// Helpers here are test code too (clippy's allow-unwrap-in-tests only
// covers #[test] bodies).
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use clawswarm_proto::exposition::Format;
use clawswarm_sidecar::{
    metrics::{ModelCallLabels, ResultLabel, SidecarMetrics},
    workload::Usage,
};
use clawswarm_tests::{
    harness::{Controller, output_text},
    prometheus::{
        Prometheus, named_port, pod_discovery_labels, prom_label_name, shipped_pod_monitor,
    },
    readme,
};

fn promtool() -> PathBuf {
    match std::env::var_os("CLAWSWARM_PROMTOOL") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "CLAWSWARM_PROMTOOL is not set: run `scripts/deps.sh promtool` and export what it prints \
             (or `source ~/.cache/clawswarm/env.sh`)"
        ),
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `spec` of the PrometheusRule, which is a plain rules file once
/// dedented (the file keeps `spec:` last for this reason).
fn rules_file_text() -> String {
    let text =
        std::fs::read_to_string(repo().join("deploy/monitoring/prometheusrule.yaml")).unwrap();
    let (_, spec) = text
        .split_once("\nspec:\n")
        .expect("prometheusrule.yaml has a top-level spec:");
    spec.lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A registry with every family populated, as after a few turns.
fn sample_metrics() -> String {
    let m = SidecarMetrics::new();
    m.add_usage(&Usage {
        input_tokens: 1200,
        output_tokens: 80,
        cache_read_tokens: 18000,
        cache_write_tokens: 300,
    });
    m.turns.get_or_create(&ResultLabel { result: "ok" }).inc();
    m.turn_first_token_seconds.observe(1.2);
    m.turn_duration_seconds.observe(3.4);
    m.model_calls
        .get_or_create(&ModelCallLabels {
            api: "anthropic",
            result: "ok",
        })
        .inc();
    m.model_calls
        .get_or_create(&ModelCallLabels {
            api: "anthropic",
            result: "budget_exhausted",
        })
        .inc();
    m.workload_up.set(1);
    m.link_connected.set(1);
    m.cert_expiration_timestamp_seconds.set(1_800_000_000);
    m.notices.get_or_create(&ResultLabel { result: "ok" }).inc();
    m.encode()
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clawswarm.rules.yaml");
    std::fs::write(&path, rules_file_text()).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "promtool check rules failed:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn promtool_accepts_the_sidecar_metrics() {
    // What `/metrics` answers a client that does not ask for OpenMetrics.
    let text = Format::Text.render(sample_metrics());
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let lint = output_text(&out);
    assert!(
        out.status.success() && lint.trim().is_empty(),
        "promtool check metrics:\n{lint}\n--- input ---\n{text}"
    );
}

/// The families docs/metrics.md lists under `## {section}`, each with
/// whether the row says it exists only on Kubernetes.
fn documented_families(section: &str) -> BTreeMap<String, bool> {
    let text = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let heading = format!("## {section}\n");
    let body = &text[text.find(&heading).unwrap() + heading.len()..];
    let body = body.split("\n## ").next().unwrap();
    body.lines()
        .filter_map(|l| {
            let name = l.strip_prefix("| `")?.split('`').next()?;
            Some((name.to_owned(), l.contains("Kubernetes runtime only")))
        })
        .collect()
}

/// `curl -s ADDR/metrics` as the README runs it, in `Accept` terms: curl
/// sends `*/*`.
async fn scrape(addr: &str, accept: &str) -> (String, String) {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_controller_and_sidecar_pass_the_readmes_promtool_line_with_every_documented_family()
{
    clawswarm_certs::install_default_crypto_provider();
    // `promtool` on PATH, as the README's line expects it.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(promtool(), bin.path().join("promtool")).unwrap();
    let line = readme::line_containing("| promtool check metrics").unwrap();

    let c = Controller::start_ready(&["alice"]).await.unwrap();
    let controller = c.http_url().trim_start_matches("http://").to_owned();
    let sidecar = c.sidecar_addr("alice", "http").unwrap();
    for (what, addr, section) in [
        ("controller", &controller, "Controller"),
        ("sidecar", &sidecar, "Sidecar"),
    ] {
        let cmd = readme::substitute(&line, &[("127.0.0.1:7480", addr)]).unwrap();
        let out = readme::run(&cmd, &[bin.path()]).unwrap();
        let lint = output_text(&out);
        let (content_type, text) = scrape(addr, "*/*").await;
        assert!(
            out.status.success() && lint.trim().is_empty(),
            "{what}: `{cmd}` failed:\n{lint}\n--- /metrics ---\n{text}"
        );
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );

        let families = documented_families(section);
        assert!(families.len() > 5, "{section}: {families:?}");
        for (name, kubernetes_only) in families {
            if kubernetes_only {
                continue;
            }
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("# TYPE {name} "))),
                "{what}: docs/metrics.md lists {name}, a fresh /metrics lacks it:\n{text}"
            );
        }

        // A scraper that asks for OpenMetrics gets it.
        let (content_type, om) = scrape(
            addr,
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .await;
        assert!(
            content_type.starts_with("application/openmetrics-text") && om.ends_with("# EOF\n"),
            "{what}: {content_type}\n{om}"
        );
    }
}

/// Every `clawswarm_*` series named in `text`, with histogram suffixes
/// reduced to the family.
fn referenced_series(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("clawswarm_") {
        let start = i + pos;
        let prev_ok = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if prev_ok {
            let name = &text[start..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(family.to_owned());
        }
        i = end;
    }
    names
}

#[test]
fn dashboard_and_rules_query_only_series_the_sidecar_exports() {
    let exported = sample_metrics();
    let dashboard =
        std::fs::read_to_string(repo().join("deploy/monitoring/grafana-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let mut wanted = referenced_series(&dashboard);
    wanted.extend(referenced_series(&rules_file_text()));
    assert!(wanted.contains("clawswarm_tokens_total"), "{wanted:?}");
    for name in &wanted {
        let found = exported.lines().any(|l| {
            !l.starts_with('#')
                && (l.starts_with(&format!("{name}{{"))
                    || l.starts_with(&format!("{name} "))
                    || l.starts_with(&format!("{name}_bucket")))
        });
        assert!(found, "{name} is queried but not exported:\n{exported}");
    }
}

/// The real Prometheus scrapes the sidecar's `/metrics` server (the same
/// one `main` runs) and a token counter comes back through its query API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_sidecar_and_answers_a_token_query() {
    use std::sync::{Arc, atomic::AtomicBool};

    use clawswarm_sidecar::http::{HttpState, serve};
    use tokio_util::sync::CancellationToken;

    let prometheus = clawswarm_tests::prometheus::prometheus_bin().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = SidecarMetrics::new();
    metrics.add_usage(&Usage {
        input_tokens: 4242,
        output_tokens: 7,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let state = HttpState {
        metrics,
        certified: Arc::new(AtomicBool::new(true)),
        linked: Arc::new(AtomicBool::new(true)),
    };
    let server = tokio::spawn(serve(listener, state, stop.clone()));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sidecar\n    static_configs:\n      - targets: ['{target}']\n        labels: {{agent: test-agent}}\n"
        ),
    )
    .unwrap();
    let web = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut child = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();

    let client = reqwest::Client::new();
    let query = format!(
        "http://{web}/api/v1/query?query=clawswarm_tokens_total%7Bkind%3D%22input%22%2Cagent%3D%22test-agent%22%7D"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let value = loop {
        let answer = client.get(&query).send().await;
        if let Ok(resp) = answer
            && let Ok(body) = resp.json::<serde_json::Value>().await
            && let Some(v) = body
                .pointer("/data/result/0/value/1")
                .and_then(|v| v.as_str())
        {
            break v.to_owned();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let log =
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            panic!("prometheus never returned the token counter; its log:\n{log}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    stop.cancel();
    let _ = server.await;
    assert_eq!(value, "4242");
}

/// `namespace:` of a kustomization.yaml.
fn kustomization_namespace(dir: &str) -> Option<String> {
    let text = std::fs::read_to_string(repo().join(dir).join("kustomization.yaml")).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    v["namespace"].as_str().map(str::to_owned)
}

/// Every AgentTemplate the deployment ships (deploy/templates/*.yaml).
fn shipped_templates() -> Vec<clawswarm_controller::runtime::kubernetes::crd::AgentTemplate> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("deploy/templates")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs {
            if doc["kind"] == "AgentTemplate" {
                out.push(
                    serde_json::from_value(doc)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                );
            }
        }
    }
    assert!(!out.is_empty(), "deploy/templates ships no AgentTemplate");
    out
}

/// A pod as the controller builds it (the real `build_pod`) from a shipped
/// template for an Agent owned by `owner`, in the namespace the deployment
/// installs into.
fn controller_built_pod(
    tpl: &clawswarm_controller::runtime::kubernetes::crd::AgentTemplate,
    owner: &str,
) -> k8s_openapi::api::core::v1::Pod {
    use clawswarm_controller::runtime::kubernetes::{crd::Agent, pod};

    let ns = kustomization_namespace("deploy").expect("deploy/ sets a namespace");
    let mut agent: Agent = serde_json::from_value(serde_json::json!({
        "apiVersion": "clawswarm.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "alice", "namespace": ns, "uid": "uid-alice"},
        "spec": {"owner": owner, "template": tpl.metadata.name.clone().unwrap()},
    }))
    .unwrap();
    agent.metadata.namespace = Some(ns.clone());
    let settings = pod::PodSettings {
        sidecar_image: "example.invalid/sidecar:1".into(),
        image_pull_policy: None,
        service_account: "clawswarm-agent".into(),
        controller_url: format!("https://clawswarm-controller.{ns}.svc:7443"),
        identity_url: format!("https://clawswarm-controller.{ns}.svc:7444"),
        trust_bundle_config_map: "clawswarm-trust-bundle".into(),
        trust_domain: "clawswarm.local".into(),
        controller_namespace: ns.clone(),
        token_audience: "clawswarm-identity".into(),
        token_expiration_seconds: 3600,
        shared_secret: None,
    };
    let mut built = pod::build_pod(&agent, &tpl.spec, &settings);
    // The API server fills the name in from generateName.
    built.metadata.name = Some(format!(
        "{}abcde",
        built.metadata.generate_name.clone().unwrap_or_default()
    ));
    built.metadata.namespace = Some(ns);
    built
}

/// Whether a LabelSelector (matchLabels and matchExpressions) selects `labels`.
fn selector_matches(
    selector: &serde_json::Value,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let by_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let by_expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            let got = labels.get(key).map(String::as_str);
            match e["operator"].as_str().unwrap() {
                "In" => got.is_some_and(|g| values.contains(&g)),
                "NotIn" => got.is_none_or(|g| !values.contains(&g)),
                "Exists" => got.is_some(),
                "DoesNotExist" => got.is_none(),
                op => panic!("unknown selector operator {op}"),
            }
        });
    by_labels && by_expressions
}

#[test]
fn shipped_pod_monitor_selects_the_pods_the_controller_builds() {
    let monitor = shipped_pod_monitor().unwrap();
    let monitor_ns = monitor["metadata"]["namespace"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| kustomization_namespace("deploy/monitoring"));
    let endpoints = monitor["spec"]["podMetricsEndpoints"].as_array().unwrap();
    assert!(!endpoints.is_empty());
    for tpl in shipped_templates() {
        let tpl_name = tpl.metadata.name.clone().unwrap();
        let pod = controller_built_pod(&tpl, "U0123456");
        let labels = pod.metadata.labels.clone().unwrap();
        // Without a namespaceSelector a PodMonitor selects pods of its own
        // namespace only.
        if monitor["spec"]["namespaceSelector"].is_null() {
            assert_eq!(
                monitor_ns, pod.metadata.namespace,
                "the PodMonitor lands in another namespace than the agent pods"
            );
        }
        assert!(
            selector_matches(&monitor["spec"]["selector"], &labels),
            "template {tpl_name}: the PodMonitor's selector does not select {labels:?}"
        );
        for ep in endpoints {
            let port = ep["port"].as_str().expect("endpoints name their port");
            let (container, number) = named_port(&pod, port)
                .unwrap_or_else(|| panic!("template {tpl_name}: no container port named {port}"));
            assert_eq!(container.name, "sidecar", "{tpl_name}");
            assert_eq!(
                number, 9464,
                "{tpl_name}: the sidecar's metrics server port"
            );
            // Every label a relabelling reads is one the pod carries.
            for rule in ep["relabelings"].as_array().into_iter().flatten() {
                for source in rule["sourceLabels"].as_array().into_iter().flatten() {
                    let source = source.as_str().unwrap();
                    if let Some(label) = source.strip_prefix("__meta_kubernetes_pod_label_") {
                        assert!(
                            labels.keys().any(|k| prom_label_name(k) == label),
                            "{tpl_name}: relabelling reads {source}, the pod has {labels:?}"
                        );
                    }
                }
            }
        }
        assert_eq!(labels["clawswarm.dev/owner"], "U0123456");
    }
    // An owner that is not a label value still yields a pod the API server
    // accepts, with an owner label.
    let tpl = &shipped_templates()[0];
    let pod = controller_built_pod(tpl, "alice@example.com");
    let owner = &pod.metadata.labels.unwrap()["clawswarm.dev/owner"];
    assert!(
        clawswarm_controller::runtime::kubernetes::label_value::is_valid(owner)
            && !owner.is_empty(),
        "{owner:?}"
    );
}

/// The real Prometheus, configured with the shipped PodMonitor translated
/// into a scrape job, discovers a pod built by the controller from a shipped
/// template (its labels and port as Kubernetes discovery would present them),
/// scrapes the sidecar's metrics server there and answers tokens per person.
/// A controller pod on the same address is not selected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_with_the_shipped_pod_monitor_answers_tokens_by_owner() {
    use std::sync::{Arc, atomic::AtomicBool};

    use clawswarm_sidecar::http::{HttpState, serve};
    use tokio_util::sync::CancellationToken;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = SidecarMetrics::new();
    metrics.add_usage(&Usage {
        input_tokens: 1000,
        output_tokens: 200,
        cache_read_tokens: 30,
        cache_write_tokens: 4,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let state = HttpState {
        metrics,
        certified: Arc::new(AtomicBool::new(true)),
        linked: Arc::new(AtomicBool::new(true)),
    };
    let server = tokio::spawn(serve(listener, state, stop.clone()));

    let monitor = shipped_pod_monitor().unwrap();
    let ep = &monitor["spec"]["podMetricsEndpoints"][0];
    let port = ep["port"].as_str().unwrap();
    let tpl = &shipped_templates()[0];
    let pod = controller_built_pod(tpl, "U0123456");
    let mut decoy = pod.clone();
    decoy.metadata.name = Some("clawswarm-controller-abc".into());
    decoy.metadata.labels = Some(std::collections::BTreeMap::from([(
        "app.kubernetes.io/name".to_string(),
        "clawswarm-controller".to_string(),
    )]));

    let groups = serde_json::json!([
        {"targets": [target.to_string()], "labels": pod_discovery_labels(&pod, port)},
        {"targets": [target.to_string()], "labels": pod_discovery_labels(&decoy, port)},
    ]);
    let prometheus = Prometheus::with_shipped_pod_monitor(&groups).unwrap();
    let result = prometheus
        .query_until(
            "sum by (owner) (clawswarm_tokens_total)",
            std::time::Duration::from_secs(90),
            |r| !r.is_empty(),
        )
        .await
        .unwrap();
    // Which targets were kept, with the labels the relabelling gave them.
    let active = prometheus.active_targets().await.unwrap();
    drop(prometheus);
    stop.cancel();
    let _ = server.await;

    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0]["metric"]["owner"], "U0123456", "{result:?}");
    assert_eq!(result[0]["value"][1], "1234", "{result:?}");
    assert_eq!(active.len(), 1, "only the agent pod is scraped: {active:?}");
    let labels = &active[0]["labels"];
    assert_eq!(labels["agent"], "alice", "{labels}");
    assert_eq!(labels["owner"], "U0123456", "{labels}");
    assert_eq!(
        labels["pod"],
        pod.metadata.name.clone().unwrap().as_str(),
        "{labels}"
    );
    assert_eq!(
        labels["namespace"],
        pod.metadata.namespace.clone().unwrap().as_str(),
        "{labels}"
    );
}

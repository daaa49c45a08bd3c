//! The product as an operator installs it, on the real API server: every
//! object `kustomize build deploy/` renders, the shipped Secret templates
//! with their values filled in, the controller's pods made from the rendered
//! Deployment's pod template (as its ReplicaSet would), and a sandboxed test
//! kubelet that runs every pod from its spec (see `kubelet::sandbox`).
//!
//! Image names are read from the rendered manifests (the Deployment's
//! container, `CLAWSWARM_SIDECAR_IMAGE` in the controller's ConfigMap, each
//! AgentTemplate's workload image) and mapped to this build's binaries and
//! the cached OpenClaw, so a misnamed image fails as `ErrImagePull`.
//!
//! What the test adds that a real cluster would have: the stub model and the
//! fake Slack (on the pod network's gateway; Slack through a node-local
//! loopback forward, as the controller accepts plain HTTP on loopback only).
//! Their addresses reach the product as the operator's own settings would:
//! keys in the filled-in Secrets (`CLAWSWARM_MODEL_UPSTREAM_URL`,
//! `CLAWSWARM_SLACK_API_URL`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DynamicObject, ObjectMeta, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::Value;

use crate::control_plane::{self, ControlPlane};
use crate::fake_slack::{FakeSlack, FakeSlackConfig};
use crate::harness::binaries;
use crate::kubelet::sandbox::PodNetwork;
use crate::kubelet::{KubeletConfig, LocalImage, SandboxConfig, TestKubelet};
use crate::stub_model::{StubConfig, StubModel};

/// The namespace deploy/ installs into.
pub const NAMESPACE: &str = "clawswarm";
/// The provider key only sidecars may hold.
pub const MODEL_KEY: &str = "sk-ant-install-test-key-only-sidecars-hold";
const FIELD_MANAGER: &str = "clawswarm-install-test";

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// How Slack reaches the installation: which kustomization is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `deploy/` as shipped: the leader holds Socket Mode connections.
    SocketMode,
    /// deploy/ plus `deploy/components/events-api`: Slack POSTs to the
    /// Service `clawswarm-slack-events`, signed with the signing secret.
    EventsApi,
}

impl Transport {
    /// The directory `kustomize build` renders: deploy/ itself, or an
    /// operator's overlay in `scratch` that adds the shipped component, as
    /// docs/kubernetes.md shows it (kustomize wants relative paths, and an
    /// overlay inside deploy/ would contain its own base).
    pub fn kustomization(self, scratch: &Path) -> anyhow::Result<PathBuf> {
        match self {
            Self::SocketMode => Ok(deploy_dir()),
            Self::EventsApi => {
                let dir = scratch.join("overlay-events-api");
                std::fs::create_dir_all(&dir)?;
                let deploy = relative_to(&dir, &deploy_dir())?;
                std::fs::write(
                    dir.join("kustomization.yaml"),
                    format!(
                        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                         resources:\n  - {deploy}\ncomponents:\n  - {deploy}/components/events-api\n"
                    ),
                )?;
                Ok(dir)
            }
        }
    }

    /// The Slack keys an operator fills into `clawswarm-controller-secrets`
    /// for this transport (the bot token and API URL are common to both).
    fn secret_values(self, slack: &FakeSlackConfig) -> Vec<(&'static str, String)> {
        match self {
            Self::SocketMode => vec![("CLAWSWARM_SLACK_APP_TOKEN", slack.app_token.clone())],
            Self::EventsApi => vec![(
                "CLAWSWARM_SLACK_SIGNING_SECRET",
                slack.signing_secret.clone(),
            )],
        }
    }
}

/// Everything running: drop it to tear the installation down (kubelet and
/// its pods first, then the API server, then the network).
pub struct Install {
    pub kubelet: TestKubelet,
    pub fake: FakeSlack,
    pub stub: StubModel,
    pub cp: ControlPlane,
    pub net: Arc<PodNetwork>,
    /// Every object `kustomize build deploy/` rendered.
    pub rendered: Vec<DynamicObject>,
}

impl Install {
    /// Render and apply deploy/, fill in and apply the Secrets, start the
    /// sandboxed kubelet. No controller runs yet: see [`Install::start_controller`].
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_transport(Transport::SocketMode).await
    }

    /// [`Install::new`] with the kustomization of `transport`.
    pub async fn with_transport(transport: Transport) -> anyhow::Result<Self> {
        crate::trace_init();
        let bins = binaries()?.clone();
        let openclaw = crate::openclaw::openclaw_bin()?;
        let net = PodNetwork::create()?;
        let gateway = std::net::IpAddr::V4(net.gateway());
        let cp = ControlPlane::start_serving(&[gateway]).await?;
        net.forward_api_server(cp.url()).await?;
        let stub = StubModel::start(StubConfig {
            listen: (gateway, 0).into(),
            api_key: Some(MODEL_KEY.into()),
            ..StubConfig::default()
        })
        .await?;
        let fake = FakeSlack::start_with(FakeSlackConfig {
            listen_ip: gateway,
            ..FakeSlackConfig::default()
        })
        .await?;

        let yaml = cp
            .kustomize_build(&transport.kustomization(cp.dir())?)
            .await?;
        let rendered = control_plane::parse_objects(&yaml)?;
        control_plane::apply_yaml(&cp.admin(), &yaml, FIELD_MANAGER).await?;
        let slack = fake.config();
        let mut slack_values = vec![
            ("CLAWSWARM_SLACK_BOT_TOKEN", slack.bot_token.clone()),
            ("CLAWSWARM_SLACK_API_URL", fake.api_url()),
        ];
        slack_values.extend(transport.secret_values(slack));
        let controller_secrets = fill_secret("controller-secrets.template.yaml", &slack_values)?;
        let shared_secrets = shared_secrets(&stub, &[])?;
        for secret in [controller_secrets, shared_secrets] {
            control_plane::apply_yaml(&cp.admin(), &secret, FIELD_MANAGER).await?;
        }

        let images = images(&rendered, &bins, &openclaw)?;
        let ws_port = fake.socket_mode_addr().port();
        let kubelet = TestKubelet::start(
            cp.admin(),
            KubeletConfig {
                namespace: NAMESPACE.into(),
                node_name: "node-1".into(),
                images,
                hook: None,
                root: cp.dir().join("kubelet"),
                sandbox: Some(SandboxConfig {
                    network: net.clone(),
                    api_ca_pem: cp.ca_pem().to_string(),
                    loopback_ports: vec![fake.addr().port(), ws_port],
                }),
            },
        )
        .await?;
        Ok(Self {
            kubelet,
            fake,
            stub,
            cp,
            net,
            rendered,
        })
    }

    /// A real search engine the agent pods reach (on the pod network's
    /// gateway), seeded with pipeline runs, and the shared Secret's
    /// company-data settings pointing at it, as an operator fills them in:
    /// agents made after this read it through their data proxy.
    pub async fn add_search_engine(&self) -> anyhow::Result<crate::search::SearchEngine> {
        let gateway = std::net::IpAddr::V4(self.net.gateway());
        let engine =
            tokio::task::spawn_blocking(move || crate::search::SearchEngine::start_on(gateway))
                .await??;
        engine
            .seed("pipelines", &crate::search::pipeline_runs())
            .await?;
        let secret = shared_secrets(
            &self.stub,
            &[
                ("CLAWSWARM_DATA_URL", engine.url().to_owned()),
                ("CLAWSWARM_DATA_API_KEY", crate::search::API_KEY.to_owned()),
            ],
        )?;
        control_plane::apply_yaml(&self.cp.admin(), &secret, FIELD_MANAGER).await?;
        Ok(engine)
    }

    /// The rendered controller Deployment.
    pub fn deployment(&self) -> anyhow::Result<Deployment> {
        rendered_as(&self.rendered, "Deployment", "clawswarm-controller")
    }

    /// A controller replica: a Pod made from the rendered Deployment's pod
    /// template, as its ReplicaSet would make it.
    pub async fn start_controller(&self, suffix: &str) -> anyhow::Result<Pod> {
        let dep = self.deployment()?;
        let tpl = dep.spec.context("deployment without spec")?.template;
        let mut labels = tpl
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert("pod-template-hash".into(), "install".into());
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}-install-{suffix}",
                    dep.metadata.name.clone().unwrap_or_default()
                )),
                namespace: Some(NAMESPACE.into()),
                labels: Some(labels),
                annotations: tpl.metadata.as_ref().and_then(|m| m.annotations.clone()),
                ..Default::default()
            },
            spec: tpl.spec,
            status: None,
        };
        Ok(Api::<Pod>::namespaced(self.cp.admin(), NAMESPACE)
            .create(&PostParams::default(), &pod)
            .await?)
    }

    /// Wait until pod `name` is Ready.
    pub async fn wait_pod_ready(&self, name: &str, timeout: Duration) -> anyhow::Result<Pod> {
        let api = Api::<Pod>::namespaced(self.cp.admin(), NAMESPACE);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(p) = api.get_opt(name).await?
                && crate::kubelet::pod_is_ready(&p)
            {
                return Ok(p);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "pod {name} not Ready after {timeout:?}; containers said:\n{}",
                    self.pod_logs(name)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `http://<pod IP>:<its container port called port><path>`: how a probe,
    /// Prometheus or another pod reaches pod `name` (the pod network is
    /// routed from here).
    pub async fn pod_url(&self, name: &str, port: &str, path: &str) -> anyhow::Result<String> {
        let pod = Api::<Pod>::namespaced(self.cp.admin(), NAMESPACE)
            .get(name)
            .await?;
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .with_context(|| format!("pod {name} has no IP"))?;
        let number = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(port))
            .map(|p| p.container_port)
            .with_context(|| format!("pod {name} has no port named {port}"))?;
        Ok(format!("http://{ip}:{number}{path}"))
    }

    /// `http://<Service address>:<its port called port><path>`: how an
    /// Ingress reaches the rendered Service `name` (kube-proxy's forwarder
    /// picks a Ready pod its selector matches, per connection).
    pub fn service_url(&self, name: &str, port: &str, path: &str) -> anyhow::Result<String> {
        let svc: k8s_openapi::api::core::v1::Service =
            rendered_as(&self.rendered, "Service", name)?;
        let number = svc
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(port))
            .map(|p| p.port)
            .with_context(|| format!("Service {name} has no port named {port}"))?;
        let addr = self.net.service_addr(NAMESPACE, name).with_context(|| {
            format!("Service {name} has no address yet (no pod started since it was applied)")
        })?;
        Ok(format!("http://{addr}:{number}{path}"))
    }

    /// Wait until pod `name`'s container port `port` accepts connections
    /// (its process bound it; it may not serve yet).
    pub async fn wait_port_bound(
        &self,
        name: &str,
        port: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let url = self.pod_url(name, port, "").await?;
        let addr = url.trim_start_matches("http://").to_string();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Ok(_)) = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(&addr),
            )
            .await
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{name}:{port} ({addr}) never accepted a connection within {timeout:?}\n{}",
                    self.pod_logs(name)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until pod `name` reports its containers restarted more than
    /// `restarts` times in all (a kubelet restarted them in place).
    pub async fn wait_restarted(
        &self,
        name: &str,
        restarts: i32,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let api = Api::<Pod>::namespaced(self.cp.admin(), NAMESPACE);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pod = api.get(name).await?;
            if restart_count(&pod) > restarts && crate::kubelet::pod_is_ready(&pod) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "pod {name} was not restarted within {timeout:?}\n{}",
                    self.pod_logs(name)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET `path` from pod `name` on its container port called `port`, as a
    /// probe or Prometheus reaches it.
    pub async fn http_get(
        &self,
        name: &str,
        port: &str,
        path: &str,
    ) -> anyhow::Result<(u16, String)> {
        use http_body_util::BodyExt as _;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let uri: http::Uri = self.pod_url(name, port, path).await?.parse()?;
        let resp = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
            .await
            .with_context(|| format!("GET {path} from {name} timed out"))??;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Poll `path` on pod `name` until it answers 200 (what a readiness
    /// probe does; the test kubelet's Ready means only "running"), and
    /// return the body.
    pub async fn wait_http_ok(
        &self,
        name: &str,
        port: &str,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = self.http_get(name, port, path).await;
            if let Ok((200, body)) = &last {
                return Ok(body.clone());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{path} on {name} never answered 200 within {timeout:?}: last {last:?}\n{}",
                    self.pod_logs(name)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The tail of every container log of pod `name`, for failure messages.
    pub fn pod_logs(&self, name: &str) -> String {
        let mut out = String::new();
        let dir = self.cp.dir().join("kubelet").join("pods").join(name);
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {}\n", log.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// `to` as a path relative to directory `from` (`../../work/x/deploy`).
fn relative_to(from: &Path, to: &Path) -> anyhow::Result<String> {
    let (from, to) = (from.canonicalize()?, to.canonicalize()?);
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out: Vec<String> = vec!["..".into(); from.components().count() - common];
    out.extend(
        to.components()
            .skip(common)
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Ok(out.join("/"))
}

/// Restarts of every container of `pod`, as its status reports them.
pub fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum()
}

/// A shipped Secret template with `values` set in its `stringData`. A key
/// the template does not list is added (settings an operator chooses, such
/// as the Slack API URL); an empty value stays as shipped.
/// The shipped shared Secret filled in: the model provider (the stub) and
/// `extra` settings.
fn shared_secrets(stub: &StubModel, extra: &[(&str, String)]) -> anyhow::Result<String> {
    let mut values = vec![
        ("CLAWSWARM_MODEL_API_KEY", MODEL_KEY.to_string()),
        ("CLAWSWARM_MODEL_UPSTREAM_URL", stub.base_url()),
    ];
    values.extend(extra.iter().cloned());
    fill_secret("shared-secrets.template.yaml", &values)
}

pub fn fill_secret(template: &str, values: &[(&str, String)]) -> anyhow::Result<String> {
    let path = deploy_dir().join("secrets").join(template);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let mut objects = control_plane::parse_objects(&text)?;
    let [secret] = objects.as_mut_slice() else {
        bail!("{template} holds {} objects, not one Secret", objects.len());
    };
    let data = secret
        .data
        .get_mut("stringData")
        .and_then(Value::as_object_mut)
        .with_context(|| format!("{template} has no stringData"))?;
    for (k, v) in values {
        data.insert((*k).to_string(), Value::String(v.clone()));
    }
    Ok(serde_json::to_string(&secret)?)
}

/// The rendered object of `kind` named `name`, as its typed form.
pub fn rendered_as<K: serde::de::DeserializeOwned>(
    rendered: &[DynamicObject],
    kind: &str,
    name: &str,
) -> anyhow::Result<K> {
    let obj = rendered
        .iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == kind) && o.name_any() == name)
        .with_context(|| format!("kustomize build deploy/ renders no {kind} {name}"))?;
    Ok(serde_json::from_value(serde_json::to_value(obj)?)?)
}

/// Image names exactly as the rendered manifests give them → local images.
fn images(
    rendered: &[DynamicObject],
    bins: &crate::harness::Binaries,
    openclaw: &Path,
) -> anyhow::Result<HashMap<String, LocalImage>> {
    let dep: Deployment = rendered_as(rendered, "Deployment", "clawswarm-controller")?;
    let controller_image = dep
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
        .context("the controller Deployment names no image")?;
    let config: ConfigMap = rendered_as(rendered, "ConfigMap", "clawswarm-config")?;
    let sidecar_image = config
        .data
        .unwrap_or_default()
        .get("CLAWSWARM_SIDECAR_IMAGE")
        .cloned()
        .context("clawswarm-config sets no CLAWSWARM_SIDECAR_IMAGE")?;
    let mut images = HashMap::from([
        (
            controller_image,
            LocalImage::new("/usr/local/bin/clawswarm")
                .with_file(&bins.controller, "/usr/local/bin/clawswarm"),
        ),
        (
            sidecar_image,
            LocalImage::new("/usr/local/bin/clawswarm-sidecar")
                .with_file(&bins.sidecar, "/usr/local/bin/clawswarm-sidecar"),
        ),
    ]);
    // The cached install: <dir>/bin/openclaw is a wrapper, <dir>/node_modules the package.
    let dir = openclaw
        .parent()
        .and_then(Path::parent)
        .context("CLAWSWARM_OPENCLAW is not <dir>/bin/openclaw")?;
    let node_bin = std::env::var_os("CLAWSWARM_NODE24_BIN")
        .map(PathBuf::from)
        .context("CLAWSWARM_NODE24_BIN is not set: run scripts/deps.sh openclaw")?;
    // deploy/agent/Dockerfile: one image holds OpenClaw and the sidecar
    // (the workload runs `clawswarm-sidecar install-policy`).
    let openclaw_image = LocalImage::new("/opt/openclaw/node_modules/.bin/openclaw")
        .with_file(dir.join("node_modules"), "/opt/openclaw/node_modules")
        .with_file(&bins.sidecar, "/usr/local/bin/clawswarm-sidecar")
        .with_file(&node_bin, "/opt/node/bin")
        .with_env(
            "PATH",
            "/opt/openclaw/node_modules/.bin:/opt/node/bin:/usr/local/bin:/usr/bin:/bin",
        );
    for obj in rendered
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "AgentTemplate"))
    {
        let image = obj.data["spec"]["workload"]["image"]
            .as_str()
            .with_context(|| format!("AgentTemplate {} names no image", obj.name_any()))?;
        images.insert(image.to_string(), openclaw_image.clone());
    }
    Ok(images)
}

/// `kustomize build deploy/`'s objects by kind, for checks on the rendering.
pub fn kinds(rendered: &[DynamicObject]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for o in rendered {
        if let Some(t) = &o.types {
            *out.entry(t.kind.clone()).or_insert(0) += 1;
        }
    }
    out
}

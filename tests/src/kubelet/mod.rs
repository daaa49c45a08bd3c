//! A test kubelet: binds the Pods of one namespace to its own Node and runs
//! their containers as local processes, so a controller's Pods come alive on
//! an API server without a scheduler, a container runtime or a real kubelet.
//!
//! What it does, and how it differs from a kubelet:
//! - Images map to local programs ([`LocalImage`]); an image with no mapping
//!   leaves the pod Pending with `ErrImagePull`, as a missing image would.
//!   `command[0]` stands for the image entrypoint and is replaced by the
//!   program; `command[1..]` and `args` follow (Kubernetes semantics otherwise).
//! - Volumes are directories: `emptyDir`/`configMap`/`secret`/`projected`
//!   per pod, PVCs per claim (their data outlives the pod). Paths under a
//!   mount in env values and args are rewritten to the local directory.
//!   Projected ServiceAccount tokens come from TokenRequest bound to the pod
//!   with the volume's audience, exactly what a kubelet writes (not refreshed).
//! - All pods share the host network: podIP is 127.0.0.1, so a test that runs
//!   two pods that listen must give them different ports (see [`LaunchHook`]).
//! - Ready means every container process is running; probes are not run.
//! - Init containers run one after another and must exit 0.
//! - `restartPolicy` is honoured for exited processes; a pod whose processes
//!   have all ended turns Succeeded or Failed.
//! - A pod with `deletionTimestamp` has its processes stopped (SIGTERM, then
//!   SIGKILL) and is deleted with grace 0, like a kubelet finishing a deletion.
//!
//! With [`KubeletConfig::sandbox`] set it runs pods as a container runtime
//! would instead (see [`sandbox`]): own network, mount and PID namespaces,
//! volumes at their spec paths, the securityContext's ids, the automounted
//! ServiceAccount token, Services by name. Nothing is rewritten; `LaunchHook`
//! still may change a launch, and a test that uses it says why.

mod process;
pub mod sandbox;
mod status;
mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use tokio::task::JoinHandle;

pub use process::{Launch, LaunchHook, LocalImage};
use process::{PodProcesses, Spawned};
pub use volumes::Mounts;

const EXIT_CHECK_INTERVAL: Duration = Duration::from_millis(500);
static EXEC_COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What the kubelet runs, and where.
pub struct KubeletConfig {
    pub namespace: String,
    /// Node name; one Node object per kubelet.
    pub node_name: String,
    /// Image (exactly as in the pod spec) → local program.
    pub images: HashMap<String, LocalImage>,
    /// Called for every container before it starts (ports, extra env, ...).
    pub hook: Option<LaunchHook>,
    /// Where pod directories, PVC directories and logs go.
    pub root: PathBuf,
    /// Run pods in sandboxes on this network (None: host processes).
    pub sandbox: Option<SandboxConfig>,
}

/// What a sandboxed kubelet needs besides its pods.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub network: Arc<sandbox::PodNetwork>,
    /// The cluster CA, for the automounted ServiceAccount volume.
    pub api_ca_pem: String,
    /// `127.0.0.1:P` in every pod forwards to `gateway:P`.
    pub loopback_ports: Vec<u16>,
}

impl std::fmt::Debug for KubeletConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletConfig")
            .field("namespace", &self.namespace)
            .field("node_name", &self.node_name)
            .field("images", &self.images.keys().collect::<Vec<_>>())
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// The running kubelet. Dropping it stops the watch and kills every process.
pub struct TestKubelet {
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TestKubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKubelet")
            .field("node", &self.shared.config.node_name)
            .finish_non_exhaustive()
    }
}

struct Shared {
    client: Client,
    config: KubeletConfig,
    /// Pod uid → its processes. Locked only briefly, never across an await.
    pods: Mutex<HashMap<String, PodProcesses>>,
}

impl TestKubelet {
    /// Register the Node and start watching `config.namespace`.
    pub async fn start(client: Client, config: KubeletConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.root)
            .with_context(|| format!("create {}", config.root.display()))?;
        register_node(&client, &config.node_name).await?;
        let shared = Arc::new(Shared {
            client,
            config,
            pods: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(run(shared.clone()));
        Ok(Self { task, shared })
    }

    pub fn node_name(&self) -> &str {
        &self.shared.config.node_name
    }

    /// Everything a container of pod `pod` wrote so far (all its restarts).
    pub fn logs(&self, pod: &str, container: &str) -> String {
        std::fs::read_to_string(log_path(&self.shared.config.root, pod, container))
            .unwrap_or_default()
    }

    /// Names of the pods whose processes run now.
    pub fn running_pods(&self) -> Vec<String> {
        let pods = self.shared.pods.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = pods.values().map(|p| p.name.clone()).collect();
        names.sort();
        names
    }

    /// The local directory of volume `volume` of pod `pod` (uid `uid`):
    /// where a projected token or config map landed.
    pub fn volume_dir(&self, pod: &str, uid: &str, volume: &str) -> PathBuf {
        self.shared
            .config
            .root
            .join("pods")
            .join(pod)
            .join(uid)
            .join("volumes")
            .join(volume)
    }

    /// Run `argv` in running container `container` of pod `pod` as
    /// `kubectl exec` would: its mounts, user, environment and network (a
    /// sandboxed kubelet only). Waits at most 60 s.
    pub async fn exec(
        &self,
        pod: &str,
        container: &str,
        argv: &[&str],
    ) -> anyhow::Result<std::process::Output> {
        let launch = {
            let pods = self.shared.pods.lock().unwrap_or_else(|p| p.into_inner());
            pods.values()
                .find(|p| p.name == pod)
                .and_then(|p| {
                    p.containers
                        .iter()
                        .find(|c| c.launch.container == container)
                })
                .map(|c| c.launch.clone())
                .with_context(|| format!("no running container {container} in pod {pod}"))?
        };
        let mut sandbox = launch
            .sandbox
            .clone()
            .context("exec needs a sandboxed kubelet")?;
        let n = EXEC_COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sandbox.scratch = sandbox.scratch.with_extension(format!("exec-{n}"));
        let (program, args) = argv.split_first().context("exec needs a command")?;
        let args: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
        let mut cmd = sandbox.command(program, &args, &launch.env, "/")?;
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .with_context(|| format!("exec in {pod}/{container} timed out"))?
            .with_context(|| format!("exec in {pod}/{container}"))
    }

    /// Kill every process of pod `pod` with SIGKILL and restart none, as if
    /// its node died: the pod ends Failed, with no clean stop anywhere.
    pub fn crash_pod(&self, pod: &str) -> anyhow::Result<()> {
        let mut pods = self.shared.pods.lock().unwrap_or_else(|p| p.into_inner());
        let running = pods
            .values_mut()
            .find(|p| p.name == pod)
            .with_context(|| format!("no running pod {pod}"))?;
        running.crash();
        Ok(())
    }

    /// SIGKILL pod `pod`'s containers and restart them in place, as a
    /// kubelet does after an OOM kill or a crash (`restartPolicy: Always`).
    pub fn kill_containers(&self, pod: &str) -> anyhow::Result<()> {
        let mut pods = self.shared.pods.lock().unwrap_or_else(|p| p.into_inner());
        let running = pods
            .values_mut()
            .find(|p| p.name == pod)
            .with_context(|| format!("no running pod {pod}"))?;
        running.kill_containers();
        Ok(())
    }

    /// The local directory of PVC `claim` (to look at what an agent stored).
    pub fn pvc_dir(&self, claim: &str) -> PathBuf {
        pvc_root(&self.shared.config.root)
            .join(&self.shared.config.namespace)
            .join(claim)
    }
}

impl Drop for TestKubelet {
    fn drop(&mut self) {
        // Aborting drops the task's future; the processes are killed when the
        // last `Shared` goes (kill_on_drop), which is this handle's clone.
        self.task.abort();
        let mut pods = self.shared.pods.lock().unwrap_or_else(|p| p.into_inner());
        pods.clear();
    }
}

/// The pod's Ready condition is True.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn log_path(root: &Path, pod: &str, container: &str) -> PathBuf {
    root.join("pods").join(pod).join(format!("{container}.log"))
}

fn pvc_root(root: &Path) -> PathBuf {
    root.join("pvc")
}

async fn register_node(client: &Client, name: &str) -> anyhow::Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/hostname".to_string(),
                name.to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).with_context(|| format!("create node {name}")),
    }
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(status::node_ready()),
        )
        .await
        .with_context(|| format!("mark node {name} Ready"))?;
    Ok(())
}

async fn run(shared: Arc<Shared>) {
    let api = Api::<Pod>::namespaced(shared.client.clone(), &shared.config.namespace);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut tick = tokio::time::interval(EXIT_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    Ok(watcher::Event::Init) => listed.clear(),
                    Ok(watcher::Event::InitApply(pod)) => {
                        if let Some(uid) = pod.uid() {
                            listed.insert(uid);
                        }
                        sync_pod(&shared, pod).await;
                    }
                    Ok(watcher::Event::InitDone) => {
                        let gone: Vec<String> = {
                            let pods = shared.pods.lock().unwrap_or_else(|p| p.into_inner());
                            pods.keys().filter(|uid| !listed.contains(*uid)).cloned().collect()
                        };
                        for uid in gone {
                            stop_pod(&shared, &uid).await;
                        }
                    }
                    Ok(watcher::Event::Apply(pod)) => sync_pod(&shared, pod).await,
                    Ok(watcher::Event::Delete(pod)) => {
                        if let Some(uid) = pod.uid() {
                            stop_pod(&shared, &uid).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "test kubelet watch error"),
                }
            }
            _ = tick.tick() => check_exits(&shared).await,
        }
    }
}

async fn sync_pod(shared: &Shared, pod: Pod) {
    let name = pod.name_any();
    if let Err(e) = try_sync_pod(shared, &pod).await {
        tracing::warn!(pod = %name, error = %format!("{e:#}"), "test kubelet could not sync pod");
    }
}

async fn try_sync_pod(shared: &Shared, pod: &Pod) -> anyhow::Result<()> {
    let name = pod.name_any();
    let uid = pod.uid().context("pod without uid")?;
    let api = Api::<Pod>::namespaced(shared.client.clone(), &shared.config.namespace);
    if pod.metadata.deletion_timestamp.is_some() {
        stop_pod(shared, &uid).await;
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e).context("delete pod with grace 0"),
        }
        return Ok(());
    }
    let spec = pod.spec.as_ref().context("pod without spec")?;
    match spec.node_name.as_deref() {
        None | Some("") => return bind(shared, &api, &name).await,
        Some(node) if node != shared.config.node_name => return Ok(()),
        Some(_) => {}
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Ok(());
    }
    let known = {
        let pods = shared.pods.lock().unwrap_or_else(|p| p.into_inner());
        pods.contains_key(&uid)
    };
    if known || status::is_blocked(pod) {
        return Ok(());
    }
    start_pod(shared, &api, pod).await
}

async fn bind(shared: &Shared, api: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(shared.config.node_name.clone()),
            ..Default::default()
        },
    };
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already bound, or deleted meanwhile: the next event tells.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("bind pod {name}")),
    }
}

async fn start_pod(shared: &Shared, api: &Api<Pod>, pod: &Pod) -> anyhow::Result<()> {
    let name = pod.name_any();
    let uid = pod.uid().context("pod without uid")?;
    let cfg = &shared.config;
    let pod_dir = cfg.root.join("pods").join(&name).join(&uid);
    let roots = volumes::VolumeRoots {
        pod_dir: &pod_dir,
        pvc_root: &pvc_root(&cfg.root),
    };
    let mut pod_sandbox = None;
    let mut service_account = None;
    if let Some(sb) = &cfg.sandbox {
        std::fs::create_dir_all(&pod_dir)
            .with_context(|| format!("create {}", pod_dir.display()))?;
        pod_sandbox = Some(
            sandbox::PodSandbox::create(
                &sb.network,
                &shared.client,
                pod,
                &pod_dir,
                &sb.loopback_ports,
            )
            .await?,
        );
        service_account =
            volumes::service_account_volume(&shared.client, pod, &pod_dir, &sb.api_ca_pem).await?;
    }
    let ctx = pod_sandbox.as_ref().map(|s| process::PodContext {
        sandbox: s,
        service_account: service_account.clone(),
        service_env: cfg
            .sandbox
            .as_ref()
            .map(|sb| {
                BTreeMap::from([
                    (
                        "KUBERNETES_SERVICE_HOST".to_string(),
                        sb.network.gateway().to_string(),
                    ),
                    (
                        "KUBERNETES_SERVICE_PORT".to_string(),
                        sandbox::API_SERVER_PORT.to_string(),
                    ),
                ])
            })
            .unwrap_or_default(),
    });
    let pod_ip = pod_sandbox
        .as_ref()
        .map_or_else(|| "127.0.0.1".to_string(), |s| s.ip.to_string());
    let planned = process::plan(
        pod,
        &cfg.images,
        cfg.hook.as_ref(),
        &shared.client,
        &roots,
        ctx.as_ref(),
    )
    .await;
    let plan = match planned {
        Ok(plan) => plan,
        Err(process::PlanError::ImageNotMapped { container, image }) => {
            let patch = status::waiting(
                &container,
                &image,
                "ErrImagePull",
                &format!("no local program for image {image}"),
            );
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .context("report ErrImagePull")?;
            return Ok(());
        }
        Err(process::PlanError::Other(e)) => {
            // Like a kubelet: the pod stays Pending, it does not fail.
            let first = pod.spec.as_ref().and_then(|s| s.containers.first());
            let container = first.map(|c| c.name.clone()).unwrap_or_default();
            let image = first.and_then(|c| c.image.clone()).unwrap_or_default();
            let patch = status::waiting(
                &container,
                &image,
                "CreateContainerConfigError",
                &format!("{e:#}"),
            );
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .context("report pod failure")?;
            return Err(e);
        }
    };
    let log = |container: &str| log_path(&cfg.root, &name, container);
    for init in &plan.init {
        if let Err(e) = process::run_to_completion(init, &log(&init.container)).await {
            let patch = status::failed("InitContainerFailed", &format!("{e:#}"));
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .context("report init failure")?;
            return Err(e);
        }
    }
    let mut running = PodProcesses::new(name.clone(), plan.restart_policy, plan.grace);
    running.sandbox = pod_sandbox;
    for launch in plan.containers {
        let path = log(&launch.container);
        let child = Spawned::spawn(launch, path)?;
        running.containers.push(child);
    }
    let patch = status::running(&running, plan.init.len(), pod, &pod_ip);
    shared
        .pods
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(uid, running);
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("mark pod {name} Running"))?;
    tracing::info!(pod = %name, "test kubelet started pod");
    Ok(())
}

async fn stop_pod(shared: &Shared, uid: &str) {
    let removed = shared
        .pods
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(uid);
    if let Some(pod) = removed {
        tracing::info!(pod = %pod.name, "test kubelet stopping pod");
        pod.stop().await;
    }
}

async fn check_exits(shared: &Shared) {
    let updates = {
        let mut pods = shared.pods.lock().unwrap_or_else(|p| p.into_inner());
        let mut updates = Vec::new();
        let mut finished = Vec::new();
        for (uid, pod) in pods.iter_mut() {
            match pod.reap_and_restart() {
                process::Reaped::Unchanged => {}
                process::Reaped::Changed => {
                    updates.push((pod.name.clone(), status::containers(pod)))
                }
                process::Reaped::Finished { succeeded } => {
                    updates.push((pod.name.clone(), status::terminal(pod, succeeded)));
                    finished.push(uid.clone());
                }
            }
        }
        for uid in finished {
            pods.remove(&uid);
        }
        updates
    };
    let api = Api::<Pod>::namespaced(shared.client.clone(), &shared.config.namespace);
    for (name, patch) in updates {
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            tracing::warn!(pod = %name, error = %e, "test kubelet could not report container exit");
        }
    }
}

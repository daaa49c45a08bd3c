//! Containers as local processes: turning a pod spec into launches, running
//! init containers, supervising the rest under the pod's restart policy.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVarSource, Pod, Secret};
use kube::{Api, Client, ResourceExt as _};
use tokio::process::{Child, Command};

use super::volumes::{self, Mounts, VolumeRoots};

const INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Cap on the pod's terminationGracePeriodSeconds, to keep tests short.
const MAX_GRACE: Duration = Duration::from_secs(5);

/// A local stand-in for a container image: its entrypoint and default args.
///
/// On a host-process kubelet `program` is a host path that replaces
/// `command[0]`. On a sandboxed kubelet an image is what a real one is:
/// files (host paths bind-mounted read-only at their path in the image),
/// environment (`PATH`), an entrypoint (`program`, a path in the image) and
/// a CMD; `command` and `args` override them as Kubernetes says.
#[derive(Clone, Debug)]
pub struct LocalImage {
    pub program: PathBuf,
    /// The image's CMD: used when the container sets neither command nor args.
    pub default_args: Vec<String>,
    /// Host path → path in the image (sandboxed kubelet only).
    pub files: Vec<(PathBuf, String)>,
    /// The image's environment, under the container's own (sandboxed only).
    pub env: Vec<(String, String)>,
}

impl LocalImage {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            default_args: Vec::new(),
            files: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Put host file or directory `host` at `path` in the image.
    pub fn with_file(mut self, host: impl Into<PathBuf>, path: &str) -> Self {
        self.files.push((host.into(), path.to_string()));
        self
    }

    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// One process about to start. The hook may change anything.
#[derive(Clone, Debug)]
pub struct Launch {
    pub pod: String,
    pub container: String,
    pub image: String,
    pub init: bool,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
    pub mounts: Mounts,
    /// Set on a sandboxed kubelet: `program`, `args`, env and `workdir` are
    /// then as the container sees them.
    pub sandbox: Option<super::sandbox::ContainerSandbox>,
}

/// Adjust a launch before it starts: give each pod its own ports, add env.
pub type LaunchHook = Arc<dyn Fn(&Pod, &mut Launch) -> anyhow::Result<()> + Send + Sync>;

pub(super) struct Plan {
    pub init: Vec<Launch>,
    pub containers: Vec<Launch>,
    pub restart_policy: RestartPolicy,
    pub grace: Duration,
}

#[derive(Debug)]
pub(super) enum PlanError {
    ImageNotMapped { container: String, image: String },
    Other(anyhow::Error),
}

impl From<anyhow::Error> for PlanError {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// What a sandboxed kubelet gives every container of one pod.
pub(super) struct PodContext<'a> {
    pub sandbox: &'a super::sandbox::PodSandbox,
    /// The automounted ServiceAccount volume, if any.
    pub service_account: Option<PathBuf>,
    /// `KUBERNETES_SERVICE_HOST`/`_PORT`.
    pub service_env: BTreeMap<String, String>,
}

pub(super) async fn plan(
    pod: &Pod,
    images: &HashMap<String, LocalImage>,
    hook: Option<&LaunchHook>,
    client: &Client,
    roots: &VolumeRoots<'_>,
    ctx: Option<&PodContext<'_>>,
) -> Result<Plan, PlanError> {
    let spec = pod.spec.as_ref().context("pod without spec")?;
    // Images first: an unmapped image must not cost a TokenRequest.
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let image = c.image.clone().unwrap_or_default();
        if !images.contains_key(&image) {
            return Err(PlanError::ImageNotMapped {
                container: c.name.clone(),
                image,
            });
        }
    }
    std::fs::create_dir_all(roots.pod_dir)
        .with_context(|| format!("create {}", roots.pod_dir.display()))?;
    let vols = volumes::prepare(client, pod, roots).await?;
    let mut init = Vec::new();
    let target = |c, init| Target {
        pod,
        container: c,
        init,
        images,
        hook,
        client,
        vols: &vols,
        pod_dir: roots.pod_dir,
    };
    for c in spec.init_containers.iter().flatten() {
        init.push(launch(&target(c, true), ctx).await?);
    }
    let mut containers = Vec::new();
    for c in &spec.containers {
        containers.push(launch(&target(c, false), ctx).await?);
    }
    let restart_policy = match spec.restart_policy.as_deref() {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure,
        Some("Never") => RestartPolicy::Never,
        Some(other) => return Err(anyhow::anyhow!("unknown restartPolicy {other}").into()),
    };
    let grace = spec
        .termination_grace_period_seconds
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
        .unwrap_or(MAX_GRACE)
        .min(MAX_GRACE);
    Ok(Plan {
        init,
        containers,
        restart_policy,
        grace,
    })
}

async fn launch(t: &Target<'_>, ctx: Option<&PodContext<'_>>) -> anyhow::Result<Launch> {
    match ctx {
        Some(ctx) => sandboxed_launch(t, ctx).await,
        None => launch_for(t).await,
    }
}

/// One container of one pod, and what the kubelet knows to run it.
struct Target<'a> {
    pod: &'a Pod,
    container: &'a Container,
    init: bool,
    images: &'a HashMap<String, LocalImage>,
    hook: Option<&'a LaunchHook>,
    client: &'a Client,
    vols: &'a BTreeMap<String, PathBuf>,
    pod_dir: &'a Path,
}

/// A container on a sandboxed kubelet: mounts at their spec paths, the
/// image's entrypoint and environment, the securityContext's ids.
async fn sandboxed_launch(t: &Target<'_>, ctx: &PodContext<'_>) -> anyhow::Result<Launch> {
    use super::sandbox::{Bind, ContainerSandbox};
    let (pod, c) = (t.pod, t.container);
    let spec = pod.spec.as_ref().context("pod without spec")?;
    let image = c.image.clone().unwrap_or_default();
    let local = t
        .images
        .get(&image)
        .with_context(|| format!("image {image} not mapped"))?;
    let pod_sc = spec.security_context.as_ref();
    let sc = c.security_context.as_ref();
    let id = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    let uid = id(sc.and_then(|s| s.run_as_user))
        .or_else(|| id(pod_sc.and_then(|s| s.run_as_user)))
        .unwrap_or(0);
    let gid = id(sc.and_then(|s| s.run_as_group))
        .or_else(|| id(pod_sc.and_then(|s| s.run_as_group)))
        .unwrap_or(0);
    let fs_group = id(pod_sc.and_then(|s| s.fs_group));
    let mut groups: Vec<u32> = fs_group.into_iter().collect();
    groups.extend(
        pod_sc
            .and_then(|s| s.supplemental_groups.clone())
            .into_iter()
            .flatten()
            .filter_map(|g| u32::try_from(g).ok()),
    );
    if sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod_sc.and_then(|s| s.run_as_non_root))
        == Some(true)
        && uid == 0
    {
        bail!(
            "container {} must run as non-root but its user is 0",
            c.name
        );
    }

    let mut binds: Vec<Bind> = local
        .files
        .iter()
        .map(|(host, path)| Bind {
            host: host.clone(),
            container: path.clone(),
            read_only: true,
        })
        .collect();
    for m in c.volume_mounts.iter().flatten() {
        let base = t
            .vols
            .get(&m.name)
            .with_context(|| format!("container {} mounts unknown volume {}", c.name, m.name))?;
        let host = match m.sub_path.as_deref() {
            Some(sub) if !sub.is_empty() => {
                if Path::new(sub).is_absolute() || sub.split('/').any(|p| p == "..") {
                    bail!("subPath {sub} of volume {} escapes it", m.name);
                }
                base.join(sub)
            }
            _ => base.clone(),
        };
        std::fs::create_dir_all(&host).with_context(|| format!("create {}", host.display()))?;
        let vol = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .context("mounted volume not in the pod")?;
        if let Some(gid) = fs_group {
            let writable = vol.empty_dir.is_some() || vol.persistent_volume_claim.is_some();
            volumes::apply_fs_group(&host, gid, writable)?;
        }
        binds.push(Bind {
            host,
            container: m.mount_path.trim_end_matches('/').to_string(),
            read_only: m.read_only == Some(true),
        });
    }
    if let Some(dir) = &ctx.service_account {
        if let Some(gid) = fs_group {
            volumes::apply_fs_group(dir, gid, false)?;
        }
        binds.push(Bind {
            host: dir.clone(),
            container: volumes::SERVICE_ACCOUNT_DIR.to_string(),
            read_only: true,
        });
    }

    let mut env: BTreeMap<String, String> = local.env.iter().cloned().collect();
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    env.extend(ctx.service_env.clone());
    env.insert("HOSTNAME".into(), pod.name_any());
    let own = container_env(pod, c, t.client, &ctx.sandbox.ip.to_string()).await?;
    env.extend(own);
    let expand = |s: &String| expand_vars(s, &env);
    let (program, args) = match (&c.command, &c.args) {
        (Some(cmd), args) if !cmd.is_empty() => (
            expand(&cmd[0]),
            cmd[1..]
                .iter()
                .chain(args.iter().flatten())
                .map(expand)
                .collect(),
        ),
        (_, Some(args)) if !args.is_empty() => (
            local.program.display().to_string(),
            args.iter().map(expand).collect(),
        ),
        _ => (
            local.program.display().to_string(),
            local.default_args.clone(),
        ),
    };
    let workdir = c.working_dir.clone().unwrap_or_else(|| "/".into());
    let kind = if t.init { "init" } else { "ctr" };
    let sandbox = ContainerSandbox {
        netns: ctx.sandbox.netns()?,
        hosts_file: ctx.sandbox.hosts_file.clone(),
        scratch: t.pod_dir.join(kind).join(&c.name),
        binds,
        read_only_root: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        uid,
        gid,
        groups,
    };
    let mut launch = Launch {
        pod: pod.name_any(),
        container: c.name.clone(),
        image,
        init: t.init,
        program: PathBuf::from(program),
        args,
        env,
        workdir: PathBuf::from(workdir),
        mounts: Mounts::default(),
        sandbox: Some(sandbox),
    };
    if let Some(hook) = t.hook {
        hook(pod, &mut launch).with_context(|| format!("launch hook for {}", c.name))?;
    }
    Ok(launch)
}

async fn launch_for(t: &Target<'_>) -> anyhow::Result<Launch> {
    let (pod, c, init, images, hook, client, vols, pod_dir) = (
        t.pod,
        t.container,
        t.init,
        t.images,
        t.hook,
        t.client,
        t.vols,
        t.pod_dir,
    );
    let image = c.image.clone().unwrap_or_default();
    let local = images
        .get(&image)
        .with_context(|| format!("image {image} not mapped"))?;
    let mounts = Mounts::for_container(c, vols)?;
    let env = container_env(pod, c, client, "127.0.0.1").await?;
    let expand = |s: &String| mounts.rewrite(&expand_vars(s, &env));
    let args: Vec<String> = match (&c.command, &c.args) {
        (Some(cmd), args) if !cmd.is_empty() => cmd[1..]
            .iter()
            .chain(args.iter().flatten())
            .map(expand)
            .collect(),
        (_, Some(args)) if !args.is_empty() => args.iter().map(expand).collect(),
        _ => local.default_args.clone(),
    };
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.clone(), mounts.rewrite(v)))
        .collect();
    let workdir = match &c.working_dir {
        Some(w) => PathBuf::from(mounts.rewrite(w)),
        None => pod_dir.to_path_buf(),
    };
    let mut launch = Launch {
        pod: pod.name_any(),
        container: c.name.clone(),
        image,
        init,
        program: local.program.clone(),
        args,
        env,
        workdir,
        mounts,
        sandbox: None,
    };
    if let Some(hook) = hook {
        hook(pod, &mut launch).with_context(|| format!("launch hook for {}", c.name))?;
    }
    Ok(launch)
}

/// `$(VAR)` references, as Kubernetes expands them in command, args and env.
fn expand_vars(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) if env.contains_key(&after[..end]) => {
                out.push_str(&env[&after[..end]]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

async fn container_env(
    pod: &Pod,
    c: &Container,
    client: &Client,
    pod_ip: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let ns = pod.namespace().unwrap_or_default();
    let mut env = BTreeMap::new();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(cm) = &from.config_map_ref {
            let found = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get_opt(&cm.name)
                .await
                .with_context(|| format!("envFrom configmap {}", cm.name))?;
            let data = match found {
                Some(c) => c.data.unwrap_or_default(),
                None if cm.optional == Some(true) => Default::default(),
                None => bail!("envFrom configmap {} not found", cm.name),
            };
            env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
        }
        if let Some(s) = &from.secret_ref {
            let found = Api::<Secret>::namespaced(client.clone(), &ns)
                .get_opt(&s.name)
                .await
                .with_context(|| format!("envFrom secret {}", s.name))?;
            let data = match found {
                Some(sec) => sec.data.unwrap_or_default(),
                None if s.optional == Some(true) => Default::default(),
                None => bail!("envFrom secret {} not found", s.name),
            };
            for (k, v) in data {
                let v = String::from_utf8(v.0)
                    .with_context(|| format!("secret key {k} is not UTF-8"))?;
                env.insert(format!("{prefix}{k}"), v);
            }
        }
    }
    for var in c.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => expand_vars(v, &env),
            (None, Some(src)) => env_from_source(pod, &ns, src, client, pod_ip)
                .await
                .with_context(|| format!("env {}", var.name))?,
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    Ok(env)
}

async fn env_from_source(
    pod: &Pod,
    ns: &str,
    src: &EnvVarSource,
    client: &Client,
    pod_ip: &str,
) -> anyhow::Result<String> {
    if let Some(f) = &src.field_ref {
        return field_value(pod, &f.field_path, pod_ip);
    }
    if let Some(k) = &src.secret_key_ref {
        let secret = Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(&k.name)
            .await
            .with_context(|| format!("get secret {}", k.name))?;
        let value = secret
            .and_then(|s| s.data)
            .and_then(|d| d.get(&k.key).cloned());
        return match value {
            Some(v) => String::from_utf8(v.0).context("secret value is not UTF-8"),
            None if k.optional == Some(true) => Ok(String::new()),
            None => bail!("secret {} has no key {}", k.name, k.key),
        };
    }
    if let Some(k) = &src.config_map_key_ref {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(&k.name)
            .await
            .with_context(|| format!("get configmap {}", k.name))?;
        let value = cm.and_then(|c| c.data).and_then(|d| d.get(&k.key).cloned());
        return match value {
            Some(v) => Ok(v),
            None if k.optional == Some(true) => Ok(String::new()),
            None => bail!("configmap {} has no key {}", k.name, k.key),
        };
    }
    bail!("env source not supported by the test kubelet (resourceFieldRef?)")
}

fn field_value(pod: &Pod, path: &str, pod_ip: &str) -> anyhow::Result<String> {
    let spec = pod.spec.as_ref();
    let bracketed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => pod_ip.to_string(),
        "status.hostIP" => "127.0.0.1".to_string(),
        _ => {
            if let Some(key) = bracketed("metadata.labels['") {
                pod.labels().get(&key).cloned().unwrap_or_default()
            } else if let Some(key) = bracketed("metadata.annotations['") {
                pod.annotations().get(&key).cloned().unwrap_or_default()
            } else {
                bail!("fieldRef {path} not supported by the test kubelet")
            }
        }
    })
}

fn command(launch: &Launch, log: &Path) -> anyhow::Result<Command> {
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out.try_clone().context("clone log handle")?;
    let mut cmd = match &launch.sandbox {
        Some(sb) => sb.command(
            &launch.program.display().to_string(),
            &launch.args,
            &launch.env,
            &launch.workdir.display().to_string(),
        )?,
        None => {
            std::fs::create_dir_all(&launch.workdir)
                .with_context(|| format!("create {}", launch.workdir.display()))?;
            let mut cmd = Command::new(&launch.program);
            // A container starts with its own environment only; PATH so scripts work.
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .envs(&launch.env)
                .args(&launch.args)
                .current_dir(&launch.workdir);
            cmd
        }
    };
    // Its own process group: stopping a container signals all of it.
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    Ok(cmd)
}

pub(super) async fn run_to_completion(launch: &Launch, log: &Path) -> anyhow::Result<()> {
    let mut child = command(launch, log)?
        .spawn()
        .with_context(|| format!("spawn init container {}", launch.container))?;
    let waited = tokio::time::timeout(INIT_TIMEOUT, child.wait()).await;
    if waited.is_err() {
        kill_group(&child, nix::sys::signal::Signal::SIGKILL);
    }
    let status = waited
        .with_context(|| {
            format!(
                "init container {} still running after {INIT_TIMEOUT:?}",
                launch.container
            )
        })?
        .context("wait for init container")?;
    if !status.success() {
        bail!("init container {} exited with {status}", launch.container);
    }
    Ok(())
}

/// A container's process, its launch (to restart it) and what it did.
pub(super) struct Spawned {
    pub launch: Launch,
    log: PathBuf,
    pub child: Option<Child>,
    pub restarts: i32,
    pub last_exit: Option<i32>,
}

impl Spawned {
    pub fn spawn(launch: Launch, log: PathBuf) -> anyhow::Result<Self> {
        let child = command(&launch, &log)?.spawn().with_context(|| {
            format!(
                "spawn container {} ({})",
                launch.container,
                launch.program.display()
            )
        })?;
        Ok(Self {
            launch,
            log,
            child: Some(child),
            restarts: 0,
            last_exit: None,
        })
    }
}

/// Dropping the handle (the kubelet goes away, the test ends) stops the
/// container like a node would: `kill_on_drop` alone reaches only `nsenter`,
/// and the container's init survives it, because dropping to the
/// container's user clears the parent-death signal `unshare --kill-child`
/// set. SIGKILL to the group reaches that init; its PID namespace goes with it.
impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            kill_group(child, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Signal the process group a container's process leads (see [`command`]).
/// Nothing once the process has been reaped: its id could be reused.
fn kill_group(child: &Child, signal: nix::sys::signal::Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-pid), signal);
    }
}

pub(super) struct PodProcesses {
    pub name: String,
    pub containers: Vec<Spawned>,
    /// The pod's network namespace (sandboxed kubelet), gone with the pod.
    pub sandbox: Option<super::sandbox::PodSandbox>,
    restart_policy: RestartPolicy,
    grace: Duration,
}

pub(super) enum Reaped {
    Unchanged,
    Changed,
    Finished { succeeded: bool },
}

impl PodProcesses {
    pub fn new(name: String, restart_policy: RestartPolicy, grace: Duration) -> Self {
        Self {
            name,
            containers: Vec::new(),
            sandbox: None,
            restart_policy,
            grace,
        }
    }

    /// Collect exited processes and restart them as the policy says.
    pub fn reap_and_restart(&mut self) -> Reaped {
        let mut changed = false;
        for c in &mut self.containers {
            let Some(child) = c.child.as_mut() else {
                continue;
            };
            let code = match child.try_wait() {
                Ok(None) => continue,
                Ok(Some(status)) => status.code().unwrap_or(-1),
                Err(_) => -1,
            };
            changed = true;
            c.child = None;
            c.last_exit = Some(code);
            tracing::info!(pod = %self.name, container = %c.launch.container, code, "test kubelet saw a container exit");
            let restart = match self.restart_policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => code != 0,
                RestartPolicy::Never => false,
            };
            if restart {
                match command(&c.launch, &c.log).and_then(|mut cmd| cmd.spawn().context("respawn"))
                {
                    Ok(child) => {
                        c.child = Some(child);
                        c.restarts += 1;
                    }
                    Err(e) => {
                        tracing::warn!(pod = %self.name, error = %format!("{e:#}"), "test kubelet could not restart a container")
                    }
                }
            }
        }
        if self.containers.iter().all(|c| c.child.is_none()) {
            let succeeded = self.containers.iter().all(|c| c.last_exit == Some(0));
            return Reaped::Finished { succeeded };
        }
        if changed {
            Reaped::Changed
        } else {
            Reaped::Unchanged
        }
    }

    /// SIGKILL every container's process group and restart none of them:
    /// what a pod sees when the node under it dies (no SIGTERM, no drain).
    pub fn crash(&mut self) {
        self.restart_policy = RestartPolicy::Never;
        for child in self.containers.iter().filter_map(|c| c.child.as_ref()) {
            kill_group(child, nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// SIGKILL every container's process group and let the restart policy
    /// restart them in place: a container killed by the OOM killer or a
    /// crash, the pod itself (name, labels, IP) unchanged.
    pub fn kill_containers(&mut self) {
        for child in self.containers.iter().filter_map(|c| c.child.as_ref()) {
            kill_group(child, nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// SIGTERM every process, wait up to the grace period, then SIGKILL.
    pub async fn stop(mut self) {
        for child in self.containers.iter().filter_map(|c| c.child.as_ref()) {
            // The whole group: a sandboxed container's own init is a child.
            kill_group(child, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        for c in &mut self.containers {
            if let Some(child) = c.child.as_mut()
                && tokio::time::timeout_at(deadline, child.wait())
                    .await
                    .is_err()
            {
                kill_group(child, nix::sys::signal::Signal::SIGKILL);
                let _ = child.kill().await;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn expand_vars_replaces_known_references_only() {
        let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand_vars("x$(A)y", &env), "x1y");
        assert_eq!(expand_vars("$(B)-$(A)", &env), "$(B)-1");
        assert_eq!(expand_vars("$(A", &env), "$(A");
    }

    #[test]
    fn field_value_reads_labels_and_refuses_unknown_paths() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        pod.metadata.labels = Some(BTreeMap::from([("app".into(), "x".into())]));
        let ip = "10.250.1.10";
        assert_eq!(field_value(&pod, "metadata.name", ip).unwrap(), "p");
        assert_eq!(
            field_value(&pod, "metadata.labels['app']", ip).unwrap(),
            "x"
        );
        assert_eq!(field_value(&pod, "status.podIP", ip).unwrap(), ip);
        assert!(field_value(&pod, "spec.nope", ip).is_err());
    }
}

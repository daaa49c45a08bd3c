//! Starts the real binaries — controller, sidecars, stub model — as
//! processes, the way a person runs them, and talks to them the way a
//! person would (the Gateway with the admin certificate, grpcurl, files).
//!
//! Every process is killed when its owner is dropped, including the
//! sidecars the controller started in their own process groups, so a
//! failing test does not leave agents behind.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use clawswarm_certs::{ChannelOptions, CredentialStore, Credentials, ServerIdentity};
use clawswarm_proto::v1::{
    self as pb, chat_event::Event, chat_request::Kind, gateway_client::GatewayClient,
};
use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::stub_model::LoggedRequest;

/// The workspace's built binaries.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub controller: PathBuf,
    pub sidecar: PathBuf,
    pub stub_model: PathBuf,
}

/// Find (building once if needed) the debug binaries of this workspace.
pub fn binaries() -> Result<&'static Binaries> {
    static BINS: OnceLock<Result<Binaries, String>> = OnceLock::new();
    BINS.get_or_init(|| locate().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

fn locate() -> Result<Binaries> {
    // target/<profile>/deps/<test binary> → target/<profile>
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target dir")?
        .to_owned();
    let bins = Binaries {
        controller: dir.join("clawswarm"),
        sidecar: dir.join("clawswarm-sidecar"),
        stub_model: dir.join("clawswarm-stub-model"),
    };
    // scripts/test.sh builds the binaries before the tests and says so.
    if std::env::var_os("CLAWSWARM_TEST_BINS_BUILT").is_none() {
        // Otherwise build (incrementally): `cargo test --test X` alone
        // would run whatever controller binary is on disk, and
        // `cargo test --workspace` does not build the binaries of packages
        // without integration tests (the controller, the sidecar).
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--workspace", "--bins", "--quiet"]);
        // What `cargo test` sets for the test process describes this test
        // crate; passed on, it marks build scripts' inputs as changed and
        // the next `cargo test` rebuilds every dependency.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_MANIFEST_")
                || key.starts_with("CARGO_BIN_")
                || matches!(
                    key.as_ref(),
                    "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "OUT_DIR"
                        | "LD_LIBRARY_PATH"
                        | "CARGO_RUSTC_CURRENT_DIR"
                )
            {
                build.env_remove(key.as_ref());
            }
        }
        let status = build
            .status()
            .context("running cargo build --workspace --bins")?;
        if !status.success() {
            bail!("cargo build --workspace --bins failed");
        }
    }
    Ok(bins)
}

/// How to start a controller.
#[derive(Clone, Debug, Default)]
pub struct ControllerOptions {
    /// Agents to create at start, `(name, owner)`.
    pub agents: Vec<(String, String)>,
    /// Per-agent workload command; `None` gives every agent its own stub
    /// model (`clawswarm-stub-model`) logging to `<data>/model.jsonl`.
    pub workload_command: Option<String>,
    /// Give no workload command: the controller's own settings decide
    /// (none at all, a shared URL, or the built-in OpenClaw profile).
    pub no_workload: bool,
    pub cert_lifetime: Option<String>,
    /// Extra environment for the controller (and, through it, sidecars).
    pub env: Vec<(String, String)>,
    /// Agents whose directory is a volume of its own of this many bytes
    /// (a tmpfs mounted before the controller starts: needs root), so a
    /// test can fill one agent's volume and no other's.
    pub small_volumes: Vec<(String, u64)>,
}

impl ControllerOptions {
    pub fn with_agents(names: &[&str]) -> Self {
        Self {
            agents: names
                .iter()
                .map(|n| (n.to_string(), format!("owner-{n}")))
                .collect(),
            ..Self::default()
        }
    }
}

/// A running `clawswarm run` with its own state directory.
pub struct Controller {
    child: Option<Child>,
    state: tempfile::TempDir,
    opts: ControllerOptions,
    ports: Option<[u16; 3]>,
    log: PathBuf,
    starts: u32,
    /// tmpfs mounts made for `small_volumes`, unmounted on drop.
    mounts: Vec<PathBuf>,
}

#[derive(serde::Deserialize)]
struct Endpoints {
    mesh: String,
    identity: String,
    http: String,
    pid: u32,
}

impl Controller {
    pub async fn start(opts: ControllerOptions) -> Result<Self> {
        // Every client a test makes (gRPC, reqwest) speaks rustls.
        clawswarm_certs::install_default_crypto_provider();
        let state = tempfile::Builder::new()
            .prefix("clawswarm-e2e-")
            .tempdir()?;
        let log = state.path().join("controller.log");
        let mut c = Self {
            child: None,
            state,
            opts,
            ports: None,
            log,
            starts: 0,
            mounts: Vec::new(),
        };
        for (name, bytes) in c.opts.small_volumes.clone() {
            let dir = c.agent_dir(&name);
            std::fs::create_dir_all(&dir)?;
            let out = std::process::Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={bytes},mode=0755"),
                    "tmpfs",
                ])
                .arg(&dir)
                .output()
                .context("running mount")?;
            if !out.status.success() {
                bail!(
                    "mounting a {bytes}-byte tmpfs as agent {name}'s volume (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            c.mounts.push(dir);
        }
        c.spawn().await?;
        Ok(c)
    }

    /// Start with these agents (stub model workloads) and wait until every
    /// one is connected and ready.
    pub async fn start_ready(agents: &[&str]) -> Result<Self> {
        let c = Self::start(ControllerOptions::with_agents(agents)).await?;
        for a in agents {
            c.wait_ready(a, Duration::from_secs(30)).await?;
        }
        Ok(c)
    }

    async fn spawn(&mut self) -> Result<()> {
        let bins = binaries()?;
        let addr = |i: usize| match self.ports {
            Some(p) => format!("127.0.0.1:{}", p[i]),
            None => "127.0.0.1:0".to_owned(),
        };
        let mut cmd = Command::new(&bins.controller);
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.state.path())
            .env("CLAWSWARM_STATE_DIR", self.state_dir())
            .env("CLAWSWARM_MESH_ADDR", addr(0))
            .env("CLAWSWARM_IDENTITY_ADDR", addr(1))
            .env("CLAWSWARM_HTTP_ADDR", addr(2))
            .env("CLAWSWARM_SIDECAR_BIN", &bins.sidecar)
            .env("CLAWSWARM_SHUTDOWN_GRACE", "2s")
            // Workloads run sealed, as they ship; scripts/deps.sh bwrap.
            .env(
                "CLAWSWARM_BWRAP",
                std::env::var_os("CLAWSWARM_BWRAP").unwrap_or_default(),
            )
            .env(
                "CLAWSWARM_LOG",
                "info,clawswarm_controller=debug,clawswarm_sidecar=debug",
            );
        if !self.opts.agents.is_empty() {
            let pairs: Vec<_> = self
                .opts
                .agents
                .iter()
                .map(|(n, o)| format!("{n}={o}"))
                .collect();
            cmd.env("CLAWSWARM_LOCAL_AGENTS", pairs.join(","));
        }
        if !self.opts.no_workload {
            let command = match &self.opts.workload_command {
                Some(c) => c.clone(),
                None => stub_workload_command("")?,
            };
            cmd.env("CLAWSWARM_WORKLOAD_COMMAND", command);
        }
        if let Some(l) = &self.opts.cert_lifetime {
            cmd.env("CLAWSWARM_CERT_LIFETIME", l);
        }
        cmd.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        let _ = std::fs::remove_file(self.state_dir().join("controller.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().context("starting the controller")?);
        self.starts += 1;
        let ep = self.wait_endpoints(Duration::from_secs(30)).await?;
        let port = |s: &str| {
            s.rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(0)
        };
        self.ports = Some([port(&ep.mesh), port(&ep.identity), port(&ep.http)]);
        Ok(())
    }

    async fn wait_endpoints(&mut self, timeout: Duration) -> Result<Endpoints> {
        let path = self.state_dir().join("controller.json");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(ep) = serde_json::from_str::<Endpoints>(&text)
                && Some(ep.pid) == self.child.as_ref().and_then(|c| c.id())
            {
                return Ok(ep);
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "controller exited with {status} before serving:\n{}",
                    self.logs()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "controller did not start within {timeout:?}:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state.path().join("state")
    }

    pub fn mesh_url(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.ports.map(|p| p[0]).unwrap_or(0)
        )
    }

    pub fn mesh_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.map(|p| p[0]).unwrap_or(0))
    }

    pub fn identity_url(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.ports.map(|p| p[1]).unwrap_or(0)
        )
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.map(|p| p[2]).unwrap_or(0))
    }

    /// `GET path` on the controller's HTTP port: the status and the body.
    pub async fn http_get(&self, path: &str) -> Result<(u16, String)> {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.http_url()))
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// What the controller (and nothing else) logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One agent's directories: `data/` and `run/` (pid files, logs, ports).
    pub fn agent_dir(&self, name: &str) -> PathBuf {
        self.state_dir().join("agents").join(name)
    }

    pub fn sidecar_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.agent_dir(name).join("run/sidecar.log")).unwrap_or_default()
    }

    /// An address the agent's sidecar recorded in `run/ports.json`:
    /// `"http"` (metrics, probes) or `"debug"` (its gRPC debug endpoint).
    pub fn sidecar_addr(&self, name: &str, which: &str) -> Result<String> {
        let path = self.agent_dir(name).join("run/ports.json");
        let ports: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        ports[which]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{} has no {which:?}", path.display()))
    }

    /// Run the `clawswarm` CLI against this controller (its state directory
    /// holds the address and the admin credentials), with `stdin` piped in
    /// and closed after it, as `printf … | clawswarm …` would.
    pub async fn cli(&self, args: &[&str], stdin: &[u8]) -> Result<std::process::Output> {
        use tokio::io::AsyncWriteExt as _;
        let mut child = Command::new(&binaries()?.controller)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.state.path())
            .env("CLAWSWARM_STATE_DIR", self.state_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the clawswarm CLI")?;
        let mut input = child.stdin.take().context("CLI has no stdin")?;
        let data = stdin.to_vec();
        // Written beside the wait: a CLI that answers before reading all
        // of stdin must not deadlock the test.
        let writer = tokio::spawn(async move {
            let _ = input.write_all(&data).await;
        });
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .context("CLI still running after 120 s")??;
        let _ = writer.await;
        Ok(out)
    }

    /// Model calls an agent's stub workload logged.
    pub fn model_requests(&self, name: &str) -> Vec<LoggedRequest> {
        read_model_log(&self.agent_dir(name).join("data/model.jsonl"))
    }

    pub fn sidecar_pid(&self, name: &str) -> Option<i32> {
        read_pid(&self.agent_dir(name).join("run/sidecar.pid"))
    }

    /// SIGKILL an agent's sidecar alone (its workload keeps running, as a
    /// container restarting in its pod), then wait until the controller has
    /// started a new one and it is ready.
    pub async fn restart_sidecar(&self, name: &str, timeout: Duration) -> Result<()> {
        let before = self
            .sidecar_pid(name)
            .with_context(|| format!("agent {name} has no sidecar"))?;
        kill(Pid::from_raw(before), Signal::SIGKILL)
            .with_context(|| format!("kill sidecar {before} of agent {name}"))?;
        wait_for("a new sidecar", timeout, || {
            self.sidecar_pid(name).is_some_and(|p| p != before)
        })
        .await?;
        self.wait_ready(name, timeout).await
    }

    pub fn workload_pid(&self, name: &str) -> Option<i32> {
        read_pid(&self.agent_dir(name).join("run/workload.pid"))
    }

    /// SIGKILL an agent's sidecar and workload with everything they
    /// started (each runs in its own process group), as a pod that dies
    /// with its node (or the OOM killer) loses both; the controller starts
    /// them again.
    pub fn kill_agent_processes(&self, name: &str) -> Result<()> {
        for pid in [self.sidecar_pid(name), self.workload_pid(name)] {
            let pid = pid.with_context(|| format!("agent {name} has no running process"))?;
            killpg(Pid::from_raw(pid), Signal::SIGKILL)
                .with_context(|| format!("kill group {pid} of agent {name}"))?;
        }
        Ok(())
    }

    /// The sidecar's own part of an agent's volume (ledger, journal,
    /// outbox), which its workload never sees.
    pub fn sidecar_dir(&self, name: &str) -> PathBuf {
        self.agent_dir(name).join("sidecar")
    }

    /// Files grpcurl needs: `-cacert`, `-cert`, `-key`.
    pub fn admin_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        let d = self.state_dir().join("admin");
        (
            d.join("ca.pem"),
            d.join("admin.pem"),
            d.join("admin-key.pem"),
        )
    }

    pub fn trust_bundle(&self) -> Result<String> {
        Ok(std::fs::read_to_string(
            self.state_dir().join("ca/trust-bundle.pem"),
        )?)
    }

    /// A channel to the mesh port with the admin certificate.
    pub async fn admin_channel(&self) -> Result<Channel> {
        let (ca, cert, key) = self.admin_files();
        let creds = Credentials::from_pem(
            &std::fs::read_to_string(cert)?,
            &std::fs::read_to_string(key)?,
        )?;
        let tls = clawswarm_certs::client_config(
            Some(CredentialStore::new(creds)),
            &std::fs::read_to_string(ca)?,
            ServerIdentity::DnsName("127.0.0.1".into()),
        )?;
        Ok(
            clawswarm_certs::mtls_channel(&self.mesh_url(), tls, &ChannelOptions::default())
                .await?,
        )
    }

    /// A channel to agent `name`'s sidecar debug endpoint with the admin
    /// certificate; the sidecar's certificate names its SPIFFE id.
    pub async fn debug_channel(&self, name: &str) -> Result<Channel> {
        let (_, cert, key) = self.admin_files();
        let creds = Credentials::from_pem(
            &std::fs::read_to_string(cert)?,
            &std::fs::read_to_string(key)?,
        )?;
        let td = clawswarm_certs::TrustDomain::new("clawswarm.local")?;
        let id =
            clawswarm_certs::SpiffeId::agent(td, clawswarm_certs::AgentId::new("local", name)?);
        let tls = clawswarm_certs::client_config(
            Some(CredentialStore::new(creds)),
            &self.trust_bundle()?,
            ServerIdentity::Spiffe(id),
        )?;
        let url = format!("https://{}", self.sidecar_addr(name, "debug")?);
        Ok(clawswarm_certs::mtls_channel(&url, tls, &ChannelOptions::default()).await?)
    }

    /// A Gateway client with the admin certificate.
    pub async fn gateway(&self) -> Result<GatewayClient<Channel>> {
        Ok(GatewayClient::new(self.admin_channel().await?))
    }

    /// Wait until the agent is connected and its workload ready.
    /// The agent as `clawswarm agents list` shows it (Gateway `ListAgents`).
    pub async fn listed(&self, name: &str) -> Result<pb::Agent> {
        let mut gw = self.gateway().await?;
        let agents = gw
            .list_agents(pb::ListAgentsRequest {})
            .await?
            .into_inner()
            .agents;
        agents
            .into_iter()
            .find(|a| a.name == name)
            .with_context(|| format!("agent {name} is not listed"))
    }

    /// Wait until the agent's listed detail contains `needle`; the listing.
    pub async fn wait_listed_detail(
        &self,
        name: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<pb::Agent> {
        self.wait_listed(name, timeout, |a| a.detail.contains(needle))
            .await
            .with_context(|| format!("agent {name}'s detail never said {needle:?}"))
    }

    /// Wait until the agent as listed satisfies `done`; the listing.
    pub async fn wait_listed(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&pb::Agent) -> bool,
    ) -> Result<pb::Agent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let listed = self.listed(name).await;
            if let Ok(a) = &listed
                && done(a)
            {
                return listed;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "agent {name} as listed, after {timeout:?}: {listed:?}\n{}",
                    tail(&self.logs())
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> Result<()> {
        self.wait_agent(name, timeout, |a| a.connected && a.workload_ready)
            .await
    }

    /// Wait until the agent's sidecar holds its link (ready or not).
    pub async fn wait_connected(&self, name: &str, timeout: Duration) -> Result<()> {
        self.wait_agent(name, timeout, |a| a.connected).await
    }

    async fn wait_agent(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&pb::Agent) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Ok(mut gw) = self.gateway().await
                && let Ok(a) = gw
                    .get_agent(pb::GetAgentRequest { name: name.into() })
                    .await
            {
                let a = a.into_inner();
                if done(&a) {
                    return Ok(());
                }
                last = format!("{a:?}");
            }
            if Instant::now() > deadline {
                bail!(
                    "agent {name} not as awaited within {timeout:?}; last state {last}\ncontroller log:\n{}\nsidecar log:\n{}",
                    tail(&self.logs()),
                    tail(&self.sidecar_log(name))
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no goodbye, no drain. Agents keep running.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit; returns its status.
    pub async fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("controller not running")?;
        let pid = child.id().context("no pid")?;
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM)?;
        Ok(tokio::time::timeout(Duration::from_secs(30), child.wait()).await??)
    }

    /// Start again on the same state directory and ports (after kill/terminate).
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.kill().await?;
        }
        self.spawn().await
    }

    /// How many times this controller process has been started.
    pub fn starts(&self) -> u32 {
        self.starts
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let pid = child.id();
            let _ = child.start_kill();
            // Wait until it is gone: a controller still alive could be
            // restarting an agent, whose new processes the pid files below
            // would not name yet (they leaked, orphaned, past the test).
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                reap(Pid::from_raw(pid), Duration::from_secs(5));
            }
        }
        // Agents run in their own process groups: stop them by pid file.
        for pid in agent_pids(&self.state_dir().join("agents")) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Lazily: a process that was just killed may still hold a file.
        for dir in &self.mounts {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(dir)
                .status();
        }
    }
}

/// Reap a killed child, waiting at most `limit` (a drop cannot await).
fn reap(pid: Pid, limit: Duration) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
            // Reaped, or already reaped by tokio: gone either way.
            _ => return,
        }
    }
}

/// The gateway process and its descendants, from the run dir's pid file.
/// Empty when the pid file is missing or unreadable.
pub fn workload_tree(run_dir: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(run_dir.join("workload.pid")).unwrap_or_default();
    text.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .map(process_tree)
        .unwrap_or_default()
}

/// `root` and its descendants (from /proc).
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
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

/// The live (not zombie) members of process group `pgid` (from /proc).
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command name (which may hold spaces): state, ppid, pgrp.
            let rest: Vec<&str> = stat
                .rsplit_once(')')
                .map_or("", |(_, r)| r)
                .split_whitespace()
                .collect();
            rest.first() != Some(&"Z") && rest.get(2) == Some(&pgid.to_string().as_str())
        })
        .collect()
}

/// The pids recorded for every agent's sidecar and workload under a local
/// runtime's `agents/` directory (each leads its own process group).
pub fn agent_pids(agents_dir: &Path) -> Vec<i32> {
    let Ok(dirs) = std::fs::read_dir(agents_dir) else {
        return Vec::new();
    };
    dirs.flatten()
        .flat_map(|d| ["sidecar.pid", "workload.pid"].map(|f| d.path().join("run").join(f)))
        .filter_map(|f| read_pid(&f))
        .collect()
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The default per-agent workload (a stub model logging to
/// `<data>/model.jsonl`) with extra `clawswarm-stub-model` flags.
pub fn stub_workload_command(extra_flags: &str) -> Result<String> {
    let bins = binaries()?;
    Ok(format!(
        "{} --listen 127.0.0.1:{{port}} --log {{data_dir}}/model.jsonl {extra_flags}",
        bins.stub_model.display()
    )
    .trim_end()
    .to_owned())
}

/// A finished command's stdout then stderr, as one text (for assertions
/// and failure messages).
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Parse a stub model's JSONL log.
pub fn read_model_log(path: &Path) -> Vec<LoggedRequest> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn tail(s: &str) -> String {
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The last ~6 KB of a log, for a failure message (cut at a character
/// boundary).
pub fn tail_of(s: &str) -> &str {
    let mut at = s.len().saturating_sub(6000);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

/// A whole Gateway reply, as a client saw it.
#[derive(Debug, Default, Clone)]
pub struct Reply {
    pub turn_id: String,
    pub progress: Vec<String>,
    /// `(seq, delta)` in arrival order.
    pub chunks: Vec<(u64, String)>,
    pub end: Option<pb::TurnEnd>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.chunks.iter().map(|(_, d)| d.as_str()).collect()
    }

    pub fn outcome(&self) -> Option<pb::Outcome> {
        self.end.as_ref().map(|e| e.outcome())
    }
}

/// Start a turn and collect the reply up to its end.
pub async fn chat(
    gw: &mut GatewayClient<Channel>,
    agent: &str,
    conversation: &str,
    text: &str,
) -> Result<Reply> {
    let req = pb::ChatRequest {
        agent: agent.into(),
        kind: Some(Kind::Start(pb::StartTurn {
            conversation: conversation.into(),
            text: text.into(),
            turn_id: String::new(),
        })),
    };
    let stream = gw.chat(req).await?.into_inner();
    collect(stream, None).await
}

/// Read a chat stream to its end (or until `stop_after` chunks, leaving
/// the turn running on the agent).
pub async fn collect(
    mut stream: tonic::Streaming<pb::ChatEvent>,
    stop_after: Option<usize>,
) -> Result<Reply> {
    let mut reply = Reply::default();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .context("no event for 60 s")??
    {
        match ev.event {
            Some(Event::Accepted(a)) => reply.turn_id = a.turn_id,
            Some(Event::Progress(p)) => reply.progress.push(p.text),
            Some(Event::Chunk(c)) => {
                reply.chunks.push((c.seq, c.delta));
                if stop_after.is_some_and(|n| reply.chunks.len() >= n) {
                    return Ok(reply);
                }
            }
            Some(Event::End(e)) => {
                reply.end = Some(e);
                return Ok(reply);
            }
            None => bail!("empty chat event"),
        }
    }
    bail!("stream ended without TurnEnd: {reply:?}")
}

/// The grpcurl binary `scripts/deps.sh grpcurl` installed.
pub fn grpcurl() -> Result<PathBuf> {
    let path = std::env::var_os("CLAWSWARM_GRPCURL")
        .map(PathBuf::from)
        .context("CLAWSWARM_GRPCURL is not set: run the tests with scripts/test.sh (it installs grpcurl)")?;
    if !path.is_file() {
        bail!(
            "CLAWSWARM_GRPCURL={} does not exist: run scripts/deps.sh grpcurl",
            path.display()
        );
    }
    Ok(path)
}

/// Wait for a condition on a file's contents (logs, mostly).
pub async fn wait_for<F: Fn() -> bool>(what: &str, timeout: Duration, f: F) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A hand-made sidecar: opens AgentLink.Connect with `creds`, sends
/// `frames` (Hello first, usually) and returns the controller's stream, or
/// the error the connection or the controller gave.
pub async fn raw_agent_link(
    controller: &Controller,
    creds: Credentials,
    frames: Vec<pb::SidecarFrame>,
) -> Result<(
    tokio::sync::mpsc::Sender<pb::SidecarFrame>,
    tonic::Streaming<pb::ControllerFrame>,
)> {
    let bundle = controller.trust_bundle()?;
    let td = creds.spiffe_id().trust_domain().clone();
    let server = clawswarm_certs::SpiffeId::controller(td, "local")?;
    let tls = clawswarm_certs::client_config(
        Some(CredentialStore::new(creds)),
        &bundle,
        ServerIdentity::Spiffe(server),
    )?;
    let channel =
        clawswarm_certs::mtls_channel(&controller.mesh_url(), tls, &ChannelOptions::default())
            .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    for f in frames {
        tx.send(f).await?;
    }
    let mut client = pb::agent_link_client::AgentLinkClient::new(channel);
    let resp = client
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    Ok((tx, resp.into_inner()))
}

/// The controller's CA, read from its state directory (what an attacker
/// who stole an issued certificate could also present).
pub fn controller_authority(controller: &Controller) -> Result<clawswarm_certs::Authority> {
    let td = clawswarm_certs::TrustDomain::new("clawswarm.local")?;
    Ok(clawswarm_certs::Authority::load_or_create(
        &controller.state_dir().join("ca"),
        &td,
    )?)
}

/// A certificate for agent `name` (local namespace) from the controller's
/// own CA: what a sidecar holds after Certify, for hand-made sidecars.
pub fn agent_credentials(
    controller: &Controller,
    name: &str,
) -> Result<clawswarm_certs::Credentials> {
    let authority = controller_authority(controller)?;
    let id = clawswarm_certs::SpiffeId::agent(
        authority.trust_domain().clone(),
        clawswarm_certs::AgentId::new("local", name)?,
    );
    Ok(authority.issue(
        &id,
        &clawswarm_certs::LeafPolicy::default(),
        std::time::SystemTime::now(),
    )?)
}

/// `Hello` for an agent name in the local namespace.
pub fn hello(agent: &str) -> pb::SidecarFrame {
    pb::SidecarFrame {
        frame: Some(pb::sidecar_frame::Frame::Hello(pb::Hello {
            agent: format!("local/{agent}"),
            version: "test".into(),
            capabilities: vec![],
            pending: vec![],
            library_skills: vec![],
        })),
    }
}

/// Send `body` as the one request message of gRPC method `path` (such as
/// `/clawswarm.v1.Gateway/ListAgents`) without encoding it, so a test can
/// send what no generated client would: undecodable or oversized messages.
/// Returns the first response message's bytes or the status answered.
pub async fn raw_grpc_call(
    channel: Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<bytes::Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
    grpc.unary(
        tonic::Request::new(bytes::Bytes::from(body)),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Message bytes in and out as they are.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n)))
    }
}

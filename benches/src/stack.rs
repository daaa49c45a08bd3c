//! The processes under test: the release controller binary (which, with
//! local processes on, starts real sidecars and stub workloads), how to
//! reach it, and what /proc says about any of them.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use clawswarm_certs::{
    AgentId, Authority, ChannelOptions, CredentialStore, Credentials, LeafPolicy, ServerIdentity,
    SpiffeId, TrustDomain,
};
use clawswarm_proto::v1::gateway_client::GatewayClient;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

pub const NAMESPACE: &str = "local";
pub const TRUST_DOMAIN: &str = "clawswarm.local";

/// The release binaries this harness starts, next to its own executable.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub controller: PathBuf,
    pub sidecar: PathBuf,
    pub stub_model: PathBuf,
}

impl Binaries {
    pub fn locate(dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(d) => d,
            None => std::env::current_exe()?
                .parent()
                .context("executable has no directory")?
                .to_owned(),
        };
        let bins = Self {
            controller: dir.join("clawswarm"),
            sidecar: dir.join("clawswarm-sidecar"),
            stub_model: dir.join("clawswarm-stub-model"),
        };
        for b in [&bins.controller, &bins.sidecar, &bins.stub_model] {
            if !b.is_file() {
                bail!(
                    "{} not found: build the binaries first (cargo build --release --bins)",
                    b.display()
                );
            }
        }
        if !dir.ends_with("release") {
            eprintln!(
                "warning: binaries in {} are not a release build; figures will be pessimistic",
                dir.display()
            );
        }
        Ok(bins)
    }
}

/// What `<state>/controller.json` says.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Endpoints {
    pub mesh: String,
    pub identity: String,
    #[allow(dead_code)]
    pub http: String,
    pub pid: u32,
}

/// How one controller is started; restarting with the same value brings it
/// back on the same addresses and state.
#[derive(Clone, Debug)]
pub struct ControllerSpec {
    pub state_dir: PathBuf,
    pub mesh_addr: String,
    pub identity_addr: String,
    pub http_addr: String,
    /// `name=owner` pairs.
    pub agents: Vec<String>,
    /// Start real sidecars and stub workloads.
    pub processes: bool,
    pub log_level: String,
}

pub struct Controller {
    pub child: Child,
    pub endpoints: Endpoints,
    pub spec: ControllerSpec,
}

impl Controller {
    pub async fn start(bins: &Binaries, spec: ControllerSpec) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&spec.state_dir)?;
        let endpoints_path = spec.state_dir.join("controller.json");
        let _ = std::fs::remove_file(&endpoints_path);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.state_dir.join("controller.log"))?;
        let mut cmd = Command::new(&bins.controller);
        cmd.arg("run")
            .env("CLAWSWARM_STATE_DIR", &spec.state_dir)
            .env("CLAWSWARM_MESH_ADDR", &spec.mesh_addr)
            .env("CLAWSWARM_IDENTITY_ADDR", &spec.identity_addr)
            .env("CLAWSWARM_HTTP_ADDR", &spec.http_addr)
            .env("CLAWSWARM_LOCAL_AGENTS", spec.agents.join(","))
            .env("CLAWSWARM_LOCAL_PROCESSES", spec.processes.to_string())
            .env("CLAWSWARM_SIDECAR_BIN", &bins.sidecar)
            .env(
                "CLAWSWARM_WORKLOAD_COMMAND",
                format!(
                    "{} --listen 127.0.0.1:{{port}} --session-turns 0 --keep-requests 16",
                    bins.stub_model.display()
                ),
            )
            .env("CLAWSWARM_WORKLOAD_MODEL", "stub")
            // Turns measure the relay: a history growing over thousands of
            // turns in one conversation would change what each one costs.
            .env("CLAWSWARM_WORKLOAD_HISTORY", "off")
            .env("CLAWSWARM_LOG", &spec.log_level)
            .env("RUST_LOG", &spec.log_level)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting the controller")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let endpoints = loop {
            if let Ok(text) = std::fs::read_to_string(&endpoints_path)
                && let Ok(e) = serde_json::from_str::<Endpoints>(&text)
            {
                break e;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "controller exited with {status}; see {}",
                    spec.state_dir.join("controller.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("controller did not write controller.json within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(Self {
            child,
            endpoints,
            spec,
        })
    }

    pub fn pid(&self) -> i32 {
        self.endpoints.pid as i32
    }

    pub fn mesh_url(&self) -> String {
        format!("https://{}", self.endpoints.mesh)
    }

    /// SIGKILL: no drain, no goodbye.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        Ok(())
    }

    /// SIGTERM and wait (which also stops the agents it started).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }

    pub fn authority(&self) -> anyhow::Result<Authority> {
        let td = TrustDomain::new(TRUST_DOMAIN)?;
        Ok(Authority::load_or_create(
            &self.spec.state_dir.join("ca"),
            &td,
        )?)
    }

    pub fn controller_identity() -> anyhow::Result<ServerIdentity> {
        let td = TrustDomain::new(TRUST_DOMAIN)?;
        Ok(ServerIdentity::Spiffe(SpiffeId::controller(td, NAMESPACE)?))
    }

    /// A Gateway client with the admin certificate the controller wrote.
    pub async fn gateway(&self) -> anyhow::Result<GatewayClient<Channel>> {
        let dir = self.spec.state_dir.join("admin");
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f)).with_context(|| format!("reading admin/{f}"))
        };
        let creds = Credentials::from_pem(&read("admin.pem")?, &read("admin-key.pem")?)?;
        let tls = clawswarm_certs::client_config(
            Some(CredentialStore::new(creds)),
            &read("ca.pem")?,
            Self::controller_identity()?,
        )?;
        let channel =
            clawswarm_certs::mtls_channel(&self.mesh_url(), tls, &ChannelOptions::default())
                .await?;
        Ok(GatewayClient::new(channel))
    }

    /// Wait until every named agent is connected and its workload ready.
    pub async fn wait_ready(&self, names: &[String], timeout: Duration) -> anyhow::Result<()> {
        let mut gw = self.gateway().await?;
        let deadline = Instant::now() + timeout;
        for name in names {
            loop {
                let a = gw
                    .get_agent(clawswarm_proto::v1::GetAgentRequest { name: name.clone() })
                    .await?
                    .into_inner();
                if a.connected && a.workload_ready {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("agent {name} not ready within {timeout:?}: {}", a.detail);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// Leaf credentials for a simulated sidecar, straight from the CA.
pub fn agent_tls(authority: &Authority, name: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let td = TrustDomain::new(TRUST_DOMAIN)?;
    let id = SpiffeId::agent(td, AgentId::new(NAMESPACE, name)?);
    let policy = LeafPolicy {
        server_auth: false,
        ..LeafPolicy::default()
    };
    let creds = authority.issue(&id, &policy, SystemTime::now())?;
    Ok(clawswarm_certs::client_config(
        Some(CredentialStore::new(creds)),
        authority.trust_bundle_pem(),
        Controller::controller_identity()?,
    )?)
}

/// A free loopback port (bound and released; fine on an otherwise idle box).
pub fn free_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// The pid a local-runtime agent's sidecar runs as.
pub fn sidecar_pid(state_dir: &Path, agent: &str) -> anyhow::Result<i32> {
    let f = state_dir
        .join("agents")
        .join(agent)
        .join("run")
        .join("sidecar.pid");
    let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
    text.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .context("sidecar.pid is malformed")
}

/// The workload port a local-runtime agent's stub listens on.
pub fn workload_port(state_dir: &Path, agent: &str) -> anyhow::Result<u16> {
    let f = state_dir
        .join("agents")
        .join(agent)
        .join("run")
        .join("workload.port");
    let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
    Ok(text.trim().parse()?)
}

/// VmRSS in bytes.
pub fn rss_bytes(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("bad VmRSS")?
        .parse()?;
    Ok(kb * 1024)
}

/// utime + stime in seconds.
pub fn cpu_seconds(pid: i32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    // /proc reports in USER_HZ, which Linux fixes at 100 for userspace.
    Ok((utime + stime) / 100.0)
}

/// Raise the soft open-files limit to the hard one (children inherit it).
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            hard
        }
        Err(_) => 0,
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

//! The embedded default runtime: each agent is a sidecar process (plus,
//! when configured, a workload process) on this machine, with its own data
//! directory standing in for the persistent volume.

pub mod openclaw_profile;
mod process;
pub mod sandbox;
mod store;
pub mod template;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use clawswarm_certs::AgentId;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::{
    process::{Launch, Proc, free_port, write_atomic},
    sandbox::{AgentSandbox, Sandbox, Wrapped},
    store::{AgentDirs, StoredAgent, load_all, now_unix},
    template::{AgentValues, EnvTemplate, Template, write_private},
};
use super::notices;
use super::usage::{self, MeteredTotals};
use super::{AgentMode, AgentPhase, AgentRecord, AgentSpec, Runtime, RuntimeError, TokenTotals};
use crate::{identity::Authenticator, identity::bootstrap::BootstrapTokens, metrics::Metrics};

/// How to start an agent's workload next to its sidecar.
#[derive(Clone, Debug)]
pub struct WorkloadLaunch {
    /// Run with `sh -c`; placeholders as in [`template`].
    pub command: Template,
    /// The URL the sidecar uses to reach it.
    pub url: Template,
    /// Added to the workload's clean environment.
    pub env: EnvTemplate,
}

#[derive(Clone, Debug)]
pub struct LocalConfig {
    pub state_dir: PathBuf,
    pub namespace: String,
    pub sidecar_bin: PathBuf,
    /// Environment every sidecar gets (controller address, trust bundle,
    /// workload settings); per-agent variables are added on top.
    pub sidecar_env: Vec<(String, String)>,
    /// Per-agent sidecar environment (`{port:NAME}`, `{secret:NAME}`, …),
    /// added after `sidecar_env`.
    pub sidecar_env_template: EnvTemplate,
    pub workload: Option<WorkloadLaunch>,
    /// Seal each workload off (`None`: told `--unsandboxed`, or no workload).
    pub sandbox: Option<Sandbox>,
    pub supervise_interval: Duration,
    pub restart_backoff_max: Duration,
    pub stop_grace: Duration,
    /// Suspend agents with no turn for this long; `None` never.
    pub idle_timeout: Option<Duration>,
    /// Start and supervise agent processes. Off, agents are records only
    /// and their sidecars run elsewhere (by hand, or simulated in benchmarks).
    pub manage_processes: bool,
}

struct LocalAgent {
    id: AgentId,
    dirs: AgentDirs,
    stored: StoredAgent,
    sidecar: Option<Proc>,
    workload: Option<Proc>,
    workload_port: Option<u16>,
    phase: AgentPhase,
    detail: String,
    failures: u32,
    /// When the processes were last (re)started: a crash after a stable
    /// stretch is a new failure, not one more of a crash loop.
    started_at: Option<Instant>,
    not_before: Option<Instant>,
    last_activity: Instant,
    /// Mode or identity changed: persist on the next tick.
    dirty: bool,
    /// Only activity or usage changed: persist at most every
    /// [`ACTIVITY_PERSIST_INTERVAL`] (every turn touches these).
    stale: bool,
    saved_at: Option<Instant>,
}

/// Processes that have run this long count as started: the next crash
/// restarts the count (and the backoff) from scratch.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Crashes in a row after which the agent shows as Failed (still restarted).
const CRASH_LOOP_AFTER: u32 = 3;

/// Crash loops back off: 0.5 s, 1 s, 2 s, … up to the cap.
fn restart_backoff(failures: u32, max: Duration) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(1u32 << failures.min(10))
        .min(max)
}

/// How often activity and usage totals reach disk per agent. A crash loses
/// at most this much of both; idle suspension works in minutes anyway.
const ACTIVITY_PERSIST_INTERVAL: Duration = Duration::from_secs(10);

impl LocalAgent {
    fn record(&self) -> AgentRecord {
        AgentRecord {
            id: self.id.clone(),
            owner: self.stored.owner.clone(),
            template: self.stored.template.clone(),
            mode: self.stored.mode,
            phase: self.phase,
            detail: self.detail.clone(),
            usage: usage::shown(self.stored.usage, self.stored.metered.as_ref()),
            data: usage::shown_data(self.stored.metered.as_ref()),
        }
    }

    fn take_procs(&mut self) -> Vec<Proc> {
        self.sidecar
            .take()
            .into_iter()
            .chain(self.workload.take())
            .collect()
    }
}

pub struct LocalRuntime {
    cfg: LocalConfig,
    tokens: Arc<BootstrapTokens>,
    agents: Mutex<HashMap<AgentId, LocalAgent>>,
    /// Held from taking a batch of dirty records until it is on disk, and
    /// by whatever else writes or removes records, so a batch written off
    /// the `agents` lock never lands after a newer write or a removal.
    persist: Arc<tokio::sync::Mutex<()>>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalRuntime {
    /// Load every recorded agent and adopt the processes that survived a
    /// previous controller; nothing is started until [`Runtime::run`].
    pub fn open(cfg: LocalConfig, metrics: Arc<Metrics>) -> Result<Self, RuntimeError> {
        let mut agents = HashMap::new();
        for (id, dirs, stored) in load_all(&cfg.state_dir, &cfg.namespace)? {
            let sidecar = Proc::adopt(
                "sidecar",
                &dirs.run.join("sidecar.pid"),
                &dirs.run.join("sidecar.log"),
            );
            let workload = Proc::adopt(
                "workload",
                &dirs.run.join("workload.pid"),
                &dirs.run.join("workload.log"),
            );
            let workload_port = std::fs::read_to_string(dirs.run.join("workload.port"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            if sidecar.is_some() {
                info!(agent = %id, workload = workload.is_some(), "adopted running agent processes");
            }
            let stored_activity = stored.last_activity_unix;
            let phase = match (stored.mode, sidecar.is_some()) {
                (AgentMode::Suspended, _) => AgentPhase::Suspended,
                (AgentMode::Running, true) => AgentPhase::Running,
                (AgentMode::Running, false) => AgentPhase::Pending,
            };
            let agent = LocalAgent {
                id: id.clone(),
                dirs,
                stored,
                sidecar,
                workload,
                workload_port,
                phase,
                detail: String::new(),
                failures: 0,
                started_at: None,
                not_before: None,
                last_activity: activity_instant(stored_activity),
                dirty: false,
                stale: false,
                saved_at: None,
            };
            agents.insert(id, agent);
        }
        Ok(Self {
            cfg,
            tokens: Arc::new(BootstrapTokens::new()),
            agents: Mutex::new(agents),
            persist: Arc::default(),
            metrics,
        })
    }

    fn start(&self, a: &mut LocalAgent) -> Result<(), RuntimeError> {
        if !self.cfg.manage_processes {
            a.dirs.create()?;
            a.phase = AgentPhase::Pending;
            a.detail = "sidecar runs outside this controller".into();
            return Ok(());
        }
        let failed = |message: String| RuntimeError::Failed {
            agent: a.id.clone(),
            message,
        };
        a.dirs.create()?;
        let mut env = self.cfg.sidecar_env.clone();
        let mut values = AgentValues {
            agent: a.id.name(),
            data_dir: &a.dirs.data,
            sidecar_dir: &a.dirs.sidecar,
            shared_dir: &a.dirs.shared,
            run_dir: &a.dirs.run,
            port: None,
        };
        if let Some(w) = &self.cfg.workload {
            let alive = a.workload.as_mut().is_some_and(|p| p.alive());
            let port = match a.workload_port {
                Some(p) => p,
                None => free_port()
                    .map_err(|e| failed(format!("no free port for the workload: {e}")))?,
            };
            a.workload_port = Some(port);
            write_atomic(
                &a.dirs.run.join("workload.port"),
                port.to_string().as_bytes(),
            )
            .map_err(|e| failed(e.to_string()))?;
            values.port = Some(port);
            let command = values
                .render(&w.command)
                .map_err(|e| failed(e.to_string()))?;
            // Library skills: the sidecar writes `sidecar/skills`, the
            // workload reads `run/skills` (a read-only bind in the sandbox;
            // unsandboxed, this link to the same directory).
            let skills = a.dirs.sidecar.join("skills");
            std::fs::create_dir_all(&skills)
                .map_err(|e| failed(format!("{}: {e}", skills.display())))?;
            let view = a.dirs.run.join("skills");
            if std::fs::symlink_metadata(&view).is_err() {
                std::os::unix::fs::symlink("../sidecar/skills", &view)
                    .map_err(|e| failed(format!("{}: {e}", view.display())))?;
            }
            // The sidecar needs the routes even when only it restarts.
            let (program, args) = match &self.cfg.sandbox {
                Some(sandbox) => {
                    let wrapped = self
                        .sandboxed(&a.id, sandbox, &values, w, port, &command)
                        .map_err(|e| failed(e.to_string()))?;
                    env.push(("CLAWSWARM_SANDBOX_ROUTES".into(), wrapped.sidecar_routes));
                    (wrapped.program, wrapped.args)
                }
                None => (
                    PathBuf::from("/bin/sh"),
                    vec!["-c".into(), format!("exec {command}")],
                ),
            };
            if !alive {
                if let Some(old) = a.workload.take() {
                    old.kill_leftovers();
                }
                let mut workload_env = vec![
                    ("PORT".into(), port.to_string()),
                    ("CLAWSWARM_AGENT".into(), a.id.to_string()),
                    (
                        "CLAWSWARM_DATA_DIR".into(),
                        a.dirs.data.display().to_string(),
                    ),
                ];
                workload_env.extend(
                    values
                        .render_env(&w.env)
                        .map_err(|e| failed(e.to_string()))?,
                );
                let proc = Proc::spawn(Launch {
                    name: "workload",
                    program: &program,
                    args,
                    env: workload_env,
                    cwd: &a.dirs.data,
                    log_file: a.dirs.run.join("workload.log"),
                    pid_file: a.dirs.run.join("workload.pid"),
                    clean_env: true,
                })
                .map_err(|e| failed(e.to_string()))?;
                a.workload = Some(proc);
            }
            let url = values.render(&w.url).map_err(|e| failed(e.to_string()))?;
            env.push(("CLAWSWARM_WORKLOAD_URL".into(), url));
        }
        if !a.sidecar.as_mut().is_some_and(|p| p.alive()) {
            let token = self.tokens.mint(&a.id).map_err(|e| failed(e.to_string()))?;
            let token_file = a.dirs.run.join("bootstrap-token");
            write_private(&token_file, token.as_bytes())
                .map_err(|e| failed(format!("{}: {e}", token_file.display())))?;
            env.extend([
                ("CLAWSWARM_AGENT".into(), a.id.to_string()),
                (
                    "CLAWSWARM_TOKEN_FILE".into(),
                    token_file.display().to_string(),
                ),
                // The sidecar's own part of the volume: its ledger, journal
                // and outbox stay out of a sandboxed workload's sight.
                (
                    "CLAWSWARM_DATA_DIR".into(),
                    a.dirs.sidecar.display().to_string(),
                ),
                ("CLAWSWARM_RUN_DIR".into(), a.dirs.run.display().to_string()),
                // Many sidecars share this machine: let each pick free ports
                // (recorded in run/ports.json).
                ("CLAWSWARM_DEBUG_ADDR".into(), "127.0.0.1:0".into()),
                ("CLAWSWARM_HTTP_ADDR".into(), "127.0.0.1:0".into()),
            ]);
            env.extend(
                values
                    .render_env(&self.cfg.sidecar_env_template)
                    .map_err(|e| failed(e.to_string()))?,
            );
            let proc = Proc::spawn(Launch {
                name: "sidecar",
                program: &self.cfg.sidecar_bin,
                args: vec!["run".into()],
                env,
                cwd: &a.dirs.run,
                log_file: a.dirs.run.join("sidecar.log"),
                pid_file: a.dirs.run.join("sidecar.pid"),
                // The sidecar holds the agent's secrets (workload token,
                // model key); it inherits the controller's settings.
                clean_env: false,
            })
            .map_err(|e| failed(e.to_string()))?;
            a.sidecar = Some(proc);
        }
        a.phase = AgentPhase::Starting;
        a.detail.clear();
        Ok(())
    }

    /// The agent's workload command under its sandbox: every `{port:NAME}`
    /// of its templates is one of its own sidecar's ports, so those (and no
    /// others) are carried into its network namespace.
    fn sandboxed(
        &self,
        id: &AgentId,
        sandbox: &Sandbox,
        values: &AgentValues<'_>,
        w: &WorkloadLaunch,
        port: u16,
        command: &str,
    ) -> Result<Wrapped, RuntimeError> {
        let failed = |message: String| RuntimeError::Failed {
            agent: id.clone(),
            message,
        };
        let mut names: Vec<&str> = w
            .command
            .named_ports()
            .chain(w.env.named_ports())
            .chain(self.cfg.sidecar_env_template.named_ports())
            .collect();
        names.sort_unstable();
        names.dedup();
        let ports = names
            .iter()
            .map(|n| values.named_port(n))
            .collect::<Result<Vec<u16>, _>>()
            .map_err(|e| failed(e.to_string()))?;
        // The sidecar's default `CLAWSWARM_SKILLS_DIR` (made by the caller).
        let skills_dir = values.sidecar_dir.join("skills");
        sandbox
            .wrap(
                &AgentSandbox {
                    agent: values.agent,
                    data_dir: values.data_dir,
                    shared_dir: values.shared_dir,
                    skills_dir: &skills_dir,
                    skills_view: &values.run_dir.join("skills"),
                    workload_port: port,
                    sidecar_ports: &ports,
                },
                command,
            )
            .map_err(|e| failed(e.to_string()))
    }

    /// Start what should run and is not running, with backoff per agent.
    /// Processes to stop, and the dirty records to write (once the lock is
    /// released: thousands of small file writes must not stall every turn
    /// waiting on `agents`).
    fn supervise(&self) -> (Vec<Proc>, Vec<(AgentId, AgentDirs, StoredAgent)>) {
        let mut to_stop = Vec::new();
        let now = Instant::now();
        let mut agents = lock(&self.agents);
        for a in agents.values_mut() {
            if a.stored.mode != AgentMode::Running || !self.cfg.manage_processes {
                continue;
            }
            if let Some(idle) = self.cfg.idle_timeout
                && now.duration_since(a.last_activity) >= idle
            {
                info!(agent = %a.id, idle = ?idle, "suspending idle agent");
                a.stored.mode = AgentMode::Suspended;
                a.phase = AgentPhase::Suspended;
                a.dirty = true;
                to_stop.extend(a.take_procs());
                continue;
            }
            let sidecar_ok = a.sidecar.as_mut().is_some_and(|p| p.alive());
            let workload_ok =
                self.cfg.workload.is_none() || a.workload.as_mut().is_some_and(|p| p.alive());
            if sidecar_ok && workload_ok {
                if a.phase == AgentPhase::Starting || a.phase == AgentPhase::Pending {
                    a.phase = AgentPhase::Running;
                }
                if a.failures > 0
                    && a.started_at
                        .is_some_and(|t| now.duration_since(t) >= STABLE_AFTER)
                {
                    a.failures = 0;
                    a.detail.clear();
                    if a.phase == AgentPhase::Failed {
                        a.phase = AgentPhase::Running;
                    }
                }
                continue;
            }
            if a.not_before.is_some_and(|t| now < t) {
                continue;
            }
            let was_running = a.sidecar.is_some() || a.workload.is_some();
            // Why it died, said where people look (`agents list`, the
            // chat's progress line), not only in the workload's log.
            let crash = if was_running {
                let dead: Vec<String> = [(&a.sidecar, sidecar_ok), (&a.workload, workload_ok)]
                    .into_iter()
                    .filter_map(|(p, ok)| p.as_ref().filter(|_| !ok))
                    .map(|p| format!("the {} {}", p.name, p.death_note()))
                    .collect();
                warn!(agent = %a.id, sidecar_alive = sidecar_ok, workload_alive = workload_ok, why = %dead.join("; "), "agent process died; restarting");
                self.metrics.agent_restarts.inc();
                Some(dead.join("; "))
            } else {
                None
            };
            match self.start(a) {
                Ok(()) => {
                    a.failures = if was_running { a.failures + 1 } else { 0 };
                    a.started_at = Some(now);
                    if let Some(crash) = crash {
                        let backoff = restart_backoff(a.failures, self.cfg.restart_backoff_max);
                        a.detail = format!(
                            "{crash} (restart {}; a crash loop waits up to {backoff:?} between restarts)",
                            a.failures
                        );
                        // Like CrashLoopBackOff: still restarted, but a turn
                        // is told at once instead of waiting for readiness.
                        if a.failures >= CRASH_LOOP_AFTER {
                            a.phase = AgentPhase::Failed;
                        }
                    }
                }
                Err(e) => {
                    a.failures += 1;
                    a.phase = AgentPhase::Failed;
                    a.detail = e.to_string();
                    error!(agent = %a.id, error = %e, "agent could not be started");
                }
            }
            a.not_before = Some(now + restart_backoff(a.failures, self.cfg.restart_backoff_max));
        }
        let mut to_save = Vec::new();
        let due = |a: &LocalAgent| {
            a.dirty
                || (a.stale
                    && a.saved_at
                        .is_none_or(|t| now.duration_since(t) >= ACTIVITY_PERSIST_INTERVAL))
        };
        for a in agents.values_mut().filter(|a| due(a)) {
            a.stored.last_activity_unix =
                now_unix().saturating_sub(now.duration_since(a.last_activity).as_secs());
            a.dirty = false;
            a.stale = false;
            a.saved_at = Some(now);
            to_save.push((a.id.clone(), a.dirs.clone(), a.stored.clone()));
        }
        (to_stop, to_save)
    }

    /// Write a batch from [`Self::supervise`] on a blocking thread; records
    /// that fail are marked dirty again for the next tick.
    async fn save_batch(
        &self,
        batch: Vec<(AgentId, AgentDirs, StoredAgent)>,
        guard: tokio::sync::OwnedMutexGuard<()>,
    ) {
        if batch.is_empty() {
            return;
        }
        let write = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let mut failed = Vec::new();
            for (id, dirs, stored) in batch {
                if let Err(e) = dirs.save(&stored) {
                    warn!(agent = %id, error = %e, "could not persist agent record");
                    failed.push(id);
                }
            }
            failed
        });
        let failed = match write.await {
            Ok(failed) => failed,
            Err(e) => {
                error!(error = %e, "agent record writer did not finish");
                return;
            }
        };
        let mut agents = lock(&self.agents);
        for id in failed {
            if let Some(a) = agents.get_mut(&id) {
                a.dirty = true;
            }
        }
    }

    async fn stop_all(&self, procs: Vec<Proc>) {
        let grace = self.cfg.stop_grace;
        futures::future::join_all(procs.into_iter().map(|p| p.stop(grace))).await;
    }

    fn with_agent<T>(
        &self,
        id: &AgentId,
        f: impl FnOnce(&mut LocalAgent) -> T,
    ) -> Result<T, RuntimeError> {
        let mut agents = lock(&self.agents);
        let a = agents
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
        Ok(f(a))
    }
}

/// The persisted last activity as an `Instant`, so idle suspension counts
/// from the real last turn across controller restarts.
fn activity_instant(unix: u64) -> Instant {
    let ago = Duration::from_secs(now_unix().saturating_sub(unix));
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn authenticator(&self) -> Arc<dyn Authenticator> {
        self.tokens.clone()
    }

    async fn provision(&self, spec: AgentSpec) -> Result<AgentRecord, RuntimeError> {
        if spec.id.namespace() != self.cfg.namespace {
            return Err(RuntimeError::Invalid(format!(
                "agents live in namespace {:?}",
                self.cfg.namespace
            )));
        }
        let _persist = self.persist.lock().await;
        let mut agents = lock(&self.agents);
        if agents.contains_key(&spec.id) {
            return Err(RuntimeError::AlreadyExists(spec.id));
        }
        if let Some(other) = agents.values().find(|a| a.stored.owner == spec.owner) {
            return Err(RuntimeError::OwnerHasAgent {
                owner: spec.owner,
                agent: other.id.clone(),
            });
        }
        let dirs = AgentDirs::new(&self.cfg.state_dir, &spec.id);
        dirs.create()?;
        let stored = StoredAgent {
            owner: spec.owner,
            template: spec.template,
            mode: AgentMode::Running,
            usage: TokenTotals::default(),
            metered: None,
            last_activity_unix: now_unix(),
            delivered_notices: Vec::new(),
        };
        dirs.save(&stored)?;
        let mut a = LocalAgent {
            id: spec.id.clone(),
            dirs,
            stored,
            sidecar: None,
            workload: None,
            workload_port: None,
            phase: AgentPhase::Pending,
            detail: String::new(),
            failures: 0,
            started_at: None,
            not_before: None,
            last_activity: Instant::now(),
            dirty: false,
            stale: false,
            saved_at: None,
        };
        if let Err(e) = self.start(&mut a) {
            a.phase = AgentPhase::Failed;
            a.detail = e.to_string();
        }
        let rec = a.record();
        agents.insert(spec.id.clone(), a);
        info!(agent = %spec.id, "agent provisioned");
        Ok(rec)
    }

    async fn deprovision(&self, id: &AgentId, delete_data: bool) -> Result<(), RuntimeError> {
        let mut a = lock(&self.agents)
            .remove(id)
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
        self.stop_all(a.take_procs()).await;
        let _persist = self.persist.lock().await;
        a.dirs.remove(delete_data)?;
        info!(agent = %id, delete_data, "agent deprovisioned");
        Ok(())
    }

    async fn suspend(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError> {
        let procs = self.with_agent(id, |a| {
            a.stored.mode = AgentMode::Suspended;
            a.phase = AgentPhase::Suspended;
            a.dirty = true;
            a.take_procs()
        })?;
        self.stop_all(procs).await;
        info!(agent = %id, "agent suspended");
        self.with_agent(id, |a| a.record())
    }

    async fn resume(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError> {
        // Waits for an idle stop in progress (see `run`).
        let _persist = self.persist.lock().await;
        let mut agents = lock(&self.agents);
        let a = agents
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
        if a.stored.mode == AgentMode::Running && a.sidecar.is_some() {
            return Ok(a.record());
        }
        a.stored.mode = AgentMode::Running;
        a.last_activity = Instant::now();
        a.dirty = true;
        a.not_before = None;
        self.start(a)?;
        info!(agent = %id, "agent resumed");
        Ok(a.record())
    }

    async fn restart(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError> {
        let procs = self.with_agent(id, |a| a.take_procs())?;
        self.stop_all(procs).await;
        let mut agents = lock(&self.agents);
        let a = agents
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
        a.stored.mode = AgentMode::Running;
        a.dirty = true;
        self.start(a)?;
        Ok(a.record())
    }

    async fn get(&self, id: &AgentId) -> Result<Option<AgentRecord>, RuntimeError> {
        Ok(lock(&self.agents).get(id).map(LocalAgent::record))
    }

    async fn list(&self) -> Result<Vec<AgentRecord>, RuntimeError> {
        let mut all: Vec<_> = lock(&self.agents)
            .values()
            .map(LocalAgent::record)
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn record_activity(&self, id: &AgentId) -> Result<(), RuntimeError> {
        // Persisted within ACTIVITY_PERSIST_INTERVAL, and on shutdown.
        self.with_agent(id, |a| {
            a.last_activity = Instant::now();
            a.stale = true;
        })
    }

    async fn record_usage(&self, id: &AgentId, usage: TokenTotals) -> Result<(), RuntimeError> {
        self.with_agent(id, |a| {
            a.stored.usage.add_totals(&usage);
            a.stale = true;
        })
    }

    async fn record_metered(
        &self,
        id: &AgentId,
        report: &clawswarm_proto::v1::MeteredUsage,
    ) -> Result<(), RuntimeError> {
        self.with_agent(id, |a| {
            let folded = MeteredTotals::fold(a.stored.metered.as_ref(), report);
            if a.stored.metered.as_ref() != Some(&folded) {
                a.stored.metered = Some(folded);
                a.stale = true;
            }
        })
    }

    async fn notice_delivered(&self, id: &AgentId, notice_id: &str) -> Result<bool, RuntimeError> {
        self.with_agent(id, |a| {
            a.stored.delivered_notices.iter().any(|d| d == notice_id)
        })
    }

    async fn record_notice_delivered(
        &self,
        id: &AgentId,
        notice_id: &str,
    ) -> Result<(), RuntimeError> {
        // Written now, not with the next batch: the point is that a
        // restarted controller knows.
        let guard = self.persist.clone().lock_owned().await;
        let Some((dirs, stored)) = self.with_agent(id, |a| {
            notices::remember(&mut a.stored.delivered_notices, notice_id)
                .then(|| (a.dirs.clone(), a.stored.clone()))
        })?
        else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            dirs.save(&stored)
        })
        .await
        .map_err(|e| RuntimeError::Storage(e.to_string()))?
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<(), RuntimeError> {
        let mut tick = tokio::time::interval(self.cfg.supervise_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let guard = self.persist.clone().lock_owned().await;
                    let (idle, to_save) = self.supervise();
                    // Stopped before the lock is let go: a wake of the same
                    // agent (resume takes this lock) must not start its new
                    // processes while the old ones are still stopping.
                    self.stop_all(idle).await;
                    self.save_batch(to_save, guard).await;
                }
            }
        }
        // Persist what changed, then stop every process this runtime owns.
        let _persist = self.persist.lock().await;
        let _ = self.supervise_persist_only();
        let procs: Vec<Proc> = lock(&self.agents)
            .values_mut()
            .flat_map(LocalAgent::take_procs)
            .collect();
        info!(processes = procs.len(), "stopping local agents");
        self.stop_all(procs).await;
        Ok(())
    }
}

impl LocalRuntime {
    fn supervise_persist_only(&self) -> Result<(), RuntimeError> {
        let mut agents = lock(&self.agents);
        for a in agents.values_mut().filter(|a| a.dirty || a.stale) {
            a.dirs.save(&a.stored)?;
            a.dirty = false;
        }
        Ok(())
    }
}

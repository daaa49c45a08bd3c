//! The sidecar's configuration: flags and `CLAWSWARM_*` environment, read
//! once in `main` and validated before any port is bound.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use crate::workload::history::{HistoryLimits, HistoryMode};

#[derive(Clone, Args)]
pub struct RunArgs {
    /// The agent this sidecar serves, `<namespace>/<name>`.
    #[arg(long, env = "CLAWSWARM_AGENT")]
    pub agent: String,

    /// Routes to a sandboxed local workload, `;`-separated
    /// `expose:ADDR=SOCKET` / `serve:ADDR=SOCKET` (set by the local
    /// controller; see sandbox_bridge). Empty: the workload shares loopback.
    #[arg(long, env = "CLAWSWARM_SANDBOX_ROUTES", default_value = "")]
    pub sandbox_routes: String,

    /// AgentLink endpoint, e.g. https://clawswarm-controller.clawswarm:7443.
    #[arg(long, env = "CLAWSWARM_CONTROLLER_URL")]
    pub controller_url: String,

    /// Identity.Certify endpoint.
    #[arg(long, env = "CLAWSWARM_IDENTITY_URL")]
    pub identity_url: String,

    /// PEM trust anchors (the mesh's root).
    #[arg(long, env = "CLAWSWARM_TRUST_BUNDLE")]
    pub trust_bundle: PathBuf,

    #[arg(
        long,
        env = "CLAWSWARM_TRUST_DOMAIN",
        default_value = "clawswarm.local"
    )]
    pub trust_domain: String,

    /// Namespace of the controller's SPIFFE id; default: the agent's namespace.
    #[arg(long, env = "CLAWSWARM_CONTROLLER_NAMESPACE")]
    pub controller_namespace: Option<String>,

    /// Proof of identity for the first certificate: a bootstrap token (local)
    /// or a projected ServiceAccount token (Kubernetes). Re-read on every
    /// request, since Kubernetes rotates it.
    #[arg(long, env = "CLAWSWARM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// The sidecar's debug gRPC endpoint (mTLS; `kubectl port-forward` to it).
    #[arg(long, env = "CLAWSWARM_DEBUG_ADDR", default_value = "127.0.0.1:7445")]
    pub debug_addr: SocketAddr,

    /// Plain HTTP: /metrics, /healthz, /readyz.
    #[arg(long, env = "CLAWSWARM_HTTP_ADDR", default_value = "0.0.0.0:9464")]
    pub http_addr: SocketAddr,

    /// Where to record the ports actually bound (`ports.json`).
    #[arg(long, env = "CLAWSWARM_RUN_DIR")]
    pub run_dir: Option<PathBuf>,

    /// The agent's persistent data (undelivered notices live here).
    #[arg(long, env = "CLAWSWARM_DATA_DIR", default_value = ".")]
    pub data_dir: PathBuf,

    /// Below this many free bytes on the data volume, turns are refused
    /// with "the agent's data volume is full" (0: never).
    #[arg(long, env = "CLAWSWARM_MIN_FREE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub min_free_bytes: u64,

    #[command(flatten)]
    pub workload: WorkloadArgs,

    #[command(flatten)]
    pub relay: RelayArgs,

    /// Used when `CLAWSWARM_WORKLOAD=openclaw`: the gateway, the model proxy
    /// and the cron notice receiver.
    #[command(flatten)]
    pub openclaw: crate::workload::openclaw::services::OpenClawServiceArgs,

    /// The company's search cluster, read-only (any workload; OpenClaw
    /// agents always get the proxy, which says so when no cluster is set).
    #[command(flatten)]
    pub data: crate::data_proxy::DataProxyArgs,

    /// Library skills the controller installs (docs/skills.md).
    #[command(flatten)]
    pub skills: crate::skills::SkillsArgs,
}

impl fmt::Debug for RunArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunArgs")
            .field("agent", &self.agent)
            .field("controller_url", &self.controller_url)
            .field("identity_url", &self.identity_url)
            .field("workload", &self.workload)
            .finish_non_exhaustive()
    }
}

/// `clawswarm-sidecar init`: the pod's preparation step, run before the
/// workload starts, with the workload's part of the volume and the sidecar's.
#[derive(Clone, Debug, Args)]
pub struct InitCommand {
    /// The adapter this agent uses; only `openclaw` has anything to prepare.
    #[arg(
        long = "workload",
        env = "CLAWSWARM_WORKLOAD",
        default_value = "openclaw"
    )]
    pub workload: String,
    /// The sidecar's persistent data (its part of the agent's volume).
    #[arg(long, env = "CLAWSWARM_DATA_DIR", default_value = ".")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub openclaw: crate::workload::openclaw::config::InitArgs,
}

#[derive(Clone, Args)]
pub struct WorkloadArgs {
    /// `responses` (any OpenAI-style /v1/responses server), `openclaw` (the
    /// OpenClaw gateway beside the sidecar, with the model proxy and cron
    /// notices), or `none` (no workload yet: turns fail saying so).
    #[arg(
        long = "workload",
        env = "CLAWSWARM_WORKLOAD",
        default_value = "responses"
    )]
    pub kind: String,

    /// Base URL of the workload (without /v1/responses).
    #[arg(long = "workload-url", env = "CLAWSWARM_WORKLOAD_URL")]
    pub url: Option<String>,

    /// Bearer token for the workload. Never logged.
    #[arg(
        long = "workload-token",
        env = "CLAWSWARM_WORKLOAD_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    #[arg(
        long = "workload-model",
        env = "CLAWSWARM_WORKLOAD_MODEL",
        default_value = "default"
    )]
    pub model: String,

    /// Readiness path. Unset: `/readyz` on a loopback endpoint and no probe
    /// on a remote one (a hosted API has none, and is not to be polled);
    /// empty: never probe; a path: always probe it.
    #[arg(long = "workload-ready-path", env = "CLAWSWARM_WORKLOAD_READY_PATH")]
    pub ready_path: Option<String>,

    /// Who keeps each conversation's context between turns: `auto` (the
    /// server via previous_response_id while it honours it, else the
    /// sidecar), `server`, `sidecar` or `off`.
    #[arg(
        long = "workload-history",
        env = "CLAWSWARM_WORKLOAD_HISTORY",
        default_value = "auto",
        value_parser = parse_history_mode
    )]
    pub history: HistoryMode,

    /// Messages the sidecar keeps per conversation (oldest dropped first).
    #[arg(
        long = "workload-history-max-items",
        env = "CLAWSWARM_WORKLOAD_HISTORY_MAX_ITEMS",
        default_value_t = HistoryLimits::default().max_items
    )]
    pub history_max_items: usize,

    /// Bytes of message text the sidecar keeps per conversation.
    #[arg(
        long = "workload-history-max-bytes",
        env = "CLAWSWARM_WORKLOAD_HISTORY_MAX_BYTES",
        default_value_t = HistoryLimits::default().max_bytes
    )]
    pub history_max_bytes: usize,

    /// Conversations remembered per agent (least recently used forgotten first).
    #[arg(
        long = "workload-history-max-conversations",
        env = "CLAWSWARM_WORKLOAD_HISTORY_MAX_CONVERSATIONS",
        default_value_t = HistoryLimits::default().max_conversations
    )]
    pub history_max_conversations: usize,

    /// With `none`: what the person is told instead of an answer (the
    /// local controller names the setting it lacks, e.g. a model key).
    #[arg(long = "no-workload-reason", env = "CLAWSWARM_NO_WORKLOAD_REASON")]
    pub no_workload_reason: Option<String>,
}

impl fmt::Debug for WorkloadArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadArgs")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("ready_path", &self.ready_path)
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

impl WorkloadArgs {
    pub fn history_limits(&self) -> HistoryLimits {
        HistoryLimits {
            max_items: self.history_max_items,
            max_bytes: self.history_max_bytes,
            max_conversations: self.history_max_conversations.max(1),
        }
    }
}

fn parse_history_mode(s: &str) -> Result<HistoryMode, String> {
    s.parse()
}

#[derive(Clone, Debug, Args)]
pub struct RelayArgs {
    /// Turns waiting per conversation before new ones are refused.
    #[arg(long, env = "CLAWSWARM_RELAY_CONVERSATION_QUEUE", default_value_t = 8)]
    pub conversation_queue: usize,
    /// Turns running at once (different conversations).
    #[arg(long, env = "CLAWSWARM_RELAY_MAX_ACTIVE", default_value_t = 64)]
    pub max_active: usize,
    /// Longest silence from the workload while a reply streams.
    #[arg(long, env = "CLAWSWARM_RELAY_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "150s")]
    pub idle_timeout: Duration,
    /// Longest whole turn.
    #[arg(long, env = "CLAWSWARM_RELAY_TURN_TIMEOUT", value_parser = parse_duration, default_value = "15m")]
    pub turn_timeout: Duration,
    /// How long a turn waits for the workload to become ready.
    #[arg(long, env = "CLAWSWARM_RELAY_READY_WAIT", value_parser = parse_duration, default_value = "120s")]
    pub ready_wait: Duration,
    /// How long a finished reply is kept for a controller that has not acknowledged it.
    #[arg(long, env = "CLAWSWARM_RELAY_RETENTION", value_parser = parse_duration, default_value = "10m")]
    pub retention: Duration,
}

/// `500ms`, `10s`, `5m`, `24h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} needs a unit (ms, s, m, h)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let secs = |k: u64| {
        n.checked_mul(k)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too large"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    }
}

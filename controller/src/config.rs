//! The controller's configuration: flags and `CLAWSWARM_*` environment,
//! read once in `main` and validated before any port is bound.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// Agents as processes on this machine (the embedded default).
    Local,
    /// Agents as pods, from `Agent` custom resources.
    Kubernetes,
}

#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Where the controller keeps its CA, admin credentials and (local
    /// runtime) agents. Default: $XDG_DATA_HOME/clawswarm or ~/.local/share/clawswarm.
    #[arg(long, env = "CLAWSWARM_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// SPIFFE trust domain of every identity this controller issues.
    #[arg(
        long,
        env = "CLAWSWARM_TRUST_DOMAIN",
        default_value = "clawswarm.local"
    )]
    pub trust_domain: String,

    /// Namespace agents live in (the Kubernetes namespace, or a name for local agents).
    #[arg(long, env = "CLAWSWARM_NAMESPACE", default_value = "local")]
    pub namespace: String,

    /// AgentLink + Gateway (mTLS required).
    #[arg(long, env = "CLAWSWARM_MESH_ADDR", default_value = "127.0.0.1:7443")]
    pub mesh_addr: SocketAddr,

    /// Identity.Certify (TLS; a client certificate is optional, for renewals).
    #[arg(
        long,
        env = "CLAWSWARM_IDENTITY_ADDR",
        default_value = "127.0.0.1:7444"
    )]
    pub identity_addr: SocketAddr,

    /// Plain HTTP: /metrics, /healthz, /readyz.
    #[arg(long, env = "CLAWSWARM_HTTP_ADDR", default_value = "127.0.0.1:7480")]
    pub http_addr: SocketAddr,

    /// Host name sidecars and admins use to reach this controller; it goes
    /// into the server certificate.
    #[arg(long, env = "CLAWSWARM_ADVERTISE_HOST", default_value = "127.0.0.1")]
    pub advertise_host: String,

    /// Extra DNS names for the server certificate (comma-separated).
    #[arg(long, env = "CLAWSWARM_SERVER_NAMES", value_delimiter = ',')]
    pub server_names: Vec<String>,

    #[arg(long, env = "CLAWSWARM_RUNTIME", value_enum, default_value = "local")]
    pub runtime: RuntimeKind,

    /// Lifetime of workload certificates.
    #[arg(long, env = "CLAWSWARM_CERT_LIFETIME", value_parser = parse_duration, default_value = "24h")]
    pub cert_lifetime: Duration,

    /// The company skills library's directory (local runtime): `library/`
    /// holds shared skills, `proposals/` what people offered. Default:
    /// `<state dir>/skills-library`. On Kubernetes the library is
    /// ConfigMaps in the controller's namespace (docs/skills.md).
    #[arg(long, env = "CLAWSWARM_SKILLS_LIBRARY")]
    pub skills_library: Option<PathBuf>,

    /// How long in-flight turns may take to finish on SIGTERM.
    #[arg(long, env = "CLAWSWARM_SHUTDOWN_GRACE", value_parser = parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub local: LocalArgs,

    /// Used when `CLAWSWARM_RUNTIME=kubernetes`.
    #[command(flatten)]
    pub kubernetes: crate::runtime::kubernetes::KubernetesArgs,

    #[command(flatten)]
    pub slack: crate::slack::SlackArgs,
}

/// Settings of the local runtime.
#[derive(Clone, Debug, Args)]
pub struct LocalArgs {
    /// The sidecar binary. Default: `clawswarm-sidecar` next to this binary.
    #[arg(long, env = "CLAWSWARM_SIDECAR_BIN")]
    pub sidecar_bin: Option<PathBuf>,

    /// Workload adapter the sidecars use: `responses` (any OpenAI-style
    /// /v1/responses server) or `openclaw` (the real OpenClaw gateway beside
    /// each sidecar: the built-in profile, or your own --workload-command).
    #[arg(long, env = "CLAWSWARM_WORKLOAD", default_value = "responses")]
    pub workload: String,

    /// Command that starts one agent's workload (run with `sh -c`;
    /// `{port}`, `{port:NAME}`, `{secret:NAME}`, `{data_dir}`, `{run_dir}`,
    /// `{agent}` are substituted per agent).
    #[arg(long, env = "CLAWSWARM_WORKLOAD_COMMAND")]
    pub workload_command: Option<String>,

    /// Extra environment for each workload process, `KEY=template;KEY=template`
    /// (placeholders as in --workload-command).
    #[arg(long, env = "CLAWSWARM_LOCAL_WORKLOAD_ENV", default_value = "")]
    pub workload_env: String,

    /// Extra environment for each sidecar, `KEY=template;KEY=template`
    /// (placeholders as in --workload-command).
    #[arg(long, env = "CLAWSWARM_LOCAL_SIDECAR_ENV", default_value = "")]
    pub sidecar_env: String,

    /// URL of the workload started by --workload-command (`{port}` substituted).
    #[arg(
        long,
        env = "CLAWSWARM_WORKLOAD_URL_TEMPLATE",
        default_value = "http://127.0.0.1:{port}"
    )]
    pub workload_url_template: String,

    /// A shared /v1/responses endpoint all agents use instead of a per-agent
    /// workload process (e.g. https://api.openai.com).
    #[arg(long, env = "CLAWSWARM_WORKLOAD_URL")]
    pub workload_url: Option<String>,

    /// Model name sent to the workload.
    #[arg(long, env = "CLAWSWARM_WORKLOAD_MODEL")]
    pub workload_model: Option<String>,

    /// Agents to create at start if missing, as `name=owner` (comma-separated).
    #[arg(long, env = "CLAWSWARM_LOCAL_AGENTS", value_delimiter = ',')]
    pub agents: Vec<String>,

    /// Start and supervise each agent's processes (false: agents are records
    /// only and their sidecars are run elsewhere).
    #[arg(long, env = "CLAWSWARM_LOCAL_PROCESSES", default_value_t = true, action = clap::ArgAction::Set)]
    pub processes: bool,

    /// Suspend agents idle this long (e.g. `2h`); unset = never.
    #[arg(long, env = "CLAWSWARM_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// The built-in OpenClaw profile (`--workload openclaw` without a
    /// workload command).
    #[command(flatten)]
    pub openclaw: crate::runtime::local::openclaw_profile::OpenClawProfileArgs,

    /// How local workloads are sealed off from each other.
    #[command(flatten)]
    pub sandbox: crate::runtime::local::sandbox::SandboxArgs,
}

/// `500ms`, `10s`, `5m`, `24h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} needs a unit (ms, s, m, h, d)"))?;
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
        "d" => secs(86400),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    }
}

/// Where state lives when not configured.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("clawswarm");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/clawswarm"),
        None => PathBuf::from(".clawswarm"),
    }
}

/// Parse `name=owner`.
pub fn parse_agent_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, o)) if !n.trim().is_empty() && !o.trim().is_empty() => {
            Ok((n.trim().to_owned(), o.trim().to_owned()))
        }
        _ => Err(format!(
            "CLAWSWARM_LOCAL_AGENTS entry {s:?} is not name=owner"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "10", "h", "5 parsecs", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn agent_pairs_need_both_halves() {
        assert_eq!(
            parse_agent_pair("alice=U1").unwrap(),
            ("alice".into(), "U1".into())
        );
        assert!(parse_agent_pair("alice").is_err());
        assert!(parse_agent_pair("=U1").is_err());
    }
}

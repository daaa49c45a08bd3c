//! The real OpenClaw gateway as a child process, for the OpenClaw test tier.
//!
//! Needs Node 24 and the pinned openclaw from `scripts/deps.sh openclaw`
//! (`CLAWSWARM_OPENCLAW`, the wrapper script it installs). The gateway
//! takes ~20 s to become ready and ~1.3 GB of memory: start one per test
//! file. It runs with a cleared environment (only what OpenClaw needs), in
//! its own process group so its two child processes stop with it.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

/// The `openclaw` wrapper from scripts/deps.sh, or a clear failure.
pub fn openclaw_bin() -> anyhow::Result<PathBuf> {
    match std::env::var_os("CLAWSWARM_OPENCLAW") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => bail!(
            "CLAWSWARM_OPENCLAW is not set: run `scripts/deps.sh openclaw` and export what it prints \
             (or `source ~/.cache/clawswarm/env.sh`)"
        ),
    }
}

/// A free loopback port (bound and released; fine for tests).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub struct Gateway {
    child: Child,
    pub port: u16,
    pub base_url: String,
    pub log_path: PathBuf,
}

impl Gateway {
    /// Start `openclaw gateway run` with `config` and `state_dir`; the
    /// bearer token goes in through `OPENCLAW_GATEWAY_TOKEN` only.
    pub fn start(
        config: &Path,
        state_dir: &Path,
        home: &Path,
        port: u16,
        token: &str,
    ) -> anyhow::Result<Self> {
        let bin = openclaw_bin()?;
        std::fs::create_dir_all(state_dir)?;
        std::fs::create_dir_all(home)?;
        let log_path = home.join("gateway.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&bin)
            .args(["gateway", "run"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("TMPDIR", home)
            .env("OPENCLAW_CONFIG_PATH", config)
            .env("OPENCLAW_STATE_DIR", state_dir)
            .env("OPENCLAW_GATEWAY_TOKEN", token)
            .env("OPENCLAW_DISABLE_BONJOUR", "1")
            .env("OPENCLAW_SKIP_CHANNELS", "1")
            .env("OPENCLAW_NO_RESPAWN", "1")
            .env("OPENCLAW_NO_AUTO_UPDATE", "1")
            .env("OPENCLAW_OFFLINE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            child,
            port,
            base_url: format!("http://127.0.0.1:{port}"),
            log_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Process ids of the gateway and its descendants (from /proc).
    pub fn process_tree(&self) -> Vec<u32> {
        crate::harness::process_tree(self.child.id())
    }

    /// The tail of the gateway's log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    /// Stop the process group: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Ok(pid) = i32::try_from(self.child.id()) else {
            return;
        };
        let group = Pid::from_raw(pid);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // Children may outlive the leader briefly.
                let _ = killpg(group, Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `cron.add` parameters of a job that runs `message` as an isolated
/// agent turn on `schedule` and announces its reply (a notice to the owner),
/// as the agent adds one from chat.
pub fn cron_job(name: &str, schedule: serde_json::Value, message: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "schedule": schedule,
        "sessionTarget": "isolated",
        "wakeMode": "now",
        "payload": {"kind": "agentTurn", "message": message},
        "delivery": {"mode": "announce"},
    })
}

/// A job every `ms` milliseconds.
pub fn every(ms: u64) -> serde_json::Value {
    serde_json::json!({"kind": "every", "everyMs": ms})
}

/// A job that runs once, `secs` seconds from now (OpenClaw deletes it after
/// its run).
pub fn once_in(secs: u64) -> serde_json::Value {
    let at = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    serde_json::json!({"kind": "at", "at": rfc3339_utc(ms)})
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-12-04T19:00:00.000Z`).
fn rfc3339_utc(ms: u128) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(0);
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ms % 1000
    )
}

/// The id of the job a `cron.add` answer describes.
pub fn job_id(added: &serde_json::Value) -> anyhow::Result<String> {
    added
        .pointer("/payload/job/id")
        .or_else(|| added.pointer("/payload/id"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no job id in {added}"))
}

/// A local agent's OpenClaw gateway address and bearer token, as its
/// sidecar has them (the sidecar bridges that loopback port into the
/// sandbox), read from the sidecar's environment.
pub fn local_gateway(agent_dir: &std::path::Path) -> anyhow::Result<(String, String)> {
    let pid = std::fs::read_to_string(agent_dir.join("run/sidecar.pid"))?;
    let pid = pid.split_whitespace().next().unwrap_or_default();
    let env = std::fs::read(format!("/proc/{pid}/environ"))?;
    let var = |name: &str| {
        env.split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(format!("{name}=").as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .ok_or_else(|| anyhow::anyhow!("no {name} in the sidecar's environment"))
    };
    Ok((
        var("CLAWSWARM_OPENCLAW_URL")?,
        var("CLAWSWARM_OPENCLAW_TOKEN")?,
    ))
}

/// One call of OpenClaw's admin RPC (`POST /api/v1/admin/rpc`), as the
/// agent makes it from chat; the answer, which must say `ok`.
pub async fn admin_rpc(
    (url, token): &(String, String),
    method: &str,
    params: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/api/v1/admin/rpc"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "method": method, "params": params }))
        .timeout(std::time::Duration::from_secs(60))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(body["ok"] == true, "{method}: {body}");
    Ok(body)
}

/// Options for the controller's built-in OpenClaw profile (what
/// `scripts/run-local.sh` runs) with agents `agents`: the `openclaw` CLI, the
/// person's seed config and the model provider's URL, then `extra` settings
/// (the provider key, company data, the skills library…) as an operator
/// would give them.
pub fn profile_options(
    agents: &[&str],
    openclaw: &Path,
    seed: &Path,
    model_url: String,
    extra: Vec<(String, String)>,
) -> crate::harness::ControllerOptions {
    let mut opts = crate::harness::ControllerOptions::with_agents(agents);
    opts.no_workload = true;
    opts.env = vec![
        ("CLAWSWARM_WORKLOAD".into(), "openclaw".into()),
        (
            "CLAWSWARM_OPENCLAW_BIN".into(),
            openclaw.display().to_string(),
        ),
        (
            "CLAWSWARM_OPENCLAW_SEED_CONFIG".into(),
            seed.display().to_string(),
        ),
        ("CLAWSWARM_MODEL_UPSTREAM_URL".into(), model_url),
    ];
    opts.env.extend(extra);
    opts
}

/// Wait (up to 240 s: a cold OpenClaw start) for `agent` to be ready,
/// failing with the end of its workload's log.
pub async fn wait_ready_with_log(c: &crate::harness::Controller, agent: &str) {
    if let Err(e) = c.wait_ready(agent, Duration::from_secs(240)).await {
        let log = std::fs::read_to_string(c.agent_dir(agent).join("run/workload.log"))
            .unwrap_or_default();
        panic!("{e}\nworkload log:\n{}", crate::harness::tail_of(&log));
    }
}

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
        let mut pids = vec![self.child.id()];
        let mut i = 0;
        while i < pids.len() {
            let parent = pids[i];
            if let Ok(children) =
                std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            {
                pids.extend(
                    children
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
            i += 1;
        }
        pids
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

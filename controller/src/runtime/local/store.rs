//! On-disk record of local agents: `<state>/agents/<name>/agent.json`, with
//! `data/` (the agent's volume) and `run/` (pid files, logs, token) beside it.
//! The directory is the source of truth: a restarted controller rebuilds
//! everything from it.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use clawswarm_certs::AgentId;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::process::write_atomic;
use crate::runtime::{AgentMode, RuntimeError, TokenTotals, usage::MeteredTotals};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredAgent {
    pub owner: String,
    pub template: String,
    pub mode: AgentMode,
    /// What turns reported (see `runtime::usage`).
    #[serde(default)]
    pub usage: TokenTotals,
    /// What the sidecar metered, once it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metered: Option<MeteredTotals>,
    #[serde(default)]
    pub last_activity_unix: u64,
    /// The last notices delivered (`runtime::notices`), written before
    /// each is acknowledged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered_notices: Vec<String>,
}

/// One agent's directories. `data` and `sidecar` stand in for the two
/// parts of the pod's volume (the workload's and the sidecar's); `run` is
/// the controller's and the sidecar's runtime state, of which a sandboxed
/// workload sees only `shared`.
#[derive(Clone, Debug)]
pub struct AgentDirs {
    pub root: PathBuf,
    pub data: PathBuf,
    pub sidecar: PathBuf,
    pub run: PathBuf,
    pub shared: PathBuf,
}

impl AgentDirs {
    pub fn new(state_dir: &Path, id: &AgentId) -> Self {
        let root = state_dir.join("agents").join(id.name());
        let run = root.join("run");
        Self {
            data: root.join("data"),
            sidecar: root.join("sidecar"),
            shared: run.join("shared"),
            run,
            root,
        }
    }

    pub fn create(&self) -> Result<(), RuntimeError> {
        for d in [
            &self.root,
            &self.data,
            &self.sidecar,
            &self.run,
            &self.shared,
        ] {
            fs::create_dir_all(d).map_err(|e| storage(d, e))?;
        }
        Ok(())
    }

    fn record(&self) -> PathBuf {
        self.root.join("agent.json")
    }

    pub fn save(&self, agent: &StoredAgent) -> Result<(), RuntimeError> {
        let bytes =
            serde_json::to_vec_pretty(agent).map_err(|e| RuntimeError::Storage(e.to_string()))?;
        write_atomic(&self.record(), &bytes).map_err(|e| RuntimeError::Storage(e.to_string()))
    }

    pub fn load(&self) -> Result<StoredAgent, RuntimeError> {
        let path = self.record();
        let bytes = fs::read(&path).map_err(|e| storage(&path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::Storage(format!("{}: {e}", path.display())))
    }

    /// Forget the agent; its data too when asked.
    pub fn remove(&self, delete_data: bool) -> Result<(), RuntimeError> {
        let _ = fs::remove_file(self.record());
        let _ = fs::remove_dir_all(&self.run);
        if delete_data {
            fs::remove_dir_all(&self.root).map_err(|e| storage(&self.root, e))?;
        }
        Ok(())
    }
}

fn storage(path: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Storage(format!("{}: {e}", path.display()))
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Every agent recorded under `state_dir`. A damaged record is skipped with
/// a warning rather than stopping every other agent from starting.
pub fn load_all(
    state_dir: &Path,
    namespace: &str,
) -> Result<Vec<(AgentId, AgentDirs, StoredAgent)>, RuntimeError> {
    let agents = state_dir.join("agents");
    fs::create_dir_all(&agents).map_err(|e| storage(&agents, e))?;
    let mut out = Vec::new();
    for entry in fs::read_dir(&agents).map_err(|e| storage(&agents, e))? {
        let entry = entry.map_err(|e| storage(&agents, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(id) = AgentId::new(namespace, name.clone()) else {
            warn!(dir = %entry.path().display(), "ignoring a directory that is not an agent name");
            continue;
        };
        let dirs = AgentDirs::new(state_dir, &id);
        if !dirs.record().exists() {
            continue; // deprovisioned with its data kept
        }
        match dirs.load() {
            Ok(stored) => out.push((id, dirs, stored)),
            Err(e) => warn!(agent = %id, error = %e, "ignoring an unreadable agent record"),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

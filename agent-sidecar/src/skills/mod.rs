//! The agent's skills, as the controller manages them over AgentLink
//! (`SkillRequest`): library skills installed into a directory the
//! workload reads but cannot write (OpenClaw lists it in
//! `skills.load.extraDirs`, written by `init`), the list of every skill the
//! workload has, and the files of one of the person's own skills when they
//! propose it for the company library (docs/skills.md).
//!
//! The controller decides what may be installed (the library and the
//! agent's template); this module only checks that a bundle is well formed
//! and writes it whole or not at all.

mod shelf;
mod workload_view;

#[cfg(test)]
mod tests;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use clap::Args;
use clawswarm_proto::v1::{self as pb, skill_request::Op};
use tokio::sync::Semaphore;
use tracing::{info, warn};

pub use shelf::Shelf;
pub use workload_view::{OpenClawSkills, WorkloadSkills};

/// Requests served at once; more wait their turn (each is a few file
/// operations or one admin RPC).
const CONCURRENT_REQUESTS: usize = 2;
/// A request that takes longer is answered with an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, Args)]
pub struct SkillsArgs {
    /// Where installed library skills are written (the sidecar's view).
    /// Relative to the sidecar's data dir.
    #[arg(
        long = "skills-dir",
        env = "CLAWSWARM_SKILLS_DIR",
        default_value = "skills"
    )]
    pub dir: PathBuf,
    /// OpenClaw's config file, as the workload sees it (its workspace
    /// setting says where the person's own skills are).
    #[arg(
        long = "skills-openclaw-config",
        env = "CLAWSWARM_OPENCLAW_CONFIG",
        default_value = "/data/openclaw/openclaw.json"
    )]
    pub openclaw_config: PathBuf,
    /// OpenClaw's state directory (`OPENCLAW_STATE_DIR`), as the workload
    /// sees it; default: beside the config.
    #[arg(
        long = "skills-openclaw-state-dir",
        env = "CLAWSWARM_OPENCLAW_STATE_DIR"
    )]
    pub openclaw_state_dir: Option<PathBuf>,
    /// `WORKLOAD_PATH=SIDECAR_PATH`: where the sidecar reads the workload's
    /// files (Kubernetes mounts the workload's part of the volume read-only
    /// into the sidecar); empty when both see the same paths.
    #[arg(
        long = "workload-root-map",
        env = "CLAWSWARM_WORKLOAD_ROOT_MAP",
        default_value = ""
    )]
    pub root_map: String,
}

impl SkillsArgs {
    pub fn resolved(&self, data_dir: &std::path::Path) -> Self {
        let mut out = self.clone();
        if out.dir.is_relative() {
            out.dir = data_dir.join(&self.dir);
        }
        if out.openclaw_state_dir.is_none() {
            out.openclaw_state_dir = out.openclaw_config.parent().map(Path::to_path_buf);
        }
        out
    }

    /// The `(workload prefix, sidecar prefix)` pair, if any.
    pub fn root_map(&self) -> Result<Option<(PathBuf, PathBuf)>, String> {
        if self.root_map.trim().is_empty() {
            return Ok(None);
        }
        match self.root_map.split_once('=') {
            Some((w, s)) if w.starts_with('/') && s.starts_with('/') => {
                Ok(Some((PathBuf::from(w), PathBuf::from(s))))
            }
            _ => Err(format!(
                "{:?} is not WORKLOAD_PATH=SIDECAR_PATH with absolute paths",
                self.root_map
            )),
        }
    }
}

/// Serves `SkillRequest`s; one per sidecar.
pub struct Skills {
    shelf: Shelf,
    /// What the workload itself reports (OpenClaw's skill list); without
    /// one only library skills are known.
    workload: Option<Arc<dyn WorkloadSkills>>,
    permits: Semaphore,
}

impl Skills {
    pub fn new(shelf: Shelf, workload: Option<Arc<dyn WorkloadSkills>>) -> Self {
        Self {
            shelf,
            workload,
            permits: Semaphore::new(CONCURRENT_REQUESTS),
        }
    }

    /// Installed library skills, for Hello.
    pub fn installed(&self) -> Vec<String> {
        self.shelf.installed()
    }

    /// Answer one request; never fails, errors go in the reply.
    pub async fn serve(&self, req: pb::SkillRequest) -> pb::SkillReply {
        let id = req.request_id.clone();
        let answer = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| "the sidecar is stopping".to_owned())?;
            self.answer(req.op).await
        };
        let reply = match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => pb::SkillReply {
                error,
                ..Default::default()
            },
            Err(_) => pb::SkillReply {
                error: format!("the skills request took longer than {REQUEST_TIMEOUT:?}"),
                ..Default::default()
            },
        };
        pb::SkillReply {
            request_id: id,
            ..reply
        }
    }

    async fn answer(&self, op: Option<Op>) -> Result<pb::SkillReply, String> {
        match op {
            None => Err("the skills request names no operation".into()),
            Some(Op::List(_)) => Ok(pb::SkillReply {
                skills: self.list().await,
                ..Default::default()
            }),
            Some(Op::Install(bundle)) => {
                let name = bundle.name.clone();
                let shelf = self.shelf.clone();
                tokio::task::spawn_blocking(move || shelf.install(&bundle))
                    .await
                    .map_err(|e| format!("install of {name:?} failed: {e}"))?
                    .map_err(|e| e.to_string())?;
                info!(skill = %name, "library skill installed");
                Ok(self.library_reply())
            }
            Some(Op::Remove(name)) => {
                let shelf = self.shelf.clone();
                let removed = name.clone();
                tokio::task::spawn_blocking(move || shelf.remove(&removed))
                    .await
                    .map_err(|e| format!("removal of {name:?} failed: {e}"))?
                    .map_err(|e| e.to_string())?;
                info!(skill = %name, "library skill removed");
                Ok(self.library_reply())
            }
            Some(Op::Export(name)) => {
                let Some(workload) = &self.workload else {
                    return Err("this agent's workload keeps no skills of its own".into());
                };
                let bundle = workload.export(&name).await.map_err(|e| e.to_string())?;
                Ok(pb::SkillReply {
                    bundle: Some(bundle),
                    ..Default::default()
                })
            }
        }
    }

    fn library_reply(&self) -> pb::SkillReply {
        pb::SkillReply {
            skills: self.shelf.entries(),
            ..Default::default()
        }
    }

    /// Library skills on the shelf, then the person's own.
    async fn list(&self) -> Vec<pb::SkillEntry> {
        let mut list = self.shelf.entries();
        if let Some(w) = &self.workload {
            match w.own().await {
                Ok(own) => list.extend(own),
                Err(e) => warn!(error = %e, "the person's own skills could not be read"),
            }
        }
        list
    }
}

//! The person's own skills, where OpenClaw finds them: its workspace's
//! `skills/` and `.agents/skills/`, and the managed `skills/` of its state
//! directory (OpenClaw 2026.9.6's load order; its admin HTTP RPC does not
//! offer `skills.status`, so the sidecar reads the same directories). The
//! sidecar sees the workload's files at a mapped path on Kubernetes.

use std::{
    fs,
    path::{Path, PathBuf},
};

use clawswarm_proto::{
    skill_bundle::{self, SKILL_FILE, read_dir},
    v1 as pb,
};
use futures::future::BoxFuture;
use serde_json::Value;

pub const OWN_SOURCE: &str = "own";

/// How deep under a root a `SKILL.md` is looked for (OpenClaw allows
/// grouping folders).
const MAX_DEPTH: usize = 3;

pub trait WorkloadSkills: Send + Sync {
    /// The person's own skills.
    fn own(&self) -> BoxFuture<'_, Result<Vec<pb::SkillEntry>, String>>;
    /// The files of one of them.
    fn export<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<pb::SkillBundle, String>>;
}

#[derive(Clone, Debug)]
pub struct OpenClawSkills {
    /// OpenClaw's config and state directory, as the workload sees them.
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    /// `(workload prefix, sidecar prefix)` when the sidecar reads the
    /// workload's files at another path.
    pub root_map: Option<(PathBuf, PathBuf)>,
}

struct Found {
    name: String,
    description: String,
    dir: PathBuf,
}

impl OpenClawSkills {
    fn sidecar_path(&self, workload_path: &Path) -> PathBuf {
        match &self.root_map {
            Some((w, s)) => match workload_path.strip_prefix(w) {
                Ok(rest) => s.join(rest),
                Err(_) => workload_path.to_path_buf(),
            },
            None => workload_path.to_path_buf(),
        }
    }

    /// The workspace: the config's `agents.defaults.workspace`, else
    /// OpenClaw's default beside its state.
    fn workspace(&self) -> PathBuf {
        let configured = fs::read_to_string(self.sidecar_path(&self.config_path))
            .ok()
            .and_then(|t| json5::from_str::<Value>(&t).ok())
            .and_then(|cfg| {
                cfg.pointer("/agents/defaults/workspace")
                    .and_then(Value::as_str)
                    .map(PathBuf::from)
            });
        configured.unwrap_or_else(|| self.state_dir.join("workspace"))
    }

    fn roots(&self) -> Vec<PathBuf> {
        let ws = self.workspace();
        [
            ws.join("skills"),
            ws.join(".agents").join("skills"),
            self.state_dir.join("skills"),
        ]
        .iter()
        .map(|r| self.sidecar_path(r))
        .collect()
    }

    fn scan(&self) -> Vec<Found> {
        let mut out: Vec<Found> = Vec::new();
        for root in self.roots() {
            let mut stack = vec![(root, 0usize)];
            while let Some((dir, depth)) = stack.pop() {
                let skill_md = dir.join(SKILL_FILE);
                if let Ok(text) = fs::read_to_string(&skill_md) {
                    let name = skill_bundle::front_matter(&text, "name").unwrap_or_else(|| {
                        dir.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    });
                    // The first root wins, as in OpenClaw's precedence.
                    if !name.is_empty() && !out.iter().any(|f| f.name == name) {
                        out.push(Found {
                            description: skill_bundle::description(&text),
                            name,
                            dir: dir.clone(),
                        });
                    }
                    continue;
                }
                if depth >= MAX_DEPTH {
                    continue;
                }
                let Ok(entries) = fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let hidden = e.file_name().to_string_lossy().starts_with('.');
                    if !hidden && e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push((e.path(), depth + 1));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn own_now(&self) -> Vec<pb::SkillEntry> {
        self.scan()
            .into_iter()
            .map(|f| pb::SkillEntry {
                name: f.name,
                description: f.description,
                source: OWN_SOURCE.into(),
                eligible: true,
            })
            .collect()
    }

    fn export_now(&self, name: &str) -> Result<pb::SkillBundle, String> {
        let found = self.scan();
        let Some(skill) = found.iter().find(|f| f.name == name) else {
            let have = if found.is_empty() {
                "it has none of its own yet".to_owned()
            } else {
                let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
                format!("its own are: {}", names.join(", "))
            };
            return Err(format!(
                "the agent has no skill of its own named {name:?} ({have})"
            ));
        };
        read_dir(name, &skill.dir)
    }
}

impl WorkloadSkills for OpenClawSkills {
    fn own(&self) -> BoxFuture<'_, Result<Vec<pb::SkillEntry>, String>> {
        let me = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || me.own_now())
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn export<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<pb::SkillBundle, String>> {
        let me = self.clone();
        let name = name.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || me.export_now(&name))
                .await
                .map_err(|e| e.to_string())?
        })
    }
}

//! The directory of installed library skills: one subdirectory per skill,
//! replaced whole (written beside it, then renamed into place), so the
//! workload never reads half a skill.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use clawswarm_proto::{
    skill_bundle::{self, BundleError, SKILL_FILE},
    v1 as pb,
};

/// Where the source of a shelved skill is shown as.
pub const LIBRARY_SOURCE: &str = "library";

#[derive(Debug, thiserror::Error)]
pub enum ShelfError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("skill {name:?} is not installed from the library")]
    NotInstalled { name: String },
    #[error("cannot write skill {name:?} under {dir}: {source}")]
    Io {
        name: String,
        dir: PathBuf,
        source: io::Error,
    },
}

#[derive(Clone, Debug)]
pub struct Shelf {
    dir: PathBuf,
}

impl Shelf {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write `bundle` as `<dir>/<name>/`, replacing an older copy.
    pub fn install(&self, bundle: &pb::SkillBundle) -> Result<(), ShelfError> {
        skill_bundle::validate(bundle)?;
        let name = &bundle.name;
        let io_err = |source| ShelfError::Io {
            name: name.clone(),
            dir: self.dir.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(io_err)?;
        let staging = self
            .dir
            .join(format!(".staging-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        skill_bundle::write_dir(&staging, bundle).map_err(|e| {
            let _ = fs::remove_dir_all(&staging);
            io_err(e)
        })?;
        let target = self.dir.join(name);
        let old = self.dir.join(format!(".old-{name}-{}", std::process::id()));
        if target.exists() {
            let _ = fs::remove_dir_all(&old);
            fs::rename(&target, &old).map_err(io_err)?;
        }
        fs::rename(&staging, &target).map_err(io_err)?;
        let _ = fs::remove_dir_all(&old);
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<(), ShelfError> {
        skill_bundle::validate_name(name)?;
        let target = self.dir.join(name);
        if !target.join(SKILL_FILE).is_file() {
            return Err(ShelfError::NotInstalled {
                name: name.to_owned(),
            });
        }
        fs::remove_dir_all(&target).map_err(|source| ShelfError::Io {
            name: name.to_owned(),
            dir: self.dir.clone(),
            source,
        })
    }

    /// Names of the installed skills, sorted (leftovers of an interrupted
    /// install, whose names start with a dot, are not skills).
    pub fn installed(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| skill_bundle::validate_name(n).is_ok())
            .filter(|n| self.dir.join(n).join(SKILL_FILE).is_file())
            .collect();
        names.sort();
        names
    }

    pub fn entries(&self) -> Vec<pb::SkillEntry> {
        self.installed()
            .into_iter()
            .map(|name| {
                let description = fs::read_to_string(self.dir.join(&name).join(SKILL_FILE))
                    .map(|t| skill_bundle::description(&t))
                    .unwrap_or_default();
                pb::SkillEntry {
                    name,
                    description,
                    source: LIBRARY_SOURCE.into(),
                    eligible: true,
                }
            })
            .collect()
    }
}

//! The library as a directory (the local runtime's): `library/<name>/` is
//! a shared skill, `proposals/<name>/skill/` a proposed one with its
//! `proposal.json` beside it. An admin adds a skill by copying its
//! directory in; approving a proposal moves it there.

use std::{
    fs,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use clawswarm_proto::{
    skill_bundle::{self, SKILL_FILE},
    v1 as pb,
};
use serde::{Deserialize, Serialize};

use super::library::{LibraryError, LibrarySkill, Proposal, ProposalState, SkillLibrary};

pub struct DirLibrary {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct ProposalFile {
    agent: String,
    owner: String,
    state: String,
}

fn unavailable(at: &Path, e: impl std::fmt::Display) -> LibraryError {
    LibraryError::Unavailable(format!("{}: {e}", at.display()))
}

impl DirLibrary {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn skills_dir(&self) -> PathBuf {
        self.root.join("library")
    }

    fn proposals_dir(&self) -> PathBuf {
        self.root.join("proposals")
    }

    /// Subdirectories with a valid skill name, sorted.
    fn names(dir: &Path) -> Result<Vec<String>, LibraryError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(unavailable(dir, e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| skill_bundle::validate_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    fn read_skill(name: &str, dir: &Path) -> Result<pb::SkillBundle, LibraryError> {
        skill_bundle::read_dir(name, dir).map_err(|message| LibraryError::Damaged {
            name: name.to_owned(),
            message,
        })
    }

    fn proposal(&self, name: &str) -> Result<Option<Proposal>, LibraryError> {
        let at = self.proposals_dir().join(name);
        let meta = at.join("proposal.json");
        let text = match fs::read_to_string(&meta) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unavailable(&meta, e)),
        };
        let file: ProposalFile = serde_json::from_str(&text).map_err(|e| unavailable(&meta, e))?;
        let bundle = Self::read_skill(name, &at.join("skill"))?;
        let state = ProposalState::parse(&file.state).unwrap_or(ProposalState::Pending);
        Ok(Some(Proposal::of(&bundle, &file.agent, &file.owner, state)))
    }

    fn write_state(&self, p: &Proposal) -> Result<(), LibraryError> {
        let meta = self.proposals_dir().join(&p.name).join("proposal.json");
        let file = ProposalFile {
            agent: p.agent.clone(),
            owner: p.owner.clone(),
            state: p.state.as_str().into(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| unavailable(&meta, e))?;
        fs::write(&meta, text).map_err(|e| unavailable(&meta, e))
    }
}

#[async_trait]
impl SkillLibrary for DirLibrary {
    async fn list(&self) -> Result<Vec<LibrarySkill>, LibraryError> {
        let dir = self.skills_dir();
        let mut out = Vec::new();
        for name in Self::names(&dir)? {
            let text = match fs::read_to_string(dir.join(&name).join(SKILL_FILE)) {
                Ok(t) => t,
                // Not (yet) a skill: a directory being copied in.
                Err(_) => continue,
            };
            out.push(LibrarySkill {
                description: skill_bundle::description(&text),
                name,
            });
        }
        Ok(out)
    }

    async fn get(&self, name: &str) -> Result<Option<pb::SkillBundle>, LibraryError> {
        skill_bundle::validate_name(name)?;
        let dir = self.skills_dir().join(name);
        if !dir.join(SKILL_FILE).is_file() {
            return Ok(None);
        }
        Self::read_skill(name, &dir).map(Some)
    }

    async fn propose(
        &self,
        bundle: &pb::SkillBundle,
        agent: &str,
        owner: &str,
    ) -> Result<Proposal, LibraryError> {
        skill_bundle::validate(bundle)?;
        if self.get(&bundle.name).await?.is_some() {
            return Err(LibraryError::NameTaken(bundle.name.clone()));
        }
        let at = self.proposals_dir().join(&bundle.name);
        let _ = fs::remove_dir_all(&at);
        skill_bundle::write_dir(&at.join("skill"), bundle).map_err(|e| unavailable(&at, e))?;
        let p = Proposal::of(bundle, agent, owner, ProposalState::Pending);
        self.write_state(&p)?;
        Ok(p)
    }

    async fn proposals(&self) -> Result<Vec<Proposal>, LibraryError> {
        let mut out = Vec::new();
        for name in Self::names(&self.proposals_dir())? {
            if let Some(p) = self.proposal(&name)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    async fn review(&self, name: &str, approve: bool) -> Result<Proposal, LibraryError> {
        skill_bundle::validate_name(name)?;
        let mut p = self
            .proposal(name)?
            .ok_or_else(|| LibraryError::NoSuchProposal(name.to_owned()))?;
        p.ensure_pending()?;
        if approve {
            if self.get(name).await?.is_some() {
                return Err(LibraryError::NameTaken(name.to_owned()));
            }
            let bundle = Self::read_skill(name, &self.proposals_dir().join(name).join("skill"))?;
            let target = self.skills_dir().join(name);
            skill_bundle::write_dir(&target, &bundle).map_err(|e| unavailable(&target, e))?;
            p.state = ProposalState::Approved;
        } else {
            p.state = ProposalState::Rejected;
        }
        self.write_state(&p)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    // A panic is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bundle(name: &str) -> pb::SkillBundle {
        pb::SkillBundle {
            name: name.into(),
            files: vec![pb::SkillFile {
                path: SKILL_FILE.into(),
                content: format!("---\ndescription: {name} things\n---\n").into_bytes(),
            }],
        }
    }

    #[tokio::test]
    async fn an_approved_proposal_joins_the_library_and_cannot_be_reviewed_twice() {
        let dir = tempfile::tempdir().unwrap();
        let lib = DirLibrary::new(dir.path().to_owned());
        assert!(lib.list().await.unwrap().is_empty());
        let p = lib
            .propose(&bundle("standup"), "local/u-1", "U1")
            .await
            .unwrap();
        assert_eq!(p.state, ProposalState::Pending);
        assert!(
            lib.get("standup").await.unwrap().is_none(),
            "not shared before approval"
        );

        let p = lib.review("standup", true).await.unwrap();
        assert_eq!(p.state, ProposalState::Approved);
        let listed = lib.list().await.unwrap();
        assert_eq!(listed[0].name, "standup");
        assert_eq!(listed[0].description, "standup things");
        assert!(matches!(
            lib.review("standup", false).await,
            Err(LibraryError::AlreadyReviewed { .. })
        ));
        assert!(matches!(
            lib.propose(&bundle("standup"), "local/u-2", "U2").await,
            Err(LibraryError::NameTaken(_))
        ));
    }

    #[tokio::test]
    async fn a_rejected_proposal_stays_out_and_unknown_names_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let lib = DirLibrary::new(dir.path().to_owned());
        lib.propose(&bundle("risky"), "local/u-1", "U1")
            .await
            .unwrap();
        assert_eq!(
            lib.review("risky", false).await.unwrap().state,
            ProposalState::Rejected
        );
        assert!(lib.list().await.unwrap().is_empty());
        assert!(matches!(
            lib.review("absent", true).await,
            Err(LibraryError::NoSuchProposal(_))
        ));
        assert!(matches!(
            lib.get("../etc").await,
            Err(LibraryError::Bundle(_))
        ));
    }
}

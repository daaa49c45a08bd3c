//! The company skills library, as agents use it (docs/skills.md): what an
//! agent has and what the library offers it, installing from the library
//! only (within the template's allowlist), proposals of a person's own
//! skills and their review. Front doors (Slack's `/agent skills`, the
//! Gateway) call this; it reaches the sidecar through the mesh.

pub mod allowlist;
pub mod configmap_library;
pub mod dir_library;
pub mod library;

use std::{sync::Arc, time::Duration};

use clawswarm_certs::AgentId;
use clawswarm_proto::v1::{self as pb, skill_request::Op};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::{
    allowlist::Allowlist,
    library::{LibraryError, LibrarySkill, Proposal, ProposalState, SkillLibrary},
};
use crate::{
    mesh::{Mesh, MeshError, SkillHolder},
    runtime::{AgentRecord, Runtime, RuntimeError},
};

/// How long a sidecar has to answer (a list asks OpenClaw).
const SIDECAR_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SkillsError {
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{0}")]
    Mesh(#[from] MeshError),
    #[error("agent {0} does not exist")]
    NoAgent(AgentId),
    #[error("the {template:?} template does not offer library skill {name:?}")]
    NotOffered { name: String, template: String },
    #[error("agent {agent}: {message}")]
    Sidecar { agent: AgentId, message: String },
}

impl From<SkillsError> for tonic::Status {
    fn from(e: SkillsError) -> Self {
        let msg = e.to_string();
        match e {
            SkillsError::Library(LibraryError::Unavailable(_)) => tonic::Status::unavailable(msg),
            SkillsError::Library(LibraryError::Bundle(_)) => tonic::Status::invalid_argument(msg),
            SkillsError::Library(
                LibraryError::NoSuchSkill(_) | LibraryError::NoSuchProposal(_),
            )
            | SkillsError::NoAgent(_) => tonic::Status::not_found(msg),
            SkillsError::Library(
                LibraryError::NameTaken(_) | LibraryError::AlreadyReviewed { .. },
            ) => tonic::Status::already_exists(msg),
            SkillsError::Library(_) | SkillsError::Sidecar { .. } => {
                tonic::Status::failed_precondition(msg)
            }
            SkillsError::NotOffered { .. } => tonic::Status::permission_denied(msg),
            SkillsError::Runtime(e) => e.into(),
            SkillsError::Mesh(e) => e.into(),
        }
    }
}

/// What an agent has, and what else the library offers it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overview {
    pub installed: Vec<pb::SkillEntry>,
    pub offered: Vec<LibrarySkill>,
}

pub struct Skills {
    library: Arc<dyn SkillLibrary>,
    runtime: Arc<dyn Runtime>,
    mesh: Mesh,
}

impl Skills {
    pub fn new(library: Arc<dyn SkillLibrary>, runtime: Arc<dyn Runtime>, mesh: Mesh) -> Self {
        Self {
            library,
            runtime,
            mesh,
        }
    }

    async fn agent(&self, id: &AgentId) -> Result<AgentRecord, SkillsError> {
        self.runtime
            .get(id)
            .await?
            .ok_or_else(|| SkillsError::NoAgent(id.clone()))
    }

    async fn ask(&self, id: &AgentId, op: Op) -> Result<pb::SkillReply, SkillsError> {
        let reply = self.mesh.skill_request(id, op, SIDECAR_TIMEOUT).await?;
        if reply.error.is_empty() {
            Ok(reply)
        } else {
            Err(SkillsError::Sidecar {
                agent: id.clone(),
                message: reply.error,
            })
        }
    }

    /// The library skills `record`'s template offers.
    async fn offered_to(&self, record: &AgentRecord) -> Result<Vec<LibrarySkill>, SkillsError> {
        let allow = self.runtime.skill_allowlist(&record.template).await?;
        Ok(self
            .library
            .list()
            .await?
            .into_iter()
            .filter(|s| allow.allows(&s.name))
            .collect())
    }

    pub async fn overview(&self, id: &AgentId) -> Result<Overview, SkillsError> {
        let record = self.agent(id).await?;
        let installed = self.ask(id, Op::List(pb::ListSkills {})).await?.skills;
        let offered = self
            .offered_to(&record)
            .await?
            .into_iter()
            .filter(|s| {
                !installed
                    .iter()
                    .any(|i| i.name == s.name && i.source == "library")
            })
            .collect();
        Ok(Overview { installed, offered })
    }

    /// Install library skill `name` into the agent (or refresh it).
    pub async fn add(&self, id: &AgentId, name: &str) -> Result<Overview, SkillsError> {
        let record = self.agent(id).await?;
        let allow = self.runtime.skill_allowlist(&record.template).await?;
        let bundle = self
            .library
            .get(name)
            .await?
            .ok_or_else(|| LibraryError::NoSuchSkill(name.to_owned()))?;
        if !allow.allows(name) {
            return Err(SkillsError::NotOffered {
                name: name.to_owned(),
                template: record.template,
            });
        }
        self.ask(id, Op::Install(bundle)).await?;
        info!(agent = %id, skill = name, "library skill installed");
        self.overview(id).await
    }

    pub async fn remove(&self, id: &AgentId, name: &str) -> Result<Overview, SkillsError> {
        self.agent(id).await?;
        self.ask(id, Op::Remove(name.to_owned())).await?;
        info!(agent = %id, skill = name, "library skill removed");
        self.overview(id).await
    }

    /// Offer one of the agent's own skills to the library.
    pub async fn propose(&self, id: &AgentId, name: &str) -> Result<Proposal, SkillsError> {
        let record = self.agent(id).await?;
        let reply = self.ask(id, Op::Export(name.to_owned())).await?;
        let bundle = reply.bundle.ok_or_else(|| SkillsError::Sidecar {
            agent: id.clone(),
            message: format!("sent no files for skill {name:?}"),
        })?;
        if bundle.name != name {
            return Err(SkillsError::Sidecar {
                agent: id.clone(),
                message: format!("sent skill {:?} when asked for {name:?}", bundle.name),
            });
        }
        let p = self
            .library
            .propose(&bundle, &id.to_string(), &record.owner)
            .await?;
        info!(agent = %id, skill = name, "skill proposed for the library");
        Ok(p)
    }

    pub async fn proposals(&self) -> Result<Vec<Proposal>, SkillsError> {
        Ok(self.library.proposals().await?)
    }

    pub async fn review(&self, name: &str, approve: bool) -> Result<Proposal, SkillsError> {
        let p = self.library.review(name, approve).await?;
        info!(
            skill = name,
            state = p.state.as_str(),
            "skill proposal reviewed"
        );
        Ok(p)
    }

    /// A sidecar connected holding `holder.library_skills`: send each again
    /// as the library has it now, and remove those the library or the
    /// template no longer offers.
    pub async fn refresh(&self, holder: &SkillHolder) -> Result<(), SkillsError> {
        if holder.library_skills.is_empty() {
            return Ok(());
        }
        let id = &holder.agent;
        let record = self.agent(id).await?;
        let allow = self.runtime.skill_allowlist(&record.template).await?;
        for name in &holder.library_skills {
            let current = if allow.allows(name) {
                self.library.get(name).await?
            } else {
                None
            };
            let op = match current {
                Some(bundle) => Op::Install(bundle),
                None => {
                    info!(agent = %id, skill = %name, "library skill no longer offered; removing it");
                    Op::Remove(name.clone())
                }
            };
            self.ask(id, op).await?;
        }
        Ok(())
    }

    /// Refresh every sidecar that connects, until `shutdown`.
    pub async fn refresh_connected(
        self: Arc<Self>,
        mut holders: mpsc::Receiver<SkillHolder>,
        shutdown: CancellationToken,
    ) {
        loop {
            let holder = tokio::select! {
                _ = shutdown.cancelled() => return,
                h = holders.recv() => match h { Some(h) => h, None => return },
            };
            if let Err(e) = self.refresh(&holder).await {
                warn!(agent = %holder.agent, error = %e, "library skills not refreshed");
            }
        }
    }
}

//! The company skills library: where shared skills and proposals live.
//! Two stores: a directory on this machine (the local runtime) and
//! ConfigMaps in the controller's namespace (Kubernetes); admins control
//! both with the tools they already use (files, `kubectl`, GitOps).

use async_trait::async_trait;
use clawswarm_proto::{skill_bundle::BundleError, v1 as pb};

/// A skill the library offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibrarySkill {
    pub name: String,
    pub description: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalState {
    Pending,
    Approved,
    Rejected,
}

impl ProposalState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "approved" => Some(Self::Approved),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// A person's skill offered to the library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub name: String,
    pub description: String,
    pub agent: String,
    pub owner: String,
    pub state: ProposalState,
    pub files: Vec<String>,
}

impl Proposal {
    /// What a store knows of a proposal: its files, who sent it, its state.
    pub fn of(bundle: &pb::SkillBundle, agent: &str, owner: &str, state: ProposalState) -> Self {
        Self {
            name: bundle.name.clone(),
            description: clawswarm_proto::skill_bundle::bundle_description(bundle),
            agent: agent.to_owned(),
            owner: owner.to_owned(),
            state,
            files: bundle.files.iter().map(|f| f.path.clone()).collect(),
        }
    }

    /// Only a pending proposal may be reviewed, once.
    pub fn ensure_pending(&self) -> Result<(), LibraryError> {
        if self.state == ProposalState::Pending {
            Ok(())
        } else {
            Err(LibraryError::AlreadyReviewed {
                name: self.name.clone(),
                state: self.state.as_str(),
            })
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("the skills library has no skill named {0:?}")]
    NoSuchSkill(String),
    #[error("there is no proposal named {0:?}")]
    NoSuchProposal(String),
    #[error("the skills library already has a skill named {0:?}; rename yours to propose it")]
    NameTaken(String),
    #[error("proposal {name:?} was {state} already")]
    AlreadyReviewed { name: String, state: &'static str },
    #[error("skill {name:?} in the library is damaged: {message}")]
    Damaged { name: String, message: String },
    #[error("skills library unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait SkillLibrary: Send + Sync + 'static {
    /// Every skill the library offers, sorted by name.
    async fn list(&self) -> Result<Vec<LibrarySkill>, LibraryError>;
    async fn get(&self, name: &str) -> Result<Option<pb::SkillBundle>, LibraryError>;
    /// Store a proposal (replacing an earlier pending one of the same name).
    async fn propose(
        &self,
        bundle: &pb::SkillBundle,
        agent: &str,
        owner: &str,
    ) -> Result<Proposal, LibraryError>;
    async fn proposals(&self) -> Result<Vec<Proposal>, LibraryError>;
    /// Approve (the skill joins the library) or reject a pending proposal.
    async fn review(&self, name: &str, approve: bool) -> Result<Proposal, LibraryError>;
}

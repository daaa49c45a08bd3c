//! Where agents run: the seam between "this agent should exist and be
//! running" and the processes or pods that make it so.
//!
//! Two implementations: `local` (processes on this machine, the embedded
//! default) and `kubernetes` (an `Agent` custom resource reconciled into a
//! PVC and a Pod). Configuration picks one; nothing above this module knows
//! which.

pub mod kubernetes;
pub mod local;
pub mod notices;
pub mod usage;

use std::fmt;

use async_trait::async_trait;
use clawswarm_certs::AgentId;
use tokio_util::sync::CancellationToken;

use crate::identity::Authenticator;

/// This controller replica's part, as its runtime knows it. Front doors
/// (Slack, the Gateway, AgentLink) serve only once it is known, and only the
/// leader holds the Slack connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Caches not synced or leadership not decided yet.
    Starting,
    /// Serves turns: holds the Lease, or is the only replica (local runtime).
    Leader,
    /// Alive and Ready, serves nothing until it takes the Lease.
    Standby,
}

impl Role {
    /// For logs, `/readyz` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Leader => "leader",
            Self::Standby => "standby",
        }
    }
}

/// What the operator or the person asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AgentMode {
    Running,
    Suspended,
}

/// What is actually happening, summarised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AgentPhase {
    /// Accepted, nothing started yet.
    Pending,
    /// Processes or pod starting; not connected yet.
    Starting,
    /// Connected to the controller (workload readiness is reported separately).
    Running,
    Suspended,
    /// Could not be started; `detail` says why.
    Failed,
    Terminating,
}

impl fmt::Display for AgentPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A request to create an agent.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub id: AgentId,
    /// Who the agent belongs to (a Slack user id, or any stable person id).
    pub owner: String,
    pub template: String,
}

/// An agent as the runtime knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentRecord {
    pub id: AgentId,
    pub owner: String,
    pub template: String,
    pub mode: AgentMode,
    pub phase: AgentPhase,
    pub detail: String,
    /// Tokens used over the agent's life: as its sidecar metered them
    /// (every model call, background work included) when it meters, else as
    /// its turns reported them (see [`usage`]).
    pub usage: TokenTotals,
    /// Company-data queries over the agent's life, from the same metered
    /// reports (zero from sidecars that keep no usage ledger).
    pub data: DataTotals,
}

/// Company-data queries through an agent's data proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataTotals {
    pub queries: u64,
    pub refused: u64,
    pub documents: u64,
    pub bytes: u64,
}

impl DataTotals {
    pub fn from_proto(d: &clawswarm_proto::v1::DataUsage) -> Self {
        Self {
            queries: d.queries,
            refused: d.refused,
            documents: d.documents,
            bytes: d.bytes,
        }
    }

    pub fn add(&mut self, o: &DataTotals) {
        self.queries = self.queries.saturating_add(o.queries);
        self.refused = self.refused.saturating_add(o.refused);
        self.documents = self.documents.saturating_add(o.documents);
        self.bytes = self.bytes.saturating_add(o.bytes);
    }

    pub fn max_each(&self, o: &DataTotals) -> DataTotals {
        DataTotals {
            queries: self.queries.max(o.queries),
            refused: self.refused.max(o.refused),
            documents: self.documents.max(o.documents),
            bytes: self.bytes.max(o.bytes),
        }
    }

    pub fn to_proto(self) -> clawswarm_proto::v1::DataUsage {
        clawswarm_proto::v1::DataUsage {
            queries: self.queries,
            refused: self.refused,
            documents: self.documents,
            bytes: self.bytes,
        }
    }
}

/// Token totals by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenTotals {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl TokenTotals {
    /// Figures come from sidecars: a huge one saturates rather than
    /// wrapping (release) or panicking the usage task (debug).
    pub fn add(&mut self, u: &clawswarm_proto::v1::Usage) {
        self.add_totals(&TokenTotals {
            input: u.input_tokens,
            output: u.output_tokens,
            cache_read: u.cache_read_tokens,
            cache_write: u.cache_write_tokens,
        });
    }

    pub fn add_totals(&mut self, t: &TokenTotals) {
        self.input = self.input.saturating_add(t.input);
        self.output = self.output.saturating_add(t.output);
        self.cache_read = self.cache_read.saturating_add(t.cache_read);
        self.cache_write = self.cache_write.saturating_add(t.cache_write);
    }

    /// The larger of each kind.
    pub fn max_each(&self, t: &TokenTotals) -> TokenTotals {
        TokenTotals {
            input: self.input.max(t.input),
            output: self.output.max(t.output),
            cache_read: self.cache_read.max(t.cache_read),
            cache_write: self.cache_write.max(t.cache_write),
        }
    }

    pub fn to_proto(self) -> clawswarm_proto::v1::Usage {
        clawswarm_proto::v1::Usage {
            input_tokens: self.input,
            output_tokens: self.output,
            cache_read_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("agent {0} not found")]
    NotFound(AgentId),
    #[error("agent {0} already exists")]
    AlreadyExists(AgentId),
    #[error("owner {owner} already has agent {agent}")]
    OwnerHasAgent { owner: String, agent: AgentId },
    #[error("invalid agent spec: {0}")]
    Invalid(String),
    #[error("agent {agent}: {message}")]
    Failed { agent: AgentId, message: String },
    #[error("runtime storage: {0}")]
    Storage(String),
    #[error("runtime backend unavailable: {0}")]
    Unavailable(String),
}

impl RuntimeError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::AlreadyExists(_) => "already_exists",
            Self::OwnerHasAgent { .. } => "owner_has_agent",
            Self::Invalid(_) => "invalid",
            Self::Failed { .. } => "failed",
            Self::Storage(_) => "storage",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl From<RuntimeError> for tonic::Status {
    fn from(e: RuntimeError) -> Self {
        let msg = e.to_string();
        match e {
            RuntimeError::NotFound(_) => tonic::Status::not_found(msg),
            RuntimeError::AlreadyExists(_) | RuntimeError::OwnerHasAgent { .. } => {
                tonic::Status::already_exists(msg)
            }
            RuntimeError::Invalid(_) => tonic::Status::invalid_argument(msg),
            RuntimeError::Failed { .. } => tonic::Status::failed_precondition(msg),
            RuntimeError::Storage(_) => tonic::Status::internal(msg),
            RuntimeError::Unavailable(_) => tonic::Status::unavailable(msg),
        }
    }
}

/// Where agents run. All methods are idempotent where that makes sense
/// (suspending a suspended agent succeeds).
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// "local" or "kubernetes", for logs.
    fn kind(&self) -> &'static str;

    /// How sidecars started by this runtime prove who they are to `Identity.Certify`.
    fn authenticator(&self) -> std::sync::Arc<dyn Authenticator>;

    async fn provision(&self, spec: AgentSpec) -> Result<AgentRecord, RuntimeError>;

    /// Stop the agent and forget it; its data goes too when `delete_data`.
    async fn deprovision(&self, id: &AgentId, delete_data: bool) -> Result<(), RuntimeError>;

    /// Stop the agent's processes or pod, keep its data.
    async fn suspend(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError>;

    /// Start a suspended agent again (wake on message uses this).
    async fn resume(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError>;

    /// Stop and start the agent's processes or pod (data kept).
    async fn restart(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError>;

    async fn get(&self, id: &AgentId) -> Result<Option<AgentRecord>, RuntimeError>;

    async fn list(&self) -> Result<Vec<AgentRecord>, RuntimeError>;

    async fn find_by_owner(&self, owner: &str) -> Result<Option<AgentRecord>, RuntimeError> {
        Ok(self.list().await?.into_iter().find(|a| a.owner == owner))
    }

    /// Note that the agent did something (for idle suspension).
    async fn record_activity(&self, id: &AgentId) -> Result<(), RuntimeError>;

    /// Add tokens a turn reported to the agent's persisted totals (the
    /// controller batches calls; totals survive controller restarts).
    async fn record_usage(&self, id: &AgentId, usage: TokenTotals) -> Result<(), RuntimeError>;

    /// Fold a sidecar's metered figure into the agent's persisted totals
    /// ([`usage::MeteredTotals::fold`]).
    async fn record_metered(
        &self,
        id: &AgentId,
        report: &clawswarm_proto::v1::MeteredUsage,
    ) -> Result<(), RuntimeError>;

    /// Whether notice `notice_id` of agent `id` was delivered already
    /// (see [`notices`]): then it is acknowledged again, not posted again.
    async fn notice_delivered(&self, id: &AgentId, notice_id: &str) -> Result<bool, RuntimeError>;

    /// Remember, durably and before the sidecar is told, that notice
    /// `notice_id` was delivered.
    async fn record_notice_delivered(
        &self,
        id: &AgentId,
        notice_id: &str,
    ) -> Result<(), RuntimeError>;

    /// Which company-library skills agents of `template` may install
    /// (docs/skills.md). The default (no per-template settings, the local
    /// runtime) offers every skill in the library.
    async fn skill_allowlist(
        &self,
        template: &str,
    ) -> Result<crate::skills::Allowlist, RuntimeError> {
        let _ = template;
        Ok(crate::skills::Allowlist::all())
    }

    /// This replica's role. The default (one replica, nothing to elect) is
    /// always the leader; the Kubernetes runtime starts `Starting` and
    /// follows its Lease.
    fn role(&self) -> tokio::sync::watch::Receiver<Role> {
        tokio::sync::watch::channel(Role::Leader).1
    }

    /// Supervise until `shutdown` fires; then stop what this runtime owns
    /// (the local runtime stops its processes; Kubernetes leaves pods alone).
    async fn run(&self, shutdown: CancellationToken) -> Result<(), RuntimeError>;
}

//! The seam between the sidecar and the service it wraps.
//!
//! Nothing outside this module knows what the workload is (OpenClaw, or any
//! server speaking OpenAI-style streaming `/v1/responses`). The sidecar's relay
//! owns everything generic about a turn — one turn at a time per
//! conversation, queues, the retry before first content, timeouts,
//! cancellation, buffering for resume — so an adapter only translates one
//! request into a stream of [`WorkloadEvent`]s.

pub mod history;
pub mod none;
pub mod openclaw;
pub mod responses;
pub mod sse;

use std::{fmt, time::Duration};

use futures::{future::BoxFuture, stream::BoxStream};

/// One turn handed to the workload.
#[derive(Clone)]
pub struct TurnRequest {
    pub turn_id: String,
    /// One workload session per conversation (e.g. an OpenClaw session key).
    pub conversation: String,
    pub text: String,
}

impl fmt::Debug for TurnRequest {
    // The person's text is never logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnRequest")
            .field("turn_id", &self.turn_id)
            .field("conversation", &self.conversation)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .finish()
    }
}

/// Token counts as the model provider reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Figures come from the provider or the workload: a huge one
    /// saturates rather than wrapping or panicking.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(other.cache_write_tokens);
    }
}

/// What a workload yields while it answers a turn: any number of deltas,
/// then exactly one `Done`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadEvent {
    Delta(String),
    Done(Usage),
}

/// The reply to a turn. Dropping the stream cancels the request upstream
/// (adapters must close their HTTP request when dropped).
pub type ReplyStream = BoxStream<'static, Result<WorkloadEvent, WorkloadError>>;

/// Whether the workload can take turns now, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub detail: String,
    /// Turns are answered at once with `detail` instead of waiting for
    /// readiness: waiting cannot help (the data volume is full).
    pub refusing: bool,
}

impl Readiness {
    pub fn ready(detail: impl Into<String>) -> Self {
        Self {
            ready: true,
            detail: detail.into(),
            refusing: false,
        }
    }
    pub fn not_ready(detail: impl Into<String>) -> Self {
        Self {
            ready: false,
            detail: detail.into(),
            refusing: false,
        }
    }
    /// Not ready, and turns are refused with `detail` until it changes.
    pub fn refusing(detail: impl Into<String>) -> Self {
        Self {
            ready: false,
            detail: detail.into(),
            refusing: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The workload could not be reached or refused before answering;
    /// worth one retry when no content was produced yet.
    #[error("workload unavailable: {0}")]
    Unavailable(String),
    /// The workload answered with an HTTP error status.
    #[error("workload returned HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// The model provider refused the credentials (HTTP 401/403): nothing
    /// changes that until an operator sets another key.
    #[error(
        "the model provider rejected the key ({status}): {message} (check CLAWSWARM_WORKLOAD_TOKEN)"
    )]
    Rejected { status: u16, message: String },
    /// The workload reported a failure inside a successful response
    /// (`response.failed`, an error object after HTTP 200).
    #[error("workload failed: {0}")]
    Failed(String),
    /// The workload's reply did not follow its protocol.
    #[error("workload protocol error: {0}")]
    Protocol(String),
    /// No workload is configured; nothing will change that until an operator acts.
    #[error("no workload configured: {0}")]
    NotConfigured(String),
    #[error("workload sent nothing for {0:?}")]
    Timeout(Duration),
}

impl WorkloadError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Http { .. } => "http",
            Self::Rejected { .. } => "rejected",
            Self::Failed(_) => "failed",
            Self::Protocol(_) => "protocol",
            Self::NotConfigured(_) => "not_configured",
            Self::Timeout(_) => "timeout",
        }
    }

    /// Errors that may succeed on a second try, if no content reached the
    /// person yet.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::Failed(_) => true,
            Self::Http { status, .. } => *status >= 500,
            Self::Rejected { .. }
            | Self::Protocol(_)
            | Self::NotConfigured(_)
            | Self::Timeout(_) => false,
        }
    }
}

/// Something the workload says on its own (a cron job's output, an alert),
/// to be delivered to the agent's owner. `notice_id` must be stable for the
/// same message (e.g. derived from job id and run time) so a resend after a
/// crash is recognised as the same notice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadNotice {
    pub notice_id: String,
    /// The conversation it belongs to, if any (empty: a direct message).
    pub conversation: String,
    pub text: String,
}

/// An adapter for the service the sidecar wraps.
pub trait Workload: Send + Sync + 'static {
    /// Short name for logs and metrics ("responses", "openclaw").
    fn kind(&self) -> &'static str;

    /// Ask the workload whether it is ready now. Called periodically by the
    /// sidecar; must not start a conversation or cost model tokens.
    fn check_ready(&self) -> BoxFuture<'_, Readiness>;

    /// False when there is no workload at all: turns then fail at once with
    /// the adapter's explanation instead of waiting for readiness.
    fn is_configured(&self) -> bool {
        true
    }

    /// Start answering one turn.
    fn start_turn(&self, turn: TurnRequest) -> ReplyStream;

    /// Proactive messages, if this workload produces any. Called once by
    /// the sidecar at start; the sidecar keeps each notice until the
    /// controller acknowledges delivery.
    fn take_notices(&self) -> Option<BoxStream<'static, WorkloadNotice>> {
        None
    }
}

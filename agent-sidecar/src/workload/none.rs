//! The workload when none is configured: never ready, and every turn fails
//! at once saying what to configure. Nothing pretends to answer.

use futures::{future::BoxFuture, stream};

use super::{Readiness, ReplyStream, TurnRequest, Workload, WorkloadError};

pub struct NoWorkload {
    pub reason: String,
}

impl Workload for NoWorkload {
    fn kind(&self) -> &'static str {
        "none"
    }

    fn is_configured(&self) -> bool {
        false
    }

    fn check_ready(&self) -> BoxFuture<'_, Readiness> {
        Box::pin(
            async move { Readiness::not_ready(format!("no workload configured: {}", self.reason)) },
        )
    }

    fn start_turn(&self, _turn: TurnRequest) -> ReplyStream {
        Box::pin(stream::once(std::future::ready(Err(
            WorkloadError::NotConfigured(self.reason.clone()),
        ))))
    }
}

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;

use super::idle::{is_idle, last_active};
use super::*;
use crate::identity::{AuthError, CertifyClaim};

/// A runtime with no agents, for handlers that only need the trait.
pub(crate) struct NullRuntime;

struct NoAuth;

#[async_trait]
impl Authenticator for NoAuth {
    fn kind(&self) -> &'static str {
        "none"
    }
    async fn authenticate(&self, _: &CertifyClaim<'_>) -> Result<(), AuthError> {
        Err(AuthError::MissingToken)
    }
}

#[async_trait]
impl Runtime for NullRuntime {
    fn kind(&self) -> &'static str {
        "null"
    }
    fn authenticator(&self) -> Arc<dyn Authenticator> {
        Arc::new(NoAuth)
    }
    async fn provision(&self, spec: AgentSpec) -> Result<AgentRecord, RuntimeError> {
        Err(RuntimeError::Invalid(spec.id.to_string()))
    }
    async fn deprovision(&self, id: &AgentId, _: bool) -> Result<(), RuntimeError> {
        Err(RuntimeError::NotFound(id.clone()))
    }
    async fn suspend(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError> {
        Err(RuntimeError::NotFound(id.clone()))
    }
    async fn resume(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError> {
        Err(RuntimeError::NotFound(id.clone()))
    }
    async fn restart(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError> {
        Err(RuntimeError::NotFound(id.clone()))
    }
    async fn get(&self, _: &AgentId) -> Result<Option<AgentRecord>, RuntimeError> {
        Ok(None)
    }
    async fn list(&self) -> Result<Vec<AgentRecord>, RuntimeError> {
        Ok(Vec::new())
    }
    async fn record_activity(&self, _: &AgentId) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn record_usage(&self, _: &AgentId, _: TokenTotals) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn record_metered(
        &self,
        _: &AgentId,
        _: &clawswarm_proto::v1::MeteredUsage,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn notice_delivered(&self, _: &AgentId, _: &str) -> Result<bool, RuntimeError> {
        Ok(false)
    }
    async fn record_notice_delivered(&self, _: &AgentId, _: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn run(&self, _: CancellationToken) -> Result<(), RuntimeError> {
        Ok(())
    }
}

#[test]
fn idle_only_after_the_timeout_has_fully_passed() {
    let now = Timestamp::now();
    let hour = Duration::from_secs(3600);
    assert!(!is_idle(
        now,
        Some(now - SignedDuration::from_secs(3599)),
        hour
    ));
    assert!(is_idle(
        now,
        Some(now - SignedDuration::from_secs(3601)),
        hour
    ));
    assert!(!is_idle(now, None, hour));
}

#[test]
fn last_active_takes_the_latest_sign_of_life() {
    let mut a = Agent::new(
        "a",
        crd::AgentSpec {
            owner: "U1".into(),
            template: "t".into(),
            mode: Mode::Running,
            retention: None,
        },
    );
    let old = Timestamp::now() - SignedDuration::from_secs(7200);
    a.metadata.creation_timestamp = Some(Time(old));
    assert_eq!(last_active(&a, None), Some(old));
    let recent = Timestamp::now();
    assert_eq!(last_active(&a, Some(recent)), Some(recent));
}

//! `Identity.Certify` on Kubernetes: the sidecar presents its projected
//! ServiceAccount token; TokenReview (with our audience) says whose it is
//! and which pod it is bound to; that pod must be live and labelled for the
//! agent whose identity is requested. Decisions are cached briefly, keyed
//! by a hash of the token, so a renewal storm does not flood the API server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clawswarm_certs::AgentId;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt as _};
use sha2::{Digest as _, Sha256};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::crd::Agent;
use super::pod::LABEL_AGENT;
use crate::identity::{AuthError, Authenticator, CertifyClaim};
use crate::metrics::ResultLabel;

const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// Bound on remembered decisions (one per live pod is the steady state).
const CACHE_MAX: usize = 8192;

#[derive(Clone, Debug)]
pub struct TokenReviewConfig {
    pub namespace: String,
    /// The audience agent pods' projected tokens carry.
    pub audience: String,
    /// The ServiceAccount agent pods run as.
    pub service_account: String,
    pub cache_ttl: Duration,
}

pub struct TokenReviewAuthenticator {
    client: Client,
    cfg: TokenReviewConfig,
    decisions: Family<ResultLabel, Counter>,
    cache: Mutex<HashMap<[u8; 32], (Instant, Decision)>>,
}

#[derive(Clone, Debug)]
enum Decision {
    Allow,
    Deny(DenyKind, String),
}

#[derive(Clone, Copy, Debug)]
enum DenyKind {
    Invalid,
    WrongAgent,
}

impl TokenReviewAuthenticator {
    pub fn new(
        client: Client,
        cfg: TokenReviewConfig,
        decisions: Family<ResultLabel, Counter>,
    ) -> Self {
        Self {
            client,
            cfg,
            decisions,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn key(claim: &CertifyClaim<'_>) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(claim.requested.to_string().as_bytes());
        h.update([0]);
        h.update(claim.token.as_bytes());
        h.finalize().into()
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Decision> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.cfg.cache_ttl)
            .map(|(_, d)| d.clone())
    }

    fn remember(&self, key: [u8; 32], d: &Decision) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            let ttl = self.cfg.cache_ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), d.clone()));
    }

    async fn decide(&self, claim: &CertifyClaim<'_>) -> Result<Decision, AuthError> {
        let deny = |why: String| Ok(Decision::Deny(DenyKind::Invalid, why));
        if claim.requested.namespace() != self.cfg.namespace {
            return Ok(Decision::Deny(
                DenyKind::WrongAgent,
                format!("agents live in namespace {}", self.cfg.namespace),
            ));
        }
        let review = TokenReview {
            metadata: ObjectMeta::default(),
            spec: TokenReviewSpec {
                token: claim.token.to_string(),
                audiences: Some(vec![self.cfg.audience.clone()]),
            },
            status: None,
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview failed: {e}")))?;
        let Some(status) = reviewed.status else {
            return Err(AuthError::Unavailable(
                "TokenReview answered without status".into(),
            ));
        };
        if status.authenticated != Some(true) {
            let why = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "not authenticated".into());
            return deny(format!("TokenReview: {why}"));
        }
        if !status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| a == &self.cfg.audience)
        {
            return deny(format!("token is not for audience {:?}", self.cfg.audience));
        }
        let user = status.user.unwrap_or_default();
        let want_user = format!(
            "system:serviceaccount:{}:{}",
            self.cfg.namespace, self.cfg.service_account
        );
        if user.username.as_deref() != Some(want_user.as_str()) {
            return deny(format!(
                "token belongs to {:?}, agent pods run as {want_user:?}",
                user.username.unwrap_or_default()
            ));
        }
        let extra = user.extra.unwrap_or_default();
        let one = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
        let (Some(pod_name), Some(pod_uid)) = (one(EXTRA_POD_NAME), one(EXTRA_POD_UID)) else {
            return deny("token is not bound to a pod".into());
        };
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.cfg.namespace);
        let pod = match pods.get_opt(&pod_name).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                return deny(format!(
                    "pod {pod_name} bound into the token does not exist"
                ));
            }
            Err(e) => {
                return Err(AuthError::Unavailable(format!(
                    "cannot read pod {pod_name}: {e}"
                )));
            }
        };
        if pod.uid().as_deref() != Some(pod_uid.as_str()) {
            return deny(format!(
                "pod {pod_name} was replaced since the token was issued"
            ));
        }
        if pod.metadata.deletion_timestamp.is_some() {
            return deny(format!("pod {pod_name} is terminating"));
        }
        // Label and owner both: a label alone could be set by anyone who may
        // create pods; the controller-owner reference names the Agent by
        // UID, as anyone who may create pods can also write a reference by
        // name (or one to an Agent deleted and made again under its name).
        let agents = Api::<Agent>::namespaced(self.client.clone(), &self.cfg.namespace);
        let agent_uid = match agents.get_opt(claim.requested.name()).await {
            Ok(a) => a.and_then(|a| a.uid()),
            Err(e) => {
                return Err(AuthError::Unavailable(format!(
                    "cannot read agent {}: {e}",
                    claim.requested.name()
                )));
            }
        };
        let owned = agent_uid.is_some_and(|uid| {
            pod.owner_references().iter().any(|o| {
                o.kind == "Agent"
                    && o.controller == Some(true)
                    && o.name == claim.requested.name()
                    && o.uid == uid
            })
        });
        match pod.labels().get(LABEL_AGENT) {
            Some(agent) if agent == claim.requested.name() && owned => Ok(Decision::Allow),
            Some(agent) if agent == claim.requested.name() => Ok(Decision::Deny(
                DenyKind::WrongAgent,
                format!("pod {pod_name}, labelled for the agent but not owned by it"),
            )),
            Some(agent) => Ok(Decision::Deny(
                DenyKind::WrongAgent,
                format!("pod {pod_name} of agent {}/{agent}", self.cfg.namespace),
            )),
            None => Ok(Decision::Deny(
                DenyKind::WrongAgent,
                format!("pod {pod_name}, which is not an agent pod"),
            )),
        }
    }
}

#[async_trait]
impl Authenticator for TokenReviewAuthenticator {
    fn kind(&self) -> &'static str {
        "kubernetes-tokenreview"
    }

    async fn authenticate(&self, claim: &CertifyClaim<'_>) -> Result<(), AuthError> {
        if claim.token.trim().is_empty() {
            return Err(AuthError::MissingToken);
        }
        let key = Self::key(claim);
        let decision = match self.cached(&key) {
            Some(d) => d,
            None => {
                // Unavailable is not remembered: the next try asks again.
                let d = self.decide(claim).await.inspect_err(|_| {
                    self.count("unavailable");
                })?;
                self.remember(key, &d);
                d
            }
        };
        self.count(match decision {
            Decision::Allow => "allow",
            Decision::Deny(..) => "deny",
        });
        into_result(claim.requested, decision)
    }
}

impl TokenReviewAuthenticator {
    fn count(&self, result: &'static str) {
        self.decisions.get_or_create(&ResultLabel { result }).inc();
    }
}

fn into_result(requested: &AgentId, d: Decision) -> Result<(), AuthError> {
    match d {
        Decision::Allow => Ok(()),
        Decision::Deny(DenyKind::Invalid, why) => Err(AuthError::InvalidToken(why)),
        Decision::Deny(DenyKind::WrongAgent, actual) => Err(AuthError::WrongAgent {
            requested: requested.clone(),
            actual,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_depends_on_token_and_agent() {
        let a: AgentId = "ns/a".parse().unwrap();
        let b: AgentId = "ns/b".parse().unwrap();
        let k = |id, t| {
            TokenReviewAuthenticator::key(&CertifyClaim {
                requested: id,
                token: t,
            })
        };
        assert_ne!(k(&a, "t"), k(&b, "t"));
        assert_ne!(k(&a, "t"), k(&a, "u"));
        assert_eq!(k(&a, "t"), k(&a, "t"));
    }

    #[test]
    fn wrong_agent_maps_to_permission_denied() {
        let a: AgentId = "ns/a".parse().unwrap();
        let err = into_result(
            &a,
            Decision::Deny(DenyKind::WrongAgent, "pod p of agent ns/b".into()),
        )
        .unwrap_err();
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::PermissionDenied
        );
        let err = into_result(&a, Decision::Deny(DenyKind::Invalid, "x".into())).unwrap_err();
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::Unauthenticated
        );
    }
}

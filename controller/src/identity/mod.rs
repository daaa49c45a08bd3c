//! `Identity.Certify`: turns a proof of identity plus a CSR into a
//! short-lived workload certificate.
//!
//! The first certificate is bought with a token (checked by the runtime's
//! [`Authenticator`]); a renewal may instead present the current, still
//! valid certificate for the same agent over mTLS.

pub mod admission;
mod authenticator;
pub mod bootstrap;

use std::{sync::Arc, time::SystemTime};

use clawswarm_certs::{AgentId, Authority, LeafPolicy, SpiffeId};
use clawswarm_proto::v1::{CertifyRequest, CertifyResponse, identity_server::Identity};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

pub use authenticator::{AuthError, Authenticator, CertifyClaim};

use self::admission::{Admission, AdmissionConfig};
use crate::metrics::{Metrics, ReasonLabel, ResultLabel};

/// Largest CSR accepted; a P-256 CSR with one URI SAN is well under 1 KiB.
const MAX_CSR_BYTES: usize = 16 * 1024;
/// Longest token accepted (Kubernetes projected tokens run ~1-2 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

pub struct IdentityService {
    authority: Authority,
    authenticator: Arc<dyn Authenticator>,
    namespace: String,
    policy: LeafPolicy,
    metrics: Arc<Metrics>,
    admission: Admission,
}

impl IdentityService {
    pub fn new(
        authority: Authority,
        authenticator: Arc<dyn Authenticator>,
        namespace: String,
        policy: LeafPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            authority,
            authenticator,
            namespace,
            policy,
            metrics,
            admission: Admission::new(AdmissionConfig::default()),
        }
    }

    /// Other limits than the defaults (tests, benchmarks).
    pub fn with_admission(mut self, cfg: AdmissionConfig) -> Self {
        self.admission = Admission::new(cfg);
        self
    }

    async fn certify_inner(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<CertifyResponse, Status> {
        let peer = request.peer_certs();
        let source = request.remote_addr().map(|a| a.ip());
        let req = request.into_inner();
        let agent: AgentId = req.identity.parse().map_err(|e| {
            Status::invalid_argument(format!(
                "identity {:?} is not <namespace>/<name>: {e}",
                req.identity
            ))
        })?;
        if agent.namespace() != self.namespace {
            return Err(Status::permission_denied(format!(
                "this controller certifies agents in namespace {:?}, not {:?}",
                self.namespace,
                agent.namespace()
            )));
        }
        if req.csr_pem.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument(format!(
                "csr_pem is {} bytes; the limit is {MAX_CSR_BYTES}",
                req.csr_pem.len()
            )));
        }
        if req.token.len() > MAX_TOKEN_BYTES {
            return Err(Status::invalid_argument(format!(
                "token is {} bytes; the limit is {MAX_TOKEN_BYTES}",
                req.token.len()
            )));
        }
        let id = SpiffeId::agent(self.authority.trust_domain().clone(), agent.clone());

        let renewal = match peer.as_deref().and_then(|c| (!c.is_empty()).then_some(c)) {
            Some(chain) => {
                let peer_id = clawswarm_certs::peer_spiffe_id(chain).map_err(|e| {
                    Status::unauthenticated(format!(
                        "client certificate has no usable SPIFFE id: {e}"
                    ))
                })?;
                if peer_id != id {
                    return Err(Status::permission_denied(format!(
                        "certificate for {peer_id} cannot obtain one for {id}"
                    )));
                }
                true
            }
            None => false,
        };
        if !renewal {
            // The token path is what costs a check: limited per source, and
            // a token refused moments ago is not checked again.
            if let Err((why, status)) = self.admission.admit(source, &req.identity, &req.token) {
                self.metrics
                    .certify_stopped
                    .get_or_create(&ReasonLabel {
                        reason: why.metric_label(),
                    })
                    .inc();
                return Err(status);
            }
            let checked = self
                .authenticator
                .authenticate(&CertifyClaim {
                    requested: &agent,
                    token: &req.token,
                })
                .await;
            if let Err(e) = checked {
                // A backend outage is not the token's fault: not remembered.
                let remember = !matches!(e, AuthError::Unavailable(_));
                let status = Status::from(e);
                if remember {
                    self.admission.refused(&req.identity, &req.token, &status);
                }
                return Err(status);
            }
        }

        let issued = self
            .authority
            .sign_csr(&req.csr_pem, &id, &self.policy, SystemTime::now())
            .map_err(|e| {
                if e.is_bad_request() {
                    Status::invalid_argument(format!("csr_pem refused: {e}"))
                } else {
                    Status::internal(format!("could not sign: {e}"))
                }
            })?;
        info!(agent = %agent, spiffe_id = %id, renewal, "certificate issued");
        Ok(CertifyResponse {
            certificate_chain_pem: issued.chain_pem,
            trust_bundle_pem: self.authority.trust_bundle_pem().to_owned(),
            not_before: Some(issued.not_before.into()),
            not_after: Some(issued.not_after.into()),
            spiffe_id: id.to_string(),
        })
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        match self.certify_inner(request).await {
            Ok(resp) => {
                self.metrics
                    .certify
                    .get_or_create(&ResultLabel { result: "ok" })
                    .inc();
                Ok(Response::new(resp))
            }
            Err(status) => {
                warn!(code = ?status.code(), error = %status.message(), authenticator = self.authenticator.kind(), "certify refused");
                self.metrics
                    .certify
                    .get_or_create(&ResultLabel { result: "error" })
                    .inc();
                Err(status)
            }
        }
    }
}

#[cfg(test)]
mod tests;

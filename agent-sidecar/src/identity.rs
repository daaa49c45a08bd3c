//! Obtaining and renewing this sidecar's certificate.
//!
//! The private key is generated in memory and never leaves the process.
//! The first certificate is bought with a token; renewals present the
//! current certificate (and the token, when there still is one). Renewal
//! happens at ~70 % of the lifetime with jitter; on failure the old
//! credentials stay in use and the request is retried with backoff.

use std::{path::PathBuf, sync::Arc, time::Duration, time::SystemTime};

use clawswarm_certs::{
    AgentId, ChannelOptions, CredentialStore, Credentials, ServerIdentity, SpiffeId, TrustDomain,
    error_chain, generate_csr,
};
use clawswarm_proto::v1::{CertifyRequest, identity_client::IdentityClient as Client};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    backoff::Backoff,
    metrics::{ResultLabel, SidecarMetrics},
};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot make a CSR: {0}")]
    Csr(String),
    #[error("cannot read token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach the identity service: {0}")]
    Connect(String),
    #[error("identity service refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("certificate received does not fit our key or identity: {0}")]
    BadCertificate(String),
}

impl IdentityError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Csr(_) => "csr",
            Self::Token { .. } => "token",
            Self::Connect(_) => "connect",
            Self::Refused { .. } => "refused",
            Self::BadCertificate(_) => "bad_certificate",
        }
    }
}

#[derive(Clone)]
pub struct IdentityClient {
    pub url: String,
    pub agent: AgentId,
    pub trust_domain: TrustDomain,
    /// Who must answer: the controller's SPIFFE id.
    pub controller: SpiffeId,
    pub trust_bundle_pem: String,
    pub token_file: Option<PathBuf>,
}

impl IdentityClient {
    pub fn spiffe_id(&self) -> SpiffeId {
        SpiffeId::agent(self.trust_domain.clone(), self.agent.clone())
    }

    /// One certificate request; `current` authenticates a renewal.
    pub async fn certify(
        &self,
        current: Option<Arc<CredentialStore>>,
    ) -> Result<Credentials, IdentityError> {
        let (key, csr_pem) =
            generate_csr(&self.spiffe_id()).map_err(|e| IdentityError::Csr(e.to_string()))?;
        let token = match &self.token_file {
            // A consumed bootstrap token may be gone; renewals do not need it.
            Some(path) if path.exists() || current.is_none() => std::fs::read_to_string(path)
                .map_err(|source| IdentityError::Token {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
            _ => String::new(),
        };
        let tls = clawswarm_certs::client_config(
            current,
            &self.trust_bundle_pem,
            ServerIdentity::Spiffe(self.controller.clone()),
        )
        .map_err(|e| IdentityError::Connect(e.to_string()))?;
        let channel = clawswarm_certs::mtls_channel(&self.url, tls, &ChannelOptions::default())
            .await
            .map_err(|e| IdentityError::Connect(e.to_string()))?;
        let req = CertifyRequest {
            identity: self.agent.to_string(),
            csr_pem,
            token,
        };
        let resp = Client::new(channel)
            .certify(req)
            .await
            .map_err(|s| IdentityError::Refused {
                code: s.code(),
                message: if s.message().is_empty() {
                    error_chain(&s)
                } else {
                    s.message().to_owned()
                },
            })?;
        let creds = key
            .into_credentials(&resp.into_inner().certificate_chain_pem)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        if creds.spiffe_id() != &self.spiffe_id() {
            return Err(IdentityError::BadCertificate(format!(
                "issued for {}, not {}",
                creds.spiffe_id(),
                self.spiffe_id()
            )));
        }
        Ok(creds)
    }

    /// Keep asking until a first certificate arrives (or shutdown).
    pub async fn certify_until_done(
        &self,
        metrics: &SidecarMetrics,
        shutdown: &CancellationToken,
    ) -> Option<Credentials> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            match self.certify(None).await {
                Ok(creds) => {
                    record(metrics, Ok(&creds));
                    info!(spiffe_id = %creds.spiffe_id(), "certificate obtained");
                    return Some(creds);
                }
                Err(e) => {
                    record(metrics, Err(&e));
                    warn!(error = %e, "cannot obtain a certificate yet");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Renew before expiry, forever. New handshakes pick up the new
    /// certificate through the store; open streams are untouched.
    pub async fn renew_forever(
        self,
        store: Arc<CredentialStore>,
        metrics: Arc<SidecarMetrics>,
        shutdown: CancellationToken,
    ) {
        let mut failures = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut wait = next_renewal(&store);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match self.certify(Some(store.clone())).await {
                Ok(creds) => {
                    record(&metrics, Ok(&creds));
                    info!(not_after = ?creds.not_after(), "certificate renewed");
                    store.update(creds);
                    failures.reset();
                    wait = next_renewal(&store);
                }
                Err(e) => {
                    record(&metrics, Err(&e));
                    wait = failures.next_delay();
                    warn!(error = %e, retry_in = ?wait, "certificate renewal failed; keeping the current one");
                }
            }
        }
    }
}

fn next_renewal(store: &CredentialStore) -> Duration {
    let c = store.current();
    clawswarm_certs::refresh_delay(
        c.not_before(),
        c.not_after(),
        SystemTime::now(),
        Duration::from_secs(1),
        Duration::from_secs(24 * 3600),
    )
}

fn record(metrics: &SidecarMetrics, r: Result<&Credentials, &IdentityError>) {
    let result = if r.is_ok() { "ok" } else { "error" };
    metrics
        .cert_refreshes
        .get_or_create(&ResultLabel { result })
        .inc();
    if let Ok(c) = r {
        metrics
            .cert_expiration_timestamp_seconds
            .set(c.expiry_unix_seconds());
    }
}

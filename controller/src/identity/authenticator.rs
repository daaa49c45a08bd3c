//! How a sidecar proves which agent it is before it has a certificate.

use async_trait::async_trait;
use clawswarm_certs::AgentId;

/// What `Identity.Certify` was asked, minus the CSR.
#[derive(Debug)]
pub struct CertifyClaim<'a> {
    pub requested: &'a AgentId,
    /// Bootstrap token (local) or projected ServiceAccount token (Kubernetes).
    /// Never logged.
    pub token: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token presented")]
    MissingToken,
    #[error("token rejected: {0}")]
    InvalidToken(String),
    #[error("token belongs to {actual}, not to the requested agent {requested}")]
    WrongAgent { requested: AgentId, actual: String },
    #[error("identity backend unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken(_) => "invalid_token",
            Self::WrongAgent { .. } => "wrong_agent",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        let msg = e.to_string();
        match e {
            AuthError::MissingToken | AuthError::InvalidToken(_) => {
                tonic::Status::unauthenticated(msg)
            }
            AuthError::WrongAgent { .. } => tonic::Status::permission_denied(msg),
            AuthError::Unavailable(_) => tonic::Status::unavailable(msg),
        }
    }
}

/// Checks a token for the agent it claims to be. Implementations: the local
/// runtime's one-time bootstrap tokens; Kubernetes TokenReview.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    async fn authenticate(&self, claim: &CertifyClaim<'_>) -> Result<(), AuthError>;
}

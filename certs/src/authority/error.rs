use std::path::PathBuf;
use std::time::SystemTime;

use crate::credentials::CredentialsError;
use crate::csr::CsrError;
use crate::id::IdError;

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "authority directory {dir} holds {present:?} but not {missing:?}; refusing to overwrite a partial authority"
    )]
    PartialDirectory {
        dir: PathBuf,
        present: Vec<&'static str>,
        missing: Vec<&'static str>,
    },
    #[error("{what}: {problem}")]
    Pem { what: &'static str, problem: String },
    #[error("{what} does not parse: {detail}")]
    Certificate { what: &'static str, detail: String },
    #[error("issuer key is not usable: {0}")]
    IssuerKey(String),
    #[error("issuer certificate is not a CA (basicConstraints CA:TRUE missing)")]
    IssuerNotCa,
    #[error("issuer certificate's key usage does not allow keyCertSign")]
    IssuerCannotSign,
    #[error("issuer key does not match the issuer certificate")]
    IssuerKeyMismatch,
    #[error("issuer certificate is not valid now (valid {not_before:?} to {not_after:?})")]
    IssuerNotValidNow {
        not_before: SystemTime,
        not_after: SystemTime,
    },
    #[error("issuer does not chain to any certificate in the trust bundle")]
    NotChainedToBundle,
    #[error("a leaf signed by this issuer fails verification: {0}")]
    IssuerRejected(String),
    #[error("issuer carries no spiffe://<trust domain> URI SAN; supply the trust domain")]
    MissingTrustDomain,
    #[error("issuer is for trust domain {found}, expected {expected}")]
    TrustDomainMismatch { expected: String, found: String },
    #[error("invalid identity: {0}")]
    Id(#[from] IdError),
    #[error("generating the authority failed: {0}")]
    Generate(String),
    #[error("issuing failed: {0}")]
    Issue(#[from] CsrError),
    #[error("issued credentials are unusable: {0}")]
    Credentials(#[from] CredentialsError),
}

impl AuthorityError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::PartialDirectory { .. } => "partial_directory",
            Self::Pem { .. } => "pem",
            Self::Certificate { .. } => "certificate",
            Self::IssuerKey(_) => "issuer_key",
            Self::IssuerNotCa => "issuer_not_ca",
            Self::IssuerCannotSign => "issuer_cannot_sign",
            Self::IssuerKeyMismatch => "issuer_key_mismatch",
            Self::IssuerNotValidNow { .. } => "issuer_not_valid",
            Self::NotChainedToBundle => "not_chained",
            Self::IssuerRejected(_) => "issuer_rejected",
            Self::MissingTrustDomain | Self::TrustDomainMismatch { .. } => "trust_domain",
            Self::Id(_) => "id",
            Self::Generate(_) => "generate",
            Self::Issue(e) => e.metric_label(),
            Self::Credentials(e) => e.metric_label(),
        }
    }
}

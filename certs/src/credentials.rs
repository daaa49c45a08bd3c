//! A certified identity: chain, private key, and what was checked about them.
//!
//! Everything is parsed and cross-checked once, here, so the TLS resolvers and
//! the renewal loop only ever see credentials that rustls will accept.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::id::{IdError, SpiffeId};
use crate::pem::{self, PemProblem};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("{what}: {problem}")]
    Pem { what: &'static str, problem: String },
    #[error("private key must be PKCS#8 (\"PRIVATE KEY\"), found {found}")]
    KeyNotPkcs8 { found: &'static str },
    #[error("private key is not an ECDSA P-256 key")]
    KeyNotP256,
    #[error("certificate {index} of the chain does not parse: {detail}")]
    Certificate { index: usize, detail: String },
    #[error("leaf certificate has no URI SAN")]
    NoSpiffeId,
    #[error("leaf certificate has {count} URI SANs, exactly one is allowed")]
    MultipleUriSans { count: usize },
    #[error("leaf certificate URI SAN is not a valid SPIFFE id: {0}")]
    InvalidSpiffeId(#[source] IdError),
    #[error("leaf certificate is for {found}, expected {expected}")]
    UnexpectedId { expected: String, found: String },
    #[error("private key does not match the leaf certificate's public key")]
    KeyMismatch,
    #[error("rustls refused the key: {0}")]
    Rustls(String),
    #[error("chain does not verify against the trust bundle: {0}")]
    Untrusted(String),
}

impl CredentialsError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Pem { .. } => "pem",
            Self::KeyNotPkcs8 { .. } | Self::KeyNotP256 => "unsupported_key",
            Self::Certificate { .. } => "certificate",
            Self::NoSpiffeId | Self::MultipleUriSans { .. } | Self::InvalidSpiffeId(_) => {
                "spiffe_id"
            }
            Self::UnexpectedId { .. } => "unexpected_id",
            Self::KeyMismatch => "key_mismatch",
            Self::Rustls(_) => "rustls",
            Self::Untrusted(_) => "untrusted",
        }
    }
}

/// Why a leaf certificate yields no SPIFFE id; each caller maps it into its own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UriSanProblem {
    Parse(String),
    None,
    Multiple(usize),
    Invalid(IdError),
}

/// The SPIFFE id of a leaf: X509-SVIDs carry exactly one URI SAN.
pub(crate) fn spiffe_id_of(cert: &X509Certificate<'_>) -> Result<SpiffeId, UriSanProblem> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| UriSanProblem::Parse(e.to_string()))?;
    let uris: Vec<&str> = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match uris.as_slice() {
        [] => Err(UriSanProblem::None),
        [uri] => SpiffeId::parse(uri).map_err(UriSanProblem::Invalid),
        many => Err(UriSanProblem::Multiple(many.len())),
    }
}

pub(crate) fn to_system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Chain (leaf first), key and the facts read from the leaf. Cheap to clone.
#[derive(Clone)]
pub struct Credentials {
    inner: Arc<Inner>,
}

struct Inner {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    certified: Arc<CertifiedKey>,
    spiffe_id: SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
    serial_hex: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("spiffe_id", &self.inner.spiffe_id.to_string())
            .field("serial", &self.inner.serial_hex)
            .field("not_before", &self.inner.not_before)
            .field("not_after", &self.inner.not_after)
            .field("chain_len", &self.inner.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// `key_pem` must be PKCS#8 ("BEGIN PRIVATE KEY"), which is what this crate
    /// writes; SEC1 ("EC PRIVATE KEY") is refused with a message saying so.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, CredentialsError> {
        let chain = pem::parse_certs(chain_pem).map_err(|p| CredentialsError::Pem {
            what: "certificate chain",
            problem: p.to_string(),
        })?;
        let key: PrivateKeyDer<'static> = pem::parse_one(key_pem).map_err(|p| match p {
            PemProblem::Missing => CredentialsError::Pem {
                what: "private key",
                problem: "no PRIVATE KEY section".into(),
            },
            PemProblem::Malformed(d) => CredentialsError::Pem {
                what: "private key",
                problem: d,
            },
        })?;
        let key = match key {
            PrivateKeyDer::Pkcs8(k) => k,
            PrivateKeyDer::Sec1(_) => {
                return Err(CredentialsError::KeyNotPkcs8 {
                    found: "SEC1 EC PRIVATE KEY",
                });
            }
            PrivateKeyDer::Pkcs1(_) => {
                return Err(CredentialsError::KeyNotPkcs8 {
                    found: "PKCS#1 RSA PRIVATE KEY",
                });
            }
            _ => return Err(CredentialsError::KeyNotPkcs8 { found: "unknown" }),
        };
        Self::from_der(chain, key)
    }

    pub(crate) fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivatePkcs8KeyDer<'static>,
    ) -> Result<Self, CredentialsError> {
        let Some(leaf_der) = chain.first() else {
            return Err(CredentialsError::Pem {
                what: "certificate chain",
                problem: "no CERTIFICATE section".into(),
            });
        };
        for (index, der) in chain.iter().enumerate().skip(1) {
            X509Certificate::from_der(der.as_ref()).map_err(|e| CredentialsError::Certificate {
                index,
                detail: e.to_string(),
            })?;
        }
        let (_, leaf) = X509Certificate::from_der(leaf_der.as_ref()).map_err(|e| {
            CredentialsError::Certificate {
                index: 0,
                detail: e.to_string(),
            }
        })?;
        let spiffe_id = spiffe_id_of(&leaf).map_err(|p| match p {
            UriSanProblem::Parse(detail) => CredentialsError::Certificate { index: 0, detail },
            UriSanProblem::None => CredentialsError::NoSpiffeId,
            UriSanProblem::Multiple(count) => CredentialsError::MultipleUriSans { count },
            UriSanProblem::Invalid(e) => CredentialsError::InvalidSpiffeId(e),
        })?;

        let pair = KeyPair::try_from(&key).map_err(|_| CredentialsError::KeyNotP256)?;
        if pair.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CredentialsError::KeyNotP256);
        }
        if pair.public_key_raw() != leaf.public_key().subject_public_key.data.as_ref() {
            return Err(CredentialsError::KeyMismatch);
        }
        let signing_key =
            rustls::crypto::ring::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(key.clone_key()))
                .map_err(|e| CredentialsError::Rustls(e.to_string()))?;
        let certified = Arc::new(CertifiedKey::new(chain.clone(), signing_key));

        let validity = leaf.validity();
        let inner = Inner {
            not_before: to_system_time(validity.not_before),
            not_after: to_system_time(validity.not_after),
            serial_hex: hex_lower(leaf.raw_serial()),
            spiffe_id,
            certified,
            chain,
            key,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Leaf first, then the issuer (and any intermediates).
    pub fn chain_pem(&self) -> String {
        pem::encode_certs(&self.inner.chain)
    }

    /// PKCS#8 PEM of the private key; write it with mode 0600.
    pub fn key_pem(&self) -> String {
        pem::encode("PRIVATE KEY", self.inner.key.secret_pkcs8_der())
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.inner.chain
    }

    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.inner.spiffe_id
    }

    pub fn not_before(&self) -> SystemTime {
        self.inner.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.inner.not_after
    }

    /// Lowercase hex of the leaf serial: logs and tests tell rotations apart by it.
    pub fn serial_hex(&self) -> &str {
        &self.inner.serial_hex
    }

    /// Seconds since the epoch of `not_after`, for the
    /// `clawswarm_identity_cert_expiration_timestamp_seconds` gauge.
    pub fn expiry_unix_seconds(&self) -> i64 {
        match self.inner.not_after.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(_) => 0,
        }
    }

    /// Checks the chain as peers will (webpki against `trust_bundle_pem` at
    /// `now`), so a renewal that peers would refuse is never installed.
    pub fn verify_against(
        &self,
        trust_bundle_pem: &str,
        now: SystemTime,
    ) -> Result<(), CredentialsError> {
        crate::tls::verify_chain(trust_bundle_pem, &self.inner.chain, now)
            .map_err(|e| CredentialsError::Untrusted(e.to_string()))
    }

    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.inner.certified)
    }
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests;

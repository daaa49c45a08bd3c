//! rustls configurations for the mesh: mutual TLS where peers are named by
//! SPIFFE id, certificates come from a [`CredentialStore`] (hot rotation), and
//! the provider is always ring, passed explicitly so a stray aws-lc-rs in the
//! dependency graph can never be picked up.

use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::credentials::{UriSanProblem, spiffe_id_of};
use crate::id::{IdError, SpiffeId};
use crate::pem;
use crate::rotation::CredentialStore;

#[cfg(test)]
mod tests;

const ALPN_H2: &[u8] = b"h2";
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("trust bundle: {0}")]
    TrustBundle(String),
    #[error("building the certificate verifier failed: {0}")]
    Verifier(String),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0:?} is not a valid DNS name")]
    InvalidDnsName(String),
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    #[error("peer certificate does not parse: {0}")]
    PeerCertificate(String),
    #[error("peer certificate has no URI SAN")]
    NoSpiffeId,
    #[error("peer certificate has {count} URI SANs, exactly one is allowed")]
    MultipleUriSans { count: usize },
    #[error("peer certificate URI SAN is not a valid SPIFFE id: {0}")]
    InvalidSpiffeId(#[source] IdError),
    #[error("server is {found}, expected {expected}")]
    UnexpectedServerId { expected: String, found: String },
}

impl TlsError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::TrustBundle(_) => "trust_bundle",
            Self::Verifier(_) => "verifier",
            Self::Rustls(_) => "rustls",
            Self::InvalidDnsName(_) => "invalid_dns_name",
            Self::NoPeerCertificate => "no_peer_certificate",
            Self::PeerCertificate(_) => "peer_certificate",
            Self::NoSpiffeId | Self::MultipleUriSans { .. } | Self::InvalidSpiffeId(_) => {
                "spiffe_id"
            }
            Self::UnexpectedServerId { .. } => "unexpected_server_id",
        }
    }
}

/// Whether the server insists on a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// The mesh port: every peer proves an identity.
    Required,
    /// Ports that also serve anonymous clients (health, metrics); a client
    /// certificate, if presented, must still verify.
    Optional,
}

/// Who the client expects to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerIdentity {
    /// A mesh peer: the server's URI SAN must be exactly this id.
    Spiffe(SpiffeId),
    /// A conventional server name, checked against DNS/IP SANs.
    DnsName(String),
}

/// Makes ring the process default so code that builds rustls configs
/// without a provider (tonic, kube, reqwest) does not panic when several
/// providers are compiled in. Safe to call any number of times.
pub fn install_default_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn root_store(trust_bundle_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let certs =
        pem::parse_certs(trust_bundle_pem).map_err(|p| TlsError::TrustBundle(p.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| TlsError::TrustBundle(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

pub fn server_config(
    store: Arc<CredentialStore>,
    trust_bundle_pem: &str,
    client_auth: ClientAuth,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let roots = root_store(trust_bundle_pem)?;
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, PROVIDER.clone());
    if client_auth == ClientAuth::Optional {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(PROVIDER.clone())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(store);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Resumed sessions skip certificate verification; with day-long leaves
    // and long-lived gRPC connections the saving is nil and the risk (an
    // expired or rotated-out identity resuming) is not.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

pub fn client_config(
    store: Option<Arc<CredentialStore>>,
    trust_bundle_pem: &str,
    server: ServerIdentity,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = root_store(trust_bundle_pem)?;
    let inner = WebPkiServerVerifier::builder_with_provider(roots, PROVIDER.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let expected = match server {
        ServerIdentity::Spiffe(id) => Expected::Spiffe(id),
        ServerIdentity::DnsName(name) => Expected::Name(
            ServerName::try_from(name.clone()).map_err(|_| TlsError::InvalidDnsName(name))?,
        ),
    };
    let verifier = Arc::new(PinnedServerVerifier { inner, expected });
    let builder = rustls::ClientConfig::builder_with_provider(PROVIDER.clone())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match store {
        Some(store) => builder.with_client_cert_resolver(store),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The SPIFFE id of a peer, from the leaf's single URI SAN. The chain must
/// already have been verified by the TLS handshake.
pub fn peer_spiffe_id(chain: &[CertificateDer<'_>]) -> Result<SpiffeId, TlsError> {
    let leaf = chain.first().ok_or(TlsError::NoPeerCertificate)?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| TlsError::PeerCertificate(e.to_string()))?;
    spiffe_id_of(&cert).map_err(|p| match p {
        UriSanProblem::Parse(d) => TlsError::PeerCertificate(d),
        UriSanProblem::None => TlsError::NoSpiffeId,
        UriSanProblem::Multiple(count) => TlsError::MultipleUriSans { count },
        UriSanProblem::Invalid(e) => TlsError::InvalidSpiffeId(e),
    })
}

fn unix_time(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// Verifies a client chain exactly as [`server_config`] will, at `now`.
pub(crate) fn verify_client_chain(
    roots: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    now: SystemTime,
) -> Result<(), rustls::Error> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), PROVIDER.clone())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    verifier.verify_client_cert(leaf, intermediates, unix_time(now))?;
    Ok(())
}

/// Verifies a chain for whichever role its leaf allows (client first, then
/// server), at `now`: the check a peer will make, minus the name.
pub(crate) fn verify_chain(
    trust_bundle_pem: &str,
    chain: &[CertificateDer<'static>],
    now: SystemTime,
) -> Result<(), rustls::Error> {
    let roots = pem::parse_certs(trust_bundle_pem)
        .map_err(|p| rustls::Error::General(format!("trust bundle: {p}")))?;
    match verify_client_chain(&roots, chain, now) {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        )) => {}
        other => return other,
    }
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root)?;
    }
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &rustls::server::ParsedCertificate::try_from(leaf)?,
        &store,
        intermediates,
        unix_time(now),
        PROVIDER.signature_verification_algorithms.all,
    )
}

#[derive(Debug)]
enum Expected {
    Spiffe(SpiffeId),
    Name(ServerName<'static>),
}

/// webpki chain verification, but the server identity is pinned in the
/// config rather than taken from whatever host name the connector used.
#[derive(Debug)]
struct PinnedServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expected: Expected,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = match &self.expected {
            Expected::Name(name) => {
                return self.inner.verify_server_cert(
                    end_entity,
                    intermediates,
                    name,
                    ocsp_response,
                    now,
                );
            }
            Expected::Spiffe(id) => id,
        };
        // webpki checks the name only after the chain, so a name error
        // means the chain itself verified. Ok is possible too (the cert
        // happens to carry the dialled DNS name): the URI check still runs.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(other) => return Err(other),
        }
        let found = peer_spiffe_id(std::slice::from_ref(end_entity)).map_err(other_error)?;
        if &found != id {
            return Err(other_error(TlsError::UnexpectedServerId {
                expected: id.to_string(),
                found: found.to_string(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn other_error(e: TlsError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
}

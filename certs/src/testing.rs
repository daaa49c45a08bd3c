//! Fixtures shared by the unit tests.

use std::time::SystemTime;

use rustls_pki_types::CertificateDer;

use crate::authority::{Authority, LeafPolicy};
use crate::credentials::Credentials;
use crate::id::{AgentId, SpiffeId, TrustDomain};

pub(crate) fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

pub(crate) fn agent(name: &str) -> SpiffeId {
    SpiffeId::agent(td(), AgentId::new("team-a", name).unwrap())
}

pub(crate) fn controller() -> SpiffeId {
    SpiffeId::controller(td(), "clawswarm").unwrap()
}

pub(crate) fn authority() -> Authority {
    Authority::generate(&td()).unwrap()
}

pub(crate) fn issue(authority: &Authority, id: &SpiffeId) -> Credentials {
    authority
        .issue(id, &LeafPolicy::default(), SystemTime::now())
        .unwrap()
}

pub(crate) fn leaf_of(chain_pem: &str) -> CertificateDer<'static> {
    crate::pem::parse_certs(chain_pem).unwrap().remove(0)
}

/// A TLS connection over an in-memory pipe; each side's result is reported
/// separately because TLS 1.3 clients finish before the server judges them.
pub(crate) async fn handshake(
    server: std::sync::Arc<rustls::ServerConfig>,
    client: std::sync::Arc<rustls::ClientConfig>,
) -> (
    std::io::Result<tokio_rustls::server::TlsStream<tokio::io::DuplexStream>>,
    std::io::Result<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>>,
) {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = rustls_pki_types::ServerName::try_from("clawswarm.clawswarm.svc").unwrap();
    tokio::join!(acceptor.accept(s), connector.connect(name, c))
}

/// Serial (hex) of the first certificate in a peer chain.
pub(crate) fn serial_of(chain: &[CertificateDer<'_>]) -> String {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(chain[0].as_ref()).unwrap();
    crate::credentials::hex_lower(cert.raw_serial())
}

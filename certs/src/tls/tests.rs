use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::authority::{Authority, LeafPolicy};
use crate::testing::{self, handshake};

struct Mesh {
    authority: Authority,
    server_store: Arc<CredentialStore>,
}

impl Mesh {
    fn new() -> Self {
        Self::with_authority(testing::authority())
    }

    fn with_authority(authority: Authority) -> Self {
        let policy = LeafPolicy {
            dns_names: vec!["clawswarm.clawswarm.svc".into()],
            ..LeafPolicy::default()
        };
        let creds = authority
            .issue(&testing::controller(), &policy, SystemTime::now())
            .unwrap();
        Self {
            server_store: CredentialStore::new(creds),
            authority,
        }
    }

    fn server(&self, auth: ClientAuth) -> Arc<rustls::ServerConfig> {
        server_config(
            self.server_store.clone(),
            self.authority.trust_bundle_pem(),
            auth,
        )
        .unwrap()
    }

    fn client(&self, creds: Option<crate::Credentials>) -> Arc<rustls::ClientConfig> {
        client_config(
            creds.map(CredentialStore::new),
            self.authority.trust_bundle_pem(),
            ServerIdentity::Spiffe(testing::controller()),
        )
        .unwrap()
    }

    fn agent(&self, name: &str) -> crate::Credentials {
        testing::issue(&self.authority, &testing::agent(name))
    }
}

/// The rustls error behind a failed handshake.
fn tls_error(e: &std::io::Error) -> rustls::Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
        .unwrap_or_else(|| panic!("not a rustls error: {e}"))
}

/// The TLS 1.3 client may finish before the server refuses it; the first
/// read then reports the alert (or EOF).
async fn client_is_cut_off(
    client: std::io::Result<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>>,
) -> bool {
    match client {
        Err(_) => true,
        Ok(mut stream) => {
            let mut buf = [0u8; 1];
            !matches!(stream.read(&mut buf).await, Ok(n) if n > 0)
        }
    }
}

#[tokio::test]
async fn required_client_auth_accepts_a_good_client_and_exposes_its_spiffe_id() {
    let mesh = Mesh::new();
    let (server, client) = handshake(
        mesh.server(ClientAuth::Required),
        mesh.client(Some(mesh.agent("alice"))),
    )
    .await;
    let (server, mut client) = (server.unwrap(), client.unwrap());
    let peer = server.get_ref().1.peer_certificates().unwrap();
    assert_eq!(peer_spiffe_id(peer).unwrap(), testing::agent("alice"));
    assert_eq!(server.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let server_chain = client.get_ref().1.peer_certificates().unwrap();
    assert_eq!(peer_spiffe_id(server_chain).unwrap(), testing::controller());
    client.write_all(b"x").await.unwrap();
}

#[tokio::test]
async fn required_client_auth_refuses_a_client_of_another_ca() {
    let mesh = Mesh::new();
    let foreign = testing::issue(&testing::authority(), &testing::agent("alice"));
    let (server, client) = handshake(
        mesh.server(ClientAuth::Required),
        mesh.client(Some(foreign)),
    )
    .await;
    assert_eq!(
        tls_error(&server.unwrap_err()),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    assert!(client_is_cut_off(client).await);
}

#[tokio::test]
async fn required_client_auth_refuses_an_expired_client_certificate() {
    let ten_days_ago = SystemTime::now() - Duration::from_secs(10 * 24 * 3600);
    let mesh = Mesh::with_authority(Authority::generate_at(&testing::td(), ten_days_ago).unwrap());
    let five_days_ago = SystemTime::now() - Duration::from_secs(5 * 24 * 3600);
    let expired = mesh
        .authority
        .issue(
            &testing::agent("alice"),
            &LeafPolicy::default(),
            five_days_ago,
        )
        .unwrap();
    assert!(expired.not_after() < SystemTime::now());
    let (server, client) = handshake(
        mesh.server(ClientAuth::Required),
        mesh.client(Some(expired)),
    )
    .await;
    let err = tls_error(&server.unwrap_err());
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{err}"
    );
    assert!(client_is_cut_off(client).await);
}

#[tokio::test]
async fn required_client_auth_refuses_a_client_without_certificate() {
    let mesh = Mesh::new();
    let (server, client) = handshake(mesh.server(ClientAuth::Required), mesh.client(None)).await;
    assert!(server.is_err());
    assert!(client_is_cut_off(client).await);
}

#[tokio::test]
async fn optional_client_auth_accepts_no_client_certificate() {
    let mesh = Mesh::new();
    let (server, client) = handshake(mesh.server(ClientAuth::Optional), mesh.client(None)).await;
    let server = server.unwrap();
    client.unwrap();
    assert!(server.get_ref().1.peer_certificates().is_none());
}

#[tokio::test]
async fn optional_client_auth_still_refuses_a_foreign_client_certificate() {
    let mesh = Mesh::new();
    let foreign = testing::issue(&testing::authority(), &testing::agent("alice"));
    let (server, _client) = handshake(
        mesh.server(ClientAuth::Optional),
        mesh.client(Some(foreign)),
    )
    .await;
    assert!(server.is_err());
}

#[tokio::test]
async fn spiffe_server_identity_refuses_a_server_with_another_id() {
    let mesh = Mesh::new();
    let expected = SpiffeId::controller(testing::td(), "elsewhere").unwrap();
    let client = client_config(
        Some(CredentialStore::new(mesh.agent("alice"))),
        mesh.authority.trust_bundle_pem(),
        ServerIdentity::Spiffe(expected),
    )
    .unwrap();
    let (_server, client) = handshake(mesh.server(ClientAuth::Required), client).await;
    let err = client.unwrap_err();
    assert!(err.to_string().contains("ns/elsewhere/controller"), "{err}");
    assert!(matches!(
        tls_error(&err),
        rustls::Error::InvalidCertificate(CertificateError::Other(_))
    ));
}

#[tokio::test]
async fn spiffe_server_identity_refuses_a_server_of_another_ca() {
    let mesh = Mesh::new();
    let other = Mesh::new();
    let client = client_config(
        Some(CredentialStore::new(mesh.agent("alice"))),
        other.authority.trust_bundle_pem(),
        ServerIdentity::Spiffe(testing::controller()),
    )
    .unwrap();
    let (_server, client) = handshake(mesh.server(ClientAuth::Required), client).await;
    assert_eq!(
        tls_error(&client.unwrap_err()),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[tokio::test]
async fn dns_server_identity_checks_the_configured_name() {
    let mesh = Mesh::new();
    let dns = |name: &str| {
        client_config(
            None,
            mesh.authority.trust_bundle_pem(),
            ServerIdentity::DnsName(name.into()),
        )
        .unwrap()
    };
    let (_, ok) = handshake(
        mesh.server(ClientAuth::Optional),
        dns("clawswarm.clawswarm.svc"),
    )
    .await;
    ok.unwrap();
    let (_, wrong) = handshake(mesh.server(ClientAuth::Optional), dns("other.svc")).await;
    let err = tls_error(&wrong.unwrap_err());
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{err}"
    );
}

#[test]
fn configs_reject_an_empty_trust_bundle_and_bad_dns_names() {
    let mesh = Mesh::new();
    assert!(matches!(
        server_config(mesh.server_store.clone(), "", ClientAuth::Required),
        Err(TlsError::TrustBundle(_))
    ));
    assert!(matches!(
        client_config(
            None,
            mesh.authority.trust_bundle_pem(),
            ServerIdentity::DnsName("not a name".into())
        ),
        Err(TlsError::InvalidDnsName(_))
    ));
}

#[test]
fn peer_spiffe_id_needs_a_certificate_with_one_uri_san() {
    assert!(matches!(
        peer_spiffe_id(&[]),
        Err(TlsError::NoPeerCertificate)
    ));
    let junk = CertificateDer::from(vec![0x30, 0x00]);
    assert!(matches!(
        peer_spiffe_id(&[junk]),
        Err(TlsError::PeerCertificate(_))
    ));
    let root = crate::pem::parse_certs(testing::authority().trust_bundle_pem()).unwrap();
    // The root's `spiffe://<td>` names a trust domain, not a workload.
    assert!(matches!(
        peer_spiffe_id(&root),
        Err(TlsError::InvalidSpiffeId(_))
    ));
}

#[test]
fn installing_the_default_provider_is_idempotent() {
    install_default_crypto_provider();
    install_default_crypto_provider();
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
}

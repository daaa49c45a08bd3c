//! The control plane's own PKI: one CA that signs the API server's serving
//! certificate and every client certificate, plus the ServiceAccount token
//! signing key. Made fresh per control plane; nothing is reused between runs.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A PEM certificate and its PEM (PKCS#8) private key.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey")
            .field("key_pem", &"...")
            .finish_non_exhaustive()
    }
}

/// The CA: it stays in memory so tests can mint more client certificates.
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Pki {
    pub fn new() -> anyhow::Result<Self> {
        let key = KeyPair::generate().context("generate CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "clawswarm-test-control-plane-ca");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).context("self-sign CA")?;
        Ok(Self {
            ca_pem: cert.pem(),
            ca_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The API server's serving certificate: valid for 127.0.0.1 and the
    /// names in-cluster clients use, so a kubeconfig pointing at loopback verifies.
    pub fn serving_cert(&self, extra_ips: &[IpAddr]) -> anyhow::Result<CertKey> {
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
        ])
        .context("serving params")?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        for ip in extra_ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate for user `cn` in `groups` (the API server maps
    /// O= to groups; `system:masters` bypasses RBAC).
    pub fn client_cert(&self, cn: &str, groups: &[&str]) -> anyhow::Result<CertKey> {
        let mut params = CertificateParams::new(Vec::<String>::new()).context("client params")?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        for g in groups {
            dn.push(DnType::OrganizationName, *g);
        }
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> anyhow::Result<CertKey> {
        let key = KeyPair::generate().context("generate leaf key")?;
        let cert = params.signed_by(&key, &self.issuer).context("sign leaf")?;
        Ok(CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The ServiceAccount token signing key (private PKCS#8 PEM) and its public half.
pub fn service_account_key() -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generate service account key")?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rustls_pki_types::pem::PemObject as _;

    use super::*;

    #[test]
    fn client_cert_carries_groups_and_is_signed_by_the_ca() {
        let pki = Pki::new().unwrap();
        let leaf = pki.client_cert("admin", &["system:masters"]).unwrap();
        let der =
            rustls_pki_types::CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let org: Vec<_> = parsed
            .subject()
            .iter_organization()
            .map(|o| o.as_str().unwrap().to_string())
            .collect();
        assert_eq!(org, vec!["system:masters".to_string()]);
        assert_eq!(
            parsed.issuer().to_string(),
            "CN=clawswarm-test-control-plane-ca"
        );
    }
}

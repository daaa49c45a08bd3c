//! The mesh CA: root (trust anchor) → issuer (intermediate) → leaves.
//!
//! The controller holds only the issuer key. Leaves are built from policy
//! alone; see [`crate::csr`] for what a request may and may not influence.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::credentials::{Credentials, to_system_time};
use crate::csr::{self, CsrError};
use crate::id::{SpiffeId, TrustDomain};
use crate::pem;

mod error;
mod store;
#[cfg(test)]
mod tests;

pub use error::AuthorityError;

const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const ISSUER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// CA certificates are backdated too, so a node whose clock lags the
/// controller's still accepts a freshly generated authority.
const CA_BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The three PEM documents an authority is stored as (files or a Secret).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorityPem {
    /// Root certificate(s): what every peer trusts. Several during a root rotation.
    pub trust_bundle_pem: String,
    /// The issuer certificate, optionally followed by intermediates up to the root.
    pub issuer_cert_pem: String,
    /// PKCS#8 PEM of the issuer key.
    pub issuer_key_pem: String,
}

impl fmt::Debug for AuthorityPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityPem")
            .field("trust_bundle_pem", &self.trust_bundle_pem)
            .field("issuer_cert_pem", &self.issuer_cert_pem)
            .field("issuer_key_pem", &"<redacted>")
            .finish()
    }
}

/// What a leaf may be used for and how long it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafPolicy {
    pub lifetime: Duration,
    /// Backdating of not_before, so peers whose clocks lag still accept the leaf.
    pub clock_skew: Duration,
    pub server_auth: bool,
    pub client_auth: bool,
    /// Extra SANs for certificates that must also verify by hostname
    /// (the controller's Service name for grpcurl and kube probes).
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

impl Default for LeafPolicy {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(24 * 3600),
            clock_skew: Duration::from_secs(5 * 60),
            server_auth: true,
            client_auth: true,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        }
    }
}

/// A signed leaf as returned to a workload (it already holds the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Leaf, then the issuer (and any intermediates), PEM.
    pub chain_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub spiffe_id: SpiffeId,
}

/// The CA. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Authority {
    inner: Arc<Inner>,
}

struct Inner {
    trust_domain: TrustDomain,
    trust_bundle_pem: String,
    /// Issuer first, then any intermediates; appended to every leaf.
    issuer_chain: Vec<CertificateDer<'static>>,
    issuer_cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    issuer_not_before: SystemTime,
    issuer_not_after: SystemTime,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.inner.trust_domain.as_str())
            .field("issuer_not_before", &self.inner.issuer_not_before)
            .field("issuer_not_after", &self.inner.issuer_not_after)
            .finish_non_exhaustive()
    }
}

/// Whole seconds: certificates cannot say more, and `Issued` must report
/// exactly what the certificate says.
fn truncate_to_secs(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => UNIX_EPOCH,
    }
}

pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    // Positive and full length, as RFC 5280 wants (at most 20 octets).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn ca_params(
    cn: String,
    td: &TrustDomain,
    path_len: Option<u8>,
    now: SystemTime,
    lifetime: Duration,
) -> Result<CertificateParams, AuthorityError> {
    let mut params = CertificateParams::default();
    let serial = random_serial();
    // A per-generation suffix keeps successive roots (both in the bundle
    // during a rotation) apart by name, for people and for path building.
    let suffix = crate::credentials::hex_lower(serial.as_ref().get(..4).unwrap_or_default());
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "clawswarm");
    dn.push(DnType::CommonName, format!("{cn} {suffix}"));
    params.distinguished_name = dn;
    let uri = td
        .uri()
        .try_into()
        .map_err(|e: rcgen::Error| AuthorityError::Generate(e.to_string()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = truncate_to_secs(now);
    params.not_before = OffsetDateTime::from(now - CA_BACKDATE);
    params.not_after = OffsetDateTime::from(now + lifetime);
    params.serial_number = Some(serial);
    params.use_authority_key_identifier_extension = path_len.is_some();
    Ok(params)
}

impl Authority {
    /// A new root and issuer. The root key is dropped on return: see
    /// [`Authority::load_or_create`] for why it is never kept.
    pub fn generate(td: &TrustDomain) -> Result<Self, AuthorityError> {
        Self::generate_at(td, SystemTime::now())
    }

    /// [`Authority::generate`] as if run at `now`: tests use it to make
    /// authorities whose certificates have long been valid, or have expired.
    pub(crate) fn generate_at(td: &TrustDomain, now: SystemTime) -> Result<Self, AuthorityError> {
        let gen_err = |e: rcgen::Error| AuthorityError::Generate(e.to_string());
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let root_params = ca_params(format!("clawswarm root {td}"), td, None, now, ROOT_LIFETIME)?;
        let root_cert = root_params.self_signed(&root_key).map_err(gen_err)?;
        let root_issuer = Issuer::new(root_params, &root_key);

        let issuer_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let issuer_params = ca_params(
            format!("clawswarm issuer {td}"),
            td,
            Some(0),
            now,
            ISSUER_LIFETIME,
        )?;
        let issuer_cert = issuer_params
            .signed_by(&issuer_key, &root_issuer)
            .map_err(gen_err)?;

        let pem = AuthorityPem {
            trust_bundle_pem: root_cert.pem(),
            issuer_cert_pem: issuer_cert.pem(),
            issuer_key_pem: issuer_key.serialize_pem(),
        };
        Self::build(&pem, parse_issuer_chain(&pem)?, td.clone(), now)
    }

    /// Loads an authority whose issuer names its trust domain in a
    /// `spiffe://<td>` URI SAN (as [`Authority::generate`] writes). For an
    /// operator-supplied issuer without one, use [`Authority::from_pem_for`].
    pub fn from_pem(pem: &AuthorityPem) -> Result<Self, AuthorityError> {
        let issuer_chain = parse_issuer_chain(pem)?;
        let td = issuer_trust_domain(first_cert(&issuer_chain)?)?
            .ok_or(AuthorityError::MissingTrustDomain)?;
        Self::build(pem, issuer_chain, td, SystemTime::now())
    }

    /// Like [`Authority::from_pem`] for a known trust domain; an issuer that
    /// names another trust domain is still refused.
    pub fn from_pem_for(pem: &AuthorityPem, td: &TrustDomain) -> Result<Self, AuthorityError> {
        let issuer_chain = parse_issuer_chain(pem)?;
        if let Some(found) = issuer_trust_domain(first_cert(&issuer_chain)?)?
            && &found != td
        {
            return Err(AuthorityError::TrustDomainMismatch {
                expected: td.to_string(),
                found: found.to_string(),
            });
        }
        Self::build(pem, issuer_chain, td.clone(), SystemTime::now())
    }

    fn build(
        pem: &AuthorityPem,
        issuer_chain: Vec<CertificateDer<'static>>,
        td: TrustDomain,
        now: SystemTime,
    ) -> Result<Self, AuthorityError> {
        let roots = pem::parse_certs(&pem.trust_bundle_pem).map_err(|p| AuthorityError::Pem {
            what: "trust bundle",
            problem: p.to_string(),
        })?;
        for root in &roots {
            X509Certificate::from_der(root.as_ref()).map_err(|e| AuthorityError::Certificate {
                what: "trust bundle certificate",
                detail: e.to_string(),
            })?;
        }
        let issuer_der = first_cert(&issuer_chain)?;
        let (_, cert) = X509Certificate::from_der(issuer_der.as_ref()).map_err(|e| {
            AuthorityError::Certificate {
                what: "issuer certificate",
                detail: e.to_string(),
            }
        })?;
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| AuthorityError::Certificate {
                what: "issuer basicConstraints",
                detail: e.to_string(),
            })?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(AuthorityError::IssuerNotCa);
        }
        let key_usage = cert.key_usage().map_err(|e| AuthorityError::Certificate {
            what: "issuer keyUsage",
            detail: e.to_string(),
        })?;
        if key_usage.is_some_and(|ku| !ku.value.key_cert_sign()) {
            return Err(AuthorityError::IssuerCannotSign);
        }

        let key = KeyPair::from_pem(&pem.issuer_key_pem)
            .map_err(|e| AuthorityError::IssuerKey(e.to_string()))?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(AuthorityError::IssuerKeyMismatch);
        }
        let issuer_not_before = to_system_time(cert.validity().not_before);
        let issuer_not_after = to_system_time(cert.validity().not_after);
        if now < issuer_not_before || now > issuer_not_after {
            return Err(AuthorityError::IssuerNotValidNow {
                not_before: issuer_not_before,
                not_after: issuer_not_after,
            });
        }
        let issuer =
            Issuer::from_ca_cert_der(issuer_der, key).map_err(|e| AuthorityError::Certificate {
                what: "issuer certificate",
                detail: e.to_string(),
            })?;

        let authority = Self {
            inner: Arc::new(Inner {
                trust_domain: td,
                trust_bundle_pem: pem.trust_bundle_pem.clone(),
                issuer_cert_pem: pem::encode_certs(&issuer_chain),
                issuer_chain,
                issuer,
                issuer_not_before,
                issuer_not_after,
            }),
        };
        authority.probe(&roots, now)?;
        Ok(authority)
    }

    /// Signs a throwaway leaf and verifies it the way peers will (webpki
    /// against the bundle), so a bad chain fails at startup, not at the
    /// first handshake.
    fn probe(
        &self,
        roots: &[CertificateDer<'static>],
        now: SystemTime,
    ) -> Result<(), AuthorityError> {
        let id = SpiffeId::admin(self.inner.trust_domain.clone(), "authority-probe")?;
        let creds = self.issue(&id, &LeafPolicy::default(), now)?;
        crate::tls::verify_client_chain(roots, creds.chain(), now).map_err(|e| match e {
            // The leaf is ours and the issuer key was checked, so a bad
            // signature can only be on the issuer: a bundle root with the
            // same name but another key signed it.
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
            ) => AuthorityError::NotChainedToBundle,
            other => AuthorityError::IssuerRejected(other.to_string()),
        })
    }

    /// Loads `trust-bundle.pem`, `issuer.pem` and `issuer-key.pem` from `dir`,
    /// or generates and writes them on first start (dir 0700, key 0600).
    ///
    /// The root key is never written: whoever reads this directory (or the
    /// Secret it mirrors) gets only a one-year, path-length-0 issuer, not the
    /// power to mint new CAs under the 10-year anchor. Rotating the issuer
    /// therefore means rotating the root too (both go in the bundle for a
    /// while), or supplying an issuer from an offline root or cert-manager.
    pub fn load_or_create(dir: &Path, td: &TrustDomain) -> Result<Self, AuthorityError> {
        store::load_or_create(dir, td)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.inner.trust_domain
    }

    pub fn trust_bundle_pem(&self) -> &str {
        &self.inner.trust_bundle_pem
    }

    pub fn issuer_not_after(&self) -> SystemTime {
        self.inner.issuer_not_after
    }

    pub fn to_pem(&self) -> AuthorityPem {
        AuthorityPem {
            trust_bundle_pem: self.inner.trust_bundle_pem.clone(),
            issuer_cert_pem: self.inner.issuer_cert_pem.clone(),
            issuer_key_pem: self.inner.issuer.key().serialize_pem(),
        }
    }

    /// Verifies the CSR and signs a leaf for `id` under `policy`.
    ///
    /// The CSR is attacker-controlled, so it only proves possession of a
    /// P-256 key: it is refused ([`CsrError`]) if it is not ECDSA P-256, its
    /// self-signature fails, or it asks for anything beyond the leaf's
    /// purpose: CA, key usages other than digitalSignature/keyEncipherment/
    /// keyAgreement, EKUs other than client/serverAuth, any SAN other than
    /// the URI of `id`, unknown extensions or attributes. The leaf is then
    /// built from `policy` alone with only the CSR's public key.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        policy: &LeafPolicy,
        now: SystemTime,
    ) -> Result<Issued, CsrError> {
        self.check_identity(id)?;
        let key = csr::inspect(csr_pem, id)?;
        let (chain, not_before, not_after) = self.sign_leaf(&key, id, policy, now)?;
        Ok(Issued {
            chain_pem: pem::encode_certs(&chain),
            not_before,
            not_after,
            spiffe_id: id.clone(),
        })
    }

    /// Generates a key here and certifies it, for the controller's own
    /// certificate, admin client certificates and tests.
    pub fn issue(
        &self,
        id: &SpiffeId,
        policy: &LeafPolicy,
        now: SystemTime,
    ) -> Result<Credentials, AuthorityError> {
        self.check_identity(id)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CsrError::KeyGeneration(e.to_string()))?;
        let (chain, _, _) = self.sign_leaf(&key, id, policy, now)?;
        let key = PrivatePkcs8KeyDer::from(key.serialize_der());
        Ok(Credentials::from_der(chain, key)?)
    }

    fn check_identity(&self, id: &SpiffeId) -> Result<(), CsrError> {
        let uri = id.to_string();
        if SpiffeId::parse(&uri).ok().as_ref() != Some(id) {
            return Err(CsrError::InvalidIdentity { id: uri });
        }
        if id.trust_domain() != &self.inner.trust_domain {
            return Err(CsrError::WrongTrustDomain {
                expected: self.inner.trust_domain.to_string(),
                found: id.trust_domain().to_string(),
            });
        }
        Ok(())
    }

    fn sign_leaf(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        id: &SpiffeId,
        policy: &LeafPolicy,
        now: SystemTime,
    ) -> Result<(Vec<CertificateDer<'static>>, SystemTime, SystemTime), CsrError> {
        if policy.lifetime.is_zero() {
            return Err(CsrError::InvalidPolicy("lifetime is zero"));
        }
        if !policy.server_auth && !policy.client_auth {
            return Err(CsrError::InvalidPolicy(
                "neither server_auth nor client_auth is allowed",
            ));
        }
        let now = truncate_to_secs(now);
        if now < self.inner.issuer_not_before || now >= self.inner.issuer_not_after {
            return Err(CsrError::IssuerNotValid);
        }
        let not_before = now
            .checked_sub(policy.clock_skew)
            .ok_or(CsrError::InvalidPolicy(
                "clock_skew reaches before the epoch",
            ))?;
        // A leaf outliving its issuer would only fail verification later.
        let not_after = now
            .checked_add(policy.lifetime)
            .ok_or(CsrError::InvalidPolicy("lifetime overflows"))?
            .min(self.inner.issuer_not_after);

        let uri = id.to_string();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, uri.clone());
        params.distinguished_name = dn;
        params.subject_alt_names =
            vec![SanType::URI(uri.clone().try_into().map_err(|_| {
                CsrError::InvalidIdentity { id: uri.clone() }
            })?)];
        for name in &policy.dns_names {
            let dns = name
                .clone()
                .try_into()
                .map_err(|_| CsrError::InvalidDnsName(name.clone()))?;
            params.subject_alt_names.push(SanType::DnsName(dns));
        }
        for ip in &policy.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = Vec::new();
        if policy.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if policy.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.not_before = OffsetDateTime::from(not_before);
        params.not_after = OffsetDateTime::from(not_after);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;

        let leaf = params
            .signed_by(public_key, &self.inner.issuer)
            .map_err(|e| CsrError::Signing(e.to_string()))?;
        let mut chain = Vec::with_capacity(1 + self.inner.issuer_chain.len());
        chain.push(leaf.der().clone());
        chain.extend(self.inner.issuer_chain.iter().cloned());
        Ok((chain, not_before, not_after))
    }
}

fn parse_issuer_chain(pem: &AuthorityPem) -> Result<Vec<CertificateDer<'static>>, AuthorityError> {
    pem::parse_certs(&pem.issuer_cert_pem).map_err(|p| AuthorityError::Pem {
        what: "issuer certificate",
        problem: p.to_string(),
    })
}

fn first_cert<'a>(
    chain: &'a [CertificateDer<'static>],
) -> Result<&'a CertificateDer<'static>, AuthorityError> {
    chain.first().ok_or_else(|| AuthorityError::Pem {
        what: "issuer certificate",
        problem: "no CERTIFICATE section".into(),
    })
}

/// The trust domain an issuer names in a `spiffe://<td>` URI SAN, if any.
fn issuer_trust_domain(der: &CertificateDer<'_>) -> Result<Option<TrustDomain>, AuthorityError> {
    let (_, cert) =
        X509Certificate::from_der(der.as_ref()).map_err(|e| AuthorityError::Certificate {
            what: "issuer certificate",
            detail: e.to_string(),
        })?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| AuthorityError::Certificate {
            what: "issuer subjectAltName",
            detail: e.to_string(),
        })?;
    let Some(san) = san else { return Ok(None) };
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            // Only a bare `spiffe://<td>` names a trust domain; a URI with a
            // path is a workload id (e.g. a leaf wrongly offered as issuer).
            if let Some(td) = uri.strip_prefix("spiffe://") {
                let td = td.trim_end_matches('/');
                if !td.contains('/') {
                    return Ok(Some(TrustDomain::new(td)?));
                }
            }
        }
    }
    Ok(None)
}

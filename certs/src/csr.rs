//! Certificate signing requests: the workload side makes them, the CA side
//! judges them.
//!
//! A CSR is attacker-controlled input to the CA. We never sign what it asks
//! for: [`inspect`] refuses anything beyond "a P-256 key proving possession,
//! optionally naming the id it will be given", and the authority then builds
//! the leaf from policy alone, taking only the public key from the request.

use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::CertificateSigningRequestDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

use crate::credentials::{Credentials, CredentialsError};
use crate::id::SpiffeId;
use crate::pem::{self, PemProblem};

/// Key usages a leaf may ask for; anything else (certificate or CRL signing,
/// non-repudiation...) is refused. Indexed like x509-parser's flag bits.
const KEY_USAGE_NAMES: [&str; 9] = [
    "digitalSignature",
    "nonRepudiation",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
    "encipherOnly",
    "decipherOnly",
];
const ALLOWED_KEY_USAGE_BITS: u16 = (1 << 0) | (1 << 2) | (1 << 4);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("CSR is not a PEM CERTIFICATE REQUEST: {0}")]
    Pem(String),
    #[error("CSR DER does not parse: {0}")]
    Der(String),
    #[error("CSR has {0} bytes of trailing data")]
    TrailingData(usize),
    #[error("CSR key must be ECDSA P-256, found {found}")]
    UnsupportedKey { found: String },
    #[error("CSR signature algorithm {oid} is not ecdsa-with-SHA256/384")]
    UnsupportedSignatureAlgorithm { oid: String },
    #[error("CSR self-signature does not verify")]
    BadSignature,
    #[error("CSR requests a CA certificate")]
    RequestsCa,
    #[error("CSR requests key usage {usage}")]
    ForbiddenKeyUsage { usage: &'static str },
    #[error("CSR requests extended key usage {eku}")]
    ForbiddenExtendedKeyUsage { eku: String },
    #[error("CSR requests subject alternative name {san}, only {expected} may be requested")]
    ForbiddenSan { san: String, expected: String },
    #[error("CSR requests extension {oid}, which is not allowed")]
    UnknownExtension { oid: String },
    #[error("CSR extension {oid} does not parse")]
    MalformedExtension { oid: String },
    #[error("CSR carries attribute {oid}, which is not allowed")]
    UnknownAttribute { oid: String },
    #[error("identity {id} does not round-trip through SPIFFE id parsing")]
    InvalidIdentity { id: String },
    #[error("identity is in trust domain {found}, this authority serves {expected}")]
    WrongTrustDomain { expected: String, found: String },
    #[error("leaf policy is invalid: {0}")]
    InvalidPolicy(&'static str),
    #[error("leaf policy DNS name {0:?} is not a valid IA5 string")]
    InvalidDnsName(String),
    #[error("issuer certificate is not valid at the requested time")]
    IssuerNotValid,
    #[error("key generation failed: {0}")]
    KeyGeneration(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

impl CsrError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Pem(_) => "pem",
            Self::Der(_) | Self::TrailingData(_) => "der",
            Self::UnsupportedKey { .. } => "unsupported_key",
            Self::UnsupportedSignatureAlgorithm { .. } => "unsupported_signature_algorithm",
            Self::BadSignature => "bad_signature",
            Self::RequestsCa => "requests_ca",
            Self::ForbiddenKeyUsage { .. } => "forbidden_key_usage",
            Self::ForbiddenExtendedKeyUsage { .. } => "forbidden_extended_key_usage",
            Self::ForbiddenSan { .. } => "forbidden_san",
            Self::UnknownExtension { .. } | Self::MalformedExtension { .. } => "unknown_extension",
            Self::UnknownAttribute { .. } => "unknown_attribute",
            Self::InvalidIdentity { .. } => "invalid_identity",
            Self::WrongTrustDomain { .. } => "wrong_trust_domain",
            Self::InvalidPolicy(_) | Self::InvalidDnsName(_) => "invalid_policy",
            Self::IssuerNotValid => "issuer_not_valid",
            Self::KeyGeneration(_) => "key_generation",
            Self::Signing(_) => "signing",
        }
    }

    /// True when the request itself is at fault (gRPC `InvalidArgument`),
    /// false when the CA could not sign a good request (`Internal`/`Unavailable`).
    pub fn is_bad_request(&self) -> bool {
        !matches!(
            self,
            Self::IssuerNotValid
                | Self::KeyGeneration(_)
                | Self::Signing(_)
                | Self::InvalidPolicy(_)
                | Self::InvalidDnsName(_)
                | Self::WrongTrustDomain { .. }
                | Self::InvalidIdentity { .. }
        )
    }
}

/// The only thing taken from a CSR: an uncompressed P-256 point whose
/// possession the CSR's self-signature proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedPublicKey {
    point: Vec<u8>,
}

impl rcgen::PublicKeyData for VerifiedPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// Parses and judges a CSR for `id`; see the module docs for the policy.
pub(crate) fn inspect(csr_pem: &str, id: &SpiffeId) -> Result<VerifiedPublicKey, CsrError> {
    let der: CertificateSigningRequestDer<'static> =
        pem::parse_one(csr_pem).map_err(|e| match e {
            PemProblem::Missing => CsrError::Pem("no CERTIFICATE REQUEST section".into()),
            PemProblem::Malformed(d) => CsrError::Pem(d),
        })?;
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| CsrError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingData(rest.len()));
    }
    let info = &csr.certification_request_info;

    let spki = &info.subject_pki;
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        let found = if spki.algorithm.algorithm == OID_SIG_ED25519 {
            "ed25519".to_string()
        } else if spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION {
            "rsa".to_string()
        } else {
            spki.algorithm.algorithm.to_id_string()
        };
        return Err(CsrError::UnsupportedKey { found });
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    match curve {
        Some(c) if c == OID_EC_P256 => {}
        Some(c) if c == OID_NIST_EC_P384 => {
            return Err(CsrError::UnsupportedKey {
                found: "ECDSA P-384".into(),
            });
        }
        Some(c) if c == OID_NIST_EC_P521 => {
            return Err(CsrError::UnsupportedKey {
                found: "ECDSA P-521".into(),
            });
        }
        Some(c) => {
            return Err(CsrError::UnsupportedKey {
                found: format!("EC curve {}", c.to_id_string()),
            });
        }
        None => {
            return Err(CsrError::UnsupportedKey {
                found: "EC key without a named curve".into(),
            });
        }
    }
    let point = spki.subject_public_key.data.as_ref();
    if point.len() != 65 || point.first() != Some(&0x04) {
        return Err(CsrError::UnsupportedKey {
            found: "P-256 key that is not an uncompressed point".into(),
        });
    }

    let sig_alg = &csr.signature_algorithm.algorithm;
    let verify_alg: &dyn ring::signature::VerificationAlgorithm =
        if *sig_alg == OID_SIG_ECDSA_WITH_SHA256 {
            &ring::signature::ECDSA_P256_SHA256_ASN1
        } else if *sig_alg == OID_SIG_ECDSA_WITH_SHA384 {
            &ring::signature::ECDSA_P256_SHA384_ASN1
        } else {
            return Err(CsrError::UnsupportedSignatureAlgorithm {
                oid: sig_alg.to_id_string(),
            });
        };
    ring::signature::UnparsedPublicKey::new(verify_alg, point)
        .verify(info.raw, csr.signature_value.data.as_ref())
        .map_err(|_| CsrError::BadSignature)?;

    let expected_uri = id.to_string();
    for attr in info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() else {
            return Err(CsrError::UnknownAttribute {
                oid: attr.oid.to_id_string(),
            });
        };
        for ext in &req.extensions {
            check_extension(ext, &expected_uri)?;
        }
    }

    Ok(VerifiedPublicKey {
        point: point.to_vec(),
    })
}

fn check_extension(
    ext: &x509_parser::extensions::X509Extension<'_>,
    expected_uri: &str,
) -> Result<(), CsrError> {
    match ext.parsed_extension() {
        ParsedExtension::BasicConstraints(bc) => {
            if bc.ca {
                return Err(CsrError::RequestsCa);
            }
        }
        ParsedExtension::KeyUsage(ku) => {
            let forbidden = ku.flags & !ALLOWED_KEY_USAGE_BITS;
            if forbidden != 0 {
                let bit = forbidden.trailing_zeros() as usize;
                let usage = KEY_USAGE_NAMES.get(bit).copied().unwrap_or("unnamed bit");
                return Err(CsrError::ForbiddenKeyUsage { usage });
            }
        }
        ParsedExtension::ExtendedKeyUsage(eku) => {
            let named = [
                (eku.any, "anyExtendedKeyUsage"),
                (eku.code_signing, "codeSigning"),
                (eku.email_protection, "emailProtection"),
                (eku.time_stamping, "timeStamping"),
                (eku.ocsp_signing, "OCSPSigning"),
            ];
            if let Some((_, name)) = named.iter().find(|(set, _)| *set) {
                return Err(CsrError::ForbiddenExtendedKeyUsage {
                    eku: (*name).to_string(),
                });
            }
            if let Some(oid) = eku.other.first() {
                return Err(CsrError::ForbiddenExtendedKeyUsage {
                    eku: oid.to_id_string(),
                });
            }
        }
        ParsedExtension::SubjectAlternativeName(san) => {
            for name in &san.general_names {
                match name {
                    GeneralName::URI(uri) if *uri == expected_uri => {}
                    other => {
                        return Err(CsrError::ForbiddenSan {
                            san: describe_general_name(other),
                            expected: expected_uri.to_string(),
                        });
                    }
                }
            }
        }
        ParsedExtension::ParseError { .. } => {
            return Err(CsrError::MalformedExtension {
                oid: ext.oid.to_id_string(),
            });
        }
        _ => {
            return Err(CsrError::UnknownExtension {
                oid: ext.oid.to_id_string(),
            });
        }
    }
    Ok(())
}

fn describe_general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(ip) => match <[u8; 4]>::try_from(*ip) {
            Ok(v4) => format!("IP:{}", std::net::Ipv4Addr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*ip) {
                Ok(v6) => format!("IP:{}", std::net::Ipv6Addr::from(v6)),
                Err(_) => format!("IP:{ip:02x?}"),
            },
        },
        GeneralName::DirectoryName(dn) => format!("DirName:{dn}"),
        GeneralName::OtherName(oid, _) => format!("othername:{}", oid.to_id_string()),
        GeneralName::RegisteredID(oid) => format!("RID:{}", oid.to_id_string()),
        GeneralName::X400Address(_) => "X400Address".to_string(),
        GeneralName::EDIPartyName(_) => "EDIPartyName".to_string(),
        GeneralName::Invalid(tag, _) => format!("invalid general name (tag {tag})"),
    }
}

/// A freshly generated P-256 key that lives only in memory until the CA
/// answers; it never touches disk, so a sidecar restart simply asks again.
pub struct PendingKey {
    key: KeyPair,
    id: SpiffeId,
}

impl std::fmt::Debug for PendingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingKey({})", self.id)
    }
}

impl PendingKey {
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.id
    }

    /// Pairs the key with the chain the CA returned, refusing a chain whose
    /// leaf is for another key or another id (a confused or hostile CA).
    pub fn into_credentials(self, chain_pem: &str) -> Result<Credentials, CredentialsError> {
        let chain = pem::parse_certs(chain_pem).map_err(|problem| CredentialsError::Pem {
            what: "certificate chain",
            problem: problem.to_string(),
        })?;
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from(self.key.serialize_der());
        let creds = Credentials::from_der(chain, key)?;
        if creds.spiffe_id() != &self.id {
            return Err(CredentialsError::UnexpectedId {
                expected: self.id.to_string(),
                found: creds.spiffe_id().to_string(),
            });
        }
        Ok(creds)
    }
}

/// Makes a key and a CSR asking for exactly `id` (as URI SAN and CN), which
/// is all the CA's CSR policy lets through.
pub fn generate_csr(id: &SpiffeId) -> Result<(PendingKey, String), CsrError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CsrError::KeyGeneration(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, id.to_string());
    let uri = id
        .to_string()
        .try_into()
        .map_err(|e: rcgen::Error| CsrError::Signing(e.to_string()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| CsrError::Signing(e.to_string()))?;
    Ok((
        PendingKey {
            key,
            id: id.clone(),
        },
        csr,
    ))
}

#[cfg(test)]
mod tests;

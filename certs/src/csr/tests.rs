//! The CA's CSR policy: every way a request can ask for more than its identity.

use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, SanType,
    SignatureAlgorithm,
};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject as _;

use super::*;
use crate::authority::LeafPolicy;
use crate::testing;

fn uri_san(id: &SpiffeId) -> SanType {
    SanType::URI(id.to_string().try_into().unwrap())
}

/// A CSR for `params` signed by a fresh key of `alg`.
fn csr_with(alg: &'static SignatureAlgorithm, params: CertificateParams) -> String {
    let key = KeyPair::generate_for(alg).unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn p256_csr(edit: impl FnOnce(&mut CertificateParams)) -> String {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![uri_san(&testing::agent("alice"))];
    edit(&mut params);
    csr_with(&PKCS_ECDSA_P256_SHA256, params)
}

fn sign(csr: &str) -> Result<crate::Issued, CsrError> {
    testing::authority().sign_csr(
        csr,
        &testing::agent("alice"),
        &LeafPolicy::default(),
        SystemTime::now(),
    )
}

#[test]
fn generated_csr_is_signed_and_pairs_with_its_chain() {
    let authority = testing::authority();
    let id = testing::agent("alice");
    let (pending, csr) = generate_csr(&id).unwrap();
    assert_eq!(format!("{pending:?}"), format!("PendingKey({id})"));
    let issued = authority
        .sign_csr(&csr, &id, &LeafPolicy::default(), SystemTime::now())
        .unwrap();
    assert_eq!(issued.spiffe_id, id);
    let creds = pending.into_credentials(&issued.chain_pem).unwrap();
    assert_eq!(creds.spiffe_id(), &id);
}

#[test]
fn csr_without_any_san_is_accepted() {
    sign(&p256_csr(|p| p.subject_alt_names.clear())).unwrap();
}

#[test]
fn csr_with_allowed_usages_is_accepted() {
    sign(&p256_csr(|p| {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        p.is_ca = IsCa::ExplicitNoCa;
    }))
    .unwrap();
}

#[test]
fn signing_refuses_csr_asking_for_ca() {
    let csr = p256_csr(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained));
    assert_eq!(sign(&csr), Err(CsrError::RequestsCa));
}

#[test]
fn signing_refuses_csr_asking_for_cert_signing_key_usage() {
    let csr = p256_csr(|p| {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
    });
    assert_eq!(
        sign(&csr),
        Err(CsrError::ForbiddenKeyUsage {
            usage: "keyCertSign"
        })
    );
}

#[test]
fn signing_refuses_csr_asking_for_code_signing_eku() {
    let csr = p256_csr(|p| {
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::CodeSigning,
        ];
    });
    assert_eq!(
        sign(&csr),
        Err(CsrError::ForbiddenExtendedKeyUsage {
            eku: "codeSigning".into()
        })
    );
}

#[test]
fn signing_refuses_csr_with_an_extra_dns_san() {
    let csr = p256_csr(|p| {
        p.subject_alt_names
            .push(SanType::DnsName("evil.example".try_into().unwrap()));
    });
    assert!(matches!(
        sign(&csr),
        Err(CsrError::ForbiddenSan { san, .. }) if san == "DNS:evil.example"
    ));
}

#[test]
fn signing_refuses_csr_naming_another_spiffe_id() {
    let csr = p256_csr(|p| {
        p.subject_alt_names = vec![uri_san(&testing::agent("bob"))];
    });
    assert!(matches!(
        sign(&csr),
        Err(CsrError::ForbiddenSan { san, .. })
            if san == "URI:spiffe://cluster.local/ns/team-a/agent/bob"
    ));
}

#[test]
fn signing_refuses_csr_with_an_ip_san() {
    let csr = p256_csr(|p| {
        p.subject_alt_names
            .push(SanType::IpAddress([10, 0, 0, 1].into()));
    });
    assert!(matches!(
        sign(&csr),
        Err(CsrError::ForbiddenSan { san, .. }) if san == "IP:10.0.0.1"
    ));
}

#[test]
fn signing_refuses_p384_key() {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![uri_san(&testing::agent("alice"))];
    assert_eq!(
        sign(&csr_with(&PKCS_ECDSA_P384_SHA384, params)),
        Err(CsrError::UnsupportedKey {
            found: "ECDSA P-384".into()
        })
    );
}

#[test]
fn signing_refuses_ed25519_key() {
    assert_eq!(
        sign(&csr_with(&PKCS_ED25519, CertificateParams::default())),
        Err(CsrError::UnsupportedKey {
            found: "ed25519".into()
        })
    );
}

#[test]
fn signing_refuses_tampered_signature() {
    let csr = p256_csr(|_| {});
    let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    // The signature BIT STRING is the last element; flip a bit inside it.
    let last = der.len() - 3;
    der[last] ^= 0x01;
    let tampered = crate::pem::encode("CERTIFICATE REQUEST", &der);
    assert_eq!(sign(&tampered), Err(CsrError::BadSignature));
}

#[test]
fn signing_refuses_tampered_request_info() {
    // Swap the requested URI for another one of equal length after signing.
    let csr = p256_csr(|_| {});
    let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    let needle = b"agent/alice";
    let at = der.windows(needle.len()).position(|w| w == needle).unwrap();
    der[at + needle.len() - 5..at + needle.len()].copy_from_slice(b"mallo");
    let tampered = crate::pem::encode("CERTIFICATE REQUEST", &der);
    assert_eq!(sign(&tampered), Err(CsrError::BadSignature));
}

#[test]
fn signing_refuses_garbage_pem() {
    assert!(matches!(sign("not a csr"), Err(CsrError::Pem(_))));
    let garbage = crate::pem::encode("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x00");
    assert!(matches!(sign(&garbage), Err(CsrError::Der(_))));
    let broken = "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n";
    assert!(matches!(sign(broken), Err(CsrError::Pem(_))));
}

#[test]
fn signing_refuses_unknown_extension() {
    let csr = p256_csr(|p| {
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            vec![0x05, 0x00],
        )];
    });
    assert_eq!(
        sign(&csr),
        Err(CsrError::UnknownExtension {
            oid: "1.3.6.1.4.1.99999.1".into()
        })
    );
}

#[test]
fn signing_refuses_identity_of_another_trust_domain() {
    let other = SpiffeId::agent(
        crate::TrustDomain::new("other.local").unwrap(),
        crate::AgentId::new("team-a", "alice").unwrap(),
    );
    let (_, csr) = generate_csr(&other).unwrap();
    let err = testing::authority()
        .sign_csr(&csr, &other, &LeafPolicy::default(), SystemTime::now())
        .unwrap_err();
    assert!(matches!(err, CsrError::WrongTrustDomain { .. }));
    assert!(!err.is_bad_request());
}

#[test]
fn pending_key_refuses_a_chain_for_another_key() {
    let authority = testing::authority();
    let id = testing::agent("alice");
    let (pending, _) = generate_csr(&id).unwrap();
    let (_, other_csr) = generate_csr(&id).unwrap();
    let issued = authority
        .sign_csr(&other_csr, &id, &LeafPolicy::default(), SystemTime::now())
        .unwrap();
    assert_eq!(
        pending.into_credentials(&issued.chain_pem).unwrap_err(),
        CredentialsError::KeyMismatch
    );
}

#[test]
fn csr_errors_have_bounded_metric_labels() {
    assert_eq!(CsrError::BadSignature.metric_label(), "bad_signature");
    assert_eq!(CsrError::RequestsCa.metric_label(), "requests_ca");
    assert!(CsrError::RequestsCa.is_bad_request());
}

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, SystemTime};

use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;
use crate::credentials::CredentialsError;
use crate::testing;

fn leaf_policy_defaults_sign(authority: &Authority, now: SystemTime) -> (Issued, SystemTime) {
    let id = testing::agent("alice");
    let (_, csr) = crate::csr::generate_csr(&id).unwrap();
    let issued = authority
        .sign_csr(&csr, &id, &LeafPolicy::default(), now)
        .unwrap();
    (issued, truncate_to_secs(now))
}

#[test]
fn signed_leaf_is_not_a_ca_and_carries_only_policy_extensions() {
    let authority = testing::authority();
    let (issued, _) = leaf_policy_defaults_sign(&authority, SystemTime::now());
    let der = testing::leaf_of(&issued.chain_pem);
    let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();

    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(!bc.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    assert_eq!(ku.flags, 1, "only digitalSignature");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.code_signing && !eku.any && eku.other.is_empty());
    let sans = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(
        sans,
        &vec![GeneralName::URI(
            "spiffe://cluster.local/ns/team-a/agent/alice"
        )]
    );
    assert!(cert.iter_extensions().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::AuthorityKeyIdentifier(_)
    )));
    assert!(cert.iter_extensions().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::SubjectKeyIdentifier(_)
    )));
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(
        cn.as_str().unwrap(),
        "spiffe://cluster.local/ns/team-a/agent/alice"
    );
}

#[test]
fn signed_leaf_eku_follows_policy() {
    let authority = testing::authority();
    let policy = LeafPolicy {
        server_auth: false,
        ..LeafPolicy::default()
    };
    let creds = authority
        .issue(&testing::agent("alice"), &policy, SystemTime::now())
        .unwrap();
    let (_, cert) = X509Certificate::from_der(creds.chain()[0].as_ref()).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
}

#[test]
fn signed_leaf_lives_24h_by_default_backdated_by_the_skew() {
    let authority = testing::authority();
    let now = SystemTime::now();
    let (issued, now) = leaf_policy_defaults_sign(&authority, now);
    assert_eq!(issued.not_before, now - Duration::from_secs(300));
    assert_eq!(issued.not_after, now + Duration::from_secs(24 * 3600));
    let creds_nb = crate::credentials::Credentials::from_pem(
        &issued.chain_pem,
        &authority.to_pem().issuer_key_pem,
    );
    // The issuer key does not belong to the leaf.
    assert_eq!(creds_nb.unwrap_err(), CredentialsError::KeyMismatch);
    let der = testing::leaf_of(&issued.chain_pem);
    let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
    assert_eq!(
        to_system_time(cert.validity().not_before),
        issued.not_before
    );
    assert_eq!(to_system_time(cert.validity().not_after), issued.not_after);
}

#[test]
fn signed_leaf_serials_are_random() {
    let authority = testing::authority();
    let a = testing::issue(&authority, &testing::agent("alice"));
    let b = testing::issue(&authority, &testing::agent("alice"));
    assert_ne!(a.serial_hex(), b.serial_hex());
    assert_eq!(a.serial_hex().len(), 32);
}

#[test]
fn signed_leaf_chains_to_the_bundle() {
    let authority = testing::authority();
    let creds = testing::issue(&authority, &testing::agent("alice"));
    assert_eq!(creds.chain().len(), 2, "leaf then issuer");
    let roots = pem::parse_certs(authority.trust_bundle_pem()).unwrap();
    crate::tls::verify_client_chain(&roots, creds.chain(), SystemTime::now()).unwrap();

    let other = testing::authority();
    let other_roots = pem::parse_certs(other.trust_bundle_pem()).unwrap();
    assert!(
        crate::tls::verify_client_chain(&other_roots, creds.chain(), SystemTime::now()).is_err()
    );
}

#[test]
fn leaf_never_outlives_its_issuer() {
    let authority = testing::authority();
    let policy = LeafPolicy {
        lifetime: Duration::from_secs(5 * 365 * 24 * 3600),
        ..LeafPolicy::default()
    };
    let creds = authority
        .issue(&testing::agent("alice"), &policy, SystemTime::now())
        .unwrap();
    assert_eq!(creds.not_after(), authority.issuer_not_after());
}

#[test]
fn signing_refuses_when_the_issuer_is_not_yet_valid() {
    let authority = testing::authority();
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    let err = authority
        .issue(&testing::agent("alice"), &LeafPolicy::default(), long_ago)
        .unwrap_err();
    assert!(matches!(
        err,
        AuthorityError::Issue(CsrError::IssuerNotValid)
    ));
}

#[test]
fn policy_dns_names_and_ips_are_added_to_the_uri_san() {
    let authority = testing::authority();
    let policy = LeafPolicy {
        dns_names: vec!["clawswarm.clawswarm.svc".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        ..LeafPolicy::default()
    };
    let creds = authority
        .issue(&testing::controller(), &policy, SystemTime::now())
        .unwrap();
    let (_, cert) = X509Certificate::from_der(creds.chain()[0].as_ref()).unwrap();
    let sans = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(sans.len(), 3);
    assert_eq!(creds.spiffe_id(), &testing::controller());
}

#[test]
fn to_pem_and_from_pem_round_trip() {
    let authority = testing::authority();
    let pem = authority.to_pem();
    let again = Authority::from_pem(&pem).unwrap();
    assert_eq!(again.trust_domain(), authority.trust_domain());
    assert_eq!(again.to_pem(), pem);
    assert!(!format!("{pem:?}").contains("PRIVATE KEY"));
}

#[test]
fn from_pem_rejects_a_mismatched_key() {
    let a = testing::authority().to_pem();
    let b = testing::authority().to_pem();
    let mixed = AuthorityPem {
        issuer_key_pem: b.issuer_key_pem,
        ..a
    };
    assert!(matches!(
        Authority::from_pem(&mixed),
        Err(AuthorityError::IssuerKeyMismatch)
    ));
}

#[test]
fn from_pem_rejects_an_issuer_outside_the_bundle() {
    let a = testing::authority().to_pem();
    let b = testing::authority().to_pem();
    let foreign = AuthorityPem {
        trust_bundle_pem: b.trust_bundle_pem,
        ..a
    };
    assert!(matches!(
        Authority::from_pem(&foreign),
        Err(AuthorityError::NotChainedToBundle)
    ));
}

#[test]
fn from_pem_rejects_a_leaf_posing_as_issuer() {
    let authority = testing::authority();
    let creds = testing::issue(&authority, &testing::controller());
    let pem = AuthorityPem {
        trust_bundle_pem: authority.trust_bundle_pem().to_string(),
        issuer_cert_pem: crate::pem::encode_certs(&creds.chain()[..1]),
        issuer_key_pem: creds.key_pem(),
    };
    assert!(matches!(
        Authority::from_pem_for(&pem, &testing::td()),
        Err(AuthorityError::IssuerNotCa)
    ));
}

#[test]
fn from_pem_rejects_an_expired_issuer() {
    let eleven_years_ago = SystemTime::now() - Duration::from_secs(11 * 365 * 24 * 3600);
    let old = Authority::generate_at(&testing::td(), eleven_years_ago).unwrap();
    assert!(matches!(
        Authority::from_pem(&old.to_pem()),
        Err(AuthorityError::IssuerNotValidNow { .. })
    ));
}

#[test]
fn from_pem_for_rejects_another_trust_domain() {
    let pem = testing::authority().to_pem();
    let other = TrustDomain::new("other.local").unwrap();
    assert!(matches!(
        Authority::from_pem_for(&pem, &other),
        Err(AuthorityError::TrustDomainMismatch { .. })
    ));
}

#[test]
fn from_pem_rejects_garbage() {
    let pem = AuthorityPem {
        trust_bundle_pem: "garbage".into(),
        issuer_cert_pem: "garbage".into(),
        issuer_key_pem: "garbage".into(),
    };
    assert!(matches!(
        Authority::from_pem(&pem),
        Err(AuthorityError::Pem {
            what: "issuer certificate",
            ..
        })
    ));
}

#[test]
fn load_or_create_writes_once_and_reloads_the_same_authority() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let first = Authority::load_or_create(&dir, &testing::td()).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("issuer-key.pem")), 0o600);
    let written = std::fs::read_to_string(dir.join("issuer.pem")).unwrap();

    let second = Authority::load_or_create(&dir, &testing::td()).unwrap();
    assert_eq!(second.to_pem(), first.to_pem());
    assert_eq!(
        std::fs::read_to_string(dir.join("issuer.pem")).unwrap(),
        written
    );
    // The reloaded authority signs leaves the first one's bundle trusts.
    let creds = testing::issue(&second, &testing::agent("alice"));
    let roots = pem::parse_certs(first.trust_bundle_pem()).unwrap();
    crate::tls::verify_client_chain(&roots, creds.chain(), SystemTime::now()).unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "no root key, no temp files: {names:?}");
}

#[test]
fn load_or_create_refuses_a_partial_directory() {
    let tmp = tempfile::tempdir().unwrap();
    Authority::load_or_create(tmp.path(), &testing::td()).unwrap();
    std::fs::remove_file(tmp.path().join("issuer-key.pem")).unwrap();
    let err = Authority::load_or_create(tmp.path(), &testing::td()).unwrap_err();
    assert!(matches!(err, AuthorityError::PartialDirectory { .. }));
    assert_eq!(err.metric_label(), "partial_directory");
}

#[test]
fn authority_is_send_sync_and_debug_hides_the_key() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Authority>();
    let authority = testing::authority();
    let debug = format!("{authority:?}");
    assert!(debug.contains("cluster.local") && !debug.contains("PRIVATE"));
}

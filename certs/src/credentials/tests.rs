use std::time::SystemTime;

use super::*;
use crate::testing;

#[test]
fn credentials_round_trip_through_pem() {
    let authority = testing::authority();
    let creds = testing::issue(&authority, &testing::agent("alice"));
    let again = Credentials::from_pem(&creds.chain_pem(), &creds.key_pem()).unwrap();
    assert_eq!(again.spiffe_id(), creds.spiffe_id());
    assert_eq!(again.serial_hex(), creds.serial_hex());
    assert_eq!(again.not_before(), creds.not_before());
    assert_eq!(again.not_after(), creds.not_after());
    assert_eq!(again.chain(), creds.chain());
    assert!(again.not_after() > SystemTime::now());
    assert_eq!(again.certified_key().cert.len(), 2);
}

#[test]
fn credentials_debug_redacts_the_key() {
    let creds = testing::issue(&testing::authority(), &testing::agent("alice"));
    let debug = format!("{creds:?}");
    assert!(debug.contains("<redacted>"));
    let key_body: String = creds.key_pem().lines().nth(1).unwrap().to_string();
    assert!(!debug.contains(&key_body));
}

#[test]
fn credentials_refuse_a_key_of_another_certificate() {
    let authority = testing::authority();
    let a = testing::issue(&authority, &testing::agent("alice"));
    let b = testing::issue(&authority, &testing::agent("bob"));
    assert_eq!(
        Credentials::from_pem(&a.chain_pem(), &b.key_pem()).unwrap_err(),
        CredentialsError::KeyMismatch
    );
}

#[test]
fn credentials_refuse_sec1_keys_with_a_clear_message() {
    let creds = testing::issue(&testing::authority(), &testing::agent("alice"));
    let sec1 = crate::pem::encode("EC PRIVATE KEY", b"\x30\x00");
    assert_eq!(
        Credentials::from_pem(&creds.chain_pem(), &sec1).unwrap_err(),
        CredentialsError::KeyNotPkcs8 {
            found: "SEC1 EC PRIVATE KEY"
        }
    );
}

#[test]
fn credentials_refuse_garbage_and_empty_input() {
    let creds = testing::issue(&testing::authority(), &testing::agent("alice"));
    assert!(matches!(
        Credentials::from_pem("", &creds.key_pem()),
        Err(CredentialsError::Pem {
            what: "certificate chain",
            ..
        })
    ));
    assert!(matches!(
        Credentials::from_pem(&creds.chain_pem(), "nope"),
        Err(CredentialsError::Pem {
            what: "private key",
            ..
        })
    ));
    let bad_cert = crate::pem::encode("CERTIFICATE", b"\x30\x03\x02\x01\x00");
    assert!(matches!(
        Credentials::from_pem(&bad_cert, &creds.key_pem()),
        Err(CredentialsError::Certificate { index: 0, .. })
    ));
}

#[test]
fn credentials_refuse_a_leaf_without_spiffe_id() {
    // A CA certificate carries `spiffe://<td>`, which is no workload id.
    let authority = testing::authority();
    let pem = authority.to_pem();
    let err = Credentials::from_pem(&pem.issuer_cert_pem, &pem.issuer_key_pem).unwrap_err();
    assert!(
        matches!(err, CredentialsError::InvalidSpiffeId(_)),
        "{err:?}"
    );
    assert_eq!(err.metric_label(), "spiffe_id");
}

#[test]
fn pkcs8_key_pem_is_labelled_private_key() {
    let creds = testing::issue(&testing::authority(), &testing::agent("alice"));
    assert!(creds.key_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(creds.chain_pem().matches("BEGIN CERTIFICATE").count() == 2);
    assert!(creds.expiry_unix_seconds() > 0);
}

#[test]
fn verify_against_accepts_own_bundle_and_refuses_others_or_expiry() {
    let authority = testing::authority();
    let creds = testing::issue(&authority, &testing::agent("alice"));
    creds
        .verify_against(authority.trust_bundle_pem(), SystemTime::now())
        .unwrap();
    let other = testing::authority();
    assert!(matches!(
        creds.verify_against(other.trust_bundle_pem(), SystemTime::now()),
        Err(CredentialsError::Untrusted(_))
    ));
    let later = creds.not_after() + std::time::Duration::from_secs(1);
    assert!(matches!(
        creds.verify_against(authority.trust_bundle_pem(), later),
        Err(CredentialsError::Untrusted(_))
    ));
}

#[test]
fn verify_against_accepts_server_only_certificates() {
    let authority = testing::authority();
    let policy = crate::LeafPolicy {
        client_auth: false,
        ..crate::LeafPolicy::default()
    };
    let creds = authority
        .issue(&testing::controller(), &policy, SystemTime::now())
        .unwrap();
    creds
        .verify_against(authority.trust_bundle_pem(), SystemTime::now())
        .unwrap();
}

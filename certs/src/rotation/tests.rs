use std::time::SystemTime;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::authority::LeafPolicy;
use crate::testing::{self, handshake, serial_of};
use crate::tls::{ClientAuth, ServerIdentity, client_config, server_config};

#[tokio::test]
async fn new_handshakes_see_the_rotated_certificate_while_old_connections_keep_working() {
    let authority = testing::authority();
    let first = testing::issue(&authority, &testing::controller());
    let second = testing::issue(&authority, &testing::controller());
    let store = CredentialStore::new(first.clone());
    let mut updates = store.subscribe();
    let server = server_config(
        store.clone(),
        authority.trust_bundle_pem(),
        ClientAuth::Required,
    )
    .unwrap();
    let client = client_config(
        Some(CredentialStore::new(testing::issue(
            &authority,
            &testing::agent("alice"),
        ))),
        authority.trust_bundle_pem(),
        ServerIdentity::Spiffe(testing::controller()),
    )
    .unwrap();

    let (s1, c1) = handshake(server.clone(), client.clone()).await;
    let (mut s1, mut c1) = (s1.unwrap(), c1.unwrap());
    assert_eq!(
        serial_of(c1.get_ref().1.peer_certificates().unwrap()),
        first.serial_hex()
    );

    store.update(second.clone());
    assert!(updates.has_changed().unwrap());
    assert_eq!(
        updates.borrow_and_update().serial_hex(),
        second.serial_hex()
    );
    assert_eq!(store.current().serial_hex(), second.serial_hex());

    let (s2, c2) = handshake(server, client).await;
    let (_s2, c2) = (s2.unwrap(), c2.unwrap());
    assert_eq!(
        serial_of(c2.get_ref().1.peer_certificates().unwrap()),
        second.serial_hex()
    );

    // The connection made before the rotation still carries data both ways.
    c1.write_all(b"ping").await.unwrap();
    c1.flush().await.unwrap();
    let mut buf = [0u8; 4];
    s1.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    s1.write_all(b"pong").await.unwrap();
    s1.flush().await.unwrap();
    c1.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn rotated_client_certificate_is_presented_on_the_next_handshake() {
    let authority = testing::authority();
    let server_store = CredentialStore::new(testing::issue(&authority, &testing::controller()));
    let server = server_config(
        server_store,
        authority.trust_bundle_pem(),
        ClientAuth::Required,
    )
    .unwrap();
    let first = testing::issue(&authority, &testing::agent("alice"));
    let second = authority
        .issue(
            &testing::agent("alice"),
            &LeafPolicy::default(),
            SystemTime::now(),
        )
        .unwrap();
    let client_store = CredentialStore::new(first.clone());
    let client = client_config(
        Some(client_store.clone()),
        authority.trust_bundle_pem(),
        ServerIdentity::Spiffe(testing::controller()),
    )
    .unwrap();

    let (s1, _c1) = handshake(server.clone(), client.clone()).await;
    assert_eq!(
        serial_of(s1.unwrap().get_ref().1.peer_certificates().unwrap()),
        first.serial_hex()
    );
    client_store.update(second.clone());
    let (s2, _c2) = handshake(server, client).await;
    assert_eq!(
        serial_of(s2.unwrap().get_ref().1.peer_certificates().unwrap()),
        second.serial_hex()
    );
}

#[test]
fn store_debug_redacts_the_key() {
    let store = CredentialStore::new(testing::issue(
        &testing::authority(),
        &testing::agent("alice"),
    ));
    let debug = format!("{store:?}");
    assert!(debug.contains("<redacted>") && !debug.contains("PRIVATE KEY"));
}

//! Hot rotation: one store per process, handed to rustls as the certificate
//! resolver of every server and client config. rustls asks the resolver on
//! each handshake, so new connections pick up renewed credentials while
//! established ones (and their gRPC streams) are left alone.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::credentials::Credentials;

#[cfg(test)]
mod tests;

pub struct CredentialStore {
    tx: watch::Sender<Arc<Credentials>>,
}

impl std::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialStore")
            .field("current", &*self.tx.borrow())
            .finish()
    }
}

impl CredentialStore {
    pub fn new(initial: Credentials) -> Arc<Self> {
        let (tx, _rx) = watch::channel(Arc::new(initial));
        Arc::new(Self { tx })
    }

    /// Swaps in `next` for future handshakes and notifies subscribers
    /// (metrics, readiness, the renewal loop).
    pub fn update(&self, next: Credentials) {
        let previous = self.current();
        if previous.spiffe_id() != next.spiffe_id() {
            tracing::warn!(
                spiffe_id = %next.spiffe_id(),
                previous = %previous.spiffe_id(),
                "credentials changed identity"
            );
        }
        tracing::info!(
            spiffe_id = %next.spiffe_id(),
            serial = next.serial_hex(),
            "credentials rotated"
        );
        self.tx.send_replace(Arc::new(next));
    }

    pub fn current(&self) -> Arc<Credentials> {
        Arc::clone(&self.tx.borrow())
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Credentials>> {
        self.tx.subscribe()
    }
}

impl ResolvesServerCert for CredentialStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().certified_key())
    }
}

impl ResolvesClientCert for CredentialStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current().certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

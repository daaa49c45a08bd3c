//! Identity for the clawswarm mesh: SPIFFE ids, the CA and its CSR policy,
//! credentials, rustls configurations with hot rotation, and the renewal
//! schedule. The controller and the sidecars share this crate so both ends
//! agree on what an identity is and how it is checked.

// Tests may unwrap; the non-test build of the library is still checked.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod authority;
mod channel;
mod credentials;
mod csr;
mod id;
mod incoming;
mod pem;
mod refresh;
mod rotation;
#[cfg(test)]
mod testing;
mod tls;

pub use authority::{Authority, AuthorityError, AuthorityPem, Issued, LeafPolicy};
pub use channel::{ChannelError, ChannelOptions, error_chain, mtls_channel};
pub use credentials::{Credentials, CredentialsError};
pub use csr::{CsrError, PendingKey, generate_csr};
pub use id::{AgentId, IdError, SpiffeId, TrustDomain};
pub use incoming::tls_incoming;
pub use refresh::refresh_delay;
pub use rotation::CredentialStore;
pub use tls::{
    ClientAuth, ServerIdentity, TlsError, client_config, install_default_crypto_provider,
    peer_spiffe_id, server_config,
};

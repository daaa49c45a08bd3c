//! One-time bootstrap tokens: how the local runtime vouches for the sidecars
//! it starts. The runtime mints a token per process start and hands it over
//! in a 0600 file; `Identity.Certify` consumes it once. Renewals then use the
//! certificate the token bought.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use clawswarm_certs::AgentId;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::authenticator::{AuthError, Authenticator, CertifyClaim};

/// Tokens not used within this time are worthless.
pub const BOOTSTRAP_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);

/// At most this many unused tokens are kept; minting more evicts expired ones
/// first and then refuses, so a restart loop cannot grow memory.
const MAX_OUTSTANDING: usize = 100_000;

#[derive(Default)]
pub struct BootstrapTokens {
    // Keyed by SHA-256 of the token: lookups never compare secret bytes, so
    // there is no timing side channel, and a memory dump holds no tokens.
    outstanding: Mutex<HashMap<[u8; 32], (AgentId, Instant)>>,
}

impl BootstrapTokens {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh token for one start of `agent`'s sidecar.
    pub fn mint(&self, agent: &AgentId) -> Result<String, AuthError> {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = format!("csb1.{}", hex::encode(raw));
        let mut map = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_OUTSTANDING {
            let now = Instant::now();
            map.retain(|_, (_, exp)| *exp > now);
            if map.len() >= MAX_OUTSTANDING {
                return Err(AuthError::Unavailable(
                    "too many outstanding bootstrap tokens".into(),
                ));
            }
        }
        map.insert(
            digest(&token),
            (agent.clone(), Instant::now() + BOOTSTRAP_TOKEN_TTL),
        );
        Ok(token)
    }

    fn consume(&self, token: &str, requested: &AgentId) -> Result<(), AuthError> {
        let key = digest(token);
        let mut map = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        let Some((agent, expires)) = map.get(&key) else {
            return Err(AuthError::InvalidToken(
                "bootstrap token is unknown or already used".into(),
            ));
        };
        if *expires <= Instant::now() {
            map.remove(&key);
            return Err(AuthError::InvalidToken("bootstrap token expired".into()));
        }
        if agent != requested {
            // Keep it: the rightful owner may still use it.
            return Err(AuthError::WrongAgent {
                requested: requested.clone(),
                actual: agent.to_string(),
            });
        }
        map.remove(&key);
        Ok(())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[async_trait]
impl Authenticator for BootstrapTokens {
    fn kind(&self) -> &'static str {
        "bootstrap-token"
    }

    async fn authenticate(&self, claim: &CertifyClaim<'_>) -> Result<(), AuthError> {
        if claim.token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        self.consume(claim.token, claim.requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> AgentId {
        AgentId::new("local", name).unwrap()
    }

    async fn auth(t: &BootstrapTokens, token: &str, who: &AgentId) -> Result<(), AuthError> {
        t.authenticate(&CertifyClaim {
            requested: who,
            token,
        })
        .await
    }

    #[tokio::test]
    async fn a_token_works_once_and_only_for_its_agent() {
        let tokens = BootstrapTokens::new();
        let alice = agent("alice");
        let token = tokens.mint(&alice).unwrap();
        assert!(matches!(
            auth(&tokens, &token, &agent("bob")).await,
            Err(AuthError::WrongAgent { .. })
        ));
        auth(&tokens, &token, &alice).await.unwrap();
        assert!(matches!(
            auth(&tokens, &token, &alice).await,
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[tokio::test]
    async fn garbage_and_empty_tokens_are_refused() {
        let tokens = BootstrapTokens::new();
        assert!(matches!(
            auth(&tokens, "", &agent("a")).await,
            Err(AuthError::MissingToken)
        ));
        assert!(matches!(
            auth(&tokens, "\u{0}garbage🙂", &agent("a")).await,
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_is_refused() {
        let tokens = BootstrapTokens::new();
        let a = agent("a");
        let token = tokens.mint(&a).unwrap();
        tokio::time::advance(BOOTSTRAP_TOKEN_TTL + Duration::from_secs(1)).await;
        // std Instant does not follow tokio's paused clock; age the entry by hand.
        tokens
            .outstanding
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|(_, e)| *e = Instant::now());
        assert!(
            matches!(auth(&tokens, &token, &a).await, Err(AuthError::InvalidToken(m)) if m.contains("expired"))
        );
    }
}

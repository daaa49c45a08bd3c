//! What the last model calls found out about the provider, for the person
//! (the proxy's own answer in the chat) and the operator (the readiness
//! detail, so `clawswarm agents list` and `/agent status` show it).
//!
//! Only the two causes a person cannot fix by asking again are tracked: a
//! key the provider rejects and a model server that cannot be reached. Any
//! successful call clears them.

use std::{fmt, sync::Mutex};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelProblem {
    /// 401 or 403 from the provider: the key is wrong, revoked or lacks access.
    KeyRejected { status: u16, message: String },
    /// No connection to the model server (refused, DNS, connect timeout).
    Unreachable { upstream: String, cause: String },
}

impl fmt::Display for ModelProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyRejected { status, message } if message.is_empty() => {
                write!(f, "the model provider rejected the key (HTTP {status})")
            }
            Self::KeyRejected { status, message } => {
                write!(
                    f,
                    "the model provider rejected the key (HTTP {status}: {message})"
                )
            }
            Self::Unreachable { upstream, cause } => {
                write!(
                    f,
                    "the model server at {upstream} cannot be reached ({cause})"
                )
            }
        }
    }
}

impl ModelProblem {
    /// The proxy's answer to the person, as the assistant's message.
    pub fn reply_text(&self) -> String {
        match self {
            Self::KeyRejected { .. } => format!(
                "I cannot answer: {self}. The operator needs to set a valid key \
                 (CLAWSWARM_MODEL_API_KEY or CLAWSWARM_MODEL_API_KEY_FILE for this agent)."
            ),
            Self::Unreachable { .. } => {
                format!("I cannot answer: {self}. Is it running? Ask again once it is.")
            }
        }
    }
}

/// The provider's standing; shared by the proxy (which writes it) and the
/// workload's readiness check (which reads it).
#[derive(Default)]
pub struct ModelHealth {
    problem: Mutex<Option<ModelProblem>>,
}

impl ModelHealth {
    pub fn problem(&self) -> Option<ModelProblem> {
        self.lock().clone()
    }

    pub fn set(&self, problem: ModelProblem) {
        *self.lock() = Some(problem);
    }

    pub fn clear(&self) {
        let mut p = self.lock();
        if p.is_some() {
            *p = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ModelProblem>> {
        self.problem.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The provider's own error message from a JSON error body, in either
/// API's shape (`{"error": {"message": ...}}` for both), bounded so a
/// provider's page of HTML does not end up in a readiness detail.
pub fn provider_message(body: &[u8]) -> String {
    const MAX: usize = 200;
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let message = message.trim();
    match message.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_key_names_the_status_and_the_providers_words() {
        let body = br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        let p = ModelProblem::KeyRejected {
            status: 401,
            message: provider_message(body),
        };
        assert_eq!(
            p.to_string(),
            "the model provider rejected the key (HTTP 401: invalid x-api-key)"
        );
        assert!(p.reply_text().contains("CLAWSWARM_MODEL_API_KEY"));
    }

    #[test]
    fn an_unparseable_or_huge_body_gives_a_bounded_message() {
        assert_eq!(provider_message(b"<html>nope</html>"), "");
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "x".repeat(5000));
        assert!(provider_message(long.as_bytes()).chars().count() <= 201);
    }

    #[test]
    fn a_success_clears_the_problem() {
        let h = ModelHealth::default();
        h.set(ModelProblem::Unreachable {
            upstream: "http://127.0.0.1:11434".into(),
            cause: "connection refused".into(),
        });
        assert!(
            h.problem()
                .unwrap()
                .to_string()
                .contains("cannot be reached")
        );
        h.clear();
        assert_eq!(h.problem(), None);
    }
}

//! Trust domains, agent ids and the SPIFFE ids the mesh authorizes by.
//!
//! Parsing is strict on purpose: the controller authorizes every frame by the
//! id in the peer certificate, so two spellings of one identity (case, empty
//! segments, trailing slashes) must never both be accepted.

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";
/// SPIFFE caps the trust domain at 255 bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// DNS-1123 labels (Kubernetes namespaces and names) are at most 63 bytes.
const MAX_LABEL_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    #[error("trust domain is {len} bytes long, at most 255 are allowed")]
    TrustDomainTooLong { len: usize },
    #[error("trust domain contains {ch:?}; only a-z, 0-9, '.', '-' and '_' are allowed")]
    TrustDomainInvalidChar { ch: char },
    #[error("trust domain has an empty label (leading, trailing or doubled '.')")]
    TrustDomainEmptyLabel,
    #[error("{field} is empty")]
    EmptyLabel { field: &'static str },
    #[error("{field} is {len} bytes long, at most 63 are allowed")]
    LabelTooLong { field: &'static str, len: usize },
    #[error("{field} contains {ch:?}; only a-z, 0-9 and '-' are allowed")]
    LabelInvalidChar { field: &'static str, ch: char },
    #[error("{field} starts or ends with '-'")]
    LabelEdgeHyphen { field: &'static str },
    #[error("agent id must be \"namespace/name\"")]
    AgentIdMissingSlash,
    #[error("SPIFFE id must start with \"spiffe://\"")]
    WrongScheme,
    #[error("SPIFFE id must not carry a port, user info, query or fragment")]
    ForbiddenUriPart,
    #[error(
        "SPIFFE id path {path:?} is none of /ns/<ns>/agent/<name>, /ns/<ns>/controller, /admin/<name>"
    )]
    UnknownPath { path: String },
}

impl IdError {
    /// A bounded label for metrics (`result` or `reason`), never the offending value.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::EmptyTrustDomain
            | Self::TrustDomainTooLong { .. }
            | Self::TrustDomainInvalidChar { .. }
            | Self::TrustDomainEmptyLabel => "invalid_trust_domain",
            Self::EmptyLabel { .. }
            | Self::LabelTooLong { .. }
            | Self::LabelInvalidChar { .. }
            | Self::LabelEdgeHyphen { .. } => "invalid_label",
            Self::AgentIdMissingSlash => "invalid_agent_id",
            Self::WrongScheme => "wrong_scheme",
            Self::ForbiddenUriPart => "forbidden_uri_part",
            Self::UnknownPath { .. } => "unknown_path",
        }
    }
}

/// The SPIFFE trust domain (e.g. `cluster.local`): lowercase, at most 255 bytes,
/// non-empty dot-separated labels of `a-z 0-9 - _`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        if value.is_empty() {
            return Err(IdError::EmptyTrustDomain);
        }
        if value.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(IdError::TrustDomainTooLong { len: value.len() });
        }
        if let Some(ch) = value
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
        {
            return Err(IdError::TrustDomainInvalidChar { ch });
        }
        if value.split('.').any(str::is_empty) {
            return Err(IdError::TrustDomainEmptyLabel);
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `spiffe://<td>`, the id CA certificates carry so an operator-supplied
    /// issuer can be checked against the configured trust domain.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// Validates a DNS-1123 label, the shape of Kubernetes namespaces and names.
pub(crate) fn validate_label(field: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::EmptyLabel { field });
    }
    if value.len() > MAX_LABEL_LEN {
        return Err(IdError::LabelTooLong {
            field,
            len: value.len(),
        });
    }
    if let Some(ch) = value
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(IdError::LabelInvalidChar { field, ch });
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(IdError::LabelEdgeHyphen { field });
    }
    Ok(())
}

/// One agent (one person's OpenClaw), named like its Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId {
    namespace: String,
    name: String,
}

impl AgentId {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Result<Self, IdError> {
        let namespace = namespace.into();
        let name = name.into();
        validate_label("namespace", &namespace)?;
        validate_label("agent name", &name)?;
        Ok(Self { namespace, name })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for AgentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (namespace, name) = s.split_once('/').ok_or(IdError::AgentIdMissingSlash)?;
        // A second '/' lands in `name` and is refused there as an invalid char.
        Self::new(namespace, name)
    }
}

/// Every identity the mesh knows. Build `Controller` and `Admin` through
/// [`SpiffeId::controller`] and [`SpiffeId::admin`] so their segments are validated;
/// the CA re-parses every id before signing, so a hand-built invalid id is refused there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpiffeId {
    /// `spiffe://<td>/ns/<ns>/agent/<name>`: an agent's sidecar.
    Agent {
        trust_domain: TrustDomain,
        agent: AgentId,
    },
    /// `spiffe://<td>/ns/<ns>/controller`: the controller of that namespace.
    Controller {
        trust_domain: TrustDomain,
        namespace: String,
    },
    /// `spiffe://<td>/admin/<name>`: an operator using the admin API.
    Admin {
        trust_domain: TrustDomain,
        name: String,
    },
}

impl SpiffeId {
    pub fn agent(trust_domain: TrustDomain, agent: AgentId) -> Self {
        Self::Agent {
            trust_domain,
            agent,
        }
    }

    pub fn controller(
        trust_domain: TrustDomain,
        namespace: impl Into<String>,
    ) -> Result<Self, IdError> {
        let namespace = namespace.into();
        validate_label("namespace", &namespace)?;
        Ok(Self::Controller {
            trust_domain,
            namespace,
        })
    }

    /// Admin names are DNS-1123 labels like everything else, so they can be
    /// file names and metric labels without escaping.
    pub fn admin(trust_domain: TrustDomain, name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        validate_label("admin name", &name)?;
        Ok(Self::Admin { trust_domain, name })
    }

    pub fn parse(uri: &str) -> Result<Self, IdError> {
        let rest = uri.strip_prefix(SCHEME).ok_or(IdError::WrongScheme)?;
        if rest.contains(['?', '#', '@', ':']) {
            return Err(IdError::ForbiddenUriPart);
        }
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let trust_domain = TrustDomain::new(td)?;
        let unknown = || IdError::UnknownPath {
            path: path.to_string(),
        };
        let segments: Vec<&str> = path
            .strip_prefix('/')
            .ok_or_else(unknown)?
            .split('/')
            .collect();
        match segments.as_slice() {
            ["ns", ns, "agent", name] => Ok(Self::agent(trust_domain, AgentId::new(*ns, *name)?)),
            ["ns", ns, "controller"] => Self::controller(trust_domain, *ns),
            ["admin", name] => Self::admin(trust_domain, *name),
            _ => Err(unknown()),
        }
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        match self {
            Self::Agent { trust_domain, .. }
            | Self::Controller { trust_domain, .. }
            | Self::Admin { trust_domain, .. } => trust_domain,
        }
    }

    pub fn as_agent(&self) -> Option<&AgentId> {
        match self {
            Self::Agent { agent, .. } => Some(agent),
            _ => None,
        }
    }

    /// Bounded label for metrics: which kind of peer this is.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Agent { .. } => "agent",
            Self::Controller { .. } => "controller",
            Self::Admin { .. } => "admin",
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Agent {
                trust_domain,
                agent,
            } => write!(
                f,
                "{SCHEME}{trust_domain}/ns/{}/agent/{}",
                agent.namespace(),
                agent.name()
            ),
            Self::Controller {
                trust_domain,
                namespace,
            } => write!(f, "{SCHEME}{trust_domain}/ns/{namespace}/controller"),
            Self::Admin { trust_domain, name } => write!(f, "{SCHEME}{trust_domain}/admin/{name}"),
        }
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests;

//! What the reconciler refuses before it builds anything: Agents whose name
//! is not an agent id, templates that cannot make a valid pod, reserved label
//! keys, and which of several Agents of one owner is the one that serves.
//!
//! The API server refuses most of this first (CEL rules in `crd.rs`); these
//! checks are the defence in depth for objects that slipped past (created
//! before a rule existed, or a rule the API server cannot express), so each
//! gets an `InvalidSpec` condition naming the field instead of a failed pod
//! create, a crash or a silent drop.

use std::collections::BTreeMap;

use clawswarm_certs::AgentId;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt as _;

use super::crd::{Agent, AgentTemplateSpec};

/// Label keys a template's `podLabels` may not set: the controller's own
/// domain and the `app.kubernetes.io` keys its Services, NetworkPolicies
/// and PodMonitor select by. The CEL rule on the CRD says the same
/// ([`RESERVED_LABELS_RULE`]); the API server tier tests it.
pub const RESERVED_LABEL_KEYS: &[&str] = &[
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
];
/// Every key in this domain (or a subdomain of it) is the controller's ...
pub const RESERVED_LABEL_DOMAIN: &str = "clawswarm.dev";
/// ... but the role label, which templates set for per-role NetworkPolicies
/// and nothing of the controller selects by.
pub const ROLE_LABEL: &str = "clawswarm.dev/role";

/// The CEL rule on `AgentTemplate.spec.workload.podLabels`.
pub const RESERVED_LABELS_RULE: &str = "self.all(k, k == 'clawswarm.dev/role' \
     || (!k.matches('^([a-z0-9.-]*[.])?clawswarm[.]dev/') \
     && !(k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', \
     'app.kubernetes.io/component', 'app.kubernetes.io/part-of', 'app.kubernetes.io/managed-by'])))";
pub const RESERVED_LABELS_MESSAGE: &str = "podLabels may not set reserved keys: clawswarm.dev/* \
     (but clawswarm.dev/role) and app.kubernetes.io/{name,instance,component,part-of,managed-by} \
     belong to the controller";

/// The CEL rule on an Agent's `metadata.name`: it must be an agent id
/// (a DNS-1123 label, see `clawswarm_certs::AgentId`).
pub const AGENT_NAME_RULE: &str = "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')";
pub const AGENT_NAME_MESSAGE: &str = "metadata.name must be an agent id: at most 63 characters \
     of a-z, 0-9 and '-', starting and ending with a letter or digit (no dots, no upper case)";

/// A refused field: which one, and why (the condition message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct SpecError {
    pub field: String,
    pub why: String,
}

impl SpecError {
    fn new(field: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            why: why.into(),
        }
    }
}

/// The Agent's own fields (its name must be an agent id).
pub fn agent(agent: &Agent) -> Result<(), SpecError> {
    let ns = agent.namespace().unwrap_or_default();
    AgentId::new(ns, agent.name_any())
        .map(|_| ())
        .map_err(|e| SpecError::new("metadata.name", format!("not an agent id: {e}")))
}

/// Everything in a template that would make the pod or claim invalid, or
/// let the pod pass for something it is not.
pub fn template(tpl: &AgentTemplateSpec) -> Result<(), SpecError> {
    let w = &tpl.workload;
    if w.image.trim().is_empty() || w.image.trim() != w.image {
        return Err(SpecError::new(
            "spec.workload.image",
            format!(
                "{:?} is not an image reference (empty or surrounded by spaces)",
                w.image
            ),
        ));
    }
    if let Some(idle) = &tpl.idle_timeout
        && crate::config::parse_duration(idle).is_err()
    {
        return Err(SpecError::new(
            "spec.idleTimeout",
            format!("{idle:?} is not a duration (e.g. 30m, 8h, 2d)"),
        ));
    }
    pod_labels("spec.workload.podLabels", &w.pod_labels)?;
    if let Some(r) = &w.resources {
        resources("spec.workload.resources", r)?;
    }
    if let Some(r) = &tpl.sidecar_resources {
        resources("spec.sidecarResources", r)?;
    }
    if let Some(d) = &tpl.data {
        for (i, p) in d.indices.iter().enumerate() {
            let bad = p.is_empty()
                || p.starts_with(['-', '_'])
                || p.contains(|c: char| c.is_whitespace() || ",/\\\"<>|?#".contains(c));
            if bad {
                return Err(SpecError::new(
                    format!("spec.data.indices[{i}]"),
                    format!(
                        "{p:?} is not an index name or pattern (one name or `*` pattern per \
                         entry, e.g. pipelines or logs-*)"
                    ),
                ));
            }
        }
    }
    if let Some(sk) = &tpl.skills {
        for (i, p) in sk.library.iter().enumerate() {
            let name = p.strip_suffix('*').unwrap_or(p);
            let ok = name.is_empty()
                || clawswarm_proto::skill_bundle::validate_name(name.trim_end_matches('-')).is_ok();
            if !ok {
                return Err(SpecError::new(
                    format!("spec.skills.library[{i}]"),
                    format!(
                        "{p:?} is not a skill name or `prefix*` pattern (lowercase letters, \
                         digits and hyphens, e.g. pipeline-status or oncall-*)"
                    ),
                ));
            }
        }
    }
    match parse_quantity(&tpl.storage.size) {
        Some(v) if v > 0.0 => {}
        _ => {
            return Err(SpecError::new(
                "spec.storage.size",
                format!(
                    "{:?} is not a positive quantity (e.g. 5Gi)",
                    tpl.storage.size
                ),
            ));
        }
    }
    if let Some(cm) = &w.config_map
        && !is_dns_subdomain(cm)
    {
        return Err(SpecError::new(
            "spec.workload.configMap",
            format!("{cm:?} is not a ConfigMap name"),
        ));
    }
    for (i, p) in w.writable_paths.iter().enumerate() {
        if !p.starts_with('/') || p.contains(':') {
            return Err(SpecError::new(
                format!("spec.workload.writablePaths[{i}]"),
                format!("{p:?} is not an absolute path"),
            ));
        }
    }
    Ok(())
}

/// `true` for label keys only the controller may set.
pub fn is_reserved_label(key: &str) -> bool {
    if key == ROLE_LABEL {
        return false;
    }
    let prefix = key.split_once('/').map(|(p, _)| p);
    RESERVED_LABEL_KEYS.contains(&key)
        || prefix.is_some_and(|p| {
            p == RESERVED_LABEL_DOMAIN || p.ends_with(&format!(".{RESERVED_LABEL_DOMAIN}"))
        })
}

fn pod_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), SpecError> {
    for (k, v) in labels {
        if is_reserved_label(k) {
            return Err(SpecError::new(
                format!("{field}[{k}]"),
                "reserved for the controller (clawswarm.dev/* but clawswarm.dev/role, and app.kubernetes.io/{name,instance,component,part-of,managed-by})",
            ));
        }
        if !is_label_key(k) {
            return Err(SpecError::new(
                format!("{field}[{k}]"),
                "not a label key (optional DNS prefix and '/', then at most 63 of A-Z a-z 0-9 - _ .)",
            ));
        }
        if !is_label_value(v) {
            return Err(SpecError::new(
                format!("{field}[{k}]"),
                format!("{v:?} is not a label value (at most 63 of A-Z a-z 0-9 - _ .)"),
            ));
        }
    }
    Ok(())
}

fn resources(field: &str, r: &ResourceRequirements) -> Result<(), SpecError> {
    let parse = |kind: &str, m: &Option<BTreeMap<String, Quantity>>| {
        let mut out = BTreeMap::new();
        for (name, q) in m.iter().flatten() {
            let f = format!("{field}.{kind}.{name}");
            match parse_quantity(&q.0) {
                None => return Err(SpecError::new(f, format!("{:?} is not a quantity", q.0))),
                Some(v) if v < 0.0 => {
                    return Err(SpecError::new(f, format!("{:?} is negative", q.0)));
                }
                Some(v) => {
                    out.insert(name.clone(), v);
                }
            }
        }
        Ok(out)
    };
    let requests = parse("requests", &r.requests)?;
    let limits = parse("limits", &r.limits)?;
    for (name, limit) in &limits {
        if let Some(request) = requests.get(name)
            && request > limit
        {
            return Err(SpecError::new(
                format!("{field}.limits.{name}"),
                format!("limit is below the request ({name} limit < request)"),
            ));
        }
    }
    Ok(())
}

/// A Kubernetes quantity (`500m`, `1.5Gi`, `2e3`) as a number, or `None`
/// when it is not one. Precision is irrelevant here: only the sign and the
/// order of request and limit are checked.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '+' || c == '-'))))
        .map_or(s.len(), |(i, _)| i);
    let (num, suffix) = s.split_at(end);
    let digits = num.trim_start_matches(['+', '-']);
    if digits.is_empty() || digits == "." || digits.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().ok()?;
            10f64.powi(e)
        }
        _ => return None,
    };
    Some(value * factor)
}

/// A label value: empty, or at most 63 of `A-Z a-z 0-9 - _ .` starting and
/// ending alphanumeric.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn is_label_key(k: &str) -> bool {
    match k.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(k),
    }
}

/// Of the Agents in `agents`, the one that serves `owner`: among those not
/// being deleted and named as agent ids, the oldest (creation time, then
/// name: creation times are whole seconds, so two Agents made in the same
/// second are ordered by name). Routing and the reconciler's `DuplicateOwner`
/// check both ask here, so they never disagree.
pub fn primary_for_owner<'a, I>(agents: I, owner: &str) -> Option<&'a Agent>
where
    I: IntoIterator<Item = &'a Agent>,
{
    agents
        .into_iter()
        .filter(|a| {
            a.spec.owner == owner && a.metadata.deletion_timestamp.is_none() && agent(a).is_ok()
        })
        .min_by(|a, b| {
            a.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

//! The custom resources: `Agent` (one per person) and `AgentTemplate` (one
//! per role). The YAML in deploy/crds/ is generated from these types by the
//! `crdgen` binary; a test fails when it is out of date.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "clawswarm.dev";
pub const VERSION: &str = "v1alpha1";

/// What the person or operator wants: an enum, never a bool, so a third
/// intent can come later without a breaking change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    #[default]
    Running,
    Suspended,
}

/// What happens to the agent's volume when the Agent is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Retention {
    /// Keep the PersistentVolumeClaim (the default: a person's data is not
    /// destroyed by deleting an object).
    #[default]
    Retain,
    /// Delete the PersistentVolumeClaim with the Agent.
    Delete,
}

/// One person's agent.
// The lint mistakes the fields of separate printcolumn(...) groups for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "clawswarm.dev",
    version = "v1alpha1",
    kind = "Agent",
    namespaced,
    status = "AgentStatus",
    shortname = "ag",
    // The name is the agent id (SPIFFE id, label values, the claim's name).
    validation = Rule::new(super::validate::AGENT_NAME_RULE).message(super::validate::AGENT_NAME_MESSAGE),
    category = "clawswarm",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Owner", type_ = "string", json_path = ".spec.owner"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Template",
        type_ = "string",
        json_path = ".spec.template",
        priority = 1
    ),
    printcolumn(
        name = "Pod",
        type_ = "string",
        json_path = ".status.pod",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// The person the agent belongs to (a Slack user id or any stable person id).
    #[schemars(length(min = 1, max = 253))]
    pub owner: String,
    /// Name of the AgentTemplate (same namespace) the agent is built from.
    #[schemars(length(min = 1, max = 253))]
    pub template: String,
    /// Running or Suspended (pod stopped, volume kept).
    #[serde(default)]
    pub mode: Mode,
    /// Overrides the template's retention of the volume on deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// What the controller observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` summarises; reasons are listed in docs/conditions.md.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The agent's current pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The agent's volume claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim: Option<String>,
    /// Last turn delivered to the agent (idle suspension counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Time>,
    /// Tokens used over the agent's life: the metered total when the
    /// sidecar meters model calls (background work included), else what
    /// the agent's turns reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    /// What the sidecar's model proxy metered, per ledger (docs/metrics.md,
    /// "Token totals"). `usage` is `carried + lifetime` when this is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metered: Option<MeteredStatus>,
    /// The last notices delivered to the owner (oldest first), written
    /// before each is acknowledged, so a resent notice is not posted twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered_notices: Vec<String>,
    /// The volume retention in force (the Agent's, else its template's),
    /// recorded so deletion honours it after the template is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    Pending,
    Starting,
    Running,
    Suspended,
    Failed,
    Terminating,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

/// The sidecar-metered part of an agent's usage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeteredStatus {
    /// The ledger (on the agent's volume) `lifetime` comes from.
    pub ledger_id: String,
    /// The highest figure that ledger reported.
    pub lifetime: TokenUsage,
    /// What earlier ledgers of this agent counted.
    pub carried: TokenUsage,
    /// Company-data queries through the agent's data proxy, same ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_carried: Option<DataUsage>,
}

/// Company-data queries (docs/company-data.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataUsage {
    pub queries: u64,
    /// Refused by the proxy: writes, other indices, caps, bad input.
    pub refused: u64,
    pub documents: u64,
    pub bytes: u64,
}

impl From<DataUsage> for crate::runtime::DataTotals {
    fn from(d: DataUsage) -> Self {
        Self {
            queries: d.queries,
            refused: d.refused,
            documents: d.documents,
            bytes: d.bytes,
        }
    }
}

impl From<crate::runtime::DataTotals> for DataUsage {
    fn from(d: crate::runtime::DataTotals) -> Self {
        Self {
            queries: d.queries,
            refused: d.refused,
            documents: d.documents,
            bytes: d.bytes,
        }
    }
}

impl From<TokenUsage> for crate::runtime::TokenTotals {
    fn from(u: TokenUsage) -> Self {
        Self {
            input: u.input,
            output: u.output,
            cache_read: u.cache_read,
            cache_write: u.cache_write,
        }
    }
}

impl From<crate::runtime::TokenTotals> for TokenUsage {
    fn from(t: crate::runtime::TokenTotals) -> Self {
        Self {
            input: t.input,
            output: t.output,
            cache_read: t.cache_read,
            cache_write: t.cache_write,
        }
    }
}

impl From<&MeteredStatus> for crate::runtime::usage::MeteredTotals {
    fn from(m: &MeteredStatus) -> Self {
        Self {
            ledger_id: m.ledger_id.clone(),
            lifetime: m.lifetime.into(),
            carried: m.carried.into(),
            data: m.data.unwrap_or_default().into(),
            data_carried: m.data_carried.unwrap_or_default().into(),
        }
    }
}

impl From<&crate::runtime::usage::MeteredTotals> for MeteredStatus {
    fn from(m: &crate::runtime::usage::MeteredTotals) -> Self {
        let some = |d: crate::runtime::DataTotals| {
            (d != crate::runtime::DataTotals::default()).then(|| d.into())
        };
        Self {
            ledger_id: m.ledger_id.clone(),
            lifetime: m.lifetime.into(),
            carried: m.carried.into(),
            data: some(m.data),
            data_carried: some(m.data_carried),
        }
    }
}

/// A role's agent: image, base configuration, security baseline,
/// resources, storage, idle timeout.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "clawswarm.dev",
    version = "v1alpha1",
    kind = "AgentTemplate",
    namespaced,
    shortname = "agt",
    category = "clawswarm",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.workload.image"),
    printcolumn(name = "Idle", type_ = "string", json_path = ".spec.idleTimeout"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AgentTemplateSpec {
    /// Human description of the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub workload: WorkloadSpec,
    #[serde(default)]
    pub storage: StorageSpec,
    /// Suspend agents idle this long (`30m`, `8h`, `2d`); unset = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d)$"))]
    pub idle_timeout: Option<String>,
    /// Resources of the sidecar container (defaults are small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_resources: Option<ResourceRequirements>,
    /// What the agents of this role may read from the company's search
    /// cluster through their sidecar's read-only data proxy. Unset: no
    /// index is readable (the cluster URL and key still come from the
    /// shared Secret, so the tool explains that nothing is allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataAccessSpec>,
    /// Which skills from the company skills library this role's agents may
    /// install (docs/skills.md). Unset: every skill in the library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skills: Option<SkillsSpec>,
}

/// The role's share of the company skills library.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkillsSpec {
    /// Skill names, or prefixes ending in `*` (`oncall-*`); `*` is all.
    #[serde(default)]
    pub library: Vec<String>,
}

/// The role's read-only access to company data (docs/company-data.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataAccessSpec {
    /// Readable indices, aliases and data streams: names and `*` patterns
    /// (`pipelines`, `logs-*`, `eu:pipelines` for a remote cluster). Checked
    /// after the engine expands each request's expression.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub indices: Vec<String>,
    /// Most results one request may ask for (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_hits: Option<u32>,
    /// Longest a query may take, in seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: Option<u32>,
    /// This role's own cluster credential (a key of a Secret in the agents'
    /// namespace), instead of the shared Secret's `CLAWSWARM_DATA_API_KEY`:
    /// e.g. an API key whose own role limits it further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_secret: Option<SecretKeyRef>,
}

/// A key of a Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    #[schemars(length(min = 1))]
    pub image: String,
    /// Sidecar adapter for this workload: `openclaw` or `responses`.
    #[serde(default = "default_adapter")]
    pub adapter: String,
    /// The port the workload listens on (loopback inside the pod).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// The agent's model (`provider/model` for OpenClaw): the sidecar asks
    /// the workload for it, and `init` configures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Environment variable that gives the workload its per-agent bearer
    /// token (a Secret the controller makes for each agent); the sidecar
    /// presents the same token (`CLAWSWARM_WORKLOAD_TOKEN`). Unset: the
    /// workload is not given the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Extra environment (values or references to Secrets/ConfigMaps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// ConfigMap with the role's base workload configuration, mounted
    /// read-only at /etc/clawswarm/workload in the workload container and
    /// in `init`, which seeds the agent's own config from it on first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// Writable paths the workload needs besides /data (its part of the
    /// agent's volume) and /tmp (the root filesystem is read-only); each
    /// gets an emptyDir.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writable_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Labels added to the agent pods (e.g. for NetworkPolicies per role).
    /// Keys the controller sets or selects by (`clawswarm.dev/*` but
    /// `clawswarm.dev/role`, `app.kubernetes.io/{name,instance,component,part-of,managed-by}`)
    /// are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 64,
        "x-kubernetes-validations" = [{
            "rule": super::validate::RESERVED_LABELS_RULE,
            "message": super::validate::RESERVED_LABELS_MESSAGE,
            "reason": "FieldValueForbidden",
        }]
    ))]
    pub pod_labels: BTreeMap<String, String>,
}

fn default_adapter() -> String {
    "openclaw".into()
}

fn default_port() -> u16 {
    18789
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each agent's volume, e.g. `5Gi`.
    #[serde(default = "default_size")]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    #[serde(default)]
    pub retention: Retention,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_size(),
            storage_class_name: None,
            retention: Retention::Retain,
        }
    }
}

fn default_size() -> String {
    "5Gi".into()
}

/// The generated CRD manifests: (file name under deploy/crds/, YAML).
pub fn render() -> Result<Vec<(&'static str, String)>, String> {
    use kube::CustomResourceExt as _;
    let header = "# Generated by `cargo run -p clawswarm-controller --bin crdgen`; do not edit.\n";
    let yaml = |crd| {
        serde_saphyr::to_string(&crd)
            .map(|y| format!("{header}{y}"))
            .map_err(|e| e.to_string())
    };
    Ok(vec![
        ("agents.clawswarm.dev.yaml", yaml(Agent::crd())?),
        (
            "agenttemplates.clawswarm.dev.yaml",
            yaml(AgentTemplate::crd())?,
        ),
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kube::CustomResourceExt as _;

    #[test]
    fn deploy_crds_are_up_to_date() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
        for (file, want) in render().unwrap() {
            let have = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(
                have == want,
                "deploy/crds/{file} is out of date: run `cargo run -p clawswarm-controller --bin crdgen`"
            );
        }
    }

    use super::*;

    #[test]
    fn agent_crd_has_printer_columns_short_names_and_status() {
        let crd = Agent::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("agents.clawswarm.dev"));
        let names = &crd.spec.names;
        assert!(
            names
                .short_names
                .as_ref()
                .unwrap()
                .contains(&"ag".to_string())
        );
        let v = &crd.spec.versions[0];
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        for want in ["Ready", "Reason", "Owner", "Age"] {
            assert!(cols.contains(&want), "{cols:?}");
        }
        assert!(v.subresources.as_ref().unwrap().status.is_some());
    }

    #[test]
    fn mode_defaults_to_running_and_rejects_a_bool() {
        let spec: AgentSpec =
            serde_json::from_value(serde_json::json!({"owner": "U1", "template": "engineer"}))
                .unwrap();
        assert_eq!(spec.mode, Mode::Running);
        let bad = serde_json::from_value::<AgentSpec>(
            serde_json::json!({"owner": "U1", "template": "e", "mode": true}),
        );
        assert!(bad.is_err());
    }
}

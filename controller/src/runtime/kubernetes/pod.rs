//! The objects an Agent owns, built as pure functions of the Agent, its
//! template and the controller's settings (unit-tested without a cluster).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod,
    PodSecurityContext, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, Secret, SecretEnvSource, SecretKeySelector, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource as _, ResourceExt as _};

use super::crd::{Agent, AgentTemplateSpec};
use super::label_value::label_value;

/// Every agent pod and claim carries these; the value is the Agent's name.
pub const LABEL_AGENT: &str = "clawswarm.dev/agent";
/// The owner (Slack user id) as a label value; the PodMonitor turns it into `owner`.
pub const LABEL_OWNER: &str = "clawswarm.dev/owner";
/// Selected by deploy/monitoring/podmonitor.yaml.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const NAME_AGENT: &str = "clawswarm-agent";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const COMPONENT_AGENT: &str = "agent";

/// The workload's part of the agent's volume (subPath [`WORKLOAD_SUBPATH`]).
pub const DATA_MOUNT: &str = "/data";
/// The sidecar's part (subPath [`SIDECAR_SUBPATH`]): usage ledger, notice
/// outbox, tokens. Never mounted into the workload container, whose agent
/// runs tools and must not reach them.
pub const SIDECAR_DATA_MOUNT: &str = "/var/lib/clawswarm";
pub const WORKLOAD_SUBPATH: &str = "workload";
pub const SIDECAR_SUBPATH: &str = "sidecar";
/// The per-agent Secret holding the workload's bearer token under this key.
pub const WORKLOAD_TOKEN_KEY: &str = "token";
pub const TOKEN_DIR: &str = "/var/run/secrets/clawswarm/identity";
pub const TOKEN_FILE: &str = "/var/run/secrets/clawswarm/identity/token";
pub const TRUST_DIR: &str = "/etc/clawswarm/trust";
pub const TRUST_FILE: &str = "/etc/clawswarm/trust/ca.pem";
pub const TRUST_KEY: &str = "ca.pem";
pub const WORKLOAD_CONFIG_DIR: &str = "/etc/clawswarm/workload";
/// Library skills (docs/skills.md) have a part of the volume of their own:
/// the sidecar writes it, the workload reads it, read-only. Neither sees
/// the other's part through it.
pub const SKILLS_SUBPATH: &str = "skills";
pub const SIDECAR_SKILLS_DIR: &str = "/var/lib/clawswarm-skills";
pub const WORKLOAD_SKILLS_DIR: &str = "/opt/clawswarm/skills";
/// The workload's part of the volume as the sidecar reads it (read-only),
/// to send a person's own skill to the library when they propose it.
pub const SIDECAR_WORKLOAD_VIEW: &str = "/var/lib/clawswarm-workload";
/// The sidecar's plain HTTP port (/metrics, /healthz, /readyz).
pub const SIDECAR_HTTP_PORT: u16 = 9464;
/// Its name, which deploy/monitoring/podmonitor.yaml scrapes.
pub const SIDECAR_HTTP_PORT_NAME: &str = "metrics";
/// Digest of the desired pod (see [`spec_hash`]).
pub const SPEC_HASH_ANNOTATION: &str = "clawswarm.dev/spec-hash";
/// Non-root uid/gid every container runs as (distroless "nonroot").
pub const RUN_AS: i64 = 65532;

/// What the controller's configuration contributes to every agent pod.
#[derive(Clone, Debug)]
pub struct PodSettings {
    pub sidecar_image: String,
    pub image_pull_policy: Option<String>,
    /// ServiceAccount of agent pods (no API permissions, no automount).
    pub service_account: String,
    /// AgentLink endpoint as sidecars reach it (the mesh Service).
    pub controller_url: String,
    pub identity_url: String,
    /// ConfigMap holding the mesh trust bundle under `ca.pem`.
    pub trust_bundle_config_map: String,
    pub trust_domain: String,
    pub controller_namespace: String,
    /// Audience of the projected token; TokenReview checks it.
    pub token_audience: String,
    pub token_expiration_seconds: i64,
    /// Secret whose keys become the sidecar's environment (model keys).
    pub shared_secret: Option<String>,
}

pub fn volume_claim_name(agent: &str) -> String {
    format!("{agent}-data")
}

/// The Secret with the agent's workload bearer token (see [`build_workload_secret`]).
pub fn workload_secret_name(agent: &str) -> String {
    format!("{agent}-workload")
}

/// A fresh per-agent bearer token for the sidecar → workload hop. Owned by
/// the Agent (garbage-collected with it); created once, never rewritten, so
/// a running pod's token stays valid.
pub fn build_workload_secret(agent: &Agent) -> Secret {
    let name = agent.name_any();
    let token: [u8; 32] = rand::random();
    Secret {
        metadata: ObjectMeta {
            name: Some(workload_secret_name(&name)),
            namespace: agent.namespace(),
            labels: Some(agent_labels(agent)),
            owner_references: owner_ref(agent).map(|o| vec![o]),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            WORKLOAD_TOKEN_KEY.to_string(),
            hex::encode(token),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

fn workload_token_env(agent: &str, env_name: &str) -> EnvVar {
    EnvVar {
        name: env_name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: workload_secret_name(agent),
                key: WORKLOAD_TOKEN_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

pub fn agent_labels(agent: &Agent) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_AGENT.to_string(), agent.name_any()),
        (LABEL_OWNER.to_string(), label_value(&agent.spec.owner)),
        (LABEL_NAME.to_string(), NAME_AGENT.to_string()),
        (LABEL_COMPONENT.to_string(), COMPONENT_AGENT.to_string()),
        (LABEL_PART_OF.to_string(), "clawswarm".to_string()),
    ])
}

/// Controller reference without `blockOwnerDeletion`: setting it would need
/// `update` on `agents/finalizers` where OwnerReferencesPermissionEnforcement
/// runs, and the finalizer deletes the pods itself (docs/kubernetes.md#rbac).
fn owner_ref(agent: &Agent) -> Option<OwnerReference> {
    agent.controller_owner_ref(&()).map(|o| OwnerReference {
        block_owner_deletion: None,
        ..o
    })
}

/// The agent's volume. Deliberately not owned by the Agent: garbage
/// collection would delete it with the Agent whatever the retention policy
/// says; the finalizer decides instead.
pub fn build_volume_claim(agent: &Agent, tpl: &AgentTemplateSpec) -> PersistentVolumeClaim {
    let name = agent.name_any();
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(volume_claim_name(&name)),
            namespace: agent.namespace(),
            labels: Some(agent_labels(agent)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: tpl.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(tpl.storage.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn hardened() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// One part of the agent's volume.
fn data_part(sub_path: &str, path: &str) -> VolumeMount {
    VolumeMount {
        sub_path: Some(sub_path.into()),
        ..mount("data", path, false)
    }
}

fn empty_dir(name: &str, limit: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(limit.into())),
            medium: None,
        }),
        ..Default::default()
    }
}

fn small_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("20m".into())),
            ("memory".into(), Quantity("32Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity("128Mi".into()),
        )])),
        ..Default::default()
    }
}

/// OpenClaw's gateway alone used 0.8–1.4 GB RSS (measured): the default
/// leaves room above that; templates override per role.
fn workload_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("250m".into())),
            ("memory".into(), Quantity("1536Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), Quantity("2Gi".into()))])),
        ..Default::default()
    }
}

/// The agent's pod: workload + sidecar, an init step, the projected token
/// and trust bundle, hardened. Named `<agent>-<suffix>` by the API server
/// (generateName) so a replacement never waits for the old name to free up.
pub fn build_pod(agent: &Agent, tpl: &AgentTemplateSpec, s: &PodSettings) -> Pod {
    let name = agent.name_any();
    let ns = agent.namespace().unwrap_or_default();
    let w = &tpl.workload;
    let mut labels = w.pod_labels.clone();
    labels.extend(agent_labels(agent));

    let mut volumes = vec![
        Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: volume_claim_name(&name),
                read_only: None,
            }),
            ..Default::default()
        },
        empty_dir("tmp", "1Gi"),
        empty_dir("sidecar-run", "16Mi"),
        Volume {
            name: "identity".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o440),
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(s.token_audience.clone()),
                        expiration_seconds: Some(s.token_expiration_seconds),
                        path: "token".into(),
                    }),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        },
        Volume {
            name: "trust".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o444),
                sources: Some(vec![VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: s.trust_bundle_config_map.clone(),
                        items: None,
                        optional: Some(false),
                    }),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        },
    ];
    let mut workload_mounts = vec![
        data_part(WORKLOAD_SUBPATH, DATA_MOUNT),
        mount("tmp", "/tmp", false),
        VolumeMount {
            read_only: Some(true),
            ..data_part(SKILLS_SUBPATH, WORKLOAD_SKILLS_DIR)
        },
    ];
    let mut init_mounts = vec![
        data_part(WORKLOAD_SUBPATH, DATA_MOUNT),
        data_part(SIDECAR_SUBPATH, SIDECAR_DATA_MOUNT),
    ];
    if let Some(cm) = &w.config_map {
        volumes.push(Volume {
            name: "workload-config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: cm.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
        workload_mounts.push(mount("workload-config", WORKLOAD_CONFIG_DIR, true));
        init_mounts.push(mount("workload-config", WORKLOAD_CONFIG_DIR, true));
    }
    for (i, path) in w.writable_paths.iter().enumerate() {
        let vol = format!("writable-{i}");
        volumes.push(empty_dir(&vol, "1Gi"));
        workload_mounts.push(mount(&vol, path, false));
    }

    let mut workload_env = vec![
        env("HOME", format!("{DATA_MOUNT}/home")),
        env("TMPDIR", "/tmp"),
        env("CLAWSWARM_AGENT", format!("{ns}/{name}")),
        env("CLAWSWARM_WORKLOAD_PORT", w.port.to_string()),
    ];
    if let Some(token_env) = &w.token_env {
        workload_env.push(workload_token_env(&name, token_env));
    }
    workload_env.extend(w.env.iter().cloned());
    let workload = Container {
        name: "workload".into(),
        image: Some(w.image.clone()),
        image_pull_policy: s.image_pull_policy.clone(),
        command: w.command.clone(),
        args: w.args.clone(),
        env: Some(workload_env),
        volume_mounts: Some(workload_mounts),
        resources: Some(w.resources.clone().unwrap_or_else(workload_resources)),
        security_context: Some(hardened()),
        ..Default::default()
    };

    let mut sidecar_env = vec![
        env("CLAWSWARM_AGENT", format!("{ns}/{name}")),
        env("CLAWSWARM_CONTROLLER_URL", s.controller_url.clone()),
        env("CLAWSWARM_IDENTITY_URL", s.identity_url.clone()),
        env("CLAWSWARM_TRUST_BUNDLE", TRUST_FILE),
        env("CLAWSWARM_TRUST_DOMAIN", s.trust_domain.clone()),
        env(
            "CLAWSWARM_CONTROLLER_NAMESPACE",
            s.controller_namespace.clone(),
        ),
        env("CLAWSWARM_TOKEN_FILE", TOKEN_FILE),
        env("CLAWSWARM_DATA_DIR", SIDECAR_DATA_MOUNT),
        env("CLAWSWARM_RUN_DIR", "/run/clawswarm"),
        env(
            "CLAWSWARM_HTTP_ADDR",
            format!("0.0.0.0:{SIDECAR_HTTP_PORT}"),
        ),
        env("CLAWSWARM_WORKLOAD", w.adapter.clone()),
        env(
            "CLAWSWARM_WORKLOAD_URL",
            format!("http://127.0.0.1:{}", w.port),
        ),
        workload_token_env(&name, "CLAWSWARM_WORKLOAD_TOKEN"),
        env("CLAWSWARM_SKILLS_DIR", SIDECAR_SKILLS_DIR),
        env(
            "CLAWSWARM_WORKLOAD_ROOT_MAP",
            format!("{DATA_MOUNT}={SIDECAR_WORKLOAD_VIEW}"),
        ),
        EnvVar {
            name: "CLAWSWARM_POD_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
        },
    ];
    if let Some(model) = &w.model {
        sidecar_env.push(env("CLAWSWARM_WORKLOAD_MODEL", model.clone()));
    }
    // Where OpenClaw keeps its config and state (the person's own skills
    // are found from there), when the template says.
    for (theirs, ours) in [
        ("OPENCLAW_CONFIG_PATH", "CLAWSWARM_OPENCLAW_CONFIG"),
        ("OPENCLAW_STATE_DIR", "CLAWSWARM_OPENCLAW_STATE_DIR"),
    ] {
        if let Some(value) = w
            .env
            .iter()
            .find(|e| e.name == theirs)
            .and_then(|e| e.value.clone())
        {
            sidecar_env.push(env(ours, value));
        }
    }
    sidecar_env.extend(data_access_env(tpl.data.as_ref()));
    let http_probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(SIDECAR_HTTP_PORT)),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let sidecar = Container {
        name: "sidecar".into(),
        image: Some(s.sidecar_image.clone()),
        image_pull_policy: s.image_pull_policy.clone(),
        args: Some(vec!["run".into()]),
        env: Some(sidecar_env),
        env_from: s.shared_secret.as_ref().map(|secret| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret.clone(),
                    optional: Some(true),
                }),
                ..Default::default()
            }]
        }),
        ports: Some(vec![ContainerPort {
            name: Some(SIDECAR_HTTP_PORT_NAME.into()),
            container_port: i32::from(SIDECAR_HTTP_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        volume_mounts: Some(vec![
            data_part(SIDECAR_SUBPATH, SIDECAR_DATA_MOUNT),
            data_part(SKILLS_SUBPATH, SIDECAR_SKILLS_DIR),
            VolumeMount {
                read_only: Some(true),
                ..data_part(WORKLOAD_SUBPATH, SIDECAR_WORKLOAD_VIEW)
            },
            mount("sidecar-run", "/run/clawswarm", false),
            mount("identity", TOKEN_DIR, true),
            mount("trust", TRUST_DIR, true),
        ]),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        resources: Some(
            tpl.sidecar_resources
                .clone()
                .unwrap_or_else(small_resources),
        ),
        security_context: Some(hardened()),
        ..Default::default()
    };
    // `clawswarm-sidecar init` prepares the workload's part of the volume
    // from the template (for OpenClaw: seed the config, enforce the
    // baseline) and the sidecar's part; it alone sees both.
    let mut init_env = vec![
        env("CLAWSWARM_AGENT", format!("{ns}/{name}")),
        env("CLAWSWARM_DATA_DIR", SIDECAR_DATA_MOUNT),
        env("CLAWSWARM_WORKLOAD", w.adapter.clone()),
        env("CLAWSWARM_WORKLOAD_PORT", w.port.to_string()),
        env("CLAWSWARM_WORKLOAD_SKILLS_DIR", WORKLOAD_SKILLS_DIR),
    ];
    if let Some(model) = &w.model {
        init_env.push(env("CLAWSWARM_MODEL", model.clone()));
    }
    let init = Container {
        name: "init".into(),
        image: Some(s.sidecar_image.clone()),
        image_pull_policy: s.image_pull_policy.clone(),
        args: Some(vec!["init".into()]),
        env: Some(init_env),
        volume_mounts: Some(init_mounts),
        resources: Some(small_resources()),
        security_context: Some(hardened()),
        ..Default::default()
    };

    let mut pod = Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: Some(ns),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([
                ("prometheus.io/scrape".into(), "true".into()),
                ("prometheus.io/port".into(), SIDECAR_HTTP_PORT.to_string()),
            ])),
            owner_references: owner_ref(agent).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(s.service_account.clone()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            restart_policy: Some("Always".into()),
            termination_grace_period_seconds: Some(30),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                fs_group_change_policy: Some("OnRootMismatch".into()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            init_containers: Some(vec![init]),
            containers: vec![workload, sidecar],
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    };
    let hash = spec_hash(&pod);
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.insert(SPEC_HASH_ANNOTATION.into(), hash);
    }
    pod
}

/// The data proxy's rules for this role. The cluster URL and shared key
/// come from the shared Secret (envFrom); a role's own credential, set
/// here, wins over it (explicit env overrides envFrom).
fn data_access_env(data: Option<&super::crd::DataAccessSpec>) -> Vec<EnvVar> {
    let Some(d) = data else {
        return Vec::new();
    };
    let mut out = vec![env("CLAWSWARM_DATA_INDICES", d.indices.join(","))];
    if let Some(n) = d.max_hits {
        out.push(env("CLAWSWARM_DATA_MAX_HITS", n.to_string()));
    }
    if let Some(n) = d.timeout_seconds {
        out.push(env("CLAWSWARM_DATA_TIMEOUT_SECS", n.to_string()));
    }
    if let Some(secret) = &d.credential_secret {
        out.push(EnvVar {
            name: "CLAWSWARM_DATA_API_KEY".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        });
    }
    out
}

/// A digest of what the pod should be (spec, labels, owner): a pod whose
/// annotation differs was built from an older template or setting and is
/// replaced, which is how template changes and upgrades roll out.
pub fn spec_hash(pod: &Pod) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&pod.spec).unwrap_or_default());
    h.update(serde_json::to_vec(&pod.metadata.labels).unwrap_or_default());
    hex::encode(&h.finalize()[..12])
}

/// The desired-spec digest a pod was built with.
pub fn pod_spec_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SPEC_HASH_ANNOTATION))
        .map(String::as_str)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests;

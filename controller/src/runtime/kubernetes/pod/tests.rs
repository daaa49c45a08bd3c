use super::*;
use crate::runtime::kubernetes::crd::{AgentSpec, Mode, StorageSpec, WorkloadSpec};

pub(crate) fn agent() -> Agent {
    let mut a = Agent::new(
        "alice",
        AgentSpec {
            owner: "U1".into(),
            template: "engineer".into(),
            mode: Mode::Running,
            retention: None,
        },
    );
    a.metadata.namespace = Some("team".into());
    a.metadata.uid = Some("uid-1".into());
    a
}

pub(crate) fn template() -> AgentTemplateSpec {
    AgentTemplateSpec {
        description: None,
        workload: WorkloadSpec {
            image: "example.invalid/openclaw:1".into(),
            adapter: "openclaw".into(),
            port: 18789,
            writable_paths: vec!["/home/node/.cache".into()],
            ..Default::default()
        },
        storage: StorageSpec::default(),
        idle_timeout: Some("2h".into()),
        sidecar_resources: None,
        data: None,
        skills: None,
    }
}

pub(crate) fn settings() -> PodSettings {
    PodSettings {
        sidecar_image: "example.invalid/sidecar:1".into(),
        image_pull_policy: None,
        service_account: "clawswarm-agent".into(),
        controller_url: "https://ctl:7443".into(),
        identity_url: "https://ctl:7444".into(),
        trust_bundle_config_map: "clawswarm-trust-bundle".into(),
        trust_domain: "clawswarm.local".into(),
        controller_namespace: "team".into(),
        token_audience: "clawswarm-identity".into(),
        token_expiration_seconds: 3600,
        shared_secret: Some("clawswarm-shared-secrets".into()),
    }
}

#[test]
fn pod_is_owned_by_the_agent_and_labelled_for_it() {
    let pod = build_pod(&agent(), &template(), &settings());
    let owners = pod.metadata.owner_references.unwrap();
    assert_eq!(owners[0].kind, "Agent");
    assert_eq!(owners[0].controller, Some(true));
    // Would need update on agents/finalizers (not granted, docs/kubernetes.md#rbac).
    assert_eq!(owners[0].block_owner_deletion, None);
    assert_eq!(pod.metadata.labels.unwrap()[LABEL_AGENT], "alice");
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("alice-"));
}

#[test]
fn every_container_is_hardened() {
    let pod = build_pod(&agent(), &template(), &settings());
    let spec = pod.spec.unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    let all = spec
        .init_containers
        .unwrap()
        .into_iter()
        .chain(spec.containers);
    for c in all {
        let sc = c.security_context.unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(
            sc.capabilities.unwrap().drop.unwrap(),
            vec!["ALL".to_string()]
        );
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert!(c.resources.is_some(), "{}", c.name);
    }
}

#[test]
fn token_is_projected_with_the_identity_audience() {
    let pod = build_pod(&agent(), &template(), &settings());
    let vols = pod.spec.unwrap().volumes.unwrap();
    let identity = vols.iter().find(|v| v.name == "identity").unwrap();
    let src = &identity
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap()[0];
    let token = src.service_account_token.as_ref().unwrap();
    assert_eq!(token.audience.as_deref(), Some("clawswarm-identity"));
}

#[test]
fn workload_gets_writable_mounts_for_its_paths_only() {
    let pod = build_pod(&agent(), &template(), &settings());
    let spec = pod.spec.unwrap();
    let workload = spec
        .containers
        .iter()
        .find(|c| c.name == "workload")
        .unwrap();
    let paths: Vec<_> = workload
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(
        paths,
        ["/data", "/tmp", WORKLOAD_SKILLS_DIR, "/home/node/.cache"]
    );
    // The workload never sees the identity token.
    assert!(!paths.contains(&TOKEN_DIR));
}

#[test]
fn claim_is_not_owned_so_deletion_follows_the_retention_policy() {
    let pvc = build_volume_claim(&agent(), &template());
    assert!(pvc.metadata.owner_references.is_none());
    assert_eq!(pvc.metadata.name.as_deref(), Some("alice-data"));
}

#[test]
fn spec_hash_changes_with_the_template_and_is_stable_otherwise() {
    let a = build_pod(&agent(), &template(), &settings());
    let b = build_pod(&agent(), &template(), &settings());
    assert_eq!(pod_spec_hash(&a), pod_spec_hash(&b));
    assert!(pod_spec_hash(&a).is_some());
    let mut changed = template();
    changed.workload.image = "example.invalid/openclaw:2".into();
    let c = build_pod(&agent(), &changed, &settings());
    assert_ne!(pod_spec_hash(&a), pod_spec_hash(&c));
}

fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .unwrap()
}

fn data_mounts(c: &Container) -> Vec<(String, String)> {
    c.volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.name == "data")
        .map(|m| (m.sub_path.clone().unwrap_or_default(), m.mount_path.clone()))
        .collect()
}

#[test]
fn the_workload_mounts_its_own_part_of_the_volume_and_never_the_sidecars() {
    let pod = build_pod(&agent(), &template(), &settings());
    let part = |sub: &str, at: &str| (sub.to_string(), at.to_string());
    assert_eq!(
        data_mounts(container(&pod, "workload")),
        [
            part(WORKLOAD_SUBPATH, DATA_MOUNT),
            part(SKILLS_SUBPATH, WORKLOAD_SKILLS_DIR)
        ]
    );
    // The sidecar reads the workload's part (a person's own skill, to
    // propose it) but the workload never reads the sidecar's.
    assert_eq!(
        data_mounts(container(&pod, "sidecar")),
        [
            part(SIDECAR_SUBPATH, SIDECAR_DATA_MOUNT),
            part(SKILLS_SUBPATH, SIDECAR_SKILLS_DIR),
            part(WORKLOAD_SUBPATH, SIDECAR_WORKLOAD_VIEW)
        ]
    );
    let read_only = |c: &Container, at: &str| {
        c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == at && m.read_only == Some(true))
    };
    assert!(read_only(container(&pod, "workload"), WORKLOAD_SKILLS_DIR));
    assert!(read_only(container(&pod, "sidecar"), SIDECAR_WORKLOAD_VIEW));
    assert!(!read_only(container(&pod, "sidecar"), SIDECAR_SKILLS_DIR));
    // init prepares both parts, from the template's config.
    let mut mounts = template();
    mounts.workload.config_map = Some("base".into());
    let pod = build_pod(&agent(), &mounts, &settings());
    let init = container(&pod, "init");
    assert_eq!(data_mounts(init).len(), 2);
    assert!(
        init.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == WORKLOAD_CONFIG_DIR && m.read_only == Some(true))
    );
    let env: Vec<&str> = init.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert!(env.contains(&"CLAWSWARM_DATA_DIR") && env.contains(&"CLAWSWARM_WORKLOAD"));
}

#[test]
fn workload_and_sidecar_share_the_agents_own_token_secret() {
    let mut tpl = template();
    tpl.workload.token_env = Some("OPENCLAW_GATEWAY_TOKEN".into());
    let pod = build_pod(&agent(), &tpl, &settings());
    let secret_of = |c: &Container, var: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == var)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|s| (s.name.clone(), s.key.clone()))
    };
    let want = Some((
        workload_secret_name("alice"),
        WORKLOAD_TOKEN_KEY.to_string(),
    ));
    assert_eq!(
        secret_of(container(&pod, "workload"), "OPENCLAW_GATEWAY_TOKEN"),
        want
    );
    assert_eq!(
        secret_of(container(&pod, "sidecar"), "CLAWSWARM_WORKLOAD_TOKEN"),
        want
    );
    let secret = build_workload_secret(&agent());
    assert_eq!(secret.metadata.owner_references.unwrap()[0].kind, "Agent");
    let token = &secret.string_data.unwrap()[WORKLOAD_TOKEN_KEY];
    assert_eq!(token.len(), 64);
    assert_ne!(
        token,
        &build_workload_secret(&agent()).string_data.unwrap()[WORKLOAD_TOKEN_KEY],
        "fresh per agent"
    );
}

#[test]
fn the_roles_data_rules_reach_the_sidecar_only_and_its_own_key_wins() {
    let mut tpl = template();
    tpl.data = Some(crate::runtime::kubernetes::crd::DataAccessSpec {
        indices: vec!["pipelines".into(), "logs-*".into()],
        max_hits: Some(200),
        timeout_seconds: None,
        credential_secret: Some(crate::runtime::kubernetes::crd::SecretKeyRef {
            name: "analyst-search-key".into(),
            key: "api-key".into(),
        }),
    });
    let pod = build_pod(&agent(), &tpl, &settings());
    let spec = pod.spec.unwrap();
    let env_of = |c: &Container| c.env.clone().unwrap_or_default();
    let sidecar = spec
        .containers
        .iter()
        .find(|c| c.name == "sidecar")
        .unwrap();
    let env = env_of(sidecar);
    let value = |n: &str| {
        env.iter()
            .find(|e| e.name == n)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        value("CLAWSWARM_DATA_INDICES").as_deref(),
        Some("pipelines,logs-*")
    );
    assert_eq!(value("CLAWSWARM_DATA_MAX_HITS").as_deref(), Some("200"));
    let key = env
        .iter()
        .find(|e| e.name == "CLAWSWARM_DATA_API_KEY")
        .unwrap();
    let r = key
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (r.name.as_str(), r.key.as_str()),
        ("analyst-search-key", "api-key")
    );
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        if c.name != "sidecar" {
            assert!(
                !env_of(c)
                    .iter()
                    .any(|e| e.name.starts_with("CLAWSWARM_DATA_API_KEY")),
                "{} must not see the cluster key",
                c.name
            );
        }
    }
}

#[test]
fn library_skills_have_their_own_part_and_every_container_is_told_where() {
    let mut tpl = template();
    tpl.workload.env = vec![EnvVar {
        name: "OPENCLAW_STATE_DIR".into(),
        value: Some("/data/openclaw".into()),
        value_from: None,
    }];
    let pod = build_pod(&agent(), &tpl, &settings());
    let value = |c: &Container, n: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == n)
            .and_then(|e| e.value.clone())
    };
    let sidecar = container(&pod, "sidecar");
    assert_eq!(
        value(sidecar, "CLAWSWARM_SKILLS_DIR").as_deref(),
        Some(SIDECAR_SKILLS_DIR)
    );
    assert_eq!(
        value(sidecar, "CLAWSWARM_WORKLOAD_ROOT_MAP"),
        Some(format!("{DATA_MOUNT}={SIDECAR_WORKLOAD_VIEW}"))
    );
    assert_eq!(
        value(sidecar, "CLAWSWARM_OPENCLAW_STATE_DIR").as_deref(),
        Some("/data/openclaw"),
        "where the template's OpenClaw keeps its state"
    );
    // init writes the workload's view into OpenClaw's config.
    assert_eq!(
        value(container(&pod, "init"), "CLAWSWARM_WORKLOAD_SKILLS_DIR").as_deref(),
        Some(WORKLOAD_SKILLS_DIR)
    );
}

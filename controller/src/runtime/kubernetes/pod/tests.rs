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
    assert_eq!(paths, ["/data", "/tmp", "/home/node/.cache"]);
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

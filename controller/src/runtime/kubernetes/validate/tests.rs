use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::*;
use crate::runtime::kubernetes::crd::{AgentSpec, Mode, StorageSpec, WorkloadSpec};
use crate::runtime::kubernetes::pod;

fn named(name: &str, owner: &str, age_secs: i64) -> Agent {
    let mut a = Agent::new(
        name,
        AgentSpec {
            owner: owner.into(),
            template: "engineer".into(),
            mode: Mode::Running,
            retention: None,
        },
    );
    a.metadata.namespace = Some("team".into());
    a.metadata.creation_timestamp =
        Some(Time(Timestamp::now() - SignedDuration::from_secs(age_secs)));
    a
}

fn q(s: &str) -> Quantity {
    Quantity(s.into())
}

#[test]
fn agent_names_that_are_not_agent_ids_are_refused() {
    assert!(agent(&named("alice", "U1", 0)).is_ok());
    for bad in ["alice.smith", "Alice", &"a".repeat(64), "-alice", ""] {
        let err = agent(&named(bad, "U1", 0)).unwrap_err();
        assert_eq!(err.field, "metadata.name", "{bad:?}");
    }
}

#[test]
fn a_plain_template_is_valid() {
    template(&template_spec()).unwrap();
}

#[test]
fn empty_image_is_refused() {
    let mut t = template_spec();
    t.workload.image = String::new();
    assert_eq!(template(&t).unwrap_err().field, "spec.workload.image");
    t.workload.image = " img:1".into();
    assert_eq!(template(&t).unwrap_err().field, "spec.workload.image");
}

#[test]
fn negative_and_unparseable_resources_are_refused_naming_the_field() {
    let mut t = template_spec();
    t.workload.resources = Some(ResourceRequirements {
        requests: Some(BTreeMap::from([("memory".into(), q("-1Gi"))])),
        ..Default::default()
    });
    let err = template(&t).unwrap_err();
    assert_eq!(err.field, "spec.workload.resources.requests.memory");
    assert!(err.why.contains("negative"), "{err}");

    t.workload.resources = None;
    t.sidecar_resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([("cpu".into(), q("lots"))])),
        ..Default::default()
    });
    let err = template(&t).unwrap_err();
    assert_eq!(err.field, "spec.sidecarResources.limits.cpu");
}

#[test]
fn limits_below_requests_are_refused() {
    let mut t = template_spec();
    t.workload.resources = Some(ResourceRequirements {
        requests: Some(BTreeMap::from([("memory".into(), q("2Gi"))])),
        limits: Some(BTreeMap::from([("memory".into(), q("1024Mi"))])),
        ..Default::default()
    });
    let err = template(&t).unwrap_err();
    assert_eq!(err.field, "spec.workload.resources.limits.memory");
    // Equal is fine, and units are compared, not strings.
    t.workload.resources = Some(ResourceRequirements {
        requests: Some(BTreeMap::from([("memory".into(), q("1Gi"))])),
        limits: Some(BTreeMap::from([("memory".into(), q("1024Mi"))])),
        ..Default::default()
    });
    template(&t).unwrap();
}

#[test]
fn quantities_parse_like_kubernetes() {
    assert_eq!(parse_quantity("500m"), Some(0.5));
    assert_eq!(parse_quantity("1Ki"), Some(1024.0));
    assert_eq!(parse_quantity("2e3"), Some(2000.0));
    assert_eq!(parse_quantity("1.5"), Some(1.5));
    assert_eq!(parse_quantity("-1"), Some(-1.0));
    for bad in ["", "Gi", "1..2", "1.2.3", "1GB", "lots", "-"] {
        assert_eq!(parse_quantity(bad), None, "{bad:?}");
    }
}

#[test]
fn reserved_and_malformed_pod_labels_are_refused() {
    for key in [
        "clawswarm.dev/leader",
        "clawswarm.dev/agent",
        "x.clawswarm.dev/anything",
        "app.kubernetes.io/name",
        "app.kubernetes.io/component",
        "app.kubernetes.io/part-of",
    ] {
        let mut t = template_spec();
        t.workload
            .pod_labels
            .insert(key.into(), "clawswarm-controller".into());
        let err = template(&t).unwrap_err();
        assert!(err.why.contains("reserved"), "{key}: {err}");
    }
    let mut t = template_spec();
    t.workload.pod_labels.insert("bad key!".into(), "x".into());
    assert!(template(&t).unwrap_err().why.contains("not a label key"));
    let mut t = template_spec();
    t.workload.pod_labels.insert("team".into(), "a b".into());
    assert!(template(&t).unwrap_err().why.contains("not a label value"));
    let mut t = template_spec();
    t.workload
        .pod_labels
        .insert("example.com/team".into(), "data".into());
    t.workload
        .pod_labels
        .insert("notclawswarm.dev/x".into(), "".into());
    // The shipped templates' role label.
    t.workload
        .pod_labels
        .insert("clawswarm.dev/role".into(), "engineer".into());
    template(&t).unwrap();
}

#[test]
fn every_label_the_controller_sets_on_agent_pods_is_reserved() {
    for key in pod::agent_labels(&crate::runtime::kubernetes::pod::tests::agent()).keys() {
        assert!(is_reserved_label(key), "{key}");
    }
    assert!(is_reserved_label(
        crate::runtime::kubernetes::leader::LEADER_LABEL
    ));
}

#[test]
fn the_crd_rule_names_every_reserved_key() {
    for key in RESERVED_LABEL_KEYS {
        assert!(RESERVED_LABELS_RULE.contains(key), "{key}");
    }
    assert!(RESERVED_LABELS_RULE.contains("clawswarm[.]dev/"));
    assert!(RESERVED_LABELS_RULE.contains(ROLE_LABEL));
    assert!(!is_reserved_label(ROLE_LABEL));
}

#[test]
fn malformed_duration_size_config_map_and_paths_are_refused() {
    let mut t = template_spec();
    t.idle_timeout = Some("soon".into());
    assert_eq!(template(&t).unwrap_err().field, "spec.idleTimeout");
    let mut t = template_spec();
    t.storage.size = "0".into();
    assert_eq!(template(&t).unwrap_err().field, "spec.storage.size");
    let mut t = template_spec();
    t.workload.config_map = Some("Bad_Name".into());
    assert_eq!(template(&t).unwrap_err().field, "spec.workload.configMap");
    let mut t = template_spec();
    t.workload.writable_paths = vec!["relative".into()];
    assert_eq!(
        template(&t).unwrap_err().field,
        "spec.workload.writablePaths[0]"
    );
    for bad in ["", "a,b", "-secret", "_all", "logs *"] {
        let mut t = template_spec();
        t.data = Some(crate::runtime::kubernetes::crd::DataAccessSpec {
            indices: vec!["pipelines".into(), bad.into()],
            ..Default::default()
        });
        assert_eq!(
            template(&t).unwrap_err().field,
            "spec.data.indices[1]",
            "{bad:?}"
        );
    }
}

#[test]
fn the_oldest_valid_agent_serves_an_owner_whatever_the_order() {
    let old = named("zed", "U1", 100);
    let young = named("amy", "U1", 10);
    let mut deleting = named("aaa", "U1", 1000);
    deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let invalid = named("Old.Name", "U1", 2000);
    let other = named("bob", "U2", 5000);
    let all = [&young, &deleting, &old, &invalid, &other];
    for perm in [all, [all[4], all[3], all[2], all[1], all[0]]] {
        let got = primary_for_owner(perm, "U1").unwrap();
        assert_eq!(got.name_any(), "zed");
    }
    // Same creation time: the name decides.
    let mut twin = named("abe", "U1", 0);
    twin.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
    assert_eq!(
        primary_for_owner([&old, &twin], "U1").unwrap().name_any(),
        "abe"
    );
    assert!(primary_for_owner([&old], "U9").is_none());
}

fn template_spec() -> AgentTemplateSpec {
    AgentTemplateSpec {
        description: None,
        workload: WorkloadSpec {
            image: "example.invalid/openclaw:1".into(),
            adapter: "openclaw".into(),
            port: 18789,
            writable_paths: vec!["/home/node/.cache".into()],
            config_map: Some("engineer-openclaw".into()),
            ..Default::default()
        },
        storage: StorageSpec::default(),
        idle_timeout: Some("2h".into()),
        sidecar_resources: None,
        data: None,
        skills: None,
    }
}

#[test]
fn skill_allowlists_name_skills_or_prefixes() {
    let mut t = template_spec();
    t.skills = Some(crate::runtime::kubernetes::crd::SkillsSpec {
        library: vec!["*".into(), "pipeline-status".into(), "oncall-*".into()],
    });
    assert!(template(&t).is_ok());
    for bad in ["Pipeline", "a b", "../x", "x*y"] {
        t.skills = Some(crate::runtime::kubernetes::crd::SkillsSpec {
            library: vec![bad.into()],
        });
        let e = template(&t).unwrap_err();
        assert!(
            e.to_string().contains("spec.skills.library[0]"),
            "{bad}: {e}"
        );
    }
}

//! Bad and conflicting input on a real API server: what the CRDs refuse,
//! what the reconciler flags (a condition, an Event, a log line) while it
//! keeps serving everyone else, and the volume rules (an owner's data stays
//! theirs; one pod at a time on a read-write-once volume; a template's
//! retention outlives the template).
//!
//! Needs `eval "$(scripts/deps.sh kube)"`; fails (never skips) without it.

#![allow(clippy::unwrap_used)]

mod kube_common;

use std::time::Duration;

use clawswarm_controller::metrics::ReasonLabel;
use clawswarm_controller::runtime::kubernetes::crd::{Agent, AgentTemplate, Retention};
use clawswarm_controller::runtime::kubernetes::validate;
use clawswarm_controller::runtime::{AgentMode, Runtime};
use clawswarm_tests::control_plane::{self, wait_for};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, ResourceExt as _};
use kube_common::*;

fn template_yaml(name: &str, extra_workload: &str, extra_spec: &str) -> String {
    format!(
        r#"
apiVersion: clawswarm.dev/v1alpha1
kind: AgentTemplate
metadata:
  name: {name}
  namespace: {NS}
spec:
{extra_spec}
  workload:
    image: {OPENCLAW_IMAGE}
{extra_workload}
"#
    )
}

async fn apply(c: &Cluster, yaml: &str) -> anyhow::Result<()> {
    control_plane::apply_yaml(&c.cp.admin(), yaml, "clawswarm-test")
        .await
        .map(|_| ())
}

fn refusal(e: anyhow::Error) -> String {
    format!("{e:#}")
}

#[tokio::test(flavor = "multi_thread")]
async fn api_server_refuses_agent_names_that_are_not_ids_reserved_labels_and_empty_images() {
    let c = cluster().await;
    let agents = Api::<Agent>::namespaced(c.cp.admin(), NS);
    for bad in ["alice.smith", "Alice", &"a".repeat(64)] {
        let a: Agent = serde_json::from_value(serde_json::json!({
            "apiVersion": "clawswarm.dev/v1alpha1", "kind": "Agent",
            "metadata": { "name": bad },
            "spec": { "owner": "U1", "template": "engineer" },
        }))
        .unwrap();
        match agents.create(&PostParams::default(), &a).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{bad}: {e:?}");
                assert!(
                    e.message.contains(validate::AGENT_NAME_MESSAGE),
                    "{bad}: {}",
                    e.message
                );
            }
            other => panic!("{bad}: accepted: {other:?}"),
        }
    }
    // A good name still goes through.
    create_agent(&c, "alice-smith", "U1", "engineer").await;

    for key in [
        "clawswarm.dev/leader",
        "app.kubernetes.io/name",
        "x.clawswarm.dev/agent",
    ] {
        let yaml = template_yaml(
            "impersonator",
            &format!("    podLabels:\n      {key}: clawswarm-controller"),
            "",
        );
        let err = refusal(apply(&c, &yaml).await.unwrap_err());
        assert!(
            err.contains(validate::RESERVED_LABELS_MESSAGE),
            "{key}: {err}"
        );
    }
    apply(
        &c,
        &template_yaml("labelled", "    podLabels:\n      team: data", ""),
    )
    .await
    .unwrap();
    let empty_image = template_yaml("no-image", "", "").replace(OPENCLAW_IMAGE, "\"\"");
    let err = refusal(apply(&c, &empty_image).await.unwrap_err());
    assert!(err.contains("spec.workload.image"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_templates_get_a_condition_and_an_event_and_refused_pods_back_off() {
    let c = cluster().await;
    for yaml in [
        template_yaml(
            "negative",
            "    resources:\n      requests:\n        memory: \"-1Gi\"",
            "",
        ),
        template_yaml(
            "squeezed",
            "    resources:\n      requests:\n        memory: 2Gi\n      limits:\n        memory: 1Gi",
            "",
        ),
        // Passes every check of ours; the API server refuses the pod.
        template_yaml(
            "refused",
            "    env:\n      - name: \"BAD=NAME\"\n        value: x",
            "",
        ),
    ] {
        apply(&c, &yaml).await.unwrap();
    }
    let ctl = Controller::start(&c, None).await;
    let rt = ctl.runtime.clone();
    provision(&rt, "nina", "U20", "negative").await;
    provision(&rt, "olga", "U21", "squeezed").await;
    provision(&rt, "pete", "U22", "refused").await;
    provision(&rt, "quin", "U23", "no-such-template").await;
    provision(&rt, "rita", "U24", "engineer").await;

    let nina = wait_agent(
        &c,
        "nina",
        has_reason("Ready", "InvalidSpec"),
        "nina invalid",
    )
    .await;
    assert!(
        condition_message(&nina, "Ready").contains("spec.workload.resources.requests.memory"),
        "{nina:?}"
    );
    let olga = wait_agent(
        &c,
        "olga",
        has_reason("Ready", "InvalidSpec"),
        "olga invalid",
    )
    .await;
    assert!(
        condition_message(&olga, "Ready").contains("spec.workload.resources.limits.memory"),
        "{olga:?}"
    );
    wait_agent(
        &c,
        "quin",
        has_reason("Ready", "TemplateNotFound"),
        "quin without template",
    )
    .await;
    let pete = wait_agent(
        &c,
        "pete",
        has_reason("Ready", "PodCreateFailed"),
        "pete refused",
    )
    .await;
    assert!(
        condition_message(&pete, "Ready").contains("pete-<generated>"),
        "the generated name is not in the message: {pete:?}"
    );
    // Everyone else is served.
    ready_pod(&c, "rita").await;
    for (agent, reason) in [
        ("nina", "InvalidSpec"),
        ("olga", "InvalidSpec"),
        ("quin", "TemplateNotFound"),
        ("pete", "PodCreateFailed"),
    ] {
        wait_event(&c, agent, reason).await;
    }

    // The refused pod is retried with backoff and status is not rewritten:
    // watch pete for a while and count the writes and the attempts.
    let errors = || {
        rt.metrics()
            .reconcile_errors
            .get_or_create(&ReasonLabel {
                reason: "finalizer",
            })
            .get()
    };
    let attempts_before = errors();
    let agents = Api::<Agent>::namespaced(c.cp.admin(), NS);
    let cfg = watcher::Config::default().fields("metadata.name=pete");
    let writes = watcher(agents, cfg)
        .applied_objects()
        .take_until(tokio::time::sleep(Duration::from_secs(8)))
        .count()
        .await;
    let attempts = errors() - attempts_before;
    // The first item is the initial list; before the fix there were ~70.
    assert!(
        writes <= 2,
        "pete's status was written {writes} times in 8 s"
    );
    // Backoff 2 s, 4 s, 8 s ... (before the fix, about 9 a second).
    assert!(attempts <= 4, "{attempts} attempts in 8 s");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retained_volume_is_not_mounted_by_another_owner_reusing_the_name() {
    let c = cluster().await;
    let ctl = Controller::start(&c, None).await;
    let rt = ctl.runtime.clone();
    provision(&rt, "hank", "U8", "engineer").await;
    ready_pod(&c, "hank").await;
    let agents = Api::<Agent>::namespaced(c.cp.admin(), NS);
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(c.cp.admin(), NS);
    let claim = pvcs.get("hank-data").await.unwrap();
    assert_eq!(claim.annotations()["clawswarm.dev/owner"], "U8");

    // hank leaves; the engineer template retains the volume.
    let old = agents.get("hank").await.unwrap();
    agents
        .delete("hank", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        agents.clone(),
        "hank",
        conditions::is_deleted(&old.uid().unwrap()),
        WAIT,
        "hank gone",
    )
    .await
    .unwrap();
    assert!(pvcs.get_opt("hank-data").await.unwrap().is_some());

    // Someone else takes the name: refused, with a reason, and no pod.
    provision(&rt, "hank", "U9", "engineer").await;
    let refused = wait_agent(
        &c,
        "hank",
        has_reason("StorageReady", "VolumeOwnerMismatch"),
        "the newcomer refused the old volume",
    )
    .await;
    assert!(
        condition_message(&refused, "Ready").contains("another owner"),
        "{refused:?}"
    );
    wait_event(&c, "hank", "VolumeOwnerMismatch").await;
    assert!(live_agent_pods(&c, "hank").await.is_empty());

    // The newcomer goes; the original owner comes back to their data.
    let newcomer = agents.get("hank").await.unwrap();
    rt.deprovision(&id("hank"), true).await.unwrap();
    wait_for(
        agents.clone(),
        "hank",
        conditions::is_deleted(&newcomer.uid().unwrap()),
        WAIT,
        "newcomer gone",
    )
    .await
    .unwrap();
    // Deleting the newcomer with its data did not delete the old owner's.
    assert!(pvcs.get_opt("hank-data").await.unwrap().is_some());
    provision(&rt, "hank", "U8", "engineer").await;
    ready_pod(&c, "hank").await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_waits_for_the_old_pod_to_be_gone() {
    let c = cluster().await;
    let ctl = Controller::start(&c, None).await;
    let rt = ctl.runtime.clone();
    provision(&rt, "gail", "U7", "engineer").await;
    let first = ready_pod(&c, "gail").await;
    // Hold the pod in Terminating, like a slow shutdown would.
    let pods = Api::<Pod>::namespaced(c.cp.admin(), NS);
    let hold = serde_json::json!({ "metadata": { "finalizers": ["clawswarm.dev/test-hold"] } });
    pods.patch(
        &first.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&hold),
    )
    .await
    .unwrap();
    rt.suspend(&id("gail")).await.unwrap();
    wait_for(
        pods.clone(),
        &first.name_any(),
        |p: Option<&Pod>| p.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        WAIT,
        "old pod terminating",
    )
    .await
    .unwrap();

    let rec = rt.resume(&id("gail")).await.unwrap();
    assert_eq!(rec.mode, AgentMode::Running);
    wait_agent(
        &c,
        "gail",
        has_reason("Ready", "PodTerminating"),
        "gail waiting for the old pod",
    )
    .await;
    assert!(
        live_agent_pods(&c, "gail").await.is_empty(),
        "a second pod started on the read-write-once volume"
    );

    // The old pod goes: the new one starts.
    let release = serde_json::json!({ "metadata": { "finalizers": null } });
    pods.patch(
        &first.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&release),
    )
    .await
    .unwrap();
    let second = ready_pod(&c, "gail").await;
    assert_ne!(second.name_any(), first.name_any());
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_template_keeps_its_delete_retention() {
    let c = cluster().await;
    apply(
        &c,
        &template_yaml("scratch", "", "  storage:\n    retention: Delete"),
    )
    .await
    .unwrap();
    let ctl = Controller::start(&c, None).await;
    let rt = ctl.runtime.clone();
    provision(&rt, "ivan", "U30", "scratch").await;
    let a = wait_agent(&c, "ivan", agent_ready, "ivan ready").await;
    assert_eq!(a.status.unwrap().retention, Some(Retention::Delete));

    Api::<AgentTemplate>::namespaced(c.cp.admin(), NS)
        .delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    // The template watch and the runtime's template cache are separate
    // informers: nudge ivan until the reconciler has seen the template gone.
    let agents = Api::<Agent>::namespaced(c.cp.admin(), NS);
    let gone = has_reason("Ready", "TemplateNotFound");
    tokio::time::timeout(WAIT, async {
        for n in 0.. {
            if gone(agents.get_opt("ivan").await.unwrap().as_ref()) {
                return;
            }
            let nudge = serde_json::json!({ "metadata": { "annotations": { "test/nudge": n.to_string() } } });
            agents
                .patch("ivan", &PatchParams::default(), &Patch::Merge(&nudge))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .expect("ivan never saw the template gone");
    let ivan = agents.get("ivan").await.unwrap();
    agents
        .delete("ivan", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        agents,
        "ivan",
        conditions::is_deleted(&ivan.uid().unwrap()),
        WAIT,
        "ivan gone",
    )
    .await
    .unwrap();
    let claim_gone = |p: Option<&PersistentVolumeClaim>| {
        p.is_none() || p.is_some_and(|p| p.metadata.deletion_timestamp.is_some())
    };
    wait_for(
        Api::<PersistentVolumeClaim>::namespaced(c.cp.admin(), NS),
        "ivan-data",
        claim_gone,
        WAIT,
        "ivan's claim deleted per the template's retention",
    )
    .await
    .unwrap();
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_agent_of_one_owner_is_flagged_and_routing_picks_the_oldest() {
    let c = cluster().await;
    let ctl = Controller::start(&c, None).await;
    let rt = ctl.runtime.clone();
    let jill = create_agent(&c, "jill", "U40", "engineer").await;
    ready_pod(&c, "jill").await;
    // creationTimestamp has one-second resolution and ties go to the name
    // ("jack" < "jill"): make jack strictly younger, as it would be when
    // someone applies a second Agent by hand later.
    let created = jill.metadata.creation_timestamp.clone().unwrap().0;
    let now = || {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since.map_or(0, |d| d.as_secs() as i64)
    };
    while now() <= created.as_second() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Created later (kubectl apply bypasses the runtime's one-per-owner check).
    create_agent(&c, "jack", "U40", "engineer").await;
    let jack = wait_agent(
        &c,
        "jack",
        has_reason("Ready", "DuplicateOwner"),
        "jack flagged",
    )
    .await;
    assert!(
        condition_message(&jack, "Ready").contains("jill"),
        "{jack:?}"
    );
    wait_event(&c, "jack", "DuplicateOwner").await;
    assert!(live_agent_pods(&c, "jack").await.is_empty());
    for _ in 0..5 {
        let rec = rt.find_by_owner("U40").await.unwrap().unwrap();
        assert_eq!(rec.id, id("jill"));
    }

    // The older one goes: the other one now serves the owner.
    rt.deprovision(&id("jill"), false).await.unwrap();
    ready_pod(&c, "jack").await;
    assert_eq!(
        rt.find_by_owner("U40").await.unwrap().unwrap().id,
        id("jack")
    );
    ctl.stop().await;
}

/// The skills library as ConfigMaps, on a real API server, read and
/// written as the controller's own ServiceAccount under the shipped Role
/// (pieces: the library and the runtime's allowlist, not the whole
/// controller; tests/tests/deployment.rs runs that).
#[tokio::test(flavor = "multi_thread")]
async fn the_skills_library_lives_in_configmaps_and_proposals_wait_for_review() {
    use clawswarm_controller::skills::{
        LibraryError, ProposalState, SkillLibrary, configmap_library::ConfigMapLibrary,
    };
    use clawswarm_proto::v1 as pb;
    use k8s_openapi::api::core::v1::ConfigMap;

    let c = cluster().await;
    // An admin's library entry, with a supporting file in a subdirectory,
    // and a broken one (no SKILL.md).
    apply(
        &c,
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: skill-pipeline-status
  namespace: {NS}
  labels: {{clawswarm.dev/skill-library: "true", clawswarm.dev/skill: pipeline-status}}
data:
  SKILL.md: "---\ndescription: Latest pipeline run.\n---\nSearch.\n"
  scripts__latest.sh: "echo latest\n"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: skill-broken
  namespace: {NS}
  labels: {{clawswarm.dev/skill-library: "true", clawswarm.dev/skill: broken}}
data:
  README.md: "no skill here"
"#
        ),
    )
    .await
    .unwrap();
    let client =
        c.cp.client_for_service_account(NS, "clawswarm-controller")
            .await
            .unwrap();
    let lib = ConfigMapLibrary::new(client, NS);

    let listed = lib.list().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["pipeline-status"],
        "a skill without SKILL.md is not offered"
    );
    assert_eq!(listed[0].description, "Latest pipeline run.");
    let bundle = lib.get("pipeline-status").await.unwrap().unwrap();
    let paths: Vec<&str> = bundle.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["SKILL.md", "scripts/latest.sh"]);
    assert!(matches!(
        lib.get("broken").await,
        Err(LibraryError::Damaged { .. })
    ));

    // A person's skill, proposed: stored, not offered until approved.
    let mine = pb::SkillBundle {
        name: "standup".into(),
        files: vec![
            pb::SkillFile {
                path: "SKILL.md".into(),
                content: b"---\ndescription: Draft my standup.\n---\n".to_vec(),
            },
            pb::SkillFile {
                path: "assets/logo.bin".into(),
                content: vec![0xff, 0x00, 0xfe],
            },
        ],
    };
    let p = lib.propose(&mine, "clawswarm/u-u1", "U1").await.unwrap();
    assert_eq!(p.state, ProposalState::Pending);
    assert!(lib.get("standup").await.unwrap().is_none());
    let pending = lib.proposals().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].owner.as_str(), pending[0].agent.as_str()),
        ("U1", "clawswarm/u-u1")
    );

    let p = lib.review("standup", true).await.unwrap();
    assert_eq!(p.state, ProposalState::Approved);
    let shared = lib.get("standup").await.unwrap().unwrap();
    assert_eq!(
        shared.files, mine.files,
        "binary files survive the round trip"
    );
    let cm = Api::<ConfigMap>::namespaced(c.cp.admin(), NS)
        .get("skill-standup")
        .await
        .unwrap();
    assert_eq!(
        cm.labels()
            .get("clawswarm.dev/skill-library")
            .map(String::as_str),
        Some("true")
    );
    assert!(matches!(
        lib.review("standup", false).await,
        Err(LibraryError::AlreadyReviewed { .. })
    ));
    assert!(matches!(
        lib.propose(&mine, "clawswarm/u-u2", "U2").await,
        Err(LibraryError::NameTaken(_))
    ));
    assert!(matches!(
        lib.review("never-proposed", true).await,
        Err(LibraryError::NoSuchProposal(_))
    ));

    // What each shipped template allows, as the runtime reads it.
    let ctl = Controller::start(&c, None).await;
    ctl.wait_leading(true).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let allow = loop {
        if let Ok(a) = ctl.runtime.skill_allowlist("default").await {
            break a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "templates never cached"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(allow.allows("pipeline-status"));
    assert!(
        ctl.runtime
            .skill_allowlist("no-such-template")
            .await
            .is_err()
    );
    ctl.stop().await;
}

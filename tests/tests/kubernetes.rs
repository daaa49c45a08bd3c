//! The Kubernetes runtime on a real API server: everything `kustomize build
//! deploy/` renders is applied (so the API server validates every manifest,
//! RBAC and Pod Security included), the runtime runs as the controller's own
//! ServiceAccount (a missing permission fails the test), and a test kubelet
//! runs the agent pods as local processes.
//!
//! Needs `eval "$(scripts/deps.sh kube)"`; fails (never skips) without it.

#![allow(clippy::unwrap_used)]

mod kube_common;

use std::time::Duration;

use clawswarm_controller::identity::AuthError;
use clawswarm_controller::runtime::kubernetes::crd::{Agent, Phase};
use clawswarm_controller::runtime::{AgentMode, AgentSpec, Runtime, RuntimeError};
use clawswarm_tests::control_plane::{self, BoundPod, TokenOptions, wait_for};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams};
use kube::runtime::wait::conditions;
use kube::{Api, ResourceExt as _};
use kube_common::*;

#[tokio::test(flavor = "multi_thread")]
async fn agent_gets_volume_and_hardened_pod_and_its_token_certifies_only_itself() {
    let c = cluster().await;
    let ctl = Controller::start(&c, None).await;
    ctl.wait_leading(true).await;
    let rt = ctl.runtime.clone();
    provision(&rt, "alice", "U1", "engineer").await;
    provision(&rt, "bob", "U2", "pm").await;
    assert!(matches!(
        rt.provision(AgentSpec {
            id: id("alice2"),
            owner: "U1".into(),
            template: "pm".into()
        })
        .await,
        Err(RuntimeError::OwnerHasAgent { .. })
    ));

    let alice_pod = ready_pod(&c, "alice").await;
    let bob_pod = ready_pod(&c, "bob").await;
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(c.cp.admin(), NS);
    assert!(pvcs.get_opt("alice-data").await.unwrap().is_some());
    let agent = Api::<Agent>::namespaced(c.cp.admin(), NS)
        .get("alice")
        .await
        .unwrap();
    assert!(
        agent
            .finalizers()
            .iter()
            .any(|f| f == "clawswarm.dev/cleanup")
    );
    let status = agent.status.unwrap();
    assert_eq!(status.observed_generation, agent.metadata.generation);
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == agent.metadata.generation)
    );
    assert_eq!(alice_pod.owner_references()[0].name, "alice");
    // The sidecar stand-in found its token where the pod spec said.
    let seen = c.kubelet.pvc_dir("alice-data").join("sidecar/token-seen");
    let token = pod_token(&c, &alice_pod).await;
    assert_eq!(std::fs::read_to_string(seen).unwrap(), token);

    // Each step left an Event on the Agent (the ServiceAccount may write them).
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(c.cp.admin(), NS);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("alice"))
        .filter_map(|e| e.reason)
        .collect();
    for want in ["VolumeClaimCreated", "PodCreated"] {
        assert!(
            reasons.iter().any(|r| r == want),
            "{want} missing from {reasons:?}"
        );
    }

    // The runtime's view comes from its caches.
    let rec = rt.find_by_owner("U2").await.unwrap().unwrap();
    assert_eq!(rec.id, id("bob"));

    // TokenReview: alice's token certifies alice ...
    certify(&rt, "alice", &token).await.unwrap();
    // ... and not bob: the pod bound into it is labelled for alice.
    let err = certify(&rt, "bob", &token).await.unwrap_err();
    assert!(matches!(err, AuthError::WrongAgent { .. }), "{err:?}");
    // bob's token (bound to another pod) does not certify alice.
    let bob_token = pod_token(&c, &bob_pod).await;
    let err = certify(&rt, "alice", &bob_token).await.unwrap_err();
    assert!(matches!(err, AuthError::WrongAgent { .. }), "{err:?}");
    // A token for another audience, or not bound to a pod, is refused.
    let other_audience =
        c.cp.request_token(
            NS,
            "clawswarm-agent",
            &TokenOptions {
                audiences: vec!["someone-else".into()],
                bound_pod: Some(BoundPod {
                    name: alice_pod.name_any(),
                    uid: alice_pod.uid().unwrap(),
                }),
                expiration_seconds: Some(600),
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        certify(&rt, "alice", &other_audience).await,
        Err(AuthError::InvalidToken(_))
    ));
    let unbound =
        c.cp.request_token(
            NS,
            "clawswarm-agent",
            &TokenOptions {
                audiences: vec![AUDIENCE.into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        certify(&rt, "alice", &unbound).await,
        Err(AuthError::InvalidToken(_))
    ));
    // Spoofs with pods the controller did not make: one labelled for alice
    // but running as another ServiceAccount, one with alice's label and the
    // agents' ServiceAccount but not owned by alice's Agent, and one whose
    // owner reference names alice's Agent but not its UID (as an Agent
    // deleted and made again under the same name would).
    for (name, sa, owner_uid) in [
        ("impostor-sa", "clawswarm-controller", None),
        ("impostor-label", "clawswarm-agent", None),
        (
            "impostor-owner",
            "clawswarm-agent",
            Some("00000000-0000-4000-8000-000000000000"),
        ),
    ] {
        let pod = impostor(&c, name, sa, owner_uid).await;
        let token =
            c.cp.request_token(
                NS,
                sa,
                &TokenOptions {
                    audiences: vec![AUDIENCE.into()],
                    bound_pod: Some(BoundPod {
                        name: pod.name_any(),
                        uid: pod.uid().unwrap(),
                    }),
                    expiration_seconds: Some(600),
                },
            )
            .await
            .unwrap();
        let err = certify(&rt, "alice", &token).await.unwrap_err();
        match sa {
            "clawswarm-controller" => assert!(matches!(err, AuthError::InvalidToken(_)), "{err:?}"),
            _ => assert!(matches!(err, AuthError::WrongAgent { .. }), "{err:?}"),
        }
    }

    // Every decision was counted.
    let decisions = |result| {
        let label = clawswarm_controller::metrics::ResultLabel { result };
        rt.metrics()
            .tokenreview_decisions
            .get_or_create(&label)
            .get()
    };
    assert!(decisions("allow") >= 1 && decisions("deny") >= 5);

    // A deleted pod is recreated, and the old pod's token dies with it.
    let pods = Api::<Pod>::namespaced(c.cp.admin(), NS);
    pods.delete(&alice_pod.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        pods.clone(),
        &alice_pod.name_any(),
        conditions::is_deleted(&alice_pod.uid().unwrap()),
        WAIT,
        "old pod gone",
    )
    .await
    .unwrap();
    let old = alice_pod.name_any();
    let replaced = wait_agent(
        &c,
        "alice",
        move |a: Option<&Agent>| {
            agent_ready(a)
                && a.and_then(|a| a.status.as_ref())
                    .and_then(|s| s.pod.as_deref())
                    != Some(old.as_str())
        },
        "alice on a new pod",
    )
    .await;
    assert_ne!(replaced.status.unwrap().pod.unwrap(), alice_pod.name_any());
    assert!(
        certify(&rt, "alice", &token).await.is_err(),
        "a deleted pod's token must not certify"
    );

    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_pod_is_replaced_and_suspend_keeps_the_volume() {
    let c = cluster().await;
    let ctl = Controller::start(&c, None).await;
    let rt = ctl.runtime.clone();
    provision(&rt, "carol", "U3", "data-analyst").await;
    let first = ready_pod(&c, "carol").await;

    // The pod fails (node lost, evicted): a replacement is made.
    let pods = Api::<Pod>::namespaced(c.cp.admin(), NS);
    let failed = serde_json::json!({ "status": { "phase": "Failed", "reason": "Evicted" } });
    pods.patch_status(
        &first.name_any(),
        &Default::default(),
        &kube::api::Patch::Merge(&failed),
    )
    .await
    .unwrap();
    let old = first.name_any();
    wait_agent(
        &c,
        "carol",
        move |a: Option<&Agent>| {
            agent_ready(a)
                && a.and_then(|a| a.status.as_ref())
                    .and_then(|s| s.pod.as_deref())
                    != Some(old.as_str())
        },
        "carol replaced after failure",
    )
    .await;

    // Suspend: no pod, volume kept.
    let rec = rt.suspend(&id("carol")).await.unwrap();
    assert_eq!(rec.mode, AgentMode::Suspended);
    let suspended = |a: Option<&Agent>| {
        a.and_then(|a| a.status.as_ref())
            .is_some_and(|s| s.phase == Some(Phase::Suspended) && s.pod.is_none())
    };
    wait_agent(&c, "carol", suspended, "carol suspended").await;
    let lp = ListParams::default().labels("clawswarm.dev/agent=carol");
    tokio::time::timeout(WAIT, async {
        while !pods.list(&lp).await.unwrap().items.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap();
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(c.cp.admin(), NS);
    assert!(pvcs.get_opt("carol-data").await.unwrap().is_some());

    // Resume (what a message for a suspended agent does): back on a pod.
    rt.resume(&id("carol")).await.unwrap();
    ready_pod(&c, "carol").await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_runs_the_finalizer_and_honours_retention() {
    let c = cluster().await;
    let ctl = Controller::start(&c, None).await;
    let rt = ctl.runtime.clone();
    provision(&rt, "dave", "U4", "engineer").await;
    provision(&rt, "erin", "U5", "engineer").await;
    ready_pod(&c, "dave").await;
    ready_pod(&c, "erin").await;
    let agents = Api::<Agent>::namespaced(c.cp.admin(), NS);
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(c.cp.admin(), NS);
    let pods = Api::<Pod>::namespaced(c.cp.admin(), NS);

    // kubectl delete agent: pods go, the claim stays (retention Retain).
    let dave = agents.get("dave").await.unwrap();
    agents
        .delete("dave", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        agents.clone(),
        "dave",
        conditions::is_deleted(&dave.uid().unwrap()),
        WAIT,
        "dave gone",
    )
    .await
    .unwrap();
    assert!(
        pvcs.get_opt("dave-data").await.unwrap().is_some(),
        "Retain keeps the claim"
    );
    let lp = ListParams::default().labels("clawswarm.dev/agent=dave");
    assert!(
        pods.list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
    );

    // Deprovision with data: the claim goes too.
    let erin = agents.get("erin").await.unwrap();
    rt.deprovision(&id("erin"), true).await.unwrap();
    wait_for(
        agents.clone(),
        "erin",
        conditions::is_deleted(&erin.uid().unwrap()),
        WAIT,
        "erin gone",
    )
    .await
    .unwrap();
    let claim_gone = |p: Option<&PersistentVolumeClaim>| {
        p.is_none() || p.is_some_and(|p| p.metadata.deletion_timestamp.is_some())
    };
    wait_for(pvcs, "erin-data", claim_gone, WAIT, "erin's claim deleted")
        .await
        .unwrap();
    ctl.stop().await;
}

const QUICK_TEMPLATE: &str = r#"
apiVersion: clawswarm.dev/v1alpha1
kind: AgentTemplate
metadata:
  name: quick
  namespace: clawswarm
spec:
  description: "Suspends after two seconds without activity"
  idleTimeout: 2s
  workload:
    image: ghcr.io/clawswarm/openclaw:2026.9.6
"#;

#[tokio::test(flavor = "multi_thread")]
async fn idle_agent_is_suspended_after_the_templates_timeout() {
    let c = cluster().await;
    control_plane::apply_yaml(&c.cp.admin(), QUICK_TEMPLATE, "clawswarm-test")
        .await
        .unwrap();
    let ctl = Controller::start(&c, None).await;
    provision(&ctl.runtime, "ivy", "U11", "quick").await;
    ready_pod(&c, "ivy").await;
    let suspended_by_idle = |a: Option<&Agent>| {
        a.is_some_and(|a| {
            a.spec.mode == clawswarm_controller::runtime::kubernetes::crd::Mode::Suspended
        }) && a
            .and_then(|a| a.status.as_ref())
            .is_some_and(|s| s.phase == Some(Phase::Suspended))
    };
    wait_agent(&c, "ivy", suspended_by_idle, "ivy suspended when idle").await;
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(c.cp.admin(), NS);
    assert!(pvcs.get_opt("ivy-data").await.unwrap().is_some());
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn template_change_rolls_out_a_new_pod_and_keeps_the_volume() {
    let c = cluster().await;
    let ctl = Controller::start(&c, None).await;
    provision(&ctl.runtime, "kate", "U12", "engineer").await;
    let first = ready_pod(&c, "kate").await;
    let templates =
        Api::<clawswarm_controller::runtime::kubernetes::crd::AgentTemplate>::namespaced(
            c.cp.admin(),
            NS,
        );
    let patch = serde_json::json!({ "spec": { "workload": { "env": [{ "name": "ROLLOUT", "value": "2" }] } } });
    templates
        .patch(
            "engineer",
            &Default::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let old = first.name_any();
    let rolled = wait_agent(
        &c,
        "kate",
        move |a: Option<&Agent>| {
            agent_ready(a)
                && a.and_then(|a| a.status.as_ref())
                    .and_then(|s| s.pod.as_deref())
                    != Some(old.as_str())
        },
        "kate on a pod from the new template",
    )
    .await;
    let pod = Api::<Pod>::namespaced(c.cp.admin(), NS)
        .get(&rolled.status.unwrap().pod.unwrap())
        .await
        .unwrap();
    let workload = pod
        .spec
        .unwrap()
        .containers
        .into_iter()
        .find(|c| c.name == "workload")
        .unwrap();
    assert!(workload.env.unwrap().iter().any(|e| e.name == "ROLLOUT"));
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(c.cp.admin(), NS);
    assert!(pvcs.get_opt("kate-data").await.unwrap().is_some());
    ctl.stop().await;
}

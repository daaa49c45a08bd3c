//! The Kubernetes runtime on a real API server: everything `kustomize build
//! deploy/` renders is applied (so the API server validates every manifest,
//! RBAC and Pod Security included), the runtime runs as the controller's own
//! ServiceAccount (a missing permission fails the test), and a test kubelet
//! runs the agent pods as local processes.
//!
//! Needs `eval "$(scripts/deps.sh kube)"`; fails (never skips) without it.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clawswarm_certs::{AgentId, TrustDomain};
use clawswarm_controller::identity::{AuthError, CertifyClaim};
use clawswarm_controller::runtime::kubernetes::crd::{Agent, Phase};
use clawswarm_controller::runtime::kubernetes::{
    self, CommonSettings, KubernetesArgs, KubernetesRuntime, issuer, leader, offboarding,
};
use clawswarm_controller::runtime::{AgentMode, AgentSpec, Runtime, RuntimeError};
use clawswarm_tests::control_plane::{self, BoundPod, ControlPlane, TokenOptions, wait_for};
use clawswarm_tests::kubelet::{KubeletConfig, LocalImage, TestKubelet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::conditions;
use kube::{Api, ResourceExt as _};
use tokio_util::sync::CancellationToken;

const NS: &str = "clawswarm";
const WAIT: Duration = Duration::from_secs(90);
const SIDECAR_IMAGE: &str = "ghcr.io/clawswarm/clawswarm-sidecar:0.1.0";
const OPENCLAW_IMAGE: &str = "ghcr.io/clawswarm/openclaw:2026.9.6";
const AUDIENCE: &str = "clawswarm-identity";

fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A control plane with deploy/ applied, and a kubelet for the namespace.
struct Cluster {
    cp: ControlPlane,
    kubelet: TestKubelet,
}

async fn cluster() -> Cluster {
    clawswarm_tests::trace_init();
    let cp = ControlPlane::start().await.unwrap();
    let yaml = cp.kustomize_build(&deploy_dir()).await.unwrap();
    let applied = control_plane::apply_yaml(&cp.admin(), &yaml, "clawswarm-test")
        .await
        .unwrap();
    assert!(
        applied.iter().any(|o| o.kind == "Deployment"),
        "{applied:?}"
    );
    // The Secret templates are not rendered, but must be valid too.
    for t in [
        "shared-secrets.template.yaml",
        "controller-secrets.template.yaml",
    ] {
        let text = std::fs::read_to_string(deploy_dir().join("secrets").join(t)).unwrap();
        control_plane::apply_yaml(&cp.admin(), &text, "clawswarm-test")
            .await
            .unwrap();
    }
    // Stand-ins for the images: the sidecar copies the token it was given
    // into the agent's volume (proof the kubelet projected it) and stays up;
    // the workload just stays up. The real sidecar runs in the mesh tests.
    let hook: clawswarm_tests::kubelet::LaunchHook = Arc::new(|_pod, launch| {
        let script = match (launch.container.as_str(), launch.init) {
            ("init", true) => {
                "mkdir -p \"$CLAWSWARM_DATA_DIR/sidecar\" \"$CLAWSWARM_DATA_DIR/home\"".to_string()
            }
            ("sidecar", _) => {
                "cp \"$CLAWSWARM_TOKEN_FILE\" \"$CLAWSWARM_DATA_DIR/token-seen\" && exec sleep 3600"
                    .to_string()
            }
            _ => "exec sleep 3600".to_string(),
        };
        launch.args = vec!["-c".into(), script];
        Ok(())
    });
    let images = HashMap::from([
        (SIDECAR_IMAGE.to_string(), LocalImage::new("/bin/sh")),
        (OPENCLAW_IMAGE.to_string(), LocalImage::new("/bin/sh")),
    ]);
    let kubelet = TestKubelet::start(
        cp.admin(),
        KubeletConfig {
            namespace: NS.into(),
            node_name: "node-1".into(),
            images,
            hook: Some(hook),
            root: cp.dir().join("kubelet"),
        },
    )
    .await
    .unwrap();
    Cluster { cp, kubelet }
}

fn args(pod_name: Option<&str>) -> KubernetesArgs {
    KubernetesArgs {
        sidecar_image: SIDECAR_IMAGE.into(),
        image_pull_policy: None,
        agent_service_account: "clawswarm-agent".into(),
        service_name: "clawswarm-controller".into(),
        agent_controller_url: None,
        agent_identity_url: None,
        issuer_secret: "clawswarm-issuer".into(),
        trust_bundle_config_map: "clawswarm-trust-bundle".into(),
        token_audience: AUDIENCE.into(),
        shared_secret: "clawswarm-shared-secrets".into(),
        pod_name: pod_name.map(str::to_string),
        lease_name: "clawswarm-controller-leader".into(),
        lease_duration: Duration::from_secs(4),
        // Every decision live: the test replaces pods between checks.
        tokenreview_cache_ttl: Duration::ZERO,
        idle_check_interval: Duration::from_secs(1),
        offboarding_secret_file: None,
    }
}

/// A running runtime acting as the controller's ServiceAccount.
struct Controller {
    runtime: Arc<KubernetesRuntime>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), RuntimeError>>,
}

impl Controller {
    async fn start(c: &Cluster, pod_name: Option<&str>) -> Self {
        let client =
            c.cp.client_for_service_account(NS, "clawswarm-controller")
                .await
                .unwrap();
        let td = TrustDomain::new("clawswarm.local".to_string()).unwrap();
        let authority = issuer::load_or_create_authority(&client, NS, "clawswarm-issuer", &td)
            .await
            .unwrap();
        issuer::publish_trust_bundle(
            &client,
            NS,
            "clawswarm-trust-bundle",
            authority.trust_bundle_pem(),
        )
        .await
        .unwrap();
        let common = CommonSettings {
            namespace: NS.into(),
            trust_domain: "clawswarm.local".into(),
            mesh_port: 7443,
            identity_port: 7444,
        };
        let runtime = kubernetes::build(&args(pod_name), &common, client)
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let rt = runtime.clone();
        let s = stop.clone();
        let task = tokio::spawn(async move { rt.run(s).await });
        Self {
            runtime,
            stop,
            task,
        }
    }

    async fn wait_leading(&self, want: bool) {
        let mut rx = self.runtime.leadership();
        tokio::time::timeout(WAIT, rx.wait_for(|l| *l == want))
            .await
            .unwrap()
            .unwrap();
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// A pod labelled as alice's agent that the controller did not create.
async fn impostor(c: &Cluster, name: &str, service_account: &str) -> Pod {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { "clawswarm.dev/agent": "alice" } },
        "spec": {
            "serviceAccountName": service_account,
            "automountServiceAccountToken": false,
            "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{ "name": "c", "image": "example.invalid/impostor:1",
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } } }],
        },
    }))
    .unwrap();
    Api::<Pod>::namespaced(c.cp.admin(), NS)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
}

fn id(name: &str) -> AgentId {
    AgentId::new(NS.to_string(), name.to_string()).unwrap()
}

fn agent_ready(a: Option<&Agent>) -> bool {
    a.and_then(|a| a.status.as_ref()).is_some_and(|s| {
        s.phase == Some(Phase::Running)
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "AgentReady")
    })
}

async fn wait_agent<C>(c: &Cluster, name: &str, cond: C, what: &str) -> Agent
where
    C: kube::runtime::wait::Condition<Agent>,
{
    wait_for(
        Api::<Agent>::namespaced(c.cp.admin(), NS),
        name,
        cond,
        WAIT,
        what,
    )
    .await
    .unwrap()
    .unwrap()
}

async fn ready_pod(c: &Cluster, agent: &str) -> Pod {
    let a = wait_agent(c, agent, agent_ready, &format!("agent {agent} Ready")).await;
    let pod = a.status.unwrap().pod.unwrap();
    Api::<Pod>::namespaced(c.cp.admin(), NS)
        .get(&pod)
        .await
        .unwrap()
}

/// The projected token the kubelet wrote for `pod`.
async fn pod_token(c: &Cluster, pod: &Pod) -> String {
    let dir = c
        .kubelet
        .volume_dir(&pod.name_any(), &pod.uid().unwrap(), "identity");
    std::fs::read_to_string(dir.join("token")).unwrap()
}

async fn certify(rt: &KubernetesRuntime, agent: &str, token: &str) -> Result<(), AuthError> {
    rt.authenticator()
        .authenticate(&CertifyClaim {
            requested: &id(agent),
            token,
        })
        .await
}

async fn provision(rt: &KubernetesRuntime, name: &str, owner: &str, template: &str) {
    rt.provision(AgentSpec {
        id: id(name),
        owner: owner.into(),
        template: template.into(),
    })
    .await
    .unwrap();
}

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
    // agents' ServiceAccount but not owned by alice's Agent.
    for (name, sa) in [
        ("impostor-sa", "clawswarm-controller"),
        ("impostor-label", "clawswarm-agent"),
    ] {
        let pod = impostor(&c, name, sa).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn restarted_controller_rebuilds_its_view_from_the_api() {
    let c = cluster().await;
    let ctl = Controller::start(&c, None).await;
    provision(&ctl.runtime, "frank", "U6", "pm").await;
    ready_pod(&c, "frank").await;
    ctl.runtime
        .record_usage(
            &id("frank"),
            clawswarm_controller::runtime::TokenTotals {
                input: 7,
                output: 5,
                cache_read: 0,
                cache_write: 0,
            },
        )
        .await
        .unwrap();
    ctl.stop().await; // flushes usage to the Agent

    let again = Controller::start(&c, None).await;
    let rec = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(r) = again.runtime.find_by_owner("U6").await.unwrap() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(rec.id, id("frank"));
    assert_eq!((rec.usage.input, rec.usage.output), (7, 5));
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn standby_takes_over_when_the_leader_stops_and_moves_the_label() {
    let c = cluster().await;
    // Two controller pods to carry the leader label (never started by the
    // kubelet: their image is not mapped; only their labels matter here).
    let pods = Api::<Pod>::namespaced(c.cp.admin(), NS);
    for name in ["controller-a", "controller-b"] {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "app.kubernetes.io/name": "clawswarm-controller" } },
            "spec": {
                "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
                "containers": [{ "name": "c", "image": "example.invalid/controller:1",
                    "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } } }],
            },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let a = Controller::start(&c, Some("controller-a")).await;
    a.wait_leading(true).await;
    let b = Controller::start(&c, Some("controller-b")).await;
    let labelled = |p: Option<&Pod>| {
        p.is_some_and(|p| p.labels().get(leader::LEADER_LABEL).map(String::as_str) == Some("true"))
    };
    wait_for(
        pods.clone(),
        "controller-a",
        labelled,
        WAIT,
        "leader label on a",
    )
    .await
    .unwrap();
    assert!(!*b.runtime.leadership().borrow(), "two leaders");

    // Work continues across the handover.
    a.stop().await;
    b.wait_leading(true).await;
    wait_for(
        pods.clone(),
        "controller-b",
        labelled,
        WAIT,
        "leader label on b",
    )
    .await
    .unwrap();
    let a_pod = pods.get("controller-a").await.unwrap();
    assert!(
        a_pod.labels().get(leader::LEADER_LABEL).is_none(),
        "a still marked leader"
    );
    provision(&b.runtime, "grace", "U7", "engineer").await;
    ready_pod(&c, "grace").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn offboarding_webhook_deletes_the_persons_agent_once() {
    let c = cluster().await;
    let ctl = Controller::start(&c, None).await;
    provision(&ctl.runtime, "heidi", "U8", "pm").await;
    ready_pod(&c, "heidi").await;
    let key = b"an-hr-system-shared-key".to_vec();
    let runtime: Arc<dyn Runtime> = ctl.runtime.clone();
    let hook = Arc::new(offboarding::Offboarding::new(runtime, key.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, hook.router()).await });

    let body = br#"{"owner":"U8"}"#.to_vec();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sig = offboarding::sign(&key, ts, &body);
    let http = reqwest::Client::new();
    let post = |sig: String| {
        http.post(format!("http://{addr}{}", offboarding::PATH))
            .header(offboarding::TIMESTAMP_HEADER, ts.to_string())
            .header(offboarding::SIGNATURE_HEADER, sig)
            .body(body.clone())
            .send()
    };
    let forged = post(offboarding::sign(b"not-the-hr-systems-key", ts, &body))
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let resp = post(sig.clone()).await.unwrap();
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let replay = post(sig).await.unwrap();
    assert_eq!(replay.status(), 409);

    let agents = Api::<Agent>::namespaced(c.cp.admin(), NS);
    wait_for(
        agents,
        "heidi",
        |a: Option<&Agent>| a.is_none(),
        WAIT,
        "heidi off-boarded",
    )
    .await
    .unwrap();
    server.abort();
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

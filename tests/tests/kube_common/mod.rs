//! Shared by the Kubernetes tier's test binaries: a control plane with
//! deploy/ applied and a test kubelet, and the runtime running as the
//! controller's own ServiceAccount.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clawswarm_certs::{AgentId, TrustDomain};
use clawswarm_controller::identity::{AuthError, CertifyClaim};
use clawswarm_controller::runtime::kubernetes::crd::{Agent, Phase};
use clawswarm_controller::runtime::kubernetes::{
    self, CommonSettings, KubernetesArgs, KubernetesRuntime, issuer,
};
use clawswarm_controller::runtime::{AgentSpec, Runtime, RuntimeError};
use clawswarm_tests::control_plane::{self, ControlPlane, wait_for};
use clawswarm_tests::kubelet::{KubeletConfig, LocalImage, TestKubelet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, ResourceExt as _};
use tokio_util::sync::CancellationToken;
pub const NS: &str = "clawswarm";
pub const WAIT: Duration = Duration::from_secs(90);
pub const SIDECAR_IMAGE: &str = "ghcr.io/clawswarm/clawswarm-sidecar:0.1.0";
pub const OPENCLAW_IMAGE: &str = "ghcr.io/clawswarm/openclaw:2026.9.6";
pub const AUDIENCE: &str = "clawswarm-identity";

pub fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A control plane with deploy/ applied, and a kubelet for the namespace.
pub struct Cluster {
    pub cp: ControlPlane,
    pub kubelet: TestKubelet,
}

pub async fn cluster() -> Cluster {
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
            sandbox: None,
        },
    )
    .await
    .unwrap();
    Cluster { cp, kubelet }
}

pub fn args(pod_name: Option<&str>) -> KubernetesArgs {
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
pub struct Controller {
    pub runtime: Arc<KubernetesRuntime>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), RuntimeError>>,
}

impl Controller {
    pub async fn start(c: &Cluster, pod_name: Option<&str>) -> Self {
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

    pub async fn wait_leading(&self, want: bool) {
        let mut rx = self.runtime.leadership();
        tokio::time::timeout(WAIT, rx.wait_for(|l| *l == want))
            .await
            .unwrap()
            .unwrap();
    }

    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// A pod labelled as alice's agent that the controller did not create.
/// A pod the controller did not make, labelled for alice, running as
/// `service_account`; with `owner_uid`, it also claims to be controlled by
/// an Agent named alice with that UID.
pub async fn impostor(
    c: &Cluster,
    name: &str,
    service_account: &str,
    owner_uid: Option<&str>,
) -> Pod {
    let owners: Vec<serde_json::Value> = owner_uid
        .map(|uid| {
            serde_json::json!({ "apiVersion": "clawswarm.dev/v1alpha1", "kind": "Agent",
                "name": "alice", "uid": uid, "controller": true })
        })
        .into_iter()
        .collect();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { "clawswarm.dev/agent": "alice" },
            "ownerReferences": owners },
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

pub fn id(name: &str) -> AgentId {
    AgentId::new(NS.to_string(), name.to_string()).unwrap()
}

pub fn agent_ready(a: Option<&Agent>) -> bool {
    a.and_then(|a| a.status.as_ref()).is_some_and(|s| {
        s.phase == Some(Phase::Running)
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "AgentReady")
    })
}

pub async fn wait_agent<C>(c: &Cluster, name: &str, cond: C, what: &str) -> Agent
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

pub async fn ready_pod(c: &Cluster, agent: &str) -> Pod {
    let a = wait_agent(c, agent, agent_ready, &format!("agent {agent} Ready")).await;
    let pod = a.status.unwrap().pod.unwrap();
    Api::<Pod>::namespaced(c.cp.admin(), NS)
        .get(&pod)
        .await
        .unwrap()
}

/// The projected token the kubelet wrote for `pod`.
pub async fn pod_token(c: &Cluster, pod: &Pod) -> String {
    let dir = c
        .kubelet
        .volume_dir(&pod.name_any(), &pod.uid().unwrap(), "identity");
    std::fs::read_to_string(dir.join("token")).unwrap()
}

pub async fn certify(rt: &KubernetesRuntime, agent: &str, token: &str) -> Result<(), AuthError> {
    rt.authenticator()
        .authenticate(&CertifyClaim {
            requested: &id(agent),
            token,
        })
        .await
}

pub async fn provision(rt: &KubernetesRuntime, name: &str, owner: &str, template: &str) {
    rt.provision(AgentSpec {
        id: id(name),
        owner: owner.into(),
        template: template.into(),
    })
    .await
    .unwrap();
}

/// A condition predicate for [`wait_agent`]: condition `type_` has `reason`.
pub fn has_reason(type_: &'static str, reason: &'static str) -> impl Fn(Option<&Agent>) -> bool {
    move |a: Option<&Agent>| {
        a.and_then(|a| a.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == type_ && c.reason == reason)
        })
    }
}

/// The message of `agent`'s condition `type_`.
pub fn condition_message(a: &Agent, type_: &str) -> String {
    a.status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// (reason, note) of every Event regarding the Agent `name`.
pub async fn agent_events(c: &Cluster, name: &str) -> Vec<(String, String)> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(c.cp.admin(), NS)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Wait until an Event with `reason` regards the Agent `name`; its note.
pub async fn wait_event(c: &Cluster, name: &str, reason: &str) -> String {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Some((_, note)) = agent_events(c, name)
                .await
                .into_iter()
                .find(|(r, _)| r == reason)
            {
                return note;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {reason} Event for {name}"))
}

/// Pods labelled for `agent` that are not terminating.
pub async fn live_agent_pods(c: &Cluster, agent: &str) -> Vec<Pod> {
    let lp = kube::api::ListParams::default().labels(&format!("clawswarm.dev/agent={agent}"));
    Api::<Pod>::namespaced(c.cp.admin(), NS)
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Create `agent` (owner, template) as the admin, bypassing the runtime's
/// one-agent-per-owner check (as `kubectl apply` would).
pub async fn create_agent(c: &Cluster, name: &str, owner: &str, template: &str) -> Agent {
    let a: Agent = serde_json::from_value(serde_json::json!({
        "apiVersion": "clawswarm.dev/v1alpha1", "kind": "Agent",
        "metadata": { "name": name, "namespace": NS },
        "spec": { "owner": owner, "template": template },
    }))
    .unwrap();
    Api::<Agent>::namespaced(c.cp.admin(), NS)
        .create(&PostParams::default(), &a)
        .await
        .unwrap()
}

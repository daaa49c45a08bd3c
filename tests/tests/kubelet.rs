//! The test kubelet on a real API server: binding, local processes with the
//! pod's env and volumes, a pod-bound projected token, status, deletion.
//! Needs `eval "$(scripts/deps.sh kube)"`; fails (never skips) without it.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use clawswarm_tests::control_plane::{ControlPlane, wait_for};
use clawswarm_tests::kubelet::{KubeletConfig, LocalImage, TestKubelet};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::wait::conditions;
use kube::{Api, ResourceExt as _};

const WAIT: Duration = Duration::from_secs(60);
const WORKER: &str = "example.invalid/worker:1";
const INIT: &str = "example.invalid/init:1";

fn pod_yaml(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": "probe" } },
        "spec": {
            "serviceAccountName": "agent",
            "automountServiceAccountToken": false,
            "restartPolicy": "Always",
            "initContainers": [{
                "name": "init", "image": INIT,
                "args": ["-c", "echo initialised > \"$DATA/init-ran\""],
                "env": [{ "name": "DATA", "value": "/data" }],
                "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
            }],
            "containers": [{
                "name": "worker", "image": WORKER,
                "args": ["-c", "cp \"$TOKEN_FILE\" \"$DATA/token\" && cp \"$BUNDLE\" \"$DATA/ca\" && echo \"$POD_NAME $APP\" > \"$DATA/env\" && exec sleep 600"],
                "env": [
                    { "name": "TOKEN_FILE", "value": "/var/run/secrets/clawswarm/token" },
                    { "name": "DATA", "value": "/data" },
                    { "name": "BUNDLE", "value": "/etc/bundle/ca.pem" },
                    { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                    { "name": "APP", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['app']" } } },
                ],
                "volumeMounts": [
                    { "name": "data", "mountPath": "/data" },
                    { "name": "identity", "mountPath": "/var/run/secrets/clawswarm", "readOnly": true },
                    { "name": "bundle", "mountPath": "/etc/bundle", "readOnly": true },
                ],
            }],
            "volumes": [
                { "name": "data", "persistentVolumeClaim": { "claimName": "data-probe" } },
                { "name": "identity", "projected": { "sources": [
                    { "serviceAccountToken": { "audience": "clawswarm-identity", "expirationSeconds": 600, "path": "token" } },
                ]}},
                { "name": "bundle", "configMap": { "name": "bundle" } },
            ],
        },
    }))
    .unwrap()
}

async fn setup(cp: &ControlPlane) -> (String, TestKubelet) {
    let ns = cp.create_namespace("kubelet").await.unwrap();
    cp.create_service_account(&ns, "agent").await.unwrap();
    let bundle = ConfigMap {
        metadata: ObjectMeta {
            name: Some("bundle".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("ca.pem".into(), "PEM".into())])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(cp.admin(), &ns)
        .create(&PostParams::default(), &bundle)
        .await
        .unwrap();
    let images = HashMap::from([
        (WORKER.to_string(), LocalImage::new("/bin/sh")),
        (INIT.to_string(), LocalImage::new("/bin/sh")),
    ]);
    let kubelet = TestKubelet::start(
        cp.admin(),
        KubeletConfig {
            namespace: ns.clone(),
            node_name: format!("node-{ns}"),
            images,
            hook: None,
            root: cp.dir().join(format!("kubelet-{ns}")),
            sandbox: None,
        },
    )
    .await
    .unwrap();
    (ns, kubelet)
}

fn is_ready(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn read_when_present(path: std::path::PathBuf) -> String {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(&path)
            && !s.is_empty()
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn kubelet_binds_runs_and_projects_a_pod_bound_token() {
    clawswarm_tests::trace_init();
    let cp = ControlPlane::start().await.unwrap();
    let (ns, kubelet) = setup(&cp).await;
    let pods = Api::<Pod>::namespaced(cp.admin(), &ns);
    let pod = pods
        .create(&PostParams::default(), &pod_yaml("probe"))
        .await
        .unwrap();

    let running = wait_for(pods.clone(), "probe", is_ready, WAIT, "pod probe Ready")
        .await
        .unwrap()
        .unwrap();
    let spec = running.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(kubelet.node_name()));
    let status = running.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));

    let data = kubelet.pvc_dir("data-probe");
    assert_eq!(
        read_when_present(data.join("init-ran")).await.trim(),
        "initialised"
    );
    assert_eq!(
        read_when_present(data.join("env")).await.trim(),
        "probe probe"
    );
    assert_eq!(read_when_present(data.join("ca")).await, "PEM");
    let token = read_when_present(data.join("token")).await;

    let review = TokenReview {
        metadata: ObjectMeta::default(),
        spec: TokenReviewSpec {
            token: token.clone(),
            audiences: Some(vec!["clawswarm-identity".into()]),
        },
        status: None,
    };
    let reviewed = Api::<TokenReview>::all(cp.admin())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(reviewed.authenticated, Some(true), "{reviewed:?}");
    let extra = reviewed.user.unwrap().extra.unwrap();
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"],
        vec![pod.uid().unwrap()]
    );

    // Deletion: the kubelet stops the processes and finishes with grace 0.
    pods.delete("probe", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        pods.clone(),
        "probe",
        conditions::is_deleted(&pod.uid().unwrap()),
        WAIT,
        "pod probe gone",
    )
    .await
    .unwrap();
    assert!(
        kubelet.running_pods().is_empty(),
        "{:?}",
        kubelet.running_pods()
    );
    // The PVC's data outlives the pod.
    assert!(data.join("token").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn kubelet_reports_an_unmapped_image_as_err_image_pull() {
    clawswarm_tests::trace_init();
    let cp = ControlPlane::start().await.unwrap();
    let (ns, _kubelet) = setup(&cp).await;
    let pods = Api::<Pod>::namespaced(cp.admin(), &ns);
    let mut pod = pod_yaml("noimage");
    pod.spec.as_mut().unwrap().containers[0].image = Some("example.invalid/missing:1".into());
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let waiting = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref())
                        == Some("ErrImagePull")
                })
            })
    };
    let pod = wait_for(pods, "noimage", waiting, WAIT, "ErrImagePull")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kubelet_restarts_an_exited_container_under_restart_policy_always() {
    clawswarm_tests::trace_init();
    let cp = ControlPlane::start().await.unwrap();
    let (ns, kubelet) = setup(&cp).await;
    let pods = Api::<Pod>::namespaced(cp.admin(), &ns);
    let mut pod = pod_yaml("flaky");
    // Exits at once the first time, stays up the second time.
    pod.spec.as_mut().unwrap().containers[0].args = Some(vec![
        "-c".into(),
        "if [ -e \"$DATA/once\" ]; then exec sleep 600; fi; touch \"$DATA/once\"; exit 3".into(),
    ]);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let restarted = |p: Option<&Pod>| {
        is_ready(p)
            && p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.restart_count >= 1))
    };
    wait_for(pods, "flaky", restarted, WAIT, "flaky restarted and Ready")
        .await
        .unwrap();
    assert_eq!(kubelet.running_pods(), vec!["flaky".to_string()]);
}

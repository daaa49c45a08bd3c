//! The pod and node status a kubelet would report, as merge patches.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::process::PodProcesses;

fn now() -> Value {
    serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now())).unwrap_or(Value::Null)
}

fn condition(kind: &str, ok: bool) -> Value {
    json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "lastTransitionTime": now(),
    })
}

pub(super) fn node_ready() -> Value {
    json!({ "status": {
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "clawswarm test kubelet", "lastHeartbeatTime": now(), "lastTransitionTime": now(),
        }],
        "addresses": [{ "type": "InternalIP", "address": "127.0.0.1" }],
    }})
}

/// A pod the kubelet already reported it cannot start (waits for a new pod).
pub(super) fn is_blocked(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                .is_some_and(|r| r == "ErrImagePull" || r == "CreateContainerConfigError")
        })
}

pub(super) fn waiting(container: &str, image: &str, reason: &str, message: &str) -> Value {
    json!({ "status": {
        "phase": "Pending",
        "conditions": [condition("PodScheduled", true), condition("Ready", false)],
        "containerStatuses": [{
            "name": container, "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": reason, "message": message } },
        }],
    }})
}

pub(super) fn failed(reason: &str, message: &str) -> Value {
    json!({ "status": {
        "phase": "Failed", "reason": reason, "message": message,
        "conditions": [condition("PodScheduled", true), condition("Ready", false)],
    }})
}

fn container_statuses(pod: &PodProcesses) -> Vec<Value> {
    pod.containers
        .iter()
        .map(|c| {
            let state = match (&c.child, c.last_exit) {
                (Some(_), _) => json!({ "running": { "startedAt": now() } }),
                (None, Some(code)) => json!({ "terminated": {
                    "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                }}),
                (None, None) => json!({ "waiting": { "reason": "ContainerCreating" } }),
            };
            json!({
                "name": c.launch.container, "image": c.launch.image, "imageID": "",
                "containerID": format!("local://{}", c.child.as_ref().and_then(|ch| ch.id()).unwrap_or(0)),
                "ready": c.child.is_some(), "started": c.child.is_some(),
                "restartCount": c.restarts, "state": state,
            })
        })
        .collect()
}

fn all_ready(pod: &PodProcesses) -> bool {
    pod.containers.iter().all(|c| c.child.is_some())
}

pub(super) fn running(pod: &PodProcesses, init_count: usize, spec: &Pod, pod_ip: &str) -> Value {
    let init_statuses: Vec<Value> = spec
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .take(init_count)
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": true, "restartCount": 0,
                "state": { "terminated": { "exitCode": 0, "reason": "Completed" } },
            })
        })
        .collect();
    let ready = all_ready(pod);
    json!({ "status": {
        "phase": "Running",
        "hostIP": "127.0.0.1", "hostIPs": [{ "ip": "127.0.0.1" }],
        "podIP": pod_ip, "podIPs": [{ "ip": pod_ip }],
        "startTime": now(),
        "conditions": [
            condition("PodScheduled", true), condition("Initialized", true),
            condition("ContainersReady", ready), condition("Ready", ready),
        ],
        "initContainerStatuses": init_statuses,
        "containerStatuses": container_statuses(pod),
    }})
}

pub(super) fn containers(pod: &PodProcesses) -> Value {
    let ready = all_ready(pod);
    json!({ "status": {
        "conditions": [
            condition("PodScheduled", true), condition("Initialized", true),
            condition("ContainersReady", ready), condition("Ready", ready),
        ],
        "containerStatuses": container_statuses(pod),
    }})
}

pub(super) fn terminal(pod: &PodProcesses, succeeded: bool) -> Value {
    json!({ "status": {
        "phase": if succeeded { "Succeeded" } else { "Failed" },
        "conditions": [
            condition("PodScheduled", true), condition("Initialized", true),
            condition("ContainersReady", false), condition("Ready", false),
        ],
        "containerStatuses": container_statuses(pod),
    }})
}

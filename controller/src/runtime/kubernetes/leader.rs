//! Leader election with a `coordination.k8s.io` Lease. Both replicas stay
//! Ready (a standby that is never Ready stalls rollouts); the leader labels
//! its own pod so the mesh Service selects it, runs the reconciler, and is
//! the only one accepting AgentLink streams. A standby refuses them with
//! UNAVAILABLE so a sidecar that reaches it retries; a leader that loses the
//! Lease drains the streams it holds (see [`follow_leadership`]).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::mesh::Mesh;
use crate::runtime::Role;

/// The label the mesh Service selects.
pub const LEADER_LABEL: &str = "clawswarm.dev/leader";

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    /// Unique per replica: the pod name.
    pub identity: String,
    /// The pod to label while leading (None outside a pod).
    pub pod_name: Option<String>,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
}

impl LeaderConfig {
    pub fn new(
        namespace: String,
        lease_name: String,
        identity: String,
        pod_name: Option<String>,
        lease_duration: Duration,
    ) -> Self {
        Self {
            namespace,
            lease_name,
            identity,
            pod_name,
            renew_interval: lease_duration / 3,
            lease_duration,
        }
    }
}

/// Take and keep the lease until `shutdown`; report leadership on `tx` and
/// this replica's [`Role`] on `role` (`Standby` as soon as the first attempt
/// finds the Lease held or fails, so the front doors know where they stand).
/// On shutdown a leader releases the lease so the standby takes over at once.
pub async fn run(
    client: Client,
    cfg: LeaderConfig,
    tx: watch::Sender<bool>,
    role: watch::Sender<Role>,
    shutdown: CancellationToken,
) {
    let leases = Api::<Lease>::namespaced(client.clone(), &cfg.namespace);
    let mut leading = false;
    let mut last_renew = tokio::time::Instant::now();
    loop {
        match try_acquire_or_renew(&leases, &cfg).await {
            Ok(true) => {
                last_renew = tokio::time::Instant::now();
                if !leading {
                    leading = true;
                    info!(identity = %cfg.identity, lease = %cfg.lease_name, "became leader");
                    label_own_pod(&client, &cfg, true).await;
                    let _ = tx.send(true);
                }
            }
            Ok(false) => {
                if leading {
                    leading = false;
                    warn!(identity = %cfg.identity, "lost the lease to another replica");
                    let _ = tx.send(false);
                    label_own_pod(&client, &cfg, false).await;
                }
            }
            Err(e) => {
                warn!(error = %e, "lease renewal failed");
                // Step down before the lease can lapse: another replica may
                // take it once it does, and two leaders must never serve.
                if leading && last_renew.elapsed() >= cfg.lease_duration.mul_f32(0.8) {
                    leading = false;
                    warn!(identity = %cfg.identity, "stepping down: could not renew in time");
                    let _ = tx.send(false);
                    label_own_pod(&client, &cfg, false).await;
                }
            }
        }
        role.send_if_modified(|r| set_role(r, leading));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(cfg.renew_interval) => {}
        }
    }
    role.send_if_modified(|r| set_role(r, false));
    if leading {
        let _ = tx.send(false);
        label_own_pod(&client, &cfg, false).await;
        if let Err(e) = release(&leases, &cfg).await {
            warn!(error = %e, "could not release the lease; the standby waits for it to lapse");
        } else {
            info!("lease released");
        }
    }
}

fn set_role(r: &mut Role, leading: bool) -> bool {
    let want = if leading { Role::Leader } else { Role::Standby };
    let changed = *r != want;
    *r = want;
    changed
}

/// Keep the mesh in step with leadership: refuse streams while not leading,
/// and when leadership is lost without the process exiting, drain the
/// streams this replica holds so their sidecars reconnect, through the mesh
/// Service, to the new leader (a former leader must not keep serving turns).
pub async fn follow_leadership(
    mut rx: watch::Receiver<bool>,
    mesh: Mesh,
    shutdown: CancellationToken,
) {
    let mut was_leading = false;
    loop {
        let leading = *rx.borrow_and_update();
        mesh.set_accepting(leading);
        if was_leading && !leading {
            let streams = mesh.connected_agents().len();
            warn!(
                streams,
                "lost leadership: handing turns over and draining agent links"
            );
            mesh.hand_over("this controller lost leadership; reconnect to the leader")
                .await;
        }
        was_leading = leading;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn expired(spec: &LeaseSpec) -> bool {
    let (Some(renew), Some(secs)) = (spec.renew_time.as_ref(), spec.lease_duration_seconds) else {
        return true;
    };
    renew.0 + SignedDuration::from_secs(i64::from(secs)) < Timestamp::now()
}

async fn try_acquire_or_renew(
    leases: &Api<Lease>,
    cfg: &LeaderConfig,
) -> Result<bool, kube::Error> {
    let secs = i32::try_from(cfg.lease_duration.as_secs())
        .unwrap_or(i32::MAX)
        .max(1);
    let Some(mut lease) = leases.get_opt(&cfg.lease_name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.lease_name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mine = holder == cfg.identity;
    if !mine && !holder.is_empty() && !expired(spec) {
        return Ok(false);
    }
    if !mine {
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.holder_identity = Some(cfg.identity.clone());
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(secs);
    // replace carries resourceVersion: a concurrent writer makes this a 409.
    match leases
        .replace(&cfg.lease_name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn release(leases: &Api<Lease>, cfg: &LeaderConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = leases.get_opt(&cfg.lease_name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    leases
        .replace(&cfg.lease_name, &PostParams::default(), &lease)
        .await?;
    Ok(())
}

async fn label_own_pod(client: &Client, cfg: &LeaderConfig, leading: bool) {
    let Some(pod) = &cfg.pod_name else { return };
    let pods = Api::<Pod>::namespaced(client.clone(), &cfg.namespace);
    let value = if leading {
        serde_json::json!("true")
    } else {
        serde_json::Value::Null
    };
    let patch = serde_json::json!({ "metadata": { "labels": { LEADER_LABEL: value } } });
    if let Err(e) = pods
        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        warn!(pod = %pod, leading, error = %e, "could not update the leader label on our pod");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lease_without_renew_time_is_expired() {
        assert!(expired(&LeaseSpec::default()));
    }

    #[test]
    fn fresh_lease_is_not_expired_and_old_one_is() {
        let mut spec = LeaseSpec {
            renew_time: Some(now()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(!expired(&spec));
        spec.renew_time = Some(MicroTime(Timestamp::now() - SignedDuration::from_secs(16)));
        assert!(expired(&spec));
    }
}

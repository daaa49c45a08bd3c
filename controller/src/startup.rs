//! Start-up order: nothing serves before the runtime knows this replica's
//! role (its caches synced, leadership decided); agents listed in
//! `CLAWSWARM_LOCAL_AGENTS` are created only then, and one that exists
//! already is fine.

use std::time::Duration;

use clawswarm_certs::AgentId;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    app::AppError,
    config::{RunArgs, parse_agent_pair},
    front_door::FrontDoor,
    runtime::{AgentSpec, Role, Runtime, RuntimeError},
};

/// How long start-up waits for the runtime to know this replica's role
/// (its caches sync within 60 s or it fails; then one Lease attempt).
pub const ROLE_TIMEOUT: Duration = Duration::from_secs(90);

/// `CLAWSWARM_LOCAL_AGENTS`, checked before any port is bound.
pub fn listed_agents(args: &RunArgs) -> Result<Vec<AgentSpec>, AppError> {
    args.local
        .agents
        .iter()
        .map(|pair| {
            let (name, owner) = parse_agent_pair(pair).map_err(AppError::Config)?;
            let id = AgentId::new(args.namespace.clone(), name)
                .map_err(|e| AppError::Config(format!("CLAWSWARM_LOCAL_AGENTS: {e}")))?;
            Ok(AgentSpec {
                id,
                owner,
                template: "default".into(),
            })
        })
        .collect()
}

/// Create the listed agents that do not exist yet, once the runtime's view
/// is complete. One that exists (created by an earlier run, by the other
/// replica in a race, or by kubectl) is fine; so is an owner who already
/// has an agent under another name (said once in the log).
pub async fn provision_listed(
    runtime: &dyn Runtime,
    specs: Vec<AgentSpec>,
) -> Result<(), AppError> {
    for spec in specs {
        let id = spec.id.clone();
        if runtime.get(&id).await?.is_some() {
            continue;
        }
        match runtime.provision(spec).await {
            Ok(_) => info!(agent = %id, "listed agent provisioned"),
            Err(RuntimeError::AlreadyExists(_)) => {
                info!(agent = %id, "listed agent already exists")
            }
            Err(RuntimeError::OwnerHasAgent { owner, agent }) => {
                warn!(agent = %id, owner = %owner, existing = %agent, "listed agent not created: its owner already has one")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Wait for the role; `Ok(None)` when shutdown came first, an error when
/// the runtime stopped or the role stayed unknown past [`ROLE_TIMEOUT`].
pub async fn await_role(
    door: &FrontDoor,
    runtime_task: &mut tokio::task::JoinHandle<Result<(), RuntimeError>>,
    shutdown: &CancellationToken,
) -> Result<Option<Role>, AppError> {
    tokio::select! {
        _ = shutdown.cancelled() => Ok(None),
        role = door.wait_known(ROLE_TIMEOUT) => role.map(Some).ok_or_else(|| {
            AppError::Runtime(RuntimeError::Unavailable(format!(
                "this replica's role stayed unknown for {ROLE_TIMEOUT:?} (caches or Lease)"
            )))
        }),
        ended = runtime_task => Err(match ended {
            Ok(Err(e)) => AppError::Runtime(e),
            Ok(Ok(())) => AppError::Runtime(RuntimeError::Unavailable("the runtime stopped during start-up".into())),
            Err(e) => AppError::Runtime(RuntimeError::Unavailable(format!("the runtime task failed: {e}"))),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

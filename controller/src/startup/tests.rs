use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use super::*;
use crate::identity::{AuthError, Authenticator, CertifyClaim};
use crate::runtime::{AgentMode, AgentPhase, AgentRecord, TokenTotals};
use crate::slack::metrics::SlackMetrics;

struct NoAuth;

#[async_trait]
impl Authenticator for NoAuth {
    fn kind(&self) -> &'static str {
        "none"
    }
    async fn authenticate(&self, _: &CertifyClaim<'_>) -> Result<(), AuthError> {
        Err(AuthError::MissingToken)
    }
}

/// A runtime whose view lags its backend: `get` finds nothing, `provision`
/// answers with what the backend says (another replica created the agent).
struct Lagging {
    answer: fn(&AgentSpec) -> Result<AgentRecord, RuntimeError>,
    provisioned: Mutex<Vec<String>>,
}

fn record(spec: &AgentSpec) -> AgentRecord {
    AgentRecord {
        id: spec.id.clone(),
        owner: spec.owner.clone(),
        template: spec.template.clone(),
        mode: AgentMode::Running,
        phase: AgentPhase::Pending,
        detail: String::new(),
        usage: TokenTotals::default(),
        data: Default::default(),
    }
}

#[async_trait]
impl Runtime for Lagging {
    fn kind(&self) -> &'static str {
        "lagging"
    }
    fn authenticator(&self) -> Arc<dyn Authenticator> {
        Arc::new(NoAuth)
    }
    async fn provision(&self, spec: AgentSpec) -> Result<AgentRecord, RuntimeError> {
        self.provisioned
            .lock()
            .unwrap()
            .push(spec.id.name().to_owned());
        (self.answer)(&spec)
    }
    async fn deprovision(&self, id: &AgentId, _: bool) -> Result<(), RuntimeError> {
        Err(RuntimeError::NotFound(id.clone()))
    }
    async fn suspend(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError> {
        Err(RuntimeError::NotFound(id.clone()))
    }
    async fn resume(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError> {
        Err(RuntimeError::NotFound(id.clone()))
    }
    async fn restart(&self, id: &AgentId) -> Result<AgentRecord, RuntimeError> {
        Err(RuntimeError::NotFound(id.clone()))
    }
    async fn get(&self, _: &AgentId) -> Result<Option<AgentRecord>, RuntimeError> {
        Ok(None)
    }
    async fn list(&self) -> Result<Vec<AgentRecord>, RuntimeError> {
        Ok(Vec::new())
    }
    async fn record_activity(&self, _: &AgentId) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn record_usage(&self, _: &AgentId, _: TokenTotals) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn record_metered(
        &self,
        _: &AgentId,
        _: &clawswarm_proto::v1::MeteredUsage,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn notice_delivered(&self, _: &AgentId, _: &str) -> Result<bool, RuntimeError> {
        Ok(false)
    }
    async fn record_notice_delivered(&self, _: &AgentId, _: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn run(&self, _: CancellationToken) -> Result<(), RuntimeError> {
        Ok(())
    }
}

fn specs() -> Vec<AgentSpec> {
    ["alice", "bob"]
        .into_iter()
        .map(|n| AgentSpec {
            id: AgentId::new("team".to_owned(), n.to_owned()).unwrap(),
            owner: format!("U-{n}"),
            template: "default".into(),
        })
        .collect()
}

#[tokio::test]
async fn listed_agents_that_already_exist_do_not_stop_the_start() {
    let rt = Lagging {
        answer: |s| Err(RuntimeError::AlreadyExists(s.id.clone())),
        provisioned: Mutex::default(),
    };
    provision_listed(&rt, specs()).await.unwrap();
    assert_eq!(*rt.provisioned.lock().unwrap(), ["alice", "bob"]);
}

#[tokio::test]
async fn a_listed_owner_who_has_another_agent_does_not_stop_the_start() {
    let rt = Lagging {
        answer: |s| {
            Err(RuntimeError::OwnerHasAgent {
                owner: s.owner.clone(),
                agent: AgentId::new("team".to_owned(), "other".to_owned()).unwrap(),
            })
        },
        provisioned: Mutex::default(),
    };
    provision_listed(&rt, specs()).await.unwrap();
}

#[tokio::test]
async fn listed_agents_are_created_and_other_failures_are_reported() {
    let rt = Lagging {
        answer: |s| Ok(record(s)),
        provisioned: Mutex::default(),
    };
    provision_listed(&rt, specs()).await.unwrap();
    assert_eq!(rt.provisioned.lock().unwrap().len(), 2);
    let rt = Lagging {
        answer: |_| Err(RuntimeError::Invalid("template".into())),
        provisioned: Mutex::default(),
    };
    assert!(matches!(
        provision_listed(&rt, specs()).await,
        Err(AppError::Runtime(RuntimeError::Invalid(_)))
    ));
}

fn door(role: Role) -> (watch::Sender<Role>, Arc<FrontDoor>) {
    let (tx, rx) = watch::channel(role);
    (tx, FrontDoor::new(rx, false, SlackMetrics::default()))
}

#[tokio::test(start_paused = true)]
async fn start_up_waits_for_the_role_and_fails_when_the_runtime_stops() {
    let stop = CancellationToken::new();
    // The role becomes known: start-up goes on.
    let (tx, d) = door(Role::Starting);
    let mut rt = tokio::spawn(std::future::pending::<Result<(), RuntimeError>>());
    let waiting = tokio::spawn({
        let (d, stop) = (d.clone(), stop.clone());
        async move {
            let mut rt = tokio::spawn(std::future::pending::<Result<(), RuntimeError>>());
            await_role(&d, &mut rt, &stop).await
        }
    });
    tokio::task::yield_now().await;
    tx.send_replace(Role::Standby);
    assert!(matches!(waiting.await.unwrap(), Ok(Some(Role::Standby))));

    // The runtime fails before (caches never synced): an error, not a hang.
    let (_tx, d) = door(Role::Starting);
    let mut failed = tokio::spawn(async { Err(RuntimeError::Unavailable("no sync".into())) });
    assert!(matches!(
        await_role(&d, &mut failed, &stop).await,
        Err(AppError::Runtime(RuntimeError::Unavailable(_)))
    ));

    // Nothing ever decides: bounded by ROLE_TIMEOUT.
    assert!(await_role(&d, &mut rt, &stop).await.is_err());

    // Shutdown first: no error, nothing to serve.
    stop.cancel();
    assert!(matches!(await_role(&d, &mut rt, &stop).await, Ok(None)));
    rt.abort();
}

#[tokio::test(start_paused = true)]
async fn servers_wait_for_the_role_before_serving() {
    let (tx, d) = door(Role::Starting);
    let stop = CancellationToken::new();
    let gate = tokio::spawn({
        let (d, stop) = (d.clone(), stop.clone());
        async move { d.serving_allowed(&stop).await }
    });
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!gate.is_finished(), "served before the role was known");
    tx.send_replace(Role::Leader);
    assert!(gate.await.unwrap());
    // A stop while waiting ends the wait without serving.
    let (_tx, d) = door(Role::Starting);
    stop.cancel();
    assert!(!d.serving_allowed(&stop).await);
}

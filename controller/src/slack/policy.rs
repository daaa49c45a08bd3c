//! Who may create an agent: everyone (`open`), listed users and members of
//! listed Slack user groups (`allowlist`), or admins only (`admins`); never
//! more than `max_agents` agents, and never more than `max_concurrent_starts`
//! agents starting at once (cold starts are heavy). Every decision is logged
//! with its reason.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tracing::{info, warn};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProvisioningMode {
    /// Anyone in the workspace.
    Open,
    /// Users in the allowlist or in an allowed Slack user group; admins too.
    Allowlist,
    /// Admins only.
    Admins,
}

#[derive(Clone, Debug)]
pub struct PolicyConfig {
    pub mode: ProvisioningMode,
    /// Slack user ids with the admin commands.
    pub admins: HashSet<String>,
    pub allow_users: HashSet<String>,
    /// Slack user group ids (`S...`).
    pub allow_groups: Vec<String>,
    pub max_agents: Option<usize>,
    pub max_concurrent_starts: usize,
    /// How long a user group's membership is trusted before asking Slack again.
    pub group_cache_ttl: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            mode: ProvisioningMode::Open,
            admins: HashSet::new(),
            allow_users: HashSet::new(),
            allow_groups: Vec::new(),
            max_agents: None,
            max_concurrent_starts: 4,
            group_cache_ttl: Duration::from_secs(300),
        }
    }
}

/// Why someone may not have an agent (shown to them, so phrased for people).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("agents here are only for people on the allowlist; ask an admin to add you")]
    NotAllowlisted,
    #[error("only admins can create agents here")]
    AdminsOnly,
    #[error("this workspace has reached its limit of {0} agents; ask an admin")]
    AgentCap(usize),
    #[error("too many agents are starting right now; try again in a minute")]
    TooManyStarts,
    #[error("could not check your user group membership with Slack; try again later")]
    GroupLookupFailed,
}

impl Denied {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NotAllowlisted => "not_allowlisted",
            Self::AdminsOnly => "admins_only",
            Self::AgentCap(_) => "agent_cap",
            Self::TooManyStarts => "too_many_starts",
            Self::GroupLookupFailed => "group_lookup_failed",
        }
    }
}

/// Members of a Slack user group (the real one calls usergroups.users.list).
#[async_trait]
pub trait GroupDirectory: Send + Sync {
    async fn members(&self, group: &str) -> Result<Vec<String>, String>;
}

pub struct Policy {
    cfg: PolicyConfig,
    starts: Arc<Semaphore>,
    groups: Mutex<HashMap<String, (Instant, HashSet<String>)>>,
}

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Self {
        let starts = Arc::new(Semaphore::new(cfg.max_concurrent_starts.max(1)));
        Self {
            cfg,
            starts,
            groups: Mutex::default(),
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.cfg.admins.contains(user)
    }

    /// May `user` create an agent, given `existing` agents in total?
    pub async fn may_provision(
        &self,
        user: &str,
        existing: usize,
        dir: &dyn GroupDirectory,
    ) -> Result<(), Denied> {
        let decision = self.decide(user, existing, dir).await;
        match &decision {
            Ok(()) => {
                info!(owner = %user, mode = ?self.cfg.mode, existing, decision = "allow", "provisioning decision")
            }
            Err(d) => {
                info!(owner = %user, mode = ?self.cfg.mode, existing, decision = "deny", reason = d.metric_label(), "provisioning decision")
            }
        }
        decision
    }

    async fn decide(
        &self,
        user: &str,
        existing: usize,
        dir: &dyn GroupDirectory,
    ) -> Result<(), Denied> {
        if let Some(cap) = self.cfg.max_agents
            && existing >= cap
        {
            return Err(Denied::AgentCap(cap));
        }
        let admin = self.is_admin(user);
        match self.cfg.mode {
            ProvisioningMode::Open => Ok(()),
            ProvisioningMode::Admins if admin => Ok(()),
            ProvisioningMode::Admins => Err(Denied::AdminsOnly),
            ProvisioningMode::Allowlist if admin || self.cfg.allow_users.contains(user) => Ok(()),
            ProvisioningMode::Allowlist => self.in_allowed_group(user, dir).await,
        }
    }

    async fn in_allowed_group(&self, user: &str, dir: &dyn GroupDirectory) -> Result<(), Denied> {
        let mut lookup_failed = false;
        for group in &self.cfg.allow_groups {
            let cached = {
                let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
                groups
                    .get(group)
                    .filter(|(at, _)| at.elapsed() < self.cfg.group_cache_ttl)
                    .map(|(_, m)| m.contains(user))
            };
            let member = match cached {
                Some(m) => m,
                None => match dir.members(group).await {
                    Ok(members) => {
                        let set: HashSet<String> = members.into_iter().collect();
                        let member = set.contains(user);
                        self.groups
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(group.clone(), (Instant::now(), set));
                        member
                    }
                    Err(e) => {
                        warn!(group = %group, error = %e, "could not read user group members");
                        lookup_failed = true;
                        false
                    }
                },
            };
            if member {
                return Ok(());
            }
        }
        // Fail closed, but say it was Slack and not the person.
        Err(if lookup_failed {
            Denied::GroupLookupFailed
        } else {
            Denied::NotAllowlisted
        })
    }

    /// A slot for one agent start; hold it until the agent is ready or failed.
    pub fn try_start(&self) -> Result<OwnedSemaphorePermit, Denied> {
        let permit = self
            .starts
            .clone()
            .try_acquire_owned()
            .map_err(|_| Denied::TooManyStarts);
        if permit.is_err() {
            info!(
                limit = self.cfg.max_concurrent_starts,
                decision = "deny",
                reason = "too_many_starts",
                "agent start decision"
            );
        }
        permit
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Dir {
        groups: HashMap<String, Vec<String>>,
        calls: AtomicUsize,
        fail: bool,
    }

    impl Dir {
        fn new(groups: &[(&str, &[&str])]) -> Self {
            let groups = groups
                .iter()
                .map(|(g, m)| (g.to_string(), m.iter().map(|s| s.to_string()).collect()))
                .collect();
            Self {
                groups,
                calls: AtomicUsize::new(0),
                fail: false,
            }
        }
    }

    #[async_trait]
    impl GroupDirectory for Dir {
        async fn members(&self, group: &str) -> Result<Vec<String>, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Err("slack down".into());
            }
            self.groups
                .get(group)
                .cloned()
                .ok_or_else(|| "no_such_subteam".into())
        }
    }

    fn cfg(mode: ProvisioningMode) -> PolicyConfig {
        PolicyConfig {
            mode,
            admins: ["UADMIN".to_string()].into(),
            allow_users: ["UALICE".to_string()].into(),
            allow_groups: vec!["SENG".into()],
            ..PolicyConfig::default()
        }
    }

    #[tokio::test]
    async fn open_allows_anyone_up_to_the_cap() {
        let dir = Dir::new(&[]);
        let p = Policy::new(PolicyConfig {
            max_agents: Some(2),
            ..cfg(ProvisioningMode::Open)
        });
        assert_eq!(p.may_provision("UANY", 1, &dir).await, Ok(()));
        assert_eq!(
            p.may_provision("UANY", 2, &dir).await,
            Err(Denied::AgentCap(2))
        );
        assert_eq!(
            p.may_provision("UADMIN", 2, &dir).await,
            Err(Denied::AgentCap(2)),
            "the cap binds admins too"
        );
    }

    #[tokio::test]
    async fn admins_mode_refuses_everyone_else() {
        let dir = Dir::new(&[]);
        let p = Policy::new(cfg(ProvisioningMode::Admins));
        assert_eq!(p.may_provision("UADMIN", 0, &dir).await, Ok(()));
        assert_eq!(
            p.may_provision("UALICE", 0, &dir).await,
            Err(Denied::AdminsOnly)
        );
    }

    #[tokio::test]
    async fn allowlist_admits_listed_users_and_group_members_only() {
        let dir = Dir::new(&[("SENG", &["UBOB"])]);
        let p = Policy::new(cfg(ProvisioningMode::Allowlist));
        assert_eq!(p.may_provision("UALICE", 0, &dir).await, Ok(()));
        assert_eq!(p.may_provision("UBOB", 0, &dir).await, Ok(()));
        assert_eq!(
            p.may_provision("UMALLORY", 0, &dir).await,
            Err(Denied::NotAllowlisted)
        );
        assert_eq!(
            dir.calls.load(Ordering::SeqCst),
            1,
            "group membership is cached"
        );
    }

    #[tokio::test]
    async fn a_failed_group_lookup_denies_and_says_why() {
        let mut dir = Dir::new(&[("SENG", &["UBOB"])]);
        dir.fail = true;
        let p = Policy::new(cfg(ProvisioningMode::Allowlist));
        assert_eq!(
            p.may_provision("UBOB", 0, &dir).await,
            Err(Denied::GroupLookupFailed)
        );
    }

    #[tokio::test]
    async fn concurrent_starts_are_capped_and_released() {
        let p = Policy::new(PolicyConfig {
            max_concurrent_starts: 1,
            ..cfg(ProvisioningMode::Open)
        });
        let first = p.try_start().unwrap();
        assert_eq!(p.try_start().err(), Some(Denied::TooManyStarts));
        drop(first);
        assert!(p.try_start().is_ok());
    }
}

//! `/agent` (and its alias `/setup-agent`): a person manages their own agent;
//! admins list agents and deprovision anyone's.
//!
//! Replies go through the command's `response_url`, so only the person who
//! ran the command sees them. Starting an agent reports progress: "starting"
//! at once, a patience message while a cold start runs (~20 s for OpenClaw),
//! then "ready" — or a plain error when it fails or takes too long.
//!
//! Agent names: `u-` + the lowercased Slack user id (`U012AB3CD` →
//! `u-u012ab3cd`), a valid DNS-1123 label, stable for the person and unique
//! in a workspace (and across an Enterprise Grid, whose user ids are global).

use std::time::Duration;

use clawswarm_certs::AgentId;
use tracing::{info, warn};

use super::{Connector, app::SlackApp, policy::ProvisioningMode};
use crate::runtime::{AgentPhase, AgentSpec, RuntimeError};

#[derive(Clone, Debug)]
pub struct CommandsConfig {
    pub default_template: String,
    /// How long an agent may take to become ready after setup or restart.
    pub start_timeout: Duration,
    /// How often a slow start gets a patience message.
    pub patience_interval: Duration,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            default_template: "default".into(),
            start_timeout: Duration::from_secs(180),
            patience_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Setup {
        template: Option<String>,
    },
    Status,
    Usage,
    Restart,
    Suspend,
    Delete {
        confirmed: bool,
    },
    Help,
    /// `/agent skills …` (docs/skills.md).
    Skills(super::skills_command::SkillsCommand),
    List,
    /// Slack user id, if one could be read from the text.
    Deprovision {
        user: Option<String>,
    },
    Unknown(String),
}

impl Command {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Setup { .. } => "setup",
            Self::Status => "status",
            Self::Usage => "usage",
            Self::Restart => "restart",
            Self::Suspend => "suspend",
            Self::Delete { .. } => "delete",
            Self::Help => "help",
            Self::Skills(_) => "skills",
            Self::List => "list",
            Self::Deprovision { .. } => "deprovision",
            Self::Unknown(_) => "unknown",
        }
    }
}

/// The agent name for a Slack user (see the module docs).
pub fn agent_name_for(user: &str) -> String {
    format!("u-{}", user.to_ascii_lowercase())
}

pub fn agent_id_for(namespace: &str, user: &str) -> Result<AgentId, String> {
    AgentId::new(namespace, agent_name_for(user))
        .map_err(|e| format!("cannot name an agent for {user}: {e}"))
}

/// `<@U123|name>`, `<@U123>` or `U123`.
fn parse_user(s: &str) -> Option<String> {
    let s = s.trim();
    let inner = s
        .strip_prefix("<@")
        .and_then(|r| r.strip_suffix('>'))
        .map(|r| r.split('|').next().unwrap_or(r))
        .unwrap_or(s);
    let ok = inner.len() >= 2
        && (inner.starts_with('U') || inner.starts_with('W'))
        && inner.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| inner.to_owned())
}

/// `/agent <sub> [args]`; `/setup-agent [template]` is `/agent setup [template]`
/// unless its first word is itself a subcommand.
pub fn parse(command: &str, text: &str) -> Command {
    let mut words = text.split_whitespace();
    let first = words.next().map(str::to_ascii_lowercase);
    let rest: Vec<&str> = words.collect();
    let alias = command.trim_start_matches('/') == "setup-agent";
    match first.as_deref() {
        None if alias => Command::Setup { template: None },
        None | Some("help") => Command::Help,
        Some("setup") => Command::Setup {
            template: rest.first().map(|s| (*s).to_owned()),
        },
        Some("status") => Command::Status,
        Some("usage") => Command::Usage,
        Some("restart") => Command::Restart,
        Some("suspend") => Command::Suspend,
        Some("delete") => Command::Delete {
            confirmed: rest
                .first()
                .is_some_and(|w| w.eq_ignore_ascii_case("confirm")),
        },
        Some("list") => Command::List,
        Some("skills") => Command::Skills(super::skills_command::parse(&rest)),
        Some("deprovision") => Command::Deprovision {
            user: rest.first().and_then(|u| parse_user(u)),
        },
        Some(_) if alias && rest.is_empty() => Command::Setup {
            template: text.split_whitespace().next().map(str::to_owned),
        },
        Some(other) => Command::Unknown(other.to_owned()),
    }
}

pub fn help_text(is_admin: bool) -> String {
    let mut t = String::from(
        "*Your agent*\n\
         • `/agent setup [template]` — create your agent (about 20 s the first time)\n\
         • `/agent status` — is it running, connected and ready\n\
         • `/agent usage` — tokens it has used\n\
         • `/agent restart` — restart it (your data is kept)\n\
         • `/agent suspend` — stop it until your next message (data kept)\n\
         • `/agent delete` — delete it and its data (asks you to confirm)\n\
         • `/agent skills` — its skills and the company skills library (`/agent skills help`)\n\
         Talk to it by sending me a direct message, or mention me in a channel.",
    );
    if is_admin {
        t.push_str("\n*Admins*\n• `/agent list` — every agent\n• `/agent deprovision @person` — delete someone's agent and its data");
    }
    t
}

pub fn no_agent_text(mode: ProvisioningMode) -> String {
    match mode {
        ProvisioningMode::Open => "You don't have an agent yet. Run `/agent setup` to create one (it takes about 20 seconds).".into(),
        _ => "You don't have an agent yet. Run `/agent setup` to create one; if you are not allowed to, ask an admin.".into(),
    }
}

/// Commands answered inside the ack (no work needed).
pub fn answer_at_once(cmd: &Command, is_admin: bool) -> Option<String> {
    match cmd {
        Command::Help => Some(help_text(is_admin)),
        Command::Unknown(w) => Some(format!("I don't know `{w}`.\n{}", help_text(is_admin))),
        Command::Delete { confirmed: false } => Some(
            "This deletes your agent and everything it keeps (memory, files). To go ahead, run `/agent delete confirm`.".into(),
        ),
        Command::Deprovision { user: None } => Some("Usage: `/agent deprovision @person`".into()),
        Command::Skills(super::skills_command::SkillsCommand::Usage(text)) => {
            let mut t = text.clone();
            if !t.contains(super::skills_command::USAGE) {
                t.push_str(&format!("\n{}", super::skills_command::USAGE));
            }
            if is_admin {
                t.push_str(&format!("\n{}", super::skills_command::ADMIN_USAGE));
            }
            Some(t)
        }
        _ => None,
    }
}

/// What the ack says for commands that do work afterwards.
pub fn acknowledgement(cmd: &Command) -> String {
    match cmd {
        Command::Setup { .. } => "Setting up your agent…".into(),
        Command::Restart => "Restarting your agent…".into(),
        _ => "Working on it…".into(),
    }
}

/// Run a queued command, answering through `response_url`.
pub async fn execute<C: Connector>(
    app: &SlackApp<C>,
    user: &str,
    _channel: &str,
    response_url: &str,
    cmd: Command,
) {
    let say = |text: String| async move {
        if let Err(e) = app.api.respond(response_url, &text).await {
            warn!(error = %e, "could not answer the command");
        }
    };
    let is_admin = app.policy.is_admin(user);
    let runtime = app.router.runtime().clone();
    let mine = match app.router.agent_for_owner(user).await {
        Ok(a) => a,
        Err(e) => {
            warn!(owner = %user, error = %e, "agent lookup failed");
            return say(format!(":warning: I could not look up your agent: {e}")).await;
        }
    };
    match cmd {
        Command::Setup { template } => {
            if let Some(a) = mine {
                return say(format!(
                    "You already have an agent (`{}`, {}). Try `/agent status`.",
                    a.id.name(),
                    a.phase
                ))
                .await;
            }
            setup(app, user, template, &say).await;
        }
        Command::Skills(sub) => {
            let Some(skills) = app.router.skills() else {
                return say("This controller has no skills library.".into()).await;
            };
            let agent = mine.as_ref().map(|a| &a.id);
            say(super::skills_command::execute(skills, sub, agent, is_admin).await).await
        }
        Command::List | Command::Deprovision { .. } if !is_admin => {
            say("Only admins can do that.".into()).await
        }
        Command::List => match runtime.list().await {
            Ok(all) if all.is_empty() => say("No agents yet.".into()).await,
            Ok(all) => {
                let mut lines: Vec<String> = all
                    .iter()
                    .take(50)
                    .map(|a| {
                        format!(
                            "• `{}` — <@{}> — {} ({:?})",
                            a.id.name(),
                            a.owner,
                            a.phase,
                            a.mode
                        )
                    })
                    .collect();
                if all.len() > 50 {
                    lines.push(format!("…and {} more", all.len() - 50));
                }
                say(format!("*{} agents*\n{}", all.len(), lines.join("\n"))).await
            }
            Err(e) => say(format!(":warning: Could not list agents: {e}")).await,
        },
        Command::Deprovision { user: Some(target) } => {
            match app.router.agent_for_owner(&target).await {
                Ok(Some(a)) => {
                    info!(admin = %user, owner = %target, agent = %a.id, "admin deprovisioning an agent");
                    match runtime.deprovision(&a.id, true).await {
                        Ok(()) => {
                            say(format!(
                                "Deleted <@{target}>'s agent `{}` and its data.",
                                a.id.name()
                            ))
                            .await
                        }
                        Err(e) => {
                            say(format!(":warning: Could not delete `{}`: {e}", a.id.name())).await
                        }
                    }
                }
                Ok(None) => say(format!("<@{target}> has no agent.")).await,
                Err(e) => {
                    say(format!(
                        ":warning: Could not look up <@{target}>'s agent: {e}"
                    ))
                    .await
                }
            }
        }
        _ if mine.is_none() => say(no_agent_text(app.policy.config().mode)).await,
        Command::Status => {
            let Some(a) = mine else { return };
            let link = app.router.mesh().state(&a.id);
            let yes = |b: bool| if b { "yes" } else { "no" };
            let shown = crate::router::shown_detail(&a, &link);
            let detail = if shown.is_empty() {
                String::new()
            } else {
                format!("\n{shown}")
            };
            say(format!(
                "Agent `{}` (template `{}`): {} ({:?}). Connected: {}. Ready: {}.{detail}",
                a.id.name(),
                a.template,
                a.phase,
                a.mode,
                yes(link.connected),
                yes(link.connected && link.workload_ready)
            ))
            .await
        }
        Command::Usage => {
            let Some(a) = mine else { return };
            let u = a.usage;
            let d = a.data;
            say(format!(
                "Tokens used by `{}`: {} input, {} output, {} cache read, {} cache write.\n\
                 Company data: {} queries ({} refused), {} documents read.",
                a.id.name(),
                u.input,
                u.output,
                u.cache_read,
                u.cache_write,
                d.queries,
                d.refused,
                d.documents
            ))
            .await
        }
        Command::Restart => {
            let Some(a) = mine else { return };
            let permit = match app.policy.try_start() {
                Ok(p) => p,
                Err(d) => return say(format!(":hourglass: {d}")).await,
            };
            match runtime.restart(&a.id).await {
                Ok(_) => wait_ready(app, &a.id, "restarted", &say).await,
                Err(e) => say(format!(":x: Could not restart your agent: {e}")).await,
            }
            drop(permit);
        }
        Command::Suspend => {
            let Some(a) = mine else { return };
            match runtime.suspend(&a.id).await {
                Ok(_) => {
                    say(
                        "Your agent is suspended; its data is kept. Your next message wakes it."
                            .into(),
                    )
                    .await
                }
                Err(e) => say(format!(":x: Could not suspend your agent: {e}")).await,
            }
        }
        Command::Delete { confirmed: true } => {
            let Some(a) = mine else { return };
            info!(owner = %user, agent = %a.id, "owner deleting their agent");
            match runtime.deprovision(&a.id, true).await {
                Ok(()) => {
                    say(format!(
                        "Your agent `{}` and its data were deleted.",
                        a.id.name()
                    ))
                    .await
                }
                Err(e) => say(format!(":x: Could not delete your agent: {e}")).await,
            }
        }
        Command::Help
        | Command::Unknown(_)
        | Command::Delete { confirmed: false }
        | Command::Deprovision { user: None } => {
            if let Some(t) = answer_at_once(&cmd, is_admin) {
                say(t).await
            }
        }
    }
}

async fn setup<C, F, Fut>(app: &SlackApp<C>, user: &str, template: Option<String>, say: &F)
where
    C: Connector,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = app.router.runtime().clone();
    let existing = match runtime.list().await {
        Ok(all) => all.len(),
        Err(e) => return say(format!(":warning: Could not check the agent count: {e}")).await,
    };
    let decision = app
        .policy
        .may_provision(user, existing, app.api.as_ref())
        .await;
    let (verdict, reason) = match &decision {
        Ok(()) => ("allow", "allowed"),
        Err(d) => ("deny", d.metric_label()),
    };
    let labels = super::metrics::DecisionLabels {
        decision: verdict,
        reason,
    };
    app.api.metrics().provisioning.get_or_create(&labels).inc();
    if let Err(denied) = decision {
        return say(format!(":no_entry: Sorry, {denied}.")).await;
    }
    let permit = match app.policy.try_start() {
        Ok(p) => p,
        Err(d) => return say(format!(":hourglass: {d}")).await,
    };
    let id = match agent_id_for(&app.namespace, user) {
        Ok(id) => id,
        Err(e) => return say(format!(":x: {e}")).await,
    };
    let template = template.unwrap_or_else(|| app.commands.default_template.clone());
    let started = tokio::time::Instant::now();
    match runtime
        .provision(AgentSpec {
            id: id.clone(),
            owner: user.to_owned(),
            template: template.clone(),
        })
        .await
    {
        Ok(_) => {
            info!(owner = %user, agent = %id, template = %template, "agent provisioned from slack")
        }
        Err(RuntimeError::OwnerHasAgent { agent, .. }) => {
            return say(format!("You already have an agent (`{}`).", agent.name())).await;
        }
        Err(e) => {
            warn!(owner = %user, agent = %id, error = %e, "provisioning failed");
            return say(format!(":x: Could not create your agent: {e}")).await;
        }
    }
    say(format!("Your agent `{}` is starting (template `{template}`). A first start takes about 20 seconds…", id.name())).await;
    wait_ready(app, &id, "ready", say).await;
    info!(owner = %user, agent = %id, seconds = started.elapsed().as_secs_f64(), "agent start finished");
    drop(permit);
}

/// Report progress until the agent is connected and its workload ready,
/// it fails, or `start_timeout` passes.
async fn wait_ready<C, F, Fut>(app: &SlackApp<C>, id: &AgentId, word: &str, say: &F)
where
    C: Connector,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let cfg = &app.commands;
    let mut state = app.router.mesh().watch_state(id);
    let deadline = tokio::time::Instant::now() + cfg.start_timeout;
    let mut patience = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.patience_interval,
        cfg.patience_interval,
    );
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    // response_url takes five messages; keep two for patience.
    let mut patience_left = 2;
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            ready = async { state.wait_for(|s| s.connected && s.workload_ready).await.is_ok() } => {
                if ready {
                    return say(format!(":white_check_mark: Your agent `{}` is {word}. Send me a direct message to talk to it.", id.name())).await;
                }
                return say(":x: Lost track of your agent while it started; try `/agent status`.".into()).await;
            }
            _ = tokio::time::sleep_until(deadline) => {
                warn!(agent = %id, timeout = ?cfg.start_timeout, "agent not ready in time");
                return say(format!(
                    ":x: Your agent `{}` did not become ready within {} seconds. Try `/agent restart`, or ask an admin to check the controller logs.",
                    id.name(), cfg.start_timeout.as_secs()
                )).await;
            }
            _ = patience.tick(), if patience_left > 0 => {
                patience_left -= 1;
                say("Still starting — a cold start can take a minute. I'll tell you when it's ready.".into()).await;
            }
            _ = poll.tick() => match app.router.runtime().get(id).await {
                Ok(Some(a)) if a.phase == AgentPhase::Failed => {
                    warn!(agent = %id, "agent failed to start");
                    let why = if a.detail.is_empty() { "no detail".to_owned() } else { a.detail };
                    return say(format!(":x: Your agent failed to start: {why}")).await;
                }
                Ok(None) => return say(":x: Your agent was removed while it started.".into()).await,
                _ => {}
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_parse_with_their_arguments() {
        assert_eq!(
            parse("/agent", "setup research"),
            Command::Setup {
                template: Some("research".into())
            }
        );
        assert_eq!(parse("/agent", "  STATUS "), Command::Status);
        assert_eq!(
            parse("/agent", "delete"),
            Command::Delete { confirmed: false }
        );
        assert_eq!(
            parse("/agent", "delete confirm"),
            Command::Delete { confirmed: true }
        );
        assert_eq!(parse("/agent", ""), Command::Help);
        assert_eq!(parse("/agent", "dance"), Command::Unknown("dance".into()));
        assert_eq!(
            parse("/agent", "deprovision <@U0ALICE|alice>"),
            Command::Deprovision {
                user: Some("U0ALICE".into())
            }
        );
        assert_eq!(
            parse("/agent", "deprovision bob"),
            Command::Deprovision { user: None }
        );
    }

    #[test]
    fn setup_agent_is_an_alias() {
        assert_eq!(parse("/setup-agent", ""), Command::Setup { template: None });
        assert_eq!(
            parse("/setup-agent", "research"),
            Command::Setup {
                template: Some("research".into())
            }
        );
        assert_eq!(parse("/setup-agent", "status"), Command::Status);
    }

    #[test]
    fn agent_names_are_dns_labels_derived_from_the_user_id() {
        assert_eq!(agent_name_for("U012AB3CD"), "u-u012ab3cd");
        assert_eq!(
            agent_id_for("team", "W0ABC").unwrap().to_string(),
            "team/u-w0abc"
        );
        assert!(agent_id_for("team", "U1/../x").is_err());
    }

    #[test]
    fn destructive_and_admin_help_need_the_right_words() {
        assert!(
            answer_at_once(&Command::Delete { confirmed: false }, false)
                .unwrap()
                .contains("/agent delete confirm")
        );
        assert!(answer_at_once(&Command::Delete { confirmed: true }, false).is_none());
        assert!(!help_text(false).contains("deprovision"));
        assert!(help_text(true).contains("deprovision"));
    }
}

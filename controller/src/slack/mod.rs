//! The Slack front door: one Slack app for everyone, each person talking to
//! their own agent. See docs/slack.md for the decisions and the setup.
//!
//! `run` is the whole of it: check the bot token (`auth.test`), start the
//! transport (Socket Mode by default, or the Events API), the workers that
//! turn messages into turns and stream replies, and the notice courier.
//! Which replica runs it, and when, is `crate::front_door`'s decision.

pub mod api;
pub mod app;
pub mod commands;
pub mod dedupe;
pub mod metrics;
pub mod notices;
pub mod policy;
pub mod ratelimit;
pub mod reply;
pub mod routing;
pub mod signature;
pub mod skills_command;
pub mod split;
pub mod target;
pub mod transport;

use std::{collections::HashSet, fmt, net::SocketAddr, str::FromStr, sync::Arc, time::Duration};

use hyper_util::client::legacy::connect::HttpConnector;
use slack_morphism::{
    prelude::*, socket_mode::clients_manager::SlackSocketModeClientsManagerFactory,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::{
    config::parse_duration,
    mesh::{InboundNotice, PendingReply},
    router::Router,
};
use api::SlackApi;
use app::SlackApp;
use commands::CommandsConfig;
use policy::{Policy, PolicyConfig, ProvisioningMode};
use reply::ReplyConfig;
use routing::BotIdentity;
use signature::SignatureVerifier;

/// What the front door needs of a slack-morphism connector: the real
/// HTTPS one and the plain-HTTP one tests point at a fake Slack both qualify.
pub trait Connector:
    SlackClientHttpConnector
    + SlackSocketModeClientsManagerFactory<Self>
    + Send
    + Sync
    + Clone
    + 'static
{
}

impl<T> Connector for T where
    T: SlackClientHttpConnector
        + SlackSocketModeClientsManagerFactory<T>
        + Send
        + Sync
        + Clone
        + 'static
{
}

/// A token or secret: usable, never printed.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.trim().to_owned()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SlackTransport {
    /// An outbound WebSocket (needs the app-level `xapp-` token; no ingress).
    Socket,
    /// Slack POSTs to `--slack-events-addr` (needs the signing secret).
    Events,
}

#[derive(Clone, Debug, clap::Args)]
pub struct SlackArgs {
    /// Bot token (`xoxb-...`). Without it the Slack front door is off.
    #[arg(long, env = "CLAWSWARM_SLACK_BOT_TOKEN")]
    pub slack_bot_token: Option<Secret>,
    /// App-level token (`xapp-...`, scope `connections:write`) for Socket Mode.
    #[arg(long, env = "CLAWSWARM_SLACK_APP_TOKEN")]
    pub slack_app_token: Option<Secret>,
    /// Signing secret, for the Events API transport.
    #[arg(long, env = "CLAWSWARM_SLACK_SIGNING_SECRET")]
    pub slack_signing_secret: Option<Secret>,
    #[arg(
        long,
        env = "CLAWSWARM_SLACK_TRANSPORT",
        value_enum,
        default_value = "socket"
    )]
    pub slack_transport: SlackTransport,
    /// Where the Events API transport listens (`/slack/events`, `/slack/commands`, `/slack/interactive`).
    #[arg(
        long,
        env = "CLAWSWARM_SLACK_EVENTS_ADDR",
        default_value = "0.0.0.0:3000"
    )]
    pub slack_events_addr: SocketAddr,
    /// Socket Mode connections to keep open (Slack allows up to 10).
    #[arg(long, env = "CLAWSWARM_SLACK_SOCKET_CONNECTIONS", default_value_t = 2)]
    pub slack_socket_connections: u32,
    /// Web API base URL (tests point this at a fake Slack; `http://` only for loopback fakes).
    #[arg(
        long,
        env = "CLAWSWARM_SLACK_API_URL",
        default_value = "https://slack.com/api"
    )]
    pub slack_api_url: String,
    /// Who may create agents.
    #[arg(
        long,
        env = "CLAWSWARM_SLACK_PROVISIONING",
        value_enum,
        default_value = "open"
    )]
    pub slack_provisioning: ProvisioningMode,
    /// Slack user ids with admin commands (comma-separated).
    #[arg(long, env = "CLAWSWARM_SLACK_ADMINS", value_delimiter = ',')]
    pub slack_admins: Vec<String>,
    /// Allowlisted Slack user ids (comma-separated).
    #[arg(long, env = "CLAWSWARM_SLACK_ALLOW_USERS", value_delimiter = ',')]
    pub slack_allow_users: Vec<String>,
    /// Allowlisted Slack user group ids, `S...` (comma-separated).
    #[arg(long, env = "CLAWSWARM_SLACK_ALLOW_GROUPS", value_delimiter = ',')]
    pub slack_allow_groups: Vec<String>,
    /// Most agents this workspace may have.
    #[arg(long, env = "CLAWSWARM_SLACK_MAX_AGENTS")]
    pub slack_max_agents: Option<usize>,
    /// Most agents starting at once (setup/restart).
    #[arg(
        long,
        env = "CLAWSWARM_SLACK_MAX_CONCURRENT_STARTS",
        default_value_t = 4
    )]
    pub slack_max_concurrent_starts: usize,
    /// Template for `/agent setup` without one.
    #[arg(
        long,
        env = "CLAWSWARM_SLACK_DEFAULT_TEMPLATE",
        default_value = "default"
    )]
    pub slack_default_template: String,
    /// How long `/agent setup` waits for the agent to become ready.
    #[arg(long, env = "CLAWSWARM_SLACK_START_TIMEOUT", value_parser = parse_duration, default_value = "180s")]
    pub slack_start_timeout: Duration,
    /// How often a slow start gets a "still starting" message (at most two).
    #[arg(long, env = "CLAWSWARM_SLACK_PATIENCE_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub slack_patience_interval: Duration,
    /// Use chat.startStream/appendStream/stopStream (off: post + update only).
    #[arg(long, env = "CLAWSWARM_SLACK_NATIVE_STREAMING", default_value_t = true, action = clap::ArgAction::Set)]
    pub slack_native_streaming: bool,
    /// Messages and commands handled at once; more wait in a bounded queue.
    #[arg(long, env = "CLAWSWARM_SLACK_MAX_INFLIGHT", default_value_t = 64)]
    pub slack_max_inflight: usize,
}

impl SlackArgs {
    /// A bot token is set (an empty one counts as unset).
    pub fn enabled(&self) -> bool {
        self.slack_bot_token
            .as_ref()
            .is_some_and(|t| !t.expose().is_empty())
    }

    /// Check the configuration before anything starts; errors name the variable.
    pub fn validate(&self) -> Result<(), SlackError> {
        let bad = |m: &str| Err(SlackError::Config(m.to_owned()));
        let Some(bot) = self.slack_bot_token.as_ref().filter(|_| self.enabled()) else {
            return Ok(());
        };
        if !bot.expose().starts_with("xoxb-") {
            return bad("CLAWSWARM_SLACK_BOT_TOKEN must be a bot token (xoxb-...)");
        }
        match self.slack_transport {
            SlackTransport::Socket => match &self.slack_app_token {
                Some(t) if t.expose().starts_with("xapp-") => {}
                Some(_) => {
                    return bad("CLAWSWARM_SLACK_APP_TOKEN must be an app-level token (xapp-...)");
                }
                None => {
                    return bad(
                        "CLAWSWARM_SLACK_APP_TOKEN is required for Socket Mode (or set CLAWSWARM_SLACK_TRANSPORT=events)",
                    );
                }
            },
            SlackTransport::Events => {
                if self
                    .slack_signing_secret
                    .as_ref()
                    .is_none_or(|s| s.expose().is_empty())
                {
                    return bad(
                        "CLAWSWARM_SLACK_SIGNING_SECRET is required for the Events API transport",
                    );
                }
            }
        }
        let url = self.slack_api_url.trim_end_matches('/');
        if !(url.starts_with("https://")
            || url.starts_with("http://127.0.0.1")
            || url.starts_with("http://localhost"))
        {
            return bad("CLAWSWARM_SLACK_API_URL must be https:// (plain http only on loopback)");
        }
        if self.slack_provisioning == ProvisioningMode::Allowlist
            && self.slack_allow_users.is_empty()
            && self.slack_allow_groups.is_empty()
        {
            warn!(
                "CLAWSWARM_SLACK_PROVISIONING=allowlist with an empty allowlist: only admins can create agents"
            );
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error("invalid slack configuration: {0}")]
    Config(String),
    #[error("slack rejected the bot token ({0})")]
    Auth(String),
    /// `auth.test` got no answer from Slack (network, timeout, 5xx, 429):
    /// the token may be fine; the front door is started again with backoff.
    #[error("cannot reach slack to check the bot token ({0})")]
    Unreachable(String),
    #[error("slack socket mode: {0}")]
    SocketMode(String),
    #[error("cannot bind the slack events api on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("slack events api server: {0}")]
    Serve(String),
}

impl SlackError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Auth(_) => "auth",
            Self::Unreachable(_) => "unreachable",
            Self::SocketMode(_) => "socket_mode",
            Self::Bind { .. } => "bind",
            Self::Serve(_) => "serve",
        }
    }
}

/// Slack's own answer about the token is an auth failure; anything else
/// (no answer, a timeout, an HTTP error, a rate limit) says nothing about
/// the token and is reported as what it is.
fn auth_failure(e: api::SlackApiError) -> SlackError {
    match e.code() {
        Some(code) => SlackError::Auth(code.to_owned()),
        None => SlackError::Unreachable(e.to_string()),
    }
}

/// How long in-flight replies may take to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What a Slack front door borrows from the process for one run, so it can
/// stop (this replica lost the Lease) and start again (it regained it):
/// the mesh's notice queue, the Events API listener (bound once, see
/// [`transport::events_api::EventsDoor`]) and who to tell it is serving.
#[derive(Clone)]
pub struct SlackIo {
    /// The mesh's notice queue (`MeshOutputs::notices`); one courier at a time.
    pub notices: Arc<tokio::sync::Mutex<mpsc::Receiver<InboundNotice>>>,
    /// The mesh's orphaned turns (`MeshOutputs::pending`); one taker at a time.
    pub pending: Arc<tokio::sync::Mutex<mpsc::Receiver<PendingReply>>>,
    /// The Events API listener's door; `None` binds `--slack-events-addr`
    /// for this run only.
    pub events: Option<transport::events_api::EventsDoor>,
    /// Called with `true` once the transport serves (Socket Mode connected,
    /// Events API routes open) and with `false` when it stops.
    pub on_serving: Arc<dyn Fn(bool) + Send + Sync>,
}

impl SlackIo {
    /// Only the mesh's queues; the run binds its own Events API listener.
    pub fn new(
        notices: mpsc::Receiver<InboundNotice>,
        pending: mpsc::Receiver<PendingReply>,
    ) -> Self {
        Self {
            notices: Arc::new(tokio::sync::Mutex::new(notices)),
            pending: Arc::new(tokio::sync::Mutex::new(pending)),
            events: None,
            on_serving: Arc::new(|_| {}),
        }
    }
}

/// Run the Slack front door until `shutdown` fires.
pub async fn run(
    args: SlackArgs,
    router: Router,
    io: SlackIo,
    shutdown: CancellationToken,
) -> Result<(), SlackError> {
    args.validate()?;
    let url = args.slack_api_url.trim_end_matches('/').to_owned();
    if url.starts_with("http://") {
        let connector = SlackClientHyperConnector::with_connector(HttpConnector::new())
            .with_slack_api_url(&url);
        run_with(connector, args, router, io, shutdown).await
    } else {
        let connector = SlackClientHyperHttpsConnector::new()
            .map_err(|e| SlackError::Config(format!("TLS roots: {e}")))?
            .with_slack_api_url(&url);
        run_with(connector, args, router, io, shutdown).await
    }
}

/// `run` over any connector (the real one, or one aimed at a fake Slack).
pub async fn run_with<C: Connector>(
    connector: C,
    args: SlackArgs,
    router: Router,
    io: SlackIo,
    shutdown: CancellationToken,
) -> Result<(), SlackError> {
    let Some(bot_token) = args.slack_bot_token.clone() else {
        return Err(SlackError::Config(
            "CLAWSWARM_SLACK_BOT_TOKEN is not set".into(),
        ));
    };
    let client = Arc::new(SlackClient::new(connector));
    let metrics = router.mesh().metrics().slack.clone();
    let api = Arc::new(SlackApi::new(client.clone(), bot_token.expose(), metrics));
    let auth = api.auth_test().await.map_err(auth_failure)?;
    let bot = BotIdentity {
        user_id: auth.user_id.0,
        bot_id: auth.bot_id.map(|b| b.0),
        team_id: auth.team_id.0,
    };
    info!(bot_user = %bot.user_id, team = %bot.team_id, transport = ?args.slack_transport, "slack front door starting");

    let policy = Policy::new(PolicyConfig {
        mode: args.slack_provisioning,
        admins: args
            .slack_admins
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect::<HashSet<_>>(),
        allow_users: args
            .slack_allow_users
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        allow_groups: args
            .slack_allow_groups
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        max_agents: args.slack_max_agents,
        max_concurrent_starts: args.slack_max_concurrent_starts,
        ..PolicyConfig::default()
    });
    let commands = CommandsConfig {
        default_template: args.slack_default_template.clone(),
        start_timeout: args.slack_start_timeout,
        patience_interval: args.slack_patience_interval,
    };
    let reply = ReplyConfig {
        native_streaming: args.slack_native_streaming,
        ..ReplyConfig::default()
    };
    // The transports stop first; workers finish what they hold.
    let stop_transport = shutdown.child_token();
    let work_stop = CancellationToken::new();
    let (app, work_rx) = SlackApp::new(
        api,
        router,
        bot,
        policy,
        commands,
        reply,
        target::TargetSeal::from_bot_token(bot_token.expose()),
        1024,
        work_stop.clone(),
    );

    // Bind before starting anything, so a taken port fails cleanly.
    let events_listener = match args.slack_transport {
        SlackTransport::Events if io.events.is_none() => Some(
            tokio::net::TcpListener::bind(args.slack_events_addr)
                .await
                .map_err(|source| SlackError::Bind {
                    addr: args.slack_events_addr,
                    source,
                })?,
        ),
        SlackTransport::Events | SlackTransport::Socket => None,
    };
    let workers = tokio::spawn(
        app.clone()
            .run_workers(work_rx, args.slack_max_inflight)
            .instrument(info_span!("slack_workers")),
    );
    let courier = tokio::spawn(
        notices::deliver_notices(app.clone(), io.notices.clone())
            .instrument(info_span!("slack_notices")),
    );
    let resumer = tokio::spawn(
        app.clone()
            .resume_orphans(io.pending.clone())
            .instrument(info_span!("slack_resume")),
    );
    let transport = match args.slack_transport {
        SlackTransport::Socket => {
            let token = args.slack_app_token.clone().unwrap_or_default();
            transport::socket_mode::serve(
                app.clone(),
                client,
                token.expose(),
                args.slack_socket_connections,
                || (io.on_serving)(true),
                stop_transport.clone(),
            )
            .instrument(info_span!("slack_socket_mode"))
            .await
        }
        SlackTransport::Events => {
            let verifier = SignatureVerifier::new(
                args.slack_signing_secret
                    .clone()
                    .unwrap_or_default()
                    .expose()
                    .as_bytes()
                    .to_vec(),
            );
            match (&io.events, events_listener) {
                (Some(door), _) => {
                    door.open(transport::events_api::routes(app.clone(), verifier));
                    (io.on_serving)(true);
                    stop_transport.cancelled().await;
                    door.close();
                    Ok(())
                }
                (None, Some(listener)) => {
                    (io.on_serving)(true);
                    transport::events_api::serve(
                        listener,
                        app.clone(),
                        verifier,
                        stop_transport.clone(),
                    )
                    .instrument(info_span!("slack_events_api"))
                    .await
                }
                (None, None) => Err(SlackError::Serve("events listener missing".into())),
            }
        }
    };
    (io.on_serving)(false);
    // The transport returns on shutdown (or failure): let in-flight work end.
    let finished = app.drain(SHUTDOWN_GRACE).await;
    work_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), workers).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), courier).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), resumer).await;
    info!(finished_in_grace = finished, "slack front door stopped");
    transport
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        slack: SlackArgs,
    }

    #[test]
    fn a_network_failure_on_auth_test_is_not_called_a_rejected_token() {
        use api::SlackApiError;
        let rejected = auth_failure(SlackApiError::Api {
            method: "auth.test",
            code: "invalid_auth".into(),
        });
        assert_eq!(
            rejected.to_string(),
            "slack rejected the bot token (invalid_auth)"
        );
        for e in [
            SlackApiError::Transport {
                method: "auth.test",
                kind: "connect",
            },
            SlackApiError::Timeout {
                method: "auth.test",
            },
            SlackApiError::Http {
                method: "auth.test",
                status: 503,
            },
            SlackApiError::RateLimited {
                method: "auth.test",
            },
        ] {
            let err = auth_failure(e);
            assert_eq!(err.metric_label(), "unreachable", "{err}");
            assert!(!err.to_string().contains("rejected"), "{err}");
        }
    }

    fn args(flags: &[&str]) -> SlackArgs {
        let mut argv = vec!["clawswarm"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().slack
    }

    fn config_error(a: &SlackArgs) -> String {
        match a.validate() {
            Err(SlackError::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn without_a_bot_token_slack_is_off_and_valid() {
        assert!(!args(&[]).enabled());
        assert!(!args(&["--slack-bot-token", ""]).enabled());
        assert!(args(&[]).validate().is_ok());
    }

    #[test]
    fn errors_name_the_variable_to_fix() {
        let e = config_error(&args(&[
            "--slack-bot-token",
            "xapp-wrong-kind",
            "--slack-app-token",
            "xapp-1",
        ]));
        assert!(e.contains("CLAWSWARM_SLACK_BOT_TOKEN"), "{e}");
        let e = config_error(&args(&["--slack-bot-token", "xoxb-1"]));
        assert!(e.contains("CLAWSWARM_SLACK_APP_TOKEN"), "{e}");
        let e = config_error(&args(&[
            "--slack-bot-token",
            "xoxb-1",
            "--slack-transport",
            "events",
        ]));
        assert!(e.contains("CLAWSWARM_SLACK_SIGNING_SECRET"), "{e}");
        let e = config_error(&args(&[
            "--slack-bot-token",
            "xoxb-1",
            "--slack-app-token",
            "xapp-1",
            "--slack-api-url",
            "http://slack.example.com/api",
        ]));
        assert!(e.contains("CLAWSWARM_SLACK_API_URL"), "{e}");
        assert!(
            args(&["--slack-bot-token", "xoxb-1", "--slack-app-token", "xapp-1"])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn tokens_never_print() {
        let a = args(&[
            "--slack-bot-token",
            "xoxb-secret-value",
            "--slack-app-token",
            "xapp-secret-value",
        ]);
        let shown = format!("{a:?}");
        assert!(!shown.contains("secret-value"), "{shown}");
    }
}

//! A fake Slack on loopback, faithful enough that slack-morphism (and so the
//! controller's real Slack code) cannot tell it from slack.com:
//!
//! - **Web API** at `/api/<method>`: checks the bot token (`xoxb-`) or, for
//!   `apps.connections.open`, the app token (`xapp-`); validates the payload
//!   shapes of the methods the controller uses and answers like Slack
//!   (`ok:true` plus the fields clients parse, `ok:false,error:"..."` for bad
//!   input); enforces per-method rate limits by Slack's tiers with HTTP 429 +
//!   `Retry-After`, and fails any method on demand ([`FakeSlack::fail_next`]).
//! - **Socket Mode**: `apps.connections.open` hands out a one-time `ws://`
//!   URL; the server sends `hello`, delivers `events_api`, `slash_commands`
//!   and `interactive` envelopes, records acks (with their payloads) and
//!   re-delivers unacked envelopes like Slack's retry.
//! - **Events API poster** ([`events_api`]): signs requests (`v0=` HMAC-SHA256
//!   over `v0:{ts}:{body}`), optionally with retry headers or a bad signature.
//! - **Response URLs** at `/response/<id>` for slash-command replies.
//!
//! Every call is recorded; [`FakeSlack::thread_text`] reassembles what a
//! person would see in a thread (streamed via start/append/stopStream, or
//! posted and then edited with `chat.update`).

pub mod events_api;
mod messages;
mod rate_limit;
pub mod socket_mode;
mod web_api;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};

pub use messages::{FakeMessage, MessageKind};
pub use rate_limit::Tier;

/// The fake's team and app.
pub const TEAM_ID: &str = "T0FAKE";
pub const APP_ID: &str = "A0FAKE";
pub const BOT_USER_ID: &str = "U0BOT";
pub const BOT_ID: &str = "B0BOT";

#[derive(Clone, Debug)]
pub struct FakeSlackConfig {
    pub bot_token: String,
    pub app_token: String,
    pub signing_secret: String,
    /// Enforce Slack's per-method tiers (429 + Retry-After when exceeded).
    pub rate_limits: bool,
    /// When false, `chat.startStream` fails like a workspace without AI
    /// streaming, so clients must fall back to postMessage + update.
    pub native_streaming: bool,
    /// Re-deliver a Socket Mode envelope not acked within this long.
    pub redeliver_after: Duration,
    /// Give up re-delivering after this many retries (Slack retries 3 times).
    pub max_redeliveries: u32,
    /// Users and their properties for `users.info`.
    pub users: Vec<FakeUser>,
    /// Slack user groups (`S...` ids) and their members.
    pub usergroups: HashMap<String, Vec<String>>,
    /// Where both listeners bind. Clients always find them on loopback
    /// (`api_url`, the Socket Mode URL): a sandboxed pod reaches an address
    /// other than 127.0.0.1 through a loopback forward of the same port.
    pub listen_ip: std::net::IpAddr,
    /// The Web API's port (0: any). A test that starts the controller
    /// before Slack is reachable reserves a port, points the controller at
    /// it, and starts the fake there later.
    pub web_api_port: u16,
}

#[derive(Clone, Debug)]
pub struct FakeUser {
    pub id: String,
    pub name: String,
    pub is_admin: bool,
    pub is_bot: bool,
}

impl Default for FakeSlackConfig {
    fn default() -> Self {
        Self {
            bot_token: "xoxb-fake-bot-token".into(),
            app_token: "xapp-fake-app-token".into(),
            signing_secret: "fake-signing-secret".into(),
            rate_limits: true,
            native_streaming: true,
            redeliver_after: Duration::from_secs(5),
            max_redeliveries: 3,
            users: Vec::new(),
            usergroups: HashMap::new(),
            listen_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            web_api_port: 0,
        }
    }
}

/// One Web API call as the fake saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// The request parameters, whatever the encoding (JSON, form, query).
    pub params: Value,
    /// HTTP status sent back (200, or 429).
    pub status: u16,
    /// The JSON body sent back.
    pub response: Value,
    /// When the call arrived.
    pub at: std::time::Instant,
}

impl Call {
    pub fn ok(&self) -> bool {
        self.status == 200 && self.response.get("ok").and_then(Value::as_bool) == Some(true)
    }

    pub fn str_param(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(Value::as_str)
    }
}

/// A canned failure queued by [`FakeSlack::fail_next`].
#[derive(Clone, Debug)]
pub enum Failure {
    /// HTTP 429 with this Retry-After (seconds).
    RateLimited(u64),
    /// HTTP 200 with `ok:false` and this error code.
    Error(String),
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    messages: messages::Store,
    failures: HashMap<String, VecDeque<Failure>>,
    limiter: rate_limit::Limiter,
    responses: Vec<(String, Value)>,
    socket: socket_mode::SocketState,
    dm_channels: HashMap<String, String>,
    seen_tickets: HashSet<String>,
}

pub(crate) struct Shared {
    cfg: FakeSlackConfig,
    inner: Mutex<Inner>,
    changed: Notify,
    addr: SocketAddr,
    ws_addr: SocketAddr,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.notify_waiters();
    }
}

/// The running fake. Dropping it stops the server.
pub struct FakeSlack {
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.server.abort();
        socket_mode::close_all(&self.shared);
    }
}

impl FakeSlack {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(FakeSlackConfig::default()).await
    }

    pub async fn start_with(cfg: FakeSlackConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((cfg.listen_ip, cfg.web_api_port)).await?;
        let ws_listener = TcpListener::bind((cfg.listen_ip, 0)).await?;
        let loopback = |a: SocketAddr| SocketAddr::from(([127, 0, 0, 1], a.port()));
        let addr = loopback(listener.local_addr()?);
        let ws_addr = loopback(ws_listener.local_addr()?);
        let shared = Arc::new(Shared {
            cfg,
            inner: Mutex::default(),
            changed: Notify::new(),
            addr,
            ws_addr,
        });
        let app = web_api::routes(shared.clone());
        let ws_shared = shared.clone();
        let server = tokio::spawn(async move {
            let web = async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::warn!(error = %e, "fake slack web api stopped");
                }
            };
            // Both servers live and die with this one task.
            tokio::join!(web, socket_mode::serve(ws_listener, ws_shared));
        });
        Ok(Self { shared, server })
    }

    pub fn config(&self) -> &FakeSlackConfig {
        &self.shared.cfg
    }

    /// Base URL for slack-morphism's `with_slack_api_url` (no trailing slash).
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.shared.addr)
    }

    /// Where Socket Mode clients connect (the URL `apps.connections.open` gives).
    pub fn socket_mode_addr(&self) -> SocketAddr {
        self.shared.ws_addr
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Make the next call(s) of `method` fail; queued failures are used in order.
    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.shared
            .lock()
            .failures
            .entry(method.to_owned())
            .or_default()
            .push_back(failure);
    }

    /// Shorthand for the common cases: 429 (Retry-After 1 s) or an error code.
    pub fn fail_next_status(&self, method: &str, status: u16) {
        let failure = if status == 429 {
            Failure::RateLimited(1)
        } else {
            Failure::Error("internal_error".into())
        };
        self.fail_next(method, failure);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Bodies posted to response URLs, with the URL's id.
    pub fn responses(&self) -> Vec<(String, Value)> {
        self.shared.lock().responses.clone()
    }

    /// A response URL the controller can post to (as Slack puts in slash commands).
    pub fn response_url(&self, id: &str) -> String {
        format!("http://{}/response/{id}", self.shared.addr)
    }

    /// The DM channel the fake assigned to a user (via conversations.open or
    /// [`FakeSlack::dm_channel_for`]).
    pub fn dm_channel_for(&self, user: &str) -> String {
        let mut inner = self.shared.lock();
        messages::dm_channel(&mut inner.dm_channels, user)
    }

    /// Every message the bot wrote, in order.
    pub fn bot_messages(&self) -> Vec<FakeMessage> {
        self.shared.lock().messages.all()
    }

    /// The text a person sees from the bot in a thread (or, with `thread_ts`
    /// `None`, at the top level of a channel), messages joined with "\n".
    pub fn thread_text(&self, channel: &str, thread_ts: Option<&str>) -> String {
        self.shared.lock().messages.thread_text(channel, thread_ts)
    }

    /// Wait (at most `timeout`) until `check` holds for the recorded state.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&FakeSlack) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if let Some(v) = check(self) {
                return Ok(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(self).ok_or_else(|| {
                    anyhow::anyhow!("fake slack: condition not met within {timeout:?}")
                });
            }
        }
    }

    /// The first response posted to `response_url(id)` whose text contains
    /// `needle`, waiting at most `timeout` (the error lists what arrived).
    pub async fn response_containing(
        &self,
        id: &str,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let found = self
            .wait_for(timeout, |f| {
                f.responses()
                    .into_iter()
                    .filter(|(rid, _)| rid == id)
                    .filter_map(|(_, v)| v["text"].as_str().map(str::to_owned))
                    .find(|t| t.contains(needle))
            })
            .await;
        found.map_err(|e| e.context(format!("responses so far: {:?}", self.responses())))
    }

    /// Socket Mode side: deliver envelopes, inspect acks.
    pub fn socket(&self) -> socket_mode::SocketMode<'_> {
        socket_mode::SocketMode {
            shared: &self.shared,
        }
    }
}

/// Helpers to build the payloads Slack sends.
pub mod payloads {
    use serde_json::{Value, json};

    use super::{APP_ID, BOT_USER_ID, TEAM_ID};

    /// An `event_callback` wrapping `event`.
    pub fn event_callback(event_id: &str, event: Value) -> Value {
        json!({
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": 1_700_000_000,
            "authorizations": [{
                "enterprise_id": null, "team_id": TEAM_ID, "user_id": BOT_USER_ID,
                "is_bot": true, "is_enterprise_install": false
            }],
            "is_ext_shared_channel": false,
        })
    }

    /// A direct message from `user` in DM channel `channel`.
    pub fn dm(user: &str, channel: &str, ts: &str, text: &str) -> Value {
        json!({
            "type": "message", "channel": channel, "channel_type": "im", "user": user,
            "text": text, "ts": ts, "event_ts": ts, "client_msg_id": format!("cm-{ts}"),
            "team": TEAM_ID,
        })
    }

    /// A reply in a thread of channel `channel`.
    pub fn thread_reply(user: &str, channel: &str, thread_ts: &str, ts: &str, text: &str) -> Value {
        json!({
            "type": "message", "channel": channel, "channel_type": "channel", "user": user,
            "text": text, "ts": ts, "thread_ts": thread_ts, "event_ts": ts, "team": TEAM_ID,
        })
    }

    /// `@bot text` in channel `channel`.
    pub fn app_mention(user: &str, channel: &str, ts: &str, text: &str) -> Value {
        json!({
            "type": "app_mention", "channel": channel, "user": user,
            "text": format!("<@{BOT_USER_ID}> {text}"), "ts": ts, "event_ts": ts, "team": TEAM_ID,
        })
    }

    /// A message written by a bot (ours or another app's).
    pub fn bot_message(bot_id: &str, channel: &str, ts: &str, text: &str) -> Value {
        json!({
            "type": "message", "subtype": "bot_message", "channel": channel, "channel_type": "im",
            "bot_id": bot_id, "text": text, "ts": ts, "event_ts": ts,
        })
    }

    /// A slash command as Socket Mode carries it (Events API posts the same
    /// fields form-encoded).
    pub fn slash_command(
        user: &str,
        channel: &str,
        command: &str,
        text: &str,
        response_url: &str,
    ) -> Value {
        json!({
            "token": "legacy-verification-token", "team_id": TEAM_ID, "team_domain": "fake",
            "channel_id": channel, "channel_name": "directmessage", "user_id": user,
            "user_name": user.to_lowercase(), "command": command, "text": text,
            "api_app_id": APP_ID, "is_enterprise_install": "false",
            "response_url": response_url, "trigger_id": "1.2.3",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

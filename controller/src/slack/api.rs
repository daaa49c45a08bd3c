//! The Slack Web API calls the front door makes, over slack-morphism, with
//! shared pacing ([`RateLimiter`]), `Retry-After` honoured on 429, a timeout
//! on every call, and errors reduced to what may be logged: a method name and
//! Slack's error code, never a response body (it can echo message text).

use std::{future::Future, sync::Arc, time::Duration};

use slack_morphism::{errors::SlackClientError, prelude::*};
use tracing::{debug, warn};

use super::{
    Connector,
    metrics::SlackMetrics,
    ratelimit::RateLimiter,
    reply::{Action, ReplyApi, ReplyPlace},
};

/// One Slack call may take this long, including its retries' waits.
const CALL_TIMEOUT: Duration = Duration::from_secs(90);
/// 429s retried per call before giving up.
const MAX_RATE_LIMIT_RETRIES: u32 = 3;
/// Slack sends `Retry-After`; if it ever does not, wait this long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SlackApiError {
    #[error("{method}: rate limited")]
    RateLimited { method: &'static str },
    #[error("{method}: slack error {code}")]
    Api { method: &'static str, code: String },
    #[error("{method}: http status {status}")]
    Http { method: &'static str, status: u16 },
    #[error("{method}: {kind} error")]
    Transport {
        method: &'static str,
        kind: &'static str,
    },
    #[error("{method}: no answer within {CALL_TIMEOUT:?}")]
    Timeout { method: &'static str },
}

impl SlackApiError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Api { .. } => "api",
            Self::Http { .. } => "http",
            Self::Transport { .. } => "transport",
            Self::Timeout { .. } => "timeout",
        }
    }

    /// Slack's error code, when Slack answered `ok:false`.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    fn from_client(method: &'static str, e: SlackClientError) -> Self {
        match e {
            SlackClientError::ApiError(a) => Self::Api {
                method,
                code: a.code,
            },
            SlackClientError::HttpError(h) => Self::Http {
                method,
                status: h.status_code.as_u16(),
            },
            SlackClientError::RateLimitError(_) => Self::RateLimited { method },
            SlackClientError::HttpProtocolError(_) => Self::Transport {
                method,
                kind: "http protocol",
            },
            SlackClientError::EndOfStream(_) => Self::Transport {
                method,
                kind: "end of stream",
            },
            SlackClientError::ProtocolError(_) => Self::Transport {
                method,
                kind: "response parse",
            },
            SlackClientError::SocketModeProtocolError(_) => Self::Transport {
                method,
                kind: "socket mode",
            },
            SlackClientError::SystemError(_) => Self::Transport {
                method,
                kind: "system",
            },
        }
    }
}

/// The bot's Web API session. Cheap to clone.
pub struct SlackApi<C: Connector> {
    client: Arc<SlackClient<C>>,
    token: SlackApiToken,
    limiter: RateLimiter,
    metrics: SlackMetrics,
}

impl<C: Connector> SlackApi<C> {
    pub fn new(client: Arc<SlackClient<C>>, bot_token: &str, metrics: SlackMetrics) -> Self {
        let token = SlackApiToken::new(SlackApiTokenValue(bot_token.to_owned()));
        Self {
            client,
            token,
            limiter: RateLimiter::default(),
            metrics,
        }
    }

    pub fn metrics(&self) -> &SlackMetrics {
        &self.metrics
    }

    pub fn client(&self) -> &Arc<SlackClient<C>> {
        &self.client
    }

    /// Pace, call, and on 429 hold the method for `Retry-After` and retry.
    async fn call<T, F, Fut>(
        &self,
        method: &'static str,
        channel: &str,
        f: F,
    ) -> Result<T, SlackApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ClientResult<T>>,
    {
        let attempt = async {
            let mut retries = 0;
            loop {
                self.limiter.acquire(method, channel).await;
                match f().await {
                    Ok(v) => {
                        self.metrics.call(method, "ok");
                        return Ok(v);
                    }
                    Err(SlackClientError::RateLimitError(r))
                        if retries < MAX_RATE_LIMIT_RETRIES =>
                    {
                        self.metrics.call(method, "rate_limited");
                        let wait = r.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
                        warn!(
                            method,
                            retry_after_ms = wait.as_millis() as u64,
                            "slack rate limited; waiting"
                        );
                        self.limiter.pause(method, channel, wait);
                        retries += 1;
                    }
                    Err(e) => {
                        let e = SlackApiError::from_client(method, e);
                        self.metrics.call(method, e.metric_label());
                        debug!(method, error = %e, "slack call failed");
                        return Err(e);
                    }
                }
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(SlackApiError::Timeout { method }))
    }

    pub async fn auth_test(&self) -> Result<SlackApiAuthTestResponse, SlackApiError> {
        self.call("auth.test", "", move || async move {
            self.client.open_session(&self.token).auth_test().await
        })
        .await
    }

    pub async fn post_message(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        text: &str,
    ) -> Result<String, SlackApiError> {
        let mut req = SlackApiChatPostMessageRequest::new(
            channel.into(),
            SlackMessageContent::new().with_text(text.to_owned()),
        );
        req.thread_ts = thread_ts.map(|t| SlackTs(t.to_owned()));
        let req = &req;
        let resp = self
            .call("chat.postMessage", channel, move || async move {
                self.client
                    .open_session(&self.token)
                    .chat_post_message(req)
                    .await
            })
            .await?;
        Ok(resp.ts.0)
    }

    pub async fn update(&self, channel: &str, ts: &str, text: &str) -> Result<(), SlackApiError> {
        let req = SlackApiChatUpdateRequest::new(
            channel.into(),
            SlackMessageContent::new().with_text(text.to_owned()),
            SlackTs(ts.to_owned()),
        );
        let req = &req;
        self.call("chat.update", channel, move || async move {
            self.client.open_session(&self.token).chat_update(req).await
        })
        .await
        .map(|_| ())
    }

    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        thread_ts: Option<&str>,
        text: &str,
    ) -> Result<(), SlackApiError> {
        let mut req = SlackApiChatPostEphemeralRequest::new(
            channel.into(),
            user.into(),
            SlackMessageContent::new().with_text(text.to_owned()),
        );
        req.thread_ts = thread_ts.map(|t| SlackTs(t.to_owned()));
        let req = &req;
        self.call("chat.postEphemeral", channel, move || async move {
            self.client
                .open_session(&self.token)
                .chat_post_ephemeral(req)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Start a native stream in a thread; returns the streamed message's ts.
    pub async fn start_stream(
        &self,
        target: &StreamTarget<'_>,
        markdown: &str,
    ) -> Result<String, SlackApiError> {
        let mut req = SlackApiChatStartStreamRequest::new(target.channel.into())
            .with_thread_ts(SlackTs(target.thread_ts.to_owned()));
        if !target.is_dm {
            // Outside DMs Slack needs to know who the stream is for.
            req.recipient_user_id = Some(target.user.into());
            req.recipient_team_id = Some(target.team.into());
        }
        if !markdown.is_empty() {
            req.markdown_text = Some(markdown.to_owned());
        }
        let req = &req;
        let resp = self
            .call("chat.startStream", target.channel, move || async move {
                self.client
                    .open_session(&self.token)
                    .chat_start_stream(req)
                    .await
            })
            .await?;
        Ok(resp.ts.0)
    }

    pub async fn append_stream(
        &self,
        channel: &str,
        ts: &str,
        markdown: &str,
    ) -> Result<(), SlackApiError> {
        let req = SlackApiChatAppendStreamRequest::new(channel.into(), SlackTs(ts.to_owned()))
            .with_markdown_text(markdown.to_owned());
        let req = &req;
        self.call("chat.appendStream", channel, move || async move {
            self.client
                .open_session(&self.token)
                .chat_append_stream(req)
                .await
        })
        .await
        .map(|_| ())
    }

    pub async fn stop_stream(
        &self,
        channel: &str,
        ts: &str,
        markdown: &str,
    ) -> Result<(), SlackApiError> {
        let mut content = SlackMessageContent::new();
        if !markdown.is_empty() {
            content.markdown_text = Some(markdown.to_owned());
        }
        let req =
            SlackApiChatStopStreamRequest::new(channel.into(), SlackTs(ts.to_owned()), content);
        let req = &req;
        self.call("chat.stopStream", channel, move || async move {
            self.client
                .open_session(&self.token)
                .chat_stop_stream(req)
                .await
        })
        .await
        .map(|_| ())
    }

    /// "is thinking…" under the person's message; an empty status clears it.
    pub async fn set_status(
        &self,
        channel: &str,
        thread_ts: &str,
        status: &str,
    ) -> Result<(), SlackApiError> {
        let req = SlackApiAssistantThreadsSetStatusRequest::new(
            channel.into(),
            status.to_owned(),
            SlackTs(thread_ts.to_owned()),
        );
        let req = &req;
        self.call("assistant.threads.setStatus", channel, move || async move {
            self.client
                .open_session(&self.token)
                .assistant_threads_set_status(req)
                .await
        })
        .await
        .map(|_| ())
    }

    /// The DM channel with `user`.
    pub async fn open_dm(&self, user: &str) -> Result<String, SlackApiError> {
        let req = SlackApiConversationsOpenRequest::new().with_users(vec![user.into()]);
        let req = &req;
        let resp = self
            .call("conversations.open", "", move || async move {
                self.client
                    .open_session(&self.token)
                    .conversations_open(req)
                    .await
            })
            .await?;
        Ok(resp.channel.id.0)
    }

    pub async fn usergroup_members(&self, group: &str) -> Result<Vec<String>, SlackApiError> {
        let req = SlackApiUserGroupsUsersListRequest::new(group.into());
        let req = &req;
        let resp = self
            .call("usergroups.users.list", "", move || async move {
                self.client
                    .open_session(&self.token)
                    .usergroups_users_list(req)
                    .await
            })
            .await?;
        Ok(resp.users.into_iter().map(|u| u.0).collect())
    }

    /// Reply through a slash command's `response_url` (ephemeral: only the
    /// person who ran the command sees it).
    pub async fn respond(&self, response_url: &str, text: &str) -> Result<(), SlackApiError> {
        let method = "response_url";
        let url: url::Url = response_url.parse().map_err(|_| SlackApiError::Transport {
            method,
            kind: "bad response url",
        })?;
        let mut req = SlackApiPostWebhookMessageRequest::new(
            SlackMessageContent::new().with_text(text.to_owned()),
        );
        req.replace_original = Some(false);
        let (client, req, url) = (&self.client, &req, &url);
        self.call(method, "", move || async move {
            client.post_webhook_message(url, req).await
        })
        .await
        .map(|_| ())
    }
}

/// Where a streamed reply goes.
#[derive(Clone, Copy, Debug)]
pub struct StreamTarget<'a> {
    pub channel: &'a str,
    pub thread_ts: &'a str,
    pub user: &'a str,
    pub team: &'a str,
    pub is_dm: bool,
}

#[async_trait::async_trait]
impl<C: Connector> ReplyApi for SlackApi<C> {
    async fn perform(
        &self,
        place: &ReplyPlace,
        action: &Action,
    ) -> Result<Option<String>, SlackApiError> {
        let (ch, thread) = (place.channel.as_str(), place.thread_ts.as_str());
        match action {
            Action::Status(status) => self.set_status(ch, thread, status).await.map(|_| None),
            Action::Start { text } => {
                let target = StreamTarget {
                    channel: ch,
                    thread_ts: thread,
                    user: &place.user,
                    team: &place.team,
                    is_dm: place.is_dm,
                };
                self.start_stream(&target, text).await.map(Some)
            }
            Action::Append { ts, text } => self.append_stream(ch, ts, text).await.map(|_| None),
            Action::Stop { ts, text } => self.stop_stream(ch, ts, text).await.map(|_| None),
            Action::Post { text } => self.post_message(ch, Some(thread), text).await.map(Some),
            Action::Update { ts, text } => self.update(ch, ts, text).await.map(|_| None),
            Action::Seal { ts } => match self.stop_stream(ch, ts, "").await {
                Err(e) if e.code() == Some("message_not_in_streaming_state") => Ok(None),
                r => r.map(|_| None),
            },
        }
    }
}

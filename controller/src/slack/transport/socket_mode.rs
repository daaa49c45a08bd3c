//! Socket Mode through slack-morphism's listener. Its callbacks are plain
//! `fn`s, so the front door travels in the listener's user state. Each
//! callback only queues work, so the envelope is acked at once; when the
//! queue is full the callback fails and the envelope is left unacked for
//! Slack to deliver again.

use std::sync::Arc;

use slack_morphism::prelude::*;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::slack::{
    Connector, SlackError,
    app::{Accepted, SlackApp},
};

/// Returned from a callback to withhold the ack.
#[derive(Debug, thiserror::Error)]
#[error("front door busy")]
struct Busy;

fn app_of<C: Connector>(states: &SlackClientEventsUserStateStorage) -> Option<Arc<SlackApp<C>>> {
    states.get_user_state::<Arc<SlackApp<C>>>().cloned()
}

async fn on_push<C: Connector>(
    ev: SlackPushEventCallback,
    _: Arc<SlackClient<C>>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    let Some(app) = app_of::<C>(&*states.read().await) else {
        return Ok(());
    };
    match app.accept_event(&ev, None) {
        Accepted::Busy => Err(Box::new(Busy)),
        _ => Ok(()),
    }
}

async fn on_command<C: Connector>(
    ev: SlackCommandEvent,
    _: Arc<SlackClient<C>>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let Some(app) = app_of::<C>(&*states.read().await) else {
        return Ok(SlackCommandEventResponse::new(
            SlackMessageContent::new().with_text("Not ready yet; try again shortly.".into()),
        ));
    };
    let text = app.accept_command(&ev);
    Ok(
        SlackCommandEventResponse::new(SlackMessageContent::new().with_text(text))
            .with_response_type(SlackMessageResponseType::Ephemeral),
    )
}

async fn on_interaction<C: Connector>(
    ev: SlackInteractionEvent,
    _: Arc<SlackClient<C>>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    if let Some(app) = app_of::<C>(&*states.read().await) {
        app.accept_interaction(&ev);
    }
    Ok(())
}

// Generic over the event type: slack-morphism does not re-export its hello type.
async fn on_hello<C: Connector, E>(_: E, _: Arc<SlackClient<C>>, _: SlackClientEventsUserState) {
    info!("slack socket mode connection open");
}

/// Every listener error lands here. Payloads that cannot be parsed are
/// acked (a retry would not parse better); a busy front door is not.
fn on_error<C: Connector>(
    err: Box<dyn std::error::Error + Send + Sync>,
    _: Arc<SlackClient<C>>,
    _: SlackClientEventsUserState,
) -> http::StatusCode {
    if err.downcast_ref::<Busy>().is_some() {
        return http::StatusCode::SERVICE_UNAVAILABLE;
    }
    // The error's text can carry the payload (Slack text): log its kind only.
    let kind = match err.downcast_ref::<slack_morphism::errors::SlackClientError>() {
        Some(slack_morphism::errors::SlackClientError::ProtocolError(_)) => "malformed payload",
        Some(slack_morphism::errors::SlackClientError::SocketModeProtocolError(_)) => {
            "socket mode protocol"
        }
        Some(_) => "slack client",
        None => "listener",
    };
    warn!(kind, "slack socket mode error");
    http::StatusCode::OK
}

pub async fn serve<C: Connector>(
    app: Arc<SlackApp<C>>,
    client: Arc<SlackClient<C>>,
    app_token: &str,
    connections: u32,
    on_open: impl FnOnce(),
    shutdown: CancellationToken,
) -> Result<(), SlackError> {
    let env = Arc::new(
        SlackClientEventsListenerEnvironment::new(client)
            .with_error_handler(on_error::<C>)
            .with_user_state(app),
    );
    let callbacks = SlackSocketModeListenerCallbacks::new()
        .with_hello_events(on_hello::<C, _>)
        .with_push_events(on_push::<C>)
        .with_command_events(on_command::<C>)
        .with_interaction_events(on_interaction::<C>);
    let config = SlackClientSocketModeConfig::new().with_max_connections_count(connections.max(1));
    let listener = SlackClientSocketModeListener::new(&config, env, callbacks);
    let token = SlackApiToken::new(SlackApiTokenValue(app_token.to_owned()));
    listener
        .listen_for(&token)
        .await
        .map_err(|e| SlackError::SocketMode(socket_error(&e)))?;
    listener.start().await;
    info!(connections, "slack socket mode listening");
    on_open();
    shutdown.cancelled().await;
    listener.shutdown().await;
    info!("slack socket mode stopped");
    Ok(())
}

fn socket_error(e: &slack_morphism::errors::SlackClientError) -> String {
    match e {
        slack_morphism::errors::SlackClientError::ApiError(a) => {
            format!("apps.connections.open: {}", a.code)
        }
        other => format!("{:?}", std::mem::discriminant(other)),
    }
}

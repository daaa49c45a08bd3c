//! The Slack front door.

pub mod api;
pub mod policy;
pub mod routing;
pub mod dedupe;
pub mod ratelimit;
pub mod reply;
pub mod signature;
pub mod split;

use slack_morphism::{prelude::*, socket_mode::clients_manager::SlackSocketModeClientsManagerFactory};

/// What the front door needs of a slack-morphism connector: the real
/// HTTPS one and the plain-HTTP one tests point at a fake Slack both qualify.
pub trait Connector: SlackClientHttpConnector + SlackSocketModeClientsManagerFactory<Self> + Send + Sync + Clone + 'static {}

impl<T> Connector for T where T: SlackClientHttpConnector + SlackSocketModeClientsManagerFactory<T> + Send + Sync + Clone + 'static {}

//! The clawswarm controller: identity service, mesh (AgentLink streams),
//! router, runtimes, Gateway, metrics.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod front_door;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod mesh;
pub mod metrics;
pub mod notice_delivery;
pub mod notice_inbox;
pub mod router;
pub mod runtime;
pub mod skills;
pub mod slack;
pub mod startup;

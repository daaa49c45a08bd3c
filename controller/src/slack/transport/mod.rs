//! How Slack reaches the front door: Socket Mode (the default; an outbound
//! WebSocket, no ingress needed) or the Events API (Slack POSTs to us).

pub mod events_api;
pub mod socket_mode;

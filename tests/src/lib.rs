//! clawswarm end-to-end harness: stub model, fake Slack.

pub mod fake_slack;
pub mod harness;
pub mod openclaw;
pub mod stub_model;

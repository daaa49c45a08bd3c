//! clawswarm end-to-end harness: stub model, process harness, fake Slack.

pub mod fake_slack;

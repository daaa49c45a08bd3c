//! `clawswarm_slack_*`: Web API calls, incoming events, replies and
//! provisioning decisions. Labels are bounded: method names, outcomes and
//! `metric_label()`s; never channel ids, users or text.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `event`, `command`, `interaction`, `request` (refused before parsing).
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplyLabels {
    pub mode: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct SlackMetrics {
    pub api_calls: Family<CallLabels, Counter>,
    pub events: Family<EventLabels, Counter>,
    pub replies: Family<ReplyLabels, Counter>,
    pub provisioning: Family<DecisionLabels, Counter>,
}

impl SlackMetrics {
    /// Register under `slack_` in the controller's registry.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("slack");
        r.register(
            "api_calls",
            "Slack Web API calls, by method and result",
            self.api_calls.clone(),
        );
        r.register(
            "events",
            "Slack events, commands and interactions received, by result",
            self.events.clone(),
        );
        r.register(
            "replies",
            "Replies written to Slack, by mode and turn outcome",
            self.replies.clone(),
        );
        r.register(
            "provisioning_decisions",
            "Agent provisioning decisions from Slack",
            self.provisioning.clone(),
        );
        // Series that must read 0 exist from startup.
        for result in ["queued", "duplicate", "busy"] {
            let _ = self.events.get_or_create(&EventLabels {
                kind: "event",
                result,
            });
        }
        let _ = self.provisioning.get_or_create(&DecisionLabels {
            decision: "allow",
            reason: "allowed",
        });
    }

    pub fn call(&self, method: &'static str, result: &'static str) {
        self.api_calls
            .get_or_create(&CallLabels { method, result })
            .inc();
    }

    pub fn event(&self, kind: &'static str, result: &'static str) {
        self.events
            .get_or_create(&EventLabels { kind, result })
            .inc();
    }
}

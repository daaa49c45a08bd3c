//! `clawswarm_slack_*`: Web API calls, incoming events, replies and
//! provisioning decisions. Labels are bounded: method names, outcomes and
//! `metric_label()`s; never channel ids, users or text.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// Every value of `clawswarm_slack_front_door{state}`.
pub const FRONT_DOOR_STATES: [&str; 5] = ["off", "standby", "connecting", "serving", "failed"];

#[derive(Clone, Debug, Default)]
pub struct SlackMetrics {
    /// 1 for this replica's Slack front door state, 0 for the others.
    pub front_door: Family<StateLabel, Gauge>,
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
        r.register(
            "front_door",
            "This replica's Slack front door: 1 for its state (off, standby, connecting, serving, failed)",
            self.front_door.clone(),
        );
        // Series that must read 0 exist from startup.
        for state in FRONT_DOOR_STATES {
            let _ = self.front_door.get_or_create(&StateLabel { state });
        }
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

    /// Set the front door state gauge to `state` (one of [`FRONT_DOOR_STATES`]).
    pub fn set_front_door(&self, state: &'static str) {
        for s in FRONT_DOOR_STATES {
            self.front_door
                .get_or_create(&StateLabel { state: s })
                .set(i64::from(s == state));
        }
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

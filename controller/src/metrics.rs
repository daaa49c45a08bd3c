//! The controller's Prometheus registry (`clawswarm_*`), served on `/metrics`.
//!
//! Label sets are bounded: `agent` (one per person), `result`/`reason` from
//! `metric_label()`; never turn ids or error text.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub agent: String,
    pub kind: &'static str,
}

/// Every `reason` of `clawswarm_link_frames_rejected_total`, so alerts on
/// a rate see 0 rather than no data before the first rejection.
pub const FRAME_REJECT_REASONS: [&str; 7] = [
    "empty_frame",
    "repeated_hello",
    "sequence_gap",
    "bad_notice",
    "stream_error",
    "notice_backlog",
    "usage_backlog",
];

/// Turn latencies span a few milliseconds (stub) to minutes (a model with
/// tools), so buckets grow geometrically from 1 ms.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.5, 16)
}

pub struct Metrics {
    registry: Registry,
    pub link_streams: Gauge,
    pub turns: Family<ResultLabel, Counter>,
    pub turn_first_chunk_seconds: Histogram,
    pub turn_duration_seconds: Histogram,
    pub tokens: Family<TokenLabels, Counter>,
    pub frames_rejected: Family<ReasonLabel, Counter>,
    pub certify: Family<ResultLabel, Counter>,
    /// Certificate requests answered before the authenticator was asked.
    pub certify_stopped: Family<ReasonLabel, Counter>,
    pub agent_restarts: Counter,
    pub slack: crate::slack::metrics::SlackMetrics,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Self::new_with(|_| {})
    }

    /// With other components' metrics (the Kubernetes runtime's) registered
    /// in the same `clawswarm` registry.
    pub fn new_with(extra: impl FnOnce(&mut Registry)) -> Arc<Self> {
        let mut registry = Registry::with_prefix("clawswarm");
        let link_streams = Gauge::default();
        let turns = Family::<ResultLabel, Counter>::default();
        let turn_first_chunk_seconds = Histogram::new(latency_buckets());
        let turn_duration_seconds = Histogram::new(latency_buckets());
        let tokens = Family::<TokenLabels, Counter>::default();
        let frames_rejected = Family::<ReasonLabel, Counter>::default();
        let certify = Family::<ResultLabel, Counter>::default();
        let certify_stopped = Family::<ReasonLabel, Counter>::default();
        let agent_restarts = Counter::default();

        registry.register(
            "link_streams",
            "Agent sidecars connected over AgentLink",
            link_streams.clone(),
        );
        registry.register("turns", "Turns finished, by outcome", turns.clone());
        registry.register(
            "turn_first_chunk_seconds",
            "Time from dispatching a turn to its first reply chunk",
            turn_first_chunk_seconds.clone(),
        );
        registry.register(
            "turn_duration_seconds",
            "Time from dispatching a turn to its end",
            turn_duration_seconds.clone(),
        );
        registry.register(
            "tokens",
            "Model tokens reported by agents' turns, by kind",
            tokens.clone(),
        );
        registry.register(
            "link_frames_rejected",
            "Sidecar frames refused, by reason",
            frames_rejected.clone(),
        );
        registry.register(
            "identity_certify",
            "Certificate requests, by result",
            certify.clone(),
        );
        registry.register(
            "identity_certify_stopped",
            "Certificate requests refused before any token check (rate limited per source, or a token refused moments ago)",
            certify_stopped.clone(),
        );
        registry.register(
            "local_agent_restarts",
            "Local agent processes restarted after dying",
            agent_restarts.clone(),
        );

        // Series that must read 0 exist from startup.
        for result in [
            "ok",
            "error",
            "cancelled",
            "timeout",
            "rejected",
            "not_found",
        ] {
            let _ = turns.get_or_create(&ResultLabel { result });
        }
        for result in ["ok", "error"] {
            let _ = certify.get_or_create(&ResultLabel { result });
        }
        for reason in ["rate_limited", "refused_recently"] {
            let _ = certify_stopped.get_or_create(&ReasonLabel { reason });
        }
        for reason in FRAME_REJECT_REASONS {
            let _ = frames_rejected.get_or_create(&ReasonLabel { reason });
        }

        let slack = crate::slack::metrics::SlackMetrics::default();
        slack.register(&mut registry);
        extra(&mut registry);

        Arc::new(Self {
            registry,
            link_streams,
            turns,
            turn_first_chunk_seconds,
            turn_duration_seconds,
            tokens,
            frames_rejected,
            certify,
            certify_stopped,
            agent_restarts,
            slack,
        })
    }

    pub fn add_tokens(&self, agent: &str, usage: &clawswarm_proto::v1::Usage) {
        for (kind, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
        ] {
            self.tokens
                .get_or_create(&TokenLabels {
                    agent: agent.to_owned(),
                    kind,
                })
                .inc_by(n);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

//! The sidecar's Prometheus registry (`clawswarm_*`), served on `/metrics`
//! for the pod's scrape annotations and PodMonitor.
//!
//! One sidecar serves one agent, so series carry no `agent` label here; the
//! scraper adds pod labels.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::workload::Usage;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DataQueryLabels {
    /// Which read API (`search`, `count`, `esql`, ...; `other` when refused
    /// before it was recognised).
    pub kind: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelCallLabels {
    /// "anthropic" or "openai".
    pub api: &'static str,
    pub result: &'static str,
}

pub const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];

/// Values of `clawswarm_model_calls_total`'s labels, created at 0 on start
/// so the alert rules' ratios have data before the first call.
pub const MODEL_APIS: [&str; 2] = ["anthropic", "openai"];
pub const MODEL_CALL_RESULTS: [&str; 4] = ["ok", "unreachable", "unauthorized", "budget_exhausted"];
/// Values of `clawswarm_notices_total{result}`.
pub const NOTICE_RESULTS: [&str; 3] = ["forwarded", "skipped", "malformed"];

fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.5, 16)
}

pub struct SidecarMetrics {
    registry: Registry,
    /// Tokens as the model provider reported them, by kind.
    pub tokens: Family<KindLabel, Counter>,
    pub turns: Family<ResultLabel, Counter>,
    pub turn_first_token_seconds: Histogram,
    pub turn_duration_seconds: Histogram,
    pub model_calls: Family<ModelCallLabels, Counter>,
    pub workload_up: Gauge,
    pub link_connected: Gauge,
    pub cert_expiration_timestamp_seconds: Gauge,
    pub cert_refreshes: Family<ResultLabel, Counter>,
    pub notices: Family<ResultLabel, Counter>,
    pub data_queries: Family<DataQueryLabels, Counter>,
    pub data_documents: Counter,
    pub data_response_bytes: Counter,
    pub data_query_seconds: Histogram,
}

impl SidecarMetrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("clawswarm");
        let m = Self {
            tokens: Family::default(),
            turns: Family::default(),
            turn_first_token_seconds: Histogram::new(latency_buckets()),
            turn_duration_seconds: Histogram::new(latency_buckets()),
            model_calls: Family::default(),
            workload_up: Gauge::default(),
            link_connected: Gauge::default(),
            cert_expiration_timestamp_seconds: Gauge::default(),
            cert_refreshes: Family::default(),
            notices: Family::default(),
            data_queries: Family::default(),
            data_documents: Counter::default(),
            data_response_bytes: Counter::default(),
            data_query_seconds: Histogram::new(latency_buckets()),
            registry: Registry::default(),
        };
        registry.register(
            "tokens",
            "Model tokens used by this agent, by kind",
            m.tokens.clone(),
        );
        registry.register("turns", "Turns finished, by outcome", m.turns.clone());
        registry.register(
            "turn_first_token_seconds",
            "Time from receiving a turn to the workload's first reply text",
            m.turn_first_token_seconds.clone(),
        );
        registry.register(
            "turn_duration_seconds",
            "Time from receiving a turn to its end",
            m.turn_duration_seconds.clone(),
        );
        registry.register(
            "model_calls",
            "Model API calls forwarded by the sidecar, by API and result",
            m.model_calls.clone(),
        );
        registry.register(
            "workload_up",
            "1 when the workload answers its readiness check",
            m.workload_up.clone(),
        );
        registry.register(
            "link_connected",
            "1 while the AgentLink stream to the controller is up",
            m.link_connected.clone(),
        );
        registry.register(
            "identity_cert_expiration_timestamp_seconds",
            "Expiry of the current workload certificate (Unix seconds)",
            m.cert_expiration_timestamp_seconds.clone(),
        );
        registry.register(
            "identity_cert_refreshes",
            "Certificate requests, by result",
            m.cert_refreshes.clone(),
        );
        registry.register("notices", "Proactive notices, by result", m.notices.clone());
        registry.register(
            "data_queries",
            "Company-data queries through the data proxy, by kind and outcome",
            m.data_queries.clone(),
        );
        registry.register(
            "data_documents",
            "Documents (hits, ES|QL rows) returned to the agent by the data proxy",
            m.data_documents.clone(),
        );
        registry.register(
            "data_response_bytes",
            "Bytes of engine answers returned to the agent by the data proxy",
            m.data_response_bytes.clone(),
        );
        registry.register(
            "data_query_seconds",
            "Time from a data query's arrival to its answer, checks included",
            m.data_query_seconds.clone(),
        );
        for kind in TOKEN_KINDS {
            let _ = m.tokens.get_or_create(&KindLabel { kind });
        }
        for result in [
            "ok",
            "error",
            "cancelled",
            "timeout",
            "rejected",
            "not_found",
        ] {
            let _ = m.turns.get_or_create(&ResultLabel { result });
        }
        for result in ["ok", "error"] {
            let _ = m.cert_refreshes.get_or_create(&ResultLabel { result });
        }
        for api in MODEL_APIS {
            for result in MODEL_CALL_RESULTS {
                let _ = m
                    .model_calls
                    .get_or_create(&ModelCallLabels { api, result });
            }
        }
        for result in NOTICE_RESULTS {
            let _ = m.notices.get_or_create(&ResultLabel { result });
        }
        // Only the outcomes dashboards and alerts read: every kind × every
        // outcome would be 110 mostly meaningless series.
        for outcome in [
            "ok",
            "refused_write",
            "refused_index",
            "engine_error",
            "unreachable",
        ] {
            let _ = m.data_queries.get_or_create(&DataQueryLabels {
                kind: "search",
                outcome,
            });
        }
        Arc::new(Self { registry, ..m })
    }

    /// Count tokens the model provider reported.
    pub fn add_usage(&self, usage: &Usage) {
        for (kind, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
        ] {
            self.tokens.get_or_create(&KindLabel { kind }).inc_by(n);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_series_exist_at_zero_and_count_by_kind() {
        let m = SidecarMetrics::new();
        let text = m.encode();
        assert!(
            text.contains("clawswarm_tokens_total{kind=\"cache_write\"} 0"),
            "{text}"
        );
        m.add_usage(&Usage {
            input_tokens: 7,
            output_tokens: 2,
            cache_read_tokens: 3,
            cache_write_tokens: 0,
        });
        let text = m.encode();
        assert!(
            text.contains("clawswarm_tokens_total{kind=\"input\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("clawswarm_tokens_total{kind=\"cache_read\"} 3"),
            "{text}"
        );
    }
}

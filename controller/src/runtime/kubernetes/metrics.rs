//! Metrics of the Kubernetes runtime. The controller registers them into its
//! `clawswarm`-prefixed registry with [`KubernetesMetrics::register`]:
//! `clawswarm_controller_reconcile_duration_seconds`,
//! `clawswarm_controller_reconcile_errors_total{reason}`,
//! `clawswarm_controller_pod_replacements_total`,
//! `clawswarm_controller_tokenreview_decisions_total{result}`,
//! `clawswarm_controller_leader` (1 on the replica holding the Lease).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::metrics::{ReasonLabel, ResultLabel};

/// Reconciles are API round trips: 5 ms … ~20 s.
const RECONCILE_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 20.0];

#[derive(Clone, Debug)]
pub struct KubernetesMetrics {
    pub reconcile_duration_seconds: Histogram,
    pub reconcile_errors: Family<ReasonLabel, Counter>,
    pub pod_replacements: Counter,
    pub tokenreview_decisions: Family<ResultLabel, Counter>,
    pub leader: Gauge,
}

impl Default for KubernetesMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl KubernetesMetrics {
    pub fn new() -> Self {
        let m = Self {
            reconcile_duration_seconds: Histogram::new(RECONCILE_BUCKETS),
            reconcile_errors: Family::default(),
            pod_replacements: Counter::default(),
            tokenreview_decisions: Family::default(),
            leader: Gauge::default(),
        };
        // Series that must read 0 exist from startup.
        for result in ["allow", "deny", "unavailable"] {
            let _ = m
                .tokenreview_decisions
                .get_or_create(&ResultLabel { result });
        }
        m
    }

    /// Register under `controller_` in `registry` (the `clawswarm` one).
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("controller");
        sub.register(
            "reconcile_duration_seconds",
            "Time to reconcile one Agent",
            self.reconcile_duration_seconds.clone(),
        );
        sub.register(
            "reconcile_errors",
            "Failed reconciles, by error kind",
            self.reconcile_errors.clone(),
        );
        sub.register(
            "pod_replacements",
            "Agent pods replaced after they failed, vanished or went out of date",
            self.pod_replacements.clone(),
        );
        sub.register(
            "tokenreview_decisions",
            "Identity decisions on projected tokens, by result",
            self.tokenreview_decisions.clone(),
        );
        sub.register(
            "leader",
            "1 while this replica holds the leader Lease",
            self.leader.clone(),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_named_under_the_controller_prefix() {
        let mut registry = Registry::with_prefix("clawswarm");
        let m = KubernetesMetrics::new();
        m.register(&mut registry);
        m.reconcile_errors
            .get_or_create(&ReasonLabel { reason: "kube" })
            .inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "clawswarm_controller_reconcile_duration_seconds_bucket",
            "clawswarm_controller_reconcile_errors_total{reason=\"kube\"} 1",
            "clawswarm_controller_tokenreview_decisions_total{result=\"deny\"} 0",
            "clawswarm_controller_leader 0",
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
    }
}

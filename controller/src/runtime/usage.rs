//! An agent's token totals from what its sidecar reports: turn usage (what
//! each finished turn used, as the workload counted it) and, from sidecars
//! that meter every model call themselves, the metered lifetime figure of
//! the ledger on the agent's volume. Metered figures include what no turn
//! reports (heartbeats, cron runs), so an agent that has them is counted by
//! them alone; turn usage counts the rest.

use std::collections::HashMap;
use std::sync::Arc;

use clawswarm_certs::AgentId;
use clawswarm_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{DataTotals, Runtime, TokenTotals};
use crate::mesh::UsageReport;

/// The metered part of an agent's usage, as persisted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MeteredTotals {
    /// The ledger the figure below comes from.
    pub ledger_id: String,
    /// The highest figure that ledger reported.
    pub lifetime: TokenTotals,
    /// What earlier ledgers (earlier volumes of this agent) counted.
    pub carried: TokenTotals,
    /// Company-data queries: the highest figure of this ledger, and what
    /// earlier ledgers counted (absent in records from before the proxy).
    #[serde(default)]
    pub data: DataTotals,
    #[serde(default)]
    pub data_carried: DataTotals,
}

impl MeteredTotals {
    /// Every token metered for the agent.
    pub fn total(&self) -> TokenTotals {
        let mut t = self.carried;
        t.add_totals(&self.lifetime);
        t
    }

    /// Every company-data query metered for the agent.
    pub fn data_total(&self) -> DataTotals {
        let mut t = self.data_carried;
        t.add(&self.data);
        t
    }

    /// A report as if it were the first one known.
    pub fn from_report(report: &pb::MeteredUsage) -> MeteredTotals {
        Self::fold(None, report)
    }

    /// Fold one report into what was known. A ledger only grows, so a lower
    /// figure from the same ledger is a late report and changes nothing; a
    /// new ledger id means a new volume, whose count starts from zero, so
    /// the old ledger's figure is carried.
    pub fn fold(known: Option<&MeteredTotals>, report: &pb::MeteredUsage) -> MeteredTotals {
        let mut lifetime = TokenTotals::default();
        if let Some(u) = &report.lifetime {
            lifetime.add(u);
        }
        let data = report
            .data
            .as_ref()
            .map(DataTotals::from_proto)
            .unwrap_or_default();
        match known {
            None => MeteredTotals {
                ledger_id: report.ledger_id.clone(),
                lifetime,
                carried: TokenTotals::default(),
                data,
                data_carried: DataTotals::default(),
            },
            Some(k) if k.ledger_id == report.ledger_id => MeteredTotals {
                ledger_id: k.ledger_id.clone(),
                lifetime: k.lifetime.max_each(&lifetime),
                carried: k.carried,
                data: k.data.max_each(&data),
                data_carried: k.data_carried,
            },
            Some(k) => MeteredTotals {
                ledger_id: report.ledger_id.clone(),
                lifetime,
                carried: k.total(),
                data,
                data_carried: k.data_total(),
            },
        }
    }
}

/// The totals an agent record shows: metered when the sidecar meters,
/// else what its turns reported.
pub fn shown(turns: TokenTotals, metered: Option<&MeteredTotals>) -> TokenTotals {
    metered.map_or(turns, MeteredTotals::total)
}

/// The company-data queries an agent record shows (none without metering).
pub fn shown_data(metered: Option<&MeteredTotals>) -> DataTotals {
    metered.map_or_else(DataTotals::default, MeteredTotals::data_total)
}

/// Hand the mesh's usage reports to the runtime until the mesh goes away,
/// or until `shutdown` and what had arrived by then is handed over.
/// Reports that arrived together are batched: one call per agent for turn
/// usage, the latest metered report per agent and ledger.
pub async fn record(
    mut rx: mpsc::Receiver<(AgentId, UsageReport)>,
    runtime: Arc<dyn Runtime>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => match rx.try_recv() {
                Ok(r) => r,
                Err(_) => return,
            },
            next = rx.recv() => match next {
                Some(r) => r,
                None => return,
            },
        };
        let mut turns = HashMap::<AgentId, TokenTotals>::new();
        let mut metered = Vec::<(AgentId, pb::MeteredUsage)>::new();
        let mut take = |(agent, report): (AgentId, UsageReport)| match report {
            UsageReport::Turn(u) => turns.entry(agent).or_default().add(&u),
            UsageReport::Metered(m) => {
                // A later figure of the same ledger supersedes an earlier one.
                metered.retain(|(a, old)| !(a == &agent && old.ledger_id == m.ledger_id));
                metered.push((agent, m));
            }
        };
        take(first);
        while let Ok(next) = rx.try_recv() {
            take(next);
        }
        for (agent, totals) in turns {
            if let Err(e) = runtime.record_usage(&agent, totals).await {
                warn!(agent = %agent, error = %e, "could not record token usage");
            }
        }
        for (agent, report) in metered {
            if let Err(e) = runtime.record_metered(&agent, &report).await {
                warn!(agent = %agent, error = %e, "could not record metered usage");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ledger: &str, input: u64, output: u64) -> pb::MeteredUsage {
        pb::MeteredUsage {
            lifetime: Some(pb::Usage {
                input_tokens: input,
                output_tokens: output,
                cache_read_tokens: 1,
                cache_write_tokens: 2,
            }),
            ledger_id: ledger.into(),
            data: Some(pb::DataUsage {
                queries: input,
                refused: 1,
                documents: output,
                bytes: 100,
            }),
        }
    }

    #[test]
    fn a_ledger_counts_its_highest_figure_and_a_late_lower_one_changes_nothing() {
        let first = MeteredTotals::fold(None, &report("a", 10, 5));
        let grown = MeteredTotals::fold(Some(&first), &report("a", 30, 9));
        let late = MeteredTotals::fold(Some(&grown), &report("a", 20, 7));
        assert_eq!(late, grown);
        assert_eq!(
            (
                late.total().input,
                late.total().output,
                late.total().cache_write
            ),
            (30, 9, 2)
        );
    }

    #[test]
    fn a_new_ledger_starts_from_zero_and_the_old_figure_is_carried() {
        let old = MeteredTotals::fold(None, &report("a", 30, 9));
        let new = MeteredTotals::fold(Some(&old), &report("b", 4, 1));
        assert_eq!(new.ledger_id, "b");
        assert_eq!(new.carried, old.total());
        assert_eq!((new.total().input, new.total().output), (34, 10));
        let grown = MeteredTotals::fold(Some(&new), &report("b", 6, 1));
        assert_eq!((grown.total().input, grown.carried.input), (36, 30));
        // Company-data queries fold the same way, from the same ledger.
        assert_eq!(grown.data_total().queries, 36);
        assert_eq!(grown.data_total().refused, 2);
        assert_eq!(shown_data(Some(&grown)).documents, 10);
        assert_eq!(shown_data(None), DataTotals::default());
    }

    /// Issue 17: figures come from sidecars; a huge one used to wrap
    /// (release) or panic the usage task for every agent (debug).
    #[test]
    fn huge_reported_figures_saturate_instead_of_overflowing() {
        let old = MeteredTotals::fold(None, &report("a", u64::MAX, u64::MAX - 1));
        let new = MeteredTotals::fold(Some(&old), &report("b", u64::MAX, 5));
        assert_eq!(new.total().input, u64::MAX);
        assert_eq!(new.total().output, u64::MAX);
        let mut turns = TokenTotals::default();
        for _ in 0..3 {
            turns.add(&pb::Usage {
                input_tokens: u64::MAX / 2,
                ..pb::Usage::default()
            });
        }
        assert_eq!(turns.input, u64::MAX);
    }

    #[test]
    fn metered_totals_replace_turn_totals_when_present() {
        let turns = TokenTotals {
            input: 7,
            ..TokenTotals::default()
        };
        assert_eq!(shown(turns, None), turns);
        let m = MeteredTotals::fold(None, &report("a", 12, 3));
        assert_eq!(shown(turns, Some(&m)).input, 12);
    }
}

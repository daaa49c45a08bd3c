//! Tokens used per UTC day and month, persisted in the agent's data dir so
//! budgets survive restarts, and the budget check made before each call.
//! The ledger also keeps the volume's lifetime total under a random ledger
//! id: the sidecar reports it to the controller (`Status.metered`), which
//! is how tokens spent outside any turn (heartbeats, cron runs) reach
//! `Agent.status` and `/agent usage`. The same ledger counts the agent's
//! company-data queries (the data proxy records them), so they reach the
//! same places the same way.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, Time};
use tokio::sync::watch;

use crate::workload::Usage;

/// Token limits; 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budgets {
    pub daily_tokens: u64,
    pub monthly_tokens: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

/// A budget that is used up, and when it comes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exhausted {
    pub period: Period,
    pub limit: u64,
    pub used: u64,
    pub resets_at: OffsetDateTime,
}

impl Exhausted {
    /// What the person reads.
    pub fn message(&self) -> String {
        let limit = thousands(self.limit);
        match self.period {
            Period::Day => format!(
                "Your daily token budget of {limit} tokens is used up; it resets at 00:00 UTC. \
                 Ask your administrator if you need more."
            ),
            Period::Month => format!(
                "Your monthly token budget of {limit} tokens is used up; it resets on {} at 00:00 UTC. \
                 Ask your administrator if you need more.",
                self.resets_at.date()
            ),
        }
    }

    /// Whole seconds until the budget resets, at least 1.
    pub fn retry_after_secs(&self, now: OffsetDateTime) -> u64 {
        u64::try_from((self.resets_at - now).whole_seconds())
            .unwrap_or(0)
            .max(1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot read usage ledger {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("usage ledger {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write usage ledger {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl LedgerError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Corrupt { .. } => "corrupt",
            Self::Write { .. } => "write",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl PeriodUsage {
    /// What the budgets count: every token the provider reported, cached
    /// or not (see docs/openclaw.md, "Budgets").
    pub fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }

    fn add(&mut self, u: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(u.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(u.output_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(u.cache_read_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(u.cache_write_tokens);
    }
}

/// Company-data queries through the data proxy, over the ledger's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCounts {
    /// Every query, served or refused.
    pub queries: u64,
    /// Queries the proxy refused (writes, other indices, caps, bad input).
    pub refused: u64,
    /// Hits and ES|QL rows returned.
    pub documents: u64,
    /// Bytes of answers returned.
    pub bytes: u64,
}

impl DataCounts {
    fn add(&mut self, o: &DataCounts) {
        self.queries = self.queries.saturating_add(o.queries);
        self.refused = self.refused.saturating_add(o.refused);
        self.documents = self.documents.saturating_add(o.documents);
        self.bytes = self.bytes.saturating_add(o.bytes);
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// `YYYY-MM-DD` (UTC) the day figures belong to.
    day: String,
    day_usage: PeriodUsage,
    /// `YYYY-MM` (UTC).
    month: String,
    month_usage: PeriodUsage,
    /// Names this ledger; a ledger written before ids existed gets one on open.
    #[serde(default)]
    id: String,
    /// Every call this ledger recorded.
    #[serde(default)]
    lifetime: PeriodUsage,
    /// Every company-data query this ledger recorded.
    #[serde(default)]
    data: DataCounts,
}

/// The lifetime figures the controller is told about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metered {
    pub ledger_id: String,
    pub lifetime: PeriodUsage,
    pub data: DataCounts,
}

impl State {
    fn roll(&mut self, now: OffsetDateTime) {
        let (day, month) = keys(now);
        if self.day != day {
            self.day = day;
            self.day_usage = PeriodUsage::default();
        }
        if self.month != month {
            self.month = month;
            self.month_usage = PeriodUsage::default();
        }
    }
}

pub struct UsageLedger {
    path: PathBuf,
    state: Mutex<State>,
    metered: watch::Sender<Metered>,
}

fn new_ledger_id() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl UsageLedger {
    /// Open the ledger at `path` (a missing file is an empty ledger).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, LedgerError> {
        let path = path.into();
        let mut state: State = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LedgerError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => return Err(LedgerError::Read { path, source }),
        };
        let fresh_id = state.id.is_empty();
        if fresh_id {
            state.id = new_ledger_id();
        }
        let metered = watch::Sender::new(Metered {
            ledger_id: state.id.clone(),
            lifetime: state.lifetime,
            data: state.data,
        });
        let ledger = Self {
            path,
            state: Mutex::new(state.clone()),
            metered,
        };
        if fresh_id {
            // Persisted now, so a restart before the first call keeps the id
            // (a new id tells the controller the count started again). Like
            // `record`, a failed write is not fatal: budgets still hold.
            if let Err(e) = ledger.persist(&state) {
                tracing::warn!(error = %e, "usage ledger not persisted");
            }
        }
        Ok(ledger)
    }

    /// The lifetime total, now and as it changes.
    pub fn metered(&self) -> watch::Receiver<Metered> {
        self.metered.subscribe()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Add one call's usage and persist. The in-memory figures are updated
    /// even when the write fails, so budgets still hold until a restart.
    pub fn record(&self, usage: &Usage, now: OffsetDateTime) -> Result<(), LedgerError> {
        let snapshot = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.roll(now);
            s.day_usage.add(usage);
            s.month_usage.add(usage);
            s.lifetime.add(usage);
            s.clone()
        };
        self.publish(&snapshot);
        self.persist(&snapshot)
    }

    /// Add one company-data query and persist (a few hundred bytes per
    /// query, like a model call; the figures stand in memory if it fails).
    pub fn record_data(&self, query: &DataCounts) -> Result<(), LedgerError> {
        let snapshot = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.data.add(query);
            s.clone()
        };
        self.publish(&snapshot);
        self.persist(&snapshot)
    }

    /// Tell the controller's link about the new lifetime figures.
    fn publish(&self, s: &State) {
        self.metered.send_replace(Metered {
            ledger_id: s.id.clone(),
            lifetime: s.lifetime,
            data: s.data,
        });
    }

    /// (today, this month) as of `now`.
    pub fn totals(&self, now: OffsetDateTime) -> (PeriodUsage, PeriodUsage) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.roll(now);
        (s.day_usage, s.month_usage)
    }

    /// The first used-up budget, if any. Checked before a call goes out: a
    /// call that starts under budget finishes even if it crosses the limit.
    pub fn check(&self, budgets: Budgets, now: OffsetDateTime) -> Option<Exhausted> {
        let (day, month) = self.totals(now);
        if budgets.monthly_tokens > 0 && month.total() >= budgets.monthly_tokens {
            return Some(Exhausted {
                period: Period::Month,
                limit: budgets.monthly_tokens,
                used: month.total(),
                resets_at: next_month(now),
            });
        }
        if budgets.daily_tokens > 0 && day.total() >= budgets.daily_tokens {
            return Some(Exhausted {
                period: Period::Day,
                limit: budgets.daily_tokens,
                used: day.total(),
                resets_at: next_day(now),
            });
        }
        None
    }

    fn persist(&self, state: &State) -> Result<(), LedgerError> {
        let err = |source| LedgerError::Write {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| LedgerError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, bytes).map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

fn keys(now: OffsetDateTime) -> (String, String) {
    let d = now.to_offset(time::UtcOffset::UTC).date();
    (
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        format!("{:04}-{:02}", d.year(), u8::from(d.month())),
    )
}

fn next_day(now: OffsetDateTime) -> OffsetDateTime {
    let d = now.to_offset(time::UtcOffset::UTC).date();
    let next = d.next_day().unwrap_or(d);
    next.with_time(Time::MIDNIGHT).assume_utc()
}

fn next_month(now: OffsetDateTime) -> OffsetDateTime {
    let d = now.to_offset(time::UtcOffset::UTC).date();
    let (year, month) = if d.month() == Month::December {
        (d.year() + 1, Month::January)
    } else {
        (d.year(), d.month().next())
    };
    Date::from_calendar_date(year, month, 1)
        .unwrap_or(d)
        .with_time(Time::MIDNIGHT)
        .assume_utc()
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use time::macros::datetime;

    use super::*;

    fn usage(n: u64) -> Usage {
        Usage {
            input_tokens: n,
            output_tokens: 1,
            cache_read_tokens: 2,
            cache_write_tokens: 3,
        }
    }

    #[test]
    fn usage_rolls_over_at_utc_midnight_and_month_start_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        let l = UsageLedger::open(&path).unwrap();
        l.record(&usage(4), datetime!(2026-01-31 23:59 UTC))
            .unwrap();
        let (day, month) = l.totals(datetime!(2026-01-31 23:59:59 UTC));
        assert_eq!((day.total(), month.total()), (10, 10));
        let l = UsageLedger::open(&path).unwrap();
        let (day, month) = l.totals(datetime!(2026-01-31 23:59:59 UTC));
        assert_eq!((day.total(), month.total()), (10, 10), "persisted");
        l.record(&usage(4), datetime!(2026-02-01 00:00 UTC))
            .unwrap();
        let (day, month) = l.totals(datetime!(2026-02-01 00:01 UTC));
        assert_eq!((day.total(), month.total()), (10, 10), "both reset");
        l.record(&usage(4), datetime!(2026-02-02 08:00 +02:00))
            .unwrap();
        let (day, month) = l.totals(datetime!(2026-02-02 07:00 UTC));
        assert_eq!((day.total(), month.total()), (10, 20));
    }

    #[test]
    fn check_reports_the_exhausted_budget_and_when_it_resets() {
        let dir = tempfile::tempdir().unwrap();
        let l = UsageLedger::open(dir.path().join("u.json")).unwrap();
        let now = datetime!(2026-12-15 10:00 UTC);
        let budgets = Budgets {
            daily_tokens: 20,
            monthly_tokens: 0,
        };
        assert_eq!(l.check(budgets, now), None);
        l.record(&usage(14), now).unwrap();
        let e = l.check(budgets, now).unwrap();
        assert_eq!((e.period, e.limit, e.used), (Period::Day, 20, 20));
        assert_eq!(e.resets_at, datetime!(2026-12-16 00:00 UTC));
        assert_eq!(e.retry_after_secs(now), 14 * 3600);
        assert!(
            e.message()
                .contains("daily token budget of 20 tokens is used up; it resets at 00:00 UTC")
        );
        let e = l.check(
            Budgets {
                daily_tokens: 0,
                monthly_tokens: 1_000,
            },
            now,
        );
        assert_eq!(e, None);
        let e = l
            .check(
                Budgets {
                    daily_tokens: 1_000_000,
                    monthly_tokens: 15,
                },
                now,
            )
            .unwrap();
        assert_eq!(e.resets_at, datetime!(2027-01-01 00:00 UTC));
        assert!(
            e.message().contains("monthly token budget of 15 tokens"),
            "{}",
            e.message()
        );
        assert!(e.message().contains("2027-01-01"), "{}", e.message());
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_lifetime_total_outlives_days_and_restarts_under_one_ledger_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        let l = UsageLedger::open(&path).unwrap();
        let id = l.metered().borrow().ledger_id.clone();
        assert_eq!(id.len(), 24);
        let reopened = UsageLedger::open(&path).unwrap();
        assert_eq!(
            reopened.metered().borrow().ledger_id,
            id,
            "kept before any call"
        );
        let watching = l.metered();
        l.record(&usage(4), datetime!(2026-01-31 23:00 UTC))
            .unwrap();
        l.record(&usage(4), datetime!(2026-02-01 01:00 UTC))
            .unwrap();
        assert!(watching.has_changed().unwrap());
        let m = watching.borrow().clone();
        assert_eq!(
            (m.ledger_id.as_str(), m.lifetime.total()),
            (id.as_str(), 20)
        );
        let reopened = UsageLedger::open(&path).unwrap();
        assert_eq!(*reopened.metered().borrow(), m);
        let other = UsageLedger::open(dir.path().join("other.json")).unwrap();
        assert_ne!(other.metered().borrow().ledger_id, id);
    }

    #[test]
    fn a_ledger_from_before_lifetime_totals_opens_and_gets_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        std::fs::write(
            &path,
            r#"{"day":"2026-01-31","day_usage":{"input_tokens":1,"output_tokens":0,"cache_read_tokens":0,"cache_write_tokens":0},"month":"2026-01","month_usage":{"input_tokens":1,"output_tokens":0,"cache_read_tokens":0,"cache_write_tokens":0}}"#,
        )
        .unwrap();
        let l = UsageLedger::open(&path).unwrap();
        let (day, _) = l.totals(datetime!(2026-01-31 12:00 UTC));
        assert_eq!(day.total(), 1, "the budget figures are kept");
        let m = l.metered().borrow().clone();
        assert!(!m.ledger_id.is_empty());
        assert_eq!(m.lifetime.total(), 0);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains(&m.ledger_id)
        );
    }

    #[test]
    fn a_corrupt_ledger_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = UsageLedger::open(&path).err().unwrap();
        assert_eq!(err.metric_label(), "corrupt");
        assert!(err.to_string().contains("u.json"), "{err}");
    }
}

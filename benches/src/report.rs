//! Results: one row per measured value with its target, printed as a table
//! and written as JSON plus a markdown page naming the machine.

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};

/// Whether lower or higher is better, for the verdict against a target.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    AtMost,
    AtLeast,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub figure: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    /// The same quantity measured without clawswarm in the way, if any.
    pub baseline: Option<f64>,
    pub target: Option<f64>,
    pub goal: Option<Goal>,
    pub note: String,
}

impl Row {
    pub fn new(figure: &str, metric: &str, value: f64, unit: &str) -> Self {
        Self {
            figure: figure.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            baseline: None,
            target: None,
            goal: None,
            note: String::new(),
        }
    }
    pub fn baseline(mut self, b: f64) -> Self {
        self.baseline = Some(b);
        self
    }
    pub fn at_most(mut self, t: f64) -> Self {
        self.target = Some(t);
        self.goal = Some(Goal::AtMost);
        self
    }
    pub fn at_least(mut self, t: f64) -> Self {
        self.target = Some(t);
        self.goal = Some(Goal::AtLeast);
        self
    }
    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.note = n.into();
        self
    }

    /// "ok", or how far off the target is.
    pub fn verdict(&self) -> String {
        match (self.target, self.goal) {
            (Some(t), Some(Goal::AtMost)) if self.value <= t => "ok".into(),
            (Some(t), Some(Goal::AtLeast)) if self.value >= t => "ok".into(),
            (Some(t), Some(_)) if t != 0.0 => {
                format!("MISS ({:.2}x target)", self.value / t)
            }
            (Some(_), Some(_)) => "MISS".into(),
            _ => String::new(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub memory_total: String,
    pub cpu_model: String,
    pub kernel: String,
    /// Other work on the box when the run started (1, 5, 15 min).
    pub loadavg: String,
    pub date_utc: String,
    pub commit: String,
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_total = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .map(|l| l.trim_start_matches("MemTotal:").trim().to_owned())
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let loadavg = std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let date_utc = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            memory_total,
            cpu_model,
            kernel,
            loadavg,
            date_utc,
            commit,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub rows: Vec<Row>,
    /// Figures that could not run, with why.
    pub skipped: Vec<String>,
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| figure | metric | value | unit | baseline | target | verdict | note |\n|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let target = match (r.target, r.goal) {
                (Some(t), Some(Goal::AtMost)) => format!("≤ {}", fmt_num(t)),
                (Some(t), Some(Goal::AtLeast)) => format!("≥ {}", fmt_num(t)),
                _ => String::new(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.figure,
                r.metric,
                fmt_num(r.value),
                r.unit,
                r.baseline.map(fmt_num).unwrap_or_default(),
                target,
                r.verdict(),
                r.note
            ));
        }
        for s in &self.skipped {
            out.push_str(&format!("| skipped | {s} | | | | | | |\n"));
        }
        out
    }

    pub fn write(&self, dir: &Path, analysis: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("latest.json"), serde_json::to_vec_pretty(self)?)?;
        self.write_readme(dir, analysis)
    }

    /// `README.md` alone, from these results and the analysis text.
    pub fn write_readme(&self, dir: &Path, analysis: &str) -> anyhow::Result<()> {
        let m = &self.machine;
        let md = format!(
            "# Benchmark results\n\n\
             Written by `clawswarm-bench`. \
             Regenerate with `benches/run.sh` (builds the release binaries, then runs `clawswarm-bench all`); `clawswarm-bench --help` lists the figures and their sizes.\n\n\
             - date: {}\n- commit: {}\n- command: `{}`\n- CPU: {} × {}\n- memory: {}\n- kernel: {}\n- load average at start: {}\n\n\
             Everything (controller, sidecars, stub models, simulated sidecars, load \
             generator) shares these cores, so throughput figures are for the whole \
             system on this box, not for the controller alone.\n\n{}\n{}",
            m.date_utc,
            m.commit,
            self.command,
            m.nproc,
            m.cpu_model,
            m.memory_total,
            m.kernel,
            m.loadavg,
            self.table(),
            analysis
        );
        std::fs::write(dir.join("README.md"), md)?;
        Ok(())
    }
}

/// p-th percentile (0..=100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn verdict_says_how_far_off() {
        assert_eq!(
            Row::new("f", "m", 2.0, "ms").at_most(1.0).verdict(),
            "MISS (2.00x target)"
        );
        assert_eq!(Row::new("f", "m", 0.5, "ms").at_most(1.0).verdict(), "ok");
        assert_eq!(
            Row::new("f", "m", 5.0, "/s").at_least(10.0).verdict(),
            "MISS (0.50x target)"
        );
    }
}

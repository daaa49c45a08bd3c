//! `clawswarm-bench`: how fast and how big the mesh is, measured against a
//! baseline in the same run. Starts the release binaries as processes; see
//! `benches/results/README.md` for the latest figures.

mod issuance;
mod real;
mod report;
mod sim;
mod stack;
mod swarm;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use report::{Machine, Report, Row};
use stack::Binaries;

#[derive(Parser, Debug)]
#[command(
    name = "clawswarm-bench",
    about = "clawswarm benchmarks (release binaries as processes)"
)]
struct Cli {
    /// Directory holding clawswarm, clawswarm-sidecar and clawswarm-stub-model
    /// (default: next to this executable).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Where results/latest.json and results/README.md go.
    #[arg(long, global = true, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// Print the table only; leave the committed results alone.
    #[arg(long, global = true)]
    no_write: bool,
    #[command(subcommand)]
    figure: Figure,
}

#[derive(Subcommand, Debug)]
enum Figure {
    /// 1: latency added by Gateway → controller → sidecar over calling the stub directly.
    Overhead(OverheadArgs),
    /// 2: N simulated sidecars on one controller: memory, connect time, routing throughput.
    Scale(ScaleArgs),
    /// 3: CSRs verified and signed per second.
    Certs(CertArgs),
    /// 4: a real sidecar's RSS and CPU, idle and streaming.
    Footprint(FootprintArgs),
    /// 5: controller SIGKILLed and restarted under N sidecars with turns in flight.
    Storm(StormArgs),
    /// Everything, in one run.
    All(AllArgs),
    /// Re-render results/README.md from results/latest.json and ANALYSIS.md.
    Readme,
}

#[derive(Args, Debug, Clone)]
struct OverheadArgs {
    /// Turn pairs (one direct, one through the mesh).
    #[arg(long, default_value_t = 10_000)]
    turns: usize,
    /// Chunks per reply.
    #[arg(long, default_value_t = 4)]
    chunks: u32,
}

#[derive(Args, Debug, Clone)]
struct ScaleArgs {
    /// Simulated sidecar counts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    agents: Vec<usize>,
    /// Concurrent Gateway.Chat callers.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Chunks per reply.
    #[arg(long, default_value_t = 10)]
    chunks: u32,
    /// Seconds of measured load per N (after 2 s of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Args, Debug, Clone)]
struct CertArgs {
    #[arg(long, default_value_t = 5_000)]
    count: usize,
    /// Also through Identity.Certify on a controller process.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    end_to_end: bool,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

#[derive(Args, Debug, Clone)]
struct FootprintArgs {
    /// Idle window in seconds.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
}

#[derive(Args, Debug, Clone)]
struct StormArgs {
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Turns in flight when the controller dies.
    #[arg(long, default_value_t = 100)]
    turns: usize,
}

#[derive(Args, Debug, Clone)]
struct AllArgs {
    #[command(flatten)]
    overhead: OverheadArgs,
    #[command(flatten)]
    footprint: FootprintArgs,
    #[arg(
        long = "scale-agents",
        value_delimiter = ',',
        default_value = "1000,5000,10000"
    )]
    scale_agents: Vec<usize>,
    #[arg(long, default_value_t = 256)]
    clients: usize,
    #[arg(long = "scale-seconds", default_value_t = 10)]
    scale_seconds: u64,
    #[arg(long = "cert-count", default_value_t = 5_000)]
    cert_count: usize,
    #[arg(long = "storm-agents", default_value_t = 10_000)]
    storm_agents: usize,
    #[arg(long = "storm-turns", default_value_t = 100)]
    storm_turns: usize,
}

/// Why a result looks the way it does, written by hand after a run and
/// kept next to the numbers.
fn analysis() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ANALYSIS.md")).unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    clawswarm_certs::install_default_crypto_provider();
    let nofile = stack::raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli, nofile))
}

async fn run(cli: Cli, nofile: u64) -> anyhow::Result<()> {
    if let Figure::Readme = cli.figure {
        let json = std::fs::read(cli.out.join("latest.json"))?;
        let report: Report = serde_json::from_slice(&json)?;
        report.write_readme(&cli.out, &analysis())?;
        eprintln!("wrote {}", cli.out.join("README.md").display());
        return Ok(());
    }
    let bins = Binaries::locate(cli.bin_dir.clone())?;
    let work = std::env::temp_dir().join(format!("clawswarm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    eprintln!("work dir {} (open files limit {nofile})", work.display());
    let mut rows: Vec<Row> = Vec::new();
    let mut skipped = Vec::new();
    let result = run_figures(&cli.figure, &bins, &work, &mut rows, &mut skipped).await;
    if let Err(e) = &result {
        skipped.push(format!("aborted: {e:#}"));
    }
    let report = Report {
        machine: Machine::probe(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        rows,
        skipped,
    };
    println!("{}", report.table());
    if !cli.no_write {
        report.write(&cli.out, &analysis())?;
        eprintln!("wrote {}", cli.out.display());
    }
    if report.skipped.is_empty() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("kept {} for the logs", work.display());
    }
    result
}

async fn run_figures(
    figure: &Figure,
    bins: &Binaries,
    work: &std::path::Path,
    rows: &mut Vec<Row>,
    skipped: &mut Vec<String>,
) -> anyhow::Result<()> {
    match figure {
        Figure::Overhead(a) => {
            let stack = real::RealStack::start(bins, work).await?;
            let r = real::overhead(&stack, a.turns, a.chunks, rows).await;
            stack.controller.stop().await;
            r
        }
        Figure::Footprint(a) => {
            let stack = real::RealStack::start(bins, work).await?;
            let r = real::footprint(&stack, Duration::from_secs(a.idle_seconds), rows).await;
            stack.controller.stop().await;
            r
        }
        Figure::Certs(a) => {
            issuance::in_process(a.count, rows)?;
            if a.end_to_end {
                issuance::end_to_end(bins, work, a.count, a.concurrency, rows).await?;
            }
            Ok(())
        }
        Figure::Scale(a) => {
            let load = swarm::LoadArgs {
                clients: a.clients,
                channels: a.channels,
                chunks: a.chunks,
                warmup: Duration::from_secs(2),
                duration: Duration::from_secs(a.seconds),
            };
            for &n in &a.agents {
                if let Err(e) = swarm::scale(bins, work, n, &load, rows).await {
                    skipped.push(format!("scale N={n}: {e:#}"));
                }
            }
            Ok(())
        }
        Figure::Readme => Ok(()),
        Figure::Storm(a) => swarm::storm(bins, work, a.agents, a.turns, rows).await,
        Figure::All(a) => {
            let stack = real::RealStack::start(bins, work).await?;
            let r = async {
                real::footprint(&stack, Duration::from_secs(a.footprint.idle_seconds), rows)
                    .await?;
                real::overhead(&stack, a.overhead.turns, a.overhead.chunks, rows).await?;
                real::rss_after_load(&stack, rows)
            }
            .await;
            stack.controller.stop().await;
            if let Err(e) = r {
                skipped.push(format!("overhead/footprint: {e:#}"));
            }
            issuance::in_process(a.cert_count, rows)?;
            if let Err(e) = issuance::end_to_end(bins, work, a.cert_count, 16, rows).await {
                skipped.push(format!("Identity.Certify: {e:#}"));
            }
            let load = swarm::LoadArgs {
                clients: a.clients,
                channels: 4,
                chunks: 10,
                warmup: Duration::from_secs(2),
                duration: Duration::from_secs(a.scale_seconds),
            };
            for &n in &a.scale_agents {
                if let Err(e) = swarm::scale(bins, work, n, &load, rows).await {
                    skipped.push(format!("scale N={n}: {e:#}"));
                }
            }
            if let Err(e) = swarm::storm(bins, work, a.storm_agents, a.storm_turns, rows).await {
                skipped.push(format!("storm N={}: {e:#}", a.storm_agents));
            }
            Ok(())
        }
    }
}

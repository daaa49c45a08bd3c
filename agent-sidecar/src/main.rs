//! `clawswarm-sidecar`: one per agent pod, beside the workload.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clawswarm_sidecar::{
    app,
    config::{InitCommand, RunArgs},
    sandbox_bridge,
    workload::openclaw::config::init,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "clawswarm-sidecar",
    version,
    about = "Connects one agent's workload to the clawswarm controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Obtain a certificate, connect to the controller and relay turns.
    Run(Box<RunArgs>),
    /// Prepare the OpenClaw config before the gateway starts (the pod's init
    /// step): seed it on first run, re-apply the enforced security baseline
    /// on every run, and validate it with OpenClaw's own validator.
    Init(Box<InitCommand>),
    /// Run a local workload inside its sandbox, carrying only its own
    /// sidecar's ports across the sandbox's network namespace (started by
    /// the local controller; see sandbox_bridge).
    SandboxBridge(sandbox_bridge::InsideArgs),
    /// OpenClaw's install policy (run by OpenClaw before every skill or
    /// plugin install, request on stdin): refuse installs from public
    /// registries and git.
    InstallPolicy,
}

const EX_USAGE: u8 = 64;
const EX_SOFTWARE: u8 = 70;

fn main() -> ExitCode {
    clawswarm_certs::install_default_crypto_provider();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAWSWARM_LOG")
        .unwrap_or_else(|_| "info".into());
    // Colour only for a person at a terminal: log files, `kubectl logs`
    // and the audit lines a collector parses stay plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    if let Command::InstallPolicy = &cli.command {
        return clawswarm_sidecar::install_policy::run();
    }
    if let Command::Init(cmd) = &cli.command {
        if let Err(e) = std::fs::create_dir_all(&cmd.data_dir) {
            error!(error = %e, data_dir = %cmd.data_dir.display(), "cannot create the data dir");
            return ExitCode::from(EX_SOFTWARE);
        }
        if cmd.workload != "openclaw" {
            info!(workload = %cmd.workload, "nothing to prepare for this workload");
            return ExitCode::SUCCESS;
        }
        return match init(&cmd.openclaw.resolved(&cmd.data_dir)) {
            Ok(report) => {
                info!(report = ?report, "openclaw config ready");
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!(error = %e, "openclaw config refused");
                ExitCode::from(EX_USAGE)
            }
        };
    }
    rt.block_on(async move {
        match cli.command {
            Command::Init(_) | Command::InstallPolicy => ExitCode::SUCCESS,
            Command::SandboxBridge(args) => match sandbox_bridge::run_inside(args).await {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(EX_SOFTWARE)),
                Err(e) => {
                    error!(error = %e, "sandbox bridge failed");
                    ExitCode::from(EX_SOFTWARE)
                }
            },
            Command::Run(args) => {
                let shutdown = CancellationToken::new();
                let on_signal = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    on_signal.cancel();
                });
                match app::run(*args, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e @ (app::AppError::Config(_) | app::AppError::Bind { .. })) => {
                        error!(error = %e, "cannot start");
                        ExitCode::from(EX_USAGE)
                    }
                    Err(e) => {
                        error!(error = %e, "sidecar failed");
                        ExitCode::from(EX_SOFTWARE)
                    }
                }
            }
        }
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM", "stopping"),
        _ = int.recv() => info!(signal = "SIGINT", "stopping"),
    }
}

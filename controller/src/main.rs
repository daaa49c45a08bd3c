//! `clawswarm`: run the controller, or talk to a running one.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clawswarm_controller::{
    app,
    cli::{self, AgentsCommand, ChatArgs, ClientArgs, NoticesArgs},
    config::RunArgs,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "clawswarm",
    version,
    about = "One private AI agent per person, behind one controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (local runtime by default: no cluster needed).
    Run(Box<RunArgs>),
    /// Chat with an agent through the Gateway, printing the reply as it streams.
    Chat(ChatArgs),
    /// Follow an agent's notices (its cron jobs' output, alerts it set up)
    /// when no Slack app delivers them; runs until interrupted.
    Notices(NoticesArgs),
    /// Administer agents through the Gateway.
    Agents {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: AgentsCommand,
    },
}

/// sysexits.h EX_USAGE / EX_SOFTWARE.
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
    rt.block_on(async move {
        match cli.command {
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
                        error!(error = %e, "controller failed");
                        ExitCode::from(EX_SOFTWARE)
                    }
                }
            }
            Command::Chat(args) => report(cli::chat(args).await),
            Command::Notices(args) => report(cli::notices(args).await),
            Command::Agents { client, command } => report(cli::agents(client, command).await),
        }
    })
}

fn report(r: Result<(), cli::CliError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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

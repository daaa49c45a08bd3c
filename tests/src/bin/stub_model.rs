//! `clawswarm-stub-model`: the stub model server as a process, for end-to-end tests (as a
//! sidecar's workload, or as the provider behind a real OpenClaw gateway) and benchmarks.
//!
//! Prints `listening on <addr>` on stdout once bound and, with `--port-file`, writes the port
//! there (atomically, via a rename) so a harness can wait for the file instead of parsing output.
//! Exits cleanly on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use clawswarm_tests::stub_model::{PreviousResponse, StubConfig, StubModel};

/// Deterministic stub model server (OpenAI Responses, Chat Completions, Anthropic Messages).
#[derive(Parser, Debug)]
#[command(name = "clawswarm-stub-model", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Append one JSON line per model call to this file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Answer /readyz with 503 until this many milliseconds after start.
    #[arg(long, default_value_t = 0)]
    ready_after_ms: u64,
    /// Write the bound port (decimal, no newline) to this file once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Pause before each chunk (a `[delay_ms=N]` directive overrides it per call).
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Require this key on model calls (Bearer for OpenAI endpoints, x-api-key for Anthropic).
    #[arg(long, env = "STUB_MODEL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Calls kept in memory for GET /_stub/requests (the log file keeps all of them).
    #[arg(long, default_value_t = 10_000)]
    keep_requests: usize,
    /// Turns of history /v1/responses keeps per x-openclaw-session-key, as OpenClaw would;
    /// 0 makes every call stand alone.
    #[arg(long, default_value_t = 100)]
    session_turns: usize,
    /// How /v1/responses treats previous_response_id: `supported` (as OpenAI), `ignored`
    /// (a server without it: not echoed, no context) or `rejected` (a 400).
    #[arg(long, default_value = "supported")]
    previous_response_id: PreviousResponse,
    /// Stored responses kept for previous_response_id (oldest forgotten first).
    #[arg(long, default_value_t = 1000)]
    keep_responses: usize,
    /// Serve no /readyz (a 404, as on a hosted provider).
    #[arg(long)]
    no_readyz: bool,
}

fn write_port_file(path: &Path, port: u16) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, port.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = StubConfig {
        listen: args.listen,
        ready_after: Duration::from_millis(args.ready_after_ms),
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        api_key: args.api_key,
        log_path: args.log,
        keep_requests: args.keep_requests,
        session_turns: args.session_turns,
        previous_response: args.previous_response_id,
        keep_responses: args.keep_responses,
        readyz: !args.no_readyz,
        ..StubConfig::default()
    };
    let stub = StubModel::start(config).await?;
    if let Some(path) = &args.port_file {
        write_port_file(path, stub.addr().port())?;
    }
    println!("listening on {}", stub.addr());
    terminated().await;
    stub.shutdown().await;
    Ok(())
}

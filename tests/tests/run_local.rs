//! The README's run command, as shipped: `scripts/run-local.sh` on a machine
//! whose only model is an OpenAI-compatible local server (the stub, named by
//! `CLAWSWARM_LOCAL_MODEL_URL`, as Ollama would be found), then
//! `scripts/clawswarm chat demo "..."` from another terminal, then Ctrl-C.
//!
//! Everything is the shipped artifact: the script installs (from the cache)
//! bubblewrap, Node 24 and OpenClaw, detects the model, and starts the
//! controller on its default ports with one agent, `demo`, a sidecar and a
//! real OpenClaw gateway in its sandbox. Only the build profile differs from
//! a user's (`CLAWSWARM_BUILD_PROFILE=dev`: the debug build the test command
//! already made, instead of an 11-minute release build).

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use clawswarm_tests::{
    harness::{binaries, wait_for},
    stub_model::{Api, StubConfig, StubModel},
};
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// What a user's shell has, with HOME (and so the state directory) fresh.
fn user_env(cmd: &mut tokio::process::Command, home: &Path, target: &Path) {
    let real_home = PathBuf::from(std::env::var_os("HOME").unwrap());
    let var = |k: &str, default: PathBuf| std::env::var_os(k).map_or(default, PathBuf::from);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CARGO_HOME", var("CARGO_HOME", real_home.join(".cargo")))
        .env("RUSTUP_HOME", var("RUSTUP_HOME", real_home.join(".rustup")))
        .env(
            "CLAWSWARM_CACHE",
            var("CLAWSWARM_CACHE", real_home.join(".cache/clawswarm")),
        )
        .env("CARGO_TARGET_DIR", target)
        .env("CLAWSWARM_BUILD_PROFILE", "dev")
        .current_dir(repo_root());
}

/// Ends what the script started when the test ends, passed or not: the
/// script's process group (the controller) and each agent's groups, which
/// run apart from it (by their pid files).
struct Cleanup {
    group: Pid,
    agents: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = killpg(self.group, Signal::SIGKILL);
        for pid in agent_pids(&self.agents) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The pids recorded for every agent's sidecar and workload.
fn agent_pids(agents: &Path) -> Vec<i32> {
    let Ok(dirs) = std::fs::read_dir(agents) else {
        return Vec::new();
    };
    dirs.flatten()
        .flat_map(|d| ["sidecar.pid", "workload.pid"].map(|f| d.path().join("run").join(f)))
        .filter_map(|f| {
            std::fs::read_to_string(f)
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_local_gives_a_real_openclaw_agent_that_answers_and_stops_with_ctrl_c() {
    let bins = binaries().unwrap();
    let target = bins
        .controller
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let stub = StubModel::start(StubConfig::default()).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let log_path = home.path().join("run-local.log");
    let log = std::fs::File::create(&log_path).unwrap();

    let mut run = tokio::process::Command::new("bash");
    run.arg("scripts/run-local.sh");
    user_env(&mut run, home.path(), &target);
    run.env("CLAWSWARM_LOCAL_MODEL_URL", stub.base_url())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = run.spawn().unwrap();
    let group = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    let agents = home.path().join(".local/share/clawswarm/agents");
    let _cleanup = Cleanup {
        group,
        agents: agents.clone(),
    };
    let script_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // As the README says: another terminal, the CLI wrapper, the default ports.
    let mut chat = tokio::process::Command::new("bash");
    chat.args(["scripts/clawswarm", "chat", "demo", "[chunks=3] hello"]);
    user_env(&mut chat, home.path(), &target);
    let answered = async {
        // The controller records its endpoints (the CLI reads them) once it serves.
        let endpoints = home.path().join(".local/share/clawswarm/controller.json");
        wait_for("the controller to serve", Duration::from_secs(240), || {
            endpoints.exists()
        })
        .await?;
        let out = tokio::time::timeout(Duration::from_secs(300), chat.output()).await??;
        anyhow::Ok(out)
    }
    .await;
    let out = answered.unwrap_or_else(|e| panic!("{e}\nrun-local.sh:\n{}", script_log()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("w0 w1 w2"),
        "chat: {}\nstdout: {stdout}\nstderr: {}\nrun-local.sh:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        script_log()
    );
    // OpenClaw called the local server through the sidecar's model proxy,
    // with the model run-local.sh found in its /v1/models.
    let calls = stub.requests();
    assert!(calls.iter().any(|r| r.api == Api::Chat), "{calls:?}");
    let said = script_log();
    assert!(
        said.contains(&format!(
            "model: OpenAI-compatible server at {}",
            stub.base_url()
        )),
        "{said}"
    );

    // Ctrl-C stops the controller, and the agent's processes with it.
    let pids = agent_pids(&agents);
    assert_eq!(pids.len(), 2, "the demo agent's sidecar and workload ran");
    killpg(group, Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap_or_else(|_| panic!("run-local.sh did not stop on Ctrl-C:\n{}", script_log()))
        .unwrap();
    for pid in pids {
        let alive = nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok();
        assert!(!alive, "agent process {pid} outlived Ctrl-C ({status})");
    }
    stub.shutdown().await;
}

//! The README's run command, as shipped: `scripts/run-local.sh` on a machine
//! whose only model is an OpenAI-compatible local server (the stub, named by
//! `CLAWSWARM_LOCAL_MODEL_URL`, as Ollama would be found), then
//! `scripts/clawswarm chat demo "..."` from another terminal, a cron job's
//! output followed with `scripts/clawswarm notices demo`, then Ctrl-C; and
//! the script's two other workloads, `--workload responses` (a remote-style
//! `/v1/responses` endpoint) and `--workload command`.
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

use tokio::io::AsyncBufReadExt;

use clawswarm_tests::{
    harness::{
        agent_pids, binaries, group_members, read_model_log, stub_workload_command, wait_for,
    },
    openclaw::{admin_rpc, cron_job, every, job_id, local_gateway},
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

/// A stub model that insists on `key`, as a real provider does.
async fn keyed_stub(key: &str) -> StubModel {
    StubModel::start(StubConfig {
        api_key: Some(key.into()),
        ..StubConfig::default()
    })
    .await
    .unwrap()
}

/// `scripts/run-local.sh ARGS` running on a fresh HOME, logging to a file,
/// ended (with its agents) when dropped.
struct RunLocal {
    /// First: the agents' pid files are under `home`.
    _cleanup: Cleanup,
    child: tokio::process::Child,
    group: Pid,
    home: tempfile::TempDir,
    target: PathBuf,
    log_path: PathBuf,
    /// Last: let go only once everything above has ended.
    _ports: tokio::sync::MutexGuard<'static, ()>,
}

/// The script runs the controller on its default ports, as a user's does:
/// one at a time.
static DEFAULT_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl RunLocal {
    async fn start(args: &[&str], env: &[(&str, String)]) -> Self {
        let _ports = DEFAULT_PORTS.lock().await;
        clawswarm_certs::install_default_crypto_provider();
        let bins = binaries().unwrap();
        let target = bins
            .controller
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_owned();
        let home = tempfile::tempdir().unwrap();
        let log_path = home.path().join("run-local.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut run = tokio::process::Command::new("bash");
        run.arg("scripts/run-local.sh").args(args);
        user_env(&mut run, home.path(), &target);
        run.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let child = run.spawn().unwrap();
        let group = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
        let _cleanup = Cleanup {
            group,
            agents: home.path().join(".local/share/clawswarm/agents"),
        };
        Self {
            child,
            group,
            home,
            target,
            log_path,
            _cleanup,
            _ports,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn agents(&self) -> PathBuf {
        self.home.path().join(".local/share/clawswarm/agents")
    }

    /// `scripts/clawswarm ARGS`, from another terminal of the same user.
    fn cli(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg("scripts/clawswarm").args(args);
        user_env(&mut cmd, self.home.path(), &self.target);
        cmd
    }

    /// `scripts/clawswarm chat demo TEXT` once the controller serves; its stdout.
    async fn chat(&self, text: &str) -> String {
        let answered = async {
            // The controller records its endpoints (the CLI reads them) once it serves.
            let endpoints = self
                .home
                .path()
                .join(".local/share/clawswarm/controller.json");
            wait_for("the controller to serve", Duration::from_secs(240), || {
                endpoints.exists()
            })
            .await?;
            let out = tokio::time::timeout(
                Duration::from_secs(300),
                self.cli(&["chat", "demo", text]).output(),
            )
            .await??;
            anyhow::Ok(out)
        }
        .await;
        let out = answered.unwrap_or_else(|e| panic!("{e}\nrun-local.sh:\n{}", self.log()));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "chat: {}\nstdout: {stdout}\nstderr: {}\nrun-local.sh:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        stdout
    }

    /// Ctrl-C: the script (the controller) ends, and every agent process
    /// recorded before it with it.
    async fn ctrl_c(mut self) {
        let pids = agent_pids(&self.agents());
        killpg(self.group, Signal::SIGINT).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("run-local.sh did not stop on Ctrl-C:\n{}", self.log()))
            .unwrap();
        // Each recorded process leads a group (the sandbox and the workload
        // in it, for a workload): none of their members may be left.
        for pid in pids {
            let left = group_members(pid);
            assert!(
                left.is_empty(),
                "agent processes {left:?} (group {pid}) outlived Ctrl-C ({status})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_local_gives_a_real_openclaw_agent_that_answers_and_stops_with_ctrl_c() {
    let stub = StubModel::start(StubConfig::default()).await.unwrap();
    let run = RunLocal::start(&[], &[("CLAWSWARM_LOCAL_MODEL_URL", stub.base_url())]).await;

    // As the README says: another terminal, the CLI wrapper, the default ports.
    let stdout = run.chat("[chunks=3] hello").await;
    assert!(stdout.contains("w0 w1 w2"), "{stdout}\n{}", run.log());
    // OpenClaw called the local server through the sidecar's model proxy,
    // with the model run-local.sh found in its /v1/models.
    let calls = stub.requests();
    assert!(calls.iter().any(|r| r.api == Api::Chat), "{calls:?}");
    let said = run.log();
    assert!(
        said.contains(&format!(
            "model: OpenAI-compatible server at {}",
            stub.base_url()
        )),
        "{said}"
    );

    // Notices: a cron job (added over OpenClaw's admin RPC, as the agent
    // adds one from chat) runs with no turn; with no Slack configured its
    // output reaches whoever follows the agent's notices.
    let gateway = local_gateway(&run.agents().join("demo")).unwrap();
    let added = admin_rpc(
        &gateway,
        "cron.add",
        cron_job("run-local reminder", every(5000), "[chunks=2] a reminder"),
    )
    .await
    .unwrap();
    let job_id = job_id(&added).unwrap();
    // The first run's notice arrives while nobody follows: it is held.
    wait_for("a notice held for demo", Duration::from_secs(180), || {
        run.log().contains("notice held until someone follows")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", run.log()));
    let mut follower = run
        .cli(&["notices", "demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follower.stdout.take().unwrap()).lines();
    // The held one first, then a later run's as it arrives (every 5 s).
    for which in ["the held notice", "a live notice"] {
        let shown = tokio::time::timeout(Duration::from_secs(180), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if !line.trim().is_empty() {
                    return line;
                }
            }
            panic!("the notice stream ended:\n{}", run.log());
        })
        .await
        .unwrap_or_else(|_| panic!("{which}: nothing within 180 s:\n{}", run.log()));
        assert_eq!(shown.trim(), "w0 w1", "{which}");
    }
    assert!(
        run.log().contains("notice delivered to its followers"),
        "{}",
        run.log()
    );
    admin_rpc(&gateway, "cron.remove", serde_json::json!({"id": job_id}))
        .await
        .unwrap();
    follower.kill().await.unwrap();

    // Ctrl-C stops the controller, and the agent's processes with it.
    assert_eq!(
        agent_pids(&run.agents()).len(),
        2,
        "the demo agent's sidecar and workload ran"
    );
    run.ctrl_c().await;
    stub.shutdown().await;
}

/// With a provider key in the environment, as a user with an account has
/// it: the key (and only the key) reaches the provider, through the
/// sidecar's proxy; `*_BASE_URL` points it at the stub, which checks it the
/// way the provider would.
async fn a_provider_key_gives_an_openclaw_agent(key_var: &str, base_var: &str, api: Api) {
    const KEY: &str = "sk-user-key-from-the-shell";
    let stub = keyed_stub(KEY).await;
    let base = match api {
        Api::Anthropic => stub.base_url(),
        _ => stub.openai_base_url(),
    };
    let run = RunLocal::start(&[], &[(key_var, KEY.into()), (base_var, base)]).await;
    let stdout = run.chat("[chunks=2] hello").await;
    assert!(stdout.contains("w0 w1"), "{stdout}\n{}", run.log());
    let calls = stub.requests();
    assert!(calls.iter().any(|r| r.api == api), "{calls:?}");
    assert!(
        run.log()
            .contains(&format!("({key_var}) at {}", stub.base_url())),
        "{}",
        run.log()
    );
    // No process of the agent's workload (its process group: the sandbox,
    // OpenClaw and what it spawned) has the key.
    let pid = std::fs::read_to_string(run.agents().join("demo/run/workload.pid")).unwrap();
    let group = group_members(pid.split_whitespace().next().unwrap().parse().unwrap());
    let seen = group.len();
    for pid in group {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&env).contains(KEY),
            "the key is in workload process {pid}'s environment"
        );
    }
    assert!(
        seen >= 2,
        "the sandbox and OpenClaw ran in the workload's group"
    );
    run.ctrl_c().await;
    stub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_local_with_anthropic_api_key_answers_through_the_sidecars_proxy() {
    a_provider_key_gives_an_openclaw_agent(
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        Api::Anthropic,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_local_with_openai_api_key_answers_through_the_sidecars_proxy() {
    a_provider_key_gives_an_openclaw_agent("OPENAI_API_KEY", "OPENAI_BASE_URL", Api::Chat).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_local_workload_responses_with_openai_api_key_uses_openais_endpoint_and_key() {
    const KEY: &str = "sk-user-key-from-the-shell";
    let stub = keyed_stub(KEY).await;
    let run = RunLocal::start(
        &["--workload", "responses"],
        &[
            ("OPENAI_API_KEY", KEY.into()),
            ("OPENAI_BASE_URL", stub.openai_base_url()),
        ],
    )
    .await;
    let stdout = run.chat("[chunks=2] hello").await;
    assert!(stdout.contains("w0 w1"), "{stdout}\n{}", run.log());
    let calls = stub.requests();
    assert!(calls.iter().any(|r| r.api == Api::Responses), "{calls:?}");
    run.ctrl_c().await;
    stub.shutdown().await;
}

/// One of this machine's addresses that is not loopback: the stub there is
/// what a hosted provider is to the sidecar (never probed for readiness).
fn non_loopback_ipv4() -> std::net::Ipv4Addr {
    nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter_map(|i| i.address?.as_sockaddr_in().map(|a| a.ip()))
        .find(|ip| !ip.is_loopback())
        .expect("this test needs an IPv4 address other than loopback on this machine")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_local_workload_responses_answers_from_a_remote_endpoint_it_never_probes() {
    // Its /readyz says "not ready" for an hour: an agent that waited for
    // it would never answer. A remote endpoint is not probed.
    let stub = StubModel::start(StubConfig {
        listen: std::net::SocketAddr::from((non_loopback_ipv4(), 0)),
        ready_after: Duration::from_secs(3600),
        ..StubConfig::default()
    })
    .await
    .unwrap();
    let run = RunLocal::start(
        &["--workload", "responses"],
        &[("CLAWSWARM_WORKLOAD_URL", stub.base_url())],
    )
    .await;
    let stdout = run.chat("[chunks=2] hello").await;
    assert!(stdout.contains("w0 w1"), "{stdout}\n{}", run.log());
    let calls = stub.requests();
    assert!(
        calls.iter().any(|r| r.api == Api::Responses),
        "the turn went to the endpoint's /v1/responses: {calls:?}"
    );
    run.ctrl_c().await;
    stub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_local_workload_command_runs_the_users_command_as_the_agent_in_its_sandbox() {
    let command = stub_workload_command("").unwrap();
    let run = RunLocal::start(
        &["--workload", "command"],
        &[("CLAWSWARM_WORKLOAD_COMMAND", command)],
    )
    .await;
    let stdout = run.chat("[chunks=3] hello").await;
    assert!(stdout.contains("w0 w1 w2"), "{stdout}\n{}", run.log());
    // The command ran as the demo agent's workload, writing in its own data dir.
    let log = read_model_log(&run.agents().join("demo/data/model.jsonl"));
    assert!(log.iter().any(|r| r.api == Api::Responses), "{log:?}");
    assert_eq!(
        agent_pids(&run.agents()).len(),
        2,
        "sidecar and workload ran"
    );
    run.ctrl_c().await;
}

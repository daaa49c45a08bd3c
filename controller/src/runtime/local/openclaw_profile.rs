//! The built-in local OpenClaw profile: what `CLAWSWARM_WORKLOAD=openclaw`
//! means on one machine when no workload command is given.
//!
//! In Kubernetes the shipped templates start OpenClaw beside each sidecar;
//! locally this profile does the same from the generic per-agent templates
//! (`{port:NAME}`, `{secret:NAME}`, `{data_dir}`, `{sidecar_dir}`,
//! `{shared_dir}`), so the
//! local runtime itself stays workload-agnostic. Each agent's workload
//! runs `clawswarm-sidecar init` (seed on first run, enforced baseline on
//! every run, model routed through the sidecar's proxy) and then becomes
//! the gateway. The provider key never enters the workload: it reaches the
//! sidecar only, through the controller's environment.

use std::path::{Path, PathBuf};

/// Settings of the built-in profile (all optional except the OpenClaw CLI).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct OpenClawProfileArgs {
    /// The `openclaw` CLI run for each local agent (`scripts/deps.sh
    /// openclaw` installs the pinned one; `scripts/run-local.sh` sets this).
    #[arg(long, env = "CLAWSWARM_OPENCLAW_BIN")]
    pub openclaw_bin: Option<PathBuf>,

    /// Each agent's first OpenClaw config; OpenClaw's built-in base config
    /// when unset. Read once per agent, on its first start.
    #[arg(long, env = "CLAWSWARM_OPENCLAW_SEED_CONFIG")]
    pub openclaw_seed_config: Option<PathBuf>,

    /// The agents' model as `provider/model` (e.g. `openai/gpt-4.1-mini`);
    /// `anthropic/claude-sonnet-4-20250514` with the anthropic API.
    #[arg(long, env = "CLAWSWARM_MODEL")]
    pub model: Option<String>,

    /// Wire protocol of the model provider: `anthropic` (Messages) or
    /// `openai` (chat completions, also Ollama and other compatible servers).
    #[arg(long, env = "CLAWSWARM_MODEL_API", default_value = "anthropic")]
    pub model_api: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error(
        "CLAWSWARM_WORKLOAD=openclaw needs the openclaw CLI: set CLAWSWARM_OPENCLAW_BIN \
         (scripts/deps.sh openclaw installs it), or give your own CLAWSWARM_WORKLOAD_COMMAND"
    )]
    NoOpenClaw,
    #[error("CLAWSWARM_OPENCLAW_BIN={0}: no such file")]
    OpenClawMissing(PathBuf),
    #[error("CLAWSWARM_OPENCLAW_SEED_CONFIG={0}: no such file")]
    SeedMissing(PathBuf),
    #[error("CLAWSWARM_MODEL_API={0:?}: expected anthropic or openai")]
    BadApi(String),
    #[error("CLAWSWARM_MODEL={0:?}: expected provider/model, e.g. openai/gpt-4.1-mini")]
    BadModel(String),
    #[error(
        "CLAWSWARM_MODEL_API=openai needs CLAWSWARM_MODEL (provider/model, e.g. openai/gpt-4.1-mini)"
    )]
    ModelNeeded,
}

/// What the profile gives the local runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Start OpenClaw beside every sidecar with these templates.
    Run {
        command: String,
        workload_env: String,
        sidecar_env: String,
        /// What a sandboxed workload must still read: OpenClaw's install
        /// (with the Node beside it) and the seed config's directory.
        read_only: Vec<PathBuf>,
    },
    /// No provider key: agents start without OpenClaw and every turn says
    /// this instead of pretending to answer.
    NoModel { reason: String },
}

/// Settings the sidecar reads for its model key; one is enough.
pub const KEY_SETTINGS: [&str; 2] = ["CLAWSWARM_MODEL_API_KEY_FILE", "CLAWSWARM_MODEL_API_KEY"];

/// Why agents cannot answer without a key, in words a new user can act on.
pub const NO_MODEL_REASON: &str = "no model provider key: set CLAWSWARM_MODEL_API_KEY_FILE or \
     CLAWSWARM_MODEL_API_KEY for the controller (scripts/run-local.sh does it for you from \
     ANTHROPIC_API_KEY or OPENAI_API_KEY, or uses a local OpenAI-compatible server such as Ollama \
     named by CLAWSWARM_LOCAL_MODEL_URL), then restart it";

/// Only the gateway process gets these (plus the runtime's clean base).
/// OpenClaw keeps everything under the agent's own data dir; discovery,
/// chat channels, self-update and respawning are the controller's business.
const WORKLOAD_ENV: &str = "OPENCLAW_CONFIG_PATH={data_dir}/openclaw/openclaw.json;\
    OPENCLAW_STATE_DIR={data_dir}/openclaw/state;\
    OPENCLAW_GATEWAY_TOKEN={secret:gateway};\
    HOME={data_dir}/home;TMPDIR={data_dir}/tmp;\
    OPENCLAW_DISABLE_BONJOUR=1;OPENCLAW_SKIP_CHANNELS=1;OPENCLAW_NO_RESPAWN=1;\
    OPENCLAW_NO_AUTO_UPDATE=1;OPENCLAW_OFFLINE=1";

/// What each sidecar gets on top of the controller's environment: the
/// gateway's address and token, and its own loopback ports and files: the
/// ledger and notice state in the sidecar's own dir (out of the workload's
/// reach), the three credentials the workload presents in the shared dir.
/// The company search cluster (`CLAWSWARM_DATA_URL`, its key, the index
/// allowlist) comes from the controller's environment, like the model key.
const SIDECAR_ENV: &str = "CLAWSWARM_OPENCLAW_URL=http://127.0.0.1:{port};\
    CLAWSWARM_OPENCLAW_TOKEN={secret:gateway};\
    CLAWSWARM_MODEL_PROXY_LISTEN=127.0.0.1:{port:proxy};\
    CLAWSWARM_NOTICES_LISTEN=127.0.0.1:{port:notices};\
    CLAWSWARM_DATA_PROXY_LISTEN=127.0.0.1:{port:data};\
    CLAWSWARM_DATA_PROXY_TOKEN_FILE={shared_dir}/data-proxy-token;\
    CLAWSWARM_CRON_WEBHOOK_TOKEN_FILE={shared_dir}/cron-webhook-token;\
    CLAWSWARM_MODEL_PROXY_TOKEN_FILE={shared_dir}/model-proxy-token;\
    CLAWSWARM_MODEL_USAGE_FILE={sidecar_dir}/model-usage.json;\
    CLAWSWARM_NOTICES_STATE_FILE={sidecar_dir}/notices.json;\
    CLAWSWARM_OPENCLAW_CONFIG={data_dir}/openclaw/openclaw.json;\
    CLAWSWARM_OPENCLAW_STATE_DIR={data_dir}/openclaw/state";

impl OpenClawProfileArgs {
    /// The profile for these settings; `has_key` says whether the sidecars
    /// will find a provider key (see [`KEY_SETTINGS`]).
    pub fn resolve(&self, sidecar_bin: &Path, has_key: bool) -> Result<Profile, ProfileError> {
        let api = match self.model_api.trim() {
            a @ ("anthropic" | "openai") => a,
            other => return Err(ProfileError::BadApi(other.to_owned())),
        };
        let model = match self.model.as_deref().map(str::trim) {
            Some("") => None,
            Some(m) => {
                let ok = m
                    .split_once('/')
                    .is_some_and(|(p, n)| !p.is_empty() && !n.is_empty())
                    && !m.contains(char::is_whitespace);
                if !ok {
                    return Err(ProfileError::BadModel(m.to_owned()));
                }
                Some(m)
            }
            None => None,
        };
        if api == "openai" && model.is_none() {
            return Err(ProfileError::ModelNeeded);
        }
        if !has_key {
            return Ok(Profile::NoModel {
                reason: NO_MODEL_REASON.to_owned(),
            });
        }
        let openclaw = self
            .openclaw_bin
            .as_deref()
            .ok_or(ProfileError::NoOpenClaw)?;
        if !openclaw.is_file() {
            return Err(ProfileError::OpenClawMissing(openclaw.to_owned()));
        }
        if let Some(seed) = &self.openclaw_seed_config
            && !seed.is_file()
        {
            return Err(ProfileError::SeedMissing(seed.clone()));
        }

        let (sidecar, oc) = (quote(sidecar_bin), quote(openclaw));
        let mut init = format!(
            "{sidecar} init --openclaw-config \"{{data_dir}}/openclaw/openclaw.json\" \
             --openclaw-port {{port}} --model-proxy-url http://127.0.0.1:{{port:proxy}} \
             --cron-webhook-token-file \"{{shared_dir}}/cron-webhook-token\" \
             --model-proxy-token-file \"{{shared_dir}}/model-proxy-token\" \
             --data-proxy-url http://127.0.0.1:{{port:data}} \
             --data-proxy-token-file \"{{shared_dir}}/data-proxy-token\" \
             --workload-skills-dir \"{{run_dir}}/skills\" \
             --openclaw-bin {oc} --model-api {api}"
        );
        if let Some(m) = model {
            init.push_str(&format!(" --model {}", quote(Path::new(m))));
        }
        // Without a seed of our own, point at the run dir, where no seed is:
        // init then uses its built-in base config rather than whatever a
        // Kubernetes path might hold on this machine.
        let seed = match &self.openclaw_seed_config {
            Some(p) => quote(p),
            None => "\"{shared_dir}/no-seed-config\"".to_owned(),
        };
        init.push_str(&format!(" --openclaw-seed-config {seed}"));
        let script = format!(
            "mkdir -p \"{{data_dir}}/openclaw/state\" \"{{data_dir}}/home\" \"{{data_dir}}/tmp\" && \
             {init} && exec {oc} gateway run --port {{port}}"
        );
        // The runtime execs the command: one program, whose script runs
        // the steps.
        let command = format!("/bin/sh -c {}", quote(Path::new(&script)));
        let mut read_only = vec![install_root(openclaw)];
        if let Some(dir) = self.openclaw_seed_config.as_deref().and_then(Path::parent) {
            read_only.push(dir.to_owned());
        }
        Ok(Profile::Run {
            command,
            workload_env: WORKLOAD_ENV.to_owned(),
            sidecar_env: SIDECAR_ENV.to_owned(),
            read_only,
        })
    }
}

/// Where OpenClaw is installed: for `…/tools/openclaw-V/bin/openclaw`
/// (scripts/deps.sh's layout, Node in `…/tools/node24-V`) the `tools`
/// directory; otherwise the CLI's own directory.
fn install_root(cli: &Path) -> PathBuf {
    let real = std::fs::canonicalize(cli).unwrap_or_else(|_| cli.to_owned());
    let dir = real.parent().unwrap_or(Path::new("/"));
    match (dir.file_name(), dir.parent().and_then(Path::parent)) {
        (Some(name), Some(tools)) if name == "bin" && tools != Path::new("/") => tools.to_owned(),
        _ => dir.to_owned(),
    }
}

/// `'…'` for `sh`, so paths with spaces or quotes stay one word. Braces are
/// kept out of the quoting: the template parser only reads lowercase
/// `{word}`, which a path of ours never is.
fn quote(p: &Path) -> String {
    let s = p.display().to_string();
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::local::template::{EnvTemplate, Template};

    fn args(dir: &Path) -> OpenClawProfileArgs {
        let bin = dir.join("open claw");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        OpenClawProfileArgs {
            openclaw_bin: Some(bin),
            ..OpenClawProfileArgs::default()
        }
        .with_api("anthropic")
    }

    impl OpenClawProfileArgs {
        fn with_api(mut self, api: &str) -> Self {
            self.model_api = api.into();
            self
        }
    }

    #[test]
    fn the_profile_runs_init_then_the_gateway_with_templates_the_runtime_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let Profile::Run {
            command,
            workload_env,
            sidecar_env,
            read_only,
        } = args(dir.path())
            .resolve(Path::new("/opt/claw swarm/clawswarm-sidecar"), true)
            .unwrap()
        else {
            panic!("expected a runnable profile");
        };
        assert!(command.starts_with("/bin/sh -c '"), "{command}");
        assert!(command.contains("'\\''/opt/claw swarm/clawswarm-sidecar'\\'' init "));
        assert!(command.contains("--model-api anthropic"));
        assert!(command.contains("&& exec '"), "{command}");
        assert!(command.ends_with("gateway run --port {port}'"), "{command}");
        assert!(
            !command.contains("--model '"),
            "no model given: init's default"
        );
        assert_eq!(read_only, [dir.path().canonicalize().unwrap()]);
        let t = Template::parse("profile", &command).unwrap();
        assert!(t.uses_port());
        EnvTemplate::parse("profile", &workload_env).unwrap();
        let s = EnvTemplate::parse("profile", &sidecar_env).unwrap();
        s.check_port("profile", true).unwrap();
        assert!(
            !workload_env.contains("MODEL_API_KEY") && !sidecar_env.contains("MODEL_API_KEY"),
            "the key reaches the sidecar from the controller's environment only"
        );
    }

    #[test]
    fn openai_needs_a_model_and_passes_it_to_init() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path()).with_api("openai");
        assert_eq!(
            a.resolve(Path::new("/s"), true),
            Err(ProfileError::ModelNeeded)
        );
        let a = OpenClawProfileArgs {
            model: Some("local/llama3.2".into()),
            ..a
        };
        let Ok(Profile::Run { command, .. }) = a.resolve(Path::new("/s"), true) else {
            panic!("expected a runnable profile");
        };
        assert!(command.contains("--model-api openai --model '\\''local/llama3.2'\\''"));
    }

    #[test]
    fn without_a_key_agents_start_without_openclaw_and_say_what_to_set() {
        // No OpenClaw either: the key is what the user must fix first.
        let p = OpenClawProfileArgs::default()
            .with_api("anthropic")
            .resolve(Path::new("/s"), false)
            .unwrap();
        let Profile::NoModel { reason } = p else {
            panic!("expected no model");
        };
        assert!(reason.contains("ANTHROPIC_API_KEY") && reason.contains("OPENAI_API_KEY"));
    }

    #[test]
    fn bad_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = Path::new("/s");
        let e = |a: OpenClawProfileArgs| a.resolve(s, true).unwrap_err().to_string();
        assert!(e(args(dir.path()).with_api("gemini")).contains("CLAWSWARM_MODEL_API"));
        let bad_model = OpenClawProfileArgs {
            model: Some("gpt-4".into()),
            ..args(dir.path())
        };
        assert!(e(bad_model).contains("provider/model"));
        let no_bin = OpenClawProfileArgs::default().with_api("anthropic");
        assert!(e(no_bin).contains("CLAWSWARM_OPENCLAW_BIN"));
        let gone = OpenClawProfileArgs {
            openclaw_bin: Some(dir.path().join("nope")),
            ..OpenClawProfileArgs::default()
        }
        .with_api("anthropic");
        assert!(e(gone).contains("no such file"));
        let seed = OpenClawProfileArgs {
            openclaw_seed_config: Some(dir.path().join("seed.json")),
            ..args(dir.path())
        };
        assert!(e(seed).contains("CLAWSWARM_OPENCLAW_SEED_CONFIG"));
    }
}

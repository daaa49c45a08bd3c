//! `clawswarm-sidecar init`: prepares OpenClaw's config before the gateway
//! starts (replaces the original write-up's entrypoint.sh).
//!
//! First run seeds the base config; every run re-applies the security
//! baseline and the sidecar's own settings over the person's config (see
//! `baseline`), validates the result with OpenClaw's own validator when the
//! binary is available, and installs it atomically, keeping the previous file
//! as `<name>.bak`. OpenClaw reads JSON5; we write plain JSON (valid JSON5).

use std::{
    fmt,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::baseline::{self, ProviderApi, SidecarSettings};

/// Largest config accepted; a hand-written config is a few kilobytes.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// Node and OpenClaw's module graph take a few seconds to load on 2 cores.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(90);
const MAX_VALIDATOR_OUTPUT: u64 = 64 * 1024;

#[derive(clap::Args, Clone)]
pub struct InitArgs {
    /// OpenClaw's config file (the gateway container's OPENCLAW_CONFIG_PATH).
    #[arg(
        id = "openclaw-config",
        long = "openclaw-config",
        env = "CLAWSWARM_OPENCLAW_CONFIG",
        default_value = "/data/openclaw/openclaw.json"
    )]
    pub config_path: PathBuf,
    /// Port the gateway listens on (loopback).
    #[arg(
        id = "openclaw-port",
        long = "openclaw-port",
        env = "CLAWSWARM_WORKLOAD_PORT",
        default_value_t = 18789
    )]
    pub gateway_port: u16,
    /// The agent's model as `provider/model`; the provider is the one routed
    /// through the model proxy.
    #[arg(
        id = "model",
        long = "model",
        env = "CLAWSWARM_MODEL",
        default_value = "anthropic/claude-sonnet-4-20250514"
    )]
    pub primary_model: String,
    /// Wire protocol of the model proxy (and of the real provider behind it).
    #[arg(id = "model-api", long = "model-api", env = "CLAWSWARM_MODEL_API", value_enum, default_value_t = ProviderApi::Anthropic)]
    pub provider_api: ProviderApi,
    /// Base URL of the sidecar's model proxy as OpenClaw should call it.
    #[arg(
        id = "model-proxy-url",
        long = "model-proxy-url",
        env = "CLAWSWARM_MODEL_PROXY_URL",
        default_value = "http://127.0.0.1:18790"
    )]
    pub model_proxy_url: String,
    /// OpenClaw's utility model (session titles); unset keeps the person's
    /// setting or turns it off, "" turns it off.
    #[arg(
        id = "utility-model",
        long = "utility-model",
        env = "CLAWSWARM_UTILITY_MODEL"
    )]
    pub utility_model: Option<String>,
    /// File with the token OpenClaw sends on cron webhooks to the sidecar;
    /// created with a random token when missing. Relative to the sidecar's
    /// data dir (`CLAWSWARM_DATA_DIR`).
    #[arg(
        id = "cron-webhook-token-file",
        long = "cron-webhook-token-file",
        env = "CLAWSWARM_CRON_WEBHOOK_TOKEN_FILE",
        default_value = "cron-webhook-token"
    )]
    pub webhook_token_file: PathBuf,
    /// File with the credential OpenClaw presents to the sidecar's model
    /// proxy (the same file the proxy reads); created when missing.
    /// Relative to the sidecar's data dir.
    #[arg(
        id = "model-proxy-token-file",
        long = "model-proxy-token-file",
        env = "CLAWSWARM_MODEL_PROXY_TOKEN_FILE",
        default_value = "model-proxy-token"
    )]
    pub model_proxy_token_file: PathBuf,
    /// Base URL of the sidecar's data proxy as OpenClaw should call it: its
    /// MCP endpoint becomes the agent's company-data tools.
    #[arg(
        id = "data-proxy-url",
        long = "data-proxy-url",
        env = "CLAWSWARM_DATA_PROXY_URL",
        default_value = "http://127.0.0.1:18792"
    )]
    pub data_proxy_url: String,
    /// File with the credential OpenClaw presents to the data proxy (the
    /// same file the proxy reads); created when missing. Relative to the
    /// sidecar's data dir.
    #[arg(
        id = "data-proxy-token-file",
        long = "data-proxy-token-file",
        env = "CLAWSWARM_DATA_PROXY_TOKEN_FILE",
        default_value = "data-proxy-token"
    )]
    pub data_proxy_token_file: PathBuf,
    /// The agent's first config (the template's base config, mounted from
    /// its ConfigMap); the built-in base config when the file is absent.
    /// Read on first run only: afterwards the config is the person's.
    #[arg(
        id = "openclaw-seed-config",
        long = "openclaw-seed-config",
        env = "CLAWSWARM_OPENCLAW_SEED_CONFIG",
        default_value = "/etc/clawswarm/workload/openclaw.json"
    )]
    pub seed_config: PathBuf,
    /// The `openclaw` CLI; when set, the config is checked with
    /// `openclaw config validate --json` before it is installed.
    #[arg(
        id = "openclaw-bin",
        long = "openclaw-bin",
        env = "CLAWSWARM_OPENCLAW_BIN"
    )]
    pub openclaw_bin: Option<PathBuf>,
    /// Where the workload reads installed library skills (read-only to
    /// it; listed in `skills.load.extraDirs`). Relative to the sidecar's
    /// data dir, where the sidecar writes them (`CLAWSWARM_SKILLS_DIR`).
    #[arg(
        id = "workload-skills-dir",
        long = "workload-skills-dir",
        env = "CLAWSWARM_WORKLOAD_SKILLS_DIR",
        default_value = "skills"
    )]
    pub skills_dir: PathBuf,
    /// The install-policy program OpenClaw runs before installing anything
    /// (`clawswarm-sidecar install-policy`); default: this binary, which
    /// the agent image shares with the workload.
    #[arg(
        id = "install-policy-command",
        long = "install-policy-command",
        env = "CLAWSWARM_INSTALL_POLICY_COMMAND"
    )]
    pub install_policy_command: Option<PathBuf>,
}

impl fmt::Debug for InitArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitArgs")
            .field("config_path", &self.config_path)
            .field("gateway_port", &self.gateway_port)
            .field("primary_model", &self.primary_model)
            .field("provider_api", &self.provider_api)
            .field("model_proxy_url", &self.model_proxy_url)
            .field("webhook_token_file", &self.webhook_token_file)
            .field("model_proxy_token_file", &self.model_proxy_token_file)
            .field("data_proxy_url", &self.data_proxy_url)
            .field("data_proxy_token_file", &self.data_proxy_token_file)
            .field("seed_config", &self.seed_config)
            .field("openclaw_bin", &self.openclaw_bin)
            .field("skills_dir", &self.skills_dir)
            .field("install_policy_command", &self.install_policy_command)
            .finish()
    }
}

/// What `init` did, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitReport {
    pub config_path: PathBuf,
    /// No config existed: the base config was seeded.
    pub seeded: bool,
    /// The file changed on disk (unchanged files are not rewritten, so the
    /// gateway's hot reload is not triggered for nothing).
    pub written: bool,
    pub backup: Option<PathBuf>,
    /// The person's settings the baseline or the sidecar overrode (config paths).
    pub overridden: Vec<String>,
    /// OpenClaw's own validator accepted the config.
    pub validated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON5: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path} must hold a JSON object at the top level")]
    NotAnObject { path: PathBuf },
    #[error("{path} is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid setting {name}: {message}")]
    Setting { name: &'static str, message: String },
    #[error("cannot run {bin}: {message}")]
    ValidatorRun { bin: PathBuf, message: String },
    #[error("openclaw rejected the config written for {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl InitError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Parse { .. } => "parse",
            Self::NotAnObject { .. } => "not_object",
            Self::TooLarge { .. } => "too_large",
            Self::Write { .. } => "write",
            Self::Setting { .. } => "setting",
            Self::ValidatorRun { .. } => "validator_run",
            Self::Invalid { .. } => "invalid",
        }
    }
}

impl InitArgs {
    /// Relative paths are the sidecar data dir's.
    pub fn resolved(&self, data_dir: &Path) -> Self {
        let mut out = self.clone();
        if out.webhook_token_file.is_relative() {
            out.webhook_token_file = data_dir.join(&self.webhook_token_file);
        }
        if out.model_proxy_token_file.is_relative() {
            out.model_proxy_token_file = data_dir.join(&self.model_proxy_token_file);
        }
        if out.data_proxy_token_file.is_relative() {
            out.data_proxy_token_file = data_dir.join(&self.data_proxy_token_file);
        }
        if out.skills_dir.is_relative() {
            out.skills_dir = data_dir.join(&self.skills_dir);
        }
        if out.install_policy_command.is_none() {
            out.install_policy_command = std::env::current_exe().ok();
        }
        out
    }
}

/// Seed or update OpenClaw's config; see the module docs.
pub fn init(args: &InitArgs) -> Result<InitReport, InitError> {
    let path = &args.config_path;
    if baseline::provider_of(&args.primary_model).is_none() {
        return Err(InitError::Setting {
            name: "CLAWSWARM_MODEL",
            message: format!("{:?} is not provider/model", args.primary_model),
        });
    }
    let settings = SidecarSettings {
        gateway_port: args.gateway_port,
        primary_model: args.primary_model.clone(),
        provider_api: args.provider_api,
        model_proxy_url: args.model_proxy_url.clone(),
        utility_model: args.utility_model.clone(),
        cron_webhook_token: token(&args.webhook_token_file)?,
        model_proxy_token: token(&args.model_proxy_token_file)?,
        data_proxy_url: args.data_proxy_url.clone(),
        data_proxy_token: token(&args.data_proxy_token_file)?,
        skills_dir: args.skills_dir.display().to_string(),
        install_policy_command: args
            .install_policy_command
            .as_ref()
            .map(|p| p.display().to_string())
            .ok_or(InitError::Setting {
                name: "CLAWSWARM_INSTALL_POLICY_COMMAND",
                message: "not set, and this binary's own path is unknown".into(),
            })?,
    };

    let existing = read_config(path)?;
    let seeded = existing.is_none();
    let (old_text, mut cfg) = match existing {
        Some((text, value)) => (Some(text), value),
        None => match read_config(&args.seed_config)? {
            Some((_, seed)) => (None, seed),
            None => (None, baseline::seed(&args.primary_model)),
        },
    };
    let mut overridden = baseline::enforce(&mut cfg);
    overridden.extend(baseline::apply_sidecar(&mut cfg, &settings));
    let mut text = serde_json::to_string_pretty(&cfg).map_err(|e| InitError::Parse {
        path: path.clone(),
        message: e.to_string(),
    })?;
    text.push('\n');

    let written = old_text.as_deref() != Some(text.as_str());
    let tmp = temp_path(path);
    if written || args.openclaw_bin.is_some() {
        write_synced(&tmp, &text)?;
    }
    let validated = match &args.openclaw_bin {
        Some(bin) => match validate(bin, &tmp, path) {
            Ok(()) => true,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        },
        None => false,
    };
    let mut backup = None;
    if written {
        if old_text.is_some() {
            let bak = sibling(path, ".bak");
            std::fs::copy(path, &bak).map_err(|source| InitError::Write {
                path: bak.clone(),
                source,
            })?;
            backup = Some(bak);
        }
        std::fs::rename(&tmp, path).map_err(|source| InitError::Write {
            path: path.clone(),
            source,
        })?;
    } else if validated {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(InitReport {
        config_path: path.clone(),
        seeded,
        written,
        backup,
        overridden,
        validated,
    })
}

/// The config's text and value, or `None` when there is no file yet.
fn read_config(path: &Path) -> Result<Option<(String, Value)>, InitError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(InitError::Read {
                path: path.into(),
                source,
            });
        }
    };
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| InitError::Read {
            path: path.into(),
            source,
        })?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(InitError::TooLarge { path: path.into() });
    }
    if text.trim().is_empty() {
        // An empty file (a crash mid-edit, a touched placeholder) is treated
        // as no config rather than refusing to start.
        return Ok(None);
    }
    let value: Value = json5::from_str(&text).map_err(|e| InitError::Parse {
        path: path.into(),
        message: e.to_string(),
    })?;
    if !value.is_object() {
        return Err(InitError::NotAnObject { path: path.into() });
    }
    Ok(Some((text, value)))
}

/// The cron webhook token, created on first use (only the sidecar and
/// OpenClaw's config know it; it only lets a caller post notices).
/// A token shared with the sidecar, created when missing ([`crate::token_file`]).
fn token(path: &Path) -> Result<String, InitError> {
    crate::token_file::ensure(path).map_err(|source| InitError::Write {
        path: path.into(),
        source,
    })
}

fn write_synced(path: &Path, text: &str) -> Result<(), InitError> {
    let err = |source| InitError::Write {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The config holds the cron webhook token.
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

fn temp_path(path: &Path) -> PathBuf {
    sibling(path, &format!(".tmp-{}", std::process::id()))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "openclaw.json".into());
    name.push(suffix);
    path.with_file_name(name)
}

/// Run `openclaw config validate --json` on `candidate`; `target` names the
/// file in the error message.
fn validate(bin: &Path, candidate: &Path, target: &Path) -> Result<(), InitError> {
    let run_err = |message: String| InitError::ValidatorRun {
        bin: bin.into(),
        message,
    };
    let mut child = Command::new(bin)
        .args(["config", "validate", "--json"])
        .env("OPENCLAW_CONFIG_PATH", candidate)
        .env("OPENCLAW_OFFLINE", "1")
        .env("OPENCLAW_NO_AUTO_UPDATE", "1")
        .env("OPENCLAW_DISABLE_BONJOUR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| run_err(e.to_string()))?;
    // Drain both pipes on threads so a chatty validator cannot block on a
    // full pipe while we wait for it.
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let deadline = Instant::now() + VALIDATE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(run_err(format!("no answer within {VALIDATE_TIMEOUT:?}")));
            }
            Err(e) => return Err(run_err(e.to_string())),
        }
    };
    let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
    let report = serde_json::from_str::<Value>(stdout.trim()).ok();
    let valid = report
        .as_ref()
        .and_then(|r| r.get("valid"))
        .and_then(Value::as_bool);
    match (status.success(), valid) {
        (true, Some(true)) | (true, None) => Ok(()),
        _ => Err(InitError::Invalid {
            path: target.into(),
            message: validator_message(report.as_ref(), &stdout, &stderr),
        }),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut r).take(MAX_VALIDATOR_OUTPUT).read_to_end(&mut buf);
        // Keep reading so the child never blocks on a full pipe.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The validator's issues as one line each, or its raw output.
fn validator_message(report: Option<&Value>, stdout: &str, stderr: &str) -> String {
    let issues: Vec<String> = report
        .and_then(|r| r.get("issues").or_else(|| r.get("errors")))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    let path = i.get("path").map(|p| match p {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                    let msg = i
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .unwrap_or_else(|| i.to_string());
                    match path {
                        Some(p) => format!("{p}: {msg}"),
                        None => msg,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if !issues.is_empty() {
        return issues.join("; ");
    }
    let raw = if stdout.trim().is_empty() {
        stderr
    } else {
        stdout
    };
    raw.trim().chars().take(2000).collect()
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

// Tests may unwrap (house rule); the workspace lint is for input handling.
#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

fn args(dir: &Path) -> InitArgs {
    InitArgs {
        config_path: dir.join("openclaw").join("openclaw.json"),
        gateway_port: 18789,
        primary_model: "anthropic/claude-sonnet-4-20250514".into(),
        provider_api: ProviderApi::Anthropic,
        model_proxy_url: "http://127.0.0.1:18790".into(),
        utility_model: None,
        webhook_token_file: dir.join("sidecar").join("cron-webhook-token"),
        model_proxy_token_file: dir.join("sidecar").join("model-proxy-token"),
        data_proxy_url: "http://127.0.0.1:18792".into(),
        data_proxy_token_file: dir.join("sidecar").join("data-proxy-token"),
        seed_config: dir.join("template").join("openclaw.json"),
        openclaw_bin: None,
        skills_dir: dir.join("sidecar").join("skills"),
        install_policy_command: Some("/usr/local/bin/clawswarm-sidecar".into()),
    }
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn first_run_seeds_the_base_config_and_a_webhook_token() {
    let dir = tempfile::tempdir().unwrap();
    let a = args(dir.path());
    let report = init(&a).unwrap();
    assert!(report.seeded && report.written);
    assert_eq!(report.backup, None);
    assert!(report.overridden.is_empty(), "{:?}", report.overridden);
    let cfg = read(&a.config_path);
    assert_eq!(cfg["tools"]["elevated"]["enabled"], false);
    assert_eq!(cfg["tools"]["deny"], json!(["gateway", "sessions_spawn"]));
    assert_eq!(cfg["gateway"]["mode"], "local");
    let token = std::fs::read_to_string(&a.webhook_token_file).unwrap();
    assert_eq!(token.len(), 64);
    assert_eq!(cfg["cron"]["webhookToken"], token.as_str());
    let proxy_token = std::fs::read_to_string(&a.model_proxy_token_file).unwrap();
    assert_eq!(proxy_token.len(), 64);
    assert_ne!(proxy_token, token);
    assert_eq!(
        cfg["models"]["providers"]["anthropic"]["apiKey"],
        proxy_token.as_str()
    );
}

#[test]
fn second_run_without_changes_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let a = args(dir.path());
    init(&a).unwrap();
    let report = init(&a).unwrap();
    assert!(!report.seeded && !report.written);
    assert_eq!(report.backup, None);
    let leftovers: Vec<_> = std::fs::read_dir(a.config_path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("openclaw.json")]);
}

#[test]
fn every_start_reapplies_the_baseline_over_the_persons_json5_and_keeps_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let a = args(dir.path());
    init(&a).unwrap();
    // The person (or their agent) edits the config: JSON5 with comments,
    // unquoted keys and trailing commas.
    let edited = r#"{
      // I want more power
      tools: { elevated: { enabled: true }, fs: { workspaceOnly: false }, deny: ["sessions_spawn"], },
      skills: { entries: { weather: { enabled: true, config: { city: 'Oslo' } } } },
      cron: { maxConcurrentRuns: 3, webhookToken: "guessed" },
      agents: { defaults: { model: { primary: "anthropic/claude-opus-4" } } },
    }"#;
    std::fs::write(&a.config_path, edited).unwrap();
    let report = init(&a).unwrap();
    assert!(!report.seeded && report.written);
    for path in [
        "tools.elevated.enabled",
        "tools.fs.workspaceOnly",
        "tools.deny",
    ] {
        assert!(
            report.overridden.iter().any(|p| p == path),
            "{path} not in {:?}",
            report.overridden
        );
    }
    let cfg = read(&a.config_path);
    assert_eq!(cfg["tools"]["elevated"]["enabled"], false);
    assert_eq!(cfg["tools"]["fs"]["workspaceOnly"], true);
    assert_eq!(cfg["tools"]["deny"], json!(["sessions_spawn", "gateway"]));
    assert_eq!(
        cfg["skills"]["entries"]["weather"]["config"]["city"],
        "Oslo"
    );
    assert_eq!(cfg["cron"]["maxConcurrentRuns"], 3);
    assert_ne!(cfg["cron"]["webhookToken"], "guessed");
    assert_eq!(
        cfg["agents"]["defaults"]["model"]["primary"], "anthropic/claude-opus-4",
        "same provider: kept"
    );
    let backup = report.backup.unwrap();
    assert_eq!(std::fs::read_to_string(backup).unwrap(), edited);
}

#[test]
fn malformed_json5_is_a_clear_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = args(dir.path());
    std::fs::create_dir_all(a.config_path.parent().unwrap()).unwrap();
    std::fs::write(&a.config_path, "{ tools: { elevated: ").unwrap();
    let err = init(&a).unwrap_err();
    assert_eq!(err.metric_label(), "parse");
    let text = err.to_string();
    assert!(
        text.contains(&a.config_path.display().to_string()) && text.contains("JSON5"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&a.config_path).unwrap(),
        "{ tools: { elevated: ",
        "left untouched"
    );

    std::fs::write(&a.config_path, "[1, 2]").unwrap();
    assert_eq!(init(&a).unwrap_err().metric_label(), "not_object");
}

#[test]
fn a_model_without_provider_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.primary_model = "claude".into();
    let err = init(&a).unwrap_err();
    assert!(err.to_string().contains("CLAWSWARM_MODEL"), "{err}");
}

#[test]
fn a_missing_validator_binary_is_an_error_and_nothing_is_installed() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.openclaw_bin = Some(dir.path().join("no-such-openclaw"));
    let err = init(&a).unwrap_err();
    assert_eq!(err.metric_label(), "validator_run");
    assert!(!a.config_path.exists());
}

#[cfg(unix)]
#[test]
fn the_validators_issues_become_the_error_message() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    // A stand-in that answers like `openclaw config validate --json` does on
    // an invalid file (output shape measured on openclaw 2026.9.6).
    let fake = dir.path().join("fake-openclaw");
    std::fs::write(
        &fake,
        "#!/bin/sh\ntest -f \"$OPENCLAW_CONFIG_PATH\" || exit 3\necho '{\"ok\":false,\"valid\":false,\"issues\":[{\"path\":\"<root>\",\"message\":\"Unrecognized key: \\\"model\\\"\"}]}'\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    a.openclaw_bin = Some(fake);
    let err = init(&a).unwrap_err();
    assert_eq!(err.metric_label(), "invalid");
    assert!(
        err.to_string()
            .contains("<root>: Unrecognized key: \"model\""),
        "{err}"
    );
    assert!(
        !a.config_path.exists(),
        "an invalid config is never installed"
    );
}

/// The real validator, when scripts/deps.sh installed it: what init writes
/// (seeded, and re-applied over a person's edits) is valid for the pinned
/// OpenClaw. Runs only with CLAWSWARM_OPENCLAW set; the end-to-end tier in
/// tests/ requires it.
#[test]
fn the_pinned_openclaw_accepts_what_init_writes() {
    let Some(bin) = std::env::var_os("CLAWSWARM_OPENCLAW") else {
        eprintln!(
            "CLAWSWARM_OPENCLAW unset: skipping the real validator (run scripts/deps.sh openclaw)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.openclaw_bin = Some(bin.into());
    let report = init(&a).unwrap();
    assert!(report.validated);
    std::fs::write(&a.config_path, r#"{ tools: { elevated: { enabled: true } }, skills: { entries: { weather: { enabled: true } } } }"#).unwrap();
    let report = init(&a).unwrap();
    assert!(report.validated && report.written);
}

#[test]
fn first_run_starts_from_the_templates_seed_and_later_runs_ignore_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = args(dir.path());
    std::fs::create_dir_all(a.seed_config.parent().unwrap()).unwrap();
    std::fs::write(
        &a.seed_config,
        "{ agents: { defaults: { workspace: '/data/workspace' } }, tools: { elevated: { enabled: true } } }",
    )
    .unwrap();
    assert!(init(&a).unwrap().seeded);
    let cfg = read(&a.config_path);
    assert_eq!(cfg["agents"]["defaults"]["workspace"], "/data/workspace");
    // The baseline still wins over the seed.
    assert_eq!(cfg["tools"]["elevated"]["enabled"], false);
    std::fs::write(
        &a.seed_config,
        "{ agents: { defaults: { workspace: '/elsewhere' } } }",
    )
    .unwrap();
    assert!(!init(&a).unwrap().seeded);
    assert_eq!(
        read(&a.config_path)["agents"]["defaults"]["workspace"],
        "/data/workspace"
    );
}

#[test]
fn relative_token_files_live_in_the_sidecars_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.webhook_token_file = "cron-webhook-token".into();
    a.model_proxy_token_file = "model-proxy-token".into();
    let a = a.resolved(&dir.path().join("sidecar-data"));
    init(&a).unwrap();
    assert!(dir.path().join("sidecar-data/cron-webhook-token").is_file());
    assert!(dir.path().join("sidecar-data/model-proxy-token").is_file());
}

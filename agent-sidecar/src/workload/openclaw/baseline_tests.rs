// Tests may unwrap (house rule); the workspace lint is for input handling.
#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

fn settings() -> SidecarSettings {
    SidecarSettings {
        gateway_port: 18789,
        primary_model: "anthropic/claude-sonnet-4-20250514".into(),
        provider_api: ProviderApi::Anthropic,
        model_proxy_url: "http://127.0.0.1:18790".into(),
        utility_model: None,
        cron_webhook_token: "hook-token".into(),
        model_proxy_token: "proxy-token".into(),
        data_proxy_url: "http://127.0.0.1:18792".into(),
        data_proxy_token: "data-token".into(),
        skills_dir: "/opt/clawswarm/skills".into(),
        install_policy_command: "/usr/local/bin/clawswarm-sidecar".into(),
    }
}

#[test]
fn seed_is_the_write_up_intent_in_the_current_schema() {
    let s = seed("anthropic/claude-sonnet-4-20250514");
    assert_eq!(
        s["agents"]["defaults"]["model"]["primary"],
        "anthropic/claude-sonnet-4-20250514"
    );
    assert_eq!(s["tools"]["elevated"]["enabled"], false);
    assert_eq!(s["tools"]["fs"]["workspaceOnly"], true);
    assert_eq!(s["tools"]["deny"], json!(["gateway", "sessions_spawn"]));
    assert!(
        s.get("skills").is_none(),
        "company data is the sidecar's MCP tool, not a skill that does not ship"
    );
    assert!(
        s.get("model").is_none(),
        "the write-up's top-level model key is invalid"
    );
}

#[test]
fn enforce_undoes_elevated_tools_widened_fs_and_dropped_denials() {
    let mut cfg = json!({
        "tools": { "elevated": { "enabled": true, "allowFrom": {"slack": ["U1"]} }, "fs": { "workspaceOnly": false }, "deny": ["browser"] },
        "agents": { "entries": { "helper": { "tools": { "elevated": { "enabled": true }, "fs": { "workspaceOnly": false }, "deny": ["company_data__search"] } } } },
    });
    let overridden = enforce(&mut cfg);
    assert_eq!(cfg["tools"]["elevated"]["enabled"], false);
    assert_eq!(
        cfg["tools"]["elevated"]["allowFrom"],
        json!({"slack": ["U1"]}),
        "unrelated keys stay"
    );
    assert_eq!(cfg["tools"]["fs"]["workspaceOnly"], true);
    assert_eq!(
        cfg["tools"]["deny"],
        json!(["browser", "gateway", "sessions_spawn"])
    );
    let helper = &cfg["agents"]["entries"]["helper"]["tools"];
    assert_eq!(helper["elevated"]["enabled"], false);
    assert_eq!(helper["fs"]["workspaceOnly"], true);
    assert_eq!(
        helper["deny"],
        json!(["gateway", "sessions_spawn"]),
        "the company-data tools cannot be denied"
    );
    for path in [
        "tools.elevated.enabled",
        "tools.fs.workspaceOnly",
        "tools.deny",
        "agents.entries.helper.tools.elevated.enabled",
        "agents.entries.helper.tools.fs.workspaceOnly",
        "agents.entries.helper.tools.deny",
    ] {
        assert!(
            overridden.iter().any(|p| p == path),
            "{path} missing from {overridden:?}"
        );
    }
}

#[test]
fn enforce_keeps_the_persons_own_skills_cron_and_denials() {
    let mut cfg = json!({
        "tools": { "deny": ["GATEWAY", "exec"] },
        "skills": { "entries": { "weather": { "enabled": true, "config": { "city": "Oslo" } } } },
        "cron": { "enabled": true, "maxConcurrentRuns": 2 },
    });
    let overridden = enforce(&mut cfg);
    assert_eq!(
        cfg["tools"]["deny"],
        json!(["GATEWAY", "exec", "sessions_spawn"]),
        "case-insensitive match, extras kept"
    );
    assert_eq!(
        cfg["skills"]["entries"]["weather"],
        json!({"enabled": true, "config": {"city": "Oslo"}})
    );
    assert_eq!(
        cfg["cron"],
        json!({"enabled": true, "maxConcurrentRuns": 2})
    );
    assert_eq!(overridden, vec!["tools.deny".to_owned()]);
}

#[test]
fn enforce_on_a_compliant_config_changes_nothing() {
    let mut cfg = seed("anthropic/x");
    let before = cfg.clone();
    assert!(enforce(&mut cfg).is_empty());
    assert_eq!(cfg, before);
}

#[test]
fn enforce_replaces_values_of_the_wrong_type() {
    let mut cfg = json!({ "tools": { "elevated": "yes", "deny": "gateway" } });
    let overridden = enforce(&mut cfg);
    assert_eq!(cfg["tools"]["elevated"]["enabled"], false);
    assert_eq!(cfg["tools"]["deny"], json!(["gateway", "sessions_spawn"]));
    assert!(overridden.contains(&"tools.deny".to_owned()));
    let mut not_object = json!([1, 2]);
    enforce(&mut not_object);
    assert_eq!(not_object["tools"]["fs"]["workspaceOnly"], true);
}

#[test]
fn sidecar_settings_point_the_provider_at_the_proxy_with_a_dummy_key() {
    let mut cfg = json!({
        "gateway": { "bind": "lan", "mode": "remote" },
        "models": { "providers": { "anthropic": { "baseUrl": "https://api.anthropic.com", "apiKey": "sk-real" } } },
        "agents": { "defaults": { "model": { "primary": "openai/gpt-5" } } },
        "cron": { "webhookSsrfPolicy": { "allowedHostnames": ["hooks.example"] } },
        "mcp": { "servers": {
            "company_data": { "url": "http://elasticsearch.data:9200/mcp" },
            "weather": { "url": "https://weather.example/mcp" },
        } },
    });
    let overridden = apply_sidecar(&mut cfg, &settings());
    assert_eq!(cfg["gateway"]["mode"], "local");
    assert_eq!(cfg["gateway"]["bind"], "loopback");
    assert_eq!(cfg["gateway"]["port"], 18789);
    assert_eq!(cfg["gateway"]["auth"]["mode"], "token");
    assert!(cfg["gateway"]["auth"].get("token").is_none());
    assert_eq!(
        cfg["gateway"]["http"]["endpoints"]["responses"]["enabled"],
        true
    );
    assert_eq!(cfg["update"]["checkOnStart"], false);
    assert_eq!(cfg["agents"]["defaults"]["utilityModel"], "");
    assert_eq!(
        cfg["agents"]["defaults"]["model"]["primary"],
        "anthropic/claude-sonnet-4-20250514"
    );
    let p = &cfg["models"]["providers"]["anthropic"];
    assert_eq!(p["baseUrl"], "http://127.0.0.1:18790");
    assert_eq!(p["apiKey"], "proxy-token");
    assert_eq!(p["api"], "anthropic-messages");
    assert_eq!(cfg["cron"]["webhookToken"], "hook-token");
    assert_eq!(cfg["plugins"]["entries"]["admin-http-rpc"]["enabled"], true);
    assert_eq!(
        cfg["cron"]["webhookSsrfPolicy"]["allowedHostnames"],
        json!(["hooks.example", "127.0.0.1"])
    );
    assert!(!cfg.to_string().contains("sk-real"));
    assert_eq!(
        cfg["mcp"]["servers"]["company_data"],
        json!({
            "url": "http://127.0.0.1:18792/_clawswarm/mcp",
            "transport": "streamable-http",
            "headers": { "Authorization": "Bearer data-token" },
        }),
        "the company-data tool is re-pointed at the data proxy on every start"
    );
    assert_eq!(
        cfg["mcp"]["servers"]["weather"]["url"], "https://weather.example/mcp",
        "the person's own MCP servers stay"
    );
    for path in [
        "mcp.servers.company_data",
        "gateway.bind",
        "models.providers.anthropic.apiKey",
        "agents.defaults.model.primary",
    ] {
        assert!(
            overridden.iter().any(|p| p == path),
            "{path} missing from {overridden:?}"
        );
    }
}

#[test]
fn sidecar_settings_keep_a_configured_utility_model_and_same_provider_model() {
    let mut cfg = json!({ "agents": { "defaults": { "utilityModel": "anthropic/haiku", "model": { "primary": "anthropic/opus" } } } });
    apply_sidecar(&mut cfg, &settings());
    assert_eq!(cfg["agents"]["defaults"]["utilityModel"], "anthropic/haiku");
    assert_eq!(
        cfg["agents"]["defaults"]["model"]["primary"],
        "anthropic/opus"
    );
    let mut s = settings();
    s.utility_model = Some(String::new());
    apply_sidecar(&mut cfg, &s);
    assert_eq!(cfg["agents"]["defaults"]["utilityModel"], "");
}

#[test]
fn openai_provider_gets_a_v1_base_url() {
    let mut s = settings();
    s.provider_api = ProviderApi::Openai;
    s.primary_model = "vllm/qwen".into();
    let mut cfg = json!({});
    apply_sidecar(&mut cfg, &s);
    assert_eq!(
        cfg["models"]["providers"]["vllm"]["baseUrl"],
        "http://127.0.0.1:18790/v1"
    );
    assert_eq!(
        cfg["models"]["providers"]["vllm"]["api"],
        "openai-completions"
    );
    assert_eq!(provider_of("nomodel"), None);
}

#[test]
fn the_library_is_in_the_search_path_and_registries_are_refused_on_every_start() {
    let mut cfg = json!({
        "skills": { "load": { "extraDirs": ["/data/my-skills"] } },
        "security": { "installPolicy": { "enabled": false } },
    });
    let overridden = apply_sidecar(&mut cfg, &settings());
    assert_eq!(
        cfg["skills"]["load"]["extraDirs"],
        json!(["/data/my-skills", "/opt/clawswarm/skills"]),
        "the person's own extra dirs are kept"
    );
    let policy = &cfg["security"]["installPolicy"];
    assert_eq!(policy["enabled"], true);
    assert_eq!(
        policy["exec"]["command"],
        "/usr/local/bin/clawswarm-sidecar"
    );
    assert_eq!(policy["exec"]["args"], json!(["install-policy"]));
    assert!(overridden.contains(&"security.installPolicy".to_owned()));
    // Applying again changes nothing (no duplicate dir, nothing overridden).
    let before = cfg.clone();
    assert!(apply_sidecar(&mut cfg, &settings()).is_empty());
    assert_eq!(cfg, before);
}

//! What the sidecar writes into OpenClaw's config, as pure JSON transforms.
//!
//! Three layers, applied in this order by `init`:
//! 1. [`seed`]: the first config a new agent gets (the original write-up's
//!    intent, in the current schema). Written once; after that the config
//!    belongs to the person.
//! 2. [`enforce`]: the security baseline, re-applied on every start over
//!    whatever the person changed. They may add skills, cron jobs and tools of
//!    their own; they cannot enable elevated exec, widen file access beyond the
//!    workspace, or un-deny a denied tool.
//! 3. [`apply_sidecar`]: what the sidecar itself depends on (local loopback
//!    gateway, the responses endpoint, the model proxy as provider, cron
//!    webhooks to the sidecar). Also re-applied on every start.

use serde_json::{Map, Value, json};

/// Tools no agent may use: `gateway` reconfigures or restarts the gateway
/// (it could undo this baseline at run time), `sessions_spawn` starts
/// sub-agent sessions outside the conversation the person sees.
pub const DENIED_TOOLS: [&str; 2] = ["gateway", "sessions_spawn"];

pub use crate::model_proxy::ProviderApi;

/// OpenClaw's `models.providers.<p>.api` value for the proxy's protocol.
pub fn openclaw_api(api: ProviderApi) -> &'static str {
    match api {
        ProviderApi::Anthropic => "anthropic-messages",
        ProviderApi::Openai => "openai-completions",
    }
}

/// The sidecar-owned settings, resolved from `InitArgs`.
#[derive(Clone)]
pub struct SidecarSettings {
    pub gateway_port: u16,
    /// e.g. `anthropic/claude-sonnet-4-20250514`; its prefix names the provider.
    pub primary_model: String,
    pub provider_api: ProviderApi,
    /// The model proxy's base URL (scheme, host, port; no `/v1`).
    pub model_proxy_url: String,
    /// `Some("")` turns the utility model off, `Some(m)` sets it, `None`
    /// keeps the person's setting (or turns it off if they have none).
    pub utility_model: Option<String>,
    pub cron_webhook_token: String,
    /// What OpenClaw sends the sidecar's model proxy as its API key: this
    /// agent's own credential, which the proxy checks before it spends the
    /// real key (that exists only in the sidecar).
    pub model_proxy_token: String,
    /// The data proxy's base URL; its MCP endpoint is the company-data tool.
    pub data_proxy_url: String,
    /// What OpenClaw presents to the data proxy.
    pub data_proxy_token: String,
    /// Installed library skills, as the workload sees the directory.
    pub skills_dir: String,
    /// `clawswarm-sidecar` as the workload can run it (the install policy).
    pub install_policy_command: String,
}

/// The MCP server name of the company-data tools; OpenClaw calls them
/// `company_data__search` and so on.
pub const DATA_TOOL_SERVER: &str = "company_data";

/// The provider name in `provider/model`.
pub fn provider_of(model: &str) -> Option<&str> {
    model
        .split_once('/')
        .map(|(p, _)| p)
        .filter(|p| !p.is_empty())
}

/// The first config of a new agent.
pub fn seed(primary_model: &str) -> Value {
    json!({
        "agents": { "defaults": { "model": { "primary": primary_model } } },
        "tools": {
            "elevated": { "enabled": false },
            "fs": { "workspaceOnly": true },
            "deny": DENIED_TOOLS,
        },
    })
}

/// Re-apply the security baseline. Returns the settings of the person's that
/// were overridden (config paths), for the init report.
pub fn enforce(cfg: &mut Value) -> Vec<String> {
    let mut overridden = Vec::new();
    let root = as_object(cfg);
    enforce_tools(obj_at(root, &["tools"]), "tools", &mut overridden, true);
    // Per-agent overrides can widen fs access and re-enable tools, so the
    // same rules apply to each agent entry that sets tools at all.
    if let Some(Value::Object(entries)) = obj_at(root, &["agents"]).get_mut("entries") {
        for (id, entry) in entries.iter_mut() {
            if let Value::Object(agent) = entry
                && let Some(tools @ Value::Object(_)) = agent.get_mut("tools")
            {
                enforce_tools(
                    as_object(tools),
                    &format!("agents.entries.{id}.tools"),
                    &mut overridden,
                    false,
                );
            }
        }
    }
    overridden
}

fn enforce_tools(
    tools: &mut Map<String, Value>,
    at: &str,
    overridden: &mut Vec<String>,
    global: bool,
) {
    let elevated = obj_at(tools, &["elevated"]);
    set(
        elevated,
        "enabled",
        json!(false),
        &format!("{at}.elevated.enabled"),
        overridden,
    );
    let fs = obj_at(tools, &["fs"]);
    set(
        fs,
        "workspaceOnly",
        json!(true),
        &format!("{at}.fs.workspaceOnly"),
        overridden,
    );
    // Deny wins over allow in OpenClaw, so merging the person's list with
    // ours keeps their extra denials and every one of ours.
    let present = tools.contains_key("deny");
    let mut reported = false;
    let mut deny: Vec<Value> = match tools.get("deny") {
        Some(Value::Array(items)) => items.iter().filter(|v| v.is_string()).cloned().collect(),
        Some(_) => {
            reported = true;
            Vec::new()
        }
        None => Vec::new(),
    };
    let had = deny.len();
    for tool in DENIED_TOOLS {
        if !deny
            .iter()
            .any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(tool)))
        {
            deny.push(json!(tool));
        }
    }
    // The company-data tools are the agent's only way to the data: a
    // denial of them is removed (they cannot write, so nothing is lost).
    let before = deny.len();
    deny.retain(|v| {
        !v.as_str()
            .is_some_and(|s| s.to_ascii_lowercase().starts_with(DATA_TOOL_SERVER))
    });
    reported |= deny.len() != before;
    reported |= present && deny.len() > had;
    if reported {
        overridden.push(format!("{at}.deny"));
    }
    // A per-agent entry without a deny list of its own inherits the global one.
    if global || present {
        tools.insert("deny".into(), Value::Array(deny));
    }
}

/// Write what the sidecar depends on. Returns the person's settings that
/// were overridden (only those a person might have set on purpose).
pub fn apply_sidecar(cfg: &mut Value, s: &SidecarSettings) -> Vec<String> {
    let mut overridden = Vec::new();
    let root = as_object(cfg);

    let gateway = obj_at(root, &["gateway"]);
    gateway.insert("mode".into(), json!("local"));
    set(
        gateway,
        "bind",
        json!("loopback"),
        "gateway.bind",
        &mut overridden,
    );
    gateway.insert("port".into(), json!(s.gateway_port));
    // The bearer token comes from OPENCLAW_GATEWAY_TOKEN in the container's
    // environment, so it is never written to a file the agent can read back.
    set(
        obj_at(gateway, &["auth"]),
        "mode",
        json!("token"),
        "gateway.auth.mode",
        &mut overridden,
    );
    obj_at(gateway, &["http", "endpoints", "responses"]).insert("enabled".into(), json!(true));

    obj_at(root, &["update"]).insert("checkOnStart".into(), json!(false));

    let defaults = obj_at(root, &["agents", "defaults"]);
    match &s.utility_model {
        Some(m) => {
            defaults.insert("utilityModel".into(), json!(m));
        }
        None => {
            defaults.entry("utilityModel").or_insert(json!(""));
        }
    }
    // Every model call must go through the proxy (key, metering, budget),
    // so the primary model stays on the proxied provider.
    let provider = provider_of(&s.primary_model)
        .unwrap_or("anthropic")
        .to_owned();
    let model = obj_at(defaults, &["model"]);
    let keeps_provider = model
        .get("primary")
        .and_then(Value::as_str)
        .and_then(provider_of)
        == Some(provider.as_str());
    if !keeps_provider {
        if model.contains_key("primary") {
            overridden.push("agents.defaults.model.primary".into());
        }
        model.insert("primary".into(), json!(s.primary_model));
    }

    let base = s.model_proxy_url.trim_end_matches('/');
    let base_url = match s.provider_api {
        // OpenClaw appends /v1/messages itself.
        ProviderApi::Anthropic => base.to_owned(),
        ProviderApi::Openai => format!("{base}/v1"),
    };
    let entry = obj_at(root, &["models", "providers", provider.as_str()]);
    set(
        entry,
        "baseUrl",
        json!(base_url),
        &format!("models.providers.{provider}.baseUrl"),
        &mut overridden,
    );
    set(
        entry,
        "apiKey",
        json!(s.model_proxy_token),
        &format!("models.providers.{provider}.apiKey"),
        &mut overridden,
    );
    entry.insert("api".into(), json!(openclaw_api(s.provider_api)));
    entry.entry("models").or_insert(json!([]));

    // The company-data tools: the sidecar's data proxy as an MCP server,
    // written on every start, so a person's edit cannot remove or repoint it.
    let data_tool = json!({
        "url": format!("{}{}", s.data_proxy_url.trim_end_matches('/'), crate::data_proxy::MCP_PATH),
        "transport": "streamable-http",
        "headers": { "Authorization": format!("Bearer {}", s.data_proxy_token) },
    });
    set(
        obj_at(root, &["mcp", "servers"]),
        DATA_TOOL_SERVER,
        data_tool,
        &format!("mcp.servers.{DATA_TOOL_SERVER}"),
        &mut overridden,
    );

    // The company skills library: installed skills are read from the
    // sidecar's directory (lowest precedence, so a person's own skill of
    // the same name wins for them), and nothing is installed from a public
    // registry or git (docs/skills.md).
    let load = obj_at(root, &["skills", "load"]);
    let dirs = load.entry("extraDirs").or_insert(json!([]));
    if !dirs.is_array() {
        overridden.push("skills.load.extraDirs".into());
        *dirs = json!([]);
    }
    if let Value::Array(list) = dirs
        && !list
            .iter()
            .any(|d| d.as_str() == Some(s.skills_dir.as_str()))
    {
        list.push(json!(s.skills_dir));
    }
    set(
        obj_at(root, &["security"]),
        "installPolicy",
        json!({
            "enabled": true,
            "targets": ["skill", "plugin"],
            "exec": {
                "source": "exec",
                "command": s.install_policy_command,
                "args": ["install-policy"],
                "timeoutMs": 10000,
            },
        }),
        "security.installPolicy",
        &mut overridden,
    );

    // The notices reconciler reads cron run history over the admin RPC.
    obj_at(root, &["plugins", "entries", "admin-http-rpc"]).insert("enabled".into(), json!(true));

    let cron = obj_at(root, &["cron"]);
    cron.insert("webhookToken".into(), json!(s.cron_webhook_token));
    // Loopback webhooks are blocked unless allowed by name.
    let hosts = obj_at(cron, &["webhookSsrfPolicy"])
        .entry("allowedHostnames")
        .or_insert(json!([]));
    if !hosts.is_array() {
        *hosts = json!([]);
    }
    if let Value::Array(list) = hosts
        && !list.iter().any(|h| h == "127.0.0.1")
    {
        list.push(json!("127.0.0.1"));
    }
    overridden
}

/// Set `key` to `value`, noting the path when the person had another value.
fn set(
    map: &mut Map<String, Value>,
    key: &str,
    value: Value,
    path: &str,
    overridden: &mut Vec<String>,
) {
    if let Some(old) = map.get(key)
        && *old != value
    {
        overridden.push(path.to_owned());
    }
    map.insert(key.to_owned(), value);
}

/// The object at `path`, creating objects on the way; a non-object in the
/// way (a person's typo) is replaced, as the validator would reject it anyway.
fn obj_at<'a>(map: &'a mut Map<String, Value>, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = map;
    for key in path {
        let slot = cur
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        cur = as_object(slot);
    }
    cur
}

fn as_object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        // Unreachable: replaced just above.
        _ => unreachable!("value was made an object"),
    }
}

#[cfg(test)]
#[path = "baseline_tests.rs"]
mod tests;

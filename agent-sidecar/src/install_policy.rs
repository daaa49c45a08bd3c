//! `clawswarm-sidecar install-policy`: OpenClaw's operator install policy
//! (`security.installPolicy.exec`, written by `init`). OpenClaw runs it
//! before every skill or plugin install with the request as JSON on stdin
//! and installs only on `{"decision":"allow"}`.
//!
//! The rule: nothing from the network. ClawHub, skills.sh, git and npm are
//! public registries (or anyone's repository); an agent gets shared skills
//! from the company library (`/agent skills add`), which the sidecar
//! installs without OpenClaw's installer. Local copies (a person's own
//! skill directory, an upload) stay allowed: they are the person's own.
//! Anything this cannot read is refused, never waved through.

use serde_json::{Value, json};

/// Largest request read (OpenClaw sends at most 256 KiB).
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;

/// Origins and request kinds that fetch over the network.
const NETWORK_ORIGINS: &[&str] = &["clawhub", "git", "npm", "skills-sh", "url", "marketplace"];
const NETWORK_REQUESTS: &[&str] = &["plugin-npm", "plugin-git", "plugin-marketplace"];

/// The policy's answer (OpenClaw's install-policy protocol, version 1).
pub fn decide(input: &[u8]) -> Value {
    let block =
        |reason: String| json!({"protocolVersion": 1, "decision": "block", "reason": reason});
    if input.len() > MAX_INPUT_BYTES {
        return block(format!(
            "clawswarm: install request larger than {MAX_INPUT_BYTES} bytes"
        ));
    }
    let req: Value = match serde_json::from_slice(input) {
        Ok(v) => v,
        Err(e) => return block(format!("clawswarm: install request is not JSON ({e})")),
    };
    if req.get("protocolVersion").and_then(Value::as_u64) != Some(1) {
        return block("clawswarm: unknown install-policy protocol version".into());
    }
    let text = |ptr: &str| req.pointer(ptr).and_then(Value::as_str).unwrap_or_default();
    let network = req.pointer("/source/network").and_then(Value::as_bool) == Some(true)
        || NETWORK_ORIGINS.contains(&text("/origin/type"))
        || NETWORK_REQUESTS.contains(&text("/request/kind"));
    if network {
        let what = match text("/targetType") {
            "" => "install",
            t => t,
        };
        let from = [
            text("/request/requestedSpecifier"),
            text("/origin/spec"),
            text("/origin/type"),
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("the network");
        return block(format!(
            "clawswarm: this agent does not install from public registries or git ({what} {name:?} from {from}). \
             Shared skills come from the company skills library: `/agent skills` lists what it offers, \
             `/agent skills add NAME` installs one.",
            name = text("/targetName"),
        ));
    }
    json!({"protocolVersion": 1, "decision": "allow"})
}

/// Read stdin, print the decision; the exit status is always success (a
/// failure would make OpenClaw fail closed anyway, with a vaguer reason).
pub fn run() -> std::process::ExitCode {
    use std::io::Read;
    let mut input = Vec::new();
    let read = std::io::stdin()
        .take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut input);
    let answer = match read {
        Ok(_) => decide(&input),
        Err(e) => {
            json!({"protocolVersion": 1, "decision": "block", "reason": format!("clawswarm: cannot read the install request: {e}")})
        }
    };
    println!("{answer}");
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests as OpenClaw 2026.9.6 sends them (captured from the real
    /// CLI: `openclaw skills install git:… / @owner/slug / ./dir`).
    fn request(source: Value, origin: Value, kind: &str, spec: &str) -> Vec<u8> {
        json!({
            "protocolVersion": 1, "openclawVersion": "2026.9.6",
            "targetName": "pipeline-status", "targetType": "skill",
            "sourcePath": "/tmp/x/export", "sourcePathKind": "directory",
            "source": source, "origin": origin,
            "request": {"kind": kind, "mode": "install", "requestedSpecifier": spec},
        })
        .to_string()
        .into_bytes()
    }

    fn decision(v: &Value) -> &str {
        v["decision"].as_str().unwrap_or_default()
    }

    #[test]
    fn registries_and_git_are_blocked_with_the_way_to_the_library() {
        let clawhub = request(
            json!({"kind": "clawhub", "authority": "openclaw", "mutable": false, "network": true}),
            json!({"type": "clawhub", "slug": "weather"}),
            "skill-install",
            "@owner/weather",
        );
        let git = request(
            json!({"kind": "git", "authority": "third-party", "mutable": true, "network": true}),
            json!({"type": "git", "spec": "git:https://example.com/x"}),
            "skill-install",
            "git:https://example.com/x",
        );
        for req in [clawhub, git] {
            let v = decide(&req);
            assert_eq!(decision(&v), "block", "{v}");
            let reason = v["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("/agent skills add"), "{reason}");
        }
        // Without a `source` block the origin alone decides.
        let v = decide(
            json!({"protocolVersion": 1, "targetType": "plugin", "targetName": "p",
                   "origin": {"type": "npm"}, "request": {"kind": "plugin-npm"}})
            .to_string()
            .as_bytes(),
        );
        assert_eq!(decision(&v), "block");
    }

    #[test]
    fn the_persons_own_local_copies_are_allowed() {
        let local = request(
            json!({"kind": "local-path", "authority": "user", "mutable": true, "network": false}),
            json!({"type": "path", "spec": "/data/workspace/mine"}),
            "skill-install",
            "/data/workspace/mine",
        );
        assert_eq!(decision(&decide(&local)), "allow");
    }

    #[test]
    fn what_cannot_be_read_is_blocked() {
        for input in [&b"not json"[..], b"{}", b"{\"protocolVersion\": 2}", b""] {
            assert_eq!(decision(&decide(input)), "block", "{input:?}");
        }
        assert_eq!(decision(&decide(&vec![b' '; MAX_INPUT_BYTES + 1])), "block");
    }
}

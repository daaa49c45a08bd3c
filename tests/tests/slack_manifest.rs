//! The Slack app manifests in deploy/slack ask for what the controller uses:
//! the scopes behind every Web API method it calls, the events it routes,
//! both slash commands, and the transport each manifest is for.

use std::path::Path;

fn manifest(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/slack")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `key: value` lines and `- item` entries, comments dropped.
fn entries(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            l.split(" #")
                .next()
                .unwrap_or("")
                .trim()
                .trim_start_matches("- ")
                .to_owned()
        })
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

const SCOPES: &[&str] = &[
    "app_mentions:read",
    "assistant:write",
    "chat:write",
    "commands",
    "im:history",
    "im:write",
    "channels:history",
    "groups:history",
    "usergroups:read",
];
const EVENTS: &[&str] = &[
    "app_mention",
    "message.im",
    "message.channels",
    "message.groups",
];

#[test]
fn both_manifests_ask_for_every_scope_event_and_command_the_front_door_uses() {
    for name in ["manifest.yaml", "manifest-events-api.yaml"] {
        let e = entries(&manifest(name));
        for want in SCOPES.iter().chain(EVENTS) {
            assert!(e.iter().any(|l| l == want), "{name} lacks {want}");
        }
        for cmd in ["command: /agent", "command: /setup-agent"] {
            assert!(e.iter().any(|l| l == cmd), "{name} lacks {cmd}");
        }
        assert!(
            e.iter().any(|l| l == "should_escape: true"),
            "{name}: mentions must arrive as <@U…> for deprovision"
        );
    }
}

#[test]
fn each_manifest_is_set_up_for_its_transport() {
    let socket = entries(&manifest("manifest.yaml"));
    assert!(socket.iter().any(|l| l == "socket_mode_enabled: true"));
    assert!(
        !socket
            .iter()
            .any(|l| l.starts_with("request_url:") || l.starts_with("url:"))
    );
    let http = entries(&manifest("manifest-events-api.yaml"));
    assert!(http.iter().any(|l| l == "socket_mode_enabled: false"));
    for path in ["/slack/events", "/slack/commands", "/slack/interactive"] {
        assert!(
            http.iter().any(|l| l.ends_with(path)),
            "events manifest lacks {path}"
        );
    }
}

//! The `clawswarm` CLI (the real binary) against a running controller, as a
//! person types it: messages from stdin, the limit named before anything is
//! sent.

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use clawswarm_tests::harness::Controller;

fn init() {
    clawswarm_certs::install_default_crypto_provider();
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn chat_reads_a_long_message_from_stdin_and_refuses_one_over_the_limit() {
    init();
    let c = Controller::start_ready(&["alice"]).await.unwrap();

    // 200 KiB: past what one argv string can carry, within the protocol's
    // 256 KiB. The stub answers `[chunks=2]` with "w0 w1 ".
    let long = format!("[chunks=2] {}", "x".repeat(200 * 1024));
    let out = c
        .cli(&["chat", "alice", "-"], format!("{long}\n").as_bytes())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim_end(), "w0 w1");
    let sent = c.model_requests("alice");
    let got = &sent.last().unwrap().last_user_text;
    assert!(
        got.contains(&long) && !got.ends_with('\n'),
        "the whole message, without its final newline, reaches the model ({} bytes arrived)",
        got.len()
    );

    // No text argument and stdin not a terminal: stdin is the message.
    let out = c
        .cli(&["chat", "alice"], b"[chunks=1] piped in\n")
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim_end(), "w0");

    // Over the limit: refused by the CLI itself, naming the limit.
    let calls = c.model_requests("alice").len();
    let out = c
        .cli(&["chat", "alice", "-"], &vec![b'x'; 300 * 1024])
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("262144 bytes"), "{err}");
    assert!(
        !err.contains("[turn "),
        "no turn may start for a refused message: {err}"
    );
    assert_eq!(c.model_requests("alice").len(), calls);
}

#[tokio::test]
async fn an_interactive_session_is_one_conversation_and_shows_progress_while_the_agent_wakes() {
    init();
    let c = Controller::start_ready(&["alice"]).await.unwrap();
    let out = c.cli(&["agents", "suspend", "alice"], b"").await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&c.cli(&["agents", "list"], b"").await.unwrap().stdout);
    let row = list.lines().find(|l| l.starts_with("alice ")).unwrap();
    assert!(
        row.contains("suspended") && row.contains("the next message wakes it"),
        "a suspended agent says so, not what it last reported while running:\n{list}"
    );
    let calls = c.model_requests("alice").len();

    // Two lines, two turns, one session; the first wakes the agent.
    let out = c
        .cli(
            &["chat", "-i", "alice"],
            b"[chunks=1] first\n[chunks=2] second\n",
        )
        .await
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "w0 \nw0 w1 \n", "{stderr}");
    assert!(
        stderr.contains("waiting for alice: "),
        "progress while the agent wakes:\n{stderr}"
    );

    // The agent saw one conversation: both calls carry the same session.
    let sent = c.model_requests("alice");
    assert_eq!(sent.len(), calls + 2, "{sent:?}");
    let session = |i: usize| sent[i].session_key.clone().or(sent[i].user.clone());
    let (first, second) = (session(calls), session(calls + 1));
    assert!(first.is_some() && first == second, "{first:?} {second:?}");
    assert_ne!(
        first.as_deref(),
        Some("cli"),
        "a session gets its own conversation"
    );

    // Listed again: awake, with the workload that serves it.
    let list = text(&c.cli(&["agents", "list"], b"").await.unwrap().stdout);
    assert!(list.starts_with("NAME "), "{list}");
    let row = list.lines().find(|l| l.starts_with("alice ")).unwrap();
    assert!(row.contains("ready") && row.contains("responses"), "{list}");
}

/// `clawswarm chat NAME` with no message, typed in a terminal: a pseudo-
/// terminal from util-linux `script`, so the CLI's stdin and stdout are a
/// TTY as a person's are. Lines are turns; Ctrl-D ends the session.
#[tokio::test]
async fn chat_name_in_a_terminal_opens_a_session_that_keeps_the_conversation() {
    init();
    let c = Controller::start_ready(&["alice"]).await.unwrap();
    let calls = c.model_requests("alice").len();
    let bin = clawswarm_tests::harness::binaries().unwrap();
    let command = format!("{} chat alice", bin.controller.display());
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("CLAWSWARM_STATE_DIR", c.state_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("util-linux script runs the CLI in a pseudo-terminal");
    let mut stdin = child.stdin.take().unwrap();
    // \x04 is Ctrl-D at the start of a line: end of input on a terminal.
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"[chunks=1] first\n[chunks=2] second\n\x04")
        .await
        .unwrap();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .expect("the session ends at Ctrl-D")
    .unwrap();
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}{}", text(&out.stderr));
    assert!(
        screen.contains("w0 \r\n") && screen.contains("w0 w1 \r\n"),
        "both replies on the terminal:\n{screen:?}"
    );
    let sent = c.model_requests("alice");
    assert_eq!(sent.len(), calls + 2, "{sent:?}");
    let session = |i: usize| sent[i].session_key.clone().or(sent[i].user.clone());
    assert!(
        session(calls).is_some() && session(calls) == session(calls + 1),
        "one conversation: {sent:?}"
    );
}

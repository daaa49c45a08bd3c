//! The Slack front door end to end: a fake Slack (Web API, Socket Mode,
//! signed Events API) drives the real `clawswarm` controller, which runs
//! real sidecars (local runtime) in front of the stub model, and the reply
//! is read back from what the fake Slack recorded.
//!
//! Processes are started by the shared harness (`clawswarm_tests::harness`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clawswarm_tests::{
    fake_slack::{
        Failure, FakeSlack, FakeSlackConfig, MessageKind,
        events_api::{EventsPoster, PostOptions},
        payloads,
    },
    harness::{Controller, ControllerOptions},
};
use serde_json::json;

const START: Duration = Duration::from_secs(90);
const REPLY: Duration = Duration::from_secs(60);

/// A controller (real binary, local runtime, a stub model per agent) whose
/// Slack front door talks to `fake`.
async fn controller(
    fake: &FakeSlack,
    agents: &[(&str, &str)],
    env: &[(&str, String)],
) -> Result<Controller> {
    Controller::start(options(fake, agents, env)).await
}

/// Harness options for a controller whose Slack front door talks to `fake`.
fn options(fake: &FakeSlack, agents: &[(&str, &str)], env: &[(&str, String)]) -> ControllerOptions {
    options_for(fake.config(), &fake.api_url(), agents, env)
}

/// Harness options for a controller whose Slack front door expects a fake
/// Slack with `cfg`'s tokens at `api_url` (which may not answer yet).
fn options_for(
    cfg: &FakeSlackConfig,
    api_url: &str,
    agents: &[(&str, &str)],
    env: &[(&str, String)],
) -> ControllerOptions {
    let mut all: Vec<(String, String)> = vec![
        ("CLAWSWARM_SLACK_BOT_TOKEN".into(), cfg.bot_token.clone()),
        ("CLAWSWARM_SLACK_APP_TOKEN".into(), cfg.app_token.clone()),
        ("CLAWSWARM_SLACK_API_URL".into(), api_url.to_owned()),
        ("CLAWSWARM_SLACK_SOCKET_CONNECTIONS".into(), "1".into()),
        ("CLAWSWARM_SLACK_ADMINS".into(), "U0ADMIN".into()),
        // Plain log lines, so tests can look for `reason="stale"`.
        ("NO_COLOR".into(), "1".into()),
    ];
    all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let agents = agents
        .iter()
        .map(|(n, o)| ((*n).to_owned(), (*o).to_owned()))
        .collect();
    ControllerOptions {
        agents,
        env: all,
        ..ControllerOptions::default()
    }
}

async fn wait_log(ctl: &Controller, needle: &str, timeout: Duration) -> Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = ctl.logs();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return Ok(line.to_owned());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("controller log never said {needle:?}; log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The controller's Prometheus text.
async fn metrics(ctl: &Controller) -> Result<String> {
    ctl.http_get("/metrics").await.map(|(_, body)| body)
}

/// Wait until the controller's `/readyz` says `needle`; its last body.
async fn wait_readyz(ctl: &Controller, needle: &str, timeout: Duration) -> Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let body = ctl
            .http_get("/readyz")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        if body.contains(needle) {
            return Ok(body);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "/readyz never said {needle:?}; last:\n{body}\nlog:\n{}",
                ctl.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until the controller has finished `n` replies in all, then read
/// what the thread of `thread_ts` shows.
async fn reply_in(
    fake: &FakeSlack,
    ctl: &Controller,
    n: usize,
    channel: &str,
    thread_ts: &str,
) -> Result<String> {
    let deadline = tokio::time::Instant::now() + REPLY;
    while ctl.logs().matches("slack reply finished").count() < n {
        if tokio::time::Instant::now() > deadline {
            bail!("reply {n} never finished; log:\n{}", ctl.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(fake.thread_text(channel, Some(thread_ts)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn socket_mode_from_setup_to_a_streamed_reply() -> Result<()> {
    let fake = FakeSlack::start().await?;
    let ctl = controller(&fake, &[], &[]).await?;
    fake.wait_socket_connections(1, START)
        .await
        .with_context(|| ctl.logs())?;
    let dm = fake.dm_channel_for("U0ALICE");

    // Someone without an agent is told how to get one.
    fake.socket().send_event(payloads::event_callback(
        "Ev1",
        payloads::dm("U0ALICE", &dm, "1700000100.000001", "hello?"),
    ))?;
    let told = fake
        .wait_for(REPLY, |f| {
            Some(f.thread_text(&dm, Some("1700000100.000001"))).filter(|t| !t.is_empty())
        })
        .await?;
    assert!(told.contains("/agent setup"), "{told}");

    // /agent setup: acknowledged at once, then progress, then ready.
    let env = fake.socket().send_command(payloads::slash_command(
        "U0ALICE",
        &dm,
        "/agent",
        "setup",
        &fake.response_url("setup"),
    ))?;
    let ack = fake.wait_ack(&env, Duration::from_secs(10)).await?;
    assert_eq!(ack.frame["payload"]["text"], "Setting up your agent…");
    fake.response_containing("setup", "is starting", START)
        .await?;
    fake.response_containing("setup", "is ready", START)
        .await
        .with_context(|| ctl.logs())?;

    // A DM becomes a turn; the reply streams natively into its thread.
    let hello = payloads::event_callback(
        "Ev2",
        payloads::dm("U0ALICE", &dm, "1700000200.000001", "hello agent"),
    );
    fake.socket().send_event(hello.clone())?;
    let reply = reply_in(&fake, &ctl, 1, &dm, "1700000200.000001").await?;
    assert!(
        reply.starts_with("echo:") && reply.contains("hello agent"),
        "{reply:?}"
    );
    assert_eq!(fake.calls_to("chat.startStream").len(), 1);
    assert!(
        fake.calls_to("assistant.threads.setStatus")
            .iter()
            .any(|c| c.str_param("status") == Some("is thinking…"))
    );

    // Slack's retry of the same event is acked and dropped.
    let retry = fake.socket().send_event_retry(hello, 1, "timeout")?;
    fake.wait_ack(&retry, Duration::from_secs(10)).await?;
    wait_log(
        &ctl,
        "duplicate slack event ignored",
        Duration::from_secs(10),
    )
    .await?;
    let streams_in_thread = fake
        .bot_messages()
        .into_iter()
        .filter(|m| {
            m.thread_ts.as_deref() == Some("1700000200.000001") && m.kind == MessageKind::Streamed
        })
        .count();
    assert_eq!(
        streams_in_thread, 1,
        "the retry did not start a second turn"
    );

    // A 429 on an append is waited out for its Retry-After, then the reply completes.
    fake.fail_next("chat.appendStream", Failure::RateLimited(2));
    let long = payloads::event_callback(
        "Ev3",
        payloads::dm(
            "U0ALICE",
            &dm,
            "1700000300.000001",
            "[chunks=150] tell me more",
        ),
    );
    fake.socket().send_event(long)?;
    let text = reply_in(&fake, &ctl, 2, &dm, "1700000300.000001").await?;
    assert!(
        text.contains("w0 ") && text.contains("w149 "),
        "every chunk arrived: {} chars",
        text.len()
    );
    let appends = fake.calls_to("chat.appendStream");
    let limited = appends
        .iter()
        .position(|c| c.status == 429)
        .context("the fake returned a 429")?;
    let next = appends
        .get(limited + 1)
        .context("appends continued after the 429")?;
    assert!(
        next.at.duration_since(appends[limited].at) >= Duration::from_secs(2),
        "Retry-After honoured"
    );

    // Malformed frames, unknown event types and other bots' messages are logged and ignored.
    fake.socket().send_raw("{this is not json")?;
    wait_log(&ctl, "slack socket mode error", Duration::from_secs(10)).await?;
    let odd = fake.socket().send_event(payloads::event_callback(
        "Ev4",
        json!({"type": "brand_new_event", "x": 1}),
    ))?;
    fake.wait_ack(&odd, Duration::from_secs(10)).await?;
    wait_log(&ctl, "ignoring slack event type", Duration::from_secs(10)).await?;
    let bot = fake.socket().send_event(payloads::event_callback(
        "Ev5",
        payloads::bot_message("B0OTHER", &dm, "1700000400.000001", "beep"),
    ))?;
    fake.wait_ack(&bot, Duration::from_secs(10)).await?;
    wait_log(&ctl, "reason=\"other_bot\"", Duration::from_secs(10)).await?;

    // And the front door still works.
    fake.socket().send_event(payloads::event_callback(
        "Ev6",
        payloads::dm("U0ALICE", &dm, "1700000500.000001", "still there?"),
    ))?;
    let last = reply_in(&fake, &ctl, 3, &dm, "1700000500.000001").await?;
    assert!(last.contains("still there?"), "{last}");
    assert!(
        !fake
            .thread_text(&dm, Some("1700000400.000001"))
            .contains("beep")
    );

    // A mention in a channel starts a thread; a plain reply in that thread follows.
    fake.socket().send_event(payloads::event_callback(
        "Ev7",
        payloads::app_mention("U0ALICE", "C0GENERAL", "1700000600.000001", "in public"),
    ))?;
    let public = reply_in(&fake, &ctl, 4, "C0GENERAL", "1700000600.000001").await?;
    assert!(
        public.contains("in public") && !public.contains("U0BOT"),
        "{public}"
    );
    let start = fake
        .calls_to("chat.startStream")
        .into_iter()
        .find(|c| c.str_param("channel") == Some("C0GENERAL"))
        .unwrap();
    assert_eq!(
        (
            start.str_param("recipient_user_id"),
            start.str_param("recipient_team_id")
        ),
        (Some("U0ALICE"), Some("T0FAKE"))
    );
    fake.socket().send_event(payloads::event_callback(
        "Ev8",
        payloads::thread_reply(
            "U0ALICE",
            "C0GENERAL",
            "1700000600.000001",
            "1700000600.000009",
            "and more",
        ),
    ))?;
    let followed = reply_in(&fake, &ctl, 5, "C0GENERAL", "1700000600.000001").await?;
    assert!(followed.contains("and more"), "{followed}");

    // Admin commands: only for admins; deprovision removes the person's agent.
    let cmd = |user: &str, text: &str, id: &str| {
        payloads::slash_command(user, &dm, "/agent", text, &fake.response_url(id))
    };
    fake.socket().send_command(cmd("U0ALICE", "list", "l1"))?;
    fake.response_containing("l1", "Only admins", REPLY).await?;
    fake.socket().send_command(cmd("U0ADMIN", "list", "l2"))?;
    let list = fake.response_containing("l2", "u-u0alice", REPLY).await?;
    assert!(list.contains("<@U0ALICE>"), "{list}");
    fake.socket()
        .send_command(cmd("U0ADMIN", "deprovision <@U0ALICE|alice>", "d1"))?;
    fake.response_containing("d1", "Deleted <@U0ALICE>'s agent", REPLY)
        .await?;
    fake.socket().send_command(cmd("U0ALICE", "status", "s1"))?;
    fake.response_containing("s1", "/agent setup", REPLY)
        .await?;

    let m = metrics(&ctl).await?;
    for series in [
        r#"clawswarm_slack_api_calls_total{method="chat.appendStream",result="rate_limited"} 1"#,
        r#"clawswarm_slack_events_total{kind="event",result="duplicate"} 1"#,
        r#"clawswarm_slack_replies_total{mode="native",outcome="ok"} 5"#,
        r#"clawswarm_slack_provisioning_decisions_total{decision="allow",reason="allowed"} 1"#,
    ] {
        assert!(m.contains(series), "missing {series} in:\n{m}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_api_verifies_signatures_and_falls_back_to_post_and_update() -> Result<()> {
    let fake = FakeSlack::start_with(FakeSlackConfig {
        native_streaming: false,
        ..FakeSlackConfig::default()
    })
    .await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let ctl = controller(
        &fake,
        &[("u-u0bob", "U0BOB")],
        &[
            ("CLAWSWARM_SLACK_TRANSPORT", "events".into()),
            (
                "CLAWSWARM_SLACK_SIGNING_SECRET",
                fake.config().signing_secret.clone(),
            ),
            ("CLAWSWARM_SLACK_EVENTS_ADDR", format!("127.0.0.1:{port}")),
        ],
    )
    .await?;
    wait_log(&ctl, "slack events api listening", START).await?;
    let poster = EventsPoster::new(
        format!("http://127.0.0.1:{port}/slack/events"),
        fake.config().signing_secret.clone(),
    );
    let ok = PostOptions::default();

    let challenge = poster
        .post_event(
            &json!({"type": "url_verification", "challenge": "c-123", "token": "t"}),
            &ok,
        )
        .await?;
    assert_eq!(
        (
            challenge.status,
            serde_json::from_str::<serde_json::Value>(&challenge.body)?["challenge"].clone()
        ),
        (200, json!("c-123"))
    );

    let dm = fake.dm_channel_for("U0BOB");
    let event = payloads::event_callback(
        "EvB1",
        payloads::dm(
            "U0BOB",
            &dm,
            "1700001000.000001",
            "[chunks=60] [delay_ms=100] hi from events",
        ),
    );
    let forged = PostOptions {
        wrong_secret: Some("not-the-secret".into()),
        ..PostOptions::default()
    };
    assert_eq!(poster.post_event(&event, &forged).await?.status, 401);
    wait_log(&ctl, "reason=\"mismatch\"", Duration::from_secs(10)).await?;
    let stale = PostOptions {
        timestamp_offset: -600,
        ..PostOptions::default()
    };
    assert_eq!(poster.post_event(&event, &stale).await?.status, 401);
    wait_log(&ctl, "reason=\"stale\"", Duration::from_secs(10)).await?;
    let unsigned = PostOptions {
        unsigned: true,
        ..PostOptions::default()
    };
    assert_eq!(poster.post_event(&event, &unsigned).await?.status, 401);
    assert_eq!(
        poster
            .post_raw(
                b"{\"type\": \"event_callback\", ".to_vec(),
                "application/json",
                &ok
            )
            .await?
            .status,
        400
    );
    wait_log(
        &ctl,
        "malformed events api payload",
        Duration::from_secs(10),
    )
    .await?;
    let bad_interaction = poster
        .post_interaction(&json!({"type": "block_actions", "user": 7}), &ok)
        .await?;
    assert_eq!(bad_interaction.status, 400);
    wait_log(
        &ctl,
        "malformed interaction payload",
        Duration::from_secs(10),
    )
    .await?;
    let odd = payloads::event_callback("EvB2", json!({"type": "brand_new_event"}));
    assert_eq!(poster.post_event(&odd, &ok).await?.status, 200);
    wait_log(&ctl, "ignoring slack event type", Duration::from_secs(10)).await?;
    assert!(
        fake.calls_to("chat.postMessage").is_empty(),
        "nothing refused reached a turn"
    );

    // The real event, then Slack's retry of it.
    assert_eq!(poster.post_event(&event, &ok).await?.status, 200);
    let retried = PostOptions {
        retry: Some((1, "http_timeout".into())),
        ..PostOptions::default()
    };
    assert_eq!(poster.post_event(&event, &retried).await?.status, 200);
    wait_log(
        &ctl,
        "duplicate slack event ignored",
        Duration::from_secs(10),
    )
    .await?;
    let reply = reply_in(&fake, &ctl, 1, &dm, "1700001000.000001").await?;
    assert!(reply.contains("w0 ") && reply.contains("w59 "), "{reply}");
    assert_eq!(
        fake.calls_to("chat.startStream").len(),
        1,
        "native streaming was tried once"
    );
    assert_eq!(
        fake.calls_to("chat.postMessage").len(),
        1,
        "one reply message, for one turn"
    );
    assert!(
        !fake.calls_to("chat.update").is_empty(),
        "the reply was written by updates: {:?}\n{}",
        fake.calls(),
        ctl.logs()
    );

    // A turn that fails tells the person what happened, in the thread.
    let failing = payloads::event_callback(
        "EvB3",
        payloads::dm(
            "U0BOB",
            &dm,
            "1700001100.000001",
            "[fail_before_content] please",
        ),
    );
    assert_eq!(poster.post_event(&failing, &ok).await?.status, 200);
    let told = reply_in(&fake, &ctl, 2, &dm, "1700001100.000001").await?;
    assert!(
        told.starts_with(":warning: Something went wrong while your agent was answering"),
        "{told}"
    );

    // Slash commands arrive form-encoded and answer through the response URL.
    let cmd = payloads::slash_command(
        "U0BOB",
        &dm,
        "/agent",
        "status",
        &fake.response_url("status"),
    );
    let resp = poster.post_command(&cmd, &ok).await?;
    assert_eq!(resp.status, 200);
    assert!(resp.body.contains("Working on it"), "{}", resp.body);
    let status = fake.response_containing("status", "u-u0bob", REPLY).await?;
    assert!(status.contains("Connected: yes"), "{status}");

    let m = metrics(&ctl).await?;
    for series in [
        r#"clawswarm_slack_events_total{kind="request",result="stale"} 1"#,
        r#"clawswarm_slack_events_total{kind="request",result="mismatch"} 1"#,
        // Each reply's message is opened before its turn: both tried a stream first.
        r#"clawswarm_slack_api_calls_total{method="chat.startStream",result="api"} 2"#,
        r#"clawswarm_slack_replies_total{mode="fallback",outcome="ok"} 1"#,
        r#"clawswarm_slack_replies_total{mode="fallback",outcome="error"} 1"#,
    ] {
        assert!(m.contains(series), "missing {series} in:\n{m}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notices_reach_the_owner_by_dm_and_only_the_owner() -> Result<()> {
    let fake = FakeSlack::start().await?;
    let ctl = controller(&fake, &[("u-u0carol", "U0CAROL")], &[]).await?;
    fake.wait_socket_connections(1, START).await?;
    ctl.wait_ready("u-u0carol", START).await?;

    // Suspend the agent, leave a notice in its outbox, and wake it with a message.
    leave_in_outbox(
        &fake,
        &ctl,
        json!([{"notice_id": "n-1", "conversation": "slack:T0FAKE:C0PUBLIC:1.1", "text": "Reminder: stand-up in 5"}]),
        "s",
    )
    .await?;

    let dm = fake.dm_channel_for("U0CAROL");
    fake.socket().send_event(payloads::event_callback(
        "EvC1",
        payloads::dm("U0CAROL", &dm, "1700002000.000001", "wake up"),
    ))?;
    reply_in(&fake, &ctl, 1, &dm, "1700002000.000001").await?;
    let notice = fake
        .wait_for(REPLY, |f| {
            f.bot_messages()
                .into_iter()
                .find(|m| m.text.contains("Reminder: stand-up"))
        })
        .await
        .with_context(|| ctl.logs())?;
    assert_eq!(
        notice.channel, dm,
        "a DM to the owner, not the conversation the agent named"
    );
    assert_eq!(notice.thread_ts, None);
    let opened = fake.calls_to("conversations.open");
    assert!(
        opened
            .iter()
            .all(|c| c.params["users"] == json!(["U0CAROL"])
                || c.params["users"] == json!("U0CAROL")),
        "{opened:?}"
    );
    wait_log(&ctl, "notice delivered", Duration::from_secs(10)).await?;
    let statuses: Vec<_> = fake
        .calls_to("assistant.threads.setStatus")
        .into_iter()
        .filter_map(|c| c.str_param("status").map(str::to_owned))
        .collect();
    assert!(
        statuses
            .iter()
            .any(|s| s == "is waking your agent…" || s == "is starting your agent…"),
        "the wake showed as a status (the latest progress wins): {statuses:?}"
    );
    Ok(())
}

/// Suspend Carol's agent and put `notices` in its outbox, as a sidecar
/// leaves them when no ack came; the next wake resends them. `step` names
/// the suspend command's response URL. Returns the outbox's path.
async fn leave_in_outbox(
    fake: &FakeSlack,
    ctl: &Controller,
    notices: serde_json::Value,
    step: &str,
) -> Result<std::path::PathBuf> {
    let env = fake.socket().send_command(payloads::slash_command(
        "U0CAROL",
        "D0CAROL",
        "/agent",
        "suspend",
        &fake.response_url(&format!("suspend-{step}")),
    ))?;
    fake.wait_ack(&env, Duration::from_secs(10)).await?;
    fake.response_containing(&format!("suspend-{step}"), "suspended", START)
        .await
        .with_context(|| ctl.logs())?;
    let outbox = ctl.sidecar_dir("u-u0carol").join(".clawswarm-notices.json");
    std::fs::write(&outbox, notices.to_string())?;
    Ok(outbox)
}

async fn wait_outbox_empty(outbox: &std::path::Path, ctl: &Controller) -> Result<()> {
    clawswarm_tests::harness::wait_for("every notice acknowledged", REPLY, || {
        std::fs::read_to_string(outbox).is_ok_and(|t| t.trim() == "[]")
    })
    .await
    .with_context(|| ctl.logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resent_notice_is_posted_once_also_after_a_controller_restart() -> Result<()> {
    let fake = FakeSlack::start().await?;
    let mut ctl = controller(&fake, &[("u-u0carol", "U0CAROL")], &[]).await?;
    fake.wait_socket_connections(1, START).await?;
    ctl.wait_ready("u-u0carol", START).await?;
    let dm = fake.dm_channel_for("U0CAROL");
    let notice = |id: &str, text: &str| json!({"notice_id": id, "conversation": "", "text": text});
    let posted = |f: &FakeSlack, text: &str| {
        f.bot_messages()
            .into_iter()
            .filter(|m| m.channel == dm && m.text.contains(text))
            .count()
    };

    // Two notices at once: the sidecar sends its whole outbox on every
    // change, so each arrives more than once.
    let outbox = leave_in_outbox(
        &fake,
        &ctl,
        json!([
            notice("n-1", "first notice"),
            notice("n-2", "second notice")
        ]),
        "1",
    )
    .await?;
    fake.socket().send_event(payloads::event_callback(
        "EvR1",
        payloads::dm("U0CAROL", &dm, "1700003000.000001", "wake up"),
    ))?;
    wait_outbox_empty(&outbox, &ctl).await?;

    // The ack of n-1 was lost (the sidecar still holds it), and the
    // controller restarts: the resend is acknowledged, not posted again.
    leave_in_outbox(
        &fake,
        &ctl,
        json!([notice("n-1", "first notice"), notice("n-3", "third notice")]),
        "2",
    )
    .await?;
    let accepted = fake.socket().accepted_total();
    ctl.restart().await?;
    fake.wait_for(START, |f| {
        (f.socket().accepted_total() > accepted && f.socket().connections() == 1).then_some(())
    })
    .await
    .with_context(|| ctl.logs())?;
    fake.socket().send_event(payloads::event_callback(
        "EvR2",
        payloads::dm("U0CAROL", &dm, "1700003000.000002", "wake up again"),
    ))?;
    wait_outbox_empty(&outbox, &ctl).await?;
    assert_eq!(
        ["first notice", "second notice", "third notice"].map(|t| posted(&fake, t)),
        [1, 1, 1],
        "each notice posted once: {:?}",
        fake.bot_messages()
    );
    let metrics = metrics(&ctl).await?;
    let duplicates = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"clawswarm_slack_events_total{kind="notice",result="duplicate"} "#)
        })
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        duplicates >= 1,
        "the restarted controller saw n-1 again and did not post it:\n{metrics}"
    );
    Ok(())
}

/// A stub model whose /readyz says "not yet" for `ms`, as a cold OpenClaw does.
fn slow_workload(ms: u64) -> Result<String> {
    let bins = clawswarm_tests::harness::binaries()?;
    Ok(format!(
        "{} --listen 127.0.0.1:{{port}} --log {{data_dir}}/model.jsonl --ready-after-ms {ms}",
        bins.stub_model.display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_start_gets_patience_messages_then_ready() -> Result<()> {
    let fake = FakeSlack::start().await?;
    let env = [("CLAWSWARM_SLACK_PATIENCE_INTERVAL", "1s".to_owned())];
    let mut opts = options(&fake, &[], &env);
    opts.workload_command = Some(slow_workload(4_000)?);
    let ctl = Controller::start(opts).await?;
    fake.wait_socket_connections(1, START).await?;
    let url = fake.response_url("dan");
    fake.socket().send_command(payloads::slash_command(
        "U0DAN",
        "D0DAN",
        "/setup-agent",
        "",
        &url,
    ))?;
    fake.response_containing("dan", "is starting", START)
        .await?;
    fake.response_containing("dan", "Still starting", START)
        .await?;
    fake.response_containing("dan", "is ready", START)
        .await
        .with_context(|| ctl.logs())?;
    let texts: Vec<String> = fake
        .responses()
        .into_iter()
        .filter_map(|(_, v)| v["text"].as_str().map(str::to_owned))
        .collect();
    assert!(
        texts.len() <= 5,
        "Slack accepts five responses per response_url: {texts:?}"
    );
    assert!(
        texts.last().unwrap().contains("is ready"),
        "ready comes last: {texts:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_that_never_gets_ready_ends_with_a_clear_error() -> Result<()> {
    let fake = FakeSlack::start().await?;
    let env = [
        ("CLAWSWARM_SLACK_START_TIMEOUT", "3s".to_owned()),
        ("CLAWSWARM_SLACK_PATIENCE_INTERVAL", "1s".to_owned()),
    ];
    let mut opts = options(&fake, &[], &env);
    opts.workload_command = Some(slow_workload(600_000)?);
    let ctl = Controller::start(opts).await?;
    fake.wait_socket_connections(1, START).await?;
    let url = fake.response_url("erin");
    fake.socket().send_command(payloads::slash_command(
        "U0ERIN", "D0ERIN", "/agent", "setup", &url,
    ))?;
    let err = fake
        .response_containing("erin", "did not become ready within 3 seconds", START)
        .await
        .with_context(|| ctl.logs())?;
    assert!(
        err.starts_with(":x:") && err.contains("/agent restart"),
        "{err}"
    );
    wait_log(&ctl, "agent not ready in time", Duration::from_secs(10)).await?;
    Ok(())
}

/// Issue 12 item 1 (and issue 9 item 2's Slack half), on the real binary in
/// its embedded mode: the controller dies with SIGKILL while a reply
/// streams; the restarted controller learns of the turn from the sidecar
/// (which survived), and the reply finishes in the same Slack message, whole
/// and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reply_cut_by_a_controller_crash_finishes_in_the_same_message() -> Result<()> {
    let fake = FakeSlack::start().await?;
    let mut ctl = controller(&fake, &[("alice", "U0ALICE")], &[]).await?;
    ctl.wait_ready("alice", START).await?;
    fake.wait_socket_connections(1, START)
        .await
        .with_context(|| ctl.logs())?;
    let dm = fake.dm_channel_for("U0ALICE");
    let asked = "1700000300.000001";
    fake.socket().send_event(payloads::event_callback(
        "Ev1",
        payloads::dm("U0ALICE", &dm, asked, "[chunks=40] [delay_ms=100]"),
    ))?;
    let in_thread = |f: &FakeSlack| -> Vec<_> {
        f.bot_messages()
            .into_iter()
            .filter(|m| m.channel == dm && m.thread_ts.as_deref() == Some(asked))
            .collect()
    };
    let partial = fake
        .wait_for(REPLY, |f| {
            in_thread(f)
                .into_iter()
                .find(|m| m.streaming && m.text.contains("w5 "))
        })
        .await
        .with_context(|| ctl.logs())?;

    ctl.kill().await?;
    ctl.restart().await?;
    wait_log(&ctl, "start=\"resumed\"", REPLY).await?;

    let expected: String = (0..40).map(|i| format!("w{i} ")).collect();
    let messages = in_thread(&fake);
    assert_eq!(messages.len(), 1, "one message for one reply: {messages:?}");
    let reply = &messages[0];
    assert_eq!(reply.ts, partial.ts, "the same message continued");
    assert!(!reply.streaming, "its stream was closed: {reply:?}");
    assert_eq!(
        reply.text.trim_end(),
        expected.trim_end(),
        "whole, and once"
    );
    // The sidecar replayed what it held: the model answered once.
    assert_eq!(ctl.model_requests("alice").len(), 1);
    Ok(())
}

/// Issue 12 item 1, the reply that cannot continue: the controller and the
/// agent's processes all die mid-reply (the text the sidecar held is gone).
/// The restarted sidecar still knows a reply was being written (its turn
/// journal), and the restarted controller ends that Slack message with a
/// clear note, in place, instead of leaving it mid-sentence. Real binaries,
/// embedded mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reply_lost_with_its_agent_ends_with_a_note_in_the_same_message() -> Result<()> {
    let fake = FakeSlack::start().await?;
    let mut ctl = controller(&fake, &[("alice", "U0ALICE")], &[]).await?;
    ctl.wait_ready("alice", START).await?;
    fake.wait_socket_connections(1, START)
        .await
        .with_context(|| ctl.logs())?;
    let dm = fake.dm_channel_for("U0ALICE");
    let asked = "1700000350.000001";
    fake.socket().send_event(payloads::event_callback(
        "Ev1",
        payloads::dm("U0ALICE", &dm, asked, "[chunks=100] [delay_ms=100]"),
    ))?;
    let in_thread = |f: &FakeSlack| -> Vec<_> {
        f.bot_messages()
            .into_iter()
            .filter(|m| m.channel == dm && m.thread_ts.as_deref() == Some(asked))
            .collect()
    };
    let partial = fake
        .wait_for(REPLY, |f| {
            in_thread(f)
                .into_iter()
                .find(|m| m.streaming && m.text.contains("w5 "))
        })
        .await
        .with_context(|| ctl.logs())?;

    // Calls are logged when they end, stamped with their start: the one in
    // flight is logged as the kill cancels it. None may start after it.
    let killed_at_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    ctl.kill().await?;
    ctl.kill_agent_processes("alice")?;
    ctl.restart().await?;
    let closed = fake
        .wait_for(REPLY, |f| {
            in_thread(f)
                .into_iter()
                .find(|m| !m.streaming && m.text.contains(":warning:"))
        })
        .await
        .with_context(|| format!("{}\n{}", ctl.logs(), ctl.sidecar_log("alice")))?;
    assert_eq!(closed.ts, partial.ts, "the same message was closed");
    assert!(
        closed
            .text
            .contains("restarted before it finished this reply"),
        "{closed:?}"
    );
    assert_eq!(in_thread(&fake).len(), 1, "no second message");
    // Nothing re-asked the model behind the person's back.
    let later: Vec<_> = ctl
        .model_requests("alice")
        .into_iter()
        .filter(|r| r.ts_ms >= killed_at_ms)
        .collect();
    assert!(later.is_empty(), "the model was asked again: {later:?}");
    Ok(())
}

/// Issue 12 item 1's bad input: a sidecar that edits or forges the reply
/// targets it hands back cannot steer a reply into another channel or to
/// another person. The test plays the sidecar (a hand-made AgentLink with a
/// real agent certificate) against the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sidecar_cannot_steer_a_resumed_reply_into_another_channel() -> Result<()> {
    use clawswarm_controller::slack::{
        reply::ReplyPlace,
        target::{SlackTarget, TargetSeal},
    };
    use clawswarm_proto::v1 as pb;
    use clawswarm_tests::harness::{agent_credentials, raw_agent_link};

    let fake = FakeSlack::start().await?;
    let mut opts = options(&fake, &[("mallory", "U0MAL")], &[]);
    opts.no_workload = true;
    opts.env
        .push(("CLAWSWARM_LOCAL_PROCESSES".into(), "false".into()));
    let ctl = Controller::start(opts).await?;
    fake.wait_socket_connections(1, START)
        .await
        .with_context(|| ctl.logs())?;

    let general = |user: &str| SlackTarget {
        place: ReplyPlace {
            channel: "C0GENERAL".into(),
            thread_ts: "1700000400.000001".into(),
            user: user.into(),
            team: "T0".into(),
            is_dm: false,
        },
        ts: Some("1700000400.000002".into()),
    };
    // Sealed under a key the sidecar made up: forged.
    let forged = TargetSeal::from_bot_token("xoxb-guessed").seal(&general("U0MAL"));
    // A genuine seal (as if stolen from a turn of someone else's agent)
    // that names another person.
    let someone_elses =
        TargetSeal::from_bot_token(&fake.config().bot_token).seal(&general("U0BOB"));
    let pending = |turn_id: &str, reply_target: Vec<u8>| pb::PendingTurn {
        turn_id: turn_id.into(),
        reply_target,
        next_seq: 1,
        ended: true,
        conversation: "C0GENERAL/1700000400.000001".into(),
    };
    let hello = pb::SidecarFrame {
        frame: Some(pb::sidecar_frame::Frame::Hello(pb::Hello {
            agent: "local/mallory".into(),
            version: "test".into(),
            capabilities: vec![],
            pending: vec![
                pending(&uuid::Uuid::now_v7().to_string(), forged),
                pending(&uuid::Uuid::now_v7().to_string(), someone_elses),
            ],
            library_skills: vec![],
        })),
    };
    let creds = agent_credentials(&ctl, "mallory")?;
    let (_tx, mut from_controller) = raw_agent_link(&ctl, creds, vec![hello]).await?;

    wait_log(&ctl, "its reply target is refused", REPLY).await?;
    wait_log(&ctl, "names someone other than the agent's owner", REPLY).await?;
    let m = metrics(&ctl).await?;
    for series in [
        r#"clawswarm_slack_events_total{kind="resume",result="forged"} 1"#,
        r#"clawswarm_slack_events_total{kind="resume",result="wrong_owner"} 1"#,
    ] {
        assert!(m.contains(series), "missing {series} in:\n{m}");
    }
    assert!(
        !m.contains(r#"kind="resume",result="resumed""#),
        "nothing was resumed:\n{m}"
    );
    // Nothing reached Slack, and the controller asked for neither turn.
    assert!(fake.bot_messages().is_empty(), "{:?}", fake.bot_messages());
    while let Ok(Ok(Some(f))) =
        tokio::time::timeout(Duration::from_millis(500), from_controller.message()).await
    {
        assert!(
            !matches!(f.frame, Some(pb::controller_frame::Frame::Resume(_))),
            "the controller resumed a refused turn: {f:?}"
        );
    }
    Ok(())
}

/// Issue 15, "the first hour": Slack is unreachable when the controller
/// starts. The cause is reported as a network failure (never as a rejected
/// token), `/readyz` names it, the front door retries with backoff, and once
/// Slack answers the same process connects and serves a DM. Real binary,
/// embedded mode; the fake Slack starts late on the port it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_unreachable_at_start_is_reported_as_such_and_retried_until_it_serves() -> Result<()>
{
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = FakeSlackConfig {
        web_api_port: port,
        ..FakeSlackConfig::default()
    };
    let api_url = format!("http://127.0.0.1:{port}/api");
    let ctl = Controller::start(options_for(&cfg, &api_url, &[("alice", "U0ALICE")], &[])).await?;

    wait_log(&ctl, "cannot reach slack to check the bot token", START).await?;
    let down = wait_readyz(&ctl, "cannot reach slack to check the bot token", START).await?;
    assert!(
        down.contains("slack: failed: cannot reach slack")
            || down.contains("slack: connecting again (last attempt: cannot reach slack"),
        "{down}"
    );
    assert!(
        !ctl.logs().contains("rejected the bot token"),
        "a network failure is not a rejected token:\n{}",
        ctl.logs()
    );
    // It keeps trying: a second attempt is logged before Slack comes up.
    let deadline = tokio::time::Instant::now() + START;
    while ctl.logs().matches("slack front door failed").count() < 2 {
        if tokio::time::Instant::now() > deadline {
            bail!("no retry; log:\n{}", ctl.logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let fake = FakeSlack::start_with(cfg).await?;
    fake.wait_socket_connections(1, START)
        .await
        .with_context(|| ctl.logs())?;
    wait_readyz(&ctl, "slack: serving", START).await?;
    ctl.wait_ready("alice", START).await?;
    let dm = fake.dm_channel_for("U0ALICE");
    let asked = "1700000400.000001";
    fake.socket().send_event(payloads::event_callback(
        "Ev1",
        payloads::dm("U0ALICE", &dm, asked, "hello after the outage"),
    ))?;
    let reply = reply_in(&fake, &ctl, 1, &dm, asked).await?;
    assert!(reply.contains("hello after the outage"), "{reply:?}");
    Ok(())
}

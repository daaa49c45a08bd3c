//! The install test, Events API edition: an operator's overlay of the
//! shipped deploy/ plus the shipped component `deploy/components/events-api`
//! (as docs/kubernetes.md writes it), run as an operator installs it. Everything else is as in `deployment.rs`: the rendering
//! applied unchanged to a real etcd + kube-apiserver, the real `clawswarm`
//! binary in pods made from the rendered Deployment, the sandboxed kubelet
//! running the agent pod from the shipped `default` template with the real
//! OpenClaw gateway. Slack is the fake Slack, and it POSTs to the shipped
//! Service `clawswarm-slack-events` as an Ingress would, signed with the
//! signing secret and retried on Slack's schedule (`EventsPoster::deliver`).
//!
//! What it proves on the shipped artifact: the leader alone answers the
//! Events API and a standby refuses with 503 + `Retry-After`, so Slack's
//! retry reaches the leader; and a message that reaches a controller before
//! it knows its role (the API server unreachable while it starts) is held,
//! never answered "you don't have an agent", and is answered once the role
//! is known.
//!
//! Needs `scripts/deps.sh kube openclaw` and root (namespaces); fails, never
//! skips, without them.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{Context as _, Result};
use clawswarm_tests::fake_slack::events_api::{EventsPoster, PostOptions, SLACK_ACK_TIMEOUT};
use clawswarm_tests::fake_slack::payloads;
use clawswarm_tests::install::{Install, Transport, restart_count};
use kube::ResourceExt as _;

const START: Duration = Duration::from_secs(240);
const REPLY: Duration = Duration::from_secs(120);
const ALICE: &str = "U0ALICE";
/// Slack's retry schedule (immediately, ~1 min, ~5 min), ten times faster.
const SLACK_TIME_SCALE: u32 = 10;

/// The Request URL paths of the shipped Slack app manifest for the Events
/// API: (slash commands, events).
fn manifest_paths() -> Result<(String, String)> {
    let path = clawswarm_tests::install::deploy_dir().join("slack/manifest-events-api.yaml");
    let text = std::fs::read_to_string(&path)?;
    let manifest: serde_json::Value = serde_saphyr::from_str(&text)?;
    // `https://host/path` → `/path`.
    let path_of = |url: &serde_json::Value| -> Result<String> {
        let url = url.as_str().context("not a URL")?;
        let rest = url.strip_prefix("https://").context("not an https URL")?;
        Ok(rest[rest.find('/').context("no path")?..].to_string())
    };
    Ok((
        path_of(&manifest["features"]["slash_commands"][0]["url"])?,
        path_of(&manifest["settings"]["event_subscriptions"]["request_url"])?,
    ))
}

/// The text of every bot message in `thread` of `channel`.
fn thread(
    fake: &clawswarm_tests::fake_slack::FakeSlack,
    channel: &str,
    thread: &str,
) -> Vec<String> {
    fake.bot_messages()
        .into_iter()
        .filter(|m| m.channel == channel && m.thread_ts.as_deref() == Some(thread))
        .map(|m| m.text)
        .collect()
}

/// `clawswarm_slack_front_door{state}` of pod `name` reaches `state`.
async fn wait_front_door(install: &Install, name: &str, state: &str) -> Result<()> {
    let want = format!(r#"clawswarm_slack_front_door{{state="{state}"}} 1"#);
    let deadline = tokio::time::Instant::now() + START;
    loop {
        if let Ok((200, metrics)) = install.http_get(name, "http", "/metrics").await
            && metrics.contains(&want)
        {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{name} never reported {want}\n{}",
            install.pod_logs(name)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_events_api_install_answers_from_the_leader_only_and_holds_early_messages() -> Result<()>
{
    let install = Install::with_transport(Transport::EventsApi).await?;
    let secret = install.fake.config().signing_secret.clone();
    let (commands_path, events_path) = manifest_paths()?;

    // The leader answers the Events API; Socket Mode is not used at all.
    let a = install.start_controller("a").await?.name_any();
    install.wait_pod_ready(&a, START).await?;
    wait_front_door(&install, &a, "serving").await?;
    assert_eq!(
        install.fake.socket().accepted_total(),
        0,
        "no Socket Mode connection"
    );

    // Slack reaches the leader through the shipped Service, as an Ingress does.
    let commands = EventsPoster::new(
        install.service_url("clawswarm-slack-events", "slack-events", &commands_path)?,
        secret.clone(),
    );
    let events = EventsPoster::new(
        install.service_url("clawswarm-slack-events", "slack-events", &events_path)?,
        secret.clone(),
    );
    let in_time = PostOptions {
        timeout: Some(SLACK_ACK_TIMEOUT),
        ..PostOptions::default()
    };
    let dm = install.fake.dm_channel_for(ALICE);
    let setup = commands
        .post_command(
            &payloads::slash_command(
                ALICE,
                &dm,
                "/agent",
                "setup",
                &install.fake.response_url("setup"),
            ),
            &in_time,
        )
        .await?;
    assert_eq!(setup.status, 200, "{setup:?}");
    install
        .fake
        .response_containing("setup", "is starting", START)
        .await?;
    install
        .fake
        .response_containing("setup", "is ready", START)
        .await
        .with_context(|| format!("the agent never became ready\n{}", install.pod_logs(&a)))?;

    let asked = "1700000100.000001";
    let attempts = events
        .deliver(
            &payloads::event_callback(
                "EvE1",
                payloads::dm(ALICE, &dm, asked, "[chunks=3] hello over http"),
            ),
            SLACK_TIME_SCALE,
        )
        .await;
    assert_eq!(
        attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [Some(200)],
        "acked at once"
    );
    let reply = install
        .fake
        .wait_for(REPLY, |f| {
            Some(f.thread_text(&dm, Some(asked))).filter(|t| t.contains("w2"))
        })
        .await
        .with_context(|| format!("no streamed reply\n{}", install.pod_logs(&a)))?;
    assert_eq!(reply.trim(), "w0 w1 w2");

    // A standby holds no front door: a request that reaches it is refused
    // with 503 and Retry-After (after a short hold), and is not worked on.
    let b = install.start_controller("b").await?.name_any();
    install.wait_pod_ready(&b, START).await?;
    let readyz = install.wait_http_ok(&b, "http", "/readyz", START).await?;
    assert!(readyz.contains("slack: standby"), "{readyz}");
    let to_standby = EventsPoster::new(
        install.pod_url(&b, "slack-events", &events_path).await?,
        secret.clone(),
    );
    let refused_ts = "1700000150.000001";
    let refused_event = payloads::event_callback(
        "EvE2",
        payloads::dm(ALICE, &dm, refused_ts, "[chunks=1] via the standby"),
    );
    let refused = to_standby.post_event(&refused_event, &in_time).await?;
    assert_eq!(
        (refused.status, refused.retry_after.as_deref()),
        (503, Some("1")),
        "{refused:?}"
    );
    let (_, metrics) = install.http_get(&b, "http", "/metrics").await?;
    assert!(
        metrics.contains(r#"clawswarm_slack_events_total{kind="request",result="not_serving"} 1"#),
        "{metrics}"
    );
    assert!(
        thread(&install.fake, &dm, refused_ts).is_empty(),
        "a refused request is not worked on"
    );
    // Slack's retry goes through the Service, to the leader: nothing lost.
    let retried = events.deliver(&refused_event, SLACK_TIME_SCALE).await;
    assert_eq!(
        retried.last().and_then(|a| a.status),
        Some(200),
        "{retried:?}"
    );
    install
        .fake
        .wait_for(REPLY, |f| {
            Some(f.thread_text(&dm, Some(refused_ts))).filter(|t| t.contains("w0"))
        })
        .await?;

    // Start-up order: both controllers die (their node is gone) and come
    // back while the API server cannot be reached. A DM that reaches the
    // restarted leader's pod (the Service still selects it by its label)
    // before it knows its role is held: not acknowledged, never answered
    // "no agent"; Slack retries, and once the role is known the DM is
    // answered, once.
    install.net.hold_api_server(true);
    for pod in [&a, &b] {
        let restarts = restart_count(&install.wait_pod_ready(pod, START).await?);
        install.kubelet.kill_containers(pod)?;
        install.wait_restarted(pod, restarts, START).await?;
    }
    install.wait_port_bound(&a, "slack-events", START).await?;
    let early_ts = "1700000200.000001";
    let early = payloads::event_callback(
        "EvE3",
        payloads::dm(ALICE, &dm, early_ts, "[chunks=3] early bird"),
    );
    let delivery = tokio::spawn({
        let events = events.clone();
        async move { events.deliver(&early, SLACK_TIME_SCALE).await }
    });
    tokio::time::sleep(SLACK_ACK_TIMEOUT + Duration::from_secs(1)).await;
    assert!(
        !install
            .fake
            .bot_messages()
            .iter()
            .any(|m| m.channel == dm && m.text.contains("don't have an agent")),
        "a controller that does not know its role yet told Alice she has no agent"
    );
    install.net.hold_api_server(false);
    let attempts = tokio::time::timeout(REPLY + START, delivery).await??;
    assert_eq!(
        attempts.first().map(|a| a.reason),
        Some("http_timeout"),
        "held, not answered: {attempts:?}"
    );
    assert_eq!(
        attempts.last().and_then(|a| a.status),
        Some(200),
        "{attempts:?}"
    );
    let reply = install
        .fake
        .wait_for(REPLY, |f| {
            Some(f.thread_text(&dm, Some(early_ts))).filter(|t| t.contains("w2"))
        })
        .await
        .with_context(|| {
            format!(
                "the early DM was never answered\n{}\n{}",
                install.pod_logs(&a),
                install.pod_logs(&b)
            )
        })?;
    assert_eq!(reply.trim(), "w0 w1 w2", "answered once");
    assert_eq!(thread(&install.fake, &dm, early_ts).len(), 1, "one message");
    assert!(
        !install
            .fake
            .bot_messages()
            .iter()
            .any(|m| m.text.contains("don't have an agent")),
        "nobody was told they have no agent"
    );
    Ok(())
}

//! The Kubernetes runtime across controller lifetimes on a real API server:
//! restart rebuilds the view from the API, the Lease moves leadership and the
//! leader label, only the leader holds the Slack connection (the fake
//! Slack's Socket Mode counts them) and the HR off-boarding webhook ends in
//! the finalizer.
//!
//! Needs `eval "$(scripts/deps.sh kube)"`; fails (never skips) without it.

#![allow(clippy::unwrap_used)]

mod kube_common;

use std::sync::Arc;
use std::time::Duration;

use clawswarm_controller::runtime::Runtime;
use clawswarm_controller::runtime::kubernetes::crd::Agent;
use clawswarm_controller::runtime::kubernetes::{leader, offboarding};
use clawswarm_tests::control_plane::wait_for;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, ResourceExt as _};
use kube_common::*;

#[tokio::test(flavor = "multi_thread")]
async fn restarted_controller_rebuilds_its_view_from_the_api() {
    let c = cluster().await;
    let ctl = Controller::start(&c, None).await;
    provision(&ctl.runtime, "frank", "U6", "pm").await;
    ready_pod(&c, "frank").await;
    ctl.runtime
        .record_usage(
            &id("frank"),
            clawswarm_controller::runtime::TokenTotals {
                input: 7,
                output: 5,
                cache_read: 0,
                cache_write: 0,
            },
        )
        .await
        .unwrap();
    ctl.stop().await; // flushes usage to the Agent

    let again = Controller::start(&c, None).await;
    let rec = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(r) = again.runtime.find_by_owner("U6").await.unwrap() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(rec.id, id("frank"));
    assert_eq!((rec.usage.input, rec.usage.output), (7, 5));
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn standby_takes_over_when_the_leader_stops_and_moves_the_label() {
    let c = cluster().await;
    // Two controller pods to carry the leader label (never started by the
    // kubelet: their image is not mapped; only their labels matter here).
    let pods = Api::<Pod>::namespaced(c.cp.admin(), NS);
    for name in ["controller-a", "controller-b"] {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "app.kubernetes.io/name": "clawswarm-controller" } },
            "spec": {
                "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
                "containers": [{ "name": "c", "image": "example.invalid/controller:1",
                    "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } } }],
            },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let a = Controller::start(&c, Some("controller-a")).await;
    a.wait_leading(true).await;
    let b = Controller::start(&c, Some("controller-b")).await;
    let labelled = |p: Option<&Pod>| {
        p.is_some_and(|p| p.labels().get(leader::LEADER_LABEL).map(String::as_str) == Some("true"))
    };
    wait_for(
        pods.clone(),
        "controller-a",
        labelled,
        WAIT,
        "leader label on a",
    )
    .await
    .unwrap();
    assert!(!*b.runtime.leadership().borrow(), "two leaders");

    // Work continues across the handover.
    a.stop().await;
    b.wait_leading(true).await;
    wait_for(
        pods.clone(),
        "controller-b",
        labelled,
        WAIT,
        "leader label on b",
    )
    .await
    .unwrap();
    let a_pod = pods.get("controller-a").await.unwrap();
    assert!(
        a_pod.labels().get(leader::LEADER_LABEL).is_none(),
        "a still marked leader"
    );
    provision(&b.runtime, "grace", "U7", "engineer").await;
    ready_pod(&c, "grace").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn offboarding_webhook_deletes_the_persons_agent_once() {
    let c = cluster().await;
    let ctl = Controller::start(&c, None).await;
    provision(&ctl.runtime, "heidi", "U8", "pm").await;
    ready_pod(&c, "heidi").await;
    let key = b"an-hr-system-shared-key".to_vec();
    let runtime: Arc<dyn Runtime> = ctl.runtime.clone();
    let hook = Arc::new(offboarding::Offboarding::new(runtime, key.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, hook.router()).await });

    let body = br#"{"owner":"U8"}"#.to_vec();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sig = offboarding::sign(&key, ts, &body);
    let http = reqwest::Client::new();
    let post = |sig: String| {
        http.post(format!("http://{addr}{}", offboarding::PATH))
            .header(offboarding::TIMESTAMP_HEADER, ts.to_string())
            .header(offboarding::SIGNATURE_HEADER, sig)
            .body(body.clone())
            .send()
    };
    let forged = post(offboarding::sign(b"not-the-hr-systems-key", ts, &body))
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let resp = post(sig.clone()).await.unwrap();
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let replay = post(sig).await.unwrap();
    assert_eq!(replay.status(), 409);

    let agents = Api::<Agent>::namespaced(c.cp.admin(), NS);
    wait_for(
        agents,
        "heidi",
        |a: Option<&Agent>| a.is_none(),
        WAIT,
        "heidi off-boarded",
    )
    .await
    .unwrap();
    server.abort();
    ctl.stop().await;
}

/// One replica's Slack front door, assembled as `app.rs` assembles it: the
/// controller's `FrontDoor` following the runtime's role, `lead_slack`
/// running the real `slack::run` against the fake Slack.
struct SlackReplica {
    door: Arc<clawswarm_controller::front_door::FrontDoor>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SlackReplica {
    fn start(ctl: &Controller, fake: &clawswarm_tests::fake_slack::FakeSlack) -> Self {
        use clap::Parser as _;
        use clawswarm_controller::front_door::{FrontDoor, lead_slack};
        use clawswarm_controller::mesh::{Mesh, MeshConfig};
        use clawswarm_controller::metrics::Metrics;
        use clawswarm_controller::router::{Router, RouterConfig};
        use clawswarm_controller::slack::{SlackArgs, SlackIo};

        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            slack: SlackArgs,
        }
        let cfg = fake.config();
        let api_url = fake.api_url();
        let args = Cli::try_parse_from([
            "clawswarm",
            "--slack-bot-token",
            cfg.bot_token.as_str(),
            "--slack-app-token",
            cfg.app_token.as_str(),
            "--slack-api-url",
            api_url.as_str(),
            "--slack-socket-connections",
            "1",
        ])
        .unwrap()
        .slack;
        let stop = tokio_util::sync::CancellationToken::new();
        let metrics = Metrics::new();
        let td = clawswarm_certs::TrustDomain::new("clawswarm.local".to_string()).unwrap();
        let (mesh, outputs) = Mesh::new(MeshConfig::new(td, NS), metrics.clone(), stop.clone());
        let runtime: Arc<dyn Runtime> = ctl.runtime.clone();
        let router = Router::new(runtime.clone(), mesh, RouterConfig::default());
        let door = FrontDoor::new(runtime.role(), true, metrics.slack.clone());
        let io = SlackIo::new(outputs.notices, outputs.pending);
        let start = move |on_serving, stop| {
            let io = SlackIo {
                on_serving,
                ..io.clone()
            };
            clawswarm_controller::slack::run(args.clone(), router.clone(), io, stop)
        };
        let task = tokio::spawn(lead_slack(door.clone(), start, stop.clone()));
        Self { door, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_holds_the_slack_connection_and_the_new_leader_takes_it() {
    use clawswarm_controller::front_door::SlackState;
    use clawswarm_controller::runtime::Role;

    let c = cluster().await;
    let fake = clawswarm_tests::fake_slack::FakeSlack::start()
        .await
        .unwrap();
    let a = Controller::start(&c, None).await;
    a.wait_leading(true).await;
    let a_slack = SlackReplica::start(&a, &fake);
    let b = Controller::start(&c, None).await;
    let b_slack = SlackReplica::start(&b, &fake);
    eventually("b knows it is the standby", || {
        b_slack.door.role() == Role::Standby
    })
    .await;
    eventually("the leader's socket mode connection", || {
        a_slack.door.slack() == SlackState::Serving && fake.socket().connections() == 1
    })
    .await;
    // Give a wrongly started standby every chance to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        fake.calls_to("apps.connections.open").len(),
        1,
        "the standby opened a socket mode connection too"
    );
    assert_eq!(fake.socket().connections(), 1);
    assert_eq!(b_slack.door.slack(), SlackState::Standby);
    let (ready, detail) = b_slack.door.readiness();
    assert!(ready, "a standby must stay Ready: {detail}");
    assert!(detail.contains("slack: standby (no connection"), "{detail}");

    // The leader gives up the Lease (its process stays): its Slack front
    // door closes, and the standby takes the Lease and the Slack connection.
    a.stop().await;
    eventually("the former leader's slack front door closed", || {
        a_slack.door.slack() == SlackState::Standby
    })
    .await;
    b.wait_leading(true).await;
    eventually("the new leader's socket mode connection", || {
        b_slack.door.slack() == SlackState::Serving && fake.socket().connections() == 1
    })
    .await;
    assert_eq!(fake.calls_to("apps.connections.open").len(), 2);
    assert!(b_slack.door.readiness().1.contains("slack: serving"));
    a_slack.stop().await;
    b_slack.stop().await;
    b.stop().await;
}

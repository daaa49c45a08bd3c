use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Until `cond` holds, on paused time; panics past a minute (virtual).
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}

/// A stand-in Slack front door: counts starts and stops, says it serves.
#[derive(Default)]
struct Fake {
    starts: AtomicUsize,
    stops: AtomicUsize,
    /// Starts that fail at once, before serving.
    failures: AtomicUsize,
}

impl Fake {
    fn start(
        self: &Arc<Self>,
    ) -> impl FnMut(
        OnServing,
        CancellationToken,
    ) -> futures::future::BoxFuture<'static, Result<(), SlackError>>
    + use<> {
        Self::starter(self.clone())
    }

    fn starter(
        fake: Arc<Self>,
    ) -> impl FnMut(
        OnServing,
        CancellationToken,
    ) -> futures::future::BoxFuture<'static, Result<(), SlackError>> {
        move |on_serving, stop| {
            let fake = fake.clone();
            Box::pin(async move {
                fake.starts.fetch_add(1, Ordering::SeqCst);
                if fake
                    .failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return Err(SlackError::Auth("invalid_auth".into()));
                }
                on_serving(true);
                stop.cancelled().await;
                on_serving(false);
                fake.stops.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        }
    }
}

fn door(role: Role) -> (watch::Sender<Role>, Arc<FrontDoor>, SlackMetrics) {
    let (tx, rx) = watch::channel(role);
    let metrics = SlackMetrics::default();
    (tx, FrontDoor::new(rx, true, metrics.clone()), metrics)
}

fn gauge(m: &SlackMetrics, state: &'static str) -> i64 {
    m.front_door
        .get_or_create(&crate::slack::metrics::StateLabel { state })
        .get()
}

#[tokio::test(start_paused = true)]
async fn standby_holds_no_slack_front_door_and_the_leader_opens_and_closes_it() {
    let (role, door, metrics) = door(Role::Starting);
    let fake = Arc::new(Fake::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(lead_slack(door.clone(), fake.start(), stop.clone()));

    // Starting: not Ready, no front door.
    let (ready, detail) = door.readiness();
    assert!(!ready, "{detail}");
    role.send_replace(Role::Standby);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        fake.starts.load(Ordering::SeqCst),
        0,
        "a standby opened slack"
    );
    let (ready, detail) = door.readiness();
    assert!(ready, "a standby must stay Ready: {detail}");
    assert!(detail.contains("role: standby"), "{detail}");
    assert!(detail.contains("slack: standby (no connection"), "{detail}");
    assert_eq!(gauge(&metrics, "standby"), 1);
    assert_eq!(gauge(&metrics, "serving"), 0);

    // Gaining the lease opens it…
    role.send_replace(Role::Leader);
    eventually("serving", || door.slack() == SlackState::Serving).await;
    assert_eq!(fake.starts.load(Ordering::SeqCst), 1);
    assert_eq!(
        (gauge(&metrics, "serving"), gauge(&metrics, "standby")),
        (1, 0)
    );
    assert!(door.readiness().1.contains("slack: serving"));

    // …losing it closes it, and regaining it opens a new one.
    role.send_replace(Role::Standby);
    eventually("stopped", || fake.stops.load(Ordering::SeqCst) == 1).await;
    assert_eq!(door.slack(), SlackState::Standby);
    assert_eq!(gauge(&metrics, "serving"), 0);
    role.send_replace(Role::Leader);
    eventually("serving again", || fake.starts.load(Ordering::SeqCst) == 2).await;

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fake.stops.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_front_door_is_started_again_after_a_backoff_while_leading() {
    let (_role, door, metrics) = door(Role::Leader);
    let fake = Arc::new(Fake::default());
    fake.failures.store(2, Ordering::SeqCst);
    let stop = CancellationToken::new();
    let task = tokio::spawn(lead_slack(door.clone(), fake.start(), stop.clone()));
    eventually("failed once", || door.slack() == SlackState::Failed).await;
    assert_eq!(gauge(&metrics, "failed"), 1);
    eventually("serving after retries", || {
        door.slack() == SlackState::Serving
    })
    .await;
    assert_eq!(fake.starts.load(Ordering::SeqCst), 3);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn without_an_election_the_replica_is_the_leader_at_once() {
    // What the local runtime's role (the trait default) gives: a final Leader.
    let rx = watch::channel(Role::Leader).1;
    let door = FrontDoor::new(rx, false, SlackMetrics::default());
    assert_eq!(
        door.wait_known(Duration::from_secs(1)).await,
        Some(Role::Leader)
    );
    let (ready, detail) = door.readiness();
    assert!(ready);
    assert!(detail.contains("slack: off"), "{detail}");
}

#[tokio::test(start_paused = true)]
async fn waiting_for_the_role_is_bounded() {
    let (role, door, _) = door(Role::Starting);
    assert_eq!(door.wait_known(Duration::from_secs(5)).await, None);
    let waiter = tokio::spawn({
        let door = door.clone();
        async move { door.wait_known(Duration::from_secs(5)).await }
    });
    tokio::task::yield_now().await;
    role.send_replace(Role::Standby);
    assert_eq!(waiter.await.unwrap(), Some(Role::Standby));
}

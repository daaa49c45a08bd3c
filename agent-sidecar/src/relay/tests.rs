use std::{
    collections::VecDeque,
    sync::atomic::{AtomicUsize, Ordering},
};

use futures::{future::BoxFuture, stream};

use super::*;
use crate::workload::{ReplyStream, Usage, WorkloadError};

/// What the scripted workload does for one call.
#[derive(Clone)]
enum Step {
    /// Deltas, each after `gap`, then Done.
    Reply(Vec<&'static str>, Duration),
    FailBeforeContent,
    FailAfter(&'static str),
    /// Never answers (until dropped).
    Hang,
}

struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    calls: AtomicUsize,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl Scripted {
    fn new(steps: Vec<Step>) -> Arc<Self> {
        Arc::new(Self {
            steps: Mutex::new(steps.into()),
            calls: AtomicUsize::new(0),
            running: Arc::default(),
            max_running: Arc::default(),
            dropped: Arc::default(),
        })
    }
}

/// Counts a call as running until its stream is dropped.
struct Running(Arc<AtomicUsize>, Arc<AtomicUsize>);
impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

impl Workload for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }
    fn check_ready(&self) -> BoxFuture<'_, Readiness> {
        Box::pin(async { Readiness::ready("scripted") })
    }
    fn start_turn(&self, _turn: TurnRequest) -> ReplyStream {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let guard = Arc::new(Running(self.running.clone(), self.dropped.clone()));
        let step = lock(&self.steps)
            .pop_front()
            .unwrap_or(Step::Reply(vec!["ok"], Duration::ZERO));
        let items: Vec<(Duration, Result<WorkloadEvent, WorkloadError>)> = match step {
            Step::Reply(deltas, gap) => deltas
                .into_iter()
                .map(|d| (gap, Ok(WorkloadEvent::Delta(d.into()))))
                .chain([(
                    Duration::ZERO,
                    Ok(WorkloadEvent::Done(Usage {
                        input_tokens: 1,
                        output_tokens: 2,
                        ..Usage::default()
                    })),
                )])
                .collect(),
            Step::FailBeforeContent => vec![(
                Duration::ZERO,
                Err(WorkloadError::Failed("overloaded".into())),
            )],
            Step::FailAfter(d) => vec![
                (Duration::ZERO, Ok(WorkloadEvent::Delta(d.into()))),
                (
                    Duration::ZERO,
                    Err(WorkloadError::Failed("broke mid-reply".into())),
                ),
            ],
            Step::Hang => vec![(
                Duration::from_secs(100_000),
                Err(WorkloadError::Failed("unreachable".into())),
            )],
        };
        Box::pin(stream::unfold(
            (items.into_iter(), guard),
            |(mut it, g)| async move {
                let (gap, item) = it.next()?;
                tokio::time::sleep(gap).await;
                Some((item, (it, g)))
            },
        ))
    }
}

fn relay(w: Arc<Scripted>, ready: bool) -> (Relay, watch::Sender<Readiness>) {
    relay_journaled(w, ready, None)
}

fn relay_journaled(
    w: Arc<Scripted>,
    ready: bool,
    journal: Option<std::path::PathBuf>,
) -> (Relay, watch::Sender<Readiness>) {
    let cfg = RelayConfig {
        conversation_queue: 2,
        max_active: 8,
        idle_timeout: Duration::from_secs(30),
        turn_timeout: Duration::from_secs(600),
        ready_wait: Duration::from_secs(60),
        retention: Duration::from_secs(600),
        count_turn_usage: true,
        journal,
    };
    let (tx, rx) = watch::channel(if ready {
        Readiness::ready("up")
    } else {
        Readiness::not_ready("starting")
    });
    (Relay::new(cfg, w, rx, SidecarMetrics::new()), tx)
}

fn turn(id: &str, conversation: &str) -> pb::Turn {
    pb::Turn {
        turn_id: id.into(),
        conversation: conversation.into(),
        text: "hi".into(),
        reply_target: b"t".to_vec(),
    }
}

async fn ended(state: &TurnState) -> pb::ReplyEnd {
    let mut v = state.subscribe();
    loop {
        if let (_, Some(end)) = state.read_from(0) {
            return end;
        }
        v.changed().await.unwrap();
    }
}

fn text(state: &TurnState) -> String {
    state.read_from(0).0.into_iter().map(|(_, d)| d).collect()
}

#[tokio::test(start_paused = true)]
async fn turns_of_one_conversation_run_one_at_a_time() {
    let w = Scripted::new(vec![
        Step::Reply(vec!["a", "b"], Duration::from_secs(1)),
        Step::Reply(vec!["c"], Duration::from_secs(1)),
    ]);
    let (r, _ready) = relay(w.clone(), true);
    let first = r.start(turn("t1", "dm")).unwrap();
    let second = r.start(turn("t2", "dm")).unwrap();
    assert_eq!(ended(&second).await.outcome(), pb::Outcome::Ok);
    assert_eq!(ended(&first).await.outcome(), pb::Outcome::Ok);
    assert_eq!(w.max_running.load(Ordering::SeqCst), 1);
    assert_eq!((text(&first), text(&second)), ("ab".into(), "c".into()));
}

#[tokio::test(start_paused = true)]
async fn different_conversations_run_side_by_side() {
    let w = Scripted::new(vec![
        Step::Reply(vec!["a"], Duration::from_secs(5)),
        Step::Reply(vec!["b"], Duration::from_secs(5)),
    ]);
    let (r, _ready) = relay(w.clone(), true);
    let a = r.start(turn("t1", "dm-a")).unwrap();
    let b = r.start(turn("t2", "dm-b")).unwrap();
    ended(&a).await;
    ended(&b).await;
    assert_eq!(w.max_running.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_conversation_queue_refuses_the_next_turn_with_a_reason() {
    let w = Scripted::new(vec![Step::Hang]);
    let (r, _ready) = relay(w, true);
    r.start(turn("t1", "dm")).unwrap();
    r.start(turn("t2", "dm")).unwrap();
    tokio::task::yield_now().await;
    r.start(turn("t3", "dm")).unwrap();
    let refused = r.start(turn("t4", "dm")).unwrap_err();
    assert_eq!(refused.outcome(), pb::Outcome::Rejected);
    assert!(refused.error.contains("waiting"), "{}", refused.error);
}

#[tokio::test(start_paused = true)]
async fn an_error_before_any_content_is_retried_once() {
    let w = Scripted::new(vec![
        Step::FailBeforeContent,
        Step::Reply(vec!["fine"], Duration::ZERO),
    ]);
    let (r, _ready) = relay(w.clone(), true);
    let t = r.start(turn("t1", "dm")).unwrap();
    let end = ended(&t).await;
    assert_eq!(end.outcome(), pb::Outcome::Ok);
    assert_eq!(text(&t), "fine");
    assert_eq!(w.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_second_failure_before_content_ends_the_turn_with_the_error() {
    let w = Scripted::new(vec![Step::FailBeforeContent, Step::FailBeforeContent]);
    let (r, _ready) = relay(w.clone(), true);
    let end = ended(&r.start(turn("t1", "dm")).unwrap()).await;
    assert_eq!(end.outcome(), pb::Outcome::Error);
    assert!(end.error.contains("overloaded"));
    assert_eq!(w.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_error_after_content_is_not_retried() {
    let w = Scripted::new(vec![
        Step::FailAfter("partial"),
        Step::Reply(vec!["again"], Duration::ZERO),
    ]);
    let (r, _ready) = relay(w.clone(), true);
    let t = r.start(turn("t1", "dm")).unwrap();
    let end = ended(&t).await;
    assert_eq!(end.outcome(), pb::Outcome::Error);
    assert_eq!(text(&t), "partial");
    assert_eq!(w.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn cancelling_drops_the_workload_request_and_ends_the_turn() {
    let w = Scripted::new(vec![Step::Hang]);
    let (r, _ready) = relay(w.clone(), true);
    let t = r.start(turn("t1", "dm")).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.cancel("t1", "test");
    assert_eq!(ended(&t).await.outcome(), pb::Outcome::Cancelled);
    tokio::task::yield_now().await;
    assert_eq!(
        w.dropped.load(Ordering::SeqCst),
        1,
        "the upstream request must be closed"
    );
    assert!(r.get("t1").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_silent_workload_hits_the_idle_timeout() {
    let w = Scripted::new(vec![Step::Hang]);
    let (r, _ready) = relay(w, true);
    let end = ended(&r.start(turn("t1", "dm")).unwrap()).await;
    assert_eq!(end.outcome(), pb::Outcome::Timeout);
    assert!(end.error.contains("sent nothing"), "{}", end.error);
}

#[tokio::test(start_paused = true)]
async fn turns_wait_for_readiness_instead_of_failing() {
    let w = Scripted::new(vec![Step::Reply(vec!["late"], Duration::ZERO)]);
    let (r, ready) = relay(w.clone(), false);
    let t = r.start(turn("t1", "dm")).unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(w.calls.load(Ordering::SeqCst), 0);
    ready.send(Readiness::ready("up")).unwrap();
    assert_eq!(ended(&t).await.outcome(), pb::Outcome::Ok);
}

#[tokio::test(start_paused = true)]
async fn a_workload_that_never_gets_ready_times_the_turn_out_with_its_reason() {
    let w = Scripted::new(vec![]);
    let (r, _ready) = relay(w.clone(), false);
    let end = ended(&r.start(turn("t1", "dm")).unwrap()).await;
    assert_eq!(end.outcome(), pb::Outcome::Timeout);
    assert!(end.error.contains("starting"), "{}", end.error);
    assert_eq!(w.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_repeated_turn_id_returns_the_turn_already_running() {
    let w = Scripted::new(vec![Step::Reply(vec!["x"], Duration::from_secs(1))]);
    let (r, _ready) = relay(w.clone(), true);
    let a = r.start(turn("t1", "dm")).unwrap();
    let b = r.start(turn("t1", "dm")).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    ended(&a).await;
    assert_eq!(w.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn replies_are_kept_until_acknowledged_and_listed_for_hello() {
    let w = Scripted::new(vec![Step::Reply(vec!["a", "b", "c"], Duration::ZERO)]);
    let (r, _ready) = relay(w, true);
    let t = r.start(turn("t1", "dm")).unwrap();
    ended(&t).await;
    let pending = r.pending();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].next_seq,
            pending[0].ended,
            pending[0].reply_target.as_slice()
        ),
        (3, true, &b"t"[..])
    );
    assert_eq!(
        t.read_from(1).0,
        vec![(1, "b".to_string()), (2, "c".to_string())]
    );
    r.ack("t1");
    assert!(r.pending().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_turn_in_flight_when_the_sidecar_died_ends_in_error_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Some(dir.path().join("turns.json"));
    let slow = Scripted::new(vec![
        Step::Reply(vec!["a", "b"], Duration::from_secs(3600)),
        Step::Reply(vec!["c"], Duration::ZERO),
    ]);
    let (before, _ready) = relay_journaled(slow, true, journal.clone());
    before.start(turn("t1", "dm")).unwrap();
    // An acknowledged turn is not carried over.
    ended(&before.start(turn("t2", "other")).unwrap()).await;
    before.ack("t2");
    drop(before); // the process dies: no end, no ack

    let (after, _ready) = relay_journaled(Scripted::new(vec![]), true, journal.clone());
    let pending = after.pending();
    assert_eq!(
        pending
            .iter()
            .map(|p| (
                p.turn_id.as_str(),
                p.next_seq,
                p.ended,
                p.reply_target.as_slice()
            ))
            .collect::<Vec<_>>(),
        [("t1", 0, true, &b"t"[..])]
    );
    let (chunks, end) = after.get("t1").unwrap().read_from(0);
    let end = end.unwrap();
    assert!(chunks.is_empty());
    assert_eq!(
        (Outcome::try_from(end.outcome).unwrap(), end.error.as_str()),
        (Outcome::Error, journal::RESTARTED)
    );
    // Once a controller has closed its message it is gone for good.
    after.ack("t1");
    drop(after);
    let (again, _ready) = relay_journaled(Scripted::new(vec![]), true, journal);
    assert!(again.pending().is_empty());
}

#[test]
fn oversized_or_malformed_turns_are_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (r, _ready) = relay(Scripted::new(vec![]), true);
        let mut big = turn("t1", "dm");
        big.text = "x".repeat(MAX_TURN_TEXT_BYTES + 1);
        assert_eq!(r.start(big).unwrap_err().outcome(), pb::Outcome::Rejected);
        assert_eq!(
            r.start(turn("", "dm")).unwrap_err().outcome(),
            pb::Outcome::Rejected
        );
        assert_eq!(
            r.start(turn("t2", "")).unwrap_err().outcome(),
            pb::Outcome::Rejected
        );
    });
}

/// Issue 17: one huge workload event (a 4 MiB SSE event) became one chunk
/// larger than the 1 MiB AgentLink frame limit, which failed to encode and
/// was resent forever. It is split into chunks that fit, text intact.
#[tokio::test(start_paused = true)]
async fn a_huge_delta_is_split_into_chunks_that_fit_a_frame() {
    // 4 MiB of two-byte characters: every cut must respect them.
    let big: &'static str = Box::leak("é".repeat(2 * 1024 * 1024).into_boxed_str());
    let w = Scripted::new(vec![Step::Reply(vec!["a", big], Duration::from_millis(1))]);
    let (r, _ready) = relay(w, true);
    let t = r.start(turn("t1", "dm")).unwrap();
    assert_eq!(ended(&t).await.outcome(), pb::Outcome::Ok);
    let (chunks, _) = t.read_from(0);
    assert!(
        chunks.len() > big.len() / MAX_CHUNK_BYTES,
        "{}",
        chunks.len()
    );
    assert!(chunks.iter().all(|(_, d)| d.len() <= MAX_CHUNK_BYTES));
    assert_eq!(text(&t), format!("a{big}"));
}

#[test]
fn deltas_are_cut_at_character_boundaries_and_always_progress() {
    assert_eq!(split_delta("abcde", 2), ["ab", "cd", "e"]);
    assert_eq!(split_delta("éé", 3), ["é", "é"]);
    // A limit smaller than one character still yields whole characters.
    assert_eq!(split_delta("€x", 1), ["€", "x"]);
}

//! One turn's way to its requester. The agent's stream is read by one loop
//! for all of its turns; if that loop waited for each requester, one that
//! stopped reading (a stuck Slack post, a paused CLI) would stall every
//! other turn of the same agent. So events queue per turn, bounded in
//! bytes, and a task of the turn's own waits for its requester.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::TurnEvent;

/// How far (in reply bytes) a requester may fall behind before its turn is
/// given up: the sidecar's whole held-reply cap is 64 MiB across turns.
pub const MAX_BEHIND_BYTES: usize = 4 * 1024 * 1024;

/// Why the forwarder stopped before the turn ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stuck {
    TooSlow,
    Gone,
}

impl Stuck {
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooSlow => "requester too slow",
            Self::Gone => "requester went away",
        }
    }
}

#[derive(Clone)]
pub struct Forward {
    queue: mpsc::UnboundedSender<TurnEvent>,
    behind: Arc<AtomicUsize>,
}

fn size(ev: &TurnEvent) -> usize {
    // A fixed floor per event, so empty chunks still count.
    64 + match ev {
        TurnEvent::Chunk { delta, .. } => delta.len(),
        TurnEvent::Progress(text) => text.len(),
        TurnEvent::End(end) => end.error.len(),
        TurnEvent::Accepted { turn_id } => turn_id.len(),
        TurnEvent::HandedOver => 0,
    }
}

impl Forward {
    /// Forward to `tx` from a task of its own (tracked by `tasks`). Each
    /// event waits at most `timeout` for room; `on_stuck` runs once if the
    /// requester is gone or that slow, `on_end` once the turn's end was
    /// delivered or given up (not after a hand-over: the next leader
    /// finishes that turn).
    pub fn spawn(
        tx: mpsc::Sender<TurnEvent>,
        timeout: Duration,
        tasks: &TaskTracker,
        on_stuck: impl FnOnce(Stuck) + Send + 'static,
        on_end: impl FnOnce() + Send + 'static,
    ) -> Self {
        let (queue, mut rx) = mpsc::unbounded_channel::<TurnEvent>();
        let behind = Arc::new(AtomicUsize::new(0));
        let counter = behind.clone();
        tasks.spawn(async move {
            let mut on_stuck = Some(on_stuck);
            let mut on_end = Some(on_end);
            while let Some(ev) = rx.recv().await {
                let n = size(&ev);
                let is_end = matches!(ev, TurnEvent::End(_));
                let last = is_end || matches!(ev, TurnEvent::HandedOver);
                let sent = tx.send_timeout(ev, timeout).await;
                counter.fetch_sub(n, Ordering::Relaxed);
                if let Err(e) = sent {
                    let why = match e {
                        mpsc::error::SendTimeoutError::Timeout(_) => Stuck::TooSlow,
                        mpsc::error::SendTimeoutError::Closed(_) => Stuck::Gone,
                    };
                    // An end that cannot be delivered ends the turn anyway.
                    if !last && let Some(f) = on_stuck.take() {
                        f(why);
                    }
                }
                if last {
                    if is_end && let Some(f) = on_end.take() {
                        f();
                    }
                    return;
                }
                if on_stuck.is_none() {
                    return;
                }
            }
        });
        Self { queue, behind }
    }

    /// Queue `ev` without waiting. `false` when the requester has fallen
    /// more than [`MAX_BEHIND_BYTES`] behind or its forwarder stopped: the
    /// caller gives the turn up.
    pub fn push(&self, ev: TurnEvent) -> bool {
        let n = size(&ev);
        if self.behind.fetch_add(n, Ordering::Relaxed) + n > MAX_BEHIND_BYTES {
            self.behind.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        self.queue.send(ev).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::TurnEnd;
    use clawswarm_proto::v1 as pb;
    use std::sync::Mutex;

    fn chunk(seq: u64, delta: &str) -> TurnEvent {
        TurnEvent::Chunk {
            seq,
            delta: delta.into(),
        }
    }

    #[tokio::test]
    async fn a_requester_that_does_not_read_never_blocks_the_pusher_and_is_cut_off_by_size() {
        let tasks = TaskTracker::new();
        // Room for one event; nobody reads.
        let (tx, _rx) = mpsc::channel(1);
        let stuck = Arc::new(Mutex::new(None));
        let s = stuck.clone();
        let fwd = Forward::spawn(
            tx,
            Duration::from_secs(3600),
            &tasks,
            move |why| *s.lock().unwrap() = Some(why),
            || {},
        );
        let piece = "x".repeat(64 * 1024);
        let mut pushed = 0;
        while fwd.push(chunk(pushed, &piece)) {
            pushed += 1;
            assert!(pushed < 1000, "bounded");
        }
        // Everything up to the cap was taken at once, without waiting.
        assert!(
            pushed >= (MAX_BEHIND_BYTES / piece.len()) as u64 - 2,
            "{pushed}"
        );
        assert_eq!(*stuck.lock().unwrap(), None, "not given up by time");
    }

    #[tokio::test]
    async fn events_arrive_in_order_and_the_end_runs_once() {
        let tasks = TaskTracker::new();
        let (tx, mut rx) = mpsc::channel(2);
        let ended = Arc::new(AtomicUsize::new(0));
        let e = ended.clone();
        let fwd = Forward::spawn(
            tx,
            Duration::from_secs(5),
            &tasks,
            |_| {},
            move || {
                e.fetch_add(1, Ordering::Relaxed);
            },
        );
        for i in 0..10 {
            assert!(fwd.push(chunk(i, "d")));
        }
        assert!(fwd.push(TurnEvent::End(TurnEnd::failed(
            pb::Outcome::Ok,
            String::new()
        ))));
        for i in 0..10 {
            match rx.recv().await {
                Some(TurnEvent::Chunk { seq, .. }) => assert_eq!(seq, i),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(rx.recv().await, Some(TurnEvent::End(_))));
        drop(fwd);
        tasks.close();
        tasks.wait().await;
        assert_eq!(ended.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_requester_stuck_past_the_timeout_gives_its_turn_up() {
        let tasks = TaskTracker::new();
        let (tx, _rx) = mpsc::channel(1);
        let stuck = Arc::new(Mutex::new(None));
        let s = stuck.clone();
        let fwd = Forward::spawn(
            tx,
            Duration::from_millis(20),
            &tasks,
            move |why| *s.lock().unwrap() = Some(why),
            || {},
        );
        fwd.push(chunk(0, "a"));
        fwd.push(chunk(1, "b"));
        tasks.close();
        tasks.wait().await;
        assert_eq!(*stuck.lock().unwrap(), Some(Stuck::TooSlow));
        assert!(!fwd.push(chunk(2, "c")), "its forwarder has stopped");
    }
}

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use clawswarm_proto::v1::Usage;
use tokio::sync::mpsc;

use super::*;
use crate::slack::split::{MAX_STREAM_MESSAGE, MAX_TEXT_MESSAGE, open_fence};

#[derive(Default)]
struct FakeApi {
    log: Mutex<Vec<(Instant, Action)>>,
    fail: Mutex<HashMap<&'static str, VecDeque<SlackApiError>>>,
    next: Mutex<u32>,
}

impl FakeApi {
    fn fail(&self, call: &'static str, times: usize) {
        let mut f = self.fail.lock().unwrap();
        for _ in 0..times {
            f.entry(call).or_default().push_back(SlackApiError::Api {
                method: call,
                code: "feature_not_enabled".into(),
            });
        }
    }

    fn actions(&self) -> Vec<Action> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, a)| a.clone())
            .collect()
    }

    fn times_of(&self, name: &str) -> Vec<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, a)| a.name() == name)
            .map(|(t, _)| *t)
            .collect()
    }

    /// What the thread shows: each message's final text, in order.
    fn messages(&self) -> Vec<String> {
        let mut order = Vec::new();
        let mut text: HashMap<String, String> = HashMap::new();
        let mut n = 0;
        for a in self.actions() {
            match a {
                Action::Start { text: t } | Action::Post { text: t } => {
                    n += 1;
                    let ts = format!("m{n}");
                    order.push(ts.clone());
                    text.insert(ts, t);
                }
                Action::Append { ts, text: t } | Action::Stop { ts, text: t } => {
                    text.entry(ts).or_default().push_str(&t)
                }
                Action::Update { ts, text: t } => {
                    // A message made elsewhere (by a controller that died).
                    if !order.contains(&ts) {
                        order.push(ts.clone());
                    }
                    text.insert(ts, t);
                }
                Action::Status(_) | Action::Seal { .. } => {}
            }
        }
        order.iter().map(|ts| text[ts].clone()).collect()
    }
}

#[async_trait]
impl ReplyApi for FakeApi {
    async fn perform(
        &self,
        _place: &ReplyPlace,
        action: &Action,
    ) -> Result<Option<String>, SlackApiError> {
        let at = Instant::now();
        // Calls take a little time, as real ones do.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(e) = self
            .fail
            .lock()
            .unwrap()
            .get_mut(action.name())
            .and_then(|q| q.pop_front())
        {
            return Err(e);
        }
        // Only calls Slack accepted change what the thread shows.
        self.log.lock().unwrap().push((at, action.clone()));
        Ok(match action {
            Action::Start { .. } | Action::Post { .. } => {
                let mut n = self.next.lock().unwrap();
                *n += 1;
                Some(format!("m{n}"))
            }
            _ => None,
        })
    }
}

struct Events(mpsc::Receiver<TurnEvent>);

#[async_trait]
impl TurnEvents for Events {
    async fn next_event(&mut self) -> Option<TurnEvent> {
        self.0.recv().await
    }
}

fn place() -> ReplyPlace {
    ReplyPlace {
        channel: "D1".into(),
        thread_ts: "1.000001".into(),
        user: "U1".into(),
        team: "T1".into(),
        is_dm: true,
    }
}

fn end(outcome: Outcome, error: &str) -> TurnEvent {
    TurnEvent::End(TurnEnd {
        outcome,
        error: error.into(),
        usage: Usage::default(),
        chunks: 0,
    })
}

/// Feed `deltas` (one every `gap`) then `last`, and write the reply.
async fn run(
    api: Arc<FakeApi>,
    cfg: ReplyConfig,
    deltas: Vec<String>,
    gap: Duration,
    last: Option<TurnEvent>,
) -> ReplyReport {
    run_from(api, cfg, Opening::Fresh, deltas, gap, last).await
}

/// [`run`], starting from `opening`.
async fn run_from(
    api: Arc<FakeApi>,
    cfg: ReplyConfig,
    opening: Opening,
    deltas: Vec<String>,
    gap: Duration,
    last: Option<TurnEvent>,
) -> ReplyReport {
    let (tx, rx) = mpsc::channel(8);
    let feeder = tokio::spawn(async move {
        for (seq, delta) in deltas.into_iter().enumerate() {
            tx.send(TurnEvent::Chunk {
                seq: seq as u64,
                delta,
            })
            .await
            .unwrap();
            tokio::time::sleep(gap).await;
        }
        if let Some(last) = last {
            tx.send(last).await.unwrap();
            // Keep the stream open so only the End event ends the turn.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
    let report = write_reply(api, place(), cfg, opening, &mut Events(rx)).await;
    feeder.abort();
    report
}

fn words(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("word{i} ")).collect()
}

#[tokio::test(start_paused = true)]
async fn native_stream_coalesces_deltas_and_keeps_every_character() {
    let api = Arc::new(FakeApi::default());
    let deltas = words(200);
    let expected: String = deltas.concat();
    let report = run(
        api.clone(),
        ReplyConfig::default(),
        deltas,
        Duration::from_millis(5),
        Some(end(Outcome::Ok, "")),
    )
    .await;
    assert_eq!(report.mode, "native");
    assert_eq!(api.messages(), vec![expected.clone()]);
    let actions = api.actions();
    assert_eq!(actions[0], Action::Status("is thinking…".into()));
    assert!(matches!(actions.last(), Some(Action::Stop { .. })));
    let appends = actions
        .iter()
        .filter(|a| matches!(a, Action::Append { .. }))
        .count();
    // ~1,500 characters in 256-character appends, not 200 tiny ones.
    assert!(appends <= expected.len() / 256 + 2, "{appends} appends");
}

#[tokio::test(start_paused = true)]
async fn slow_deltas_are_flushed_after_the_interval() {
    let api = Arc::new(FakeApi::default());
    let report = run(
        api.clone(),
        ReplyConfig::default(),
        vec!["Hi".into(), " there".into()],
        Duration::from_secs(3),
        Some(end(Outcome::Ok, "")),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Ok);
    let starts = api.times_of("start_stream");
    assert_eq!(starts.len(), 1);
    assert!(
        api.actions()
            .iter()
            .any(|a| matches!(a, Action::Append { text, .. } if text == " there")),
        "the second delta went out before the end"
    );
    assert_eq!(api.messages(), vec!["Hi there".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn falls_back_to_post_and_throttled_update_when_streaming_is_refused() {
    let api = Arc::new(FakeApi::default());
    api.fail("start_stream", 1);
    let deltas = words(300);
    let expected: String = deltas.concat();
    let cfg = ReplyConfig::default();
    let interval = cfg.update_interval;
    let report = run(
        api.clone(),
        cfg,
        deltas,
        Duration::from_millis(20),
        Some(end(Outcome::Ok, "")),
    )
    .await;
    assert_eq!(report.mode, "fallback");
    assert_eq!(api.messages().concat(), expected);
    let updates = api.times_of("update");
    assert!(updates.len() >= 2, "{updates:?}");
    for pair in updates.windows(2) {
        assert!(
            pair[1] - pair[0] >= interval,
            "updates {:?} apart",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn long_replies_split_into_several_streamed_messages_within_the_limit() {
    let api = Arc::new(FakeApi::default());
    let cfg = ReplyConfig {
        stream_max: 400,
        ..ReplyConfig::default()
    };
    let deltas = words(250);
    let expected: String = deltas.concat();
    run(
        api.clone(),
        cfg,
        deltas,
        Duration::from_millis(1),
        Some(end(Outcome::Ok, "")),
    )
    .await;
    let msgs = api.messages();
    assert!(msgs.len() >= 5, "{} messages", msgs.len());
    assert!(
        msgs.iter().all(|m| m.len() <= 400),
        "{:?}",
        msgs.iter().map(String::len).collect::<Vec<_>>()
    );
    assert!(
        msgs.iter().all(|m| m.ends_with(' ')),
        "cut at spaces, not inside words"
    );
    assert_eq!(msgs.concat(), expected);
}

#[tokio::test(start_paused = true)]
async fn a_code_fence_cut_across_messages_is_closed_and_reopened() {
    let api = Arc::new(FakeApi::default());
    let cfg = ReplyConfig {
        stream_max: 300,
        ..ReplyConfig::default()
    };
    let mut deltas = vec!["```python\n".to_owned()];
    deltas.extend((0..40).map(|i| format!("print({i})\n")));
    deltas.push("```\n".into());
    run(
        api.clone(),
        cfg,
        deltas,
        Duration::from_millis(1),
        Some(end(Outcome::Ok, "")),
    )
    .await;
    let msgs = api.messages();
    assert!(msgs.len() >= 2);
    for m in &msgs {
        assert_eq!(open_fence(m), None, "balanced fences in {m:?}");
    }
    assert!(msgs[1].starts_with("```python\n"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_turn_ends_the_streamed_reply_with_what_happened() {
    let api = Arc::new(FakeApi::default());
    let report = run(
        api.clone(),
        ReplyConfig::default(),
        vec!["partial answer".into()],
        Duration::from_millis(10),
        Some(end(Outcome::Error, "model returned 500")),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Error);
    let msgs = api.messages();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].starts_with("partial answer"));
    assert!(
        msgs[0].contains(
            ":warning: Something went wrong while your agent was answering (model returned 500)"
        ),
        "{msgs:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_turn_that_fails_before_any_text_posts_the_reason() {
    let api = Arc::new(FakeApi::default());
    run(
        api.clone(),
        ReplyConfig::default(),
        vec![],
        Duration::ZERO,
        Some(end(Outcome::Timeout, "agent did not connect")),
    )
    .await;
    assert_eq!(
        api.messages(),
        vec![
            ":warning: Your agent took too long to answer, so I stopped waiting. Please try again."
                .to_owned()
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_append_closes_the_stream_and_continues_in_a_new_message() {
    let api = Arc::new(FakeApi::default());
    api.fail("append_stream", 1);
    let deltas = words(100);
    let expected: String = deltas.concat();
    let report = run(
        api.clone(),
        ReplyConfig::default(),
        deltas,
        Duration::from_millis(20),
        Some(end(Outcome::Ok, "")),
    )
    .await;
    assert_eq!(report.failed_calls, 1);
    assert_eq!(api.messages().concat(), expected, "nothing lost");
    assert!(
        api.actions()
            .iter()
            .any(|a| matches!(a, Action::Post { .. }))
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_turn_is_closed_after_the_idle_timeout() {
    let api = Arc::new(FakeApi::default());
    let cfg = ReplyConfig {
        idle_timeout: Duration::from_secs(30),
        ..ReplyConfig::default()
    };
    let (_tx, rx) = mpsc::channel(1);
    let report = write_reply(api.clone(), place(), cfg, Opening::Fresh, &mut Events(rx)).await;
    assert_eq!(report.outcome, Outcome::Timeout);
    assert_eq!(api.messages().len(), 1);
    assert!(api.messages()[0].contains("took too long"));
}

#[tokio::test(start_paused = true)]
async fn slack_refusing_everything_ends_the_reply_instead_of_looping() {
    let api = Arc::new(FakeApi::default());
    api.fail("start_stream", 1);
    api.fail("post_message", 100);
    let report = run(
        api.clone(),
        ReplyConfig::default(),
        words(10),
        Duration::from_millis(10),
        Some(end(Outcome::Ok, "")),
    )
    .await;
    assert!(report.gave_up);
    assert!(api.actions().len() < 20);
}

#[tokio::test(start_paused = true)]
async fn waking_and_starting_show_as_thread_status_before_the_reply() {
    let api = Arc::new(FakeApi::default());
    let (tx, rx) = mpsc::channel(8);
    let feeder = tokio::spawn(async move {
        tx.send(TurnEvent::Progress("Waking agent local/u-u1…".into()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        tx.send(TurnEvent::Progress(
            "Agent local/u-u1 is starting; your message will be delivered when it is ready…".into(),
        ))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        tx.send(TurnEvent::Chunk {
            seq: 0,
            delta: "hi".into(),
        })
        .await
        .unwrap();
        tx.send(end(Outcome::Ok, "")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    write_reply(
        api.clone(),
        place(),
        ReplyConfig::default(),
        Opening::Fresh,
        &mut Events(rx),
    )
    .await;
    feeder.abort();
    let statuses: Vec<String> = api
        .actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Status(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        [
            "is thinking…",
            "is waking your agent…",
            "is starting your agent…"
        ]
    );
    assert_eq!(api.messages(), vec!["hi".to_owned()]);
}

/// Open the reply's message as the front door does before a turn, then
/// write the turn (`deltas`, then `last`) into it.
async fn run_opened(
    api: Arc<FakeApi>,
    cfg: ReplyConfig,
    deltas: Vec<String>,
    last: Option<TurnEvent>,
) -> (Opening, ReplyReport) {
    let opening = open_message(api.as_ref(), &place(), &cfg).await;
    let gap = Duration::from_millis(20);
    let report = run_from(api, cfg, opening.clone(), deltas, gap, last).await;
    (opening, report)
}

#[tokio::test(start_paused = true)]
async fn an_opened_stream_gets_the_whole_reply_and_no_second_message() {
    let api = Arc::new(FakeApi::default());
    let deltas = words(40);
    let expected: String = deltas.concat();
    let ok = Some(end(Outcome::Ok, ""));
    let (opening, report) = run_opened(api.clone(), ReplyConfig::default(), deltas, ok).await;
    assert_eq!(
        opening,
        Opening::Opened {
            ts: "m1".into(),
            native: true
        }
    );
    assert_eq!(report.outcome, Outcome::Ok);
    assert_eq!(report.mode, "native");
    assert_eq!(api.messages(), vec![expected]);
    assert_eq!(api.times_of("start_stream").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_native_streaming_an_opened_placeholder_is_replaced_by_the_reply() {
    let api = Arc::new(FakeApi::default());
    let cfg = ReplyConfig {
        native_streaming: false,
        ..ReplyConfig::default()
    };
    let deltas = words(40);
    let expected: String = deltas.concat();
    let ok = Some(end(Outcome::Ok, ""));
    run_opened(api.clone(), cfg, deltas, ok).await;
    assert_eq!(
        api.actions()[0],
        Action::Post {
            text: "_is thinking…_".into()
        },
        "the placeholder shows while the agent works"
    );
    assert_eq!(api.messages(), vec![expected]);
    assert_eq!(api.times_of("start_stream").len(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_opened_message_whose_agent_says_nothing_says_so() {
    let api = Arc::new(FakeApi::default());
    let ok = Some(end(Outcome::Ok, ""));
    run_opened(api.clone(), ReplyConfig::default(), vec![], ok).await;
    assert_eq!(api.messages(), vec![writer::EMPTY_REPLY.to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_turn_in_an_opened_message_ends_with_its_note_alone() {
    let api = Arc::new(FakeApi::default());
    let failed = Some(end(Outcome::Rejected, ""));
    run_opened(api.clone(), ReplyConfig::default(), vec![], failed).await;
    let messages = api.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].starts_with(":warning: Your agent is busy"),
        "{messages:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_reply_seals_the_dead_controllers_stream_then_rewrites_it_whole() {
    let api = Arc::new(FakeApi::default());
    // Replayed from the first chunk, longer than a plain message may be.
    let deltas = words(600);
    let expected: String = deltas.concat();
    assert!(expected.len() > MAX_TEXT_MESSAGE && expected.len() < MAX_STREAM_MESSAGE);
    let opening = Opening::Resumed { ts: "old".into() };
    let ok = Some(end(Outcome::Ok, ""));
    let report = run_from(
        api.clone(),
        ReplyConfig::default(),
        opening,
        deltas,
        Duration::from_millis(5),
        ok,
    )
    .await;
    assert_eq!(report.outcome, Outcome::Ok);
    let actions = api.actions();
    assert_eq!(actions[0], Action::Seal { ts: "old".into() }, "{actions:?}");
    assert!(
        actions
            .iter()
            .all(|a| matches!(a, Action::Seal { .. } | Action::Update { .. })),
        "only edits of the same message: {actions:?}"
    );
    assert_eq!(api.messages(), vec![expected]);
}

#[tokio::test(start_paused = true)]
async fn a_reply_handed_over_to_the_next_leader_stops_writing_at_once() {
    let api = Arc::new(FakeApi::default());
    let handed_over = Some(TurnEvent::HandedOver);
    let (_, report) = run_opened(api.clone(), ReplyConfig::default(), words(3), handed_over).await;
    assert!(report.handed_over);
    let actions = api.actions();
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Stop { .. } | Action::Post { .. })),
        "no note, no closing: the next leader finishes this message: {actions:?}"
    );
}

//! The front door's shared state and its two halves: the fast half the
//! transports call (dedupe, classify, queue — always within Slack's 3 s ack
//! window) and the slow half that does the work off the queue (turns,
//! commands) with a cap on how much runs at once.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use slack_morphism::prelude::*;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    Connector,
    api::SlackApi,
    commands::{self, Command, CommandsConfig},
    dedupe::Dedupe,
    policy::{GroupDirectory, Policy},
    reply::{
        Opening, ReplyApi, ReplyConfig, ReplyPlace, TurnEvents, failure_note, open_message,
        write_reply,
    },
    routing::{ActiveThreads, BotIdentity, Inbound, Skip, classify},
    target::{SlackTarget, TargetError, TargetSeal},
};
use crate::{
    mesh::{PendingReply, TurnEnd, TurnEvent, TurnSpec},
    router::Router,
};
use clawswarm_certs::AgentId;
use clawswarm_proto::v1::Outcome;

/// Work taken off the transports' hands.
#[derive(Debug)]
pub enum Work {
    Message(Inbound),
    Command {
        user: String,
        channel: String,
        response_url: String,
        command: Command,
    },
}

/// What became of an incoming event (the transport acks accordingly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    Queued,
    Duplicate,
    Skipped(String),
    /// The work queue is full; do not ack so Slack retries later.
    Busy,
}

pub struct SlackApp<C: Connector> {
    pub(crate) api: Arc<SlackApi<C>>,
    pub(crate) router: Router,
    pub(crate) bot: BotIdentity,
    pub(crate) policy: Policy,
    pub(crate) commands: CommandsConfig,
    pub(crate) reply: ReplyConfig,
    pub(crate) namespace: String,
    seal: TargetSeal,
    dedupe: Dedupe,
    threads: ActiveThreads,
    work: mpsc::Sender<Work>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl<C: Connector> SlackApp<C> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        api: Arc<SlackApi<C>>,
        router: Router,
        bot: BotIdentity,
        policy: Policy,
        commands: CommandsConfig,
        reply: ReplyConfig,
        seal: TargetSeal,
        queue: usize,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, mpsc::Receiver<Work>) {
        let (work, rx) = mpsc::channel(queue.max(1));
        let namespace = router.mesh().config().namespace.clone();
        let app = Self {
            api,
            router,
            bot,
            policy,
            commands,
            reply,
            namespace,
            seal,
            dedupe: Dedupe::default(),
            threads: ActiveThreads::new(10_000),
            work,
            tasks: TaskTracker::new(),
            shutdown,
        };
        (Arc::new(app), rx)
    }

    /// An Events API callback (from either transport). Never blocks.
    pub fn accept_event(
        &self,
        ev: &SlackPushEventCallback,
        retry: Option<(u32, &str)>,
    ) -> Accepted {
        let accepted = self.classify_event(ev, retry);
        let result = match &accepted {
            Accepted::Queued => "queued",
            Accepted::Duplicate => "duplicate",
            Accepted::Skipped(_) => "skipped",
            Accepted::Busy => "busy",
        };
        self.api.metrics().event("event", result);
        accepted
    }

    fn classify_event(&self, ev: &SlackPushEventCallback, retry: Option<(u32, &str)>) -> Accepted {
        let event_id = ev.event_id.0.as_str();
        if !self.dedupe.first_sighting(event_id) {
            info!(
                event_id,
                retry_num = retry.map(|r| r.0),
                retry_reason = retry.map(|r| r.1),
                "duplicate slack event ignored"
            );
            return Accepted::Duplicate;
        }
        match classify(ev, &self.bot, &self.threads) {
            Err(Skip::Unhandled(kind)) => {
                info!(event_id, event_type = %kind, "ignoring slack event type");
                Accepted::Skipped(kind)
            }
            Err(skip) => {
                debug!(event_id, reason = skip.label(), "slack event is not a turn");
                Accepted::Skipped(skip.label().to_owned())
            }
            Ok(inbound) => self.enqueue(Work::Message(inbound), Some(event_id)),
        }
    }

    fn enqueue(&self, work: Work, event_id: Option<&str>) -> Accepted {
        match self.work.try_send(work) {
            Ok(()) => Accepted::Queued,
            Err(_) => {
                warn!(
                    event_id,
                    "slack work queue full; leaving the event for slack to retry"
                );
                if let Some(id) = event_id {
                    self.dedupe.forget(id);
                }
                Accepted::Busy
            }
        }
    }

    /// A slash command: queue the work, return what to show at once.
    pub fn accept_command(&self, ev: &SlackCommandEvent) -> String {
        let user = ev.user_id.0.clone();
        let command = commands::parse(&ev.command.0, ev.text.as_deref().unwrap_or(""));
        info!(owner = %user, command = command.label(), "slack command");
        if let Some(text) = commands::answer_at_once(&command, self.policy.is_admin(&user)) {
            self.api.metrics().event("command", "answered");
            return text;
        }
        let ack = commands::acknowledgement(&command);
        let work = Work::Command {
            user,
            channel: ev.channel_id.0.clone(),
            response_url: ev.response_url.0.to_string(),
            command,
        };
        match self.enqueue(work, None) {
            Accepted::Busy => {
                self.api.metrics().event("command", "busy");
                "I'm overloaded right now; please try again in a minute.".to_owned()
            }
            _ => {
                self.api.metrics().event("command", "queued");
                ack
            }
        }
    }

    /// Interactive payloads: the front door posts no interactive elements,
    /// so these are logged and acknowledged.
    pub fn accept_interaction(&self, ev: &SlackInteractionEvent) {
        self.api.metrics().event("interaction", "ignored");
        let kind = serde_json::to_value(ev)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str().map(str::to_owned)));
        info!(
            interaction = kind.as_deref().unwrap_or("unknown"),
            "ignoring slack interaction"
        );
    }

    /// Take work off the queue until shutdown, at most `max_inflight` at once.
    pub async fn run_workers(self: Arc<Self>, mut rx: mpsc::Receiver<Work>, max_inflight: usize) {
        let slots = Arc::new(Semaphore::new(max_inflight.max(1)));
        loop {
            let work = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                w = rx.recv() => match w { Some(w) => w, None => break },
            };
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let app = self.clone();
            let span = match &work {
                Work::Message(m) => info_span!("slack_turn", owner = %m.user),
                Work::Command { user, command, .. } => {
                    info_span!("slack_command", owner = %user, command = command.label())
                }
            };
            self.tasks.spawn(
                async move {
                    match work {
                        Work::Message(m) => app.handle_message(m).await,
                        Work::Command {
                            user,
                            channel,
                            response_url,
                            command,
                        } => commands::execute(&app, &user, &channel, &response_url, command).await,
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
        self.tasks.close();
    }

    async fn handle_message(&self, m: Inbound) {
        let place = ReplyPlace {
            channel: m.channel.clone(),
            thread_ts: m.reply_thread().to_owned(),
            user: m.user.clone(),
            team: m.team.clone(),
            is_dm: m.is_dm,
        };
        let agent = match self.router.agent_for_owner(&m.user).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                info!(owner = %m.user, "message from someone without an agent");
                self.tell(&place, &commands::no_agent_text(self.policy.config().mode))
                    .await;
                return;
            }
            Err(e) => {
                warn!(owner = %m.user, error = %e, "agent lookup failed");
                self.tell(
                    &place,
                    ":warning: I could not look up your agent just now. Please try again.",
                )
                .await;
                return;
            }
        };
        // The message exists before the turn does, so its ts travels in the
        // sealed reply target and a controller that takes over after a
        // crash continues this same message.
        let api: Arc<dyn ReplyApi> = self.api.clone();
        let opening = open_message(api.as_ref(), &place, &self.reply).await;
        let target = SlackTarget {
            place: place.clone(),
            ts: opening.ts().map(str::to_owned),
        };
        let spec = TurnSpec {
            turn_id: None,
            conversation: m.conversation(),
            text: m.text,
            reply_target: self.seal.seal(&target),
        };
        match self.router.send_turn(&agent.id, spec).await {
            Ok(mut stream) => {
                let turn_id = stream.turn_id().to_owned();
                self.finish_reply(&agent.id, &turn_id, place, opening, &mut stream, "new")
                    .await;
            }
            Err(e) => {
                warn!(agent = %agent.id, error = %e, "turn not started");
                let end = TurnEnd::failed(Outcome::Error, e.to_string());
                self.end_unstarted(place, opening, end).await;
            }
        }
    }

    /// Write a turn's reply into Slack, then count and log how it went.
    async fn finish_reply(
        &self,
        agent: &AgentId,
        turn_id: &str,
        place: ReplyPlace,
        opening: Opening,
        events: &mut dyn TurnEvents,
        start: &'static str,
    ) {
        let api: Arc<dyn ReplyApi> = self.api.clone();
        let report = write_reply(api, place, self.reply.clone(), opening, events).await;
        if report.handed_over {
            return info!(agent = %agent, turn_id = %turn_id, "slack reply handed over to the next leader");
        }
        let outcome = crate::mesh::outcome_label(report.outcome);
        let replies = &self.api.metrics().replies;
        replies
            .get_or_create(&super::metrics::ReplyLabels {
                mode: report.mode,
                outcome,
            })
            .inc();
        info!(
            agent = %agent, turn_id = %turn_id, start, outcome = ?report.outcome, mode = report.mode,
            messages = report.messages, failed_calls = report.failed_calls, gave_up = report.gave_up, "slack reply finished"
        );
    }

    /// A turn that never started: say why, in its opened message if it has one.
    async fn end_unstarted(&self, place: ReplyPlace, opening: Opening, end: TurnEnd) {
        if opening == Opening::Fresh {
            if let Some(note) = failure_note(&end) {
                self.tell(&place, &note).await;
            }
            return;
        }
        let api: Arc<dyn ReplyApi> = self.api.clone();
        let mut ended = Ended(Some(TurnEvent::End(end)));
        write_reply(api, place, self.reply.clone(), opening, &mut ended).await;
    }

    /// Finish, in their own Slack messages, the replies a dead controller
    /// was writing: sidecars report those turns when they reconnect here.
    /// One taker at a time, like the notice courier.
    pub async fn resume_orphans(
        self: Arc<Self>,
        rx: Arc<tokio::sync::Mutex<mpsc::Receiver<PendingReply>>>,
    ) {
        let mut rx = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            rx = rx.lock_owned() => rx,
        };
        loop {
            let orphan = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                p = rx.recv() => match p { Some(p) => p, None => return },
            };
            self.adopt(orphan).await;
        }
    }

    async fn adopt(self: &Arc<Self>, orphan: PendingReply) {
        let PendingReply { agent, turn } = orphan;
        let target = match self.seal.open(&turn.reply_target) {
            Ok(t) => t,
            // Another requester's turn (a Gateway client resumes its own).
            Err(TargetError::NotSlack) => return,
            Err(e) => {
                self.api.metrics().event("resume", e.metric_label());
                return warn!(agent = %agent, turn_id = %turn.turn_id, error = %e, "orphaned turn not resumed: its reply target is refused");
            }
        };
        // Defence in depth: a sealed target from this agent names its owner.
        match self.router.runtime().get(&agent).await {
            Ok(Some(a)) if a.owner == target.place.user => {}
            Ok(_) => {
                self.api.metrics().event("resume", "wrong_owner");
                return warn!(agent = %agent, turn_id = %turn.turn_id, "orphaned turn not resumed: its reply target names someone other than the agent's owner");
            }
            Err(e) => {
                self.api.metrics().event("resume", "lookup_failed");
                return warn!(agent = %agent, turn_id = %turn.turn_id, error = %e, "orphaned turn not resumed: agent lookup failed");
            }
        }
        self.api.metrics().event("resume", "resumed");
        info!(agent = %agent, turn_id = %turn.turn_id, chunks_held = turn.next_seq, ended = turn.ended, ts = ?target.ts, "resuming a reply another controller was writing");
        let app = self.clone();
        let span = info_span!("slack_resume", owner = %target.place.user);
        self.tasks.spawn(
            async move {
                let opening = match target.ts {
                    Some(ts) => Opening::Resumed { ts },
                    None => Opening::Fresh,
                };
                // From the first chunk: the message is rewritten whole.
                match app.router.resume_turn(&agent, &turn.turn_id, 0).await {
                    Ok(mut stream) => {
                        app.finish_reply(&agent, &turn.turn_id, target.place, opening, &mut stream, "resumed")
                            .await;
                    }
                    Err(e) => {
                        warn!(agent = %agent, turn_id = %turn.turn_id, error = %e, "orphaned turn could not be resumed");
                        let end = TurnEnd::failed(Outcome::Error, e.to_string());
                        app.end_unstarted(target.place, opening, end).await;
                    }
                }
            }
            .instrument(span),
        );
    }

    /// A short message to the person: in the DM thread, or only to them in a channel.
    async fn tell(&self, place: &ReplyPlace, text: &str) {
        let r = if place.is_dm {
            self.api
                .post_message(&place.channel, Some(&place.thread_ts), text)
                .await
                .map(|_| ())
        } else {
            self.api
                .post_ephemeral(&place.channel, &place.user, Some(&place.thread_ts), text)
                .await
        };
        if let Err(e) = r {
            warn!(error = %e, "could not tell the person");
        }
    }

    /// Wait for in-flight work, at most `grace`.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

/// The events of a turn that ended before it began.
struct Ended(Option<TurnEvent>);

#[async_trait]
impl TurnEvents for Ended {
    async fn next_event(&mut self) -> Option<TurnEvent> {
        self.0.take()
    }
}

/// User groups come from Slack's usergroups.users.list.
#[async_trait]
impl<C: Connector> GroupDirectory for SlackApi<C> {
    async fn members(&self, group: &str) -> Result<Vec<String>, String> {
        self.usergroup_members(group)
            .await
            .map_err(|e| e.to_string())
    }
}

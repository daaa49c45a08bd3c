//! `clawswarm chat`'s conversation with an agent: one turn streamed to the
//! terminal, or an interactive session of many turns in one conversation,
//! saying what the agent is doing while it starts or wakes instead of
//! sitting silent.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use clawswarm_proto::v1::{
    self as pb, chat_event::Event, chat_request::Kind, gateway_client::GatewayClient,
};
use tokio::io::AsyncBufReadExt as _;
use tonic::transport::Channel;

use super::{CliError, MAX_TURN_TEXT_BYTES};

/// How often the agent's state is asked for while a turn waits for it.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Stream one turn: reply text to stdout as it is written, progress and the
/// end (outcome, tokens) to stderr.
pub async fn stream_turn(
    client: &mut GatewayClient<Channel>,
    agent: &str,
    kind: Kind,
) -> Result<(), CliError> {
    let mut stream = client
        .chat(pb::ChatRequest {
            agent: agent.to_owned(),
            kind: Some(kind),
        })
        .await?
        .into_inner();
    let started = Instant::now();
    let mut progress = Progress::new(agent);
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: one look at the agent tells at once
    // whether it must start or wake first (a ready one prints nothing).
    let mut waiting = true;
    let mut out = std::io::stdout();
    loop {
        let ev = tokio::select! {
            ev = stream.message() => ev?,
            _ = tick.tick(), if waiting => {
                // The agent's own state, not a guess: phase, link, readiness.
                if let Ok(a) = client
                    .get_agent(pb::GetAgentRequest { name: agent.to_owned() })
                    .await
                {
                    progress.show(waiting_for(&a.into_inner()), started.elapsed());
                }
                continue;
            }
        };
        let Some(ev) = ev else { break };
        match ev.event {
            Some(Event::Accepted(a)) => eprintln!("[turn {}]", a.turn_id),
            Some(Event::Progress(p)) => {
                progress.clear();
                eprintln!("[{}]", p.text);
            }
            Some(Event::Chunk(c)) => {
                if waiting {
                    waiting = false;
                    progress.clear();
                }
                let _ = out.write_all(c.delta.as_bytes());
                let _ = out.flush();
            }
            Some(Event::End(end)) => {
                progress.clear();
                let _ = writeln!(out);
                let u = end.usage.unwrap_or_default();
                eprintln!(
                    "[{:?}; tokens in {} out {} cache read {} write {}]",
                    end.outcome(),
                    u.input_tokens,
                    u.output_tokens,
                    u.cache_read_tokens,
                    u.cache_write_tokens
                );
                if end.outcome() != pb::Outcome::Ok {
                    return Err(CliError::TurnFailed(end.error));
                }
            }
            None => {}
        }
    }
    Ok(())
}

/// An interactive session: a prompt, each line of stdin one turn, every
/// turn in the same conversation so the agent sees one conversation.
/// Ends at end of input; fails if any turn failed.
pub async fn interactive(
    mut client: GatewayClient<Channel>,
    agent: &str,
    conversation: String,
) -> Result<(), CliError> {
    let prompt = std::io::stdin().is_terminal();
    eprintln!(
        "chatting with {agent} (conversation {conversation}); one message per line, Ctrl-D ends"
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let (mut turns, mut failed) = (0u32, 0u32);
    loop {
        if prompt {
            eprint!("you> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| CliError::Input(format!("reading stdin: {e}")))?
        else {
            break;
        };
        let text = line.trim_end_matches('\r');
        if text.trim().is_empty() {
            continue;
        }
        turns += 1;
        let result = if text.len() > MAX_TURN_TEXT_BYTES {
            Err(CliError::TooLong(format!("{} bytes", text.len())))
        } else {
            stream_turn(
                &mut client,
                agent,
                Kind::Start(pb::StartTurn {
                    conversation: conversation.clone(),
                    text: text.to_owned(),
                    turn_id: String::new(),
                }),
            )
            .await
        };
        if let Err(e) = result {
            // One failed turn does not end the conversation.
            failed += 1;
            eprintln!("error: {e}");
        }
    }
    if prompt {
        eprintln!();
    }
    match failed {
        0 => Ok(()),
        n => Err(CliError::TurnFailed(format!("{n} of {turns} turns failed"))),
    }
}

/// What the agent is doing, if it is not ready for a turn: `None` once it
/// is connected with its workload ready (the reply is then on its way).
fn waiting_for(a: &pb::Agent) -> Option<String> {
    if a.connected && a.workload_ready {
        return None;
    }
    let (state, why) = if a.connected {
        // Phase Ready means linked; the workload may still be booting.
        ("starting".to_owned(), "workload not ready yet")
    } else if a.mode() == pb::AgentMode::Suspended {
        ("waking".to_owned(), "not connected yet")
    } else {
        (a.phase.to_lowercase(), "not connected yet")
    };
    Some(match a.detail.trim() {
        "" => format!("{state} ({why})"),
        detail => format!("{state} ({why}: {detail})"),
    })
}

/// The "waiting for NAME: …" line on stderr: redrawn in place on a
/// terminal; elsewhere (a log, a test) printed once per change of state.
struct Progress {
    agent: String,
    terminal: bool,
    shown: Option<String>,
}

impl Progress {
    fn new(agent: &str) -> Self {
        Self {
            agent: agent.to_owned(),
            terminal: std::io::stderr().is_terminal(),
            shown: None,
        }
    }

    fn show(&mut self, state: Option<String>, waited: Duration) {
        let Some(state) = state else {
            return self.clear();
        };
        let line = format!("waiting for {}: {state} {}s…", self.agent, waited.as_secs());
        if self.terminal {
            eprint!("\r\x1b[K{line}");
            let _ = std::io::stderr().flush();
        } else if self.shown.as_deref() != Some(state.as_str()) {
            eprintln!("{line}");
        }
        self.shown = Some(state);
    }

    fn clear(&mut self) {
        if self.shown.take().is_some() && self.terminal {
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(connected: bool, ready: bool, mode: pb::AgentMode, detail: &str) -> pb::Agent {
        pb::Agent {
            name: "demo".into(),
            phase: if connected { "Ready" } else { "Starting" }.into(),
            connected,
            workload_ready: ready,
            mode: mode as i32,
            detail: detail.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_ready_agent_needs_no_progress_line() {
        assert_eq!(
            waiting_for(&agent(true, true, pb::AgentMode::Running, "")),
            None
        );
    }

    #[test]
    fn progress_says_what_the_agent_is_doing() {
        assert_eq!(
            waiting_for(&agent(false, false, pb::AgentMode::Suspended, "suspended")).unwrap(),
            "waking (not connected yet: suspended)"
        );
        assert_eq!(
            waiting_for(&agent(false, false, pb::AgentMode::Running, "")).unwrap(),
            "starting (not connected yet)"
        );
        assert_eq!(
            waiting_for(&agent(
                true,
                false,
                pb::AgentMode::Running,
                "gateway warming up"
            ))
            .unwrap(),
            "starting (workload not ready yet: gateway warming up)"
        );
    }
}

//! Client commands of the `clawswarm` binary: talk to a running
//! controller's Gateway with the admin credentials it wrote.

use std::{
    io::{IsTerminal, Read},
    path::PathBuf,
};

use clap::{Args, Subcommand};
use clawswarm_certs::{ChannelOptions, CredentialStore, Credentials, ServerIdentity};
use clawswarm_proto::v1::{self as pb, chat_request::Kind, gateway_client::GatewayClient};
use tonic::transport::Channel;

use crate::{
    admin::{AdminFiles, Endpoints},
    config::default_state_dir,
    mesh::turn::MAX_TURN_TEXT_BYTES,
};

mod session;

#[derive(Clone, Debug, Args)]
pub struct ClientArgs {
    /// The controller's state directory (for its address and admin credentials).
    #[arg(long, env = "CLAWSWARM_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// Gateway address; default: what the controller recorded in its state directory.
    #[arg(long, env = "CLAWSWARM_GATEWAY_URL", global = true)]
    pub gateway: Option<String>,
}

#[derive(Clone, Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Agent to talk to.
    pub agent: String,
    /// What to say. `-`, or nothing with stdin not a terminal, reads it
    /// from stdin (for messages too long for a command line). Omit with
    /// --resume.
    pub text: Option<String>,
    /// Conversation the turns belong to (the agent keeps one history per
    /// conversation). Default: `cli` for one message, a new one for each
    /// interactive session.
    #[arg(long)]
    pub conversation: Option<String>,
    /// Interactive session: each line of stdin is a turn, all in one
    /// conversation. The default when no message is given and stdin is a
    /// terminal; with stdin piped, `-i` reads the lines from it.
    #[arg(short, long, conflicts_with_all = ["text", "resume"])]
    pub interactive: bool,
    /// Resume this turn instead of starting one.
    #[arg(long)]
    pub resume: Option<String>,
    /// With --resume: first chunk wanted.
    #[arg(long, default_value_t = 0)]
    pub from_seq: u64,
}

#[derive(Clone, Debug, Args)]
pub struct NoticesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Agent whose notices to follow.
    pub agent: String,
}

#[derive(Clone, Debug, Subcommand)]
pub enum AgentsCommand {
    /// List agents.
    List,
    /// Create an agent for a person.
    Provision {
        name: String,
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "default")]
        template: String,
    },
    Suspend {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Delete an agent (its data too with --delete-data).
    Delete {
        name: String,
        #[arg(long)]
        delete_data: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Setup(String),
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("turn ended: {0}")]
    TurnFailed(String),
    #[error("{0}")]
    Input(String),
    #[error(
        "the message is {0}; the limit for a turn's text is {MAX_TURN_TEXT_BYTES} bytes \
         (docs/protocol.md): send a shorter one"
    )]
    TooLong(String),
}

/// The turn text `arg` names: itself, or stdin for `-` (and for no
/// argument when stdin is not a terminal, so `cmd | clawswarm chat NAME`
/// works). `None`: nothing to say.
fn turn_text(arg: Option<&str>) -> Result<Option<String>, CliError> {
    match arg {
        Some("-") => read_message(std::io::stdin().lock()).map(Some),
        Some(text) if text.len() > MAX_TURN_TEXT_BYTES => {
            Err(CliError::TooLong(format!("{} bytes", text.len())))
        }
        Some(text) => Ok(Some(text.to_owned())),
        None if !std::io::stdin().is_terminal() => read_message(std::io::stdin().lock()).map(Some),
        None => Ok(None),
    }
}

/// One message from `input`, without the newline that ends it, refused
/// above the protocol's limit before anything is sent (the read stops
/// just past the limit, so a huge input is not buffered).
fn read_message(input: impl Read) -> Result<String, CliError> {
    let mut buf = Vec::new();
    // Room for the limit plus a trailing "\r\n".
    let cap = MAX_TURN_TEXT_BYTES + 2;
    input
        .take(cap as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CliError::Input(format!("reading the message from stdin: {e}")))?;
    if buf.len() > cap {
        // Checked before decoding: the cut may split a character.
        return Err(CliError::TooLong(format!(
            "more than {MAX_TURN_TEXT_BYTES} bytes"
        )));
    }
    let mut text = String::from_utf8(buf)
        .map_err(|e| CliError::Input(format!("the message on stdin is not UTF-8 text: {e}")))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.len() > MAX_TURN_TEXT_BYTES {
        return Err(CliError::TooLong(format!("{} bytes", text.len())));
    }
    if text.trim().is_empty() {
        return Err(CliError::Input("stdin held no message".into()));
    }
    Ok(text)
}

async fn gateway(args: &ClientArgs) -> Result<GatewayClient<Channel>, CliError> {
    let state = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let files = AdminFiles::in_state_dir(&state);
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| {
            CliError::Setup(format!(
                "{}: {e} (is the controller running with this state dir?)",
                p.display()
            ))
        })
    };
    let creds = Credentials::from_pem(&read(&files.cert)?, &read(&files.key)?)
        .map_err(|e| CliError::Setup(e.to_string()))?;
    let bundle = read(&files.ca)?;
    let url = match &args.gateway {
        Some(u) => u.clone(),
        None => {
            let text = read(&Endpoints::path(&state))?;
            let ep: Endpoints = serde_json::from_str(&text)
                .map_err(|e| CliError::Setup(format!("controller.json: {e}")))?;
            format!("https://{}", ep.mesh)
        }
    };
    let host = url
        .trim_start_matches("https://")
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or("localhost")
        .trim_matches(['[', ']']);
    let tls = clawswarm_certs::client_config(
        Some(CredentialStore::new(creds)),
        &bundle,
        ServerIdentity::DnsName(host.to_owned()),
    )
    .map_err(|e| CliError::Setup(e.to_string()))?;
    let channel = clawswarm_certs::mtls_channel(&url, tls, &ChannelOptions::default())
        .await
        .map_err(|e| CliError::Setup(e.to_string()))?;
    Ok(GatewayClient::new(channel))
}

/// Conversation of a one-message `chat` without `--conversation`.
const ONE_SHOT_CONVERSATION: &str = "cli";

/// One turn (or a resumed one) streamed to stdout, or an interactive
/// session; progress goes to stderr.
pub async fn chat(args: ChatArgs) -> Result<(), CliError> {
    let session = args.interactive
        || (args.resume.is_none() && args.text.is_none() && std::io::stdin().is_terminal());
    if session {
        let conversation = args
            .conversation
            .clone()
            .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::now_v7()));
        let client = gateway(&args.client).await?;
        return session::interactive(client, &args.agent, conversation).await;
    }
    let kind = match &args.resume {
        Some(turn_id) => Kind::Resume(pb::ResumeTurn {
            turn_id: turn_id.clone(),
            from_seq: args.from_seq,
        }),
        None => match turn_text(args.text.as_deref())? {
            Some(text) => Kind::Start(pb::StartTurn {
                conversation: args
                    .conversation
                    .clone()
                    .unwrap_or_else(|| ONE_SHOT_CONVERSATION.to_owned()),
                text,
                turn_id: String::new(),
            }),
            None => {
                return Err(CliError::Setup(
                    "say something: clawswarm chat NAME \"TEXT\" (or - to read it from stdin)"
                        .into(),
                ));
            }
        },
    };
    let mut client = gateway(&args.client).await?;
    session::stream_turn(&mut client, &args.agent, kind).await
}

/// Each of the agent's notices on stdout as it arrives (those that came
/// while nobody followed first), separated by blank lines, until the
/// controller ends the stream or the command is interrupted.
pub async fn notices(args: NoticesArgs) -> Result<(), CliError> {
    let mut client = gateway(&args.client).await?;
    let mut stream = client
        .watch_notices(pb::WatchNoticesRequest {
            agent: args.agent.clone(),
        })
        .await?
        .into_inner();
    eprintln!("following {}'s notices (Ctrl-C to stop)", args.agent);
    while let Some(n) = stream.message().await? {
        let text = n.text.trim_end();
        println!("{text}\n");
    }
    Err(CliError::Setup(
        "the controller ended the notice stream (it is stopping)".into(),
    ))
}

pub async fn agents(client_args: ClientArgs, cmd: AgentsCommand) -> Result<(), CliError> {
    let mut client = gateway(&client_args).await?;
    let agents = match cmd {
        AgentsCommand::List => {
            client
                .list_agents(pb::ListAgentsRequest {})
                .await?
                .into_inner()
                .agents
        }
        AgentsCommand::Provision {
            name,
            owner,
            template,
        } => vec![
            client
                .provision_agent(pb::ProvisionAgentRequest {
                    name,
                    owner,
                    template,
                })
                .await?
                .into_inner(),
        ],
        AgentsCommand::Suspend { name } => vec![
            client
                .suspend_agent(pb::SuspendAgentRequest { name })
                .await?
                .into_inner(),
        ],
        AgentsCommand::Resume { name } => vec![
            client
                .resume_agent(pb::ResumeAgentRequest { name })
                .await?
                .into_inner(),
        ],
        AgentsCommand::Delete { name, delete_data } => {
            client
                .deprovision_agent(pb::DeprovisionAgentRequest {
                    name: name.clone(),
                    delete_data,
                })
                .await?;
            println!("deleted {name}");
            return Ok(());
        }
    };
    print!("{}", agents_table(&agents));
    Ok(())
}

/// One line per agent, columns aligned: what it is doing, what it used,
/// what serves it and the last word on its state.
fn agents_table(agents: &[pb::Agent]) -> String {
    let header = [
        "NAME",
        "OWNER",
        "STATE",
        "TOKENS IN/OUT/CACHE",
        "WORKLOAD",
        "DETAIL",
    ];
    let rows: Vec<[String; 6]> = agents
        .iter()
        .map(|a| {
            let u = a.usage.unwrap_or_default();
            [
                a.name.clone(),
                a.owner.clone(),
                agent_state(a),
                format!(
                    "{}/{}/{}",
                    u.input_tokens,
                    u.output_tokens,
                    u.cache_read_tokens + u.cache_write_tokens
                ),
                if a.workload.is_empty() {
                    "-".to_owned()
                } else {
                    a.workload.clone()
                },
                a.detail.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

/// One word or two for what an agent is doing, from its mode, phase and link.
fn agent_state(a: &pb::Agent) -> String {
    match (a.mode(), a.connected, a.workload_ready) {
        (_, true, true) => "ready".into(),
        (_, true, false) => "starting (workload)".into(),
        (pb::AgentMode::Suspended, false, _) => "suspended".into(),
        (_, false, _) => a.phase.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_table_aligns_state_usage_and_workload() {
        let demo = pb::Agent {
            name: "demo".into(),
            owner: "U123".into(),
            phase: "Ready".into(),
            connected: true,
            workload_ready: true,
            detail: "workload ready".into(),
            workload: "openclaw".into(),
            usage: Some(pb::Usage {
                input_tokens: 1200,
                output_tokens: 80,
                cache_read_tokens: 7,
                cache_write_tokens: 3,
            }),
            ..Default::default()
        };
        let alice = pb::Agent {
            name: "alice-long-name".into(),
            owner: "U9".into(),
            phase: "Suspended".into(),
            mode: pb::AgentMode::Suspended as i32,
            detail: "suspended".into(),
            ..Default::default()
        };
        let table = agents_table(&[demo, alice]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[1].contains("ready") && lines[1].contains("1200/80/10"),
            "{table}"
        );
        assert!(lines[1].contains("openclaw"), "{table}");
        assert!(
            lines[2].contains("suspended") && lines[2].contains(" - "),
            "{table}"
        );
        // Every column starts at the same offset on every line.
        for col in ["OWNER", "STATE", "TOKENS", "WORKLOAD", "DETAIL"] {
            let at = lines[0].find(col).unwrap();
            for l in &lines[1..] {
                assert_eq!(&l[at - 2..at], "  ", "{col} misaligned:\n{table}");
                assert_ne!(l.as_bytes()[at], b' ', "{col} misaligned:\n{table}");
            }
        }
    }

    #[test]
    fn a_message_read_from_stdin_loses_its_final_newline_only() {
        assert_eq!(read_message(&b"two\nlines\r\n"[..]).unwrap(), "two\nlines");
        assert_eq!(read_message(&b"no newline"[..]).unwrap(), "no newline");
    }

    #[test]
    fn a_message_over_the_protocol_limit_is_refused_naming_the_limit() {
        let at_limit = vec![b'x'; MAX_TURN_TEXT_BYTES];
        assert_eq!(
            read_message(&at_limit[..]).unwrap().len(),
            MAX_TURN_TEXT_BYTES
        );
        let mut with_newline = at_limit.clone();
        with_newline.push(b'\n');
        assert!(read_message(&with_newline[..]).is_ok());

        let over = vec![b'x'; MAX_TURN_TEXT_BYTES + 1];
        let e = read_message(&over[..]).unwrap_err().to_string();
        assert!(
            e.contains("262145 bytes") && e.contains("limit for a turn's text is 262144"),
            "{e}"
        );
        let huge = vec![b'x'; 10 * MAX_TURN_TEXT_BYTES];
        let e = read_message(&huge[..]).unwrap_err().to_string();
        assert!(e.contains("more than 262144 bytes"), "{e}");
    }

    #[test]
    fn empty_or_binary_stdin_is_refused() {
        assert!(matches!(read_message(&b"\n"[..]), Err(CliError::Input(_))));
        assert!(matches!(
            read_message(&[0xff, 0xfe][..]),
            Err(CliError::Input(_))
        ));
    }
}

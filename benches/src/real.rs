//! Figures 1 and 4, on the real stack: controller → real sidecar → stub
//! model, all release binaries started as processes by the controller's
//! local runtime.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clawswarm_certs::{
    AgentId, ChannelOptions, CredentialStore, Credentials, ServerIdentity, SpiffeId, TrustDomain,
};
use clawswarm_proto::v1::{
    self as pb, ChatRequest, DebugChatRequest, chat_event::Event, chat_request::Kind,
    gateway_client::GatewayClient, sidecar_debug_client::SidecarDebugClient,
};
use clawswarm_sidecar::workload::{
    TurnRequest, Workload, WorkloadEvent,
    responses::{HistoryConfig, ReadyProbe, ResponsesConfig, ResponsesWorkload, SessionBinding},
};
use futures::StreamExt;
use tonic::transport::Channel;

use crate::{
    report::{Row, ms, percentile},
    stack::{self, Binaries, Controller, ControllerSpec},
};

pub const AGENT: &str = "bench";

pub struct RealStack {
    pub controller: Controller,
    pub sidecar_pid: i32,
    pub workload_port: u16,
    /// The sidecar's own debug endpoint (SidecarDebug.Chat), bypassing the
    /// controller.
    pub sidecar_debug: String,
}

impl RealStack {
    pub async fn start(bins: &Binaries, work: &Path) -> anyhow::Result<Self> {
        let spec = ControllerSpec {
            state_dir: work.join("real"),
            mesh_addr: "127.0.0.1:0".into(),
            identity_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            agents: vec![format!("{AGENT}=bench-owner")],
            processes: true,
            log_level: "info".into(),
        };
        let controller = Controller::start(bins, spec).await?;
        controller
            .wait_ready(&[AGENT.to_owned()], Duration::from_secs(60))
            .await?;
        let state = &controller.spec.state_dir;
        let sidecar_pid = stack::sidecar_pid(state, AGENT)?;
        let workload_port = stack::workload_port(state, AGENT)?;
        let ports = state
            .join("agents")
            .join(AGENT)
            .join("run")
            .join("ports.json");
        let ports: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&ports)
                .with_context(|| format!("reading {}", ports.display()))?,
        )?;
        let sidecar_debug = ports["debug"]
            .as_str()
            .context("ports.json has no debug address")?
            .to_owned();
        Ok(Self {
            controller,
            sidecar_pid,
            workload_port,
            sidecar_debug,
        })
    }
}

#[derive(Default)]
struct Timing {
    first: Vec<Duration>,
    whole: Vec<Duration>,
}

async fn direct_turn(
    w: &ResponsesWorkload,
    text: &str,
    chunks: u32,
) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let mut s = w.start_turn(TurnRequest {
        turn_id: "direct".into(),
        conversation: "bench-direct".into(),
        text: text.into(),
    });
    let mut first = None;
    let mut got = 0;
    while let Some(ev) = s.next().await {
        match ev.map_err(|e| anyhow::anyhow!("direct call failed: {e}"))? {
            WorkloadEvent::Delta(_) => {
                got += 1;
                first.get_or_insert_with(|| start.elapsed());
            }
            WorkloadEvent::Done(_) => {
                if got != chunks {
                    bail!("direct call gave {got} chunks, wanted {chunks}");
                }
                return Ok((first.unwrap_or_default(), start.elapsed()));
            }
        }
    }
    bail!("direct call ended without Done")
}

async fn mesh_turn(
    gw: &mut GatewayClient<Channel>,
    text: &str,
    chunks: u32,
) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let mut s = gw
        .chat(ChatRequest {
            agent: AGENT.into(),
            kind: Some(Kind::Start(pb::StartTurn {
                conversation: "bench-mesh".into(),
                text: text.into(),
                turn_id: String::new(),
            })),
        })
        .await?
        .into_inner();
    let mut first = None;
    let mut got = 0;
    while let Some(ev) = s.message().await? {
        match ev.event {
            Some(Event::Chunk(_)) => {
                got += 1;
                first.get_or_insert_with(|| start.elapsed());
            }
            Some(Event::End(end)) => {
                if end.outcome != pb::Outcome::Ok as i32 || got != chunks {
                    bail!(
                        "mesh turn ended {:?} after {got} chunks: {}",
                        end.outcome(),
                        end.error
                    );
                }
                return Ok((first.unwrap_or_default(), start.elapsed()));
            }
            _ => {}
        }
    }
    bail!("mesh turn ended without End")
}

/// A SidecarDebug client (admin certificate), for the sidecar-only leg.
async fn sidecar_client(stack: &RealStack) -> anyhow::Result<SidecarDebugClient<Channel>> {
    let dir = stack.controller.spec.state_dir.join("admin");
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f)).with_context(|| format!("reading admin/{f}"))
    };
    let creds = Credentials::from_pem(&read("admin.pem")?, &read("admin-key.pem")?)?;
    let td = TrustDomain::new(stack::TRUST_DOMAIN)?;
    let server =
        ServerIdentity::Spiffe(SpiffeId::agent(td, AgentId::new(stack::NAMESPACE, AGENT)?));
    let tls = clawswarm_certs::client_config(
        Some(CredentialStore::new(creds)),
        &read("ca.pem")?,
        server,
    )?;
    let url = format!("https://{}", stack.sidecar_debug);
    let channel = clawswarm_certs::mtls_channel(&url, tls, &ChannelOptions::default()).await?;
    Ok(SidecarDebugClient::new(channel))
}

async fn sidecar_turn(
    c: &mut SidecarDebugClient<Channel>,
    text: &str,
    chunks: u32,
) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let mut s = c
        .chat(DebugChatRequest {
            conversation: "bench-sidecar".into(),
            text: text.into(),
        })
        .await?
        .into_inner();
    let mut first = None;
    let mut got = 0;
    while let Some(ev) = s.message().await? {
        match ev.event {
            Some(Event::Chunk(_)) => {
                got += 1;
                first.get_or_insert_with(|| start.elapsed());
            }
            Some(Event::End(end)) => {
                if end.outcome != pb::Outcome::Ok as i32 || got != chunks {
                    bail!(
                        "sidecar turn ended {:?} after {got} chunks: {}",
                        end.outcome(),
                        end.error
                    );
                }
                return Ok((first.unwrap_or_default(), start.elapsed()));
            }
            _ => {}
        }
    }
    bail!("sidecar turn ended without End")
}

/// Figure 1: the same stub, called directly with the sidecar's own
/// /v1/responses client and through Gateway → controller → sidecar;
/// alternating turn by turn so both see the same noise.
pub async fn overhead(
    stack: &RealStack,
    turns: usize,
    chunks: u32,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let workload = ResponsesWorkload::new(ResponsesConfig {
        base_url: format!("http://127.0.0.1:{}", stack.workload_port),
        bearer_token: None,
        model: "stub".into(),
        session: SessionBinding::UserField,
        ready: ReadyProbe::Off,
        history: HistoryConfig::off(),
        idle_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut gw = stack.controller.gateway().await?;
    let mut sc = sidecar_client(stack).await?;
    let text = format!("bench [chunks={chunks}]");
    let warmup = (turns / 20).clamp(50, 500);
    for _ in 0..warmup {
        direct_turn(&workload, &text, chunks).await?;
        sidecar_turn(&mut sc, &text, chunks).await?;
        mesh_turn(&mut gw, &text, chunks).await?;
    }
    let (mut direct, mut side, mut mesh) =
        (Timing::default(), Timing::default(), Timing::default());
    let started = Instant::now();
    for i in 0..turns {
        // Rotate the order so no leg always runs first.
        for leg in 0..3 {
            let (t, r) = match (i + leg) % 3 {
                0 => (&mut direct, direct_turn(&workload, &text, chunks).await?),
                1 => (&mut side, sidecar_turn(&mut sc, &text, chunks).await?),
                _ => (&mut mesh, mesh_turn(&mut gw, &text, chunks).await?),
            };
            t.first.push(r.0);
            t.whole.push(r.1);
        }
    }
    eprintln!(
        "overhead: {turns} turn triples in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for t in [&mut direct, &mut side, &mut mesh] {
        t.first.sort();
        t.whole.sort();
    }
    let fig = "1 mesh overhead";
    for (what, d, s) in [
        ("first chunk", &direct.first, &side.first),
        ("whole turn", &direct.whole, &side.whole),
    ] {
        for p in [50.0, 99.0] {
            let (dp, sp) = (ms(percentile(d, p)), ms(percentile(s, p)));
            rows.push(
                Row::new(fig, &format!("{what} p{p:.0} via sidecar only"), sp, "ms")
                    .baseline(dp)
                    .note(format!(
                        "SidecarDebug.Chat, no controller: adds {:.3} ms",
                        sp - dp
                    )),
            );
        }
    }
    for (what, d, m) in [
        ("first chunk", &direct.first, &mesh.first),
        ("whole turn", &direct.whole, &mesh.whole),
    ] {
        for (p, target) in [(50.0, 0.3), (99.0, 1.0)] {
            let (dp, mp) = (ms(percentile(d, p)), ms(percentile(m, p)));
            rows.push(
                Row::new(fig, &format!("{what} p{p:.0} via mesh"), mp, "ms")
                    .baseline(dp)
                    .note(format!("ratio {:.2}x direct", mp / dp.max(1e-9))),
            );
            rows.push(
                Row::new(fig, &format!("{what} p{p:.0} added"), mp - dp, "ms")
                    .at_most(target)
                    .note(format!("{turns} turns, {chunks} chunks each")),
            );
        }
    }
    Ok(())
}

/// Figure 4: the real sidecar's RSS and CPU, idle and while streaming.
pub async fn footprint(
    stack: &RealStack,
    idle: Duration,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let pid = stack.sidecar_pid;
    let fig = "4 sidecar footprint";
    let cpu0 = stack::cpu_seconds(pid)?;
    tokio::time::sleep(idle).await;
    let cpu_idle = (stack::cpu_seconds(pid)? - cpu0) / idle.as_secs_f64();
    let rss_idle = stack::rss_bytes(pid)?;
    rows.push(Row::new(fig, "RSS idle", stack::mib(rss_idle), "MiB").at_most(15.0));
    rows.push(
        Row::new(fig, "CPU idle", cpu_idle * 100.0, "% of a core")
            .at_most(0.5)
            .note(format!("over {} s", idle.as_secs())),
    );

    // A streaming turn: 400 chunks, 5 ms apart (about 2 s of streaming).
    let mut gw = stack.controller.gateway().await?;
    let cpu0 = stack::cpu_seconds(pid)?;
    let started = Instant::now();
    let turn =
        tokio::spawn(
            async move { mesh_turn(&mut gw, "stream [chunks=400] [delay_ms=5]", 400).await },
        );
    let mut peak = 0;
    while !turn.is_finished() {
        peak = peak.max(stack::rss_bytes(pid)?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    turn.await.context("streaming turn task")??;
    let busy = started.elapsed();
    let cpu_busy = (stack::cpu_seconds(pid)? - cpu0) / busy.as_secs_f64();
    rows.push(Row::new(fig, "RSS peak while streaming", stack::mib(peak), "MiB").at_most(15.0));
    rows.push(
        Row::new(fig, "CPU while streaming", cpu_busy * 100.0, "% of a core")
            .note(format!("400 chunks over {:.1} s", busy.as_secs_f64())),
    );
    Ok(())
}

/// RSS after the overhead run (steady state after thousands of turns).
pub fn rss_after_load(stack: &RealStack, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let rss = stack::rss_bytes(stack.sidecar_pid)?;
    rows.push(
        Row::new(
            "4 sidecar footprint",
            "RSS after figure 1 load",
            stack::mib(rss),
            "MiB",
        )
        .at_most(15.0),
    );
    Ok(())
}

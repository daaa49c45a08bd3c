//! Figures 2 and 5: one controller (agents as records only) and N simulated
//! sidecars in this process, each with its own certificate and mTLS stream.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use clawswarm_proto::v1::{
    self as pb, ChatRequest, chat_event::Event, chat_request::Kind, gateway_client::GatewayClient,
};
use rand::Rng;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::Channel;

use crate::{
    report::Row,
    sim::{SimSidecar, SimStats},
    stack::{self, Binaries, Controller, ControllerSpec},
};

pub fn agent_name(i: usize) -> String {
    format!("s{i}")
}

pub struct Swarm {
    pub controller: Controller,
    pub n: usize,
    pub stats: Arc<SimStats>,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Controller RSS with its N records loaded and no stream open.
    pub rss_before: u64,
    pub connect_time: Duration,
}

impl Swarm {
    pub async fn start(bins: &Binaries, work: &Path, n: usize) -> anyhow::Result<Self> {
        let spec = ControllerSpec {
            state_dir: work.join(format!("swarm-{n}")),
            mesh_addr: stack::free_addr()?,
            identity_addr: stack::free_addr()?,
            http_addr: stack::free_addr()?,
            // One agent per owner; short names keep the env var under 128 KiB.
            agents: (0..n).map(|i| format!("{}={i}", agent_name(i))).collect(),
            processes: false,
            log_level: "info".into(),
        };
        let controller = Controller::start(bins, spec).await?;
        let authority = controller.authority()?;
        let issued = Instant::now();
        let mut tls = Vec::with_capacity(n);
        for i in 0..n {
            tls.push(stack::agent_tls(&authority, &agent_name(i))?);
        }
        eprintln!(
            "swarm {n}: certificates issued in {:.1} s",
            issued.elapsed().as_secs_f64()
        );
        // Let the controller settle after provisioning before sampling.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_before = stack::rss_bytes(controller.pid())?;
        let stats = Arc::new(SimStats::default());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let url = controller.mesh_url();
        let started = Instant::now();
        for (i, tls) in tls.into_iter().enumerate() {
            let sim = SimSidecar {
                name: agent_name(i),
                url: url.clone(),
                tls,
                stats: stats.clone(),
            };
            tasks.spawn(sim.run(stop.child_token()));
        }
        let mut swarm = Self {
            controller,
            n,
            stats,
            stop,
            tasks,
            rss_before,
            connect_time: Duration::ZERO,
        };
        swarm.wait_connected(0, Duration::from_secs(300)).await?;
        swarm.connect_time = started.elapsed();
        Ok(swarm)
    }

    /// Wait until all N hold a stream and at least `welcomes_after` + N
    /// welcomes were seen.
    pub async fn wait_connected(
        &self,
        welcomes_after: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.stats.connected.load(Ordering::Relaxed);
            let w = self.stats.welcomes.load(Ordering::Relaxed);
            if c >= self.n && w >= welcomes_after + self.n as u64 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {c}/{} sidecars connected after {timeout:?}", self.n);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.tasks.wait()).await;
        self.controller.stop().await;
    }
}

/// One turn through the Gateway; the number of chunks it delivered.
async fn chat(gw: &mut GatewayClient<Channel>, agent: String, text: &str) -> anyhow::Result<u64> {
    let mut s = gw
        .chat(ChatRequest {
            agent,
            kind: Some(Kind::Start(pb::StartTurn {
                conversation: "bench".into(),
                text: text.into(),
                turn_id: String::new(),
            })),
        })
        .await?
        .into_inner();
    let mut chunks = 0;
    while let Some(ev) = s.message().await? {
        match ev.event {
            Some(Event::Chunk(_)) => chunks += 1,
            Some(Event::End(e)) if e.outcome == pb::Outcome::Ok as i32 => return Ok(chunks),
            Some(Event::End(e)) => bail!("turn ended {:?}: {}", e.outcome(), e.error),
            _ => {}
        }
    }
    bail!("turn ended without End")
}

pub struct LoadArgs {
    pub clients: usize,
    pub channels: usize,
    pub chunks: u32,
    pub warmup: Duration,
    pub duration: Duration,
}

/// Figure 2 for one N.
pub async fn scale(
    bins: &Binaries,
    work: &Path,
    n: usize,
    load: &LoadArgs,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let swarm = Swarm::start(bins, work, n).await?;
    let pid = swarm.controller.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = stack::rss_bytes(pid)?;
    let fig = format!("2 scale N={n}");
    rows.push(
        Row::new(
            &fig,
            "time for all to connect",
            swarm.connect_time.as_secs_f64(),
            "s",
        )
        .note(format!(
            "all started at once; {} failed attempts retried with backoff",
            swarm.stats.connect_failures.load(Ordering::Relaxed)
        )),
    );
    rows.push(
        Row::new(
            &fig,
            "controller RSS connected",
            stack::mib(rss_after),
            "MiB",
        )
        .baseline(stack::mib(swarm.rss_before))
        .at_most(if n >= 10_000 {
            300.0
        } else {
            300.0 * n as f64 / 10_000.0
        })
        .note("baseline: same controller, records loaded, no streams; target scaled to N"),
    );
    rows.push(
        Row::new(
            &fig,
            "controller RSS per connected agent",
            rss_after.saturating_sub(swarm.rss_before) as f64 / n as f64 / 1024.0,
            "KiB",
        )
        .at_most(30.0)
        .note("(RSS connected - RSS before) / N; 30 KiB = 300 MB / 10k"),
    );

    // Routing throughput: many Gateway clients, tiny replies.
    let turns = Arc::new(AtomicU64::new(0));
    let chunks = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut gws = Vec::new();
    for _ in 0..load.channels.max(1) {
        gws.push(swarm.controller.gateway().await?);
    }
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let text = format!("bench c={}", load.chunks);
    for c in 0..load.clients {
        let mut gw = gws[c % gws.len()].clone();
        let (turns, chunks, errors, stop, text) = (
            turns.clone(),
            chunks.clone(),
            errors.clone(),
            stop.clone(),
            text.clone(),
        );
        tasks.spawn(async move {
            while !stop.is_cancelled() {
                let agent = agent_name(rand::rng().random_range(0..n));
                match chat(&mut gw, agent, &text).await {
                    Ok(k) => {
                        turns.fetch_add(1, Ordering::Relaxed);
                        chunks.fetch_add(k, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    tokio::time::sleep(load.warmup).await;
    let (t0, c0, e0) = (
        turns.load(Ordering::Relaxed),
        chunks.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    let cpu0 = stack::cpu_seconds(pid)?;
    let me0 = stack::cpu_seconds(std::process::id() as i32)?;
    let started = Instant::now();
    tokio::time::sleep(load.duration).await;
    let secs = started.elapsed().as_secs_f64();
    let (t1, c1, e1) = (
        turns.load(Ordering::Relaxed),
        chunks.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    let ctrl_cpu = stack::cpu_seconds(pid)? - cpu0;
    let me_cpu = stack::cpu_seconds(std::process::id() as i32)? - me0;
    stop.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(30), tasks.wait()).await;
    let tps = (t1 - t0) as f64 / secs;
    let cps = (c1 - c0) as f64 / secs;
    let load_note = format!(
        "{} clients on {} HTTP/2 conns, {} chunks/turn, {:.0} s; {} errors",
        load.clients,
        load.channels,
        load.chunks,
        secs,
        e1 - e0
    );
    rows.push(
        Row::new(&fig, "turns/s (whole box)", tps, "turns/s")
            .at_least(20_000.0)
            .note(load_note),
    );
    rows.push(Row::new(&fig, "chunks/s (whole box)", cps, "chunks/s").at_least(200_000.0));
    rows.push(
        Row::new(&fig, "controller CPU during load", ctrl_cpu / secs, "cores").note(format!(
            "load generator + simulated sidecars used {:.2} cores",
            me_cpu / secs
        )),
    );
    if ctrl_cpu > 0.0 {
        let per_core = (t1 - t0) as f64 / ctrl_cpu;
        rows.push(
            Row::new(
                &fig,
                "turns per controller CPU-second",
                per_core,
                "turns/s/core",
            )
            .at_least(10_000.0)
            .note("controller-only cost; 2 dedicated cores would route 2x this"),
        );
        rows.push(
            Row::new(
                &fig,
                "chunks per controller CPU-second",
                (c1 - c0) as f64 / ctrl_cpu,
                "chunks/s/core",
            )
            .at_least(100_000.0),
        );
    }
    rows.push(Row::new(
        &fig,
        "controller RSS after load",
        stack::mib(stack::rss_bytes(pid)?),
        "MiB",
    ));
    swarm.stop().await;
    Ok(())
}

/// Figure 5: SIGKILL the controller under N sidecars with turns in flight,
/// restart it, and time the way back; every turn must finish through
/// Gateway.Chat resume.
pub async fn storm(
    bins: &Binaries,
    work: &Path,
    n: usize,
    in_flight: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let mut swarm = Swarm::start(bins, work, n).await?;
    let fig = format!("5 reconnect storm N={n}");
    let (chunks, delay_ms) = (30u64, 100u64);
    let text = format!("slow c={chunks} d={delay_ms}");
    let gw = swarm.controller.gateway().await?;
    let mut turns = Vec::new();
    for i in 0..in_flight.min(n) {
        let mut gw = gw.clone();
        let turn_id = format!("storm-{i}");
        let agent = agent_name(i * (n / in_flight.min(n)).max(1));
        let text = text.clone();
        let tid = turn_id.clone();
        let a = agent.clone();
        turns.push((
            agent,
            turn_id,
            tokio::spawn(async move {
                // Chunks seen before the controller dies.
                let mut seen = 0u64;
                let Ok(resp) = gw
                    .chat(ChatRequest {
                        agent: a,
                        kind: Some(Kind::Start(pb::StartTurn {
                            conversation: "storm".into(),
                            text,
                            turn_id: tid,
                        })),
                    })
                    .await
                else {
                    return seen;
                };
                let mut s = resp.into_inner();
                while let Ok(Some(ev)) = s.message().await {
                    if let Some(Event::Chunk(c)) = ev.event
                        && c.seq == seen
                    {
                        seen += 1;
                    }
                }
                seen
            }),
        ));
    }
    tokio::time::sleep(Duration::from_millis(delay_ms * 5)).await;
    let mid_reply = swarm.stats.turns.load(Ordering::Relaxed);
    let welcomes = swarm.stats.welcomes.load(Ordering::Relaxed);
    let killed = Instant::now();
    swarm.controller.kill().await?;
    let spec = swarm.controller.spec.clone();
    swarm.controller = Controller::start(bins, spec).await?;
    let restarted = killed.elapsed();
    swarm
        .wait_connected(welcomes, Duration::from_secs(300))
        .await?;
    let back = killed.elapsed();

    // Finish every turn by resuming it where its requester lost it.
    let mut gw = swarm.controller.gateway().await?;
    let (mut complete, mut lost) = (0, Vec::new());
    for (agent, turn_id, seen) in turns {
        let seen = seen.await.unwrap_or(0);
        match resume(&mut gw, &agent, &turn_id, seen).await {
            Ok(total) if total == chunks => complete += 1,
            Ok(total) => lost.push(format!("{turn_id}: {total}/{chunks} chunks")),
            Err(e) => lost.push(format!("{turn_id}: {e}")),
        }
    }
    rows.push(
        Row::new(&fig, "kill to all reconnected", back.as_secs_f64(), "s")
            .at_most(30.0)
            .note(format!(
                "controller back up after {:.2} s; backoff 100 ms..10 s, full jitter",
                restarted.as_secs_f64()
            )),
    );
    rows.push(
        Row::new(&fig, "turns lost", lost.len() as f64, "turns")
            .at_most(0.0)
            .note(format!(
                "{complete}/{} turns ({mid_reply} reached sidecars) were mid-reply at the kill and completed via resume {}",
                complete + lost.len(),
                lost.first().cloned().unwrap_or_default()
            )),
    );
    swarm.stop().await;
    Ok(())
}

/// Resume `turn_id` from `from_seq`, retrying while the agent is not back;
/// returns the total chunk count (from_seq + replayed), contiguous only.
async fn resume(
    gw: &mut GatewayClient<Channel>,
    agent: &str,
    turn_id: &str,
    from_seq: u64,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = gw
            .chat(ChatRequest {
                agent: agent.into(),
                kind: Some(Kind::Resume(pb::ResumeTurn {
                    turn_id: turn_id.into(),
                    from_seq,
                })),
            })
            .await;
        let mut s = match r {
            Ok(r) => r.into_inner(),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => bail!("resume refused: {e}"),
        };
        let mut next = from_seq;
        while let Some(ev) = s.message().await? {
            match ev.event {
                Some(Event::Chunk(c)) if c.seq == next => next += 1,
                Some(Event::Chunk(c)) => bail!("chunk {} out of order (expected {next})", c.seq),
                Some(Event::End(e)) if e.outcome == pb::Outcome::Ok as i32 => return Ok(next),
                Some(Event::End(e)) => bail!("resumed turn ended {:?}: {}", e.outcome(), e.error),
                _ => {}
            }
        }
        bail!("resumed turn ended without End");
    }
}

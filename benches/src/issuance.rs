//! Figure 3: certificate issuance, in-process (`Authority::sign_csr` on
//! CSRs prepared beforehand, one thread) and end to end through
//! `Identity.Certify` on the controller binary (as a renewal: the caller
//! presents its current agent certificate instead of a token).

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use clawswarm_certs::{AgentId, Authority, ChannelOptions, LeafPolicy, SpiffeId, TrustDomain};
use clawswarm_proto::v1::{CertifyRequest, identity_client::IdentityClient};
use tokio_util::task::TaskTracker;

use crate::{
    report::Row,
    stack::{self, Binaries, Controller, ControllerSpec, NAMESPACE, TRUST_DOMAIN},
};

const FIG: &str = "3 certificate issuance";

pub fn in_process(count: usize, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let td = TrustDomain::new(TRUST_DOMAIN)?;
    let authority = Authority::generate(&td)?;
    let policy = LeafPolicy::default();
    let mut csrs = Vec::with_capacity(count);
    for i in 0..count {
        let id = SpiffeId::agent(td.clone(), AgentId::new(NAMESPACE, format!("a{i}"))?);
        let (_key, csr) = clawswarm_certs::generate_csr(&id)?;
        csrs.push((id, csr));
    }
    // Warm caches and lazy statics outside the timed loop.
    for (id, csr) in csrs.iter().take(20) {
        authority.sign_csr(csr, id, &policy, SystemTime::now())?;
    }
    let started = Instant::now();
    for (id, csr) in &csrs {
        authority.sign_csr(csr, id, &policy, SystemTime::now())?;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    rows.push(
        Row::new(FIG, "sign_csr per second, one thread", rate, "certs/s")
            .at_least(2_000.0)
            .note(format!("{count} CSRs verified and signed (P-256)")),
    );
    Ok(())
}

pub async fn end_to_end(
    bins: &Binaries,
    work: &Path,
    count: usize,
    concurrency: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let spec = ControllerSpec {
        state_dir: work.join("certify"),
        mesh_addr: "127.0.0.1:0".into(),
        identity_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        agents: vec!["c0=o".into()],
        processes: false,
        log_level: "info".into(),
    };
    let controller = Controller::start(bins, spec).await?;
    let result = certify_load(&controller, count, concurrency, rows).await;
    controller.stop().await;
    result
}

async fn certify_load(
    controller: &Controller,
    count: usize,
    concurrency: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let authority = controller.authority()?;
    let tls = stack::agent_tls(&authority, "c0")?;
    let url = format!("https://{}", controller.endpoints.identity);
    let channel = clawswarm_certs::mtls_channel(&url, tls, &ChannelOptions::default()).await?;
    let client = IdentityClient::new(channel);
    let id = SpiffeId::agent(
        TrustDomain::new(TRUST_DOMAIN)?,
        AgentId::new(NAMESPACE, "c0")?,
    );
    let mut csrs = Vec::with_capacity(count);
    for _ in 0..count {
        csrs.push(clawswarm_certs::generate_csr(&id)?.1);
    }
    let csrs = Arc::new(std::sync::Mutex::new(csrs));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let pid = controller.pid();
    let cpu0 = stack::cpu_seconds(pid)?;
    let started = Instant::now();
    let tasks = TaskTracker::new();
    for _ in 0..concurrency {
        let (mut client, csrs, ok, failed) =
            (client.clone(), csrs.clone(), ok.clone(), failed.clone());
        tasks.spawn(async move {
            loop {
                let next = csrs.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(csr_pem) = next else { return };
                let req = CertifyRequest {
                    identity: format!("{NAMESPACE}/c0"),
                    csr_pem,
                    token: String::new(),
                };
                match client.certify(req).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    tasks.close();
    tokio::time::timeout(Duration::from_secs(300), tasks.wait()).await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = stack::cpu_seconds(pid)? - cpu0;
    let n = ok.load(Ordering::Relaxed);
    rows.push(
        Row::new(
            FIG,
            "Identity.Certify per second (whole box)",
            n as f64 / secs,
            "certs/s",
        )
        .note(format!(
            "{n} renewals over mTLS, {concurrency} concurrent, {} failed",
            failed.load(Ordering::Relaxed)
        )),
    );
    if cpu > 0.0 {
        rows.push(
            Row::new(
                FIG,
                "Identity.Certify per controller CPU-second",
                n as f64 / cpu,
                "certs/s/core",
            )
            .at_least(2_000.0),
        );
    }
    Ok(())
}

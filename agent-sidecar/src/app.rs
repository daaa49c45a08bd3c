//! Assembles a running sidecar: identity first, then the debug server and
//! the link; metrics and health from the start.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use clawswarm_certs::{AgentId, ClientAuth, SpiffeId, TrustDomain, tls_incoming};
use clawswarm_proto::{
    decode_status::decode_status_layer, introspection::with_introspection,
    v1::sidecar_debug_server::SidecarDebugServer,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, info, info_span, warn};

use crate::{
    config::{RunArgs, WorkloadArgs},
    debug::DebugService,
    http::{HttpState, serve as serve_http},
    identity::IdentityClient,
    link::Link,
    metrics::SidecarMetrics,
    notices::Outbox,
    readiness,
    relay::{Relay, RelayConfig},
    workload::{
        Workload,
        none::NoWorkload,
        openclaw::services as openclaw_services,
        responses::{
            HistoryConfig, ReadyProbe, ResponsesConfig, ResponsesWorkload, SessionBinding,
        },
    },
};

/// Largest frame exchanged with the controller (matches its limit).
const MAX_FRAME_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(String),
}

/// The workload adapter the configuration asks for.
/// `data_dir` is the sidecar's own: conversation history lives in its
/// `conversations/`, out of the workload's reach.
pub fn build_workload(
    w: &WorkloadArgs,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn Workload>, AppError> {
    let missing = "set CLAWSWARM_WORKLOAD_URL to an OpenAI-compatible /v1/responses endpoint \
                   (and CLAWSWARM_WORKLOAD_TOKEN, CLAWSWARM_WORKLOAD_MODEL), or start the controller with \
                   CLAWSWARM_WORKLOAD_COMMAND";
    match (w.kind.as_str(), &w.url) {
        ("none", _) | ("responses", None) => Ok(Arc::new(NoWorkload {
            reason: w
                .no_workload_reason
                .clone()
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| missing.into()),
        })),
        ("responses", Some(url)) => {
            let cfg = ResponsesConfig {
                base_url: url.clone(),
                bearer_token: w.token.clone(),
                model: w.model.clone(),
                session: SessionBinding::UserField,
                ready: ReadyProbe::resolve(w.ready_path.as_deref(), url),
                history: HistoryConfig {
                    mode: w.history,
                    dir: data_dir.join("conversations"),
                    limits: w.history_limits(),
                },
                idle_timeout: Duration::from_secs(150),
                connect_timeout: Duration::from_secs(5),
            };
            Ok(Arc::new(
                ResponsesWorkload::new(cfg).map_err(|e| AppError::Config(e.to_string()))?,
            ))
        }
        (other, _) => Err(AppError::Config(format!(
            "CLAWSWARM_WORKLOAD={other:?}: expected responses or none"
        ))),
    }
}

pub async fn run(args: RunArgs, shutdown: CancellationToken) -> Result<(), AppError> {
    let agent: AgentId = args
        .agent
        .parse()
        .map_err(|e| AppError::Config(format!("CLAWSWARM_AGENT={:?}: {e}", args.agent)))?;
    let td = TrustDomain::new(args.trust_domain.clone())
        .map_err(|e| AppError::Config(format!("CLAWSWARM_TRUST_DOMAIN: {e}")))?;
    let controller_ns = args
        .controller_namespace
        .clone()
        .unwrap_or_else(|| agent.namespace().to_owned());
    let controller_id = SpiffeId::controller(td.clone(), controller_ns)
        .map_err(|e| AppError::Config(format!("CLAWSWARM_CONTROLLER_NAMESPACE: {e}")))?;
    let bundle = std::fs::read_to_string(&args.trust_bundle).map_err(|e| {
        AppError::Config(format!(
            "CLAWSWARM_TRUST_BUNDLE={}: {e}",
            args.trust_bundle.display()
        ))
    })?;
    // The sandboxed workload's only way to its own sidecar's ports, and
    // ours to its port; bound before the workload is first probed.
    let routes = crate::sandbox_bridge::parse_routes(&args.sandbox_routes)
        .map_err(|e| AppError::Config(format!("CLAWSWARM_SANDBOX_ROUTES: {e}")))?;
    let mut sandbox_bridge = crate::sandbox_bridge::start(
        &routes,
        crate::sandbox_bridge::Side::Outside,
        shutdown.clone(),
    )
    .await
    .map_err(|e| AppError::Config(format!("CLAWSWARM_SANDBOX_ROUTES: {e}")))?;
    let metrics = SidecarMetrics::new();
    let tasks = TaskTracker::new();
    // OpenClaw brings its model proxy, which meters every model call itself;
    // counting turn usage too would count those tokens twice.
    let skills_args = args.skills.resolved(&args.data_dir);
    let root_map = skills_args
        .root_map()
        .map_err(|e| AppError::Config(format!("CLAWSWARM_WORKLOAD_ROOT_MAP: {e}")))?;
    let mut workload_skills: Option<Arc<dyn crate::skills::WorkloadSkills>> = None;
    let (workload, openclaw): (Arc<dyn Workload>, _) = if args.workload.kind == "openclaw" {
        let oc = args.openclaw.resolved(&args.data_dir, &args.workload);
        workload_skills = Some(Arc::new(crate::skills::OpenClawSkills {
            config_path: skills_args.openclaw_config.clone(),
            state_dir: skills_args.openclaw_state_dir.clone().unwrap_or_default(),
            root_map,
        }));
        let services = openclaw_services::start(&oc, metrics.clone(), shutdown.clone())
            .await
            .map_err(|e| AppError::Config(format!("openclaw: {e}")))?;
        (services.workload.clone(), Some(services))
    } else {
        (build_workload(&args.workload, &args.data_dir)?, None)
    };
    // The OpenClaw gateway connects to its company-data tools on first use,
    // long after this. With a usage ledger, queries are counted there too.
    let meter = openclaw.as_ref().map(|services| {
        let proxy = services.model_proxy.clone();
        let meter: crate::data_proxy::DataMeter = Arc::new(move |q| {
            if let Err(e) = proxy.ledger().record_data(q) {
                warn!(error = %e, "usage ledger not persisted");
            }
        });
        meter
    });
    crate::data_proxy::start(
        &args.data.resolved(&args.data_dir),
        openclaw.is_some(),
        metrics.clone(),
        meter,
        shutdown.clone(),
        &tasks,
    )
    .instrument(info_span!("data_proxy"))
    .await
    .map_err(|e| AppError::Config(format!("data proxy: {e}")))?;

    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind { what, addr, source })
    };
    let http_listener = bind("http", args.http_addr).await?;
    let debug_listener = bind("debug", args.debug_addr).await?;
    let local = |l: &TcpListener| l.local_addr().map_err(|e| AppError::Io(e.to_string()));
    let (http_addr, debug_addr) = (local(&http_listener)?, local(&debug_listener)?);
    if let Some(run_dir) = &args.run_dir {
        let ports = serde_json::json!({ "http": http_addr.to_string(), "debug": debug_addr.to_string(), "pid": std::process::id() });
        std::fs::write(run_dir.join("ports.json"), ports.to_string())
            .map_err(|e| AppError::Io(format!("{}: {e}", run_dir.display())))?;
    }

    let certified = Arc::new(AtomicBool::new(false));
    let linked = Arc::new(AtomicBool::new(false));
    let http_state = HttpState {
        metrics: metrics.clone(),
        certified: certified.clone(),
        linked: linked.clone(),
    };
    tasks.spawn(
        serve_http(http_listener, http_state, shutdown.clone()).instrument(info_span!("http")),
    );

    let (ready_tx, ready_rx) = readiness::initial();
    tasks.spawn(
        readiness::poll(
            workload.clone(),
            (args.min_free_bytes > 0).then(|| crate::volume::VolumeCheck {
                dir: args.data_dir.clone(),
                min_free_bytes: args.min_free_bytes,
            }),
            ready_tx,
            metrics.clone(),
            shutdown.clone(),
        )
        .instrument(info_span!("readiness")),
    );
    let outbox = Outbox::open(
        Some(args.data_dir.join(".clawswarm-notices.json")),
        metrics.clone(),
    );
    if let Some(notices) = workload.take_notices() {
        tasks.spawn(
            outbox
                .clone()
                .pump(notices, shutdown.clone())
                .instrument(info_span!("notices")),
        );
    }
    let relay_cfg = RelayConfig {
        conversation_queue: args.relay.conversation_queue,
        max_active: args.relay.max_active,
        idle_timeout: args.relay.idle_timeout,
        turn_timeout: args.relay.turn_timeout,
        ready_wait: args.relay.ready_wait,
        retention: args.relay.retention,
        journal: Some(args.data_dir.join(".clawswarm-turns.json")),
        count_turn_usage: openclaw.is_none(),
    };
    let relay = Relay::new(
        relay_cfg,
        workload.clone(),
        ready_rx.clone(),
        metrics.clone(),
    );
    let gc_relay = relay.clone();
    let gc_stop = shutdown.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = gc_stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(15)) => gc_relay.collect_garbage(),
            }
        }
    });

    let identity = IdentityClient {
        url: args.identity_url.clone(),
        agent: agent.clone(),
        trust_domain: td.clone(),
        controller: controller_id.clone(),
        trust_bundle_pem: bundle.clone(),
        token_file: args.token_file.clone(),
    };
    let Some(creds) = identity.certify_until_done(&metrics, &shutdown).await else {
        return Ok(());
    };
    let store = clawswarm_certs::CredentialStore::new(creds);
    certified.store(true, std::sync::atomic::Ordering::Release);
    tasks.spawn(
        identity
            .renew_forever(store.clone(), metrics.clone(), shutdown.clone())
            .instrument(info_span!("renewal")),
    );

    let debug = DebugService {
        agent: agent.clone(),
        trust_domain: td.clone(),
        relay: relay.clone(),
        readiness: ready_rx.clone(),
        linked: linked.clone(),
        store: store.clone(),
    };
    let debug_server = tonic::transport::Server::builder()
        .layer(decode_status_layer())
        .add_service(SidecarDebugServer::new(debug));
    let (debug_server, _health) = with_introspection(debug_server, &["clawswarm.v1.SidecarDebug"])
        .await
        .map_err(|e| AppError::Io(format!("reflection: {e}")))?;
    let debug_tls = clawswarm_certs::server_config(store.clone(), &bundle, ClientAuth::Required)
        .map_err(|e| AppError::Config(e.to_string()))?;
    let incoming = tls_incoming("debug", debug_listener, debug_tls, shutdown.clone(), &tasks);
    let stop = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = debug_server
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
        {
            warn!(error = %e, "debug server failed");
        }
    });

    let link = Link {
        controller_url: args.controller_url.clone(),
        controller_id,
        agent: agent.clone(),
        trust_bundle_pem: bundle,
        store,
        relay: relay.clone(),
        outbox,
        readiness: ready_rx,
        metered: openclaw
            .as_ref()
            .map(|services| services.model_proxy.ledger().metered()),
        metrics: metrics.clone(),
        connected: linked,
        max_frame_bytes: MAX_FRAME_BYTES,
        workload_kind: workload.kind(),
        skills: Arc::new(crate::skills::Skills::new(
            crate::skills::Shelf::new(skills_args.dir.clone()),
            workload_skills,
        )),
    };
    info!(agent = %agent, http = %http_addr, debug = %debug_addr, workload = workload.kind(), "sidecar running");
    link.run(shutdown.clone())
        .instrument(info_span!("link", agent = %agent))
        .await;

    info!(held_turns = relay.turns_held(), "sidecar stopping");
    relay.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while sandbox_bridge.join_next().await.is_some() {}
    })
    .await;
    if let Some(services) = openclaw {
        let _ = tokio::time::timeout(Duration::from_secs(5), services.join()).await;
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    Ok(())
}

/// Directory for `ports.json` and the like, if configured.
pub fn run_dir(args: &RunArgs) -> Option<PathBuf> {
    args.run_dir.clone()
}

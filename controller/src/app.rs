//! Assembles a running controller from its configuration: CA, listeners,
//! runtime, mesh, services, and the order they stop in.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use clawswarm_certs::{
    AgentId, Authority, ClientAuth, CredentialStore, LeafPolicy, SpiffeId, TrustDomain,
};
use clawswarm_proto::v1::{
    agent_link_server::AgentLinkServer, gateway_server::GatewayServer,
    identity_server::IdentityServer,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, error, info, info_span, warn};

use crate::{
    admin::{Endpoints, write_admin_credentials},
    config::{RunArgs, RuntimeKind, default_state_dir},
    front_door::{FrontDoor, spawn_slack},
    gateway::GatewayService,
    http::{HttpState, serve as serve_http},
    identity::IdentityService,
    mesh::{AgentLinkService, Mesh, MeshConfig},
    metrics::Metrics,
    notice_inbox::NoticeInbox,
    router::{Router, RouterConfig},
    runtime::{
        Runtime, RuntimeError, kubernetes,
        local::{
            LocalConfig, LocalRuntime, WorkloadLaunch,
            openclaw_profile::{KEY_SETTINGS, Profile},
            sandbox::Sandbox,
            template::{EnvTemplate, Template, TemplateError},
        },
        usage,
    },
    startup::{await_role, listed_agents, provision_listed},
};
use clawswarm_certs::tls_incoming;
use clawswarm_proto::{decode_status::decode_status_layer, introspection::with_introspection};

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
    #[error("certificate authority: {0}")]
    Authority(String),
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("{0}")]
    Io(String),
    #[error("gRPC server {0} failed: {1}")]
    Serve(&'static str, String),
}

/// Everything a running controller needs from outside: its config and
/// when to stop.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> Result<(), AppError> {
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| AppError::Io(format!("{}: {e}", state_dir.display())))?;
    let td = TrustDomain::new(args.trust_domain.clone())
        .map_err(|e| AppError::Config(format!("CLAWSWARM_TRUST_DOMAIN: {e}")))?;
    let ns = args.namespace.clone();
    args.slack
        .validate()
        .map_err(|e| AppError::Config(e.to_string()))?;
    AgentId::new(ns.clone(), "probe")
        .map_err(|e| AppError::Config(format!("CLAWSWARM_NAMESPACE: {e}")))?;
    let ca_dir = state_dir.join("ca");
    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind { what, addr, source })
    };
    let listed_agents = listed_agents(&args)?;
    let mesh_listener = bind("mesh", args.mesh_addr).await?;
    let identity_listener = bind("identity", args.identity_addr).await?;
    let http_listener = bind("http", args.http_addr).await?;
    let slack_events_listener = match args.slack.slack_transport {
        crate::slack::SlackTransport::Events if args.slack.enabled() => {
            Some(bind("slack events api", args.slack.slack_events_addr).await?)
        }
        _ => None,
    };
    let local = |l: &TcpListener| l.local_addr().map_err(|e| AppError::Io(e.to_string()));
    let (mesh_addr, identity_addr, http_addr) = (
        local(&mesh_listener)?,
        local(&identity_listener)?,
        local(&http_listener)?,
    );

    // Where agents run decides where the CA lives: the state directory
    // locally, a Secret on Kubernetes (so every replica signs with it).
    let k8s = match args.runtime {
        RuntimeKind::Kubernetes => {
            Some(kubernetes_runtime(&args, &td, mesh_addr, identity_addr).await?)
        }
        RuntimeKind::Local => None,
    };
    let authority = match &k8s {
        Some((authority, _)) => authority.clone(),
        None => Authority::load_or_create(&ca_dir, &td)
            .map_err(|e| AppError::Authority(e.to_string()))?,
    };
    let metrics = Metrics::new_with(|registry| {
        if let Some((_, rt)) = &k8s {
            rt.metrics().register(registry);
        }
    });

    // Our own serving certificate, renewed in the background.
    let server_policy = server_policy(&args);
    let controller_id = SpiffeId::controller(td.clone(), ns.clone())
        .map_err(|e| AppError::Config(e.to_string()))?;
    let creds = authority
        .issue(&controller_id, &server_policy, SystemTime::now())
        .map_err(|e| AppError::Authority(e.to_string()))?;
    let store = CredentialStore::new(creds);
    let admin_policy = LeafPolicy {
        lifetime: args.cert_lifetime,
        server_auth: false,
        ..LeafPolicy::default()
    };
    let admin_files = write_admin_credentials(&state_dir, &authority, &admin_policy)
        .map_err(|e| AppError::Io(e.to_string()))?;

    let runtime: Arc<dyn Runtime> = match &k8s {
        Some((_, rt)) => rt.clone(),
        None => {
            let cfg = local_config(&args, &state_dir, &ca_dir, &td, mesh_addr, identity_addr)?;
            describe_workload(&cfg);
            Arc::new(LocalRuntime::open(cfg, metrics.clone())?)
        }
    };
    // Nothing serves before the runtime knows this replica's role.
    let front_door = FrontDoor::new(runtime.role(), args.slack.enabled(), metrics.slack.clone());

    let tasks = TaskTracker::new();
    let stop_serving = CancellationToken::new();
    let (mesh, outputs) = Mesh::new(
        MeshConfig::new(td.clone(), ns.clone()),
        metrics.clone(),
        stop_serving.clone(),
    );
    // The company skills library: ConfigMaps beside the controller on
    // Kubernetes, a directory of this machine's state locally.
    let library: Arc<dyn crate::skills::SkillLibrary> = match &k8s {
        Some((_, rt)) => Arc::new(crate::skills::configmap_library::ConfigMapLibrary::new(
            rt.client(),
            &ns,
        )),
        None => Arc::new(crate::skills::dir_library::DirLibrary::new(
            args.skills_library
                .clone()
                .unwrap_or_else(|| state_dir.join("skills-library")),
        )),
    };
    let skills = Arc::new(crate::skills::Skills::new(
        library,
        runtime.clone(),
        mesh.clone(),
    ));
    tasks.spawn(
        skills
            .clone()
            .refresh_connected(outputs.skill_holders, stop_serving.clone())
            .instrument(info_span!("skills")),
    );
    let router =
        Router::new(runtime.clone(), mesh.clone(), RouterConfig::default()).with_skills(skills);
    // Slack delivers notices when configured (on the leader); otherwise the
    // Gateway's followers do (`clawswarm notices NAME`).
    let (slack_notices, notice_inbox) = if args.slack.enabled() {
        (Some(outputs.notices), None)
    } else {
        let (inbox, courier) =
            NoticeInbox::new(router.clone(), outputs.notices, stop_serving.clone());
        tasks.spawn(courier.instrument(info_span!("notices")));
        (None, Some(inbox))
    };
    let max_frame = mesh.config().max_frame_bytes;

    let mesh_server = tonic::transport::Server::builder()
        .layer(decode_status_layer())
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(
            AgentLinkServer::new(AgentLinkService::new(mesh.clone(), runtime.clone()))
                .max_decoding_message_size(max_frame)
                .max_encoding_message_size(max_frame),
        )
        .add_service(
            GatewayServer::new(GatewayService::new(
                router.clone(),
                td.clone(),
                ns.clone(),
                notice_inbox,
            ))
            .max_decoding_message_size(max_frame),
        );
    let (mesh_server, _mesh_health) = with_introspection(
        mesh_server,
        &["clawswarm.v1.AgentLink", "clawswarm.v1.Gateway"],
    )
    .await
    .map_err(|e| AppError::Serve("mesh", e.to_string()))?;
    let identity_service = IdentityService::new(
        authority.clone(),
        runtime.authenticator(),
        ns.clone(),
        LeafPolicy {
            lifetime: args.cert_lifetime,
            ..LeafPolicy::default()
        },
        metrics.clone(),
    );
    let identity_server = tonic::transport::Server::builder()
        .layer(decode_status_layer())
        .add_service(IdentityServer::new(identity_service).max_decoding_message_size(64 * 1024));
    let (identity_server, _identity_health) =
        with_introspection(identity_server, &["clawswarm.v1.Identity"])
            .await
            .map_err(|e| AppError::Serve("identity", e.to_string()))?;

    let bundle = authority.trust_bundle_pem().to_owned();
    let tls_err = |e: clawswarm_certs::TlsError| AppError::Authority(e.to_string());
    let mesh_tls = clawswarm_certs::server_config(store.clone(), &bundle, ClientAuth::Required)
        .map_err(tls_err)?;
    let identity_tls = clawswarm_certs::server_config(store.clone(), &bundle, ClientAuth::Optional)
        .map_err(tls_err)?;
    let mesh_incoming = tls_incoming(
        "mesh",
        mesh_listener,
        mesh_tls,
        stop_serving.clone(),
        &tasks,
    );
    let identity_incoming = tls_incoming(
        "identity",
        identity_listener,
        identity_tls,
        stop_serving.clone(),
        &tasks,
    );
    // Connections that arrive before the role is known wait in the accept
    // queue (bounded) instead of meeting empty caches.
    let (stop, door) = (stop_serving.clone(), front_door.clone());
    let mesh_task = tokio::spawn(async move {
        if !door.serving_allowed(&stop).await {
            return Ok(());
        }
        mesh_server
            .serve_with_incoming_shutdown(mesh_incoming, stop.cancelled_owned())
            .await
    });
    let (stop, door) = (stop_serving.clone(), front_door.clone());
    let identity_task = tokio::spawn(async move {
        if !door.serving_allowed(&stop).await {
            return Ok(());
        }
        identity_server
            .serve_with_incoming_shutdown(identity_incoming, stop.cancelled_owned())
            .await
    });
    let ready = Arc::new(AtomicBool::new(true));
    let http_state = HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        front_door: front_door.clone(),
    };
    let offboarding = match args.kubernetes.offboarding_secret_file.as_deref() {
        Some(path) if k8s.is_some() => {
            match kubernetes::offboarding::Offboarding::key_from_file(path)
                .map_err(|e| AppError::Config(format!("CLAWSWARM_OFFBOARDING_SECRET_FILE: {e}")))?
            {
                Some(key) => Some(
                    Arc::new(kubernetes::offboarding::Offboarding::new(
                        runtime.clone(),
                        key,
                    ))
                    .router(),
                ),
                None => {
                    info!(file = %path.display(), "off-boarding webhook off: no key in the file");
                    None
                }
            }
        }
        _ => None,
    };
    let stop = stop_serving.clone();
    let http_task =
        tokio::spawn(async move { serve_http(http_listener, http_state, offboarding, stop).await });
    if let Some((_, rt)) = &k8s {
        // The mesh refuses links until this replica holds the lease.
        tasks.spawn(
            kubernetes::leader::follow_leadership(
                rt.leadership(),
                mesh.clone(),
                stop_serving.clone(),
            )
            .instrument(info_span!("leader")),
        );
    }

    let runtime_stop = CancellationToken::new();
    let rt = runtime.clone();
    let rt_stop = runtime_stop.clone();
    let mut runtime_task =
        tokio::spawn(async move { rt.run(rt_stop).await }.instrument(info_span!("runtime")));
    tasks.spawn(
        renew_own_certificates(
            authority.clone(),
            store,
            controller_id,
            server_policy,
            state_dir.clone(),
            admin_policy,
            stop_serving.clone(),
        )
        .instrument(info_span!("renewal")),
    );
    tasks.spawn(
        usage::record(outputs.usage, runtime.clone(), stop_serving.clone())
            .instrument(info_span!("usage")),
    );
    let slack_task = match slack_notices {
        Some(notices) => Some(spawn_slack(
            &args.slack,
            router.clone(),
            notices,
            outputs.pending,
            slack_events_listener,
            front_door.clone(),
            &tasks,
            shutdown.clone(),
        )),
        None => {
            // Orphaned turns stay with their sidecars (Gateway clients resume
            // their own by turn id); a closed queue tells the mesh so at once.
            drop(outputs.pending);
            None
        }
    };

    // Start-up order: caches synced and leadership known, then pre-provision.
    match await_role(&front_door, &mut runtime_task, &shutdown).await {
        Ok(Some(role)) => {
            info!(role = role.as_str(), "role known: serving");
            if let Err(e) = provision_listed(runtime.as_ref(), listed_agents).await {
                stop_serving.cancel();
                shutdown.cancel();
                return Err(e);
            }
        }
        Ok(None) => {}
        Err(e) => {
            stop_serving.cancel();
            shutdown.cancel();
            return Err(e);
        }
    }

    let endpoints = Endpoints {
        mesh: mesh_addr.to_string(),
        identity: identity_addr.to_string(),
        http: http_addr.to_string(),
        pid: std::process::id(),
    };
    let endpoints_json =
        serde_json::to_vec_pretty(&endpoints).map_err(|e| AppError::Io(e.to_string()))?;
    std::fs::write(Endpoints::path(&state_dir), endpoints_json)
        .map_err(|e| AppError::Io(e.to_string()))?;
    info!(
        mesh = %mesh_addr, identity = %identity_addr, http = %http_addr, runtime = runtime.kind(),
        state_dir = %state_dir.display(), admin_cert = %admin_files.cert.display(), "controller serving"
    );

    shutdown.cancelled().await;
    info!(grace = ?args.shutdown_grace, in_flight = mesh.turns_in_flight(), "shutting down");
    ready.store(false, Ordering::Release);
    mesh.set_accepting(false);
    let deadline = tokio::time::Instant::now() + args.shutdown_grace;
    while mesh.turns_in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unfinished = mesh.turns_in_flight();
    mesh.drain("controller shutting down").await;
    stop_serving.cancel();
    runtime_stop.cancel();
    for (name, task) in [("mesh", mesh_task), ("identity", identity_task)] {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => error!(server = name, error = %e, "server failed"),
            _ => warn!(server = name, "server did not stop in time"),
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    match runtime_task.await {
        Ok(Err(e)) => error!(error = %e, "runtime stopped with an error"),
        Err(e) => error!(error = %e, "runtime task panicked"),
        Ok(Ok(())) => {}
    }
    if let Some(slack) = slack_task {
        match tokio::time::timeout(Duration::from_secs(25), slack).await {
            Ok(Err(e)) => error!(error = %e, "slack front door panicked"),
            Err(_) => warn!("slack front door did not stop in time"),
            Ok(Ok(())) => {}
        }
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(mesh.closed(), router.closed())
    })
    .await;
    info!(unfinished_turns = unfinished, "controller stopped");
    Ok(())
}

/// The Kubernetes runtime and the CA it shares through a Secret.
async fn kubernetes_runtime(
    args: &RunArgs,
    td: &TrustDomain,
    mesh: SocketAddr,
    identity: SocketAddr,
) -> Result<(Authority, Arc<kubernetes::KubernetesRuntime>), AppError> {
    let k = &args.kubernetes;
    let ns = &args.namespace;
    let client = kubernetes::default_client()
        .await
        .map_err(|e| AppError::Config(format!("kubernetes: {e}")))?;
    let authority = kubernetes::issuer::load_or_create_authority(&client, ns, &k.issuer_secret, td)
        .await
        .map_err(|e| AppError::Authority(e.to_string()))?;
    kubernetes::issuer::publish_trust_bundle(
        &client,
        ns,
        &k.trust_bundle_config_map,
        authority.trust_bundle_pem(),
    )
    .await
    .map_err(|e| AppError::Authority(e.to_string()))?;
    let common = kubernetes::CommonSettings {
        namespace: ns.clone(),
        trust_domain: td.to_string(),
        mesh_port: mesh.port(),
        identity_port: identity.port(),
    };
    let rt = kubernetes::build(k, &common, client)
        .await
        .map_err(|e| AppError::Config(format!("kubernetes: {e}")))?;
    Ok((authority, rt))
}

fn server_policy(args: &RunArgs) -> LeafPolicy {
    let mut dns = vec!["localhost".to_owned()];
    let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    match args.advertise_host.parse::<IpAddr>() {
        Ok(ip) if !ips.contains(&ip) => ips.push(ip),
        Ok(_) => {}
        Err(_) => dns.push(args.advertise_host.clone()),
    }
    dns.extend(args.server_names.iter().filter(|n| !n.is_empty()).cloned());
    LeafPolicy {
        lifetime: args.cert_lifetime,
        dns_names: dns,
        ip_addresses: ips,
        ..LeafPolicy::default()
    }
}

fn local_config(
    args: &RunArgs,
    state_dir: &Path,
    ca_dir: &Path,
    td: &TrustDomain,
    mesh: SocketAddr,
    identity: SocketAddr,
) -> Result<LocalConfig, AppError> {
    let l = &args.local;
    let sidecar_bin = match &l.sidecar_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("clawswarm-sidecar")))
            .ok_or_else(|| {
                AppError::Config(
                    "cannot locate clawswarm-sidecar; set CLAWSWARM_SIDECAR_BIN".into(),
                )
            })?,
    };
    if l.processes && !sidecar_bin.is_file() {
        return Err(AppError::Config(format!(
            "sidecar binary {} not found; build it (cargo build --bins) or set CLAWSWARM_SIDECAR_BIN",
            sidecar_bin.display()
        )));
    }
    let host = &args.advertise_host;
    let mut env = vec![
        (
            "CLAWSWARM_CONTROLLER_URL".to_owned(),
            format!("https://{host}:{}", mesh.port()),
        ),
        (
            "CLAWSWARM_IDENTITY_URL".to_owned(),
            format!("https://{host}:{}", identity.port()),
        ),
        (
            "CLAWSWARM_TRUST_BUNDLE".to_owned(),
            trust_bundle_path(ca_dir).display().to_string(),
        ),
        ("CLAWSWARM_TRUST_DOMAIN".to_owned(), td.to_string()),
        (
            "CLAWSWARM_CONTROLLER_NAMESPACE".to_owned(),
            args.namespace.clone(),
        ),
    ];
    let profile = builtin_profile(l, &sidecar_bin)?;
    match &profile {
        Some(Profile::NoModel { reason }) => {
            env.push(("CLAWSWARM_WORKLOAD".to_owned(), "none".to_owned()));
            env.push(("CLAWSWARM_NO_WORKLOAD_REASON".to_owned(), reason.clone()));
        }
        _ => env.push(("CLAWSWARM_WORKLOAD".to_owned(), l.workload.clone())),
    }
    if let Some(m) = &l.workload_model {
        env.push(("CLAWSWARM_WORKLOAD_MODEL".into(), m.clone()));
    }
    if l.workload_command.is_none()
        && let Some(url) = &l.workload_url
    {
        env.push(("CLAWSWARM_WORKLOAD_URL".into(), url.clone()));
    }
    // Settings meant for the sidecars pass through unchanged (the workload
    // token, logging), so an operator sets them once on the controller.
    for key in [
        "CLAWSWARM_WORKLOAD_TOKEN",
        "CLAWSWARM_LOG",
        "CLAWSWARM_RELAY_IDLE_TIMEOUT",
        "CLAWSWARM_WORKLOAD_READY_PATH",
        "CLAWSWARM_WORKLOAD_HISTORY",
        "CLAWSWARM_WORKLOAD_HISTORY_MAX_ITEMS",
        "CLAWSWARM_WORKLOAD_HISTORY_MAX_BYTES",
        "CLAWSWARM_WORKLOAD_HISTORY_MAX_CONVERSATIONS",
        "CLAWSWARM_MIN_FREE_BYTES",
    ] {
        if let Some(v) = std::env::var_os(key) {
            env.push((key.to_owned(), v.to_string_lossy().into_owned()));
        }
    }
    let (workload, sidecar_env_template) = local_templates(l, profile.as_ref())?;
    let sandbox = match (&workload, l.processes) {
        (Some(_), true) => {
            let program_dirs = match &profile {
                Some(Profile::Run { read_only, .. }) => read_only.clone(),
                _ => Vec::new(),
            };
            let sandbox = Sandbox::resolve(&l.sandbox, state_dir, &sidecar_bin, &program_dirs)
                .map_err(|e| AppError::Config(e.to_string()))?;
            if sandbox.is_none() {
                warn!(
                    "--unsandboxed: local workloads share this user's files, every process's \
                     environment and every loopback port"
                );
            }
            sandbox
        }
        _ => None,
    };
    Ok(LocalConfig {
        sidecar_env_template,
        state_dir: state_dir.to_owned(),
        namespace: args.namespace.clone(),
        sidecar_bin,
        sidecar_env: env,
        workload,
        sandbox,
        supervise_interval: Duration::from_millis(500),
        restart_backoff_max: Duration::from_secs(30),
        stop_grace: Duration::from_secs(5),
        idle_timeout: l.idle_timeout,
        manage_processes: l.processes,
    })
}

/// The built-in OpenClaw profile, when asked for: `--workload openclaw`
/// and no workload command of the operator's own.
fn builtin_profile(
    l: &crate::config::LocalArgs,
    sidecar_bin: &Path,
) -> Result<Option<Profile>, AppError> {
    if l.workload != "openclaw" || l.workload_command.is_some() {
        return Ok(None);
    }
    let has_key = KEY_SETTINGS
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    l.openclaw
        .resolve(sidecar_bin, has_key)
        .map(Some)
        .map_err(|e| AppError::Config(e.to_string()))
}

/// The local runtime's per-agent templates, checked before anything starts.
/// The operator's own environment entries come after the profile's, so
/// theirs win.
fn local_templates(
    l: &crate::config::LocalArgs,
    profile: Option<&Profile>,
) -> Result<(Option<WorkloadLaunch>, EnvTemplate), AppError> {
    let bad = |e: TemplateError| AppError::Config(e.to_string());
    let (command, workload_env, sidecar_env) = match profile {
        Some(Profile::Run {
            command,
            workload_env,
            sidecar_env,
            ..
        }) => (
            Some(command.clone()),
            format!("{workload_env};{}", l.workload_env),
            format!("{sidecar_env};{}", l.sidecar_env),
        ),
        _ => (
            l.workload_command.clone(),
            l.workload_env.clone(),
            l.sidecar_env.clone(),
        ),
    };
    let sidecar_env =
        EnvTemplate::parse("CLAWSWARM_LOCAL_SIDECAR_ENV", &sidecar_env).map_err(bad)?;
    sidecar_env
        .check_port("CLAWSWARM_LOCAL_SIDECAR_ENV", command.is_some())
        .map_err(bad)?;
    let Some(command) = command else {
        if !workload_env.trim().is_empty() {
            return Err(AppError::Config(
                "CLAWSWARM_LOCAL_WORKLOAD_ENV needs a workload command (CLAWSWARM_WORKLOAD_COMMAND)"
                    .into(),
            ));
        }
        return Ok((None, sidecar_env));
    };
    let workload = WorkloadLaunch {
        command: Template::parse("CLAWSWARM_WORKLOAD_COMMAND", &command).map_err(bad)?,
        url: Template::parse("CLAWSWARM_WORKLOAD_URL_TEMPLATE", &l.workload_url_template)
            .map_err(bad)?,
        env: EnvTemplate::parse("CLAWSWARM_LOCAL_WORKLOAD_ENV", &workload_env).map_err(bad)?,
    };
    Ok((Some(workload), sidecar_env))
}

fn trust_bundle_path(ca_dir: &Path) -> PathBuf {
    ca_dir.join("trust-bundle.pem")
}

/// Say plainly what is missing instead of pretending to answer.
fn describe_workload(cfg: &LocalConfig) {
    let setting = |key: &str| {
        cfg.sidecar_env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    if let Some(reason) = setting("CLAWSWARM_NO_WORKLOAD_REASON") {
        warn!("agents will start and connect, but cannot answer: {reason}");
    } else if cfg.workload.is_none() && setting("CLAWSWARM_WORKLOAD_URL").is_none() {
        warn!(
            "no workload configured: agents will start and connect, but cannot answer until you set \
             CLAWSWARM_WORKLOAD_URL (any OpenAI-compatible /v1/responses endpoint, with CLAWSWARM_WORKLOAD_TOKEN \
             and CLAWSWARM_WORKLOAD_MODEL), CLAWSWARM_WORKLOAD=openclaw (with CLAWSWARM_OPENCLAW_BIN) or \
             CLAWSWARM_WORKLOAD_COMMAND (a per-agent workload process)"
        );
    }
}

async fn renew_own_certificates(
    authority: Authority,
    store: Arc<CredentialStore>,
    id: SpiffeId,
    policy: LeafPolicy,
    state_dir: PathBuf,
    admin_policy: LeafPolicy,
    stop: CancellationToken,
) {
    loop {
        let current = store.current();
        let wait = clawswarm_certs::refresh_delay(
            current.not_before(),
            current.not_after(),
            SystemTime::now(),
            Duration::from_secs(10),
            Duration::from_secs(24 * 3600),
        );
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match authority.issue(&id, &policy, SystemTime::now()) {
            Ok(creds) => {
                store.update(creds);
                info!("controller certificate renewed");
            }
            Err(e) => error!(error = %e, "controller certificate renewal failed"),
        }
        if let Err(e) = write_admin_credentials(&state_dir, &authority, &admin_policy) {
            error!(error = %e, "admin credentials renewal failed");
        }
    }
}

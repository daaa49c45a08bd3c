//! Configuration of the Kubernetes runtime and its construction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use tokio::sync::watch;

use super::pod::PodSettings;
use super::tokenreview::{TokenReviewAuthenticator, TokenReviewConfig};
use super::{Inner, KubernetesRuntime, leader};
use crate::config::parse_duration;

/// Settings of the Kubernetes runtime (flags and `CLAWSWARM_*` env).
#[derive(Clone, Debug, clap::Args)]
pub struct KubernetesArgs {
    /// Image of the agent sidecar (also runs the `init` step).
    #[arg(
        long,
        env = "CLAWSWARM_SIDECAR_IMAGE",
        default_value = "ghcr.io/clawswarm/clawswarm-sidecar:0.1.0"
    )]
    pub sidecar_image: String,
    /// imagePullPolicy of agent containers (unset: the cluster default).
    #[arg(long, env = "CLAWSWARM_IMAGE_PULL_POLICY")]
    pub image_pull_policy: Option<String>,
    /// ServiceAccount agent pods run as (no API permissions, no automount).
    #[arg(
        long,
        env = "CLAWSWARM_AGENT_SERVICE_ACCOUNT",
        default_value = "clawswarm-agent"
    )]
    pub agent_service_account: String,
    /// The mesh Service (selects the leader); sidecars dial it.
    #[arg(
        long,
        env = "CLAWSWARM_SERVICE_NAME",
        default_value = "clawswarm-controller"
    )]
    pub service_name: String,
    /// AgentLink URL given to sidecars (default: https://<service>.<namespace>.svc:<mesh port>).
    #[arg(long, env = "CLAWSWARM_AGENT_CONTROLLER_URL")]
    pub agent_controller_url: Option<String>,
    /// Identity URL given to sidecars (default: https://<service>.<namespace>.svc:<identity port>).
    #[arg(long, env = "CLAWSWARM_AGENT_IDENTITY_URL")]
    pub agent_identity_url: Option<String>,
    /// Secret holding the mesh issuer (created if absent).
    #[arg(
        long,
        env = "CLAWSWARM_ISSUER_SECRET",
        default_value = "clawswarm-issuer"
    )]
    pub issuer_secret: String,
    /// ConfigMap the trust bundle is published in (mounted by agent pods).
    #[arg(
        long,
        env = "CLAWSWARM_TRUST_BUNDLE_CONFIGMAP",
        default_value = "clawswarm-trust-bundle"
    )]
    pub trust_bundle_config_map: String,
    /// Audience of agents' projected tokens.
    #[arg(
        long,
        env = "CLAWSWARM_TOKEN_AUDIENCE",
        default_value = "clawswarm-identity"
    )]
    pub token_audience: String,
    /// Secret whose keys become every sidecar's environment (model keys).
    #[arg(
        long,
        env = "CLAWSWARM_SHARED_SECRET",
        default_value = "clawswarm-shared-secrets"
    )]
    pub shared_secret: String,
    /// This replica's pod (downward API): lease identity and leader label.
    #[arg(long, env = "CLAWSWARM_POD_NAME")]
    pub pod_name: Option<String>,
    #[arg(
        long,
        env = "CLAWSWARM_LEASE_NAME",
        default_value = "clawswarm-controller-leader"
    )]
    pub lease_name: String,
    #[arg(long, env = "CLAWSWARM_LEASE_DURATION", value_parser = parse_duration, default_value = "15s")]
    pub lease_duration: Duration,
    /// How long a TokenReview decision is reused.
    #[arg(long, env = "CLAWSWARM_TOKENREVIEW_CACHE_TTL", value_parser = parse_duration, default_value = "30s")]
    pub tokenreview_cache_ttl: Duration,
    /// How often the leader looks for idle agents to suspend.
    #[arg(long, env = "CLAWSWARM_IDLE_CHECK_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub idle_check_interval: Duration,
    /// File with the HMAC key of the off-boarding webhook (unset: webhook off).
    #[arg(long, env = "CLAWSWARM_OFFBOARDING_SECRET_FILE")]
    pub offboarding_secret_file: Option<std::path::PathBuf>,
}

/// What the rest of the controller's configuration contributes.
#[derive(Clone, Debug)]
pub struct CommonSettings {
    pub namespace: String,
    pub trust_domain: String,
    pub mesh_port: u16,
    pub identity_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("kubernetes client: {0}")]
    Client(String),
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl KubernetesError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Client(_) => "client",
            Self::Config(_) => "config",
        }
    }
}

/// The in-cluster client (or `KUBECONFIG`), for `main`.
pub async fn default_client() -> Result<Client, KubernetesError> {
    Client::try_default()
        .await
        .map_err(|e| KubernetesError::Client(e.to_string()))
}

/// Build the runtime. `main` then: loads the CA with
/// [`super::issuer::load_or_create_authority`], publishes its bundle with
/// [`super::issuer::publish_trust_bundle`], spawns [`super::leader::follow_leadership`]
/// with [`KubernetesRuntime::leadership`] and the mesh, and runs the runtime.
pub async fn build(
    args: &KubernetesArgs,
    common: &CommonSettings,
    client: Client,
) -> Result<Arc<KubernetesRuntime>, KubernetesError> {
    let ns = &common.namespace;
    let svc = format!("{}.{ns}.svc", args.service_name);
    let settings = PodSettings {
        sidecar_image: args.sidecar_image.clone(),
        image_pull_policy: args.image_pull_policy.clone(),
        service_account: args.agent_service_account.clone(),
        controller_url: args
            .agent_controller_url
            .clone()
            .unwrap_or_else(|| format!("https://{svc}:{}", common.mesh_port)),
        identity_url: args
            .agent_identity_url
            .clone()
            .unwrap_or_else(|| format!("https://{svc}:{}", common.identity_port)),
        trust_bundle_config_map: args.trust_bundle_config_map.clone(),
        trust_domain: common.trust_domain.clone(),
        controller_namespace: ns.clone(),
        token_audience: args.token_audience.clone(),
        token_expiration_seconds: 3600,
        shared_secret: (!args.shared_secret.is_empty()).then(|| args.shared_secret.clone()),
    };
    if args.idle_check_interval.is_zero() {
        return Err(KubernetesError::Config(
            "CLAWSWARM_IDLE_CHECK_INTERVAL must be above 0".into(),
        ));
    }
    if args.lease_duration < Duration::from_secs(3) {
        return Err(KubernetesError::Config(
            "CLAWSWARM_LEASE_DURATION must be at least 3s".into(),
        ));
    }
    let identity = args
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("controller-{}", uuid::Uuid::now_v7()));
    let leader = leader::LeaderConfig::new(
        ns.clone(),
        args.lease_name.clone(),
        identity.clone(),
        args.pod_name.clone(),
        args.lease_duration,
    );
    let metrics = super::metrics::KubernetesMetrics::new();
    let authenticator = Arc::new(TokenReviewAuthenticator::new(
        client.clone(),
        TokenReviewConfig {
            namespace: ns.clone(),
            audience: args.token_audience.clone(),
            service_account: args.agent_service_account.clone(),
            cache_ttl: args.tokenreview_cache_ttl,
        },
        metrics.tokenreview_decisions.clone(),
    ));
    let (agents, agents_w) = reflector::store();
    let (templates, templates_w) = reflector::store();
    let (pods, pods_w) = reflector::store();
    let (leader_tx, _) = watch::channel(false);
    let (role_tx, _) = watch::channel(crate::runtime::Role::Starting);
    let reporter = Reporter {
        controller: "clawswarm-controller".into(),
        instance: Some(identity),
    };
    Ok(Arc::new(KubernetesRuntime(Arc::new(Inner {
        client: client.clone(),
        namespace: ns.clone(),
        settings,
        leader,
        authenticator,
        agents,
        templates,
        pods,
        writers: Mutex::new(Some((agents_w, templates_w, pods_w))),
        leader_tx,
        role_tx,
        recorder: Recorder::new(client, reporter),
        pending: Mutex::new(HashMap::new()),
        idle_check_interval: args.idle_check_interval,
        metrics,
    }))))
}

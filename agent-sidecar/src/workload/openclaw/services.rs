//! Everything the sidecar runs for an OpenClaw agent, started together:
//! the workload adapter, the model proxy and the notices machinery. `main`
//! flattens [`OpenClawServiceArgs`] into its run config and calls [`start`]
//! when `CLAWSWARM_WORKLOAD=openclaw`.

use std::{net::SocketAddr, path::Path, sync::Arc};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::{
    OpenClawArgs, OpenClawWorkload,
    notices::{Notices, NoticesArgs, NoticesError},
};
use crate::{
    metrics::SidecarMetrics,
    model_proxy::{ModelProxy, ModelProxyArgs, ModelProxyError},
    workload::WorkloadError,
};

#[derive(clap::Args, Clone, Debug)]
pub struct OpenClawServiceArgs {
    #[command(flatten)]
    pub gateway: OpenClawArgs,
    #[command(flatten)]
    pub model_proxy: ModelProxyArgs,
    #[command(flatten)]
    pub notices: NoticesArgs,
}

impl OpenClawServiceArgs {
    /// Fill in what the generic workload settings already say: relative
    /// state files live in the sidecar's data dir, and the workload's bearer
    /// token and URL (`CLAWSWARM_WORKLOAD_TOKEN`/`_URL`, which the Kubernetes
    /// runtime sets for every adapter) serve when no OpenClaw-specific
    /// setting is given.
    pub fn resolved(&self, data_dir: &Path, workload: &crate::config::WorkloadArgs) -> Self {
        let mut out = self.clone();
        let under = |p: &Path| {
            if p.is_relative() {
                data_dir.join(p)
            } else {
                p.to_path_buf()
            }
        };
        out.model_proxy.usage_file = under(&self.model_proxy.usage_file);
        out.model_proxy.token_file = under(&self.model_proxy.token_file);
        out.notices.state_file = under(&self.notices.state_file);
        out.notices.webhook_token_file = under(&self.notices.webhook_token_file);
        if out.gateway.token.is_none() && out.gateway.token_file.is_none() {
            out.gateway.token = workload.token.clone();
        }
        if out.gateway.url == super::DEFAULT_BASE_URL
            && let Some(url) = &workload.url
        {
            out.gateway.url = url.clone();
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error(transparent)]
    ModelProxy(#[from] ModelProxyError),
    #[error(transparent)]
    Notices(#[from] NoticesError),
}

impl ServiceError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Workload(e) => e.metric_label(),
            Self::ModelProxy(e) => e.metric_label(),
            Self::Notices(e) => e.metric_label(),
        }
    }
}

/// The running services; cancel the shutdown token given to [`start`],
/// then await [`OpenClawServices::join`].
pub struct OpenClawServices {
    pub workload: Arc<OpenClawWorkload>,
    pub model_proxy: Arc<ModelProxy>,
    pub model_proxy_addr: SocketAddr,
    pub notices_addr: SocketAddr,
    tasks: JoinSet<()>,
    notices: Notices,
}

impl OpenClawServices {
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
        self.notices.join().await;
    }
}

/// Bind the model proxy and the notices webhook (loopback only) and build
/// the workload, whose `take_notices` yields the forwarded cron output.
pub async fn start(
    args: &OpenClawServiceArgs,
    metrics: Arc<SidecarMetrics>,
    shutdown: CancellationToken,
) -> Result<OpenClawServices, ServiceError> {
    let proxy = ModelProxy::new(&args.model_proxy, metrics.clone())?;
    let listener = tokio::net::TcpListener::bind(args.model_proxy.listen)
        .await
        .map_err(|source| ModelProxyError::Bind {
            addr: args.model_proxy.listen,
            source,
        })?;
    let model_proxy_addr = listener
        .local_addr()
        .map_err(|source| ModelProxyError::Bind {
            addr: args.model_proxy.listen,
            source,
        })?;
    let (notices, stream) =
        Notices::start(&args.notices, &args.gateway, metrics, shutdown.clone()).await?;
    let workload = Arc::new(
        OpenClawWorkload::new(&args.gateway)?
            .with_notices(stream)
            .with_model_health(proxy.health()),
    );

    let mut tasks = JoinSet::new();
    let serve = Arc::clone(&proxy).serve(listener, shutdown.cancelled_owned());
    tasks.spawn(
        async move {
            if let Err(e) = serve.await {
                warn!(error = %e, "model proxy stopped");
            }
        }
        .instrument(info_span!("model_proxy")),
    );
    let notices_addr = notices.webhook_addr;
    info!(model_proxy = %model_proxy_addr, notices = %notices_addr, "openclaw services running");
    Ok(OpenClawServices {
        workload,
        model_proxy: proxy,
        model_proxy_addr,
        notices_addr,
        tasks,
        notices,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;
    use crate::{model_proxy::BudgetReply, workload::Workload};

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        services: OpenClawServiceArgs,
    }

    fn args(dir: &Path) -> OpenClawServiceArgs {
        std::fs::write(dir.join("hook"), "hook-token").unwrap();
        std::fs::write(dir.join("key"), "sk-real").unwrap();
        let dir = dir.display();
        let cli = Cli::try_parse_from([
            "sidecar".to_owned(),
            "--openclaw-token=gw".into(),
            "--model-proxy-listen=127.0.0.1:0".into(),
            "--model-upstream-url=http://127.0.0.1:9".into(),
            format!("--model-api-key-file={dir}/key"),
            format!("--model-usage-file={dir}/usage.json"),
            format!("--model-proxy-token-file={dir}/proxy-token"),
            "--notices-listen=127.0.0.1:0".into(),
            format!("--notices-state-file={dir}/notices.json"),
            format!("--notices-webhook-token-file={dir}/hook"),
        ])
        .unwrap();
        cli.services
    }

    /// What `main` parses: the sidecar's run flags, which flatten these.
    #[derive(clap::Parser)]
    struct Flattened {
        #[command(flatten)]
        run: crate::config::RunArgs,
    }

    #[test]
    fn flags_do_not_collide_with_the_sidecars_run_flags() {
        use clap::CommandFactory;
        Flattened::command().debug_assert();
        Cli::command().debug_assert();
        #[derive(clap::Parser)]
        struct Init {
            #[command(flatten)]
            init: crate::config::InitCommand,
        }
        Init::command().debug_assert();
    }

    #[tokio::test]
    async fn the_flattened_flags_parse_and_every_service_starts_on_loopback() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path());
        assert_eq!(a.model_proxy.budget_reply, BudgetReply::Message);
        let stop = CancellationToken::new();
        let services = start(&a, SidecarMetrics::new(), stop.clone())
            .await
            .unwrap();
        assert!(
            services.model_proxy_addr.ip().is_loopback()
                && services.notices_addr.ip().is_loopback()
        );
        assert_eq!(services.workload.kind(), "openclaw");
        assert!(services.workload.take_notices().is_some());
        assert!(
            services.workload.take_notices().is_none(),
            "handed out once"
        );
        // The proxy answers its own agent (the upstream is down: the
        // person is told so, as the assistant's message).
        let token = std::fs::read_to_string(&a.model_proxy.token_file).unwrap();
        let resp = reqwest::Client::new()
            .post(format!("http://{}/v1/messages", services.model_proxy_addr))
            .header("x-api-key", token)
            .json(&serde_json::json!({"model": "m", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(text.contains("cannot be reached"), "{text}");
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(10), services.join())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_missing_provider_key_stops_start_with_the_variable_named() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path());
        a.model_proxy.api_key_file = None;
        let err = start(&a, SidecarMetrics::new(), CancellationToken::new())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("CLAWSWARM_MODEL_API_KEY"), "{err}");
        assert_eq!(err.metric_label(), "key");
    }
}

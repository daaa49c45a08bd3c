//! A real Kubernetes control plane for tests: etcd 3.6 and kube-apiserver
//! 1.36 on loopback, RBAC on, built from the Go module proxy by
//! `scripts/deps.sh kube` (see /work/shared/notes/k8s-control-plane.md and
//! docs/kubernetes.md).
//!
//! What it gives a test: an admin client (`O=system:masters`), a kubeconfig
//! file, a fresh namespace per test, ServiceAccounts with tokens from
//! TokenRequest (optionally bound to a Pod, with an audience), and clients
//! built from such tokens so code under test runs with only the RBAC the
//! project grants it. There is no kube-controller-manager: no default
//! ServiceAccount, no garbage collection, no namespace deletion, no
//! scheduler or kubelet (see `crate::kubelet` for the last two).
//!
//! Processes belong to the [`ControlPlane`] and are killed when it drops.

mod apply;
mod pki;
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub use apply::{AppliedObject, apply_yaml, kustomize_build, parse_objects};
pub use pki::{CertKey, Pki};
use process::Supervised;

/// Set by `eval "$(scripts/deps.sh kube)"`: the directory holding `etcd`,
/// `kube-apiserver` and `kustomize`.
pub const BIN_DIR_ENV: &str = "CLAWSWARM_KUBE_BIN_DIR";
/// The command that builds (or finds in the cache) the binaries and sets [`BIN_DIR_ENV`].
pub const SETUP_COMMAND: &str = r#"eval "$(scripts/deps.sh kube)""#;

const READY_TIMEOUT: Duration = Duration::from_secs(180);
const READY_POLL: Duration = Duration::from_millis(250);
const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";

/// The directory with etcd, kube-apiserver and kustomize, or an error that
/// names the command to run. Tests call this (through [`ControlPlane::start`])
/// so a missing toolchain fails loudly instead of skipping.
pub fn kube_bin_dir() -> anyhow::Result<PathBuf> {
    kube_bin_dir_from(std::env::var_os(BIN_DIR_ENV))
}

fn kube_bin_dir_from(value: Option<std::ffi::OsString>) -> anyhow::Result<PathBuf> {
    let Some(dir) = value else {
        bail!(
            "{BIN_DIR_ENV} is not set: run `{SETUP_COMMAND}` first (it builds etcd 3.6, \
             kube-apiserver 1.36 and kustomize from the Go module proxy into ~/.cache/clawswarm, \
             cached by version), then rerun the test"
        );
    };
    let dir = PathBuf::from(dir);
    for bin in ["etcd", "kube-apiserver", "kustomize"] {
        let path = dir.join(bin);
        if !path.is_file() {
            bail!(
                "{BIN_DIR_ENV}={} has no {bin}: run `{SETUP_COMMAND}` again",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// Options for a ServiceAccount token from TokenRequest.
#[derive(Clone, Debug, Default)]
pub struct TokenOptions {
    /// Empty: the API server's own audience (usable as a bearer token against it).
    pub audiences: Vec<String>,
    /// Bind the token to a Pod: TokenReview then reports the pod's name and
    /// uid in `user.extra`, and the token dies with the pod.
    pub bound_pod: Option<BoundPod>,
    /// Defaults to the API server's (one hour); the minimum is 600.
    pub expiration_seconds: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct BoundPod {
    pub name: String,
    pub uid: String,
}

pub struct ControlPlane {
    // Drop order is field order: the API server stops before etcd, and both
    // before their files are removed with `dir`.
    apiserver: Supervised,
    etcd: Supervised,
    admin: Client,
    pki: Pki,
    url: String,
    kubeconfig: PathBuf,
    bin_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.url)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Start etcd and kube-apiserver, wait for `/readyz`, return with an admin client.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_serving(&[]).await
    }

    /// Like [`ControlPlane::start`], with a serving certificate that also
    /// names `ips` (where pods of a sandboxed kubelet reach the API server).
    pub async fn start_serving(ips: &[std::net::IpAddr]) -> anyhow::Result<Self> {
        // kube's rustls needs a process-wide provider when more than one is compiled in.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bin_dir = kube_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("clawswarm-kube-")
            .tempdir()
            .context("create control plane temp dir")?;
        let pki_dir = dir.path().join("pki");
        std::fs::create_dir_all(&pki_dir).context("create pki dir")?;

        let pki = Pki::new()?;
        let serving = pki.serving_cert(ips)?;
        let admin = pki.client_cert("clawswarm-test-admin", &["system:masters"])?;
        let (sa_key, sa_pub) = pki::service_account_key()?;
        let files = [
            ("ca.crt", pki.ca_pem.as_str()),
            ("apiserver.crt", serving.cert_pem.as_str()),
            ("apiserver.key", serving.key_pem.as_str()),
            ("sa.key", sa_key.as_str()),
            ("sa.pub", sa_pub.as_str()),
        ];
        for (name, content) in files {
            write_private(&pki_dir.join(name), content)?;
        }

        let [etcd_client, etcd_peer, api_port] = free_ports()?;
        let etcd = spawn_etcd(&bin_dir, dir.path(), etcd_client, etcd_peer)?;
        let url = format!("https://127.0.0.1:{api_port}");
        let apiserver = spawn_apiserver(&bin_dir, dir.path(), &pki_dir, etcd_client, api_port)?;

        let kubeconfig = dir.path().join("admin.kubeconfig");
        let kc = kubeconfig_json(&url, &pki.ca_pem, Credential::Cert(&admin), "default");
        write_private(&kubeconfig, &kc.to_string())?;
        let admin = client_from_kubeconfig(&kubeconfig).await?;

        let mut cp = Self {
            apiserver,
            etcd,
            admin,
            pki,
            url,
            kubeconfig,
            bin_dir,
            dir,
        };
        cp.wait_ready().await?;
        tracing::info!(url = %cp.url, "control plane ready");
        Ok(cp)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            self.etcd.check_alive()?;
            self.apiserver.check_alive()?;
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .context("build /readyz request")?;
            let last = match self.admin.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "kube-apiserver not ready after {READY_TIMEOUT:?} (last: {last}); its log:\n{}",
                    self.apiserver.log_tail(40)
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// A client with `system:masters` (bypasses RBAC): for test setup only.
    pub fn admin(&self) -> Client {
        self.admin.clone()
    }

    /// Path of the admin kubeconfig (for child processes and humans).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// A scratch directory that lives as long as the control plane.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The last lines of the API server's log, for failure messages.
    pub fn apiserver_log_tail(&self, lines: usize) -> String {
        self.apiserver.log_tail(lines)
    }

    /// A fresh namespace named `<prefix>-<random>`. Namespaces are never
    /// deleted (no namespace controller), so every test gets its own.
    pub async fn create_namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = Api::<Namespace>::all(self.admin.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("create namespace {prefix}-*"))?;
        created
            .metadata
            .name
            .context("created namespace has no name")
    }

    /// Create a ServiceAccount, or return the existing one.
    pub async fn create_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<ServiceAccount> {
        let api = Api::<ServiceAccount>::namespaced(self.admin.clone(), namespace);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            automount_service_account_token: Some(false),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(sa) => Ok(sa),
            Err(kube::Error::Api(e)) if e.code == 409 => api
                .get(name)
                .await
                .with_context(|| format!("get serviceaccount {namespace}/{name}")),
            Err(e) => Err(e).with_context(|| format!("create serviceaccount {namespace}/{name}")),
        }
    }

    /// Mint a token for `namespace/service_account` with TokenRequest.
    pub async fn request_token(
        &self,
        namespace: &str,
        service_account: &str,
        opts: &TokenOptions,
    ) -> anyhow::Result<String> {
        request_token(&self.admin, namespace, service_account, opts).await
    }

    /// A client that authenticates with `token` (and nothing else), verifying
    /// the API server against this control plane's CA.
    pub async fn client_for_token(&self, token: &str, namespace: &str) -> anyhow::Result<Client> {
        let path = self.write_token_kubeconfig(token, namespace)?;
        client_from_kubeconfig(&path).await
    }

    /// A kubeconfig file that authenticates with `token`: how a child process
    /// (the controller) runs as a ServiceAccount. The file lives in the
    /// control plane's directory.
    pub fn write_token_kubeconfig(&self, token: &str, namespace: &str) -> anyhow::Result<PathBuf> {
        let kc = kubeconfig_json(
            &self.url,
            &self.pki.ca_pem,
            Credential::Token(token),
            namespace,
        );
        let file = tempfile::Builder::new()
            .prefix("token-")
            .suffix(".kubeconfig")
            .tempfile_in(self.dir.path())
            .context("create token kubeconfig")?;
        let (_, path) = file.keep().context("keep token kubeconfig")?;
        write_private(&path, &kc.to_string())?;
        Ok(path)
    }

    /// Create the ServiceAccount if needed and return a client acting as it.
    pub async fn client_for_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Client> {
        self.create_service_account(namespace, name).await?;
        let token = self
            .request_token(namespace, name, &TokenOptions::default())
            .await?;
        self.client_for_token(&token, namespace).await
    }

    /// `kustomize build <dir>` with the cached kustomize.
    pub async fn kustomize_build(&self, dir: &Path) -> anyhow::Result<String> {
        kustomize_build(&self.bin_dir, dir).await
    }
}

/// Wait until `cond` holds for object `name` (or, for a condition that
/// accepts `None`, until it is gone), failing after `timeout` with `what`.
pub async fn wait_for<K, C>(
    api: Api<K>,
    name: &str,
    cond: C,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<Option<K>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    C: kube::runtime::wait::Condition<K>,
{
    tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api, name, cond),
    )
    .await
    .with_context(|| format!("timed out after {timeout:?} waiting for {what}"))?
    .with_context(|| format!("watch while waiting for {what}"))
}

/// TokenRequest through any client allowed to `create serviceaccounts/token`.
pub async fn request_token(
    client: &Client,
    namespace: &str,
    service_account: &str,
    opts: &TokenOptions,
) -> anyhow::Result<String> {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    let req = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: Some(TokenRequestSpec {
            audiences: Some(opts.audiences.clone()),
            bound_object_ref: opts.bound_pod.as_ref().map(|p| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(p.name.clone()),
                uid: Some(p.uid.clone()),
            }),
            expiration_seconds: opts.expiration_seconds,
        }),
        status: None,
    };
    let resp = api
        .create_token_request(service_account, &PostParams::default(), &req)
        .await
        .with_context(|| {
            format!("TokenRequest for serviceaccount {namespace}/{service_account}")
        })?;
    let status = resp
        .status
        .context("TokenRequest answered without status")?;
    status
        .token
        .context("TokenRequest answered without a token")
}

enum Credential<'a> {
    Cert(&'a CertKey),
    Token(&'a str),
}

fn kubeconfig_json(
    url: &str,
    ca_pem: &str,
    cred: Credential<'_>,
    namespace: &str,
) -> serde_json::Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match cred {
        Credential::Cert(c) => serde_json::json!({
            "client-certificate-data": b64(&c.cert_pem),
            "client-key-data": b64(&c.key_pem),
        }),
        Credential::Token(t) => serde_json::json!({ "token": t }),
    };
    // JSON is YAML: kubectl and kube-rs read this file as a kubeconfig.
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "test", "cluster": {
            "server": url,
            "certificate-authority-data": b64(ca_pem),
        }}],
        "users": [{ "name": "test", "user": user }],
        "contexts": [{ "name": "test", "context": {
            "cluster": "test", "user": "test", "namespace": namespace,
        }}],
        "current-context": "test",
    })
}

async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(path)
        .with_context(|| format!("read kubeconfig {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("kubeconfig to client config")?;
    Client::try_from(config).context("build kube client")
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    f.write_all(content.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

/// `N` distinct free loopback ports (held open together, then released).
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("bind a free loopback port")?;
    let mut ports = [0u16; N];
    for (slot, l) in ports.iter_mut().zip(&listeners) {
        *slot = l.local_addr().context("local addr")?.port();
    }
    Ok(ports)
}

fn spawn_etcd(bin: &Path, dir: &Path, client: u16, peer: u16) -> anyhow::Result<Supervised> {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut cmd = Command::new(bin.join("etcd"));
    cmd.arg("--name=default")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=default={peer_url}"))
        .arg("--unsafe-no-fsync=true")
        .arg("--log-level=warn");
    Supervised::spawn("etcd", cmd, &dir.join("etcd.log"))
}

fn spawn_apiserver(
    bin: &Path,
    dir: &Path,
    pki: &Path,
    etcd_client: u16,
    port: u16,
) -> anyhow::Result<Supervised> {
    let p = |name: &str| pki.join(name).display().to_string();
    let mut cmd = Command::new(bin.join("kube-apiserver"));
    cmd.arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!(
            "--cert-dir={}",
            dir.join("apiserver-certs").display()
        ))
        .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
        .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
        .arg(format!("--client-ca-file={}", p("ca.crt")))
        .arg("--authorization-mode=RBAC")
        .arg(format!(
            "--service-account-issuer=https://127.0.0.1:{port}/"
        ))
        .arg(format!("--service-account-key-file={}", p("sa.pub")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            p("sa.key")
        ))
        .arg(format!(
            "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
        ))
        .arg("--allow-privileged=true")
        .arg("--disable-admission-plugins=ServiceAccount")
        // As on OpenShift and hardened clusters: owner references that block
        // deletion need `update` on the owner's finalizers (the controller's
        // RBAC must not rely on it being off).
        .arg("--enable-admission-plugins=OwnerReferencesPermissionEnforcement")
        .arg("--v=1");
    Supervised::spawn("kube-apiserver", cmd, &dir.join("kube-apiserver.log"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_bin_dir_names_the_setup_command() {
        let err = kube_bin_dir_from(None).unwrap_err().to_string();
        assert!(err.contains(BIN_DIR_ENV), "{err}");
        assert!(err.contains("scripts/deps.sh kube"), "{err}");
    }

    #[test]
    fn bin_dir_without_the_binaries_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = kube_bin_dir_from(Some(dir.path().into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no etcd"), "{err}");
    }

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports().unwrap();
        assert!(a != b && b != c && a != c);
    }
}

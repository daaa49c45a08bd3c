//! Pods in sandboxes, the way a container runtime runs them: each pod gets
//! its own network namespace (a veth on a per-kubelet bridge, its own pod
//! IP, its own loopback), each container its own mount and PID namespace
//! with the pod's volumes bind-mounted at exactly the paths the spec names
//! (`subPath`, `readOnly`), an overlay of the host as a read-only root
//! filesystem when `readOnlyRootFilesystem` says so, and the uid, gid and
//! fsGroup of its securityContext. So a pod runs from its spec unchanged: no
//! path or port rewriting, and a container cannot see what it does not mount.
//!
//! What stands in for the rest of a cluster:
//! - Egress beyond the bridge does not exist: pods have no default route, so
//!   nothing a workload tries reaches past this machine.
//! - Node-local loopback forwards ([`super::SandboxConfig::loopback_ports`]):
//!   `127.0.0.1:P` in every pod reaches `gateway:P`, for test servers a
//!   product only accepts on loopback in plain HTTP (the fake Slack).
//! - DNS is `/etc/hosts`: every Service with a ClusterIP gets an address on
//!   the bridge and its names (`svc`, `svc.ns`, `svc.ns.svc`,
//!   `svc.ns.svc.cluster.local`); a TCP forwarder per port sends each new
//!   connection to a Ready pod the selector picks (kube-proxy's job).
//! - The API server is reachable from pods at the bridge's gateway address
//!   (`KUBERNETES_SERVICE_HOST`), forwarded to its loopback port; its serving
//!   certificate must name that address ([`PodNetwork::gateway`]).
//! - Images are host files bind-mounted into the container (see
//!   [`super::LocalImage`]); the rest of the root is the host's, read-only.
//!
//! Needs root (namespaces, mounts, `ip`). Addresses are 10.250.N.0/24 on a
//! bridge this process creates and removes; nothing leaves the machine.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

/// Port the API server is forwarded on at the gateway address.
pub const API_SERVER_PORT: u16 = 6443;
const FIRST_POD_HOST: u8 = 10;
const FIRST_SERVICE_HOST: u8 = 200;

/// One bridge and its /24, the API server forwarder and the Service
/// forwarders. Dropping it removes the bridge and stops every forwarder.
pub struct PodNetwork {
    bridge: String,
    subnet: u8,
    state: Mutex<NetState>,
    tasks: Mutex<JoinSet<()>>,
    /// `true` while pods may reach the API server ([`PodNetwork::hold_api_server`]).
    api_open: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct NetState {
    next_pod: u8,
    next_service: u8,
    /// `namespace/name` → the Service's address on the bridge.
    services: HashMap<String, Ipv4Addr>,
}

impl std::fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetwork")
            .field("bridge", &self.bridge)
            .field("gateway", &self.gateway())
            .finish_non_exhaustive()
    }
}

impl PodNetwork {
    /// Create a bridge with a free 10.250.N.0/24.
    pub fn create() -> anyhow::Result<Arc<Self>> {
        let start = (std::process::id() % 250) as u8;
        let mut last = None;
        for i in 0..250u16 {
            let n = ((u16::from(start) + i) % 250 + 1) as u8;
            let bridge = format!("csw{n}");
            match ip(&["link", "add", &bridge, "type", "bridge"]) {
                Ok(()) => {
                    let net = Self {
                        bridge: bridge.clone(),
                        subnet: n,
                        state: Mutex::new(NetState {
                            next_pod: FIRST_POD_HOST,
                            next_service: FIRST_SERVICE_HOST,
                            services: HashMap::new(),
                        }),
                        tasks: Mutex::new(JoinSet::new()),
                        api_open: tokio::sync::watch::Sender::new(true),
                    };
                    // From here on Drop removes the bridge.
                    ip(&[
                        "addr",
                        "add",
                        &format!("{}/24", net.gateway()),
                        "dev",
                        &bridge,
                    ])?;
                    ip(&["link", "set", &bridge, "up"])?;
                    return Ok(Arc::new(net));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no free test bridge")))
            .context("create the pod network bridge (the sandboxed kubelet needs root and `ip`)")
    }

    /// The host's address on the bridge: pods reach the test's own servers
    /// (API server, stub model, fake Slack) here.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.subnet, 1)
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.subnet, host)
    }

    /// Forward `gateway:API_SERVER_PORT` to the API server on loopback.
    pub async fn forward_api_server(&self, api_url: &str) -> anyhow::Result<()> {
        let target: SocketAddr = api_url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("API server URL {api_url} is not https://IP:PORT"))?;
        let listen = SocketAddr::V4(SocketAddrV4::new(self.gateway(), API_SERVER_PORT));
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("bind {listen}"))?;
        let open = self.api_open.subscribe();
        self.spawn(forward(listener, move || {
            let (t, mut open) = (target, open.clone());
            async move {
                open.wait_for(|o| *o).await.ok()?;
                Some(t)
            }
        }));
        Ok(())
    }

    /// With `true`, new connections from pods to the API server are held
    /// (accepted, never answered) until `false`: the API server unreachable,
    /// as in a control-plane outage. Established connections are untouched.
    pub fn hold_api_server(&self, hold: bool) {
        self.api_open.send_replace(!hold);
    }

    /// The address Service `ns/name` got on the bridge, once a pod was
    /// started after it was created (see [`PodNetwork::services`]).
    pub fn service_addr(&self, ns: &str, name: &str) -> Option<Ipv4Addr> {
        lock(&self.state)
            .services
            .get(&format!("{ns}/{name}"))
            .copied()
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        lock(&self.tasks).spawn(f);
    }

    /// Give every ClusterIP Service of `ns` an address and forwarders (once),
    /// and return `/etc/hosts` lines for them.
    pub async fn services(&self, client: &Client, ns: &str) -> anyhow::Result<String> {
        let list = Api::<Service>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .context("list services")?;
        let mut hosts = String::new();
        for svc in list {
            let name = svc.name_any();
            let Some(spec) = svc.spec.clone() else {
                continue;
            };
            if spec.cluster_ip.as_deref() == Some("None") || spec.selector.is_none() {
                continue;
            }
            let key = format!("{ns}/{name}");
            let (addr, new) = {
                let mut st = lock(&self.state);
                match st.services.get(&key) {
                    Some(a) => (*a, false),
                    None => {
                        let host = st.next_service;
                        st.next_service = st
                            .next_service
                            .checked_add(1)
                            .context("too many services")?;
                        let a = self.addr(host);
                        st.services.insert(key.clone(), a);
                        (a, true)
                    }
                }
            };
            if new {
                ip(&["addr", "add", &format!("{addr}/32"), "dev", &self.bridge])?;
                for port in spec.ports.iter().flatten() {
                    let listen_port = u16::try_from(port.port).context("service port")?;
                    let listener = TcpListener::bind((addr, listen_port))
                        .await
                        .with_context(|| format!("bind service {key} {addr}:{listen_port}"))?;
                    let target = port.target_port.clone();
                    let port_name = port.name.clone();
                    let selector = spec.selector.clone().unwrap_or_default();
                    let client = client.clone();
                    let ns = ns.to_string();
                    self.spawn(forward(listener, move || {
                        let (client, ns, selector, target, port_name) = (
                            client.clone(),
                            ns.clone(),
                            selector.clone(),
                            target.clone(),
                            port_name.clone(),
                        );
                        async move {
                            endpoint(
                                &client,
                                &ns,
                                &selector,
                                target.as_ref(),
                                port_name,
                                listen_port,
                            )
                            .await
                        }
                    }));
                }
                tracing::info!(service = %key, %addr, "test kubelet serves a service");
            }
            let _ = writeln!(
                hosts,
                "{addr} {name} {name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local"
            );
        }
        Ok(hosts)
    }

    fn next_pod_ip(&self) -> anyhow::Result<Ipv4Addr> {
        let mut st = lock(&self.state);
        let host = st.next_pod;
        if host >= FIRST_SERVICE_HOST {
            bail!("pod network {} has no free pod address", self.bridge);
        }
        st.next_pod += 1;
        Ok(self.addr(host))
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        lock(&self.tasks).abort_all();
        if let Err(e) = ip(&["link", "del", &self.bridge]) {
            tracing::warn!(bridge = %self.bridge, error = %format!("{e:#}"), "could not remove the test bridge");
        }
    }
}

/// A Ready pod matching `selector`, and the port `target` names on it.
async fn endpoint(
    client: &Client,
    ns: &str,
    selector: &BTreeMap<String, String>,
    target: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    port_name: Option<String>,
    service_port: u16,
) -> Option<SocketAddr> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
        .ok()?;
    let mut ready: Vec<Pod> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && super::pod_is_ready(p))
        .collect();
    ready.sort_by_key(|p| p.name_any());
    let pod = ready.first()?;
    let ip: Ipv4Addr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    let named = |name: &str| {
        pod.spec.as_ref()?.containers.iter().find_map(|c| {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
        })
    };
    let port = match target {
        Some(IntOrString::Int(p)) => u16::try_from(*p).ok()?,
        Some(IntOrString::String(name)) => named(name)?,
        None => port_name.as_deref().and_then(named).unwrap_or(service_port),
    };
    Some(SocketAddr::from((ip, port)))
}

/// Accept connections and splice each to wherever `target` says now.
async fn forward<F, Fut>(listener: TcpListener, target: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<SocketAddr>> + Send,
{
    let mut conns = JoinSet::new();
    loop {
        let (mut inbound, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "test forwarder accept failed");
                continue;
            }
        };
        let Some(to) = target().await else {
            // No endpoint: refuse, as a Service without Ready pods does.
            continue;
        };
        conns.spawn(async move {
            if let Ok(Ok(mut outbound)) =
                tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(to))
                    .await
            {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

/// One pod's network namespace, held by a pause process, and its address.
pub(super) struct PodSandbox {
    pause: Child,
    /// Loopback forwards into this pod; aborted with it.
    forwards: JoinSet<()>,
    pub ip: Ipv4Addr,
    /// `/etc/hosts` of every container of the pod.
    pub hosts_file: PathBuf,
}

impl PodSandbox {
    pub async fn create(
        net: &PodNetwork,
        client: &Client,
        pod: &Pod,
        pod_dir: &Path,
        loopback_ports: &[u16],
    ) -> anyhow::Result<Self> {
        let ns = pod.namespace().unwrap_or_default();
        let ip_addr = net.next_pod_ip()?;
        let pause = Command::new("unshare")
            .args(["--net", "--", "sleep", "2147483647"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start the pod's pause process (unshare --net)")?;
        let pid = pause.id().context("pause process has no pid")?.to_string();
        // The namespace exists once unshare has exec'd sleep.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let own = std::fs::read_link("/proc/self/ns/net").ok();
        loop {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            if theirs.is_some() && theirs != own {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("pause process {pid} never entered its own network namespace");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let host_if = format!("v{}p{}", net.subnet, ip_addr.octets()[3]);
        let _ = ip(&["link", "del", &host_if]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &pid,
        ])?;
        ip(&["link", "set", &host_if, "master", &net.bridge, "up"])?;
        // No default route: the /24 is all a pod can reach.
        let cidr = format!("{ip_addr}/24");
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", cidr.as_str(), "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
        ] {
            let mut full = vec!["-t", pid.as_str(), "-n", "ip"];
            full.extend(args);
            run("nsenter", &full)?;
        }
        let mut hosts = format!(
            "127.0.0.1 localhost\n::1 localhost\n{ip_addr} {}\n",
            pod.name_any()
        );
        hosts.push_str(&net.services(client, &ns).await?);
        let hosts_file = pod_dir.join("etc-hosts");
        std::fs::write(&hosts_file, hosts).context("write the pod's /etc/hosts")?;
        set_mode(&hosts_file, 0o644)?;
        let mut forwards = JoinSet::new();
        for &port in loopback_ports {
            let listener = listen_in(&format!("/proc/{pid}/ns/net"), port)?;
            let to = SocketAddr::from((net.gateway(), port));
            forwards.spawn(forward(listener, move || async move { Some(to) }));
        }
        Ok(Self {
            pause,
            forwards,
            ip: ip_addr,
            hosts_file,
        })
    }

    pub fn netns(&self) -> anyhow::Result<String> {
        Ok(format!(
            "/proc/{}/ns/net",
            self.pause.id().context("pause process gone")?
        ))
    }
}

impl Drop for PodSandbox {
    fn drop(&mut self) {
        self.forwards.abort_all();
    }
}

/// A listener on `127.0.0.1:port` inside the network namespace `netns`:
/// a socket belongs to the namespace it was made in, so a thread enters it,
/// binds, and ends; the listener then serves from the host's runtime.
fn listen_in(netns: &str, port: u16) -> anyhow::Result<TcpListener> {
    let path = netns.to_string();
    let bound = std::thread::spawn(move || -> anyhow::Result<std::net::TcpListener> {
        let ns = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("enter {path}"))?;
        let l = std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("bind 127.0.0.1:{port} in {path}"))?;
        l.set_nonblocking(true).context("nonblocking listener")?;
        Ok(l)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread binding in {netns} panicked"))??;
    TcpListener::from_std(bound).context("adopt the pod's loopback listener")
}

/// How one container runs inside its pod's sandbox.
#[derive(Clone, Debug)]
pub struct ContainerSandbox {
    pub netns: String,
    pub hosts_file: PathBuf,
    /// Scratch space for this container's root overlay.
    pub scratch: PathBuf,
    /// Container path → host path, with read-only flags; image files first.
    pub binds: Vec<Bind>,
    pub read_only_root: bool,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct Bind {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

impl ContainerSandbox {
    /// `nsenter … unshare … sh SCRIPT`: the script builds the container's
    /// root and execs the program as the container's user.
    pub fn command(
        &self,
        program: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        workdir: &str,
    ) -> anyhow::Result<Command> {
        std::fs::create_dir_all(&self.scratch)
            .with_context(|| format!("create {}", self.scratch.display()))?;
        let script_path = self.scratch.with_extension("sh");
        std::fs::write(&script_path, self.script(program, args, env, workdir))
            .with_context(|| format!("write {}", script_path.display()))?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns))
            .args([
                "unshare",
                "--mount",
                "--pid",
                "--fork",
                "--kill-child=SIGKILL",
                "--propagation",
                "private",
                "sh",
            ])
            .arg(&script_path)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        Ok(cmd)
    }

    fn script(
        &self,
        program: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        workdir: &str,
    ) -> String {
        let b = q(&self.scratch.display().to_string());
        let mut s = String::from("set -eu\n");
        let _ = writeln!(s, "B={b}\nmount -t tmpfs -o mode=0755 tmpfs \"$B\"");
        s.push_str("mkdir \"$B/upper\" \"$B/work\" \"$B/root\"\n");
        s.push_str(
            "mount -t overlay overlay -o lowerdir=/,upperdir=\"$B/upper\",workdir=\"$B/work\" \"$B/root\"\n",
        );
        s.push_str("R=\"$B/root\"\n");
        s.push_str("mount -t proc proc \"$R/proc\"\nmount --rbind /dev \"$R/dev\"\n");
        // The host's /tmp, /run and home directories are not the container's.
        for hidden in ["/tmp", "/run", "/root", "/home", "/var/tmp", "/work"] {
            let _ = writeln!(
                s,
                "[ -d \"$R{hidden}\" ] && mount -t tmpfs -o mode=1777 tmpfs \"$R{hidden}\" || true"
            );
        }
        let mut binds: Vec<Bind> = self
            .binds
            .iter()
            .map(|b| Bind {
                container: resolve_in_root(&b.container),
                ..b.clone()
            })
            .collect();
        binds.sort_by_key(|b| b.container.matches('/').count());
        for bind in &binds {
            let dest = format!("\"$R\"{}", q(&bind.container));
            let host = q(&bind.host.display().to_string());
            let _ = writeln!(
                s,
                "if [ -d {host} ]; then mkdir -p {dest}; else mkdir -p \"$(dirname {dest})\"; [ -e {dest} ] || touch {dest}; fi"
            );
            let _ = writeln!(s, "mount --bind {host} {dest}");
        }
        for bind in binds.iter().filter(|b| b.read_only) {
            let dest = format!("\"$R\"{}", q(&bind.container));
            let _ = writeln!(s, "mount -o remount,bind,ro {dest}");
        }
        let _ = writeln!(
            s,
            "mount --bind {} \"$R/etc/hosts\"",
            q(&self.hosts_file.display().to_string())
        );
        if self.read_only_root {
            s.push_str("mount -o remount,ro \"$R\"\n");
            for hidden in ["/tmp", "/run", "/var/tmp"] {
                // Unless a volume is mounted there, these are read-only too.
                if !binds.iter().any(|b| b.container == hidden) {
                    let _ = writeln!(
                        s,
                        "mount -o remount,bind,ro \"$R{hidden}\" 2>/dev/null || true"
                    );
                }
            }
        }
        let groups: Vec<String> = std::iter::once(self.gid)
            .chain(self.groups.iter().copied())
            .map(|g| g.to_string())
            .collect();
        let _ = write!(
            s,
            "exec chroot --userspec={}:{} --groups={} \"$R\" /bin/sh -c 'cd \"$0\" && exec \"$@\"' {} /usr/bin/env -i",
            self.uid,
            self.gid,
            groups.join(","),
            q(workdir)
        );
        for (k, v) in env {
            let _ = write!(s, " {}", q(&format!("{k}={v}")));
        }
        let _ = write!(s, " {}", q(program));
        for a in args {
            let _ = write!(s, " {}", q(a));
        }
        s.push('\n');
        s
    }
}

/// `path` with symlinks resolved as they are inside the container's root
/// (the host's, under the overlay): `/var/run/x` is `/run/x` on Debian. A
/// bind onto the unresolved path would follow an absolute link out of the
/// root before the container's `chroot`.
fn resolve_in_root(path: &str) -> String {
    let mut out = PathBuf::from("/");
    let mut rest: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    rest.reverse();
    let mut hops = 0;
    while let Some(part) = rest.pop() {
        let next = out.join(&part);
        match std::fs::read_link(&next) {
            Ok(target) if hops < 32 => {
                hops += 1;
                if target.is_absolute() {
                    out = PathBuf::from("/");
                }
                let parts: Vec<String> = target
                    .to_string_lossy()
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect();
                rest.extend(parts.into_iter().rev());
            }
            _ if part == ".." => {
                out.pop();
            }
            _ => out = next,
        }
    }
    out.display().to_string()
}

/// Single-quote for sh.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub(super) fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bind_targets_follow_the_roots_own_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
        let through = format!("{}/link/x", dir.path().display());
        assert_eq!(
            resolve_in_root(&through),
            format!("{}/x", dir.path().display())
        );
        assert_eq!(resolve_in_root("/no/such/path"), "/no/such/path");
    }

    #[test]
    fn quoting_survives_single_quotes_and_spaces() {
        assert_eq!(q("a b"), "'a b'");
        assert_eq!(q("it's"), "'it'\\''s'");
    }

    #[test]
    fn the_script_mounts_parents_before_children_and_seals_read_only_mounts_last() {
        let sb = ContainerSandbox {
            netns: "/proc/1/ns/net".into(),
            hosts_file: "/p/hosts".into(),
            scratch: "/p/c".into(),
            binds: vec![
                Bind {
                    host: "/v/trust".into(),
                    container: "/etc/clawswarm/trust".into(),
                    read_only: true,
                },
                Bind {
                    host: "/v/data".into(),
                    container: "/data".into(),
                    read_only: false,
                },
            ],
            read_only_root: true,
            uid: 65532,
            gid: 65532,
            groups: vec![65532],
        };
        let env = BTreeMap::from([("A".to_string(), "x y".to_string())]);
        let s = sb.script("/bin/prog", &["--flag".into()], &env, "/");
        let data = s.find("mount --bind '/v/data'").unwrap();
        let trust = s.find("mount --bind '/v/trust'").unwrap();
        let sealed = s
            .find("remount,bind,ro \"$R\"'/etc/clawswarm/trust'")
            .unwrap();
        assert!(data < trust && trust < sealed, "{s}");
        assert!(s.contains("mount -o remount,ro \"$R\""), "{s}");
        assert!(s.contains("--userspec=65532:65532"), "{s}");
        assert!(s.ends_with("'A=x y' '/bin/prog' '--flag'\n"), "{s}");
    }
}

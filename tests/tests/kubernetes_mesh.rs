//! The whole path on a real API server: the Kubernetes runtime (as the
//! controller's ServiceAccount) makes the pod, the test kubelet runs the
//! real `clawswarm-sidecar` and the stub model as its containers with the
//! pod's env and pod-bound projected token, the sidecar gets its certificate
//! through `Identity.Certify` → TokenReview and opens AgentLink, and turns go
//! through the controller's Router — including waking a suspended agent.
//!
//! The controller's servers are assembled here from its library (identity,
//! mesh, router, leadership) the way `app.rs` assembles them.
//! Needs `eval "$(scripts/deps.sh kube)"`; fails (never skips) without it.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use clawswarm_certs::tls_incoming;
use clawswarm_certs::{AgentId, ClientAuth, CredentialStore, LeafPolicy, SpiffeId, TrustDomain};
use clawswarm_controller::identity::IdentityService;
use clawswarm_controller::mesh::{AgentLinkService, Mesh, MeshConfig, TurnEvent, TurnSpec};
use clawswarm_controller::metrics::Metrics;
use clawswarm_controller::router::{Router, RouterConfig};
use clawswarm_controller::runtime::kubernetes::{
    self, CommonSettings, KubernetesArgs, KubernetesRuntime, issuer, leader,
};
use clawswarm_controller::runtime::{AgentSpec, Runtime};
use clawswarm_proto::v1::Outcome;
use clawswarm_proto::v1::agent_link_server::AgentLinkServer;
use clawswarm_proto::v1::identity_server::IdentityServer;
use clawswarm_tests::control_plane::{self, ControlPlane, free_ports};
use clawswarm_tests::harness::binaries;
use clawswarm_tests::kubelet::{KubeletConfig, LaunchHook, LocalImage, TestKubelet};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, ResourceExt as _};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const NS: &str = "clawswarm";
const WAIT: Duration = Duration::from_secs(120);
const SIDECAR_IMAGE: &str = "ghcr.io/clawswarm/clawswarm-sidecar:0.1.0";
const STUB_IMAGE: &str = "example.invalid/stub-model:1";

const STUB_TEMPLATE: &str = r#"
apiVersion: clawswarm.dev/v1alpha1
kind: AgentTemplate
metadata:
  name: stub
  namespace: clawswarm
spec:
  description: "The stub model as the workload, through the generic responses adapter"
  workload:
    image: example.invalid/stub-model:1
    adapter: responses
    port: 18789
    model: stub
"#;

fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

async fn cluster() -> (ControlPlane, TestKubelet) {
    clawswarm_tests::trace_init();
    let bins = binaries().unwrap().clone();
    let cp = ControlPlane::start().await.unwrap();
    let yaml = cp.kustomize_build(&deploy_dir()).await.unwrap();
    control_plane::apply_yaml(&cp.admin(), &yaml, "clawswarm-test")
        .await
        .unwrap();
    control_plane::apply_yaml(&cp.admin(), STUB_TEMPLATE, "clawswarm-test")
        .await
        .unwrap();

    // All pods share loopback: each pod gets its own workload port, and the
    // sidecar's own listeners take any free port.
    let ports: Arc<Mutex<HashMap<String, u16>>> = Arc::default();
    let sidecar = bins.sidecar.clone();
    let hook: LaunchHook = Arc::new(move |pod, launch| {
        let uid = pod.uid().unwrap_or_default();
        let port = *ports
            .lock()
            .unwrap()
            .entry(uid)
            .or_insert_with(|| free_ports::<1>().map(|[p]| p).unwrap_or(0));
        match (launch.container.as_str(), launch.init) {
            // `clawswarm-sidecar init` does not exist yet: prepare the data
            // directories it would.
            ("init", true) => {
                launch.program = "/bin/sh".into();
                launch.args = vec![
                    "-c".into(),
                    "mkdir -p \"$CLAWSWARM_DATA_DIR/sidecar\" \"$CLAWSWARM_DATA_DIR/home\"".into(),
                ];
            }
            ("sidecar", _) => {
                launch.program = sidecar.clone();
                launch.env.insert(
                    "CLAWSWARM_WORKLOAD_URL".into(),
                    format!("http://127.0.0.1:{port}"),
                );
                launch
                    .env
                    .insert("CLAWSWARM_HTTP_ADDR".into(), "127.0.0.1:0".into());
                launch
                    .env
                    .insert("CLAWSWARM_DEBUG_ADDR".into(), "127.0.0.1:0".into());
                launch.env.insert("CLAWSWARM_LOG".into(), "info".into());
            }
            ("workload", _) => {
                let log = launch.mounts.rewrite("/data/model.jsonl");
                launch.args = vec![
                    "--listen".into(),
                    format!("127.0.0.1:{port}"),
                    "--log".into(),
                    log,
                ];
            }
            _ => {}
        }
        Ok(())
    });
    let images = HashMap::from([
        (SIDECAR_IMAGE.to_string(), LocalImage::new(&bins.sidecar)),
        (STUB_IMAGE.to_string(), LocalImage::new(&bins.stub_model)),
    ]);
    let kubelet = TestKubelet::start(
        cp.admin(),
        KubeletConfig {
            namespace: NS.into(),
            node_name: "node-1".into(),
            images,
            hook: Some(hook),
            root: cp.dir().join("kubelet"),
            sandbox: None,
        },
    )
    .await
    .unwrap();
    (cp, kubelet)
}

/// The controller's moving parts, as `app.rs` wires them, on fixed ports.
struct Controller {
    runtime: Arc<KubernetesRuntime>,
    authority: clawswarm_certs::Authority,
    mesh_port: u16,
    mesh: Mesh,
    router: Router,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Controller {
    async fn start(cp: &ControlPlane, mesh_port: u16, identity_port: u16) -> Self {
        Self::start_behind(cp, (mesh_port, identity_port), (mesh_port, identity_port)).await
    }

    /// Listen on `listen`; tell sidecars to dial `advertised` (a Service).
    async fn start_behind(cp: &ControlPlane, listen: (u16, u16), advertised: (u16, u16)) -> Self {
        let (mesh_port, identity_port) = listen;
        let client = cp
            .client_for_service_account(NS, "clawswarm-controller")
            .await
            .unwrap();
        let td = TrustDomain::new("clawswarm.local".to_string()).unwrap();
        let authority = issuer::load_or_create_authority(&client, NS, "clawswarm-issuer", &td)
            .await
            .unwrap();
        let bundle = authority.trust_bundle_pem().to_owned();
        issuer::publish_trust_bundle(&client, NS, "clawswarm-trust-bundle", &bundle)
            .await
            .unwrap();
        let args = KubernetesArgs {
            sidecar_image: SIDECAR_IMAGE.into(),
            image_pull_policy: None,
            agent_service_account: "clawswarm-agent".into(),
            service_name: "clawswarm-controller".into(),
            agent_controller_url: Some(format!("https://127.0.0.1:{}", advertised.0)),
            agent_identity_url: Some(format!("https://127.0.0.1:{}", advertised.1)),
            issuer_secret: "clawswarm-issuer".into(),
            trust_bundle_config_map: "clawswarm-trust-bundle".into(),
            token_audience: "clawswarm-identity".into(),
            shared_secret: "clawswarm-shared-secrets".into(),
            pod_name: None,
            lease_name: "clawswarm-controller-leader".into(),
            lease_duration: Duration::from_secs(4),
            tokenreview_cache_ttl: Duration::from_secs(30),
            idle_check_interval: Duration::from_secs(1),
            offboarding_secret_file: None,
        };
        let common = CommonSettings {
            namespace: NS.into(),
            trust_domain: td.to_string(),
            mesh_port,
            identity_port,
        };
        let runtime = kubernetes::build(&args, &common, client).await.unwrap();
        let dyn_runtime: Arc<dyn Runtime> = runtime.clone();

        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let policy = LeafPolicy {
            lifetime: Duration::from_secs(3600),
            dns_names: vec!["localhost".into()],
            ip_addresses: vec![IpAddr::from([127, 0, 0, 1])],
            ..LeafPolicy::default()
        };
        let controller_id = SpiffeId::controller(td.clone(), NS.to_string()).unwrap();
        let store = CredentialStore::new(
            authority
                .issue(&controller_id, &policy, SystemTime::now())
                .unwrap(),
        );
        let (mesh, outputs) = Mesh::new(
            MeshConfig::new(td.clone(), NS),
            metrics.clone(),
            stop.clone(),
        );
        let router = Router::new(
            dyn_runtime.clone(),
            mesh.clone(),
            RouterConfig {
                connect_timeout: WAIT,
                patience_interval: Duration::from_secs(5),
            },
        );

        let mesh_server = tonic::transport::Server::builder().add_service(AgentLinkServer::new(
            AgentLinkService::new(mesh.clone(), dyn_runtime.clone()),
        ));
        let identity = IdentityService::new(
            authority.clone(),
            dyn_runtime.authenticator(),
            NS.into(),
            LeafPolicy {
                lifetime: Duration::from_secs(3600),
                ..LeafPolicy::default()
            },
            metrics,
        );
        let identity_server =
            tonic::transport::Server::builder().add_service(IdentityServer::new(identity));
        let mesh_tls =
            clawswarm_certs::server_config(store.clone(), &bundle, ClientAuth::Required).unwrap();
        let identity_tls =
            clawswarm_certs::server_config(store, &bundle, ClientAuth::Optional).unwrap();
        let bind = |port: u16| async move {
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .unwrap()
        };
        let mesh_in = tls_incoming(
            "mesh",
            bind(mesh_port).await,
            mesh_tls,
            stop.clone(),
            &tasks,
        );
        let identity_in = tls_incoming(
            "identity",
            bind(identity_port).await,
            identity_tls,
            stop.clone(),
            &tasks,
        );
        let s = stop.clone();
        tasks.spawn(async move {
            mesh_server
                .serve_with_incoming_shutdown(mesh_in, s.cancelled_owned())
                .await
                .unwrap()
        });
        let s = stop.clone();
        tasks.spawn(async move {
            identity_server
                .serve_with_incoming_shutdown(identity_in, s.cancelled_owned())
                .await
                .unwrap()
        });
        tasks.spawn(leader::follow_leadership(
            runtime.leadership(),
            mesh.clone(),
            stop.clone(),
        ));
        let rt = runtime.clone();
        let s = stop.clone();
        tasks.spawn(async move { rt.run(s).await.unwrap() });
        tasks.spawn(clawswarm_controller::runtime::usage::record(
            outputs.usage,
            runtime.clone(),
            stop.clone(),
        ));
        Self {
            runtime,
            authority,
            mesh_port,
            mesh,
            router,
            stop,
            tasks,
        }
    }

    async fn stop(self) {
        self.mesh.set_accepting(false);
        self.mesh.drain("test controller stopping").await;
        self.stop.cancel();
        self.tasks.close();
        tokio::time::timeout(WAIT, self.tasks.wait()).await.unwrap();
    }

    /// Send a turn and read it to the end: (progress, reply text, outcome).
    async fn turn(&self, agent: &AgentId, text: &str) -> (Vec<String>, String, Outcome) {
        let spec = TurnSpec {
            turn_id: None,
            conversation: "dm-1".into(),
            text: text.into(),
            reply_target: Vec::new(),
        };
        let mut stream = self.router.send_turn(agent, spec).await.unwrap();
        let (mut progress, mut reply) = (Vec::new(), String::new());
        loop {
            match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
                Some(TurnEvent::Accepted { .. }) => {}
                Some(TurnEvent::Progress(p)) => progress.push(p),
                Some(TurnEvent::Chunk { delta, .. }) => reply.push_str(&delta),
                Some(TurnEvent::End(end)) => {
                    assert!(
                        end.error.is_empty() || end.outcome != Outcome::Ok,
                        "{end:?}"
                    );
                    return (progress, reply, end.outcome);
                }
                Some(TurnEvent::HandedOver) => panic!("turn handed over to another leader"),
                None => panic!("turn stream ended without End"),
            }
        }
    }
}

fn id(name: &str) -> AgentId {
    AgentId::new(NS.to_string(), name.to_string()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecar_certifies_through_tokenreview_answers_and_wakes_from_suspend() {
    let (cp, kubelet) = cluster().await;
    let [mesh_port, identity_port] = free_ports().unwrap();
    let ctl = Controller::start(&cp, mesh_port, identity_port).await;
    let ivan = id("ivan");
    ctl.runtime
        .provision(AgentSpec {
            id: ivan.clone(),
            owner: "U9".into(),
            template: "stub".into(),
        })
        .await
        .unwrap();

    // The sidecar in the pod certifies with its pod-bound token and links up.
    let connected = tokio::time::timeout(WAIT, ctl.mesh.wait_connected(&ivan, WAIT)).await;
    let pods = kubelet.running_pods();
    let logs: Vec<String> = pods.iter().map(|p| kubelet.logs(p, "sidecar")).collect();
    assert!(
        matches!(connected, Ok(Ok(()))),
        "not connected: {connected:?}; pods {pods:?}; sidecar logs:\n{}",
        logs.join("\n---\n")
    );

    let (_, reply, outcome) = ctl.turn(&ivan, "hello from the test").await;
    assert_eq!(outcome, Outcome::Ok);
    assert!(!reply.is_empty());

    // Suspend: pod gone, volume kept; a message wakes the agent and is answered.
    ctl.runtime.suspend(&ivan).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while ctl.mesh.state(&ivan).connected {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap();
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(cp.admin(), NS);
    assert!(pvcs.get_opt("ivan-data").await.unwrap().is_some());
    let (progress, reply, outcome) = ctl.turn(&ivan, "are you awake").await;
    assert_eq!(outcome, Outcome::Ok, "progress: {progress:?}");
    assert!(!reply.is_empty());
    assert!(
        progress.iter().any(|p| p.contains("Waking")),
        "{progress:?}"
    );

    // A controller restart: the streams come back to the new process, and
    // the mapping is rebuilt from the API.
    ctl.stop().await;
    let ctl = Controller::start(&cp, mesh_port, identity_port).await;
    tokio::time::timeout(WAIT, ctl.mesh.wait_connected(&ivan, WAIT))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ctl.runtime.find_by_owner("U9").await.unwrap().unwrap().id,
        ivan
    );
    let (_, _, outcome) = ctl.turn(&ivan, "still there").await;
    assert_eq!(outcome, Outcome::Ok);
    ctl.stop().await;
}

/// A stand-in for the mesh Service: forwards TCP to whichever controller
/// the test points it at (the Service follows the leader label).
fn service(
    listener: tokio::net::TcpListener,
    target: tokio::sync::watch::Receiver<u16>,
    tasks: &TaskTracker,
) {
    let inner = tasks.clone();
    tasks.spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let port = *target.borrow();
            inner.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

/// AgentLink.Connect straight to one controller with a valid agent certificate.
async fn link_status(ctl: &Controller, agent: &AgentId) -> tonic::Code {
    use clawswarm_certs::{ChannelOptions, ServerIdentity};
    let td = TrustDomain::new("clawswarm.local".to_string()).unwrap();
    let creds = ctl
        .authority
        .issue(
            &SpiffeId::agent(td.clone(), agent.clone()),
            &LeafPolicy::default(),
            SystemTime::now(),
        )
        .unwrap();
    let server = SpiffeId::controller(td, NS.to_string()).unwrap();
    let tls = clawswarm_certs::client_config(
        Some(CredentialStore::new(creds)),
        ctl.authority.trust_bundle_pem(),
        ServerIdentity::Spiffe(server),
    )
    .unwrap();
    let url = format!("https://127.0.0.1:{}", ctl.mesh_port);
    let channel = clawswarm_certs::mtls_channel(&url, tls, &ChannelOptions::default())
        .await
        .unwrap();
    let hello = clawswarm_proto::v1::SidecarFrame {
        frame: Some(clawswarm_proto::v1::sidecar_frame::Frame::Hello(
            clawswarm_proto::v1::Hello {
                agent: agent.to_string(),
                version: "test".into(),
                capabilities: vec![],
                pending: vec![],
                library_skills: vec![],
            },
        )),
    };
    let mut client = clawswarm_proto::v1::agent_link_client::AgentLinkClient::new(channel);
    match client.connect(tokio_stream::iter(vec![hello])).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn standby_refuses_links_then_takes_over_and_the_sidecar_moves() {
    let (cp, _kubelet) = cluster().await;
    let [
        svc_mesh,
        svc_identity,
        a_mesh,
        a_identity,
        b_mesh,
        b_identity,
    ] = free_ports().unwrap();
    let (to_mesh, mesh_target) = tokio::sync::watch::channel(a_mesh);
    let (to_identity, identity_target) = tokio::sync::watch::channel(a_identity);
    let proxies = TaskTracker::new();
    let bind = |port: u16| tokio::net::TcpListener::bind(("127.0.0.1", port));
    service(bind(svc_mesh).await.unwrap(), mesh_target, &proxies);
    service(bind(svc_identity).await.unwrap(), identity_target, &proxies);

    let a = Controller::start_behind(&cp, (a_mesh, a_identity), (svc_mesh, svc_identity)).await;
    tokio::time::timeout(WAIT, a.runtime.leadership().wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    let b = Controller::start_behind(&cp, (b_mesh, b_identity), (svc_mesh, svc_identity)).await;
    let judy = id("judy");
    a.runtime
        .provision(AgentSpec {
            id: judy.clone(),
            owner: "U10".into(),
            template: "stub".into(),
        })
        .await
        .unwrap();
    tokio::time::timeout(WAIT, a.mesh.wait_connected(&judy, WAIT))
        .await
        .unwrap()
        .unwrap();
    assert!(!*b.runtime.leadership().borrow());
    // The standby is up (it answers) but refuses agent links: retry elsewhere.
    assert_eq!(link_status(&b, &judy).await, tonic::Code::Unavailable);
    assert_eq!(a.turn(&judy, "before failover").await.2, Outcome::Ok);

    // The leader goes away; the standby takes the lease, the Service follows
    // its label, and the sidecar reconnects to it.
    a.stop().await;
    tokio::time::timeout(WAIT, b.runtime.leadership().wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    to_mesh.send(b_mesh).unwrap();
    to_identity.send(b_identity).unwrap();
    tokio::time::timeout(WAIT, b.mesh.wait_connected(&judy, WAIT))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.turn(&judy, "after failover").await.2, Outcome::Ok);
    b.stop().await;
    proxies.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_loses_its_lease_without_exiting_drains_and_the_sidecar_moves() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::api::{Patch, PatchParams};

    let (cp, _kubelet) = cluster().await;
    let [
        svc_mesh,
        svc_identity,
        a_mesh,
        a_identity,
        b_mesh,
        b_identity,
    ] = free_ports().unwrap();
    let (to_mesh, mesh_target) = tokio::sync::watch::channel(a_mesh);
    let (to_identity, identity_target) = tokio::sync::watch::channel(a_identity);
    let proxies = TaskTracker::new();
    let bind = |port: u16| tokio::net::TcpListener::bind(("127.0.0.1", port));
    service(bind(svc_mesh).await.unwrap(), mesh_target, &proxies);
    service(bind(svc_identity).await.unwrap(), identity_target, &proxies);

    let a = Controller::start_behind(&cp, (a_mesh, a_identity), (svc_mesh, svc_identity)).await;
    tokio::time::timeout(WAIT, a.runtime.leadership().wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    let b = Controller::start_behind(&cp, (b_mesh, b_identity), (svc_mesh, svc_identity)).await;
    let kim = id("kim");
    a.runtime
        .provision(AgentSpec {
            id: kim.clone(),
            owner: "U11".into(),
            template: "stub".into(),
        })
        .await
        .unwrap();
    tokio::time::timeout(WAIT, a.mesh.wait_connected(&kim, WAIT))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.turn(&kim, "before the lease moves").await.2, Outcome::Ok);

    // An admin hands the Lease to someone else; `a` keeps running.
    let leases = Api::<Lease>::namespaced(cp.admin(), NS);
    let now = serde_json::to_value(MicroTime(k8s_openapi::jiff::Timestamp::now())).unwrap();
    leases
        .patch(
            "clawswarm-controller-leader",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": { "holderIdentity": "an-admin", "renewTime": now }
            })),
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, a.runtime.leadership().wait_for(|l| !*l))
        .await
        .unwrap()
        .unwrap();
    // The former leader drained: the sidecar left it although its process
    // and its stream could have stayed up.
    tokio::time::timeout(WAIT, async {
        while a.mesh.state(&kim).connected {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the sidecar stayed on the former leader: it did not drain");
    assert!(!a.mesh.is_accepting());

    // The admin's lease lapses and a replica takes it. Both compete, as
    // client-go's electors do, so either may win; the Service follows the
    // leader label, and the sidecar reconnects to whichever leads.
    let (next, mesh_port, identity_port, other) = tokio::time::timeout(WAIT, async {
        loop {
            if *b.runtime.leadership().borrow() {
                return (&b, b_mesh, b_identity, &a);
            }
            if *a.runtime.leadership().borrow() {
                return (&a, a_mesh, a_identity, &b);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("no replica took the lapsed lease");
    to_mesh.send(mesh_port).unwrap();
    to_identity.send(identity_port).unwrap();
    tokio::time::timeout(WAIT, next.mesh.wait_connected(&kim, WAIT))
        .await
        .unwrap()
        .unwrap();
    assert!(!*other.runtime.leadership().borrow(), "two leaders");
    assert_eq!(
        next.turn(&kim, "after the lease moved").await.2,
        Outcome::Ok
    );
    b.stop().await;
    a.stop().await;
    proxies.close();
}

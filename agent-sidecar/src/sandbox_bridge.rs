//! Loopback across a sandbox's network namespace.
//!
//! A sandboxed local workload has a network namespace of its own: nothing
//! on the host's loopback (other agents' sidecars and gateways, the
//! controller) is reachable from it. It still needs its own sidecar's ports
//! (the model proxy, the notice receiver), and the sidecar needs the
//! workload's port. Each such route crosses the namespace as a Unix socket
//! in a directory both sides see:
//!
//! * `expose`: inside, listen on `127.0.0.1:P` and connect to `dir/x.sock`;
//!   outside (the sidecar), listen on `dir/x.sock` and connect to the
//!   sidecar's own `127.0.0.1:P`.
//! * `serve`: inside, listen on `dir/w.sock` and connect to the workload's
//!   `127.0.0.1:Q`; outside, listen on `127.0.0.1:Q` and connect to it.
//!
//! Only the routes the controller lists exist, so the workload reaches its
//! own sidecar and nothing else. Both halves live here so the two ends
//! cannot drift apart: `clawswarm-sidecar sandbox-bridge` runs the inside
//! half around the workload; `clawswarm-sidecar run` runs the outside half
//! (`CLAWSWARM_SANDBOX_ROUTES`).

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::Semaphore,
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Connections open at once per route; a runaway workload cannot exhaust
/// the sidecar's file descriptors through the bridge.
const MAX_CONNECTIONS: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which way a route carries connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The workload calls a sidecar port.
    Expose,
    /// The sidecar calls the workload's port.
    Serve,
}

/// One route: a loopback port, the same number on both sides of the
/// namespace, and the socket that carries it across.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub direction: Direction,
    pub tcp: SocketAddr,
    pub socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("sandbox route {0:?}: expected expose:ADDR=SOCKET or serve:ADDR=SOCKET")]
    Syntax(String),
    #[error("sandbox route {0:?}: the address must be a loopback ip:port")]
    NotLoopback(String),
    #[error("sandbox route {0:?}: the socket path must be absolute")]
    RelativeSocket(String),
    #[error("cannot listen on {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match self.direction {
            Direction::Expose => "expose",
            Direction::Serve => "serve",
        };
        write!(f, "{d}:{}={}", self.tcp, self.socket.display())
    }
}

impl std::str::FromStr for Route {
    type Err = BridgeError;

    fn from_str(s: &str) -> Result<Self, BridgeError> {
        let bad = || BridgeError::Syntax(s.to_owned());
        let (dir, rest) = s.split_once(':').ok_or_else(bad)?;
        let direction = match dir {
            "expose" => Direction::Expose,
            "serve" => Direction::Serve,
            _ => return Err(bad()),
        };
        let (addr, socket) = rest.split_once('=').ok_or_else(bad)?;
        let tcp: SocketAddr = addr
            .parse()
            .map_err(|_| BridgeError::NotLoopback(s.to_owned()))?;
        if !tcp.ip().is_loopback() {
            return Err(BridgeError::NotLoopback(s.to_owned()));
        }
        let socket = PathBuf::from(socket);
        if !socket.is_absolute() {
            return Err(BridgeError::RelativeSocket(s.to_owned()));
        }
        Ok(Self {
            direction,
            tcp,
            socket,
        })
    }
}

/// `;`-separated routes, as the controller passes them.
pub fn parse_routes(s: &str) -> Result<Vec<Route>, BridgeError> {
    s.split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::parse)
        .collect()
}

/// Which half of the bridge runs here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Around the workload, in its namespace.
    Inside,
    /// In the sidecar, on the host.
    Outside,
}

/// Bind every route's listener for `side` (all before any traffic, so a
/// missing one fails the start), then forward until `stop`.
pub async fn start(
    routes: &[Route],
    side: Side,
    stop: CancellationToken,
) -> Result<JoinSet<()>, BridgeError> {
    let mut tasks = JoinSet::new();
    for r in routes {
        let listen_tcp = matches!(
            (side, r.direction),
            (Side::Inside, Direction::Expose) | (Side::Outside, Direction::Serve)
        );
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let listener = if listen_tcp {
            let l = TcpListener::bind(r.tcp)
                .await
                .map_err(|source| BridgeError::Listen {
                    what: r.tcp.to_string(),
                    source,
                })?;
            Listener::Tcp(l, r.socket.clone())
        } else {
            Listener::Unix(bind_unix(&r.socket)?, r.tcp)
        };
        tasks.spawn(accept_loop(listener, limit, stop.clone()));
        debug!(route = %r, ?side, "sandbox route up");
    }
    Ok(tasks)
}

/// A socket left by an earlier run would make bind fail: it is ours to
/// replace (the directory is the agent's own).
fn bind_unix(path: &Path) -> Result<UnixListener, BridgeError> {
    let listen_err = |source| BridgeError::Listen {
        what: path.display().to_string(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_err(e)),
    }
    UnixListener::bind(path).map_err(listen_err)
}

/// A route's listening end, with where its connections go.
enum Listener {
    Tcp(TcpListener, PathBuf),
    Unix(UnixListener, SocketAddr),
}

/// An accepted connection, already paired with its far end's address.
enum Accepted {
    TcpToUnix(TcpStream, PathBuf),
    UnixToTcp(UnixStream, SocketAddr),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Accepted> {
        Ok(match self {
            Self::Tcp(l, to) => Accepted::TcpToUnix(l.accept().await?.0, to.clone()),
            Self::Unix(l, to) => Accepted::UnixToTcp(l.accept().await?.0, *to),
        })
    }
}

async fn accept_loop(listener: Listener, limit: Arc<Semaphore>, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        // Reap finished connections so the set stays the size of what is open.
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok(conn) => {
                let stop = stop.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        r = forward(conn) => if let Err(e) = r {
                            debug!(error = %e, "sandbox connection ended");
                        },
                    }
                });
            }
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                warn!(error = %e, "sandbox bridge accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    conns.shutdown().await;
}

async fn forward(conn: Accepted) -> std::io::Result<()> {
    let timed_out = |e| std::io::Error::new(std::io::ErrorKind::TimedOut, e);
    match conn {
        Accepted::TcpToUnix(mut inbound, path) => {
            let mut out = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&path))
                .await
                .map_err(timed_out)??;
            pump(&mut inbound, &mut out).await
        }
        Accepted::UnixToTcp(mut inbound, addr) => {
            let mut out = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(timed_out)??;
            pump(&mut inbound, &mut out).await
        }
    }
}

async fn pump<A, B>(a: &mut A, b: &mut B) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::io::copy_bidirectional(a, b).await.map(|_| ())
}

/// `clawswarm-sidecar sandbox-bridge`: the inside half, wrapped around the
/// workload's command inside its sandbox.
#[derive(clap::Args, Debug)]
pub struct InsideArgs {
    /// `expose:ADDR=SOCKET` or `serve:ADDR=SOCKET`; repeatable.
    #[arg(long = "route", required = true)]
    pub routes: Vec<String>,
    /// The workload's command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InsideError {
    #[error(transparent)]
    Route(#[from] BridgeError),
    #[error("cannot start the workload {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for the workload: {0}")]
    Wait(std::io::Error),
}

/// Bind the routes, run the command, and exit with it. Stop signals reach
/// the workload from the controller (it signals the whole process group),
/// so the bridge keeps carrying its traffic until the workload is gone.
pub async fn run_inside(args: InsideArgs) -> Result<i32, InsideError> {
    let routes = args
        .routes
        .iter()
        .map(|r| r.parse())
        .collect::<Result<Vec<Route>, _>>()?;
    let stop = CancellationToken::new();
    let mut tasks = start(&routes, Side::Inside, stop.clone()).await?;
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| InsideError::Spawn {
            program: String::new(),
            source: std::io::Error::other("no command"),
        })?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .spawn()
        .map_err(|source| InsideError::Spawn {
            program: program.clone(),
            source,
        })?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.map_err(InsideError::Wait)?,
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => None } } => {
                debug!("stop requested; waiting for the workload");
            }
        }
    };
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn routes_parse_and_refuse_what_is_not_loopback() {
        let r =
            parse_routes("expose:127.0.0.1:4000=/run/a.sock; serve:127.0.0.1:4001=/run/w.sock;")
                .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].direction, Direction::Expose);
        assert_eq!(r[1].to_string(), "serve:127.0.0.1:4001=/run/w.sock");
        assert!(matches!(
            parse_routes("expose:10.0.0.1:80=/x.sock"),
            Err(BridgeError::NotLoopback(_))
        ));
        assert!(matches!(
            parse_routes("expose:127.0.0.1:80=x.sock"),
            Err(BridgeError::RelativeSocket(_))
        ));
        assert!(matches!(
            parse_routes("listen:127.0.0.1:80=/x.sock"),
            Err(BridgeError::Syntax(_))
        ));
    }

    /// Both halves in one process (no namespace): a call to the exposed
    /// port reaches the "sidecar's" listener through the socket, and the
    /// served port reaches the "workload's".
    #[tokio::test]
    async fn both_halves_carry_a_connection_each_way() {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sidecar_addr = sidecar.local_addr().unwrap();
        let served = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        // Inside and outside share the host here, so the exposed port must
        // differ from the sidecar's; in a sandbox both are the same number.
        let exposed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let stop = CancellationToken::new();
        let outside = vec![
            Route {
                direction: Direction::Expose,
                tcp: sidecar_addr,
                socket: dir.path().join("proxy.sock"),
            },
            Route {
                direction: Direction::Serve,
                tcp: served,
                socket: dir.path().join("w.sock"),
            },
        ];
        let workload = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let workload_addr = workload.local_addr().unwrap();
        let inside = vec![
            Route {
                tcp: exposed,
                ..outside[0].clone()
            },
            Route {
                tcp: workload_addr,
                ..outside[1].clone()
            },
        ];
        let mut o = start(&outside, Side::Outside, stop.clone()).await.unwrap();
        // The inside serve route listens on the socket; the workload's own
        // listener is already bound above.
        let mut i = start(&inside, Side::Inside, stop.clone()).await.unwrap();

        let echo = |l: TcpListener| async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        };
        let sidecar_side = tokio::spawn(echo(sidecar));
        let mut c = TcpStream::connect(exposed).await.unwrap();
        c.write_all(b"model").await.unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"model");
        sidecar_side.await.unwrap();

        let workload_side = tokio::spawn(echo(workload));
        let mut c = TcpStream::connect(served).await.unwrap();
        c.write_all(b"turns").await.unwrap();
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"turns");
        workload_side.await.unwrap();

        stop.cancel();
        while o.join_next().await.is_some() {}
        while i.join_next().await.is_some() {}
    }
}

//! Serving tonic over our own rustls configs.
//!
//! tonic's built-in TLS cannot take a custom client verifier or rotate
//! certificates, so connections are accepted and handshaken here and handed
//! to tonic as an incoming stream. `Request::peer_certs()` still works: tonic
//! reads them from the `tokio_rustls` stream.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info, info_span, warn};

/// A handshake that takes longer is a stuck or hostile peer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for tonic to pick them up.
const ACCEPT_BACKLOG: usize = 256;
/// Handshakes in progress at once; more wait in the kernel's backlog.
const MAX_CONCURRENT_HANDSHAKES: usize = 512;

/// Accept TCP connections on `listener`, complete TLS, and yield the
/// streams. Stops when `shutdown` fires. `name` labels logs.
pub fn tls_incoming(
    name: &'static str,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_BACKLOG);
    let acceptor = TlsAcceptor::from(tls);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    let inner_tasks = tasks.clone();
    tasks.spawn(
        async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    break;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                inner_tasks.spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => log_handshake_failure(peer, &e),
                        Err(_) => debug!(%peer, "tls handshake timed out"),
                    }
                });
            }
            info!("listener stopped");
        }
        .instrument(info_span!("listener", server = name)),
    );
    ReceiverStream::new(rx)
}

fn log_handshake_failure(peer: SocketAddr, e: &std::io::Error) {
    // The interesting refusals (unknown CA, expired certificate, no client
    // certificate) come through here; say which one.
    let reason = e
        .get_ref()
        .map(|inner| inner.to_string())
        .unwrap_or_else(|| e.to_string());
    info!(%peer, reason = %reason, "tls handshake refused");
}

//! A tonic `Channel` over our own rustls client config (SPIFFE server
//! verification, rotating client certificate). tonic's built-in TLS can do
//! neither, so the TLS handshake happens in a custom connector.

use std::{sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("invalid endpoint {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
}

impl ChannelError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "invalid_url",
            Self::Connect { .. } => "connect",
        }
    }
}

/// Options for [`mtls_channel`].
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive: dead peers are noticed within interval + timeout.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Connect on first use instead of now.
    pub lazy: bool,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
            lazy: false,
        }
    }
}

/// A channel to `url` (`https://host:port`), TLS by `tls`.
pub async fn mtls_channel(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
    opts: &ChannelOptions,
) -> Result<Channel, ChannelError> {
    let invalid = |reason: String| ChannelError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid("scheme must be https".into()));
    }
    let host = uri
        .host()
        .ok_or_else(|| invalid("no host".into()))?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host.clone())
        .map_err(|e| invalid(e.to_string()))?
        .to_owned();
    // tonic must not try TLS itself: hand it a plain-http URI and do TLS in
    // the connector.
    let plain = format!("http://{}:{port}", uri.host().unwrap_or_default());
    let endpoint = Endpoint::from_shared(plain)
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(opts.connect_timeout)
        .http2_keep_alive_interval(opts.keepalive_interval)
        .keep_alive_timeout(opts.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    let connector = TlsConnector::from(tls);
    let connect = tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let addr = format!("{host}:{port}");
        async move {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    if opts.lazy {
        return Ok(endpoint.connect_with_connector_lazy(connect));
    }
    endpoint
        .connect_with_connector(connect)
        .await
        .map_err(|e| ChannelError::Connect {
            url: url.to_owned(),
            reason: error_chain(&e),
        })
}

/// The whole cause chain on one line; TLS refusals hide two levels down.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}

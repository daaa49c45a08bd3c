//! The plumbing of one forwarded call: which headers cross in each
//! direction, buffered replies, and the metered stream.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use futures::{Stream, StreamExt, stream::BoxStream};
use tracing::warn;

use super::{
    MAX_BUFFERED_REPLY, ModelProxy, ProviderApi, reply,
    usage::{StreamEnd, UsageTap},
};

/// Headers from OpenClaw that go upstream: everything but credentials,
/// hop-by-hop headers and encodings (the tap must read plain bytes).
pub(super) fn upstream_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in from {
        let n = name.as_str();
        let drop = matches!(
            n,
            "authorization"
                | "x-api-key"
                | "host"
                | "content-length"
                | "content-type"
                | "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "te"
                | "trailer"
                | "upgrade"
                | "accept-encoding"
                | "cookie"
                | "proxy-authorization"
                | "proxy-connection"
        );
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    out
}

pub(super) fn copy_response_headers(from: &reqwest::header::HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "set-cookie"
        ) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// A whole upstream reply, bounded: its status and headers (the ones a
/// client may see) and its body, for the proxy to read before passing on.
pub(super) async fn buffered_reply(
    mut resp: reqwest::Response,
) -> Result<(axum::http::response::Parts, Bytes), reqwest::Error> {
    let mut head = axum::http::Response::new(());
    *head.status_mut() = resp.status();
    copy_response_headers(resp.headers(), head.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_BUFFERED_REPLY {
            warn!(
                limit = MAX_BUFFERED_REPLY,
                "provider reply over the buffering limit; passed on cut short"
            );
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let (parts, ()) = head.into_parts();
    Ok((parts, Bytes::from(body)))
}

/// A whole upstream reply, bounded.
pub(super) async fn buffered(resp: reqwest::Response) -> Result<Response, reqwest::Error> {
    let (parts, body) = buffered_reply(resp).await?;
    Ok(Response::from_parts(parts, Body::from(body)))
}

pub(super) fn unreachable_upstream(api: ProviderApi, e: &reqwest::Error) -> Response {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not be reached"
    } else {
        "failed"
    };
    // The error's text can carry the upstream URL but never the key.
    warn!(api = api.label(), error = %e, "model provider call {what}");
    reply::error(
        api,
        StatusCode::BAD_GATEWAY,
        reply::upstream_error_kind(api),
        &format!("the model provider {what}"),
    )
}

/// The provider's stream, forwarded chunk by chunk, metered as it goes.
/// Usage is recorded once: at the end of the stream, on an upstream error,
/// or when the client goes away (dropping it) — cancelled calls still cost
/// the tokens the provider reported so far.
pub(super) struct MeteredBody {
    inner: BoxStream<'static, reqwest::Result<Bytes>>,
    tap: UsageTap,
    proxy: Option<Arc<ModelProxy>>,
    api: ProviderApi,
}

impl MeteredBody {
    pub(super) fn new(resp: reqwest::Response, api: ProviderApi, proxy: Arc<ModelProxy>) -> Self {
        Self {
            inner: resp.bytes_stream().boxed(),
            tap: UsageTap::new(api),
            proxy: Some(proxy),
            api,
        }
    }

    fn finish(&mut self, result: &'static str) {
        if let Some(p) = self.proxy.take() {
            p.record(self.api, &self.tap.usage(), result);
        }
    }
}

impl Stream for MeteredBody {
    type Item = reqwest::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                self.tap.push(&bytes);
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish("error");
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                let result = match self.tap.end() {
                    StreamEnd::Completed => "ok",
                    StreamEnd::Failed | StreamEnd::Unfinished => "error",
                };
                self.finish(result);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.finish("cancelled");
    }
}

//! Precise statuses for requests tonic cannot decode, on every clawswarm
//! gRPC server: tonic answers an undecodable message with `INTERNAL` (the
//! client is at fault, not the server) and an over-limit one with
//! `OUT_OF_RANGE`; docs/protocol.md promises `INVALID_ARGUMENT` and
//! `RESOURCE_EXHAUSTED` naming the limit in bytes.
//!
//! A tower layer rewrites the status where it leaves the server (response
//! headers for a trailers-only answer, trailers for a stream), so handlers
//! need not know which of their inputs tonic decoded.

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::BodyExt as _;
use tonic::{Code, Status, body::Body};
use tower::util::MapResponseLayer;

type Rewrite = fn(http::Response<Body>) -> http::Response<Body>;

/// `Server::builder().layer(decode_status_layer())`.
pub fn decode_status_layer() -> MapResponseLayer<Rewrite> {
    MapResponseLayer::new(rewrite_response as Rewrite)
}

/// The status a client should see instead of `status`, if tonic produced
/// it while decoding the request.
pub fn rewrite(status: &Status) -> Option<Status> {
    let message = status.message();
    match status.code() {
        // prost::DecodeError's Display, as tonic's codec passes it on.
        Code::Internal if message.starts_with("failed to decode Protobuf message") => {
            Some(Status::invalid_argument(format!(
                "the request is not a valid message of this method's type ({message})"
            )))
        }
        Code::OutOfRange | Code::ResourceExhausted
            if message.contains("message length too large") =>
        {
            let numbers = numbers_in(message);
            Some(Status::resource_exhausted(match numbers.as_slice() {
                [found, limit] => {
                    format!("message is {found} bytes; the limit is {limit} bytes")
                }
                _ => format!("message is over this server's size limit ({message})"),
            }))
        }
        _ => None,
    }
}

fn rewrite_response(resp: http::Response<Body>) -> http::Response<Body> {
    let (mut parts, body) = resp.into_parts();
    rewrite_headers(&mut parts.headers);
    let body = Body::new(
        body.map_frame(|frame: Frame<Bytes>| match frame.into_trailers() {
            Ok(mut trailers) => {
                rewrite_headers(&mut trailers);
                Frame::trailers(trailers)
            }
            Err(frame) => frame,
        }),
    );
    http::Response::from_parts(parts, body)
}

fn rewrite_headers(headers: &mut HeaderMap) {
    let Some(new) = Status::from_header_map(headers).as_ref().and_then(rewrite) else {
        return;
    };
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    // Only fails for a message that is not a valid header value, and
    // percent-encoding makes every message one.
    let _ = new.add_header(headers);
}

/// The decimal numbers in `text`, in order.
fn numbers_in(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_request_becomes_invalid_argument() {
        let s = Status::internal("failed to decode Protobuf message: invalid wire type value: 7");
        let r = rewrite(&s).unwrap();
        assert_eq!(r.code(), Code::InvalidArgument);
        assert!(r.message().contains("invalid wire type"), "{}", r.message());
    }

    #[test]
    fn over_limit_request_names_the_limit_in_bytes() {
        let s = Status::out_of_range(
            "Error, decoded message length too large: found 2097162 bytes, the limit is: 1048576 bytes",
        );
        let r = rewrite(&s).unwrap();
        assert_eq!(r.code(), Code::ResourceExhausted);
        assert_eq!(
            r.message(),
            "message is 2097162 bytes; the limit is 1048576 bytes"
        );
    }

    #[test]
    fn other_statuses_pass_through() {
        for s in [
            Status::internal("database on fire"),
            Status::invalid_argument("text is 5 bytes; the limit is 4"),
            Status::new(Code::Ok, ""),
        ] {
            assert!(rewrite(&s).is_none(), "{s:?}");
        }
    }

    #[test]
    fn trailers_only_headers_are_rewritten() {
        let mut headers = HeaderMap::new();
        Status::internal("failed to decode Protobuf message: buffer underflow")
            .add_header(&mut headers)
            .unwrap();
        rewrite_headers(&mut headers);
        let s = Status::from_header_map(&headers).unwrap();
        assert_eq!(s.code(), Code::InvalidArgument);
    }
}

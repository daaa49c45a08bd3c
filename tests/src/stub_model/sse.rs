//! The streaming machinery shared by the three APIs.
//!
//! Every streamed reply is the same state machine — opening events, N deltas (optionally paced),
//! then completion or an in-band error — and only the wire format differs. [`TurnStream`] runs
//! the state machine and asks a [`Wire`] to render each step. It is built for benchmarks: chunk
//! text is sliced from one precomputed string, frames are rendered into one reused buffer, one
//! timer is allocated per call and only when pacing is on, and with no pacing the whole reply is
//! coalesced into a few large writes.
//!
//! Cancellation falls out of ownership: the stream owns the call's [`CallRecord`], so when hyper
//! drops the body because the client went away, the record logs the call as `cancelled`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use super::log::{CallRecord, Outcome};
use super::script::{Ending, Script};

/// Without pacing, frames are coalesced until the buffer holds about this much.
const COALESCE_BYTES: usize = 16 * 1024;

/// Renders one API's SSE frames into `out`.
pub trait Wire: Send + Unpin + 'static {
    /// Frames before the first delta. Also called when the script fails before content, so a
    /// wire can emit its "created" events (Responses) or nothing at all (Anthropic, chat).
    fn open(&mut self, script: &Script, out: &mut BytesMut);
    /// One content delta.
    fn delta(&mut self, text: &str, out: &mut BytesMut);
    /// Frames after the last delta of a successful reply of `chunks` chunks.
    fn complete(&mut self, script: &Script, chunks: u32, out: &mut BytesMut);
    /// The in-band error after `chunks` chunks.
    fn fail(&mut self, script: &Script, chunks: u32, out: &mut BytesMut);
}

enum Phase {
    Open,
    Chunk(u32),
    End,
    Hang,
    Done,
}

/// An SSE body playing a [`Script`] through a [`Wire`].
pub struct TurnStream<W> {
    wire: W,
    script: Script,
    record: CallRecord,
    buf: BytesMut,
    phase: Phase,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<W: Wire> TurnStream<W> {
    pub fn new(wire: W, script: Script, record: CallRecord) -> Self {
        let phase = if script.ending == Ending::Hang {
            Phase::Hang
        } else {
            Phase::Open
        };
        TurnStream {
            wire,
            script,
            record,
            buf: BytesMut::with_capacity(4096),
            phase,
            sleep: None,
            armed: false,
        }
    }

    fn take_frame(&mut self) -> Poll<Option<Result<Bytes, Infallible>>> {
        Poll::Ready(Some(Ok(self.buf.split().freeze())))
    }
}

impl<W: Wire> Stream for TurnStream<W> {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.phase {
                // No waker is registered on purpose: nothing will ever be sent. hyper keeps
                // watching the socket and drops this body when the client disconnects.
                Phase::Hang => return Poll::Pending,
                Phase::Done => return Poll::Ready(None),
                Phase::Open => {
                    this.wire.open(&this.script, &mut this.buf);
                    this.phase = Phase::Chunk(0);
                }
                Phase::Chunk(i) => {
                    if i >= this.script.emitted_count() {
                        this.phase = Phase::End;
                        continue;
                    }
                    let delay = this.script.delay;
                    if !delay.is_zero() {
                        // Whatever is buffered goes out before the pause, so the client sees
                        // each chunk at its own time.
                        if !this.buf.is_empty() {
                            return this.take_frame();
                        }
                        let deadline = Instant::now() + delay;
                        let sleep = this
                            .sleep
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                        if !this.armed {
                            sleep.as_mut().reset(deadline);
                            this.armed = true;
                        }
                        ready!(sleep.as_mut().poll(cx));
                        this.armed = false;
                    }
                    this.wire.delta(this.script.chunk(i), &mut this.buf);
                    this.phase = Phase::Chunk(i + 1);
                    this.record.progress(this.script.usage(i + 1), i + 1);
                    if !delay.is_zero() || this.buf.len() >= COALESCE_BYTES {
                        return this.take_frame();
                    }
                }
                Phase::End => {
                    let n = this.script.emitted_count();
                    let usage = this.script.usage(n);
                    if this.script.fails() {
                        this.wire.fail(&this.script, n, &mut this.buf);
                        this.record.finish(Outcome::Error, usage, n);
                    } else {
                        this.wire.complete(&this.script, n, &mut this.buf);
                        this.record.complete(usage, n, this.script.text_upto(n));
                    }
                    this.phase = Phase::Done;
                    return this.take_frame();
                }
            }
        }
    }
}

/// A `text/event-stream` response with `stream` as its body.
pub fn sse_response<W: Wire>(stream: TurnStream<W>) -> Response {
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    resp
}

/// Plays a script without streaming (for `stream:false`): waits out the pacing chunk by chunk so
/// timing matches the streamed case, records progress, and returns the chunks sent. A hanging
/// script never returns; the future is dropped when the client goes away, logging `cancelled`.
pub async fn play_unstreamed(script: &Script, record: &mut CallRecord) -> u32 {
    if script.ending == Ending::Hang {
        std::future::pending::<()>().await;
    }
    let n = script.emitted_count();
    if !script.delay.is_zero() {
        for i in 0..n {
            tokio::time::sleep(script.delay).await;
            record.progress(script.usage(i + 1), i + 1);
        }
    }
    n
}

/// Writes `event: <name>` (if any) and `data: <json>` as one SSE event.
pub fn event(out: &mut BytesMut, name: Option<&str>, data: &impl Serialize) {
    if let Some(name) = name {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    // Serializing into a BytesMut cannot fail for these value types.
    let _ = serde_json::to_writer(out.writer(), data);
    out.put_slice(b"\n\n");
}

/// Writes `s` as a JSON string literal (quoted and escaped), without allocating.
pub fn json_str(out: &mut BytesMut, s: &str) {
    let _ = serde_json::to_writer(out.writer(), s);
}

/// Writes an unsigned integer in decimal.
pub fn put_u64(out: &mut BytesMut, n: u64) {
    use std::io::Write;
    let _ = write!(out.writer(), "{n}");
}

/// Writes the OpenAI-style stream terminator.
pub fn done(out: &mut BytesMut) {
    out.put_slice(b"data: [DONE]\n\n");
}

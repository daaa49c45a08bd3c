//! Incremental Server-Sent Events parser (the subset model APIs use).
//!
//! Bytes arrive in arbitrary pieces; events are split on blank lines. The
//! parser keeps one buffer and hands out complete events, so a long reply does
//! not re-scan what it has already seen.

use bytes::{Buf, BytesMut};

/// Largest single event accepted; a model API never sends one this big, so
/// anything larger is a broken or hostile upstream.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("event larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    #[error("event is not UTF-8")]
    NotUtf8,
}

#[derive(Default)]
pub struct SseParser {
    buf: BytesMut,
    // Bytes of `buf` already searched for a line break.
    scanned: usize,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, if the buffer holds one.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            let Some(pos) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') else {
                self.scanned = self.buf.len();
                if self.buf.len() > MAX_EVENT_BYTES {
                    return Err(SseError::TooLarge);
                }
                return Ok(None);
            };
            let end = self.scanned + pos;
            let line = self.buf.split_to(end + 1);
            self.scanned = 0;
            let mut line = &line[..line.len() - 1];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                if self.has_data || self.current.event.is_some() {
                    self.has_data = false;
                    return Ok(Some(std::mem::take(&mut self.current)));
                }
                continue;
            }
            let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => self.current.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                    if self.current.data.len() > MAX_EVENT_BYTES {
                        return Err(SseError::TooLarge);
                    }
                }
                _ => {}
            }
        }
    }

    /// Bytes received but not yet part of a complete event.
    pub fn pending(&self) -> usize {
        self.buf.remaining()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(p: &mut SseParser) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = p.next_event().unwrap() {
            out.push(e);
        }
        out
    }

    #[test]
    fn events_split_across_arbitrary_pieces_are_reassembled() {
        let raw = b"event: a\ndata: {\"x\":1}\n\n: comment\ndata: two\ndata: lines\r\n\r\ndata: [DONE]\n\n";
        for cut in 1..raw.len() {
            let mut p = SseParser::default();
            p.push(&raw[..cut]);
            let mut got = all(&mut p);
            p.push(&raw[cut..]);
            got.extend(all(&mut p));
            assert_eq!(
                got,
                vec![
                    SseEvent {
                        event: Some("a".into()),
                        data: "{\"x\":1}".into()
                    },
                    SseEvent {
                        event: None,
                        data: "two\nlines".into()
                    },
                    SseEvent {
                        event: None,
                        data: "[DONE]".into()
                    },
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_endless_line_is_refused_instead_of_buffered_forever() {
        let mut p = SseParser::default();
        p.push(&vec![b'x'; MAX_EVENT_BYTES + 1]);
        assert_eq!(p.next_event(), Err(SseError::TooLarge));
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        let mut p = SseParser::default();
        p.push(b"data: \xff\xfe\n\n");
        assert_eq!(p.next_event(), Err(SseError::NotUtf8));
    }
}

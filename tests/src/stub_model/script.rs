//! The reply script: what a stub model call answers, decided up front and deterministically.
//!
//! Tests steer the stub from inside the conversation itself, by putting directives in square
//! brackets into the last user message (e.g. `hello [chunks=3] [delay_ms=50]`). That way the same
//! steering works whether the stub is called directly, through the sidecar, or from behind a real
//! OpenClaw gateway that rewrites everything around the user's text. Unknown bracketed text (such
//! as OpenClaw's `[Mon 2026-11-23 21:00 UTC]` envelope) is left alone.

use std::time::Duration;

use super::log::Usage;

/// Largest `[chunks=N]` honoured, so a typo cannot make the stub allocate gigabytes.
pub const MAX_CHUNKS: u32 = 1_000_000;

/// Characters per chunk of the default echo reply.
const ECHO_CHUNK_CHARS: usize = 8;

/// Directives found in the last user message. Defaults mean "no directive".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `[chunks=N]`: reply with exactly N chunks `w0 `, `w1 `, …
    pub chunks: Option<u32>,
    /// `[delay_ms=N]`: sleep N ms before each chunk (overrides `--chunk-delay-ms`).
    pub delay_ms: Option<u64>,
    /// `[fail_before_content]`: in-band error before any delta.
    pub fail_before_content: bool,
    /// `[fail_after=N]`: in-band error after N chunks.
    pub fail_after: Option<u32>,
    /// `[hang]`: send response headers, then nothing until the client goes away.
    pub hang: bool,
    /// `[http_status=N]`: plain HTTP error with an API-shaped JSON body.
    pub http_status: Option<u16>,
    /// `[cache_read=N]`: reported cache-read tokens.
    pub cache_read: u64,
    /// `[cache_write=N]`: reported cache-write tokens.
    pub cache_write: u64,
    /// `[tool=NAME {json arguments}]`: call that tool instead of replying (Anthropic Messages
    /// only); when the request offers no NAME but OpenClaw's `tool_call` (Tool Search), call
    /// `tool_call {"id": NAME, "args": ...}` as a model that found it would. The next call,
    /// carrying the tool's result, echoes the result. The arguments must be one JSON object
    /// without square brackets (the directive ends at the first `]`).
    pub tool: Option<ToolCall>,
    /// `[notify_if=TEXT]`: beside `[tool=...]`, the answer to the tool's result is the echo only
    /// when the result contains TEXT, else `NO_REPLY` (OpenClaw's "nothing to say", which a cron
    /// run delivers to no one): a scripted alert condition.
    pub notify_if: Option<String>,
}

/// A tool call the stub makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments, a JSON object as text.
    pub input: String,
}

/// Splits `text` into its directives and the text with the directives removed (trimmed, and
/// without the doubled space a directive between two words would leave behind).
pub fn parse_directives(text: &str) -> (Directives, String) {
    let mut d = Directives::default();
    let mut clean = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let (before, after_open) = rest.split_at(open);
        let after = &after_open[1..];
        clean.push_str(before);
        match after.find(']') {
            Some(close) if apply(&mut d, &after[..close]) => {
                rest = &after[close + 1..];
                if clean.is_empty() || clean.ends_with(char::is_whitespace) {
                    rest = rest.strip_prefix(' ').unwrap_or(rest);
                }
            }
            _ => {
                clean.push('[');
                rest = after;
            }
        }
    }
    clean.push_str(rest);
    let trimmed = clean.trim();
    if trimmed.len() != clean.len() {
        clean = trimmed.to_owned();
    }
    (d, clean)
}

/// Applies one bracketed directive; false when `inner` is not a well-formed directive.
fn apply(d: &mut Directives, inner: &str) -> bool {
    let inner = inner.trim();
    let (name, value) = match inner.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (inner, None),
    };
    match (name, value) {
        ("fail_before_content", None) => d.fail_before_content = true,
        ("hang", None) => d.hang = true,
        ("chunks", Some(v)) => match v.parse::<u32>() {
            Ok(n) => d.chunks = Some(n.min(MAX_CHUNKS)),
            Err(_) => return false,
        },
        ("delay_ms", Some(v)) => match v.parse() {
            Ok(n) => d.delay_ms = Some(n),
            Err(_) => return false,
        },
        ("fail_after", Some(v)) => match v.parse() {
            Ok(n) => d.fail_after = Some(n),
            Err(_) => return false,
        },
        ("http_status", Some(v)) => match v.parse::<u16>() {
            Ok(n) if (100..=599).contains(&n) => d.http_status = Some(n),
            _ => return false,
        },
        ("cache_read", Some(v)) => match v.parse() {
            Ok(n) => d.cache_read = n,
            Err(_) => return false,
        },
        ("cache_write", Some(v)) => match v.parse() {
            Ok(n) => d.cache_write = n,
            Err(_) => return false,
        },
        ("notify_if", Some(v)) if !v.is_empty() => d.notify_if = Some(v.to_owned()),
        ("tool", Some(v)) => {
            let (name, input) = v.split_once(char::is_whitespace).unwrap_or((v, "{}"));
            let valid = serde_json::from_str::<serde_json::Value>(input.trim())
                .is_ok_and(|a| a.is_object());
            if name.is_empty() || !valid {
                return false;
            }
            d.tool = Some(ToolCall {
                name: name.to_owned(),
                input: input.trim().to_owned(),
            });
        }
        _ => return false,
    }
    true
}

/// Failure injected through `POST /_stub/fail` (or [`super::StubModel::fail_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// The connection is closed without any response, as when the provider is unreachable.
    Down,
    /// HTTP 500 with an API-shaped error body.
    #[serde(rename = "http_500")]
    Http500,
    /// HTTP 429 with `retry-after` and an API-shaped error body.
    #[serde(rename = "http_429")]
    Http429,
    /// HTTP 200, then an in-band error before any content.
    InBandError,
    /// Clears any pending failure.
    None,
}

/// How the reply stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// All chunks, then the API's completion events.
    Complete,
    /// An in-band error after this many chunks (0 = before any content).
    FailAfter(u32),
    /// Headers, then silence until the client disconnects.
    Hang,
}

/// The complete, precomputed reply of one call. Chunks are slices of one string so streaming
/// them allocates nothing per chunk.
#[derive(Debug, Clone)]
pub struct Script {
    reply: String,
    /// End byte offset of each chunk in `reply`.
    cuts: Vec<u32>,
    pub delay: Duration,
    pub ending: Ending,
    pub http_status: Option<u16>,
    pub input_tokens: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub tool: Option<ToolCall>,
}

impl Script {
    /// Builds the script for a call whose message texts are `input_texts` and whose last user
    /// message is `last_user_text`. `default_delay` is the server's `--chunk-delay-ms`.
    pub fn new(input_texts: &[String], last_user_text: &str, default_delay: Duration) -> Script {
        let (d, clean) = parse_directives(last_user_text);
        let (reply, cuts) = match d.chunks {
            Some(n) => numbered_chunks(n),
            None => echo_chunks(&clean),
        };
        let ending = if d.hang {
            Ending::Hang
        } else if d.fail_before_content {
            Ending::FailAfter(0)
        } else if let Some(n) = d.fail_after {
            Ending::FailAfter(n)
        } else {
            Ending::Complete
        };
        Script {
            reply,
            cuts,
            delay: d
                .delay_ms
                .map(Duration::from_millis)
                .unwrap_or(default_delay),
            ending,
            http_status: d.http_status,
            input_tokens: input_tokens(input_texts),
            cache_read: d.cache_read,
            cache_write: d.cache_write,
            tool: d.tool,
        }
    }

    /// Replace the reply with `text`, in one chunk (usage follows the new text).
    pub fn reply_with(&mut self, text: &str) {
        self.reply = text.to_owned();
        self.cuts = vec![u32::try_from(text.len()).unwrap_or(u32::MAX)];
    }

    /// Applies an injected failure, which takes precedence over directives.
    pub fn inject(&mut self, mode: FailMode) {
        match mode {
            FailMode::Http500 => self.http_status = Some(500),
            FailMode::Http429 => self.http_status = Some(429),
            FailMode::InBandError => {
                self.http_status = None;
                self.ending = Ending::FailAfter(0);
            }
            FailMode::Down | FailMode::None => {}
        }
    }

    /// Number of chunks in the full reply.
    pub fn chunk_count(&self) -> u32 {
        self.cuts.len() as u32
    }

    /// Number of chunks actually sent before the stream ends (fewer when failing early).
    pub fn emitted_count(&self) -> u32 {
        match self.ending {
            Ending::Complete => self.chunk_count(),
            Ending::FailAfter(n) => n.min(self.chunk_count()),
            Ending::Hang => 0,
        }
    }

    /// Whether the stream ends with an in-band error.
    pub fn fails(&self) -> bool {
        matches!(self.ending, Ending::FailAfter(_))
    }

    /// Chunk `i` (0-based). Panics when out of range, which the stream state machine prevents.
    pub fn chunk(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.cuts[i - 1] as usize };
        &self.reply[start..self.cuts[i] as usize]
    }

    /// Text of the first `n` chunks.
    pub fn text_upto(&self, n: u32) -> &str {
        match n {
            0 => "",
            n => &self.reply[..self.cuts[(n as usize).min(self.cuts.len()) - 1] as usize],
        }
    }

    /// Usage billed once `chunks` chunks went out.
    pub fn usage(&self, chunks: u32) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: u64::from(chunks),
            cache_read_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
        }
    }
}

/// `ceil(chars / 4)`, at least 1: a stand-in tokenizer that tests can compute by hand.
pub fn input_tokens(texts: &[String]) -> u64 {
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    (chars as u64).div_ceil(4).max(1)
}

fn numbered_chunks(n: u32) -> (String, Vec<u32>) {
    use std::fmt::Write;
    let mut reply = String::with_capacity(n as usize * 8);
    let mut cuts = Vec::with_capacity(n as usize);
    for i in 0..n {
        let _ = write!(reply, "w{i} ");
        cuts.push(reply.len() as u32);
    }
    (reply, cuts)
}

fn echo_chunks(clean: &str) -> (String, Vec<u32>) {
    let reply = format!("echo: {clean}");
    let mut cuts = Vec::with_capacity(reply.len() / ECHO_CHUNK_CHARS + 1);
    for (n, (i, c)) in reply.char_indices().enumerate() {
        if (n + 1) % ECHO_CHUNK_CHARS == 0 {
            cuts.push((i + c.len_utf8()) as u32);
        }
    }
    if cuts.last().copied() != Some(reply.len() as u32) {
        cuts.push(reply.len() as u32);
    }
    (reply, cuts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_removed_and_parsed_anywhere_in_the_text() {
        let (d, clean) = parse_directives("[chunks=3] hello [delay_ms=20] world [hang]");
        assert_eq!(clean, "hello world");
        assert_eq!(d.chunks, Some(3));
        assert_eq!(d.delay_ms, Some(20));
        assert!(d.hang);
    }

    #[test]
    fn unknown_or_malformed_brackets_stay_in_the_text() {
        let (d, clean) = parse_directives("[Mon 10:00] hi [chunks=x] [nope] [");
        assert_eq!(d, Directives::default());
        assert_eq!(clean, "[Mon 10:00] hi [chunks=x] [nope] [");
    }

    #[test]
    fn every_directive_is_recognised() {
        let (d, clean) = parse_directives(
            "[fail_before_content][fail_after=2][http_status=429][cache_read=7][cache_write=9]",
        );
        assert_eq!(clean, "");
        assert!(d.fail_before_content);
        assert_eq!(d.fail_after, Some(2));
        assert_eq!(d.http_status, Some(429));
        assert_eq!((d.cache_read, d.cache_write), (7, 9));
        assert_eq!(parse_directives("[http_status=99]").0.http_status, None);
    }

    #[test]
    fn echo_reply_is_split_every_eight_chars_on_char_boundaries() {
        let s = Script::new(&["héllo wörld!".into()], "héllo wörld!", Duration::ZERO);
        let chunks: Vec<&str> = (0..s.chunk_count()).map(|i| s.chunk(i)).collect();
        assert_eq!(chunks, ["echo: hé", "llo wörl", "d!"]);
        assert_eq!(s.text_upto(3), "echo: héllo wörld!");
        assert_eq!(s.text_upto(1), "echo: hé");
    }

    #[test]
    fn numbered_chunks_directive_gives_n_words() {
        let s = Script::new(&[], "[chunks=3]", Duration::ZERO);
        assert_eq!(s.text_upto(3), "w0 w1 w2 ");
        assert_eq!(s.chunk(1), "w1 ");
        let empty = Script::new(&[], "[chunks=0]", Duration::ZERO);
        assert_eq!(empty.chunk_count(), 0);
        assert_eq!(empty.text_upto(0), "");
    }

    #[test]
    fn input_tokens_is_ceil_of_chars_over_four_at_least_one() {
        assert_eq!(input_tokens(&[]), 1);
        assert_eq!(input_tokens(&["abcd".into()]), 1);
        assert_eq!(input_tokens(&["abcd".into(), "é".into()]), 2);
    }

    #[test]
    fn fail_after_beyond_the_reply_sends_everything_then_fails() {
        let s = Script::new(&[], "[chunks=2][fail_after=5]", Duration::ZERO);
        assert_eq!(s.emitted_count(), 2);
        assert!(s.fails());
    }
}

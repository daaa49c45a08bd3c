//! The call log: one JSON line per model call, in a file and in memory.
//!
//! Tests use it as ground truth: a sidecar's token totals must equal the sum of logged usage,
//! the second turn of a conversation must carry the first one in `input_texts`, and one agent's
//! text must never show up in another agent's calls. The file is opened with `O_APPEND` and every
//! line is written with a single `write`, so several stub processes can share one file.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Which API a call came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `POST /v1/responses`
    Responses,
    /// `POST /v1/chat/completions`
    Chat,
    /// `POST /v1/messages`
    Anthropic,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The reply completed.
    Ok,
    /// HTTP error, dropped connection, or in-band error.
    Error,
    /// The client went away before the reply completed.
    Cancelled,
}

/// Token usage the stub billed for a call: input and cache figures as computed for the request,
/// output = chunks actually sent. HTTP errors and dropped connections bill nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_read_tokens += o.cache_read_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
    }
}

/// One logged model call (one line of the `--log` file). Credentials are never recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// Unix time in milliseconds when the call arrived.
    pub ts_ms: u64,
    pub api: Api,
    /// `x-openclaw-session-key` header, if sent.
    pub session_key: Option<String>,
    /// `user` (OpenAI) or `metadata.user_id` (Anthropic), if sent.
    pub user: Option<String>,
    pub model: String,
    /// Every message text in order: instructions/system first, then each message's text.
    pub input_texts: Vec<String>,
    /// Text of the last user message exactly as sent, directives included.
    pub last_user_text: String,
    /// Responses `previous_response_id` the call continued from (its context is already in
    /// `input_texts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    pub stream: bool,
    pub usage: Usage,
    pub outcome: Outcome,
    /// Content chunks sent.
    pub chunks: u32,
}

/// Where calls are recorded: the optional JSONL file plus a bounded in-memory copy.
pub struct RequestLog {
    file: Option<Mutex<File>>,
    kept: Mutex<VecDeque<LoggedRequest>>,
    keep: usize,
}

impl RequestLog {
    /// Opens (creating, appending) `path` if given; keeps at most `keep` calls in memory.
    pub fn open(path: Option<&Path>, keep: usize) -> std::io::Result<RequestLog> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
            None => None,
        };
        Ok(RequestLog {
            file,
            kept: Mutex::new(VecDeque::new()),
            keep,
        })
    }

    /// Appends one call: one `write` of one line to the file, then into memory.
    pub fn record(&self, entry: LoggedRequest) {
        if let Some(file) = &self.file {
            let mut line = Vec::with_capacity(256);
            if serde_json::to_writer(&mut line, &entry).is_ok() {
                line.push(b'\n');
                let mut f = file.lock().unwrap_or_else(PoisonError::into_inner);
                if let Err(e) = f.write_all(&line) {
                    tracing::warn!(error = %e, "stub model: cannot append to the call log");
                }
            }
        }
        if self.keep == 0 {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() == self.keep {
            kept.pop_front();
        }
        kept.push_back(entry);
    }

    /// Calls kept in memory, oldest first.
    pub fn snapshot(&self) -> Vec<LoggedRequest> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.iter().cloned().collect()
    }

    /// Forgets the in-memory calls (the file is left alone).
    pub fn clear(&self) {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A call in flight. It is logged exactly once: by [`CallRecord::finish`], or, if the response
/// future or body is dropped first (the client disconnected), as `cancelled` on drop.
pub struct CallRecord {
    log: Arc<RequestLog>,
    entry: Option<LoggedRequest>,
    /// Runs with the reply text when the call completes successfully (session history).
    on_ok: Option<OnOk>,
}

/// A hook run with the reply text of a successful call.
pub type OnOk = Box<dyn FnOnce(&str) + Send>;

impl CallRecord {
    pub fn new(log: Arc<RequestLog>, entry: LoggedRequest) -> CallRecord {
        CallRecord {
            log,
            entry: Some(entry),
            on_ok: None,
        }
    }

    /// Records progress so a later cancellation logs what was actually sent.
    pub fn progress(&mut self, usage: Usage, chunks: u32) {
        if let Some(e) = &mut self.entry {
            e.usage = usage;
            e.chunks = chunks;
        }
    }

    /// Notes the stored response the call continued from.
    pub fn continued_from(&mut self, id: Option<String>) {
        if let Some(e) = &mut self.entry {
            e.previous_response_id = id;
        }
    }

    /// Sets a hook to run with the reply text if the call completes successfully.
    pub fn on_ok(&mut self, hook: OnOk) {
        self.on_ok = Some(hook);
    }

    /// Logs a successful call and runs the `on_ok` hook with its reply.
    pub fn complete(&mut self, usage: Usage, chunks: u32, reply: &str) {
        if let Some(hook) = self.on_ok.take() {
            hook(reply);
        }
        self.finish(Outcome::Ok, usage, chunks);
    }

    /// Logs the call with its final outcome.
    pub fn finish(&mut self, outcome: Outcome, usage: Usage, chunks: u32) {
        if let Some(mut e) = self.entry.take() {
            e.outcome = outcome;
            e.usage = usage;
            e.chunks = chunks;
            self.log.record(e);
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if let Some(mut e) = self.entry.take() {
            e.outcome = Outcome::Cancelled;
            self.log.record(e);
        }
    }
}

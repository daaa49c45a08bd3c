//! Token usage read from the provider's own replies as they pass through.
//!
//! The tap sees every byte the client sees, parses SSE events alongside (the
//! bytes themselves are forwarded untouched), and keeps the latest figures
//! the provider reported. Anthropic: `message_start` carries input and cache
//! usage, `message_delta` the cumulative output (and, on newer API versions,
//! updated input figures). OpenAI: the final chunk's `usage`, present
//! because the proxy sets `stream_options.include_usage`.

use serde_json::Value;

use super::ProviderApi;
use crate::workload::{
    Usage,
    sse::{SseEvent, SseParser},
};

/// How a metered reply ended, as far as the stream says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The protocol's end marker arrived (`message_stop`, `[DONE]`).
    Completed,
    /// The provider reported an error in-band.
    Failed,
    /// Neither: the stream was cut or the client went away.
    Unfinished,
}

pub struct UsageTap {
    api: ProviderApi,
    parser: SseParser,
    /// Parsing stops on a malformed stream; bytes still pass through.
    broken: bool,
    usage: Usage,
    end: StreamEnd,
}

impl UsageTap {
    pub fn new(api: ProviderApi) -> Self {
        Self {
            api,
            parser: SseParser::default(),
            broken: false,
            usage: Usage::default(),
            end: StreamEnd::Unfinished,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.broken {
            return;
        }
        self.parser.push(bytes);
        loop {
            match self.parser.next_event() {
                Ok(Some(ev)) => self.event(&ev),
                Ok(None) => break,
                Err(_) => {
                    self.broken = true;
                    break;
                }
            }
        }
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }

    pub fn end(&self) -> StreamEnd {
        self.end
    }

    fn event(&mut self, ev: &SseEvent) {
        match self.api {
            ProviderApi::Anthropic => self.anthropic_event(ev),
            ProviderApi::Openai => self.openai_event(ev),
        }
    }

    fn anthropic_event(&mut self, ev: &SseEvent) {
        // Deltas are most of the stream; skip parsing them.
        if ev.event.as_deref() == Some("content_block_delta") || ev.event.as_deref() == Some("ping")
        {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        match v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
        {
            Some("message_start") => {
                if let Some(u) = v.get("message").and_then(|m| m.get("usage")) {
                    merge_anthropic(&mut self.usage, u);
                }
            }
            Some("message_delta") => {
                if let Some(u) = v.get("usage") {
                    merge_anthropic(&mut self.usage, u);
                }
            }
            Some("message_stop") if self.end == StreamEnd::Unfinished => {
                self.end = StreamEnd::Completed
            }
            Some("error") => self.end = StreamEnd::Failed,
            _ => {}
        }
    }

    fn openai_event(&mut self, ev: &SseEvent) {
        if ev.data == "[DONE]" {
            if self.end == StreamEnd::Unfinished {
                self.end = StreamEnd::Completed;
            }
            return;
        }
        if !(ev.data.contains("\"usage\"") || ev.data.contains("\"error\"")) {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        if v.get("error").is_some_and(|e| !e.is_null()) {
            self.end = StreamEnd::Failed;
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = openai_usage(u);
        }
    }
}

/// Usage from a non-streamed reply body.
pub fn from_body(api: ProviderApi, body: &[u8]) -> Usage {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Usage::default();
    };
    let Some(u) = v.get("usage").filter(|u| u.is_object()) else {
        return Usage::default();
    };
    match api {
        ProviderApi::Anthropic => {
            let mut usage = Usage::default();
            merge_anthropic(&mut usage, u);
            usage
        }
        ProviderApi::Openai => openai_usage(u),
    }
}

/// Anthropic figures are cumulative: a later event's value replaces the
/// earlier one; absent fields keep what was seen.
fn merge_anthropic(usage: &mut Usage, u: &Value) {
    let field = |name: &str| u.get(name).and_then(Value::as_u64);
    if let Some(n) = field("input_tokens") {
        usage.input_tokens = n;
    }
    if let Some(n) = field("output_tokens") {
        usage.output_tokens = n;
    }
    if let Some(n) = field("cache_creation_input_tokens") {
        usage.cache_write_tokens = n;
    }
    if let Some(n) = field("cache_read_input_tokens") {
        usage.cache_read_tokens = n;
    }
}

/// OpenAI's `prompt_tokens` includes cached tokens; `Usage::input_tokens`
/// means uncached input, as Anthropic reports it.
fn openai_usage(u: &Value) -> Usage {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let prompt = n(u.get("prompt_tokens"));
    let cached = n(u
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens")));
    Usage {
        input_tokens: prompt.saturating_sub(cached),
        output_tokens: n(u.get("completion_tokens")),
        cache_read_tokens: cached,
        cache_write_tokens: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_usage_comes_from_message_start_and_the_last_message_delta() {
        let mut tap = UsageTap::new(ProviderApi::Anthropic);
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":300,\"cache_read_input_tokens\":40,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        // Split at every byte boundary class: arbitrary pieces.
        for piece in stream.as_bytes().chunks(7) {
            tap.push(piece);
        }
        assert_eq!(
            tap.usage(),
            Usage {
                input_tokens: 12,
                output_tokens: 7,
                cache_read_tokens: 40,
                cache_write_tokens: 300
            }
        );
        assert_eq!(tap.end(), StreamEnd::Completed);
    }

    #[test]
    fn anthropic_in_band_error_marks_the_stream_failed() {
        let mut tap = UsageTap::new(ProviderApi::Anthropic);
        tap.push(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n");
        assert_eq!(tap.end(), StreamEnd::Failed);
    }

    #[test]
    fn openai_usage_comes_from_the_final_chunk_with_cached_tokens_split_out() {
        let mut tap = UsageTap::new(ProviderApi::Openai);
        tap.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n");
        tap.push(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":4,\"prompt_tokens_details\":{\"cached_tokens\":30}}}\n\n");
        assert_eq!(tap.end(), StreamEnd::Unfinished);
        tap.push(b"data: [DONE]\n\n");
        assert_eq!(
            tap.usage(),
            Usage {
                input_tokens: 20,
                output_tokens: 4,
                cache_read_tokens: 30,
                cache_write_tokens: 0
            }
        );
        assert_eq!(tap.end(), StreamEnd::Completed);
    }

    #[test]
    fn non_streamed_bodies_report_usage_and_garbage_reports_none() {
        let a = br#"{"type":"message","usage":{"input_tokens":3,"output_tokens":2,"cache_read_input_tokens":1}}"#;
        assert_eq!(
            from_body(ProviderApi::Anthropic, a),
            Usage {
                input_tokens: 3,
                output_tokens: 2,
                cache_read_tokens: 1,
                cache_write_tokens: 0
            }
        );
        let o = br#"{"usage":{"prompt_tokens":9,"completion_tokens":1}}"#;
        assert_eq!(
            from_body(ProviderApi::Openai, o),
            Usage {
                input_tokens: 9,
                output_tokens: 1,
                ..Usage::default()
            }
        );
        assert_eq!(from_body(ProviderApi::Openai, b"<html>"), Usage::default());
    }
}

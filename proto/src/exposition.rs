//! The Prometheus exposition format every clawswarm `/metrics` answers in:
//! the classic text format (0.0.4) unless the scraper's `Accept` prefers
//! OpenMetrics, negotiated the way Prometheus' own client libraries do.
//!
//! prometheus-client only writes OpenMetrics; the classic format is derived
//! from that text here so both binaries answer `curl | promtool check
//! metrics` (promtool lints the classic format only) and Prometheus alike.

use std::collections::BTreeSet;

use http::{HeaderMap, header::ACCEPT};

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a `/metrics` response is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`, the default for any client that does
    /// not ask for OpenMetrics (curl, promtool, older scrapers).
    Text,
    /// `application/openmetrics-text`, for scrapers that ask for it.
    OpenMetrics,
}

impl Format {
    /// The format for a request's `Accept` headers: the acceptable media
    /// range with the highest q-value wins (ties: the first listed); ranges
    /// this server cannot write (protobuf, unknown versions) are skipped,
    /// and with none left the answer is the classic text format.
    pub fn negotiate(headers: &HeaderMap) -> Self {
        let mut ranges: Vec<(f32, Format)> = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(media_range)
            .filter(|(q, _)| *q > 0.0)
            .collect();
        // Stable: equal q-values keep the client's order.
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranges.first().map_or(Format::Text, |(_, f)| *f)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// The body for this format from prometheus-client's OpenMetrics text.
    pub fn render(self, openmetrics: String) -> String {
        match self {
            Format::OpenMetrics => openmetrics,
            Format::Text => openmetrics_to_text(&openmetrics),
        }
    }

    /// Content type and body for a request with these headers.
    pub fn respond(headers: &HeaderMap, openmetrics: String) -> (&'static str, String) {
        let format = Self::negotiate(headers);
        (format.content_type(), format.render(openmetrics))
    }
}

/// One media range of an `Accept` header as `(q, format)`, or `None` when
/// this server cannot write it.
fn media_range(range: &str) -> Option<(f32, Format)> {
    let mut parts = range.split(';').map(str::trim);
    let media_type = parts.next()?.to_ascii_lowercase();
    let mut q = 1.0_f32;
    let mut version = None;
    for param in parts {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "q" => q = value.parse().ok().filter(|q: &f32| q.is_finite())?,
            "version" => version = Some(value.to_owned()),
            _ => {}
        }
    }
    let format = match (media_type.as_str(), version.as_deref()) {
        ("application/openmetrics-text", None | Some("1.0.0" | "0.0.1")) => Format::OpenMetrics,
        ("text/plain", None | Some("0.0.4" | "1.0.0")) => Format::Text,
        _ => return None,
    };
    Some((q, format))
}

/// The classic text format of an OpenMetrics exposition. Where the two
/// differ for what prometheus-client writes: counter families are named
/// with `_total` in HELP/TYPE, info families become `_info` gauges,
/// `unknown` is `untyped`, UNIT lines, exemplars and `# EOF` go, and HELP
/// has no `\"` escape.
fn openmetrics_to_text(text: &str) -> String {
    let mut renamed: BTreeSet<(String, &'static str)> = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            match kind {
                "counter" => renamed.insert((name.to_owned(), "_total")),
                "info" => renamed.insert((name.to_owned(), "_info")),
                _ => false,
            };
        }
    }
    let suffix = |name: &str| {
        renamed
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, s)| *s)
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!(
                "# HELP {name}{} {}\n",
                suffix(name),
                help.replace("\\\"", "\"")
            ));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = match kind {
                "info" | "stateset" => "gauge",
                "unknown" => "untyped",
                "gaugehistogram" => "histogram",
                k => k,
            };
            out.push_str(&format!("# TYPE {name}{} {kind}\n", suffix(name)));
        } else {
            out.push_str(without_exemplar(line));
            out.push('\n');
        }
    }
    out
}

/// A sample line without its exemplar (` # {...} value`), which the classic
/// format does not have. Label values are quoted and may hold `#`, so the
/// search starts after the label set.
fn without_exemplar(line: &str) -> &str {
    let labels_end = match line.find(['{', ' ']) {
        Some(i) if line.as_bytes()[i] == b'{' => {
            let mut quoted = false;
            let mut escaped = false;
            let mut end = line.len();
            for (j, c) in line[i..].char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    '}' if !quoted => {
                        end = i + j;
                        break;
                    }
                    _ => {}
                }
            }
            end
        }
        _ => 0,
    };
    match line[labels_end..].find(" # ") {
        Some(i) => &line[..labels_end + i],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn clients_that_do_not_ask_for_openmetrics_get_classic_text() {
        for a in [&[][..], &["*/*"], &["text/plain"], &["application/json"]] {
            assert_eq!(Format::negotiate(&accept(a)), Format::Text, "{a:?}");
        }
        assert_eq!(
            Format::negotiate(&accept(&[
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3"
            ])),
            Format::Text
        );
    }

    #[test]
    fn prometheus_scrape_accept_headers_get_openmetrics() {
        // Prometheus 2.42's and 3.x's scrape Accept headers.
        for a in [
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        ] {
            assert_eq!(Format::negotiate(&accept(&[a])), Format::OpenMetrics, "{a}");
        }
    }

    #[test]
    fn q_values_decide_and_q_zero_refuses() {
        assert_eq!(
            Format::negotiate(&accept(&[
                "application/openmetrics-text;q=0.2, text/plain;version=0.0.4;q=0.9"
            ])),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(&accept(&[
                "text/plain;q=0",
                "application/openmetrics-text;q=0.1"
            ])),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(&accept(&["application/openmetrics-text;version=2.0.0"])),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(&accept(&["application/openmetrics-text;q=nonsense"])),
            Format::Text
        );
    }

    #[test]
    fn classic_text_names_counters_with_total_and_drops_eof() {
        let om = "# HELP clawswarm_turns Turns \\\"finished\\\".\n# TYPE clawswarm_turns counter\nclawswarm_turns_total{result=\"ok\"} 1 # {trace_id=\"a\"} 1.0\n# HELP clawswarm_up Up.\n# TYPE clawswarm_up gauge\nclawswarm_up{x=\"a # b\"} 1\n# HELP clawswarm_build Build.\n# TYPE clawswarm_build info\nclawswarm_build_info{version=\"1\"} 1\n# TYPE clawswarm_bytes unknown\n# UNIT clawswarm_bytes bytes\n# EOF\n";
        let text = Format::Text.render(om.to_owned());
        assert_eq!(
            text,
            "# HELP clawswarm_turns_total Turns \"finished\".\n# TYPE clawswarm_turns_total counter\nclawswarm_turns_total{result=\"ok\"} 1\n# HELP clawswarm_up Up.\n# TYPE clawswarm_up gauge\nclawswarm_up{x=\"a # b\"} 1\n# HELP clawswarm_build_info Build.\n# TYPE clawswarm_build_info gauge\nclawswarm_build_info{version=\"1\"} 1\n# TYPE clawswarm_bytes untyped\n"
        );
        assert_eq!(Format::OpenMetrics.render(om.to_owned()), om);
    }
}

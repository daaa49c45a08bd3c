//! Whether and how the workload's readiness is probed.
//!
//! A hosted provider has no readiness endpoint (api.openai.com answers
//! `/readyz` with 404) and polling it costs a request per agent every few
//! seconds, so a remote endpoint is not probed unless a path is set: it
//! counts as ready and a failed turn reports the provider's own error. A
//! loopback endpoint is a process beside the sidecar that may still be
//! starting, so it is probed, and a 404/405/501 there means "up, without a
//! readiness endpoint".

use std::net::IpAddr;

use super::super::Readiness;

/// The readiness path used for loopback endpoints when none is set.
pub const DEFAULT_READY_PATH: &str = "/readyz";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyProbe {
    /// Ready at once; no request is made.
    Off,
    /// `GET <base_url><path>`.
    Path(String),
}

impl ReadyProbe {
    /// From `CLAWSWARM_WORKLOAD_READY_PATH`: unset → probe `/readyz` on a
    /// loopback endpoint only; empty → never probe; a path → always probe it.
    pub fn resolve(setting: Option<&str>, base_url: &str) -> Self {
        match setting.map(str::trim) {
            Some("") => Self::Off,
            Some(p) if p.starts_with('/') => Self::Path(p.to_owned()),
            Some(p) => Self::Path(format!("/{p}")),
            None if is_loopback(base_url) => Self::Path(DEFAULT_READY_PATH.to_owned()),
            None => Self::Off,
        }
    }
}

/// Whether a URL's host is this machine (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback(base_url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(base_url) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let h = host.to_ascii_lowercase();
            h == "localhost" || h.ends_with(".localhost")
        }
    }
}

/// What a probe's answer says. Some servers answer unknown paths with 200
/// (a UI), so a JSON `ready` field wins over the status code when present.
pub fn verdict(status: u16, body: &[u8], path: &str) -> Readiness {
    let ready_field = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("ready").and_then(|r| r.as_bool()));
    match ready_field {
        Some(true) => Readiness::ready("workload ready"),
        Some(false) => Readiness::not_ready(format!("workload reports not ready (HTTP {status})")),
        None if (200..300).contains(&status) => {
            Readiness::ready(format!("workload answered HTTP {status}"))
        }
        // The server is answering; it just has no such endpoint.
        None if matches!(status, 404 | 405 | 501) => Readiness::ready(format!(
            "workload answering (HTTP {status} on {path}: no readiness endpoint)"
        )),
        None => Readiness::not_ready(format!("workload readiness check answered HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_endpoints_are_not_probed_unless_a_path_is_set() {
        assert_eq!(
            ReadyProbe::resolve(None, "https://api.openai.com"),
            ReadyProbe::Off
        );
        assert_eq!(
            ReadyProbe::resolve(Some("/health"), "https://api.openai.com"),
            ReadyProbe::Path("/health".into())
        );
        assert_eq!(
            ReadyProbe::resolve(Some("health"), "http://10.0.0.5:8000"),
            ReadyProbe::Path("/health".into())
        );
    }

    #[test]
    fn loopback_endpoints_are_probed_by_default_and_empty_means_never() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
            "http://127.0.0.2",
        ] {
            assert_eq!(
                ReadyProbe::resolve(None, url),
                ReadyProbe::Path("/readyz".into()),
                "{url}"
            );
            assert_eq!(ReadyProbe::resolve(Some(""), url), ReadyProbe::Off, "{url}");
        }
        assert!(!is_loopback("http://example.com"));
        assert!(!is_loopback("not a url"));
    }

    #[test]
    fn a_server_without_a_readiness_endpoint_counts_as_up() {
        for status in [404, 405, 501] {
            assert!(verdict(status, b"", "/readyz").ready, "{status}");
        }
        assert!(verdict(200, b"<html>", "/readyz").ready);
        assert!(!verdict(503, b"", "/readyz").ready);
        assert!(!verdict(500, b"", "/readyz").ready);
        assert!(!verdict(200, br#"{"ready":false}"#, "/readyz").ready);
        assert!(verdict(503, br#"{"ready":true}"#, "/readyz").ready);
    }
}

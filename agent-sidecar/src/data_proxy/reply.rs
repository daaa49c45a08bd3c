//! What the proxy answers itself, in the search engine's own error shape
//! (`{"error":{"type","reason"},"status"}`) so the agent, its tools and any
//! Elasticsearch client read it like an engine error and can relay the
//! reason to the person word for word.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

/// A request the proxy will not forward, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// Machine-readable type (`clawswarm_read_only`, `clawswarm_index_not_allowed`, ...).
    pub kind: &'static str,
    pub reason: String,
}

impl Refusal {
    pub fn new(status: StatusCode, kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            reason: reason.into(),
        }
    }

    /// Not one of the read APIs: the data is read-only.
    pub fn read_only(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "clawswarm_read_only",
            format!(
                "{method} {path} refused: company data is read-only through this agent's data \
                 proxy. Served: _search, _msearch, _count, _field_caps, GET _mapping, ES|QL \
                 POST /_query, point-in-time and scroll continuation, GET _cat/indices, \
                 GET _resolve/index"
            ),
        )
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "clawswarm_bad_request", reason)
    }

    pub fn index_not_allowed(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "clawswarm_index_not_allowed", reason)
    }

    /// Outcome label for metrics and the audit log.
    pub fn outcome(&self) -> &'static str {
        match self.kind {
            "clawswarm_read_only" => "refused_write",
            "clawswarm_index_not_allowed" => "refused_index",
            "clawswarm_result_cap" | "clawswarm_request_too_large" => "refused_cap",
            "clawswarm_response_too_large" => "response_too_large",
            "clawswarm_timeout" => "timeout",
            "clawswarm_engine_unreachable" => "unreachable",
            "clawswarm_unauthorized" => "unauthorized",
            "clawswarm_not_configured" => "not_configured",
            _ => "refused_bad_request",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "root_cause": [{"type": self.kind, "reason": self.reason}],
                "type": self.kind,
                "reason": self.reason,
            },
            "status": self.status.as_u16(),
        });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

//! The company-data tools, as an MCP server (Streamable HTTP, JSON
//! responses) at [`super::MCP_PATH`] on the data proxy's port. OpenClaw
//! consumes it through `mcp.servers.company_data` (written by `init`); any
//! MCP client with the proxy credential can. Every tool call runs through
//! the same pipeline as a direct request: route, allowlist, caps, metering,
//! audit. Why MCP and not a skill: docs/company-data.md.

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{DataProxy, reply::Refusal};

/// Protocol revisions this server speaks; the newest is offered when the
/// client asks for one it does not know.
const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

const INSTRUCTIONS: &str = "Company data, read-only: the search cluster's indices this agent may \
    read. Start with list_indices, then get_mapping for an index's fields, then search, count or \
    esql. Every answer is the engine's JSON. Writes are impossible here; an error's reason says \
    what was refused and why: relay it to the person.";

fn tools() -> Value {
    let index = json!({"type": "string", "description": "Index, alias or data stream name (comma-separated names and * patterns allowed)"});
    json!([
        {
            "name": "list_indices",
            "description": "List the company indices this agent may read, with document counts.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        },
        {
            "name": "get_mapping",
            "description": "The fields and their types of an index.",
            "inputSchema": {"type": "object", "properties": {"index": index}, "required": ["index"]},
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        },
        {
            "name": "search",
            "description": "Search an index with the Elasticsearch query DSL. `body` is a search request body: query, size, sort, _source, aggs.",
            "inputSchema": {"type": "object", "properties": {
                "index": index,
                "body": {"type": "object", "description": "Search request body, e.g. {\"query\": {\"match\": {\"pipeline\": \"etl\"}}, \"size\": 5, \"sort\": [{\"finished_at\": \"desc\"}]}"}
            }, "required": ["index"]},
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        },
        {
            "name": "count",
            "description": "Count the documents of an index matching a query (all when no query).",
            "inputSchema": {"type": "object", "properties": {
                "index": index,
                "query": {"type": "object", "description": "Query DSL, e.g. {\"term\": {\"status\": \"failed\"}}"}
            }, "required": ["index"]},
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        },
        {
            "name": "esql",
            "description": "Run an ES|QL query (Elasticsearch 8.11+ clusters), e.g. FROM pipelines | WHERE status == \"failed\" | LIMIT 10.",
            "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }
    ])
}

/// `POST /_clawswarm/mcp`: one JSON-RPC message (or a batch).
pub async fn serve(State(p): State<Arc<DataProxy>>, headers: HeaderMap, body: Bytes) -> Response {
    if !p.authorized(&headers) {
        return Refusal::new(
            StatusCode::UNAUTHORIZED,
            "clawswarm_unauthorized",
            "present this agent's data proxy credential (Authorization: Bearer <token>)",
        )
        .into_response();
    }
    let message: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return rpc_response(json!({
                "jsonrpc": "2.0", "id": null,
                "error": {"code": -32700, "message": format!("parse error: {e}")}
            }));
        }
    };
    match message {
        Value::Array(batch) => {
            let mut out = Vec::new();
            for m in batch {
                if let Some(r) = handle(&p, m).await {
                    out.push(r);
                }
            }
            if out.is_empty() {
                StatusCode::ACCEPTED.into_response()
            } else {
                rpc_response(Value::Array(out))
            }
        }
        m => match handle(&p, m).await {
            Some(r) => rpc_response(r),
            // A notification or a response: nothing to answer.
            None => StatusCode::ACCEPTED.into_response(),
        },
    }
}

fn rpc_response(v: Value) -> Response {
    Json(v).into_response()
}

/// Answer one message; `None` for notifications.
async fn handle(p: &DataProxy, m: Value) -> Option<Value> {
    let id = m.get("id").cloned()?;
    let method = m.get("method").and_then(Value::as_str).unwrap_or_default();
    let params = m.get("params").cloned().unwrap_or(Value::Null);
    let result = match method {
        "initialize" => {
            let asked = params
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let version = PROTOCOL_VERSIONS
                .iter()
                .find(|v| **v == asked)
                .unwrap_or(&PROTOCOL_VERSIONS[0]);
            Ok(json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": "clawswarm-company-data", "version": env!("CARGO_PKG_VERSION")},
                "instructions": INSTRUCTIONS,
            }))
        }
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": tools()})),
        "tools/call" => Ok(call(p, &params).await),
        other => Err(json!({"code": -32601, "message": format!("method not found: {other}")})),
    };
    Some(match result {
        Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e}),
    })
}

/// Run a tool: build the engine request, run it through the proxy, and
/// hand back the engine's JSON (or the refusal's reason) as text.
async fn call(p: &DataProxy, params: &Value) -> Value {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let args = params
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let text_arg = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
    let index = text_arg("index");
    let need_index = || {
        index
            .clone()
            .filter(|i| !i.trim().is_empty())
            .ok_or_else(|| format!("{name} needs \"index\""))
    };
    let request: Result<(Method, String, Option<String>, Vec<u8>), String> = match name {
        "list_indices" => Ok((
            Method::GET,
            "/_cat/indices".into(),
            Some("format=json&h=index,docs.count,health".into()),
            Vec::new(),
        )),
        "get_mapping" => need_index().map(|i| {
            (
                Method::GET,
                format!("/{}/_mapping", super::enc(&i)),
                None,
                Vec::new(),
            )
        }),
        "search" => need_index().and_then(|i| {
            let body = args.get("body").cloned().unwrap_or_else(|| json!({}));
            if !body.is_object() {
                return Err("search \"body\" must be a JSON object".into());
            }
            Ok((
                Method::POST,
                format!("/{}/_search", super::enc(&i)),
                None,
                body.to_string().into_bytes(),
            ))
        }),
        "count" => need_index().map(|i| {
            let body = args
                .get("query")
                .map(|q| json!({"query": q}).to_string().into_bytes())
                .unwrap_or_default();
            (
                Method::POST,
                format!("/{}/_count", super::enc(&i)),
                None,
                body,
            )
        }),
        "esql" => text_arg("query")
            .ok_or_else(|| "esql needs \"query\"".to_owned())
            .map(|q| {
                (
                    Method::POST,
                    "/_query".into(),
                    None,
                    json!({"query": q}).to_string().into_bytes(),
                )
            }),
        other => Err(format!(
            "unknown tool {other:?}: list_indices, get_mapping, search, count, esql"
        )),
    };
    let (method, path, query, body) = match request {
        Ok(r) => r,
        Err(e) => return tool_error(&e),
    };
    let resp = p.query(&method, &path, query.as_deref(), &body).await;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if status.is_success() {
        json!({"content": [{"type": "text", "text": text}], "isError": false})
    } else {
        let reason = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                let e = v.get("error")?;
                Some(match e.get("reason").and_then(Value::as_str) {
                    Some(r) => format!(
                        "{}: {r}",
                        e.get("type").and_then(Value::as_str).unwrap_or("error")
                    ),
                    None => e.to_string(),
                })
            })
            .unwrap_or(text);
        tool_error(&format!("HTTP {}: {reason}", status.as_u16()))
    }
}

fn tool_error(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": true})
}

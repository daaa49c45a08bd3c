//! The company's search cluster, served read-only on loopback for the
//! agent: the data proxy. Not tied to any workload.
//!
//! The sidecar holds the cluster's credential (`CLAWSWARM_DATA_API_KEY_FILE`
//! or `CLAWSWARM_DATA_API_KEY`, from the shared Secret or the template) and
//! injects it into every forwarded request; the workload presents only this
//! agent's own proxy credential (`CLAWSWARM_DATA_PROXY_TOKEN_FILE`), so
//! another local process that finds the port gets 401 and the workload can
//! never send the real key anywhere. What is forwarded:
//!
//! - only the read APIs of [`route`] (everything else is refused as a
//!   write, with an error saying the data is read-only);
//! - only indices of the template's allowlist (`CLAWSWARM_DATA_INDICES`),
//!   checked by [`indices`] after the engine expanded the expression;
//! - at most `CLAWSWARM_DATA_MAX_HITS` results per request, within
//!   `CLAWSWARM_DATA_TIMEOUT_SECS`, `CLAWSWARM_DATA_MAX_RESPONSE_BYTES` of
//!   reply and `CLAWSWARM_DATA_MAX_REQUEST_BYTES` of request, each named in
//!   the error that enforces it.
//!
//! Every query is metered (`clawswarm_data_*`) and logged as one audit line
//! (`clawswarm::data_audit`: kind, indices, outcome, status, documents,
//! bytes, time; never a credential or the query text). [`mcp`] serves the
//! same pipeline as MCP tools for the agent.

pub mod body;
pub mod cursors;
pub mod indices;
pub mod mcp;
pub mod reply;
pub mod route;

use std::{
    fmt,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, post},
};
use base64::Engine as _;
use serde_json::Value;
use tracing::{info, warn};

use crate::{
    metrics::{DataQueryLabels, SidecarMetrics},
    model_proxy::ledger::DataCounts,
};
use body::Params;
use cursors::Cursors;
use indices::Allowlist;
use reply::Refusal;
use route::Route;

/// Where each query is counted for `Agent.status` (the agent's usage
/// ledger, when the sidecar keeps one).
pub type DataMeter = Arc<dyn Fn(&DataCounts) + Send + Sync>;

/// Where the MCP endpoint lives: a path no engine API can have.
pub const MCP_PATH: &str = "/_clawswarm/mcp";

/// How the credential is presented to the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataAuth {
    /// `Authorization: ApiKey <key>` (an Elasticsearch API key, base64 id:key).
    Apikey,
    /// `Authorization: Bearer <key>` (a service token or OAuth token).
    Bearer,
    /// `Authorization: Basic base64(<key>)`, the key being `user:password`.
    Basic,
}

#[derive(clap::Args, Clone)]
pub struct DataProxyArgs {
    /// The search cluster's base URL (Elasticsearch or OpenSearch REST);
    /// no data proxy without it.
    #[arg(id = "data-url", long = "data-url", env = "CLAWSWARM_DATA_URL")]
    pub url: Option<String>,
    /// Loopback address the proxy listens on.
    #[arg(
        id = "data-proxy-listen",
        long = "data-proxy-listen",
        env = "CLAWSWARM_DATA_PROXY_LISTEN",
        default_value = "127.0.0.1:18792"
    )]
    pub listen: SocketAddr,
    /// File holding the cluster credential (preferred over the variable).
    #[arg(
        id = "data-api-key-file",
        long = "data-api-key-file",
        env = "CLAWSWARM_DATA_API_KEY_FILE"
    )]
    pub api_key_file: Option<PathBuf>,
    #[arg(
        id = "data-api-key",
        long = "data-api-key",
        env = "CLAWSWARM_DATA_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    #[arg(id = "data-auth", long = "data-auth", env = "CLAWSWARM_DATA_AUTH", value_enum, default_value_t = DataAuth::Apikey)]
    pub auth: DataAuth,
    /// Readable indices, aliases and data streams: comma-separated names
    /// and `*` patterns. Empty: nothing is readable.
    #[arg(
        id = "data-indices",
        long = "data-indices",
        env = "CLAWSWARM_DATA_INDICES",
        default_value = ""
    )]
    pub indices: String,
    /// Most results one request may ask for (`size`, ES|QL `LIMIT`).
    #[arg(
        id = "data-max-hits",
        long = "data-max-hits",
        env = "CLAWSWARM_DATA_MAX_HITS",
        default_value_t = 1000
    )]
    pub max_hits: u64,
    /// Longest a query may take, resolving its indices included.
    #[arg(
        id = "data-timeout-secs",
        long = "data-timeout-secs",
        env = "CLAWSWARM_DATA_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub timeout_secs: u64,
    #[arg(
        id = "data-max-response-bytes", long = "data-max-response-bytes",
        env = "CLAWSWARM_DATA_MAX_RESPONSE_BYTES",
        default_value_t = 8 * 1024 * 1024
    )]
    pub max_response_bytes: usize,
    #[arg(
        id = "data-max-request-bytes", long = "data-max-request-bytes",
        env = "CLAWSWARM_DATA_MAX_REQUEST_BYTES",
        default_value_t = 1024 * 1024
    )]
    pub max_request_bytes: usize,
    /// The credential callers present (`Authorization: Bearer` or
    /// `ApiKey`); created when missing. Relative to CLAWSWARM_DATA_DIR.
    #[arg(
        id = "data-proxy-token-file",
        long = "data-proxy-token-file",
        env = "CLAWSWARM_DATA_PROXY_TOKEN_FILE",
        default_value = "data-proxy-token"
    )]
    pub token_file: PathBuf,
}

impl fmt::Debug for DataProxyArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataProxyArgs")
            .field("url", &self.url)
            .field("listen", &self.listen)
            .field("api_key_file", &self.api_key_file)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("auth", &self.auth)
            .field("indices", &self.indices)
            .field("max_hits", &self.max_hits)
            .field("timeout_secs", &self.timeout_secs)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl DataProxyArgs {
    /// Relative state files live in the sidecar's data dir.
    pub fn resolved(&self, data_dir: &std::path::Path) -> Self {
        let mut out = self.clone();
        if out.token_file.is_relative() {
            out.token_file = data_dir.join(&self.token_file);
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataProxyError {
    #[error(
        "CLAWSWARM_DATA_URL is set: set CLAWSWARM_DATA_API_KEY_FILE or CLAWSWARM_DATA_API_KEY \
         to the search cluster's credential"
    )]
    NoKey,
    #[error("cannot read CLAWSWARM_DATA_API_KEY_FILE {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the search cluster credential is empty or not a valid header value")]
    BadKey,
    #[error("cannot read or create CLAWSWARM_DATA_PROXY_TOKEN_FILE {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CLAWSWARM_DATA_URL must be an http(s) URL, got {0:?}")]
    BadUrl(String),
    #[error("CLAWSWARM_DATA_PROXY_LISTEN must be a loopback address, got {0}")]
    NotLoopback(SocketAddr),
    #[error("CLAWSWARM_DATA_MAX_HITS must be at least 1")]
    NoHits,
    #[error("http client: {0}")]
    Client(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// An answer from the engine, after the proxy's checks.
struct Answer {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
    documents: u64,
    /// The body parsed, for a successful JSON answer.
    json: Option<Value>,
}

/// What the audit line and the metrics say about one query.
struct Audit<'a> {
    kind: &'static str,
    indices: &'a str,
}

/// The cluster behind the proxy and the credential it is called with.
struct Engine {
    url: String,
    credential: HeaderValue,
}

pub struct DataProxy {
    http: reqwest::Client,
    /// `None`: no cluster configured; every query says so.
    engine: Option<Engine>,
    client_token: String,
    allow: Allowlist,
    max_hits: u64,
    timeout: Duration,
    max_response_bytes: usize,
    max_request_bytes: usize,
    cursors: Cursors,
    metrics: Arc<SidecarMetrics>,
    meter: Option<DataMeter>,
}

impl DataProxy {
    pub fn new(
        args: &DataProxyArgs,
        metrics: Arc<SidecarMetrics>,
        meter: Option<DataMeter>,
    ) -> Result<Arc<Self>, DataProxyError> {
        if !args.listen.ip().is_loopback() {
            return Err(DataProxyError::NotLoopback(args.listen));
        }
        if args.max_hits == 0 {
            return Err(DataProxyError::NoHits);
        }
        let engine = match args.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            None => None,
            Some(url) => Some(Engine {
                url: engine_url(url)?,
                credential: credential(args)?,
            }),
        };
        let client_token = crate::token_file::ensure(&args.token_file).map_err(|source| {
            DataProxyError::TokenFile {
                path: args.token_file.clone(),
                source,
            }
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| DataProxyError::Client(e.to_string()))?;
        Ok(Arc::new(Self {
            http,
            engine,
            client_token,
            allow: Allowlist::parse(&args.indices),
            max_hits: args.max_hits,
            timeout: Duration::from_secs(args.timeout_secs.max(1)),
            max_response_bytes: args.max_response_bytes,
            max_request_bytes: args.max_request_bytes,
            cursors: Cursors::default(),
            metrics,
            meter,
        }))
    }

    pub fn allowlist(&self) -> &Allowlist {
        &self.allow
    }

    pub fn max_hits(&self) -> u64 {
        self.max_hits
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(MCP_PATH, post(mcp::serve))
            .fallback(any(handle))
            .with_state(self.clone())
    }

    /// Serve until `shutdown` resolves.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// The caller presented this agent's data-proxy credential.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let v = value.as_bytes().trim_ascii();
        let token = v
            .strip_prefix(b"Bearer ".as_slice())
            .or_else(|| v.strip_prefix(b"ApiKey ".as_slice()));
        token.is_some_and(|t| {
            crate::token_file::matches(t.trim_ascii(), self.client_token.as_bytes())
        })
    }

    /// Run one request through every check and the engine; meter and
    /// audit it. Used by the HTTP front and by the MCP tools alike.
    async fn query(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Response {
        let started = Instant::now();
        let route = route::classify(method, path);
        let kind = route.as_ref().map_or("other", Route::kind);
        let mut audit = Audit { kind, indices: "" };
        let indices_seen = std::sync::Mutex::new(String::new());
        let outcome = match tokio::time::timeout(
            self.timeout,
            self.run(route, path, query, body, &indices_seen),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                "clawswarm_timeout",
                format!(
                    "the search engine did not answer within {} s (CLAWSWARM_DATA_TIMEOUT_SECS); \
                     narrow the query or try again later",
                    self.timeout.as_secs()
                ),
            )),
        };
        let seen = indices_seen.into_inner().unwrap_or_else(|e| e.into_inner());
        audit.indices = &seen;
        match outcome {
            Ok(answer) => {
                let label = if answer.status.is_success() {
                    "ok"
                } else {
                    "engine_error"
                };
                self.record(
                    &audit,
                    label,
                    answer.status,
                    answer.documents,
                    answer.body.len(),
                    started,
                );
                let mut resp = Response::new(Body::from(answer.body));
                *resp.status_mut() = answer.status;
                if let Some(ct) = answer.content_type {
                    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                resp
            }
            Err(refusal) => {
                self.record(&audit, refusal.outcome(), refusal.status, 0, 0, started);
                warn!(kind = audit.kind, reason = %refusal.reason, "data query refused");
                refusal.into_response()
            }
        }
    }

    fn record(
        &self,
        audit: &Audit<'_>,
        outcome: &'static str,
        status: StatusCode,
        documents: u64,
        bytes: usize,
        started: Instant,
    ) {
        let elapsed = started.elapsed();
        let m = &self.metrics;
        m.data_queries
            .get_or_create(&DataQueryLabels {
                kind: audit.kind,
                outcome,
            })
            .inc();
        m.data_documents.inc_by(documents);
        m.data_response_bytes.inc_by(bytes as u64);
        m.data_query_seconds.observe(elapsed.as_secs_f64());
        if let Some(meter) = &self.meter {
            meter(&DataCounts {
                queries: 1,
                refused: u64::from(outcome.starts_with("refused")),
                documents,
                bytes: bytes as u64,
            });
        }
        info!(
            target: "clawswarm::data_audit",
            kind = audit.kind,
            indices = audit.indices,
            outcome,
            status = status.as_u16(),
            documents,
            bytes,
            ms = elapsed.as_millis() as u64,
            "data query"
        );
    }

    async fn run(
        &self,
        route: Result<Route, Refusal>,
        path: &str,
        query: Option<&str>,
        body: &[u8],
        seen: &std::sync::Mutex<String>,
    ) -> Result<Answer, Refusal> {
        let route = route?;
        if self.engine.is_none() {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "clawswarm_not_configured",
                "no company search cluster is configured for this agent: an admin sets \
                 CLAWSWARM_DATA_URL and CLAWSWARM_DATA_API_KEY in the shared Secret \
                 (docs/company-data.md)",
            ));
        }
        let mut params = Params::parse(query)?;
        body::refuse_smuggling(&params)?;
        let note = |expr: &str| {
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(expr);
        };
        let json = || body::json_object(body);
        match route {
            Route::Info => {
                self.forward(Method::GET, "/", &Params::default(), None)
                    .await
            }
            Route::Search { indices } => {
                let json = json()?;
                body::check_size(&params, json.as_ref(), self.max_hits)?;
                let target = match indices {
                    Some(expr) => {
                        note(&expr);
                        let vetted = self.vet(&expr, &params).await?;
                        format!("/{}/_search", enc(&vetted))
                    }
                    None => match body::pit_of(json.as_ref()) {
                        Some(pit) if self.cursors.issued(&pit) => {
                            note("<point in time>");
                            "/_search".to_owned()
                        }
                        Some(_) => return Err(unknown_cursor("point in time")),
                        None => {
                            return Err(Refusal::bad_request(
                                "POST /_search refused: name the indices (e.g. /my-index/_search); \
                                 searching every index at once is not served",
                            ));
                        }
                    },
                };
                let answer = self
                    .forward(Method::POST, &target, &params, json.as_ref().map(json_body))
                    .await?;
                self.remember(&answer, &["_scroll_id", "pit_id"]);
                Ok(answer)
            }
            Route::MultiSearch { indices } => {
                let mut items = body::multi_search(body)?;
                for (i, item) in items.iter_mut().enumerate() {
                    let expr = item.indices()?.or_else(|| indices.clone()).ok_or_else(|| {
                        Refusal::bad_request(format!(
                            "_msearch search {}: name its indices in the header's \"index\"",
                            i + 1
                        ))
                    })?;
                    body::check_size(&Params::default(), Some(&item.body), self.max_hits)?;
                    note(&expr);
                    let vetted = self.vet(&expr, &params).await?;
                    item.header.insert("index".into(), Value::String(vetted));
                }
                let ndjson = (body::encode_multi(&items), "application/x-ndjson");
                self.forward(Method::POST, "/_msearch", &params, Some(ndjson))
                    .await
            }
            Route::Count { indices } => {
                let json = json()?;
                note(&indices);
                let vetted = self.vet(&indices, &params).await?;
                let target = format!("/{}/_count", enc(&vetted));
                self.forward(Method::POST, &target, &params, json.as_ref().map(json_body))
                    .await
            }
            Route::FieldCaps { indices } => {
                let json = json()?;
                note(&indices);
                let vetted = self.vet(&indices, &params).await?;
                let target = format!("/{}/_field_caps", enc(&vetted));
                self.forward(Method::POST, &target, &params, json.as_ref().map(json_body))
                    .await
            }
            Route::Mapping { indices } => {
                note(&indices);
                let vetted = self.vet(&indices, &params).await?;
                let rest = path
                    .trim_start_matches('/')
                    .split_once('/')
                    .map_or("", |(_, r)| r);
                self.forward(
                    Method::GET,
                    &format!("/{}/{rest}", enc(&vetted)),
                    &params,
                    None,
                )
                .await
            }
            Route::Esql => {
                let q = body::esql(json()?.as_ref(), self.max_hits)?;
                if let Some(expr) = &q.indices {
                    // ES|QL names its indices inside the query; the check
                    // is the same, the query goes out as written.
                    note(expr);
                    self.vet(expr, &params).await?;
                }
                let mut out = json()?.unwrap_or_default();
                out["query"] = Value::String(q.query);
                self.forward(Method::POST, "/_query", &params, Some(json_body(&out)))
                    .await
            }
            Route::OpenPit { indices, api } => {
                note(&indices);
                let vetted = self.vet(&indices, &params).await?;
                let target = format!("/{}/{api}", enc(&vetted));
                let answer = self.forward(Method::POST, &target, &params, None).await?;
                // Elasticsearch answers `id`, OpenSearch `pit_id`.
                self.remember(&answer, &["id", "pit_id"]);
                Ok(answer)
            }
            Route::ClosePit => {
                let json = json()?;
                let ids = cursor_ids(json.as_ref(), &["id", "pit_id"]);
                if ids.is_empty() || ids.iter().any(|id| !self.cursors.issued(id)) {
                    return Err(unknown_cursor("point in time"));
                }
                note("<point in time>");
                let answer = self
                    .forward(Method::DELETE, path, &params, json.as_ref().map(json_body))
                    .await?;
                ids.iter().for_each(|id| self.cursors.forget(id));
                Ok(answer)
            }
            Route::Scroll { id } => {
                let json = json()?;
                let id = id
                    .or_else(|| params.get("scroll_id").map(str::to_owned))
                    .or_else(|| cursor_ids(json.as_ref(), &["scroll_id"]).into_iter().next());
                match id {
                    Some(id) if self.cursors.issued(&id) => {
                        note("<scroll>");
                        params.0.retain(|(k, _)| k != "scroll_id");
                        let mut out = json.unwrap_or_default();
                        out["scroll_id"] = Value::String(id);
                        let answer = self
                            .forward(
                                Method::POST,
                                "/_search/scroll",
                                &params,
                                Some(json_body(&out)),
                            )
                            .await?;
                        self.remember(&answer, &["_scroll_id"]);
                        Ok(answer)
                    }
                    _ => Err(unknown_cursor("scroll")),
                }
            }
            Route::ClearScroll { id } => {
                let json = json()?;
                let mut ids = cursor_ids(json.as_ref(), &["scroll_id"]);
                ids.extend(id);
                if ids.is_empty() || ids.iter().any(|id| !self.cursors.issued(id)) {
                    return Err(unknown_cursor("scroll"));
                }
                note("<scroll>");
                let out = serde_json::json!({ "scroll_id": ids });
                let answer = self
                    .forward(
                        Method::DELETE,
                        "/_search/scroll",
                        &params,
                        Some(json_body(&out)),
                    )
                    .await?;
                ids.iter().for_each(|id| self.cursors.forget(id));
                Ok(answer)
            }
            Route::CatIndices { indices } => {
                let vetted = match indices {
                    Some(expr) => {
                        note(&expr);
                        self.vet(&expr, &params).await?
                    }
                    None => {
                        note("<readable>");
                        self.readable().await?
                    }
                };
                if vetted.is_empty() {
                    // Nothing readable exists yet: an empty listing, in
                    // the shape asked for.
                    let json = params.get("format") == Some("json");
                    return Ok(Answer {
                        status: StatusCode::OK,
                        content_type: Some(HeaderValue::from_static(if json {
                            "application/json"
                        } else {
                            "text/plain"
                        })),
                        body: Bytes::from_static(if json { b"[]" } else { b"" }),
                        documents: 0,
                        json: None,
                    });
                }
                self.forward(
                    Method::GET,
                    &format!("/_cat/indices/{}", enc(&vetted)),
                    &params,
                    None,
                )
                .await
            }
            Route::Resolve { indices } => {
                note(&indices);
                let vetted = self.vet(&indices, &params).await?;
                self.forward(
                    Method::GET,
                    &format!("/_resolve/index/{}", enc(&vetted)),
                    &params,
                    None,
                )
                .await
            }
        }
    }

    /// Check an index expression against the allowlist after the engine
    /// expanded it; the expression to forward.
    async fn vet(&self, expr: &str, params: &Params) -> Result<String, Refusal> {
        if self.allow.is_empty() {
            return Err(Refusal::index_not_allowed(
                "this agent may read no indices: its template sets no CLAWSWARM_DATA_INDICES",
            ));
        }
        let items = indices::parse_expression(expr)?;
        let locals: Vec<&str> = items
            .iter()
            .filter_map(|i| match i {
                indices::Item::Local(n) => Some(n.as_str()),
                indices::Item::Remote(_) => None,
            })
            .collect();
        let resolved = if locals.is_empty() {
            indices::Resolved::default()
        } else {
            self.resolve(
                &locals.join(","),
                params.get("expand_wildcards").unwrap_or("open"),
            )
            .await?
        };
        indices::check(&self.allow, &items, &resolved)
    }

    /// Every readable index, alias and data stream that exists, as one
    /// expression (empty when there are none).
    async fn readable(&self) -> Result<String, Refusal> {
        if self.allow.is_empty() {
            return Err(Refusal::index_not_allowed(
                "this agent may read no indices: its template sets no CLAWSWARM_DATA_INDICES",
            ));
        }
        let resolved = self.resolve("*", "open").await?;
        let mut names: Vec<String> = Vec::new();
        for i in &resolved.indices {
            if i.data_stream.is_none() && self.allow.allows(&i.name) {
                names.push(i.name.clone());
            }
        }
        for d in &resolved.data_streams {
            if self.allow.allows(&d.name) {
                names.push(d.name.clone());
            }
        }
        Ok(names.join(","))
    }

    async fn resolve(&self, expr: &str, expand: &str) -> Result<indices::Resolved, Refusal> {
        let params = Params(vec![
            ("expand_wildcards".into(), expand.to_owned()),
            ("ignore_unavailable".into(), "true".into()),
        ]);
        let answer = self
            .forward(
                Method::GET,
                &format!("/_resolve/index/{}", enc(expr)),
                &params,
                None,
            )
            .await?;
        if !answer.status.is_success() {
            return Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                "clawswarm_engine_error",
                format!(
                    "the search engine could not resolve {expr:?} (HTTP {}): {}",
                    answer.status.as_u16(),
                    String::from_utf8_lossy(&answer.body)
                        .chars()
                        .take(500)
                        .collect::<String>()
                ),
            ));
        }
        serde_json::from_slice(&answer.body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                "clawswarm_engine_error",
                format!("the search engine's _resolve/index answer is not what was expected: {e}"),
            )
        })
    }

    /// One call to the engine with the real credential, its reply read in
    /// full within the response cap; cursors it hands out are remembered.
    async fn forward(
        &self,
        method: Method,
        path: &str,
        params: &Params,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> Result<Answer, Refusal> {
        let Some(engine) = &self.engine else {
            return Err(Refusal::bad_request(
                "no company search cluster is configured",
            ));
        };
        let mut url = format!("{}{path}", engine.url);
        if !params.0.is_empty() {
            url.push('?');
            url.push_str(&params.encode());
        }
        let mut req = self
            .http
            .request(method, &url)
            .header(header::AUTHORIZATION, engine.credential.clone())
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some((bytes, content_type)) = body {
            req = req.header(header::CONTENT_TYPE, content_type).body(bytes);
        }
        let mut resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.unreachable(&e))? {
            if buf.len() + chunk.len() > self.max_response_bytes {
                return Err(Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    "clawswarm_response_too_large",
                    format!(
                        "the answer is larger than {} bytes (CLAWSWARM_DATA_MAX_RESPONSE_BYTES); \
                         ask for fewer hits, fewer fields (_source) or aggregate",
                        self.max_response_bytes
                    ),
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        let json = if status.is_success() {
            serde_json::from_slice::<Value>(&buf).ok()
        } else {
            None
        };
        let documents = json.as_ref().map_or(0, body::documents_in);
        Ok(Answer {
            status,
            content_type,
            body: Bytes::from(buf),
            documents,
            json,
        })
    }

    /// Remember the scroll or point-in-time ids an answer hands out.
    fn remember(&self, answer: &Answer, keys: &[&str]) {
        let Some(v) = &answer.json else { return };
        for key in keys {
            if let Some(id) = v.get(*key).and_then(Value::as_str) {
                self.cursors.remember(id);
            }
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> Refusal {
        let cause = crate::error_chain::innermost_cause(e);
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            "clawswarm_engine_unreachable",
            format!(
                "cannot reach the company search engine at {}: {cause}",
                self.engine.as_ref().map_or("", |e| e.url.as_str())
            ),
        )
    }
}

fn engine_url(url: &str) -> Result<String, DataProxyError> {
    let upstream = url.trim_end_matches('/').to_owned();
    if upstream.starts_with("http://") || upstream.starts_with("https://") {
        Ok(upstream)
    } else {
        Err(DataProxyError::BadUrl(url.to_owned()))
    }
}

/// The `Authorization` value the engine gets, from the key file or variable.
fn credential(args: &DataProxyArgs) -> Result<HeaderValue, DataProxyError> {
    use crate::secret::{SecretError, read};
    let key = read(args.api_key_file.as_deref(), args.api_key.as_deref()).map_err(|e| match e {
        SecretError::Missing => DataProxyError::NoKey,
        SecretError::File { path, source } => DataProxyError::KeyFile { path, source },
        SecretError::Empty => DataProxyError::BadKey,
    })?;
    let value = match args.auth {
        DataAuth::Apikey => format!("ApiKey {key}"),
        DataAuth::Bearer => format!("Bearer {key}"),
        DataAuth::Basic => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
    };
    let mut credential = HeaderValue::from_str(&value).map_err(|_| DataProxyError::BadKey)?;
    credential.set_sensitive(true);
    Ok(credential)
}

fn json_body(v: &Value) -> (Vec<u8>, &'static str) {
    (v.to_string().into_bytes(), "application/json")
}

/// Percent-encode an index expression as one path segment (commas, `*`,
/// `:` and names stay readable; a `/` stays data, never a separator).
fn enc(expr: &str) -> String {
    body::percent_encode(expr, b"-_.*,:+")
}

fn cursor_ids(body: Option<&Value>, keys: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for key in keys {
        match body.and_then(|b| b.get(*key)) {
            Some(Value::String(s)) => out.push(s.clone()),
            Some(Value::Array(a)) => {
                out.extend(a.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            _ => {}
        }
    }
    out
}

fn unknown_cursor(what: &str) -> Refusal {
    Refusal::bad_request(format!(
        "this {what} was not opened through this agent's data proxy (or has expired here); \
         open a new one on the index you want"
    ))
}

/// The HTTP front: authenticate, bound the body, run the pipeline.
async fn handle(State(p): State<Arc<DataProxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if !p.authorized(&parts.headers) {
        p.metrics
            .data_queries
            .get_or_create(&DataQueryLabels {
                kind: "other",
                outcome: "unauthorized",
            })
            .inc();
        warn!("data query refused: the caller did not present this agent's data proxy credential");
        return Refusal::new(
            StatusCode::UNAUTHORIZED,
            "clawswarm_unauthorized",
            "present this agent's data proxy credential (Authorization: Bearer <token>)",
        )
        .into_response();
    }
    let body = match axum::body::to_bytes(body, p.max_request_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "clawswarm_request_too_large",
                format!(
                    "the request body is larger than {} bytes (CLAWSWARM_DATA_MAX_REQUEST_BYTES)",
                    p.max_request_bytes
                ),
            )
            .into_response();
        }
    };
    p.query(&parts.method, parts.uri.path(), parts.uri.query(), &body)
        .await
}

/// Start the data proxy when `CLAWSWARM_DATA_URL` is set, or `always`
/// (an agent whose tools expect it: it then answers that no cluster is
/// configured); its address.
pub async fn start(
    args: &DataProxyArgs,
    always: bool,
    metrics: Arc<SidecarMetrics>,
    meter: Option<DataMeter>,
    shutdown: tokio_util::sync::CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<Option<SocketAddr>, DataProxyError> {
    let configured = args.url.as_deref().is_some_and(|u| !u.trim().is_empty());
    if !configured && !always {
        return Ok(None);
    }
    let proxy = DataProxy::new(args, metrics, meter)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| DataProxyError::Bind {
            addr: args.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DataProxyError::Bind {
            addr: args.listen,
            source,
        })?;
    info!(
        listen = %addr,
        engine = proxy.engine.as_ref().map_or("none configured", |e| e.url.as_str()),
        indices = %proxy.allow.describe(),
        "data proxy serving"
    );
    tasks.spawn(async move {
        if let Err(e) = proxy.serve(listener, shutdown.cancelled_owned()).await {
            warn!(error = %e, "data proxy stopped");
        }
    });
    Ok(Some(addr))
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

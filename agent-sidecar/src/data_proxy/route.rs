//! Which read API a request is, decided from its method and path alone,
//! before anything reaches the engine. Everything that is not one of the
//! reads below is refused as a write: an allowlist, so an API the engine
//! adds tomorrow is refused until someone decides it is a read.

use axum::http::Method;

use super::reply::Refusal;

/// The read APIs the proxy serves. `indices` is the raw index expression
/// from the path (checked later against the allowlist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the engine's name and version.
    Info,
    /// `{index}/_search`, or `/_search` carrying a point in time.
    Search {
        indices: Option<String>,
    },
    /// `{index}/_msearch` or `/_msearch` (every header line names indices).
    MultiSearch {
        indices: Option<String>,
    },
    Count {
        indices: String,
    },
    FieldCaps {
        indices: String,
    },
    /// `GET {index}/_mapping` and `GET {index}/_mapping/field/{fields}`.
    Mapping {
        indices: String,
    },
    /// `POST /_query`: ES|QL; the indices are in its `FROM`.
    Esql,
    /// `POST {index}/_pit` (Elasticsearch) or
    /// `POST {index}/_search/point_in_time` (OpenSearch).
    OpenPit {
        indices: String,
        api: &'static str,
    },
    /// `DELETE /_pit` or `DELETE /_search/point_in_time`.
    ClosePit,
    /// `/_search/scroll[/{id}]`: continue a scroll this proxy opened.
    Scroll {
        id: Option<String>,
    },
    /// `DELETE /_search/scroll[/{id}]`.
    ClearScroll {
        id: Option<String>,
    },
    /// `GET /_cat/indices[/{index}]`: with no expression, the allowed ones.
    CatIndices {
        indices: Option<String>,
    },
    /// `GET /_resolve/index/{index}`.
    Resolve {
        indices: String,
    },
}

impl Route {
    /// The `kind` label of metrics and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Search { .. } => "search",
            Self::MultiSearch { .. } => "msearch",
            Self::Count { .. } => "count",
            Self::FieldCaps { .. } => "field_caps",
            Self::Mapping { .. } => "mapping",
            Self::Esql => "esql",
            Self::OpenPit { .. } | Self::ClosePit => "pit",
            Self::Scroll { .. } | Self::ClearScroll { .. } => "scroll",
            Self::CatIndices { .. } | Self::Resolve { .. } => "list_indices",
        }
    }
}

/// The path's segments, decoded; refuses the tricks that make a proxy and
/// the engine disagree on what a path means (`..`, encoded slashes and
/// backslashes, empty segments, control characters).
pub fn segments(path: &str) -> Result<Vec<String>, Refusal> {
    let trick = |why: &str| Refusal::bad_request(format!("path {path:?} refused: {why}"));
    let Some(rest) = path.strip_prefix('/') else {
        return Err(trick("it must start with /"));
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut out = Vec::new();
    for raw in rest.split('/') {
        let seg =
            super::body::decode_component(raw).ok_or_else(|| trick("invalid percent-encoding"))?;
        if seg.is_empty() {
            return Err(trick("empty path segment"));
        }
        if seg == "." || seg == ".." {
            return Err(trick("dot segments are not allowed"));
        }
        if seg.contains(['/', '\\']) {
            return Err(trick("an encoded slash or backslash inside a segment"));
        }
        if seg.chars().any(char::is_control) {
            return Err(trick("control characters"));
        }
        out.push(seg);
    }
    Ok(out)
}

/// Classify a request. `path` is the raw (still percent-encoded) path.
pub fn classify(method: &Method, path: &str) -> Result<Route, Refusal> {
    let segs = segments(path)?;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let read = *method == Method::GET || *method == Method::POST;
    let get = *method == Method::GET || *method == Method::HEAD;
    let delete = *method == Method::DELETE;
    let index = |i: &str| -> Result<String, Refusal> {
        if i.starts_with('_') {
            // `/_bulk`, `/_security/...`, `/_all/_search`, `/_doc/...`:
            // engine APIs and `_all`, never an index name.
            Err(Refusal::read_only(method.as_str(), path))
        } else {
            Ok(i.to_owned())
        }
    };
    let route = match (s.as_slice(), read, get, delete) {
        ([], _, true, _) => Route::Info,
        (["_search"], true, _, _) => Route::Search { indices: None },
        (["_msearch"], true, _, _) => Route::MultiSearch { indices: None },
        (["_query"], _, _, _) if *method == Method::POST => Route::Esql,
        (["_pit"] | ["_search", "point_in_time"], _, _, true) => Route::ClosePit,
        (["_search", "scroll"], true, _, _) => Route::Scroll { id: None },
        (["_search", "scroll", id], true, _, _) => Route::Scroll {
            id: Some((*id).to_owned()),
        },
        (["_search", "scroll"], _, _, true) => Route::ClearScroll { id: None },
        (["_search", "scroll", id], _, _, true) => Route::ClearScroll {
            id: Some((*id).to_owned()),
        },
        (["_cat", "indices"], _, true, _) => Route::CatIndices { indices: None },
        (["_cat", "indices", i], _, true, _) => Route::CatIndices {
            indices: Some(index(i)?),
        },
        (["_resolve", "index", i], _, true, _) => Route::Resolve { indices: index(i)? },
        ([i, "_search"], true, _, _) => Route::Search {
            indices: Some(index(i)?),
        },
        ([i, "_msearch"], true, _, _) => Route::MultiSearch {
            indices: Some(index(i)?),
        },
        ([i, "_count"], true, _, _) => Route::Count { indices: index(i)? },
        ([i, "_field_caps"], true, _, _) => Route::FieldCaps { indices: index(i)? },
        ([i, "_mapping"] | [i, "_mapping", "field", _], _, true, _) => {
            Route::Mapping { indices: index(i)? }
        }
        ([i, "_pit"], _, _, _) if *method == Method::POST => Route::OpenPit {
            indices: index(i)?,
            api: "_pit",
        },
        ([i, "_search", "point_in_time"], _, _, _) if *method == Method::POST => Route::OpenPit {
            indices: index(i)?,
            api: "_search/point_in_time",
        },
        (["_count" | "_field_caps" | "_mapping"], _, _, _) => {
            return Err(Refusal::bad_request(format!(
                "{} {path} refused: name the indices (e.g. /my-index{path}); all indices at \
                 once are not served",
                method.as_str()
            )));
        }
        _ => return Err(Refusal::read_only(method.as_str(), path)),
    };
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: &str, p: &str) -> Result<Route, Refusal> {
        classify(&Method::from_bytes(m.as_bytes()).unwrap(), p)
    }

    fn refused(m: &str, p: &str) -> Refusal {
        route(m, p).expect_err(&format!("{m} {p} must be refused"))
    }

    #[test]
    fn the_read_apis_are_served() {
        let idx = |i: &str| Some(i.to_owned());
        assert_eq!(route("GET", "/"), Ok(Route::Info));
        assert_eq!(
            route("POST", "/pipelines/_search"),
            Ok(Route::Search {
                indices: idx("pipelines")
            })
        );
        assert_eq!(
            route("GET", "/a,b*/_search/"),
            Ok(Route::Search {
                indices: idx("a,b*")
            })
        );
        assert_eq!(
            route("POST", "/_msearch"),
            Ok(Route::MultiSearch { indices: None })
        );
        assert_eq!(
            route("GET", "/p/_count"),
            Ok(Route::Count {
                indices: "p".into()
            })
        );
        assert_eq!(
            route("POST", "/p/_field_caps"),
            Ok(Route::FieldCaps {
                indices: "p".into()
            })
        );
        assert_eq!(
            route("GET", "/p/_mapping"),
            Ok(Route::Mapping {
                indices: "p".into()
            })
        );
        assert_eq!(
            route("GET", "/p/_mapping/field/status"),
            Ok(Route::Mapping {
                indices: "p".into()
            })
        );
        assert_eq!(route("POST", "/_query"), Ok(Route::Esql));
        assert_eq!(
            route("POST", "/p/_pit"),
            Ok(Route::OpenPit {
                indices: "p".into(),
                api: "_pit"
            })
        );
        assert_eq!(
            route("POST", "/p/_search/point_in_time"),
            Ok(Route::OpenPit {
                indices: "p".into(),
                api: "_search/point_in_time"
            })
        );
        assert_eq!(route("DELETE", "/_pit"), Ok(Route::ClosePit));
        assert_eq!(
            route("POST", "/_search/scroll"),
            Ok(Route::Scroll { id: None })
        );
        assert_eq!(
            route("DELETE", "/_search/scroll"),
            Ok(Route::ClearScroll { id: None })
        );
        assert_eq!(
            route("GET", "/_cat/indices"),
            Ok(Route::CatIndices { indices: None })
        );
        assert_eq!(
            route("GET", "/_resolve/index/p*"),
            Ok(Route::Resolve {
                indices: "p*".into()
            })
        );
    }

    #[test]
    fn writes_and_admin_apis_are_refused_as_read_only() {
        for (m, p) in [
            ("POST", "/_bulk"),
            ("POST", "/pipelines/_bulk"),
            ("PUT", "/pipelines/_doc/1"),
            ("POST", "/pipelines/_doc"),
            ("DELETE", "/pipelines/_doc/1"),
            ("POST", "/pipelines/_update/1"),
            ("POST", "/pipelines/_update_by_query"),
            ("POST", "/pipelines/_delete_by_query"),
            ("POST", "/_reindex"),
            ("PUT", "/pipelines"),
            ("DELETE", "/pipelines"),
            ("PUT", "/pipelines/_mapping"),
            ("PUT", "/_security/user/x"),
            ("GET", "/_security/user"),
            ("PUT", "/_snapshot/repo"),
            ("PUT", "/_cluster/settings"),
            ("GET", "/_cluster/settings"),
            ("PUT", "/_ingest/pipeline/p"),
            ("POST", "/_scripts/s"),
            ("PUT", "/pipelines/_settings"),
            ("POST", "/pipelines/_close"),
            ("DELETE", "/pipelines/_search"),
            ("GET", "/_all/_search"),
            ("GET", "/_nodes"),
        ] {
            let r = refused(m, p);
            assert_eq!(r.kind, "clawswarm_read_only", "{m} {p}: {r:?}");
            assert!(r.reason.contains("read-only"), "{m} {p}: {}", r.reason);
        }
    }

    #[test]
    fn path_tricks_are_refused_before_any_routing() {
        for p in [
            "/pipelines/../_bulk",
            "/pipelines/%2e%2e/_bulk",
            "/pipelines%2f_bulk/_search",
            "/pipelines%5C_bulk/_search",
            "//_search",
            "/pipelines//_search",
            "/pipe%zz/_search",
            "/pipe%0a/_search",
        ] {
            let r = refused("POST", p);
            assert_eq!(r.kind, "clawswarm_bad_request", "{p}: {r:?}");
        }
        // `_search` inside an index name is an API name, not an index.
        assert_eq!(
            refused("POST", "/_search/_search").kind,
            "clawswarm_read_only"
        );
    }

    #[test]
    fn apis_over_every_index_must_name_indices() {
        let r = refused("GET", "/_count");
        assert!(r.reason.contains("name the indices"), "{}", r.reason);
    }
}

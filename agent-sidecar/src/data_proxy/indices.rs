//! The per-template index allowlist, and the check of an index expression
//! against it *after* the engine has expanded it: comma lists, wildcards,
//! aliases (every index behind one) and data streams. Remote `cluster:index`
//! names cannot be expanded from here, so they must be named exactly and
//! match the allowlist as written.
//!
//! A request that reaches any index the template does not allow is refused,
//! naming that index: never forwarded with the index silently left out,
//! since the person would then read a partial answer as the whole one.
//! Wildcards that passed are forwarded as the concrete names they expanded
//! to, so an index created between the check and the search is not read.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::reply::Refusal;

/// Glob patterns (`*` only) of readable names, e.g. `pipelines,logs-*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    patterns: Vec<String>,
}

impl Allowlist {
    pub fn parse(spec: &str) -> Self {
        Self {
            patterns: spec
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Like a shell's `*` and dotfiles, a pattern matches a system or
    /// hidden index (`.security`, `.kibana`) only when it starts with `.`
    /// itself: `*` means "the company's data", not the engine's own.
    pub fn allows(&self, name: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| glob(p, name) && (!name.starts_with('.') || p.starts_with('.')))
    }

    /// The allowlist as one index expression (for "list what I may read").
    pub fn expression(&self) -> String {
        self.patterns.join(",")
    }

    pub fn describe(&self) -> String {
        if self.patterns.is_empty() {
            "none (CLAWSWARM_DATA_INDICES is empty)".to_owned()
        } else {
            self.patterns.join(", ")
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// One item of a comma-separated index expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A local name or wildcard pattern, expanded by the engine.
    Local(String),
    /// `cluster:index`, matched as written.
    Remote(String),
}

/// Split and vet an expression: no exclusions, no date math, no `_all`,
/// nothing that is not an index name.
pub fn parse_expression(expr: &str) -> Result<Vec<Item>, Refusal> {
    let bad = |item: &str, why: &str| {
        Refusal::bad_request(format!("index expression {expr:?}: {item:?} {why}"))
    };
    let mut items = Vec::new();
    for item in expr.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(bad(item, "is empty"));
        }
        if item.starts_with('-') {
            return Err(bad(
                item,
                "is an exclusion; name the indices to read instead of the ones to leave out",
            ));
        }
        if item.starts_with('<') {
            return Err(bad(item, "is date math; name the concrete index"));
        }
        if item.starts_with('_') || item.contains(['/', '\\', '"', '<', '>', '|', ' ', '?', '#']) {
            return Err(bad(item, "is not an index name"));
        }
        match item.split_once(':') {
            Some((cluster, index)) => {
                if cluster.is_empty() || index.is_empty() || index.contains(':') {
                    return Err(bad(item, "is not a cluster:index name"));
                }
                if item.contains('*') {
                    return Err(bad(
                        item,
                        "is a wildcard on a remote cluster, which this proxy cannot expand; \
                         name the remote index exactly",
                    ));
                }
                items.push(Item::Remote(item.to_owned()));
            }
            None => items.push(Item::Local(item.to_owned())),
        }
    }
    Ok(items)
}

/// The engine's `GET _resolve/index/{expr}` answer.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Resolved {
    #[serde(default)]
    pub indices: Vec<ResolvedIndex>,
    #[serde(default)]
    pub aliases: Vec<ResolvedAlias>,
    #[serde(default)]
    pub data_streams: Vec<ResolvedStream>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ResolvedIndex {
    pub name: String,
    /// Set when this is a data stream's backing index.
    #[serde(default)]
    pub data_stream: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ResolvedAlias {
    pub name: String,
    #[serde(default)]
    pub indices: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ResolvedStream {
    pub name: String,
}

/// Check what `items` expanded to (`resolved`, the engine's answer for all
/// local items at once) and return the expression to forward.
pub fn check(allow: &Allowlist, items: &[Item], resolved: &Resolved) -> Result<String, Refusal> {
    let refuse = |name: &str, via: Option<&str>| {
        let via = via
            .map(|v| format!(" (reached through {v})"))
            .unwrap_or_default();
        Refusal::index_not_allowed(format!(
            "index {name:?}{via} is not readable by this agent; this template allows: {}",
            allow.describe()
        ))
    };
    let streams: BTreeSet<&str> = resolved
        .data_streams
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    let mut forward = Vec::new();
    for item in items {
        let pattern = match item {
            Item::Remote(name) => {
                if !allow.allows(name) {
                    return Err(refuse(name, None));
                }
                forward.push(name.clone());
                continue;
            }
            Item::Local(p) => p.as_str(),
        };
        let mut expanded = Vec::new();
        for index in resolved.indices.iter().filter(|i| glob(pattern, &i.name)) {
            // A backing index is judged by its stream's name.
            let judged = index.data_stream.as_deref().unwrap_or(&index.name);
            if !allow.allows(judged) {
                return Err(refuse(&index.name, None));
            }
            expanded.push(index.name.clone());
        }
        for alias in resolved.aliases.iter().filter(|a| glob(pattern, &a.name)) {
            // What is read is what counts: every index behind the alias.
            for member in &alias.indices {
                let stream = resolved
                    .indices
                    .iter()
                    .find(|i| &i.name == member)
                    .and_then(|i| i.data_stream.as_deref());
                if !allow.allows(stream.unwrap_or(member)) {
                    return Err(refuse(member, Some(&format!("alias {:?}", alias.name))));
                }
            }
            expanded.push(alias.name.clone());
        }
        for stream in streams.iter().filter(|s| glob(pattern, s)) {
            if !allow.allows(stream) {
                return Err(refuse(stream, None));
            }
            expanded.push((*stream).to_owned());
        }
        if pattern.contains('*') {
            if expanded.is_empty() {
                // Matches nothing now: forwarded as is, the engine answers
                // with no hits (or its own error if it must match).
                if !allow_covers(allow, pattern) {
                    return Err(refuse(pattern, None));
                }
                forward.push(pattern.to_owned());
            } else {
                // Backing indices are read through their stream's name.
                expanded.retain(|n| {
                    !resolved
                        .indices
                        .iter()
                        .any(|i| &i.name == n && i.data_stream.is_some())
                });
                forward.extend(expanded);
            }
        } else {
            // A literal name: an index, alias or stream checked above, or
            // one that does not exist (the engine says so, if allowed).
            if expanded.is_empty() && !allow.allows(pattern) {
                return Err(refuse(pattern, None));
            }
            forward.push(pattern.to_owned());
        }
    }
    let mut seen = BTreeSet::new();
    forward.retain(|n| seen.insert(n.clone()));
    Ok(forward.join(","))
}

/// Whether every name the wildcard `pattern` could ever match is allowed:
/// an allowlist entry equal to it, or a `prefix*` entry it starts with.
fn allow_covers(allow: &Allowlist, pattern: &str) -> bool {
    allow.patterns.iter().any(|a| {
        a == pattern
            || a.strip_suffix('*')
                .is_some_and(|prefix| !prefix.contains('*') && pattern.starts_with(prefix))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(json: serde_json::Value) -> Resolved {
        serde_json::from_value(json).unwrap()
    }

    fn local(items: &[&str]) -> Vec<Item> {
        items.iter().map(|i| Item::Local((*i).to_owned())).collect()
    }

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob("logs-*", "logs-2026"));
        assert!(glob("*", "anything"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("logs-*", "logz-1"));
        assert!(!glob("pipelines", "pipelines-secret"));
        assert!(glob("pipelines", "pipelines"));
    }

    #[test]
    fn a_star_does_not_reach_system_indices() {
        let allow = Allowlist::parse("*");
        assert!(allow.allows("pipelines"));
        assert!(!allow.allows(".security-7"));
        assert!(Allowlist::parse(".kibana*").allows(".kibana_1"));
    }

    #[test]
    fn expressions_are_vetted() {
        assert_eq!(
            parse_expression("a, b*,eu:logs").unwrap(),
            vec![
                Item::Local("a".into()),
                Item::Local("b*".into()),
                Item::Remote("eu:logs".into())
            ]
        );
        for bad in [
            "-secret",
            "a,,b",
            "<logs-{now/d}>",
            "_all",
            "eu:*",
            "a b",
            "x:y:z",
        ] {
            assert!(parse_expression(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_wildcard_reaching_a_disallowed_index_is_refused_by_name() {
        let allow = Allowlist::parse("pipelines*");
        let r = resolved(serde_json::json!({"indices": [
            {"name": "pipelines-2026"}, {"name": "hr-salaries"}
        ]}));
        assert_eq!(
            check(&allow, &local(&["pipelines*"]), &r).unwrap(),
            "pipelines-2026"
        );
        let err = check(&allow, &local(&["*"]), &r).unwrap_err();
        assert_eq!(err.kind, "clawswarm_index_not_allowed");
        assert!(err.reason.contains("hr-salaries"), "{}", err.reason);
    }

    #[test]
    fn an_alias_is_as_readable_as_the_indices_behind_it() {
        let allow = Allowlist::parse("pipelines*,all-runs");
        let r = resolved(serde_json::json!({
            "indices": [{"name": "pipelines-1"}, {"name": "hr"}],
            "aliases": [{"name": "all-runs", "indices": ["pipelines-1", "hr"]},
                        {"name": "runs", "indices": ["pipelines-1"]}]
        }));
        let err = check(&allow, &local(&["all-runs"]), &r).unwrap_err();
        assert!(
            err.reason.contains("\"hr\"") && err.reason.contains("all-runs"),
            "{}",
            err.reason
        );
        assert_eq!(check(&allow, &local(&["runs"]), &r).unwrap(), "runs");
    }

    #[test]
    fn data_streams_are_judged_by_their_name() {
        let allow = Allowlist::parse("logs-app");
        let r = resolved(serde_json::json!({
            "indices": [{"name": ".ds-logs-app-000001", "data_stream": "logs-app"}],
            "data_streams": [{"name": "logs-app"}]
        }));
        assert_eq!(check(&allow, &local(&["logs-*"]), &r).unwrap(), "logs-app");
    }

    #[test]
    fn remote_names_match_as_written_and_missing_literals_need_the_allowlist() {
        let allow = Allowlist::parse("eu:pipelines,pipelines");
        let none = Resolved::default();
        assert_eq!(
            check(&allow, &[Item::Remote("eu:pipelines".into())], &none).unwrap(),
            "eu:pipelines"
        );
        assert!(check(&allow, &[Item::Remote("us:pipelines".into())], &none).is_err());
        assert_eq!(
            check(&allow, &local(&["pipelines"]), &none).unwrap(),
            "pipelines"
        );
        assert!(check(&allow, &local(&["secrets"]), &none).is_err());
        assert!(check(&Allowlist::default(), &local(&["pipelines"]), &none).is_err());
    }

    #[test]
    fn an_empty_wildcard_is_forwarded_only_inside_the_allowlist() {
        let allow = Allowlist::parse("pipelines*");
        let none = Resolved::default();
        assert_eq!(
            check(&allow, &local(&["pipelines-20*"]), &none).unwrap(),
            "pipelines-20*"
        );
        assert!(check(&allow, &local(&["hr*"]), &none).is_err());
    }
}

//! What the proxy reads out of a request before forwarding it: query
//! parameters, JSON and NDJSON bodies, ES|QL's `FROM`, and the result-size
//! cap applied to each of them. Pure functions; the engine is not involved.

use serde_json::Value;

use super::reply::Refusal;
use axum::http::StatusCode;

/// Query parameters, decoded (`+` is a space, `%XX` a byte).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Result<Self, Refusal> {
        let mut out = Vec::new();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| {
                decode_component(&s.replace('+', " ")).ok_or_else(|| {
                    Refusal::bad_request(format!(
                        "query parameter {pair:?} is not valid percent-encoding"
                    ))
                })
            };
            out.push((dec(k)?, dec(v)?));
        }
        Ok(Self(out))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn encode(&self) -> String {
        let enc = |s: &str| percent_encode(s, b"-_.~*,");
        self.0
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Percent-encode every byte but ASCII alphanumerics and `keep`.
pub fn percent_encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decode percent-encoding; `None` when it is invalid or not UTF-8.
pub fn decode_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parameters that would carry a body past the body checks, or switch
/// the engine to another API.
pub fn refuse_smuggling(params: &Params) -> Result<(), Refusal> {
    for name in ["source", "source_content_type"] {
        if params.get(name).is_some() {
            return Err(Refusal::bad_request(format!(
                "query parameter {name:?} is not served: send the request body as the body"
            )));
        }
    }
    Ok(())
}

/// The JSON object body, if any.
pub fn json_object(body: &[u8]) -> Result<Option<Value>, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err(Refusal::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(Refusal::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

fn cap_error(asked: u64, cap: u64, what: &str) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "clawswarm_result_cap",
        format!(
            "{what} asks for {asked} results; this agent returns at most {cap} per request \
             (CLAWSWARM_DATA_MAX_HITS): ask for fewer, aggregate, or page with search_after"
        ),
    )
}

fn as_count(v: &Value, what: &str) -> Result<u64, Refusal> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| Refusal::bad_request(format!("{what} must be a non-negative integer"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| Refusal::bad_request(format!("{what} must be a non-negative integer"))),
        _ => Err(Refusal::bad_request(format!(
            "{what} must be a non-negative integer"
        ))),
    }
}

/// `size` in the query string and in the body stay within `cap`.
pub fn check_size(params: &Params, body: Option<&Value>, cap: u64) -> Result<(), Refusal> {
    if let Some(size) = params.get("size") {
        let n = as_count(&Value::String(size.to_owned()), "size")?;
        if n > cap {
            return Err(cap_error(n, cap, "size"));
        }
    }
    if let Some(size) = body.and_then(|b| b.get("size")) {
        let n = as_count(size, "\"size\"")?;
        if n > cap {
            return Err(cap_error(n, cap, "\"size\""));
        }
    }
    Ok(())
}

/// The point in time a search runs on (`pit.id`), if any.
pub fn pit_of(body: Option<&Value>) -> Option<String> {
    body?.get("pit")?.get("id")?.as_str().map(str::to_owned)
}

/// One search of an `_msearch` body: its header and its body line.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiItem {
    pub header: serde_json::Map<String, Value>,
    pub body: Value,
}

impl MultiItem {
    /// The header's indices as one expression (`index` is a string or an
    /// array of strings).
    pub fn indices(&self) -> Result<Option<String>, Refusal> {
        match self.header.get("index") {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(|v| Some(v.join(",")))
                .ok_or_else(|| Refusal::bad_request("_msearch header \"index\" must be strings")),
            Some(_) => Err(Refusal::bad_request(
                "_msearch header \"index\" must be a string",
            )),
        }
    }
}

/// Parse an `_msearch` NDJSON body: header line, body line, repeated.
pub fn multi_search(body: &[u8]) -> Result<Vec<MultiItem>, Refusal> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Refusal::bad_request("the _msearch body is not UTF-8"))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Err(Refusal::bad_request("the _msearch body is empty"));
    }
    if !lines.len().is_multiple_of(2) {
        return Err(Refusal::bad_request(
            "the _msearch body must be header and body lines in pairs (NDJSON)",
        ));
    }
    lines
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            let parse = |l: &str, what: &str| {
                serde_json::from_str::<Value>(l).map_err(|e| {
                    Refusal::bad_request(format!(
                        "_msearch search {}: {what} is not JSON: {e}",
                        i + 1
                    ))
                })
            };
            let Value::Object(header) = parse(pair[0], "header")? else {
                return Err(Refusal::bad_request(format!(
                    "_msearch search {}: the header must be a JSON object",
                    i + 1
                )));
            };
            let body = parse(pair[1], "body")?;
            if !body.is_object() {
                return Err(Refusal::bad_request(format!(
                    "_msearch search {}: the body must be a JSON object",
                    i + 1
                )));
            }
            Ok(MultiItem { header, body })
        })
        .collect()
}

pub fn encode_multi(items: &[MultiItem]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        out.extend(Value::Object(item.header.clone()).to_string().bytes());
        out.push(b'\n');
        out.extend(item.body.to_string().bytes());
        out.push(b'\n');
    }
    out
}

/// What an ES|QL query reads, and the query to forward (with a `LIMIT`
/// within the cap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Esql {
    /// The `FROM` index expression; `None` for `ROW`/`SHOW` queries.
    pub indices: Option<String>,
    pub query: String,
}

pub fn esql(body: Option<&Value>, cap: u64) -> Result<Esql, Refusal> {
    let query = body
        .and_then(|b| b.get("query"))
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::bad_request("ES|QL needs a JSON body with a \"query\" string"))?
        .trim()
        .to_owned();
    let upper = query.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        // These read indices the FROM does not name.
        let reaches = *w == "ENRICH" || (*w == "JOIN" && i > 0 && words[i - 1] == "LOOKUP");
        if reaches {
            return Err(Refusal::bad_request(format!(
                "ES|QL {w} reads an index outside FROM and is not served; query the index \
                 directly"
            )));
        }
    }
    let mut tokens = query.split_whitespace();
    let indices = match tokens.next().map(str::to_ascii_uppercase).as_deref() {
        Some("FROM") => {
            // `FROM a, b* METADATA _id | ...`: the list ends at METADATA or `|`.
            let rest = query[4..].trim_start();
            let end = rest.find('|').unwrap_or(rest.len());
            let mut list = rest[..end].trim();
            if let Some(m) = list.to_ascii_uppercase().find(" METADATA") {
                list = list[..m].trim();
            }
            let list: String = list.split(',').map(str::trim).collect::<Vec<_>>().join(",");
            if list.is_empty() || list.contains('"') {
                return Err(Refusal::bad_request(
                    "ES|QL FROM must name the indices plainly",
                ));
            }
            Some(list)
        }
        Some("ROW" | "SHOW") => None,
        Some(other) => {
            return Err(Refusal::bad_request(format!(
                "ES|QL source command {other} is not served; start with FROM <index>"
            )));
        }
        None => return Err(Refusal::bad_request("the ES|QL query is empty")),
    };
    let mut limited = false;
    let words: Vec<&str> = query.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        if w.eq_ignore_ascii_case("LIMIT") && i > 0 && words[i - 1] == "|" {
            let n = words
                .get(i + 1)
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| Refusal::bad_request("ES|QL LIMIT must be followed by a number"))?;
            if n > cap {
                return Err(cap_error(n, cap, "ES|QL LIMIT"));
            }
            limited = true;
        }
    }
    let query = if limited || indices.is_none() {
        query
    } else {
        format!("{query} | LIMIT {cap}")
    };
    Ok(Esql { indices, query })
}

/// Documents a response carries: search hits, `_msearch` hits, ES|QL rows.
pub fn documents_in(reply: &Value) -> u64 {
    let hits = |v: &Value| {
        v.pointer("/hits/hits")
            .and_then(Value::as_array)
            .map_or(0, |a| a.len() as u64)
    };
    if let Some(responses) = reply.get("responses").and_then(Value::as_array) {
        return responses.iter().map(hits).sum();
    }
    if let Some(values) = reply.get("values").and_then(Value::as_array) {
        return values.len() as u64;
    }
    hits(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_over_the_cap_are_refused_naming_the_setting() {
        let p = Params::parse(Some("size=10000000")).unwrap();
        let e = check_size(&p, None, 1000).unwrap_err();
        assert_eq!(e.kind, "clawswarm_result_cap");
        assert!(e.reason.contains("CLAWSWARM_DATA_MAX_HITS") && e.reason.contains("10000000"));
        let body = json!({"size": 5000});
        assert!(check_size(&Params::default(), Some(&body), 1000).is_err());
        assert!(check_size(&Params::default(), Some(&json!({"size": 10})), 1000).is_ok());
        assert!(check_size(&Params::default(), Some(&json!({"size": "x"})), 1000).is_err());
    }

    #[test]
    fn bodies_must_be_json_objects_with_a_precise_error() {
        assert_eq!(json_object(b"  ").unwrap(), None);
        let e = json_object(b"{\"query\": ").unwrap_err();
        assert!(e.reason.contains("not valid JSON"), "{}", e.reason);
        assert!(json_object(b"[1]").is_err());
    }

    #[test]
    fn params_round_trip_and_smuggled_bodies_are_refused() {
        let p = Params::parse(Some("q=status:failed+now&size=5")).unwrap();
        assert_eq!(p.get("q"), Some("status:failed now"));
        assert_eq!(p.encode(), "q=status%3Afailed%20now&size=5");
        let p = Params::parse(Some("source=%7B%7D&source_content_type=application/json")).unwrap();
        assert!(refuse_smuggling(&p).is_err());
    }

    #[test]
    fn msearch_bodies_come_in_pairs() {
        let items = multi_search(b"{\"index\":\"a\"}\n{\"size\":1}\n{}\n{}\n").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].indices().unwrap(), Some("a".into()));
        assert_eq!(items[1].indices().unwrap(), None);
        assert!(multi_search(b"{\"index\":\"a\"}\n").is_err());
        assert!(multi_search(b"{\"index\":\"a\"}\nnope\n").is_err());
    }

    #[test]
    fn esql_names_its_indices_and_is_limited() {
        let q = |s: &str| json!({ "query": s });
        let e = esql(
            Some(&q("FROM pipelines, runs-* METADATA _id | WHERE x == 1")),
            100,
        )
        .unwrap();
        assert_eq!(e.indices.as_deref(), Some("pipelines,runs-*"));
        assert!(e.query.ends_with("| LIMIT 100"), "{}", e.query);
        let e = esql(Some(&q("from p | limit 5")), 100).unwrap();
        assert_eq!(e.query, "from p | limit 5");
        assert!(esql(Some(&q("FROM p | LIMIT 5000")), 100).is_err());
        assert!(esql(Some(&q("FROM p | ENRICH hr-policy")), 100).is_err());
        assert!(esql(Some(&q("FROM p | LOOKUP JOIN hr ON id")), 100).is_err());
        assert!(esql(Some(&q("METRICS p")), 100).is_err());
        assert!(esql(None, 100).is_err());
    }

    #[test]
    fn documents_are_counted_in_every_reply_shape() {
        assert_eq!(documents_in(&json!({"hits": {"hits": [{}, {}]}})), 2);
        assert_eq!(
            documents_in(
                &json!({"responses": [{"hits": {"hits": [{}]}}, {"hits": {"hits": [{}]}}]})
            ),
            2
        );
        assert_eq!(
            documents_in(&json!({"columns": [], "values": [[1], [2], [3]]})),
            3
        );
        assert_eq!(documents_in(&json!({"count": 7})), 0);
    }
}

// Tests may unwrap (house rule); the workspace lint is for input handling.
#![allow(clippy::unwrap_used)]

//! Properties of the data proxy's decoders over generated input (proptest,
//! a bounded number of cases per run; `PROPTEST_CASES=100000 cargo test -p
//! clawswarm-sidecar --lib data_proxy::properties` is the long run). Each
//! holds for every input, not just the cases the other tests name:
//! nothing panics on outside bytes, nothing that is not a read is served,
//! and no index outside the allowlist is ever forwarded.

use axum::http::Method;
use proptest::prelude::*;

use super::{body, indices, route};

/// Paths built from pieces that matter to routing (API names, index-like
/// names, tricks), so generated paths reach every arm, not just "no route".
fn path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        Just("_search".to_owned()),
        Just("_msearch".to_owned()),
        Just("_count".to_owned()),
        Just("_bulk".to_owned()),
        Just("_doc".to_owned()),
        Just("_pit".to_owned()),
        Just("scroll".to_owned()),
        Just("point_in_time".to_owned()),
        Just("_mapping".to_owned()),
        Just("_cat".to_owned()),
        Just("indices".to_owned()),
        Just("..".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("%2f".to_owned()),
        Just("".to_owned()),
        "[a-z*,:%._-]{1,12}",
    ];
    proptest::collection::vec(seg, 0..5).prop_map(|s| format!("/{}", s.join("/")))
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::OPTIONS),
    ]
}

proptest! {
    /// Read-only by construction: PUT, PATCH and OPTIONS are never served,
    /// and DELETE only closes a cursor this proxy handed out.
    #[test]
    fn only_reads_and_cursor_closes_are_ever_served(m in method(), p in path()) {
        if let Ok(r) = route::classify(&m, &p) {
            prop_assert!(m != Method::PUT && m != Method::PATCH && m != Method::OPTIONS, "{m} {p} → {r:?}");
            if m == Method::DELETE {
                prop_assert!(
                    matches!(r, route::Route::ClosePit | route::Route::ClearScroll { .. }),
                    "DELETE {p} → {r:?}"
                );
            }
        }
    }

    #[test]
    fn arbitrary_paths_never_panic(m in method(), p in "\\PC{0,64}") {
        let _ = route::classify(&m, &p);
        let _ = route::segments(&p);
    }

    /// Whatever the engine says the expression expands to, what goes out
    /// names only allowed things (or an allowed literal that does not
    /// exist, or a wildcard the allowlist fully covers).
    #[test]
    fn no_disallowed_index_is_ever_forwarded(
        allow in proptest::collection::vec("[a-c]{1,3}\\*?", 1..4),
        asked in proptest::collection::vec("[a-c]{1,3}\\*?", 1..4),
        existing in proptest::collection::vec("\\.?[a-c]{1,4}", 0..8),
        aliases in proptest::collection::vec(("[a-c]{2,3}", proptest::collection::vec("[a-c]{1,4}", 1..3)), 0..3),
    ) {
        let allowlist = indices::Allowlist::parse(&allow.join(","));
        let items = indices::parse_expression(&asked.join(",")).unwrap();
        let resolved: indices::Resolved = serde_json::from_value(serde_json::json!({
            "indices": existing.iter().map(|n| serde_json::json!({"name": n})).collect::<Vec<_>>(),
            "aliases": aliases.iter().map(|(n, m)| serde_json::json!({"name": n, "indices": m})).collect::<Vec<_>>(),
        })).unwrap();
        if let Ok(forward) = indices::check(&allowlist, &items, &resolved) {
            for name in forward.split(',') {
                if let Some(a) = resolved.aliases.iter().find(|a| a.name == name) {
                    for member in &a.indices {
                        prop_assert!(allowlist.allows(member), "alias {name} reaches {member}; allowed {allow:?}");
                    }
                } else if name.contains('*') {
                    let covered = allow.iter().any(|a| a == name
                        || a.strip_suffix('*').is_some_and(|p| !p.contains('*') && name.starts_with(p)));
                    prop_assert!(covered, "wildcard {name} forwarded; allowed {allow:?}");
                } else {
                    prop_assert!(allowlist.allows(name), "{name} forwarded; allowed {allow:?}");
                }
            }
        }
    }

    #[test]
    fn bodies_and_query_strings_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), q in "\\PC{0,64}") {
        let _ = body::json_object(&bytes);
        let _ = body::multi_search(&bytes);
        let _ = body::Params::parse(Some(&q));
    }

    /// An ES|QL query that passes never returns more rows than the cap.
    #[test]
    fn esql_that_passes_is_limited_to_the_cap(
        from in "[a-c]{1,4}",
        tail in proptest::collection::vec(prop_oneof![
            Just("| LIMIT 5".to_owned()),
            Just("| LIMIT 5000".to_owned()),
            Just("| limit 10".to_owned()),
            Just("| WHERE x > 1".to_owned()),
            Just("| SORT y".to_owned()),
            "[a-z |]{0,10}",
        ], 0..4),
        cap in 1u64..2000,
    ) {
        let query = format!("FROM {from} {}", tail.join(" "));
        if let Ok(e) = body::esql(Some(&serde_json::json!({ "query": query })), cap) {
            let words: Vec<&str> = e.query.split_whitespace().collect();
            let limits: Vec<u64> = words
                .windows(3)
                .filter(|w| w[0] == "|" && w[1].eq_ignore_ascii_case("LIMIT"))
                .filter_map(|w| w[2].parse().ok())
                .collect();
            prop_assert!(!limits.is_empty(), "no LIMIT in {}", e.query);
            prop_assert!(limits.iter().all(|l| *l <= cap), "{} over cap {cap}", e.query);
        }
    }
}

use super::*;

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

#[test]
fn agent_spiffe_id_round_trips_through_display_and_parse() {
    let id = SpiffeId::agent(td(), AgentId::new("team-a", "alice-1").unwrap());
    let uri = id.to_string();
    assert_eq!(uri, "spiffe://cluster.local/ns/team-a/agent/alice-1");
    assert_eq!(SpiffeId::parse(&uri).unwrap(), id);
    assert_eq!(id.as_agent().unwrap().to_string(), "team-a/alice-1");
    assert_eq!(id.trust_domain().as_str(), "cluster.local");
}

#[test]
fn controller_and_admin_ids_round_trip() {
    for uri in [
        "spiffe://cluster.local/ns/clawswarm/controller",
        "spiffe://cluster.local/admin/ops",
    ] {
        let id = SpiffeId::parse(uri).unwrap();
        assert_eq!(id.to_string(), uri);
        assert!(id.as_agent().is_none());
    }
    assert_eq!(
        SpiffeId::parse("spiffe://cluster.local/ns/clawswarm/controller").unwrap(),
        SpiffeId::controller(td(), "clawswarm").unwrap()
    );
    assert_eq!(
        SpiffeId::parse("spiffe://cluster.local/admin/ops").unwrap(),
        SpiffeId::admin(td(), "ops").unwrap()
    );
}

#[test]
fn agent_id_parses_namespace_slash_name() {
    let id: AgentId = "team-a/alice".parse().unwrap();
    assert_eq!(id.namespace(), "team-a");
    assert_eq!(id.name(), "alice");
    assert_eq!(id.to_string().parse::<AgentId>().unwrap(), id);
}

#[test]
fn agent_id_rejects_malformed_input() {
    assert_eq!(
        "alice".parse::<AgentId>(),
        Err(IdError::AgentIdMissingSlash)
    );
    assert_eq!(
        "Team/alice".parse::<AgentId>(),
        Err(IdError::LabelInvalidChar {
            field: "namespace",
            ch: 'T'
        })
    );
    assert_eq!(
        "team/".parse::<AgentId>(),
        Err(IdError::EmptyLabel {
            field: "agent name"
        })
    );
    assert_eq!(
        "team/a/b".parse::<AgentId>(),
        Err(IdError::LabelInvalidChar {
            field: "agent name",
            ch: '/'
        })
    );
    assert_eq!(
        "-team/alice".parse::<AgentId>(),
        Err(IdError::LabelEdgeHyphen { field: "namespace" })
    );
    assert_eq!(
        AgentId::new("team", "a".repeat(64)),
        Err(IdError::LabelTooLong {
            field: "agent name",
            len: 64
        })
    );
    assert!(AgentId::new("team", "a".repeat(63)).is_ok());
}

#[test]
fn trust_domain_rejects_uppercase_empty_and_too_long() {
    assert_eq!(
        TrustDomain::new("Cluster.local"),
        Err(IdError::TrustDomainInvalidChar { ch: 'C' })
    );
    assert_eq!(TrustDomain::new(""), Err(IdError::EmptyTrustDomain));
    assert_eq!(
        TrustDomain::new("cluster..local"),
        Err(IdError::TrustDomainEmptyLabel)
    );
    assert_eq!(
        TrustDomain::new("a".repeat(256)),
        Err(IdError::TrustDomainTooLong { len: 256 })
    );
}

#[test]
fn spiffe_id_parse_rejects_malformed_uris() {
    let cases: &[(&str, IdError)] = &[
        ("https://cluster.local/ns/a/agent/b", IdError::WrongScheme),
        ("SPIFFE://cluster.local/admin/x", IdError::WrongScheme),
        (
            "spiffe://Cluster.local/admin/x",
            IdError::TrustDomainInvalidChar { ch: 'C' },
        ),
        ("spiffe:///admin/x", IdError::EmptyTrustDomain),
        (
            "spiffe://cluster.local/ns/A/agent/b",
            IdError::LabelInvalidChar {
                field: "namespace",
                ch: 'A',
            },
        ),
        (
            "spiffe://cluster.local/ns/a/agent/",
            IdError::EmptyLabel {
                field: "agent name",
            },
        ),
        (
            "spiffe://cluster.local/ns/a/agent/b/extra",
            IdError::UnknownPath {
                path: "/ns/a/agent/b/extra".into(),
            },
        ),
        (
            "spiffe://cluster.local/ns/a/agent/b/",
            IdError::UnknownPath {
                path: "/ns/a/agent/b/".into(),
            },
        ),
        (
            "spiffe://cluster.local//ns/a/agent/b",
            IdError::UnknownPath {
                path: "//ns/a/agent/b".into(),
            },
        ),
        (
            "spiffe://cluster.local",
            IdError::UnknownPath { path: "".into() },
        ),
        (
            "spiffe://cluster.local/ns/a/sidecar/b",
            IdError::UnknownPath {
                path: "/ns/a/sidecar/b".into(),
            },
        ),
        (
            "spiffe://cluster.local:443/admin/x",
            IdError::ForbiddenUriPart,
        ),
        (
            "spiffe://cluster.local/admin/x?y=1",
            IdError::ForbiddenUriPart,
        ),
        (
            "spiffe://user@cluster.local/admin/x",
            IdError::ForbiddenUriPart,
        ),
    ];
    for (uri, expected) in cases {
        assert_eq!(&SpiffeId::parse(uri).unwrap_err(), expected, "{uri}");
    }
    let long = format!("spiffe://cluster.local/ns/a/agent/{}", "b".repeat(64));
    assert_eq!(
        SpiffeId::parse(&long).unwrap_err(),
        IdError::LabelTooLong {
            field: "agent name",
            len: 64
        }
    );
}

#[test]
fn id_errors_have_bounded_metric_labels() {
    assert_eq!(IdError::WrongScheme.metric_label(), "wrong_scheme");
    assert_eq!(
        IdError::LabelEdgeHyphen { field: "namespace" }.metric_label(),
        "invalid_label"
    );
}

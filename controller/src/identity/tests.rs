// A panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use async_trait::async_trait;
use clawswarm_certs::TrustDomain;
use tonic::{Code, transport::server::TcpConnectInfo};

use super::*;

/// Refuses every token (or says the backend is down), counting the checks.
struct Counting {
    checks: AtomicUsize,
    unavailable: bool,
}

#[async_trait]
impl Authenticator for Counting {
    fn kind(&self) -> &'static str {
        "counting"
    }

    async fn authenticate(&self, _claim: &CertifyClaim<'_>) -> Result<(), AuthError> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if self.unavailable {
            Err(AuthError::Unavailable("api server down".into()))
        } else {
            Err(AuthError::InvalidToken("not ours".into()))
        }
    }
}

fn service(unavailable: bool) -> (IdentityService, Arc<Counting>) {
    let auth = Arc::new(Counting {
        checks: AtomicUsize::new(0),
        unavailable,
    });
    let td = TrustDomain::new("clawswarm.local".to_owned()).unwrap();
    let svc = IdentityService::new(
        Authority::generate(&td).unwrap(),
        auth.clone(),
        "ns".into(),
        LeafPolicy::default(),
        Metrics::new_with(|_| {}),
    )
    .with_admission(AdmissionConfig {
        burst: 20,
        per_second: 0.01,
        ..AdmissionConfig::default()
    });
    (svc, auth)
}

fn from(source: &str, token: &str) -> Request<CertifyRequest> {
    let mut req = Request::new(CertifyRequest {
        identity: "ns/alice".into(),
        token: token.into(),
        csr_pem: String::new(),
    });
    req.extensions_mut().insert(TcpConnectInfo {
        local_addr: None,
        remote_addr: Some(source.parse::<SocketAddr>().unwrap()),
    });
    req
}

#[tokio::test]
async fn garbage_tokens_cost_one_check_each_and_a_flood_is_cut_off_per_source() {
    let (svc, auth) = service(false);
    // The same bad token again and again: checked once.
    for _ in 0..5 {
        let e = svc.certify(from("10.0.0.1:1000", "bad")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    }
    assert_eq!(auth.checks.load(Ordering::Relaxed), 1);

    // A flood of distinct tokens from one address: its burst is checked,
    // the rest refused before any check.
    let mut exhausted = 0;
    for i in 0..100 {
        let e = svc
            .certify(from("10.0.0.2:1000", &format!("t{i}")))
            .await
            .unwrap_err();
        if e.code() == Code::ResourceExhausted {
            exhausted += 1;
        }
    }
    assert_eq!(exhausted, 80);
    assert_eq!(auth.checks.load(Ordering::Relaxed), 21);
    // Another address is not held up by it.
    let e = svc.certify(from("10.0.0.3:1000", "x")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(auth.checks.load(Ordering::Relaxed), 22);
    let stopped = |reason| {
        svc.metrics
            .certify_stopped
            .get_or_create(&ReasonLabel { reason })
            .get()
    };
    assert_eq!(
        (stopped("rate_limited"), stopped("refused_recently")),
        (80, 4)
    );
}

#[tokio::test]
async fn a_backend_outage_is_not_remembered_against_the_token() {
    let (svc, auth) = service(true);
    for _ in 0..3 {
        let e = svc.certify(from("10.0.0.1:1000", "tok")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
    }
    assert_eq!(auth.checks.load(Ordering::Relaxed), 3, "retried each time");
}

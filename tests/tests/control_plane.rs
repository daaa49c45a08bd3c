//! The control plane harness itself: a real API server with RBAC on, and
//! the TokenRequest/TokenReview behaviour the Kubernetes runtime relies on.
//! Needs `eval "$(scripts/deps.sh kube)"`; fails (never skips) without it.

#![allow(clippy::unwrap_used)]

use clawswarm_tests::control_plane::{BoundPod, ControlPlane, TokenOptions};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt as _};

async fn review(cp: &ControlPlane, token: &str, audience: &str) -> TokenReview {
    let review = TokenReview {
        metadata: ObjectMeta::default(),
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: Some(vec![audience.to_string()]),
        },
        status: None,
    };
    Api::<TokenReview>::all(cp.admin())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn service_account_client_is_subject_to_rbac() {
    let cp = ControlPlane::start().await.unwrap();
    let ns = cp.create_namespace("rbac").await.unwrap();
    let client = cp.client_for_service_account(&ns, "nobody").await.unwrap();
    let err = Api::<Pod>::namespaced(client, &ns)
        .list(&Default::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_bound_token_reviews_with_pod_name_and_uid() {
    let cp = ControlPlane::start().await.unwrap();
    let ns = cp.create_namespace("tokens").await.unwrap();
    cp.create_service_account(&ns, "agent").await.unwrap();
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("p1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some("agent".into()),
            containers: vec![Container {
                name: "c".into(),
                image: Some("example.invalid/c:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = Api::<Pod>::namespaced(cp.admin(), &ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let opts = TokenOptions {
        audiences: vec!["clawswarm-identity".into()],
        bound_pod: Some(BoundPod {
            name: pod.name_any(),
            uid: pod.uid().unwrap(),
        }),
        expiration_seconds: Some(600),
    };
    let token = cp.request_token(&ns, "agent", &opts).await.unwrap();

    let ok = review(&cp, &token, "clawswarm-identity")
        .await
        .status
        .unwrap();
    assert_eq!(ok.authenticated, Some(true), "{ok:?}");
    let user = ok.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{ns}:agent").as_str())
    );
    let extra = user.extra.unwrap();
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"],
        vec!["p1".to_string()]
    );
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"],
        vec![pod.uid().unwrap()]
    );

    let wrong = review(&cp, &token, "someone-else").await.status.unwrap();
    assert_ne!(wrong.authenticated, Some(true), "{wrong:?}");
}

//! The mesh CA on Kubernetes: the issuer lives in a Secret (created on first
//! start if absent, or supplied by an operator, e.g. from cert-manager), so
//! both replicas and every restart sign under the same root; the trust
//! bundle is published in a ConfigMap that agent pods mount.

use std::collections::BTreeMap;

use clawswarm_certs::{Authority, AuthorityPem, TrustDomain};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tracing::info;

use super::pod::TRUST_KEY;

const KEY_BUNDLE: &str = "trust-bundle.pem";
const KEY_ISSUER_CERT: &str = "issuer.crt";
const KEY_ISSUER_KEY: &str = "issuer.key";

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("secret {secret}: key {key} missing or not UTF-8")]
    BadSecret { secret: String, key: &'static str },
    #[error("certificate authority: {0}")]
    Authority(String),
}

impl IssuerError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::BadSecret { .. } => "bad_secret",
            Self::Authority(_) => "authority",
        }
    }
}

/// Load the issuer from Secret `name`, or generate one and store it. Two
/// replicas racing to create it both end up with the winner's.
pub async fn load_or_create_authority(
    client: &Client,
    namespace: &str,
    name: &str,
    td: &TrustDomain,
) -> Result<Authority, IssuerError> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    if let Some(s) = secrets.get_opt(name).await? {
        return from_secret(&s, name, td);
    }
    let authority = Authority::generate(td).map_err(|e| IssuerError::Authority(e.to_string()))?;
    let pem = authority.to_pem();
    let data = BTreeMap::from([
        (
            KEY_BUNDLE.to_string(),
            ByteString(pem.trust_bundle_pem.into_bytes()),
        ),
        (
            KEY_ISSUER_CERT.to_string(),
            ByteString(pem.issuer_cert_pem.into_bytes()),
        ),
        (
            KEY_ISSUER_KEY.to_string(),
            ByteString(pem.issuer_key_pem.into_bytes()),
        ),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".into(),
                "clawswarm".into(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            info!(secret = %name, "generated the mesh certificate authority");
            Ok(authority)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let s = secrets.get(name).await?;
            from_secret(&s, name, td)
        }
        Err(e) => Err(e.into()),
    }
}

fn from_secret(s: &Secret, name: &str, td: &TrustDomain) -> Result<Authority, IssuerError> {
    let get = |key: &'static str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or_else(|| IssuerError::BadSecret {
                secret: name.to_string(),
                key,
            })
    };
    let pem = AuthorityPem {
        trust_bundle_pem: get(KEY_BUNDLE)?,
        issuer_cert_pem: get(KEY_ISSUER_CERT)?,
        issuer_key_pem: get(KEY_ISSUER_KEY)?,
    };
    Authority::from_pem_for(&pem, td).map_err(|e| IssuerError::Authority(e.to_string()))
}

/// Publish the trust bundle where agent pods mount it (server-side apply:
/// idempotent, both replicas may do it).
pub async fn publish_trust_bundle(
    client: &Client,
    namespace: &str,
    name: &str,
    bundle_pem: &str,
) -> Result<(), IssuerError> {
    let cms = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let cm = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": name, "labels": { "app.kubernetes.io/part-of": "clawswarm" } },
        "data": { TRUST_KEY: bundle_pem },
    });
    cms.patch(
        name,
        &PatchParams::apply(super::reconcile::FIELD_MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await?;
    Ok(())
}

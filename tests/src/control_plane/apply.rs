//! Apply rendered manifests (what `kustomize build deploy/` prints) with
//! server-side apply, so the real API server validates every object: schema,
//! CRD structural rules, RBAC escalation checks, immutable fields.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{Scope, pinned_kind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt as _};

const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);
const KUSTOMIZE_TIMEOUT: Duration = Duration::from_secs(120);

/// One object the API server accepted.
#[derive(Clone, Debug)]
pub struct AppliedObject {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// `kustomize build <dir>` with the kustomize in `bin_dir`.
pub async fn kustomize_build(bin_dir: &Path, dir: &Path) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(bin_dir.join("kustomize"));
    cmd.arg("build").arg(dir).kill_on_drop(true);
    let out = tokio::time::timeout(KUSTOMIZE_TIMEOUT, cmd.output())
        .await
        .context("kustomize build timed out")?
        .context("run kustomize")?;
    if !out.status.success() {
        bail!(
            "kustomize build {} failed ({}): {}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("kustomize output is not UTF-8")
}

/// Parse a multi-document YAML stream into objects (empty documents skipped).
pub fn parse_objects(yaml: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).context("parse manifests as YAML")?;
    docs.into_iter()
        .filter(|d| !d.is_null())
        .map(|d| serde_json::from_value::<DynamicObject>(d).context("manifest is not an object"))
        .collect()
}

/// Server-side apply every object in `yaml` as `field_manager`: Namespaces
/// and CRDs first (waiting until each CRD is Established), then the rest in
/// document order. Fails on the first object the API server refuses.
pub async fn apply_yaml(
    client: &Client,
    yaml: &str,
    field_manager: &str,
) -> anyhow::Result<Vec<AppliedObject>> {
    let objects = parse_objects(yaml)?;
    let rank = |o: &DynamicObject| match o.types.as_ref().map(|t| t.kind.as_str()) {
        Some("Namespace") => 0,
        Some("CustomResourceDefinition") => 1,
        _ => 2,
    };
    let mut ordered: Vec<&DynamicObject> = objects.iter().collect();
    ordered.sort_by_key(|o| rank(o)); // stable: document order within a rank
    let params = PatchParams::apply(field_manager).force();
    let mut applied = Vec::with_capacity(ordered.len());
    for obj in ordered {
        let done = apply_one(client, obj, &params).await?;
        if done.kind == "CustomResourceDefinition" {
            let crds = Api::<CustomResourceDefinition>::all(client.clone());
            tokio::time::timeout(
                CRD_ESTABLISHED_TIMEOUT,
                await_condition(crds, &done.name, conditions::is_crd_established()),
            )
            .await
            .with_context(|| format!("CRD {} not Established in time", done.name))?
            .with_context(|| format!("watch CRD {}", done.name))?;
        }
        applied.push(done);
    }
    Ok(applied)
}

async fn apply_one(
    client: &Client,
    obj: &DynamicObject,
    params: &PatchParams,
) -> anyhow::Result<AppliedObject> {
    let types = obj
        .types
        .as_ref()
        .with_context(|| format!("object {} has no apiVersion/kind", obj.name_any()))?;
    let gvk = GroupVersionKind::try_from(types)
        .with_context(|| format!("bad apiVersion {:?}", types.api_version))?;
    let name = obj
        .metadata
        .name
        .clone()
        .with_context(|| format!("{} without metadata.name", gvk.kind))?;
    let (ar, caps) = pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("discover {}/{}", types.api_version, gvk.kind))?;
    let namespace = match caps.scope {
        Scope::Namespaced => Some(
            obj.metadata
                .namespace
                .clone()
                .with_context(|| format!("{} {name} has no namespace", gvk.kind))?,
        ),
        Scope::Cluster => None,
    };
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.patch(&name, params, &Patch::Apply(obj))
        .await
        .with_context(|| match &namespace {
            Some(ns) => format!("apply {} {ns}/{name}", gvk.kind),
            None => format!("apply {} {name}", gvk.kind),
        })?;
    Ok(AppliedObject {
        kind: gvk.kind,
        namespace,
        name,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_objects_skips_empty_documents_and_keeps_order() {
        let yaml = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  namespace: a\n";
        let objs = parse_objects(yaml).unwrap();
        let kinds: Vec<_> = objs
            .iter()
            .map(|o| o.types.as_ref().unwrap().kind.clone())
            .collect();
        assert_eq!(kinds, ["Namespace", "ConfigMap"]);
    }

    #[test]
    fn parse_objects_rejects_a_scalar_document() {
        assert!(parse_objects("just a string\n").is_err());
    }
}

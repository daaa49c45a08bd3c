//! Pod volumes as local directories, and the path rewriting that lets a
//! process on this machine see them where the pod spec mounted them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, Volume};
use kube::{Api, Client, ResourceExt as _};

use crate::control_plane::{BoundPod, TokenOptions, request_token};

/// Where the kubelet keeps volumes: per pod under `pod_dir`, PVCs under
/// `pvc_root/<namespace>/<claim>` so their data outlives the pod.
pub(super) struct VolumeRoots<'a> {
    pub pod_dir: &'a Path,
    pub pvc_root: &'a Path,
}

/// Kubelet's default projected token lifetime.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// Materialise every volume of `pod`; returns volume name → local directory.
pub(super) async fn prepare(
    client: &Client,
    pod: &Pod,
    roots: &VolumeRoots<'_>,
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let ns = pod.namespace().context("pod without namespace")?;
    let spec = pod.spec.as_ref().context("pod without spec")?;
    let mut out = BTreeMap::new();
    for vol in spec.volumes.iter().flatten() {
        let path = prepare_one(client, pod, &ns, vol, roots)
            .await
            .with_context(|| format!("volume {}", vol.name))?;
        out.insert(vol.name.clone(), path);
    }
    Ok(out)
}

async fn prepare_one(
    client: &Client,
    pod: &Pod,
    ns: &str,
    vol: &Volume,
    roots: &VolumeRoots<'_>,
) -> anyhow::Result<PathBuf> {
    if let Some(pvc) = &vol.persistent_volume_claim {
        let dir = roots.pvc_root.join(ns).join(&pvc.claim_name);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        return Ok(dir);
    }
    let dir = roots.pod_dir.join("volumes").join(&vol.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    if vol.empty_dir.is_some() {
        return Ok(dir);
    }
    if let Some(cm) = &vol.config_map {
        let name = cm.name.as_str();
        let mode = file_mode(cm.default_mode);
        write_config_map(
            client,
            ns,
            name,
            cm.items.as_deref(),
            cm.optional,
            &dir,
            mode,
        )
        .await?;
        return Ok(dir);
    }
    if let Some(s) = &vol.secret {
        let name = s
            .secret_name
            .as_deref()
            .context("secret volume without secretName")?;
        let mode = file_mode(s.default_mode);
        write_secret(client, ns, name, s.items.as_deref(), s.optional, &dir, mode).await?;
        return Ok(dir);
    }
    if let Some(projected) = &vol.projected {
        let mode = file_mode(projected.default_mode);
        for source in projected.sources.iter().flatten() {
            if let Some(t) = &source.service_account_token {
                let sa = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".into());
                let opts = TokenOptions {
                    audiences: t.audience.iter().cloned().collect(),
                    bound_pod: Some(BoundPod {
                        name: pod.name_any(),
                        uid: pod.uid().context("pod without uid")?,
                    }),
                    expiration_seconds: Some(t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS)),
                };
                let token = request_token(client, ns, &sa, &opts).await?;
                write_file(&dir, &t.path, token.as_bytes(), mode)?;
            }
            if let Some(cm) = &source.config_map {
                write_config_map(
                    client,
                    ns,
                    &cm.name,
                    cm.items.as_deref(),
                    cm.optional,
                    &dir,
                    mode,
                )
                .await?;
            }
            if let Some(s) = &source.secret {
                write_secret(
                    client,
                    ns,
                    &s.name,
                    s.items.as_deref(),
                    s.optional,
                    &dir,
                    mode,
                )
                .await?;
            }
            if source.downward_api.is_some() || source.cluster_trust_bundle.is_some() {
                bail!("projected source kind not supported by the test kubelet");
            }
        }
        return Ok(dir);
    }
    bail!("volume type not supported by the test kubelet")
}

/// The volume a kubelet adds when `automountServiceAccountToken` is not
/// off: a pod-bound token for the API server's own audience, the cluster CA
/// and the namespace, at [`SERVICE_ACCOUNT_DIR`] in every container.
pub(super) async fn service_account_volume(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
    ca_pem: &str,
) -> anyhow::Result<Option<PathBuf>> {
    let spec = pod.spec.as_ref().context("pod without spec")?;
    let ns = pod.namespace().context("pod without namespace")?;
    let sa_name = spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".into());
    let automount = match spec.automount_service_account_token {
        Some(v) => v,
        None => {
            let sa =
                Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns)
                    .get_opt(&sa_name)
                    .await
                    .with_context(|| format!("get serviceaccount {sa_name}"))?;
            sa.and_then(|s| s.automount_service_account_token)
                .unwrap_or(true)
        }
    };
    if !automount {
        return Ok(None);
    }
    let dir = pod_dir.join("volumes").join("kube-api-access");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let opts = TokenOptions {
        audiences: Vec::new(),
        bound_pod: Some(BoundPod {
            name: pod.name_any(),
            uid: pod.uid().context("pod without uid")?,
        }),
        expiration_seconds: Some(DEFAULT_TOKEN_SECONDS),
    };
    let token = request_token(client, &ns, &sa_name, &opts).await?;
    write_file(&dir, "token", token.as_bytes(), 0o644)?;
    write_file(&dir, "ca.crt", ca_pem.as_bytes(), 0o644)?;
    write_file(&dir, "namespace", ns.as_bytes(), 0o644)?;
    Ok(Some(dir))
}

/// Where Kubernetes mounts the automounted ServiceAccount token.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

async fn write_config_map(
    client: &Client,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    dir: &Path,
    mode: u32,
) -> anyhow::Result<()> {
    let Some(cm) = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .with_context(|| format!("get configmap {name}"))?
    else {
        return missing(optional, "configmap", name);
    };
    let data: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .chain(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        )
        .collect();
    write_keys(&data, items, dir, mode)
}

async fn write_secret(
    client: &Client,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    dir: &Path,
    mode: u32,
) -> anyhow::Result<()> {
    let Some(secret) = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .with_context(|| format!("get secret {name}"))?
    else {
        return missing(optional, "secret", name);
    };
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    write_keys(&data, items, dir, mode)
}

fn missing(optional: Option<bool>, kind: &str, name: &str) -> anyhow::Result<()> {
    if optional == Some(true) {
        Ok(())
    } else {
        bail!("{kind} {name} not found")
    }
}

fn write_keys(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    dir: &Path,
    mode: u32,
) -> anyhow::Result<()> {
    match items {
        Some(items) => {
            for item in items {
                let value = data
                    .get(&item.key)
                    .with_context(|| format!("key {} missing", item.key))?;
                let mode = item.mode.map_or(mode, |m| file_mode(Some(m)));
                write_file(dir, &item.path, value, mode)?;
            }
        }
        None => {
            for (key, value) in data {
                write_file(dir, key, value, mode)?;
            }
        }
    }
    Ok(())
}

/// A volume's file mode: `defaultMode`, else Kubernetes' default 0644.
fn file_mode(mode: Option<i32>) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok())
        .map_or(0o644, |m| m & 0o777)
}

/// What a kubelet does to a volume for a pod with `fsGroup`: group
/// ownership, group read (and write for writable volumes), setgid dirs.
pub(super) fn apply_fs_group(dir: &Path, gid: u32, writable: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(dir, None, Some(gid))
        .with_context(|| format!("chgrp {}", dir.display()))?;
    let mut mode = meta.mode() & 0o7777;
    if meta.is_dir() {
        mode |= if writable { 0o2770 } else { 0o2550 };
    } else {
        mode |= if writable { 0o660 } else { 0o440 };
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dir.display()))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            apply_fs_group(&entry?.path(), gid, writable)?;
        }
    }
    Ok(())
}

fn write_file(dir: &Path, rel: &str, content: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let rel = Path::new(rel);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        bail!("volume path {} escapes its volume", rel.display());
    }
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    f.write_all(content)
        .with_context(|| format!("write {}", path.display()))?;
    // The umask must not narrow what the pod spec asked for.
    super::sandbox::set_mode(&path, mode)
}

/// A container's mounts: in-pod path → local path, longest first so nested
/// mounts win.
#[derive(Clone, Debug, Default)]
pub struct Mounts(Vec<(String, PathBuf)>);

impl Mounts {
    pub(super) fn for_container(
        c: &Container,
        volumes: &BTreeMap<String, PathBuf>,
    ) -> anyhow::Result<Self> {
        let mut out = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let base = volumes.get(&m.name).with_context(|| {
                format!("container {} mounts unknown volume {}", c.name, m.name)
            })?;
            let local = match m.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => base.join(sub),
                _ => base.clone(),
            };
            std::fs::create_dir_all(&local)
                .with_context(|| format!("create {}", local.display()))?;
            out.push((m.mount_path.trim_end_matches('/').to_string(), local));
        }
        out.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Ok(Self(out))
    }

    /// Rewrite a value that is, or ends in after `=`, a path under a mount:
    /// `/var/run/secrets/x/token` and `--token=/var/run/secrets/x/token`.
    pub fn rewrite(&self, value: &str) -> String {
        let (prefix, path) = match value.split_once('=') {
            Some((flag, rest)) if rest.starts_with('/') => (format!("{flag}="), rest),
            _ => (String::new(), value),
        };
        for (mount, local) in &self.0 {
            if path == mount {
                return format!("{prefix}{}", local.display());
            }
            if let Some(rest) = path.strip_prefix(mount.as_str())
                && rest.starts_with('/')
            {
                return format!("{prefix}{}{rest}", local.display());
            }
        }
        value.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mounts() -> Mounts {
        Mounts(vec![
            (
                "/var/run/secrets/clawswarm".into(),
                PathBuf::from("/tmp/p/token"),
            ),
            ("/data".into(), PathBuf::from("/tmp/pvc/a")),
        ])
    }

    #[test]
    fn rewrite_maps_paths_under_mounts() {
        let m = mounts();
        assert_eq!(
            m.rewrite("/var/run/secrets/clawswarm/token"),
            "/tmp/p/token/token"
        );
        assert_eq!(m.rewrite("--data=/data/x"), "--data=/tmp/pvc/a/x");
        assert_eq!(m.rewrite("/data"), "/tmp/pvc/a");
    }

    #[test]
    fn rewrite_leaves_other_values_alone() {
        let m = mounts();
        assert_eq!(m.rewrite("/database"), "/database");
        assert_eq!(m.rewrite("https://x/data"), "https://x/data");
        assert_eq!(m.rewrite("a=b"), "a=b");
    }

    #[test]
    fn write_file_refuses_escaping_paths() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_file(dir.path(), "../x", b"1", 0o644).is_err());
        assert!(write_file(dir.path(), "/etc/x", b"1", 0o644).is_err());
        write_file(dir.path(), "a/b", b"1", 0o644).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a/b")).unwrap(), b"1");
    }
}

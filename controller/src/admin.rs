//! Admin credentials for the Gateway: the local CLI and grpcurl use a client
//! certificate with an `spiffe://<td>/admin/<name>` id, written to
//! `<state>/admin/` (0600 key) at every start and renewal.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use clawswarm_certs::{Authority, LeafPolicy, SpiffeId};
use serde::{Deserialize, Serialize};

/// Files in `<state>/admin/`, named for grpcurl's flags.
pub struct AdminFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl AdminFiles {
    pub fn in_state_dir(state: &Path) -> Self {
        let dir = state.join("admin");
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("admin.pem"),
            key: dir.join("admin-key.pem"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot issue admin certificate: {0}")]
    Issue(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Issue a fresh admin certificate and write it (and the trust bundle).
pub fn write_admin_credentials(
    state: &Path,
    authority: &Authority,
    policy: &LeafPolicy,
) -> Result<AdminFiles, AdminError> {
    let files = AdminFiles::in_state_dir(state);
    let id = SpiffeId::admin(authority.trust_domain().clone(), "local")
        .map_err(|e| AdminError::Issue(e.to_string()))?;
    let creds = authority
        .issue(&id, policy, SystemTime::now())
        .map_err(|e| AdminError::Issue(e.to_string()))?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| AdminError::Io { path, source }
    };
    let dir = files.ca.parent().unwrap_or(state);
    fs::create_dir_all(dir).map_err(io(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    fs::write(&files.ca, authority.trust_bundle_pem()).map_err(io(&files.ca))?;
    fs::write(&files.cert, creds.chain_pem()).map_err(io(&files.cert))?;
    let tmp = files.key.with_extension("tmp");
    fs::write(&tmp, creds.key_pem()).map_err(io(&tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
    fs::rename(&tmp, &files.key).map_err(io(&files.key))?;
    Ok(files)
}

/// Where a running controller listens, written once its ports are bound
/// (the CLI and the test harness read it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Endpoints {
    pub mesh: String,
    pub identity: String,
    pub http: String,
    pub pid: u32,
}

impl Endpoints {
    pub fn path(state: &Path) -> PathBuf {
        state.join("controller.json")
    }
}

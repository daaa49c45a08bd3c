//! The authority on disk: three PEM files in one directory.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use super::{Authority, AuthorityError, AuthorityPem};
use crate::id::TrustDomain;

pub(crate) const TRUST_BUNDLE_FILE: &str = "trust-bundle.pem";
pub(crate) const ISSUER_CERT_FILE: &str = "issuer.pem";
pub(crate) const ISSUER_KEY_FILE: &str = "issuer-key.pem";
const FILES: [&str; 3] = [TRUST_BUNDLE_FILE, ISSUER_CERT_FILE, ISSUER_KEY_FILE];

pub(super) fn load_or_create(dir: &Path, td: &TrustDomain) -> Result<Authority, AuthorityError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| AuthorityError::Io { what, path, source }
    };
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for name in FILES {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => present.push(name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(name),
            Err(e) => return Err(io("inspecting", &path)(e)),
        }
    }

    if missing.is_empty() {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(io("reading", &path))
        };
        let key_path = dir.join(ISSUER_KEY_FILE);
        if let Ok(meta) = fs::metadata(&key_path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %key_path.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "issuer key is readable by group or others"
            );
        }
        let pem = AuthorityPem {
            trust_bundle_pem: read(TRUST_BUNDLE_FILE)?,
            issuer_cert_pem: read(ISSUER_CERT_FILE)?,
            issuer_key_pem: read(ISSUER_KEY_FILE)?,
        };
        let authority = Authority::from_pem_for(&pem, td)?;
        tracing::info!(dir = %dir.display(), trust_domain = %td, "loaded certificate authority");
        return Ok(authority);
    }
    if !present.is_empty() {
        return Err(AuthorityError::PartialDirectory {
            dir: dir.to_path_buf(),
            present,
            missing,
        });
    }

    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io("securing", dir))?;
    let authority = Authority::generate(td)?;
    let pem = authority.to_pem();
    // Key first and bundle last: a crash in between leaves a partial
    // directory, which the next start refuses instead of silently replacing.
    write_new(dir, ISSUER_KEY_FILE, &pem.issuer_key_pem, 0o600)?;
    write_new(dir, ISSUER_CERT_FILE, &pem.issuer_cert_pem, 0o644)?;
    write_new(dir, TRUST_BUNDLE_FILE, &pem.trust_bundle_pem, 0o644)?;
    // Make the renames durable before anyone is handed certificates.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))?;
    tracing::info!(dir = %dir.display(), trust_domain = %td, "generated certificate authority");
    Ok(authority)
}

/// Writes to a temporary name created with `mode` (never briefly
/// world-readable), syncs, then renames into place.
fn write_new(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<(), AuthorityError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let io = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| AuthorityError::Io {
            what,
            path: p,
            source,
        }
    };
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("writing", &tmp))?;
    fs::rename(&tmp, &path).map_err(io("renaming", &path))?;
    Ok(())
}

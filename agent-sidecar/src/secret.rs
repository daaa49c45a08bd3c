//! Credentials given to the sidecar as a file or a variable (the provider
//! key, the search cluster's key): the file wins, surrounding whitespace is
//! not part of the secret, and an empty one is an error, not a credential.

use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum SecretError {
    /// Neither the file nor the variable is set.
    Missing,
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    Empty,
}

/// The secret from `file` if set, else `value`.
pub fn read(file: Option<&Path>, value: Option<&str>) -> Result<String, SecretError> {
    let raw = match (file, value) {
        (Some(path), _) => std::fs::read_to_string(path).map_err(|source| SecretError::File {
            path: path.to_owned(),
            source,
        })?,
        (None, Some(v)) => v.to_owned(),
        (None, None) => return Err(SecretError::Missing),
    };
    let secret = raw.trim();
    if secret.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(secret.to_owned())
}

//! Shared secrets between the sidecar and its workload, kept in a file in
//! the sidecar's data dir: the cron webhook token, the model proxy's
//! credential. Whoever needs one first (`init` before the workload starts,
//! or the sidecar) creates it with 32 random bytes; the other reads it. The
//! file is never replaced, so both always agree.

use std::path::Path;

/// The token in `path`, created when the file is missing or empty.
///
/// `init` and the sidecar start together and both call this: the token is
/// only ever placed with `hard_link`, which fails when the other side got
/// there first, so two creators always end with the same token. (Checking
/// "exists" and then renaming let the later creator replace the earlier
/// one's token: the workload then presented a credential the proxy no
/// longer had, and every model call was refused.)
pub fn ensure(path: &Path) -> std::io::Result<String> {
    if let Some(token) = read(path)? {
        return Ok(token);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    ));
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, &token)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    let placed = std::fs::hard_link(&tmp, path);
    let outcome = match placed {
        Ok(()) => Ok(token),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path).and_then(|t| match t {
                // The other side created it first: theirs counts.
                Some(theirs) => Ok(theirs),
                // Empty: left by a crash of an older version (tokens are never
                // written in place), so it is replaced; whatever is in the file
                // afterwards is the token.
                None => std::fs::rename(&tmp, path).and_then(|()| {
                    read(path)?.ok_or_else(|| {
                        std::io::Error::other(format!("{} is empty", path.display()))
                    })
                }),
            })
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&tmp);
    outcome
}

fn read(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Compare a presented credential with the expected one in time that does
/// not depend on where they differ.
pub fn matches(presented: &[u8], expected: &[u8]) -> bool {
    if presented.len() != expected.len() {
        return false;
    }
    presented
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_first_caller_creates_the_token_and_later_callers_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/token");
        let first = ensure(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(ensure(&path).unwrap(), first);
        std::fs::write(&path, "").unwrap();
        let replaced = ensure(&path).unwrap();
        assert_ne!(replaced, first, "an empty file gets a fresh token");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), replaced);
    }

    #[test]
    fn creators_racing_for_a_missing_file_all_end_with_the_same_token() {
        for _ in 0..50 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("token");
            let barrier = std::sync::Barrier::new(4);
            let tokens: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            ensure(&path).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let on_disk = std::fs::read_to_string(&path).unwrap();
            for t in &tokens {
                assert_eq!(
                    t, &on_disk,
                    "a creator holds a token that is not the file's"
                );
            }
        }
    }

    #[test]
    fn matches_only_the_same_bytes() {
        assert!(matches(b"abc", b"abc"));
        assert!(!matches(b"abd", b"abc"));
        assert!(!matches(b"ab", b"abc"));
        assert!(!matches(b"", b"abc"));
    }
}

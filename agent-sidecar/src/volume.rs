//! The agent's data volume, watched for space: a volume that is full makes
//! the workload fail in its own words (OpenClaw cannot write its session, a
//! model server cannot log), so the sidecar says so first, where people
//! look: the readiness detail (`clawswarm agents list`, `/agent status`)
//! and, at once, the reply to a turn.

use std::path::{Path, PathBuf};

/// Checks one directory's file system against a floor of free bytes.
#[derive(Clone, Debug)]
pub struct VolumeCheck {
    pub dir: PathBuf,
    pub min_free_bytes: u64,
}

impl VolumeCheck {
    /// Why turns cannot be served now, if the volume is (nearly) full. A
    /// file system that cannot be read is not called full: the workload's
    /// own errors will say more than a guess.
    pub fn problem(&self) -> Option<String> {
        let (free, total) = space(&self.dir)?;
        // Only stable figures: the detail is sent to the controller each
        // time it changes, and free space changes with every write.
        (free < self.min_free_bytes).then(|| {
            format!(
                "the agent's data volume is full: less than {} free of {} at {} (CLAWSWARM_MIN_FREE_BYTES); free some space or grow the volume",
                human(self.min_free_bytes),
                human(total),
                self.dir.display(),
            )
        })
    }
}

/// Bytes available to this (unprivileged) process, and the size, of the
/// file system holding `dir`.
pub fn space(dir: &Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    // The field types differ by platform (32 bits on some 32-bit targets).
    #[allow(clippy::useless_conversion)]
    let (unit, free, total) = (
        u64::from(s.fragment_size()).max(1),
        u64::from(s.blocks_available()),
        u64::from(s.blocks()),
    );
    Some((free.saturating_mul(unit), total.saturating_mul(unit)))
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_what_is_free_names_the_volume_and_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let (free, _) = space(dir.path()).unwrap();
        let full = VolumeCheck {
            dir: dir.path().to_owned(),
            min_free_bytes: free.saturating_add(1 << 40),
        };
        let problem = full.problem().unwrap();
        assert!(problem.contains("data volume is full"), "{problem}");
        assert!(problem.contains("CLAWSWARM_MIN_FREE_BYTES"), "{problem}");
        let roomy = VolumeCheck {
            dir: dir.path().to_owned(),
            min_free_bytes: 0,
        };
        assert_eq!(roomy.problem(), None);
    }

    #[test]
    fn a_missing_directory_is_not_called_full() {
        let check = VolumeCheck {
            dir: PathBuf::from("/nonexistent/clawswarm"),
            min_free_bytes: u64::MAX,
        };
        assert_eq!(check.problem(), None);
    }

    #[test]
    fn sizes_read_like_df() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}

//! Turns in flight, on disk. A sidecar that restarts mid-reply (its pod
//! restarted, the OOM killer, a node reboot) has lost the reply's text, but
//! not the fact that a reply was being written: each turn is recorded when
//! it starts and forgotten once the controller acknowledges or cancels it.
//! What a new sidecar finds here it reports as turns that ended in error
//! ([`RESTARTED`]), so the controller closes their Slack messages with a
//! note instead of leaving them mid-sentence.
//!
//! The file holds ids and sealed reply targets only, never reply text.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// What a turn the sidecar lost to a restart ends with.
pub const RESTARTED: &str = "your agent restarted before it finished this reply";
/// Turns kept at most; past it the oldest is forgotten (with a warning).
/// Turns in flight are bounded far lower by the relay's queues.
pub const MAX_JOURNALED: usize = 1024;

/// One turn in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournaledTurn {
    pub turn_id: String,
    pub conversation: String,
    pub reply_target: Vec<u8>,
    /// Order of recording, to forget the oldest first.
    pub seq: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Stored {
    turns: Vec<JournaledTurn>,
}

/// Without a path it only keeps turns in memory (tests, no data dir).
pub struct TurnJournal {
    path: Option<PathBuf>,
    turns: Mutex<(u64, BTreeMap<String, JournaledTurn>)>,
}

impl TurnJournal {
    /// Open the journal and return the turns a previous run left in it; they
    /// stay recorded until acknowledged like any other. A file that cannot be
    /// read is moved aside (`.corrupt`) with a warning, never silently reused.
    pub fn open(path: Option<PathBuf>) -> (Arc<Self>, Vec<JournaledTurn>) {
        let survivors = path.as_ref().map(load).unwrap_or_default();
        let next = survivors.iter().map(|t| t.seq + 1).max().unwrap_or(0);
        let turns = survivors
            .iter()
            .map(|t| (t.turn_id.clone(), t.clone()))
            .collect();
        (
            Arc::new(Self {
                path,
                turns: Mutex::new((next, turns)),
            }),
            survivors,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<String, JournaledTurn>)> {
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A turn started.
    pub fn record(&self, turn_id: &str, conversation: &str, reply_target: &[u8]) {
        let mut g = self.lock();
        let (next, turns) = &mut *g;
        let seq = *next;
        *next += 1;
        turns.insert(
            turn_id.to_owned(),
            JournaledTurn {
                turn_id: turn_id.to_owned(),
                conversation: conversation.to_owned(),
                reply_target: reply_target.to_vec(),
                seq,
            },
        );
        while turns.len() > MAX_JOURNALED {
            let Some(oldest) = turns
                .values()
                .min_by_key(|t| t.seq)
                .map(|t| t.turn_id.clone())
            else {
                break;
            };
            warn!(turn_id = %oldest, "turn journal full: forgetting its oldest turn");
            turns.remove(&oldest);
        }
        self.persist(turns);
    }

    /// The controller has the reply, or nobody will ask for it again.
    pub fn forget(&self, turn_id: &str) {
        let mut g = self.lock();
        if g.1.remove(turn_id).is_some() {
            self.persist(&g.1);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn persist(&self, turns: &BTreeMap<String, JournaledTurn>) {
        let Some(path) = &self.path else { return };
        let stored = Stored {
            turns: turns.values().cloned().collect(),
        };
        let written = serde_json::to_vec(&stored)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, path)
            });
        if let Err(e) = written {
            // The turn still runs; only its recovery after a crash is lost.
            warn!(path = %path.display(), error = %e, "could not write the turn journal");
        }
    }
}

fn load(path: &PathBuf) -> Vec<JournaledTurn> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "could not read the turn journal; starting without it");
            return Vec::new();
        }
    };
    match serde_json::from_slice::<Stored>(&bytes) {
        Ok(s) => s.turns,
        Err(e) => {
            let aside = path.with_extension("corrupt");
            let moved = std::fs::rename(path, &aside);
            warn!(path = %path.display(), aside = %aside.display(), moved = moved.is_ok(), error = %e, "the turn journal is not valid; moved aside, starting without it");
            Vec::new()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_turn_survives_a_restart_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turns.json");
        let (j, survivors) = TurnJournal::open(Some(path.clone()));
        assert!(survivors.is_empty());
        j.record("t1", "c1", b"target-1");
        j.record("t2", "c1", b"target-2");
        j.forget("t1");
        drop(j);

        let (j, survivors) = TurnJournal::open(Some(path.clone()));
        assert_eq!(
            survivors
                .iter()
                .map(|t| (t.turn_id.as_str(), t.reply_target.as_slice()))
                .collect::<Vec<_>>(),
            [("t2", b"target-2".as_slice())]
        );
        // Still recorded until the controller acknowledges it.
        drop(j);
        let (j, survivors) = TurnJournal::open(Some(path.clone()));
        assert_eq!(survivors.len(), 1);
        j.forget("t2");
        drop(j);
        assert!(TurnJournal::open(Some(path)).1.is_empty());
    }

    #[test]
    fn a_corrupt_journal_is_moved_aside_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turns.json");
        std::fs::write(&path, b"{\"turns\": [").unwrap();
        let (j, survivors) = TurnJournal::open(Some(path.clone()));
        assert!(survivors.is_empty());
        assert!(path.with_extension("corrupt").exists());
        j.record("t1", "c1", b"x");
        assert_eq!(TurnJournal::open(Some(path)).1.len(), 1);
    }

    #[test]
    fn a_full_journal_forgets_its_oldest_turn() {
        let (j, _) = TurnJournal::open(None);
        for i in 0..=MAX_JOURNALED {
            j.record(&format!("t{i}"), "c", b"x");
        }
        assert_eq!(j.len(), MAX_JOURNALED);
        j.forget("t0");
        assert_eq!(j.len(), MAX_JOURNALED, "t0 was the one forgotten");
    }
}

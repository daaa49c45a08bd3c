//! One file per conversation, `<dir>/<sha256 of the conversation id>.json`,
//! replaced atomically (temp file, fsync, rename) so a sidecar killed mid-
//! write leaves the old state or the new, never half of one. Conversation
//! ids are hashed because they carry `:` and Slack ids; the id is kept
//! inside the file and checked on load.
//!
//! A file that cannot be read as a conversation is moved aside
//! (`.corrupt`) with a warning and that conversation starts fresh: losing
//! an agent's memory of one conversation is better than refusing to answer.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::{Conversation, HistoryLimits, Item};

/// Version of the file format.
const VERSION: u32 = 1;
/// Larger files are not read (history is bounded far below this; a file
/// this big was not written by us).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
const EXT: &str = "json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a conversation file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl StoreError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Corrupt { .. } => "corrupt",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    conversation: String,
    #[serde(default)]
    last_response_id: Option<String>,
    #[serde(default)]
    items: Vec<Item>,
}

#[derive(Debug)]
pub struct ConversationStore {
    dir: PathBuf,
    limits: HistoryLimits,
}

impl ConversationStore {
    pub fn new(dir: PathBuf, limits: HistoryLimits) -> Arc<Self> {
        Arc::new(Self { dir, limits })
    }

    pub fn limits(&self) -> &HistoryLimits {
        &self.limits
    }

    pub fn path_for(&self, conversation: &str) -> PathBuf {
        let hash = hex::encode(Sha256::digest(conversation.as_bytes()));
        self.dir.join(format!("{}.{EXT}", &hash[..32]))
    }

    /// The conversation as last saved; fresh when there is none, and fresh
    /// (with a warning, the file moved aside) when the file is unreadable.
    pub fn load(&self, conversation: &str) -> Conversation {
        match self.try_load(conversation) {
            Ok(c) => c.unwrap_or_default(),
            Err(e) => {
                let path = self.path_for(conversation);
                let aside = path.with_extension("corrupt");
                let moved_to = match fs::rename(&path, &aside) {
                    Ok(()) => aside.display().to_string(),
                    Err(_) => String::new(),
                };
                warn!(
                    error = %e,
                    kind = e.metric_label(),
                    moved_to = %moved_to,
                    "conversation history unreadable; this conversation starts fresh"
                );
                Conversation::default()
            }
        }
    }

    pub fn try_load(&self, conversation: &str) -> Result<Option<Conversation>, StoreError> {
        let path = self.path_for(conversation);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        if len > MAX_FILE_BYTES {
            return Err(corrupt(format!("{len} bytes, more than {MAX_FILE_BYTES}")));
        }
        let bytes = fs::read(&path).map_err(io)?;
        let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if stored.v != VERSION {
            return Err(corrupt(format!("unknown version {}", stored.v)));
        }
        if stored.conversation != conversation {
            return Err(corrupt("holds another conversation".into()));
        }
        let mut c = Conversation {
            last_response_id: stored.last_response_id.filter(|id| !id.is_empty()),
            items: stored.items.into(),
        };
        // The limits may have been lowered since it was written.
        c.trim(&self.limits);
        Ok(Some(c))
    }

    /// Replace the conversation's file; forgets the least recently saved
    /// conversations beyond the limit when this one is new.
    pub fn save(&self, conversation: &str, c: &Conversation) -> Result<(), StoreError> {
        let path = self.path_for(conversation);
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source: std::io::Error| StoreError::Io { path: p, source }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))?;
        let is_new = !path.exists();
        let stored = Stored {
            v: VERSION,
            conversation: conversation.to_owned(),
            last_response_id: c.last_response_id.clone(),
            items: c.items.iter().cloned().collect(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = path.with_extension("tmp");
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io(&path))?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        if is_new {
            self.prune(&path);
        }
        Ok(())
    }

    /// Remove the oldest conversation files beyond `max_conversations`
    /// (by modification time: each save rewrites the file).
    fn prune(&self, keep: &Path) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == EXT))
            .filter_map(|e| {
                let t = e.metadata().and_then(|m| m.modified()).ok()?;
                Some((t, e.path()))
            })
            .collect();
        if files.len() <= self.limits.max_conversations {
            return;
        }
        files.sort();
        let excess = files.len() - self.limits.max_conversations;
        for (_, p) in files.into_iter().filter(|(_, p)| p != keep).take(excess) {
            if let Err(e) = fs::remove_file(&p) {
                warn!(error = %e, path = %p.display(), "cannot forget an old conversation");
            }
        }
    }

    /// [`Self::load`] off the async runtime.
    pub async fn load_async(self: &Arc<Self>, conversation: &str) -> Conversation {
        let store = self.clone();
        let key = conversation.to_owned();
        tokio::task::spawn_blocking(move || store.load(&key))
            .await
            .unwrap_or_default()
    }

    /// [`Self::save`] off the async runtime.
    pub async fn save_async(
        self: &Arc<Self>,
        conversation: &str,
        c: Conversation,
    ) -> Result<(), StoreError> {
        let store = self.clone();
        let key = conversation.to_owned();
        tokio::task::spawn_blocking(move || store.save(&key, &c))
            .await
            .map_err(|e| StoreError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
    }
}

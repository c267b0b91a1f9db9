//! Snapshots: the commit record of one backup run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};

/// Whether every file was read (full) or unchanged files were taken from the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Full,
    Incremental,
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
        })
    }
}

/// A source file that could not be backed up, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceError {
    pub path: String,
    pub error: String,
}

/// Figures of a backup run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    /// Bytes read from source files.
    pub bytes_read: u64,
    /// Bytes written to the repository's packs (after dedup and compression).
    pub bytes_added: u64,
    /// Total size of the files in the snapshot.
    pub total_bytes: u64,
    pub duration_secs: f64,
    /// Source files that could not be read; they are missing from the snapshot.
    pub errors: Vec<SourceError>,
    /// Source entries backed up with something to know (a file replaced while it was being
    /// backed up, stored as found; a backup path that is a symlink, followed). Absent when
    /// empty (and in snapshots written before it existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<SourceError>,
}

/// A snapshot object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub time: DateTime<Utc>,
    pub host: String,
    pub username: String,
    /// The backed-up paths, absolute.
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// The daemon job that made it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub kind: BackupKind,
    pub parent: Option<SnapshotId>,
    /// The root directory listing ("/").
    pub tree: BlobId,
    pub summary: Summary,
    /// The program that wrote it.
    pub program: String,
    /// For a snapshot written by `repair snapshots`: the snapshot it repairs (which it replaces,
    /// without the damaged files; tagged `repaired`). Absent otherwise, so older readers, which
    /// ignore fields they do not know, read repaired snapshots too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
}

impl Snapshot {
    /// Serialized form (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain data: serializing to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a snapshot; `what` names it in errors.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(what, format!("unreadable snapshot: {e}")))
    }

    /// Whether this snapshot covers exactly these paths.
    pub fn has_paths(&self, paths: &[String]) -> bool {
        let mut a = self.paths.clone();
        let mut b = paths.to_vec();
        a.sort();
        b.sort();
        a == b
    }
}

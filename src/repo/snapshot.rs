//! Snapshots: the commit record of one backup run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::storage::FileKind;

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

/// The name of this machine, as snapshots and locks record it ("localhost" when it has none
/// that can be read).
pub fn local_host() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
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
    /// A snapshot for tests of what is chosen among snapshots: `host`, `job`, `paths` and
    /// `tags`, made at `time` (RFC 3339), of an empty root listing.
    #[cfg(test)]
    pub(crate) fn for_test(
        host: &str,
        job: Option<&str>,
        paths: &[&str],
        tags: &[&str],
        time: &str,
    ) -> Snapshot {
        Snapshot {
            time: DateTime::parse_from_rfc3339(time)
                .expect("test time")
                .with_timezone(&Utc),
            host: host.into(),
            username: "root".into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            job: job.map(Into::into),
            kind: BackupKind::Full,
            parent: None,
            tree: BlobId([0; 32]),
            summary: Summary::default(),
            program: "test".into(),
            original: None,
        }
    }

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

/// What to do about a damaged snapshot object, for messages.
pub const DAMAGED_SNAPSHOT_HINT: &str = "`lifeboat repair snapshots --forget` removes unreadable \
     snapshot objects (put back a good copy of it instead, if you have one); prune refuses to run \
     until then";

/// An object under `snapshots/` that is not a usable snapshot: its name is not a snapshot id
/// (a stray file), or its content fails verification (bit rot, a truncated or foreign file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedSnapshot {
    /// Its name in storage.
    pub name: String,
    /// Its path in the repository (`snapshots/<name>`).
    pub object: String,
    /// What is wrong with it.
    pub error: String,
}

impl DamagedSnapshot {
    /// A damaged object named `name`, and why.
    pub fn new(name: &str, error: impl Into<String>) -> Self {
        DamagedSnapshot {
            name: name.to_string(),
            object: FileKind::Snapshot.path(name),
            error: error.into(),
        }
    }
}

impl std::fmt::Display for DamagedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} cannot be read: {}", self.object, self.error)
    }
}

/// What `snapshots/` holds: the readable snapshots, oldest first, and the damaged objects.
///
/// One damaged object must not block what does not need it: listing, selecting and restoring
/// intact snapshots, backups, forget. What must see every snapshot — prune, which would
/// otherwise delete data a damaged snapshot still references — asks for
/// [`SnapshotList::complete`], which refuses while any object is damaged.
#[derive(Debug, Clone, Default)]
pub struct SnapshotList {
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    pub damaged: Vec<DamagedSnapshot>,
}

impl SnapshotList {
    /// Logs a warning for each damaged object (left out of what the caller sees).
    pub fn warn(&self) {
        for d in &self.damaged {
            tracing::warn!("{d}; it is left out. {DAMAGED_SNAPSHOT_HINT}");
        }
    }

    /// Every snapshot, or an error naming the damaged objects: for `op`, which must not act
    /// on a partial view of the snapshots.
    pub fn complete(self, op: &'static str) -> Result<Vec<(SnapshotId, Snapshot)>> {
        if self.damaged.is_empty() {
            return Ok(self.snapshots);
        }
        Err(Error::DamagedSnapshots {
            op,
            objects: self.damaged.iter().map(ToString::to_string).collect(),
        })
    }

    /// Refuses a selector that names a damaged object: its full id or a prefix only it
    /// matches (an error saying it is damaged), or a prefix that matches a damaged object and
    /// an intact snapshot (ambiguous). `latest` warns that damaged objects were left out.
    pub fn check_selector(&self, selector: &str) -> Result<()> {
        if selector == "latest" {
            self.warn();
            return Ok(());
        }
        let sel = selector.to_ascii_lowercase();
        if sel.is_empty() || !sel.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(());
        }
        let damaged: Vec<&DamagedSnapshot> = self
            .damaged
            .iter()
            .filter(|d| d.name.starts_with(&sel))
            .collect();
        let Some(first) = damaged.first() else {
            return Ok(());
        };
        let intact = self
            .snapshots
            .iter()
            .filter(|(id, _)| id.to_hex().starts_with(&sel))
            .count();
        if damaged.len() == 1 && (intact == 0 || first.name == sel) {
            return Err(Error::SnapshotSelect(format!(
                "snapshot {selector} is damaged: {first}; restore another snapshot (`lifeboat \
                 snapshots` lists the readable ones). {DAMAGED_SNAPSHOT_HINT}"
            )));
        }
        Err(Error::SnapshotSelect(format!(
            "{selector:?} is ambiguous: {} snapshot objects start with it, {} of them damaged \
             ({}); give more characters",
            intact + damaged.len(),
            damaged.len(),
            damaged
                .iter()
                .map(|d| d.object.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

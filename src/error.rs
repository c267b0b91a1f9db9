//! Errors of the library.
//!
//! Policy (kept throughout the crate):
//! - Library code returns [`Error`]; `anyhow` is used only at the CLI edge (`src/main.rs`,
//!   `src/cli/`), which turns errors into messages and exit codes.
//! - Every I/O failure carries the path or object name and the operation that failed; a bare
//!   `io::Error` never leaves a module.
//! - Integrity failures ([`Error::Corrupt`]) name the object and say what to do next.
//! - [`Error::is_retryable`] tells whether trying again may help (network faults, throttling);
//!   permanent conditions (missing object, permission denied, disk full, corruption) say no.

use std::io;
use std::path::PathBuf;

/// Result alias of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local file operation failed (source files, restore target, local files of ours).
    #[error("{op} {}: {cause}", crate::display::path(path))]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },

    /// A file system ran out of space (or of the user's quota) while writing `path`: a local
    /// repository, a restore target, or a file of ours. Permanent: retrying cannot help until
    /// someone frees space.
    #[error(
        "{op} {}: the file system is full ({cause}); free space on it (or move the data to a larger \
         one), then run the command again",
        crate::display::path(path)
    )]
    DiskFull {
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },

    /// A file system has less free space than an operation needs before it starts (a restore
    /// checks this before writing anything). Nothing was written.
    #[error(
        "{op} needs {} on the file system of {} but it has only {} free{note}; nothing was written",
        crate::units::human_bytes(*need),
        crate::display::path(path),
        crate::units::human_bytes(*free)
    )]
    NotEnoughSpace {
        op: &'static str,
        path: PathBuf,
        need: u64,
        free: u64,
        /// Said after the sizes (what else holds space there), or empty.
        note: String,
    },

    /// Compressing data failed (a fault of the codec or of memory, not of the data or the
    /// repository).
    #[error("compressing {what} failed: {cause}")]
    Compression { what: String, cause: io::Error },

    /// A backup stalled past its lock's staleness bound (the machine suspended, the process
    /// stopped) again and again, and each time data it relied on was removed meanwhile.
    #[error(
        "the backup was stalled past its lock's staleness bound {attempts} times and data it relied on was removed each time; nothing was committed. Check that the machine is not being suspended, or raise LIFEBOAT_LOCK_STALE_AFTER"
    )]
    BackupStalled { attempts: usize },

    /// A storage operation on a repository object failed.
    #[error("repository storage: {op} {name}: {cause}")]
    Storage {
        op: &'static str,
        name: String,
        cause: io::Error,
    },

    /// The repository's storage could not be reached for the whole retry budget: connections
    /// refused or reset, requests timing out, or the service answering "not now" (5xx, 429).
    /// It says nothing about the repository's content: never report it as damage.
    #[error(
        "cannot reach the repository storage: {op} {name}: {cause}; gave up after retrying for \
         {}. This is no sign of damage to the repository: check the network and the storage \
         service, then run the command again (a longer outage can be waited out with the repository option \
         retry_timeout, e.g. --option retry_timeout=15m)",
        humantime::format_duration(*budget)
    )]
    Unreachable {
        op: &'static str,
        name: String,
        cause: io::Error,
        /// How long requests were retried before giving up.
        budget: std::time::Duration,
    },

    /// A repository object does not exist.
    #[error("repository object {name} does not exist")]
    NotFound { name: String },

    /// A repository object failed verification.
    #[error(
        "repository object {name} is corrupt: {reason}; run `lifeboat check --read-data` to find \
         every damaged object and the files it affects"
    )]
    Corrupt { name: String, reason: String },

    /// Snapshot objects cannot be read, and the operation must see every snapshot (prune: a
    /// damaged snapshot may still reference data it would delete).
    #[error(
        "{op} refused: {}; a damaged snapshot may still reference data that {op} would delete. \
         Remove unreadable snapshot objects with `lifeboat repair snapshots --forget` (or put \
         back a good copy), then run {op} again",
        objects.join("; ")
    )]
    DamagedSnapshots {
        op: &'static str,
        objects: Vec<String>,
    },

    /// There is no repository where one was expected.
    #[error("no Lifeboat repository at {location}: {reason} (create one with `lifeboat init`)")]
    NoRepository { location: String, reason: String },

    /// `init` was pointed at a place that is already in use.
    #[error("cannot create a repository at {location}: {reason}")]
    RepositoryExists { location: String, reason: String },

    /// The repository was written by a newer or unknown format.
    #[error("repository at {location} has format version {found}; this lifeboat reads version {supported}: upgrade lifeboat")]
    UnsupportedVersion {
        location: String,
        found: u32,
        supported: u32,
    },

    /// A snapshot selector matched nothing or more than one snapshot.
    #[error("{0}")]
    SnapshotSelect(String),

    /// `latest` matched snapshots of more than one lineage (job, host or set of paths): it
    /// does not guess which one is meant. The newest snapshot of each, newest first, with the
    /// flags that select it.
    #[error(
        "{selector:?} matches the snapshots of {} different jobs, hosts or sets of paths and does not guess which one you mean; name one with --job, --host or --path, or give a snapshot id: {}",
        candidates.len(),
        candidates.iter().map(|c| match &c.flags {
            Some(f) => format!("{c} ({})", f.join(" ")),
            None => c.to_string(),
        }).collect::<Vec<_>>().join("; ")
    )]
    AmbiguousSnapshot {
        selector: String,
        candidates: Vec<crate::repo::select::Candidate>,
    },

    /// A caller-supplied argument is invalid.
    #[error("{0}")]
    Invalid(String),

    /// A blob needed for an operation is not in the index.
    #[error("chunk {id} is not in the repository index; the repository is damaged: run `lifeboat check`")]
    MissingBlob { id: String },

    /// No key object of an encrypted repository opens with the password given.
    #[error(
        "wrong password for the repository at {location}: no key opens with it{}",
        if damaged_keys.is_empty() { String::new() } else {
            format!(" (unreadable key objects: {}; they may be damaged)", damaged_keys.join(", "))
        }
    )]
    WrongPassword {
        location: String,
        damaged_keys: Vec<String>,
    },

    /// Another process holds a conflicting lock on the repository.
    #[error("the repository at {location} is in use: {holders}; try again later, or run `lifeboat unlock` if that process is gone")]
    Locked { location: String, holders: String },

    /// An operation was interrupted by the user or the service manager.
    #[error("interrupted by a signal; stopped cleanly")]
    Interrupted,

    /// Placing a verified restore into its target failed or was interrupted part-way. What
    /// was placed was put back (replaced entries got their originals back, new ones were
    /// removed), except `not_put_back`, which hold the snapshot's version; the originals those
    /// replaced are kept in `kept_in`.
    #[error("{}", placing_message(cause, not_put_back, kept_in))]
    Placing {
        cause: Box<Error>,
        not_put_back: Vec<PathBuf>,
        kept_in: Vec<PathBuf>,
    },
}

/// The message of [`Error::Placing`]: what stopped placing, and exactly what the target holds.
fn placing_message(cause: &Error, not_put_back: &[PathBuf], kept_in: &[PathBuf]) -> String {
    let what = match cause {
        Error::Interrupted => "interrupted by a signal while placing the restored entries".into(),
        other => format!("placing the restored entries failed: {other}"),
    };
    if not_put_back.is_empty() {
        return format!(
            "{what}; every entry already placed was put back (replaced files have their old \
             content again, new ones were removed): the target holds what it held before the restore"
        );
    }
    const SHOWN: usize = 20;
    let mut list: Vec<String> = not_put_back
        .iter()
        .take(SHOWN)
        .map(|p| crate::display::path(p).to_string())
        .collect();
    if not_put_back.len() > SHOWN {
        list.push(format!("and {} more", not_put_back.len() - SHOWN));
    }
    let kept = if kept_in.is_empty() {
        String::new()
    } else {
        format!(
            "; the old versions of those it replaced are kept in {} (the same relative path \
             beneath it)",
            kept_in
                .iter()
                .map(|p| crate::display::path(p).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    format!(
        "{what}; {} entries could not be put back and hold the snapshot's version: {}{kept}; \
         every other entry of the target holds what it held before the restore",
        not_put_back.len(),
        list.join(", ")
    )
}

impl Error {
    /// Whether the operation stopped at a signal and left everything as it was.
    pub fn is_clean_interrupt(&self) -> bool {
        match self {
            Error::Interrupted => true,
            Error::Placing {
                cause,
                not_put_back,
                ..
            } => not_put_back.is_empty() && cause.is_clean_interrupt(),
            _ => false,
        }
    }
}

impl Error {
    /// An I/O error on a local path ([`Error::DiskFull`] when the file system is full).
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        if is_disk_full(&source) {
            return Error::DiskFull {
                op,
                path: path.into(),
                cause: source,
            };
        }
        Error::Io {
            op,
            path: path.into(),
            cause: source,
        }
    }

    /// Whether this is a full file system (see [`Error::DiskFull`]).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::DiskFull { .. })
    }

    /// An integrity error on a named object.
    pub fn corrupt(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// Whether this says that a repository object is damaged or gone: it failed verification
    /// ([`Error::Corrupt`]), does not exist, is not in the index, or is shorter than what was
    /// asked of it (truncated). Storage that could not be reached, or refused the request, is
    /// not damage: a restore must stop and say so rather than leave the data out, and a repair
    /// must not drop data that is intact. Every reader classifies with this one test.
    pub fn is_damage(&self) -> bool {
        self.damage().is_some()
    }

    /// The damaged object this error names and what is wrong with it, in the words every
    /// report uses; `None` when the error is no damage (see [`Error::is_damage`]).
    pub fn damage(&self) -> Option<Damage> {
        let (object, reason) = match self {
            Error::Corrupt { name, reason } => (name.clone(), format!("damaged: {reason}")),
            Error::NotFound { name } => (name.clone(), "is missing from storage".to_string()),
            Error::MissingBlob { id } => (
                format!("chunk {id}"),
                "is not in the index (missing)".to_string(),
            ),
            Error::Storage { name, cause, .. } if cause.kind() == io::ErrorKind::UnexpectedEof => (
                name.clone(),
                "damaged: it ends before the part read (truncated)".to_string(),
            ),
            _ => return None,
        };
        Some(Damage {
            object,
            reason,
            pack: None,
        })
    }

    /// What went wrong, without the object name a report already gives beside it: the reason
    /// of a failed verification, else the whole message.
    pub fn reason(&self) -> String {
        match self {
            Error::Corrupt { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }

    /// Whether repeating the failed operation may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Storage { cause, .. } => matches!(
                cause.kind(),
                io::ErrorKind::TimedOut
                    | io::ErrorKind::ResourceBusy
                    | io::ErrorKind::Interrupted
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }
}

/// A damaged or missing repository object, and what is wrong with it ([`Error::damage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The object: its path in the repository (`data/…` for the pack holding a listing or
    /// chunk), or `directory listing <id>` / `chunk <id>` when no index entry places it.
    pub object: String,
    /// What is wrong with it ("is not in the index (missing)", "is missing from storage",
    /// "damaged: …").
    pub reason: String,
    /// The pack in storage that holds the damaged listing, when the index places it (what an
    /// operator looks for, repairs or restores from another copy).
    pub pack: Option<String>,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.reason)
    }
}

/// Whether an I/O error says that the file system is full: no space left (ENOSPC), or the
/// user's quota exhausted (EDQUOT).
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

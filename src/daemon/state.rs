//! The daemon's persistent state: per job, where the schedule was last evaluated, the last run
//! and its result, the last success. Written atomically (temporary file, fsync, rename) after
//! every change, so a crash or restart loses nothing and never reads a half-written file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Snapshot written, every source file read.
    Success,
    /// Snapshot written, some source files unreadable.
    Partial,
    /// No snapshot.
    Failed,
}

/// State of one job. Fields missing from an older state file take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobState {
    /// The schedule has been evaluated up to this time: occurrences after it are still due.
    pub cursor: Option<DateTime<Utc>>,
    pub last_start: Option<DateTime<Utc>>,
    pub last_end: Option<DateTime<Utc>>,
    /// "full" or "incremental".
    pub last_kind: Option<String>,
    pub last_result: Option<RunResult>,
    pub last_error: Option<String>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_snapshot: Option<String>,
    pub last_duration_secs: Option<f64>,
    pub last_bytes_read: u64,
    pub last_bytes_added: u64,
    pub last_files: u64,
    pub last_source_errors: u64,
    /// Runs that succeeded and failed since the state was created.
    pub successes: u64,
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// Scheduled runs are held until then.
    pub paused_until: Option<DateTime<Utc>>,
    /// A staleness alert was sent and no success came since.
    pub stale_alerted: bool,
}

/// State of a scheduled repository task (prune, check) or restore drill.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskState {
    /// The schedule has been evaluated up to this time.
    pub cursor: Option<DateTime<Utc>>,
    pub last_start: Option<DateTime<Utc>>,
    pub last_end: Option<DateTime<Utc>>,
    pub last_ok: Option<bool>,
    pub last_error: Option<String>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_duration_secs: Option<f64>,
    /// What the last run reported (prune, check or drill figures).
    pub last_report: Option<serde_json::Value>,
    pub runs: u64,
    pub failures: u64,
}

/// State of every job and task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub jobs: BTreeMap<String, JobState>,
    /// Keyed `prune:REPO`, `check:REPO`, `drill:JOB`.
    pub tasks: BTreeMap<String, TaskState>,
}

/// The state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Reads a JSON file of the state directory: a missing file is the default value, a damaged
/// one an error naming it and what to do (`fix`).
pub fn read_json<T: serde::de::DeserializeOwned + Default>(
    p: &Path,
    what: &'static str,
    fix: &str,
) -> Result<T> {
    match std::fs::read(p) {
        Ok(bytes) => parse_json(&bytes, p, what, fix),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(Error::io("read", p, e)),
    }
}

/// Reads a JSON file of the state directory as the daemon does: a damaged file does not stop
/// the daemon. It is renamed to `NAME.damaged-YYYYMMDDTHHMMSSZ` beside it (kept for whoever
/// wants to look at it, never deleted) and the default value is used; the second value then
/// says what happened, for the log and a notification. Errors: the file cannot be read, or a
/// damaged one cannot be moved aside.
pub fn read_json_or_set_aside<T: serde::de::DeserializeOwned + Default>(
    p: &Path,
    what: &'static str,
    instead: &str,
) -> Result<(T, Option<String>)> {
    let bytes = match std::fs::read(p) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((T::default(), None)),
        Err(e) => return Err(Error::io("read", p, e)),
    };
    let e = match serde_json::from_slice(&bytes) {
        Ok(v) => return Ok((v, None)),
        Err(e) => e,
    };
    let name = p
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut aside = p.with_file_name(format!("{name}.damaged-{stamp}"));
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = p.with_file_name(format!("{name}.damaged-{stamp}-{n}"));
    }
    std::fs::rename(p, &aside)
        .map_err(|io| Error::io("move aside the damaged file (it stays where it is)", p, io))?;
    Ok((
        T::default(),
        Some(format!(
            "{what} {} was damaged ({e}); it was moved aside to {} and {instead}",
            p.display(),
            aside.display()
        )),
    ))
}

/// Parses the bytes of a JSON file of the state directory (see [`read_json`]); public as the
/// pure parsing step for tests and the fuzz targets.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    p: &Path,
    what: &'static str,
    fix: &str,
) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Invalid(format!("{what} {} is damaged ({e}); {fix}", p.display())))
}

/// Writes `dir/name` as JSON atomically: a temporary file, fsync, rename, fsync of the
/// directory; a crash leaves the old file or the new one, never a mix.
pub fn write_json<T: Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
    what: &'static str,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create state directory", dir, e))?;
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomically(dir, name, &bytes, what)
}

/// Writes `dir/name` atomically: a temporary file `.name.tmp` beside it, fsync, rename, fsync
/// of the directory; a crash leaves the old file or the new one, never a mix, and a reader
/// (node_exporter's textfile collector, say) never sees half of it.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8], what: &'static str) -> Result<()> {
    let p = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(what, &p, e)
    })
}

impl State {
    /// Loads the state (a missing file is an empty state; a damaged one is an error naming it).
    pub fn load(dir: &Path) -> Result<Self> {
        read_json(
            &path(dir),
            "daemon state",
            "move it away to start with a fresh state",
        )
    }

    /// Loads the state for the daemon: a damaged file is moved aside and the daemon starts
    /// with an empty state (see [`read_json_or_set_aside`]); the message says so.
    pub fn load_or_set_aside(dir: &Path) -> Result<(Self, Option<String>)> {
        read_json_or_set_aside(
            &path(dir),
            "daemon state file",
            "the daemon started with a fresh state (every job's history and schedule cursor starts again; snapshots in the repositories are untouched)",
        )
    }

    /// Saves the state atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_json(dir, "state.json", self, "write daemon state")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(State::load(dir.path()).expect("empty"), State::default());
        let mut s = State::default();
        s.jobs.entry("etc".into()).or_default().last_result = Some(RunResult::Partial);
        s.save(dir.path()).expect("save");
        assert_eq!(State::load(dir.path()).expect("load"), s);
        std::fs::write(path(dir.path()), b"{").expect("damage");
        let err = State::load(dir.path()).expect_err("damaged");
        assert!(err.to_string().contains("state.json"), "{err}");
    }

    #[test]
    fn a_damaged_state_file_is_moved_aside_not_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            State::load_or_set_aside(dir.path()).expect("missing"),
            (State::default(), None)
        );
        std::fs::write(path(dir.path()), b"{\"jobs\": {\"etc\":").expect("damage");
        let (state, said) = State::load_or_set_aside(dir.path()).expect("set aside");
        assert_eq!(state, State::default());
        let said = said.expect("reported");
        assert!(
            said.contains("state.json") && said.contains("moved aside"),
            "{said}"
        );
        assert!(!path(dir.path()).exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(aside[0].starts_with("state.json.damaged-"), "{aside:?}");
        assert_eq!(
            std::fs::read(dir.path().join(&aside[0])).expect("kept"),
            b"{\"jobs\": {\"etc\":"
        );
        // Again within the same second: a second name, nothing overwritten.
        std::fs::write(path(dir.path()), b"[").expect("damage");
        State::load_or_set_aside(dir.path()).expect("set aside");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 2);
    }
}

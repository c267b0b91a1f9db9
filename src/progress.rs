//! Live counters of a running operation, shared between worker threads and whoever reports
//! progress (a terminal bar, JSON events, later the daemon's status).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters updated with relaxed atomics; readers get a consistent-enough view.
#[derive(Debug, Default)]
pub struct Progress {
    /// Entries (files, directories, links...) processed.
    pub entries: AtomicU64,
    /// Files whose content was read (backup) or written (restore).
    pub files: AtomicU64,
    /// Bytes read from the source (backup) or verified (restore).
    pub bytes_read: AtomicU64,
    /// Bytes added to the repository (backup) or written to the target (restore).
    pub bytes_written: AtomicU64,
    /// Bytes expected in total, when known.
    pub bytes_total: AtomicU64,
}

impl Progress {
    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

//! Live counters of a running operation, shared between worker threads and whoever reports
//! progress (a terminal bar, JSON events, the daemon's status).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters updated with relaxed atomics; readers get a consistent-enough view.
#[derive(Debug, Default)]
pub struct Progress {
    /// Entries (files, directories, links...) processed.
    pub entries: AtomicU64,
    /// Files whose content was read (backup) or written (restore).
    pub files: AtomicU64,
    /// Bytes read from the source (backup) or verified (restore, check, dump).
    pub bytes_read: AtomicU64,
    /// Bytes added to the repository (backup) or written to the target (restore).
    pub bytes_written: AtomicU64,
    /// Bytes `bytes_read` will reach when the operation is done, when known (0: unknown).
    pub bytes_total: AtomicU64,
    /// Entries `entries` will reach, when known (0: unknown). A backup takes it from its
    /// parent snapshot: an incremental backup reads only what changed, so its bytes say little
    /// of how far it is.
    pub entries_total: AtomicU64,
}

/// How far an operation is, and how long it has left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Done so far, 0 to 1 (never 1 before the operation says it is done).
    pub fraction: f64,
    /// Bytes per second so far (of `bytes_read`).
    pub bytes_per_sec: f64,
    /// Seconds left at the rate so far (`None` until something was done).
    pub eta_secs: Option<f64>,
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

    /// How far the operation is after `elapsed_secs`, from its bytes when their total is
    /// known, else from its entries; `None` when neither total is. The rate is the average
    /// since the start: the time an operation spends before its first byte (planning, listing
    /// directories) belongs to the whole, so the estimate errs on the long side early on.
    pub fn estimate(&self, elapsed_secs: f64) -> Option<Estimate> {
        let read = Self::get(&self.bytes_read);
        let bytes_total = Self::get(&self.bytes_total);
        let entries_total = Self::get(&self.entries_total);
        let fraction = if bytes_total > 0 {
            read as f64 / bytes_total as f64
        } else if entries_total > 0 {
            Self::get(&self.entries) as f64 / entries_total as f64
        } else {
            return None;
        };
        let fraction = fraction.clamp(0.0, 0.999);
        let bytes_per_sec = if elapsed_secs > 0.0 {
            read as f64 / elapsed_secs
        } else {
            0.0
        };
        let eta_secs = (fraction > 0.0 && elapsed_secs > 0.0)
            .then(|| elapsed_secs * (1.0 - fraction) / fraction);
        Some(Estimate {
            fraction,
            bytes_per_sec,
            eta_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_uses_bytes_when_their_total_is_known_else_entries() {
        let p = Progress::default();
        assert_eq!(p.estimate(1.0), None, "no total, no estimate");
        Progress::add(&p.entries_total, 200);
        Progress::add(&p.entries, 50);
        let e = p.estimate(10.0).expect("entries");
        assert!((e.fraction - 0.25).abs() < 1e-9);
        assert!((e.eta_secs.expect("eta") - 30.0).abs() < 1e-9);
        Progress::add(&p.bytes_total, 1000);
        Progress::add(&p.bytes_read, 800);
        let e = p.estimate(4.0).expect("bytes");
        assert!((e.fraction - 0.8).abs() < 1e-9);
        assert!((e.bytes_per_sec - 200.0).abs() < 1e-9);
        assert!((e.eta_secs.expect("eta") - 1.0).abs() < 1e-9);
        Progress::add(&p.bytes_read, 500);
        let e = p.estimate(5.0).expect("over");
        assert!(e.fraction < 1.0, "more than the total is not done");
        let fresh = Progress::default();
        Progress::add(&fresh.bytes_total, 10);
        assert_eq!(fresh.estimate(0.0).expect("zero").eta_secs, None);
    }
}

//! Fault injection for the tests (test support, not part of the shipped library): a storage that fails some calls of the one it wraps, the way
//! networks and object stores fail — 503 Slow Down, connection resets, requests that stall and
//! time out, bodies cut short, and permanent refusals (403). Deterministic for a given seed.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use lifeboat::error::{Error, Result};
use lifeboat::storage::{FileKind, Storage, StorageWrapper};

/// What to inject, as probabilities per call.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer "503 Slow Down" (transient).
    pub throttle: f64,
    /// Reset the connection (transient).
    pub reset: f64,
    /// Stall, then time out (transient).
    pub stall: f64,
    /// Stall duration before the timeout is reported.
    pub stall_for: Duration,
    /// Cut a read short (detected as a transient error, as a client detects a body shorter
    /// than its Content-Length).
    pub truncate: f64,
    /// Refuse with 403 Forbidden (permanent).
    pub forbid: f64,
    /// A write that fails after the object was stored (the client never hears the answer).
    pub lost_ack: f64,
    /// Every listing of this kind fails, as a paginated listing whose later page is answered
    /// with an error (permanent: the listing cannot be completed).
    pub fail_listing: Option<FileKind>,
}

/// Counts of injected faults.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FaultCounts {
    pub injected: u64,
    pub calls: u64,
    /// Calls of `read` and `read_range`.
    pub reads: u64,
}

/// A storage that injects [`Faults`] into the one it wraps.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    faults: Faults,
    rng: Mutex<StdRng>,
    counts: Mutex<FaultCounts>,
}

enum Fault {
    Throttle,
    Reset,
    Stall,
    Truncate,
    Forbid,
}

impl FaultyStorage {
    /// Wraps `inner` with deterministic faults from `seed`.
    pub fn new(inner: Arc<dyn Storage>, faults: Faults, seed: u64) -> Self {
        FaultyStorage {
            inner,
            faults,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            counts: Mutex::default(),
        }
    }

    /// How many calls were made and how many faults injected.
    pub fn counts(&self) -> FaultCounts {
        *self.counts.lock()
    }

    fn draw(&self, read: bool) -> Option<Fault> {
        let f = &self.faults;
        let x: f64 = self.rng.lock().gen();
        let mut c = self.counts.lock();
        c.calls += 1;
        let mut edge = 0.0;
        let mut pick = |p: f64, fault: Fault| {
            edge += p;
            (x < edge).then_some(fault)
        };
        let fault = pick(f.throttle, Fault::Throttle)
            .or_else(|| pick(f.reset, Fault::Reset))
            .or_else(|| pick(f.stall, Fault::Stall))
            .or_else(|| pick(if read { f.truncate } else { 0.0 }, Fault::Truncate))
            .or_else(|| pick(f.forbid, Fault::Forbid));
        if fault.is_some() {
            c.injected += 1;
        }
        fault
    }

    /// A write that succeeded may still be reported lost (the answer never arrived).
    fn after_write(&self, name: &str, stored: bool) -> Result<bool> {
        let lost: f64 = self.rng.lock().gen();
        if lost < self.faults.lost_ack {
            self.counts.lock().injected += 1;
            return Err(Error::Storage {
                op: "write",
                name: name.to_string(),
                cause: io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer after the upload (injected)",
                ),
            });
        }
        Ok(stored)
    }

    fn inject(&self, op: &'static str, name: &str, read: bool) -> Result<()> {
        let err = |kind: io::ErrorKind, msg: &str| Error::Storage {
            op,
            name: name.to_string(),
            cause: io::Error::new(kind, msg.to_string()),
        };
        match self.draw(read) {
            None => Ok(()),
            Some(Fault::Throttle) => {
                Err(err(io::ErrorKind::ResourceBusy, "503 Slow Down (injected)"))
            }
            Some(Fault::Reset) => Err(err(
                io::ErrorKind::ConnectionReset,
                "connection reset by peer (injected)",
            )),
            Some(Fault::Stall) => {
                std::thread::sleep(self.faults.stall_for);
                Err(err(
                    io::ErrorKind::TimedOut,
                    "request timed out (injected stall)",
                ))
            }
            Some(Fault::Truncate) => Err(err(
                io::ErrorKind::ConnectionAborted,
                "body ended before its Content-Length (injected truncation)",
            )),
            Some(Fault::Forbid) => Err(err(
                io::ErrorKind::PermissionDenied,
                "403 Forbidden (injected)",
            )),
        }
    }
}

impl StorageWrapper for FaultyStorage {
    fn inner(&self) -> &dyn Storage {
        &*self.inner
    }
    fn has_config(&self) -> Result<bool> {
        self.inject("inspect", "config", true)?;
        self.inner.has_config()
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.counts.lock().reads += 1;
        self.inject("read", name, true)?;
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.counts.lock().reads += 1;
        self.inject("read range of", name, true)?;
        self.inner.read_range(kind, name, offset, len)
    }
    fn create(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<bool> {
        self.inject("write", name, false)?;
        let stored = self.inner.create(kind, name, data)?;
        self.after_write(name, stored)
    }
    fn create_owned(&self, kind: FileKind, name: &str, data: bytes::Bytes) -> Result<bool> {
        self.inject("write", name, false)?;
        let stored = self.inner.create_owned(kind, name, data)?;
        self.after_write(name, stored)
    }
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        if self.faults.fail_listing == Some(kind) {
            self.counts.lock().injected += 1;
            return Err(Error::Storage {
                op: "list",
                name: kind.dir().to_string(),
                cause: io::Error::other(
                    "the listing's second page was answered with 500 Internal Error (injected)",
                ),
            });
        }
        self.inject("list", kind.dir(), true)?;
        self.inner.list(kind)
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inject("remove", name, false)?;
        self.inner.remove(kind, name)
    }
    fn modified(&self, kind: FileKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        self.inject("inspect", name, true)?;
        self.inner.modified(kind, name)
    }
    fn local_path(&self) -> Option<std::path::PathBuf> {
        self.inner.local_path()
    }
    fn clean_spool(&self, kind: FileKind, older_than: std::time::Duration) -> Result<usize> {
        self.inner.clean_spool(kind, older_than)
    }
}

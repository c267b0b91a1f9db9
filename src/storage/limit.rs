//! Bandwidth limits for uploads and downloads, so a backup does not take a server's whole
//! uplink. A token bucket per direction, shared by every worker thread; a transfer waits until
//! the bucket has caught up with its size (allowing one second of burst).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{FileKind, Storage};
use crate::error::Result;

#[derive(Debug)]
struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        Bucket {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes `n` bytes of budget, sleeping as long as the rate requires.
    fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock();
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.rate);
            s.1 = now;
            s.0 -= n as f64;
            if s.0 < 0.0 {
                Duration::from_secs_f64(-s.0 / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A storage whose transfers are limited in bytes per second.
#[derive(Debug)]
pub struct LimitedStorage {
    inner: Arc<dyn Storage>,
    upload: Option<Bucket>,
    download: Option<Bucket>,
}

impl LimitedStorage {
    /// Limits `inner` to `upload` and `download` bytes per second (`None`: unlimited).
    pub fn new(inner: Arc<dyn Storage>, upload: Option<u64>, download: Option<u64>) -> Self {
        LimitedStorage {
            inner,
            upload: upload.map(Bucket::new),
            download: download.map(Bucket::new),
        }
    }

    /// Waits for the upload budget of `len` bytes. Locks are tiny and must be refreshed on
    /// time: they never wait behind packs.
    fn before_upload(&self, kind: FileKind, len: usize) {
        if kind == FileKind::Lock {
            return;
        }
        if let Some(b) = &self.upload {
            b.take(len);
        }
    }
}

impl super::StorageWrapper for LimitedStorage {
    fn inner(&self) -> &dyn Storage {
        &*self.inner
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let data = self.inner.read(kind, name)?;
        if kind == FileKind::Lock {
            return Ok(data);
        }
        if let Some(b) = &self.download {
            b.take(data.len());
        }
        Ok(data)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        if let Some(b) = &self.download {
            b.take(len as usize);
        }
        self.inner.read_range(kind, name, offset, len)
    }
    fn create(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<bool> {
        self.before_upload(kind, data.len());
        self.inner.create(kind, name, data)
    }
    fn create_owned(&self, kind: FileKind, name: &str, data: bytes::Bytes) -> Result<bool> {
        self.before_upload(kind, data.len());
        self.inner.create_owned(kind, name, data)
    }
    fn local_path(&self) -> Option<std::path::PathBuf> {
        self.inner.local_path()
    }
    fn clean_spool(&self, kind: FileKind, older_than: std::time::Duration) -> Result<usize> {
        self.inner.clean_spool(kind, older_than)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_paces_transfers_after_the_burst() {
        let b = Bucket::new(1000);
        let started = Instant::now();
        b.take(1000); // the one-second burst
        b.take(200); // must wait about 0.2 s
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
    }
}

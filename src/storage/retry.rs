//! Retrying transient storage faults.
//!
//! Wraps any [`Storage`]: an operation that fails with a retryable error
//! ([`crate::Error::is_retryable`]: timeouts, resets, throttling) is tried again after an
//! exponential backoff with full jitter, until it succeeds, fails permanently, or the attempts
//! or the total time run out. Permanent errors (not found, permission denied, disk full,
//! corruption) are returned at once. A `create` retried after a fault may find its object
//! already written by the first attempt: it then reports `Ok(false)`, which callers of
//! content-addressed objects treat as success.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::{FileKind, Storage};
use crate::error::Result;

/// How hard to retry: the one policy of storage requests ([`RetryingStorage`]) and of the
/// daemon's notification deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub initial_backoff: Duration,
    /// Largest single backoff.
    pub max_backoff: Duration,
    /// No new attempt starts after this much time since the first.
    pub total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            total: super::DEFAULT_RETRY_TIMEOUT,
        }
    }
}

/// Why [`RetryPolicy::give_up`] says to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// `max_attempts` were made.
    Attempts,
    /// The next attempt would start after `total`.
    Time,
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (1: the first retry): `initial_backoff`
    /// doubled for each further retry, at most `max_backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Whether to stop after `attempt` failed attempts, `elapsed` after the first started,
    /// when the next would start after waiting `wait`; `None`: retry.
    pub fn give_up(&self, attempt: u32, elapsed: Duration, wait: Duration) -> Option<GiveUp> {
        if attempt >= self.max_attempts {
            Some(GiveUp::Attempts)
        } else if elapsed + wait > self.total {
            Some(GiveUp::Time)
        } else {
            None
        }
    }
}

/// A storage that retries transient faults of the one it wraps.
#[derive(Debug)]
pub struct RetryingStorage {
    inner: Arc<dyn Storage>,
    policy: RetryPolicy,
}

impl RetryingStorage {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Storage>, policy: RetryPolicy) -> Self {
        RetryingStorage { inner, policy }
    }

    fn run<T>(&self, what: &str, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match op() {
                Err(e) if e.is_retryable() => {
                    // Full jitter: a random wait up to the current backoff.
                    let backoff = self.policy.backoff(attempt);
                    let wait = rand::thread_rng().gen_range(Duration::ZERO..=backoff);
                    if self
                        .policy
                        .give_up(attempt, started.elapsed(), wait)
                        .is_some()
                    {
                        return Err(unreachable(e, started.elapsed()));
                    }
                    tracing::debug!(%what, attempt, error = %e, ?wait, "transient storage fault, retrying");
                    std::thread::sleep(wait);
                    crate::interrupt::check()?;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A transient fault that lasted through every retry: the storage could not be reached (the
/// error and exit code that say so, never damage), after `retried` of trying.
fn unreachable(e: crate::Error, retried: Duration) -> crate::Error {
    match e {
        crate::Error::Storage { op, name, cause } => crate::Error::Unreachable {
            op,
            name,
            cause,
            budget: Duration::from_secs(retried.as_secs_f64().ceil() as u64),
        },
        other => other,
    }
}

impl super::StorageWrapper for RetryingStorage {
    fn inner(&self) -> &dyn Storage {
        &*self.inner
    }
    fn create_layout(&self) -> Result<()> {
        self.run("create layout", || self.inner.create_layout())
    }
    fn has_config(&self) -> Result<bool> {
        self.run("inspect config", || self.inner.has_config())
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.run(name, || self.inner.read(kind, name))
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.run(name, || self.inner.read_range(kind, name, offset, len))
    }
    fn create(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<bool> {
        self.run(name, || self.inner.create(kind, name, data))
    }
    fn create_owned(&self, kind: FileKind, name: &str, data: bytes::Bytes) -> Result<bool> {
        // A clone of `Bytes` shares the buffer: every attempt sends the same bytes.
        self.run(name, || self.inner.create_owned(kind, name, data.clone()))
    }
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        self.run(kind.dir(), || self.inner.list(kind))
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.run(name, || self.inner.remove(kind, name))
    }
    fn modified(&self, kind: FileKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        self.run(name, || self.inner.modified(kind, name))
    }
    fn local_path(&self) -> Option<std::path::PathBuf> {
        self.inner.local_path()
    }
    fn clean_spool(&self, kind: FileKind, older_than: std::time::Duration) -> Result<usize> {
        self.inner.clean_spool(kind, older_than)
    }
    fn spool_dir(&self, kind: FileKind) -> Option<std::path::PathBuf> {
        self.inner.spool_dir(kind)
    }
    // Not retried: the file is consumed by the first attempt (and local renames do not fail
    // transiently).
    fn publish(&self, kind: FileKind, name: &str, tmp: &std::path::Path) -> Result<bool> {
        self.inner.publish(kind, name, tmp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backoff doubles from `initial_backoff` up to `max_backoff`; retrying stops after
    /// `max_attempts`, or when the next attempt would start after `total`.
    #[test]
    fn backoff_doubles_to_its_cap_and_retries_stop_at_either_bound() {
        let p = RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            total: Duration::from_secs(1),
        };
        let waits: Vec<u128> = (1..=5).map(|r| p.backoff(r).as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350, 350]);
        assert_eq!(p.backoff(u32::MAX), p.max_backoff);
        let ms = Duration::from_millis;
        assert_eq!(p.give_up(1, ms(0), ms(100)), None);
        assert_eq!(p.give_up(3, ms(500), ms(350)), None);
        assert_eq!(p.give_up(4, ms(0), ms(0)), Some(GiveUp::Attempts));
        assert_eq!(p.give_up(2, ms(900), ms(200)), Some(GiveUp::Time));
    }
}

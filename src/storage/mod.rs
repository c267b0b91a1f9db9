//! Storage: where repository objects live.
//!
//! The engine talks to storage only through the [`Storage`] trait, whatever the backend. Its
//! contract, which every implementation keeps:
//!
//! - Objects are addressed by a [`FileKind`] and a name (lowercase hex for content-addressed
//!   objects). The mapping to paths or keys is the backend's business.
//! - [`Storage::create`] is create-only: it never replaces an existing object. It returns
//!   `Ok(true)` when it wrote the object and `Ok(false)` when an object of that name already
//!   existed (for content-addressed names, the same content). When it returns `Ok`, the object
//!   is durable: a crash or power loss afterwards does not lose it. A failed or interrupted
//!   `create` leaves no object under the name (at most a temporary file that `list` ignores).
//! - [`Storage::read`] returns the whole object, [`Storage::read_range`] a byte range; both fail
//!   with [`crate::Error::NotFound`] when the object does not exist and with an error if fewer
//!   bytes than asked for are available. Verification of the content is the caller's job.
//! - [`Storage::list`] returns every object of a kind with its size, or fails: a partial listing
//!   is never returned as complete.
//! - Errors name the object and the operation; [`crate::Error::is_retryable`] tells transient
//!   faults from permanent ones (disk full and permission denied are permanent).

pub mod cloud;
pub mod limit;
mod local;
pub mod retry;

pub use cloud::{CloudOptions, CloudStorage, CloudUrl};
pub use limit::LimitedStorage;
pub use local::LocalStorage;
pub use retry::{GiveUp, RetryPolicy, RetryingStorage};

use crate::error::Result;

/// The kinds of objects in a repository, each in its own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// The repository's configuration (a single object named `config`).
    Config,
    /// Pack objects holding chunks and directory listings.
    Pack,
    /// Index objects mapping chunks to packs.
    Index,
    /// Snapshot objects.
    Snapshot,
    /// Key objects (encrypted repositories).
    Key,
    /// Lock objects.
    Lock,
}

impl FileKind {
    /// The directory of this kind in the repository layout.
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "",
            FileKind::Pack => "data",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshots",
            FileKind::Key => "keys",
            FileKind::Lock => "locks",
        }
    }

    /// The object's path relative to the repository root, as shown in messages.
    pub fn path(self, name: &str) -> String {
        match self {
            FileKind::Config => name.to_string(),
            FileKind::Pack => {
                let prefix = name.get(..2).unwrap_or("00");
                format!("data/{prefix}/{name}")
            }
            other => format!("{}/{name}", other.dir()),
        }
    }
}

/// `publish` of a storage that has no spool directory: removes `tmp`, and refuses.
fn cannot_publish(
    location: &str,
    kind: FileKind,
    name: &str,
    tmp: &std::path::Path,
) -> Result<bool> {
    let _ = std::fs::remove_file(tmp);
    Err(crate::error::Error::Invalid(format!(
        "{location}: cannot publish {} from a local file",
        kind.path(name)
    )))
}

/// A storage that wraps another one and changes part of what it does (bandwidth limits,
/// retries, fault injection, tests' recorders): it names the storage underneath, states only
/// the methods it changes, and is a [`Storage`] through the blanket implementation below.
///
/// By default the object methods go to the inner storage, and `create_owned` to the wrapper's
/// own `create` (so a wrapper that watches `create` sees every write). The local-file methods
/// (`local_path`, `spool_dir`, `clean_spool`, `publish`) keep [`Storage`]'s defaults, "not a
/// local directory": a wrapper that must see every byte (limits, faults) cannot let packs be
/// written beside it; one that passes them through says so by forwarding them.
///
/// Name it by its path where it is implemented (`impl lifeboat::storage::StorageWrapper for
/// X`) rather than importing it: with both traits in scope, a method call on `X` would be
/// ambiguous (inside the impl, call `Storage::create(self, ..)`).
pub trait StorageWrapper: Send + Sync + std::fmt::Debug {
    /// The storage underneath.
    fn inner(&self) -> &dyn Storage;

    fn location(&self) -> String {
        self.inner().location()
    }
    fn create_layout(&self) -> Result<()> {
        self.inner().create_layout()
    }
    fn has_config(&self) -> Result<bool> {
        self.inner().has_config()
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.inner().read(kind, name)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.inner().read_range(kind, name, offset, len)
    }
    fn create(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<bool> {
        self.inner().create(kind, name, data)
    }
    fn create_owned(&self, kind: FileKind, name: &str, data: bytes::Bytes) -> Result<bool> {
        StorageWrapper::create(self, kind, name, &data)
    }
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        self.inner().list(kind)
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner().remove(kind, name)
    }
    fn modified(&self, kind: FileKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        self.inner().modified(kind, name)
    }
    fn local_path(&self) -> Option<std::path::PathBuf> {
        None
    }
    fn remote(&self) -> bool {
        self.inner().remote()
    }
    fn spool_dir(&self, kind: FileKind) -> Option<std::path::PathBuf> {
        let _ = kind;
        None
    }
    fn clean_spool(&self, kind: FileKind, older_than: std::time::Duration) -> Result<usize> {
        let _ = (kind, older_than);
        Ok(0)
    }
    fn publish(&self, kind: FileKind, name: &str, tmp: &std::path::Path) -> Result<bool> {
        cannot_publish(&StorageWrapper::location(self), kind, name, tmp)
    }
    fn probe_create_only(&self) -> Result<bool> {
        self.inner().probe_create_only()
    }
}

impl<W: StorageWrapper> Storage for W {
    fn location(&self) -> String {
        StorageWrapper::location(self)
    }
    fn create_layout(&self) -> Result<()> {
        StorageWrapper::create_layout(self)
    }
    fn has_config(&self) -> Result<bool> {
        StorageWrapper::has_config(self)
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        StorageWrapper::read(self, kind, name)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        StorageWrapper::read_range(self, kind, name, offset, len)
    }
    fn create(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<bool> {
        StorageWrapper::create(self, kind, name, data)
    }
    fn create_owned(&self, kind: FileKind, name: &str, data: bytes::Bytes) -> Result<bool> {
        StorageWrapper::create_owned(self, kind, name, data)
    }
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        StorageWrapper::list(self, kind)
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        StorageWrapper::remove(self, kind, name)
    }
    fn modified(&self, kind: FileKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        StorageWrapper::modified(self, kind, name)
    }
    fn local_path(&self) -> Option<std::path::PathBuf> {
        StorageWrapper::local_path(self)
    }
    fn remote(&self) -> bool {
        StorageWrapper::remote(self)
    }
    fn spool_dir(&self, kind: FileKind) -> Option<std::path::PathBuf> {
        StorageWrapper::spool_dir(self, kind)
    }
    fn clean_spool(&self, kind: FileKind, older_than: std::time::Duration) -> Result<usize> {
        StorageWrapper::clean_spool(self, kind, older_than)
    }
    fn publish(&self, kind: FileKind, name: &str, tmp: &std::path::Path) -> Result<bool> {
        StorageWrapper::publish(self, kind, name, tmp)
    }
    fn probe_create_only(&self) -> Result<bool> {
        StorageWrapper::probe_create_only(self)
    }
}

/// A repository backend. See the module documentation for the contract.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// A human-readable location (path or URL) for messages.
    fn location(&self) -> String;

    /// Prepares an empty location for a new repository; fails if it is in use.
    fn create_layout(&self) -> Result<()>;

    /// Whether the location holds a repository config object.
    fn has_config(&self) -> Result<bool>;

    /// Reads a whole object.
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;

    /// Reads `len` bytes at `offset` of an object.
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>>;

    /// Writes a new object, create-only and durable on return; `Ok(false)` if it existed.
    fn create(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<bool>;

    /// [`Storage::create`] of data the caller hands over: a cloud store uploads it without a
    /// copy (a pack is 16 MiB; a copy per upload in flight adds up), and retries reuse it.
    fn create_owned(&self, kind: FileKind, name: &str, data: bytes::Bytes) -> Result<bool> {
        self.create(kind, name, &data)
    }

    /// Every object of a kind, with its size in bytes.
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>>;

    /// Removes an object; removing a missing object is not an error.
    fn remove(&self, kind: FileKind, name: &str) -> Result<()>;

    /// When the object was last written, by the storage's own clock (the server's, for cloud
    /// storage), so that times of objects written by different machines compare even when
    /// their clocks disagree. `Ok(None)` when the backend cannot tell; `NotFound` when the
    /// object does not exist.
    fn modified(&self, kind: FileKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        let _ = (kind, name);
        Ok(None)
    }

    /// The local directory of the repository, if it is on a local filesystem.
    fn local_path(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Whether every request is a network round trip (cloud storage): reads are then bound by
    /// latency more than by CPU, and more of them should be in flight at once
    /// ([`default_readers`]).
    fn remote(&self) -> bool {
        false
    }

    /// A directory on the repository's own filesystem where an object of `kind` may be written
    /// as a temporary file (named `.tmp-*`) while it is built, then made an object with
    /// [`Storage::publish`], instead of being held in memory. `None` (the default) when the
    /// storage cannot do that; wrappers that must see every byte (limits, fault injection)
    /// leave it `None`.
    fn spool_dir(&self, kind: FileKind) -> Option<std::path::PathBuf> {
        let _ = kind;
        None
    }

    /// Removes temporary files of [`Storage::spool_dir`] last written more than `older_than`
    /// ago (left by killed processes); returns how many. Only safe while no backup can be
    /// writing one that old (prune's exclusive lock, with a bound far past the lock's).
    fn clean_spool(&self, kind: FileKind, older_than: std::time::Duration) -> Result<usize> {
        let _ = (kind, older_than);
        Ok(0)
    }

    /// Makes `tmp`, a complete and synced file in [`Storage::spool_dir`], the object `name`:
    /// create-only, durable when it returns; `tmp` is gone afterwards in every case. Returns
    /// false if the object already existed (then nothing is replaced).
    fn publish(&self, kind: FileKind, name: &str, tmp: &std::path::Path) -> Result<bool> {
        cannot_publish(&self.location(), kind, name, tmp)
    }

    /// Whether the store really refuses a second `create` of the same name (some
    /// S3-compatible stores accept `If-None-Match` and ignore it). May write and remove a
    /// probe object.
    fn probe_create_only(&self) -> Result<bool> {
        Ok(true)
    }
}

/// How long a request to storage is retried by default before the storage counts as
/// unreachable ([`crate::Error::Unreachable`]): outages of a few minutes are waited out.
pub const DEFAULT_RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The storage option (`--option KEY=VALUE`, `options` of a repository in the daemon's config)
/// that sets how long requests are retried; lifeboat's own, not passed to the cloud client.
pub const RETRY_TIMEOUT_OPTION: &str = "retry_timeout";

/// Parses a `retry_timeout` value ("90s", "10m", "1h").
pub fn parse_retry_timeout(value: &str) -> std::result::Result<std::time::Duration, String> {
    crate::units::parse_duration(value)
        .map_err(|e| format!("storage option {RETRY_TIMEOUT_OPTION}: {e}"))
}

/// How to reach a repository's storage.
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    /// Cloud client settings (endpoint, region, ...; see [`CloudOptions`]).
    pub cloud: CloudOptions,
    /// Upload limit in bytes per second.
    pub limit_upload: Option<u64>,
    /// Download limit in bytes per second.
    pub limit_download: Option<u64>,
    /// Retries of transient faults.
    pub retry: RetryPolicy,
}

impl StorageOptions {
    /// Applies lifeboat's own keys among `cloud.options` and removes them (the rest are the
    /// cloud client's): `retry_timeout` bounds both the client's retries of each request and
    /// [`RetryingStorage`]'s.
    pub fn take_own_options(&mut self) -> Result<()> {
        if let Some(v) = self.cloud.options.remove(RETRY_TIMEOUT_OPTION) {
            let budget = parse_retry_timeout(&v).map_err(crate::error::Error::Invalid)?;
            self.cloud.retry_timeout = budget;
            self.retry.total = budget;
        }
        Ok(())
    }
}

/// Opens the storage for a repository location: a path, `file:///path`, `s3://bucket/prefix`,
/// `gs://bucket/prefix` or `az://container/prefix`, with retries and limits around it. The
/// options' own keys (`retry_timeout`) apply to every kind of location.
pub fn open(location: &str, opts: &StorageOptions) -> Result<std::sync::Arc<dyn Storage>> {
    use std::sync::Arc;
    let mut own = opts.clone();
    own.take_own_options()?;
    let opts = &own;
    let backend: Arc<dyn Storage> = match CloudUrl::parse(location)? {
        Some(url) => Arc::new(CloudStorage::new(&url, location, &opts.cloud)?),
        None => {
            let path = location.strip_prefix("file://").unwrap_or(location);
            Arc::new(LocalStorage::new(path))
        }
    };
    let mut storage: Arc<dyn Storage> = Arc::new(RetryingStorage::new(backend, opts.retry.clone()));
    if opts.limit_upload.is_some() || opts.limit_download.is_some() {
        storage = Arc::new(LimitedStorage::new(
            storage,
            opts.limit_upload,
            opts.limit_download,
        ));
    }
    Ok(storage)
}

/// Reads in flight at once from cloud storage by default: a distant store answers each
/// request after tens of milliseconds and one connection carries far less than the CPU can
/// verify, so more requests than cores overlap the waiting.
pub const REMOTE_READERS: usize = 8;

/// The most reads in flight one can ask for (`--download-concurrency`, `download_concurrency`).
pub const MAX_READERS: usize = 256;

/// How many pack reads `restore` and `check --read-data` keep in flight when not told: one per
/// core (at least two) for a local repository, where reading costs CPU and the page cache or
/// the disk answers at once; [`REMOTE_READERS`] (or one per core, if more) for cloud storage.
/// Each read in flight holds its bytes (up to 16 MiB) in memory.
pub fn default_readers(storage: &dyn Storage) -> usize {
    let cores = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    if storage.remote() {
        cores.max(REMOTE_READERS)
    } else {
        cores
    }
}

/// The reads in flight for `asked` (0: [`default_readers`]).
pub fn readers(storage: &dyn Storage, asked: usize) -> usize {
    if asked == 0 {
        default_readers(storage)
    } else {
        asked
    }
}

/// Opens a location with default options.
pub fn open_location(location: &str) -> Result<std::sync::Arc<dyn Storage>> {
    open(location, &StorageOptions::default())
}

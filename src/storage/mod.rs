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
pub mod faulty;
pub mod limit;
mod local;
pub mod retry;

pub use cloud::{CloudOptions, CloudStorage, CloudUrl};
pub use limit::LimitedStorage;
pub use local::LocalStorage;
pub use retry::{RetryPolicy, RetryingStorage};

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
        let _ = std::fs::remove_file(tmp);
        Err(crate::error::Error::Invalid(format!(
            "{}: cannot publish {} from a local file",
            self.location(),
            kind.path(name)
        )))
    }

    /// Whether the store really refuses a second `create` of the same name (some
    /// S3-compatible stores accept `If-None-Match` and ignore it). May write and remove a
    /// probe object.
    fn probe_create_only(&self) -> Result<bool> {
        Ok(true)
    }
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

/// Opens the storage for a repository location: a path, `file:///path`, `s3://bucket/prefix`,
/// `gs://bucket/prefix` or `az://container/prefix`, with retries and limits around it.
pub fn open(location: &str, opts: &StorageOptions) -> Result<std::sync::Arc<dyn Storage>> {
    use std::sync::Arc;
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

/// Opens a location with default options.
pub fn open_location(location: &str) -> Result<std::sync::Arc<dyn Storage>> {
    open(location, &StorageOptions::default())
}

//! `repair`: bringing a damaged repository back to a state `check` passes, losing nothing that
//! is still intact.
//!
//! - [`index::repair_index`] rebuilds the index from the packs in storage (their headers, or
//!   the old index where it agrees with storage), leaves out packs that are gone, and copies the
//!   intact chunks of damaged packs into new packs.
//! - [`snapshots::repair_snapshots`] writes a new snapshot for each damaged one, without the
//!   files whose data is missing or damaged and with damaged directory listings replaced by
//!   empty directories; every intact file is kept exactly (same chunks, same metadata).
//!
//! The usual order is `repair index` first (so that the index says what storage really holds),
//! then `repair snapshots`. Neither deletes data: damaged packs are left in storage, unindexed,
//! for `prune` to remove; original snapshots stay until `repair snapshots --forget` or
//! `forget` removes them.

pub mod index;
pub mod snapshots;

use serde::Serialize;

pub use index::{repair_index, RepairIndexOptions, RepairIndexReport};
pub use snapshots::{repair_snapshots, RepairSnapshotsOptions, RepairSnapshotsReport};

/// A repository object and what is wrong with it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ObjectProblem {
    /// The object's path in the repository (`index/…`, `data/…`, `snapshots/…`).
    pub object: String,
    pub error: String,
}

/// A storage for tests that fails reads of one object and leaves one out of pack listings, and
/// a small repository backed up through it.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;
    use std::sync::Arc;

    use crate::error::{Error, Result};
    use crate::id::SnapshotId;
    use crate::repo::{Credentials, InitOptions, KdfSetting, Repository};
    use crate::storage::{FileKind, LocalStorage, Storage};

    /// Wraps a storage: reads of `fail_reads` fail as a reset connection would, and `hide`
    /// is left out of pack listings.
    #[derive(Debug)]
    pub struct Flaky {
        pub inner: Arc<dyn Storage>,
        pub fail_reads: Option<String>,
        pub hide: Option<String>,
    }

    impl Flaky {
        fn fault(&self, kind: FileKind, name: &str) -> Result<()> {
            if self.fail_reads.as_deref() == Some(name) {
                return Err(Error::Storage {
                    op: "read",
                    name: kind.path(name),
                    cause: std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"),
                });
            }
            Ok(())
        }
    }

    impl crate::storage::StorageWrapper for Flaky {
        fn inner(&self) -> &dyn Storage {
            &*self.inner
        }
        fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
            self.fault(kind, name)?;
            self.inner.read(kind, name)
        }
        fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
            self.fault(kind, name)?;
            self.inner.read_range(kind, name, offset, len)
        }
        fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
            let mut all = self.inner.list(kind)?;
            if kind == FileKind::Pack {
                all.retain(|(n, _)| Some(n) != self.hide.as_ref());
            }
            Ok(all)
        }
    }

    pub const PASSWORD: &[u8] = b"pw";

    /// A repository at `dir/repo` with one snapshot of a few small files under `dir/src`.
    pub fn repository(dir: &Path) -> (Repository, SnapshotId) {
        let opts = InitOptions {
            kdf: KdfSetting::CHEAPEST,
            ..InitOptions::default()
        };
        let storage = Arc::new(LocalStorage::new(dir.join("repo")));
        let repo = Repository::init(storage, &opts, Some(PASSWORD)).expect("init");
        let src = dir.join("src");
        for (name, len) in [("a", 3000usize), ("b", 5000), ("sub/c", 700)] {
            let p = src.join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            let content: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            std::fs::write(&p, content).expect("write");
        }
        let opts = crate::ops::backup::BackupOptions {
            paths: vec![src],
            host: "test".into(),
            ..Default::default()
        };
        let done = crate::ops::backup::backup(&repo, &opts, Arc::default()).expect("backup");
        (repo, done.id)
    }

    /// The same repository opened through `flaky`.
    pub fn reopen(flaky: Flaky) -> Repository {
        Repository::open(Arc::new(flaky), || {
            Ok(Credentials::Password(zeroize::Zeroizing::new(
                PASSWORD.to_vec(),
            )))
        })
        .expect("open")
    }

    /// The names of the objects of a kind.
    pub fn names(repo: &Repository, kind: FileKind) -> Vec<String> {
        repo.storage()
            .list(kind)
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }
}

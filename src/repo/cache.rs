//! The local metadata cache of a cloud repository.
//!
//! Index objects, snapshot objects and packs of directory listings are immutable and named by
//! the hash of their bytes, so a local copy can be trusted exactly as far as it verifies: every
//! cached object is checked against its name when it is read, and a copy that does not match is
//! deleted and fetched again. The cache therefore never changes what a command sees, only how
//! much it downloads; it can be deleted at any time. Layout: `<dir>/<repository id>/<kind>/<id>`.
//! Writes go to a temporary name and are renamed into place, so a crash leaves no partial file
//! under a real name.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::storage::FileKind;

/// A cache directory for one repository.
#[derive(Debug)]
pub struct MetadataCache {
    dir: PathBuf,
}

/// Only immutable objects that are read again are cached (never locks, keys or the config).
fn cached(kind: FileKind) -> bool {
    matches!(kind, FileKind::Pack | FileKind::Index | FileKind::Snapshot)
}

fn sub(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Pack => "trees",
        FileKind::Index => "index",
        FileKind::Snapshot => "snapshots",
        _ => "other",
    }
}

impl MetadataCache {
    /// The cache of repository `repo_id` under `base`; `None` if it cannot be created (the
    /// repository then works without a cache).
    pub fn open(base: &Path, repo_id: &str) -> Option<Self> {
        let dir = base.join(repo_id);
        for kind in [FileKind::Pack, FileKind::Index, FileKind::Snapshot] {
            if let Err(e) = fs::create_dir_all(dir.join(sub(kind))) {
                tracing::warn!(dir = %dir.display(), error = %e, "metadata cache disabled");
                return None;
            }
        }
        // A tag that tells backup tools not to back the cache up.
        let tag = base.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n# Lifeboat's metadata cache; see https://bford.info/cachedir/\n",
            );
        }
        Some(MetadataCache { dir })
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        self.dir.join(sub(kind)).join(name)
    }

    /// The cached object, if present and intact.
    pub fn get(&self, kind: FileKind, name: &str) -> Option<Vec<u8>> {
        if !cached(kind) {
            return None;
        }
        let p = self.path(kind, name);
        let data = fs::read(&p).ok()?;
        if blake3::hash(&data).to_hex().as_str() == name {
            Some(data)
        } else {
            tracing::warn!(file = %p.display(), "damaged cache entry removed");
            let _ = fs::remove_file(&p);
            None
        }
    }

    /// Stores a copy (best effort: a cache that cannot be written is only slower).
    pub fn put(&self, kind: FileKind, name: &str, data: &[u8]) {
        if !cached(kind) {
            return;
        }
        let p = self.path(kind, name);
        if p.exists() {
            return;
        }
        let tmp = p.with_file_name(format!(".tmp-{name}-{:08x}", rand::random::<u32>()));
        let written = fs::File::create(&tmp).and_then(|mut f| f.write_all(data));
        if written.is_err() || fs::rename(&tmp, &p).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Removes cached objects of `kind` that are not in `keep` (deleted from the repository).
    pub fn retain(&self, kind: FileKind, keep: &std::collections::HashSet<String>) {
        let Ok(entries) = fs::read_dir(self.dir.join(sub(kind))) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_verified_and_damaged_ones_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = MetadataCache::open(dir.path(), "repo").expect("cache");
        let data = b"an index object".to_vec();
        let name = blake3::hash(&data).to_hex().to_string();
        assert!(c.get(FileKind::Index, &name).is_none());
        c.put(FileKind::Index, &name, &data);
        assert_eq!(c.get(FileKind::Index, &name), Some(data.clone()));
        fs::write(c.path(FileKind::Index, &name), b"tampered").expect("write");
        assert!(
            c.get(FileKind::Index, &name).is_none(),
            "damaged copy refused"
        );
        assert!(!c.path(FileKind::Index, &name).exists(), "and removed");
        c.put(FileKind::Index, &name, &data);
        c.retain(FileKind::Index, &Default::default());
        assert!(c.get(FileKind::Index, &name).is_none());
    }
}

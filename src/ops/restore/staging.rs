//! Staging areas: where a restore writes and verifies everything before it is placed.
//!
//! A staged entry moves into the target with a rename, and rename(2) works only within one
//! mount (`EXDEV` across mounts, even two mounts of the same file system). A target can hold
//! mount points (restoring `/` of a server with a separate `/home` or `/var`), so there is one
//! staging directory `.lifeboat-restore-*` at the top of the target and one at the top of every
//! mount point inside it that the restore writes into. Each mirrors the snapshot's tree from the
//! target's top down (`<staging>/<rel>`); an entry is staged in the area of the deepest mount
//! point above it, which is on the same mount as the entry's place in the target.
//!
//! A restore holds an exclusive `flock` on each of its staging directories while it runs. The
//! next restore into the same target removes every staging directory nobody holds (the one a
//! killed restore left: SIGKILL, power loss, the OOM killer) before it checks for free space,
//! and says so; one that a live restore holds is left alone.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Prefix of every staging directory's name.
pub const STAGING_PREFIX: &str = ".lifeboat-restore-";

/// The staging areas of one restore.
#[derive(Debug)]
pub(super) struct Staging {
    /// The area at the top of the target.
    root: PathBuf,
    /// Mount points inside the target (relative to it), deepest first, each with its area.
    mounts: Vec<(PathBuf, PathBuf)>,
    /// The locks that mark the areas as in use.
    _locks: Vec<Flock<File>>,
}

impl Staging {
    /// Makes the staging directory at the top of `target` and one in each of `mounts` (paths
    /// relative to the target, of directories the target has). Nothing is left behind on error.
    pub(super) fn make(target: &Path, mounts: &[PathBuf]) -> Result<Self> {
        let (root, lock) = make_dir(target)?;
        let mut staging = Staging {
            root,
            mounts: Vec::new(),
            _locks: vec![lock],
        };
        for m in mounts {
            let (area, lock) = match make_dir(&target.join(m)) {
                Ok(a) => a,
                Err(e) => {
                    staging.remove();
                    return Err(e);
                }
            };
            staging._locks.push(lock);
            staging.mounts.push((m.clone(), area.clone()));
            // The mirrored path down to the mount point, so entries beneath it have parents.
            let top = area.join(m);
            if let Err(e) = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&top)
            {
                staging.remove();
                return Err(Error::io("create staging directory", &top, e));
            }
        }
        staging
            .mounts
            .sort_by_key(|(m, _)| std::cmp::Reverse(m.components().count()));
        Ok(staging)
    }

    /// The staging area an entry at `rel` (relative to the target) is staged in.
    pub(super) fn area(&self, rel: &Path) -> &Path {
        self.mounts
            .iter()
            .find(|(m, _)| rel != m.as_path() && rel.starts_with(m))
            .map_or(&self.root, |(_, area)| area)
    }

    /// Where the entry at `rel` is staged.
    pub(super) fn path(&self, rel: &Path) -> PathBuf {
        self.area(rel).join(rel)
    }

    /// Every staging directory.
    pub(super) fn dirs(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.root.as_path()).chain(self.mounts.iter().map(|(_, a)| a.as_path()))
    }

    /// Removes every staging directory with what is in it.
    pub(super) fn remove(&self) {
        for d in self.dirs() {
            let _ = super::at::remove_tree(d);
        }
    }
}

/// Makes a new staging directory at the top of `dir`, locked.
fn make_dir(dir: &Path) -> Result<(PathBuf, Flock<File>)> {
    let p = dir.join(format!("{STAGING_PREFIX}{:016x}", rand::random::<u64>()));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&p)
        .map_err(|e| Error::io("create staging directory in", dir, e))?;
    let lock = File::open(&p)
        .map_err(|e| Error::io("open staging directory", &p, e))
        .and_then(|f| {
            Flock::lock(f, FlockArg::LockExclusiveNonblock)
                .map_err(|(_, e)| Error::io("lock staging directory", &p, io::Error::from(e)))
        });
    match lock {
        Ok(lock) => Ok((p, lock)),
        Err(e) => {
            let _ = fs::remove_dir(&p);
            Err(e)
        }
    }
}

/// Staging directories at the top of `dir` that no running restore holds: those of restores
/// that were killed. Each is removed; returns them with the bytes they held. Those a running
/// restore holds are returned in `busy`.
pub(super) fn remove_stale(dir: &Path, busy: &mut Vec<PathBuf>) -> Vec<(PathBuf, u64)> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX)
            || !entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let p = entry.path();
        // Opened without following a symlink put in its place (file_type() is an lstat).
        let Ok(f) = File::open(&p) else { continue };
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(_held_while_removing) => {
                let bytes = disk_usage(&p);
                if super::at::remove_tree(&p).is_ok() {
                    removed.push((p, bytes));
                }
            }
            Err(_) => busy.push(p),
        }
    }
    removed
}

/// Bytes of the files beneath `dir` (what removing it frees, roughly).
fn disk_usage(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .sum()
}

/// The id of the mount `path` is on (itself, not a symlink's target): `statx`'s mount id, or
/// the device number where the kernel has no mount ids (before Linux 5.8).
pub(super) fn mount_of(path: &Path) -> io::Result<u64> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let st = statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::MNT_ID | StatxFlags::TYPE,
    )?;
    if StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::MNT_ID) {
        Ok(st.stx_mnt_id)
    } else {
        Ok(rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_staged_in_the_area_of_the_deepest_mount_above_them() {
        let t = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(t.path().join("home/user")).expect("mkdir");
        fs::create_dir_all(t.path().join("var")).expect("mkdir");
        let mounts = [PathBuf::from("home"), PathBuf::from("home/user")];
        let s = Staging::make(t.path(), &mounts).expect("make");
        let root = s.area(Path::new("etc/passwd")).to_path_buf();
        assert_eq!(root.parent(), Some(t.path()));
        // A mount point itself is an entry of the area above it.
        assert_eq!(s.area(Path::new("home")), root);
        let home = s.area(Path::new("home/a")).to_path_buf();
        assert_eq!(home.parent(), Some(t.path().join("home").as_path()));
        let user = s.area(Path::new("home/user/b")).to_path_buf();
        assert_eq!(user.parent(), Some(t.path().join("home/user").as_path()));
        assert_eq!(s.area(Path::new("home/username")), home);
        // Each area mirrors the path down to its mount point.
        assert!(home.join("home").is_dir() && user.join("home/user").is_dir());
        assert_eq!(s.dirs().count(), 3);
        s.remove();
        assert!(!root.exists() && !home.exists() && !user.exists());
    }

    #[test]
    fn only_staging_areas_nobody_holds_are_removed() {
        let t = tempfile::tempdir().expect("tempdir");
        let live = Staging::make(t.path(), &[]).expect("make");
        let dead = t.path().join(format!("{STAGING_PREFIX}0123456789abcdef"));
        fs::create_dir_all(dead.join("etc")).expect("mkdir");
        fs::write(dead.join("etc/passwd"), vec![1u8; 10_000]).expect("write");
        fs::create_dir(t.path().join("unrelated")).expect("mkdir");
        let mut busy = Vec::new();
        let removed = remove_stale(t.path(), &mut busy);
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].0, dead);
        assert!(removed[0].1 >= 10_000, "{removed:?}");
        assert_eq!(busy, vec![live.root.clone()]);
        assert!(live.root.exists() && t.path().join("unrelated").exists() && !dead.exists());
        live.remove();
    }
}

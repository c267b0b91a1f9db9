//! Placing: moving the verified staged tree into the target.
//!
//! The staging directory holds the snapshot's tree as it will be in the target: its
//! directories (made before any data is read), its files (written by [`super::stage`], their
//! metadata set), and, made here once everything is verified, its hard links, symlinks and
//! special files. Placing walks the plan in order and moves each entry with one create-only
//! rename (`RENAME_NOREPLACE`); a directory that does not exist in the target moves with
//! everything beneath it, so restoring into an empty target is a handful of renames. Where the
//! target has the directory already, its entries are moved one by one (and with `--overwrite`
//! a file, symlink or special file in the target is replaced by a rename over it; a directory
//! never is). Directory metadata comes last, deepest first.
//!
//! Nothing found in the target is followed: a rename replaces or refuses the name itself, and
//! a name that exists is inspected with `lstat`. If placing fails, what was placed is removed
//! again, newest first.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};

use crate::error::{Error, Result};
use crate::repo::NodeKind;

use super::plan::{EntryMeta, Plan};

/// Makes the staging tree's directories (mode 0700 until placed), parents first, except
/// those that cannot be restored. A name that exists already (a listing naming it twice)
/// stops the restore.
pub(super) fn make_staged_dirs(plan: &Plan, staging: &Path) -> Result<()> {
    let broken: HashSet<usize> = plan.broken.iter().map(|(i, _)| *i).collect();
    for (i, e) in plan.entries.iter().enumerate().skip(1) {
        if e.node.kind == NodeKind::Dir && !broken.contains(&i) {
            let p = staging.join(&e.rel);
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&p)
                .map_err(|err| Error::io("create staged directory", &p, err))?;
        }
    }
    Ok(())
}

/// What became of a staged directory.
enum DirMove {
    /// It moved into place with everything beneath it.
    Moved,
    /// It was made in the target (empty); its entries move one by one.
    Made,
    /// The target has it already; its entries move one by one.
    Existing,
}

/// What placing put into the target, for roll-back.
enum Placed {
    /// A file, link or special file.
    Entry(PathBuf),
    /// A directory made in the target (empty when made).
    Dir(PathBuf),
    /// A directory moved in with everything beneath it.
    Tree(PathBuf),
}

/// Moves staged entries into place and applies directory metadata.
pub(super) struct Placer<'a> {
    pub target: &'a Path,
    pub staging: &'a Path,
    pub overwrite: bool,
    pub is_root: bool,
    /// What was placed, in order, for roll-back.
    created: Vec<Placed>,
    pub warnings: Vec<String>,
    /// Time spent setting directory metadata.
    pub dirs_time: Duration,
    /// Device nodes that could not be made (not root): left out.
    unstaged: HashSet<usize>,
}

impl<'a> Placer<'a> {
    pub(super) fn new(target: &'a Path, staging: &'a Path, overwrite: bool, is_root: bool) -> Self {
        Placer {
            target,
            staging,
            overwrite,
            is_root,
            created: Vec::new(),
            warnings: Vec::new(),
            dirs_time: Duration::ZERO,
            unstaged: HashSet::new(),
        }
    }

    pub(super) fn place_all(&mut self, plan: &Plan, broken: &HashMap<usize, String>) -> Result<()> {
        self.complete_staging(plan, broken)?;
        // Entries beneath a broken directory are skipped with it; entries beneath a directory
        // moved whole moved with it.
        let mut skipped_dirs: Vec<&Path> = Vec::new();
        let mut moved: Option<&Path> = None;
        // Directories whose metadata is set at the end: those this restore made.
        let mut dirs = Vec::new();
        for (i, e) in plan.entries.iter().enumerate().skip(1) {
            crate::interrupt::check()?;
            if let Some(m) = moved {
                if e.rel.starts_with(m) {
                    if e.node.kind == NodeKind::Dir && !broken.contains_key(&i) {
                        dirs.push((self.target.join(&e.rel), &e.node));
                    }
                    continue;
                }
                moved = None;
            }
            if skipped_dirs.iter().any(|d| e.rel.starts_with(d)) {
                continue;
            }
            if broken.contains_key(&i) {
                if e.node.kind == NodeKind::Dir {
                    skipped_dirs.push(&e.rel);
                }
                continue;
            }
            let staged = self.staging.join(&e.rel);
            let path = self.target.join(&e.rel);
            match e.node.kind {
                NodeKind::Dir => match self.move_dir(&staged, &path)? {
                    DirMove::Moved => {
                        moved = Some(&e.rel);
                        dirs.push((path, &e.node));
                    }
                    DirMove::Made => dirs.push((path, &e.node)),
                    DirMove::Existing if self.overwrite => dirs.push((path, &e.node)),
                    DirMove::Existing => {}
                },
                // A socket belongs to the process that made it; there is nothing to restore.
                NodeKind::Socket => {}
                // A device node that only root may make (a warning says so).
                _ if self.unstaged.contains(&i) => {}
                _ => self.move_into_place(&staged, path)?,
            }
        }
        // Directory metadata last, deepest first, so adding entries does not change mtimes.
        let started = Instant::now();
        for (path, node) in dirs.iter().rev() {
            self.apply_metadata(path, path, node);
        }
        self.dirs_time += started.elapsed();
        Ok(())
    }

    /// Completes the staged tree once everything is verified: removes the staged copies of
    /// files that cannot be restored (`--allow-partial`), and makes hard links, symlinks and
    /// special files with their metadata.
    fn complete_staging(&mut self, plan: &Plan, broken: &HashMap<usize, String>) -> Result<()> {
        for (&i, _) in broken.iter() {
            let e = &plan.entries[i];
            if e.node.kind == NodeKind::File && e.link_to.is_none() {
                let p = self.staging.join(&e.rel);
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(Error::io("remove damaged staged file", &p, err)),
                }
            }
        }
        for (i, e) in plan.entries.iter().enumerate().skip(1) {
            crate::interrupt::check()?;
            if broken.contains_key(&i) {
                continue;
            }
            let staged = self.staging.join(&e.rel);
            let path = self.target.join(&e.rel);
            match e.node.kind {
                NodeKind::File => {
                    if let Some(first) = e.link_to {
                        let original = self.staging.join(&plan.entries[first as usize].rel);
                        fs::hard_link(&original, &staged)
                            .map_err(|err| Error::io("create hard link", &path, err))?;
                    }
                }
                NodeKind::Symlink => {
                    let target = e.node.link_target.as_deref().unwrap_or_default();
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &staged)
                        .map_err(|err| Error::io("create symlink", &path, err))?;
                    self.apply_metadata(&staged, &path, &e.node);
                }
                NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
                    let (kind, dev) = match e.node.kind {
                        NodeKind::Fifo => (nix::sys::stat::SFlag::S_IFIFO, 0),
                        NodeKind::CharDevice => (nix::sys::stat::SFlag::S_IFCHR, e.node.rdev),
                        _ => (nix::sys::stat::SFlag::S_IFBLK, e.node.rdev),
                    };
                    let perm = nix::sys::stat::Mode::from_bits_truncate(e.node.mode & 0o777);
                    match nix::sys::stat::mknod(&staged, kind, perm, dev) {
                        Ok(()) => self.apply_metadata(&staged, &path, &e.node),
                        Err(Errno::EPERM) => {
                            self.unstaged.insert(i);
                            self.warnings.push(format!(
                                "{}: device nodes can only be restored by root; skipped",
                                path.display()
                            ))
                        }
                        Err(err) => return Err(Error::io("create", &path, io::Error::from(err))),
                    }
                }
                NodeKind::Dir | NodeKind::Socket => {}
            }
        }
        Ok(())
    }

    /// Moves a staged directory into place with everything beneath it, unless the target has
    /// that directory already.
    fn move_dir(&mut self, staged: &Path, path: &Path) -> Result<DirMove> {
        match renameat2(None, staged, None, path, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => {
                self.created.push(Placed::Tree(path.to_path_buf()));
                Ok(DirMove::Moved)
            }
            Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => {
                let m = fs::symlink_metadata(path).map_err(|e| Error::io("inspect", path, e))?;
                let ft = m.file_type();
                if ft.is_dir() {
                    Ok(DirMove::Existing)
                } else if self.overwrite && !ft.is_symlink() {
                    // --overwrite: a file where the snapshot has a directory is replaced.
                    fs::remove_file(path)
                        .map_err(|e| Error::io("remove (--overwrite)", path, e))?;
                    self.move_dir(staged, path)
                } else {
                    Err(Error::Invalid(format!(
                        "{} appeared during the restore and is not a directory; restore will not write through it",
                        path.display()
                    )))
                }
            }
            // No create-only rename on this filesystem: make the directory (create-only as
            // well) and move its entries one by one.
            Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
                match fs::DirBuilder::new().mode(0o700).create(path) {
                    Ok(()) => {
                        self.created.push(Placed::Dir(path.to_path_buf()));
                        Ok(DirMove::Made)
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let m = fs::symlink_metadata(path)
                            .map_err(|e| Error::io("inspect", path, e))?;
                        if m.file_type().is_dir() {
                            Ok(DirMove::Existing)
                        } else {
                            Err(Error::Invalid(format!(
                            "{} appeared during the restore and is not a directory; restore will not write through it",
                            path.display()
                        )))
                        }
                    }
                    Err(e) => Err(Error::io("create directory", path, e)),
                }
            }
            Err(e) => Err(Error::io("move into place", path, io::Error::from(e))),
        }
    }

    fn move_into_place(&mut self, staged: &Path, path: PathBuf) -> Result<()> {
        if self.overwrite {
            // rename(2) replaces a file or symlink at `path` itself, never what a symlink points to.
            fs::rename(staged, &path).map_err(|e| Error::io("move into place", &path, e))?;
        } else {
            match renameat2(None, staged, None, &path, RenameFlags::RENAME_NOREPLACE) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    return Err(Error::Invalid(format!(
                        "{} appeared during the restore; not replaced (use --overwrite)",
                        path.display()
                    )))
                }
                Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
                    fs::hard_link(staged, &path)
                        .map_err(|e| Error::io("move into place", &path, e))?;
                    let _ = fs::remove_file(staged);
                }
                Err(e) => return Err(Error::io("move into place", &path, io::Error::from(e))),
            }
        }
        self.created.push(Placed::Entry(path));
        Ok(())
    }

    /// Ownership (as root), mode, xattrs and times on `path`; `shown` names it in warnings.
    fn apply_metadata(&mut self, path: &Path, shown: &Path, node: &EntryMeta) {
        let symlink = node.kind == NodeKind::Symlink;
        if self.is_root {
            if let Err(e) = std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)) {
                self.warnings
                    .push(format!("{}: cannot set owner: {e}", shown.display()));
            }
        }
        if !symlink {
            if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(node.mode)) {
                self.warnings
                    .push(format!("{}: cannot set mode: {e}", shown.display()));
            }
        }
        for x in &node.xattrs {
            if let Err(e) = xattr::set(path, std::ffi::OsStr::from_bytes(&x.name), &x.value) {
                self.warnings.push(format!(
                    "{}: cannot set extended attribute {}: {e}",
                    shown.display(),
                    String::from_utf8_lossy(&x.name)
                ));
            }
        }
        let atime = filetime::FileTime::from_unix_time(node.atime.sec, node.atime.nsec);
        let mtime = filetime::FileTime::from_unix_time(node.mtime.sec, node.mtime.nsec);
        if let Err(e) = filetime::set_symlink_file_times(path, atime, mtime) {
            self.warnings
                .push(format!("{}: cannot set times: {e}", shown.display()));
        }
    }

    /// Removes what was placed, newest first.
    pub(super) fn roll_back(&mut self) {
        for p in self.created.iter().rev() {
            let _ = match p {
                Placed::Entry(p) => fs::remove_file(p),
                Placed::Dir(p) => fs::remove_dir(p),
                // Everything beneath came from the staging tree (remove_dir_all does not
                // follow symlinks).
                Placed::Tree(p) => fs::remove_dir_all(p),
            };
        }
        self.created.clear();
    }
}

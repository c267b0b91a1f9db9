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
//! Nothing found in the target is followed: every entry is reached through the descriptors of
//! the directories above it, each opened without following a symlink ([`super::at`]), so a
//! symlink found in the target — or swapped in while the restore runs — is never written
//! through, and paths of any length are placed; a rename replaces or refuses the name itself,
//! a name that exists is inspected with `lstat`, and directory metadata is set through the
//! directory's own descriptor.
//!
//! An entry that `--overwrite` replaces is exchanged with its staged copy in one atomic
//! `RENAME_EXCHANGE`: at every moment its path holds either its old version or the
//! snapshot's, and the old version sits in the staging area until the whole placement has
//! succeeded (removing the staging areas then drops it). If placing fails or is interrupted,
//! everything placed is put back, newest first: replaced entries get their old version back
//! (a rename over the new one), new entries and directories are removed. Killed outright
//! (SIGKILL, power loss) while placing, every path of the target holds its old version or the
//! snapshot's, never neither; the old versions of replaced ones are left in the staging area.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};
use rustix::fs::{Mode, OFlags};

use crate::error::{Error, Result};
use crate::repo::NodeKind;

use super::at::DirCursor;
use super::plan::{EntryMeta, Plan};
use super::staging::Staging;

/// Makes the staging tree's directories (mode 0700 until placed), parents first, except
/// those that cannot be restored. A name that exists already (a listing naming it twice)
/// stops the restore.
pub(super) fn make_staged_dirs(plan: &Plan, staging: &Staging) -> Result<()> {
    let broken: HashSet<usize> = plan.broken.iter().map(|b| b.pos).collect();
    let mut cursors = StagingCursors::new(staging);
    for (i, e) in plan.entries.iter().enumerate().skip(1) {
        if e.node.kind == NodeKind::Dir && !broken.contains(&i) {
            let cur = cursors.for_rel(&e.rel)?;
            let (dir, name) = match cur.dir(e.rel.parent().unwrap_or(Path::new(""))) {
                Ok(dir) => (dir, e.rel.file_name().unwrap_or_default()),
                Err(err) => return Err(cur.error(&e.rel, err)),
            };
            if let Err(err) = rustix::fs::mkdirat(dir, name, rustix::fs::Mode::from_raw_mode(0o700))
            {
                let shown = cur.shown(&e.rel);
                return Err(Error::io("create staged directory", shown, err.into()));
            }
        }
    }
    Ok(())
}

/// One cursor per staging area.
pub(super) struct StagingCursors<'a> {
    staging: &'a Staging,
    cursors: HashMap<PathBuf, DirCursor>,
}

impl<'a> StagingCursors<'a> {
    pub(super) fn new(staging: &'a Staging) -> Self {
        StagingCursors {
            staging,
            cursors: HashMap::new(),
        }
    }

    /// The cursor of the staging area `rel` is staged in.
    pub(super) fn for_rel(&mut self, rel: &Path) -> Result<&mut DirCursor> {
        let area = self.staging.area(rel);
        if !self.cursors.contains_key(area) {
            let cur = DirCursor::open(area)?;
            self.cursors.insert(area.to_path_buf(), cur);
        }
        // Inserted just above if it was missing.
        self.cursors.get_mut(area).ok_or_else(|| {
            Error::Invalid(format!("no staging area for {}", crate::display::path(rel)))
        })
    }

    /// A path that reaches the staged copy of `rel` (see [`DirCursor::at`]).
    pub(super) fn at(&mut self, rel: &Path) -> Result<PathBuf> {
        self.for_rel(rel)?.reach(rel)
    }
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

/// What placing put into the target, for roll-back; paths relative to the target.
enum Placed {
    /// A file, link or special file where the target had nothing.
    Entry(PathBuf),
    /// An entry (or, with `tree`, a directory with everything beneath it) that replaced one
    /// of the target's (`--overwrite`); the replaced one was moved to the name `kept` in the
    /// staged entry's directory of its staging area (on the same mount).
    Replaced {
        rel: PathBuf,
        kept: OsString,
        tree: bool,
    },
    /// A directory made in the target (empty when made).
    Dir(PathBuf),
    /// A directory moved in with everything beneath it.
    Tree(PathBuf),
}

/// An entry that roll-back could not put back: it holds the snapshot's version.
pub(super) struct NotPutBack {
    pub path: PathBuf,
    /// Whether it replaced an entry of the target whose old version is in a staging area.
    pub original_kept: bool,
}

/// Moves staged entries into place and applies directory metadata.
pub(super) struct Placer<'a> {
    pub target: &'a Path,
    pub staging: &'a Staging,
    pub overwrite: bool,
    pub is_root: bool,
    /// Reaches entries of the target.
    tgt: DirCursor,
    /// Reaches entries of the staging areas.
    stg: StagingCursors<'a>,
    /// What was placed, in order, for roll-back.
    created: Vec<Placed>,
    pub warnings: Vec<String>,
    /// Time spent setting directory metadata.
    pub dirs_time: Duration,
    /// Device nodes not made (no `devices`, or not root): left out.
    unstaged: HashSet<usize>,
    /// Whether device nodes are made at all (`--devices`).
    pub devices: bool,
    /// Entries left out on purpose or for want of privilege, with the reason.
    pub skipped: Vec<(usize, String)>,
    /// Entries of the target replaced so far (`--overwrite`).
    pub replaced: u64,
    /// Leave directory metadata and inode flags to [`Placer::finish_dirs`] (several restores
    /// placed into one target, see `place_together`): a later one adds entries to directories
    /// an earlier one made, which would change their mtimes, or be refused by their flags.
    pub defer_dirs: bool,
    /// Plan positions of the directories whose metadata is still to set, parents first, and of
    /// the entries whose inode flags are.
    pending_dirs: Vec<usize>,
    pending_flags: Vec<usize>,
}

impl<'a> Placer<'a> {
    pub(super) fn new(
        target: &'a Path,
        staging: &'a Staging,
        overwrite: bool,
        is_root: bool,
    ) -> Result<Self> {
        Ok(Placer {
            target,
            staging,
            overwrite,
            is_root,
            tgt: DirCursor::open(target)?,
            stg: StagingCursors::new(staging),
            created: Vec::new(),
            warnings: Vec::new(),
            dirs_time: Duration::ZERO,
            unstaged: HashSet::new(),
            devices: false,
            skipped: Vec::new(),
            replaced: 0,
            defer_dirs: false,
            pending_dirs: Vec::new(),
            pending_flags: Vec::new(),
        })
    }

    pub(super) fn place_all(&mut self, plan: &Plan, broken: &HashMap<usize, String>) -> Result<()> {
        self.complete_staging(plan, broken)?;
        // Entries beneath a broken directory are skipped with it; entries beneath a directory
        // moved whole moved with it.
        let mut skipped_dirs: Vec<&Path> = Vec::new();
        let mut moved: Option<&Path> = None;
        // Directories whose metadata is set at the end: those this restore made.
        let mut dirs: Vec<usize> = Vec::new();
        // Entries placed that have inode flags, set after everything else.
        let mut flagged: Vec<usize> = Vec::new();
        for (i, e) in plan.entries.iter().enumerate().skip(1) {
            crate::interrupt::check()?;
            if let Some(m) = moved {
                if e.rel.starts_with(m) {
                    if !broken.contains_key(&i) {
                        if e.node.kind == NodeKind::Dir {
                            dirs.push(i);
                        }
                        if e.node.flags != 0 {
                            flagged.push(i);
                        }
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
            let placed = match e.node.kind {
                NodeKind::Dir => match self.move_dir(&e.rel)? {
                    DirMove::Moved => {
                        moved = Some(&e.rel);
                        true
                    }
                    DirMove::Made => true,
                    DirMove::Existing => self.overwrite,
                },
                // A socket belongs to the process that made it; there is nothing to restore.
                NodeKind::Socket => false,
                // A device node left out (listed in `skipped`).
                _ if self.unstaged.contains(&i) => false,
                _ => {
                    self.move_into_place(&e.rel)?;
                    true
                }
            };
            if placed && e.node.kind == NodeKind::Dir {
                dirs.push(i);
            }
            if placed && e.node.flags != 0 {
                flagged.push(i);
            }
        }
        self.pending_dirs = dirs;
        self.pending_flags = flagged;
        if !self.defer_dirs {
            self.finish_dirs(plan);
            self.finish_flags(plan);
        }
        Ok(())
    }

    /// Sets the metadata of the directories this restore made, deepest first, so adding
    /// entries does not change mtimes.
    pub(super) fn finish_dirs(&mut self, plan: &Plan) {
        let started = Instant::now();
        for i in std::mem::take(&mut self.pending_dirs).into_iter().rev() {
            let e = &plan.entries[i];
            self.apply_dir_metadata(&e.rel, &e.node);
        }
        self.dirs_time += started.elapsed();
    }

    /// Sets inode flags, after everything else: an immutable or append-only entry accepts
    /// neither new entries, nor a rename, nor new times. Everything is in place by now, so
    /// this is not interrupted (a restore stopped here would have to undo a placement it has
    /// finished).
    pub(super) fn finish_flags(&mut self, plan: &Plan) {
        let started = Instant::now();
        for i in std::mem::take(&mut self.pending_flags) {
            let e = &plan.entries[i];
            self.apply_flags(&e.rel, &e.node);
        }
        self.dirs_time += started.elapsed();
    }

    /// Completes the staged tree once everything is verified: removes the staged copies of
    /// files that cannot be restored (`--allow-partial`), and makes hard links, symlinks and
    /// special files with their metadata.
    fn complete_staging(&mut self, plan: &Plan, broken: &HashMap<usize, String>) -> Result<()> {
        for (&i, _) in broken.iter() {
            let e = &plan.entries[i];
            if e.node.kind == NodeKind::File && e.link_to.is_none() {
                let Ok(p) = self.stg.at(&e.rel) else {
                    continue; // beneath a directory that was not staged
                };
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => {
                        return Err(Error::io(
                            "remove damaged staged file",
                            self.staging.path(&e.rel),
                            err,
                        ))
                    }
                }
            }
        }
        for (i, e) in plan.entries.iter().enumerate().skip(1) {
            crate::interrupt::check()?;
            if broken.contains_key(&i) {
                continue;
            }
            let shown = self.target.join(&e.rel);
            match e.node.kind {
                NodeKind::File => {
                    if let Some(first) = e.link_to {
                        let first = &plan.entries[first as usize];
                        self.link_staged(&first.rel, &first.node, &e.rel)?;
                    }
                }
                NodeKind::Symlink => {
                    let staged = self.stg.at(&e.rel)?;
                    let target = e.node.link_target.as_deref().unwrap_or_default();
                    std::os::unix::fs::symlink(OsStr::from_bytes(target), &staged)
                        .map_err(|err| Error::io("create symlink", &shown, err))?;
                    self.apply_metadata(&staged, &shown, &e.node);
                }
                // A device node gives whoever may open it the device: one that a snapshot (or
                // whoever controls the repository) names is made only when asked for.
                NodeKind::CharDevice | NodeKind::BlockDevice if !self.devices => {
                    self.unstaged.insert(i);
                    self.skipped.push((
                        i,
                        "device node: restored only with --devices (as root)".into(),
                    ));
                }
                NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
                    let staged = self.stg.at(&e.rel)?;
                    let (kind, dev) = match e.node.kind {
                        NodeKind::Fifo => (nix::sys::stat::SFlag::S_IFIFO, 0),
                        NodeKind::CharDevice => (nix::sys::stat::SFlag::S_IFCHR, e.node.rdev),
                        _ => (nix::sys::stat::SFlag::S_IFBLK, e.node.rdev),
                    };
                    let perm = nix::sys::stat::Mode::from_bits_truncate(e.node.mode & 0o777);
                    match nix::sys::stat::mknod(&staged, kind, perm, dev) {
                        Ok(()) => self.apply_metadata(&staged, &shown, &e.node),
                        Err(Errno::EPERM) if e.node.kind != NodeKind::Fifo => {
                            self.unstaged.insert(i);
                            self.skipped
                                .push((i, "device node: only root can make device nodes".into()));
                        }
                        Err(err) => return Err(Error::io("create", &shown, io::Error::from(err))),
                    }
                }
                NodeKind::Dir | NodeKind::Socket => {}
            }
        }
        Ok(())
    }

    /// Makes the staged `rel` a hard link to the staged `first` (a copy where the target puts
    /// them on different file systems).
    fn link_staged(&mut self, first: &Path, first_node: &EntryMeta, rel: &Path) -> Result<()> {
        let shown = self.target.join(rel);
        // The first name through a cursor of its own: two paths from one cursor would not
        // both stay valid.
        let mut own = DirCursor::open(self.staging.area(first))?;
        let original = own.reach(first)?;
        let staged = self.stg.at(rel)?;
        match fs::hard_link(&original, &staged) {
            Ok(()) => Ok(()),
            // The names are on different mounts of the target (the source had them on one):
            // the second gets a copy of the content.
            Err(err) if err.raw_os_error() == Some(libc::EXDEV) => {
                fs::copy(&original, &staged).map_err(|err| Error::io("copy", &shown, err))?;
                self.apply_metadata(&staged, &shown, first_node);
                self.warnings.push(format!(
                    "{}: restored as a copy of {}, not a hard link: the target has them on different file systems",
                    crate::display::path(&shown),
                    crate::display::path(&self.target.join(first))
                ));
                Ok(())
            }
            Err(err) => Err(Error::io("create hard link", &shown, err)),
        }
    }

    /// Moves a staged directory into place with everything beneath it, unless the target has
    /// that directory already.
    fn move_dir(&mut self, rel: &Path) -> Result<DirMove> {
        let shown = self.target.join(rel);
        let staged = self.stg.at(rel)?;
        let path = self.tgt.reach(rel)?;
        match renameat2(None, &staged, None, &path, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => {
                self.created.push(Placed::Tree(rel.to_path_buf()));
                Ok(DirMove::Moved)
            }
            Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => {
                let m = fs::symlink_metadata(&path).map_err(|e| Error::io("inspect", &shown, e))?;
                let ft = m.file_type();
                if ft.is_dir() {
                    Ok(DirMove::Existing)
                } else if self.overwrite && !ft.is_symlink() {
                    // --overwrite: a file where the snapshot has a directory is replaced.
                    self.replace(rel, &staged, &path, true)?;
                    Ok(DirMove::Moved)
                } else {
                    Err(Error::Invalid(format!(
                        "{} appeared during the restore and is not a directory; restore will not write through it",
                        crate::display::path(&shown)
                    )))
                }
            }
            // No create-only rename on this filesystem: make the directory (create-only as
            // well) and move its entries one by one.
            Err(Errno::EINVAL) | Err(Errno::ENOSYS) => match fs::DirBuilder::new().create(&path) {
                Ok(()) => {
                    let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o700));
                    self.created.push(Placed::Dir(rel.to_path_buf()));
                    Ok(DirMove::Made)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let m =
                        fs::symlink_metadata(&path).map_err(|e| Error::io("inspect", &shown, e))?;
                    if m.file_type().is_dir() {
                        Ok(DirMove::Existing)
                    } else {
                        Err(Error::Invalid(format!(
                                "{} appeared during the restore and is not a directory; restore will not write through it",
                                crate::display::path(&shown)
                            )))
                    }
                }
                Err(e) => Err(Error::io("create directory", &shown, e)),
            },
            Err(e) => Err(Error::io("move into place", &shown, io::Error::from(e))),
        }
    }

    fn move_into_place(&mut self, rel: &Path) -> Result<()> {
        let shown = self.target.join(rel);
        let staged = self.stg.at(rel)?;
        let path = self.tgt.reach(rel)?;
        match renameat2(None, &staged, None, &path, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => {}
            Err(Errno::EEXIST) if self.overwrite => {
                let m = fs::symlink_metadata(&path).map_err(|e| Error::io("inspect", &shown, e))?;
                if m.is_dir() {
                    return Err(Error::Invalid(format!(
                        "{} appeared during the restore and is a directory; restore does not replace directories",
                        crate::display::path(&shown)
                    )));
                }
                return self.replace(rel, &staged, &path, false);
            }
            Err(Errno::EEXIST) => {
                return Err(Error::Invalid(format!(
                    "{} appeared during the restore; not replaced (use --overwrite)",
                    crate::display::path(&shown)
                )))
            }
            // No create-only rename on this file system: a hard link is create-only too.
            Err(Errno::EINVAL) | Err(Errno::ENOSYS) => match fs::hard_link(&staged, &path) {
                Ok(()) => {
                    let _ = fs::remove_file(&staged);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.overwrite => {
                    return self.replace(rel, &staged, &path, false)
                }
                Err(e) => return Err(Error::io("move into place", &shown, e)),
            },
            Err(e) => return Err(Error::io("move into place", &shown, io::Error::from(e))),
        }
        self.created.push(Placed::Entry(rel.to_path_buf()));
        Ok(())
    }

    /// Replaces the entry at `path` (never a directory; a symlink itself, never what it points
    /// to) by the one at `staged`, keeping the replaced one in the staging area until placing
    /// has succeeded. `tree`: the staged entry is a directory with everything beneath it.
    fn replace(&mut self, rel: &Path, staged: &Path, path: &Path, tree: bool) -> Result<()> {
        let shown = self.target.join(rel);
        let name = rel.file_name().unwrap_or_default().to_os_string();
        let kept = match renameat2(None, staged, None, path, RenameFlags::RENAME_EXCHANGE) {
            // One atomic step: the old entry is now where the staged one was.
            Ok(()) => name,
            // No exchange on this file system: move the old entry aside, then the staged one
            // in; for a moment the path holds neither.
            Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
                let kept = aside_name();
                let aside = staged.with_file_name(&kept);
                fs::rename(path, &aside)
                    .map_err(|e| Error::io("set aside (--overwrite)", &shown, e))?;
                if let Err(e) = fs::rename(staged, path) {
                    let _ = fs::rename(&aside, path);
                    return Err(Error::io("move into place", &shown, e));
                }
                kept
            }
            Err(e) => {
                return Err(Error::io(
                    "replace (--overwrite)",
                    &shown,
                    io::Error::from(e),
                ))
            }
        };
        self.replaced += 1;
        self.created.push(Placed::Replaced {
            rel: rel.to_path_buf(),
            kept,
            tree,
        });
        Ok(())
    }

    /// Ownership (as root), mode, xattrs and times of a staged entry reached by `path`;
    /// `shown` names it in warnings.
    fn apply_metadata(&mut self, path: &Path, shown: &Path, node: &EntryMeta) {
        let symlink = node.kind == NodeKind::Symlink;
        if self.is_root {
            if let Err(e) = std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)) {
                self.warnings.push(format!(
                    "{}: cannot set owner: {e}",
                    crate::display::path(shown)
                ));
            }
        }
        if !symlink {
            if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(node.mode)) {
                self.warnings.push(format!(
                    "{}: cannot set mode: {e}",
                    crate::display::path(shown)
                ));
            }
        }
        for x in &node.xattrs {
            if let Err(e) = xattr::set(path, OsStr::from_bytes(&x.name), &x.value) {
                self.warnings.push(format!(
                    "{}: cannot set extended attribute {}: {e}",
                    crate::display::path(shown),
                    crate::display::bytes(&x.name)
                ));
            }
        }
        let atime = filetime::FileTime::from_unix_time(node.atime.sec, node.atime.nsec);
        let mtime = filetime::FileTime::from_unix_time(node.mtime.sec, node.mtime.nsec);
        if let Err(e) = filetime::set_symlink_file_times(path, atime, mtime) {
            self.warnings.push(format!(
                "{}: cannot set times: {e}",
                crate::display::path(shown)
            ));
        }
    }

    /// Ownership (as root), mode, xattrs and times of the target's directory `rel`, through
    /// its own descriptor (opened without following a symlink).
    fn apply_dir_metadata(&mut self, rel: &Path, node: &EntryMeta) {
        let shown = self.target.join(rel);
        let is_root = self.is_root;
        let fd = match self.tgt.dir(rel) {
            Ok(fd) => fd,
            Err(e) => {
                let err = self.tgt.error(&rel.join("x"), e);
                self.warnings.push(format!(
                    "{}: cannot set metadata: {err}",
                    crate::display::path(&shown)
                ));
                return;
            }
        };
        let warnings = dir_metadata(fd, node, is_root, &shown);
        self.warnings.extend(warnings);
    }

    /// Sets the inode flags of the placed entry `rel` (a regular file or a directory), keeping
    /// the flags of the target's file system that a snapshot does not hold (extents, ...).
    fn apply_flags(&mut self, rel: &Path, node: &EntryMeta) {
        use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
        let kept = crate::repo::tree::INODE_FLAGS_KEPT;
        let set = |fd: BorrowedFd<'_>| -> io::Result<()> {
            let now = ioctl_getflags(fd)?.bits();
            let want = (now & !kept) | node.flags;
            if want != now {
                ioctl_setflags(fd, IFlags::from_bits_retain(want))?;
            }
            Ok(())
        };
        let result = match node.kind {
            NodeKind::Dir => self.tgt.dir(rel).and_then(set),
            NodeKind::File => match (rel.parent(), rel.file_name()) {
                (Some(parent), Some(name)) => self.tgt.dir(parent).and_then(|dir| {
                    let flags = OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC;
                    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
                    if rustix::fs::fstat(&fd)?.st_mode & libc::S_IFMT != libc::S_IFREG {
                        return Err(io::Error::other("not a regular file"));
                    }
                    set(fd.as_fd())
                }),
                _ => return,
            },
            // Symlinks and special files have none (the kernel keeps none for them).
            _ => return,
        };
        if let Err(e) = result {
            self.warnings.push(format!(
                "{}: cannot set inode flags ({}): {e}",
                crate::display::path(&self.target.join(rel)),
                crate::repo::tree::inode_flag_letters(node.flags)
            ));
        }
    }

    /// Puts back what was placed, newest first: replaced entries get their old version back,
    /// new ones are removed. Returns the entries that could not be put back (they hold the
    /// snapshot's version). Directories this restore made and could not remove are left.
    pub(super) fn roll_back(&mut self) -> Vec<NotPutBack> {
        let mut failed = Vec::new();
        let created = std::mem::take(&mut self.created);
        for p in created.into_iter().rev() {
            match p {
                Placed::Entry(rel) => {
                    let ok = self.tgt.at(&rel).is_ok_and(|p| fs::remove_file(p).is_ok());
                    if !ok {
                        failed.push(NotPutBack {
                            path: self.target.join(rel),
                            original_kept: false,
                        });
                    }
                }
                Placed::Replaced { rel, kept, tree } => {
                    if self.put_back(&rel, &kept, tree).is_err() {
                        failed.push(NotPutBack {
                            path: self.target.join(rel),
                            original_kept: true,
                        });
                    }
                }
                Placed::Dir(rel) => {
                    if let Ok(p) = self.tgt.at(&rel) {
                        let _ = fs::remove_dir(p);
                    }
                    self.tgt.forget(&rel);
                }
                // Everything beneath came from the staging tree (remove_tree does not
                // follow symlinks).
                Placed::Tree(rel) => {
                    self.tgt.forget(&rel);
                    let ok = self
                        .tgt
                        .at(&rel)
                        .is_ok_and(|p| super::at::remove_tree(&p).is_ok());
                    if !ok {
                        failed.push(NotPutBack {
                            path: self.target.join(rel),
                            original_kept: false,
                        });
                    }
                }
            }
        }
        self.replaced = 0;
        failed.reverse();
        failed
    }

    /// Moves the old version of `rel`, kept as `kept` beside its staged copy, back into place.
    fn put_back(&mut self, rel: &Path, kept: &OsStr, tree: bool) -> io::Result<()> {
        let kept_rel = rel.with_file_name(kept);
        let kept = self
            .stg
            .at(&kept_rel)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.tgt.forget(rel);
        let path = self.tgt.at(rel)?;
        if tree {
            // The old entry back in one step; the snapshot's tree goes to the staging area,
            // which is removed.
            renameat2(None, &kept, None, &path, RenameFlags::RENAME_EXCHANGE)
                .map_err(io::Error::from)
                .or_else(|_| {
                    let away = kept.with_file_name(aside_name());
                    fs::rename(&path, &away)?;
                    fs::rename(&kept, &path)
                })
        } else {
            // rename(2) over the snapshot's version: atomic.
            fs::rename(&kept, &path)
        }
    }
}

/// Sets a directory's metadata through its descriptor; returns the warnings.
fn dir_metadata(fd: BorrowedFd<'_>, node: &EntryMeta, is_root: bool, shown: &Path) -> Vec<String> {
    use rustix::fs::{fchmod, fchown, fsetxattr, futimens, Mode, Timespec, Timestamps, XattrFlags};
    let mut out = Vec::new();
    if is_root {
        let owner = (
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
        );
        if let Err(e) = fchown(fd, owner.0, owner.1) {
            out.push(format!(
                "{}: cannot set owner: {}",
                crate::display::path(shown),
                io::Error::from(e)
            ));
        }
    }
    if let Err(e) = fchmod(fd, Mode::from_raw_mode(node.mode & 0o7777)) {
        out.push(format!(
            "{}: cannot set mode: {}",
            crate::display::path(shown),
            io::Error::from(e)
        ));
    }
    for x in &node.xattrs {
        if let Err(e) = fsetxattr(
            fd,
            OsStr::from_bytes(&x.name),
            &x.value,
            XattrFlags::empty(),
        ) {
            out.push(format!(
                "{}: cannot set extended attribute {}: {}",
                crate::display::path(shown),
                crate::display::bytes(&x.name),
                io::Error::from(e)
            ));
        }
    }
    let ts = |t: crate::repo::Timestamp| Timespec {
        tv_sec: t.sec,
        tv_nsec: i64::from(t.nsec),
    };
    let times = Timestamps {
        last_access: ts(node.atime),
        last_modification: ts(node.mtime),
    };
    if let Err(e) = futimens(fd, &times) {
        out.push(format!(
            "{}: cannot set times: {}",
            crate::display::path(shown),
            io::Error::from(e)
        ));
    }
    out
}

/// A fresh name for an entry set aside in a staging area.
fn aside_name() -> OsString {
    format!(".lifeboat-replaced-{:016x}", rand::random::<u64>()).into()
}

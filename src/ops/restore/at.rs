//! Directory descriptors for restore: every entry is reached from an open directory, one
//! component at a time, never through a symlink, and at any depth (paths longer than
//! `PATH_MAX` included).
//!
//! A [`DirCursor`] keeps the descriptors of the directories along the last path it reached
//! beneath its root, so walking a plan in order (parents before children, or the reverse)
//! opens each directory once. Each component is opened with `O_NOFOLLOW | O_DIRECTORY`: a
//! symlink (one found in the target, or one swapped in while the restore runs) fails the
//! open and is never followed. Calls that have no `*at` form (extended attributes, times of a
//! symlink) reach an entry as `/proc/self/fd/<dir>/<name>`: the kernel resolves the descriptor
//! itself, not a path, so the result is as short and as safe as the `*at` call would be.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{openat, Mode, OFlags};

use crate::error::{Error, Result};

/// Descriptors a cursor keeps open at most (a process may hold 1,024 by default).
const WINDOW: usize = 256;

/// Open directories along one path beneath a root.
pub(crate) struct DirCursor {
    root: OwnedFd,
    /// The root's path, for messages and where `/proc` is missing.
    root_path: PathBuf,
    /// The directories from the root down: each component and, for the deepest [`WINDOW`],
    /// its descriptor (a tree can be deeper than a process may hold descriptors; one closed
    /// is opened again from the deepest one still open when the cursor comes back up to it).
    stack: Vec<(OsString, Option<OwnedFd>)>,
    /// The stack's names joined with `/`: the path of the deepest directory reached.
    path: Vec<u8>,
    /// Whether `/proc` is there (see [`proc_path`]).
    proc: bool,
}

impl DirCursor {
    /// Opens `root` (the operator's path, or a staging area: symlinks above it are theirs).
    pub(crate) fn open(root: &Path) -> Result<Self> {
        let f = File::open(root).map_err(|e| Error::io("open directory", root, e))?;
        Ok(Self::with_root(OwnedFd::from(f), root))
    }

    /// Opens `root`, which must be a directory itself, not a symlink to one.
    fn open_nofollow(root: &Path) -> io::Result<Self> {
        let fd = openat(
            rustix::fs::CWD,
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self::with_root(fd, root))
    }

    fn with_root(root: OwnedFd, path: &Path) -> Self {
        DirCursor {
            root,
            root_path: path.to_path_buf(),
            stack: Vec::new(),
            path: Vec::new(),
            proc: have_proc(),
        }
    }

    /// The full path of `rel` (for messages).
    pub(crate) fn shown(&self, rel: &Path) -> PathBuf {
        self.root_path.join(rel)
    }

    /// The descriptor of the directory `rel` (relative to the root; empty: the root),
    /// opening what is not open yet.
    pub(crate) fn dir(&mut self, rel: &Path) -> io::Result<BorrowedFd<'_>> {
        // In plan order a directory is the last one reached, one beneath it, or one above it:
        // found by comparing bytes, so a walk of a deep tree stays linear in its size.
        let want = rel.as_os_str().as_bytes();
        let have = self.path.as_slice();
        if want.starts_with(have)
            && (have.is_empty() || want.get(have.len()).is_none_or(|&b| b == b'/'))
        {
            let rest = Path::new(OsStr::from_bytes(&want[have.len()..]));
            let mut names = Vec::new();
            for c in rest.components() {
                match c {
                    Component::Normal(n) => names.push(n),
                    Component::RootDir if names.is_empty() => {} // the separator after `have`
                    _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
                }
            }
            return self.descend(&names);
        }
        if have.starts_with(want) && (want.is_empty() || have[want.len()] == b'/') {
            let keep = if want.is_empty() {
                0
            } else {
                want.iter().filter(|&&b| b == b'/').count() + 1
            };
            self.truncate(keep);
            return self.descend(&[]);
        }
        let mut names = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => names.push(n),
                // Plan paths are relative and normal; anything else is refused, not resolved.
                _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
            }
        }
        let common = self
            .stack
            .iter()
            .zip(&names)
            .take_while(|((have, _), want)| have.as_os_str() == **want)
            .count();
        self.truncate(common);
        self.descend(&names[common..])
    }

    /// Keeps the first `depth` directories of the stack.
    fn truncate(&mut self, depth: usize) {
        if depth >= self.stack.len() {
            return;
        }
        self.stack.truncate(depth);
        let len = self
            .stack
            .iter()
            .map(|(n, _)| n.len() + 1)
            .sum::<usize>()
            .saturating_sub(1);
        self.path.truncate(len);
    }

    /// Opens `names` one beneath the other, from the deepest directory of the stack (opened
    /// again first if it was closed).
    fn descend(&mut self, names: &[&OsStr]) -> io::Result<BorrowedFd<'_>> {
        if self.stack.last().is_some_and(|(_, fd)| fd.is_none()) {
            self.reopen()?;
        }
        for name in names {
            let fd = open_dir_at(self.top(), name)?;
            if !self.stack.is_empty() {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(name.as_bytes());
            self.stack.push((name.to_os_string(), Some(fd)));
            if self.stack.len() > WINDOW {
                let old = self.stack.len() - WINDOW - 1;
                self.stack[old].1 = None;
            }
        }
        Ok(self.top())
    }

    /// The descriptor of the deepest directory of the stack (which is open).
    fn top(&self) -> BorrowedFd<'_> {
        self.stack
            .iter()
            .rev()
            .find_map(|(_, fd)| fd.as_ref().map(|fd| fd.as_fd()))
            .unwrap_or(self.root.as_fd())
    }

    /// Opens again the closed directories at the bottom of the stack, from the deepest open
    /// one down, keeping the deepest [`WINDOW`] of them open.
    fn reopen(&mut self) -> io::Result<()> {
        let from = self
            .stack
            .iter()
            .rposition(|(_, fd)| fd.is_some())
            .map_or(0, |i| i + 1);
        let keep_from = self.stack.len().saturating_sub(WINDOW);
        let mut parent: Option<OwnedFd> = None;
        for i in from..self.stack.len() {
            let fd = {
                let at = match &parent {
                    Some(p) => p.as_fd(),
                    None if i == 0 => self.root.as_fd(),
                    None => match &self.stack[i - 1].1 {
                        Some(fd) => fd.as_fd(),
                        None => self.root.as_fd(),
                    },
                };
                open_dir_at(at, &self.stack[i].0)?
            };
            if i >= keep_from {
                let again = fd.try_clone()?;
                self.stack[i].1 = Some(fd);
                parent = Some(again);
            } else {
                parent = Some(fd);
            }
        }
        Ok(())
    }

    /// A short path that reaches `rel` through the descriptor of its parent directory (see
    /// the module's docs), opening what is not open yet. It stays valid until the cursor is
    /// used again. Without `/proc`, the full path (no protection from symlinks swapped in
    /// above it, and limited to `PATH_MAX`).
    pub(crate) fn at(&mut self, rel: &Path) -> io::Result<PathBuf> {
        if !self.proc {
            return Ok(self.root_path.join(rel));
        }
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = self.dir(parent)?;
        Ok(proc_path(dir, name))
    }

    /// [`Self::at`], with an error that names the full path.
    pub(crate) fn reach(&mut self, rel: &Path) -> Result<PathBuf> {
        self.at(rel).map_err(|e| self.error(rel, e))
    }

    /// The error of a failed [`Self::at`] or [`Self::dir`]: a symlink (or file) where a
    /// directory is needed is named as such.
    pub(crate) fn error(&self, rel: &Path, e: io::Error) -> Error {
        let path = self.shown(rel.parent().unwrap_or(Path::new("")));
        match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => Error::Invalid(format!(
                "{} (or a directory above it) is not a directory: a symlink or a file where the \
                 restore needs a directory, perhaps swapped in while it ran; restore never \
                 writes through it",
                path.display()
            )),
            _ => Error::io("open directory", path, e),
        }
    }

    /// Closes the descriptors at and beneath `rel` (it was moved or removed).
    pub(crate) fn forget(&mut self, rel: &Path) {
        let depth = rel.components().count();
        if depth > 0
            && self.stack.len() >= depth
            && self
                .stack
                .iter()
                .zip(rel.components())
                .all(|((have, _), c)| have.as_os_str() == c.as_os_str())
        {
            self.truncate(depth - 1);
        }
    }
}

/// Opens the directory `name` in `dir`, never through a symlink.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// `name` in the directory `dir`, as a path any call accepts (see the module's docs).
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

/// Raises this process's soft limit of open descriptors to its hard limit: a cursor holds one
/// per directory level, and a tree may be thousands of levels deep.
pub(crate) fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        );
    }
}

/// Whether `/proc` is there for [`proc_path`] (a rescue system may lack it).
pub(crate) fn have_proc() -> bool {
    Path::new("/proc/self/fd").is_dir()
}

/// Removes the directory `path` with everything beneath it, at any depth and without
/// recursion: directories are entered through their descriptors (never through a symlink,
/// which is removed as the entry it is), each listed once, and made writable first (a
/// snapshot may restore a directory without write permission). `path` itself may be a file or
/// symlink, which is removed; a missing `path` is not an error.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    use rustix::fs::{unlinkat, AtFlags};
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => return std::fs::remove_file(path),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let mut cur = match DirCursor::open_nofollow(path) {
        Ok(cur) => cur,
        // Swapped for a symlink since it was looked at: removed as the entry it is.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return std::fs::remove_file(path),
        Err(e) => return Err(e),
    };
    // Directories being emptied, from `path` down, each with its subdirectories still to go.
    let mut stack: Vec<(PathBuf, Vec<OsString>)> = Vec::new();
    let first = empty_but_subdirs(cur.dir(Path::new(""))?)?;
    stack.push((PathBuf::new(), first));
    while let Some((rel, pending)) = stack.last_mut() {
        if let Some(name) = pending.pop() {
            let child = rel.join(name);
            let subdirs = empty_but_subdirs(cur.dir(&child)?)?;
            stack.push((child, subdirs));
            continue;
        }
        let Some((rel, _)) = stack.pop() else { break };
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            break; // `path` itself, removed below
        };
        cur.forget(&rel);
        let parent = cur.dir(rel.parent().unwrap_or(Path::new("")))?;
        unlinkat(parent, name.as_os_str(), AtFlags::REMOVEDIR)?;
    }
    drop(cur);
    std::fs::remove_dir(path)
}

/// Removes every entry of the directory `dir` that is not a directory; returns the names of
/// its subdirectories. The directory is made writable (and searchable) first.
fn empty_but_subdirs(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    use rustix::fs::{fchmod, statat, unlinkat, AtFlags, Dir, FileType, Mode};
    let _ = fchmod(dir, Mode::from_raw_mode(0o700));
    let mut subdirs = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory),
            _ => false,
        };
        if is_dir {
            subdirs.push(name.to_os_string());
        } else {
            match unlinkat(dir, name, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(subdirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reaches_any_depth_and_never_follows_a_symlink() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut cur = DirCursor::open(t.path()).expect("open");
        // 2,000 levels of 10-byte names: 20 KB, five times PATH_MAX.
        let mut rel = PathBuf::new();
        for _ in 0..2000 {
            let dir = cur.dir(&rel).expect("parent");
            rustix::fs::mkdirat(dir, "directory", Mode::from_raw_mode(0o700)).expect("mkdirat");
            rel.push("directory");
        }
        assert!(rel.as_os_str().len() > 19_000);
        assert!(cur.stack.iter().filter(|(_, fd)| fd.is_some()).count() <= WINDOW);
        // Back up to a level whose descriptor was closed, and down again.
        let mid: PathBuf = rel.components().take(100).collect();
        std::fs::write(cur.at(&mid.join("mid")).expect("reopened"), b"m").expect("write mid");
        let p = cur.at(&rel.join("file")).expect("down again");
        std::fs::write(&p, b"x").expect("write deep");
        let p = cur.at(&rel.join("file")).expect("deep parent");
        assert!(p.as_os_str().len() < 100, "{}", p.display());
        std::fs::write(&p, b"deep").expect("write through /proc");
        assert_eq!(std::fs::read(&p).expect("read"), b"deep");

        // A symlink where a directory is expected is refused, even beneath open directories.
        std::os::unix::fs::symlink("/", t.path().join("link")).expect("symlink");
        let mut fresh = DirCursor::open(t.path()).expect("open");
        let err = fresh
            .reach(Path::new("link/etc/passwd"))
            .expect_err("through a symlink");
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn remove_tree_removes_any_depth_without_recursion() {
        let t = tempfile::tempdir().expect("tempdir");
        let top = t.path().join("top");
        std::fs::create_dir(&top).expect("mkdir");
        let mut cur = DirCursor::open(&top).expect("open");
        let mut rel = PathBuf::new();
        for i in 0..3000 {
            let dir = cur.dir(&rel).expect("parent");
            rustix::fs::mkdirat(dir, "d", Mode::from_raw_mode(0o700)).expect("mkdirat");
            let f = rustix::fs::openat(
                dir,
                "f",
                OFlags::CREATE | OFlags::WRONLY,
                Mode::from_raw_mode(0o600),
            );
            drop(f.expect("create"));
            if i % 500 == 0 {
                rustix::fs::symlinkat("/", dir, "link").expect("symlink");
            }
            rel.push("d");
        }
        // A directory without write permission halfway down.
        let mid: PathBuf = rel.components().take(1500).collect();
        rustix::fs::fchmod(cur.dir(&mid).expect("mid"), Mode::from_raw_mode(0o500)).expect("chmod");
        drop(cur);
        // On a small stack: recursion over 3,000 levels would overflow it.
        let target = top.clone();
        std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || remove_tree(&target))
            .expect("spawn")
            .join()
            .expect("no overflow")
            .expect("removed");
        assert!(!top.exists());
        assert!(
            Path::new("/etc").exists(),
            "symlinks are removed, not followed"
        );
        assert!(remove_tree(&top).is_ok(), "a missing tree is not an error");
    }
}

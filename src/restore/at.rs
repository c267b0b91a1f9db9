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
use std::path::{Component, Path, PathBuf};

use rustix::fs::{openat, Mode, OFlags};

use crate::error::{Error, Result};

/// Descriptors a cursor keeps open at most (a process may hold 1,024 by default).
const WINDOW: usize = 256;

/// Open directories along one path beneath a root.
pub(super) struct DirCursor {
    root: OwnedFd,
    /// The root's path, for messages and where `/proc` is missing.
    root_path: PathBuf,
    /// The directories from the root down: each component and, for the deepest [`WINDOW`],
    /// its descriptor (a tree can be deeper than a process may hold descriptors; one closed
    /// is opened again from the deepest one still open when the cursor comes back up to it).
    stack: Vec<(OsString, Option<OwnedFd>)>,
    /// Whether `/proc` is there (see [`proc_path`]).
    proc: bool,
}

impl DirCursor {
    /// Opens `root` (the operator's path, or a staging area: symlinks above it are theirs).
    pub(super) fn open(root: &Path) -> Result<Self> {
        let f = File::open(root).map_err(|e| Error::io("open directory", root, e))?;
        Ok(DirCursor {
            root: OwnedFd::from(f),
            root_path: root.to_path_buf(),
            stack: Vec::new(),
            proc: have_proc(),
        })
    }

    /// The full path of `rel` (for messages).
    pub(super) fn shown(&self, rel: &Path) -> PathBuf {
        self.root_path.join(rel)
    }

    /// The descriptor of the directory `rel` (relative to the root; empty: the root),
    /// opening what is not open yet.
    pub(super) fn dir(&mut self, rel: &Path) -> io::Result<BorrowedFd<'_>> {
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
        self.stack.truncate(common);
        if self.stack.last().is_some_and(|(_, fd)| fd.is_none()) {
            self.reopen()?;
        }
        for name in &names[common..] {
            let fd = open_dir_at(self.top(), name)?;
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
    pub(super) fn at(&mut self, rel: &Path) -> io::Result<PathBuf> {
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
    pub(super) fn reach(&mut self, rel: &Path) -> Result<PathBuf> {
        self.at(rel).map_err(|e| self.error(rel, e))
    }

    /// The error of a failed [`Self::at`] or [`Self::dir`]: a symlink (or file) where a
    /// directory is needed is named as such.
    pub(super) fn error(&self, rel: &Path, e: io::Error) -> Error {
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
    pub(super) fn forget(&mut self, rel: &Path) {
        let depth = rel.components().count();
        if depth > 0
            && self.stack.len() >= depth
            && self
                .stack
                .iter()
                .zip(rel.components())
                .all(|((have, _), c)| have.as_os_str() == c.as_os_str())
        {
            self.stack.truncate(depth - 1);
        }
    }
}

/// Opens the directory `name` in `dir`, never through a symlink.
pub(super) fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// `name` in the directory `dir`, as a path any call accepts (see the module's docs).
pub(super) fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

/// Raises this process's soft limit of open descriptors to its hard limit: a cursor holds one
/// per directory level, and a tree may be thousands of levels deep.
pub(super) fn raise_fd_limit() {
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
pub(super) fn have_proc() -> bool {
    Path::new("/proc/self/fd").is_dir()
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
}

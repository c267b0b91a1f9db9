//! The source, read through directory file descriptors.
//!
//! Every directory of the walk is opened relative to its parent's descriptor with
//! `O_NOFOLLOW | O_DIRECTORY`, and everything inside it (the entries' metadata, symlink
//! targets, extended attributes, files to read) is reached relative to the directory's own
//! descriptor, never by path. So:
//! - a path component swapped for a symlink while the backup runs is never followed: opening
//!   it fails (`ELOOP`/`ENOTDIR`), and a directory swapped for another one is told apart by
//!   its device and inode, which must be those its parent's listing recorded;
//! - paths longer than `PATH_MAX` (a directory chain 10,000 levels deep) are no obstacle:
//!   no system call is given more than one name.
//!
//! Extended attributes have no `*at` system calls before Linux 6.13: they are read through
//! `/proc/self/fd/<dir>/<name>` (the directory's descriptor, then one name, not followed).
//! Without `/proc` they are read by path (which then follows a swapped component).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustix::fs::{AtFlags, Mode, OFlags, RawDir};

use crate::repo::{NodeKind, Timestamp, Xattr};

/// An open directory, shared by the walker, the listers and the file readers.
pub type DirFd = Arc<OwnedFd>;

/// An entry's metadata (from `fstatat` without following, or `fstat` of an open descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

impl Meta {
    // The field types of `struct stat` differ between architectures (the casts are no-ops
    // on some of them).
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn from_stat(s: &rustix::fs::Stat) -> Meta {
        let ts = |sec: i64, nsec: u64| Timestamp {
            sec,
            nsec: nsec as u32,
        };
        Meta {
            dev: s.st_dev as u64,
            ino: s.st_ino as u64,
            mode: s.st_mode as u32,
            nlink: s.st_nlink as u64,
            uid: s.st_uid as u32,
            gid: s.st_gid as u32,
            rdev: s.st_rdev as u64,
            size: s.st_size as u64,
            atime: ts(s.st_atime as i64, s.st_atime_nsec as u64),
            mtime: ts(s.st_mtime as i64, s.st_mtime_nsec as u64),
            ctime: ts(s.st_ctime as i64, s.st_ctime_nsec as u64),
        }
    }

    pub fn kind(&self) -> NodeKind {
        match self.mode & libc::S_IFMT {
            libc::S_IFDIR => NodeKind::Dir,
            libc::S_IFLNK => NodeKind::Symlink,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFCHR => NodeKind::CharDevice,
            libc::S_IFBLK => NodeKind::BlockDevice,
            libc::S_IFSOCK => NodeKind::Socket,
            _ => NodeKind::File,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// Whether both describe the same object (device and inode).
    pub fn same_object(&self, other: &Meta) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// Raises the soft limit of open files to the hard limit (as the Go runtime does at start):
/// the walk holds directories open (those files queued for reading are in, a window of the
/// walker's stack, the listings ahead), which in a wide tree of small directories can pass
/// the usual soft limit of 1,024. The process uses no `select()`, the reason for that low
/// default. Returns the limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum.or(Some(u64::MAX));
        }
    }
    limit.current.or(Some(u64::MAX))
}

/// `/`, the start of every walk.
pub fn open_root() -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        "/",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `name` of `parent`, not following a symlink.
pub fn open_dir(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(parent, name, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => io::Error::new(
            io::ErrorKind::NotADirectory,
            "no longer a directory (replaced while backing up: not followed)",
        ),
        e => e.into(),
    })
}

/// Opens the directory `name` of `parent` and checks that it is `expected` (the object a
/// listing recorded under that name), so that a directory swapped for another is not taken.
pub fn open_dir_expecting(
    parent: BorrowedFd<'_>,
    name: &[u8],
    expected: &Meta,
) -> io::Result<OwnedFd> {
    let fd = open_dir(parent, name)?;
    let now = fstat(fd.as_fd())?;
    if !now.same_object(expected) {
        return Err(io::Error::other(
            "replaced by another directory while backing up (not followed)",
        ));
    }
    Ok(fd)
}

/// Opens the directory at the absolute, normalized `path` from `/`, one component at a time,
/// following no symlink.
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let mut fd = open_root()?;
    for c in path.components() {
        if let Component::Normal(name) = c {
            fd = open_dir(fd.as_fd(), name.as_bytes())?;
        }
    }
    Ok(fd)
}

/// The metadata of `name` in `dir`, not following a symlink.
pub fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Meta> {
    let s = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(Meta::from_stat(&s))
}

/// The metadata of an open file or directory.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Meta> {
    Ok(Meta::from_stat(&rustix::fs::fstat(fd)?))
}

/// The names in the open directory `dir` (without `.` and `..`), in directory order, and the
/// error that cut the listing short, if any. The descriptor must be fresh (at offset 0).
pub fn read_names(dir: BorrowedFd<'_>) -> (Vec<Vec<u8>>, Option<io::Error>) {
    let mut buf: Vec<MaybeUninit<u8>> = Vec::with_capacity(32 << 10);
    buf.resize(32 << 10, MaybeUninit::uninit());
    let mut raw = RawDir::new(dir, &mut buf);
    let mut names = Vec::new();
    while let Some(entry) = raw.next() {
        match entry {
            Ok(e) => {
                let name = e.file_name().to_bytes();
                if name != b"." && name != b".." {
                    names.push(name.to_vec());
                }
            }
            Err(e) => return (names, Some(e.into())),
        }
    }
    (names, None)
}

/// The target of the symlink `name` in `dir`.
pub fn readlink_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Opens the file `name` of `dir` for reading: never following a symlink, never blocking on
/// a fifo or device put in its place, without updating its access time where allowed (the
/// owner or root).
pub fn open_file_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        other => other,
    }?;
    Ok(File::from(fd))
}

/// Whether `/proc/self/fd` can name open directories (see the module documentation).
fn proc_fd() -> bool {
    static PROC: OnceLock<bool> = OnceLock::new();
    *PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// The path that reaches `name` through the open directory `dir`: `/proc/self/fd/<dir>/<name>`
/// (`path`, the entry's full path, without `/proc`).
fn via_fd(dir: BorrowedFd<'_>, name: &[u8], path: &Path) -> PathBuf {
    if proc_fd() {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        p.push(OsStr::from_bytes(name));
        p
    } else {
        path.to_path_buf()
    }
}

/// The extended attributes of `name` in `dir` (not following a symlink), sorted by name, with
/// the inode flags (`chattr`) of a regular file or directory among them (see
/// [`INODE_FLAGS_XATTR`](crate::repo::tree::INODE_FLAGS_XATTR)). `meta` is its metadata,
/// `path` its full path (used only without `/proc`).
pub fn xattrs_at(dir: BorrowedFd<'_>, name: &[u8], path: &Path, meta: &Meta) -> Vec<Xattr> {
    let at = via_fd(dir, name, path);
    let mut out = Vec::new();
    // Filesystems without xattr support report an error: no attributes then.
    if let Ok(names) = xattr::list(&at) {
        for name in names {
            if let Ok(Some(value)) = xattr::get(&at, &name) {
                out.push(Xattr {
                    name: name.as_bytes().to_vec(),
                    value,
                });
            }
        }
    }
    if meta.is_file() || meta.is_dir() {
        out.extend(flags_at(dir, name, meta).and_then(Xattr::inode_flags));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The inode flags of the regular file or directory `name` in `dir` (`meta`), if it can be
/// opened and its file system has them. Opened as the content reader opens it (not following
/// a symlink, not blocking), and only believed if it is still the object `meta` describes.
fn flags_at(dir: BorrowedFd<'_>, name: &[u8], meta: &Meta) -> Option<u32> {
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if meta.is_dir() {
        flags |= OFlags::DIRECTORY;
    }
    let fd = rustix::fs::openat(dir, name, flags | OFlags::NOCTTY, Mode::empty()).ok()?;
    let now = fstat(fd.as_fd()).ok()?;
    if !now.same_object(meta) {
        return None;
    }
    rustix::fs::ioctl_getflags(&fd).ok().map(|f| f.bits())
}

/// The extended attributes of an open regular file, sorted by name, with its inode flags
/// among them (as [`xattrs_at`]).
pub fn xattrs_of(file: &File) -> Vec<Xattr> {
    use xattr::FileExt;
    let mut out = Vec::new();
    if let Ok(names) = file.list_xattr() {
        for name in names {
            if let Ok(Some(value)) = file.get_xattr(&name) {
                out.push(Xattr {
                    name: name.as_bytes().to_vec(),
                    value,
                });
            }
        }
    }
    if let Ok(flags) = rustix::fs::ioctl_getflags(file) {
        out.extend(Xattr::inode_flags(flags.bits()));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_in_place_of_a_directory_is_not_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("real")).expect("mkdir");
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link"))
            .expect("symlink");
        let fd = open_dir_path(dir.path()).expect("open");
        assert!(open_dir(fd.as_fd(), b"real").is_ok());
        let err = open_dir(fd.as_fd(), b"link").expect_err("a symlink is not followed");
        assert!(err.to_string().contains("not followed"), "{err}");
        // A path through the symlink is refused too.
        assert!(open_dir_path(&dir.path().join("link")).is_err());
        let real = stat_at(fd.as_fd(), b"real").expect("stat");
        assert!(real.is_dir());
        assert!(open_dir_expecting(fd.as_fd(), b"real", &real).is_ok());
        std::fs::rename(dir.path().join("real"), dir.path().join("old")).expect("mv");
        std::fs::create_dir(dir.path().join("real")).expect("mkdir");
        let err = open_dir_expecting(fd.as_fd(), b"real", &real).expect_err("another dir");
        assert!(err.to_string().contains("replaced"), "{err}");
    }

    #[test]
    fn names_are_listed_without_dot_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..2000 {
            std::fs::write(dir.path().join(format!("file-with-a-long-name-{i}")), b"")
                .expect("write");
        }
        let fd = open_dir_path(dir.path()).expect("open");
        let (mut names, err) = read_names(fd.as_fd());
        assert!(err.is_none());
        names.sort();
        let mut expected: Vec<Vec<u8>> = (0..2000)
            .map(|i| format!("file-with-a-long-name-{i}").into_bytes())
            .collect();
        expected.sort();
        assert_eq!(names, expected);
    }
}

//! A repository in a local directory.
//!
//! Writes follow the durable pattern: a temporary file in the object's directory, written and
//! `fsync`ed, then moved to its final name with `renameat2(RENAME_NOREPLACE)` (create-only:
//! an existing object is never replaced), then the directory is `fsync`ed so the new name
//! survives a power loss. An interrupted write leaves only a `.tmp-*` file, which `list`
//! ignores.
//!
//! Files and directories are private to their owner (0600 and 0700): a key object readable by
//! other users lets them guess passwords offline. A repository shared with its group says so by
//! its `config` being readable by the group but not by others (`chmod 640 config`, as restic
//! does it): new files are then 0640 and new directories 0750. The umask applies on top.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};

use super::{FileKind, Storage};
use crate::error::{Error, Result};

/// A repository rooted at a local directory.
#[derive(Debug)]
pub struct LocalStorage {
    root: PathBuf,
    /// Whether the repository is shared with its group (see the module documentation), looked
    /// up at the first write.
    group: OnceLock<bool>,
}

impl LocalStorage {
    /// A storage rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage {
            root: root.into(),
            group: OnceLock::new(),
        }
    }

    /// Whether the repository is shared with its group: its `config` is readable by the group
    /// and not by others (a world-readable config is what older versions wrote, not a choice).
    pub fn shared_with_group(&self) -> bool {
        *self.group.get_or_init(|| {
            fs::metadata(self.root.join("config"))
                .map(|m| m.permissions().mode() & 0o044 == 0o040)
                .unwrap_or(false)
        })
    }

    /// The mode of new files.
    fn file_mode(&self) -> u32 {
        if self.shared_with_group() {
            0o640
        } else {
            0o600
        }
    }

    /// The mode of new directories.
    fn dir_mode(&self) -> u32 {
        if self.shared_with_group() {
            0o750
        } else {
            0o700
        }
    }

    /// Objects of `kind` that users other than the owner may read beyond what the repository
    /// allows (its group, when shared with it): their repository paths and modes.
    pub fn exposed(&self, kind: FileKind) -> Result<Vec<(String, u32)>> {
        let allowed = if self.shared_with_group() { 0o040 } else { 0 };
        let mut out = Vec::new();
        for (name, _) in self.list(kind)? {
            let path = self.path_of(kind, &name);
            let mode = match fs::symlink_metadata(&path) {
                Ok(m) => m.permissions().mode(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                Err(e) => return Err(Error::io("inspect", &path, e)),
            };
            if mode & 0o077 & !allowed != 0 {
                out.push((kind.path(&name), mode & 0o7777));
            }
        }
        Ok(out)
    }

    fn path_of(&self, kind: FileKind, name: &str) -> PathBuf {
        self.root.join(kind.path(name))
    }

    fn err(&self, op: &'static str, kind: FileKind, name: &str, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::NotFound && op.starts_with("read") {
            return Error::NotFound {
                name: kind.path(name),
            };
        }
        if crate::error::is_disk_full(&source) {
            return Error::io(op, self.path_of(kind, name), source);
        }
        Error::Storage {
            op,
            name: self.path_of(kind, name).display().to_string(),
            cause: source,
        }
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Moves the synced temporary file `tmp` to `final_path`, create-only, and syncs the directory so
/// the name survives a power loss. False (and `tmp` removed) when `final_path` exists.
fn place(tmp: &Path, final_path: &Path) -> io::Result<bool> {
    match renameat2(None, tmp, None, final_path, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            fs::remove_file(tmp)?;
            return Ok(false);
        }
        // Filesystems without RENAME_NOREPLACE: a hard link is create-only too.
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) | Err(Errno::EOPNOTSUPP) => {
            let linked = fs::hard_link(tmp, final_path);
            fs::remove_file(tmp)?;
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Err(errno) => return Err(io::Error::from(errno)),
    }
    if let Some(dir) = final_path.parent() {
        fsync_dir(dir)?;
    }
    Ok(true)
}

fn is_temp(name: &str) -> bool {
    name.starts_with('.')
}

impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn local_path(&self) -> Option<PathBuf> {
        Some(self.root.clone())
    }

    fn create_layout(&self) -> Result<()> {
        let io_err = |op, p: &Path, e| Error::io(op, p, e);
        let mkdir = |dir: &Path| fs::DirBuilder::new().mode(self.dir_mode()).create(dir);
        match fs::read_dir(&self.root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::RepositoryExists {
                        location: self.location(),
                        reason: "the directory is not empty".into(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent)
                        .map_err(|e| io_err("create directory", parent, e))?;
                }
                fs::DirBuilder::new()
                    .mode(self.dir_mode())
                    .create(&self.root)
                    .map_err(|e| io_err("create directory", &self.root, e))?;
            }
            Err(e) => return Err(io_err("read directory", &self.root, e)),
        }
        for kind in [
            FileKind::Index,
            FileKind::Snapshot,
            FileKind::Key,
            FileKind::Lock,
        ] {
            let dir = self.root.join(kind.dir());
            mkdir(&dir).map_err(|e| io_err("create directory", &dir, e))?;
        }
        let data = self.root.join(FileKind::Pack.dir());
        mkdir(&data).map_err(|e| io_err("create directory", &data, e))?;
        for i in 0..=255u8 {
            let dir = data.join(hex::encode([i]));
            mkdir(&dir).map_err(|e| io_err("create directory", &dir, e))?;
        }
        fsync_dir(&data).map_err(|e| io_err("sync directory", &data, e))?;
        fsync_dir(&self.root).map_err(|e| io_err("sync directory", &self.root, e))?;
        Ok(())
    }

    fn has_config(&self) -> Result<bool> {
        let p = self.path_of(FileKind::Config, "config");
        match fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("inspect", p, e)),
        }
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let p = self.path_of(kind, name);
        let mut f = File::open(&p).map_err(|e| self.err("read", kind, name, e))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| self.err("read", kind, name, e))?;
        Ok(buf)
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let p = self.path_of(kind, name);
        let f = File::open(&p).map_err(|e| self.err("read", kind, name, e))?;
        // Read into spare capacity: no zeroing of a buffer about to be overwritten.
        let mut buf = Vec::with_capacity(len as usize);
        let read = (|| {
            (&f).seek(io::SeekFrom::Start(offset))?;
            (&f).take(u64::from(len)).read_to_end(&mut buf)?;
            if buf.len() < len as usize {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            Ok(())
        })();
        read.map_err(|e| self.err("read range of", kind, name, e))?;
        Ok(buf)
    }

    fn create(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<bool> {
        let final_path = self.path_of(kind, name);
        let dir = final_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        let tmp = dir.join(format!(".tmp-{}-{:016x}", name, rand::random::<u64>()));
        let result = (|| -> io::Result<bool> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.file_mode())
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            place(&tmp, &final_path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| self.err("write", kind, name, e))
    }

    fn spool_dir(&self, kind: FileKind) -> Option<PathBuf> {
        // Packs are the large objects; their directory's root is on the same filesystem as
        // every `data/xx/` directory, so publishing is a rename.
        (kind == FileKind::Pack).then(|| self.root.join(kind.dir()))
    }

    fn clean_spool(&self, kind: FileKind, older_than: std::time::Duration) -> Result<usize> {
        let Some(dir) = self.spool_dir(kind) else {
            return Ok(0);
        };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("read directory", &dir, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(".tmp-") {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > older_than);
            if old {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", entry.path(), e)),
                }
            }
        }
        Ok(removed)
    }

    fn publish(&self, kind: FileKind, name: &str, tmp: &Path) -> Result<bool> {
        // The spooled file was made by the repository layer: it gets the objects' mode here.
        let result = fs::set_permissions(tmp, fs::Permissions::from_mode(self.file_mode()))
            .and_then(|()| place(tmp, &self.path_of(kind, name)));
        if result.is_err() {
            let _ = fs::remove_file(tmp);
        }
        result.map_err(|e| self.err("write", kind, name, e))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let base = self.root.join(kind.dir());
        let dirs: Vec<PathBuf> = if kind == FileKind::Pack {
            let mut v = Vec::with_capacity(256);
            for entry in fs::read_dir(&base).map_err(|e| Error::io("list", &base, e))? {
                let entry = entry.map_err(|e| Error::io("list", &base, e))?;
                // Beside the 256 directories: packs being written (`.tmp-*`, see
                // `spool_dir`), or anything else someone put there; none of them are packs.
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && !is_temp(&entry.file_name().to_string_lossy()) {
                    v.push(entry.path());
                }
            }
            v
        } else {
            vec![base]
        };
        for dir in dirs {
            for entry in fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
                let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_temp(&name) {
                    continue;
                }
                // An object removed between the directory read and its stat (a lock
                // released, a pack pruned by another process) is simply not there any more.
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io("inspect", entry.path(), e)),
                };
                if meta.is_file() {
                    out.push((name, meta.len()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn modified(&self, kind: FileKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        let p = self.path_of(kind, name);
        match fs::metadata(&p).and_then(|m| m.modified()) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(crate::error::Error::NotFound {
                name: kind.path(name),
            }),
            Err(e) => Err(self.err("inspect", kind, name, e)),
        }
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let p = self.path_of(kind, name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("remove", kind, name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found as a flaky lock test: a lock released while another process listed the locks
    /// failed that listing with "inspect locks/…: No such file or directory".
    #[test]
    fn objects_removed_while_listed_are_left_out_not_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalStorage::new(dir.path().join("repo"));
        s.create_layout().expect("layout");
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("{:064x}", i % 64);
                    let _ = s.create(FileKind::Lock, &name, b"lock");
                    let _ = s.remove(FileKind::Lock, &format!("{:064x}", (i + 32) % 64));
                    i += 1;
                }
            });
            let mut result = Ok(());
            for _ in 0..3000 {
                if let Err(e) = s.list(FileKind::Lock) {
                    result = Err(e);
                    break;
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            result.expect("a listing beside removals");
        });
    }

    #[test]
    fn create_is_create_only_and_durable_names_are_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalStorage::new(dir.path().join("repo"));
        s.create_layout().expect("layout");
        assert!(s.create(FileKind::Index, "abcd", b"one").expect("create"));
        assert!(!s
            .create(FileKind::Index, "abcd", b"two")
            .expect("create again"));
        assert_eq!(s.read(FileKind::Index, "abcd").expect("read"), b"one");
        assert_eq!(
            s.list(FileKind::Index).expect("list"),
            vec![("abcd".into(), 3)]
        );
        assert!(s
            .create(FileKind::Pack, "ff00", b"pack")
            .expect("create pack"));
        assert_eq!(
            s.list(FileKind::Pack).expect("list"),
            vec![("ff00".into(), 4)]
        );
        assert_eq!(
            s.read_range(FileKind::Pack, "ff00", 1, 2).expect("range"),
            b"ac"
        );
        assert!(s.read_range(FileKind::Pack, "ff00", 3, 2).is_err());
        assert!(matches!(
            s.read(FileKind::Snapshot, "nope"),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn layout_refuses_non_empty_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("x"), b"x").expect("write");
        let s = LocalStorage::new(dir.path());
        assert!(matches!(
            s.create_layout(),
            Err(Error::RepositoryExists { .. })
        ));
    }
}

//! The file system a mount serves: the layout's directories, then each snapshot's tree, read
//! when someone looks.
//!
//! Inode numbers are given out on demand, one per (directory, name) seen, so the same
//! snapshot under `ids/` and `hosts/` is two directories to the kernel (it does not allow a
//! directory two parents). Listings are loaded when a directory is looked into, through the
//! one verified reader ([`Repository::load_tree`], [`Repository::read_blob`]); a file's chunk
//! for an offset is found by binary search over its chunk sizes from the index
//! ([`ChunkMap`]). Every chunk is verified before any of its bytes is returned, and a read
//! that needs a chunk that cannot be read or verified fails whole with EIO: the kernel fills
//! a short read with zeros, so a read is never answered in part.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use parking_lot::{Mutex, RwLock};

use super::cache::{ChunkMap, Lru};
use super::layout::{Dir, Layout, Target};
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::repo::{Index, Node, NodeKind, Repository, SnapshotFilter, Timestamp, Tree};

/// How long the kernel may keep what it was told of a snapshot's entries (they never change).
const TTL_SNAPSHOT: Duration = Duration::from_secs(300);
/// How long the kernel may keep what it was told of the layout (it changes on a refresh).
const TTL_LAYOUT: Duration = Duration::from_secs(1);
/// Bytes of verified chunks kept: sequential reads of 128 KiB take a chunk of up to 8 MiB
/// from here instead of reading and decompressing it again for each.
const CHUNK_CACHE: usize = 64 << 20;
/// Bytes (roughly) of parsed directory listings kept.
const TREE_CACHE: usize = 32 << 20;

/// What an inode is.
#[derive(Debug, Clone)]
enum What {
    /// A directory of the layout.
    Dir(Dir),
    /// A `latest` link to this name.
    Link(String),
    /// The root ("/") of a snapshot.
    Root(SnapshotId),
    /// An entry of a snapshot.
    Entry(SnapshotId, Arc<Node>),
}

impl What {
    /// Whether `self` and `other` are the same thing (an inode may be reused for it).
    fn same(&self, other: &What) -> bool {
        match (self, other) {
            (What::Dir(a), What::Dir(b)) => a == b,
            (What::Link(a), What::Link(b)) => a == b,
            (What::Root(a), What::Root(b)) => a == b,
            (What::Entry(a, x), What::Entry(b, y)) => a == b && (Arc::ptr_eq(x, y) || x == y),
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
struct Inodes {
    /// Inode `n` is `list[n - 1]`.
    list: Vec<What>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
    /// The inode of each hard-linked file of a snapshot, by the inode number and device it
    /// had on the source: its names share it, as they did there (tar and rsync -H see them as
    /// one file).
    links: HashMap<(SnapshotId, u64, u64), u64>,
}

/// The key of a hard-linked file's shared inode, if `what` is one.
fn link_key(what: &What) -> Option<(SnapshotId, u64, u64)> {
    match what {
        What::Entry(snap, n) if n.kind != NodeKind::Dir && n.links > 1 && n.inode != 0 => {
            Some((*snap, n.device, n.inode))
        }
        _ => None,
    }
}

/// An open file: its entry and where its chunks lie.
struct Open {
    snapshot: SnapshotId,
    node: Arc<Node>,
    chunks: ChunkMap,
    /// The bytes that can be served: the size the listing gives, when the chunk sizes add up
    /// to it; else what precedes the first chunk the index lacks (the rest is EIO).
    servable: u64,
}

/// The mounted view: see the module documentation.
pub struct MountFs {
    repo: Repository,
    filter: SnapshotFilter,
    layout: RwLock<Arc<Layout>>,
    index: RwLock<Arc<Index>>,
    inodes: RwLock<Inodes>,
    chunks: Mutex<Lru<BlobId, Vec<u8>>>,
    trees: Mutex<Lru<BlobId, Tree>>,
    open: Mutex<HashMap<u64, Arc<Open>>>,
    next_fh: AtomicU64,
    /// The owner of the layout's directories (whoever mounted).
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
    /// Reread the snapshot list on a look at the top at most this often (`None`: never).
    refresh: Option<Duration>,
    refreshed: Mutex<Instant>,
}

/// A stored time as the kernel gets it; one a `SystemTime` cannot hold (a hostile listing's
/// i64::MAX seconds) is shown as the epoch instead of panicking.
fn time(t: Timestamp) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(t.nsec.min(999_999_999)));
    let secs = Duration::from_secs(t.sec.unsigned_abs());
    let at = if t.sec >= 0 {
        UNIX_EPOCH.checked_add(secs)
    } else {
        UNIX_EPOCH.checked_sub(secs)
    };
    at.and_then(|at| at.checked_add(nsec)).unwrap_or(UNIX_EPOCH)
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

/// Whether an entry's name is shown: a safe name ([`crate::repo::tree::name_is_safe`]: not
/// empty, `.`, `..`, nor holding `/` or NUL) the kernel takes (at most 255 bytes). Others,
/// which only a damaged or hostile repository holds, are left out of listings.
fn shown(name: &[u8]) -> bool {
    crate::repo::tree::name_is_safe(name) && name.len() <= 255
}

/// The extended attributes shown: as stored, without the inode flags Lifeboat keeps among
/// them (no file system would accept their name).
fn xattrs(node: &Node) -> impl Iterator<Item = &crate::repo::Xattr> {
    node.xattrs
        .iter()
        .filter(|x| x.name != crate::repo::tree::INODE_FLAGS_XATTR)
}

impl MountFs {
    /// A view of the snapshots of `repo` that pass `filter`, read by `index`.
    pub fn new(
        repo: Repository,
        filter: SnapshotFilter,
        layout: Layout,
        index: Index,
        refresh: Option<Duration>,
    ) -> Self {
        MountFs {
            repo,
            filter,
            layout: RwLock::new(Arc::new(layout)),
            index: RwLock::new(Arc::new(index)),
            inodes: RwLock::new(Inodes {
                list: vec![What::Dir(Dir::Root)],
                by_name: HashMap::new(),
                links: HashMap::new(),
            }),
            chunks: Mutex::new(Lru::new(CHUNK_CACHE)),
            trees: Mutex::new(Lru::new(TREE_CACHE)),
            open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            mounted_at: SystemTime::now(),
            refresh,
            refreshed: Mutex::new(Instant::now()),
        }
    }

    fn what(&self, ino: INodeNo) -> Option<What> {
        let n = usize::try_from(ino.0).ok()?.checked_sub(1)?;
        self.inodes.read().list.get(n).cloned()
    }

    /// The inode of `what`, named `name` in directory `parent`: the one it had if it is the
    /// same thing, else a new one.
    fn intern(&self, parent: u64, name: &[u8], what: What) -> u64 {
        let key = (parent, name.to_vec());
        {
            let inodes = self.inodes.read();
            if let Some(&ino) = inodes.by_name.get(&key) {
                if inodes.list[(ino - 1) as usize].same(&what) {
                    return ino;
                }
            }
        }
        let mut inodes = self.inodes.write();
        if let Some(&ino) = inodes.by_name.get(&key) {
            if inodes.list[(ino - 1) as usize].same(&what) {
                return ino;
            }
        }
        let link = link_key(&what);
        if let Some(&ino) = link.as_ref().and_then(|k| inodes.links.get(k)) {
            inodes.by_name.insert(key, ino);
            return ino;
        }
        inodes.list.push(what);
        let ino = inodes.list.len() as u64;
        inodes.by_name.insert(key, ino);
        if let Some(k) = link {
            inodes.links.insert(k, ino);
        }
        ino
    }

    /// Rereads the snapshot list (and the index, for the new snapshots' data) when the
    /// refresh interval has passed; a failure keeps what was shown, with a warning.
    fn maybe_refresh(&self) {
        let Some(every) = self.refresh else { return };
        {
            let mut last = self.refreshed.lock();
            if last.elapsed() < every {
                return;
            }
            *last = Instant::now();
        }
        let fresh = self.repo.list_snapshots().and_then(|list| {
            let shown: Vec<_> = list
                .snapshots
                .into_iter()
                .filter(|(_, s)| self.filter.matches(s))
                .collect();
            let known = {
                let layout = self.layout.read();
                shown.len() == layout.len()
                    && shown.iter().all(|(id, _)| layout.snapshot(id).is_some())
            };
            if known {
                return Ok(None);
            }
            Ok(Some((Layout::new(shown), self.repo.load_index()?)))
        });
        match fresh {
            Ok(Some((layout, index))) => {
                *self.index.write() = Arc::new(index);
                *self.layout.write() = Arc::new(layout);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not reread the snapshot list; showing the one read before")
            }
        }
    }

    /// A directory listing, from the cache or read and verified.
    fn tree(&self, id: &BlobId) -> Result<Arc<Tree>> {
        if let Some(t) = self.trees.lock().get(id) {
            return Ok(t);
        }
        let index = self.index.read().clone();
        let tree = Arc::new(self.repo.load_tree(&index, id)?);
        let cost = tree
            .nodes
            .iter()
            .map(|n| 128 + n.name.len() + 32 * n.content.len())
            .sum::<usize>();
        self.trees.lock().put(*id, tree.clone(), cost);
        Ok(tree)
    }

    /// A chunk's content, from the cache or read and verified.
    fn chunk(&self, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        if let Some(c) = self.chunks.lock().get(id) {
            return Ok(c);
        }
        let index = self.index.read().clone();
        let data = Arc::new(self.repo.read_blob(&index, id)?);
        self.chunks.lock().put(*id, data.clone(), data.len());
        Ok(data)
    }

    /// The snapshot a directory's entries belong to, and its listing; `None` when `what` is
    /// no directory of a snapshot.
    fn listing_of(&self, what: &What) -> Option<(SnapshotId, BlobId)> {
        match what {
            What::Root(id) => Some((*id, self.layout.read().snapshot(id)?.tree)),
            What::Entry(id, node) if node.kind == NodeKind::Dir => Some((*id, node.subtree?)),
            _ => None,
        }
    }

    fn attr(&self, ino: u64, what: &What) -> Option<FileAttr> {
        let dir = |perm: u16, t: SystemTime| FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: FileType::Directory,
            perm,
            // 1: "unknown", so that find(1) does not count subdirectories by it.
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        Some(match what {
            What::Dir(_) => dir(0o555, self.mounted_at),
            What::Root(id) => {
                let t = self.layout.read().snapshot(id)?.time;
                let t = time(Timestamp {
                    sec: t.timestamp(),
                    nsec: t.timestamp_subsec_nanos(),
                });
                dir(0o555, t)
            }
            What::Link(target) => FileAttr {
                kind: FileType::Symlink,
                size: target.len() as u64,
                perm: 0o777,
                ..dir(0o777, self.mounted_at)
            },
            What::Entry(_, n) => {
                let size = match n.kind {
                    NodeKind::File => n.size,
                    NodeKind::Symlink => n.link_target.as_ref().map_or(0, |t| t.len() as u64),
                    _ => 0,
                };
                FileAttr {
                    ino: INodeNo(ino),
                    size,
                    blocks: size.div_ceil(512),
                    atime: time(n.atime),
                    mtime: time(n.mtime),
                    ctime: time(n.ctime),
                    crtime: time(n.mtime),
                    kind: file_type(n.kind),
                    perm: (n.mode & 0o7777) as u16,
                    nlink: match n.kind {
                        NodeKind::Dir => 1,
                        _ => u32::try_from(n.links).unwrap_or(u32::MAX).max(1),
                    },
                    uid: n.uid,
                    gid: n.gid,
                    rdev: n.rdev as u32,
                    blksize: 128 * 1024,
                    flags: 0,
                }
            }
        })
    }

    fn ttl(what: &What) -> Duration {
        match what {
            What::Dir(_) | What::Link(_) => TTL_LAYOUT,
            What::Root(_) | What::Entry(..) => TTL_SNAPSHOT,
        }
    }

    /// The entries of directory `what` (inode `ino`), without `.` and `..`: name, inode,
    /// type. Unsafe names (`..`, `a/b`, empty) are left out.
    fn children(
        &self,
        ino: u64,
        what: &What,
    ) -> std::result::Result<Vec<(Vec<u8>, u64, FileType)>, Errno> {
        if let What::Dir(d) = what {
            if *d == Dir::Root {
                self.maybe_refresh();
            }
            let layout = self.layout.read().clone();
            let entries = layout.entries(d).ok_or(Errno::ENOENT)?;
            return Ok(entries
                .into_iter()
                .map(|(name, t)| {
                    let (w, kind) = match t {
                        Target::Dir(d) => (What::Dir(d), FileType::Directory),
                        Target::Snapshot(id) => (What::Root(id), FileType::Directory),
                        Target::Link(l) => (What::Link(l), FileType::Symlink),
                    };
                    let child = self.intern(ino, name.as_bytes(), w);
                    (name.into_bytes(), child, kind)
                })
                .collect());
        }
        let (snap, listing) = self.listing_of(what).ok_or(Errno::ENOTDIR)?;
        let tree = self
            .tree(&listing)
            .map_err(|e| self.fail("read the listing of", &snap, &e))?;
        Ok(tree
            .nodes
            .iter()
            .filter(|n| shown(&n.name))
            .map(|n| {
                let kind = file_type(n.kind);
                let child = self.intern(ino, &n.name, What::Entry(snap, Arc::new(n.clone())));
                (n.name.clone(), child, kind)
            })
            .collect())
    }

    /// Logs why an operation on snapshot `snap` failed; the errno to answer with.
    fn fail(&self, what: &str, snap: &SnapshotId, e: &Error) -> Errno {
        tracing::warn!(snapshot = %snap.short(), error = %e, "mount: cannot {what} a directory");
        Errno::EIO
    }

    /// The bytes `offset..offset+size` of open file `f`, every chunk verified.
    fn read_range(&self, f: &Open, offset: u64, size: u32) -> Result<Vec<u8>> {
        let end = offset.saturating_add(u64::from(size)).min(f.node.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        if end > f.servable {
            return Err(Error::corrupt(
                crate::display::bytes(&f.node.name).to_string(),
                format!(
                    "only its first {} bytes can be located through the index (its listing \
                     says {} bytes)",
                    f.servable, f.node.size
                ),
            ));
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (i, range) in f.chunks.span(offset, end) {
            let data = self.chunk(&f.node.content[i])?;
            let part = data.get(range).ok_or_else(|| {
                Error::corrupt(
                    format!("chunk {}", f.node.content[i]),
                    "it is shorter than the index says",
                )
            })?;
            out.extend_from_slice(part);
        }
        Ok(out)
    }
}

impl Filesystem for MountFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(dir) = self.what(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let name = name.as_bytes();
        let found = match &dir {
            What::Dir(d) => {
                if *d == Dir::Root {
                    self.maybe_refresh();
                }
                let layout = self.layout.read().clone();
                std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| layout.lookup(d, n))
                    .map(|t| match t {
                        Target::Dir(d) => What::Dir(d),
                        Target::Snapshot(id) => What::Root(id),
                        Target::Link(l) => What::Link(l),
                    })
            }
            other => {
                let Some((snap, listing)) = self.listing_of(other) else {
                    return reply.error(Errno::ENOTDIR);
                };
                match self.tree(&listing) {
                    Ok(tree) => tree
                        .find(name)
                        .filter(|n| shown(&n.name))
                        .map(|n| What::Entry(snap, Arc::new(n.clone()))),
                    Err(e) => return reply.error(self.fail("read the listing of", &snap, &e)),
                }
            }
        };
        let Some(what) = found else {
            return reply.error(Errno::ENOENT);
        };
        let ino = self.intern(parent.0, name, what.clone());
        match self.attr(ino, &what) {
            Some(attr) => reply.entry(&Self::ttl(&what), &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self
            .what(ino)
            .and_then(|w| Some((self.attr(ino.0, &w)?, w)))
        {
            Some((attr, w)) => reply.attr(&Self::ttl(&w), &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.what(ino) {
            Some(What::Link(target)) => reply.data(target.as_bytes()),
            Some(What::Entry(_, n)) if n.kind == NodeKind::Symlink => {
                reply.data(n.link_target.as_deref().unwrap_or_default())
            }
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let (snapshot, node) = match self.what(ino) {
            Some(What::Entry(s, n)) if n.kind == NodeKind::File => (s, n),
            Some(What::Entry(..)) | Some(What::Link(_)) => return reply.error(Errno::EINVAL),
            Some(_) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENOENT),
        };
        let chunks = {
            let index = self.index.read();
            ChunkMap::new(
                node.content
                    .iter()
                    .map(|id| index.get(id).map(|e| u64::from(e.raw_len))),
            )
        };
        let servable = if chunks.known() == node.content.len() && chunks.known_len() == node.size {
            node.size
        } else {
            tracing::warn!(
                snapshot = %snapshot.short(),
                file = %crate::display::bytes(&node.name),
                "mount: the index does not place all of this file's chunks, or their sizes do not add up to its size: reads past byte {} fail (lifeboat check --read-data tells more)",
                chunks.known_len().min(node.size)
            );
            if chunks.known() == node.content.len() {
                0
            } else {
                chunks.known_len().min(node.size)
            }
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(
            fh,
            Arc::new(Open {
                snapshot,
                node,
                chunks,
                servable,
            }),
        );
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let Some(f) = self.open.lock().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        match self.read_range(&f, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                tracing::warn!(
                    snapshot = %f.snapshot.short(),
                    file = %crate::display::bytes(&f.node.name),
                    offset,
                    error = %e,
                    "mount: a read failed (EIO); no byte of it was returned"
                );
                reply.error(Errno::EIO)
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.open.lock().remove(&fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.what(ino) {
            Some(What::Dir(_) | What::Root(_)) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Some(What::Entry(_, n)) if n.kind == NodeKind::Dir => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Some(_) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(what) = self.what(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let children = match self.children(ino.0, &what) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let dots = [
            (b".".to_vec(), ino.0, FileType::Directory),
            (b"..".to_vec(), ino.0, FileType::Directory),
        ];
        for (i, (name, child, kind)) in dots
            .into_iter()
            .chain(children)
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            if reply.add(INodeNo(child), i as u64 + 1, kind, OsStr::from_bytes(&name)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.inodes.read().list.len() as u64;
        reply.statfs(0, 0, 0, files, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(what) = self.what(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let value = match &what {
            What::Entry(_, n) => xattrs(n)
                .find(|x| x.name == name.as_bytes())
                .map(|x| x.value.clone()),
            _ => None,
        };
        match value {
            None => reply.error(Errno::NO_XATTR),
            Some(v) if size == 0 => reply.size(v.len() as u32),
            Some(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Some(v) => reply.data(&v),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(what) = self.what(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut names = Vec::new();
        if let What::Entry(_, n) = &what {
            for x in xattrs(n).filter(|x| !x.name.is_empty() && !x.name.contains(&0)) {
                names.extend_from_slice(&x.name);
                names.push(0);
            }
        }
        if size == 0 {
            reply.size(names.len() as u32)
        } else if names.len() > size as usize {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&names)
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.what(ino) {
            Some(_) => reply.ok(),
            None => reply.error(Errno::ENOENT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Times before the epoch keep their meaning (seconds down, nanoseconds up), and a time
    /// no `SystemTime` holds is the epoch, not a panic.
    #[test]
    fn stored_times_convert_without_panicking() {
        let t = |sec, nsec| time(Timestamp { sec, nsec });
        assert_eq!(t(1, 5), UNIX_EPOCH + Duration::new(1, 5));
        assert_eq!(
            t(-2, 500),
            UNIX_EPOCH - Duration::from_secs(2) + Duration::from_nanos(500)
        );
        for sec in [i64::MAX, i64::MIN] {
            let _ = t(sec, u32::MAX);
        }
    }
}

//! Walking the source: one thread visits the tree depth-first in name order, decides for each
//! file whether the parent snapshot's chunk list can be reused, queues the others for reading,
//! and sends a stream of events to the tree builder. Lister threads list directories (entries,
//! their metadata and extended attributes, the parent snapshot's listing) ahead of it (see
//! [`prefetch`]). A directory whose entries are all the parent snapshot's keeps the parent's
//! listing, which the builder then need not encode and hash again.
//!
//! Everything is reached through directory file descriptors (see [`dirfd`]): nothing swapped
//! for a symlink while the backup runs is followed, and no path length matters. Below a backup
//! path there is no recursion: the walker keeps an explicit stack of the directories it is in
//! (`Frame`s), with a bounded number of them open (see [`FD_WINDOW`]).

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::dirfd::{self, DirFd, Meta};
use super::pipeline::{FileJob, FileOutcome, Shared};
use super::prefetch::{self, Entering, Filter, Listed, Listing, Prefetcher, StopOnDrop};
use crate::id::BlobId;
use crate::progress::Progress;
use crate::repo::{Node, NodeKind, Tree, Xattr};

/// What the walker tells the builder, in depth-first name order.
pub enum Event {
    /// A directory starts; its entries follow until the matching `Leave`.
    Enter(Node),
    /// The current directory ends. `Some(listing)`: its entries are the parent snapshot's,
    /// node for node, so its listing is that one (the builder need not encode it again).
    Leave(Option<BlobId>),
    /// A finished entry.
    Entry(Node),
    /// A file being read; `previous` is the parent snapshot's content, if it had the file.
    File {
        node: Node,
        path: PathBuf,
        outcome: Receiver<FileOutcome>,
        previous: Option<Vec<crate::id::BlobId>>,
    },
    /// A file reused from the parent snapshot without reading it.
    Unchanged(Node),
    /// An entry that could not be backed up.
    Error { path: PathBuf, error: String },
    /// An entry backed up, with something the operator should know.
    Warning { path: PathBuf, warning: String },
}

/// The backup targets as a tree of path components from `/`.
#[derive(Debug, Default)]
pub struct Targets {
    children: std::collections::BTreeMap<Vec<u8>, Targets>,
    is_target: bool,
}

impl Targets {
    /// Builds the tree from absolute, normalized paths.
    pub fn new(paths: &[PathBuf]) -> Self {
        let mut root = Targets::default();
        for p in paths {
            let mut t = &mut root;
            for c in p.components().skip(1) {
                t = t
                    .children
                    .entry(c.as_os_str().as_bytes().to_vec())
                    .or_default();
            }
            t.is_target = true;
        }
        root
    }
}

/// The walker's settings and caches.
pub struct Walker<'a> {
    pub shared: &'a Shared,
    /// What the walk skips and which directories it enters (shared with the listers, so that
    /// they list exactly the directories the walker takes).
    pub filter: Filter,
    pub full: bool,
    /// Threads listing directories ahead of the walk (see [`prefetch`]; 0: none).
    pub listers: usize,
    /// Batches of events (see [`EVENT_BATCH`]).
    pub events: Sender<Vec<Event>>,
    /// Events not yet sent.
    pub batch: Vec<Event>,
    pub jobs: Sender<FileJob>,
    pub users: HashMap<u32, Option<String>>,
    pub groups: HashMap<u32, Option<String>>,
}

/// The walk was stopped because the builder went away.
pub struct Stopped;

type Step = std::result::Result<(), Stopped>;

/// An entry visited, compared with the parent snapshot's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    /// Not in the snapshot (excluded).
    Skipped,
    /// Its node is the parent snapshot's, exactly.
    Same,
    /// New, changed, or not known to be the same.
    Changed,
}

type Walked = std::result::Result<Visit, Stopped>;

/// What visiting an entry gave: a finished entry, or a directory entered (its entries are
/// visited next, from the walker's stack).
// A frame is moved once, onto the stack; boxing it would cost an allocation per directory.
#[allow(clippy::large_enum_variant)]
enum Visited {
    Done(Visit),
    Entered(Frame),
}

/// Events go to the builder in batches of this many: one channel operation (and at most one
/// wake-up of the builder) per batch instead of per entry. With the channel's capacity (see
/// `backup`) this also bounds how far the walker runs ahead of the builder.
pub const EVENT_BATCH: usize = 256;

/// The walker keeps the directories of the top this many levels of its stack open, and every
/// this-many-th level below: a directory it comes back to whose descriptor was closed is
/// opened again from the nearest open one above it (at most this many levels up), checked to be
/// the directory it listed. A chain 10,000 levels deep holds about 220 descriptors.
pub const FD_WINDOW: usize = 64;

/// A directory being walked: an entry of the walker's stack.
struct Frame {
    /// Its entries not visited yet.
    entries: std::vec::IntoIter<Listed>,
    /// The directory, open (`None`: closed to bound the descriptors held, see [`FD_WINDOW`];
    /// or it could not be opened, and then it has no entries).
    dir: Option<DirFd>,
    /// Its name in its parent and what the parent's listing recorded of it, to open it again.
    name: Vec<u8>,
    meta: Meta,
    /// The device of its backup path.
    dev: u64,
    /// The parent snapshot's listing of it.
    prev_id: Option<BlobId>,
    prev: Option<Tree>,
    /// Whether its own node is the parent snapshot's (if its listing turns out to be).
    node_same: bool,
    /// Whether every entry so far is the parent snapshot's.
    listing_same: bool,
    /// Entries kept so far.
    kept: usize,
}

impl Frame {
    fn record(&mut self, v: Visit) {
        match v {
            Visit::Skipped => {}
            Visit::Same => self.kept += 1,
            Visit::Changed => {
                self.kept += 1;
                self.listing_same = false;
            }
        }
    }
}

impl Walker<'_> {
    fn send(&mut self, e: Event) -> Step {
        self.batch.push(e);
        if self.batch.len() >= EVENT_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Step {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(EVENT_BATCH));
        self.events.send(batch).map_err(|_| Stopped)
    }

    fn error(&mut self, path: &Path, error: impl ToString) -> Step {
        self.send(Event::Error {
            path: path.to_path_buf(),
            error: error.to_string(),
        })
    }

    /// Walks from `/` through the targets, with `listers` threads listing directories ahead.
    pub fn run(&mut self, targets: &Targets, parent: Option<Arc<Tree>>) -> Step {
        let shared = self.shared;
        // A parent listing that cannot be read only costs reading the files again.
        let load = move |id: &BlobId| shared.repo.load_tree(&shared.index, id).ok();
        let ahead = Prefetcher::new(
            self.filter.clone(),
            !self.full,
            prefetch::DEFAULT_BUDGET,
            &load,
        );
        let step = std::thread::scope(|s| {
            for _ in 0..self.listers {
                s.spawn(|| ahead.help());
            }
            let _stop = StopOnDrop(&ahead);
            self.walk_root(targets, parent, &ahead)
        });
        let (by_listers, by_walker) = ahead.counts();
        tracing::debug!(by_listers, by_walker, "directories listed");
        step
    }

    fn walk_root(
        &mut self,
        targets: &Targets,
        parent: Option<Arc<Tree>>,
        ahead: &Prefetcher,
    ) -> Step {
        let root = Path::new("/");
        let fd = match dirfd::open_root() {
            Ok(fd) => Arc::new(fd),
            Err(e) => return self.error(root, e),
        };
        let meta = match dirfd::fstat(fd.as_fd()) {
            Ok(m) => m,
            Err(e) => return self.error(root, e),
        };
        let xattrs = dirfd::xattrs_at(fd.as_fd(), b".", root, &meta);
        let node = self.node_from_meta(b"/".to_vec(), &meta, xattrs);
        if targets.is_target {
            // `/` itself: all of it.
            let listing = ahead.take(Entering {
                key: None,
                parent: &fd,
                name: b".",
                path: root,
                expected: &meta,
                dev: meta.dev,
                prev: None,
            });
            let mut frame = self.enter(node, root, b".".to_vec(), meta, meta.dev, None, listing)?;
            frame.prev = parent.as_deref().cloned();
            self.descend(frame, &mut root.to_path_buf(), ahead)?;
        } else {
            self.send(Event::Enter(node))?;
            self.walk_targets(root, targets, parent.as_deref(), ahead)?;
            self.send(Event::Leave(None))?;
        }
        self.flush()
    }

    /// The ancestors of the targets and the targets below `dir`. (Recursive: its depth is that
    /// of a path given by the operator, below PATH_MAX; the walk below a target is not.)
    fn walk_targets(
        &mut self,
        dir: &Path,
        targets: &Targets,
        parent: Option<&Tree>,
        ahead: &Prefetcher,
    ) -> Step {
        for (name, sub) in &targets.children {
            let path = dir.join(std::ffi::OsStr::from_bytes(name));
            let prev = parent.and_then(|t| t.find(name));
            if sub.is_target {
                self.walk_target(&path, name.clone(), prev, ahead)?;
                continue;
            }
            // An ancestor of a target: record the directory, visit only the targets within
            // (its listing is encoded again each run: a few per run).
            let (meta, xattrs) = match resolve(&path) {
                Ok((parent_fd, at, resolved, meta)) if meta.is_dir() => {
                    let xattrs = dirfd::xattrs_at(parent_fd.as_fd(), &at, &resolved, &meta);
                    (meta, xattrs)
                }
                Ok(_) => {
                    self.error(&path, "not a directory (it contains a backup path)")?;
                    continue;
                }
                Err(e) => {
                    self.error(&path, e)?;
                    continue;
                }
            };
            let node = self.node_from_meta(name.clone(), &meta, xattrs);
            let prev_tree = prev
                .and_then(prefetch::prev_subtree_of)
                .and_then(|id| self.shared.repo.load_tree(&self.shared.index, &id).ok());
            self.send(Event::Enter(node))?;
            self.walk_targets(&path, sub, prev_tree.as_ref(), ahead)?;
            self.send(Event::Leave(None))?;
        }
        Ok(())
    }

    /// Backs up the target at `path` (named `name` in its parent). A path that is a symlink,
    /// or passes through one, is followed (as `find -H` and `cp -H` treat their arguments):
    /// what it leads to is backed up, recorded under the path as given, with a warning.
    fn walk_target(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        prev: Option<&Node>,
        ahead: &Prefetcher,
    ) -> Step {
        let (parent_fd, at, resolved, meta) = match resolve(path) {
            Ok(r) => r,
            Err(e) => return self.error(path, e),
        };
        if resolved != path {
            self.send(Event::Warning {
                path: path.to_path_buf(),
                warning: format!(
                    "the backup path is a symbolic link (or passes through one) to {}: backed up what it leads to, recorded as {}",
                    resolved.display(),
                    path.display()
                ),
            })?;
        }
        let xattrs = dirfd::xattrs_at(parent_fd.as_fd(), &at, &resolved, &meta);
        let entry = Listed {
            name,
            meta: Some(meta),
            xattrs: Some(xattrs),
            key: None,
        };
        let open_as = (at != entry.name).then_some(at);
        let mut path = path.to_path_buf();
        match self.visit(
            &parent_fd,
            open_as.as_deref(),
            entry,
            &path,
            prev,
            None,
            ahead,
        )? {
            Visited::Done(_) => Ok(()),
            Visited::Entered(frame) => self.descend(frame, &mut path, ahead).map(|_| ()),
        }
    }

    /// Walks the directory of `frame` (entered, at `path`) to its end, with an explicit stack
    /// of the directories below it: no recursion, whatever the depth. `path` is the path of
    /// the directory on top of the stack.
    fn descend(&mut self, frame: Frame, path: &mut PathBuf, ahead: &Prefetcher) -> Walked {
        let mut stack = vec![frame];
        loop {
            let top = stack.len() - 1;
            let Some(entry) = stack[top].entries.next() else {
                // The directory is done.
                let Some(frame) = stack.pop() else {
                    return Ok(Visit::Changed);
                };
                let same = frame.listing_same
                    && frame
                        .prev
                        .as_ref()
                        .is_some_and(|t| t.nodes.len() == frame.kept);
                self.send(Event::Leave(if same { frame.prev_id } else { None }))?;
                let v = if same && frame.node_same {
                    Visit::Same
                } else {
                    Visit::Changed
                };
                match stack.last_mut() {
                    Some(parent) => {
                        path.pop();
                        parent.record(v);
                        continue;
                    }
                    None => return Ok(v),
                }
            };
            let dir = match dir_of_top(&mut stack) {
                Ok(dir) => dir,
                Err(e) => {
                    self.error(
                        path,
                        format!("cannot open the directory again to back up the rest of it: {e}"),
                    )?;
                    let frame = &mut stack[top];
                    frame.entries = Vec::new().into_iter();
                    frame.listing_same = false;
                    continue;
                }
            };
            path.push(std::ffi::OsStr::from_bytes(&entry.name));
            let frame = &stack[top];
            let prev = frame.prev.as_ref().and_then(|t| t.find(&entry.name));
            match self.visit(&dir, None, entry, path, prev, Some(frame.dev), ahead)? {
                Visited::Done(v) => {
                    path.pop();
                    stack[top].record(v);
                }
                Visited::Entered(frame) => {
                    stack.push(frame);
                    // Close a directory that falls out of the window (not a checkpoint).
                    let n = stack.len() - 1;
                    if n >= FD_WINDOW && (n - FD_WINDOW) % FD_WINDOW != 0 {
                        stack[n - FD_WINDOW].dir = None;
                    }
                }
            }
        }
    }

    /// Visits `entry` of the open directory `dir` (named `open_as` there, if not its own
    /// name), at `path`: a finished entry, or a directory entered.
    #[allow(clippy::too_many_arguments)]
    fn visit(
        &mut self,
        dir: &DirFd,
        open_as: Option<&[u8]>,
        entry: Listed,
        path: &Path,
        prev: Option<&Node>,
        root_dev: Option<u64>,
        ahead: &Prefetcher,
    ) -> std::result::Result<Visited, Stopped> {
        if self.filter.skips(path) {
            return Ok(Visited::Done(Visit::Skipped));
        }
        let Listed {
            name,
            meta,
            xattrs,
            key,
        } = entry;
        let meta = match meta {
            Some(m) => m,
            None => match dirfd::stat_at(dir.as_fd(), open_as.unwrap_or(&name)) {
                Ok(m) => m,
                Err(e) => return self.error(path, e).map(|()| Visited::Done(Visit::Changed)),
            },
        };
        if self.filter.skips_object(&meta) {
            return Ok(Visited::Done(Visit::Skipped));
        }
        let xattrs = xattrs.unwrap_or_else(|| {
            dirfd::xattrs_at(dir.as_fd(), open_as.unwrap_or(&name), path, &meta)
        });
        Progress::add(&self.shared.progress.entries, 1);
        let mut node = self.node_from_meta(name, &meta, xattrs);
        let done = |v: Visit| Ok(Visited::Done(v));
        match node.kind {
            NodeKind::Dir => {
                let dev = root_dev.unwrap_or(meta.dev);
                if !self.filter.enters(&meta, dev) {
                    // A mount point: kept as an empty directory, not descended into.
                    self.send(Event::Enter(node))?;
                    self.send(Event::Leave(None))?;
                    return done(Visit::Changed);
                }
                let prev_id = prev.and_then(prefetch::prev_subtree_of);
                // This directory's own node is the parent snapshot's if its metadata is and
                // its listing turns out to be.
                let node_same = match prev {
                    Some(p) if prev_id.is_some() => {
                        node.subtree = prev_id;
                        let same = *p == node;
                        node.subtree = None;
                        same
                    }
                    _ => false,
                };
                let listing = ahead.take(Entering {
                    key,
                    parent: dir,
                    name: open_as.unwrap_or(&node.name),
                    path,
                    expected: &meta,
                    dev,
                    prev: prev_id,
                });
                let at = open_as.unwrap_or(&node.name).to_vec();
                let mut frame = self.enter(node, path, at, meta, dev, prev_id, listing)?;
                frame.node_same = node_same;
                Ok(Visited::Entered(frame))
            }
            NodeKind::File => {
                let prev_file = prev.filter(|p| p.kind == NodeKind::File);
                if !self.full {
                    if let Some(p) = prev_file {
                        if unchanged(p, &node)
                            && p.content.iter().all(|c| self.shared.index.contains(c))
                        {
                            node.content = p.content.clone();
                            let same = *p == node;
                            self.send(Event::Unchanged(node))?;
                            return done(if same { Visit::Same } else { Visit::Changed });
                        }
                    }
                }
                let (tx, rx) = crossbeam_channel::bounded(1);
                let job = FileJob {
                    dir: dir.clone(),
                    name: open_as.unwrap_or(&node.name).to_vec(),
                    inode: node.inode,
                    reply: tx,
                };
                if self.jobs.send(job).is_err() {
                    return Err(Stopped);
                }
                self.send(Event::File {
                    node,
                    path: path.to_path_buf(),
                    outcome: rx,
                    previous: prev_file.map(|p| p.content.clone()),
                })?;
                done(Visit::Changed)
            }
            NodeKind::Symlink => {
                match dirfd::readlink_at(dir.as_fd(), open_as.unwrap_or(&node.name)) {
                    Ok(t) => node.link_target = Some(t),
                    Err(e) => {
                        self.error(path, format!("cannot read symlink: {e}"))?;
                        return done(Visit::Changed);
                    }
                }
                self.entry(node, prev).map(Visited::Done)
            }
            _ => self.entry(node, prev).map(Visited::Done),
        }
    }

    /// Sends a directory's `Enter` (and the error that cut its listing short, if any) and
    /// makes its frame.
    #[allow(clippy::too_many_arguments)]
    fn enter(
        &mut self,
        node: Node,
        path: &Path,
        name: Vec<u8>,
        meta: Meta,
        dev: u64,
        prev_id: Option<BlobId>,
        listing: Listing,
    ) -> std::result::Result<Frame, Stopped> {
        let Listing {
            entries,
            error,
            prev,
            dir,
        } = listing;
        self.send(Event::Enter(node))?;
        let mut listing_same = prev.is_some();
        if let Some(e) = error {
            listing_same = false;
            self.error(path, format!("cannot list directory: {e}"))?;
        }
        Ok(Frame {
            entries: entries.into_iter(),
            dir,
            name,
            meta,
            dev,
            prev_id,
            prev,
            node_same: false,
            listing_same,
            kept: 0,
        })
    }

    /// Sends a finished entry (not a file or directory).
    fn entry(&mut self, node: Node, prev: Option<&Node>) -> Walked {
        let same = prev == Some(&node);
        self.send(Event::Entry(node))?;
        Ok(if same { Visit::Same } else { Visit::Changed })
    }

    /// The node for an entry, with ownership names and extended attributes.
    pub fn node_from_meta(&mut self, name: Vec<u8>, meta: &Meta, xattrs: Vec<Xattr>) -> Node {
        let mut node = node_from_metadata(name, meta);
        node.user = self
            .users
            .entry(node.uid)
            .or_insert_with(|| user_name(node.uid))
            .clone();
        node.group = self
            .groups
            .entry(node.gid)
            .or_insert_with(|| group_name(node.gid))
            .clone();
        node.xattrs = xattrs;
        node
    }
}

/// The name of user `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The name of group `gid`, if it has one.
pub fn group_name(gid: u32) -> Option<String> {
    nix::unistd::Group::from_gid(gid.into())
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// The open directory of the top of `stack`, opened again (with those above it that were
/// closed, from the nearest one open) if it was closed (see [`FD_WINDOW`]).
fn dir_of_top(stack: &mut [Frame]) -> io::Result<DirFd> {
    let top = stack.len() - 1;
    if let Some(dir) = &stack[top].dir {
        return Ok(dir.clone());
    }
    let Some(base) = (0..top).rev().find(|&i| stack[i].dir.is_some()) else {
        return Err(io::Error::other("no directory above it is open"));
    };
    let mut dir = stack[base].dir.clone();
    for frame in &mut stack[base + 1..=top] {
        let Some(parent) = &dir else {
            return Err(io::Error::other("no directory above it is open"));
        };
        let fd = Arc::new(dirfd::open_dir_expecting(
            parent.as_fd(),
            &frame.name,
            &frame.meta,
        )?);
        frame.dir = Some(fd.clone());
        dir = Some(fd);
    }
    dir.ok_or_else(|| io::Error::other("no directory above it is open"))
}

/// Resolves the absolute, normalized `path` (following symlinks, as the operator gave it):
/// the open directory it is in, its name there, the resolved path and its metadata. The
/// resolved path is then opened from `/` without following any symlink.
fn resolve(path: &Path) -> io::Result<(DirFd, Vec<u8>, PathBuf, Meta)> {
    let resolved = std::fs::canonicalize(path)?;
    let (parent, name) = match (resolved.parent(), resolved.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), n.as_bytes().to_vec()),
        _ => (PathBuf::from("/"), b".".to_vec()),
    };
    let fd = Arc::new(dirfd::open_dir_path(&parent)?);
    let meta = dirfd::stat_at(fd.as_fd(), &name)?;
    Ok((fd, name, resolved, meta))
}

/// Whether a file is unchanged since the parent snapshot: same size, mtime, ctime and inode.
fn unchanged(prev: &Node, now: &Node) -> bool {
    prev.size == now.size
        && prev.mtime == now.mtime
        && prev.ctime == now.ctime
        && prev.inode == now.inode
}

/// The node for `meta`, without ownership names and xattrs.
pub fn node_from_metadata(name: Vec<u8>, meta: &Meta) -> Node {
    let kind = meta.kind();
    let mut node = Node::new(name, kind);
    node.mode = meta.mode & 0o7777;
    node.uid = meta.uid;
    node.gid = meta.gid;
    node.size = if kind == NodeKind::File { meta.size } else { 0 };
    node.mtime = meta.mtime;
    node.atime = meta.atime;
    node.ctime = meta.ctime;
    node.inode = meta.ino;
    node.device = meta.dev;
    node.links = meta.nlink;
    node.rdev = meta.rdev;
    node
}

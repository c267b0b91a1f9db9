//! Walking the source: one thread visits the tree depth-first in name order, decides for each
//! file whether the parent snapshot's chunk list can be reused, queues the others for reading,
//! and sends a stream of events to the tree builder.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::exclude::Excludes;
use super::pipeline::{FileJob, FileOutcome, Shared};
use crate::progress::Progress;
use crate::repo::{Node, NodeKind, Timestamp, Tree, Xattr};

/// What the walker tells the builder, in depth-first name order.
pub enum Event {
    /// A directory starts; its entries follow until the matching `Leave`.
    Enter(Node),
    /// The current directory ends.
    Leave,
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
    pub excludes: Excludes,
    pub exclude_paths: Vec<PathBuf>,
    pub one_file_system: bool,
    pub full: bool,
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

/// A directory's entries are stat'ed as it is listed, up to this many (about 200 bytes each
/// while the directory is walked); entries beyond are stat'ed one by one as they are visited.
const LISTED_STAT_MAX: usize = 65_536;

/// Events go to the builder in batches of this many: one channel operation (and at most one
/// wake-up of the builder) per batch instead of per entry. With the channel's capacity (see
/// `backup`) this also bounds how far the walker runs ahead of the builder.
pub const EVENT_BATCH: usize = 256;

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

    /// Walks from `/` through the targets.
    pub fn run(&mut self, targets: &Targets, parent: Option<Arc<Tree>>) -> Step {
        let root = Path::new("/");
        let meta = match fs::symlink_metadata(root) {
            Ok(m) => m,
            Err(e) => return self.error(root, e),
        };
        let node = self.node_from_meta(root, b"/".to_vec(), &meta);
        self.send(Event::Enter(node))?;
        self.walk_targets(root, targets, parent.as_deref())?;
        self.send(Event::Leave)?;
        self.flush()
    }

    fn walk_targets(&mut self, dir: &Path, targets: &Targets, parent: Option<&Tree>) -> Step {
        for (name, sub) in &targets.children {
            let path = dir.join(std::ffi::OsStr::from_bytes(name));
            let prev = parent.and_then(|t| t.find(name));
            if sub.is_target {
                self.walk_entry(&path, name, prev, None, None)?;
                continue;
            }
            // An ancestor of a target: record the directory, visit only the targets within.
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => m,
                Ok(_) => {
                    self.error(&path, "not a directory (it contains a backup path)")?;
                    continue;
                }
                Err(e) => {
                    self.error(&path, e)?;
                    continue;
                }
            };
            let node = self.node_from_meta(&path, name.clone(), &meta);
            let prev_tree = self.parent_subtree(prev);
            self.send(Event::Enter(node))?;
            self.walk_targets(&path, sub, prev_tree.as_deref())?;
            self.send(Event::Leave)?;
        }
        Ok(())
    }

    fn parent_subtree(&self, prev: Option<&Node>) -> Option<Arc<Tree>> {
        let node = prev.filter(|n| n.kind == NodeKind::Dir)?;
        let id = node.subtree?;
        // A parent listing that cannot be read only costs reading the files again.
        self.shared
            .repo
            .load_tree(&self.shared.index, &id)
            .ok()
            .map(Arc::new)
    }

    fn walk_entry(
        &mut self,
        path: &Path,
        name: &[u8],
        prev: Option<&Node>,
        root_dev: Option<u64>,
        listed: Option<Metadata>,
    ) -> Step {
        if self.excludes.is_excluded(path) || self.exclude_paths.iter().any(|p| p == path) {
            return Ok(());
        }
        let meta = match listed.map_or_else(|| fs::symlink_metadata(path), Ok) {
            Ok(m) => m,
            Err(e) => return self.error(path, e),
        };
        Progress::add(&self.shared.progress.entries, 1);
        let mut node = self.node_from_meta(path, name.to_vec(), &meta);
        match node.kind {
            NodeKind::Dir => {
                let dev = root_dev.unwrap_or(meta.dev());
                if self.one_file_system && meta.dev() != dev {
                    // A mount point: kept as an empty directory, not descended into.
                    self.send(Event::Enter(node))?;
                    return self.send(Event::Leave);
                }
                let prev_tree = self.parent_subtree(prev);
                let mut entries = Vec::new();
                let mut read_error = None;
                match fs::read_dir(path) {
                    Ok(rd) => {
                        for entry in rd {
                            match entry {
                                Ok(e) => {
                                    // Stat relative to the open directory (no lookup of the
                                    // whole path), for the first LISTED_STAT_MAX entries; the
                                    // rest (and any that fail here) are stat'ed by path when
                                    // visited, which also reports the error.
                                    let meta = if entries.len() < LISTED_STAT_MAX {
                                        e.metadata().ok()
                                    } else {
                                        None
                                    };
                                    entries.push((e.file_name().as_bytes().to_vec(), meta));
                                }
                                Err(e) => {
                                    read_error = Some(e);
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => read_error = Some(e),
                }
                entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                self.send(Event::Enter(node))?;
                if let Some(e) = read_error {
                    self.error(path, format!("cannot list directory: {e}"))?;
                }
                for (n, meta) in entries {
                    let child = path.join(std::ffi::OsStr::from_bytes(&n));
                    let child_prev = prev_tree.as_ref().and_then(|t| t.find(&n));
                    self.walk_entry(&child, &n, child_prev, Some(dev), meta)?;
                }
                self.send(Event::Leave)
            }
            NodeKind::File => {
                let prev_file = prev.filter(|p| p.kind == NodeKind::File);
                if !self.full {
                    if let Some(p) = prev_file {
                        if unchanged(p, &node)
                            && p.content.iter().all(|c| self.shared.index.contains(c))
                        {
                            node.content = p.content.clone();
                            return self.send(Event::Unchanged(node));
                        }
                    }
                }
                let (tx, rx) = crossbeam_channel::bounded(1);
                let job = FileJob {
                    path: path.to_path_buf(),
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
                })
            }
            NodeKind::Symlink => {
                match fs::read_link(path) {
                    Ok(t) => node.link_target = Some(t.as_os_str().as_bytes().to_vec()),
                    Err(e) => return self.error(path, format!("cannot read symlink: {e}")),
                }
                self.send(Event::Entry(node))
            }
            _ => self.send(Event::Entry(node)),
        }
    }

    /// The node for an entry, with ownership names and extended attributes.
    pub fn node_from_meta(&mut self, path: &Path, name: Vec<u8>, meta: &Metadata) -> Node {
        let mut node = node_from_metadata(name, meta);
        node.user = self
            .users
            .entry(node.uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(node.uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone();
        node.group = self
            .groups
            .entry(node.gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(node.gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone();
        node.xattrs = read_xattrs(path);
        node
    }
}

/// Whether a file is unchanged since the parent snapshot: same size, mtime, ctime and inode.
fn unchanged(prev: &Node, now: &Node) -> bool {
    prev.size == now.size
        && prev.mtime == now.mtime
        && prev.ctime == now.ctime
        && prev.inode == now.inode
}

fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let mut out = Vec::new();
    // Filesystems without xattr support report an error: no attributes then.
    if let Ok(names) = xattr::list(path) {
        for name in names {
            if let Ok(Some(value)) = xattr::get(path, &name) {
                out.push(Xattr {
                    name: name.as_bytes().to_vec(),
                    value,
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The node for `meta`, without ownership names and xattrs.
pub fn node_from_metadata(name: Vec<u8>, meta: &Metadata) -> Node {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    };
    let mut node = Node::new(name, kind);
    node.mode = meta.mode() & 0o7777;
    node.uid = meta.uid();
    node.gid = meta.gid();
    node.size = if kind == NodeKind::File {
        meta.size()
    } else {
        0
    };
    node.mtime = Timestamp {
        sec: meta.mtime(),
        nsec: meta.mtime_nsec() as u32,
    };
    node.atime = Timestamp {
        sec: meta.atime(),
        nsec: meta.atime_nsec() as u32,
    };
    node.ctime = Timestamp {
        sec: meta.ctime(),
        nsec: meta.ctime_nsec() as u32,
    };
    node.inode = meta.ino();
    node.device = meta.dev();
    node.links = meta.nlink();
    node.rdev = meta.rdev();
    node
}

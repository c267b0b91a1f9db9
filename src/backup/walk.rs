//! Walking the source: one thread visits the tree depth-first in name order, decides for each
//! file whether the parent snapshot's chunk list can be reused, queues the others for reading,
//! and sends a stream of events to the tree builder. Lister threads list directories (entries,
//! their metadata and extended attributes, the parent snapshot's listing) ahead of it (see
//! [`prefetch`]). A directory whose entries are all the parent snapshot's keeps the parent's
//! listing, which the builder then need not encode and hash again.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::pipeline::{FileJob, FileOutcome, Shared};
use super::prefetch::{self, Filter, Listing, Prefetcher, StopOnDrop};
use crate::id::BlobId;
use crate::progress::Progress;
use crate::repo::{Node, NodeKind, Timestamp, Tree, Xattr};

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

    /// Walks from `/` through the targets, with `listers` threads listing directories ahead.
    pub fn run(&mut self, targets: &Targets, parent: Option<Arc<Tree>>) -> Step {
        let shared = self.shared;
        // A parent listing that cannot be read only costs reading the files again.
        let load = move |id: &BlobId| shared.repo.load_tree(&shared.index, id).ok();
        let ahead = Prefetcher::new(self.filter.clone(), prefetch::DEFAULT_BUDGET, &load);
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
        let meta = match fs::symlink_metadata(root) {
            Ok(m) => m,
            Err(e) => return self.error(root, e),
        };
        let node = self.node_from_meta(root, b"/".to_vec(), &meta, None);
        self.send(Event::Enter(node))?;
        self.walk_targets(root, targets, parent.as_deref(), ahead)?;
        self.send(Event::Leave(None))?;
        self.flush()
    }

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
                self.walk_entry(&path, name.clone(), prev, None, None, ahead)?;
                continue;
            }
            // An ancestor of a target: record the directory, visit only the targets within
            // (its listing is encoded again each run: a few per run).
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
            let node = self.node_from_meta(&path, name.clone(), &meta, None);
            let prev_tree = prev
                .and_then(prefetch::prev_subtree_of)
                .and_then(|id| self.shared.repo.load_tree(&self.shared.index, &id).ok());
            self.send(Event::Enter(node))?;
            self.walk_targets(&path, sub, prev_tree.as_ref(), ahead)?;
            self.send(Event::Leave(None))?;
        }
        Ok(())
    }

    fn walk_entry(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        prev: Option<&Node>,
        root_dev: Option<u64>,
        listed: Option<(Metadata, Option<Vec<Xattr>>)>,
        ahead: &Prefetcher,
    ) -> Walked {
        if self.filter.skips(path) {
            return Ok(Visit::Skipped);
        }
        let (meta, xattrs) = match listed {
            Some(listed) => listed,
            None => match fs::symlink_metadata(path) {
                Ok(m) => (m, None),
                Err(e) => return self.error(path, e).map(|()| Visit::Changed),
            },
        };
        Progress::add(&self.shared.progress.entries, 1);
        let mut node = self.node_from_meta(path, name, &meta, xattrs);
        match node.kind {
            NodeKind::Dir => {
                let dev = root_dev.unwrap_or(meta.dev());
                if !self.filter.enters(&meta, dev) {
                    // A mount point: kept as an empty directory, not descended into.
                    self.send(Event::Enter(node))?;
                    self.send(Event::Leave(None))?;
                    return Ok(Visit::Changed);
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
                let Listing {
                    entries,
                    error,
                    prev: prev_tree,
                } = ahead.take(path, dev, prev_id);
                self.send(Event::Enter(node))?;
                let mut listing_same = prev_tree.is_some();
                if let Some(e) = error {
                    listing_same = false;
                    self.error(path, format!("cannot list directory: {e}"))?;
                }
                let mut kept = 0;
                for prefetch::Listed { name, meta, xattrs } in entries {
                    let child = path.join(std::ffi::OsStr::from_bytes(&name));
                    let child_prev = prev_tree.as_ref().and_then(|t| t.find(&name));
                    let listed = meta.map(|m| (m, xattrs));
                    match self.walk_entry(&child, name, child_prev, Some(dev), listed, ahead)? {
                        Visit::Skipped => {}
                        Visit::Same => kept += 1,
                        Visit::Changed => {
                            kept += 1;
                            listing_same = false;
                        }
                    }
                }
                // Every entry kept is the parent's (names are unique), and as many as the
                // parent's listing had: the same listing.
                let same = listing_same && prev_tree.is_some_and(|t| t.nodes.len() == kept);
                self.send(Event::Leave(if same { prev_id } else { None }))?;
                Ok(if same && node_same {
                    Visit::Same
                } else {
                    Visit::Changed
                })
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
                            return Ok(if same { Visit::Same } else { Visit::Changed });
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
                })?;
                Ok(Visit::Changed)
            }
            NodeKind::Symlink => {
                match fs::read_link(path) {
                    Ok(t) => node.link_target = Some(t.as_os_str().as_bytes().to_vec()),
                    Err(e) => {
                        self.error(path, format!("cannot read symlink: {e}"))?;
                        return Ok(Visit::Changed);
                    }
                }
                self.entry(node, prev)
            }
            _ => self.entry(node, prev),
        }
    }

    /// Sends a finished entry (not a file or directory).
    fn entry(&mut self, node: Node, prev: Option<&Node>) -> Walked {
        let same = prev == Some(&node);
        self.send(Event::Entry(node))?;
        Ok(if same { Visit::Same } else { Visit::Changed })
    }

    /// The node for an entry, with ownership names and extended attributes (read unless
    /// `xattrs` has them already).
    pub fn node_from_meta(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        meta: &Metadata,
        xattrs: Option<Vec<Xattr>>,
    ) -> Node {
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
        node.xattrs = xattrs.unwrap_or_else(|| prefetch::read_xattrs(path));
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

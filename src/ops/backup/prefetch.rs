//! Listing directories ahead of the walker, on other threads.
//!
//! The walker visits the tree in one depth-first order (the order of the snapshot's listings),
//! but most of its time went to system calls (listing each directory, stat-ing every entry,
//! listing extended attributes) and to loading the parent snapshot's listing of each directory.
//! Lister threads do that part ahead of it: each directory listed
//! (by a lister or by the walker) queues its subdirectories, and the listers take the most
//! recently queued first, which follows the walker's own depth-first order. The walker
//! [`take`](Prefetcher::take)s a directory's listing when it enters the directory: ready, being
//! listed (it waits), or not started (it lists the directory itself, so it never waits for a
//! lister that is not working on what it needs).
//!
//! Memory is bounded: listers stop while the listings ready and not yet taken hold
//! `budget` entries, and a directory's entries are stat'ed ahead only up to
//! [`STAT_AHEAD_MAX`]; the walker stats the rest itself as it visits them. A lister only queues
//! a subdirectory the walker will enter (not excluded, not the repository, on the same
//! filesystem under `--one-file-system`), so nothing it lists is left untaken.
//!
//! A directory is opened relative to its parent's descriptor (see [`dirfd`]), and its listing
//! hands the walker the open directory. Listings ahead are capped in number too
//! ([`MAX_LISTINGS_AHEAD`]: each holds a descriptor), and a queued directory holds its parent
//! weakly, so the directories the walker has closed are not kept open by the queue.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use super::dirfd::{self, DirFd, Meta};
use super::exclude::Excludes;
use crate::id::BlobId;
use crate::repo::{Node, NodeKind, Tree, Xattr};

/// A directory's entries are stat'ed ahead up to this many (with the listing held, about 250
/// bytes each); entries beyond are stat'ed by the walker as it visits them.
pub const STAT_AHEAD_MAX: usize = 65_536;

/// Listed entries held ready for the walker at most (about 250 bytes each: about 1 MiB). More
/// made no difference to a no-change backup's time and cost a full backup 5 MiB of peak memory
/// (the listers run ahead while the walker waits for files being read).
pub const DEFAULT_BUDGET: usize = 4096;

/// Listings held ready for the walker at most, whatever their size: each holds its
/// directory open (a chain of empty directories would otherwise hold thousands of
/// descriptors).
pub const MAX_LISTINGS_AHEAD: usize = 256;

/// One entry of a listed directory.
#[derive(Debug)]
pub struct Listed {
    pub name: Vec<u8>,
    /// Its metadata (not following a symlink), unless stat-ing failed or was left to the walker.
    pub meta: Option<Meta>,
    /// Its extended attributes, when `meta` is known.
    pub xattrs: Option<Vec<Xattr>>,
    /// A subdirectory queued for the listers: the key to [`take`](Prefetcher::take) its
    /// listing by.
    pub key: Option<u64>,
}

/// A directory's entries in name order, the error that cut the listing short, if any, and the
/// parent snapshot's listing of the directory, if it had one that could be read.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Listed>,
    pub error: Option<io::Error>,
    pub prev: Option<Tree>,
    /// The directory, open (`None` if it could not be opened).
    pub dir: Option<DirFd>,
}

/// Loads a listing of the parent snapshot (`None`: it cannot be read, which only costs reading
/// the directory's files again).
pub type LoadTree<'a> = dyn Fn(&BlobId) -> Option<Tree> + Sync + 'a;

/// A directory's path as a chain of names shared with its subdirectories' (a queued directory
/// holds one link, not a copy of its whole path: in a chain 10,000 levels deep, paths are
/// 20 KB long). The first link holds a whole absolute path.
#[derive(Debug)]
pub struct DirPath {
    parent: Option<Arc<DirPath>>,
    name: Vec<u8>,
}

impl DirPath {
    /// The link for a directory at `path`.
    pub fn root(path: &Path) -> Arc<DirPath> {
        Arc::new(DirPath {
            parent: None,
            name: path.as_os_str().as_bytes().to_vec(),
        })
    }

    fn child(self: &Arc<Self>, name: &[u8]) -> Arc<DirPath> {
        Arc::new(DirPath {
            parent: Some(self.clone()),
            name: name.to_vec(),
        })
    }

    /// The whole path.
    pub fn path(&self) -> PathBuf {
        let mut names = vec![&self.name[..]];
        let mut at = self;
        while let Some(p) = &at.parent {
            names.push(&p.name);
            at = p;
        }
        let mut out = PathBuf::new();
        for n in names.into_iter().rev() {
            out.push(std::ffi::OsStr::from_bytes(n));
        }
        out
    }
}

impl Drop for DirPath {
    /// Drops a chain of links without recursion (a chain may be thousands of links long).
    fn drop(&mut self) {
        let mut next = self.parent.take();
        while let Some(link) = next {
            next = match Arc::try_unwrap(link) {
                Ok(mut owned) => owned.parent.take(),
                Err(_) => None,
            };
        }
    }
}

/// A directory to list: its parent (only while the parent is open: the walker closes the
/// directories it is done with, and a directory whose parent is closed is left to the walker),
/// its path, what its parent's listing recorded of it, the device of its backup path and the
/// parent snapshot's listing of it.
struct Job {
    key: u64,
    parent: Weak<std::os::fd::OwnedFd>,
    path: Arc<DirPath>,
    expected: Meta,
    dev: u64,
    prev: Option<BlobId>,
}

/// A directory the walker enters: what [`Prefetcher::take`] needs to find or make its listing.
pub struct Entering<'p> {
    /// From its [`Listed`] entry, if it was queued.
    pub key: Option<u64>,
    /// Its parent, open.
    pub parent: &'p DirFd,
    pub name: &'p [u8],
    /// Its whole path.
    pub path: &'p Path,
    /// What its parent's listing recorded of it.
    pub expected: &'p Meta,
    /// The device of its backup path.
    pub dev: u64,
    /// The parent snapshot's listing of it.
    pub prev: Option<BlobId>,
}

/// Which subdirectories the walker enters.
#[derive(Debug, Clone)]
pub struct Filter {
    pub excludes: Excludes,
    /// Paths never backed up (the repository itself).
    pub exclude_paths: Vec<PathBuf>,
    /// Directories never backed up, by device and inode, whatever path reaches them (the
    /// repository, also below a backup path that is a symlink, or through a bind mount).
    pub exclude_objects: Vec<(u64, u64)>,
    pub one_file_system: bool,
}

impl Filter {
    /// Whether the walker skips the entry at `path` altogether.
    pub fn skips(&self, path: &Path) -> bool {
        self.excludes.is_excluded(path) || self.exclude_paths.iter().any(|p| p == path)
    }

    /// Whether the walker skips the entry `meta` describes altogether.
    pub fn skips_object(&self, meta: &Meta) -> bool {
        meta.is_dir() && self.exclude_objects.contains(&(meta.dev, meta.ino))
    }

    /// Whether the walker enters `meta`'s directory (one it does not skip), below a backup
    /// path on device `dev` (under `--one-file-system`, not a mount point).
    pub fn enters(&self, meta: &Meta, dev: u64) -> bool {
        meta.is_dir() && !(self.one_file_system && meta.dev != dev)
    }
}

enum Slot {
    /// Queued for a lister, not started.
    Queued,
    /// A lister is listing it.
    Running,
    Done(Listing),
}

struct State {
    /// Directories to list: the last one first.
    queue: Vec<Job>,
    slots: HashMap<u64, Slot>,
    /// Entries in listings done and not yet taken.
    held: usize,
    /// Listings done and not yet taken.
    held_listings: usize,
    stop: bool,
    /// Whether the walker waits for a listing (a wake-up is a system call: only when needed).
    walker_waits: bool,
    /// Listers waiting for work or for the walker to take listings.
    listers_wait: usize,
}

impl State {
    fn full(&self, budget: usize) -> bool {
        self.held >= budget || self.held_listings >= MAX_LISTINGS_AHEAD
    }
}

/// Lists directories ahead of the walker; see the module documentation.
pub struct Prefetcher<'a> {
    filter: Filter,
    /// Whether an entry the parent snapshot has with the same inode, ctime, mtime and size
    /// takes its extended attributes from there (not under `--full`).
    trust_parent: bool,
    budget: usize,
    load: &'a LoadTree<'a>,
    state: Mutex<State>,
    for_walker: Condvar,
    for_listers: Condvar,
    next_key: AtomicU64,
    by_listers: AtomicUsize,
    by_walker: AtomicUsize,
}

impl<'a> Prefetcher<'a> {
    pub fn new(filter: Filter, trust_parent: bool, budget: usize, load: &'a LoadTree<'a>) -> Self {
        Prefetcher {
            filter,
            trust_parent,
            budget: budget.max(1),
            load,
            state: Mutex::new(State {
                queue: Vec::new(),
                slots: HashMap::new(),
                held: 0,
                held_listings: 0,
                stop: false,
                walker_waits: false,
                listers_wait: 0,
            }),
            for_walker: Condvar::new(),
            for_listers: Condvar::new(),
            next_key: AtomicU64::new(0),
            by_listers: AtomicUsize::new(0),
            by_walker: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every update is a
        // single assignment or push), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The listing of the directory the walker enters. Its subdirectories are queued for the
    /// listers.
    pub fn take(&self, dir: Entering<'_>) -> Listing {
        if let Some(key) = dir.key {
            let mut g = self.lock();
            loop {
                match g.slots.remove(&key) {
                    Some(Slot::Done(listing)) => {
                        let was_full = g.full(self.budget);
                        g.held -= listing.entries.len();
                        g.held_listings -= 1;
                        let wake = was_full && !g.full(self.budget) && g.listers_wait > 0;
                        drop(g);
                        if wake {
                            self.for_listers.notify_all();
                        }
                        return listing;
                    }
                    Some(Slot::Running) => {
                        g.slots.insert(key, Slot::Running);
                        g.walker_waits = true;
                        g = self.for_walker.wait(g).unwrap_or_else(|e| e.into_inner());
                        g.walker_waits = false;
                    }
                    // Queued (the listers skip it now that its slot is gone) or never queued.
                    Some(Slot::Queued) | None => break,
                }
            }
        }
        self.by_walker.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            key: 0,
            parent: Weak::new(),
            path: DirPath::root(dir.path),
            expected: *dir.expected,
            dev: dir.dev,
            prev: dir.prev,
        };
        let (listing, subdirs) = self.list(dir.parent, dir.name, dir.path, &job);
        if !subdirs.is_empty() {
            let mut g = self.lock();
            Self::push(&mut g, subdirs);
            let wake = g.listers_wait > 0;
            drop(g);
            if wake {
                self.for_listers.notify_all();
            }
        }
        listing
    }

    /// A lister thread: lists queued directories until [`stop`](Self::stop).
    pub fn help(&self) {
        let mut g = self.lock();
        loop {
            if g.stop {
                return;
            }
            if g.full(self.budget) || g.queue.is_empty() {
                g.listers_wait += 1;
                g = self.for_listers.wait(g).unwrap_or_else(|e| e.into_inner());
                g.listers_wait -= 1;
                continue;
            }
            let Some(job) = g.queue.pop() else {
                continue;
            };
            match g.slots.get_mut(&job.key) {
                Some(slot @ Slot::Queued) => *slot = Slot::Running,
                // Taken by the walker meanwhile.
                _ => continue,
            }
            let Some(parent) = job.parent.upgrade() else {
                // Its parent is closed: the walker lists it (opening the parent again).
                g.slots.remove(&job.key);
                continue;
            };
            drop(g);
            // The walker may be waiting for this listing: a panic here must not leave it
            // waiting forever. It gets the directory as unreadable instead (reported in the
            // snapshot's errors; the panic itself is printed by the panic hook).
            let (listing, subdirs) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let path = job.path.path();
                self.list(&parent, &job.path.name, &path, &job)
            }))
            .unwrap_or_else(|_| {
                let error = io::Error::other("listing it failed (a lister thread panicked)");
                let failed = Listing {
                    error: Some(error),
                    ..Listing::default()
                };
                (failed, Vec::new())
            });
            drop(parent);
            self.by_listers.fetch_add(1, Ordering::Relaxed);
            g = self.lock();
            g.held += listing.entries.len();
            g.held_listings += 1;
            g.slots.insert(job.key, Slot::Done(listing));
            let more = !subdirs.is_empty() && g.listers_wait > 0;
            Self::push(&mut g, subdirs);
            let walker = g.walker_waits;
            drop(g);
            if walker {
                self.for_walker.notify_one();
            }
            if more {
                self.for_listers.notify_all();
            }
            g = self.lock();
        }
    }

    /// Ends the listers' loops.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.for_listers.notify_all();
    }

    /// Directories listed by the listers and by the walker itself.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.by_listers.load(Ordering::Relaxed),
            self.by_walker.load(Ordering::Relaxed),
        )
    }

    /// Listings done and not taken, and their entries (none once the walk is over).
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let g = self.lock();
        let done = g
            .slots
            .values()
            .filter(|s| matches!(s, Slot::Done(_)))
            .count();
        (done, g.held)
    }

    /// Queues `subdirs` (in name order) so the first is listed first.
    fn push(g: &mut State, subdirs: Vec<Job>) {
        for job in subdirs.into_iter().rev() {
            g.slots.insert(job.key, Slot::Queued);
            g.queue.push(job);
        }
    }

    /// Lists the directory `name` of `parent` (at `path`; `job` says what it must be): its
    /// entries in name order with metadata and extended attributes, the parent snapshot's
    /// listing of it, and the subdirectories the walker will enter, in name order, queued
    /// under the keys their entries carry.
    fn list(&self, parent: &DirFd, name: &[u8], path: &Path, job: &Job) -> (Listing, Vec<Job>) {
        let mut listing = Listing {
            prev: job.prev.as_ref().and_then(|id| (self.load)(id)),
            ..Listing::default()
        };
        let fd = match dirfd::open_dir_expecting(parent.as_fd(), name, &job.expected) {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                listing.error = Some(e);
                return (listing, Vec::new());
            }
        };
        let (names, error) = dirfd::read_names(fd.as_fd());
        listing.error = error;
        listing.entries = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                // Relative to the open directory. An entry that fails here is stat'ed again
                // by the walker, which reports the error.
                let meta = if i < STAT_AHEAD_MAX {
                    dirfd::stat_at(fd.as_fd(), &name).ok()
                } else {
                    None
                };
                Listed {
                    name,
                    meta,
                    xattrs: None,
                    key: None,
                }
            })
            .collect();
        listing.entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let mut subdirs = Vec::new();
        for entry in &mut listing.entries {
            let Some(meta) = &entry.meta else { continue };
            let child = path.join(std::ffi::OsStr::from_bytes(&entry.name));
            if self.filter.skips(&child) || self.filter.skips_object(meta) {
                continue;
            }
            // Setting an extended attribute changes the ctime: an entry whose inode, ctime,
            // mtime and size are the parent snapshot's has its extended attributes (as a file
            // whose content is reused, see `walk::unchanged`). Not under `--full`.
            let prev_node = listing.prev.as_ref().and_then(|t| t.find(&entry.name));
            entry.xattrs = Some(match prev_node {
                Some(p) if self.trust_parent && same_inode_times(p, meta) => p.xattrs.clone(),
                _ => dirfd::xattrs_at(fd.as_fd(), &entry.name, &child, meta),
            });
            if self.filter.enters(meta, job.dev) {
                let prev = listing
                    .prev
                    .as_ref()
                    .and_then(|t| prev_subtree(t, &entry.name));
                let key = self.next_key.fetch_add(1, Ordering::Relaxed);
                entry.key = Some(key);
                subdirs.push(Job {
                    key,
                    parent: Arc::downgrade(&fd),
                    path: job.path.child(&entry.name),
                    expected: *meta,
                    dev: job.dev,
                    prev,
                });
            }
        }
        listing.dir = Some(fd);
        (listing, subdirs)
    }
}

/// Whether `prev` (the parent snapshot's node) and `meta` have the same kind, inode, ctime,
/// mtime and size.
fn same_inode_times(prev: &Node, meta: &Meta) -> bool {
    let size = if meta.is_file() { meta.size } else { 0 };
    prev.kind == meta.kind()
        && prev.inode == meta.ino
        && prev.ctime == meta.ctime
        && prev.mtime == meta.mtime
        && prev.size == size
}

/// The parent snapshot's listing of the subdirectory `name` of a directory it listed as `tree`.
pub fn prev_subtree(tree: &Tree, name: &[u8]) -> Option<BlobId> {
    tree.find(name).and_then(prev_subtree_of)
}

/// The listing of `node` if it is a directory.
pub fn prev_subtree_of(node: &Node) -> Option<BlobId> {
    node.subtree.filter(|_| node.kind == NodeKind::Dir)
}

/// Stops the listers when dropped, also when the walk unwinds.
pub struct StopOnDrop<'a, 'b>(pub &'a Prefetcher<'b>);

impl Drop for StopOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    /// A tree of `width` subdirectories per level, `depth` levels, `files` files each.
    fn tree(root: &Path, width: usize, depth: usize, files: usize) {
        for f in 0..files {
            fs::write(root.join(format!("f{f}")), f.to_string()).expect("write a file");
        }
        if depth == 0 {
            return;
        }
        for d in 0..width {
            let sub = root.join(format!("d{d}"));
            fs::create_dir(&sub).expect("mkdir");
            tree(&sub, width, depth - 1, files);
        }
    }

    fn filter(excludes: &[&str]) -> Filter {
        let patterns: Vec<String> = excludes.iter().map(|s| s.to_string()).collect();
        Filter {
            excludes: Excludes::new(&patterns).expect("patterns"),
            exclude_paths: Vec::new(),
            exclude_objects: Vec::new(),
            one_file_system: false,
        }
    }

    /// Walks like the walker (depth first, name order, entering what the filter enters) and
    /// returns every path seen with its size, checking each listing against the directory and
    /// the parent listing handed over against `prevs`.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        p: &Prefetcher,
        f: &Filter,
        parent: &DirFd,
        dir: &Path,
        key: Option<u64>,
        dev: u64,
        prev: Option<BlobId>,
        prevs: &HashMap<BlobId, Tree>,
        seen: &mut Vec<(PathBuf, u64)>,
    ) {
        let name = dir.file_name().expect("a name").as_bytes();
        let expected = dirfd::stat_at(parent.as_fd(), name).expect("stat");
        let listing = p.take(Entering {
            key,
            parent,
            name,
            path: dir,
            expected: &expected,
            dev,
            prev,
        });
        assert!(listing.error.is_none());
        assert_eq!(
            listing.prev.as_ref(),
            prev.map(|id| &prevs[&id]),
            "{}",
            dir.display()
        );
        let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().as_bytes().to_vec())
            .collect();
        names.sort();
        let listed: Vec<Vec<u8>> = listing.entries.iter().map(|e| e.name.clone()).collect();
        assert_eq!(listed, names, "listing of {}", dir.display());
        let fd = listing.dir.clone().expect("open");
        for e in listing.entries {
            let path = dir.join(std::ffi::OsStr::from_bytes(&e.name));
            if f.skips(&path) {
                continue;
            }
            let meta = e.meta.expect("stat'ed ahead");
            assert_eq!(meta.ino, fs::symlink_metadata(&path).expect("lstat").ino());
            assert!(e.xattrs.is_some());
            seen.push((path.clone(), meta.size));
            if meta.is_dir() {
                let sub = listing.prev.as_ref().and_then(|t| prev_subtree(t, &e.name));
                walk(p, f, &fd, &path, e.key, dev, sub, prevs, seen);
            }
        }
    }

    struct Walked {
        seen: Vec<(PathBuf, u64)>,
        by_listers: usize,
        by_walker: usize,
        held: (usize, usize),
    }

    /// A walk of `root` with `listers` threads; `prevs`: parent listings by id, `root_prev` the
    /// root's.
    fn run(
        root: &Path,
        f: &Filter,
        budget: usize,
        listers: usize,
        prevs: &HashMap<BlobId, Tree>,
        root_prev: Option<BlobId>,
    ) -> Walked {
        let load = |id: &BlobId| prevs.get(id).cloned();
        let p = Prefetcher::new(f.clone(), true, budget, &load);
        let dev = fs::metadata(root).expect("stat").dev();
        let mut seen = Vec::new();
        std::thread::scope(|s| {
            for _ in 0..listers {
                s.spawn(|| p.help());
            }
            let _stop = StopOnDrop(&p);
            let parent = Arc::new(
                dirfd::open_dir_path(root.parent().expect("a parent")).expect("open parent"),
            );
            walk(&p, f, &parent, root, None, dev, root_prev, prevs, &mut seen);
        });
        let (by_listers, by_walker) = p.counts();
        Walked {
            seen,
            by_listers,
            by_walker,
            held: p.held(),
        }
    }

    /// Parent listings for the tree of `tree(root, width, depth, _)`: each directory's lists its
    /// subdirectories (as `Dir` nodes naming their listings) and a marker naming the directory.
    fn prevs(dir: &Path, width: usize, depth: usize, out: &mut HashMap<BlobId, Tree>) -> BlobId {
        let mut nodes = Vec::new();
        if depth > 0 {
            for d in 0..width {
                let name = format!("d{d}");
                let mut node = Node::new(name.clone().into_bytes(), NodeKind::Dir);
                node.subtree = Some(prevs(&dir.join(&name), width, depth - 1, out));
                nodes.push(node);
            }
        }
        nodes.push(Node::new(
            dir.as_os_str().as_bytes().to_vec(),
            NodeKind::File,
        ));
        let id = BlobId::hash(dir.as_os_str().as_bytes());
        out.insert(id, Tree { nodes });
        id
    }

    #[test]
    fn prefetched_walk_sees_what_a_plain_walk_sees_and_holds_nothing_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        tree(dir.path(), 3, 4, 5);
        let mut parent = HashMap::new();
        let root_prev = prevs(dir.path(), 3, 4, &mut parent);
        let f = filter(&[]);
        let alone = run(dir.path(), &f, DEFAULT_BUDGET, 0, &parent, Some(root_prev));
        assert_eq!(
            alone.by_listers, 0,
            "no listers, the walker lists everything"
        );
        // 1 + 3 + 9 + 27 + 81 directories.
        assert_eq!(alone.by_walker, 121);
        for (budget, listers) in [(DEFAULT_BUDGET, 1), (DEFAULT_BUDGET, 2), (1, 2), (8, 3)] {
            let w = run(dir.path(), &f, budget, listers, &parent, Some(root_prev));
            assert_eq!(w.seen, alone.seen, "budget {budget}, {listers} listers");
            assert_eq!(
                w.by_listers + w.by_walker,
                121,
                "each directory listed once"
            );
            assert_eq!(w.held, (0, 0), "nothing left held");
        }
        // Without a parent snapshot, no parent listings.
        let w = run(dir.path(), &f, DEFAULT_BUDGET, 2, &HashMap::new(), None);
        assert_eq!(w.seen, alone.seen);
    }

    #[test]
    fn listers_do_not_enter_excluded_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        tree(dir.path(), 2, 3, 1);
        let skipped = dir.path().join("d1");
        let f = filter(&[&format!("{}", skipped.display())]);
        let w = run(dir.path(), &f, DEFAULT_BUDGET, 2, &HashMap::new(), None);
        assert!(w.seen.iter().all(|(path, _)| !path.starts_with(&skipped)));
        // 1 + 2 + 4 + 8 directories, less d1 and its 1 + 2 + 4.
        assert_eq!(w.by_listers + w.by_walker, 15 - 7);
        assert_eq!(
            w.held,
            (0, 0),
            "an excluded directory is never listed ahead"
        );
    }
}

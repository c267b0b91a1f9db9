//! `repair snapshots`: new snapshots without their damaged parts.
//!
//! For each selected snapshot, its directory listings are walked and rebuilt:
//!
//! - a file any of whose chunks is damaged is left out (named, with the reason);
//! - a directory whose listing is missing or damaged becomes an empty directory with the same
//!   metadata (named); an entry with an unsafe name (`..`, `a/b`, ...) is left out (named);
//! - everything else is kept exactly: the same nodes, so the same chunks and metadata, and
//!   every listing without damage beneath it keeps its id (nothing is rewritten or re-read).
//!
//! A chunk is damaged when no index places it, the index gives it the wrong type, its pack is
//! missing from storage or too short to hold it, or (with `read_data`) its bytes fail
//! verification: every pack holding a chunk of the selected snapshots is then read, as `check
//! --read-data` does. Listings are always read and verified. A storage fault (as opposed to a
//! damaged or missing object) stops the repair: it must never make a file look damaged.
//!
//! A snapshot with damage gets a replacement: the same time, host, paths, job and summary (but
//! `total_bytes`, which counts what the replacement holds), the repaired root listing, the tag
//! `repaired`, and `original` naming the snapshot it replaces.
//! A snapshot without damage is left alone. The original stays until `forget` removes it, or
//! `--forget` here (right after its replacement is written).
//!
//! Locking: new listings go into new packs, then an index, then the snapshots, like a backup;
//! and like a backup, repair holds a shared lock, which keeps prune (exclusive) away while the
//! new snapshots reference chunks found in the index. Backups may run alongside. Before each
//! snapshot is written the lock is confirmed; if it lapsed (the process was frozen past the
//! lock's bound, so a prune may have run), everything the new snapshot references is checked
//! against the repository as it is now, and the repair stops rather than commit a snapshot
//! that points at removed data.
//!
//! Interrupted, the repository stays valid: packs and index written before the snapshots are
//! merely unreferenced; each snapshot is written whole or not at all.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ObjectProblem;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::ops::forget::Filter;
use crate::progress::Progress;
use crate::repo::pack::{encode_blob, PackBuilder};
use crate::repo::{
    BlobKind, Index, LockSettings, Node, NodeKind, PackEntry, RepoLock, Repository, Snapshot, Step,
    Tree, TreeWalk,
};
use crate::storage::FileKind;

/// The tag of snapshots written by `repair snapshots`.
pub const REPAIRED_TAG: &str = "repaired";

/// Options of `repair snapshots`.
#[derive(Debug, Clone, Default)]
pub struct RepairSnapshotsOptions {
    /// Snapshots by id, unique id prefix or `latest`; empty: every snapshot the filter passes.
    pub snapshots: Vec<String>,
    pub filter: Filter,
    /// Read every pack that holds a chunk of the selected snapshots and verify the chunks.
    pub read_data: bool,
    /// Remove each original snapshot once its replacement is written.
    pub forget: bool,
    /// Report what would be done; write and remove nothing.
    pub dry_run: bool,
    /// Parallel pack readers with `read_data` (0: one per core).
    pub threads: usize,
    pub lock: LockSettings,
}

/// Something left out of a repaired snapshot.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Loss {
    /// Absolute path in the snapshot.
    pub path: String,
    /// Why: the damaged or missing object and what is wrong with it.
    pub reason: String,
}

/// One damaged snapshot and its replacement.
#[derive(Debug, Clone, Serialize)]
pub struct RepairedSnapshot {
    pub original: SnapshotId,
    /// The replacement (none in a dry run).
    pub new: Option<SnapshotId>,
    pub time: DateTime<Utc>,
    pub host: String,
    pub paths: Vec<String>,
    /// Files left out because their data is damaged or missing.
    pub removed_files: Vec<Loss>,
    /// Directories whose listing is damaged or missing, now empty.
    pub emptied_dirs: Vec<Loss>,
    /// Entries left out because their names are unsafe (corrupt or tampered listings).
    pub removed_entries: Vec<Loss>,
}

/// What `repair snapshots` found and did.
#[derive(Debug, Default, Serialize)]
pub struct RepairSnapshotsReport {
    pub dry_run: bool,
    pub read_data: bool,
    /// Snapshots examined.
    pub snapshots: usize,
    pub repaired: Vec<RepairedSnapshot>,
    /// Snapshots without damage, left alone.
    pub intact: Vec<SnapshotId>,
    /// Originals removed (`forget`), and unreadable snapshot objects removed with it.
    pub forgotten: Vec<String>,
    /// Snapshot objects that cannot be read (damaged): nothing of them can be repaired.
    pub unreadable_snapshots: Vec<ObjectProblem>,
    pub bytes_read: u64,
    /// Packs written for the rebuilt directory listings.
    pub new_packs: usize,
}

/// Repairs snapshots. See the module documentation.
pub fn repair_snapshots(
    repo: &Repository,
    opts: &RepairSnapshotsOptions,
    progress: Arc<Progress>,
) -> Result<RepairSnapshotsReport> {
    let lock = if opts.dry_run {
        repo.lock_for_reading("repair snapshots")?
    } else {
        Some(repo.lock(
            "repair snapshots",
            false,
            &opts.lock.waiting(opts.lock.stale_after),
        )?)
    };
    let report = repair_locked(repo, opts, &progress, lock.as_ref())?;
    if let Some(l) = lock {
        l.release();
    }
    Ok(report)
}

/// Snapshots with their ids.
type Snapshots = Vec<(SnapshotId, Snapshot)>;

/// Loads the snapshots, each on its own: a damaged snapshot object must not stop the repair.
/// Returns them, oldest first, and the names of the objects that are damaged (content that
/// fails verification, or a name that is no snapshot id), which are also reported.
fn load_snapshots(
    repo: &Repository,
    report: &mut RepairSnapshotsReport,
) -> Result<(Snapshots, Vec<String>)> {
    let list = repo.list_snapshots()?;
    let mut damaged = Vec::new();
    for d in list.damaged {
        report.unreadable_snapshots.push(ObjectProblem {
            object: d.object,
            error: d.error,
        });
        damaged.push(d.name);
    }
    Ok((list.snapshots, damaged))
}

fn select(
    all: &[(SnapshotId, Snapshot)],
    opts: &RepairSnapshotsOptions,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut chosen: Vec<(SnapshotId, Snapshot)> = Vec::new();
    if opts.snapshots.is_empty() {
        chosen = all.to_vec();
    } else {
        let mut seen = HashSet::new();
        for sel in &opts.snapshots {
            let (id, s) = crate::repo::select_snapshot(all.to_vec(), sel, &Default::default())?;
            if seen.insert(id) {
                chosen.push((id, s));
            }
        }
    }
    chosen.retain(|(_, s)| opts.filter.matches(s));
    let filtered = !opts.filter.hosts.is_empty()
        || !opts.filter.jobs.is_empty()
        || !opts.filter.paths.is_empty();
    if chosen.is_empty() && (filtered || !opts.snapshots.is_empty()) {
        return Err(Error::SnapshotSelect(
            "no snapshot matches the snapshots and filters given (a typo?); nothing was repaired"
                .into(),
        ));
    }
    Ok(chosen)
}

fn repair_locked(
    repo: &Repository,
    opts: &RepairSnapshotsOptions,
    progress: &Progress,
    lock: Option<&RepoLock>,
) -> Result<RepairSnapshotsReport> {
    let mut report = RepairSnapshotsReport {
        dry_run: opts.dry_run,
        read_data: opts.read_data,
        ..Default::default()
    };
    let stored: HashMap<String, u64> = repo.storage().list(FileKind::Pack)?.into_iter().collect();
    let index = repo.load_index()?;
    let (all, damaged_objects) = load_snapshots(repo, &mut report)?;
    let selected = select(&all, opts)?;
    report.snapshots = selected.len();

    let mut rebuild = Rebuild {
        repo,
        index: &index,
        sizes: index
            .packs()
            .iter()
            .map(|p| stored.get(&p.to_hex()).copied())
            .collect(),
        bad: HashMap::new(),
        memo: HashMap::new(),
        written: HashSet::new(),
        builder: PackBuilder::default(),
        new_packs: Vec::new(),
        dry_run: opts.dry_run,
        progress,
    };
    if opts.read_data {
        rebuild.bad = verify_data(&rebuild, &selected, opts.threads, progress)?;
        report.bytes_read = Progress::get(&progress.bytes_read);
    }

    // Rebuild every selected snapshot's listings (writing new listings as packs fill).
    let mut pending: Vec<(RepairedSnapshot, Snapshot)> = Vec::new();
    for (id, snap) in &selected {
        crate::interrupt::check()?;
        let (root, losses, bytes) = match rebuild.rewrite(snap.tree)? {
            Outcome::Listing {
                id: root,
                losses,
                bytes,
            } => (root, losses.flatten(), bytes),
            Outcome::Unusable(why) => (
                rebuild.store(&Tree::default())?,
                vec![RelLoss {
                    kind: LossKind::Dir,
                    path: String::new(),
                    reason: why,
                }],
                0,
            ),
        };
        if losses.is_empty() {
            report.intact.push(*id);
            continue;
        }
        let mut repaired = RepairedSnapshot {
            original: *id,
            new: None,
            time: snap.time,
            host: snap.host.clone(),
            paths: snap.paths.clone(),
            removed_files: Vec::new(),
            emptied_dirs: Vec::new(),
            removed_entries: Vec::new(),
        };
        for l in losses {
            let loss = Loss {
                path: format!("/{}", l.path),
                reason: l.reason,
            };
            match l.kind {
                LossKind::File => repaired.removed_files.push(loss),
                LossKind::Dir => repaired.emptied_dirs.push(loss),
                LossKind::Entry => repaired.removed_entries.push(loss),
            }
        }
        let mut tags = snap.tags.clone();
        if !tags.iter().any(|t| t == REPAIRED_TAG) {
            tags.push(REPAIRED_TAG.into());
        }
        let mut summary = snap.summary.clone();
        summary.total_bytes = bytes;
        let new = Snapshot {
            tree: root,
            tags,
            summary,
            original: Some(*id),
            program: format!("lifeboat {} (repair snapshots)", env!("CARGO_PKG_VERSION")),
            ..snap.clone()
        };
        pending.push((repaired, new));
    }

    // Write order: packs, index, then each snapshot (and only then its original goes).
    let new_packs = rebuild.finish()?;
    report.new_packs = new_packs.len();
    if opts.dry_run {
        report.repaired = pending.into_iter().map(|(r, _)| r).collect();
        return Ok(report);
    }
    crate::interrupt::check()?;
    repo.save_indexes(&new_packs)?;
    for (mut repaired, snap) in pending {
        crate::interrupt::check()?;
        if let Some(lock) = lock {
            if lock.confirm()? {
                let missing = crate::ops::backup::missing_references(repo, &snap.tree, &new_packs)?;
                if missing.lost_any() {
                    return Err(Error::Invalid(format!(
                        "repair snapshots stopped: its lock lapsed (was the process frozen?) and data the repaired snapshot of {} needs was removed meanwhile; snapshots repaired so far are listed above. Run `lifeboat repair snapshots` again",
                        repaired.original.short()
                    )));
                }
            }
        }
        let new = repo.save_snapshot(&snap)?;
        repaired.new = Some(new);
        if opts.forget {
            repo.storage()
                .remove(FileKind::Snapshot, &repaired.original.to_hex())?;
            report.forgotten.push(repaired.original.to_hex());
        }
        report.repaired.push(repaired);
    }
    // Damaged snapshot objects hold nothing to repair; with --forget over the whole repository
    // they go too.
    let whole = opts.snapshots.is_empty()
        && opts.filter.hosts.is_empty()
        && opts.filter.jobs.is_empty()
        && opts.filter.paths.is_empty();
    if opts.forget && whole {
        for name in damaged_objects {
            repo.storage().remove(FileKind::Snapshot, &name)?;
            report.forgotten.push(name);
        }
    }
    Ok(report)
}

#[derive(Debug, Clone, Copy)]
enum LossKind {
    File,
    Dir,
    Entry,
}

/// A loss, its path relative to the listing it was found in.
#[derive(Debug, Clone)]
struct RelLoss {
    kind: LossKind,
    path: String,
    reason: String,
}

/// What became of a listing.
#[derive(Debug, Clone)]
enum Outcome {
    /// Usable: the listing to use (the same id when nothing beneath it is damaged), what was
    /// left out beneath it, and the bytes of the files it holds.
    Listing {
        id: BlobId,
        losses: Arc<Losses>,
        bytes: u64,
    },
    /// Missing or damaged, with the reason.
    Unusable(String),
}

/// What was left out of a listing and beneath it, in entry order. A listing's losses refer to
/// those of its subdirectories instead of copying them (a listing shared by many directories,
/// or a chain 10,000 deep, is not copied once per level); [`Losses::flatten`] lists them.
#[derive(Debug, Default)]
struct Losses {
    items: Vec<LossItem>,
}

#[derive(Debug)]
enum LossItem {
    /// Left out of this listing (the path is the entry's name).
    Here(RelLoss),
    /// Left out beneath subdirectory `name`.
    Below(String, Arc<Losses>),
}

impl Losses {
    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every loss, its path relative to this listing, in entry order (no recursion).
    fn flatten(&self) -> Vec<RelLoss> {
        let mut out = Vec::new();
        let mut stack: Vec<(std::slice::Iter<'_, LossItem>, String)> =
            vec![(self.items.iter(), String::new())];
        while let Some((items, prefix)) = stack.last_mut() {
            match items.next() {
                None => {
                    stack.pop();
                }
                Some(LossItem::Here(l)) => out.push(RelLoss {
                    kind: l.kind,
                    path: format!("{prefix}{}", l.path),
                    reason: l.reason.clone(),
                }),
                Some(LossItem::Below(name, below)) => {
                    let prefix = format!("{prefix}{name}/");
                    stack.push((below.items.iter(), prefix));
                }
            }
        }
        out
    }
}

/// A listing being rebuilt: its entries so far, and the directory entry waiting for the
/// outcome of its own listing (being walked).
struct Open {
    tree: BlobId,
    nodes: Vec<Node>,
    losses: Losses,
    changed: bool,
    bytes: u64,
    waiting: Option<Node>,
}

impl Open {
    fn new(tree: BlobId) -> Self {
        Open {
            tree,
            nodes: Vec::new(),
            losses: Losses::default(),
            changed: false,
            bytes: 0,
            waiting: None,
        }
    }
}

struct Rebuild<'a> {
    repo: &'a Repository,
    index: &'a Index,
    /// The size in storage of each pack the index names, by its position in the index (none:
    /// missing).
    sizes: Vec<Option<u64>>,
    /// Chunks found damaged by reading them (`read_data`), with the reason.
    bad: HashMap<BlobId, String>,
    /// Listings already rebuilt (snapshots share most of them).
    memo: HashMap<BlobId, Outcome>,
    /// Listings written (or, in a dry run, that would be).
    written: HashSet<BlobId>,
    builder: PackBuilder,
    new_packs: Vec<(PackId, Vec<PackEntry>)>,
    dry_run: bool,
    progress: &'a Progress,
}

impl Rebuild<'_> {
    /// Why a blob cannot be used, from the index and the pack listing (and what `read_data`
    /// found); `None` when it can.
    fn problem(&self, id: &BlobId, kind: BlobKind) -> Option<String> {
        let Some(e) = self.index.get(id) else {
            return Some(format!("chunk {id}: is not in the index (missing)"));
        };
        let pack = || FileKind::Pack.path(&self.index.pack_id(e.pack).to_hex());
        if e.kind != kind {
            let what = match kind {
                BlobKind::Data => "a directory listing where file data is expected",
                BlobKind::Tree => "file data where a directory listing is expected",
            };
            return Some(format!("{}: {what}", pack()));
        }
        match self.sizes.get(e.pack as usize).copied().flatten() {
            None => Some(format!("{}: is missing from storage", pack())),
            Some(size) if u64::from(e.offset) + u64::from(e.stored_len) > size => Some(format!(
                "{}: is truncated to {size} bytes: the chunks the index places beyond that are lost",
                pack()
            )),
            Some(_) => self.bad.get(id).map(|why| format!("{}: {why}", pack())),
        }
    }

    /// Rebuilds the listing `root` and everything beneath it, walking it with [`TreeWalk`] (no
    /// recursion: any depth) and each listing once (`memo`: snapshots and directories share
    /// most of them).
    fn rewrite(&mut self, root: BlobId) -> Result<Outcome> {
        if let Some(done) = self.memo.get(&root) {
            return Ok(done.clone());
        }
        if let Some(why) = self.problem(&root, BlobKind::Tree) {
            let outcome = Outcome::Unusable(why);
            self.memo.insert(root, outcome.clone());
            return Ok(outcome);
        }
        let (repo, index) = (self.repo, self.index);
        let mut walk = TreeWalk::of(repo, index, root);
        let mut open = vec![Open::new(root)];
        while let Some(step) = walk.next()? {
            // The outcome of a listing walked to its end or found damaged.
            let (tree, outcome) = match step {
                Step::Entry { tree, node, .. } => {
                    let Some(top) = open.last_mut() else {
                        break;
                    };
                    if let Some(sub) = self.entry(top, tree, node)? {
                        if let Some(dir) = &top.waiting {
                            walk.enter(&dir.name, sub);
                        }
                        open.push(Open::new(sub));
                    }
                    continue;
                }
                Step::Damaged { tree, damage, .. } => {
                    open.pop();
                    (tree, Outcome::Unusable(damage.to_string()))
                }
                Step::Leave { tree, .. } => {
                    let Some(done) = open.pop() else {
                        break;
                    };
                    (tree, self.finish_listing(done)?)
                }
            };
            self.memo.insert(tree, outcome.clone());
            match open.last_mut() {
                Some(parent) => {
                    let node = parent.waiting.take();
                    if let Some(node) = node {
                        self.apply(parent, node, outcome)?;
                    }
                }
                None => return Ok(outcome),
            }
        }
        // The walk ends with the root's Leave (or its damage), handled above.
        Ok(self
            .memo
            .get(&root)
            .cloned()
            .unwrap_or_else(|| Outcome::Unusable("the walk ended early".into())))
    }

    /// Takes entry `node` of listing `tree` into the rebuilt listing `top`. Returns the
    /// listing to walk when the entry is a directory whose listing is not rebuilt yet (the
    /// entry then waits in `top` for its outcome).
    fn entry(&mut self, top: &mut Open, tree: BlobId, node: Node) -> Result<Option<BlobId>> {
        Progress::add(&self.progress.entries, 1);
        let name = String::from_utf8_lossy(&node.name).into_owned();
        if !node.name_is_safe() {
            top.losses.items.push(LossItem::Here(RelLoss {
                kind: LossKind::Entry,
                path: name.clone(),
                reason: format!(
                    "directory listing {tree}: unsafe entry name {name:?} (corrupt or tampered)"
                ),
            }));
            top.changed = true;
            return Ok(None);
        }
        match node.kind {
            NodeKind::Dir => {
                let outcome = match node.subtree {
                    Some(sub) => match self.memo.get(&sub) {
                        Some(done) => done.clone(),
                        None => match self.problem(&sub, BlobKind::Tree) {
                            Some(why) => {
                                let outcome = Outcome::Unusable(why);
                                self.memo.insert(sub, outcome.clone());
                                outcome
                            }
                            None => {
                                top.waiting = Some(node);
                                return Ok(Some(sub));
                            }
                        },
                    },
                    None => Outcome::Unusable(format!(
                        "directory listing {tree}: directory without a listing"
                    )),
                };
                self.apply(top, node, outcome)?;
            }
            NodeKind::File => {
                let why = node
                    .content
                    .iter()
                    .find_map(|c| self.problem(c, BlobKind::Data));
                if let Some(why) = why {
                    top.losses.items.push(LossItem::Here(RelLoss {
                        kind: LossKind::File,
                        path: name,
                        reason: why,
                    }));
                    top.changed = true;
                    return Ok(None);
                }
                top.bytes += node.size;
                top.nodes.push(node);
            }
            _ => top.nodes.push(node),
        }
        Ok(None)
    }

    /// Takes directory entry `node` into `top`, given what became of its listing.
    fn apply(&mut self, top: &mut Open, mut node: Node, outcome: Outcome) -> Result<()> {
        let name = String::from_utf8_lossy(&node.name).into_owned();
        match outcome {
            Outcome::Listing { id, losses, bytes } => {
                top.bytes += bytes;
                if node.subtree != Some(id) {
                    node.subtree = Some(id);
                    top.changed = true;
                }
                if !losses.is_empty() {
                    top.losses.items.push(LossItem::Below(name, losses));
                }
            }
            Outcome::Unusable(why) => {
                node.subtree = Some(self.store(&Tree::default())?);
                top.changed = true;
                top.losses.items.push(LossItem::Here(RelLoss {
                    kind: LossKind::Dir,
                    path: name,
                    reason: why,
                }));
            }
        }
        top.nodes.push(node);
        Ok(())
    }

    /// The outcome of a listing whose entries were all taken: itself when nothing changed,
    /// else the rebuilt listing (stored).
    fn finish_listing(&mut self, done: Open) -> Result<Outcome> {
        let id = if done.changed {
            self.store(&Tree { nodes: done.nodes })?
        } else {
            done.tree
        };
        Ok(Outcome::Listing {
            id,
            losses: Arc::new(done.losses),
            bytes: done.bytes,
        })
    }

    /// Stores a listing unless the repository already has it intact; returns its id.
    fn store(&mut self, tree: &Tree) -> Result<BlobId> {
        let bytes = tree.to_bytes();
        let id = self.repo.sealer().blob_id(&bytes);
        if self.written.contains(&id) || self.problem(&id, BlobKind::Tree).is_none() {
            return Ok(id);
        }
        self.written.insert(id);
        if self.dry_run {
            return Ok(id);
        }
        let blob = encode_blob(
            self.repo.sealer(),
            BlobKind::Tree,
            id,
            &bytes,
            self.repo.config().compression_level,
        )?;
        let pack_size = self.repo.config().pack_size as usize;
        if !self.builder.is_empty() && self.builder.finished_len_with(blob.stored.len()) > pack_size
        {
            let full = std::mem::take(&mut self.builder);
            self.flush(full)?;
        }
        self.builder.add(&blob);
        Ok(id)
    }

    fn flush(&mut self, b: PackBuilder) -> Result<()> {
        let (bytes, entries) = b.finish_verified(self.repo.sealer())?;
        let id = self.repo.save_pack(&bytes)?;
        self.repo.cache_tree_pack(&id, &bytes);
        Progress::add(&self.progress.bytes_written, bytes.len() as u64);
        self.new_packs.push((id, entries));
        Ok(())
    }

    /// Stores the last, partly filled pack; returns every new pack.
    fn finish(&mut self) -> Result<Vec<(PackId, Vec<PackEntry>)>> {
        let last = std::mem::take(&mut self.builder);
        if !last.is_empty() {
            self.flush(last)?;
        }
        Ok(std::mem::take(&mut self.new_packs))
    }
}

/// Reads every pack holding a file chunk of the selected snapshots (that the index and the pack
/// listing say is there) and verifies those chunks; returns the damaged ones with the reason.
fn verify_data(
    rebuild: &Rebuild<'_>,
    selected: &[(SnapshotId, Snapshot)],
    threads: usize,
    progress: &Progress,
) -> Result<HashMap<BlobId, String>> {
    let (repo, index) = (rebuild.repo, rebuild.index);
    // The chunks to verify, by pack.
    let mut wanted: HashMap<u32, Vec<BlobId>> = HashMap::new();
    let mut seen_chunks: HashSet<BlobId> = HashSet::new();
    let mut walk = TreeWalk::new(repo, index).once();
    for (_, snap) in selected {
        if rebuild.problem(&snap.tree, BlobKind::Tree).is_some() || !walk.start(snap.tree) {
            continue;
        }
        while let Some(step) = walk.next()? {
            // A damaged listing is found again, and reported, when the listings are rebuilt.
            let Step::Entry { node, .. } = step else {
                continue;
            };
            if let Some(sub) = node.subtree {
                if rebuild.problem(&sub, BlobKind::Tree).is_none() {
                    walk.enter(&node.name, sub);
                }
            }
            for c in node.content {
                if seen_chunks.insert(c) && rebuild.problem(&c, BlobKind::Data).is_none() {
                    if let Some(e) = index.get(&c) {
                        wanted.entry(e.pack).or_default().push(c);
                    }
                }
            }
        }
    }
    let mut packs: Vec<(u32, Vec<BlobId>)> = wanted.into_iter().collect();
    packs.sort_by_key(|(p, _)| index.pack_id(*p));
    let mut bad = HashMap::new();
    crate::pool::run(
        crate::pool::workers(threads, 1),
        packs,
        || Ok(()),
        |(), (pos, chunks)| verify_pack(repo, index, pos, &chunks, progress),
        |found| {
            bad.extend(found);
            Ok(())
        },
    )?;
    Ok(bad)
}

/// Verifies `chunks` in the pack at index position `pos`.
fn verify_pack(
    repo: &Repository,
    index: &Index,
    pos: u32,
    chunks: &[BlobId],
    progress: &Progress,
) -> Result<Vec<(BlobId, String)>> {
    let bytes = match repo.read_pack(&index.pack_id(pos)) {
        Ok(b) => b,
        Err(Error::NotFound { .. }) => {
            return Ok(chunks
                .iter()
                .map(|c| (*c, "is missing from storage".to_string()))
                .collect())
        }
        // Unreachable storage and a signal keep their own kind (and exit code).
        Err(e @ (Error::Unreachable { .. } | Error::Interrupted)) => return Err(e),
        Err(e) => {
            return Err(Error::Invalid(format!(
                "repair snapshots stopped before writing anything: {} could not be read ({e}); try again when the storage answers",
                FileKind::Pack.path(&index.pack_id(pos).to_hex())
            )))
        }
    };
    Progress::add(&progress.bytes_read, bytes.bytes().len() as u64);
    let mut bad = Vec::new();
    for c in chunks {
        let Some(e) = index.get(c) else { continue };
        if let Err(err) = bytes.blob(&e.to_pack_entry(*c)) {
            bad.push((*c, format!("damaged: {}", err.reason())));
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{names, reopen, repository, Flaky};
    use super::*;

    fn pack_of(repo: &Repository, kind: BlobKind) -> PackId {
        repo.load_index()
            .expect("index")
            .by_pack()
            .into_iter()
            .find(|(_, e)| e.first().is_some_and(|e| e.kind == kind))
            .map(|(p, _)| p)
            .expect("a pack")
    }

    #[test]
    fn a_storage_fault_stops_the_repair_instead_of_dropping_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (repo, _) = repository(dir.path());
        for (kind, read_data) in [(BlobKind::Data, true), (BlobKind::Tree, false)] {
            let flaky = reopen(Flaky {
                inner: repo.storage().clone(),
                fail_reads: Some(pack_of(&repo, kind).to_hex()),
                hide: None,
            });
            let opts = RepairSnapshotsOptions {
                read_data,
                forget: true,
                ..Default::default()
            };
            let err = repair_snapshots(&flaky, &opts, Arc::default())
                .expect_err("a storage fault is no damage");
            assert!(err.to_string().contains("reset"), "{err}");
            assert_eq!(names(&repo, FileKind::Snapshot).len(), 1, "nothing written");
        }
    }

    #[test]
    fn a_damaged_snapshot_object_is_reported_and_removed_with_forget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (repo, id) = repository(dir.path());
        let bad = "cd".repeat(32);
        repo.storage()
            .create(FileKind::Snapshot, &bad, b"not a snapshot")
            .expect("create");
        let report = repair_snapshots(&repo, &RepairSnapshotsOptions::default(), Arc::default())
            .expect("repair");
        assert_eq!(report.unreadable_snapshots.len(), 1, "{report:?}");
        assert_eq!(report.intact, vec![id]);
        assert_eq!(
            names(&repo, FileKind::Snapshot).len(),
            2,
            "kept without --forget"
        );
        let opts = RepairSnapshotsOptions {
            forget: true,
            ..Default::default()
        };
        let report = repair_snapshots(&repo, &opts, Arc::default()).expect("repair");
        assert_eq!(report.forgotten, vec![bad]);
        assert_eq!(names(&repo, FileKind::Snapshot), vec![id.to_hex()]);
    }
}

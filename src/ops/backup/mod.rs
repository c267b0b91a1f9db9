//! `backup`: one run that writes one snapshot.
//!
//! Algorithm: a walker thread visits the source in depth-first name order (see [`walk`], with
//! lister threads listing directories ahead of it, see [`prefetch`]), reusing the parent
//! snapshot's chunk list for files whose size, mtime, ctime and inode are unchanged
//! (incremental), and queueing the others for the file workers (see [`pipeline`]). This thread
//! builds the directory listings bottom-up from the walker's events, waiting for each file's
//! chunk list in order, and stores each listing as a tree blob (or keeps the parent's, when
//! the walker found every entry unchanged). Stored packs are indexed an index object's worth at
//! a time during the run; at the end, the partly filled packs are stored, then an index object
//! naming the packs not indexed yet, then the snapshot: write order packs → index → snapshot,
//! so a snapshot never references anything that is not durable.
//!
//! Interrupted at any point, the repository stays valid: packs written so far are indexed or
//! unreferenced (a later backup reuses the indexed ones and, as the failed run indexes what it
//! stored on its way out, usually all of them; prune removes the rest) and no snapshot is
//! written.

pub mod chunker;
pub mod dirfd;
pub mod exclude;
pub mod pipeline;
pub mod prefetch;
pub mod walk;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::progress::Progress;
use crate::repo::{BackupKind, BlobKind, Node, Repository, Snapshot, SourceError, Summary, Tree};
use exclude::Excludes;
use pipeline::{ChunkJob, FileOutcome, Shared};
use walk::{Event, Targets, Walker};

/// Options of one backup run.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// What to back up (made absolute).
    pub paths: Vec<PathBuf>,
    /// Read every file, ignoring the parent's metadata.
    pub full: bool,
    /// Exclude patterns (see [`exclude`]).
    pub excludes: Vec<String>,
    /// Stay on the filesystem of each backup path.
    pub one_file_system: bool,
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot.
    pub host: String,
    /// Worker threads for reading and for compressing (0: one per core).
    pub threads: usize,
    /// Packs stored concurrently (0: 2; more helps with high-latency cloud storage).
    pub uploads: usize,
    /// The daemon job running this backup, recorded in the snapshot.
    pub job: Option<String>,
    /// Index the packs stored so far each time they hold this many blobs (0: an index
    /// object's worth, [`crate::repo::INDEX_SPLIT_BLOBS`]).
    pub index_every: usize,
}

/// A finished backup.
#[derive(Debug)]
pub struct BackupOutcome {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
}

/// Runs a backup and writes its snapshot, under a shared repository lock.
///
/// If the lock lapsed during the run (the process was frozen past the lock's staleness bound,
/// so a prune may have removed data this run relies on), everything the new snapshot
/// references is checked against the repository as it is now before the snapshot is written;
/// when something is gone, the run starts over with a fresh index (re-reading and uploading
/// what is missing) rather than commit a snapshot that points at deleted data.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupOutcome> {
    let settings = repo.lock_settings();
    let lock = repo.lock("backup", false, &settings.waiting(settings.stale_after))?;
    let open_files = dirfd::raise_open_files_limit();
    tracing::debug!(?open_files, "open files limit");
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        if let Some(done) = backup_attempt(repo, opts, progress.clone(), &lock)? {
            lock.release();
            return Ok(done);
        }
        tracing::warn!(
            attempt,
            "data this backup relied on was removed while it was stalled (a prune ran when its lock looked stale); starting over with the repository as it is now"
        );
    }
    Err(Error::BackupStalled { attempts: ATTEMPTS })
}

/// One run; `Ok(None)` when it must start over (see [`backup`]).
fn backup_attempt(
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<Progress>,
    lock: &crate::repo::RepoLock,
) -> Result<Option<BackupOutcome>> {
    let started = Instant::now();
    // Phase times for `-v`: where a slow run spends its time.
    let phase = |what: &str| {
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "backup: {what}"
        )
    };
    let time = Utc::now();
    if opts.paths.is_empty() {
        return Err(Error::Invalid(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let mut paths = Vec::new();
    for p in &opts.paths {
        let n = crate::units::normalize_path(p)?;
        if n.to_str().is_none() {
            return Err(Error::Invalid(format!(
                "backup path {} is not valid UTF-8; back up its parent directory instead",
                n.display()
            )));
        }
        paths.push(n);
    }
    // Following symlinks: a backup path that is one is backed up as what it leads to (see
    // `Walker::walk_target`), so a dangling one is refused here.
    for p in &paths {
        if let Err(e) = std::fs::metadata(p) {
            return Err(Error::io("back up", p, e));
        }
    }
    paths.sort();
    paths.dedup();
    // A path inside another path is covered by it.
    let covered: Vec<PathBuf> = paths
        .iter()
        .filter(|p| !paths.iter().any(|q| q != *p && p.starts_with(q)))
        .cloned()
        .collect();
    let path_strings: Vec<String> = covered
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut exclude_patterns = opts.excludes.clone();
    exclude_patterns.retain(|p| !p.trim().is_empty());
    let excludes = Excludes::new(&exclude_patterns)?;
    // Never back up the repository into itself.
    let exclude_paths: Vec<PathBuf> = repo
        .storage()
        .local_path()
        .and_then(|p| crate::units::normalize_path(&p).ok())
        .into_iter()
        .collect();
    // And by identity: a backup path that is a symlink reaches it under another path.
    let exclude_objects: Vec<(u64, u64)> = exclude_paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })
        .collect();

    // A writer checks again that the store refuses to replace objects (a store can change
    // behind a URL); read-only commands never write probes.
    if !repo.storage().probe_create_only()? {
        tracing::warn!(
            location = %repo.storage().location(),
            "the storage accepted a second create-only write of one name: it ignores If-None-Match; \
             backups stay correct (objects are content-addressed) but concurrent writers cannot be coordinated through it"
        );
    }
    // Packs the index names but storage lacks are left out: their data is stored again.
    let index = Arc::new(repo.load_index_of_present_packs()?);
    let parent = repo
        .load_snapshots()?
        .into_iter()
        .rev()
        .find(|(_, s)| s.host == opts.host && s.has_paths(&path_strings));
    // With --full the parent is still walked alongside, to tell changed files from unchanged
    // ones; its chunk lists are just never trusted.
    let parent_tree = match &parent {
        Some((_, s)) => repo.load_tree(&index, &s.tree).ok().map(Arc::new),
        None => None,
    };
    phase("index and parent snapshot loaded");
    let kind = if opts.full || parent_tree.is_none() {
        BackupKind::Full
    } else {
        BackupKind::Incremental
    };

    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.threads
    };
    // How far a backup is, for progress and `status`: about as many entries as the parent had,
    // and for a full backup (which reads everything) about as many bytes.
    if let Some((_, p)) = &parent {
        let s = &p.summary;
        let entries = s.files_new + s.files_changed + s.files_unchanged + s.dirs;
        progress
            .entries_total
            .store(entries, std::sync::atomic::Ordering::Relaxed);
        if kind == BackupKind::Full {
            progress
                .bytes_total
                .store(s.total_bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let shared = Shared::new(repo.clone(), index, progress, threads, opts.index_every);
    let summary = std::thread::scope(|s| -> Result<(BlobId, Summary)> {
        let (job_tx, job_rx) = crossbeam_channel::unbounded();
        let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<ChunkJob>(threads * 2);
        // A rendezvous: a full pack goes straight to a free uploader (each queued pack is 16 MiB
        // of memory).
        let (pack_tx, pack_rx) = crossbeam_channel::bounded(0);
        let opts = &BackupOptions {
            uploads: if opts.uploads == 0 { 2 } else { opts.uploads },
            ..opts.clone()
        };
        // About 8192 events in flight: the walker stays that far ahead of the builder at most.
        let (event_tx, event_rx) = crossbeam_channel::bounded(8192 / walk::EVENT_BATCH);
        let shared = &shared;
        let mut workers = Vec::new();
        for _ in 0..threads {
            let (jobs, chunks) = (job_rx.clone(), chunk_tx.clone());
            workers.push(s.spawn(move || pipeline::file_worker(shared, jobs, chunks)));
        }
        drop(job_rx);
        let mut compressors = Vec::new();
        for slot in 0..threads {
            let (chunks, packs) = (chunk_rx.clone(), pack_tx.clone());
            compressors.push(s.spawn(move || pipeline::compressor(shared, slot, chunks, packs)));
        }
        drop(chunk_rx);
        let mut uploaders = Vec::new();
        for _ in 0..opts.uploads.max(1) {
            let packs = pack_rx.clone();
            uploaders.push(s.spawn(move || pipeline::uploader(shared, packs)));
        }
        drop(pack_rx);
        let targets = Targets::new(&covered);
        let mut walker = Walker {
            shared,
            filter: prefetch::Filter {
                excludes,
                exclude_paths,
                exclude_objects,
                one_file_system: opts.one_file_system,
            },
            full: opts.full,
            listers: threads,
            events: event_tx,
            batch: Vec::with_capacity(walk::EVENT_BATCH),
            jobs: job_tx,
            users: Default::default(),
            groups: Default::default(),
        };
        let walk = s.spawn(move || {
            let _ = walker.run(&targets, parent_tree);
        });

        let built = build_trees(shared, event_rx, &chunk_tx);
        // Shut the pipeline down in order: walker and readers, compressors, then uploaders.
        let _ = walk.join();
        for w in workers {
            let _ = w.join();
        }
        drop(chunk_tx);
        for c in compressors {
            let _ = c.join();
        }
        for pack in shared.take_partial_packs() {
            if pack_tx.send(pack).is_err() {
                break;
            }
        }
        drop(pack_tx);
        for u in uploaders {
            let _ = u.join();
        }
        if let Some(e) = shared.take_error() {
            return Err(e);
        }
        built
    });
    phase("source walked, new data stored");
    // Write order: packs (done above), then the index that names them, then the snapshot.
    let written = shared.take_written();
    let (root, mut summary) = match summary {
        Ok(s) => s,
        Err(e) => {
            // No snapshot; but the packs already stored are durable: index them so the next
            // run deduplicates against them instead of uploading the same data again.
            if !written.is_empty() {
                if let Err(ie) = repo.save_indexes(&written) {
                    tracing::warn!(error = %ie, "could not index the packs of the failed backup");
                }
            }
            return Err(e);
        }
    };
    summary.bytes_added = shared.bytes_added();
    if lock.confirm()? {
        let missing = missing_references(repo, &root, &written)?;
        if missing.lost_any() {
            tracing::warn!(
                chunks = missing.blobs,
                own_packs = missing.own_packs.len(),
                "the repository lost data this backup references while its lock had lapsed"
            );
            // Keep what survives of this run's uploads: the next attempt deduplicates
            // against it.
            let surviving: Vec<_> = written
                .into_iter()
                .filter(|(p, _)| !missing.own_packs.contains(p))
                .collect();
            if !surviving.is_empty() {
                repo.save_indexes(&surviving)?;
            }
            return Ok(None);
        }
    }
    repo.save_indexes(&written)?;
    summary.duration_secs = started.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        time,
        host: opts.host.clone(),
        username: nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default(),
        paths: path_strings,
        tags: opts.tags.clone(),
        job: opts.job.clone(),
        kind,
        parent: parent.map(|(id, _)| id),
        tree: root,
        summary,
        program: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
        original: None,
    };
    let id = repo.save_snapshot(&snapshot)?;
    Ok(Some(BackupOutcome { id, snapshot }))
}

/// What a snapshot being committed references that the repository no longer has.
#[derive(Debug, Default)]
pub(crate) struct Missing {
    /// Chunks and listings not in the current index, or in packs that are gone.
    pub(crate) blobs: usize,
    /// Packs this run wrote that are gone.
    pub(crate) own_packs: std::collections::HashSet<crate::id::PackId>,
}

impl Missing {
    pub(crate) fn lost_any(&self) -> bool {
        self.blobs > 0 || !self.own_packs.is_empty()
    }
}

/// Checks every blob reachable from `root` against the repository as it is now: the current
/// index plus this run's packs, and the packs actually in storage.
pub(crate) fn missing_references(
    repo: &Repository,
    root: &BlobId,
    written: &[(crate::id::PackId, Vec<crate::repo::PackEntry>)],
) -> Result<Missing> {
    use crate::storage::FileKind;
    let present: std::collections::HashSet<String> = repo
        .storage()
        .list(FileKind::Pack)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut missing = Missing::default();
    let mut index = crate::repo::Index::builder();
    for (pack, entries) in written {
        if present.contains(&pack.to_hex()) {
            index.add_pack(*pack, entries);
        } else {
            missing.own_packs.insert(*pack);
        }
    }
    let current = repo.load_index()?;
    for (pack, entries) in current.by_pack() {
        if present.contains(&pack.to_hex()) {
            index.add_pack(pack, &entries);
        }
    }
    let index = index.finish();
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![*root];
    while let Some(tree_id) = todo.pop() {
        if !seen.insert(tree_id) {
            continue;
        }
        let tree = match repo.load_tree(&index, &tree_id) {
            Ok(t) => t,
            Err(Error::MissingBlob { .. } | Error::NotFound { .. }) => {
                missing.blobs += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        for node in &tree.nodes {
            if let Some(sub) = node.subtree {
                todo.push(sub);
            }
            missing.blobs += node.content.iter().filter(|c| !index.contains(c)).count();
        }
    }
    Ok(missing)
}

/// Consumes the walker's events and stores the directory listings bottom-up.
fn build_trees(
    shared: &Shared,
    events: crossbeam_channel::Receiver<Vec<Event>>,
    chunks: &crossbeam_channel::Sender<ChunkJob>,
) -> Result<(BlobId, Summary)> {
    let mut summary = Summary::default();
    let mut stack: Vec<(Node, Vec<Node>)> = Vec::new();
    let mut root = None;
    for event in events.iter().flatten() {
        if shared.has_failed() {
            break;
        }
        match event {
            Event::Enter(node) => stack.push((node, Vec::new())),
            Event::Leave(known) => {
                let Some((mut dir, children)) = stack.pop() else {
                    break;
                };
                summary.dirs += 1;
                let id = match known {
                    // The parent snapshot's listing, entry for entry (and in the index).
                    Some(id) => id,
                    None => {
                        let tree = Tree { nodes: children };
                        let bytes = tree.to_bytes();
                        let id = shared.repo.sealer().blob_id(&bytes);
                        if shared.claim(&id) {
                            let job = ChunkJob {
                                kind: BlobKind::Tree,
                                id,
                                data: bytes,
                            };
                            if chunks.send(job).is_err() {
                                break;
                            }
                        }
                        id
                    }
                };
                dir.subtree = Some(id);
                match stack.last_mut() {
                    Some((_, siblings)) => siblings.push(dir),
                    None => root = Some(id),
                }
            }
            Event::Entry(node) => push(&mut stack, node),
            Event::Unchanged(node) => {
                summary.files_unchanged += 1;
                summary.total_bytes += node.size;
                push(&mut stack, node);
            }
            Event::File {
                mut node,
                path,
                outcome,
                previous,
            } => {
                let outcome = outcome
                    .recv()
                    .unwrap_or_else(|_| FileOutcome::Failed("backup stopped".into()));
                match outcome {
                    FileOutcome::Read {
                        content,
                        size,
                        meta,
                        unstable,
                        replaced,
                    } => {
                        match replaced {
                            // Another file than the one listed: its own metadata throughout.
                            Some(xattrs) => {
                                let mut fresh = walk::node_from_metadata(node.name, &meta);
                                fresh.user = if fresh.uid == node.uid {
                                    node.user
                                } else {
                                    walk::user_name(fresh.uid)
                                };
                                fresh.group = if fresh.gid == node.gid {
                                    node.group
                                } else {
                                    walk::group_name(fresh.gid)
                                };
                                fresh.xattrs = xattrs;
                                node = fresh;
                                summary.warnings.push(SourceError {
                                    path: path.to_string_lossy().into_owned(),
                                    error: "replaced by another file after it was listed; stored the file found when it was opened".into(),
                                });
                            }
                            None => {
                                let fresh = walk::node_from_metadata(Vec::new(), &meta);
                                node.mtime = fresh.mtime;
                                node.ctime = fresh.ctime;
                                node.mode = fresh.mode;
                            }
                        }
                        node.size = size;
                        match previous {
                            None => summary.files_new += 1,
                            Some(prev) if prev == content => summary.files_unchanged += 1,
                            Some(_) => summary.files_changed += 1,
                        }
                        if unstable {
                            summary.errors.push(SourceError {
                                path: path.to_string_lossy().into_owned(),
                                error: "changed while it was read; stored as of the last read"
                                    .into(),
                            });
                        }
                        node.content = content;
                        summary.total_bytes += size;
                        Progress::add(&shared.progress.files, 1);
                        push(&mut stack, node);
                    }
                    FileOutcome::Failed(error) => {
                        if shared.has_failed() {
                            break;
                        }
                        tracing::debug!(path = %path.display(), %error, "skipped unreadable file");
                        summary.errors.push(SourceError {
                            path: path.to_string_lossy().into_owned(),
                            error,
                        });
                    }
                }
            }
            Event::Error { path, error } => {
                tracing::debug!(path = %path.display(), %error, "skipped");
                summary.errors.push(SourceError {
                    path: path.to_string_lossy().into_owned(),
                    error,
                });
            }
            Event::Warning { path, warning } => {
                summary.warnings.push(SourceError {
                    path: path.to_string_lossy().into_owned(),
                    error: warning,
                });
            }
        }
    }
    if let Some(e) = shared.take_error() {
        return Err(e);
    }
    let root = root.ok_or(Error::Interrupted)?;
    summary.bytes_read = Progress::get(&shared.progress.bytes_read);
    Ok((root, summary))
}

fn push(stack: &mut [(Node, Vec<Node>)], node: Node) {
    if let Some((_, children)) = stack.last_mut() {
        children.push(node);
    }
}

//! `prune`: removes data no snapshot references and rewrites the index.
//!
//! Safety rests on the exclusive repository lock (see [`crate::repo::lock`]): prune runs only
//! when no live backup, forget or check holds a lock, and every backup started later waits for
//! it. A backup that was frozen so long that its lock went stale, and lost data to a prune,
//! notices before it commits and starts over (see [`crate::ops::backup`]).
//!
//! Algorithm:
//! 1. Take the exclusive lock. List packs and index objects; load every index and snapshot.
//! 2. Mark: walk every snapshot's directory listings and collect every blob they reference.
//!    A listing that cannot be read, or a referenced blob that no index places in an existing
//!    pack, stops prune before it changes anything: the repository is damaged and deleting
//!    "unreferenced" data computed from a partial view could lose more.
//! 3. Plan: a pack without used blobs is deleted; a pack whose unused share is above
//!    `max_unused` is repacked (its used blobs copied, verified, into new packs); packs in
//!    storage that no index names, older than the lock's staleness bound, are leftovers of
//!    crashed backups and are deleted.
//! 4. Write the new packs, then one new index naming every pack that stays, then remove the
//!    old index objects, then delete the packs.
//!
//! Killed at any point the repository stays valid: before step 4's index removal, old and new
//! indexes overlap (duplicates are harmless); after it, the packs still to delete are merely
//! unindexed, and the next prune removes them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::progress::Progress;
use crate::repo::pack::PackBuilder;
use crate::repo::{BlobKind, Index, LockSettings, PackEntry, Repository, Step, TreeWalk};
use crate::storage::FileKind;

/// Options of `prune`.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// A pack whose unused share (percent of its size) is above this is repacked.
    pub max_unused_percent: f64,
    /// Plan and report only.
    pub dry_run: bool,
    pub lock: LockSettings,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: 10.0,
            dry_run: false,
            lock: LockSettings::default(),
        }
    }
}

/// What prune found and did.
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub packs: usize,
    pub repository_bytes_before: u64,
    pub used_blobs: usize,
    pub used_bytes: u64,
    /// Packs without any used blob.
    pub unused_packs: usize,
    /// Packs copied because their unused share was above the threshold.
    pub repacked_packs: usize,
    /// Bytes of used blobs copied into new packs.
    pub repacked_bytes: u64,
    pub new_packs: usize,
    /// Packs no index names, left behind by crashed backups.
    pub unindexed_packs_removed: usize,
    /// Unindexed packs younger than the lock bound, kept (a backup may still be writing).
    pub unindexed_packs_kept: usize,
    /// Temporary files of packs that killed backups were writing, removed after a day.
    pub temporary_files_removed: usize,
    /// Index entries that named packs missing from storage (dropped from the new index).
    pub missing_packs: usize,
    pub index_objects_removed: usize,
    pub packs_removed: usize,
    pub bytes_freed: u64,
    pub repository_bytes_after: u64,
}

/// Runs prune on `repo`.
pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    progress: Arc<Progress>,
) -> Result<PruneReport> {
    let lock = repo.lock("prune", true, &opts.lock)?;
    let reference = repo
        .storage()
        .modified(FileKind::Lock, &lock.name())
        .ok()
        .flatten();
    let report = prune_locked(repo, opts, progress, reference)?;
    lock.release();
    Ok(report)
}

fn check_interrupt() -> Result<()> {
    if crate::interrupt::requested() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

fn prune_locked(
    repo: &Repository,
    opts: &PruneOptions,
    progress: Arc<Progress>,
    reference: Option<SystemTime>,
) -> Result<PruneReport> {
    let storage = repo.storage();
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // 1. What is there. The listings must be complete: `list` fails rather than return part.
    let pack_sizes: HashMap<String, u64> = storage.list(FileKind::Pack)?.into_iter().collect();
    report.packs = pack_sizes.len();
    report.repository_bytes_before = pack_sizes.values().sum();
    let index_names: Vec<String> = storage
        .list(FileKind::Index)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut index = Index::builder();
    let mut indexed: HashSet<PackId> = HashSet::new();
    let mut missing_packs: HashSet<PackId> = HashSet::new();
    for name in &index_names {
        for (pack, entries) in repo.load_index_file(name)? {
            if pack_sizes.contains_key(&pack.to_hex()) {
                indexed.insert(pack);
                index.add_pack(pack, &entries);
            } else {
                missing_packs.insert(pack);
            }
        }
    }
    let index = index.finish();
    report.missing_packs = missing_packs.len();
    // Every snapshot, or none: a damaged one may reference data that would look unused.
    let snapshots = repo.list_snapshots()?.complete("prune")?;
    report.snapshots = snapshots.len();
    check_interrupt()?;

    // 2. Mark: every listing once, however many snapshots and directories share it.
    let mut used: HashSet<BlobId> = HashSet::new();
    let mut walk = TreeWalk::new(repo, &index).once();
    for (id, snap) in &snapshots {
        if !walk.start(snap.tree) {
            continue;
        }
        used.insert(snap.tree);
        while let Some(step) = walk.next()? {
            match step {
                Step::Entry { node, .. } => {
                    if let Some(sub) = node.subtree {
                        used.insert(sub);
                        walk.enter(&node.name, sub);
                    }
                    for c in node.content {
                        if !index.contains(&c) {
                            return Err(Error::Invalid(format!(
                                "prune stopped before changing anything: snapshot {} references chunk {c}, which no index places in an existing pack (the repository is damaged). \
                                 Run `lifeboat check` to see what is affected",
                                id.short()
                            )));
                        }
                        used.insert(c);
                    }
                }
                Step::Leave { .. } => {}
                Step::Damaged { damage, .. } => {
                    return Err(Error::Invalid(format!(
                        "prune stopped before changing anything: a directory listing of snapshot {} cannot be read ({damage}). \
                         Run `lifeboat check --read-data` to see what is damaged",
                        id.short()
                    )))
                }
            }
        }
    }
    report.used_blobs = used.len();

    // 3. Plan, pack by pack.
    let by_pack = index.by_pack();
    let mut keep: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    let mut repack: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    let mut delete: Vec<(PackId, u64)> = Vec::new();
    for (pack, entries) in by_pack {
        let size = pack_sizes.get(&pack.to_hex()).copied().unwrap_or(0);
        let used_bytes: u64 = entries
            .iter()
            .filter(|e| used.contains(&e.id))
            .map(|e| u64::from(e.stored_len))
            .sum();
        report.used_bytes += used_bytes;
        // Dead bytes: the pack's size less its live blobs and the header that describes them
        // (a header is about 48 bytes per blob plus sealing); a pack of only live blobs is
        // never repacked, however small.
        let live = entries.iter().filter(|e| used.contains(&e.id)).count() as u64;
        let overhead = 128 + 48 * live;
        let dead = size.saturating_sub(used_bytes + overhead);
        if used_bytes == 0 {
            report.unused_packs += 1;
            delete.push((pack, size));
        } else if size > 0 && dead as f64 * 100.0 / size as f64 > opts.max_unused_percent {
            report.repacked_packs += 1;
            report.repacked_bytes += used_bytes;
            repack.push((pack, entries));
        } else {
            keep.push((pack, entries));
        }
    }
    let stale_after = opts.lock.stale_after;
    for (name, size) in &pack_sizes {
        let Ok(pack) = PackId::from_hex(name) else {
            continue;
        };
        if indexed.contains(&pack) {
            continue;
        }
        let age = storage.modified(FileKind::Pack, name)?.and_then(|m| {
            reference
                .unwrap_or_else(SystemTime::now)
                .duration_since(m)
                .ok()
        });
        if age.is_some_and(|a| a > stale_after) {
            report.unindexed_packs_removed += 1;
            delete.push((pack, *size));
        } else {
            report.unindexed_packs_kept += 1;
        }
    }
    let freed_by_delete: u64 = delete.iter().map(|(_, s)| s).sum();
    let repacked_sizes: u64 = repack
        .iter()
        .map(|(p, _)| pack_sizes.get(&p.to_hex()).copied().unwrap_or(0))
        .sum();
    if opts.dry_run {
        report.bytes_freed = freed_by_delete + repacked_sizes.saturating_sub(report.repacked_bytes);
        report.repository_bytes_after = report
            .repository_bytes_before
            .saturating_sub(report.bytes_freed);
        return Ok(report);
    }
    check_interrupt()?;
    // Packs killed backups were filling (temporary files, local repositories). A day at least,
    // far past the lock bound: a frozen backup that wakes up finds its file still there.
    report.temporary_files_removed = storage.clean_spool(
        FileKind::Pack,
        stale_after.max(std::time::Duration::from_secs(24 * 3600)),
    )?;

    // 4a. Repack: copy the used blobs, verified, into new packs.
    let mut new_packs: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    let mut new_bytes = 0u64;
    {
        let pack_size = repo.config().pack_size as usize;
        let mut builders: HashMap<BlobKind, PackBuilder> = HashMap::new();
        let mut copied: HashSet<BlobId> = HashSet::new();
        let mut flush =
            |b: PackBuilder, new_packs: &mut Vec<(PackId, Vec<PackEntry>)>| -> Result<()> {
                let (bytes, entries) = b.finish_verified(repo.sealer())?;
                let id = repo.save_pack(&bytes)?;
                Progress::add(&progress.bytes_written, bytes.len() as u64);
                new_bytes += bytes.len() as u64;
                new_packs.push((id, entries));
                Ok(())
            };
        for (pack, entries) in &repack {
            check_interrupt()?;
            let bytes = repo.read_pack(pack)?;
            if !bytes.matches_name() {
                return Err(Error::corrupt(
                    bytes.what(),
                    "content does not match its name (damaged); prune stopped before deleting anything",
                ));
            }
            for e in entries.iter().filter(|e| used.contains(&e.id)) {
                if !copied.insert(e.id) {
                    continue;
                }
                // Verified before it is copied: a damaged chunk must not be spread.
                let blob = bytes.verified_copy(e)?;
                let b = builders
                    .entry(e.kind)
                    .or_insert_with(|| PackBuilder::with_capacity(pack_size));
                if !b.is_empty() && b.finished_len_with(blob.stored.len()) > pack_size {
                    let full = std::mem::take(b);
                    flush(full, &mut new_packs)?;
                }
                builders.entry(e.kind).or_default().add(&blob);
            }
        }
        for (_, b) in builders {
            if !b.is_empty() {
                flush(b, &mut new_packs)?;
            }
        }
    }
    report.new_packs = new_packs.len();
    check_interrupt()?;

    // 4b. One index naming every pack that stays, then the old indexes go.
    let mut all = keep;
    all.extend(new_packs);
    let new_index = if all.is_empty() {
        None
    } else {
        Some(hex::encode(repo.save_index(&all)?.0))
    };
    for name in &index_names {
        if Some(name) != new_index.as_ref() {
            storage.remove(FileKind::Index, name)?;
            report.index_objects_removed += 1;
        }
    }

    // 4c. Delete what no index names any more.
    for (pack, _) in &repack {
        delete.push((*pack, pack_sizes.get(&pack.to_hex()).copied().unwrap_or(0)));
    }
    let mut removed_bytes = 0u64;
    for (pack, size) in &delete {
        storage.remove(FileKind::Pack, &pack.to_hex())?;
        report.packs_removed += 1;
        removed_bytes += size;
    }
    report.repository_bytes_after =
        (report.repository_bytes_before + new_bytes).saturating_sub(removed_bytes);
    report.bytes_freed = report
        .repository_bytes_before
        .saturating_sub(report.repository_bytes_after);
    Ok(report)
}

//! `repair index`: rebuilds the index from the packs in storage.
//!
//! Every pack describes itself (its sealed header lists its blobs), so the index can be made
//! again from the packs alone. Algorithm, under the exclusive lock (like prune):
//!
//! 1. List the packs and the index objects; load every index object. One that is damaged is
//!    reported and replaced; one that cannot be read for another reason (storage unreachable)
//!    stops the repair before anything changes.
//! 2. Packs the old index names that the listing lacks are confirmed missing one by one (a
//!    listing that left out a pack that exists stops the repair: an incomplete listing must
//!    never remove index entries). Their entries are left out of the new index, and reported.
//! 3. A pack the old index describes, whose size in storage is exactly what those entries give,
//!    keeps them; every other pack's header is read (`read_all_packs`: every pack's header;
//!    `read_data`: every pack whole, verifying its name and every blob).
//! 4. A damaged pack (header unreadable, truncated, or with `read_data` a damaged blob or a
//!    content that does not match its name) is salvaged: the blobs its header, or else the old
//!    index, places in it are verified one by one, and those intact and not stored in a healthy
//!    pack anyway are copied into new packs. The damaged pack leaves the index but stays in
//!    storage (prune removes it). Blobs that cannot be salvaged are named as lost.
//! 5. A pack that cannot be read because storage fails (not because it is damaged) keeps what
//!    the old index said about it, and is named: the repair is then incomplete (the command
//!    exits with code 3), since a transient fault must never drop data from the index.
//! 6. New index objects are written (split like a backup's), and only when they are durable
//!    are the old ones removed.
//!
//! Interrupted or killed at any point, the repository stays valid: before step 6 only new
//! packs were written (unindexed, prune removes them); during step 6 old and new index
//! objects overlap (duplicates are harmless). Running it again finishes the work.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::ObjectProblem;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::progress::Progress;
use crate::repo::pack::{
    header_len_from_trailer, pack_len, parse_header, read_pack_header, EncodedBlob, PackBuilder,
    TRAILER_LEN,
};
use crate::repo::{BlobKind, LockSettings, PackEntry, Repository};
use crate::storage::FileKind;

/// Options of `repair index`.
#[derive(Debug, Clone, Default)]
pub struct RepairIndexOptions {
    /// Read the header of every pack, also of those the old index describes correctly.
    pub read_all_packs: bool,
    /// Read every pack whole and verify every blob; salvage packs with damaged blobs too.
    pub read_data: bool,
    /// Report what would be done; write and remove nothing.
    pub dry_run: bool,
    /// Parallel pack readers (0: a default for the mode).
    pub threads: usize,
    pub lock: LockSettings,
}

/// A pack an old index named that is not in storage.
#[derive(Debug, Clone, Serialize)]
pub struct MissingPack {
    pub pack: String,
    /// Entries of it the old index had (left out of the new one).
    pub blobs: usize,
}

/// A damaged pack, left out of the new index.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedPack {
    pub pack: String,
    pub error: String,
    /// Where its blobs were found: "header", "old index", or "nothing" (then none could be).
    pub located_by: String,
    /// Intact blobs copied into new packs.
    pub salvaged: usize,
    /// Blobs also stored in a healthy pack (nothing to copy).
    pub stored_elsewhere: usize,
    /// Blobs lost: damaged here and intact nowhere else.
    pub lost: Vec<String>,
}

/// A pack that storage could not deliver.
#[derive(Debug, Clone, Serialize)]
pub struct UnreadablePack {
    pub pack: String,
    pub error: String,
    /// Entries the old index had for it, kept in the new index.
    pub kept_blobs: usize,
}

/// A pack whose header disagrees with what the old index said about it.
#[derive(Debug, Clone, Serialize)]
pub struct CorrectedPack {
    pub pack: String,
    pub old_blobs: usize,
    pub blobs: usize,
}

/// What `repair index` found and did.
#[derive(Debug, Default, Serialize)]
pub struct RepairIndexReport {
    pub dry_run: bool,
    /// Packs in storage.
    pub packs: usize,
    /// Packs whose entries were taken from the old index (listed there, size as expected).
    pub packs_reused: usize,
    /// Packs whose header (or, with `read_data`, whole content) was read.
    pub packs_read: usize,
    pub bytes_read: u64,
    /// Blob entries the new index holds (a blob stored in two packs counts twice).
    pub blobs: usize,
    pub index_objects_before: usize,
    pub index_objects_written: usize,
    pub index_objects_removed: usize,
    /// Old index objects that could not be read (damaged); replaced by the new index.
    pub damaged_index_objects: Vec<ObjectProblem>,
    /// Packs no old index named, now indexed.
    pub added_packs: Vec<String>,
    /// Packs the old index described differently from their header (the header wins).
    pub corrected_packs: Vec<CorrectedPack>,
    /// Packs an old index named that are not in storage: their entries are left out.
    pub missing_packs: Vec<MissingPack>,
    /// Damaged packs, left out of the index after their intact blobs were salvaged.
    pub damaged_packs: Vec<DamagedPack>,
    /// Packs storage could not deliver: what the old index said about them is kept.
    pub unreadable_packs: Vec<UnreadablePack>,
    /// Objects in `data/` whose names are not pack ids (ignored, as every reader does).
    pub ignored: Vec<String>,
    /// New packs holding salvaged blobs.
    pub new_packs: Vec<String>,
}

impl RepairIndexReport {
    /// Whether every pack could be read (else the index keeps old entries for some).
    pub fn is_complete(&self) -> bool {
        self.unreadable_packs.is_empty()
    }
}

/// What reading one pack gave.
enum PackRead {
    Healthy(Vec<PackEntry>),
    /// Damaged; its header's entries if the header could be read.
    Damaged {
        error: String,
        header: Option<Vec<PackEntry>>,
    },
    Missing,
    Unreadable(String),
}

fn from_error(e: Error) -> PackRead {
    match e {
        Error::NotFound { .. } => PackRead::Missing,
        e if e.is_damage() => PackRead::Damaged {
            error: e.reason(),
            header: None,
        },
        e => PackRead::Unreadable(e.to_string()),
    }
}

/// Rebuilds the index. See the module documentation.
pub fn repair_index(
    repo: &Repository,
    opts: &RepairIndexOptions,
    progress: Arc<Progress>,
) -> Result<RepairIndexReport> {
    let lock = if opts.dry_run {
        repo.lock_for_reading("repair index")?
    } else {
        Some(repo.lock("repair index", true, &opts.lock)?)
    };
    let report = repair_locked(repo, opts, &progress)?;
    if let Some(l) = lock {
        l.release();
    }
    Ok(report)
}

fn repair_locked(
    repo: &Repository,
    opts: &RepairIndexOptions,
    progress: &Progress,
) -> Result<RepairIndexReport> {
    let storage = repo.storage();
    let mut report = RepairIndexReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // 1. What is there. `list` fails rather than return part of a listing.
    let listed = storage.list(FileKind::Pack)?;
    report.packs = listed.len();
    let index_names: Vec<String> = storage
        .list(FileKind::Index)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    report.index_objects_before = index_names.len();
    let mut old: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for name in &index_names {
        crate::interrupt::check()?;
        match repo.load_index_file(name) {
            Ok(packs) => {
                for (pack, entries) in packs {
                    old.entry(pack).or_default().extend(entries);
                }
            }
            Err(e @ Error::Corrupt { .. }) => report.damaged_index_objects.push(ObjectProblem {
                object: FileKind::Index.path(name),
                error: e.reason(),
            }),
            // Unreachable storage and a signal keep their own kind (and exit code).
            Err(e @ (Error::Unreachable { .. } | Error::Interrupted)) => return Err(e),
            Err(e) => {
                return Err(Error::Invalid(format!(
                    "repair index stopped before changing anything: {} could not be read ({e}); try again when the storage answers",
                    FileKind::Index.path(name)
                )))
            }
        }
    }
    for entries in old.values_mut() {
        entries.sort_by_key(|e| (e.offset, e.id));
        entries.dedup();
    }

    // 2. Packs the old index names that storage lacks, confirmed one by one.
    let sizes: HashMap<&str, u64> = listed.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let mut gone: Vec<(PackId, usize)> = Vec::new();
    for (pack, entries) in &old {
        let name = pack.to_hex();
        if !sizes.contains_key(name.as_str()) {
            if confirm_missing(repo, &name)? {
                gone.push((*pack, entries.len()));
            } else {
                return Err(Error::Invalid(format!(
                    "repair index stopped before changing anything: the listing of data/ left out {}, which exists; an incomplete listing must not remove index entries. Try again",
                    FileKind::Pack.path(&name)
                )));
            }
        }
    }

    // 3. Reuse what the old index says where storage agrees; read the rest.
    let mut keep: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    let mut to_read: Vec<(PackId, u64)> = Vec::new();
    for (name, size) in &listed {
        let Ok(pack) = PackId::from_hex(name) else {
            report.ignored.push(FileKind::Pack.path(name));
            continue;
        };
        let reuse = !opts.read_all_packs
            && !opts.read_data
            && old
                .get(&pack)
                .is_some_and(|e| expected_len(repo, e) == Some(*size));
        if reuse {
            // Taken out of the old index: nothing below needs it again (one copy in memory).
            if let Some(entries) = old.remove(&pack) {
                report.packs_reused += 1;
                keep.push((pack, entries));
            }
        } else {
            to_read.push((pack, *size));
        }
    }
    report.packs_read = to_read.len();
    let reads = read_packs(repo, &to_read, opts, progress)?;

    let mut damaged: Vec<(PackId, String, Option<Vec<PackEntry>>)> = Vec::new();
    for (pack, read) in reads {
        let path = FileKind::Pack.path(&pack.to_hex());
        match read {
            PackRead::Healthy(entries) => {
                match old.get(&pack) {
                    None => report.added_packs.push(path),
                    Some(o) if !same_entries(o, &entries) => {
                        report.corrected_packs.push(CorrectedPack {
                            pack: path,
                            old_blobs: o.len(),
                            blobs: entries.len(),
                        })
                    }
                    Some(_) => {}
                }
                keep.push((pack, entries));
            }
            PackRead::Damaged { error, header } => damaged.push((pack, error, header)),
            PackRead::Missing => {
                // Gone since it was listed (removed by hand meanwhile).
                if let Some(o) = old.get(&pack) {
                    gone.push((pack, o.len()));
                }
            }
            PackRead::Unreadable(error) => {
                let kept = old.get(&pack).cloned().unwrap_or_default();
                report.unreadable_packs.push(UnreadablePack {
                    pack: path,
                    error,
                    kept_blobs: kept.len(),
                });
                if !kept.is_empty() {
                    keep.push((pack, kept));
                }
            }
        }
    }
    gone.sort();
    report.missing_packs = gone
        .into_iter()
        .map(|(p, blobs)| MissingPack {
            pack: FileKind::Pack.path(&p.to_hex()),
            blobs,
        })
        .collect();

    // 4. Salvage what is intact in damaged packs.
    damaged.sort_by_key(|d| d.0);
    // Only needed (and only built) when there is something to salvage.
    let healthy: HashSet<BlobId> = if damaged.is_empty() {
        HashSet::new()
    } else {
        keep.iter()
            .flat_map(|(_, entries)| entries.iter().map(|e| e.id))
            .collect()
    };
    let mut salvage = Salvage::new(repo, opts.dry_run, healthy, progress);
    for (pack, error, header) in damaged {
        crate::interrupt::check()?;
        let (located_by, entries) = match (header, old.get(&pack)) {
            (Some(h), _) => ("header", h),
            (None, Some(o)) => ("old index", o.clone()),
            (None, None) => ("nothing", Vec::new()),
        };
        let outcome = salvage.pack(&pack, &entries)?;
        match outcome {
            Salvaged::Done {
                salvaged,
                elsewhere,
                lost,
            } => report.damaged_packs.push(DamagedPack {
                pack: FileKind::Pack.path(&pack.to_hex()),
                error,
                located_by: located_by.into(),
                salvaged,
                stored_elsewhere: elsewhere,
                lost: lost.iter().map(BlobId::to_hex).collect(),
            }),
            Salvaged::Unreadable(e) => {
                let kept = old.get(&pack).cloned().unwrap_or_default();
                report.unreadable_packs.push(UnreadablePack {
                    pack: FileKind::Pack.path(&pack.to_hex()),
                    error: e,
                    kept_blobs: kept.len(),
                });
                if !kept.is_empty() {
                    keep.push((pack, kept));
                }
            }
        }
    }
    let new_packs = salvage.finish()?;
    report.bytes_read = Progress::get(&progress.bytes_read);
    // A blob lost in one damaged pack but salvaged from another is not lost.
    for d in &mut report.damaged_packs {
        d.lost
            .retain(|id| BlobId::from_hex(id).is_ok_and(|id| !salvage.copied.contains(&id)));
    }
    report.new_packs = new_packs
        .iter()
        .map(|(p, _)| FileKind::Pack.path(&p.to_hex()))
        .collect();
    keep.extend(new_packs);
    keep.sort_by_key(|k| k.0);
    report.blobs = keep.iter().map(|(_, e)| e.len()).sum();
    report.added_packs.sort();
    report.unreadable_packs.sort_by(|a, b| a.pack.cmp(&b.pack));
    if opts.dry_run {
        return Ok(report);
    }
    crate::interrupt::check()?;

    // 6. The new index, durable, then the old one goes.
    let written: HashSet<String> = repo
        .save_indexes(&keep)?
        .iter()
        .map(|id| id.to_hex())
        .collect();
    report.index_objects_written = written.len();
    for name in &index_names {
        if !written.contains(name) {
            storage.remove(FileKind::Index, name)?;
            report.index_objects_removed += 1;
        }
    }
    Ok(report)
}

/// Whether a pack the listing lacks is really gone (and not left out of an incomplete listing).
fn confirm_missing(repo: &Repository, name: &str) -> Result<bool> {
    match repo.storage().modified(FileKind::Pack, name) {
        Err(Error::NotFound { .. }) => Ok(true),
        Ok(Some(_)) => Ok(false),
        // The storage cannot tell a time: ask for a byte instead.
        Ok(None) => match repo.storage().read_range(FileKind::Pack, name, 0, 1) {
            Err(Error::NotFound { .. }) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The size a pack has when `entries` are all its blobs (`None` for no entries).
fn expected_len(repo: &Repository, entries: &[PackEntry]) -> Option<u64> {
    let end = entries
        .iter()
        .map(|e| u64::from(e.offset) + u64::from(e.stored_len))
        .max()?;
    Some(pack_len(repo.sealer(), end, entries.len()))
}

fn same_entries(a: &[PackEntry], b: &[PackEntry]) -> bool {
    let key = |v: &[PackEntry]| {
        let mut k: Vec<(u32, BlobId)> = v.iter().map(|e| (e.offset, e.id)).collect();
        k.sort();
        k
    };
    key(a) == key(b)
}

/// Reads the packs on several threads; `Err` only when interrupted.
fn read_packs(
    repo: &Repository,
    packs: &[(PackId, u64)],
    opts: &RepairIndexOptions,
    progress: &Progress,
) -> Result<Vec<(PackId, PackRead)>> {
    // Headers are small reads, bound by latency: more readers than cores. Whole packs are
    // bound by bandwidth and memory (one pack per reader).
    let threads = crate::pool::workers(opts.threads, 2) * if opts.read_data { 1 } else { 4 };
    let mut out = crate::pool::map(threads, packs, |&(pack, size)| {
        let read = if opts.read_data {
            read_whole(repo, &pack, progress)
        } else {
            read_header(repo, &pack, size, progress)
        };
        Progress::add(&progress.entries, 1);
        Ok((pack, read))
    })?;
    out.sort_by_key(|r| r.0);
    Ok(out)
}

/// Reads a pack's trailer and header only.
fn read_header(repo: &Repository, pack: &PackId, size: u64, progress: &Progress) -> PackRead {
    let name = pack.to_hex();
    let what = FileKind::Pack.path(&name);
    let storage = repo.storage();
    if size < TRAILER_LEN as u64 {
        return PackRead::Damaged {
            error: format!("truncated: {size} bytes"),
            header: None,
        };
    }
    let trailer = match storage.read_range(
        FileKind::Pack,
        &name,
        size - TRAILER_LEN as u64,
        TRAILER_LEN as u32,
    ) {
        Ok(t) => t,
        Err(e) => return from_error(e),
    };
    let hlen = match header_len_from_trailer(&trailer, size, &what) {
        Ok(l) => l,
        Err(e) => return from_error(e),
    };
    let data_len = size - TRAILER_LEN as u64 - u64::from(hlen);
    let sealed = match storage.read_range(FileKind::Pack, &name, data_len, hlen) {
        Ok(h) => h,
        Err(e) => return from_error(e),
    };
    Progress::add(&progress.bytes_read, TRAILER_LEN as u64 + u64::from(hlen));
    match parse_header(repo.sealer(), &sealed, data_len, &what) {
        Ok(entries) => PackRead::Healthy(entries),
        Err(e) => from_error(e),
    }
}

/// Reads a pack whole and verifies its name, header and every blob.
fn read_whole(repo: &Repository, pack: &PackId, progress: &Progress) -> PackRead {
    let bytes = match repo.read_pack(pack) {
        Ok(b) => b,
        Err(e) => return from_error(e),
    };
    Progress::add(&progress.bytes_read, bytes.bytes().len() as u64);
    let entries = match read_pack_header(repo.sealer(), bytes.bytes(), bytes.what()) {
        Ok(e) => e,
        Err(e) => return from_error(e),
    };
    let bad = entries.iter().filter(|e| bytes.blob(e).is_err()).count();
    if bad > 0 {
        return PackRead::Damaged {
            error: format!("{bad} of its {} chunks are damaged", entries.len()),
            header: Some(entries),
        };
    }
    if !bytes.matches_name() {
        return PackRead::Damaged {
            error: "content does not match its name (damaged)".into(),
            header: Some(entries),
        };
    }
    PackRead::Healthy(entries)
}

enum Salvaged {
    Done {
        salvaged: usize,
        elsewhere: usize,
        lost: Vec<BlobId>,
    },
    /// Storage could not deliver the pack.
    Unreadable(String),
}

/// Copies intact blobs of damaged packs into new packs.
struct Salvage<'a> {
    repo: &'a Repository,
    progress: &'a Progress,
    dry_run: bool,
    /// Blobs in healthy packs: no copy needed.
    healthy: HashSet<BlobId>,
    /// Blobs copied (or, in a dry run, that would be).
    copied: HashSet<BlobId>,
    builders: HashMap<BlobKind, PackBuilder>,
    written: Vec<(PackId, Vec<PackEntry>)>,
}

impl<'a> Salvage<'a> {
    fn new(
        repo: &'a Repository,
        dry_run: bool,
        healthy: HashSet<BlobId>,
        progress: &'a Progress,
    ) -> Self {
        Salvage {
            repo,
            progress,
            dry_run,
            healthy,
            copied: HashSet::new(),
            builders: HashMap::new(),
            written: Vec::new(),
        }
    }

    fn pack(&mut self, pack: &PackId, entries: &[PackEntry]) -> Result<Salvaged> {
        let (mut salvaged, mut elsewhere, mut lost) = (0, 0, Vec::new());
        let wanted: Vec<&PackEntry> = entries
            .iter()
            .filter(|e| {
                let skip = self.healthy.contains(&e.id);
                elsewhere += usize::from(skip);
                !skip
            })
            .collect();
        if wanted.is_empty() {
            return Ok(Salvaged::Done {
                salvaged,
                elsewhere,
                lost,
            });
        }
        let bytes = match self.repo.read_pack(pack) {
            Ok(b) => Some(b),
            Err(e) if e.is_damage() => None,
            Err(e) => return Ok(Salvaged::Unreadable(e.to_string())),
        };
        if let Some(b) = &bytes {
            Progress::add(&self.progress.bytes_read, b.bytes().len() as u64);
        }
        for e in wanted {
            if self.copied.contains(&e.id) {
                continue;
            }
            match bytes.as_ref().map(|b| b.verified_copy(e)) {
                Some(Ok(blob)) => {
                    self.copied.insert(e.id);
                    salvaged += 1;
                    if !self.dry_run {
                        self.add(blob)?;
                    }
                }
                _ => lost.push(e.id),
            }
        }
        Ok(Salvaged::Done {
            salvaged,
            elsewhere,
            lost,
        })
    }

    fn add(&mut self, blob: EncodedBlob) -> Result<()> {
        let pack_size = self.repo.config().pack_size as usize;
        let b = self.builders.entry(blob.kind).or_default();
        if !b.is_empty() && b.finished_len_with(blob.stored.len()) > pack_size {
            let full = std::mem::take(b);
            self.flush(full)?;
        }
        self.builders.entry(blob.kind).or_default().add(&blob);
        Ok(())
    }

    fn flush(&mut self, b: PackBuilder) -> Result<()> {
        let (bytes, entries) = b.finish_verified(self.repo.sealer())?;
        let id = self.repo.save_pack(&bytes)?;
        if entries.first().is_some_and(|e| e.kind == BlobKind::Tree) {
            self.repo.cache_tree_pack(&id, &bytes);
        }
        Progress::add(&self.progress.bytes_written, bytes.len() as u64);
        self.written.push((id, entries));
        Ok(())
    }

    /// Stores the partly filled packs; returns every new pack.
    fn finish(&mut self) -> Result<Vec<(PackId, Vec<PackEntry>)>> {
        let builders: Vec<PackBuilder> = self.builders.drain().map(|(_, b)| b).collect();
        for b in builders {
            if !b.is_empty() {
                self.flush(b)?;
            }
        }
        Ok(std::mem::take(&mut self.written))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{names, reopen, repository, Flaky};
    use super::*;
    use crate::repo::BlobKind;

    fn data_pack(repo: &Repository) -> (PackId, usize) {
        let index = repo.load_index().expect("index");
        index
            .by_pack()
            .into_iter()
            .find(|(_, e)| e.first().is_some_and(|e| e.kind == BlobKind::Data))
            .map(|(p, e)| (p, e.len()))
            .expect("a data pack")
    }

    #[test]
    fn an_incomplete_listing_stops_repair_index_before_anything_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (repo, _) = repository(dir.path());
        let (pack, _) = data_pack(&repo);
        let before = names(&repo, FileKind::Index);
        let flaky = reopen(Flaky {
            inner: repo.storage().clone(),
            fail_reads: None,
            hide: Some(pack.to_hex()),
        });
        let err = repair_index(&flaky, &RepairIndexOptions::default(), Arc::default())
            .expect_err("an incomplete listing");
        assert!(err.to_string().contains("incomplete listing"), "{err}");
        assert!(err.to_string().contains(&pack.to_hex()), "{err}");
        assert_eq!(names(&repo, FileKind::Index), before);
        assert!(repo.load_index().expect("index").packs().contains(&pack));
    }

    #[test]
    fn a_pack_storage_cannot_deliver_keeps_what_the_old_index_said() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (repo, _) = repository(dir.path());
        let (pack, blobs) = data_pack(&repo);
        let flaky = reopen(Flaky {
            inner: repo.storage().clone(),
            fail_reads: Some(pack.to_hex()),
            hide: None,
        });
        let opts = RepairIndexOptions {
            read_all_packs: true,
            ..Default::default()
        };
        let report = repair_index(&flaky, &opts, Arc::default()).expect("repair");
        assert!(!report.is_complete());
        assert_eq!(report.unreadable_packs.len(), 1, "{report:?}");
        assert_eq!(report.unreadable_packs[0].kept_blobs, blobs);
        assert!(
            report.unreadable_packs[0].error.contains("reset"),
            "{report:?}"
        );
        assert!(report.damaged_packs.is_empty() && report.missing_packs.is_empty());
        let index = repo.load_index().expect("index");
        assert_eq!(
            index.blobs_in(&pack),
            Some(blobs),
            "the pack's entries are kept"
        );
        // With --read-data too: storage faults are never taken for damage.
        let opts = RepairIndexOptions {
            read_data: true,
            ..Default::default()
        };
        let report = repair_index(&flaky, &opts, Arc::default()).expect("repair");
        assert_eq!(report.unreadable_packs.len(), 1, "{report:?}");
        assert!(report.damaged_packs.is_empty(), "{report:?}");
        assert!(repo.load_index().expect("index").packs().contains(&pack));
    }

    #[test]
    fn a_damaged_index_object_is_replaced_and_a_partial_description_corrected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (repo, _) = repository(dir.path());
        let (pack, blobs) = data_pack(&repo);
        assert!(blobs > 1);
        // The only index object left describes the data pack in part (so its size disagrees),
        // and a damaged index object lies beside it.
        let mut packs = repo.load_index().expect("index").by_pack();
        for (p, entries) in &mut packs {
            if *p == pack {
                entries.truncate(1);
            }
        }
        let old = names(&repo, FileKind::Index);
        repo.save_index(&packs).expect("save");
        for name in old {
            repo.storage()
                .remove(FileKind::Index, &name)
                .expect("remove");
        }
        repo.storage()
            .create(FileKind::Index, &"ab".repeat(32), b"garbage")
            .expect("create");
        let report =
            repair_index(&repo, &RepairIndexOptions::default(), Arc::default()).expect("repair");
        assert_eq!(report.damaged_index_objects.len(), 1, "{report:?}");
        assert_eq!(report.index_objects_before, 2);
        assert_eq!(report.index_objects_removed, 2);
        assert_eq!(
            report.packs_read, 1,
            "only the pack whose size disagrees: {report:?}"
        );
        assert_eq!(report.corrected_packs.len(), 1, "{report:?}");
        assert_eq!(
            (
                report.corrected_packs[0].old_blobs,
                report.corrected_packs[0].blobs
            ),
            (1, blobs)
        );
        let index = repo.load_index().expect("index");
        assert_eq!(names(&repo, FileKind::Index).len(), 1);
        assert_eq!(index.blobs_in(&pack), Some(blobs));
    }
}

//! `restore`: brings a snapshot back, verified before anything lands at a final path.
//!
//! Algorithm:
//! 1. Plan: walk the snapshot's listings; refuse unsafe names; map every file to its chunks and
//!    every chunk to its pack ([`plan`]).
//! 2. Preflight: the target must not hold a symlink where the snapshot has a directory, nor an
//!    existing entry where the snapshot has a file (unless `overwrite`); there must be room.
//! 3. Stage and verify: a staging directory `.lifeboat-restore-*` is made at the top of the
//!    target, and one at the top of each mount point inside the target that the restore writes
//!    beneath ([`staging`]: a rename cannot cross mounts); in them the snapshot's directories
//!    (each staging tree mirrors the target). Each pack is read once (in ranges, packs in
//!    parallel); every chunk is decompressed and checked against its BLAKE3 id; only verified
//!    bytes are written, with positioned writes, into staged files, each opened once and given
//!    its metadata when its last chunk is written ([`stage`]; all-zero chunks are left as
//!    holes, so sparse files stay sparse).
//! 4. If any chunk is missing or damaged, the staging areas are removed and every affected
//!    file and object is reported; the target is left as it was. (`allow_partial` restores the
//!    intact files instead.)
//! 5. Place ([`place`]): links, symlinks, fifos and devices are made in the staging tree, then
//!    each top entry is moved into the target with one create-only rename (a directory the
//!    target lacks moves with everything beneath it; one it has is entered and its entries
//!    moved one by one; with `overwrite` an existing entry is exchanged atomically with its
//!    staged copy, and its old version kept in the staging area until placing succeeds), then
//!    directory metadata is set deepest first. If placing fails or is interrupted, what was
//!    placed is put back: replaced entries get their old version again, new ones are removed.
//!
//! Interrupted (killed) during 1–4, the target holds at most the staging areas, which can be
//! deleted. Killed during 5, every path holds its old version or the snapshot's. Nothing is
//! ever written outside the target, and no symlink found in the target is followed: entries
//! are created with create-only or no-follow calls after an `lstat` check.

pub(crate) mod at;
mod place;
pub mod plan;
mod stage;
mod staging;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::progress::Progress;
use crate::repo::{Index, IndexEntry, NodeKind, Repository};
use crate::storage::FileKind;
use place::Placer;
use plan::Plan;
use stage::Stager;
use staging::Staging;

/// Options of `restore`.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Where to restore; the snapshot's absolute paths are recreated beneath it.
    pub target: PathBuf,
    /// Restore only these absolute paths of the snapshot (and what is beneath them).
    pub includes: Vec<PathBuf>,
    /// Verify every chunk, write nothing.
    pub verify_only: bool,
    /// Restore the intact files even when some are damaged.
    pub allow_partial: bool,
    /// Replace existing files in the target.
    pub overwrite: bool,
    /// Make the snapshot's device nodes (as root); without it they are left out and listed.
    pub devices: bool,
    /// Pack reads in flight at once, each verifying what it read (0: as
    /// [`crate::storage::default_readers`] says for the repository's storage).
    pub threads: usize,
}

/// A file or directory that was not restored.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Damaged {
    /// Its path in the snapshot.
    pub path: String,
    pub reason: String,
}

/// What restore did.
#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    /// Bytes of file content verified.
    pub bytes: u64,
    /// Entries that could not be restored (damaged or missing data, unsafe names).
    pub damaged: Vec<Damaged>,
    /// Entries left out although intact: device nodes without `devices`, or not as root.
    pub skipped: Vec<Damaged>,
    /// Damaged or missing repository objects.
    pub damaged_objects: Vec<String>,
    /// Metadata that could not be applied (the entries themselves were restored).
    pub warnings: Vec<String>,
    /// Whether anything was written to the target.
    pub written: bool,
    /// How long each phase took.
    pub timings: RestoreTimings,
    /// Pack reads kept in flight (`--download-concurrency`, or the storage's default).
    pub readers: usize,
    /// Entries of the target that were replaced (`--overwrite`); the others were new.
    pub replaced: u64,
    /// How the packs were read.
    pub pack_reads: PackReads,
}

/// How a restore read the repository's packs (a drill's estimate weighs them).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct PackReads {
    /// Requests to the storage (one per run of neighbouring chunks, [`read_plan`]).
    pub requests: u64,
    /// Bytes they read (stored: compressed and encrypted, gaps included).
    pub bytes: u64,
    /// Seconds the readers spent waiting for them, summed over the readers.
    pub secs: f64,
    /// Seconds the readers spent on the packs in all (reading, verifying, writing the chunks
    /// into files), summed over the readers.
    pub work_secs: f64,
}

/// Wall-clock seconds of the phases of a restore (what a restore drill extrapolates from).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct RestoreTimings {
    /// Reading the snapshot's directory listings and mapping files to chunks.
    pub plan_secs: f64,
    /// Reading, verifying and writing file content, staged files created and their metadata
    /// set along the way (grows with the bytes restored, and the files).
    pub data_secs: f64,
    /// Placing files, creating links and special files and setting their metadata (grows with
    /// the number of such entries restored).
    pub files_secs: f64,
    /// Creating directories and setting their metadata (grows with the number of directories).
    pub dirs_secs: f64,
}

/// Runs a restore of the snapshot whose root listing is `root`. The caller holds a shared lock
/// ([`Repository::read_snapshot`] takes one; the drill its own).
pub fn restore(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    opts: &RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreReport> {
    let mut prepared = [prepare(repo, index, root, opts, progress)?];
    let placed = place_together(&mut prepared);
    let [prepared] = prepared;
    match placed {
        Ok(()) => Ok(prepared.finish()),
        Err(e) => {
            prepared.abandon(&e);
            Err(e)
        }
    }
}

/// A restore read, verified and staged, not yet placed: what [`prepare`] returns. Several of
/// them (the jobs of one server, `recover`) are placed together by [`place_together`], all or
/// none. Dropped without [`Prepared::finish`] or [`Prepared::abandon`], its staging areas are
/// left for the next restore into the target to sweep.
pub struct Prepared {
    opts: RestoreOptions,
    plan: Plan,
    staging: Option<Staging>,
    created_target: Vec<PathBuf>,
    broken: HashMap<usize, String>,
    staged_warnings: Vec<(usize, String)>,
    /// What was found so far: counts, damage, timings.
    pub report: RestoreReport,
}

impl Prepared {
    /// Whether placing would write anything: not verify-only, and nothing damaged (or
    /// `allow_partial`).
    pub fn placeable(&self) -> bool {
        self.staging.is_some() && (self.report.damaged.is_empty() || self.opts.allow_partial)
    }

    /// Removes the staging areas (and the target directories the restore made, when nothing
    /// was written) and returns the report.
    pub fn finish(mut self) -> RestoreReport {
        if let Some(s) = &self.staging {
            s.remove();
        }
        if !self.report.written {
            remove_created(&self.created_target);
        }
        self.report.damaged.sort_by(|a, b| a.path.cmp(&b.path));
        self.report.damaged.dedup();
        std::mem::take(&mut self.report)
    }

    /// Cleans up after `err`: removes the staging areas, except when they keep originals that
    /// could not be put back ([`Error::Placing`] names them), and the target directories the
    /// restore made.
    pub fn abandon(self, err: &Error) {
        match (&self.staging, err) {
            (Some(s), Error::Placing { kept_in, .. })
                if s.dirs().any(|d| kept_in.iter().any(|k| k == d)) => {}
            (Some(s), _) => s.remove(),
            (None, _) => {}
        }
        remove_created(&self.created_target);
    }
}

/// Plans a restore, checks its target, stages and verifies every chunk; places nothing.
pub fn prepare(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    opts: &RestoreOptions,
    progress: Arc<Progress>,
) -> Result<Prepared> {
    plan(repo, index, root, opts, &progress)?.stage(repo, index, &progress)
}

/// A restore planned (every listing read, every file mapped to its chunks), nothing written
/// yet: what [`plan`] returns, staged by [`Planned::stage`].
pub struct Planned {
    opts: RestoreOptions,
    plan: Plan,
    report: RestoreReport,
}

impl Planned {
    /// Bytes of file content the restore will read and verify.
    pub fn bytes(&self) -> u64 {
        self.plan.bytes
    }

    /// Every entry the restore creates (paths relative to the target), and whether it is a
    /// directory.
    pub fn entries(&self) -> impl Iterator<Item = (&Path, bool)> + '_ {
        self.plan
            .entries
            .iter()
            .skip(1)
            .map(|e| (&*e.rel, e.node.kind == NodeKind::Dir))
    }

    /// Checks the target, then reads, verifies and stages every chunk (see [`prepare`]).
    pub fn stage(self, repo: &Repository, index: &Index, progress: &Progress) -> Result<Prepared> {
        let Planned {
            opts,
            plan,
            mut report,
        } = self;
        let target = if opts.verify_only {
            opts.target.clone()
        } else {
            crate::units::normalize_path(&opts.target)?
        };
        let mut created_target: Vec<PathBuf> = Vec::new();
        let staging = if opts.verify_only {
            None
        } else {
            let mut stale = Stale::default();
            let mounts = preflight(&plan, &target, opts.overwrite, &mut stale);
            for (p, bytes) in &stale.removed {
                report.warnings.push(format!(
                    "removed {} ({}): the staging area of an earlier restore that was killed",
                    crate::display::path(p),
                    crate::units::human_bytes(*bytes)
                ));
            }
            let mounts = mounts?;
            created_target = create_target(&target)?;
            match Staging::make(&target, &mounts) {
                Ok(s) => Some(s),
                Err(e) => {
                    remove_created(&created_target);
                    return Err(e);
                }
            }
        };
        let mut prepared = Prepared {
            opts: RestoreOptions { target, ..opts },
            plan,
            staging,
            created_target,
            broken: HashMap::new(),
            staged_warnings: Vec::new(),
            report,
        };
        match stage(repo, index, &mut prepared, progress) {
            Ok(()) => Ok(prepared),
            Err(e) => {
                prepared.abandon(&e);
                Err(e)
            }
        }
    }
}

/// Plans a restore: reads every listing and maps every file to its chunks (adding its bytes to
/// `progress`'s total); writes nothing.
pub fn plan(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<Planned> {
    let mut includes = Vec::new();
    for inc in &opts.includes {
        if !inc.is_absolute() {
            return Err(Error::Invalid(format!(
                "--include {}: give the absolute path as it is in the snapshot",
                crate::display::path(inc)
            )));
        }
        includes.push(crate::units::normalize_path(inc)?);
    }
    at::raise_fd_limit();
    let started = Instant::now();
    let plan = plan::build(repo, index, root, &includes)?;
    Progress::add(&progress.bytes_total, plan.bytes);
    let mut report = RestoreReport::default();
    report.timings.plan_secs = started.elapsed().as_secs_f64();
    for name in &plan.unsafe_names {
        report.damaged.push(Damaged {
            path: name.clone(),
            reason: "unsafe entry name (corrupt or tampered); never restored".into(),
        });
    }
    Ok(Planned {
        opts: opts.clone(),
        plan,
        report,
    })
}

/// Reads, verifies and stages the content of a prepared restore; finds what is broken.
fn stage(
    repo: &Repository,
    index: &Index,
    prepared: &mut Prepared,
    progress: &Progress,
) -> Result<()> {
    let Prepared {
        opts,
        plan,
        staging,
        broken,
        staged_warnings,
        report,
        ..
    } = prepared;
    // Staged files are created as their chunks arrive; empty ones right away.
    let is_root = nix::unistd::geteuid().is_root();
    let started = Instant::now();
    let stager = match staging {
        Some(staging) => {
            place::make_staged_dirs(plan, staging)?;
            report.timings.dirs_secs = started.elapsed().as_secs_f64();
            Some(Stager::new(plan, staging, &opts.target, is_root)?)
        }
        None => None,
    };
    report.readers = crate::storage::readers(repo.storage().as_ref(), opts.threads);
    let bytes_before = Progress::get(&progress.bytes_read);
    let (bad_chunks, pack_reads) =
        fetch_and_verify(repo, index, plan, stager.as_ref(), report.readers, progress)?;
    report.pack_reads = pack_reads;
    report.timings.data_secs = started.elapsed().as_secs_f64() - report.timings.dirs_secs;
    *staged_warnings = stager.map(Stager::into_warnings).unwrap_or_default();

    // Every entry that cannot be restored, with the reason.
    broken.extend(plan.broken.iter().map(|b| (b.pos, b.reason.clone())));
    let mut objects: HashSet<String> = plan.broken.iter().filter_map(|b| b.pack.clone()).collect();
    if !bad_chunks.is_empty() {
        for (chunk, uses) in plan.chunks.iter() {
            if let Some((object, reason)) = bad_chunks.get(chunk) {
                objects.insert(object.clone());
                for u in uses {
                    broken
                        .entry(u.entry as usize)
                        .or_insert_with(|| format!("{object}: {reason}"));
                }
            }
        }
    }
    // Hard links to a broken file are broken too.
    for (i, e) in plan.entries.iter().enumerate() {
        if let Some(first) = e.link_to {
            if let Some(r) = broken.get(&(first as usize)).cloned() {
                broken.insert(i, r);
            }
        }
    }
    for (i, reason) in broken.iter() {
        report.damaged.push(Damaged {
            path: plan.display(*i),
            reason: reason.clone(),
        });
    }
    let mut objects: Vec<String> = objects.into_iter().collect();
    objects.sort();
    report.damaged_objects = objects;
    report.bytes = Progress::get(&progress.bytes_read) - bytes_before;
    if staging.is_none() || report.damaged.is_empty() || opts.allow_partial {
        count(plan, broken, report);
    }
    Ok(())
}

/// Places prepared restores into their targets, in order: all of them, or (when one fails or
/// a signal stops it) none, every entry already placed put back. Those that are not
/// [`Prepared::placeable`] are left out.
pub fn place_together(prepared: &mut [Prepared]) -> Result<()> {
    let is_root = nix::unistd::geteuid().is_root();
    // Each placer with the seconds it spent placing files.
    let mut placers: Vec<(usize, Placer<'_>, f64)> = Vec::new();
    let mut failure = None;
    for (n, p) in prepared.iter().enumerate() {
        if !p.placeable() {
            continue;
        }
        let Some(staging) = p.staging.as_ref() else {
            continue;
        };
        let mut placer = match Placer::new(&p.opts.target, staging, p.opts.overwrite, is_root) {
            Ok(placer) => placer,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        placer.devices = p.opts.devices;
        placer.defer_dirs = true;
        let started = Instant::now();
        let placed = placer.place_all(&p.plan, &p.broken);
        let files_secs = started
            .elapsed()
            .saturating_sub(placer.dirs_time)
            .as_secs_f64();
        placers.push((n, placer, files_secs));
        if let Err(e) = placed {
            failure = Some(e);
            break;
        }
    }
    let Some(e) = failure else {
        // Directory metadata once every restore is placed (the last one's, deepest, first;
        // then those of the restores whose directories hold them), inode flags after all.
        for (n, placer, _) in placers.iter_mut().rev() {
            placer.finish_dirs(&prepared[*n].plan);
        }
        for (n, placer, _) in placers.iter_mut() {
            placer.finish_flags(&prepared[*n].plan);
        }
        // The reports are written once the placers, which borrow the staging areas, are done.
        let outcomes: Vec<(usize, PlaceOutcome)> = placers
            .into_iter()
            .map(|(n, mut placer, files_secs)| {
                let outcome = PlaceOutcome {
                    dirs_secs: placer.dirs_time.as_secs_f64(),
                    files_secs,
                    replaced: placer.replaced,
                    skipped: std::mem::take(&mut placer.skipped),
                    warnings: std::mem::take(&mut placer.warnings),
                };
                (n, outcome)
            })
            .collect();
        for (n, o) in outcomes {
            let Prepared {
                plan,
                broken,
                staged_warnings,
                report,
                ..
            } = &mut prepared[n];
            report.written = true;
            report.timings.dirs_secs += o.dirs_secs;
            report.timings.files_secs = o.files_secs;
            report.replaced = o.replaced;
            report.others -= o.skipped.len() as u64;
            report.skipped = o
                .skipped
                .into_iter()
                .map(|(i, reason)| Damaged {
                    path: plan.display(i),
                    reason,
                })
                .collect();
            // Staged files carry their metadata already; warn about those that were placed.
            report.warnings.extend(
                std::mem::take(staged_warnings)
                    .into_iter()
                    .filter(|(i, _)| !broken.contains_key(i))
                    .map(|(_, w)| w),
            );
            report.warnings.extend(o.warnings);
        }
        return Ok(());
    };
    // Put back what was placed, the last restore first.
    let mut not_put_back = Vec::new();
    let mut kept_in = Vec::new();
    for (n, mut placer, _) in placers.into_iter().rev() {
        let failed = placer.roll_back();
        if failed.iter().any(|f| f.original_kept) {
            if let Some(s) = &prepared[n].staging {
                kept_in.extend(s.dirs().map(Path::to_path_buf));
            }
        }
        not_put_back.extend(failed.into_iter().map(|f| f.path));
    }
    Err(Error::Placing {
        cause: Box::new(e),
        not_put_back,
        kept_in,
    })
}

/// What placing one prepared restore did, kept until every placer is done.
struct PlaceOutcome {
    dirs_secs: f64,
    files_secs: f64,
    replaced: u64,
    skipped: Vec<(usize, String)>,
    warnings: Vec<String>,
}

fn count(plan: &Plan, broken: &HashMap<usize, String>, report: &mut RestoreReport) {
    for (i, e) in plan.entries.iter().enumerate().skip(1) {
        if broken.contains_key(&i) {
            continue;
        }
        match e.node.kind {
            NodeKind::File => report.files += 1,
            NodeKind::Dir => report.dirs += 1,
            _ => report.others += 1,
        }
    }
}

/// Checks the target before anything is written; returns the mount points inside the target
/// that the restore writes beneath (relative to the target, parents first), each of which
/// gets a staging area of its own ([`staging`]).
fn preflight(
    plan: &Plan,
    target: &Path,
    overwrite: bool,
    stale: &mut Stale,
) -> Result<Vec<PathBuf>> {
    match fs::metadata(target) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::Invalid(format!(
                "restore target {} exists and is not a directory",
                crate::display::path(target)
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            check_space(plan, target, &[], stale)?;
            return Ok(Vec::new());
        }
        Err(e) => return Err(Error::io("inspect restore target", target, e)),
    }
    stale.sweep(target);
    let mut conflicts = Vec::new();
    let mut refused = Vec::new();
    // The mount of every directory the target has, by its path relative to the target.
    let mut mount_of: HashMap<&Path, u64> = HashMap::new();
    let top = staging::mount_of(target).map_err(|e| Error::io("inspect", target, e))?;
    mount_of.insert(Path::new(""), top);
    let mut mounts = Vec::new();
    // Entries are looked up through the directories above them (any depth, no symlink
    // followed).
    let mut cur = at::DirCursor::open(target)?;
    // A directory the target lacks: nothing beneath it can be in the way (entries come
    // parents first), so its entries are not looked up one by one.
    let mut absent: Option<&Path> = None;
    for e in plan.entries.iter().skip(1) {
        if absent.is_some_and(|a| e.rel.starts_with(a)) {
            continue;
        }
        absent = None;
        let path = target.join(&e.rel);
        let reached = cur.at(&e.rel);
        let meta = match reached.as_ref().map(fs::symlink_metadata) {
            Ok(Ok(m)) => m,
            Ok(Err(err)) if err.kind() == io::ErrorKind::NotFound => {
                if e.node.kind == NodeKind::Dir {
                    absent = Some(&e.rel);
                }
                continue;
            }
            // A parent is a file that --overwrite will replace by a directory, or a symlink
            // (refused when its own entry was looked at).
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                continue
            }
            Ok(Err(err)) => return Err(Error::io("inspect", &path, err)),
            Err(err) => return Err(Error::io("inspect", &path, io::Error::from(err.kind()))),
        };
        let ft = meta.file_type();
        if e.node.kind == NodeKind::Dir {
            if ft.is_symlink() {
                refused.push(format!(
                    "{} is a symlink where the snapshot has a directory; restore never writes through symlinks in the target",
                    crate::display::path(&path)
                ));
            } else if !ft.is_dir() && !overwrite {
                conflicts.push(crate::display::path(&path).to_string());
            } else if ft.is_dir() {
                let id = reached
                    .and_then(|p| staging::mount_of(&p))
                    .map_err(|err| Error::io("inspect", &path, err))?;
                let parent = e.rel.parent().unwrap_or(Path::new(""));
                if mount_of.get(parent).is_some_and(|&p| p != id) {
                    stale.sweep(&path);
                    mounts.push(e.rel.to_path_buf());
                }
                mount_of.insert(&e.rel, id);
            }
        } else if ft.is_dir() {
            refused.push(format!(
                "{} is a directory, but the snapshot has a {} there",
                crate::display::path(&path),
                kind_name(e.node.kind)
            ));
        } else if !overwrite {
            conflicts.push(crate::display::path(&path).to_string());
        }
    }
    if let Some(first) = refused.first() {
        return Err(Error::Invalid(format!(
            "restore refused, nothing was written: {first}{}",
            more(refused.len())
        )));
    }
    if let Some(first) = conflicts.first() {
        return Err(Error::Invalid(format!(
            "restore refused, nothing was written: {first} already exists{}; restore into an empty target, or pass --overwrite to replace existing files",
            more(conflicts.len())
        )));
    }
    check_space(plan, target, &mounts, stale)?;
    Ok(mounts)
}

/// Staging areas that earlier restores left in the target.
#[derive(Default)]
struct Stale {
    /// Removed (their restore was killed), with the bytes they held.
    removed: Vec<(PathBuf, u64)>,
    /// Held by a restore that is still running.
    busy: Vec<PathBuf>,
}

impl Stale {
    /// Removes the staging areas at the top of `dir` that no running restore holds.
    fn sweep(&mut self, dir: &Path) {
        let removed = staging::remove_stale(dir, &mut self.busy);
        self.removed.extend(removed);
    }
}

/// Refuses a restore whose content does not fit on the file systems it is staged on (the
/// target's, and each mount point's inside it). Holes of sparse files need no room, so this
/// errs on the safe side.
fn check_space(plan: &Plan, target: &Path, mounts: &[PathBuf], stale: &Stale) -> Result<()> {
    // Bytes staged beneath each mount point (deepest first, as staging assigns them), and
    // beneath the target's own file system.
    let mut by_depth: Vec<(&Path, u64)> = mounts.iter().map(|m| (m.as_path(), 0)).collect();
    by_depth.sort_by_key(|(m, _)| std::cmp::Reverse(m.components().count()));
    let mut top = 0u64;
    for e in &plan.entries {
        if e.node.kind != NodeKind::File || e.link_to.is_some() {
            continue;
        }
        match by_depth.iter_mut().find(|(m, _)| e.rel.starts_with(m)) {
            Some((_, n)) => *n = n.saturating_add(e.node.size),
            None => top = top.saturating_add(e.node.size),
        }
    }
    let existing = target
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    for (dir, need) in std::iter::once((existing.to_path_buf(), top))
        .chain(by_depth.iter().map(|(m, n)| (target.join(m), *n)))
    {
        if let Ok(st) = nix::sys::statvfs::statvfs(&dir) {
            let free = st.blocks_available().saturating_mul(st.fragment_size());
            if need > free {
                let note = if stale.busy.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (restores still running into this target hold space in {})",
                        stale
                            .busy
                            .iter()
                            .map(|p| crate::display::path(p).to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(Error::NotEnoughSpace {
                    op: "restore",
                    path: dir,
                    need,
                    free,
                    note,
                });
            }
        }
    }
    Ok(())
}

fn more(n: usize) -> String {
    if n > 1 {
        format!(" (and {} more)", n - 1)
    } else {
        String::new()
    }
}

fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "directory",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "character device",
        NodeKind::BlockDevice => "block device",
        NodeKind::Socket => "socket",
    }
}

/// Creates the target directory (and missing parents); returns what it created.
fn create_target(target: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut p = target.to_path_buf();
    loop {
        match fs::symlink_metadata(&p) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(p.clone());
                if !p.pop() {
                    break;
                }
            }
            Err(e) => return Err(Error::io("inspect", &p, e)),
        }
    }
    let mut created = Vec::new();
    for dir in missing.into_iter().rev() {
        if let Err(e) = fs::create_dir(&dir) {
            remove_created(&created);
            return Err(Error::io("create restore target", &dir, e));
        }
        created.push(dir);
    }
    Ok(created)
}

fn remove_created(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        let _ = fs::remove_dir(dir);
    }
}

/// The chunks of `ids` that the index knows, by pack (packs in order, each pack's chunks in
/// order of their offset): what a restore reads, pack by pack, in [`runs`].
pub(crate) fn read_plan<'a>(
    index: &Index,
    ids: impl Iterator<Item = &'a BlobId>,
) -> Vec<(u32, Vec<(BlobId, IndexEntry)>)> {
    let mut by_pack: HashMap<u32, Vec<(BlobId, IndexEntry)>> = HashMap::new();
    for id in ids {
        if let Some(e) = index.get(id) {
            by_pack.entry(e.pack).or_default().push((*id, *e));
        }
    }
    let mut work: Vec<(u32, Vec<(BlobId, IndexEntry)>)> = by_pack.into_iter().collect();
    work.sort_by_key(|(p, _)| *p);
    for (_, blobs) in &mut work {
        blobs.sort_by_key(|(_, e)| e.offset);
    }
    work
}

/// Where a run of neighbouring chunks ([`runs`]) starts in its pack, and its length.
pub(crate) fn span(run: &[(BlobId, IndexEntry)]) -> (u32, u32) {
    let start = run[0].1.offset;
    let last = run[run.len() - 1].1;
    (start, last.offset + last.stored_len - start)
}

/// Chunks that could not be read or failed verification: the object and the reason.
type BadChunks = HashMap<BlobId, (String, String)>;

/// Reads every pack once, verifies every chunk and writes verified chunks into staged files.
/// Returns the chunks that failed, with the object and the reason, and how the packs were read.
fn fetch_and_verify(
    repo: &Repository,
    index: &Index,
    plan: &Plan,
    stager: Option<&Stager>,
    readers: usize,
    progress: &Progress,
) -> Result<(BadChunks, PackReads)> {
    let work = read_plan(index, plan.chunks.ids().iter());
    let mut bad = HashMap::new();
    let mut reads = PackReads::default();
    crate::pool::run(
        readers,
        work,
        || Ok(()),
        |(), (pack, blobs)| {
            let pack_id = index.pack_id(pack);
            let what = FileKind::Pack.path(&pack_id.to_hex());
            let mut found = Vec::new();
            let mut read = PackReads::default();
            let began = Instant::now();
            for run in runs(&blobs) {
                let (start, len) = span(run);
                let asked = Instant::now();
                let result = repo.read_pack_range(&pack_id, start, len);
                read.requests += 1;
                read.bytes += u64::from(len);
                read.secs += asked.elapsed().as_secs_f64();
                let mut bytes = match result {
                    Ok(b) => b,
                    Err(e) => match e.damage() {
                        Some(d) => {
                            found.extend(
                                run.iter()
                                    .map(|(id, _)| (*id, (what.clone(), d.reason.clone()))),
                            );
                            continue;
                        }
                        // Storage that cannot be reached (or refuses) says nothing about the
                        // data: the restore stops and says so, never reports damage.
                        None => return Err(e),
                    },
                };
                for (id, e) in run {
                    match bytes.blob_in_place(&e.to_pack_entry(*id)) {
                        Ok(raw) => {
                            Progress::add(&progress.bytes_read, raw.len() as u64);
                            if let Some(stager) = stager {
                                stager.write_chunk(plan.chunks.get(id), &raw, progress)?;
                            }
                        }
                        // The reader's every failure is damage ([`Error::Corrupt`]).
                        Err(err) => {
                            found.push((*id, (what.clone(), format!("damaged: {}", err.reason()))))
                        }
                    }
                }
            }
            read.work_secs = began.elapsed().as_secs_f64();
            Ok((found, read))
        },
        |(found, read)| {
            bad.extend(found);
            reads.requests += read.requests;
            reads.bytes += read.bytes;
            reads.secs += read.secs;
            reads.work_secs += read.work_secs;
            Ok(())
        },
    )?;
    Ok((bad, reads))
}

/// Splits a pack's needed blobs (sorted by offset) into runs read with one request each:
/// blobs closer than 256 KiB, up to 16 MiB per run.
pub(crate) fn runs(blobs: &[(BlobId, IndexEntry)]) -> Vec<&[(BlobId, IndexEntry)]> {
    const GAP: u32 = 256 << 10;
    const MAX_RUN: u32 = 16 << 20;
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=blobs.len() {
        let split = i == blobs.len() || {
            let prev = blobs[i - 1].1;
            let cur = blobs[i].1;
            let end = prev.offset + prev.stored_len;
            cur.offset < end
                || cur.offset - end > GAP
                || cur.offset + cur.stored_len - blobs[start].1.offset > MAX_RUN
        };
        if split {
            out.push(&blobs[start..i]);
            start = i;
        }
    }
    out
}

//! Restore drills: prove that a snapshot restores, and measure how long restoring all of it
//! would take ("not do I have backups, but how long until the server is back").
//!
//! A drill:
//! 1. reads every directory listing of the snapshot (timed: a full restore plans the same way),
//!    counting its entries and files and noting every listing it cannot read;
//! 2. picks a random sample of its files ([`Sample`]; seeded, so a drill can be repeated);
//! 3. restores the sample with the ordinary [`restore`](crate::ops::restore::restore) into a fresh
//!    scratch directory (every chunk is verified there before it is written; damaged files are
//!    left out and named, with the damaged repository objects);
//! 4. verifies each restored file again, independently of restore: its size, its content
//!    re-hashed chunk by chunk with the repository's chunk-id function and compared with the
//!    snapshot's chunk list, its mode and mtime (and owner, as root);
//! 5. removes the scratch directory (also on failure and on SIGINT/SIGTERM), and extrapolates
//!    the time of a full restore from the measured phases (see
//!    [`DrillReport::estimated_full_restore_secs`]).
//!
//! A damaged repository makes the drill *fail* with a report naming what is damaged; only
//! conditions that keep the drill from running at all (an unreachable repository, a scratch
//! directory that cannot be written, an interruption) are an `Err`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::ops::restore::{
    read_plan, restore, runs, span, PackReads, RestoreOptions, RestoreTimings,
};
use crate::progress::Progress;
use crate::repo::{Index, Node, NodeKind, Repository, Sealer, Snapshot, Step, TreeWalk};
use crate::units::{human_bytes as human, human_duration, percent};

/// What part of a snapshot a drill restores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// This share (0 < share ≤ 1) of the snapshot's files, chosen at random with the
    /// snapshot's mix of small and large files (see [`choose`]); at least one.
    Files(f64),
    /// Files chosen at random until this share (0 < share ≤ 1) of the snapshot's file bytes
    /// is reached; at least one file.
    Bytes(f64),
    /// The whole snapshot.
    All,
}

impl Default for Sample {
    /// 10% of the files.
    fn default() -> Self {
        Sample::Files(0.1)
    }
}

impl Sample {
    fn check(&self) -> Result<()> {
        match *self {
            Sample::Files(s) | Sample::Bytes(s) if !(s > 0.0 && s <= 1.0) => Err(Error::Invalid(
                format!("drill sample share {s} is outside 0 < share <= 1 (0% < share <= 100%)"),
            )),
            _ => Ok(()),
        }
    }

    /// A description such as "10% of files".
    pub fn describe(&self) -> String {
        match *self {
            Sample::Files(s) => format!("{} of files", percent(s)),
            Sample::Bytes(s) => format!("{} of bytes", percent(s)),
            Sample::All => "the whole snapshot".into(),
        }
    }
}

/// Options of [`drill`].
#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub sample: Sample,
    /// A directory under which a fresh scratch directory `lifeboat-drill-<random>` is made (the
    /// directory itself is created if missing, and kept). The scratch directory is always
    /// removed at the end. Put it on the file system a real restore would write to: on tmpfs
    /// the drill does not measure disk writes.
    pub scratch: PathBuf,
    /// Seed of the random sample; `None`: a random seed (reported, so a drill can be repeated).
    pub seed: Option<u64>,
    /// Threads verifying the restored files (0: one per core).
    pub threads: usize,
    /// Pack reads in flight at once in the restore (0: as
    /// [`crate::storage::default_readers`] says for the repository's storage).
    pub downloads: usize,
    /// List the sampled files in [`DrillReport::files`].
    pub list_files: bool,
    /// Seconds the caller spent opening the repository (reading its config, deriving the key)
    /// before calling [`drill`]: a restore spends them too, so they count in the estimate.
    pub open_secs: f64,
}

impl Default for DrillOptions {
    fn default() -> Self {
        DrillOptions {
            sample: Sample::default(),
            scratch: default_scratch(),
            seed: None,
            threads: 0,
            downloads: 0,
            list_files: false,
            open_secs: 0.0,
        }
    }
}

/// The default scratch parent: `$TMPDIR` if set, else `/var/tmp` (which, unlike `/tmp` on
/// many systems, is on disk).
pub fn default_scratch() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

/// What a drill found.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// No problem was found.
    pub passed: bool,
    pub snapshot_id: String,
    pub snapshot_time: DateTime<Utc>,
    pub host: String,
    /// The daemon job that made the snapshot, if any.
    pub job: Option<String>,
    /// The sample asked for, e.g. "10% of files".
    pub sample: String,
    /// The seed of the random choice (repeat the drill with it to restore the same files).
    pub seed: u64,
    /// Files chosen, and the sum of their sizes.
    pub files_sampled: u64,
    pub bytes_sampled: u64,
    /// Files restored and verified intact, and the sum of their sizes.
    pub files_restored: u64,
    pub bytes_restored: u64,
    /// Entries the restore created (the files, their parent directories, hard links; with
    /// [`Sample::All`] everything), and how many of them were directories.
    pub entries_restored: u64,
    pub dirs_restored: u64,
    /// Files of the snapshot (hard links count once) and the sum of their sizes.
    pub total_files: u64,
    pub total_bytes: u64,
    /// Every entry of the snapshot (files, hard links, directories, symlinks, special files),
    /// and its directories.
    pub total_entries: u64,
    pub total_dirs: u64,
    /// The whole drill, from start to the removal of the scratch directory.
    pub duration_secs: f64,
    /// Opening the repository, taking the lock and loading the index ([`DrillOptions::open_secs`]
    /// and the drill's own part), as a restore does first.
    pub open_secs: f64,
    /// Reading every directory listing of the snapshot.
    pub listing_secs: f64,
    /// Restoring the sample (the restore call).
    pub restore_secs: f64,
    /// The restore's phases.
    pub restore_timings: RestoreTimings,
    /// Pack reads the restore kept in flight.
    pub readers: usize,
    /// Verifying the restored files again.
    pub verify_secs: f64,
    /// `bytes_sampled / restore_secs`.
    pub throughput_bytes_per_sec: f64,
    /// Estimated seconds to restore the whole snapshot to the scratch directory's file system:
    ///
    /// ```text
    /// open_secs + listing_secs
    ///   + total_bytes × data_secs / bytes_sampled
    ///   + placing_secs + (total_entries − total_dirs − total_files) × per_file_secs
    ///   + total_dirs × dirs_secs / dirs_restored
    /// ```
    ///
    /// (the data term is `per_file_secs × total_files + per_byte_secs × total_bytes` when
    /// [`DrillReport::data_model`] could be measured; when [`DrillReport::read_model`] could
    /// too, it is the reader-seconds of the full restore's pack reads and of the work on what
    /// they hold, `(per_request_secs × full_requests + per_byte_secs × full_bytes_read +
    /// per_file_secs × total_files + per_byte_secs × total_bytes) / readers`: a sample reads
    /// from nearly every pack, so its reads weigh far more per file than a full restore's),
    /// where `data_secs` (reading, verifying
    /// and writing file content, creating the staged files and setting their metadata),
    /// `placing_secs` (the files phase of one part: its top entries renamed into an empty
    /// target, as a full restore's are) and `dirs_secs` (creating directories and setting their
    /// metadata) are the restore's measured phases ([`RestoreTimings`]): a per-byte rate from
    /// the sampled bytes applied to all bytes, the cost of creating a file applied to every
    /// link, symlink and special file (made at placing; a sample of files holds next to none),
    /// a per-directory cost from the directories the sample made, the measured time to read
    /// every directory listing, as a full restore does first, and the time to open the
    /// repository. A term whose sample is empty counts 0. With [`Sample::All`] the measured
    /// phases are the estimate. Page-cached repository data makes the estimate shorter; a
    /// scratch directory on tmpfs much shorter.
    pub estimated_full_restore_secs: f64,
    /// What the sample's data phase cost per file and per byte, when its two parts (its smaller
    /// and its larger files, restored one after the other) tell them apart; the estimate's
    /// data term is then `per_file_secs × total_files + per_byte_secs × total_bytes` instead
    /// of the bytes' share alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_model: Option<DataModel>,
    /// What the sample's pack reads cost, per request and per byte read, when its two parts
    /// read some; the estimate's data term then adds the full restore's reads
    /// (`full_requests`, `full_bytes_read`) at that cost, shared by the readers, and the data
    /// model is fitted to the parts' data phases without their reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_model: Option<ReadModel>,
    /// The requests and bytes a full restore of the snapshot reads from its packs (every
    /// chunk of its files once, neighbouring chunks in one request, as a restore reads them).
    pub full_requests: u64,
    pub full_bytes_read: u64,
    /// Where the sample was restored (removed again).
    pub scratch: PathBuf,
    /// The sampled files (absolute paths in the snapshot), with [`DrillOptions::list_files`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// What failed: each names the file and what was wrong, or the damaged repository object.
    pub problems: Vec<String>,
    /// Worth knowing, not failures (metadata restore could not apply, a scratch on tmpfs...).
    pub warnings: Vec<String>,
}

impl DrillReport {
    /// The report of a drill that has not measured anything yet.
    fn empty(id: &SnapshotId, snapshot: &Snapshot, sample: Sample, seed: u64) -> Self {
        DrillReport {
            passed: false,
            snapshot_id: id.to_hex(),
            snapshot_time: snapshot.time,
            host: snapshot.host.clone(),
            job: snapshot.job.clone(),
            sample: sample.describe(),
            seed,
            files_sampled: 0,
            bytes_sampled: 0,
            files_restored: 0,
            bytes_restored: 0,
            entries_restored: 0,
            dirs_restored: 0,
            total_files: 0,
            total_bytes: 0,
            total_entries: 0,
            total_dirs: 0,
            duration_secs: 0.0,
            open_secs: 0.0,
            listing_secs: 0.0,
            restore_secs: 0.0,
            restore_timings: RestoreTimings::default(),
            readers: 0,
            verify_secs: 0.0,
            throughput_bytes_per_sec: 0.0,
            estimated_full_restore_secs: 0.0,
            data_model: None,
            read_model: None,
            full_requests: 0,
            full_bytes_read: 0,
            scratch: PathBuf::new(),
            files: Vec::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// One line: "drill passed: restored 42 of 420 files (12.5 MiB of 125 MiB) in 1.2 s
    /// (10.4 MiB/s); estimated full restore: 12 s".
    pub fn summary(&self) -> String {
        format!(
            "drill {}: restored {} of {} files ({} of {}) in {} ({}/s); estimated full restore: {}",
            if self.passed { "passed" } else { "FAILED" },
            self.files_restored,
            self.total_files,
            human(self.bytes_restored),
            human(self.total_bytes),
            human_duration(self.restore_secs),
            human(self.throughput_bytes_per_sec as u64),
            human_duration(self.estimated_full_restore_secs),
        )
    }
}

/// The newest snapshot made by daemon job `job` on `host`.
pub fn latest_of_job(repo: &Repository, job: &str, host: &str) -> Result<(SnapshotId, Snapshot)> {
    let filter = crate::repo::SnapshotFilter {
        job: Some(job.to_string()),
        host: Some(host.to_string()),
        ..Default::default()
    };
    repo.find_snapshot("latest", &filter).map_err(|e| match e {
        Error::SnapshotSelect(_) => Error::SnapshotSelect(format!(
            "the repository at {} has no snapshot of job {job:?} of host {host:?} yet",
            repo.storage().location()
        )),
        other => other,
    })
}

/// Runs a restore drill of snapshot `id` (`snapshot` is its loaded object). Callable from any
/// thread; `progress` counts what the restore reads and writes, and the files verified.
pub fn drill(
    repo: &Repository,
    id: &SnapshotId,
    snapshot: &Snapshot,
    opts: &DrillOptions,
    progress: Arc<Progress>,
) -> Result<DrillReport> {
    let started = Instant::now();
    opts.sample.check()?;
    let seed = opts.seed.unwrap_or_else(rand::random);
    let mut report = DrillReport::empty(id, snapshot, opts.sample, seed);

    let _lock = repo.lock_for_reading("drill")?;
    let index = match repo.load_index() {
        Ok(i) => i,
        Err(e) if e.is_damage() => {
            report
                .problems
                .push(format!("the index cannot be read: {e}"));
            return Ok(finish(report, started));
        }
        Err(e) => return Err(e),
    };
    report.open_secs = opts.open_secs + started.elapsed().as_secs_f64();

    // 1. Every listing, timed.
    let listed = Instant::now();
    let inv = inventory(repo, &index, &snapshot.tree, &mut report.problems)?;
    report.listing_secs = listed.elapsed().as_secs_f64();
    report.total_files = inv.total.files;
    report.total_bytes = inv.total.bytes;
    report.total_entries = inv.total.entries;
    report.total_dirs = inv.total.dirs;
    let chunks: HashSet<BlobId> = inv
        .files
        .iter()
        .flat_map(|f| f.node.content.iter().copied())
        .collect();
    for (_, blobs) in read_plan(&index, chunks.iter()) {
        for run in runs(&blobs) {
            report.full_requests += 1;
            report.full_bytes_read += u64::from(span(run).1);
        }
    }

    // 2. The sample.
    let chosen = choose(&inv.files, opts.sample, seed);
    report.files_sampled = chosen.len() as u64;
    report.bytes_sampled = chosen.iter().map(|&i| inv.files[i].node.size).sum();
    if opts.list_files {
        report.files = chosen
            .iter()
            .map(|&i| inv.files[i].path.display().to_string())
            .collect();
    }
    if chosen.is_empty() {
        // Nothing to restore: the snapshot has no files (or none could be listed).
        report.estimated_full_restore_secs = report.open_secs + report.listing_secs;
        return Ok(finish(report, started));
    }

    let scratch = ScratchDir::create(&opts.scratch)?;
    report.scratch = scratch.path.clone();
    if on_tmpfs(&scratch.path) {
        report.warnings.push(format!(
            "the scratch directory {} is on tmpfs (memory): disk writes were not measured, so \
             the estimate is too short; give a scratch directory on the file system a restore \
             would write to",
            scratch.path.display()
        ));
    }

    // 3. Restore the sample: in two parts, its smaller files and its larger ones, so that the
    // estimate can tell what a restore costs per file from what it costs per byte (a sample of
    // a tenth of the files can hold a twentieth of the bytes, or half of them). Each part goes
    // to a directory of its own, empty as a full restore's target is: placed into a tree the
    // first part made, the second's files would be moved one by one instead of with their top
    // directory, a cost a full restore does not have.
    let all = opts.sample == Sample::All;
    let parts: Vec<Vec<usize>> = if all {
        vec![chosen.clone()]
    } else {
        let mut by_size = chosen.clone();
        by_size.sort_by_key(|&i| (inv.files[i].node.size, i));
        let large = by_size.split_off(by_size.len() / 2);
        [by_size, large]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect()
    };
    let mut not_restored: HashSet<String> = HashSet::new();
    let mut measured: Vec<Part> = Vec::new();
    let mut roots: Vec<(PathBuf, &[usize])> = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        let root = scratch.path.join(format!("part{}", n + 1));
        roots.push((root.clone(), part));
        let includes: Vec<PathBuf> = if all {
            Vec::new() // everything, empty directories and special files included
        } else {
            part.iter().map(|&i| inv.files[i].path.clone()).collect()
        };
        let restore_opts = RestoreOptions {
            target: root,
            includes: includes.clone(),
            verify_only: false,
            allow_partial: true,
            overwrite: false,
            // Device nodes are not files the drill verifies; it never makes them.
            devices: false,
            threads: opts.downloads,
        };
        let restoring = Instant::now();
        let restored = restore(
            repo,
            &index,
            &snapshot.tree,
            &restore_opts,
            progress.clone(),
        );
        report.restore_secs += restoring.elapsed().as_secs_f64();
        match restored {
            Ok(r) => {
                let t = &mut report.restore_timings;
                t.plan_secs += r.timings.plan_secs;
                t.data_secs += r.timings.data_secs;
                t.files_secs += r.timings.files_secs;
                t.dirs_secs += r.timings.dirs_secs;
                measured.push(Part {
                    files: part.len() as u64,
                    bytes: part.iter().map(|&i| inv.files[i].node.size).sum(),
                    data_secs: r.timings.data_secs,
                    files_secs: r.timings.files_secs,
                    reads: r.pack_reads,
                });
                report.readers = r.readers;
                report.entries_restored += r.files + r.dirs + r.others;
                report.dirs_restored += r.dirs;
                for d in &r.damaged {
                    // Unsafe names were reported by the listing already.
                    if !d.reason.starts_with("unsafe entry name") {
                        report
                            .problems
                            .push(format!("{}: not restored: {}", d.path, d.reason));
                    }
                    not_restored.insert(d.path.clone());
                }
                for o in &r.damaged_objects {
                    report
                        .problems
                        .push(format!("damaged repository object: {o}"));
                }
                report.warnings.extend(r.warnings);
            }
            Err(e) if e.is_damage() => {
                report
                    .problems
                    .push(format!("the sample could not be restored: {e}"));
                for &i in part.iter() {
                    not_restored.insert(inv.files[i].path.display().to_string());
                }
            }
            Err(e) => return Err(e),
        }
    }
    report.read_model = read_model(&measured);
    report.data_model = data_model(&measured, report.read_model.as_ref());

    // 4. Verify the restored files again, on their own terms.
    let verifying = Instant::now();
    for (root, part) in &roots {
        let todo: Vec<&FileEntry> = part
            .iter()
            .map(|&i| &inv.files[i])
            .filter(|f| !not_restored.contains(&f.path.display().to_string()))
            .collect();
        if todo.is_empty() {
            continue;
        }
        let verified = verify_files(&todo, root, &index, repo.sealer(), opts.threads, &progress)?;
        report.files_restored += verified.files;
        report.bytes_restored += verified.bytes;
        report.problems.extend(verified.problems);
    }
    report.verify_secs = verifying.elapsed().as_secs_f64();

    // 5. Remove the scratch data, and extrapolate.
    if let Err(e) = scratch.remove() {
        report.problems.push(format!(
            "the scratch directory could not be removed (remove it by hand): {e}"
        ));
    }
    report.throughput_bytes_per_sec = if report.restore_secs > 0.0 {
        report.bytes_sampled as f64 / report.restore_secs
    } else {
        0.0
    };
    report.estimated_full_restore_secs = estimate(&report, &measured, all);
    Ok(finish(report, started))
}

fn finish(mut report: DrillReport, started: Instant) -> DrillReport {
    // The same problem can be found twice (a listing read by the inventory and the restore).
    let mut seen = HashSet::new();
    report.problems.retain(|p| seen.insert(p.clone()));
    report.passed = report.problems.is_empty();
    report.duration_secs = started.elapsed().as_secs_f64();
    report
}

/// What restoring file content costs, per file (creating, writing, closing, metadata) and per
/// byte (verifying, writing): in reader-seconds besides the reads when there is a
/// [`ReadModel`], else in seconds of the data phase, reads included:
/// [`DrillReport::data_model`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct DataModel {
    pub per_file_secs: f64,
    pub per_byte_secs: f64,
}

/// What reading packs costs a restore's readers, per request and per byte read:
/// [`DrillReport::read_model`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ReadModel {
    pub per_request_secs: f64,
    pub per_byte_secs: f64,
}

/// One part of a drill's sample restore: its files, bytes, data phase and files phase.
#[derive(Debug, Clone, Copy)]
struct Part {
    files: u64,
    bytes: u64,
    data_secs: f64,
    files_secs: f64,
    reads: PackReads,
}

/// The costs `(c1, c2)` that explain both measurements `t = c1 × x1 + c2 × x2` (two equations,
/// two unknowns), `None` when they cannot be told apart (the two are of the same shape: their
/// `x1 / x2` differ by less than a quarter). When timing noise makes one cost negative, it is
/// 0 and the other alone is fitted to both (least squares, as a fit that keeps both costs at
/// or above zero ends up there).
fn fit_two(x1: [f64; 2], x2: [f64; 2], t: [f64; 2]) -> Option<(f64, f64)> {
    let det = x1[0] * x2[1] - x1[1] * x2[0];
    if det == 0.0 || det.abs() < 0.25 * (x1[0] * x2[1]).abs().max((x1[1] * x2[0]).abs()) {
        return None;
    }
    let c1 = (t[0] * x2[1] - t[1] * x2[0]) / det;
    let c2 = (x1[0] * t[1] - x1[1] * t[0]) / det;
    if c1 >= 0.0 && c2 >= 0.0 {
        return Some((c1, c2));
    }
    Some(match (alone(x1, t), alone(x2, t)) {
        ((c, e1), (_, e2)) if e1 <= e2 => (c, 0.0),
        (_, (c, _)) => (0.0, c),
    })
}

/// `t = c × x` fitted to both measurements: `c`, and its squared error.
fn alone(x: [f64; 2], t: [f64; 2]) -> (f64, f64) {
    let squares = x[0] * x[0] + x[1] * x[1];
    let c = if squares > 0.0 {
        (t[0] * x[0] + t[1] * x[1]) / squares
    } else {
        0.0
    };
    (c, (t[0] - c * x[0]).powi(2) + (t[1] - c * x[1]).powi(2))
}

/// What the parts' pack reads cost, per request and per byte read ([`DrillReport::read_model`]),
/// in reader-seconds: `None` without two parts that read something. Parts that read the same
/// bytes per request cannot tell the two apart: the time is then per byte read.
fn read_model(parts: &[Part]) -> Option<ReadModel> {
    let [p, q] = parts else { return None };
    let (a, b) = (&p.reads, &q.reads);
    if a.requests == 0 || b.requests == 0 {
        return None;
    }
    let (per_request_secs, per_byte_secs) = fit_two(
        [a.requests as f64, b.requests as f64],
        [a.bytes as f64, b.bytes as f64],
        [a.secs, b.secs],
    )
    .unwrap_or_else(|| {
        (
            0.0,
            alone([a.bytes as f64, b.bytes as f64], [a.secs, b.secs]).0,
        )
    });
    Some(ReadModel {
        per_request_secs,
        per_byte_secs,
    })
}

/// The cost per file and per byte written that explains both parts' data phases
/// ([`DrillReport::data_model`]): with `reads` (what the pack reads cost), in reader-seconds
/// spent on the packs besides reading them (verifying, writing, creating files); without, in
/// seconds of the data phase. `None` when the parts cannot tell them apart (one part, or files
/// of one size).
///
/// Reader-seconds, not the phase's wall time less the reads' share: a part makes a few dozen
/// requests, and while the last ones finish the other readers wait, idle; that wait, counted
/// as work, made the cost per file six times what a full restore pays (on a link of 40 ms).
fn data_model(parts: &[Part], reads: Option<&ReadModel>) -> Option<DataModel> {
    let [p, q] = parts else { return None };
    let work = |x: &Part| match reads {
        Some(_) => (x.reads.work_secs - x.reads.secs).max(0.0),
        None => x.data_secs,
    };
    let (per_file_secs, per_byte_secs) = fit_two(
        [p.files as f64, q.files as f64],
        [p.bytes as f64, q.bytes as f64],
        [work(p), work(q)],
    )?;
    Some(DataModel {
        per_file_secs,
        per_byte_secs,
    })
}

/// See [`DrillReport::estimated_full_restore_secs`]. `parts` are the sample's parts, `all`
/// whether the sample was the whole snapshot (then the measured phases are the estimate).
fn estimate(r: &DrillReport, parts: &[Part], all: bool) -> f64 {
    // `total × secs / sampled`, 0 when nothing was sampled.
    let scale = |total: u64, secs: f64, sampled: u64| {
        if sampled > 0 {
            total as f64 * secs / sampled as f64
        } else {
            0.0
        }
    };
    let t = &r.restore_timings;
    let data = match (r.data_model, r.read_model) {
        // Reader-seconds: the packs a full restore reads, and the work on what they hold,
        // shared by as many readers (a full restore keeps them all busy).
        (Some(m), Some(read)) => {
            // The work on what is read is mostly CPU (decompressing, hashing, writing to the
            // page cache): no more readers do it at once than there are cores.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (read.per_request_secs * r.full_requests as f64
                + read.per_byte_secs * r.full_bytes_read as f64)
                / r.readers.max(1) as f64
                + (m.per_file_secs * r.total_files as f64 + m.per_byte_secs * r.total_bytes as f64)
                    / r.readers.clamp(1, cores) as f64
        }
        (Some(m), None) => {
            m.per_file_secs * r.total_files as f64 + m.per_byte_secs * r.total_bytes as f64
        }
        (None, _) => scale(r.total_bytes, t.data_secs, r.bytes_sampled),
    };
    // Placing: each part was placed into an empty directory as a full restore is (a rename
    // per top entry, whatever lies beneath); what grows with the snapshot are the entries made
    // at placing, links, symlinks and special files, which a sample of files hardly holds:
    // each costs what creating a file costs.
    let files = if all || parts.is_empty() {
        t.files_secs
    } else {
        let placing = parts.iter().map(|p| p.files_secs).sum::<f64>() / parts.len() as f64;
        let others = r
            .total_entries
            .saturating_sub(r.total_dirs)
            .saturating_sub(r.total_files);
        let per_entry = match r.data_model {
            Some(m) => m.per_file_secs,
            None => scale(1, t.data_secs, r.files_sampled),
        };
        placing + others as f64 * per_entry
    };
    r.open_secs + r.listing_secs + data + files + scale(r.total_dirs, t.dirs_secs, r.dirs_restored)
}

/// A file of the snapshot that a drill can sample.
struct FileEntry {
    /// Its absolute path in the snapshot.
    path: PathBuf,
    /// Its node, without name and xattrs (not needed).
    node: Node,
}

/// The snapshot's files that a drill can sample (each hard-linked file once, and each file of a
/// listing shared by several directories once), and the snapshot's totals.
struct Inventory {
    files: Vec<FileEntry>,
    total: Counts,
}

/// What a directory holds, everything beneath it included.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Entries (files, directories, links, special files).
    entries: u64,
    dirs: u64,
    /// Files (hard links count once) and their bytes.
    files: u64,
    bytes: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.entries += o.entries;
        self.dirs += o.dirs;
        self.files += o.files;
        self.bytes += o.bytes;
    }
}

/// Reads every directory listing below `root` once (a listing shared by many directories is
/// read once and counted for each), in a deterministic order. A listing that cannot be read
/// because the repository is damaged is a problem (the rest is still listed).
fn inventory(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    problems: &mut Vec<String>,
) -> Result<Inventory> {
    let mut files = Vec::new();
    let mut hardlinks: HashMap<(u64, u64), Vec<BlobId>> = HashMap::new();
    // The counts of each listing read, for the directories that share it.
    let mut counted: HashMap<BlobId, Counts> = HashMap::new();
    // The counts of the listings being read, the root's first.
    let mut open = vec![Counts::default()];
    let mut total = Counts::default();
    let shown = |dir: &Path| format!("/{}", dir.display());
    let mut walk = TreeWalk::of(repo, index, *root).once();
    while let Some(step) = walk.next()? {
        let (dir, tree, mut node) = match step {
            Step::Entry { dir, tree, node } => (dir, tree, node),
            Step::Leave { tree, .. } => {
                let done = open.pop().unwrap_or_default();
                counted.insert(tree, done);
                open.last_mut().unwrap_or(&mut total).add(&done);
                continue;
            }
            Step::Damaged { dir, damage, .. } => {
                problems.push(format!(
                    "{}: its directory listing cannot be read: {damage}",
                    shown(dir)
                ));
                if !dir.as_os_str().is_empty() {
                    open.pop();
                }
                continue;
            }
        };
        if !node.name_is_safe() {
            problems.push(format!(
                "{}/{:?} in directory listing {tree}: unsafe entry name (corrupt or tampered); never restored",
                shown(dir).trim_end_matches('/'),
                String::from_utf8_lossy(&node.name)
            ));
            continue;
        }
        let mut path = PathBuf::from("/");
        path.push(dir);
        path.push(OsStr::from_bytes(&node.name));
        let Some(counts) = open.last_mut() else {
            continue;
        };
        counts.entries += 1;
        match node.kind {
            NodeKind::Dir => {
                counts.dirs += 1;
                match node.subtree {
                    Some(sub) => {
                        if walk.enter(&node.name, sub) {
                            open.push(Counts::default());
                        } else if let Some(c) = counted.get(&sub) {
                            // Shared with a directory read before: counted again, not read.
                            counts.add(c);
                        }
                    }
                    None => problems.push(format!(
                        "{}: directory without a listing (corrupt)",
                        path.display()
                    )),
                }
            }
            NodeKind::File => {
                // A further name of a hard-linked file is restored as a link: no content.
                if node.links > 1 {
                    match hardlinks.get(&(node.device, node.inode)) {
                        Some(first) if *first == node.content => continue,
                        Some(_) => {}
                        None => {
                            hardlinks.insert((node.device, node.inode), node.content.clone());
                        }
                    }
                }
                counts.files += 1;
                counts.bytes += node.size;
                node.name = Vec::new();
                node.xattrs = Vec::new();
                files.push(FileEntry { path, node });
            }
            _ => {}
        }
    }
    Ok(Inventory { files, total })
}

/// The positions in `files` of a random sample (sorted). Always at least one file when there is
/// one, and at least one non-empty file when there is one.
///
/// A share of the files is a stratified sample: the files in order of size, cut into as many
/// strata of neighbours as files are wanted, one file at random from each. The sample then
/// has the snapshot's mix of small and large files whatever the seed (one file drawn at random
/// from all of them can hold a twentieth of the bytes, or half of them), and the estimate
/// taken from it varies that much less.
fn choose(files: &[FileEntry], sample: Sample, seed: u64) -> Vec<usize> {
    if files.is_empty() {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut chosen: Vec<usize> = match sample {
        Sample::All => return (0..files.len()).collect(),
        Sample::Files(share) => {
            let n = ((files.len() as f64 * share).ceil() as usize).clamp(1, files.len());
            let mut by_size: Vec<usize> = (0..files.len()).collect();
            by_size.sort_by_key(|&i| (files[i].node.size, i));
            (0..n)
                .map(|k| {
                    let stratum = &by_size[k * files.len() / n..(k + 1) * files.len() / n];
                    stratum[rng.gen_range(0..stratum.len())]
                })
                .collect()
        }
        Sample::Bytes(share) => {
            let mut order: Vec<usize> = (0..files.len()).collect();
            order.shuffle(&mut rng);
            let total: u64 = files.iter().map(|f| f.node.size).sum();
            let goal = (total as f64 * share).ceil() as u64;
            let mut sum = 0u64;
            let mut out = Vec::new();
            for i in order {
                out.push(i);
                sum += files[i].node.size;
                if sum >= goal {
                    break;
                }
            }
            out
        }
    };
    if chosen.iter().all(|&i| files[i].node.size == 0) {
        // Any non-empty file: the first after a random place.
        let from = rng.gen_range(0..files.len());
        if let Some(i) = (from..files.len())
            .chain(0..from)
            .find(|&i| files[i].node.size > 0)
        {
            chosen.push(i);
        }
    }
    chosen.sort_unstable();
    chosen
}

/// Result of verifying restored files.
struct Verified {
    files: u64,
    bytes: u64,
    problems: Vec<String>,
}

/// Verifies each restored file in `scratch` against its snapshot node, in parallel.
fn verify_files(
    files: &[&FileEntry],
    scratch: &Path,
    index: &Index,
    sealer: &Sealer,
    threads: usize,
    progress: &Progress,
) -> Result<Verified> {
    let is_root = nix::unistd::geteuid().is_root();
    let mut results = Vec::with_capacity(files.len());
    crate::pool::run(
        crate::pool::workers(threads, 1),
        files,
        // Each restored file is reached through the directories above it (any depth).
        || crate::ops::restore::at::DirCursor::open(scratch),
        |cur, f| {
            let rel = f.path.strip_prefix("/").unwrap_or(&f.path);
            let problem = match cur.at(rel) {
                Ok(path) => verify_file(&path, &f.node, index, sealer, is_root),
                Err(e) => Err(format!("cannot reach the restored file: {e}")),
            }
            .err()
            .map(|why| format!("{}: {why}", f.path.display()));
            Progress::add(&progress.files, 1);
            Ok(problem)
        },
        |problem| {
            results.push(problem);
            Ok(())
        },
    )?;
    let mut out = Verified {
        files: 0,
        bytes: 0,
        problems: Vec::new(),
    };
    for (pos, problem) in results.into_iter().enumerate() {
        match problem {
            Some(p) => out.problems.push(p),
            None => {
                out.files += 1;
                out.bytes += files[pos].node.size;
            }
        }
    }
    Ok(out)
}

/// Checks one restored file against the snapshot: type, size, content (re-hashed chunk by
/// chunk and compared with the snapshot's chunk ids), mode, mtime, and owner when `is_root`.
/// `Err` says what is wrong.
fn verify_file(
    path: &Path,
    node: &Node,
    index: &Index,
    sealer: &Sealer,
    is_root: bool,
) -> std::result::Result<(), String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err("missing after the restore".into())
        }
        Err(e) => return Err(format!("cannot inspect the restored file: {e}")),
    };
    if !meta.file_type().is_file() {
        return Err("the restored entry is not a regular file".into());
    }
    if meta.len() != node.size {
        return Err(format!(
            "restored size {} bytes, the snapshot says {}",
            meta.len(),
            node.size
        ));
    }
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot open the restored file: {e}"))?;
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let n = node.content.len();
    for (i, id) in node.content.iter().enumerate() {
        let len = index.get(id).map(|e| e.raw_len).ok_or_else(|| {
            format!(
                "chunk {} of {n} ({id}) is not in the repository index",
                i + 1
            )
        })?;
        buf.resize(len as usize, 0);
        f.read_exact(&mut buf).map_err(|e| {
            format!(
                "cannot read chunk {} of {n} at byte {offset} of the restored file: {e}",
                i + 1
            )
        })?;
        if sealer.blob_id(&buf) != *id {
            return Err(format!(
                "restored content differs from the snapshot at bytes {offset}..{} (chunk {} of {n}, {id})",
                offset + u64::from(len),
                i + 1
            ));
        }
        offset += u64::from(len);
    }
    let mut extra = [0u8; 1];
    match f.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => {
            return Err(format!(
                "the restored file goes on after the snapshot's {offset} bytes of content"
            ))
        }
        Err(e) => return Err(format!("cannot read the restored file: {e}")),
    }
    // As another user, the kernel may drop setgid for a group the restoring user is not in.
    let mask = if is_root { 0o7777 } else { 0o5777 };
    if meta.mode() & mask != node.mode & mask {
        return Err(format!(
            "restored mode {:04o}, the snapshot says {:04o}",
            meta.mode() & 0o7777,
            node.mode & 0o7777
        ));
    }
    if (meta.mtime(), meta.mtime_nsec()) != (node.mtime.sec, i64::from(node.mtime.nsec)) {
        return Err(format!(
            "restored mtime {}.{:09}, the snapshot says {}.{:09}",
            meta.mtime(),
            meta.mtime_nsec(),
            node.mtime.sec,
            node.mtime.nsec
        ));
    }
    if is_root && (meta.uid(), meta.gid()) != (node.uid, node.gid) {
        return Err(format!(
            "restored owner {}:{}, the snapshot says {}:{}",
            meta.uid(),
            meta.gid(),
            node.uid,
            node.gid
        ));
    }
    Ok(())
}

/// Whether `path` is on tmpfs.
fn on_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false)
}

/// A fresh scratch directory, removed when dropped (early returns, errors, interruption).
struct ScratchDir {
    path: PathBuf,
    removed: bool,
}

impl ScratchDir {
    fn create(parent: &Path) -> Result<Self> {
        let parent = crate::units::normalize_path(parent)?;
        fs::create_dir_all(&parent)
            .map_err(|e| Error::io("create drill scratch directory", &parent, e))?;
        let path = parent.join(format!("lifeboat-drill-{:016x}", rand::random::<u64>()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io("create drill scratch directory", &path, e))?;
        Ok(ScratchDir {
            path,
            removed: false,
        })
    }

    /// Removes the directory and everything in it; `Err` names what could not be removed.
    fn remove(mut self) -> Result<()> {
        self.removed = true;
        remove_tree(&self.path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = remove_tree(&self.path) {
                tracing::warn!(error = %e, "cannot remove the drill's scratch directory");
            }
        }
    }
}

/// Removes a directory tree without following symlinks; read-only directories (restored with
/// their snapshot modes) are made writable first.
fn remove_tree(path: &Path) -> Result<()> {
    // Iterative and through directory descriptors: a sample may be thousands of levels deep
    // and hold directories without write permission.
    crate::ops::restore::at::remove_tree(path)
        .map_err(|e| Error::io("remove drill scratch directory", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn files(sizes: &[u64]) -> Vec<FileEntry> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let mut node = Node::new(Vec::new(), NodeKind::File);
                node.size = size;
                FileEntry {
                    path: PathBuf::from(format!("/f{i}")),
                    node,
                }
            })
            .collect()
    }

    #[test]
    fn the_data_model_tells_cost_per_file_from_cost_per_byte() {
        let part = |files: u64, bytes: u64, data_secs: f64| Part {
            files,
            bytes,
            data_secs,
            files_secs: 0.0,
            reads: PackReads::default(),
        };
        // 1 ms a file and 1 ns a byte: 100 small files of 1 KB, 100 large ones of 10 MB.
        let cost = |f: u64, b: u64| f as f64 * 1e-3 + b as f64 * 1e-9;
        let m = data_model(
            &[
                part(100, 100_000, cost(100, 100_000)),
                part(100, 1_000_000_000, cost(100, 1_000_000_000)),
            ],
            None,
        )
        .expect("two parts of different shapes");
        assert!((m.per_file_secs - 1e-3).abs() < 1e-9, "{m:?}");
        assert!((m.per_byte_secs - 1e-9).abs() < 1e-15, "{m:?}");
        // One part, or parts of the same shape: no model.
        assert_eq!(data_model(&[part(10, 100, 1.0)], None), None);
        assert_eq!(
            data_model(&[part(10, 1000, 1.0), part(20, 2000, 2.0)], None),
            None
        );
        // Noise that would make the cost per byte negative: all of it is per file (the same
        // number of files took 5 s and 1 s: 3 s on average).
        let m = data_model(
            &[part(100, 1_000, 5.0), part(100, 1_000_000_000, 1.0)],
            None,
        )
        .expect("a model");
        assert_eq!(m.per_byte_secs, 0.0);
        assert!((m.per_file_secs - 0.03).abs() < 1e-12, "{m:?}");
        // And the other way: the same bytes, ten times the files, less time.
        let m = data_model(&[part(10, 1_000_000, 2.0), part(100, 1_000_000, 1.0)], None)
            .expect("a model");
        assert_eq!(m.per_file_secs, 0.0);
        assert!((m.per_byte_secs - 1.5e-6).abs() < 1e-15, "{m:?}");
    }

    #[test]
    fn the_read_model_tells_cost_per_request_from_cost_per_byte() {
        let part = |requests: u64, bytes: u64, secs: f64| Part {
            files: 1,
            bytes: 1,
            data_secs: 1.0,
            files_secs: 0.0,
            reads: PackReads {
                requests,
                bytes,
                secs,
                work_secs: secs,
            },
        };
        // 5 ms a request and 10 ns a byte: many small reads, and a few large ones.
        let cost = |r: u64, b: u64| r as f64 * 5e-3 + b as f64 * 1e-8;
        let m = read_model(&[
            part(100, 1_000_000, cost(100, 1_000_000)),
            part(10, 100_000_000, cost(10, 100_000_000)),
        ])
        .expect("two parts that read");
        assert!((m.per_request_secs - 5e-3).abs() < 1e-12, "{m:?}");
        assert!((m.per_byte_secs - 1e-8).abs() < 1e-18, "{m:?}");
        // The same bytes per request: all of it per byte read.
        let m = read_model(&[part(10, 1_000, 1.0), part(20, 2_000, 3.0)]).expect("a model");
        assert_eq!(m.per_request_secs, 0.0);
        assert!((m.per_byte_secs - 7.0 / 5_000.0).abs() < 1e-12, "{m:?}");
        // A part that read nothing (all of it in the cache, or no data): no model.
        assert_eq!(read_model(&[part(0, 0, 0.0), part(20, 2_000, 3.0)]), None);
        // The work on the packs besides reading them: 100 small files took 1.5 reader-seconds
        // in all, 1 of them reading; 10 large ones 1.6, 1 reading: what is left is 5 ms a file.
        let with_work = |p: Part, work_secs: f64| Part {
            reads: PackReads {
                work_secs,
                ..p.reads
            },
            ..p
        };
        let parts = [
            Part {
                files: 100,
                bytes: 100,
                ..with_work(part(100, 1_000_000, 1.0), 1.5)
            },
            Part {
                files: 10,
                bytes: 1_000_000,
                ..with_work(part(10, 100_000_000, 1.0), 1.6)
            },
        ];
        let d = data_model(&parts, read_model(&parts).as_ref()).expect("a model");
        assert!((d.per_file_secs - 5e-3).abs() < 1e-4, "{d:?}");
        // Without what reads cost, the data phase as a whole.
        let d = data_model(&parts, None).expect("a model");
        assert!((d.per_file_secs - 1e-2).abs() < 1e-3, "{d:?}");
    }

    #[test]
    fn file_share_rounds_up_and_takes_at_least_one() {
        let f = files(&[10; 100]);
        assert_eq!(choose(&f, Sample::Files(0.1), 1).len(), 10);
        assert_eq!(choose(&f, Sample::Files(0.001), 1).len(), 1);
        assert_eq!(choose(&f, Sample::Files(0.105), 1).len(), 11);
        assert_eq!(choose(&f, Sample::Files(1.0), 1).len(), 100);
        assert_eq!(choose(&f, Sample::All, 1).len(), 100);
        assert!(choose(&[], Sample::Files(0.5), 1).is_empty());
    }

    #[test]
    fn same_seed_same_sample_other_seed_other_sample() {
        let f = files(&[10; 1000]);
        let a = choose(&f, Sample::Files(0.05), 7);
        assert_eq!(a, choose(&f, Sample::Files(0.05), 7));
        assert_ne!(a, choose(&f, Sample::Files(0.05), 8));
        assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    }

    #[test]
    fn byte_share_picks_files_until_reached() {
        let f = files(&[100; 50]);
        for seed in 0..20 {
            let c = choose(&f, Sample::Bytes(0.25), seed);
            let bytes: u64 = c.iter().map(|&i| f[i].node.size).sum();
            assert!(bytes >= 1250, "{bytes}");
            assert!(bytes < 1250 + 100, "stops once reached: {bytes}");
        }
        // One file holds nearly everything: any share beyond the rest needs it.
        let f = files(&[1, 1, 1, 1_000_000, 1]);
        for seed in 0..20 {
            assert!(choose(&f, Sample::Bytes(0.5), seed).contains(&3));
        }
    }

    #[test]
    fn a_share_of_files_has_the_snapshots_mix_of_small_and_large_files() {
        // 90 small files and 10 large ones: a tenth of the files is 9 small and 1 large for
        // every seed (drawn one by one, it would hold 0 to 10 large ones).
        let mut sizes = vec![10; 90];
        sizes.extend([1_000_000; 10]);
        let f = files(&sizes);
        let mut picked = HashSet::new();
        for seed in 0..50 {
            let c = choose(&f, Sample::Files(0.1), seed);
            assert_eq!(c.len(), 10);
            assert_eq!(c.iter().filter(|&&i| i >= 90).count(), 1, "{c:?}");
            picked.extend(c);
        }
        // Still at random within each size: most files get picked by some seed.
        assert!(picked.len() > 60, "{}", picked.len());
    }

    #[test]
    fn the_estimate_counts_placing_once_and_each_link_as_a_file() {
        let snapshot =
            Snapshot::for_test("web1", Some("etc"), &["/etc"], &[], "2026-12-01T00:00:00Z");
        let mut r = DrillReport::empty(&SnapshotId([1; 32]), &snapshot, Sample::default(), 1);
        (r.total_files, r.total_bytes, r.total_entries, r.total_dirs) =
            (1000, 10_000_000, 1300, 100);
        (
            r.files_sampled,
            r.bytes_sampled,
            r.entries_restored,
            r.dirs_restored,
        ) = (100, 1_000_000, 130, 30);
        (r.open_secs, r.listing_secs) = (0.5, 0.25);
        r.restore_timings = RestoreTimings {
            plan_secs: 0.1,
            data_secs: 2.0,
            files_secs: 0.5,
            dirs_secs: 0.3,
        };
        r.data_model = Some(DataModel {
            per_file_secs: 1e-3,
            per_byte_secs: 1e-7,
        });
        let part = |files_secs: f64| Part {
            files: 50,
            bytes: 500_000,
            data_secs: 1.0,
            files_secs,
            reads: PackReads::default(),
        };
        // open + listing + data (1000 × 1 ms + 10 MB × 0.1 µs) + placing (the parts' mean)
        // + 200 links and special files at 1 ms + 100 directories at 10 ms.
        let want = 0.5 + 0.25 + (1.0 + 1.0) + 0.25 + 0.2 + 1.0;
        let got = estimate(&r, &[part(0.2), part(0.3)], false);
        assert!((got - want).abs() < 1e-9, "{got} != {want}");
        // With what reads cost, the data term is in reader-seconds shared by the readers: the
        // full restore's 40 requests at 50 ms and 1 GB at 1 ns a byte by 4 readers, and the 2 s
        // of work on what they hold by as many of them as there are cores.
        r.read_model = Some(ReadModel {
            per_request_secs: 0.05,
            per_byte_secs: 1e-9,
        });
        (r.full_requests, r.full_bytes_read, r.readers) = (40, 1_000_000_000, 4);
        let got = estimate(&r, &[part(0.2), part(0.3)], false);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let want = want - 2.0 + (40.0 * 0.05 + 1.0) / 4.0 + 2.0 / 4.min(cores) as f64;
        assert!((got - want).abs() < 1e-9, "{got} != {want}");
        r.read_model = None;
        // A drill of everything: its measured phases are the estimate.
        r.data_model = None;
        (
            r.files_sampled,
            r.bytes_sampled,
            r.entries_restored,
            r.dirs_restored,
        ) = (1000, 10_000_000, 1300, 100);
        let got = estimate(&r, &[part(0.5)], true);
        assert!((got - (0.5 + 0.25 + 2.0 + 0.5 + 0.3)).abs() < 1e-9, "{got}");
    }

    #[test]
    fn a_non_empty_file_is_always_sampled_when_there_is_one() {
        let mut sizes = vec![0; 99];
        sizes.push(5);
        let f = files(&sizes);
        for seed in 0..20 {
            let c = choose(&f, Sample::Files(0.01), seed);
            assert!(c.contains(&99), "{c:?}");
        }
    }

    #[test]
    fn shares_outside_the_range_are_refused() {
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(Sample::Files(bad).check().is_err(), "{bad}");
            assert!(Sample::Bytes(bad).check().is_err(), "{bad}");
        }
        assert!(Sample::Bytes(1.0).check().is_ok());
        assert_eq!(Sample::Files(0.1).describe(), "10% of files");
        assert_eq!(Sample::Bytes(0.125).describe(), "12.5% of bytes");
    }

    /// A file written in three chunks, its node and an index of its chunks.
    fn restored_file(dir: &Path, sealer: &Sealer) -> (PathBuf, Node, Index) {
        let chunks: [&[u8]; 3] = [b"first chunk ", b"second chunk ", b"third"];
        let path = dir.join("f");
        fs::write(&path, chunks.concat()).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let mtime = filetime::FileTime::from_unix_time(1_600_000_000, 123_456_789);
        filetime::set_file_mtime(&path, mtime).expect("mtime");
        let meta = fs::metadata(&path).expect("stat");
        let mut node = Node::new(b"f".to_vec(), NodeKind::File);
        node.size = meta.len();
        node.mode = 0o640;
        node.uid = meta.uid();
        node.gid = meta.gid();
        node.mtime = crate::repo::Timestamp {
            sec: 1_600_000_000,
            nsec: 123_456_789,
        };
        let mut entries = Vec::new();
        for c in chunks {
            let id = sealer.blob_id(c);
            node.content.push(id);
            entries.push(crate::repo::PackEntry {
                kind: crate::repo::BlobKind::Data,
                compressed: false,
                id,
                offset: 0,
                stored_len: c.len() as u32,
                raw_len: c.len() as u32,
            });
        }
        let mut index = Index::builder();
        index.add_pack(crate::id::PackId::hash(b"pack"), &entries);
        (path, node, index.finish())
    }

    #[test]
    fn verification_catches_content_size_mode_mtime_and_type() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Keyed chunk ids, as in an encrypted repository.
        let sealer = Sealer::encrypted(&crate::repo::MasterKey::random());
        let root = nix::unistd::geteuid().is_root();
        let (path, node, index) = restored_file(tmp.path(), &sealer);
        verify_file(&path, &node, &index, &sealer, root).expect("intact file verifies");

        // The same bytes under plain ids do not match keyed ids.
        let err = verify_file(&path, &node, &index, &Sealer::plain(), root)
            .expect_err("the damage goes unnoticed");
        assert!(err.contains("chunk 1 of 3"), "{err}");

        // One changed byte in the second chunk, same size and metadata.
        let mut bytes = fs::read(&path).expect("read");
        bytes[15] ^= 1;
        let meta = fs::metadata(&path).expect("stat");
        fs::write(&path, &bytes).expect("write");
        filetime::set_file_mtime(
            &path,
            filetime::FileTime::from_last_modification_time(&meta),
        )
        .expect("mtime");
        let err = verify_file(&path, &node, &index, &sealer, root)
            .expect_err("the damage goes unnoticed");
        assert!(
            err.contains("differs from the snapshot at bytes 12..25 (chunk 2 of 3"),
            "{err}"
        );

        let (path, node, index) = restored_file(tmp.path(), &sealer);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = verify_file(&path, &node, &index, &sealer, root)
            .expect_err("the damage goes unnoticed");
        assert!(err.contains("mode 0644, the snapshot says 0640"), "{err}");

        let (path, node, index) = restored_file(tmp.path(), &sealer);
        filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(1_600_000_000, 0))
            .expect("mtime");
        let err = verify_file(&path, &node, &index, &sealer, root)
            .expect_err("the damage goes unnoticed");
        assert!(err.contains("mtime 1600000000.000000000"), "{err}");

        let (path, node, index) = restored_file(tmp.path(), &sealer);
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"!"))
            .expect("append");
        let err = verify_file(&path, &node, &index, &sealer, root)
            .expect_err("the damage goes unnoticed");
        assert!(
            err.contains("restored size 31 bytes, the snapshot says 30"),
            "{err}"
        );

        let (path, node, index) = restored_file(tmp.path(), &sealer);
        fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink("elsewhere", &path).expect("symlink");
        let err = verify_file(&path, &node, &index, &sealer, root)
            .expect_err("the damage goes unnoticed");
        assert!(err.contains("not a regular file"), "{err}");
        fs::remove_file(&path).expect("rm");
        let err = verify_file(&path, &node, &index, &sealer, root)
            .expect_err("the damage goes unnoticed");
        assert!(err.contains("missing after the restore"), "{err}");
    }

    #[test]
    fn scratch_removal_handles_read_only_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = ScratchDir::create(tmp.path()).expect("create");
        let ro = s.path.join("a/b");
        fs::create_dir_all(&ro).expect("mkdir");
        fs::write(ro.join("f"), b"x").expect("write");
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).expect("chmod");
        fs::set_permissions(s.path.join("a"), fs::Permissions::from_mode(0o500)).expect("chmod");
        let p = s.path.clone();
        s.remove().expect("remove");
        assert!(!p.exists());
        assert_eq!(fs::read_dir(tmp.path()).expect("read").count(), 0);
    }
}

//! `recover`: a whole server back in one verified pass — the newest snapshot of every job of
//! one host, restored into one target.
//!
//! 1. Choose ([`choose`]): the snapshots of the host that pass the filters, the newest of each
//!    job. Snapshots made outside the daemon (no job) are left out when the host has jobs — a
//!    one-off backup of `/etc` from last year must not be laid over last night's — and listed,
//!    each with the command that restores it; a host without any job snapshot is recovered
//!    from the newest snapshot of each of its sets of paths.
//! 2. Plan every snapshot (the progress total is then known), then check the target, stage
//!    and verify each one in turn ([`crate::ops::restore::plan`], [`Planned::stage`]): every
//!    chunk of every job is read and verified before anything is placed.
//! 3. If anything is damaged (and `allow_partial` is not given), nothing is placed: the
//!    staging areas are removed and the report names what is damaged.
//! 4. Place them all ([`place_together`]), broadest paths first (the job of `/` before the
//!    job of `/var/lib/postgresql` beneath it): all of them, or — when one fails or a signal
//!    stops it — none, every entry already placed put back.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::ops::restore::{self, place_together, Damaged, Prepared, RestoreOptions};
use crate::progress::Progress;
use crate::repo::{newest_per_lineage, Index, Repository, Snapshot, SnapshotFilter};

/// The snapshots a recover restores, and those of the host it leaves out.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    /// In the order they are placed: broadest paths first.
    pub chosen: Vec<(SnapshotId, Snapshot)>,
    /// The newest snapshot of each set of paths backed up outside the daemon (no job), left
    /// out because the host has job snapshots.
    pub left_out: Vec<(SnapshotId, Snapshot)>,
}

/// Chooses what `recover` restores for `host` among `all`: the newest snapshot of each job of
/// the host that passes `filter` (see the module's documentation).
pub fn choose(
    all: Vec<(SnapshotId, Snapshot)>,
    host: &str,
    filter: &SnapshotFilter,
) -> Result<Choice> {
    filter.validate()?;
    let mut hosts: Vec<String> = all.iter().map(|(_, s)| s.host.clone()).collect();
    hosts.sort();
    hosts.dedup();
    let of_host: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| s.host == host && filter.matches(s))
        .collect();
    if of_host.is_empty() {
        let known = if hosts.is_empty() {
            "the repository has no snapshot yet".to_string()
        } else {
            format!(
                "the repository holds snapshots of {} (`lifeboat snapshots --latest` lists them)",
                hosts
                    .iter()
                    .map(|h| format!("{h:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let others = SnapshotFilter {
            host: None,
            ..filter.clone()
        };
        let filtered = if others.is_empty() {
            String::new()
        } else {
            format!(" matching {}", others.describe())
        };
        return Err(Error::SnapshotSelect(format!(
            "no snapshot of host {host:?}{filtered}: {known}"
        )));
    }
    let newest = newest_per_lineage(&of_host);
    let (mut chosen, mut left_out): (Vec<_>, Vec<_>) =
        newest.into_iter().partition(|(_, s)| s.job.is_some());
    if chosen.is_empty() {
        chosen = std::mem::take(&mut left_out);
    }
    // Broadest first: a job's entries are placed after those of a job whose paths hold them.
    chosen.sort_by(|(a_id, a), (b_id, b)| {
        let depth = |s: &Snapshot| {
            s.paths
                .iter()
                .map(|p| p.split('/').filter(|c| !c.is_empty()).count())
                .min()
                .unwrap_or(0)
        };
        (depth(a), &a.job, &a.paths, a_id).cmp(&(depth(b), &b.job, &b.paths, b_id))
    });
    Ok(Choice { chosen, left_out })
}

/// What recover did for one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub snapshot_id: String,
    pub time: DateTime<Utc>,
    pub host: String,
    pub job: Option<String>,
    pub paths: Vec<String>,
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    /// Bytes of file content verified (and written, unless nothing was placed).
    pub bytes: u64,
    /// Seconds spent planning, reading, verifying and staging this snapshot, and placing it.
    pub secs: f64,
    pub damaged: Vec<Damaged>,
    pub skipped: Vec<Damaged>,
    pub damaged_objects: Vec<String>,
    pub warnings: Vec<String>,
    /// Entries of the target replaced (`overwrite`).
    pub replaced: u64,
}

/// What recover did.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverReport {
    pub host: String,
    pub target: String,
    /// One per snapshot restored, in the order they were placed.
    pub jobs: Vec<JobReport>,
    /// Whether anything was placed in the target (false when something was damaged).
    pub written: bool,
    pub files: u64,
    pub bytes: u64,
    pub duration_secs: f64,
}

impl RecoverReport {
    /// Entries that could not be restored, over every job.
    pub fn damaged(&self) -> usize {
        self.jobs.iter().map(|j| j.damaged.len()).sum()
    }
}

/// A recover that failed: the error, and the position in `chosen` of the snapshot it failed
/// on (`None`: placing, which put back everything it had placed).
#[derive(Debug)]
pub struct Failed {
    pub at: Option<usize>,
    pub error: Error,
}

/// Restores every snapshot of `chosen` into `opts.target`: all verified before any is placed,
/// then all placed or none (see the module's documentation). The caller holds a shared lock.
pub fn recover(
    repo: &Repository,
    index: &Index,
    host: &str,
    chosen: &[(SnapshotId, Snapshot)],
    opts: &RestoreOptions,
    progress: Arc<Progress>,
) -> std::result::Result<RecoverReport, Failed> {
    let started = Instant::now();
    let failed = |at: Option<usize>, error: Error| Failed { at, error };
    // 1. Plan all: the total is known before anything is read.
    let mut planned = Vec::new();
    let mut secs = Vec::new();
    for (_, s) in chosen {
        let t = Instant::now();
        let p = restore::plan(repo, index, &s.tree, opts, &progress)
            .map_err(|e| failed(Some(planned.len()), e))?;
        planned.push(p);
        secs.push(t.elapsed().as_secs_f64());
    }
    if let Some(e) = overlap(chosen, &planned) {
        return Err(failed(None, e));
    }
    // 2. Check the target, stage and verify each one.
    let mut prepared: Vec<Prepared> = Vec::new();
    for (n, p) in planned.into_iter().enumerate() {
        let t = Instant::now();
        match p.stage(repo, index, &progress) {
            Ok(p) => prepared.push(p),
            Err(e) => {
                for p in prepared.into_iter().rev() {
                    p.abandon(&e);
                }
                return Err(failed(Some(n), e));
            }
        }
        secs[n] += t.elapsed().as_secs_f64();
    }
    // 3. Place all, or none (nothing at all when something is damaged and partial restores
    // are not allowed: no prepared restore is placeable then).
    let damaged = prepared.iter().any(|p| !p.report.damaged.is_empty());
    if damaged && !opts.allow_partial {
        let reports = finish_all(prepared);
        return Ok(report(host, opts, chosen, reports, secs, started));
    }
    let t = Instant::now();
    if let Err(e) = place_together(&mut prepared) {
        for p in prepared.into_iter().rev() {
            p.abandon(&e);
        }
        return Err(failed(None, e));
    }
    let placing = t.elapsed().as_secs_f64();
    let reports = finish_all(prepared);
    let total: f64 = reports
        .iter()
        .map(|r| r.timings.files_secs + r.timings.dirs_secs)
        .sum();
    for (n, r) in reports.iter().enumerate() {
        // Placing time, shared out by what each restore measured of it.
        let own = r.timings.files_secs + r.timings.dirs_secs;
        secs[n] += if total > 0.0 {
            placing * own / total
        } else {
            0.0
        };
    }
    Ok(report(host, opts, chosen, reports, secs, started))
}

/// Finishes every prepared restore, the last first (the target directory the first one made
/// is removed only once it is empty), and returns their reports in order.
fn finish_all(prepared: Vec<Prepared>) -> Vec<restore::RestoreReport> {
    let mut reports: Vec<_> = prepared.into_iter().rev().map(Prepared::finish).collect();
    reports.reverse();
    reports
}

/// Two snapshots that would both create the same entry (other than a directory): recover does
/// not choose between them. Jobs whose paths nest without sharing entries (`/` without
/// `/var/lib/postgresql`, and `/var/lib/postgresql`) are fine.
fn overlap(chosen: &[(SnapshotId, Snapshot)], planned: &[restore::Planned]) -> Option<Error> {
    if planned.len() < 2 {
        return None;
    }
    let mut owner: std::collections::HashMap<&std::path::Path, (usize, bool)> =
        std::collections::HashMap::new();
    let mut clash: Option<(usize, usize, &std::path::Path)> = None;
    let mut clashes = 0u64;
    for (n, p) in planned.iter().enumerate() {
        for (rel, dir) in p.entries() {
            match owner.get(rel) {
                Some(&(m, other_dir)) if m != n && !(dir && other_dir) => {
                    clashes += 1;
                    clash.get_or_insert((m, n, rel));
                }
                Some(_) => {}
                None => {
                    owner.insert(rel, (n, dir));
                }
            }
        }
    }
    let (a, b, rel) = clash?;
    let name = |n: usize| {
        let (id, s) = &chosen[n];
        match &s.job {
            Some(j) => format!("job {j} (snapshot {})", id.short()),
            None => format!("the snapshot {} of {}", id.short(), s.paths.join(" ")),
        }
    };
    Some(Error::Invalid(format!(
        "{} and {} both hold /{}{}; recover does not choose which one you mean, and nothing was \
         read or written. Recover them one at a time (--job NAME, the second with --overwrite \
         if its version should win), or restore the one you want with `lifeboat restore`",
        name(a),
        name(b),
        crate::display::path(rel),
        if clashes > 1 {
            format!(" (and {} more entries)", clashes - 1)
        } else {
            String::new()
        }
    )))
}

fn report(
    host: &str,
    opts: &RestoreOptions,
    chosen: &[(SnapshotId, Snapshot)],
    reports: Vec<restore::RestoreReport>,
    secs: Vec<f64>,
    started: Instant,
) -> RecoverReport {
    let written = reports.iter().any(|r| r.written);
    let jobs: Vec<JobReport> = chosen
        .iter()
        .zip(reports)
        .zip(secs)
        .map(|(((id, s), r), secs)| JobReport {
            snapshot_id: id.to_hex(),
            time: s.time,
            host: s.host.clone(),
            job: s.job.clone(),
            paths: s.paths.clone(),
            files: r.files,
            dirs: r.dirs,
            others: r.others,
            bytes: r.bytes,
            secs,
            damaged: r.damaged,
            skipped: r.skipped,
            damaged_objects: r.damaged_objects,
            warnings: r.warnings,
            replaced: r.replaced,
        })
        .collect();
    RecoverReport {
        host: host.to_string(),
        target: opts.target.display().to_string(),
        written,
        files: jobs.iter().map(|j| j.files).sum(),
        bytes: jobs.iter().map(|j| j.bytes).sum(),
        jobs,
        duration_secs: started.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(host: &str, job: Option<&str>, paths: &[&str], minute: u32) -> Snapshot {
        Snapshot::for_test(
            host,
            job,
            paths,
            &[],
            &format!("2026-12-01T10:{minute:02}:00Z"),
        )
    }

    fn id(n: u8) -> SnapshotId {
        SnapshotId([n; 32])
    }

    #[test]
    fn recover_takes_the_newest_of_each_job_of_the_host_broadest_first() {
        let all = vec![
            (id(1), snap("web1", Some("db"), &["/var/lib/postgresql"], 1)),
            (id(2), snap("web1", Some("db"), &["/var/lib/postgresql"], 5)),
            (id(3), snap("web1", Some("system"), &["/etc", "/var"], 2)),
            (id(4), snap("web1", Some("home"), &["/home"], 3)),
            (id(5), snap("web2", Some("system"), &["/etc"], 9)),
            (id(6), snap("web1", None, &["/etc"], 8)),
        ];
        let c = choose(all.clone(), "web1", &SnapshotFilter::default()).expect("choice");
        let ids: Vec<SnapshotId> = c.chosen.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            ids,
            vec![id(4), id(3), id(2)],
            "newest per job, broadest first"
        );
        let left: Vec<SnapshotId> = c.left_out.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            left,
            vec![id(6)],
            "the snapshot without a job is left out, and said"
        );

        let only_db = SnapshotFilter {
            job: Some("db".into()),
            ..Default::default()
        };
        let c = choose(all.clone(), "web1", &only_db).expect("choice");
        assert_eq!(c.chosen.len(), 1);
        assert_eq!(c.chosen[0].0, id(2));

        let err = choose(all.clone(), "web3", &SnapshotFilter::default())
            .expect_err("an unknown host is refused");
        let msg = err.to_string();
        assert!(
            msg.contains("\"web3\"") && msg.contains("\"web1\"") && msg.contains("\"web2\""),
            "{msg}"
        );

        // A host without job snapshots is recovered from its sets of paths.
        let manual = vec![
            (id(7), snap("db9", None, &["/srv"], 1)),
            (id(8), snap("db9", None, &["/srv"], 2)),
            (id(9), snap("db9", None, &["/etc"], 3)),
        ];
        let c = choose(manual, "db9", &SnapshotFilter::default()).expect("choice");
        let mut ids: Vec<SnapshotId> = c.chosen.iter().map(|(i, _)| *i).collect();
        ids.sort();
        assert_eq!(ids, vec![id(8), id(9)]);
        assert!(c.left_out.is_empty());
    }
}

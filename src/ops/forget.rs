//! `forget`: removes snapshots by a retention policy (see [`crate::ops::retention`]) or by id.
//!
//! Only snapshot objects are removed; the data they alone referenced stays until `prune`.
//! Guards against the mistakes that delete every backup (RELIABILITY: "retention that matches
//! nothing, or a mistyped tag or host, never deletes every snapshot"): a host, job or path
//! filter that matches no snapshot, a `keep_tags` tag that no snapshot has, and a plan that
//! would remove every snapshot of a group are refused unless `force` is set.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::ops::retention::{GroupBy, Plan, Policy};
use crate::repo::{LockSettings, Repository, Snapshot};
use crate::storage::FileKind;

/// Which snapshots a policy applies to (empty lists: all).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub hosts: Vec<String>,
    pub jobs: Vec<String>,
    pub paths: Vec<String>,
}

impl Filter {
    /// Whether a snapshot passes the filter.
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && (self.jobs.is_empty() || s.job.as_ref().is_some_and(|j| self.jobs.contains(j)))
            && (self.paths.is_empty() || self.paths.iter().all(|p| s.paths.contains(p)))
    }
}

/// Options of a policy run.
#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    pub policy: Policy,
    pub filter: Filter,
    pub group_by: GroupBy,
    /// Plan and report only.
    pub dry_run: bool,
    /// Go ahead despite the guards.
    pub force: bool,
    pub lock: LockSettings,
}

/// What forget decided and did.
#[derive(Debug, Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub plan: Plan,
    pub removed: Vec<SnapshotId>,
    /// What a guard let through because of `force`.
    pub forced: Vec<String>,
}

/// Applies a retention policy.
pub fn forget(repo: &Repository, opts: &ForgetOptions, now: DateTime<Utc>) -> Result<ForgetReport> {
    let lock = if opts.dry_run {
        None
    } else {
        Some(repo.lock("forget", false, &opts.lock.waiting(opts.lock.stale_after))?)
    };
    let all = repo.load_snapshots()?;
    let mut objections = Vec::new();
    for (what, wanted) in [
        ("host", &opts.filter.hosts),
        ("job", &opts.filter.jobs),
        ("path", &opts.filter.paths),
    ] {
        for w in wanted {
            let found = all.iter().any(|(_, s)| match what {
                "host" => &s.host == w,
                "job" => s.job.as_ref() == Some(w),
                _ => s.paths.contains(w),
            });
            if !found {
                objections.push(format!("no snapshot has {what} {w:?} (a typo?)"));
            }
        }
    }
    let selected: Vec<(SnapshotId, Snapshot)> = all
        .into_iter()
        .filter(|(_, s)| opts.filter.matches(s))
        .collect();
    for tag in &opts.policy.keep_tags {
        if !selected.iter().any(|(_, s)| s.tags.contains(tag)) {
            objections.push(format!(
                "no selected snapshot has tag {tag:?}, so keep-tag {tag:?} keeps nothing (a typo?)"
            ));
        }
    }
    let plan = opts
        .policy
        .apply(&selected, opts.group_by, &chrono::Local, now)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    for g in plan.emptied_groups() {
        objections.push(format!(
            "the policy ({}) removes every snapshot of {}",
            opts.policy, g.key
        ));
    }
    if !objections.is_empty() && !opts.force {
        return Err(Error::Invalid(format!(
            "forget refused, nothing was removed: {}. Check the policy and filters (try --dry-run); --force overrides",
            objections.join("; ")
        )));
    }
    let mut removed = Vec::new();
    if !opts.dry_run {
        removed = remove_snapshots(repo, &plan.to_remove())?;
    }
    if let Some(l) = lock {
        l.release();
    }
    Ok(ForgetReport {
        dry_run: opts.dry_run,
        plan,
        removed,
        forced: if opts.force { objections } else { Vec::new() },
    })
}

/// Removes the snapshot objects `ids` (already under a lock).
fn remove_snapshots(repo: &Repository, ids: &[SnapshotId]) -> Result<Vec<SnapshotId>> {
    let mut removed = Vec::new();
    for id in ids {
        if crate::interrupt::requested() {
            return Err(Error::Interrupted);
        }
        repo.storage().remove(FileKind::Snapshot, &id.to_hex())?;
        removed.push(*id);
    }
    Ok(removed)
}

/// Removes the snapshots named by `selectors` (ids or unique id prefixes).
pub fn forget_ids(
    repo: &Repository,
    selectors: &[String],
    dry_run: bool,
    settings: &LockSettings,
) -> Result<Vec<SnapshotId>> {
    let all = repo.load_snapshots()?;
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    for sel in selectors {
        if sel == "latest" {
            return Err(Error::Invalid(
                "forget takes snapshot ids, not \"latest\"".into(),
            ));
        }
        let (id, _) = crate::repo::select_snapshot(all.clone(), sel, &Default::default())?;
        if seen.insert(id) {
            ids.push(id);
        }
    }
    if dry_run {
        return Ok(ids);
    }
    let lock = repo.lock("forget", false, &settings.waiting(settings.stale_after))?;
    let removed = remove_snapshots(repo, &ids)?;
    lock.release();
    Ok(removed)
}

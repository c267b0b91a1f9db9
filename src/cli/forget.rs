//! `lifeboat forget`: removes snapshots by a retention policy or by id; `--prune` then
//! reclaims their space.

use std::process::ExitCode;

use super::SnapshotFilterArgs;
use anyhow::{bail, Result};
use clap::Args;
use lifeboat::ops::forget::{forget, forget_ids, ForgetOptions};
use lifeboat::ops::retention::{parse_duration, Count, GroupBy, Policy};

use super::prune::{print_report, PruneFlags};
use super::RepoArgs;

#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Snapshots to remove by id (instead of a policy).
    #[arg(value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Keep the N newest snapshots ("unlimited" or -1: all).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keep_last: Option<Count>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keep_hourly: Option<Count>,
    /// ... of each of the N newest days.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keep_daily: Option<Count>,
    /// ... of each of the N newest ISO weeks.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keep_weekly: Option<Count>,
    /// ... of each of the N newest months.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keep_monthly: Option<Count>,
    /// ... of each of the N newest years.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keep_yearly: Option<Count>,
    /// Keep every snapshot within this duration of the group's latest one ("30d", "6months";
    /// a bare "m" is refused as ambiguous).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within: Option<std::time::Duration>,
    /// Keep the newest snapshot of every hour within this duration of the latest.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within_hourly: Option<std::time::Duration>,
    /// ... of every day within this duration.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within_daily: Option<std::time::Duration>,
    /// ... of every ISO week within this duration.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within_weekly: Option<std::time::Duration>,
    /// ... of every month within this duration.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within_monthly: Option<std::time::Duration>,
    /// ... of every year within this duration.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within_yearly: Option<std::time::Duration>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    keep_tags: Vec<String>,
    #[command(flatten)]
    filter: SnapshotFilterArgs,
    /// Apply the policy per group of these attributes: host, paths, tags, job, comma
    /// separated, or "none".
    #[arg(long, value_name = "ATTRS", default_value = "host,paths")]
    group_by: GroupBy,
    /// Show what would be removed; change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Go ahead even when the policy would remove every snapshot of a group, or a filter or
    /// keep-tag matches nothing.
    #[arg(long)]
    force: bool,
    /// Run prune afterwards.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_flags: PruneFlags,
    /// Print the decisions as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ForgetArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    let settings = repo.lock_settings();
    let policy = Policy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within: a.keep_within,
        keep_within_hourly: a.keep_within_hourly,
        keep_within_daily: a.keep_within_daily,
        keep_within_weekly: a.keep_within_weekly,
        keep_within_monthly: a.keep_within_monthly,
        keep_within_yearly: a.keep_within_yearly,
        keep_tags: a.keep_tags.clone(),
    };
    if !a.snapshots.is_empty() {
        if !policy.is_empty() {
            bail!("give snapshot ids or a policy (--keep-*), not both");
        }
        let removed = forget_ids(&repo, &a.snapshots, a.dry_run, &settings)?;
        if a.json {
            let ids: Vec<String> = removed.iter().map(|i| i.to_hex()).collect();
            outln!(
                "{}",
                serde_json::json!({"dry_run": a.dry_run, "removed": ids})
            )?;
        } else {
            let verb = if a.dry_run { "would remove" } else { "removed" };
            for id in &removed {
                outln!("{verb} snapshot {}", id.short())?;
            }
        }
    } else {
        if policy.is_empty() {
            bail!(
                "no policy given: add --keep-last, --keep-daily, ... or --keep-within (a policy that keeps nothing is refused), or name snapshot ids"
            );
        }
        let opts = ForgetOptions {
            policy,
            filter: a.filter.to_filter(),
            group_by: a.group_by,
            dry_run: a.dry_run,
            force: a.force,
            lock: settings,
        };
        let report = forget(&repo, &opts, chrono::Utc::now())?;
        if a.json && !a.prune {
            jsonln!(&report)?;
        } else if !a.json {
            for f in &report.forced {
                errln!("lifeboat: warning (--force): {f}");
            }
            for g in &report.plan.groups {
                outln!(
                    "{}: keep {}, remove {}",
                    g.key,
                    g.kept().count(),
                    g.removed().count()
                )?;
                for d in &g.decisions {
                    let why = if d.keep {
                        d.reasons
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    } else {
                        "remove".to_string()
                    };
                    outln!(
                        "  {}  {}  {}",
                        d.id.short(),
                        d.time
                            .with_timezone(&chrono::Local)
                            .format("%Y-%m-%d %H:%M:%S"),
                        why
                    )?;
                }
            }
            let verb = if a.dry_run { "would remove" } else { "removed" };
            outln!(
                "{verb} {} snapshots",
                if a.dry_run {
                    report.plan.to_remove().len()
                } else {
                    report.removed.len()
                }
            )?;
        }
    }
    if a.prune && !a.dry_run {
        let report = lifeboat::ops::prune::prune(
            &repo,
            &a.prune_flags.options(settings)?,
            super::progress(),
        )?;
        print_report(&report, a.json)?;
    }
    Ok(ExitCode::SUCCESS)
}

//! `lifeboat snapshots`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use lifeboat::units::human_bytes as human;

use super::{RepoArgs, EXIT_INCOMPLETE};

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    which: super::SnapshotArgs,
    /// Only the newest snapshot of each job of each host (and, for snapshots made outside the
    /// daemon, of each set of paths): what `latest` chooses between.
    #[arg(long)]
    latest: bool,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

pub fn run(a: SnapshotsArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    let (mut snaps, damaged) = super::listed(&repo, &a.which)?;
    let status = if damaged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INCOMPLETE)
    };
    if a.latest {
        snaps = lifeboat::repo::newest_per_lineage(&snaps);
        snaps.reverse();
    }
    if a.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(),
                    "short_id": id.short(),
                    "time": s.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                    "host": s.host,
                    "username": s.username,
                    "kind": s.kind,
                    "parent": s.parent.map(|p| p.to_hex()),
                    "paths": s.paths,
                    "tags": s.tags,
                    "job": s.job,
                    "tree": s.tree.to_hex(),
                    "summary": s.summary,
                    "program": s.program,
                    "original": s.original.map(|o| o.to_hex()),
                })
            })
            .collect();
        jsonln!(&list)?;
        return Ok(status);
    }
    outln!(
        "{:<8}  {:<19}  {:<16}  {:<16}  {:<11}  {:>10}  {:<12}  PATHS",
        "ID",
        "TIME",
        "HOST",
        "JOB",
        "KIND",
        "SIZE",
        "TAGS"
    )?;
    for (id, s) in &snaps {
        outln!(
            "{:<8}  {:<19}  {:<16}  {:<16}  {:<11}  {:>10}  {:<12}  {}",
            id.short(),
            s.time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.job.as_deref().unwrap_or("-"),
            s.kind.to_string(),
            human(s.summary.total_bytes),
            s.tags.join(","),
            s.paths.join(" ")
        )?;
    }
    outln!("{} snapshots", snaps.len())?;
    Ok(status)
}

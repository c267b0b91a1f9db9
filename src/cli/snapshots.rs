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
    /// Only snapshots of this host.
    #[arg(long)]
    host: Option<String>,
    /// Only snapshots that include this path.
    #[arg(long)]
    path: Option<String>,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

pub fn run(a: SnapshotsArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    let list = repo.list_snapshots()?;
    // Damaged snapshot objects are named on stderr; the intact snapshots are listed anyway,
    // and the exit code (3) tells a script the listing is partial.
    for d in &list.damaged {
        errln!(
            "lifeboat: warning: {d}; it is not listed. {}",
            lifeboat::repo::snapshot::DAMAGED_SNAPSHOT_HINT
        );
    }
    let status = if list.damaged.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INCOMPLETE)
    };
    let snaps: Vec<_> = list
        .snapshots
        .into_iter()
        .filter(|(_, s)| a.host.as_ref().is_none_or(|h| &s.host == h))
        .filter(|(_, s)| a.path.as_ref().is_none_or(|p| s.paths.contains(p)))
        .collect();
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
        "{:<8}  {:<19}  {:<16}  {:<11}  {:>10}  {:<12}  PATHS",
        "ID",
        "TIME",
        "HOST",
        "KIND",
        "SIZE",
        "TAGS"
    )?;
    for (id, s) in &snaps {
        outln!(
            "{:<8}  {:<19}  {:<16}  {:<11}  {:>10}  {:<12}  {}",
            id.short(),
            s.time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.kind.to_string(),
            human(s.summary.total_bytes),
            s.tags.join(","),
            s.paths.join(" ")
        )?;
    }
    outln!("{} snapshots", snaps.len())?;
    Ok(status)
}

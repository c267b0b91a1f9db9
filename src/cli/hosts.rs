//! `lifeboat hosts`: the fleet view of a repository, for a monitoring machine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use lifeboat::ops::hosts::{lines, metrics};
use lifeboat::units::{count, human_duration};

use super::{RepoArgs, EXIT_FAILURE, EXIT_INCOMPLETE};

#[derive(Debug, Args)]
#[command(after_help = "\
Exit codes: 0 all fresh (or no --stale-after), 1 a host and job older than --stale-after (or no
snapshot at all), 3 some snapshot objects could not be read (the rest is listed).

Examples:
  lifeboat hosts --repo s3:https://s3.example.net/backups --stale-after 26h
  lifeboat hosts --stale-after 26h --metrics-file /var/lib/node_exporter/textfile/lifeboat.prom")]
pub struct HostsArgs {
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    which: super::SnapshotArgs,
    /// Mark a host and job whose newest snapshot is older than this (26h, 7d, 90m) as STALE,
    /// and exit 1 when one is, or when there is no snapshot at all.
    #[arg(long, value_name = "DURATION", value_parser = lifeboat::units::parse_duration)]
    stale_after: Option<Duration>,
    /// Also write the figures as a Prometheus text file (for node_exporter's textfile
    /// collector), replaced atomically.
    #[arg(long, value_name = "FILE")]
    metrics_file: Option<PathBuf>,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

pub fn run(a: HostsArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    // The snapshot objects and nothing else: no lock, nothing written, so read-only
    // credentials do, and a prune on an admin machine does not hold it up.
    let (snaps, damaged) = super::listed(&repo, &a.which)?;
    let filter = a.which.filter(&[]);
    let now = chrono::Utc::now();
    let lines = lines(&snaps, now, a.stale_after);
    if let Some(file) = &a.metrics_file {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("--metrics-file {}: give a file name", file.display()))?;
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
        let text = metrics(&lines, now, a.stale_after, damaged);
        lifeboat::daemon::state::write_atomically(
            dir,
            name,
            text.as_bytes(),
            "write metrics file",
        )?;
    }
    let stale = lines.iter().filter(|l| l.stale).count();
    if a.json {
        jsonln!(&lines)?;
    } else if lines.is_empty() {
        outln!(
            "no snapshot{}",
            if filter.is_empty() {
                " in the repository".to_string()
            } else {
                format!(" matches {}", filter.describe())
            }
        )?;
    } else {
        print_table(&lines, a.stale_after)?;
    }
    if a.stale_after.is_some() && (stale > 0 || lines.is_empty()) {
        errln!(
            "lifeboat: {}",
            if lines.is_empty() {
                "no snapshot at all: nothing is protected".to_string()
            } else {
                format!(
                    "{stale} of {} older than {}: {}",
                    count(lines.len() as u64, "host and job", "hosts and jobs"),
                    human_duration(a.stale_after.unwrap_or_default().as_secs_f64()),
                    lines
                        .iter()
                        .filter(|l| l.stale)
                        .map(|l| format!(
                            "{} {}",
                            lifeboat::display::escape(&l.host),
                            match &l.job {
                                Some(j) => format!("job {}", lifeboat::display::escape(j)),
                                None => format!("paths {}", l.paths.join(" ")),
                            }
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    Ok(if damaged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INCOMPLETE)
    })
}

fn print_table(lines: &[lifeboat::ops::hosts::HostLine], bound: Option<Duration>) -> Result<()> {
    let host_w = lines.iter().map(|l| l.host.len()).max().unwrap_or(0).max(4);
    let job_w = lines
        .iter()
        .map(|l| l.job.as_deref().map_or(1, str::len))
        .max()
        .unwrap_or(0)
        .max(3);
    outln!(
        "{:<host_w$}  {:<job_w$}  {:<8}  {:<26}  {:>12}  {:>9}{}",
        "HOST",
        "JOB",
        "SNAPSHOT",
        "TIME",
        "AGE",
        "SNAPSHOTS",
        if bound.is_some() { "  STATUS" } else { "" }
    )?;
    for l in lines {
        let status = match (bound, l.stale) {
            (None, _) => String::new(),
            (Some(_), false) => "  ok".into(),
            (Some(b), true) => format!("  STALE (older than {})", human_duration(b.as_secs_f64())),
        };
        let paths = if l.job.is_none() {
            format!("  paths {}", l.paths.join(" "))
        } else {
            String::new()
        };
        outln!(
            "{:<host_w$}  {:<job_w$}  {:<8}  {:<26}  {:>12}  {:>9}{status}{paths}",
            lifeboat::display::escape(&l.host),
            l.job
                .as_deref()
                .map_or("-".into(), lifeboat::display::escape),
            &l.snapshot_id[..8],
            l.time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %:z"),
            human_duration(l.age_secs),
            l.snapshots,
        )?;
    }
    Ok(())
}

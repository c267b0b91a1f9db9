//! `lifeboat recover`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use lifeboat::ops::drill::{drill, DrillOptions};
use lifeboat::ops::recover::{choose, recover, Failed};
use lifeboat::ops::restore::RestoreOptions;
use lifeboat::units::{human_bytes as human, human_duration};

use super::output::Reporter;
use super::{RepoArgs, EXIT_FAILURE, EXIT_INCOMPLETE};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  lifeboat recover --repo s3://backups/fleet --host web1 --target /mnt/web1 --dry-run
  lifeboat recover --repo s3://backups/fleet --host web1 --target /mnt/web1
  lifeboat recover --repo /srv/backup --host web1 --target / --overwrite   # from a rescue system")]
pub struct RecoverArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Directory to restore into; the snapshots' absolute paths are recreated beneath it.
    #[arg(long, short, value_name = "DIR")]
    target: PathBuf,
    /// Show what would be restored (each job's newest snapshot, files, bytes) and the
    /// estimated time, measured by restoring a sample of each into a scratch directory on the
    /// target's file system (removed again); write nothing to the target.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    place: super::PlaceArgs,
    #[command(flatten)]
    downloads: super::DownloadArgs,
    /// The host to bring back (required), and filters: --job (only that job), --path, --tag.
    #[command(flatten)]
    which: super::SnapshotArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: RecoverArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let Some(host) = a.which.host.clone() else {
        bail!(
            "give the host to recover: --host NAME (`lifeboat snapshots --latest` lists the \
             hosts and jobs in the repository)"
        );
    };
    let repo = a.repo.open()?;
    let _lock = repo.lock_for_reading("recover")?;
    let filter = a.which.filter(&[]);
    let choice = choose(repo.load_snapshots()?, &host, &filter)?;
    for (id, s) in &choice.left_out {
        errln!(
            "lifeboat: note: not recovering snapshot {} (made outside the daemon); restore it by \
             itself with `lifeboat restore {} --target {}` if you need it",
            lifeboat::repo::select::describe(id, s),
            id.short(),
            a.target.display()
        );
    }
    for (id, s) in &choice.chosen {
        super::announce(id, s);
    }
    if a.dry_run {
        return dry_run(&repo, &a, &host, &choice.chosen, started);
    }
    let index = repo.load_index()?;
    let opts = RestoreOptions {
        target: a.target.clone(),
        includes: Vec::new(),
        verify_only: false,
        allow_partial: a.place.allow_partial,
        overwrite: a.place.overwrite,
        devices: a.place.devices,
        threads: a.downloads.get().unwrap_or(0),
    };
    let progress = super::progress();
    let result = {
        let _reporter = Reporter::start(progress.clone(), a.json, "recover");
        recover(&repo, &index, &host, &choice.chosen, &opts, progress)
    };
    let report = match result {
        Ok(r) => r,
        Err(Failed { at, error }) => {
            let what = match at.and_then(|n| choice.chosen.get(n)) {
                Some((id, s)) => format!(
                    "recover of host {host} stopped at {} (snapshot {}); nothing was placed in \
                     the target",
                    lineage(s),
                    id.short()
                ),
                None => format!("recover of host {host}"),
            };
            return Err(anyhow::Error::from(error).context(what));
        }
    };
    let mut incomplete = false;
    for j in &report.jobs {
        for w in &j.warnings {
            errln!("lifeboat: warning: {w}");
        }
        for d in &j.damaged {
            errln!(
                "lifeboat: damaged: {}: {}",
                lifeboat::display::escape(&d.path),
                d.reason
            );
        }
        for o in &j.damaged_objects {
            errln!("lifeboat: damaged object: {o}");
        }
        for s in &j.skipped {
            incomplete = true;
            errln!(
                "lifeboat: not restored: {}: {}",
                lifeboat::display::escape(&s.path),
                s.reason
            );
        }
    }
    if a.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        for j in &report.jobs {
            outln!(
                "{}: snapshot {} of {}: {} files, {} directories, {} verified, {}",
                j.job
                    .as_deref()
                    .map(|j| format!("job {j}"))
                    .unwrap_or_else(|| format!("paths {}", j.paths.join(" "))),
                &j.snapshot_id[..8.min(j.snapshot_id.len())],
                j.time.format("%Y-%m-%d %H:%M:%S UTC"),
                j.files,
                j.dirs,
                human(j.bytes),
                human_duration(j.secs)
            )?;
        }
    }
    let damaged = report.damaged();
    if damaged > 0 && !a.place.allow_partial {
        errln!(
            "lifeboat: error: recover refused: {damaged} entries are damaged or missing (listed \
             above); nothing was written to {}. Run `lifeboat check --read-data` for details, \
             or pass --allow-partial to restore the intact files",
            a.target.display()
        );
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    if !a.json {
        outln!(
            "recovered host {host} to {}: {} snapshot{}, {} files, {} verified in {} ({}/s)",
            a.target.display(),
            report.jobs.len(),
            if report.jobs.len() == 1 { "" } else { "s" },
            report.files,
            human(report.bytes),
            human_duration(report.duration_secs),
            human(lifeboat::units::per_sec(report.bytes, report.duration_secs))
        )?;
    }
    if damaged > 0 || incomplete {
        errln!("lifeboat: some entries were not restored (listed above); everything else was");
        return Ok(ExitCode::from(EXIT_INCOMPLETE));
    }
    Ok(ExitCode::SUCCESS)
}

fn lineage(s: &lifeboat::repo::Snapshot) -> String {
    match &s.job {
        Some(j) => format!("job {j}"),
        None => format!("the snapshot of {}", s.paths.join(" ")),
    }
}

/// `--dry-run`: a drill of each chosen snapshot, on the target's file system.
fn dry_run(
    repo: &lifeboat::Repository,
    a: &RecoverArgs,
    host: &str,
    chosen: &[(lifeboat::id::SnapshotId, lifeboat::repo::Snapshot)],
    started: std::time::Instant,
) -> Result<ExitCode> {
    // The scratch directory goes where the restore would write: the target, or the nearest
    // directory above it that exists (nothing is created in the target itself).
    let target = std::path::absolute(&a.target)?;
    let scratch = target
        .ancestors()
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let mut rows = Vec::new();
    let mut passed = true;
    for (n, (id, s)) in chosen.iter().enumerate() {
        let opts = DrillOptions {
            scratch: scratch.clone(),
            downloads: a.downloads.get().unwrap_or(0),
            // Opening the repository counts once, in the first job's estimate.
            open_secs: if n == 0 {
                started.elapsed().as_secs_f64()
            } else {
                0.0
            },
            ..DrillOptions::default()
        };
        let progress = super::progress();
        let report = {
            let _reporter = Reporter::start(progress.clone(), a.json, "measuring");
            drill(repo, id, s, &opts, progress)?
        };
        for p in &report.problems {
            errln!("lifeboat: problem: {} ({}): {p}", lineage(s), id.short());
        }
        passed &= report.passed;
        rows.push(report);
    }
    let files: u64 = rows.iter().map(|r| r.total_files).sum();
    let bytes: u64 = rows.iter().map(|r| r.total_bytes).sum();
    // A recover loads the index once: each drill's own loading counts in its estimate, and in
    // the total only once.
    let secs: f64 = rows
        .iter()
        .map(|r| r.estimated_full_restore_secs)
        .sum::<f64>()
        - rows.iter().skip(1).map(|r| r.open_secs).sum::<f64>();
    if a.json {
        let v = serde_json::json!({
            "type": "recover_plan",
            "host": host,
            "target": a.target.display().to_string(),
            "jobs": rows.iter().map(|r| serde_json::json!({
                "snapshot_id": r.snapshot_id,
                "time": r.snapshot_time,
                "host": r.host,
                "job": r.job,
                "files": r.total_files,
                "bytes": r.total_bytes,
                "entries": r.total_entries,
                "estimated_secs": r.estimated_full_restore_secs,
                "problems": r.problems,
            })).collect::<Vec<_>>(),
            "files": files,
            "bytes": bytes,
            "estimated_secs": secs,
            "measured_on": scratch.display().to_string(),
            "passed": passed,
        });
        outln!("{v}")?;
    } else {
        for (r, (id, s)) in rows.iter().zip(chosen) {
            outln!(
                "would restore {}: snapshot {} of {}: {} files, {}, about {}",
                lineage(s),
                id.short(),
                s.time.format("%Y-%m-%d %H:%M:%S UTC"),
                r.total_files,
                human(r.total_bytes),
                human_duration(r.estimated_full_restore_secs)
            )?;
        }
        outln!(
            "recover of host {host} to {} would restore {} snapshot{}: {} files, {}; estimated \
             time {} (measured by restoring a sample of each into {}; nothing was written to the \
             target)",
            a.target.display(),
            rows.len(),
            if rows.len() == 1 { "" } else { "s" },
            files,
            human(bytes),
            human_duration(secs),
            scratch.display()
        )?;
    }
    if passed {
        Ok(ExitCode::SUCCESS)
    } else {
        errln!(
            "lifeboat: error: the sample restored for the estimate found damage (listed above); \
             run `lifeboat check --read-data`"
        );
        Ok(ExitCode::from(EXIT_FAILURE))
    }
}

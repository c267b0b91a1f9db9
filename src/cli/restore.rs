//! `lifeboat restore`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use lifeboat::ops::restore::{restore, RestoreOptions};
use lifeboat::units::human_bytes as human;

use super::output::Reporter;
use super::{RepoArgs, EXIT_FAILURE, EXIT_INCOMPLETE};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Snapshot id, unique id prefix, or "latest" (the newest of the snapshots the filters
    /// leave, when they are all of one job, host and set of paths).
    snapshot: String,
    /// Directory to restore into; the snapshot's absolute paths are recreated beneath it.
    #[arg(
        long,
        short,
        value_name = "DIR",
        required_unless_present = "verify_only"
    )]
    target: Option<PathBuf>,
    /// Restore only this absolute path of the snapshot (repeatable).
    #[arg(long, value_name = "PATH")]
    include: Vec<PathBuf>,
    /// Verify every chunk the snapshot needs and write nothing.
    #[arg(long)]
    verify_only: bool,
    #[command(flatten)]
    place: super::PlaceArgs,
    #[command(flatten)]
    downloads: super::DownloadArgs,
    #[command(flatten)]
    which: super::SnapshotArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: RestoreArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    let includes: Vec<String> = a
        .include
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let read = repo.read_snapshot("restore", &a.snapshot, &a.which.filter(&includes))?;
    let id = read.id;
    super::announce(&id, &read.snapshot);
    let target = match (&a.target, a.verify_only) {
        (Some(t), _) => t.clone(),
        (None, true) => PathBuf::new(),
        (None, false) => bail!("give --target DIR"),
    };
    let opts = RestoreOptions {
        target: target.clone(),
        includes: a.include.clone(),
        verify_only: a.verify_only,
        allow_partial: a.place.allow_partial,
        overwrite: a.place.overwrite,
        devices: a.place.devices,
        threads: a.downloads.get().unwrap_or(0),
    };
    let progress = super::progress();
    let started = std::time::Instant::now();
    let report = {
        let _reporter = Reporter::start(progress.clone(), a.json, "restore");
        restore(&repo, &read.index, &read.snapshot.tree, &opts, progress)
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            if let (
                true,
                lifeboat::Error::Placing {
                    not_put_back,
                    kept_in,
                    ..
                },
            ) = (a.json, &e)
            {
                // What the target holds, for scripts: every entry not listed holds what it
                // held before the restore.
                let v = serde_json::json!({
                    "snapshot_id": id.to_hex(),
                    "target": target.display().to_string(),
                    "error": e.to_string(),
                    "written": !not_put_back.is_empty(),
                    "not_put_back": not_put_back.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                    "originals_kept_in": kept_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                });
                outln!("{v}")?;
            }
            return Err(
                anyhow::Error::from(e).context(format!("restore of snapshot {}", id.short()))
            );
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let rate = lifeboat::units::per_sec(report.bytes, secs);
    let took = format!(
        " in {} ({}/s)",
        lifeboat::units::human_duration(secs),
        human(rate)
    );
    for w in &report.warnings {
        errln!("lifeboat: warning: {w}");
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("snapshot_id".into(), id.to_hex().into());
            o.insert("target".into(), target.display().to_string().into());
            o.insert("verify_only".into(), a.verify_only.into());
            o.insert("duration_secs".into(), secs.into());
            o.insert("bytes_per_sec".into(), rate.into());
        }
        outln!("{v}")?;
    }
    if !report.damaged.is_empty() {
        for d in &report.damaged {
            errln!(
                "lifeboat: damaged: {}: {}",
                lifeboat::display::escape(&d.path),
                d.reason
            );
        }
        for o in &report.damaged_objects {
            errln!("lifeboat: damaged object: {o}");
        }
        if a.place.allow_partial && !a.verify_only {
            errln!(
                "lifeboat: restored {} files to {}; {} entries could not be restored (listed above)",
                report.files,
                target.display(),
                report.damaged.len()
            );
            return Ok(ExitCode::from(EXIT_INCOMPLETE));
        }
        let what = if a.verify_only {
            "verification failed"
        } else {
            "restore refused"
        };
        errln!(
            "lifeboat: error: {what}: {} entries of snapshot {} are damaged or missing; {}\
             run `lifeboat check --read-data` for details, or pass --allow-partial to restore the intact files",
            report.damaged.len(),
            id.short(),
            if a.verify_only { "" } else { "the target was left unchanged; " }
        );
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    for s in &report.skipped {
        errln!(
            "lifeboat: not restored: {}: {}",
            lifeboat::display::escape(&s.path),
            s.reason
        );
    }
    if !a.json {
        if a.verify_only {
            outln!(
                "verified snapshot {}: {} files, {} directories, {} of content{took}; every chunk matches its hash",
                id.short(),
                report.files,
                report.dirs,
                human(report.bytes)
            )?;
        } else {
            outln!(
                "restored snapshot {} to {}: {} files, {} directories, {} other entries, {} verified{took}{}",
                id.short(),
                target.display(),
                report.files,
                report.dirs,
                report.others,
                human(report.bytes),
                if report.replaced > 0 {
                    format!("; {} existing entries replaced", report.replaced)
                } else {
                    String::new()
                }
            )?;
        }
    }
    if !report.skipped.is_empty() {
        errln!(
            "lifeboat: {} entries were not restored (listed above); everything else was",
            report.skipped.len()
        );
        return Ok(ExitCode::from(EXIT_INCOMPLETE));
    }
    Ok(ExitCode::SUCCESS)
}

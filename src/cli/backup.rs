//! `lifeboat backup`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use lifeboat::ops::backup::exclude::Excludes;
use lifeboat::ops::backup::{backup, BackupOptions};
use lifeboat::units::human_bytes as human;

use super::output::Reporter;
use super::{RepoArgs, EXIT_INCOMPLETE};

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Read every file again instead of trusting the parent snapshot's metadata.
    #[arg(long)]
    full: bool,
    /// Exclude entries matching GLOB (a file name, or an absolute path if it has a `/`).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Read exclude patterns from a file, one per line.
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,
    /// Do not cross filesystem boundaries.
    #[arg(long, short = 'x')]
    one_file_system: bool,
    /// Tag the snapshot (repeatable).
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Record the snapshot as one of this daemon job's (a run by hand, such as before
    /// maintenance): `--job` of restore, ls and snapshots finds it, and the job's retention
    /// counts it.
    #[arg(long, value_name = "JOB")]
    job: Option<String>,
    /// Packs stored concurrently (default 2; 4-8 help with distant cloud storage). Each
    /// upload in flight holds one pack (16 MiB by default) in memory.
    #[arg(long, value_name = "N", default_value_t = 2)]
    upload_concurrency: usize,
    /// Print progress events and the summary as JSON lines.
    #[arg(long)]
    json: bool,
    /// Paths to back up.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub fn run(a: BackupArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    let mut excludes = a.exclude.clone();
    for f in &a.exclude_file {
        excludes.extend(Excludes::read_file(f)?);
    }
    let opts = BackupOptions {
        paths: a.paths.clone(),
        full: a.full,
        excludes,
        one_file_system: a.one_file_system,
        tags: a.tag.clone(),
        host: a
            .host
            .clone()
            .unwrap_or_else(lifeboat::repo::snapshot::local_host),
        threads: 0,
        uploads: a.upload_concurrency,
        job: a.job.clone(),
        ..BackupOptions::default()
    };
    let progress = super::progress();
    let outcome = {
        let _reporter = Reporter::start(progress.clone(), a.json, "backup");
        backup(&repo, &opts, progress)?
    };
    let snap = &outcome.snapshot;
    let s = &snap.summary;
    for e in &s.errors {
        errln!(
            "lifeboat: warning: {}: {}",
            lifeboat::display::escape(&e.path),
            e.error
        );
    }
    // Backed up, with something to know: not a failure.
    for w in &s.warnings {
        errln!(
            "lifeboat: note: {}: {}",
            lifeboat::display::escape(&w.path),
            w.error
        );
    }
    if a.json {
        let mut v = serde_json::to_value(s)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("type".into(), "summary".into());
            obj.insert("snapshot_id".into(), outcome.id.to_hex().into());
            obj.insert("kind".into(), snap.kind.to_string().into());
            obj.insert("parent".into(), snap.parent.map(|p| p.to_hex()).into());
        }
        outln!("{v}")?;
    } else {
        let parent = snap
            .parent
            .map(|p| format!(", parent {}", p.short()))
            .unwrap_or_default();
        outln!(
            "snapshot {} saved ({}{parent})",
            outcome.id.short(),
            snap.kind
        )?;
        outln!(
            "files: {} new, {} changed, {} unchanged; {} directories",
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.dirs
        )?;
        outln!(
            "read {}, added {} to the repository; snapshot holds {}",
            human(s.bytes_read),
            human(s.bytes_added),
            human(s.total_bytes)
        )?;
        outln!("took {:.2}s", s.duration_secs)?;
    }
    if s.errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        errln!(
            "lifeboat: {} source entries could not be backed up; the snapshot holds everything else",
            s.errors.len()
        );
        Ok(ExitCode::from(EXIT_INCOMPLETE))
    }
}

//! `lifeboat prune` and `lifeboat unlock`.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use lifeboat::ops::prune::{prune, PruneOptions, PruneReport};
use lifeboat::repo::LockSettings;
use lifeboat::units::human_bytes as human;

use super::output::Reporter;
use super::RepoArgs;

/// Prune's tuning, shared with `forget --prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneFlags {
    /// Repack a pack when more than this share of it is unused ("10%"; "0%" repacks every
    /// pack with any unused data, "100%" never repacks and only deletes fully unused packs).
    #[arg(long, value_name = "PERCENT", default_value = "10%")]
    max_unused: String,
}

impl PruneFlags {
    pub fn options(&self, lock: LockSettings) -> Result<PruneOptions> {
        let text = self.max_unused.trim().trim_end_matches('%');
        let max: f64 = match text.parse() {
            Ok(v) if (0.0..=100.0).contains(&v) => v,
            _ => bail!(
                "--max-unused {:?}: give a percentage from 0% to 100%",
                self.max_unused
            ),
        };
        Ok(PruneOptions {
            max_unused_percent: max,
            dry_run: false,
            lock,
        })
    }
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    flags: PruneFlags,
    /// Show what would be removed and repacked; change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn print_report(r: &PruneReport, json: bool) -> Result<()> {
    if json {
        jsonln!(r)?;
        return Ok(());
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    outln!(
        "{} snapshots, {} packs ({}); {} chunks in use ({})",
        r.snapshots,
        r.packs,
        human(r.repository_bytes_before),
        r.used_blobs,
        human(r.used_bytes)
    )?;
    outln!(
        "{verb} {} unused packs and {} left by interrupted backups; repacked {} packs ({} copied into {} new packs)",
        r.unused_packs,
        r.unindexed_packs_removed,
        r.repacked_packs,
        human(r.repacked_bytes),
        r.new_packs
    )?;
    if r.unindexed_packs_kept > 0 {
        outln!(
            "kept {} recent packs that no index names yet (a backup may be writing them)",
            r.unindexed_packs_kept
        )?;
    }
    if r.temporary_files_removed > 0 {
        outln!(
            "removed {} temporary pack files of killed backups (older than a day)",
            r.temporary_files_removed
        )?;
    }
    if r.missing_packs > 0 {
        outln!(
            "warning: the index named {} packs missing from storage; run `lifeboat check`",
            r.missing_packs
        )?;
    }
    outln!(
        "repository: {} before, {} after ({} freed)",
        human(r.repository_bytes_before),
        human(r.repository_bytes_after),
        human(r.bytes_freed)
    )?;
    Ok(())
}

pub fn run(a: PruneArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    let mut opts = a.flags.options(repo.lock_settings())?;
    opts.dry_run = a.dry_run;
    let progress = super::progress();
    let report = {
        let _reporter = Reporter::start(progress.clone(), a.json, "prune");
        prune(&repo, &opts, progress)?
    };
    print_report(&report, a.json)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Remove every lock, also live ones (only when you know their processes are gone).
    #[arg(long)]
    remove_all: bool,
    /// Print what was removed as JSON.
    #[arg(long)]
    json: bool,
}

pub fn unlock(a: UnlockArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    let settings = repo.lock_settings();
    let removed = repo.unlock(a.remove_all, &settings)?;
    let left = repo.locks_now(&settings)?;
    if a.json {
        let list = |v: &[lifeboat::repo::lock::FoundLock]| {
            v.iter()
                .map(|l| serde_json::json!({"name": l.name, "lock": l.to_string(), "stale": l.stale}))
                .collect::<Vec<_>>()
        };
        outln!(
            "{}",
            serde_json::json!({"removed": list(&removed), "remaining": list(&left)})
        )?;
    } else {
        for l in &removed {
            outln!(
                "removed lock: {l} ({})",
                l.stale.as_deref().unwrap_or("--remove-all")
            )?;
        }
        for l in &left {
            outln!("still held: {l}")?;
        }
        if removed.is_empty() && left.is_empty() {
            outln!("no locks")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `lifeboat repair index` and `lifeboat repair snapshots`.

use std::process::ExitCode;

use super::SnapshotFilterArgs;
use anyhow::Result;
use clap::{Args, Subcommand};
use lifeboat::ops::repair::{
    repair_index, repair_snapshots, RepairIndexOptions, RepairIndexReport, RepairSnapshotsOptions,
    RepairSnapshotsReport,
};
use lifeboat::units::human_bytes as human;

use super::output::Reporter;
use super::{RepoArgs, EXIT_INCOMPLETE};

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the packs in storage.
    ///
    /// Packs the index names that are missing from storage are left out (and named); packs no
    /// index names are added; a pack whose header cannot be read has its intact chunks copied
    /// into a new pack and is left out (it stays in storage until prune). A pack storage cannot
    /// deliver keeps what the old index said about it (exit code 3: run it again). Old index
    /// objects are removed only once the new ones are written.
    Index(IndexArgs),
    /// Write new snapshots without their damaged files.
    ///
    /// Each snapshot with damage gets a replacement, tagged "repaired", in which files whose
    /// data is missing or damaged are left out and directories whose listing is missing or
    /// damaged are empty; every intact file is kept exactly. Each removed file and emptied
    /// directory is named. Snapshots without damage are left alone; originals stay unless
    /// --forget is given. Run `lifeboat repair index` first.
    Snapshots(SnapshotsArgs),
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Read every pack's header, also of packs the index already describes with their right
    /// size.
    #[arg(long)]
    read_all_packs: bool,
    /// Read every pack whole and verify every chunk; packs with damaged chunks have their
    /// intact chunks copied into new packs and are left out of the index.
    #[arg(long)]
    read_data: bool,
    /// Show what would change; write and remove nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Snapshots to repair: ids, unique id prefixes or "latest" (default: every snapshot).
    #[arg(value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: SnapshotFilterArgs,
    /// Read the packs the snapshots use and verify every chunk (finds damaged file data, as
    /// `check --read-data` does); without it, only missing data is found.
    #[arg(long)]
    read_data: bool,
    /// Remove each original snapshot once its repaired replacement is written (and, without
    /// snapshot arguments or filters, snapshot objects that cannot be read at all).
    #[arg(long)]
    forget: bool,
    /// Show what would be repaired; write and remove nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(c: RepairCommand) -> Result<ExitCode> {
    match c {
        RepairCommand::Index(a) => index(a),
        RepairCommand::Snapshots(a) => snapshots(a),
    }
}

fn index(a: IndexArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    let opts = RepairIndexOptions {
        read_all_packs: a.read_all_packs,
        read_data: a.read_data,
        dry_run: a.dry_run,
        threads: 0,
        lock: repo.lock_settings(),
    };
    let progress = super::progress();
    let report = {
        let _reporter = Reporter::start(progress.clone(), a.json, "repair index");
        repair_index(&repo, &opts, progress)?
    };
    if a.json {
        jsonln!(&report)?;
    } else {
        print_index(&report)?;
    }
    if report.is_complete() {
        Ok(ExitCode::SUCCESS)
    } else {
        errln!(
            "lifeboat: warning: {} packs could not be read; the index keeps what it said about them. Run `lifeboat repair index` again before `repair snapshots`, which would otherwise drop files whose data is in them",
            report.unreadable_packs.len()
        );
        Ok(ExitCode::from(EXIT_INCOMPLETE))
    }
}

fn print_index(r: &RepairIndexReport) -> Result<()> {
    let would = |done: &'static str, planned: &'static str| if r.dry_run { planned } else { done };
    for p in &r.damaged_index_objects {
        outln!(
            "damaged index object {}: {} ({})",
            p.object,
            p.error,
            would("replaced", "would be replaced")
        )?;
    }
    for p in &r.missing_packs {
        outln!(
            "missing pack {}: named by the index but not in storage; its {} chunks {} the index",
            p.pack,
            p.blobs,
            would("were left out of", "would be left out of")
        )?;
    }
    for p in &r.added_packs {
        outln!(
            "pack {p} was not in the index: {}",
            would("added", "would be added")
        )?;
    }
    for p in &r.corrected_packs {
        outln!(
            "pack {}: the index listed {} chunks, its header {}: {}",
            p.pack,
            p.old_blobs,
            p.blobs,
            would("index corrected", "index would be corrected")
        )?;
    }
    for p in &r.damaged_packs {
        outln!(
            "damaged pack {} ({}): {} chunks {}, {} stored elsewhere too, {} lost; {}",
            p.pack,
            p.error,
            p.salvaged,
            would("copied into a new pack", "would be copied into a new pack"),
            p.stored_elsewhere,
            p.lost.len(),
            would(
                "left out of the index (prune removes it)",
                "would be left out of the index"
            )
        )?;
        if p.located_by == "nothing" {
            outln!("  its header is unreadable and no index described it: its chunks cannot be located")?;
        }
        for id in &p.lost {
            outln!("  lost chunk {id}")?;
        }
    }
    for p in &r.unreadable_packs {
        outln!(
            "unreadable pack {}: {}; the index keeps its {} chunks as they were",
            p.pack,
            p.error,
            p.kept_blobs
        )?;
    }
    for p in &r.ignored {
        outln!("ignored {p}: not a pack name")?;
    }
    outln!(
        "{} packs: {} described by the old index, {} read ({}); the new index names {} chunks",
        r.packs,
        r.packs_reused,
        r.packs_read,
        human(r.bytes_read),
        r.blobs
    )?;
    if r.dry_run {
        outln!(
            "dry run: nothing changed ({} old index objects)",
            r.index_objects_before
        )?;
    } else {
        outln!(
            "wrote {} index objects{}, removed {} old ones",
            r.index_objects_written,
            if r.new_packs.is_empty() {
                String::new()
            } else {
                format!(" and {} packs of salvaged chunks", r.new_packs.len())
            },
            r.index_objects_removed
        )?;
    }
    Ok(())
}

fn snapshots(a: SnapshotsArgs) -> Result<ExitCode> {
    let repo = a.repo.open()?;
    let opts = RepairSnapshotsOptions {
        snapshots: a.snapshots.clone(),
        filter: a.filter.to_filter(),
        read_data: a.read_data,
        forget: a.forget,
        dry_run: a.dry_run,
        threads: 0,
        lock: repo.lock_settings(),
    };
    let progress = super::progress();
    let report = {
        let _reporter = Reporter::start(progress.clone(), a.json, "repair snapshots");
        repair_snapshots(&repo, &opts, progress)?
    };
    if a.json {
        jsonln!(&report)?;
    } else {
        print_snapshots(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_snapshots(r: &RepairSnapshotsReport) -> Result<()> {
    for s in &r.repaired {
        let outcome = match &s.new {
            Some(id) => format!("repaired as {}", id.short()),
            None => "would be repaired".into(),
        };
        outln!(
            "snapshot {} ({}, {}, {}): {outcome}",
            s.original.short(),
            s.time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.paths.join(" ")
        )?;
        for l in &s.removed_files {
            outln!(
                "  removed file {}: {}",
                lifeboat::display::escape(&l.path),
                l.reason
            )?;
        }
        for l in &s.emptied_dirs {
            outln!(
                "  emptied directory {}: {}",
                lifeboat::display::escape(&l.path),
                l.reason
            )?;
        }
        for l in &s.removed_entries {
            outln!(
                "  removed entry {}: {}",
                lifeboat::display::escape(&l.path),
                l.reason
            )?;
        }
    }
    for p in &r.unreadable_snapshots {
        outln!("unreadable snapshot {}: {}", p.object, p.error)?;
    }
    for id in &r.forgotten {
        let short = id.get(..8).unwrap_or(id);
        outln!("removed snapshot {short}")?;
    }
    let data = if r.read_data {
        format!(", {} of pack data read and verified", human(r.bytes_read))
    } else {
        String::new()
    };
    outln!(
        "{} snapshots checked: {} {}, {} intact (left alone){data}",
        r.snapshots,
        r.repaired.len(),
        if r.dry_run {
            "would be repaired"
        } else {
            "repaired"
        },
        r.intact.len()
    )?;
    if !r.repaired.is_empty() && !r.dry_run && r.forgotten.is_empty() {
        outln!("the originals are kept: remove them with `lifeboat forget ID...` (or repair with --forget), then `lifeboat prune`")?;
    }
    Ok(())
}

//! `lifeboat find`.

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use lifeboat::id::SnapshotId;
use lifeboat::ops::find::{FindOptions, Finder, Found};
use lifeboat::repo::Snapshot;

use super::RepoArgs;

#[derive(Debug, Args)]
#[command(after_help = "\
Output: the snapshots with a match, newest first, each with a header line (id, time, host, \
job, paths) and its matches as `ls --long` shows them (type and mode, owner, group, size, \
modification time, path; names escaped). With --json, one object per match per line: the \
entry's fields as `ls --json` gives them, with snapshot_id, time, host and job.

Exit code 0 when the search went through every snapshot it was to search, whether or not \
anything matched (\"no entry matches\" is said on stderr); 1 when a directory listing or a \
snapshot object could not be read (each is named on stderr: nothing beneath it was searched) \
or on any other error.")]
pub struct FindArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Glob(s) to look for (an entry matching any is shown). Without `/`, a pattern matches
    /// entry names anywhere (`*.conf`, `db.sql`); with `/`, whole absolute paths
    /// (`/etc/**/nginx.conf`, `/home/*/.ssh/authorized_keys`), where `*` stays within one
    /// path component and `**` crosses them. Quote them, so the shell does not expand them.
    #[arg(required = true, value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Match letters regardless of case.
    #[arg(long, short = 'i')]
    ignore_case: bool,
    /// Show only the N newest snapshots in which something matched: snapshots are searched
    /// newest first (after the filters), and the search stops once N of them had a match.
    /// Without it every snapshot the filters leave is searched.
    #[arg(long, value_name = "N")]
    newest: Option<NonZeroUsize>,
    #[command(flatten)]
    which: super::SnapshotArgs,
    /// Print one JSON object per match per line.
    #[arg(long)]
    json: bool,
}

pub fn run(a: FindArgs) -> Result<ExitCode> {
    let opts = FindOptions {
        patterns: a.patterns.clone(),
        ignore_case: a.ignore_case,
    };
    opts.check()?;
    let filter = a.which.filter(&[]);
    filter.validate()?;
    let repo = a.repo.open()?;
    let _lock = repo.lock_for_reading("find")?;
    let list = repo.list_snapshots()?;
    list.warn();
    let total = list.snapshots.len();
    let mut snaps: Vec<(SnapshotId, Snapshot)> = list
        .snapshots
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    if snaps.is_empty() {
        if filter.is_empty() {
            bail!("the repository has no snapshot to search");
        }
        bail!(
            "no snapshot matches {} (of {total} in the repository; `lifeboat snapshots` lists them)",
            filter.describe()
        );
    }
    snaps.reverse();
    let index = repo.load_index()?;
    let mut finder = Finder::new(&repo, &index, &opts)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut searched, mut with_match, mut matches, mut damaged) = (0usize, 0usize, 0u64, 0u64);
    for (id, s) in &snaps {
        if a.newest.is_some_and(|n| with_match >= n.get()) {
            break;
        }
        searched += 1;
        let mut found = 0u64;
        let result = finder.search(s.tree, &mut |f| match f {
            Found::Match { path, node } => {
                if found == 0 && !a.json {
                    if with_match > 0 {
                        writeln!(out).map_err(write_error)?;
                    }
                    let head = format!("snapshot {}", lifeboat::repo::select::describe(id, s));
                    writeln!(out, "{}", lifeboat::display::scrub(&head)).map_err(write_error)?;
                }
                found += 1;
                if a.json {
                    let mut v = super::ls::node_json(path, node);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("snapshot_id".into(), id.to_hex().into());
                        o.insert("time".into(), rfc3339(s).into());
                        o.insert("host".into(), s.host.clone().into());
                        o.insert("job".into(), s.job.clone().into());
                    }
                    writeln!(out, "{}", lifeboat::display::scrub(&v.to_string()))
                        .map_err(write_error)
                } else {
                    writeln!(out, "  {}", super::ls::long_line(path, node)).map_err(write_error)
                }
            }
            Found::Damaged { path, damage } => {
                damaged += 1;
                let _ = out.flush();
                errln!(
                    "lifeboat: snapshot {}: {}: its directory listing cannot be read: {damage}; \
                     nothing beneath it was searched",
                    id.short(),
                    lifeboat::display::bytes(path)
                );
                Ok(())
            }
        });
        result.map_err(output_error)?;
        matches += found;
        if found > 0 {
            with_match += 1;
        }
    }
    out.flush().map_err(super::stdout_error)?;
    let patterns = a.patterns.join(" ");
    if matches == 0 {
        errln!(
            "lifeboat: no entry matches {patterns} in the {} searched",
            lifeboat::units::count(searched as u64, "snapshot", "snapshots")
        );
    } else {
        errln!(
            "lifeboat: {} in {with_match} of the {} searched",
            lifeboat::units::count(matches, "match", "matches"),
            lifeboat::units::count(searched as u64, "snapshot", "snapshots"),
        );
    }
    tracing::debug!(
        listings = finder.listings_read(),
        snapshots = searched,
        "find done"
    );
    let damaged_objects = list.damaged.len() as u64;
    if damaged + damaged_objects > 0 {
        bail!(
            "the search is incomplete: {damaged} directory listing(s) and {damaged_objects} \
             snapshot object(s) could not be read (named above), and nothing in them was \
             searched; `lifeboat check` shows what is damaged"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A snapshot's time as the JSON of every command gives it.
pub(super) fn rfc3339(s: &Snapshot) -> String {
    s.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A failed write to standard output, as the error a search's callback returns.
pub(super) fn write_error(e: std::io::Error) -> lifeboat::Error {
    lifeboat::Error::io("write the output", Path::new("-"), e)
}

/// The error that ended a walk whose callback writes to standard output: the reader going
/// away (`| head`) is [`super::OutputClosed`], so the command stops quietly.
pub(super) fn output_error(e: lifeboat::Error) -> anyhow::Error {
    match e {
        lifeboat::Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::BrokenPipe => {
            super::OutputClosed.into()
        }
        e => e.into(),
    }
}

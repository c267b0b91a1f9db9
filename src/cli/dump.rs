//! `lifeboat dump`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use lifeboat::ops::dump::{dump_file, find_node};

use lifeboat::progress::Progress;

use super::output::{Counting, Reporter};
use super::RepoArgs;

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Snapshot id, unique id prefix, or "latest" (the newest snapshot that holds PATH, of
    /// one job, host and set of paths).
    snapshot: String,
    /// The file to write, as an absolute path in the snapshot (with --archive: any entry, a
    /// directory with everything beneath it, "/" for the whole snapshot).
    #[arg(value_name = "PATH")]
    file: PathBuf,
    #[command(flatten)]
    which: super::SnapshotArgs,
    /// Write PATH and everything beneath it as an archive in this format ("tar"), with
    /// relative paths as `tar -C / -c` writes them (`lifeboat dump --archive tar latest /etc |
    /// tar -x -C /tmp/x`).
    #[arg(long, value_name = "FORMAT", value_parser = ["tar"])]
    archive: Option<String>,
}

pub fn run(a: DumpArgs) -> Result<ExitCode> {
    let shown = lifeboat::display::path(&a.file).to_string();
    if !a.file.is_absolute() {
        bail!("{shown}: give an absolute path, as the snapshot has it");
    }
    let repo = a.repo.open()?;
    let whole = a.archive.is_some()
        && a.file
            .components()
            .all(|c| matches!(c, std::path::Component::RootDir));
    let paths = if whole {
        Vec::new()
    } else {
        vec![a.file.to_string_lossy().into_owned()]
    };
    let read = repo.read_snapshot("dump", &a.snapshot, &a.which.filter(&paths))?;
    super::announce(&read.id, &read.snapshot);
    let node = if whole {
        None
    } else {
        find_node(&repo, &read.index, read.snapshot.tree, &a.file)?
    };
    if a.archive.is_some() && (whole || node.is_some()) {
        return archive(&repo, &read, node.as_ref(), &a.file, &shown);
    }
    let Some(node) = node else {
        bail!(
            "{shown} is not in snapshot {} (`lifeboat ls {} {}` lists what is there)",
            read.id.short(),
            read.id.short(),
            a.file
                .parent()
                .map(|p| lifeboat::display::path(p).to_string())
                .unwrap_or_default()
        );
    };
    lifeboat::ops::dump::require_file(&node, &shown)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut written = 0u64;
    // On a terminal, how far it is: the file's size is the total.
    let progress = super::progress();
    Progress::add(&progress.bytes_total, node.size);
    let result = {
        let _reporter = Reporter::start(progress.clone(), false, "dump");
        let mut counted = Counting {
            inner: &mut out,
            progress: &progress,
        };
        dump_file(
            &repo,
            &read.index,
            &node,
            &shown,
            &mut counted,
            &mut written,
        )
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(lifeboat::Error::Io { cause, .. })
            if cause.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Err(super::OutputClosed.into())
        }
        Err(e) => {
            let _ = out.flush();
            Err(anyhow::Error::from(e).context(format!(
                "dump of {shown} from snapshot {} stopped after {written} bytes (what was \
                 written is the file's beginning, verified)",
                read.id.short()
            )))
        }
    }
}

/// `dump --archive tar`: `node` (at absolute `path`; `None`: the whole snapshot) and
/// everything beneath it as a tar stream on standard output.
fn archive(
    repo: &lifeboat::Repository,
    read: &lifeboat::repo::SnapshotRead,
    node: Option<&lifeboat::repo::Node>,
    path: &std::path::Path,
    shown: &str,
) -> Result<ExitCode> {
    use lifeboat::ops::dump::{dump_tar, TarReport, TarTop};
    use std::os::unix::ffi::OsStrExt;
    // The archive path: the absolute path without its leading "/" (and "." or empty parts).
    let relative: Vec<&[u8]> = path
        .as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    let relative = relative.join(&b'/');
    let top = match node {
        Some(node) => TarTop::Entry {
            node,
            path: &relative,
        },
        None => TarTop::Root(read.snapshot.tree),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut report = TarReport::default();
    // On a terminal, the bytes written so far (and of a single file, how far it is).
    let progress = super::progress();
    if let Some(n) = node.filter(|n| n.kind == lifeboat::repo::NodeKind::File) {
        Progress::add(&progress.bytes_total, n.size);
    }
    let result = {
        let _reporter = Reporter::start(progress.clone(), false, "dump");
        let mut counted = Counting {
            inner: &mut out,
            progress: &progress,
        };
        dump_tar(repo, &read.index, top, &mut counted, &mut report)
    };
    for why in &report.left_out {
        errln!("lifeboat: warning: left out of the archive: {why}");
    }
    match result {
        Ok(()) if report.left_out.is_empty() => Ok(ExitCode::SUCCESS),
        Ok(()) => {
            errln!(
                "lifeboat: the archive of {shown} holds {} entries; {} left out (listed above)",
                report.entries,
                report.left_out.len()
            );
            Ok(ExitCode::from(super::EXIT_INCOMPLETE))
        }
        Err(lifeboat::Error::Io { cause, .. })
            if cause.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Err(super::OutputClosed.into())
        }
        Err(e) => {
            let show = |p: &Option<Vec<u8>>| {
                p.as_deref()
                    .map(|p| lifeboat::display::bytes(p).to_string())
            };
            let after = match show(&report.last) {
                Some(last) => format!("after {} whole entries, the last {last}", report.entries),
                None => "before any whole entry".to_string(),
            };
            let within = show(&report.stopped_in)
                .map(|p| format!(", in {p}"))
                .unwrap_or_default();
            Err(anyhow::Error::from(e).context(format!(
                "the archive of {shown} from snapshot {} stopped {after}{within}: the tar stream is \
                 truncated (no end-of-archive marker, so tar reports an unexpected end); the \
                 entries before are intact, verified",
                read.id.short()
            )))
        }
    }
}

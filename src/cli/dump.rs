//! `lifeboat dump`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use lifeboat::ops::dump::{dump_file, find_node};

use super::RepoArgs;

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Snapshot id, unique id prefix, or "latest" (the newest snapshot that holds PATH, of
    /// one job, host and set of paths).
    snapshot: String,
    /// The file to write, as an absolute path in the snapshot.
    #[arg(value_name = "PATH")]
    file: PathBuf,
    #[command(flatten)]
    which: super::SnapshotArgs,
}

pub fn run(a: DumpArgs) -> Result<ExitCode> {
    let shown = lifeboat::display::path(&a.file).to_string();
    if !a.file.is_absolute() {
        bail!("{shown}: give an absolute path, as the snapshot has it");
    }
    let repo = a.repo.open()?;
    let paths = [a.file.to_string_lossy().into_owned()];
    let read = repo.read_snapshot("dump", &a.snapshot, &a.which.filter(&paths))?;
    super::announce(&read.id, &read.snapshot);
    let Some(node) = find_node(&repo, &read.index, read.snapshot.tree, &a.file)? else {
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
    let result = dump_file(&repo, &read.index, &node, &shown, &mut out, &mut written);
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

//! `lifeboat mount`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use lifeboat::ops::mount::{check_mountpoint, mount, Ended, MountOptions};

use super::RepoArgs;

#[derive(Debug, Args)]
pub struct MountArgs {
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    which: super::SnapshotArgs,
    /// Reread the snapshot list (new backups, forgotten snapshots) at most this often, when
    /// the top directory is looked at; 0 shows the list read at mount time.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_refresh)]
    refresh: std::time::Duration,
    /// The empty directory to mount on.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

fn parse_refresh(s: &str) -> std::result::Result<std::time::Duration, String> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    lifeboat::units::parse_duration(s)
}

pub fn run(a: MountArgs) -> Result<ExitCode> {
    // What the mount point and the machine lack is said before the password is asked for.
    check_mountpoint(&a.dir)?;
    let filter = a.which.filter(&[]);
    filter.validate()?;
    let repo = a.repo.open()?;
    let opts = MountOptions {
        dir: a.dir.clone(),
        filter,
        refresh: (!a.refresh.is_zero()).then_some(a.refresh),
    };
    let shown = lifeboat::display::path(&a.dir).to_string();
    let ended = mount(&repo, &opts, |m| {
        errln!(
            "lifeboat: mounted {} snapshot{} read-only at {shown} (ids/, hosts/, jobs/, \
             snapshots/); serving until `umount {shown}` or Ctrl-C",
            m.snapshots,
            if m.snapshots == 1 { "" } else { "s" }
        );
    })?;
    match ended {
        Ended::Unmounted => errln!("lifeboat: {shown} was unmounted"),
        Ended::Interrupted => errln!("lifeboat: unmounted {shown}"),
        Ended::Detached => errln!(
            "lifeboat: {shown} was in use; detached it (it goes away when the last process \
             leaves it, and those processes get errors from now on)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

//! `lifeboat maintenance add | list | cancel`: planned maintenance windows, which the daemon
//! announces, backs up before, and holds scheduled runs during.

use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Utc;
use clap::{Args, Subcommand};
use lifeboat::daemon::config::Config;
use lifeboat::daemon::maintenance::{self, Phase};

use lifeboat::daemon::config::DEFAULT_CONFIG;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct MaintenanceArgs {
    /// The daemon's config file (the windows live in its state_dir).
    #[arg(long, short = 'c', env = "LIFEBOAT_CONFIG", value_name = "FILE", default_value = DEFAULT_CONFIG, global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: MaintenanceCommand,
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Record a maintenance window: the daemon announces it, makes a final backup of the
    /// on_shutdown jobs just before it, holds scheduled runs during it, and reports when the
    /// server is back.
    Add(AddArgs),
    /// List the maintenance windows (upcoming and active; --all: also past and cancelled).
    List(ListArgs),
    /// Cancel a window: before its start it is called off, during it, it ends now.
    Cancel(CancelArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// When it starts: "2026-12-01 02:00" (local time), "2026-12-01T02:00:00Z", "+2h", "now".
    #[arg(long, value_name = "TIME")]
    start: String,
    /// How long it is expected to last ("2h", "90m", "3d").
    #[arg(long, value_name = "DURATION")]
    duration: String,
    /// Why: what the announcements say ("kernel upgrade", "datacenter move").
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// What users will notice ("web shop offline").
    #[arg(long, value_name = "TEXT")]
    impact: Option<String>,
    /// Print the window as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Also windows that are over or cancelled (kept for 30 days).
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The window's id (see `lifeboat maintenance list`).
    id: u32,
}

fn state_dir(config: &Path) -> Result<PathBuf> {
    let c = Config::load(config)
        .map_err(|e| anyhow::Error::new(e).context("invalid config"))
        .with_context(|| "the maintenance windows live in the daemon's state_dir")?;
    Ok(c.daemon.state_dir)
}

pub fn run(args: MaintenanceArgs) -> Result<ExitCode> {
    let now = Utc::now();
    let config = args.config;
    match args.command {
        MaintenanceCommand::Add(a) => {
            let start = maintenance::parse_time(&a.start, now)?;
            let duration = lifeboat::units::parse_duration(&a.duration)
                .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
            let dir = state_dir(&config)?;
            let (id, window, overlaps) = maintenance::update(&dir, now, |ws| {
                let id = ws.add(start, duration, &a.reason, a.impact.as_deref(), now)?;
                let w = ws.windows.iter().find(|w| w.id == id).cloned();
                let overlaps: Vec<u32> = match &w {
                    Some(w) => ws
                        .windows
                        .iter()
                        .filter(|o| o.id != id && !o.called_off() && o.phase(now) != Phase::Over)
                        .filter(|o| o.start < w.end && w.start < o.effective_end())
                        .map(|o| o.id)
                        .collect(),
                    None => Vec::new(),
                };
                Ok((id, w, overlaps))
            })?;
            let Some(w) = window else {
                anyhow::bail!("maintenance window {id} vanished after it was added");
            };
            if a.json {
                jsonln!(&w.to_json(now))?;
            } else {
                outln!("maintenance window {id}: {}", w.describe())?;
                outln!(
                    "the daemon announces it, backs up the on_shutdown jobs just before it, and holds scheduled backups during it"
                )?;
            }
            if !overlaps.is_empty() {
                errln!("lifeboat: note: it overlaps windows {overlaps:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        MaintenanceCommand::List(a) => {
            let dir = state_dir(&config)?;
            let windows = maintenance::load(&dir)?;
            let shown: Vec<&maintenance::Window> = windows
                .windows
                .iter()
                .filter(|w| a.all || matches!(w.phase(now), Phase::Upcoming | Phase::Active))
                .collect();
            if a.json {
                let list: Vec<_> = shown.iter().map(|w| w.to_json(now)).collect();
                jsonln!(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            if shown.is_empty() {
                outln!(
                    "no maintenance windows{}",
                    if a.all { "" } else { " planned" }
                )?;
            }
            for w in shown {
                outln!(
                    "{:>4}  {:<9}  {}",
                    w.id,
                    w.phase(now).as_str(),
                    w.describe()
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        MaintenanceCommand::Cancel(a) => {
            let dir = state_dir(&config)?;
            let (phase, w) = maintenance::update(&dir, now, |ws| {
                let w = ws.cancel(a.id, now)?.clone();
                Ok((w.phase(now), w))
            })?;
            match phase {
                Phase::Cancelled => outln!("maintenance window {} called off", a.id)?,
                _ => outln!(
                    "maintenance window {} ended now; scheduled backups resume ({})",
                    a.id,
                    w.describe()
                )?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

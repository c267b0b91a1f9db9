//! `lifeboat daemon`, `status`, `run`, `pause`, `resume`, `config check`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use lifeboat::daemon::config::{Config, DEFAULT_CONFIG};
use lifeboat::daemon::control::{self, Request};
use lifeboat::daemon::runner::{run_job, RunKind};
use lifeboat::daemon::state::RunResult;

use super::{EXIT_FAILURE, EXIT_INCOMPLETE};

/// Which config file.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// The daemon's config file.
    #[arg(long, short = 'c', env = "LIFEBOAT_CONFIG", value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The job to run now.
    #[arg(
        required_unless_present = "on_shutdown",
        conflicts_with = "on_shutdown"
    )]
    job: Option<String>,
    /// Run every job marked `on_shutdown = true`, one after the other (incremental), as the
    /// shutdown unit does before the server goes offline, or by hand before maintenance.
    #[arg(long)]
    on_shutdown: bool,
    /// A full backup (every file read again).
    #[arg(long)]
    full: bool,
    /// Return once the daemon has queued the run instead of waiting for its end.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The job to pause (default: every job).
    job: Option<String>,
    /// Resume by itself after this long ("2h", "30m"); default: until `lifeboat resume`.
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The job to resume (default: every job).
    job: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file without running anything.
    Check(ConfigArg),
}

pub fn daemon(a: DaemonArgs) -> Result<ExitCode> {
    lifeboat::daemon::Daemon::run(&a.config.config)?;
    Ok(ExitCode::SUCCESS)
}

pub fn config(c: ConfigCommand) -> Result<ExitCode> {
    match c {
        ConfigCommand::Check(a) => match Config::check(&a.config) {
            Ok((cfg, warnings)) => {
                for w in &warnings {
                    errln!("warning: {w}");
                }
                outln!(
                    "{}: valid; {} repositories, {} jobs",
                    a.config.display(),
                    cfg.repositories.len(),
                    cfg.jobs.len()
                )?;
                for j in &cfg.jobs {
                    let now = chrono::Utc::now();
                    let next = |s: &Option<lifeboat::daemon::schedule::Schedule>| {
                        s.as_ref()
                            .and_then(|s| s.next_after(now))
                            .map(|t| {
                                t.with_timezone(&chrono::Local)
                                    .format("%Y-%m-%d %H:%M:%S")
                                    .to_string()
                            })
                            .unwrap_or_else(|| "-".into())
                    };
                    outln!(
                        "  job {}: next incremental {}, next full {}",
                        j.name,
                        next(&j.incremental),
                        next(&j.full)
                    )?;
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                for e in &errors.0 {
                    errln!("{e}");
                }
                errln!(
                    "lifeboat: {} errors in {}",
                    errors.0.len(),
                    a.config.display()
                );
                Ok(ExitCode::from(EXIT_FAILURE))
            }
        },
    }
}

fn runtime_dir(config: &Path) -> Result<PathBuf> {
    Ok(lifeboat::daemon::runtime_dir_of(config)?)
}

pub fn status(a: StatusArgs) -> Result<ExitCode> {
    let answer = control::ask(&runtime_dir(&a.config.config)?, &Request::Status)?;
    if a.json {
        jsonln!(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let d = &answer["daemon"];
    let memory = d["resident_bytes"]
        .as_u64()
        .map(|b| format!(", {:.1} MiB resident", b as f64 / 1048576.0))
        .unwrap_or_default();
    outln!(
        "lifeboat daemon {} (pid {}), up since {}{memory}",
        d["version"].as_str().unwrap_or("?"),
        d["pid"],
        d["started"].as_str().unwrap_or("?")
    )?;
    for w in answer["maintenance"].as_array().into_iter().flatten() {
        outln!(
            "maintenance {} ({}): {:?} from {} to {}{}",
            w["id"],
            w["phase"].as_str().unwrap_or("?"),
            w["reason"].as_str().unwrap_or(""),
            w["start"].as_str().unwrap_or("?"),
            w["end"].as_str().unwrap_or("?"),
            w["impact"]
                .as_str()
                .map(|i| format!("; impact: {i}"))
                .unwrap_or_default()
        )?;
    }
    let mut any_bad = false;
    for j in answer["jobs"].as_array().into_iter().flatten() {
        let s = &j["state"];
        let result = s["last_result"].as_str().unwrap_or("never run");
        any_bad |= result == "failed" || j["stale"].as_bool() == Some(true);
        outln!("job {}:", j["name"].as_str().unwrap_or("?"))?;
        if let Some(r) = j["running"].as_object() {
            let how_far = match (r["percent"].as_f64(), r["eta_secs"].as_f64()) {
                (Some(p), Some(eta)) => format!(
                    ", {p:.0}% done, about {} left",
                    lifeboat::units::human_duration(eta)
                ),
                (Some(p), None) => format!(", {p:.0}% done"),
                _ => String::new(),
            };
            outln!(
                "  running: {} backup since {}, {} files, {} read{how_far}",
                r["kind"].as_str().unwrap_or("?"),
                r["started"].as_str().unwrap_or("?"),
                r["files"],
                lifeboat::units::human_bytes(r["bytes_read"].as_u64().unwrap_or(0))
            )?;
        }
        outln!(
            "  last run: {} ({}){}",
            s["last_start"].as_str().unwrap_or("never"),
            result,
            s["last_error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )?;
        outln!(
            "  last success: {}",
            s["last_success"].as_str().unwrap_or("never")
        )?;
        outln!(
            "  next: incremental {}, full {}",
            j["next_incremental"].as_str().unwrap_or("-"),
            j["next_full"].as_str().unwrap_or("-")
        )?;
        if let Some(p) = j["paused_until"].as_str() {
            outln!("  paused until {p}")?;
        }
        if j["stale"].as_bool() == Some(true) {
            outln!("  STALE: no successful backup within the job's stale_after bound")?;
        }
    }
    Ok(if any_bad {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn run(a: RunArgs) -> Result<ExitCode> {
    let cfg = Config::load(&a.config.config)
        .map_err(|e| anyhow::Error::new(e).context("invalid config"))?;
    let jobs: Vec<String> = match &a.job {
        Some(name) => {
            if cfg.job(name).is_none() {
                bail!("no job named {name:?} in {}", a.config.config.display());
            }
            vec![name.clone()]
        }
        None => cfg
            .jobs
            .iter()
            .filter(|j| j.config.on_shutdown)
            .map(|j| j.name.clone())
            .collect(),
    };
    if jobs.is_empty() {
        outln!("no job has on_shutdown = true; nothing to do")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut worst = ExitCode::SUCCESS;
    for name in &jobs {
        let code = run_one(&cfg, name, a.full, a.no_wait)?;
        if code != ExitCode::SUCCESS {
            worst = code;
        }
    }
    Ok(worst)
}

fn run_one(cfg: &Config, name: &str, full: bool, no_wait: bool) -> Result<ExitCode> {
    let Some(job) = cfg.job(name).cloned() else {
        bail!("no job named {name:?}");
    };
    let request = Request::Run {
        job: name.to_string(),
        full,
    };
    match control::ask(&cfg.daemon.runtime_dir, &request) {
        Ok(_) => {
            outln!("job {name} queued in the running daemon")?;
            if no_wait {
                return Ok(ExitCode::SUCCESS);
            }
            wait_for(cfg, name)
        }
        Err(e) if control::socket_path(&cfg.daemon.runtime_dir).exists() => Err(e.into()),
        Err(_) => {
            // No daemon: run the job here, with the same configuration.
            errln!("no daemon is running; running job {name} in this process");
            let kind = if full {
                RunKind::Full
            } else {
                RunKind::Incremental
            };
            let outcome = run_job(cfg, &job, kind, Arc::default());
            report(
                name,
                outcome.result,
                outcome.error.as_deref(),
                outcome.snapshot.as_deref(),
            )
        }
    }
}

fn report(
    job: &str,
    result: RunResult,
    error: Option<&str>,
    snapshot: Option<&str>,
) -> Result<ExitCode> {
    match result {
        RunResult::Success => {
            outln!(
                "job {job}: success, snapshot {}",
                snapshot.map(|s| &s[..8.min(s.len())]).unwrap_or("?")
            )?;
            Ok(ExitCode::SUCCESS)
        }
        RunResult::Partial => {
            errln!(
                "job {job}: snapshot written, with problems: {}",
                error.unwrap_or("")
            );
            Ok(ExitCode::from(EXIT_INCOMPLETE))
        }
        RunResult::Failed => {
            errln!("job {job}: FAILED: {}", error.unwrap_or("unknown error"));
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}

/// Polls the daemon until the job has run (started and finished after the request).
fn wait_for(cfg: &Config, job: &str) -> Result<ExitCode> {
    let asked = chrono::Utc::now();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        if lifeboat::interrupt::requested() {
            bail!("stopped waiting; the run goes on in the daemon");
        }
        let answer = control::ask(&cfg.daemon.runtime_dir, &Request::Status)?;
        let Some(j) = answer["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["name"] == job)
        else {
            bail!("the daemon no longer has job {job:?}");
        };
        let s = &j["state"];
        let end = s["last_end"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let start = s["last_start"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let done = j["running"].is_null()
            && !j["queued"].as_bool().unwrap_or(false)
            && start.is_some_and(|t| t >= asked - chrono::Duration::seconds(1))
            && end.is_some_and(|e| start.is_some_and(|s| e >= s));
        if done {
            let result: RunResult = serde_json::from_value(s["last_result"].clone())?;
            return report(
                job,
                result,
                s["last_error"].as_str(),
                s["last_snapshot"].as_str(),
            );
        }
    }
}

pub fn pause(a: PauseArgs) -> Result<ExitCode> {
    let for_secs = a
        .duration
        .as_deref()
        .map(lifeboat::units::parse_duration)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))?
        .map(|d| d.as_secs());
    let answer = control::ask(
        &runtime_dir(&a.config.config)?,
        &Request::Pause {
            job: a.job,
            for_secs,
        },
    )?;
    outln!(
        "paused {} until {}",
        answer["paused"].as_str().unwrap_or("?"),
        answer["until"].as_str().unwrap_or("?")
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn resume(a: ResumeArgs) -> Result<ExitCode> {
    control::ask(
        &runtime_dir(&a.config.config)?,
        &Request::Resume { job: a.job.clone() },
    )?;
    outln!("resumed {}", a.job.as_deref().unwrap_or("every job"))?;
    Ok(ExitCode::SUCCESS)
}

//! Running one job: the `before` hook, the backup, the `after` hook.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::child;
use super::state::RunResult;
use crate::daemon::config::{Config, HookConfig, Job, RepositoryConfig};
use crate::error::{Error, Result};
use crate::ops::backup::exclude::Excludes;
use crate::ops::backup::{backup, BackupOptions};
use crate::progress::Progress;
use crate::repo::{KeyCache, LockSettings, PasswordEnv, RepoSpec, Repository};
use crate::units::parse_duration;

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Full,
    Incremental,
}

impl RunKind {
    /// "full" or "incremental".
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Full => "full",
            RunKind::Incremental => "incremental",
        }
    }
}

/// How a run went.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub result: RunResult,
    pub error: Option<String>,
    pub snapshot: Option<String>,
    pub summary: Option<crate::repo::Summary>,
    pub duration: Duration,
    /// The job's retention after a successful backup: snapshots removed, or why it failed.
    pub retention: Option<std::result::Result<usize, String>>,
}

/// What the daemon's process environment says about opening repositories
/// (`LIFEBOAT_PASSWORD_FILE`, `LIFEBOAT_PASSWORD`, `$CREDENTIALS_DIRECTORY`,
/// `LIFEBOAT_LOCK_STALE_AFTER`), read once: at start-up ([`read_environment`]).
struct DaemonEnv {
    passwords: PasswordEnv,
    lock: std::result::Result<LockSettings, String>,
}

static DAEMON_ENV: std::sync::LazyLock<DaemonEnv> = std::sync::LazyLock::new(|| DaemonEnv {
    passwords: PasswordEnv::from_process(),
    lock: LockSettings::from_env().map_err(|e| e.to_string()),
});

/// Reads the environment the daemon opens its repositories with (`LIFEBOAT_PASSWORD_FILE`,
/// `LIFEBOAT_PASSWORD`, `$CREDENTIALS_DIRECTORY`, `LIFEBOAT_LOCK_STALE_AFTER`); the daemon's
/// start-up calls it, later calls find it read.
pub fn read_environment() -> Result<()> {
    DAEMON_ENV.lock.clone().map(drop).map_err(Error::Invalid)
}

/// The master keys of the daemon's repositories, derived once per repository and password
/// (see [`KeyCache`]): a scheduled run does not pay the key derivation again.
static DAEMON_KEYS: std::sync::LazyLock<KeyCache> = std::sync::LazyLock::new(KeyCache::default);

/// What opens configured repository `r`, with the daemon's environment.
pub fn spec(cfg: &Config, r: &RepositoryConfig) -> Result<RepoSpec> {
    let lock = DAEMON_ENV.lock.clone().map_err(Error::Invalid)?;
    Ok(r.spec(&cfg.daemon.cache_dir, &DAEMON_ENV.passwords, lock))
}

/// Opens a configured repository, with the daemon's metadata and key caches.
pub fn open_repository(cfg: &Config, r: &RepositoryConfig) -> Result<Repository> {
    spec(cfg, r)?.open_with_keys(&DAEMON_KEYS)
}

/// After the daemon was told to stop, an `after` hook (cleanup: restarting what a `before` hook
/// stopped) may still run this long; a `before` hook is stopped at once (no backup follows it).
pub const AFTER_HOOK_STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs a hook through the daemon's child runner ([`super::child`]); `Err` names the command
/// and why it failed.
fn run_hook(
    hook: &HookConfig,
    job: &str,
    phase: &str,
    result: Option<RunResult>,
) -> std::result::Result<(), String> {
    let timeout = hook
        .timeout
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .unwrap_or(Duration::from_secs(600));
    let program = hook.command.first().ok_or("empty command")?;
    let mut env = vec![
        ("LIFEBOAT_JOB", job.to_string()),
        ("LIFEBOAT_PHASE", phase.to_string()),
    ];
    if let Some(r) = result {
        env.push(("LIFEBOAT_RESULT", format!("{r:?}").to_lowercase()));
    }
    let spec = child::Spec {
        argv: &hook.command,
        config_env: &hook.env,
        env,
        stdin: None,
        timeout,
        on_stop: Some(if phase == "after" {
            AFTER_HOOK_STOP_GRACE
        } else {
            Duration::ZERO
        }),
    };
    let outcome =
        child::run(&spec).map_err(|e| format!("{phase} hook {program}: cannot start: {e}"))?;
    if outcome.leftovers_stopped {
        tracing::warn!(job, phase, program = %program, "the hook left processes running in its process group; they were stopped");
    }
    match outcome.failure(timeout) {
        None => Ok(()),
        Some(why) => {
            if !outcome.output.trim().is_empty() {
                tracing::warn!(job, phase, program = %program, output = %outcome.output, "output of the failed hook (its last 64 KiB)");
            }
            Err(format!("{phase} hook {program} {why}"))
        }
    }
}

/// Runs `job` once.
pub fn run_job(cfg: &Config, job: &Job, kind: RunKind, progress: Arc<Progress>) -> RunOutcome {
    let started = Instant::now();
    let failed = |error: String, started: Instant| RunOutcome {
        result: RunResult::Failed,
        error: Some(error),
        snapshot: None,
        summary: None,
        duration: started.elapsed(),
        retention: None,
    };
    let j = &job.config;
    if let Some(n) = j.nice {
        // This thread runs only this job: its priority (Linux keeps one per thread) passes to
        // the backup's worker threads and to the hooks' processes.
        if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), n) {
            tracing::warn!(job = %job.name, nice = n, error = %e, "cannot set the job's priority");
        }
    }
    if let Some(p) = job.ionice {
        // The I/O priority is per thread too (pid 0: the calling thread), and passes to threads
        // and processes started from it.
        let me = ioprio::Target::Process(ioprio::Pid::from_raw(0));
        if let Err(e) = ioprio::set_priority(me, p) {
            tracing::warn!(job = %job.name, error = %e, "cannot set the job's I/O priority");
        }
    }
    if let Some(h) = &j.before {
        if let Err(e) = run_hook(h, &job.name, "before", None) {
            if h.on_failure.as_deref() != Some("continue") {
                return failed(format!("{e}; no backup was made"), started);
            }
            tracing::warn!(job = %job.name, error = %e, "before hook failed; backing up anyway");
        }
    }
    let mut outcome = match backup_once(cfg, job, kind, progress) {
        Ok((done, repo)) => {
            let retention = j.retention.as_ref().map(|policy| {
                apply_retention(&repo, job, policy.get_ref()).map_err(|e| e.to_string())
            });
            let partial = !done.snapshot.summary.errors.is_empty();
            RunOutcome {
                result: if partial {
                    RunResult::Partial
                } else {
                    RunResult::Success
                },
                error: partial.then(|| {
                    format!(
                        "{} source entries could not be read (first: {}: {})",
                        done.snapshot.summary.errors.len(),
                        crate::display::escape(&done.snapshot.summary.errors[0].path),
                        crate::display::scrub(&done.snapshot.summary.errors[0].error)
                    )
                }),
                snapshot: Some(done.id.to_hex()),
                summary: Some(done.snapshot.summary),
                duration: started.elapsed(),
                retention,
            }
        }
        Err(e) => failed(e.to_string(), started),
    };
    if let Some(h) = &j.after {
        if let Err(e) = run_hook(h, &job.name, "after", Some(outcome.result)) {
            tracing::warn!(job = %job.name, error = %e, "after hook failed");
            if outcome.result != RunResult::Failed {
                outcome.error = Some(e);
                outcome.result = RunResult::Partial;
            }
        }
    }
    outcome.duration = started.elapsed();
    outcome
}

/// The host name a job's snapshots carry: its `host`, else the machine's name.
pub fn job_host(j: &crate::daemon::config::JobConfig) -> String {
    j.host
        .clone()
        .unwrap_or_else(crate::repo::snapshot::local_host)
}

fn backup_once(
    cfg: &Config,
    job: &Job,
    kind: RunKind,
    progress: Arc<Progress>,
) -> Result<(crate::ops::backup::BackupOutcome, Repository)> {
    let r = cfg
        .repositories
        .get(&job.repository)
        .ok_or_else(|| Error::Invalid(format!("no repository {:?}", job.repository)))?;
    let repo = open_repository(cfg, r)?;
    let j = &job.config;
    let mut excludes = j.excludes.clone();
    for f in &j.exclude_files {
        excludes.extend(Excludes::read_file(f)?);
    }
    let host = job_host(j);
    let opts = BackupOptions {
        paths: j.sources.get_ref().clone(),
        full: kind == RunKind::Full,
        excludes,
        one_file_system: j.one_file_system,
        tags: j.tags.clone(),
        host,
        threads: 0,
        uploads: r.upload_concurrency.unwrap_or(0),
        job: Some(job.name.clone()),
        ..BackupOptions::default()
    };
    let done = backup(&repo, &opts, progress)?;
    Ok((done, repo))
}

/// Applies the job's retention policy to the job's own snapshots (grouped by host and
/// paths); returns how many it removed. Refusals (a policy that would remove every snapshot
/// of a group) are errors: the daemon never forces.
fn apply_retention(
    repo: &Repository,
    job: &Job,
    policy: &crate::ops::retention::Policy,
) -> Result<usize> {
    let opts = crate::ops::forget::ForgetOptions {
        policy: policy.clone(),
        filter: crate::ops::forget::Filter {
            jobs: vec![job.name.clone()],
            ..Default::default()
        },
        lock: repo.lock_settings(),
        ..Default::default()
    };
    let report = crate::ops::forget::forget(repo, &opts, chrono::Utc::now())?;
    tracing::info!(job = %job.name, removed = report.removed.len(), "retention applied");
    Ok(report.removed.len())
}

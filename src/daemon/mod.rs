//! The daemon: runs scheduled backups from the config, keeps their state, answers on a control
//! socket, and tells people what they must know.
//!
//! One main thread owns the configuration and the state. Every second or so (sooner when a
//! control request or a finished run arrives) it evaluates each job's schedules over the
//! window since it last looked (the job's `cursor`, persisted): whatever fell due in that window
//! runs once — full when a full backup fell due, else incremental. So a daemon that was stopped
//! catches up once at start (if `catch_up`), a clock that jumps forward runs a job once rather
//! than replaying every missed time, and a clock that jumps back runs nothing twice (the cursor
//! never moves back). A job that falls due while it runs is coalesced. Runs happen on worker
//! threads, at most `max_concurrent_jobs` at once.
//!
//! SIGHUP reloads the config (a broken one is reported and the old one kept). SIGTERM/SIGINT
//! stop it: no new runs; running backups stop at their next chunk, indexing what they uploaded
//! so the next run reuses it; then the state is saved and the daemon exits.

pub mod control;
pub mod inhibit;
pub mod metrics;
pub mod notify;
pub mod runner;
pub mod schedule;
pub mod state;
pub mod systemd;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender};
use serde_json::json;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::progress::Progress;
use control::Request;
use runner::{RunKind, RunOutcome};
use state::{JobState, RunResult, State};

struct Running {
    kind: RunKind,
    started: DateTime<Utc>,
    progress: Arc<Progress>,
}

struct Queued {
    job: String,
    kind: RunKind,
    reason: &'static str,
    not_before: Instant,
}

type ControlMsg = (Request, Sender<serde_json::Value>);

/// The running daemon.
pub struct Daemon {
    config: Arc<Config>,
    state: State,
    started: DateTime<Utc>,
    running: HashMap<String, Running>,
    queue: VecDeque<Queued>,
    paused_all_until: Option<DateTime<Utc>>,
    done_tx: Sender<(String, RunKind, RunOutcome)>,
    done_rx: Receiver<(String, RunKind, RunOutcome)>,
    reload: Arc<AtomicBool>,
    /// What `/metrics` and `/health` serve.
    published: metrics::Shared,
    /// Where events go, per channel name.
    notifiers: Vec<(String, notify::Notifier)>,
}

fn far_future() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::days(365 * 100)
}

impl Daemon {
    /// Runs the daemon with the config at `path` until SIGTERM or SIGINT.
    pub fn run(path: &Path) -> Result<()> {
        let config =
            Config::load(path).map_err(|e| Error::Invalid(format!("invalid config:\n{e}")))?;
        let state = State::load(&config.daemon.state_dir)?;
        std::fs::create_dir_all(&config.daemon.cache_dir)
            .map_err(|e| Error::io("create cache directory", &config.daemon.cache_dir, e))?;
        let published: metrics::Shared = Default::default();
        // The metrics endpoint first: once the control socket exists, everything is up.
        if let Some(listen) = &config.daemon.metrics_listen {
            metrics::serve(listen, published.clone())?;
            tracing::info!(%listen, "serving /metrics and /health");
        }
        let listener = control::bind(&config.daemon.runtime_dir)?;
        let socket = control::socket_path(&config.daemon.runtime_dir);
        let reload = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
            .map_err(|e| Error::io("install SIGHUP handler", "signal", e))?;
        let (control_tx, control_rx) = crossbeam_channel::unbounded::<ControlMsg>();
        std::thread::Builder::new()
            .name("lifeboat-control".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let answer = match control::read_request(&stream) {
                        Ok(req) => {
                            let (tx, rx) = crossbeam_channel::bounded(1);
                            if control_tx.send((req, tx)).is_err() {
                                break;
                            }
                            rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(
                                |_| json!({"ok": false, "error": "the daemon did not answer"}),
                            )
                        }
                        Err(e) => json!({"ok": false, "error": e.to_string()}),
                    };
                    control::write_answer(&stream, &answer);
                }
            })
            .map_err(|e| Error::io("start control thread", "thread", e))?;
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut d = Daemon {
            config: Arc::new(config),
            state,
            started: Utc::now(),
            running: HashMap::new(),
            queue: VecDeque::new(),
            paused_all_until: None,
            done_tx,
            done_rx,
            reload,
            published,
            notifiers: Vec::new(),
        };
        d.start_notifiers();
        *d.published.write() = d.status_json(Utc::now());
        d.event(
            notify::EventKind::DaemonStarted,
            None,
            format!(
                "lifeboat daemon started on {} with {} jobs",
                notify::local_hostname(),
                d.config.jobs.len()
            ),
            json!({}),
        );
        tracing::info!(config = %path.display(), jobs = d.config.jobs.len(), "lifeboat daemon started");
        systemd::notify(&format!("READY=1\nSTATUS={}", d.status_line()));
        let result = d.main_loop(&control_rx);
        systemd::notify("STOPPING=1\nSTATUS=stopping: waiting for running backups to stop");
        d.event(
            notify::EventKind::DaemonStopping,
            None,
            format!(
                "lifeboat daemon on {} is stopping (server going offline or service stopped)",
                notify::local_hostname()
            ),
            json!({}),
        );
        d.stop();
        for (_, n) in &d.notifiers {
            n.flush(Duration::from_secs(10));
        }
        let _ = std::fs::remove_file(&socket);
        tracing::info!("lifeboat daemon stopped");
        result
    }

    fn main_loop(&mut self, control: &Receiver<ControlMsg>) -> Result<()> {
        let watchdog = systemd::watchdog_interval().map(|d| d / 2);
        let mut last_ping = Instant::now();
        let mut last_status = String::new();
        while !crate::interrupt::requested() {
            if self.reload.swap(false, Ordering::SeqCst) {
                self.reload_config();
            }
            self.tick(Utc::now());
            self.start_queued();
            crossbeam_channel::select! {
                recv(self.done_rx) -> msg => if let Ok((job, kind, outcome)) = msg {
                    self.finished(&job, kind, outcome);
                },
                recv(control) -> msg => if let Ok((req, answer)) = msg {
                    let a = self.handle(req);
                    let _ = answer.send(a);
                },
                default(Duration::from_millis(250)) => {}
            }
            if let Some(every) = watchdog {
                if last_ping.elapsed() >= every {
                    systemd::notify("WATCHDOG=1");
                    last_ping = Instant::now();
                }
            }
            *self.published.write() = self.status_json(Utc::now());
            let status = self.status_line();
            if status != last_status {
                systemd::notify(&format!("STATUS={status}"));
                last_status = status;
            }
        }
        Ok(())
    }

    /// Waits (bounded) for running backups to stop after SIGTERM, then saves the state.
    fn stop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(80);
        while !self.running.is_empty() && Instant::now() < deadline {
            if let Ok((job, kind, outcome)) = self.done_rx.recv_timeout(Duration::from_millis(200))
            {
                self.finished(&job, kind, outcome);
            }
        }
        if !self.running.is_empty() {
            tracing::warn!(jobs = ?self.running.keys().collect::<Vec<_>>(), "backups still running at exit");
        }
        self.save_state();
    }

    /// One notifier per channel, so a job can address some of them.
    fn start_notifiers(&mut self) {
        self.notifiers.clear();
        for ch in &self.config.notify {
            match notify::Notifier::start(vec![ch.clone()]) {
                Ok(n) => self.notifiers.push((ch.name().to_string(), n)),
                Err(e) => {
                    tracing::error!(channel = ch.name(), error = %e, "notification channel not started")
                }
            }
        }
    }

    /// Sends an event to the channels of `job` (every channel when the job names none).
    fn event(
        &self,
        kind: notify::EventKind,
        job: Option<&str>,
        summary: String,
        details: serde_json::Value,
    ) {
        let targets = job
            .and_then(|j| self.config.job(j))
            .and_then(|j| j.config.notify.as_ref())
            .map(|n| n.get_ref().clone());
        let event =
            notify::Event::new(kind, job.map(str::to_string), summary).with_details(details);
        for (name, n) in &self.notifiers {
            if targets.as_ref().is_none_or(|t| t.contains(name)) {
                n.send(event.clone());
            }
        }
    }

    fn save_state(&self) {
        if let Err(e) = self.state.save(&self.config.daemon.state_dir) {
            tracing::error!(error = %e, "cannot save the daemon state");
        }
    }

    fn reload_config(&mut self) {
        match Config::load(&self.config.path) {
            Ok(new) => {
                if new.daemon.runtime_dir != self.config.daemon.runtime_dir
                    || new.daemon.state_dir != self.config.daemon.state_dir
                {
                    tracing::warn!(
                        "state_dir and runtime_dir changes take effect at the next restart"
                    );
                }
                tracing::info!(jobs = new.jobs.len(), "config reloaded");
                self.config = Arc::new(new);
                self.start_notifiers();
            }
            Err(e) => {
                tracing::error!("the new config is invalid and was not loaded; the old one stays in force:\n{e}");
                systemd::notify("STATUS=config reload failed; running with the previous config");
            }
        }
    }

    fn status_line(&self) -> String {
        if self.running.is_empty() {
            format!("idle; {} jobs", self.config.jobs.len())
        } else {
            let mut names: Vec<&String> = self.running.keys().collect();
            names.sort();
            format!(
                "backing up: {}",
                names
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    fn is_paused(&self, job: &str, now: DateTime<Utc>) -> bool {
        self.paused_all_until.is_some_and(|t| t > now)
            || self
                .state
                .jobs
                .get(job)
                .and_then(|s| s.paused_until)
                .is_some_and(|t| t > now)
    }

    /// Evaluates every job's schedules over the window since it last looked.
    fn tick(&mut self, now: DateTime<Utc>) {
        let config = self.config.clone();
        let mut missed = Vec::new();
        for job in &config.jobs {
            let js = self.state.jobs.entry(job.name.clone()).or_default();
            let Some(cursor) = js.cursor else {
                // First sight of this job: start counting from now.
                js.cursor = Some(now);
                continue;
            };
            if now <= cursor {
                continue; // nothing new, or the clock went back: never run twice
            }
            let full = job
                .full
                .as_ref()
                .map(|s| s.between(cursor, now, 10_000))
                .unwrap_or_default();
            let inc = job
                .incremental
                .as_ref()
                .map(|s| s.between(cursor, now, 10_000))
                .unwrap_or_default();
            js.cursor = Some(now);
            let due = full.len() + inc.len();
            if due == 0 {
                continue;
            }
            let kind = if full.is_empty() {
                RunKind::Incremental
            } else {
                RunKind::Full
            };
            let latest = full.iter().chain(inc.iter()).max().copied().unwrap_or(now);
            let late = now - latest > chrono::Duration::seconds(30);
            let caught_up = cursor < self.started && late;
            if caught_up && !config.daemon.catch_up {
                tracing::warn!(job = %job.name, missed = due, "runs were missed while the daemon was not running; catch_up is off");
                continue;
            }
            if due > 1 || late {
                tracing::warn!(job = %job.name, missed = due, "scheduled runs fell due while the daemon could not run them (stopped, or the clock jumped); running once");
                missed.push((job.name.clone(), due, latest));
            }
            if self.is_paused(&job.name, now) {
                tracing::info!(job = %job.name, "scheduled run held: the job is paused");
                continue;
            }
            if self.running.contains_key(&job.name) || self.queue.iter().any(|q| q.job == job.name)
            {
                tracing::info!(job = %job.name, "scheduled run coalesced: the previous run is still going");
                if kind == RunKind::Full {
                    if let Some(q) = self.queue.iter_mut().find(|q| q.job == job.name) {
                        q.kind = RunKind::Full;
                    }
                }
                continue;
            }
            let delay = if job.random_delay.is_zero() || caught_up {
                Duration::ZERO
            } else {
                Duration::from_millis(
                    rand::random::<u64>() % (job.random_delay.as_millis() as u64).max(1),
                )
            };
            self.queue.push_back(Queued {
                job: job.name.clone(),
                kind,
                reason: if caught_up { "catch-up" } else { "schedule" },
                not_before: Instant::now() + delay,
            });
        }
        for (job, count, latest) in missed {
            self.event(
                notify::EventKind::MissedSchedule,
                Some(&job),
                format!("job {job}: {count} scheduled runs were missed (daemon stopped, machine off, or a clock jump; the latest was due {latest}); running once now"),
                json!({"missed": count, "latest_due": latest}),
            );
        }
        self.check_staleness(now);
    }

    fn check_staleness(&mut self, now: DateTime<Utc>) {
        let mut stale = Vec::new();
        for job in &self.config.jobs {
            let Some(bound) = job.stale_after else {
                continue;
            };
            let js = self.state.jobs.entry(job.name.clone()).or_default();
            let since = js.last_success.unwrap_or(self.started);
            let age = (now - since).to_std().unwrap_or_default();
            if age > bound && !js.stale_alerted {
                js.stale_alerted = true;
                tracing::error!(job = %job.name, last_success = ?js.last_success, bound = %humantime::format_duration(bound), "STALE: no successful backup within the bound");
                stale.push((job.name.clone(), js.last_success, bound));
            }
        }
        for (job, last, bound) in stale {
            let when = last.map_or("never".to_string(), |t| t.to_rfc3339());
            self.event(
                notify::EventKind::Stale,
                Some(&job),
                format!(
                    "job {job}: no successful backup for more than {} (last success: {when})",
                    humantime::format_duration(bound)
                ),
                json!({"last_success": last, "stale_after_secs": bound.as_secs()}),
            );
        }
    }

    fn start_queued(&mut self) {
        let now = Instant::now();
        let mut started_any = false;
        let mut i = 0;
        while i < self.queue.len() && self.running.len() < self.config.daemon.max_concurrent_jobs {
            if self.queue[i].not_before > now || self.running.contains_key(&self.queue[i].job) {
                i += 1;
                continue;
            }
            let Some(q) = self.queue.remove(i) else { break };
            let Some(job) = self.config.job(&q.job).cloned() else {
                continue;
            };
            started_any = true;
            let progress = Arc::new(Progress::default());
            let started = Utc::now();
            tracing::info!(job = %q.job, kind = q.kind.as_str(), reason = q.reason, "backup starting");
            let js = self.state.jobs.entry(q.job.clone()).or_default();
            js.last_start = Some(started);
            js.last_kind = Some(q.kind.as_str().into());
            self.running.insert(
                q.job.clone(),
                Running {
                    kind: q.kind,
                    started,
                    progress: progress.clone(),
                },
            );
            let config = self.config.clone();
            let done = self.done_tx.clone();
            let kind = q.kind;
            let spawned = std::thread::Builder::new()
                .name(format!("job-{}", q.job))
                .spawn(move || {
                    let outcome = runner::run_job(&config, &job, kind, progress);
                    let _ = done.send((job.name.clone(), kind, outcome));
                });
            if let Err(e) = spawned {
                tracing::error!(job = %q.job, error = %e, "cannot start the backup thread");
                self.running.remove(&q.job);
            }
        }
        if started_any {
            self.save_state();
        }
    }

    fn finished(&mut self, job: &str, kind: RunKind, o: RunOutcome) {
        self.running.remove(job);
        let js = self.state.jobs.entry(job.to_string()).or_default();
        js.last_end = Some(Utc::now());
        js.last_result = Some(o.result);
        js.last_error = o.error.clone();
        js.last_duration_secs = Some(o.duration.as_secs_f64());
        if let Some(s) = &o.summary {
            js.last_bytes_read = s.bytes_read;
            js.last_bytes_added = s.bytes_added;
            js.last_files = s.files_new + s.files_changed + s.files_unchanged;
            js.last_source_errors = s.errors.len() as u64;
        }
        let recovering = js.stale_alerted || js.consecutive_failures > 0;
        match o.result {
            RunResult::Success | RunResult::Partial => {
                js.successes += 1;
                js.consecutive_failures = 0;
                js.last_success = js.last_end;
                js.last_snapshot = o.snapshot.clone();
                js.stale_alerted = false;
                tracing::info!(job, kind = kind.as_str(), snapshot = ?o.snapshot, result = ?o.result, secs = o.duration.as_secs_f64(), "backup finished");
            }
            RunResult::Failed => {
                js.failures += 1;
                js.consecutive_failures += 1;
                tracing::error!(job, kind = kind.as_str(), error = ?o.error, "backup FAILED");
            }
        }
        self.save_state();
        let details = json!({
            "kind": kind.as_str(),
            "result": o.result,
            "error": o.error,
            "snapshot": o.snapshot,
            "duration_secs": o.duration.as_secs_f64(),
            "summary": o.summary,
        });
        match o.result {
            RunResult::Failed => self.event(
                notify::EventKind::BackupFailed,
                Some(job),
                format!(
                    "{} backup of job {job} failed: {}",
                    kind.as_str(),
                    o.error.as_deref().unwrap_or("unknown error")
                ),
                details,
            ),
            _ => {
                let summary = match o.result {
                    RunResult::Partial => format!(
                        "{} backup of job {job} finished with problems: {}",
                        kind.as_str(),
                        o.error.as_deref().unwrap_or("")
                    ),
                    _ => format!("{} backup of job {job} succeeded", kind.as_str()),
                };
                self.event(
                    notify::EventKind::BackupSucceeded,
                    Some(job),
                    summary,
                    details.clone(),
                );
                if recovering {
                    self.event(
                        notify::EventKind::Recovered,
                        Some(job),
                        format!("job {job} backs up again"),
                        details,
                    );
                }
            }
        }
    }

    fn handle(&mut self, req: Request) -> serde_json::Value {
        let now = Utc::now();
        match req {
            Request::Status => self.status_json(now),
            Request::Run { job, full } => {
                if self.config.job(&job).is_none() {
                    return json!({"ok": false, "error": format!("no job named {job:?} in the config")});
                }
                if self.running.contains_key(&job) || self.queue.iter().any(|q| q.job == job) {
                    return json!({"ok": false, "error": format!("job {job:?} is already running or queued")});
                }
                self.queue.push_front(Queued {
                    job: job.clone(),
                    kind: if full {
                        RunKind::Full
                    } else {
                        RunKind::Incremental
                    },
                    reason: "requested",
                    not_before: Instant::now(),
                });
                json!({"ok": true, "queued": job, "requested_at": now})
            }
            Request::Pause { job, for_secs } => {
                let until =
                    for_secs.map_or_else(far_future, |s| now + chrono::Duration::seconds(s as i64));
                match job {
                    Some(j) if self.config.job(&j).is_none() => {
                        json!({"ok": false, "error": format!("no job named {j:?}")})
                    }
                    Some(j) => {
                        self.state.jobs.entry(j.clone()).or_default().paused_until = Some(until);
                        self.save_state();
                        json!({"ok": true, "paused": j, "until": until})
                    }
                    None => {
                        self.paused_all_until = Some(until);
                        json!({"ok": true, "paused": "all", "until": until})
                    }
                }
            }
            Request::Resume { job } => {
                match job {
                    Some(j) => {
                        if let Some(s) = self.state.jobs.get_mut(&j) {
                            s.paused_until = None;
                        }
                    }
                    None => {
                        self.paused_all_until = None;
                        for s in self.state.jobs.values_mut() {
                            s.paused_until = None;
                        }
                    }
                }
                self.save_state();
                json!({"ok": true})
            }
        }
    }

    fn status_json(&self, now: DateTime<Utc>) -> serde_json::Value {
        let jobs: Vec<_> = self
            .config
            .jobs
            .iter()
            .map(|job| {
                let js = self.state.jobs.get(&job.name).cloned().unwrap_or_default();
                let running = self.running.get(&job.name).map(|r| {
                    json!({
                        "kind": r.kind.as_str(),
                        "started": r.started,
                        "files": Progress::get(&r.progress.files),
                        "bytes_read": Progress::get(&r.progress.bytes_read),
                        "bytes_added": Progress::get(&r.progress.bytes_written),
                    })
                });
                let next = |s: &Option<schedule::Schedule>| s.as_ref().and_then(|s| s.next_after(now));
                let stale = job.stale_after.is_some_and(|b| {
                    (now - js.last_success.unwrap_or(self.started)).to_std().unwrap_or_default() > b
                });
                json!({
                    "name": job.name,
                    "repository": job.repository,
                    "running": running,
                    "queued": self.queue.iter().any(|q| q.job == job.name),
                    "paused_until": js.paused_until.filter(|t| *t > now).or(self.paused_all_until.filter(|t| *t > now)),
                    "next_incremental": next(&job.incremental),
                    "next_full": next(&job.full),
                    "stale": stale,
                    "state": job_state_json(&js),
                })
            })
            .collect();
        json!({
            "ok": true,
            "daemon": {
                "pid": std::process::id(),
                "started": self.started,
                "config": self.config.path,
                "version": env!("CARGO_PKG_VERSION"),
            },
            "jobs": jobs,
        })
    }
}

fn job_state_json(js: &JobState) -> serde_json::Value {
    serde_json::to_value(js).unwrap_or_default()
}

/// Where the control socket of the daemon using `config` is. Works on a config that no longer
/// validates (a broken edit waiting for SIGHUP is exactly when an operator asks for status).
pub fn runtime_dir_of(config: &Path) -> Result<PathBuf> {
    match Config::load(config) {
        Ok(c) => Ok(c.daemon.runtime_dir),
        Err(e) => {
            let text = std::fs::read_to_string(config)
                .map_err(|io| Error::io("read config", config, io))?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|_| Error::Invalid(format!("invalid config:\n{e}")))?;
            let dir = table
                .get("daemon")
                .and_then(|d| d.get("runtime_dir"))
                .and_then(|v| v.as_str())
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::config::DaemonSection::default().runtime_dir);
            Ok(dir)
        }
    }
}

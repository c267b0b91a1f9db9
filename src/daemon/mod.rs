//! The daemon: runs scheduled backups from the config, keeps their state, answers on a control
//! socket, and tells people what they must know.
//!
//! One main thread owns the configuration and the state. Every second or so (sooner when a
//! control request or a finished run arrives) it evaluates each job's schedules over the
//! window since it last looked (the job's `cursor`, persisted): whatever fell due in that window
//! runs once — full when a full backup fell due, else incremental. So a daemon that was stopped
//! catches up once at start (if `catch_up`), a clock that jumps forward runs a job once rather
//! than replaying every missed time, and a clock that jumps back runs nothing twice (the cursor
//! never moves back) and says so once, with the time its runs resume. A job that falls due while it runs is coalesced. Runs happen on worker
//! threads, at most `max_concurrent_jobs` at once.
//!
//! SIGHUP reloads the config (a broken one is reported and the old one kept). SIGTERM/SIGINT
//! stop it: no new runs; running backups stop at their next chunk, indexing what they uploaded
//! so the next run reuses it; then the state is saved and the daemon exits.

pub mod child;
pub mod config;
pub mod control;
pub mod inhibit;
pub mod listen;
pub mod maintenance;
pub mod metrics;
pub mod notify;
pub mod runner;
pub mod schedule;
pub mod state;
pub mod systemd;
pub mod tasks;

mod runs;
mod status;
mod task_runs;
mod windows;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender};
use serde_json::json;

use crate::daemon::config::Config;
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
    /// The maintenance windows as last read, and when they were last looked at.
    windows: maintenance::Windows,
    windows_checked: Option<Instant>,
    /// The last error reading or updating the windows, already logged.
    windows_error: Option<String>,
    /// Scheduled prunes, checks and drills: waiting, running, finished.
    task_queue: VecDeque<tasks::Task>,
    tasks_running: HashMap<String, (tasks::Task, DateTime<Utc>)>,
    task_done_tx: Sender<(tasks::Task, tasks::TaskOutcome)>,
    task_done_rx: Receiver<(tasks::Task, tasks::TaskOutcome)>,
    /// This process's resident memory, measured about once a second (status, metrics).
    resident_bytes: Option<u64>,
    /// logind, when there is one: a "delay" inhibitor lock is held while anything runs.
    inhibitor: Option<inhibit::Inhibitor>,
    inhibit_lock: Option<inhibit::InhibitLock>,
    /// logind announced a shutdown: nothing new starts.
    shutting_down: bool,
    /// Jobs and tasks whose schedule is held because the clock went back behind their
    /// cursor, already reported (once per jump).
    clock_back: std::collections::HashSet<String>,
}

impl Daemon {
    /// Runs the daemon with the config at `path` until SIGTERM or SIGINT.
    pub fn run(path: &Path) -> Result<()> {
        no_core_dumps();
        // The environment repositories are opened with is read here, at start-up, once.
        runner::read_environment()?;
        let config =
            Config::load(path).map_err(|e| Error::Invalid(format!("invalid config:\n{e}")))?;
        // A damaged state file must not keep the daemon (and every backup) from starting.
        let (state, state_damaged) = State::load_or_set_aside(&config.daemon.state_dir)?;
        if let Some(said) = &state_damaged {
            tracing::error!("{said}");
        }
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
        // Each connection on a thread of its own with a deadline (see `listen`): a client
        // that sends nothing, or a byte every few seconds, never blocks the others.
        listen::serve(
            "lifeboat-control",
            std::iter::from_fn(move || Some(listener.accept().map(|(c, _)| c))),
            move |mut stream| {
                let answer = match control::read_request(&mut stream) {
                    Ok(req) => {
                        let (tx, rx) = crossbeam_channel::bounded(1);
                        if control_tx.send((req, tx)).is_err() {
                            json!({"ok": false, "error": "the daemon is stopping"})
                        } else {
                            rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(
                                |_| json!({"ok": false, "error": "the daemon did not answer"}),
                            )
                        }
                    }
                    Err(e) => json!({"ok": false, "error": e.to_string()}),
                };
                control::write_answer(&mut stream, &answer);
            },
            control::BUSY,
        )
        .map_err(|e| Error::io("start control thread", "thread", e))?;
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let (task_done_tx, task_done_rx) = crossbeam_channel::unbounded();
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
            windows: maintenance::Windows::default(),
            windows_checked: None,
            windows_error: None,
            task_queue: VecDeque::new(),
            clock_back: Default::default(),
            tasks_running: HashMap::new(),
            resident_bytes: crate::memory::resident_bytes(),
            task_done_tx,
            task_done_rx,
            inhibitor: inhibit::Inhibitor::connect(),
            inhibit_lock: None,
            shutting_down: false,
        };
        d.start_notifiers();
        if let Some(said) = state_damaged {
            d.event(
                notify::EventKind::StateDamaged,
                None,
                format!("lifeboat daemon on {}: {said}", notify::local_hostname()),
                json!({"file": state::path(&d.config.daemon.state_dir)}),
            );
        }
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
        let now = Utc::now();
        let window = d
            .windows
            .windows
            .iter()
            .filter(|w| {
                w.phase(now) == maintenance::Phase::Active
                    || (w.phase(now) == maintenance::Phase::Upcoming
                        && w.start - now < chrono::TimeDelta::hours(1))
            })
            .min_by_key(|w| w.start);
        let (why, details) = match window {
            Some(w) => (
                format!("planned maintenance {}", w.describe()),
                json!({"maintenance": w.to_json(now)}),
            ),
            None => (
                "server going offline or service stopped".to_string(),
                json!({}),
            ),
        };
        d.event(
            notify::EventKind::DaemonStopping,
            None,
            format!(
                "lifeboat daemon on {} is stopping ({why})",
                notify::local_hostname()
            ),
            details,
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
        let mut last_measured = Instant::now();
        while !crate::interrupt::requested() {
            if self.reload.swap(false, Ordering::SeqCst) {
                self.reload_config();
            }
            if self
                .windows_checked
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                self.windows_checked = Some(Instant::now());
                self.maintenance(Utc::now());
            }
            self.tick(Utc::now());
            self.watch_shutdown();
            if !self.shutting_down {
                self.start_queued();
                self.start_tasks();
            }
            self.hold_inhibitor();
            crossbeam_channel::select! {
                recv(self.done_rx) -> msg => if let Ok((job, kind, outcome)) = msg {
                    self.finished(&job, kind, outcome);
                    self.release_memory_if_idle();
                },
                recv(self.task_done_rx) -> msg => if let Ok((task, outcome)) = msg {
                    self.task_finished(task, outcome);
                    self.release_memory_if_idle();
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
            if last_measured.elapsed() >= Duration::from_secs(1) {
                self.resident_bytes = crate::memory::resident_bytes();
                last_measured = Instant::now();
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

    /// Once no run and no task is left, gives the memory they freed back to the system:
    /// otherwise the allocator keeps it and an idle daemon stays the size of its biggest task.
    fn release_memory_if_idle(&mut self) {
        if !(self.running.is_empty() && self.tasks_running.is_empty()) {
            return;
        }
        let before = crate::memory::resident_bytes();
        let started = Instant::now();
        crate::memory::release_free();
        let took = started.elapsed();
        self.resident_bytes = crate::memory::resident_bytes();
        if let (Some(b), Some(a)) = (before, self.resident_bytes) {
            tracing::debug!(
                released_mib = b.saturating_sub(a) >> 20,
                resident_mib = a >> 20,
                secs = took.as_secs_f64(),
                "idle: freed memory returned to the system"
            );
        }
    }

    /// Waits (bounded) for running backups to stop after SIGTERM, then saves the state.
    fn stop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(80);
        while !(self.running.is_empty() && self.tasks_running.is_empty())
            && Instant::now() < deadline
        {
            if let Ok((job, kind, outcome)) = self.done_rx.recv_timeout(Duration::from_millis(100))
            {
                self.finished(&job, kind, outcome);
            }
            if let Ok((task, outcome)) = self.task_done_rx.try_recv() {
                self.task_finished(task, outcome);
            }
        }
        if !self.running.is_empty() {
            tracing::warn!(jobs = ?self.running.keys().collect::<Vec<_>>(), "backups still running at exit");
        }
        self.inhibit_lock = None;
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

    /// Notices logind's shutdown announcement (and its cancellation).
    fn watch_shutdown(&mut self) {
        let pending = self
            .inhibitor
            .as_ref()
            .is_some_and(inhibit::Inhibitor::shutdown_pending);
        if pending != self.shutting_down {
            self.shutting_down = pending;
            if pending {
                tracing::warn!(
                    running = self.running.len() + self.tasks_running.len(),
                    "the system is shutting down: no new runs start; running ones go on while the inhibitor lock delays the shutdown (logind's InhibitDelayMaxSec bounds it)"
                );
            } else {
                tracing::info!("the shutdown was cancelled; runs start again");
            }
        }
    }

    /// Holds the logind delay lock exactly while a backup or task runs.
    fn hold_inhibitor(&mut self) {
        let busy = !(self.running.is_empty() && self.tasks_running.is_empty());
        match (&self.inhibitor, busy, self.inhibit_lock.is_some()) {
            (Some(inhibitor), true, false) => {
                let mut what: Vec<String> = self
                    .running
                    .keys()
                    .map(|j| format!("backup of {j}"))
                    .collect();
                what.extend(self.tasks_running.keys().cloned());
                what.sort();
                match inhibitor.acquire(&format!("lifeboat: {}", what.join(", "))) {
                    Ok(lock) => self.inhibit_lock = Some(lock),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot delay shutdowns while backing up; going on without");
                        self.inhibitor = None;
                    }
                }
            }
            (_, false, true) => self.inhibit_lock = None,
            _ => {}
        }
    }
}

/// The daemon holds repository passwords and master keys: a crash must not write them into a
/// core file. Not dumpable (`PR_SET_DUMPABLE` 0, which also keeps other users from reading its
/// `/proc` files and from attaching a debugger) and a core size limit of 0, which its hooks
/// inherit (as they do the unit's `LimitCORE=0`). Failures are logged, not fatal.
fn no_core_dumps() {
    use rustix::process::{set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};
    if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        tracing::warn!(error = %e, "cannot mark the daemon not dumpable");
    }
    let zero = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = setrlimit(Resource::Core, zero) {
        tracing::warn!(error = %e, "cannot set the daemon's core size limit to 0");
    }
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
                .unwrap_or_else(|| crate::daemon::config::DaemonSection::default().runtime_dir);
            Ok(dir)
        }
    }
}

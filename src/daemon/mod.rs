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

    fn status_line(&self) -> String {
        if let Some(w) = self.windows.active(Utc::now()) {
            if self.running.is_empty() {
                return format!(
                    "maintenance until {}: scheduled backups held",
                    maintenance::local(w.effective_end())
                );
            }
        }
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

    /// Whether the clock went back behind `cursor` (by more than the slack of a tick) for the
    /// schedule `key`, newly: a held schedule is reported once per jump.
    fn note_clock_back(&mut self, key: &str, cursor: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        cursor - now > chrono::Duration::seconds(2) && self.clock_back.insert(key.to_string())
    }

    /// Evaluates every job's schedules over the window since it last looked.
    fn tick(&mut self, now: DateTime<Utc>) {
        let config = self.config.clone();
        let mut missed = Vec::new();
        let mut went_back = Vec::new();
        for job in &config.jobs {
            let js = self.state.jobs.entry(job.name.clone()).or_default();
            let Some(cursor) = js.cursor else {
                // First sight of this job: start counting from now.
                js.cursor = Some(now);
                continue;
            };
            if now <= cursor {
                // Nothing new; or the clock went back: never run twice, and say so.
                if self.note_clock_back(&job.name, cursor, now) {
                    went_back.push((job.name.clone(), cursor));
                }
                continue;
            }
            self.clock_back.remove(&job.name);
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
            if let Some(window) = self.windows.active(now).map(|w| w.id) {
                tracing::info!(job = %job.name, window, "scheduled run held: maintenance window in force; it runs once when the window ends");
                self.hold_for_maintenance(&job.name, kind == RunKind::Full, now);
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
        self.tick_tasks(now, &config);
        for (job, held_until) in went_back {
            let back = humantime::format_duration(
                (held_until - now)
                    .to_std()
                    .map(|d| Duration::from_secs(d.as_secs()))
                    .unwrap_or_default(),
            );
            tracing::warn!(job = %job, %back, held_until = %held_until, "the clock went back: runs scheduled until then already ran by the clock as it was and are not run again; the schedule resumes after that time");
            self.event(
                notify::EventKind::MissedSchedule,
                Some(&job),
                format!("job {job}: the clock went back by {back}: runs scheduled until {held_until} already ran by the clock as it was and are not run again; the schedule resumes after that time (if the clock was wrong before, check that backups ran)"),
                json!({"clock_went_back_secs": (held_until - now).num_seconds(), "held_until": held_until}),
            );
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

    /// Evaluates the schedules of prunes, checks and drills, as [`Self::tick`] does for jobs.
    fn tick_tasks(&mut self, now: DateTime<Utc>, config: &Config) {
        let mut scheduled: Vec<(tasks::Task, &schedule::Schedule)> = Vec::new();
        for (repo, t) in &config.repository_tasks {
            if let Some(s) = &t.prune {
                scheduled.push((
                    tasks::Task::Prune {
                        repository: repo.clone(),
                    },
                    s,
                ));
            }
            if let Some(s) = &t.check {
                scheduled.push((
                    tasks::Task::Check {
                        repository: repo.clone(),
                    },
                    s,
                ));
            }
        }
        for job in &config.jobs {
            if let Some(s) = &job.drill {
                scheduled.push((
                    tasks::Task::Drill {
                        job: job.name.clone(),
                    },
                    s,
                ));
            }
        }
        for (task, sched) in scheduled {
            let key = task.key();
            let ts = self.state.tasks.entry(key.clone()).or_default();
            let Some(cursor) = ts.cursor else {
                ts.cursor = Some(now);
                continue;
            };
            if now <= cursor {
                if self.note_clock_back(&key, cursor, now) {
                    tracing::warn!(task = %key, held_until = %cursor, "the clock went back: runs of this task scheduled until then already ran and are not run again; its schedule resumes after that time");
                }
                continue;
            }
            self.clock_back.remove(&key);
            let due = sched.between(cursor, now, 10_000);
            ts.cursor = Some(now);
            let Some(latest) = due.iter().max().copied() else {
                continue;
            };
            let late = now - latest > chrono::Duration::seconds(30);
            if cursor < self.started && late && !config.daemon.catch_up {
                continue;
            }
            if self.paused_all_until.is_some_and(|t| t > now) {
                tracing::info!(task = %key, "scheduled task held: the daemon is paused");
                continue;
            }
            if self.windows.active(now).is_some() {
                tracing::info!(task = %key, "scheduled task skipped: maintenance window in force");
                continue;
            }
            if self.tasks_running.contains_key(&key)
                || self.task_queue.iter().any(|t| t.key() == key)
            {
                tracing::info!(task = %key, "scheduled task coalesced: the previous run is still going");
                continue;
            }
            self.task_queue.push_back(task);
        }
    }

    /// Starts waiting tasks while there is room; a prune waits until no backup of its
    /// repository runs.
    fn start_tasks(&mut self) {
        let mut i = 0;
        while i < self.task_queue.len()
            && self.running.len() + self.tasks_running.len()
                < self.config.daemon.max_concurrent_jobs
        {
            let task = self.task_queue[i].clone();
            let repo = task.repository(&self.config).map(str::to_string);
            let busy = task.exclusive()
                && self.running.keys().any(|j| {
                    self.config.job(j).map(|j| Some(&j.repository)) == Some(repo.as_ref())
                });
            let same_repo_task = self.tasks_running.values().any(|(t, _)| {
                (t.exclusive() || task.exclusive())
                    && t.repository(&self.config).map(str::to_string) == repo
            });
            if busy || same_repo_task {
                i += 1;
                continue;
            }
            self.task_queue.remove(i);
            let key = task.key();
            let now = Utc::now();
            let ts = self.state.tasks.entry(key.clone()).or_default();
            ts.last_start = Some(now);
            let run_number = ts.runs;
            tracing::info!(task = %key, "task starting");
            self.tasks_running.insert(key.clone(), (task.clone(), now));
            let config = self.config.clone();
            let done = self.task_done_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("task-{key}"))
                .spawn(move || {
                    let outcome = tasks::run_task(&config, &task, run_number);
                    let _ = done.send((task, outcome));
                });
            if let Err(e) = spawned {
                tracing::error!(task = %key, error = %e, "cannot start the task thread");
                self.tasks_running.remove(&key);
            }
            self.save_state();
        }
    }

    fn task_finished(&mut self, task: tasks::Task, o: tasks::TaskOutcome) {
        let key = task.key();
        self.tasks_running.remove(&key);
        let ts = self.state.tasks.entry(key.clone()).or_default();
        let now = Utc::now();
        ts.last_end = Some(now);
        ts.last_ok = Some(o.ok);
        ts.last_error = o.error.clone();
        ts.last_duration_secs = Some(o.duration.as_secs_f64());
        ts.last_report = (!o.report.is_null()).then(|| o.report.clone());
        ts.runs += 1;
        if o.ok {
            ts.last_success = Some(now);
        } else {
            ts.failures += 1;
        }
        self.save_state();
        let details = json!({"task": key, "ok": o.ok, "error": o.error, "report": o.report, "duration_secs": o.duration.as_secs_f64()});
        let error = o.error.as_deref().unwrap_or("unknown error");
        let host = notify::local_hostname();
        match (&task, o.ok) {
            (tasks::Task::Prune { .. }, true) => {
                tracing::info!(task = %key, freed = o.report["bytes_freed"].as_u64(), "prune finished")
            }
            (tasks::Task::Prune { repository }, false) => {
                tracing::error!(task = %key, error, "prune FAILED");
                self.event(
                    notify::EventKind::PruneFailed,
                    None,
                    format!("prune of repository {repository} on {host} failed: {error}"),
                    details,
                );
            }
            (tasks::Task::Check { .. }, true) => tracing::info!(task = %key, "check passed"),
            (tasks::Task::Check { repository }, false) => {
                tracing::error!(task = %key, error, "check FAILED");
                self.event(
                    notify::EventKind::CheckFailed,
                    None,
                    format!("check of repository {repository} on {host} failed: {error}"),
                    details,
                );
            }
            (tasks::Task::Drill { job }, true) => {
                let r = &o.report;
                tracing::info!(task = %key, estimated_full_restore_secs = r["estimated_full_restore_secs"].as_f64(), "restore drill passed");
                self.event(
                    notify::EventKind::DrillPassed,
                    Some(job),
                    format!(
                        "restore drill of job {job} on {host} passed: {}",
                        drill_summary(r)
                    ),
                    details,
                );
            }
            (tasks::Task::Drill { job }, false) => {
                tracing::error!(task = %key, error, "restore drill FAILED");
                self.event(
                    notify::EventKind::DrillFailed,
                    Some(job),
                    format!("restore drill of job {job} on {host} FAILED: {error}"),
                    details,
                );
            }
        }
    }

    /// Changes the maintenance windows under their lock, keeping the daemon's copy current.
    fn update_windows<R>(
        &mut self,
        now: DateTime<Utc>,
        f: impl FnOnce(&mut maintenance::Windows) -> R,
    ) -> Option<R> {
        let mut copy = None;
        let dir = self.config.daemon.state_dir.clone();
        let r = maintenance::update_setting_aside(&dir, now, |w| {
            let r = f(w);
            copy = Some(w.clone());
            Ok(r)
        });
        match r {
            Ok((r, damaged)) => {
                if let Some(c) = copy {
                    self.windows = c;
                }
                if self.windows_error.take().is_some() {
                    tracing::info!("the maintenance windows can be read and updated again");
                }
                if let Some(said) = damaged {
                    tracing::error!("{said}");
                    self.event(
                        notify::EventKind::StateDamaged,
                        None,
                        format!("lifeboat daemon on {}: {said}", notify::local_hostname()),
                        json!({"file": maintenance::path(&dir)}),
                    );
                }
                Some(r)
            }
            Err(e) => {
                // Looked at every second: said once, until it changes.
                let text = e.to_string();
                if self.windows_error.as_deref() != Some(text.as_str()) {
                    tracing::error!(error = %e, "cannot read or update the maintenance windows (said once until it changes)");
                    self.windows_error = Some(text);
                }
                None
            }
        }
    }

    /// Acts on the maintenance windows: announcements, final backups, start and end.
    fn maintenance(&mut self, now: DateTime<Utc>) {
        let settings = self.config.maintenance.clone();
        let Some(actions) = self.update_windows(now, |w| maintenance::due(w, now, &settings))
        else {
            return;
        };
        let host = notify::local_hostname();
        for action in actions {
            let id = match &action {
                maintenance::Action::Announce { id, .. }
                | maintenance::Action::FinalBackups { id }
                | maintenance::Action::Started { id }
                | maintenance::Action::Ended { id, .. }
                | maintenance::Action::Cancelled { id } => *id,
            };
            let Some(w) = self.windows.windows.iter().find(|w| w.id == id).cloned() else {
                continue;
            };
            let mut details = json!({"maintenance": w.to_json(now)});
            let summary = match action {
                maintenance::Action::Announce { in_secs, .. } => {
                    details["phase"] = json!("announced");
                    let until = humantime::format_duration(Duration::from_secs(
                        (in_secs.max(0) as u64 / 60) * 60,
                    ));
                    format!("planned maintenance of {host} in {until}: {}", w.describe())
                }
                maintenance::Action::FinalBackups { .. } => {
                    let jobs: Vec<String> = self
                        .config
                        .jobs
                        .iter()
                        .filter(|j| j.config.on_shutdown)
                        .map(|j| j.name.clone())
                        .collect();
                    for job in &jobs {
                        self.enqueue(job, RunKind::Incremental, "final backup before maintenance");
                    }
                    tracing::info!(window = id, jobs = ?jobs, "final backups before the maintenance window queued");
                    continue;
                }
                maintenance::Action::Started { .. } => {
                    details["phase"] = json!("started");
                    format!(
                        "maintenance of {host} has started: {}; scheduled backups are held until it ends",
                        w.describe()
                    )
                }
                maintenance::Action::Ended { held, .. } => {
                    details["phase"] = json!("ended");
                    for (job, kind) in &held {
                        let kind = if kind == "full" {
                            RunKind::Full
                        } else {
                            RunKind::Incremental
                        };
                        self.enqueue(job, kind, "held by maintenance");
                    }
                    details["held_jobs"] = json!(held.keys().collect::<Vec<_>>());
                    if self.started > w.start {
                        details["back_online_since"] = json!(self.started);
                        format!(
                            "{host} is back online after maintenance {} (daemon up since {}); backups resume",
                            w.describe(),
                            maintenance::local(self.started)
                        )
                    } else {
                        format!(
                            "the maintenance window of {host} is over: {}; backups resume",
                            w.describe()
                        )
                    }
                }
                maintenance::Action::Cancelled { .. } => {
                    details["phase"] = json!("cancelled");
                    format!(
                        "planned maintenance of {host} is called off: {}",
                        w.describe()
                    )
                }
            };
            tracing::info!(window = id, "{summary}");
            self.event(notify::EventKind::Maintenance, None, summary, details);
        }
    }

    /// Records a scheduled run held by the maintenance window in force.
    fn hold_for_maintenance(&mut self, job: &str, full: bool, now: DateTime<Utc>) {
        let held = self.update_windows(now, |w| maintenance::hold(w, job, full, now));
        if held.is_none() {
            // The file could not be written: keep the hold in memory at least.
            maintenance::hold(&mut self.windows, job, full, now);
        }
    }

    /// Queues a run of `job` unless it runs or waits already (a full run upgrades a queued one).
    fn enqueue(&mut self, job: &str, kind: RunKind, reason: &'static str) {
        if self.config.job(job).is_none() {
            return;
        }
        if let Some(q) = self.queue.iter_mut().find(|q| q.job == job) {
            if kind == RunKind::Full {
                q.kind = RunKind::Full;
            }
            return;
        }
        if self.running.contains_key(job) {
            tracing::info!(job, reason, "run coalesced: the job is running");
            return;
        }
        self.queue.push_back(Queued {
            job: job.to_string(),
            kind,
            reason,
            not_before: Instant::now(),
        });
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
        while i < self.queue.len()
            && self.running.len() + self.tasks_running.len()
                < self.config.daemon.max_concurrent_jobs
        {
            let pruning = self.config.job(&self.queue[i].job).is_some_and(|j| {
                self.tasks_running
                    .contains_key(&format!("prune:{}", j.repository))
            });
            if self.queue[i].not_before > now
                || self.running.contains_key(&self.queue[i].job)
                || pruning
            {
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
                if o.result == RunResult::Partial {
                    tracing::warn!(job, kind = kind.as_str(), snapshot = ?o.snapshot, result = ?o.result, problems = o.error.as_deref().unwrap_or(""), secs = o.duration.as_secs_f64(), "backup finished with problems");
                } else {
                    tracing::info!(job, kind = kind.as_str(), snapshot = ?o.snapshot, result = ?o.result, secs = o.duration.as_secs_f64(), "backup finished");
                }
            }
            RunResult::Failed => {
                js.failures += 1;
                js.consecutive_failures += 1;
                tracing::error!(job, kind = kind.as_str(), error = ?o.error, "backup FAILED");
            }
        }
        self.save_state();
        match &o.retention {
            Some(Ok(n)) => tracing::info!(job, removed = n, "retention applied"),
            Some(Err(e)) => {
                tracing::error!(job, error = %e, "retention FAILED; no snapshot was removed");
                self.event(
                    notify::EventKind::RetentionFailed,
                    Some(job),
                    format!("retention of job {job} failed (no snapshot was removed): {e}"),
                    json!({"error": e}),
                );
            }
            None => {}
        }
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
                // A partial backup is its own kind: channels without an `events` list leave
                // successes out but must hear of this one (files are missing from the snapshot).
                let (event_kind, summary) = match o.result {
                    RunResult::Partial => (
                        notify::EventKind::BackupPartial,
                        format!(
                            "{} backup of job {job} finished with problems (its snapshot was written): {}",
                            kind.as_str(),
                            o.error.as_deref().unwrap_or("")
                        ),
                    ),
                    _ => (
                        notify::EventKind::BackupSucceeded,
                        format!("{} backup of job {job} succeeded", kind.as_str()),
                    ),
                };
                self.event(event_kind, Some(job), summary, details.clone());
                if recovering {
                    self.event(
                        notify::EventKind::Recovered,
                        Some(job),
                        format!("job {job} backs up again"),
                        details.clone(),
                    );
                }
                self.report_first_backup_after_maintenance(job, details);
            }
        }
    }

    /// Reports a job's first successful backup after a maintenance window.
    fn report_first_backup_after_maintenance(&mut self, job: &str, mut details: serde_json::Value) {
        if !self
            .windows
            .windows
            .iter()
            .any(|w| w.progress.end_announced.is_some())
        {
            return;
        }
        let now = Utc::now();
        let Some(Some(w)) =
            self.update_windows(now, |ws| maintenance::first_backup_after(ws, job, now))
        else {
            return;
        };
        details["phase"] = json!("first_backup");
        details["maintenance"] = w.to_json(now);
        let snapshot = details["snapshot"].as_str().unwrap_or("?").to_string();
        self.event(
            notify::EventKind::Maintenance,
            Some(job),
            format!(
                "first backup of job {job} on {} after maintenance {:?} succeeded (snapshot {snapshot})",
                notify::local_hostname(),
                w.reason
            ),
            details,
        );
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
                let until = control::pause_until(now, for_secs);
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
                "resident_bytes": self.resident_bytes,
            },
            "jobs": jobs,
            "tasks": self
                .state
                .tasks
                .iter()
                .map(|(key, ts)| json!({
                    "task": key,
                    "running": self.tasks_running.get(key).map(|(_, since)| since),
                    "queued": self.task_queue.iter().any(|t| &t.key() == key),
                    "state": ts,
                }))
                .collect::<Vec<_>>(),
            "maintenance": self
                .windows
                .windows
                .iter()
                .filter(|w| matches!(w.phase(now), maintenance::Phase::Upcoming | maintenance::Phase::Active))
                .map(|w| w.to_json(now))
                .collect::<Vec<_>>(),
        })
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

/// One line of drill figures for people.
fn drill_summary(r: &serde_json::Value) -> String {
    let mib = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0);
    format!(
        "restored {} of {} files ({:.1} of {:.1} MiB) in {:.1} s; estimated full restore {:.0} s",
        r["files_restored"],
        r["total_files"],
        mib(&r["bytes_restored"]),
        mib(&r["total_bytes"]),
        r["duration_secs"].as_f64().unwrap_or(0.0),
        r["estimated_full_restore_secs"].as_f64().unwrap_or(0.0)
    )
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
                .unwrap_or_else(|| crate::daemon::config::DaemonSection::default().runtime_dir);
            Ok(dir)
        }
    }
}

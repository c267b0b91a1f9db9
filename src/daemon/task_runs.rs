//! Scheduled prunes, checks and drills: their ticks, starting them, and what a finished one leaves.

use super::*;

impl Daemon {
    /// Evaluates the schedules of prunes, checks and drills, as [`Self::tick`] does for jobs.
    pub(super) fn tick_tasks(&mut self, now: DateTime<Utc>, config: &Config) {
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
    pub(super) fn start_tasks(&mut self) {
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

    pub(super) fn task_finished(&mut self, task: tasks::Task, o: tasks::TaskOutcome) {
        let key = task.key();
        self.tasks_running.remove(&key);
        let ts = self.state.tasks.entry(key.clone()).or_default();
        let now = Utc::now();
        ts.last_end = Some(now);
        ts.last_ok = Some(o.ok);
        ts.last_error = o.error.clone();
        ts.last_duration_secs = Some(o.duration.as_secs_f64());
        let report = o.report.to_json();
        ts.last_report = (!report.is_null()).then(|| report.clone());
        ts.runs += 1;
        if o.ok {
            ts.last_success = Some(now);
        } else {
            ts.failures += 1;
        }
        self.save_state();
        let details = json!({"task": key, "ok": o.ok, "error": o.error, "report": report, "duration_secs": o.duration.as_secs_f64()});
        let error = o.error.as_deref().unwrap_or("unknown error");
        let host = notify::local_hostname();
        match (&task, o.ok) {
            (tasks::Task::Prune { .. }, true) => {
                let freed = match &o.report {
                    tasks::TaskReport::Prune(r) => Some(r.bytes_freed),
                    _ => None,
                };
                tracing::info!(task = %key, freed, "prune finished")
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
                let summary = match &o.report {
                    tasks::TaskReport::Drill(r) => {
                        tracing::info!(task = %key, estimated_full_restore_secs = r.estimated_full_restore_secs, "restore drill passed");
                        drill_summary(r)
                    }
                    _ => "no figures".to_string(),
                };
                self.event(
                    notify::EventKind::DrillPassed,
                    Some(job),
                    format!("restore drill of job {job} on {host} passed: {summary}"),
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
}

/// One line of drill figures for people.
pub(super) fn drill_summary(r: &crate::ops::drill::DrillReport) -> String {
    let mib = |v: u64| v as f64 / (1024.0 * 1024.0);
    format!(
        "restored {} of {} files ({:.1} of {:.1} MiB) in {:.1} s; estimated full restore {:.0} s",
        r.files_restored,
        r.total_files,
        mib(r.bytes_restored),
        mib(r.total_bytes),
        r.duration_secs,
        r.estimated_full_restore_secs
    )
}

//! The jobs' runs: schedules looked at each tick, the queue, starting runs and what a finished run leaves (state, events, staleness).

use super::*;

impl Daemon {
    pub(super) fn is_paused(&self, job: &str, now: DateTime<Utc>) -> bool {
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
    pub(super) fn note_clock_back(
        &mut self,
        key: &str,
        cursor: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool {
        cursor - now > chrono::Duration::seconds(2) && self.clock_back.insert(key.to_string())
    }

    /// Evaluates every job's schedules over the window since it last looked.
    pub(super) fn tick(&mut self, now: DateTime<Utc>) {
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

    /// Queues a run of `job` unless it runs or waits already (a full run upgrades a queued one).
    pub(super) fn enqueue(&mut self, job: &str, kind: RunKind, reason: &'static str) {
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

    pub(super) fn check_staleness(&mut self, now: DateTime<Utc>) {
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

    pub(super) fn start_queued(&mut self) {
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

    pub(super) fn finished(&mut self, job: &str, kind: RunKind, o: RunOutcome) {
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
    pub(super) fn report_first_backup_after_maintenance(
        &mut self,
        job: &str,
        mut details: serde_json::Value,
    ) {
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
}

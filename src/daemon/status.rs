//! What the daemon says about itself: the control socket's answers, `status`, the status line.

use super::*;

impl Daemon {
    pub(super) fn status_line(&self) -> String {
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

    pub(super) fn handle(&mut self, req: Request) -> serde_json::Value {
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

    pub(super) fn status_json(&self, now: DateTime<Utc>) -> serde_json::Value {
        let jobs: Vec<_> = self
            .config
            .jobs
            .iter()
            .map(|job| {
                let js = self.state.jobs.get(&job.name).cloned().unwrap_or_default();
                let running = self.running.get(&job.name).map(|r| {
                    let elapsed = (now - r.started).to_std().unwrap_or_default().as_secs_f64();
                    let estimate = r.progress.estimate(elapsed);
                    json!({
                        "kind": r.kind.as_str(),
                        "started": r.started,
                        "files": Progress::get(&r.progress.files),
                        "entries": Progress::get(&r.progress.entries),
                        "bytes_read": Progress::get(&r.progress.bytes_read),
                        "bytes_added": Progress::get(&r.progress.bytes_written),
                        "percent": estimate.map(|e| e.fraction * 100.0),
                        "eta_secs": estimate.and_then(|e| e.eta_secs),
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

pub(super) fn job_state_json(js: &JobState) -> serde_json::Value {
    serde_json::to_value(js).unwrap_or_default()
}

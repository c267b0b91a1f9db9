//! Maintenance windows as the daemon follows them: reading and updating them, holding jobs during a window.

use super::*;

impl Daemon {
    /// Changes the maintenance windows under their lock, keeping the daemon's copy current.
    pub(super) fn update_windows<R>(
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
    pub(super) fn maintenance(&mut self, now: DateTime<Utc>) {
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
    pub(super) fn hold_for_maintenance(&mut self, job: &str, full: bool, now: DateTime<Utc>) {
        let held = self.update_windows(now, |w| maintenance::hold(w, job, full, now));
        if held.is_none() {
            // The file could not be written: keep the hold in memory at least.
            maintenance::hold(&mut self.windows, job, full, now);
        }
    }
}

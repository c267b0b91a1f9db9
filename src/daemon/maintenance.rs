//! Planned maintenance windows: recorded by `lifeboat maintenance add`, acted on by the daemon.
//!
//! A window is a start, an expected end, a reason and an optional impact. The daemon
//! - announces it through the notification channels at lead times before the start (by
//!   default a week before a window longer than a day, a day before a shorter one, and an hour
//!   before; one announcement when several lead times have already passed);
//! - queues a final incremental backup of every `on_shutdown` job a little before the start
//!   (`maintenance_final_backup`, default 15 minutes), so the last changes are safe;
//! - holds scheduled runs during the window, and runs each held job once when it ends;
//! - when the window is over, announces that the server is back (or that the window passed, if
//!   the daemon ran through it), then reports each job's first successful backup after it.
//!
//! The windows live in `maintenance.json` in the daemon's state directory, so they can be added
//! while the daemon is stopped and survive restarts. The CLI and the daemon both change the file
//! (the CLI adds and cancels windows, the daemon records what it has done), always under an
//! exclusive lock on `maintenance.lock`, reading the file afresh and replacing it atomically.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Windows that ended longer ago than this are dropped from the file.
const KEEP_ENDED: chrono::TimeDelta = chrono::TimeDelta::days(30);
/// A final backup is still queued this long after the start (a window added with
/// `--start now`); later, a daemon that was down at the start does not make one.
const FINAL_BACKUP_GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// First backups after a window are reported for this long after its end.
const REPORT_FIRST_BACKUP_FOR: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// One maintenance window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub id: u32,
    pub start: DateTime<Utc>,
    /// The expected end.
    pub end: DateTime<Utc>,
    pub reason: String,
    #[serde(default)]
    pub impact: Option<String>,
    pub created: DateTime<Utc>,
    /// `lifeboat maintenance cancel`: before the start, the window is off; during it, it ends.
    #[serde(default)]
    pub cancelled: Option<DateTime<Utc>>,
    /// What the daemon has done, so a restart repeats nothing.
    #[serde(default)]
    pub progress: Progress,
}

/// What the daemon has done about a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// Lead times (seconds before the start) already announced or passed.
    pub announced_leads: Vec<u64>,
    pub final_backup_queued: Option<DateTime<Utc>>,
    pub started_announced: bool,
    /// Jobs whose scheduled runs were held, and the kind they would have had ("full" wins).
    pub held: BTreeMap<String, String>,
    pub end_announced: Option<DateTime<Utc>>,
    pub cancel_announced: bool,
    /// Jobs whose first successful backup after the window was reported.
    pub first_backups: Vec<String>,
}

/// Where a window stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Upcoming,
    Active,
    Over,
    Cancelled,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Upcoming => "upcoming",
            Phase::Active => "active",
            Phase::Over => "over",
            Phase::Cancelled => "cancelled",
        }
    }
}

impl Window {
    /// Cancelled before it started: it never happens.
    pub fn called_off(&self) -> bool {
        self.cancelled.is_some_and(|c| c < self.start)
    }

    /// When it ends: the expected end, or earlier when it was cancelled while active.
    pub fn effective_end(&self) -> DateTime<Utc> {
        match self.cancelled {
            Some(c) if c >= self.start => c.min(self.end),
            _ => self.end,
        }
    }

    pub fn phase(&self, now: DateTime<Utc>) -> Phase {
        if self.called_off() {
            Phase::Cancelled
        } else if now < self.start {
            Phase::Upcoming
        } else if now < self.effective_end() {
            Phase::Active
        } else {
            Phase::Over
        }
    }

    /// The lead times at which the window is announced, longest first.
    pub fn leads(&self, configured: Option<&[Duration]>) -> Vec<Duration> {
        let mut leads = match configured {
            Some(c) => c.to_vec(),
            None if self.end - self.start > chrono::TimeDelta::days(1) => {
                vec![Duration::from_secs(7 * 86400), Duration::from_secs(3600)]
            }
            None => vec![Duration::from_secs(86400), Duration::from_secs(3600)],
        };
        leads.sort_unstable_by(|a, b| b.cmp(a));
        leads.dedup();
        leads
    }

    /// One line for people: reason, start, expected end, impact, in local time.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{:?} from {} to {}",
            self.reason,
            local(self.start),
            local(self.effective_end())
        );
        if let Some(i) = &self.impact {
            s.push_str(&format!("; impact: {i}"));
        }
        s
    }

    /// The window as JSON for events, `list --json` and status.
    pub fn to_json(&self, now: DateTime<Utc>) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "phase": self.phase(now),
            "start": self.start,
            "end": self.effective_end(),
            "planned_end": self.end,
            "reason": self.reason,
            "impact": self.impact,
            "created": self.created,
            "cancelled": self.cancelled,
        })
    }
}

/// A time in the machine's zone, to the minute, for messages.
pub fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// Every window, and the next id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Windows {
    pub next_id: u32,
    pub windows: Vec<Window>,
}

impl Windows {
    /// Adds a window; returns its id. Refuses a window that is already over or has no reason.
    pub fn add(
        &mut self,
        start: DateTime<Utc>,
        duration: Duration,
        reason: &str,
        impact: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<u32> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(Error::Invalid(
                "give a reason (--reason \"kernel upgrade\"): it is what the announcements say"
                    .into(),
            ));
        }
        if duration.is_zero() {
            return Err(Error::Invalid(
                "the duration must be longer than zero (like \"2h\")".into(),
            ));
        }
        let end = chrono::TimeDelta::from_std(duration)
            .ok()
            .and_then(|length| start.checked_add_signed(length))
            .ok_or_else(|| {
                Error::Invalid(format!(
                "this window ({} plus {}) ends too far in the future: check --start and --duration",
                local(start),
                humantime::format_duration(duration)
            ))
            })?;
        if end <= now {
            return Err(Error::Invalid(format!(
                "this window ({} to {}) is already over: check --start",
                local(start),
                local(end)
            )));
        }
        let id = self.next_id.max(1);
        self.next_id = id.checked_add(1).ok_or_else(|| {
            Error::Invalid(
                "no maintenance window id is left (next_id in maintenance.json is at its maximum): remove ended windows from the file and lower next_id".into(),
            )
        })?;
        self.windows.push(Window {
            id,
            start,
            end,
            reason: reason.to_string(),
            impact: impact
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            created: now,
            cancelled: None,
            progress: Progress::default(),
        });
        Ok(id)
    }

    /// Cancels a window that has not ended: before its start it is called off, during it, it
    /// ends now.
    pub fn cancel(&mut self, id: u32, now: DateTime<Utc>) -> Result<&Window> {
        let w = self
            .windows
            .iter_mut()
            .find(|w| w.id == id)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "no maintenance window {id} (see lifeboat maintenance list)"
                ))
            })?;
        match w.phase(now) {
            Phase::Over | Phase::Cancelled => Err(Error::Invalid(format!(
                "maintenance window {id} is already {}",
                w.phase(now).as_str()
            ))),
            _ => {
                w.cancelled = Some(now);
                Ok(w)
            }
        }
    }

    /// The window in force at `now`, if any (the one ending last when several overlap).
    pub fn active(&self, now: DateTime<Utc>) -> Option<&Window> {
        self.windows
            .iter()
            .filter(|w| w.phase(now) == Phase::Active)
            .max_by_key(|w| w.effective_end())
    }

    /// Drops windows that ended (or were called off) long ago.
    fn prune(&mut self, now: DateTime<Utc>) {
        self.windows.retain(|w| {
            let ended = match w.cancelled {
                Some(c) if w.called_off() => c,
                _ => w.effective_end(),
            };
            now - ended < KEEP_ENDED
        });
    }
}

/// Something the daemon must do about a window.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Announce the upcoming window (it starts in `in_secs`).
    Announce { id: u32, in_secs: i64 },
    /// Queue the final backups of the `on_shutdown` jobs.
    FinalBackups { id: u32 },
    /// The window started: scheduled runs are held.
    Started { id: u32 },
    /// The window is over: announce it, run the held jobs.
    Ended {
        id: u32,
        held: BTreeMap<String, String>,
    },
    /// An announced window was called off.
    Cancelled { id: u32 },
}

/// How the daemon acts on windows (from the `[daemon]` section).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settings {
    /// Announcement lead times; `None`: the default rule.
    pub announce: Option<Vec<Duration>>,
    /// How long before the start the final backups run.
    pub final_backup: Duration,
}

/// Decides what is due at `now`, recording it in the windows' progress.
pub fn due(windows: &mut Windows, now: DateTime<Utc>, settings: &Settings) -> Vec<Action> {
    let mut actions = Vec::new();
    for w in &mut windows.windows {
        let id = w.id;
        match w.phase(now) {
            Phase::Cancelled => {
                if !w.progress.announced_leads.is_empty() && !w.progress.cancel_announced {
                    w.progress.cancel_announced = true;
                    actions.push(Action::Cancelled { id });
                }
            }
            Phase::Upcoming => {
                let until = w.start - now;
                let passed: Vec<u64> = w
                    .leads(settings.announce.as_deref())
                    .into_iter()
                    .filter(|l| chrono::TimeDelta::from_std(*l).is_ok_and(|l| until <= l))
                    .map(|l| l.as_secs())
                    .filter(|l| !w.progress.announced_leads.contains(l))
                    .collect();
                if !passed.is_empty() {
                    w.progress.announced_leads.extend(passed);
                    actions.push(Action::Announce {
                        id,
                        in_secs: until.num_seconds(),
                    });
                }
                let lead = chrono::TimeDelta::from_std(settings.final_backup)
                    .unwrap_or(chrono::TimeDelta::zero());
                if until <= lead && w.progress.final_backup_queued.is_none() {
                    w.progress.final_backup_queued = Some(now);
                    actions.push(Action::FinalBackups { id });
                }
            }
            Phase::Active => {
                if w.progress.final_backup_queued.is_none() && now - w.start < FINAL_BACKUP_GRACE {
                    w.progress.final_backup_queued = Some(now);
                    actions.push(Action::FinalBackups { id });
                }
                if !w.progress.started_announced {
                    w.progress.started_announced = true;
                    actions.push(Action::Started { id });
                }
            }
            Phase::Over => {
                if w.progress.end_announced.is_none() {
                    w.progress.end_announced = Some(now);
                    actions.push(Action::Ended {
                        id,
                        held: std::mem::take(&mut w.progress.held),
                    });
                }
            }
        }
    }
    actions
}

/// Records that `job`'s scheduled run was held by the active window; false when none is active.
pub fn hold(windows: &mut Windows, job: &str, full: bool, now: DateTime<Utc>) -> bool {
    let Some(id) = windows.active(now).map(|w| w.id) else {
        return false;
    };
    if let Some(w) = windows.windows.iter_mut().find(|w| w.id == id) {
        let kind = w
            .progress
            .held
            .entry(job.to_string())
            .or_insert_with(|| "incremental".into());
        if full {
            *kind = "full".into();
        }
    }
    true
}

/// The window after which `job` made its first successful backup at `now`, if that is news:
/// the latest window that ended within a week, for which this job was not reported yet.
pub fn first_backup_after(windows: &mut Windows, job: &str, now: DateTime<Utc>) -> Option<Window> {
    let w = windows
        .windows
        .iter_mut()
        .filter(|w| !w.called_off() && w.progress.end_announced.is_some())
        .filter(|w| w.effective_end() <= now && now - w.effective_end() < REPORT_FIRST_BACKUP_FOR)
        .max_by_key(|w| w.effective_end())?;
    if w.progress.first_backups.iter().any(|j| j == job) {
        return None;
    }
    w.progress.first_backups.push(job.to_string());
    Some(w.clone())
}

/// The windows file in a state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("maintenance.json")
}

/// Reads the windows without a lock (a reader sees either the old or the new file).
pub fn load(state_dir: &Path) -> Result<Windows> {
    super::state::read_json(
        &path(state_dir),
        "maintenance windows file",
        "fix or remove it",
    )
}

/// Changes the windows under the lock: reads them afresh, applies `f`, and writes them back
/// atomically when they changed. Ended windows older than a month are dropped. A damaged file
/// is an error naming it.
pub fn update<R>(
    state_dir: &Path,
    now: DateTime<Utc>,
    f: impl FnOnce(&mut Windows) -> Result<R>,
) -> Result<R> {
    update_inner(state_dir, now, false, f).map(|(r, _)| r)
}

/// [`update`] for the daemon: a damaged file is moved aside (under the lock) and the windows
/// start empty; the message says so, for the log and a notification.
pub fn update_setting_aside<R>(
    state_dir: &Path,
    now: DateTime<Utc>,
    f: impl FnOnce(&mut Windows) -> Result<R>,
) -> Result<(R, Option<String>)> {
    update_inner(state_dir, now, true, f)
}

fn update_inner<R>(
    state_dir: &Path,
    now: DateTime<Utc>,
    set_aside: bool,
    f: impl FnOnce(&mut Windows) -> Result<R>,
) -> Result<(R, Option<String>)> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| Error::io("create state directory", state_dir, e))?;
    let lock_path = state_dir.join("maintenance.lock");
    let lock_file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io("open lock", &lock_path, e))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io("lock", &lock_path, e.into()))?;
    let (before, damaged) = if set_aside {
        super::state::read_json_or_set_aside(
            &path(state_dir),
            "maintenance windows file",
            "the daemon goes on without the windows it held (add them again with `lifeboat maintenance add`)",
        )?
    } else {
        (load(state_dir)?, None)
    };
    let mut windows = before.clone();
    let r = f(&mut windows)?;
    windows.prune(now);
    if windows != before {
        save(state_dir, &windows)?;
    }
    Ok((r, damaged))
}

fn save(state_dir: &Path, windows: &Windows) -> Result<()> {
    super::state::write_json(
        state_dir,
        "maintenance.json",
        windows,
        "write maintenance windows",
    )
}

/// Parses a start time: `now`, `+DURATION` (`+2h`), RFC 3339 (`2026-12-01T02:00:00Z`), or a
/// local date and time (`2026-12-01 02:00`, seconds optional, `T` or a space between).
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Some(rest) = s.strip_prefix('+').or_else(|| s.strip_prefix("in ")) {
        let d = crate::units::parse_duration(rest.trim()).map_err(Error::Invalid)?;
        return chrono::TimeDelta::from_std(d)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .ok_or_else(|| Error::Invalid(format!("{s:?} is too far away")));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
            return match Local.from_local_datetime(&naive) {
                chrono::LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
                // The hour repeated when clocks go back: the first of the two.
                chrono::LocalResult::Ambiguous(first, _) => Ok(first.with_timezone(&Utc)),
                chrono::LocalResult::None => Err(Error::Invalid(format!(
                    "{s} does not exist in the local time zone (clocks skip it); give another time or a UTC offset"
                ))),
            };
        }
    }
    Err(Error::Invalid(format!(
        "{s:?} is not a time: give \"now\", \"+2h\", \"2026-12-01 02:00\" (local time) or \"2026-12-01T02:00:00Z\""
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn h(n: u64) -> Duration {
        Duration::from_secs(n * 3600)
    }

    fn settings() -> Settings {
        Settings {
            announce: None,
            final_backup: Duration::from_secs(15 * 60),
        }
    }

    fn one(start: &str, length: Duration, now: DateTime<Utc>) -> Windows {
        let mut w = Windows::default();
        w.add(t(start), length, "kernel upgrade", Some("web down"), now)
            .expect("add");
        w
    }

    #[test]
    fn default_leads_depend_on_the_length() {
        let now = t("2026-12-01T00:00:00Z");
        let short = one("2026-12-10T02:00:00Z", h(2), now);
        assert_eq!(short.windows[0].leads(None), vec![h(24), h(1)]);
        let long = one("2026-12-10T02:00:00Z", h(48), now);
        assert_eq!(long.windows[0].leads(None), vec![h(168), h(1)]);
        assert_eq!(
            long.windows[0].leads(Some(&[h(1), h(72), h(1)])),
            vec![h(72), h(1)]
        );
    }

    /// Walks a window's life minute by minute and checks each action happens once, in order.
    #[test]
    fn a_window_is_announced_backed_up_held_and_ended_once_each() {
        let created = t("2026-12-01T00:00:00Z");
        let mut ws = one("2026-12-03T02:00:00Z", h(2), created);
        let mut log = Vec::new();
        let mut now = created;
        while now < t("2026-12-03T06:00:00Z") {
            if now > t("2026-12-03T02:30:00Z") && now < t("2026-12-03T03:00:00Z") {
                assert!(hold(
                    &mut ws,
                    "etc",
                    now.format("%M").to_string() == "45",
                    now
                ));
            }
            for a in due(&mut ws, now, &settings()) {
                log.push((now, a));
            }
            now += chrono::TimeDelta::minutes(1);
        }
        let when = |i: usize| log[i].0;
        assert_eq!(log.len(), 5, "{log:?}");
        assert!(matches!(log[0].1, Action::Announce { id: 1, .. }));
        assert_eq!(when(0), t("2026-12-02T02:00:00Z"), "a day before");
        assert_eq!(
            log[1].1,
            Action::Announce {
                id: 1,
                in_secs: 3600
            }
        );
        assert_eq!(log[2].1, Action::FinalBackups { id: 1 });
        assert_eq!(when(2), t("2026-12-03T01:45:00Z"));
        assert_eq!(log[3].1, Action::Started { id: 1 });
        assert_eq!(when(3), t("2026-12-03T02:00:00Z"));
        let mut held = BTreeMap::new();
        held.insert("etc".to_string(), "full".to_string());
        assert_eq!(log[4].1, Action::Ended { id: 1, held });
        assert_eq!(when(4), t("2026-12-03T04:00:00Z"));
        assert!(!hold(&mut ws, "etc", false, t("2026-12-03T04:00:00Z")));
    }

    #[test]
    fn a_window_added_late_is_announced_once_and_backed_up_at_once() {
        let now = t("2026-12-03T01:55:00Z");
        let mut ws = one("2026-12-03T02:00:00Z", h(1), now);
        let actions = due(&mut ws, now, &settings());
        assert_eq!(
            actions,
            vec![
                Action::Announce {
                    id: 1,
                    in_secs: 300
                },
                Action::FinalBackups { id: 1 }
            ]
        );
        assert!(due(&mut ws, now, &settings()).is_empty());
        // Started with --start now: a final backup, then the start.
        let mut ws = one("2026-12-03T02:00:00Z", h(1), now);
        let at = t("2026-12-03T02:00:00Z");
        assert_eq!(
            due(&mut ws, at, &settings()),
            vec![Action::FinalBackups { id: 1 }, Action::Started { id: 1 }]
        );
    }

    #[test]
    fn a_daemon_back_after_the_window_announces_the_end_but_makes_no_final_backup() {
        let created = t("2026-12-01T00:00:00Z");
        let mut ws = one("2026-12-03T02:00:00Z", h(2), created);
        assert_eq!(due(&mut ws, created, &settings()), vec![]);
        // Down from before the announcements until during the window.
        let back = t("2026-12-03T03:00:00Z");
        assert_eq!(
            due(&mut ws, back, &settings()),
            vec![Action::Started { id: 1 }]
        );
        let after = t("2026-12-03T04:00:01Z");
        assert_eq!(
            due(&mut ws, after, &settings()),
            vec![Action::Ended {
                id: 1,
                held: BTreeMap::new()
            }]
        );
        assert!(due(&mut ws, after, &settings()).is_empty());
    }

    #[test]
    fn cancelling_calls_off_or_ends_a_window() {
        let created = t("2026-12-01T00:00:00Z");
        let mut ws = one("2026-12-01T06:00:00Z", h(2), created);
        // Not announced yet: a silent cancellation.
        ws.cancel(1, created).expect("cancel");
        assert_eq!(ws.windows[0].phase(created), Phase::Cancelled);
        assert!(due(&mut ws, created, &settings()).is_empty());
        assert!(ws.cancel(1, created).is_err(), "twice");
        assert!(ws.cancel(9, created).is_err(), "unknown");
        // Announced, then called off: people hear about it.
        let mut ws = one("2026-12-01T06:00:00Z", h(2), created);
        assert_eq!(due(&mut ws, created, &settings()).len(), 1);
        ws.cancel(1, t("2026-12-01T01:00:00Z")).expect("cancel");
        assert_eq!(
            due(&mut ws, t("2026-12-01T01:00:01Z"), &settings()),
            vec![Action::Cancelled { id: 1 }]
        );
        // Cancelled while active: it ends now.
        let mut ws = one("2026-12-01T06:00:00Z", h(2), created);
        let during = t("2026-12-01T07:00:00Z");
        ws.cancel(1, during).expect("end early");
        assert_eq!(ws.windows[0].effective_end(), during);
        assert_eq!(ws.windows[0].phase(during), Phase::Over);
        assert!(ws.active(during).is_none());
    }

    #[test]
    fn bad_windows_are_refused() {
        let now = t("2026-12-01T00:00:00Z");
        let mut ws = Windows::default();
        assert!(ws.add(now, h(1), " ", None, now).is_err());
        assert!(ws.add(now, Duration::ZERO, "x", None, now).is_err());
        let err = ws
            .add(t("2026-11-30T00:00:00Z"), h(1), "x", None, now)
            .expect_err("past");
        assert!(err.to_string().contains("already over"), "{err}");
        assert!(ws.windows.is_empty());
    }

    #[test]
    fn first_backup_after_a_window_is_reported_once_per_job() {
        let created = t("2026-12-01T00:00:00Z");
        let mut ws = one("2026-12-01T06:00:00Z", h(2), created);
        assert!(first_backup_after(&mut ws, "etc", t("2026-12-01T09:00:00Z")).is_none());
        due(&mut ws, t("2026-12-01T08:00:00Z"), &settings());
        let w = first_backup_after(&mut ws, "etc", t("2026-12-01T09:00:00Z")).expect("first");
        assert_eq!(w.id, 1);
        assert!(first_backup_after(&mut ws, "etc", t("2026-12-01T10:00:00Z")).is_none());
        assert!(first_backup_after(&mut ws, "home", t("2026-12-01T10:00:00Z")).is_some());
        assert!(first_backup_after(&mut ws, "var", t("2026-12-09T10:00:00Z")).is_none());
    }

    #[test]
    fn the_file_is_shared_under_a_lock_and_old_windows_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = t("2026-12-01T00:00:00Z");
        let id = update(dir.path(), now, |w| {
            w.add(t("2026-12-02T00:00:00Z"), h(1), "disk swap", None, now)
        })
        .expect("add");
        assert_eq!(id, 1);
        let id2 = update(dir.path(), now, |w| {
            w.add(t("2026-12-05T00:00:00Z"), h(1), "move", None, now)
        })
        .expect("add");
        assert_eq!(id2, 2);
        assert_eq!(load(dir.path()).expect("load").windows.len(), 2);
        update(dir.path(), t("2027-01-04T00:00:00Z"), |_| Ok(())).expect("prune");
        let left = load(dir.path()).expect("load");
        assert_eq!(left.windows.iter().map(|w| w.id).collect::<Vec<_>>(), [2]);
        assert_eq!(left.next_id, 3, "ids are never reused");
        std::fs::write(path(dir.path()), b"{").expect("damage");
        let err = load(dir.path()).expect_err("damaged");
        assert!(err.to_string().contains("maintenance.json"), "{err}");
    }

    #[test]
    fn start_times() {
        let now = t("2026-12-01T00:00:00Z");
        assert_eq!(parse_time("now", now).expect("now"), now);
        assert_eq!(
            parse_time("+90m", now).expect("+"),
            t("2026-12-01T01:30:00Z")
        );
        assert_eq!(
            parse_time("2026-12-02T03:00:00+01:00", now).expect("rfc3339"),
            t("2026-12-02T02:00:00Z")
        );
        let local = parse_time("2026-12-02 03:00", now).expect("local");
        assert_eq!(
            local.with_timezone(&Local).format("%H:%M").to_string(),
            "03:00"
        );
        assert!(parse_time("tomorrow-ish", now).is_err());
        assert!(parse_time("+soon", now).is_err());
    }

    #[test]
    fn a_start_beyond_the_calendar_is_an_error_not_a_panic() {
        // `maintenance add --start +300000y` overflowed DateTime and panicked.
        let now = t("2026-12-01T00:00:00Z");
        let err = parse_time("+300000y", now)
            .expect_err("too far")
            .to_string();
        assert!(err.contains("too far"), "{err}");
        assert!(parse_time("in 18446744073709551615s", now).is_err());
    }

    #[test]
    fn a_window_ending_beyond_the_calendar_is_an_error_not_a_panic() {
        // A start near the end of the calendar plus the duration overflowed and panicked.
        let now = t("2026-12-01T00:00:00Z");
        let last = DateTime::<Utc>::MAX_UTC - chrono::TimeDelta::hours(1);
        let mut w = Windows::default();
        let err = w
            .add(last, h(2), "upgrade", None, now)
            .expect_err("too far")
            .to_string();
        assert!(err.contains("too far"), "{err}");
        assert!(w.windows.is_empty());
    }

    #[test]
    fn a_windows_file_whose_ids_ran_out_is_an_error_not_a_panic() {
        // A windows file with next_id = u32::MAX made `add` overflow the id counter.
        let now = t("2026-12-01T00:00:00Z");
        let mut w: Windows =
            serde_json::from_str(r#"{"next_id": 4294967295, "windows": []}"#).expect("parse");
        let err = w
            .add(t("2026-12-02T00:00:00Z"), h(1), "upgrade", None, now)
            .expect_err("no id left")
            .to_string();
        assert!(err.contains("maintenance.json"), "{err}");
        assert!(w.windows.is_empty());
    }
}

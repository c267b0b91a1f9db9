//! Events: what happened, and the event handed to every channel.

use super::*;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    BackupFailed,
    BackupSucceeded,
    /// A backup wrote its snapshot but finished with problems: source entries it could not
    /// read are missing from the snapshot, or its `after` hook failed. Someone has to look
    /// (channels without an `events` list receive it, as they receive failures).
    BackupPartial,
    MissedSchedule,
    Stale,
    Recovered,
    DaemonStarted,
    DaemonStopping,
    Maintenance,
    /// Retention (forget) after a backup failed or was refused.
    RetentionFailed,
    PruneFailed,
    /// A scheduled check found problems or could not run.
    CheckFailed,
    /// A restore drill failed: the backups may not restore.
    DrillFailed,
    /// A restore drill passed (with its figures).
    DrillPassed,
    /// A file of the daemon's state directory (state.json, maintenance.json) was damaged and
    /// moved aside; the daemon goes on without what it held.
    StateDamaged,
    Test,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 16] = [
        EventKind::BackupFailed,
        EventKind::BackupSucceeded,
        EventKind::BackupPartial,
        EventKind::MissedSchedule,
        EventKind::Stale,
        EventKind::Recovered,
        EventKind::DaemonStarted,
        EventKind::DaemonStopping,
        EventKind::Maintenance,
        EventKind::RetentionFailed,
        EventKind::PruneFailed,
        EventKind::CheckFailed,
        EventKind::DrillFailed,
        EventKind::DrillPassed,
        EventKind::StateDamaged,
        EventKind::Test,
    ];

    /// The name used in configuration, JSON and `LIFEBOAT_EVENT` (`backup_failed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BackupFailed => "backup_failed",
            EventKind::BackupSucceeded => "backup_succeeded",
            EventKind::BackupPartial => "backup_partial",
            EventKind::MissedSchedule => "missed_schedule",
            EventKind::Stale => "stale",
            EventKind::Recovered => "recovered",
            EventKind::DaemonStarted => "daemon_started",
            EventKind::DaemonStopping => "daemon_stopping",
            EventKind::Maintenance => "maintenance",
            EventKind::RetentionFailed => "retention_failed",
            EventKind::PruneFailed => "prune_failed",
            EventKind::CheckFailed => "check_failed",
            EventKind::DrillFailed => "drill_failed",
            EventKind::DrillPassed => "drill_passed",
            EventKind::StateDamaged => "state_damaged",
            EventKind::Test => "test",
        }
    }

    /// Whether the event reports something wrong: these go to a webhook's `url_failure` and get
    /// a high ntfy priority.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            EventKind::BackupFailed
                | EventKind::BackupPartial
                | EventKind::MissedSchedule
                | EventKind::Stale
                | EventKind::RetentionFailed
                | EventKind::PruneFailed
                | EventKind::CheckFailed
                | EventKind::DrillFailed
                | EventKind::StateDamaged
        )
    }

    /// A few words for humans (mail subjects, ntfy titles).
    pub fn title(self) -> &'static str {
        match self {
            EventKind::BackupFailed => "backup failed",
            EventKind::BackupSucceeded => "backup succeeded",
            EventKind::BackupPartial => "backup finished with PROBLEMS",
            EventKind::MissedSchedule => "missed schedule",
            EventKind::Stale => "backups are stale",
            EventKind::Recovered => "recovered",
            EventKind::DaemonStarted => "daemon started",
            EventKind::DaemonStopping => "daemon stopping",
            EventKind::Maintenance => "maintenance",
            EventKind::RetentionFailed => "retention failed",
            EventKind::PruneFailed => "prune failed",
            EventKind::CheckFailed => "repository check failed",
            EventKind::DrillFailed => "restore drill FAILED",
            EventKind::DrillPassed => "restore drill passed",
            EventKind::StateDamaged => "daemon state file damaged",
            EventKind::Test => "test notification",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub job: Option<String>,
    pub host: String,
    pub time: DateTime<Utc>,
    /// One line for humans: "backup of job etc failed: repository unreachable: ..."; control
    /// characters (a newline in a file name it quotes) are escaped ([`crate::display::scrub`]).
    pub summary: String,
    /// Details (error text, figures) as JSON; included in webhook bodies and emails.
    pub details: serde_json::Value,
}

impl Event {
    /// An event of this host, now, without details.
    pub fn new(kind: EventKind, job: Option<String>, summary: impl Into<String>) -> Self {
        Event {
            kind,
            job,
            host: local_hostname(),
            time: Utc::now(),
            summary: crate::display::scrub(&summary.into()).into_owned(),
            details: serde_json::Value::Null,
        }
    }

    /// The event with `details` set.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// The name of this machine (cached; "localhost" if it cannot be read).
pub fn local_hostname() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(crate::repo::snapshot::local_host).clone()
}

//! Notifications: tell people (and monitoring) what the daemon did.
//!
//! The daemon builds an [`Event`] for each thing worth telling (a failed backup, a missed
//! schedule, recovery, start and stop, ...) and hands it to [`Notifier::send`], which never
//! blocks: every configured channel has its own bounded queue and its own worker thread, so a
//! slow or unreachable mail server does not hold up a webhook, and nothing holds up the daemon.
//!
//! Channels ([`ChannelConfig`], `[[notify]]` tables of the daemon's configuration):
//! - `webhook`: POST the event as JSON, or a plain GET ping (healthchecks.io, Uptime Kuma),
//!   with a separate URL for failures if wanted;
//! - `ntfy`: a plain-text POST of the summary line with Title/Priority/Tags headers;
//! - `email`: a plain-text mail over SMTP (STARTTLS, implicit TLS or none);
//! - `command`: run a program (no shell) with the event as JSON on standard input.
//!
//! Delivery is retried with exponential backoff on network errors, timeouts, HTTP 5xx, 408 and
//! 429 and SMTP transient errors; never on other HTTP 4xx, permanent SMTP errors or a failing
//! command. Each channel is rate limited (30 events a minute by default); the excess is
//! coalesced into one "N more events suppressed" notice sent when the window allows it (or at
//! [`Notifier::flush`]).
//!
//! Secrets stay out of logs and error texts: URLs are shown as scheme and host only (query
//! tokens, ping UUIDs and ntfy topics are secrets), header values and the SMTP password never.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::storage::{GiveUp, RetryPolicy};
use chrono::{DateTime, Utc};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Events

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
    NAME.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    })
    .clone()
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// HTTP method of a webhook channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpMethod {
    /// POST the event as a JSON body.
    #[default]
    #[serde(alias = "POST")]
    Post,
    /// A plain GET without a body (a ping).
    #[serde(alias = "GET")]
    Get,
}

/// How an email channel secures its SMTP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which is required (default port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (default port 465).
    Tls,
    /// No encryption at all (default port 25): only for a relay on the same machine or network.
    None,
}

/// Where notifications go: one `[[notify]]` table of the daemon's configuration.
///
/// `events` lists the kinds a channel receives; without it a channel receives everything except
/// `backup_succeeded` (a `backup_partial`, a snapshot without some unreadable files, included). Test events ([`EventKind::Test`]) go to every channel whatever its list.
///
/// `Debug` shows URLs as scheme and host only and header names without values, so a
/// configuration can be logged without its secrets.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelConfig {
    /// POST a JSON body (the Event) to `url`; or, with `method = "get"`, a plain GET ping
    /// (healthchecks.io, Uptime Kuma push URLs). `url_failure` (optional) is used instead of
    /// `url` for failure-type events (healthchecks.io uses <url>/fail). Optional `headers`.
    Webhook {
        name: String,
        url: String,
        #[serde(default)]
        method: HttpMethod,
        #[serde(default)]
        url_failure: Option<String>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        events: Option<Vec<EventKind>>,
    },
    /// ntfy-style plain text POST: body is the summary line, with Title/Priority/Tags headers.
    /// (An access token can go in the URL as ntfy's `?auth=` parameter.)
    Ntfy {
        name: String,
        url: String,
        #[serde(default)]
        events: Option<Vec<EventKind>>,
    },
    /// Email over SMTP. `password_file` holds the password (a trailing newline is ignored); it
    /// is read at each delivery, so it can be rotated without a restart.
    Email {
        name: String,
        server: String,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        security: SmtpSecurity,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password_file: Option<PathBuf>,
        from: String,
        to: Vec<String>,
        #[serde(default)]
        events: Option<Vec<EventKind>>,
    },
    /// Run a command (argv, no shell) with the Event as JSON on stdin and LIFEBOAT_EVENT,
    /// LIFEBOAT_JOB, LIFEBOAT_SUMMARY (and LIFEBOAT_HOST) in the environment; bounded by a
    /// timeout (default 30 s), after which its whole process group is stopped. A command that
    /// fails is not run again. It starts from a clean environment (see [`super::child`]) plus
    /// `env`.
    Command {
        name: String,
        argv: Vec<String>,
        #[serde(default)]
        timeout_secs: Option<u64>,
        #[serde(default)]
        events: Option<Vec<EventKind>>,
        /// Variables added to its environment.
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
}

impl ChannelConfig {
    /// The channel's name (unique among the channels).
    pub fn name(&self) -> &str {
        match self {
            ChannelConfig::Webhook { name, .. }
            | ChannelConfig::Ntfy { name, .. }
            | ChannelConfig::Email { name, .. }
            | ChannelConfig::Command { name, .. } => name,
        }
    }

    /// The channel's type as written in the configuration (`webhook`, `ntfy`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelConfig::Webhook { .. } => "webhook",
            ChannelConfig::Ntfy { .. } => "ntfy",
            ChannelConfig::Email { .. } => "email",
            ChannelConfig::Command { .. } => "command",
        }
    }

    fn events(&self) -> Option<&[EventKind]> {
        match self {
            ChannelConfig::Webhook { events, .. }
            | ChannelConfig::Ntfy { events, .. }
            | ChannelConfig::Email { events, .. }
            | ChannelConfig::Command { events, .. } => events.as_deref(),
        }
    }

    /// Whether the channel receives events of this kind.
    pub fn wants(&self, kind: EventKind) -> bool {
        wants(self.events(), kind)
    }

    /// Checks the channel on its own: URLs parse, headers are valid, addresses parse, the
    /// password file is readable, argv is not empty, ... (Name uniqueness is checked by
    /// [`Notifier::start`].) Error texts never contain URLs or secrets.
    pub fn validate(&self) -> Result<(), NotifyError> {
        self.prepare().map(|_| ())
    }

    /// Validates and turns the configuration into what the worker uses.
    fn prepare(&self) -> Result<Sink, NotifyError> {
        let name = self.name();
        let invalid = |reason: String| NotifyError::InvalidChannel {
            channel: name.to_string(),
            reason,
        };
        if name.trim().is_empty() {
            return Err(invalid("the name is empty".into()));
        }
        match self {
            ChannelConfig::Webhook {
                url,
                method,
                url_failure,
                headers,
                ..
            } => {
                let url = parse_http_url(url).map_err(|e| invalid(format!("url: {e}")))?;
                let url_failure = url_failure
                    .as_deref()
                    .map(parse_http_url)
                    .transpose()
                    .map_err(|e| invalid(format!("url_failure: {e}")))?;
                let mut header_map = reqwest::header::HeaderMap::new();
                for (key, value) in headers {
                    let key = reqwest::header::HeaderName::from_bytes(key.as_bytes())
                        .map_err(|_| invalid(format!("headers: {key:?} is not a valid name")))?;
                    // The value may be a secret (Authorization): not in the message.
                    let mut value =
                        reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                            invalid(format!(
                                "headers: the value of {key} is not a valid header value"
                            ))
                        })?;
                    value.set_sensitive(true);
                    header_map.insert(key, value);
                }
                Ok(Sink::Webhook {
                    method: *method,
                    url,
                    url_failure,
                    headers: header_map,
                    client: http_client().map_err(invalid)?,
                })
            }
            ChannelConfig::Ntfy { url, .. } => {
                let url = parse_http_url(url).map_err(|e| invalid(format!("url: {e}")))?;
                Ok(Sink::Ntfy {
                    url,
                    client: http_client().map_err(invalid)?,
                })
            }
            ChannelConfig::Email {
                server,
                port,
                security,
                username,
                password_file,
                from,
                to,
                ..
            } => {
                if server.trim().is_empty() {
                    return Err(invalid("server is empty".into()));
                }
                if *port == Some(0) {
                    return Err(invalid("port 0 is not a port".into()));
                }
                let from: lettre::message::Mailbox = from
                    .parse()
                    .map_err(|e| invalid(format!("from {from:?} is not a mail address: {e}")))?;
                if to.is_empty() {
                    return Err(invalid("to lists no recipient".into()));
                }
                let to = to
                    .iter()
                    .map(|addr| {
                        addr.parse::<lettre::message::Mailbox>().map_err(|e| {
                            invalid(format!("to: {addr:?} is not a mail address: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                match (username, password_file) {
                    (Some(_), Some(path)) => {
                        read_password(path).map_err(invalid)?;
                    }
                    (None, None) => {}
                    (Some(_), None) => {
                        return Err(invalid("username is set but password_file is not".into()))
                    }
                    (None, Some(_)) => {
                        return Err(invalid("password_file is set but username is not".into()))
                    }
                }
                let sink = EmailSink {
                    server: server.clone(),
                    port: *port,
                    security: *security,
                    username: username.clone(),
                    password_file: password_file.clone(),
                    from,
                    to,
                };
                // Builds the TLS parameters once, so a bad server name shows now.
                sink.transport(None, Duration::from_secs(30))
                    .map_err(|e| invalid(format!("server {server:?}: {e}")))?;
                Ok(Sink::Email(Box::new(sink)))
            }
            ChannelConfig::Command {
                argv,
                timeout_secs,
                env,
                ..
            } => {
                for key in env.keys() {
                    super::child::check_env_name(key).map_err(invalid)?;
                }
                match argv.first() {
                    None => return Err(invalid("argv is empty".into())),
                    Some(program) if program.is_empty() => {
                        return Err(invalid("argv[0] (the program) is empty".into()))
                    }
                    Some(_) => {}
                }
                if *timeout_secs == Some(0) {
                    return Err(invalid("timeout_secs must be at least 1".into()));
                }
                Ok(Sink::Command {
                    argv: argv.clone(),
                    timeout: timeout_secs.map(Duration::from_secs),
                    env: env.clone(),
                })
            }
        }
    }
}

fn wants(events: Option<&[EventKind]>, kind: EventKind) -> bool {
    kind == EventKind::Test
        || match events {
            Some(list) => list.contains(&kind),
            None => kind != EventKind::BackupSucceeded,
        }
}

impl fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelConfig::Webhook {
                name,
                url,
                method,
                url_failure,
                headers,
                events,
            } => f
                .debug_struct("Webhook")
                .field("name", name)
                .field("url", &RedactedUrl(url))
                .field("method", method)
                .field("url_failure", &url_failure.as_deref().map(RedactedUrl))
                .field("headers", &headers.keys().collect::<Vec<_>>())
                .field("events", events)
                .finish(),
            ChannelConfig::Ntfy { name, url, events } => f
                .debug_struct("Ntfy")
                .field("name", name)
                .field("url", &RedactedUrl(url))
                .field("events", events)
                .finish(),
            ChannelConfig::Email {
                name,
                server,
                port,
                security,
                username,
                password_file,
                from,
                to,
                events,
            } => f
                .debug_struct("Email")
                .field("name", name)
                .field("server", server)
                .field("port", port)
                .field("security", security)
                .field("username", username)
                .field("password_file", password_file)
                .field("from", from)
                .field("to", to)
                .field("events", events)
                .finish(),
            ChannelConfig::Command {
                name,
                argv,
                timeout_secs,
                events,
                env,
            } => f
                .debug_struct("Command")
                .field("name", name)
                .field("argv", argv)
                .field("timeout_secs", timeout_secs)
                .field("events", events)
                // Names only: values may be tokens.
                .field("env", &env.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// A URL shown as scheme and host only.
struct RedactedUrl<'a>(&'a str);

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match reqwest::Url::parse(self.0) {
            Ok(url) => write!(f, "\"{}\"", redact_url(&url)),
            Err(_) => f.write_str("\"<not a URL>\""),
        }
    }
}

/// `scheme://host[:port]/…`: what of a URL can be logged (paths and queries hold tokens).
fn redact_url(url: &reqwest::Url) -> String {
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    if url.path() != "/" || url.query().is_some() {
        out.push_str("/…");
    }
    out
}

fn parse_http_url(text: &str) -> Result<reqwest::Url, String> {
    // The parse error never includes the input, which may hold a token.
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a valid URL ({e})"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("scheme {other:?} is not http or https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(url)
}

fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading password_file {}: {e}", path.display()))?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(format!("password_file {} is empty", path.display()));
    }
    Ok(password.to_string())
}

// ---------------------------------------------------------------------------------------------
// Errors, options, statistics

/// Why notifications could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A channel's configuration is invalid.
    #[error("notification channel {channel:?}: {reason}")]
    InvalidChannel { channel: String, reason: String },

    /// A channel's worker could not be started.
    #[error("notification channel {channel:?}: cannot start its worker: {reason}")]
    Start { channel: String, reason: String },
}

/// Per-channel rate limit: at most `max_events` deliveries in any window of `per`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// 0 turns the limit off.
    pub max_events: u32,
    pub per: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            max_events: 30,
            per: Duration::from_secs(60),
        }
    }
}

/// Tunables of a [`Notifier`]; the defaults suit the daemon, tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierOptions {
    /// How deliveries are retried (`total`: no retry starts after this much time since the
    /// first try; `max_backoff` also caps a server's Retry-After).
    pub retry: RetryPolicy,
    /// Time limit of one HTTP request or SMTP conversation.
    pub attempt_timeout: Duration,
    pub rate_limit: RateLimit,
    /// Events waiting per channel; when full, the oldest is dropped.
    pub queue_capacity: usize,
    /// Timeout of command channels without `timeout_secs`.
    pub command_timeout: Duration,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            retry: RetryPolicy {
                max_attempts: 5,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(30),
                total: Duration::from_secs(120),
            },
            attempt_timeout: Duration::from_secs(30),
            rate_limit: RateLimit::default(),
            queue_capacity: 1000,
            command_timeout: Duration::from_secs(30),
        }
    }
}

/// Delivery statistics of one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelStats {
    pub name: String,
    /// `webhook`, `ntfy`, `email` or `command`.
    #[serde(rename = "type")]
    pub channel_type: &'static str,
    /// Deliveries that succeeded (suppression notices included).
    pub sent: u64,
    /// Deliveries given up: a permanent error, retries exhausted, or a flush deadline.
    pub failed: u64,
    /// Events discarded undelivered: the queue was full, or the notifier stopped.
    pub dropped: u64,
    /// Events held back by the rate limit (and reported in a summary notice instead).
    pub suppressed: u64,
    /// Events waiting now.
    pub queued: usize,
    /// When the last delivery succeeded.
    pub last_sent: Option<DateTime<Utc>>,
    /// Why the last failed delivery failed (without secrets).
    pub last_error: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The notifier

/// Sends events to the configured channels from background threads (one per channel).
///
/// Dropping it stops the workers without waiting (an attempt under way finishes on its own);
/// call [`Notifier::flush`] first to deliver what is queued.
pub struct Notifier {
    channels: Vec<Arc<Channel>>,
    capacity: usize,
}

struct Channel {
    name: String,
    type_name: &'static str,
    events: Option<Vec<EventKind>>,
    state: Mutex<ChannelState>,
    /// Signals new events, stop, flush and the end of a delivery (worker and flushers wait).
    cond: Condvar,
}

#[derive(Default)]
struct ChannelState {
    queue: VecDeque<Event>,
    busy: bool,
    stop: bool,
    /// Set while a flush waits: pending notices go out at once, retries end by then.
    flush_deadline: Option<Instant>,
    suppressed: Option<Suppressed>,
    sent: u64,
    failed: u64,
    dropped: u64,
    suppressed_total: u64,
    last_sent: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

impl ChannelState {
    fn idle(&self) -> bool {
        self.queue.is_empty() && !self.busy && self.suppressed.is_none()
    }
}

/// Events held back by the rate limit, to be summarized in one notice.
struct Suppressed {
    count: u64,
    kinds: BTreeMap<EventKind, u64>,
    first_time: DateTime<Utc>,
    same_job: bool,
    last: Event,
}

impl Suppressed {
    fn add(slot: &mut Option<Suppressed>, event: Event) {
        match slot {
            Some(s) => {
                s.count += 1;
                *s.kinds.entry(event.kind).or_default() += 1;
                s.same_job &= s.last.job == event.job;
                s.last = event;
            }
            None => {
                *slot = Some(Suppressed {
                    count: 1,
                    kinds: BTreeMap::from([(event.kind, 1)]),
                    first_time: event.time,
                    same_job: true,
                    last: event,
                })
            }
        }
    }

    /// The notice: kind, job and host of the latest suppressed event (so a ping channel
    /// reports the latest state), the counts in summary and details.
    fn notice(self, limit: &RateLimit) -> Event {
        let kinds = self
            .kinds
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect::<Vec<_>>()
            .join(", ");
        let summary = format!(
            "{} more event{} suppressed (rate limit: {} per {} s): {kinds}; latest: {}",
            self.count,
            if self.count == 1 { "" } else { "s" },
            limit.max_events,
            limit.per.as_secs(),
            self.last.summary
        );
        let kinds_json: serde_json::Map<String, serde_json::Value> = self
            .kinds
            .iter()
            .map(|(kind, n)| (kind.as_str().to_string(), (*n).into()))
            .collect();
        Event {
            kind: self.last.kind,
            job: if self.same_job {
                self.last.job.clone()
            } else {
                None
            },
            host: self.last.host.clone(),
            time: Utc::now(),
            summary,
            details: serde_json::json!({
                "suppressed": self.count,
                "kinds": kinds_json,
                "first_time": self.first_time,
                "latest": self.last,
            }),
        }
    }
}

impl Notifier {
    /// Validates the channels and starts one worker thread per channel, with the default
    /// [`NotifierOptions`]. `send` never blocks the caller.
    pub fn start(channels: Vec<ChannelConfig>) -> Result<Self, NotifyError> {
        Self::start_with(channels, NotifierOptions::default())
    }

    /// [`Notifier::start`] with explicit options (tests use short backoffs).
    pub fn start_with(
        channels: Vec<ChannelConfig>,
        options: NotifierOptions,
    ) -> Result<Self, NotifyError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut prepared = Vec::with_capacity(channels.len());
        for config in &channels {
            if !seen.insert(config.name()) {
                return Err(NotifyError::InvalidChannel {
                    channel: config.name().to_string(),
                    reason: "another channel has the same name".into(),
                });
            }
            prepared.push(config.prepare()?);
        }
        let options = NotifierOptions {
            retry: RetryPolicy {
                max_attempts: options.retry.max_attempts.max(1),
                ..options.retry
            },
            queue_capacity: options.queue_capacity.max(1),
            ..options
        };
        let mut notifier = Notifier {
            channels: Vec::with_capacity(channels.len()),
            capacity: options.queue_capacity,
        };
        for (config, sink) in channels.iter().zip(prepared) {
            let channel = Arc::new(Channel {
                name: config.name().to_string(),
                type_name: config.type_name(),
                events: config.events().map(<[EventKind]>::to_vec),
                state: Mutex::new(ChannelState::default()),
                cond: Condvar::new(),
            });
            // The thread builds its own runtime (a runtime must not be dropped inside another
            // one, and `start` may be called from async code) and reports whether it could.
            let (ready_tx, ready_rx) = mpsc::channel();
            let worker = Worker {
                channel: Arc::clone(&channel),
                sink,
                options: options.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("notify-{}", channel.name))
                .spawn(move || worker.run(ready_tx));
            let started = match spawned {
                Err(e) => Err(format!("spawning a thread: {e}")),
                Ok(_) => ready_rx
                    .recv()
                    .unwrap_or_else(|_| Err("the worker thread ended".into())),
            };
            if let Err(reason) = started {
                // Dropping `notifier` stops the workers already started.
                return Err(NotifyError::Start {
                    channel: channel.name.clone(),
                    reason,
                });
            }
            notifier.channels.push(channel);
        }
        Ok(notifier)
    }

    /// Queues the event for every channel that wants it; returns at once. A channel whose
    /// queue is full drops its oldest event (with a warning).
    pub fn send(&self, event: Event) {
        for channel in &self.channels {
            if !wants(channel.events.as_deref(), event.kind) {
                continue;
            }
            let mut state = channel.state.lock();
            if state.stop {
                continue;
            }
            if state.queue.len() >= self.capacity {
                state.queue.pop_front();
                state.dropped += 1;
                // One warning per hundred drops is enough to see the problem.
                if state.dropped % 100 == 1 {
                    tracing::warn!(
                        channel = %channel.name,
                        dropped = state.dropped,
                        "notification queue full ({} events): dropped the oldest event",
                        self.capacity
                    );
                }
            }
            state.queue.push_back(event.clone());
            drop(state);
            channel.cond.notify_all();
        }
    }

    /// Delivers everything queued, including pending rate-limit notices, or gives up when
    /// `timeout` has passed (retries stop by then too). Used at daemon shutdown. Blocks: from
    /// async code call it through `spawn_blocking`.
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for channel in &self.channels {
            let mut state = channel.state.lock();
            state.flush_deadline = Some(state.flush_deadline.map_or(deadline, |d| d.max(deadline)));
            drop(state);
            channel.cond.notify_all();
        }
        for channel in &self.channels {
            let mut state = channel.state.lock();
            while !state.idle() && !state.stop {
                if channel.cond.wait_until(&mut state, deadline).timed_out() {
                    break;
                }
            }
            if !state.idle() {
                tracing::warn!(
                    channel = %channel.name,
                    queued = state.queue.len(),
                    "notifications not delivered within the flush timeout of {} s",
                    timeout.as_secs_f64()
                );
            }
            if state.flush_deadline == Some(deadline) {
                state.flush_deadline = None;
            }
        }
    }

    /// Delivery statistics per channel, in configuration order.
    pub fn stats(&self) -> Vec<ChannelStats> {
        self.channels
            .iter()
            .map(|channel| {
                let state = channel.state.lock();
                ChannelStats {
                    name: channel.name.clone(),
                    channel_type: channel.type_name,
                    sent: state.sent,
                    failed: state.failed,
                    dropped: state.dropped,
                    suppressed: state.suppressed_total,
                    queued: state.queue.len(),
                    last_sent: state.last_sent,
                    last_error: state.last_error.clone(),
                }
            })
            .collect()
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for channel in &self.channels {
            channel.state.lock().stop = true;
            channel.cond.notify_all();
        }
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "channels",
                &self.channels.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Worker

/// A channel made ready to deliver.
enum Sink {
    Webhook {
        method: HttpMethod,
        url: reqwest::Url,
        url_failure: Option<reqwest::Url>,
        headers: reqwest::header::HeaderMap,
        client: reqwest::Client,
    },
    Ntfy {
        url: reqwest::Url,
        client: reqwest::Client,
    },
    Email(Box<EmailSink>),
    Command {
        argv: Vec<String>,
        timeout: Option<Duration>,
        env: BTreeMap<String, String>,
    },
}

impl Sink {
    fn uses_http(&self) -> bool {
        matches!(self, Sink::Webhook { .. } | Sink::Ntfy { .. })
    }
}

struct EmailSink {
    server: String,
    port: Option<u16>,
    security: SmtpSecurity,
    username: Option<String>,
    password_file: Option<PathBuf>,
    from: lettre::message::Mailbox,
    to: Vec<lettre::message::Mailbox>,
}

/// Why one delivery attempt failed.
#[derive(Debug)]
struct DeliveryError {
    reason: String,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl DeliveryError {
    fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError {
            reason: reason.into(),
            retryable: false,
            retry_after: None,
        }
    }

    fn transient(reason: impl Into<String>) -> Self {
        DeliveryError {
            reason: reason.into(),
            retryable: true,
            retry_after: None,
        }
    }
}

struct Worker {
    channel: Arc<Channel>,
    sink: Sink,
    options: NotifierOptions,
}

/// What the worker took from its queue.
enum Work {
    Event(Event),
    Notice(Event),
}

impl Worker {
    fn run(self, ready: mpsc::Sender<Result<(), String>>) {
        let runtime = if self.sink.uses_http() {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => Some(runtime),
                Err(e) => {
                    let _ = ready.send(Err(format!("building an async runtime: {e}")));
                    return;
                }
            }
        } else {
            None
        };
        let _ = ready.send(Ok(()));
        drop(ready);

        let channel = &self.channel;
        let limit = &self.options.rate_limit;
        let mut window: VecDeque<Instant> = VecDeque::new();
        loop {
            let work = {
                let mut state = channel.state.lock();
                loop {
                    if state.stop {
                        state.dropped += state.queue.len() as u64;
                        state.queue.clear();
                        return;
                    }
                    let now = Instant::now();
                    while window
                        .front()
                        .is_some_and(|t| now.saturating_duration_since(*t) >= limit.per)
                    {
                        window.pop_front();
                    }
                    let slot_free =
                        limit.max_events == 0 || window.len() < limit.max_events as usize;
                    // A flush sends the notice past the limit, once the queue is drained.
                    let flushing = state.flush_deadline.is_some() && state.queue.is_empty();
                    if state.suppressed.is_some() && (slot_free || flushing) {
                        if let Some(suppressed) = state.suppressed.take() {
                            state.busy = true;
                            break Work::Notice(suppressed.notice(limit));
                        }
                    }
                    if let Some(event) = state.queue.pop_front() {
                        if slot_free {
                            state.busy = true;
                            break Work::Event(event);
                        }
                        state.suppressed_total += 1;
                        if state.suppressed.is_none() {
                            tracing::warn!(
                                channel = %channel.name,
                                "more than {} notifications in {} s: holding back the excess",
                                limit.max_events,
                                limit.per.as_secs()
                            );
                        }
                        Suppressed::add(&mut state.suppressed, event);
                        continue;
                    }
                    match (&state.suppressed, window.front()) {
                        // A pending notice waits for a slot to free.
                        (Some(_), Some(oldest)) => {
                            let wake = *oldest + limit.per;
                            channel.cond.wait_until(&mut state, wake);
                        }
                        _ => channel.cond.wait(&mut state),
                    }
                }
            };
            window.push_back(Instant::now());
            let (event, what) = match work {
                Work::Event(event) => (event, "event"),
                Work::Notice(event) => (event, "suppression notice"),
            };
            let result = self.deliver_with_retry(&event, runtime.as_ref());
            let mut state = channel.state.lock();
            state.busy = false;
            match result {
                Ok(()) => {
                    state.sent += 1;
                    state.last_sent = Some(Utc::now());
                    tracing::debug!(channel = %channel.name, kind = %event.kind, "delivered {what}");
                }
                Err(reason) => {
                    state.failed += 1;
                    tracing::warn!(
                        channel = %channel.name,
                        kind = %event.kind,
                        "notification not delivered: {reason}"
                    );
                    state.last_error = Some(reason);
                }
            }
            drop(state);
            channel.cond.notify_all();
        }
    }

    /// Delivers with retries; the error says why it gave up.
    fn deliver_with_retry(
        &self,
        event: &Event,
        runtime: Option<&tokio::runtime::Runtime>,
    ) -> Result<(), String> {
        let policy = &self.options.retry;
        let start = Instant::now();
        let mut attempt = 1;
        loop {
            let mut timeout = self
                .options
                .attempt_timeout
                .min(policy.total.saturating_sub(start.elapsed()));
            if let Some(deadline) = self.channel.state.lock().flush_deadline {
                timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
            }
            let timeout = timeout.max(Duration::from_millis(500));
            let error = match self.deliver_once(event, runtime, timeout) {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if !error.retryable {
                return Err(error.reason);
            }
            let mut wait = policy.backoff(attempt);
            if let Some(after) = error.retry_after {
                wait = wait.max(after.min(policy.max_backoff));
            }
            match policy.give_up(attempt, start.elapsed(), wait) {
                None => {}
                Some(GiveUp::Attempts) => {
                    return Err(format!("{} (gave up after {attempt} tries)", error.reason))
                }
                Some(GiveUp::Time) => {
                    return Err(format!(
                        "{} (gave up after {attempt} tries in {} s)",
                        error.reason,
                        start.elapsed().as_secs()
                    ))
                }
            }
            tracing::debug!(
                channel = %self.channel.name,
                "try {attempt} failed: {}; retrying in {} ms",
                error.reason,
                wait.as_millis()
            );
            let until = Instant::now() + wait;
            let mut state = self.channel.state.lock();
            loop {
                if state.stop {
                    return Err(format!("{} (notifier stopped)", error.reason));
                }
                if state.flush_deadline.is_some_and(|d| d < until) {
                    return Err(format!(
                        "{} (no time left to retry before the flush deadline)",
                        error.reason
                    ));
                }
                if Instant::now() >= until {
                    break;
                }
                self.channel.cond.wait_until(&mut state, until);
            }
            drop(state);
            attempt += 1;
        }
    }

    fn deliver_once(
        &self,
        event: &Event,
        runtime: Option<&tokio::runtime::Runtime>,
        timeout: Duration,
    ) -> Result<(), DeliveryError> {
        match &self.sink {
            Sink::Webhook {
                method,
                url,
                url_failure,
                headers,
                client,
            } => {
                let url = match url_failure {
                    Some(failure) if event.kind.is_failure() => failure,
                    _ => url,
                };
                let request = match method {
                    HttpMethod::Get => client.get(url.clone()),
                    HttpMethod::Post => {
                        let body = serde_json::to_vec(event).map_err(|e| {
                            DeliveryError::permanent(format!("encoding the event as JSON: {e}"))
                        })?;
                        client
                            .post(url.clone())
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(body)
                    }
                };
                http_send(runtime, request.headers(headers.clone()), url, timeout)
            }
            Sink::Ntfy { url, client } => {
                let title = header_text(&format!(
                    "Lifeboat on {}: {}",
                    event.host,
                    event.kind.title()
                ));
                let (priority, tag) = if event.kind.is_failure() {
                    ("high", "rotating_light")
                } else if matches!(
                    event.kind,
                    EventKind::Recovered | EventKind::BackupSucceeded | EventKind::DrillPassed
                ) {
                    ("default", "white_check_mark")
                } else {
                    ("default", "information_source")
                };
                let request = client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header("Title", title)
                    .header("Priority", priority)
                    .header("Tags", format!("{tag},lifeboat,{}", event.kind))
                    .body(crate::display::scrub(&event.summary).into_owned());
                http_send(runtime, request, url, timeout)
            }
            Sink::Email(sink) => sink.send(event, timeout),
            Sink::Command {
                argv,
                timeout: own,
                env,
            } => run_command(
                argv,
                env,
                event,
                own.unwrap_or(self.options.command_timeout),
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn install_tls_provider() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // Fails only if another provider was installed first, which then serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn http_client() -> Result<reqwest::Client, String> {
    install_tls_provider();
    reqwest::Client::builder()
        .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| {
            format!(
                "building the HTTP client: {}",
                error_chain(&e.without_url())
            )
        })
}

fn http_send(
    runtime: Option<&tokio::runtime::Runtime>,
    request: reqwest::RequestBuilder,
    url: &reqwest::Url,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let Some(runtime) = runtime else {
        return Err(DeliveryError::permanent("no async runtime (a bug)"));
    };
    let target = redact_url(url);
    runtime.block_on(async move {
        let response = request.timeout(timeout).send().await.map_err(|e| {
            let retryable = !e.is_builder();
            let reason = format!("{target}: {}", error_chain(&e.without_url()));
            DeliveryError {
                reason,
                retryable,
                retry_after: None,
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.text().await.unwrap_or_default();
        let body = one_line(&body, 200);
        let reason = if body.is_empty() {
            format!("{target}: HTTP {status}")
        } else {
            format!("{target}: HTTP {status}: {body}")
        };
        let retryable = status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT;
        Err(DeliveryError {
            reason,
            retryable,
            retry_after,
        })
    })
}

/// An error and its sources, joined by ": " (repeats left out).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// `text` on one line, at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > max {
        let mut cut: String = joined.chars().take(max).collect();
        cut.push('…');
        cut
    } else {
        joined
    }
}

/// Header values must be visible ASCII: anything else becomes '?'.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Email

impl EmailSink {
    fn transport(
        &self,
        password: Option<String>,
        timeout: Duration,
    ) -> Result<lettre::SmtpTransport, String> {
        use lettre::transport::smtp::{authentication::Credentials, extension::ClientId};
        install_tls_provider();
        let builder = match self.security {
            SmtpSecurity::Starttls => lettre::SmtpTransport::starttls_relay(&self.server)
                .map_err(|e| error_chain(&e))?
                .port(self.port.unwrap_or(587)),
            SmtpSecurity::Tls => lettre::SmtpTransport::relay(&self.server)
                .map_err(|e| error_chain(&e))?
                .port(self.port.unwrap_or(465)),
            SmtpSecurity::None => {
                lettre::SmtpTransport::builder_dangerous(&self.server).port(self.port.unwrap_or(25))
            }
        };
        let mut builder = builder
            .timeout(Some(timeout))
            .hello_name(ClientId::Domain(local_hostname()));
        if let (Some(user), Some(password)) = (&self.username, password) {
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(builder.build())
    }

    fn send(&self, event: &Event, timeout: Duration) -> Result<(), DeliveryError> {
        use lettre::Transport;
        let password = match &self.password_file {
            Some(path) => Some(read_password(path).map_err(DeliveryError::permanent)?),
            None => None,
        };
        let message = self.message(event)?;
        let transport = self
            .transport(password, timeout)
            .map_err(|e| DeliveryError::permanent(format!("smtp server {}: {e}", self.server)))?;
        transport.send(&message).map(|_| ()).map_err(|e| {
            let reason = format!("smtp server {}: {}", self.server, error_chain(&e));
            if e.is_permanent() || e.is_client() {
                DeliveryError::permanent(reason)
            } else {
                DeliveryError::transient(reason)
            }
        })
    }

    fn message(&self, event: &Event) -> Result<lettre::Message, DeliveryError> {
        let subject = format!(
            "[lifeboat] {}: {}",
            event.host,
            one_line(&event.summary, 150)
        );
        // Text for people: control characters escaped, the details' JSON stays JSON.
        let scrub = crate::display::scrub;
        let mut body = format!(
            "{}\n\nEvent: {}\nJob:   {}\nHost:  {}\nTime:  {}\n",
            scrub(&event.summary),
            event.kind,
            scrub(event.job.as_deref().unwrap_or("-")),
            scrub(&event.host),
            event
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        if !event.details.is_null() {
            let details = serde_json::to_string_pretty(&event.details).unwrap_or_default();
            body.push_str("\nDetails:\n");
            body.push_str(&crate::display::scrub_lines(&details));
            body.push('\n');
        }
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .body(body)
            .map_err(|e| DeliveryError::permanent(format!("building the mail: {e}")))
    }
}

// ---------------------------------------------------------------------------------------------
// Command

/// Runs a command channel through the daemon's child runner ([`super::child`]): the event as
/// JSON on its input, in its own process group, its output read while it runs. The daemon's
/// stop does not cut it short (the stop itself is announced through it); its timeout does.
fn run_command(
    argv: &[String],
    env: &BTreeMap<String, String>,
    event: &Event,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let program = argv.first().map(String::as_str).unwrap_or_default();
    let json = serde_json::to_vec(event)
        .map_err(|e| DeliveryError::permanent(format!("encoding the event as JSON: {e}")))?;
    let spec = super::child::Spec {
        argv,
        config_env: env,
        env: vec![
            ("LIFEBOAT_EVENT", event.kind.as_str().to_string()),
            ("LIFEBOAT_JOB", event.job.clone().unwrap_or_default()),
            (
                "LIFEBOAT_SUMMARY",
                crate::display::scrub(&event.summary).into_owned(),
            ),
            ("LIFEBOAT_HOST", event.host.clone()),
        ],
        stdin: Some(json),
        timeout,
        on_stop: None,
    };
    let outcome = super::child::run(&spec)
        .map_err(|e| DeliveryError::permanent(format!("cannot run {program}: {e}")))?;
    match outcome.end {
        super::child::End::Exited(s) if s.success() => Ok(()),
        super::child::End::TimedOut => Err(DeliveryError::permanent(format!(
            "{program} did not finish within {} s: killed with its process group",
            timeout.as_secs_f64()
        ))),
        _ => Err(DeliveryError::permanent(format!(
            "{program} {}",
            outcome
                .failure(timeout)
                .unwrap_or_else(|| "failed".to_string())
        ))),
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    /// One request as the receiver saw it.
    #[derive(Debug, Clone)]
    struct Request {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Request {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn event(&self) -> Event {
            serde_json::from_slice(&self.body).unwrap()
        }
    }

    /// Holds the first request until the test releases it.
    struct Gate {
        arrived: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
        /// Whether the test released it (rather than a 20 s safety timeout).
        released: Arc<Mutex<Option<bool>>>,
    }

    /// A local HTTP server that records requests and answers with `statuses` in turn (the last
    /// one repeats).
    struct Receiver {
        addr: SocketAddr,
        requests: Arc<Mutex<Vec<Request>>>,
    }

    impl Receiver {
        fn start(statuses: &[u16]) -> Receiver {
            Self::start_gated(statuses, None)
        }

        fn start_gated(statuses: &[u16], gate: Option<Gate>) -> Receiver {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let recorded = Arc::clone(&requests);
            let statuses = statuses.to_vec();
            std::thread::spawn(move || {
                let mut gate = gate;
                for (n, stream) in listener.incoming().enumerate() {
                    let Ok(stream) = stream else { continue };
                    let Some(request) = read_request(&stream) else {
                        continue;
                    };
                    recorded.lock().push(request);
                    if let Some(gate) = gate.take() {
                        let _ = gate.arrived.send(());
                        let released = gate.release.recv_timeout(Duration::from_secs(20)).is_ok();
                        *gate.released.lock() = Some(released);
                    }
                    let status = statuses[n.min(statuses.len() - 1)];
                    let mut stream = stream;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            });
            Receiver { addr, requests }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        fn requests(&self) -> Vec<Request> {
            self.requests.lock().clone()
        }
    }

    fn read_request(stream: &TcpStream) -> Option<Request> {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_string();
        let path = parts.next()?.to_string();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (key, value) = line.split_once(':')?;
            headers.push((key.trim().to_string(), value.trim().to_string()));
        }
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse::<usize>().unwrap_or(0));
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some(Request {
            method,
            path,
            headers,
            body,
        })
    }

    fn fast() -> NotifierOptions {
        NotifierOptions {
            retry: RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(50),
                total: Duration::from_secs(10),
            },
            attempt_timeout: Duration::from_secs(10),
            ..NotifierOptions::default()
        }
    }

    fn webhook(name: &str, url: String) -> ChannelConfig {
        ChannelConfig::Webhook {
            name: name.into(),
            url,
            method: HttpMethod::Post,
            url_failure: None,
            headers: BTreeMap::new(),
            events: None,
        }
    }

    fn event(kind: EventKind, summary: &str) -> Event {
        Event::new(kind, Some("etc".into()), summary)
            .with_details(serde_json::json!({"error": "repository unreachable", "files": 3}))
    }

    const FLUSH: Duration = Duration::from_secs(30);

    #[test]
    fn webhook_posts_the_event_as_json() {
        let rx = Receiver::start(&[200]);
        let mut config = webhook("hook", rx.url("/hook?token=abc"));
        if let ChannelConfig::Webhook { headers, .. } = &mut config {
            headers.insert("Authorization".into(), "Bearer s3cret".into());
        }
        let notifier = Notifier::start_with(vec![config], fast()).unwrap();
        let sent = event(EventKind::BackupFailed, "backup of job etc failed: boom");
        notifier.send(sent.clone());
        notifier.flush(FLUSH);
        let requests = rx.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hook?token=abc");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(request.event(), sent);
        let stats = notifier.stats();
        assert_eq!(stats[0].sent, 1);
        assert_eq!(stats[0].failed, 0);
        assert_eq!(stats[0].channel_type, "webhook");
        assert!(stats[0].last_sent.is_some());
    }

    #[test]
    fn get_ping_uses_url_failure_for_failures() {
        let rx = Receiver::start(&[200]);
        let config = ChannelConfig::Webhook {
            name: "hc".into(),
            url: rx.url("/ping/abc"),
            method: HttpMethod::Get,
            url_failure: Some(rx.url("/ping/abc/fail")),
            headers: BTreeMap::new(),
            events: Some(vec![EventKind::BackupSucceeded, EventKind::BackupFailed]),
        };
        let notifier = Notifier::start_with(vec![config], fast()).unwrap();
        notifier.send(event(EventKind::BackupSucceeded, "ok"));
        notifier.flush(FLUSH);
        notifier.send(event(EventKind::BackupFailed, "failed"));
        notifier.flush(FLUSH);
        let requests = rx.requests();
        let seen: Vec<_> = requests
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str(), r.body.len()))
            .collect();
        assert_eq!(
            seen,
            vec![("GET", "/ping/abc", 0), ("GET", "/ping/abc/fail", 0)]
        );
    }

    #[test]
    fn ntfy_gets_the_summary_as_text_with_headers() {
        let rx = Receiver::start(&[200]);
        let config = ChannelConfig::Ntfy {
            name: "phone".into(),
            url: rx.url("/lifeboat-alerts"),
            events: None,
        };
        let notifier = Notifier::start_with(vec![config], fast()).unwrap();
        let mut sent = event(
            EventKind::BackupFailed,
            "backup of job etc failed: disk full",
        );
        sent.host = "db1".into();
        notifier.send(sent);
        notifier.flush(FLUSH);
        let requests = rx.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/lifeboat-alerts");
        assert_eq!(
            String::from_utf8_lossy(&request.body),
            "backup of job etc failed: disk full"
        );
        assert_eq!(
            request.header("title"),
            Some("Lifeboat on db1: backup failed")
        );
        assert_eq!(request.header("priority"), Some("high"));
        assert!(request.header("tags").unwrap().contains("backup_failed"));
    }

    #[test]
    fn a_503_is_retried_then_delivered() {
        let rx = Receiver::start(&[503, 503, 200]);
        let notifier = Notifier::start_with(vec![webhook("hook", rx.url("/h"))], fast()).unwrap();
        notifier.send(event(EventKind::Stale, "stale"));
        notifier.flush(FLUSH);
        assert_eq!(rx.requests().len(), 3);
        let stats = &notifier.stats()[0];
        assert_eq!((stats.sent, stats.failed), (1, 0));
    }

    #[test]
    fn retries_end_after_the_policys_attempts() {
        let rx = Receiver::start(&[500]);
        let notifier = Notifier::start_with(vec![webhook("hook", rx.url("/h"))], fast()).unwrap();
        notifier.send(event(EventKind::Stale, "stale"));
        notifier.flush(FLUSH);
        assert_eq!(rx.requests().len(), 3);
        let stats = &notifier.stats()[0];
        assert_eq!((stats.sent, stats.failed), (0, 1));
        let error = stats.last_error.as_deref().unwrap();
        assert!(error.contains("500"), "{error}");
        assert!(error.contains("gave up after 3 tries"), "{error}");
    }

    #[test]
    fn a_400_is_not_retried() {
        let rx = Receiver::start(&[400, 200]);
        let notifier = Notifier::start_with(vec![webhook("hook", rx.url("/h"))], fast()).unwrap();
        notifier.send(event(EventKind::BackupFailed, "failed"));
        notifier.flush(FLUSH);
        assert_eq!(rx.requests().len(), 1);
        let stats = &notifier.stats()[0];
        assert_eq!((stats.sent, stats.failed), (0, 1));
        assert!(stats.last_error.as_deref().unwrap().contains("400"));
    }

    #[test]
    fn errors_do_not_show_url_secrets() {
        // A port nobody listens on: connection refused, retried, given up.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/ping/SECRETUUID?token=SECRETTOKEN");
        let notifier = Notifier::start_with(vec![webhook("hook", url)], fast()).unwrap();
        notifier.send(event(EventKind::BackupFailed, "failed"));
        notifier.flush(FLUSH);
        let stats = &notifier.stats()[0];
        assert_eq!(stats.failed, 1);
        let error = stats.last_error.as_deref().unwrap();
        assert!(error.contains("127.0.0.1"), "{error}");
        assert!(!error.contains("SECRET"), "{error}");
        assert!(error.contains("gave up after 3 tries"), "{error}");
    }

    #[test]
    fn events_filter_selects_kinds() {
        let rx = Receiver::start(&[200]);
        let mut only_failures = webhook("failures", rx.url("/failures"));
        if let ChannelConfig::Webhook { events, .. } = &mut only_failures {
            *events = Some(vec![EventKind::BackupFailed]);
        }
        let default = webhook("default", rx.url("/default"));
        let notifier = Notifier::start_with(vec![only_failures, default], fast()).unwrap();
        for kind in [
            EventKind::BackupSucceeded,
            EventKind::Stale,
            EventKind::BackupFailed,
            EventKind::Test,
        ] {
            notifier.send(event(kind, kind.as_str()));
        }
        notifier.flush(FLUSH);
        let mut seen: Vec<_> = rx
            .requests()
            .iter()
            .map(|r| (r.path.clone(), r.event().kind))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("/default".to_string(), EventKind::BackupFailed),
                ("/default".to_string(), EventKind::Stale),
                ("/default".to_string(), EventKind::Test),
                ("/failures".to_string(), EventKind::BackupFailed),
                ("/failures".to_string(), EventKind::Test),
            ]
        );
    }

    #[test]
    fn send_returns_while_delivery_is_blocked_and_a_full_queue_drops_the_oldest() {
        let (arrived_tx, arrived_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let released = Arc::new(Mutex::new(None));
        let gate = Gate {
            arrived: arrived_tx,
            release: release_rx,
            released: Arc::clone(&released),
        };
        let rx = Receiver::start_gated(&[200], Some(gate));
        let options = NotifierOptions {
            queue_capacity: 2,
            ..fast()
        };
        let notifier = Notifier::start_with(vec![webhook("hook", rx.url("/h"))], options).unwrap();
        notifier.send(event(EventKind::BackupFailed, "first"));
        // The receiver now holds the first delivery.
        arrived_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        for summary in ["second", "third", "fourth"] {
            notifier.send(event(EventKind::BackupFailed, summary));
        }
        // All sends returned while the worker is stuck in the first delivery.
        assert_eq!(notifier.stats()[0].queued, 2);
        assert_eq!(notifier.stats()[0].dropped, 1);
        release_tx.send(()).unwrap();
        notifier.flush(FLUSH);
        assert_eq!(*released.lock(), Some(true));
        let summaries: Vec<_> = rx.requests().iter().map(|r| r.event().summary).collect();
        assert_eq!(summaries, ["first", "third", "fourth"]);
        let stats = &notifier.stats()[0];
        assert_eq!((stats.sent, stats.dropped, stats.queued), (3, 1, 0));
    }

    #[test]
    fn rate_limit_coalesces_a_burst() {
        let rx = Receiver::start(&[200]);
        let options = NotifierOptions {
            rate_limit: RateLimit {
                max_events: 3,
                per: Duration::from_secs(3600),
            },
            ..fast()
        };
        let notifier = Notifier::start_with(vec![webhook("hook", rx.url("/h"))], options).unwrap();
        for n in 0..10 {
            let kind = if n == 9 {
                EventKind::Recovered
            } else {
                EventKind::BackupFailed
            };
            notifier.send(event(kind, &format!("event {n}")));
        }
        notifier.flush(FLUSH);
        let events: Vec<_> = rx.requests().iter().map(Request::event).collect();
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(events[0].summary, "event 0");
        assert_eq!(events[2].summary, "event 2");
        let notice = &events[3];
        assert!(
            notice.summary.starts_with("7 more events suppressed"),
            "{}",
            notice.summary
        );
        assert!(notice.summary.contains("6 backup_failed, 1 recovered"));
        assert_eq!(notice.kind, EventKind::Recovered);
        assert_eq!(notice.job.as_deref(), Some("etc"));
        assert_eq!(notice.details["suppressed"], 7);
        let stats = &notifier.stats()[0];
        assert_eq!((stats.sent, stats.suppressed, stats.failed), (4, 7, 0));
    }

    #[test]
    fn flush_delivers_what_is_queued() {
        let rx = Receiver::start(&[200]);
        let notifier = Notifier::start_with(
            vec![webhook("a", rx.url("/a")), webhook("b", rx.url("/b"))],
            fast(),
        )
        .unwrap();
        for n in 0..20 {
            notifier.send(event(EventKind::Maintenance, &format!("m{n}")));
        }
        notifier.flush(FLUSH);
        assert_eq!(rx.requests().len(), 40);
        for stats in notifier.stats() {
            assert_eq!((stats.sent, stats.queued), (20, 0));
        }
    }

    #[test]
    fn no_channels_is_fine() {
        let notifier = Notifier::start(Vec::new()).unwrap();
        notifier.send(event(EventKind::Test, "test"));
        notifier.flush(Duration::from_secs(1));
        assert!(notifier.stats().is_empty());
    }

    #[test]
    fn command_gets_the_event_on_stdin_and_in_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("event.json");
        let env = dir.path().join("env");
        let script = format!(
            "cat > '{}'; printf '%s|%s|%s' \"$LIFEBOAT_EVENT\" \"$LIFEBOAT_JOB\" \"$LIFEBOAT_SUMMARY\" > '{}'",
            json.display(),
            env.display()
        );
        let config = ChannelConfig::Command {
            name: "script".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), script],
            timeout_secs: None,
            events: None,
            env: BTreeMap::new(),
        };
        let notifier = Notifier::start_with(vec![config], fast()).unwrap();
        let sent = event(EventKind::MissedSchedule, "job etc missed its 02:00 run");
        notifier.send(sent.clone());
        notifier.flush(FLUSH);
        assert_eq!(notifier.stats()[0].sent, 1);
        let written: Event = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(written, sent);
        assert_eq!(
            std::fs::read_to_string(&env).unwrap(),
            "missed_schedule|etc|job etc missed its 02:00 run"
        );
    }

    #[test]
    fn a_failing_command_reports_its_stderr_and_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let script = format!(
            "echo run >> '{}'; echo 'no route' >&2; exit 3",
            count.display()
        );
        let config = ChannelConfig::Command {
            name: "script".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), script],
            timeout_secs: None,
            events: None,
            env: BTreeMap::new(),
        };
        let notifier = Notifier::start_with(vec![config], fast()).unwrap();
        notifier.send(event(EventKind::BackupFailed, "failed"));
        notifier.flush(FLUSH);
        let stats = &notifier.stats()[0];
        assert_eq!((stats.sent, stats.failed), (0, 1));
        let error = stats.last_error.as_deref().unwrap();
        assert!(error.contains("no route"), "{error}");
        assert_eq!(std::fs::read_to_string(&count).unwrap(), "run\n");
    }

    #[test]
    fn a_hanging_command_is_killed_after_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // The shell and a child of it: both must go.
        let script = format!("sleep 600 & echo $$ $! > '{}'; wait", pids.display());
        let config = ChannelConfig::Command {
            name: "hang".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), script],
            timeout_secs: Some(1),
            events: None,
            env: BTreeMap::new(),
        };
        let notifier = Notifier::start_with(vec![config], fast()).unwrap();
        notifier.send(event(EventKind::BackupFailed, "failed"));
        notifier.flush(FLUSH);
        let stats = &notifier.stats()[0];
        assert_eq!((stats.sent, stats.failed), (0, 1));
        let error = stats.last_error.as_deref().unwrap();
        assert!(error.contains("killed"), "{error}");
        let pids = std::fs::read_to_string(&pids).unwrap();
        for pid in pids.split_whitespace() {
            // SIGKILL takes effect asynchronously: wait (boundedly) until the process is gone
            // or a zombie waiting for init.
            let gone = || {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .next();
                stat.is_empty() || matches!(state, Some("Z" | "X"))
            };
            let give_up = Instant::now() + Duration::from_secs(20);
            while !gone() && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(gone(), "process {pid} still runs");
        }
    }

    #[test]
    fn config_parses_with_type_tags_and_rejects_unknown_fields() {
        let json = serde_json::json!([
            {"type": "webhook", "name": "hc", "url": "https://hc-ping.com/uuid", "method": "get",
             "url_failure": "https://hc-ping.com/uuid/fail", "events": ["backup_failed", "backup_succeeded"]},
            {"type": "ntfy", "name": "phone", "url": "https://ntfy.sh/topic"},
            {"type": "email", "name": "mail", "server": "smtp.example.com", "security": "tls",
             "from": "Lifeboat <lifeboat@example.com>", "to": ["ops@example.com"]},
            {"type": "command", "name": "script", "argv": ["/usr/local/bin/alert"], "timeout_secs": 5}
        ]);
        let configs: Vec<ChannelConfig> = serde_json::from_value(json).unwrap();
        assert_eq!(configs.len(), 4);
        assert!(matches!(
            &configs[0],
            ChannelConfig::Webhook {
                method: HttpMethod::Get,
                url_failure: Some(_),
                ..
            }
        ));
        assert!(configs[0].wants(EventKind::BackupSucceeded));
        assert!(!configs[0].wants(EventKind::Stale));
        assert!(!configs[1].wants(EventKind::BackupSucceeded));
        assert!(configs[1].wants(EventKind::Stale));
        assert!(matches!(
            &configs[2],
            ChannelConfig::Email {
                security: SmtpSecurity::Tls,
                port: None,
                ..
            }
        ));
        for config in &configs {
            config.validate().unwrap();
        }

        let unknown =
            serde_json::json!({"type": "ntfy", "name": "n", "url": "https://x", "colour": 1});
        assert!(serde_json::from_value::<ChannelConfig>(unknown).is_err());
        let bad_type = serde_json::json!({"type": "pager", "name": "n"});
        assert!(serde_json::from_value::<ChannelConfig>(bad_type).is_err());
    }

    #[test]
    fn config_parses_from_toml_notify_tables() {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            notify: Vec<ChannelConfig>,
        }
        let text = r#"
            [[notify]]
            type = "email"
            name = "mail"
            server = "smtp.example.com"
            port = 2525
            security = "none"
            from = "lifeboat@example.com"
            to = ["ops@example.com"]
            events = ["backup_failed", "stale"]

            [[notify]]
            type = "webhook"
            name = "hook"
            url = "https://example.com/h"
            method = "GET"
            headers = { Authorization = "Bearer x" }

            [[notify]]
            type = "command"
            name = "script"
            argv = ["/bin/true"]
            timeout_secs = 5
        "#;
        let file: File = toml::from_str(text).unwrap();
        assert_eq!(file.notify.len(), 3);
        assert_eq!(
            file.notify[0],
            ChannelConfig::Email {
                name: "mail".into(),
                server: "smtp.example.com".into(),
                port: Some(2525),
                security: SmtpSecurity::None,
                username: None,
                password_file: None,
                from: "lifeboat@example.com".into(),
                to: vec!["ops@example.com".into()],
                events: Some(vec![EventKind::BackupFailed, EventKind::Stale]),
            }
        );
        assert!(matches!(
            &file.notify[1],
            ChannelConfig::Webhook { method: HttpMethod::Get, headers, .. } if headers.len() == 1
        ));
        assert!(matches!(
            &file.notify[2],
            ChannelConfig::Command {
                timeout_secs: Some(5),
                ..
            }
        ));

        let typo =
            "[[notify]]\ntype = \"ntfy\"\nname = \"n\"\nurl = \"https://x\"\nevent = [\"stale\"]\n";
        let error = toml::from_str::<File>(typo).err().unwrap().to_string();
        assert!(error.contains("event"), "{error}");
        let bad_kind = "[[notify]]\ntype = \"ntfy\"\nname = \"n\"\nurl = \"https://x\"\nevents = [\"failed\"]\n";
        assert!(toml::from_str::<File>(bad_kind).is_err());
    }

    #[test]
    fn validation_names_the_channel_and_hides_secrets() {
        let bad_url = webhook("hook", "not a url?token=SECRET".into());
        let error = Notifier::start(vec![bad_url]).unwrap_err().to_string();
        assert!(error.contains("\"hook\""), "{error}");
        assert!(error.contains("url"), "{error}");
        assert!(!error.contains("SECRET"), "{error}");

        let ftp = webhook("hook", "ftp://example.com/x".into());
        assert!(ftp.validate().unwrap_err().to_string().contains("ftp"));

        let empty_argv = ChannelConfig::Command {
            name: "c".into(),
            argv: Vec::new(),
            timeout_secs: None,
            events: None,
            env: BTreeMap::new(),
        };
        assert!(empty_argv
            .validate()
            .unwrap_err()
            .to_string()
            .contains("argv"));

        let twice = vec![
            webhook("same", "https://example.com/a".into()),
            webhook("same", "https://example.com/b".into()),
        ];
        let error = Notifier::start(twice).unwrap_err().to_string();
        assert!(error.contains("same name"), "{error}");

        let no_password = ChannelConfig::Email {
            name: "mail".into(),
            server: "smtp.example.com".into(),
            port: None,
            security: SmtpSecurity::Starttls,
            username: Some("me".into()),
            password_file: Some("/nonexistent/lifeboat-password".into()),
            from: "lifeboat@example.com".into(),
            to: vec!["ops@example.com".into()],
            events: None,
        };
        let error = no_password.validate().unwrap_err().to_string();
        assert!(error.contains("password_file"), "{error}");

        let bad_to = ChannelConfig::Email {
            name: "mail".into(),
            server: "smtp.example.com".into(),
            port: None,
            security: SmtpSecurity::Starttls,
            username: None,
            password_file: None,
            from: "lifeboat@example.com".into(),
            to: vec!["not an address".into()],
            events: None,
        };
        assert!(bad_to.validate().unwrap_err().to_string().contains("to"));

        let mut secret_header = webhook("hook", "https://example.com/p/SECRET?token=SECRET".into());
        if let ChannelConfig::Webhook { headers, .. } = &mut secret_header {
            headers.insert("Authorization".into(), "Bearer SECRET".into());
        }
        let debug = format!("{secret_header:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("https://example.com/…"), "{debug}");
        assert!(debug.contains("Authorization"), "{debug}");
    }

    /// Speaks just enough SMTP to take one mail; returns the DATA part.
    fn fake_smtp() -> (u16, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let _ = writer.write_all(b"220 fake ESMTP\r\n");
            let mut data = String::new();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        let _ = writer.write_all(b"250 queued\r\n");
                    } else {
                        data.push_str(&line);
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" | "HELO" => b"250 fake\r\n",
                    "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
                    "DATA" => {
                        in_data = true;
                        b"354 go ahead\r\n"
                    }
                    "QUIT" => {
                        let _ = writer.write_all(b"221 bye\r\n");
                        break;
                    }
                    _ => b"500 what\r\n",
                };
                let _ = writer.write_all(reply);
            }
            let _ = tx.send(data);
        });
        (port, rx)
    }

    #[test]
    fn email_goes_through_smtp() {
        let (port, mail) = fake_smtp();
        let config = ChannelConfig::Email {
            name: "mail".into(),
            server: "127.0.0.1".into(),
            port: Some(port),
            security: SmtpSecurity::None,
            username: None,
            password_file: None,
            from: "Lifeboat <lifeboat@example.com>".into(),
            to: vec!["ops@example.com".into()],
            events: None,
        };
        let notifier = Notifier::start_with(vec![config], fast()).unwrap();
        let mut sent = event(
            EventKind::BackupFailed,
            "backup of job etc failed: disk full",
        );
        sent.host = "db1".into();
        notifier.send(sent);
        notifier.flush(FLUSH);
        let stats = &notifier.stats()[0];
        assert_eq!((stats.sent, stats.failed), (1, 0), "{:?}", stats.last_error);
        let data = mail.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(
            data.contains("Subject: [lifeboat] db1: backup of job etc failed: disk full"),
            "{data}"
        );
        assert!(data.contains("To: ops@example.com"), "{data}");
        assert!(data.contains("repository unreachable"), "{data}");
    }
}

//! The daemon's configuration: `/etc/lifeboat/lifeboat.toml` (see `config/lifeboat.toml`, the
//! commented reference).
//!
//! Parsing is strict (unknown keys are errors) and validation collects every mistake, each
//! naming the file, line, column and field, so an operator fixes a config in one pass:
//! `lifeboat config check` runs exactly this without starting anything.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::daemon::schedule::Schedule;
use crate::units::{parse_duration, parse_percent};

/// Default locations on a server.
pub const DEFAULT_CONFIG: &str = "/etc/lifeboat/lifeboat.toml";

/// One mistake in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The field, as a path (`jobs[1].incremental`).
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every mistake of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// `[daemon]`: where the daemon keeps things and how it behaves.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    /// Persistent state (last runs, results).
    pub state_dir: PathBuf,
    /// Metadata caches of cloud repositories.
    pub cache_dir: PathBuf,
    /// Control socket.
    pub runtime_dir: PathBuf,
    /// Jobs that may run at once.
    pub max_concurrent_jobs: usize,
    /// Run a job once at start if a scheduled run was missed while the daemon was down.
    pub catch_up: bool,
    /// `host:port` for `/metrics` and `/health`; off when absent.
    pub metrics_listen: Option<String>,
    /// Lead times at which maintenance windows are announced (`["7d", "1d", "1h"]`); default:
    /// a week before a window longer than a day, a day before a shorter one, and an hour before.
    pub maintenance_announce: Option<Vec<String>>,
    /// How long before a maintenance window the final backups of `on_shutdown` jobs start.
    pub maintenance_final_backup: String,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            state_dir: PathBuf::from("/var/lib/lifeboat"),
            cache_dir: PathBuf::from("/var/cache/lifeboat"),
            runtime_dir: PathBuf::from("/run/lifeboat"),
            max_concurrent_jobs: 2,
            catch_up: true,
            metrics_listen: None,
            maintenance_announce: None,
            maintenance_final_backup: "15m".into(),
        }
    }
}

/// `[repositories.NAME]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Path or URL (`s3://`, `gs://`, `az://`).
    pub url: String,
    /// File holding the password (its first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Name of a systemd credential holding the password (`LoadCredential=`).
    #[serde(default)]
    pub password_credential: Option<String>,
    /// A recovery kit to open the repository with instead of a password.
    #[serde(default)]
    pub recovery_kit: Option<PathBuf>,
    /// Storage settings (`endpoint`, `region`, ...), as `--option` on the command line.
    /// Booleans and numbers are taken as TOML writes them (`allow_http = true`).
    #[serde(default, deserialize_with = "option_values")]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub limit_upload_kib: Option<u64>,
    #[serde(default)]
    pub limit_download_kib: Option<u64>,
    /// Packs stored concurrently.
    #[serde(default)]
    pub upload_concurrency: Option<usize>,
    /// Pack reads in flight at once in scheduled checks and restore drills (1-256; default:
    /// one per core for a local repository, 8 for cloud storage).
    #[serde(default)]
    pub download_concurrency: Option<Spanned<usize>>,
    /// When to prune this repository (crontab line); never when absent.
    #[serde(default)]
    pub prune: Option<Spanned<String>>,
    /// Prune's repack threshold ("10%").
    #[serde(default)]
    pub prune_max_unused: Option<Spanned<String>>,
    /// When to check this repository (crontab line); never when absent.
    #[serde(default)]
    pub check: Option<Spanned<String>>,
    /// Share of the pack data each scheduled check re-reads ("10%": every byte is read over
    /// ten checks); absent: structure only.
    #[serde(default)]
    pub check_read_data_subset: Option<Spanned<String>>,
}

/// A command run before or after a backup.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Program and arguments (no shell; use `["/bin/sh", "-c", "..."]` for one).
    pub command: Vec<String>,
    /// Bound on its run time ("5m", "30s"); default 10 minutes.
    #[serde(default)]
    pub timeout: Option<String>,
    /// `abort` (default for `before`): a failing hook fails the run without a backup;
    /// `continue`: the backup runs anyway, and the failure is reported.
    #[serde(default)]
    pub on_failure: Option<String>,
    /// Variables added to its environment (`env = { PGHOST = "db" }`). Hooks start from a clean
    /// environment (PATH, HOME, LANG, LC_*, TZ, ...: the daemon's secrets never reach them).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// `[[jobs]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub name: Spanned<String>,
    pub repository: Spanned<String>,
    pub sources: Spanned<Vec<PathBuf>>,
    #[serde(default)]
    pub excludes: Vec<String>,
    #[serde(default)]
    pub exclude_files: Vec<PathBuf>,
    #[serde(default)]
    pub one_file_system: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Host name recorded in snapshots (default: the machine's).
    #[serde(default)]
    pub host: Option<String>,
    /// Cron line of incremental backups.
    #[serde(default)]
    pub incremental: Option<Spanned<String>>,
    /// Cron line of full backups (wins when both fall due at once).
    #[serde(default)]
    pub full: Option<Spanned<String>>,
    /// IANA time zone of the cron lines (default: the system's).
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// A random delay up to this long before each scheduled run ("10m"), to spread servers.
    #[serde(default)]
    pub random_delay: Option<Spanned<String>>,
    /// Alert when no run succeeded for this long ("26h").
    #[serde(default)]
    pub stale_after: Option<Spanned<String>>,
    #[serde(default)]
    pub before: Option<HookConfig>,
    #[serde(default)]
    pub after: Option<HookConfig>,
    /// Scheduling priority of the backup and its hooks (nice, -20..19).
    #[serde(default)]
    pub nice: Option<i32>,
    /// I/O scheduling class of the backup and its hooks, as ionice(1): `idle`, `best-effort`
    /// or `realtime`. Default: the service's (IOSchedulingClass= in the unit).
    #[serde(default)]
    pub ionice_class: Option<Spanned<String>>,
    /// Level within the class, 0 (first) to 7 (last); default 4. Not for `idle`.
    #[serde(default)]
    pub ionice_level: Option<Spanned<u8>>,
    /// A final incremental backup when the system shuts down.
    #[serde(default)]
    pub on_shutdown: bool,
    /// Which of this job's snapshots to keep; applied after each successful backup.
    #[serde(default)]
    pub retention: Option<Spanned<crate::ops::retention::Policy>>,
    /// When to run a restore drill of the job's latest snapshot (crontab line).
    #[serde(default)]
    pub drill: Option<Spanned<String>>,
    /// What a drill restores: a share of the files ("10%", the default) or "all".
    #[serde(default)]
    pub drill_sample: Option<Spanned<String>>,
    /// Notification channels (by name) for this job's events; default: every channel.
    #[serde(default)]
    pub notify: Option<Spanned<Vec<String>>>,
}

/// The whole file, as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub daemon: DaemonSection,
    #[serde(default)]
    pub repositories: BTreeMap<String, Spanned<RepositoryConfig>>,
    #[serde(default)]
    pub jobs: Vec<Spanned<JobConfig>>,
    /// Notification channels (`[[notify]]`).
    #[serde(default)]
    pub notify: Vec<Spanned<crate::daemon::notify::ChannelConfig>>,
}

/// A job, validated and ready to schedule.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub repository: String,
    pub config: JobConfig,
    pub incremental: Option<Schedule>,
    pub full: Option<Schedule>,
    pub random_delay: Duration,
    pub stale_after: Option<Duration>,
    /// I/O priority for the job's thread (and so its workers and hooks), if set.
    pub ionice: Option<ioprio::Priority>,
    /// Restore drills, and the share of files they restore (`None`: all).
    pub drill: Option<Schedule>,
    pub drill_share: Option<f64>,
}

/// A repository's scheduled prune and check.
#[derive(Debug, Clone, Default)]
pub struct RepositoryTasks {
    pub prune: Option<Schedule>,
    pub prune_max_unused: f64,
    pub check: Option<Schedule>,
    /// Percent of pack data each check reads.
    pub check_read_data_subset: Option<f64>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub daemon: DaemonSection,
    pub repositories: BTreeMap<String, RepositoryConfig>,
    pub jobs: Vec<Job>,
    pub notify: Vec<crate::daemon::notify::ChannelConfig>,
    /// How the daemon acts on maintenance windows.
    pub maintenance: crate::daemon::maintenance::Settings,
    /// Scheduled prune and check per repository.
    pub repository_tasks: BTreeMap<String, RepositoryTasks>,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, col)
}

struct Collector<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Collector<'_> {
    fn push(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }
}

/// The I/O priority of an ionice class name and level.
fn ionice(class: &str, level: Option<u8>) -> Result<ioprio::Priority, String> {
    use ioprio::{BePriorityLevel, Class, RtPriorityLevel};
    let bad_level = |l: u8| format!("ionice_level {l} is outside 0..7");
    let class = match (class, level) {
        ("idle", None) => Class::Idle,
        ("idle", Some(_)) => return Err("the idle class has no levels: drop ionice_level".into()),
        ("best-effort", l) => Class::BestEffort(
            BePriorityLevel::from_level(l.unwrap_or(4)).ok_or_else(|| bad_level(l.unwrap_or(4)))?,
        ),
        ("realtime", l) => Class::Realtime(
            RtPriorityLevel::from_level(l.unwrap_or(4)).ok_or_else(|| bad_level(l.unwrap_or(4)))?,
        ),
        (other, _) => {
            return Err(format!(
                "{other:?} is not an I/O class: use \"idle\", \"best-effort\" or \"realtime\""
            ))
        }
    };
    Ok(ioprio::Priority::new(class))
}

/// Whether a file holding a secret (a password, a recovery kit) is usable: `Err` says why not
/// (missing, not a file, unreadable); `Ok(Some(mode))` when the group or others can read it.
fn secret_file(path: &Path) -> Result<Option<u32>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{} does not exist: every job of this repository would fail; create it (mode 0600) or correct the path",
                path.display()
            )
        } else {
            format!("{}: {e}", path.display())
        }
    })?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    std::fs::File::open(path).map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o7777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The text of the config file at `path`.
fn read_text(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read the config: {e}"),
        }])
    })
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = read_text(path)?;
        Self::parse(path, &text)
    }

    /// What `lifeboat config check` runs: [`Config::load`], and the files the config names
    /// checked as a run would need them: a repository's `password_file` or `recovery_kit` that
    /// does not exist or cannot be read is an error; one the group or others can read is a
    /// warning (returned with the config).
    pub fn check(path: &Path) -> Result<(Self, Vec<ConfigError>), ConfigErrors> {
        let text = read_text(path)?;
        let mut warnings = Vec::new();
        let config = Self::parse_with(path, &text, Some(&mut warnings))?;
        Ok((config, warnings))
    }

    /// Parses and validates config text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigErrors> {
        Self::parse_with(path, text, None)
    }

    /// [`Config::parse`]; with `files`, also checks the secret files the config names (see
    /// [`Config::check`]) and adds the warnings there.
    fn parse_with(
        path: &Path,
        text: &str,
        mut files: Option<&mut Vec<ConfigError>>,
    ) -> Result<Self, ConfigErrors> {
        let mut c = Collector {
            file: path,
            text,
            errors: Vec::new(),
        };
        let file: ConfigFile = match toml::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                c.push(e.span().unwrap_or(0..0), "", e.message().trim().to_string());
                return Err(ConfigErrors(c.errors));
            }
        };
        let d = &file.daemon;
        if d.max_concurrent_jobs == 0 {
            c.push(0..0, "daemon.max_concurrent_jobs", "must be at least 1");
        }
        if let Some(listen) = &d.metrics_listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                c.push(
                    0..0,
                    "daemon.metrics_listen",
                    format!("{listen:?} is not an address like \"127.0.0.1:9188\""),
                );
            }
        }
        let mut maintenance = crate::daemon::maintenance::Settings::default();
        match parse_duration(&d.maintenance_final_backup) {
            Ok(v) => maintenance.final_backup = v,
            Err(e) => c.push(0..0, "daemon.maintenance_final_backup", e),
        }
        if let Some(leads) = &d.maintenance_announce {
            let mut parsed = Vec::new();
            for l in leads {
                match parse_duration(l) {
                    Ok(v) => parsed.push(v),
                    Err(e) => c.push(0..0, "daemon.maintenance_announce", e),
                }
            }
            maintenance.announce = Some(parsed);
        }
        let mut repository_tasks = BTreeMap::new();
        for (name, repo) in &file.repositories {
            let field = format!("repositories.{name}");
            if !valid_name(name) {
                c.push(
                    repo.span(),
                    &field,
                    "repository names use letters, digits, '-', '_' and '.'",
                );
            }
            if let Err(e) = crate::storage::CloudUrl::parse(&repo.get_ref().url) {
                c.push(repo.span(), format!("{field}.url"), e.to_string());
            }
            let r = repo.get_ref();
            let sources = [
                r.password_file.is_some(),
                r.password_credential.is_some(),
                r.recovery_kit.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() > 1 {
                c.push(
                    repo.span(),
                    &field,
                    "give only one of password_file, password_credential and recovery_kit",
                );
            }
            if let Some(warnings) = files.as_deref_mut() {
                for (f, file) in [
                    ("password_file", &r.password_file),
                    ("recovery_kit", &r.recovery_kit),
                ] {
                    let Some(file) = file else { continue };
                    match secret_file(file) {
                        Err(e) => c.push(repo.span(), format!("{field}.{f}"), e),
                        Ok(None) => {}
                        Ok(Some(mode)) => {
                            let (line, column) = line_col(text, repo.span().start);
                            warnings.push(ConfigError {
                                file: path.to_path_buf(),
                                line,
                                column,
                                field: format!("{field}.{f}"),
                                message: format!(
                                    "{} can be read by other users (mode {mode:04o}): whoever reads it can open the repository; make it private: chmod 600 {}",
                                    file.display(),
                                    file.display()
                                ),
                            });
                        }
                    }
                }
            }
            if let Some(v) = r.options.get(crate::storage::RETRY_TIMEOUT_OPTION) {
                if let Err(e) = crate::storage::parse_retry_timeout(v) {
                    c.push(
                        repo.span(),
                        format!("{field}.options.{}", crate::storage::RETRY_TIMEOUT_OPTION),
                        e,
                    );
                }
            }
            let mut tasks = RepositoryTasks {
                prune_max_unused: 10.0,
                ..Default::default()
            };
            for (sched, f, slot) in [
                (&r.prune, "prune", &mut tasks.prune),
                (&r.check, "check", &mut tasks.check),
            ] {
                if let Some(s) = sched {
                    match Schedule::parse(s.get_ref(), None) {
                        Ok(v) => *slot = Some(v),
                        Err(e) => c.push(s.span(), format!("{field}.{f}"), e),
                    }
                }
            }
            if let Some(m) = &r.prune_max_unused {
                match parse_percent(m.get_ref(), 0.0) {
                    Ok(v) => tasks.prune_max_unused = v,
                    Err(e) => c.push(m.span(), format!("{field}.prune_max_unused"), e),
                }
            }
            if let Some(n) = r
                .download_concurrency
                .as_ref()
                .filter(|n| !(1..=crate::storage::MAX_READERS).contains(n.get_ref()))
            {
                c.push(
                    n.span(),
                    format!("{field}.download_concurrency"),
                    format!(
                        "must be 1 to {} (reads in flight at once)",
                        crate::storage::MAX_READERS
                    ),
                );
            }
            if let Some(m) = &r.check_read_data_subset {
                match parse_percent(m.get_ref(), 0.001) {
                    Ok(v) => tasks.check_read_data_subset = Some(v),
                    Err(e) => c.push(m.span(), format!("{field}.check_read_data_subset"), e),
                }
            }
            repository_tasks.insert(name.clone(), tasks);
        }
        let mut jobs = Vec::new();
        let mut names = HashSet::new();
        for (i, spanned) in file.jobs.iter().enumerate() {
            let j = spanned.get_ref();
            let field = |f: &str| format!("jobs[{i}] ({}).{f}", j.name.get_ref());
            let name = j.name.get_ref().clone();
            if !valid_name(&name) {
                c.push(
                    j.name.span(),
                    field("name"),
                    "job names use letters, digits, '-', '_' and '.' (at most 64)",
                );
            } else if !names.insert(name.clone()) {
                c.push(
                    j.name.span(),
                    field("name"),
                    format!("a job named {name:?} is already defined"),
                );
            }
            if !file.repositories.contains_key(j.repository.get_ref()) {
                let known: Vec<&String> = file.repositories.keys().collect();
                c.push(
                    j.repository.span(),
                    field("repository"),
                    format!(
                        "no repository {:?} is defined (known: {known:?})",
                        j.repository.get_ref()
                    ),
                );
            }
            if j.sources.get_ref().is_empty() {
                c.push(
                    j.sources.span(),
                    field("sources"),
                    "give at least one path to back up",
                );
            }
            for s in j.sources.get_ref() {
                if !s.is_absolute() {
                    c.push(
                        j.sources.span(),
                        field("sources"),
                        format!("{} is not an absolute path", s.display()),
                    );
                }
            }
            let tz = match &j.timezone {
                Some(t) => match t.get_ref().parse::<chrono_tz::Tz>() {
                    Ok(tz) => Some(tz),
                    Err(_) => {
                        c.push(
                            t.span(),
                            field("timezone"),
                            format!(
                                "{:?} is not an IANA time zone (like \"Europe/Berlin\")",
                                t.get_ref()
                            ),
                        );
                        None
                    }
                },
                None => None,
            };
            let mut schedule = |s: &Option<Spanned<String>>, f: &str| -> Option<Schedule> {
                let s = s.as_ref()?;
                match Schedule::parse(s.get_ref(), tz) {
                    Ok(sched) => Some(sched),
                    Err(e) => {
                        c.push(s.span(), field(f), e);
                        None
                    }
                }
            };
            let incremental = schedule(&j.incremental, "incremental");
            let full = schedule(&j.full, "full");
            if j.incremental.is_none() && j.full.is_none() {
                c.push(
                    spanned.span(),
                    field("incremental"),
                    "give a schedule: incremental = \"<cron>\" and/or full = \"<cron>\"",
                );
            }
            let mut duration = |s: &Option<Spanned<String>>, f: &str| -> Option<Duration> {
                let s = s.as_ref()?;
                match parse_duration(s.get_ref()) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        c.push(s.span(), field(f), e);
                        None
                    }
                }
            };
            let random_delay = duration(&j.random_delay, "random_delay").unwrap_or_default();
            let stale_after = duration(&j.stale_after, "stale_after");
            for (hook, f) in [(&j.before, "before"), (&j.after, "after")] {
                if let Some(h) = hook {
                    if h.command.is_empty() {
                        c.push(
                            spanned.span(),
                            field(&format!("{f}.command")),
                            "the command is empty",
                        );
                    }
                    if let Some(t) = &h.timeout {
                        if let Err(e) = parse_duration(t) {
                            c.push(spanned.span(), field(&format!("{f}.timeout")), e);
                        }
                    }
                    for name in h.env.keys() {
                        if let Err(e) = crate::daemon::child::check_env_name(name) {
                            c.push(spanned.span(), field(&format!("{f}.env")), e);
                        }
                    }
                    if let Some(p) = &h.on_failure {
                        if p != "abort" && p != "continue" {
                            c.push(
                                spanned.span(),
                                field(&format!("{f}.on_failure")),
                                format!("{p:?}: use \"abort\" or \"continue\""),
                            );
                        }
                    }
                }
            }
            if let Some(n) = j.nice {
                if !(-20..=19).contains(&n) {
                    c.push(
                        spanned.span(),
                        field("nice"),
                        format!("{n} is outside -20..19"),
                    );
                }
            }
            let ionice = match (&j.ionice_class, &j.ionice_level) {
                (None, None) => None,
                (None, Some(l)) => {
                    c.push(
                        l.span(),
                        field("ionice_level"),
                        "give ionice_class too (\"best-effort\" or \"realtime\")",
                    );
                    None
                }
                (Some(class), level) => {
                    let lvl = level.as_ref().map(|l| *l.get_ref());
                    match ionice(class.get_ref(), lvl) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            let span = match (class.get_ref().as_str(), level) {
                                ("idle" | "best-effort" | "realtime", Some(l)) => l.span(),
                                _ => class.span(),
                            };
                            c.push(span, field("ionice_class"), e);
                            None
                        }
                    }
                }
            };
            let drill = match &j.drill {
                Some(s) => match Schedule::parse(s.get_ref(), tz) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        c.push(s.span(), field("drill"), e);
                        None
                    }
                },
                None => None,
            };
            let drill_share = match &j.drill_sample {
                None => Some(10.0),
                Some(s) if s.get_ref().trim() == "all" => None,
                Some(s) => match parse_percent(s.get_ref(), 0.001) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        c.push(s.span(), field("drill_sample"), format!("{e}, or \"all\""));
                        None
                    }
                },
            };
            if let Some(r) = &j.retention {
                if r.get_ref().is_empty() {
                    c.push(
                        r.span(),
                        field("retention"),
                        "this retention policy keeps nothing: give keep_last, keep_daily, ... or keep_within",
                    );
                }
            }
            jobs.push(Job {
                name,
                ionice,
                drill,
                drill_share,
                repository: j.repository.get_ref().clone(),
                config: j.clone(),
                incremental,
                full,
                random_delay,
                stale_after,
            });
        }
        let mut channel_names = HashSet::new();
        for ch in &file.notify {
            if let Err(e) = ch.get_ref().validate() {
                c.push(ch.span(), "notify", e.to_string());
            }
            if !channel_names.insert(ch.get_ref().name().to_string()) {
                c.push(
                    ch.span(),
                    "notify",
                    format!("two channels are named {:?}", ch.get_ref().name()),
                );
            }
        }
        for (i, spanned) in file.jobs.iter().enumerate() {
            if let Some(names) = &spanned.get_ref().notify {
                for n in names.get_ref() {
                    if !channel_names.contains(n) {
                        c.push(
                            names.span(),
                            format!("jobs[{i}].notify"),
                            format!("no [[notify]] channel is named {n:?}"),
                        );
                    }
                }
            }
        }
        if c.errors.is_empty() {
            Ok(Config {
                notify: file.notify.into_iter().map(Spanned::into_inner).collect(),
                path: path.to_path_buf(),
                daemon: file.daemon,
                repositories: file
                    .repositories
                    .into_iter()
                    .map(|(k, v)| (k, v.into_inner()))
                    .collect(),
                jobs,
                maintenance,
                repository_tasks,
            })
        } else {
            Err(ConfigErrors(c.errors))
        }
    }

    /// The job called `name`.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// Storage options as strings: TOML strings as they are, booleans and numbers in their
/// usual text form (`true`, `3`); a list, table or date is refused naming the option.
fn option_values<'de, D>(d: D) -> std::result::Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw = BTreeMap::<String, toml::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "storage option {k}: give a string, a boolean or a number, not a {}",
                        other.type_str()
                    )))
                }
            };
            Ok((k, text))
        })
        .collect()
}

impl RepositoryConfig {
    /// What opens this repository: its settings, `cache_dir` for its metadata cache, and the
    /// daemon's environment (`env`, `lock`, read at the daemon's start-up). The password comes
    /// from `recovery_kit`, `password_file` or `password_credential`, then the environment, in
    /// the order of [`crate::repo::open`].
    pub fn spec(
        &self,
        cache_dir: &Path,
        env: &crate::repo::PasswordEnv,
        lock: crate::repo::LockSettings,
    ) -> crate::repo::RepoSpec {
        let mut spec = crate::repo::RepoSpec::new(&self.url).with_storage(
            self.options.clone(),
            self.limit_upload_kib,
            self.limit_download_kib,
        );
        spec.cache_dir = Some(cache_dir.to_path_buf());
        spec.lock = lock;
        spec.credentials = crate::repo::CredentialSource {
            recovery_kit: self.recovery_kit.clone(),
            password_file: self.password_file.clone(),
            credential: self.password_credential.clone(),
            env: env.clone(),
            prompt: None,
            hint: "set password_file, password_credential or recovery_kit in its \
                   [repositories] section, or give the daemon LIFEBOAT_PASSWORD_FILE, \
                   LIFEBOAT_PASSWORD or the systemd credential lifeboat-password"
                .into(),
        };
        spec
    }

    /// `download_concurrency`, if set (validated: 1 to 256).
    pub fn downloads(&self) -> Option<usize> {
        self.download_concurrency.as_ref().map(|n| *n.get_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[repositories.local]
url = "/var/backups/lifeboat"
password_file = "/etc/lifeboat/local.pass"

[[jobs]]
name = "etc"
repository = "local"
sources = ["/etc"]
incremental = "0 * * * *"
full = "30 3 * * sun"
stale_after = "26h"
"#;

    #[test]
    fn the_reference_shape_parses() {
        let c = Config::parse(Path::new("l.toml"), GOOD).expect("valid");
        assert_eq!(c.jobs.len(), 1);
        assert_eq!(c.jobs[0].stale_after, Some(Duration::from_secs(26 * 3600)));
        assert_eq!(c.daemon.state_dir, PathBuf::from("/var/lib/lifeboat"));
    }

    #[test]
    fn every_mistake_is_reported_with_line_and_field() {
        let bad = r#"
[repositories.local]
url = "/r"

[[jobs]]
name = "etc"
repository = "lcoal"
sources = ["etc"]
incremental = "61 * * * *"
stale_after = "a day"
timezone = "Mars/Olympus"
"#;
        let errs = Config::parse(Path::new("l.toml"), bad)
            .expect_err("invalid")
            .0;
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let find = |field: &str| {
            errs.iter()
                .find(|e| e.field.ends_with(field))
                .unwrap_or_else(|| panic!("no error for {field}: {text:?}"))
        };
        assert_eq!(find("repository").line, 7);
        assert!(find("repository").message.contains("lcoal"));
        assert_eq!(find("sources").line, 8);
        assert_eq!(find("incremental").line, 9);
        assert_eq!(find("stale_after").line, 10);
        assert_eq!(find("timezone").line, 11);
        assert!(text.iter().all(|t| t.starts_with("l.toml:")), "{text:?}");
    }

    /// RELIABILITY case 28: the retry budget is a repository option; a value that is no
    /// duration is a config error naming it.
    /// Issue 21: `allow_http = true` (a TOML boolean) and numbers are storage options as
    /// their quoted forms are; a list or table is refused, naming the option.
    #[test]
    fn storage_options_take_booleans_and_numbers() {
        let with = |v: &str| {
            format!(
                "[repositories.cloud]\nurl = \"s3://b/p\"\npassword_file = \"/p\"\n\
                 options = {{ {v} }}\n"
            )
        };
        let cfg = Config::parse(
            Path::new("l.toml"),
            &with("allow_http = true, region = \"x\", max_retries = 3, virtual_hosted_style_request = false"),
        )
        .expect("booleans and numbers");
        let o = &cfg.repositories["cloud"].options;
        assert_eq!(o["allow_http"], "true");
        assert_eq!(o["virtual_hosted_style_request"], "false");
        assert_eq!(o["max_retries"], "3");
        assert_eq!(o["region"], "x");
        let errs = Config::parse(Path::new("l.toml"), &with("region = [\"a\"]"))
            .expect_err("a list")
            .0;
        assert!(
            errs.iter().any(|e| e.message.contains("region")),
            "{errs:?}"
        );
    }

    #[test]
    fn retry_timeout_option_must_be_a_duration() {
        let with = |v: &str| {
            format!(
                "[repositories.cloud]\nurl = \"s3://b/p\"\npassword_file = \"/p\"\n\
                 options = {{ region = \"eu-west-1\", retry_timeout = \"{v}\" }}\n"
            )
        };
        assert!(Config::parse(Path::new("l.toml"), &with("15m")).is_ok());
        let errs = Config::parse(Path::new("l.toml"), &with("a while"))
            .expect_err("not a duration")
            .0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "repositories.cloud.options.retry_timeout");
        assert!(errs[0].message.contains("a while"), "{errs:?}");
    }

    #[test]
    fn download_concurrency_is_one_to_256() {
        let with = |n: &str| {
            let text = GOOD.replace(
                "password_file = \"/etc/lifeboat/local.pass\"\n",
                &format!(
                    "password_file = \"/etc/lifeboat/local.pass\"\ndownload_concurrency = {n}\n"
                ),
            );
            Config::parse(Path::new("l.toml"), &text)
        };
        let c = with("16").expect("valid");
        assert_eq!(c.repositories["local"].downloads(), Some(16));
        let c = Config::parse(Path::new("l.toml"), GOOD).expect("valid");
        assert_eq!(c.repositories["local"].downloads(), None);
        for bad in ["0", "257"] {
            let errs = with(bad).expect_err("invalid").0;
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert_eq!(errs[0].field, "repositories.local.download_concurrency");
            assert_eq!(errs[0].line, 5, "{}", errs[0]);
            assert!(errs[0].message.contains("1 to 256"), "{}", errs[0]);
        }
        assert!(with("-1").is_err());
    }

    #[test]
    fn hook_environment_names_are_checked() {
        let with = |env: &str| {
            Config::parse(
                Path::new("l.toml"),
                &format!("{GOOD}before = {{ command = [\"/bin/true\"], env = {{ {env} }} }}\n"),
            )
        };
        let c = with("PGHOST = \"db\"").expect("valid");
        let hook = c.jobs[0].config.before.as_ref().expect("hook");
        assert_eq!(hook.env.get("PGHOST").map(String::as_str), Some("db"));
        let err = with("\"PG HOST\" = \"db\"")
            .expect_err("bad name")
            .to_string();
        assert!(
            err.contains("before.env") && err.contains("PG HOST"),
            "{err}"
        );
    }

    #[test]
    fn io_priorities_and_maintenance_settings() {
        let with = |job_extra: &str, daemon: &str| {
            Config::parse(
                Path::new("l.toml"),
                &format!("[daemon]\n{daemon}\n{GOOD}{job_extra}\n"),
            )
        };
        let c = with("ionice_class = \"best-effort\"\nionice_level = 6", "").expect("valid");
        assert_eq!(
            c.jobs[0].ionice.and_then(|p| p.class()),
            Some(ioprio::Class::BestEffort(
                ioprio::BePriorityLevel::from_level(6).expect("level")
            ))
        );
        assert_eq!(c.maintenance.final_backup, Duration::from_secs(15 * 60));
        assert_eq!(c.maintenance.announce, None);
        for (extra, needle, line) in [
            ("ionice_class = \"slow\"", "not an I/O class", 15),
            ("ionice_class = \"idle\"\nionice_level = 3", "no levels", 16),
            (
                "ionice_class = \"realtime\"\nionice_level = 9",
                "outside 0..7",
                16,
            ),
            ("ionice_level = 3", "give ionice_class", 15),
        ] {
            let errs = with(extra, "").expect_err(extra).0;
            assert!(errs[0].message.contains(needle), "{extra}: {errs:?}");
            assert_eq!(errs[0].line, line, "{extra}: {errs:?}");
        }
        let c = with(
            "",
            "maintenance_announce = [\"2d\", \"30m\"]\nmaintenance_final_backup = \"5m\"",
        )
        .expect("valid");
        assert_eq!(
            c.maintenance.announce,
            Some(vec![Duration::from_secs(172800), Duration::from_secs(1800)])
        );
        assert_eq!(c.maintenance.final_backup, Duration::from_secs(300));
        let errs = with("", "maintenance_announce = [\"soon\"]")
            .expect_err("bad lead")
            .0;
        assert_eq!(errs[0].field, "daemon.maintenance_announce", "{errs:?}");
    }

    #[test]
    fn typos_in_keys_and_syntax_errors_name_the_line() {
        let errs = Config::parse(
            Path::new("x.toml"),
            "[[jobs]]\nname = \"a\"\nrepositry = \"r\"\n",
        )
        .expect_err("typo")
        .0;
        assert_eq!(errs[0].line, 3, "{errs:?}");
        assert!(errs[0].message.contains("repositry"), "{errs:?}");
        let errs = Config::parse(Path::new("x.toml"), "[daemon]\ncatch_up = yes\n")
            .expect_err("syntax")
            .0;
        assert_eq!(errs[0].line, 2, "{errs:?}");
    }
}

//! Command-line front end: one file per subcommand, arguments and output only.

/// `println!` that returns the write's error instead of panicking: `lifeboat snapshots | head`
/// closes the pipe early, and the command then stops quietly (see `main`).
///
/// Control characters are escaped, line breaks too ([`lifeboat::display::scrub`]): a name from
/// a backed-up tree or a repository cannot break a line or reach a terminal raw. One line of
/// JSON passes unchanged in meaning; pretty-printed JSON goes through [`jsonln!`].
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        writeln!(std::io::stdout().lock(), "{}", lifeboat::display::scrub(&text))
            .map_err($crate::cli::stdout_error)
    }};
}

/// Prints a value as pretty JSON on standard output (as [`outln!`] does one line): its line
/// breaks are the layout's (JSON strings hold none raw), other control characters are written
/// as `\uHHHH`, the same JSON.
macro_rules! jsonln {
    ($value:expr) => {{
        use std::io::Write as _;
        let text = serde_json::to_string_pretty($value)?;
        writeln!(
            std::io::stdout().lock(),
            "{}",
            lifeboat::display::scrub_lines(&text)
        )
        .map_err($crate::cli::stdout_error)
    }};
}

/// `eprintln!` for messages to people: control characters escaped, as [`outln!`] does.
macro_rules! errln {
    ($($arg:tt)*) => {{
        let text = format!($($arg)*);
        eprintln!("{}", lifeboat::display::scrub(&text));
    }};
}

mod backup;
mod check;
mod daemon;
mod diff;
mod drill;
mod dump;
mod find;
mod forget;
mod hosts;
mod init;
mod key;
mod ls;
mod maintenance;
mod mount;
mod output;
mod password;
mod prune;
mod recover;
mod repair;
mod restore;
mod snapshots;

use std::process::ExitCode;
use std::sync::Arc;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use lifeboat::repo::{LockSettings, RepoSpec};
use lifeboat::Repository;

/// Exit code of a failed command.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a backup that could not read some source files (the snapshot is written), and
/// of a restore with `--allow-partial` that left damaged files out.
pub const EXIT_INCOMPLETE: u8 = 3;

/// Exit code when the repository's storage could not be reached for the whole retry budget
/// (`retry_timeout`): nothing is known to be damaged; run the command again when it is back.
pub const EXIT_UNREACHABLE: u8 = 4;

/// Exit code of a wrong password (as restic's).
pub const EXIT_WRONG_PASSWORD: u8 = 12;

/// Exit code after SIGINT or SIGTERM stopped an operation cleanly (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Exit status when the reader of standard output went away (`lifeboat snapshots | head`):
/// what a shell reports for a command killed by SIGPIPE.
pub const EXIT_BROKEN_PIPE: u8 = 141;

/// Standard output was closed by its reader: not a failure of the command's work.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct OutputClosed;

/// The error of a failed write to standard output.
pub fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(OutputClosed)
    } else {
        anyhow::Error::new(e).context("cannot write to standard output")
    }
}

/// Lifeboat: verified, deduplicating backups for Linux servers.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about, max_term_width = 100)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr: "plain", or "json" (one object per line, for log collectors).
    #[arg(long, global = true, env = "LIFEBOAT_LOG_FORMAT", value_name = "FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Which snapshots a command works on: `--host`, `--job`, `--path` (each repeatable).
#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotFilterArgs {
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots made by this daemon job (repeatable).
    #[arg(long = "job", value_name = "JOB")]
    pub jobs: Vec<String>,
    /// Only snapshots that include this path (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
}

impl SnapshotFilterArgs {
    /// The filter these flags give.
    pub fn to_filter(&self) -> lifeboat::ops::forget::Filter {
        lifeboat::ops::forget::Filter {
            hosts: self.hosts.clone(),
            jobs: self.jobs.clone(),
            paths: self.paths.clone(),
        }
    }
}

/// How many pack reads `restore`, `check` and `drill` keep in flight.
#[derive(Debug, Clone, Args)]
pub struct DownloadArgs {
    /// Packs read at once (default: one per core for a local repository, 8 for cloud storage;
    /// drill --config: the repository's download_concurrency). Each read in flight holds up to
    /// 16 MiB in memory.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=lifeboat::storage::MAX_READERS as i64)
    )]
    download_concurrency: Option<u16>,
}

impl DownloadArgs {
    /// The number given, if any.
    pub fn get(&self) -> Option<usize> {
        self.download_concurrency.map(usize::from)
    }
}

/// How a restore places what it verified: the flags `restore` and `recover` share.
#[derive(Debug, Clone, Copy, Args)]
pub struct PlaceArgs {
    /// Restore the intact files even if some are damaged (exit code 3, damaged files listed).
    #[arg(long)]
    pub allow_partial: bool,
    /// Replace entries that already exist in the target, atomically one by one (restoring
    /// over `/` of a rescue system).
    #[arg(long)]
    pub overwrite: bool,
    /// Make the snapshot's device nodes (as root). Without it they are left out and listed
    /// (exit code 3): a device node gives whoever may open it the device itself.
    #[arg(long)]
    pub devices: bool,
}

/// Which snapshots a command means, beside its selector: the filters of every command that
/// takes a snapshot (restore, ls, drill, snapshots). Every filter given must hold.
#[derive(Debug, Clone, Default, Args)]
pub struct SnapshotArgs {
    /// Only snapshots made by this daemon job.
    #[arg(long, value_name = "JOB")]
    job: Option<String>,
    /// Only snapshots of this host.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Only snapshots in which this absolute path is: backed up itself, beneath a backed-up
    /// path (/etc/ssh in a backup of /etc), or holding one. Repeatable: all of them.
    #[arg(long, value_name = "PATH")]
    path: Vec<String>,
    /// Only snapshots with this tag. Repeatable: all of them.
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
}

impl SnapshotArgs {
    /// The filter, with `paths` (what the command reads, such as `ls`'s path or `restore
    /// --include`) as its paths when no --path is given: `latest` then means the newest
    /// snapshot that has them.
    pub fn filter(&self, paths: &[String]) -> lifeboat::repo::SnapshotFilter {
        lifeboat::repo::SnapshotFilter {
            job: self.job.clone(),
            host: self.host.clone(),
            paths: if self.path.is_empty() {
                paths.to_vec()
            } else {
                self.path.clone()
            },
            tags: self.tag.clone(),
        }
    }
}

/// The repository's snapshots that `which` selects (oldest first), and how many snapshot
/// objects could not be read: those are named on stderr, the intact ones listed anyway (the
/// caller's exit code, 3, tells a script the listing is partial).
pub fn listed(
    repo: &Repository,
    which: &SnapshotArgs,
) -> Result<(
    Vec<(lifeboat::id::SnapshotId, lifeboat::repo::Snapshot)>,
    usize,
)> {
    let list = repo.list_snapshots()?;
    for d in &list.damaged {
        errln!(
            "lifeboat: warning: {d}; it is not listed. {}",
            lifeboat::repo::snapshot::DAMAGED_SNAPSHOT_HINT
        );
    }
    let filter = which.filter(&[]);
    filter.validate()?;
    let snaps = list
        .snapshots
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    Ok((snaps, list.damaged.len()))
}

/// Says which snapshot a command chose (on stderr, beside its output): id, time, host, job
/// and paths, so that an operator sees what `latest` meant.
pub fn announce(id: &lifeboat::id::SnapshotId, s: &lifeboat::repo::Snapshot) {
    errln!(
        "lifeboat: snapshot {}",
        lifeboat::repo::select::describe(id, s)
    );
}

/// Exit code when `latest` matches the snapshots of more than one job, host or set of paths:
/// nothing was done; the candidates are listed, each with the command that selects it.
pub const EXIT_AMBIGUOUS: u8 = 5;

/// The message of an ambiguous `latest`: each candidate, and the command line that was given
/// with the flags (or the snapshot id) that select it.
pub fn ambiguous_message(selector: &str, candidates: &[lifeboat::repo::Candidate]) -> String {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut out = format!(
        "{selector:?} matches the snapshots of {} different jobs, hosts or sets of paths, and \
         lifeboat does not guess which one you mean. The newest of each, and the command for \
         it:",
        candidates.len()
    );
    for c in candidates {
        let at = args.iter().position(|a| a == selector);
        let mut cmd: Vec<String> = vec!["lifeboat".into()];
        match (&c.flags, at) {
            (Some(flags), Some(i)) => {
                cmd.extend(args[..i].iter().cloned());
                cmd.extend(flags.iter().cloned());
                cmd.extend(args[i..].iter().cloned());
            }
            (Some(flags), None) => {
                cmd.extend(args.iter().cloned());
                cmd.extend(flags.iter().cloned());
            }
            (None, Some(i)) => {
                cmd.extend(args[..i].iter().cloned());
                cmd.push(c.id.to_hex());
                cmd.extend(args[i + 1..].iter().cloned());
            }
            (None, None) => {
                cmd.extend(args.iter().cloned());
                cmd.push(c.id.to_hex());
            }
        }
        let line = cmd
            .iter()
            .map(|a| lifeboat::display::shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!("\n  {c}\n    {line}"));
    }
    out
}

/// Where the repository is, and what opens it.
#[derive(Debug, Clone, Args)]
pub struct RepoArgs {
    /// Repository location: a local path, file:///path, s3://bucket/prefix,
    /// gs://bucket/prefix or az://container/prefix.
    #[arg(long, short = 'r', env = "LIFEBOAT_REPOSITORY", value_name = "REPO")]
    pub repo: String,
    /// Read the repository password from this file (its first line). Otherwise the password
    /// comes from the file named by LIFEBOAT_PASSWORD_FILE, LIFEBOAT_PASSWORD, a systemd
    /// credential named "lifeboat-password", or a prompt on the terminal, in this order.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Open the repository with a recovery kit (from `lifeboat key export`) instead of a
    /// password.
    #[arg(
        long,
        env = "LIFEBOAT_RECOVERY_KIT",
        value_name = "FILE",
        conflicts_with = "password_file"
    )]
    pub recovery_kit: Option<PathBuf>,
    /// A storage setting, KEY=VALUE (repeatable): retry_timeout (how long requests are retried
    /// before the storage counts as unreachable, exit code 4; default 5m), and for cloud
    /// repositories endpoint, region, allow_http, virtual_hosted_style_request, ...
    /// (object_store configuration keys). The cloud's standard environment (AWS_*, GOOGLE_*,
    /// AZURE_*) is read too.
    #[arg(long = "option", value_name = "KEY=VALUE", value_parser = parse_option)]
    pub options: Vec<(String, String)>,
    /// Where to keep the metadata cache of cloud repositories (default: $XDG_CACHE_HOME/lifeboat
    /// or ~/.cache/lifeboat).
    #[arg(long, env = "LIFEBOAT_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not use or create the local metadata cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Limit uploads to this many KiB/s.
    #[arg(long, env = "LIFEBOAT_LIMIT_UPLOAD", value_name = "KIB_PER_SEC")]
    pub limit_upload: Option<u64>,
    /// Limit downloads to this many KiB/s.
    #[arg(long, env = "LIFEBOAT_LIMIT_DOWNLOAD", value_name = "KIB_PER_SEC")]
    pub limit_download: Option<u64>,
}

fn parse_option(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl RepoArgs {
    /// What opens the repository these flags name, with the environment read here (the
    /// password's sources, `LIFEBOAT_LOCK_STALE_AFTER`).
    fn spec(&self) -> Result<RepoSpec> {
        let mut spec = RepoSpec::new(&self.repo).with_storage(
            self.options.iter().cloned(),
            self.limit_upload,
            self.limit_download,
        );
        spec.cache_dir = self.cache();
        spec.lock = LockSettings::from_env()?;
        spec.credentials = password::existing(
            self.recovery_kit.clone(),
            self.password_file.clone(),
            &self.repo,
        );
        Ok(spec)
    }

    /// The storage, with retries and limits.
    fn storage(&self) -> Result<std::sync::Arc<dyn lifeboat::storage::Storage>> {
        Ok(self.spec()?.storage()?)
    }

    fn open(&self) -> Result<Repository> {
        Ok(self.spec()?.open()?)
    }

    /// The metadata cache directory these flags give (`None`: no cache).
    fn cache(&self) -> Option<PathBuf> {
        if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(default_cache_dir)
        }
    }
}

/// What opens the repository a command reads from besides its own (`init
/// --copy-params-from SRC`; copy's `--from`): its password or recovery kit and its storage
/// settings, given apart from the other repository's.
#[derive(Debug, Clone, Args)]
pub struct FromArgs {
    /// Read the source repository's password from this file (its first line); otherwise
    /// LIFEBOAT_FROM_PASSWORD_FILE, LIFEBOAT_FROM_PASSWORD or a prompt on a terminal.
    #[arg(long, value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Open the source repository with a recovery kit instead of a password.
    #[arg(
        long,
        env = "LIFEBOAT_FROM_RECOVERY_KIT",
        value_name = "FILE",
        conflicts_with = "from_password_file"
    )]
    pub from_recovery_kit: Option<PathBuf>,
    /// A storage setting of the source repository, KEY=VALUE (repeatable; as --option).
    #[arg(long = "from-option", value_name = "KEY=VALUE", value_parser = parse_option)]
    pub from_options: Vec<(String, String)>,
}

impl FromArgs {
    /// Opens the source repository at `url` (the metadata cache is the other repository's).
    pub fn open(&self, url: &str, cache_dir: Option<PathBuf>) -> Result<Repository> {
        let mut spec =
            RepoSpec::new(url).with_storage(self.from_options.iter().cloned(), None, None);
        spec.cache_dir = cache_dir;
        spec.lock = LockSettings::from_env()?;
        spec.credentials = password::source(
            self.from_recovery_kit.clone(),
            self.from_password_file.clone(),
            url,
        );
        Ok(spec.open()?)
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/lifeboat`, else `~/.cache/lifeboat`
/// (`LIFEBOAT_CACHE_DIR` is read as `--cache-dir`).
fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("lifeboat"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/lifeboat"))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository.
    Init(init::InitArgs),
    /// Back up paths into a new snapshot.
    Backup(backup::BackupArgs),
    /// List snapshots.
    Snapshots(snapshots::SnapshotsArgs),
    /// Each host and job of the repository, its newest snapshot and its age (a fleet view
    /// for monitoring: read-only, no lock, --stale-after, --json, --metrics-file).
    Hosts(hosts::HostsArgs),
    /// List the entries of a snapshot.
    Ls(ls::LsArgs),
    /// Restore a snapshot, verifying every chunk before anything is written.
    Restore(restore::RestoreArgs),
    /// Bring a whole server back: the newest snapshot of every job of one host, all verified
    /// before any is placed, one report at the end (`--dry-run`: what and how long).
    Recover(recover::RecoverArgs),
    /// Write one file of a snapshot to standard output, each chunk verified before it is
    /// written (`lifeboat dump --job db latest /var/backups/db.sql | psql`); with --archive
    /// tar, a directory and everything beneath it as a tar stream.
    Dump(dump::DumpArgs),
    /// Mount the repository read-only (FUSE) on an empty directory: snapshots by id, host,
    /// job and time, every chunk verified as it is read. Serves until unmounted or Ctrl-C.
    Mount(mount::MountArgs),
    /// Search snapshots for entries whose name or path matches a glob (`lifeboat find
    /// /etc/nginx/nginx.conf`, `lifeboat find --job db '*.sql'`), newest snapshot first.
    Find(find::FindArgs),
    /// What changed between two snapshots: entries added, removed and changed (and what
    /// changed: content, size, type, mode, owner, mtime, link target, xattrs, device).
    Diff(diff::DiffArgs),
    /// Verify the repository's structure and, with --read-data, every byte.
    Check(check::CheckArgs),
    /// Remove snapshots by a retention policy (--keep-daily 7 ...) or by id.
    Forget(forget::ForgetArgs),
    /// Delete data no snapshot references and repack partly used packs.
    Prune(prune::PruneArgs),
    /// Remove stale locks (their process is gone, or they were not refreshed in time).
    Unlock(prune::UnlockArgs),
    /// Repair a damaged repository: rebuild the index, or write snapshots without damaged
    /// files (see "When things go wrong" in the README).
    #[command(subcommand)]
    Repair(repair::RepairCommand),
    /// Restore drill: restore a random sample of a snapshot to scratch, verify it, time it,
    /// and estimate how long a full restore would take.
    ///
    /// Restores a random sample of a snapshot (a share of its files or of its bytes, or all of
    /// it) into a fresh scratch directory, verifies every restored file against the snapshot
    /// (size, content hash, mode, mtime), times the restore, estimates how long restoring the
    /// whole snapshot would take, and removes the scratch data. Exit code 0 when the drill
    /// passed, 1 when it found a problem (each is listed: the file and what was wrong, or the
    /// damaged repository object).
    Drill(drill::DrillArgs),
    /// Manage the repository's keys (passwords) and export a recovery kit.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Run the backup daemon (scheduled jobs from the config; run by systemd).
    Daemon(daemon::DaemonArgs),
    /// Show the running daemon's jobs: last result, last success, next runs, progress.
    Status(daemon::StatusArgs),
    /// Run a job of the config now (through the daemon if it runs, else in this process).
    Run(daemon::RunArgs),
    /// Hold a job's (or every job's) scheduled runs, e.g. for maintenance.
    Pause(daemon::PauseArgs),
    /// Let paused jobs run on schedule again.
    Resume(daemon::ResumeArgs),
    /// Validate the daemon's config.
    #[command(subcommand)]
    Config(daemon::ConfigCommand),
    /// Plan maintenance windows: announced, backed up before, no scheduled backups during.
    Maintenance(maintenance::MaintenanceArgs),
}

/// Sets up tracing to stderr; `RUST_LOG` overrides the level. The daemon logs at info.
pub fn init_logging(verbose: u8, daemon: bool, json: bool) {
    let level = match verbose {
        0 if daemon => "info",
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("lifeboat={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        // One JSON object a line: the JSON formatter escapes every field, names included.
        builder.json().try_init()
    } else {
        builder
            .fmt_fields(escaping_fields())
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

/// The fields of a plain log line (the message, then `name=value`), each with its control
/// characters escaped ([`lifeboat::display::scrub`]): a name from a backed-up tree in a message
/// or a field cannot break the line or reach a terminal raw.
fn escaping_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        let text = lifeboat::display::scrub(&text);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Init(a) => init::run(a),
        Command::Backup(a) => backup::run(a),
        Command::Snapshots(a) => snapshots::run(a),
        Command::Hosts(a) => hosts::run(a),
        Command::Ls(a) => ls::run(a),
        Command::Restore(a) => restore::run(a),
        Command::Dump(a) => dump::run(a),
        Command::Recover(a) => recover::run(a),
        Command::Mount(a) => mount::run(a),
        Command::Find(a) => find::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Check(a) => check::run(a),
        Command::Forget(a) => forget::run(a),
        Command::Prune(a) => prune::run(a),
        Command::Unlock(a) => prune::unlock(a),
        Command::Repair(c) => repair::run(c),
        Command::Drill(a) => drill::run(a),
        Command::Key(c) => key::run(c),
        Command::Daemon(a) => daemon::daemon(a),
        Command::Status(a) => daemon::status(a),
        Command::Run(a) => daemon::run(a),
        Command::Pause(a) => daemon::pause(a),
        Command::Resume(a) => daemon::resume(a),
        Command::Config(c) => daemon::config(c),
        Command::Maintenance(c) => maintenance::run(c),
    }
}

/// Shared progress counters.
pub fn progress() -> Arc<lifeboat::progress::Progress> {
    Arc::new(lifeboat::progress::Progress::default())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand's arguments are consistent (unique names and short flags, valid
    /// relations): clap checks this only when a subcommand is used.
    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// `--repo` and its flags describe a repository as the daemon's `[repositories.NAME]`
    /// does: the same location, storage options, limits (KiB/s to bytes/s), password file and
    /// order of password sources.
    #[test]
    fn the_command_line_and_the_daemon_config_build_the_same_description() {
        #[derive(Debug, clap::Parser)]
        struct Flags {
            #[command(flatten)]
            repo: super::RepoArgs,
        }
        use clap::Parser as _;
        let flags = Flags::try_parse_from([
            "lifeboat",
            "--repo",
            "s3://bucket/prefix",
            "--option",
            "region=eu-west-1",
            "--option",
            "retry_timeout=15m",
            "--limit-upload",
            "20",
            "--limit-download",
            "30",
            "--password-file",
            "/etc/lifeboat/pass",
            "--cache-dir",
            "/var/cache/lifeboat",
        ])
        .expect("flags");
        let cli = flags.repo.spec().expect("spec");
        let config = lifeboat::daemon::config::Config::parse(
            std::path::Path::new("lifeboat.toml"),
            "[repositories.r]\nurl = \"s3://bucket/prefix\"\n\
             options = { region = \"eu-west-1\", retry_timeout = \"15m\" }\n\
             limit_upload_kib = 20\nlimit_download_kib = 30\n\
             password_file = \"/etc/lifeboat/pass\"\n\n\
             [[jobs]]\nname = \"j\"\nrepository = \"r\"\nsources = [\"/etc\"]\n\
             incremental = \"0 3 * * *\"\n",
        )
        .expect("config");
        let daemon = config.repositories["r"].spec(
            std::path::Path::new("/var/cache/lifeboat"),
            &cli.credentials.env,
            cli.lock,
        );
        assert_eq!(cli.url, daemon.url);
        assert_eq!(cli.storage.cloud.options, daemon.storage.cloud.options);
        assert_eq!(cli.storage.limit_upload, Some(20 * 1024));
        assert_eq!(cli.storage.limit_upload, daemon.storage.limit_upload);
        assert_eq!(cli.storage.limit_download, daemon.storage.limit_download);
        assert_eq!(cli.cache_dir, daemon.cache_dir);
        assert_eq!(cli.lock, daemon.lock);
        assert_eq!(
            cli.credentials.password_file,
            daemon.credentials.password_file
        );
        assert_eq!(
            cli.credentials.recovery_kit,
            daemon.credentials.recovery_kit
        );
    }
}

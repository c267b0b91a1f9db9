//! The one runner of the daemon's child processes: job hooks (`before`, `after`) and `command`
//! notification channels.
//!
//! - A clean environment: PATH, HOME, USER, LOGNAME, SHELL, LANG, LANGUAGE, LC_*, TZ and
//!   TMPDIR from the daemon's own (PATH defaults to the usual system one), then what the
//!   configuration gives (`env = { NAME = "value" }`), then the LIFEBOAT_* variables of the
//!   caller. Nothing else: the daemon's secrets (LIFEBOAT_PASSWORD, AWS_SECRET_ACCESS_KEY,
//!   CREDENTIALS_DIRECTORY, ...) never reach a child.
//! - Its own process group, so everything it starts is stopped with it.
//! - Standard output and standard error go into one pipe, read while it runs; the last
//!   [`OUTPUT_KEPT`] bytes are kept (a child that writes gigabytes never blocks on a full pipe
//!   and never grows the daemon's memory).
//! - Bounded: at its timeout, and (for children that ask for it) once the daemon is stopping,
//!   its whole process group gets SIGTERM, then SIGKILL [`KILL_GRACE`] later.
//! - When the command itself exits, anything it left running in its group is stopped the same
//!   way: a background process that keeps the output pipe open would otherwise hold the run
//!   past its end, and a leftover `pg_dump` must not outlive its hook. (A hook that must start
//!   something lasting starts it outside the group, e.g. with `systemd-run`.)
//!
//! The leader is observed with `waitid(WNOWAIT)` and reaped only after its group was signalled:
//! while it is an unreaped zombie its process group id cannot be reused, so a signal to the
//! group never reaches an unrelated process.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use parking_lot::Mutex;

/// How much of a child's output (standard output and error together) is kept: the last 64 KiB.
pub const OUTPUT_KEPT: usize = 64 << 10;

/// Between SIGTERM to a child's process group and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// After the command exits, how long its output pipe may stay open before what holds it (a
/// background process it left) is stopped.
const LINGER: Duration = Duration::from_millis(500);

/// The variables passed from the daemon's environment to its children (and every `LC_*`).
pub const PASSED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
];

/// PATH for a child when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// Program and arguments (no shell).
    pub argv: &'a [String],
    /// Variables from the configuration, set over the clean base.
    pub config_env: &'a BTreeMap<String, String>,
    /// The caller's own variables (LIFEBOAT_JOB, ...), set last.
    pub env: Vec<(&'static str, String)>,
    /// Written to its standard input (then closed); `None`: standard input is /dev/null.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// `Some(grace)`: once the daemon is stopping (SIGTERM, SIGINT), the child may run this much
    /// longer, then it is stopped. `None`: the daemon's stop does not stop it (notifications
    /// announcing the stop).
    pub on_stop: Option<Duration>,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The command exited by itself.
    Exited(ExitStatus),
    /// It ran past its timeout; its group was stopped.
    TimedOut,
    /// The daemon is stopping; its group was stopped.
    Stopped,
}

/// What a run of a child gives.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub end: End,
    /// The last [`OUTPUT_KEPT`] bytes of its output, as text.
    pub output: String,
    /// Processes of its group were still running when it ended and were stopped.
    pub leftovers_stopped: bool,
    pub elapsed: Duration,
}

impl Outcome {
    /// Whether the command exited by itself with status 0.
    pub fn success(&self) -> bool {
        matches!(self.end, End::Exited(s) if s.success())
    }

    /// The end of the output on one line, at most `max` characters, for error messages.
    pub fn output_tail(&self, max: usize) -> String {
        let text = self.output.split_whitespace().collect::<Vec<_>>().join(" ");
        let n = text.chars().count();
        if n <= max {
            text
        } else {
            let tail: String = text.chars().skip(n - max).collect();
            format!("...{tail}")
        }
    }

    /// Why it did not succeed, for `program`, e.g. "ran longer than 2s and was stopped";
    /// `None` when it succeeded.
    pub fn failure(&self, timeout: Duration) -> Option<String> {
        let why = match self.end {
            End::Exited(s) if s.success() => return None,
            End::Exited(s) => format!("failed ({s})"),
            End::TimedOut => format!(
                "ran longer than its timeout of {} and was stopped with its process group",
                humantime::format_duration(timeout)
            ),
            End::Stopped => "was stopped with its process group: the daemon is stopping".into(),
        };
        let tail = self.output_tail(500);
        Some(if tail.is_empty() {
            why
        } else {
            format!("{why}: {tail}")
        })
    }
}

/// The environment a child starts from: the passed variables of `from` (the daemon's).
pub fn base_env(from: impl Iterator<Item = (OsString, OsString)>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = from
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| PASSED_ENV.contains(&k) || k.starts_with("LC_"))
        })
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

/// Checks a variable name given in the configuration: letters, digits and `_`, not starting
/// with a digit.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "environment variable name {name:?}: use letters, digits and _, not starting with a digit"
        ))
    }
}

/// The kept end of a stream.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > 2 * OUTPUT_KEPT {
            let cut = self.bytes.len() - OUTPUT_KEPT;
            self.bytes.drain(..cut);
        }
    }

    fn text(&self) -> String {
        let start = self.bytes.len().saturating_sub(OUTPUT_KEPT);
        String::from_utf8_lossy(&self.bytes[start..]).into_owned()
    }
}

/// Runs a child to its end (see the module documentation). `Err` only when it cannot start.
pub fn run(spec: &Spec<'_>) -> std::io::Result<Outcome> {
    let started = Instant::now();
    let (program, args) = spec.argv.split_first().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the command is empty")
    })?;
    // Close-on-exec: a child another thread starts meanwhile must not inherit this pipe (its
    // background processes would hold this run open). The child gets its copies through
    // `Stdio`, which places them as its output and error.
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(base_env(std::env::vars_os()))
        .envs(spec.config_env)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::from(write_end.try_clone()?))
        .stderr(Stdio::from(write_end))
        .process_group(0);
    let spawned = cmd.spawn();
    // The command holds our copies of the pipe's write end: drop it, so the pipe ends when the
    // child's group closes it.
    drop(cmd);
    let mut child = spawned?;

    let tail = Arc::new(Mutex::new(Tail::default()));
    let (eof_tx, eof_rx) = crossbeam_channel::bounded::<()>(1);
    {
        let tail = tail.clone();
        let mut pipe = std::fs::File::from(read_end);
        std::thread::Builder::new()
            .name("lifeboat-child-output".into())
            .spawn(move || {
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => tail.lock().push(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = eof_tx.send(());
            })?;
    }
    if let (Some(input), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        // A child that does not read its input must not stall us: a thread writes it.
        std::thread::Builder::new()
            .name("lifeboat-child-input".into())
            .spawn(move || {
                let _ = stdin.write_all(&input);
            })?;
    }

    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "process id out of range")
    })?);
    let deadline = started + spec.timeout;
    let mut stop_deadline: Option<Instant> = None;
    let mut pause = Duration::from_millis(2);
    let end = loop {
        match waitid(
            Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => break None,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                stop_group(pid, &eof_rx);
                let _ = child.wait();
                return Err(e.into());
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break Some(End::TimedOut);
        }
        if let Some(grace) = spec.on_stop {
            if stop_deadline.is_none() && crate::interrupt::requested() {
                stop_deadline = Some(now + grace);
            }
            if stop_deadline.is_some_and(|d| now >= d) {
                break Some(End::Stopped);
            }
        }
        let next = stop_deadline.map_or(deadline, |d| d.min(deadline));
        std::thread::sleep(pause.min(next.saturating_duration_since(now)));
        pause = (pause * 2).min(Duration::from_millis(50));
    };
    let mut leftovers_stopped = false;
    let end = match end {
        Some(end) => {
            stop_group(pid, &eof_rx);
            child.wait()?;
            end
        }
        None => {
            // The command exited (a zombie, not yet reaped: its group id stays reserved).
            // Output still in the pipe is read; what keeps the pipe open, or still runs in its
            // group, is stopped.
            let pipe_closed = eof_rx.recv_timeout(LINGER).is_ok();
            if !pipe_closed || group_has_live_members(pid) {
                leftovers_stopped = true;
                stop_group(pid, &eof_rx);
            }
            End::Exited(child.wait()?)
        }
    };
    // The reader ends once the group is gone; a process that left the group (setsid) and still
    // holds the pipe is not waited for.
    let _ = eof_rx.recv_timeout(Duration::from_millis(200));
    let output = tail.lock().text();
    Ok(Outcome {
        end,
        output,
        leftovers_stopped,
        elapsed: started.elapsed(),
    })
}

/// SIGTERM to the group led by `pid` (still a zombie or alive, never reaped), then SIGKILL once
/// [`KILL_GRACE`] has passed with members still alive.
fn stop_group(pid: Pid, eof: &crossbeam_channel::Receiver<()>) {
    if killpg(pid, Signal::SIGTERM).is_err() {
        return;
    }
    let give_up = Instant::now() + KILL_GRACE;
    // A group that ended also closed the pipe (unless a member redirected its output): wait on
    // either, looking at the group a few times a second.
    while Instant::now() < give_up {
        let _ = eof.recv_timeout(Duration::from_millis(50));
        if !group_has_live_members(pid) {
            return;
        }
    }
    let _ = killpg(pid, Signal::SIGKILL);
}

/// Whether a process of the group `pgid` runs (zombies do not count: the leader stays one
/// until it is reaped).
fn group_has_live_members(pgid: Pid) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        // No /proc: assume they run, so they are signalled.
        return true;
    };
    let want = pgid.as_raw();
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .any(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
            pgrp == Some(want) && !matches!(state, Some("Z" | "X"))
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    fn spec(argv: &[String], timeout: Duration) -> Spec<'_> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        Spec {
            argv,
            config_env: &EMPTY,
            env: Vec::new(),
            stdin: None,
            timeout,
            on_stop: Some(Duration::ZERO),
        }
    }

    /// Whether any process runs with `marker` in its command line.
    fn marked_running(marker: &str) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            !zombie && String::from_utf8_lossy(&cmdline).contains(marker)
        })
    }

    /// RELIABILITY case 26: a child writing far more than a pipe holds is read while it runs
    /// (it does not block until its timeout), and only the last 64 KiB are kept.
    #[test]
    fn a_flood_of_output_is_read_while_it_runs_and_kept_bounded() {
        let argv = sh("head -c 300000 /dev/zero | tr '\\0' x >&2; echo END; exit 0");
        let o = run(&spec(&argv, Duration::from_secs(60))).unwrap();
        assert!(o.success(), "{:?}", o.end);
        assert!(o.elapsed < Duration::from_secs(30), "{:?}", o.elapsed);
        assert!(o.output.len() <= OUTPUT_KEPT, "{}", o.output.len());
        assert!(
            o.output.ends_with("END\n"),
            "{}",
            &o.output[o.output.len() - 20..]
        );
    }

    /// RELIABILITY case 26: at the timeout the whole process group goes, the background child
    /// of the shell included.
    #[test]
    fn at_the_timeout_the_whole_process_group_is_stopped() {
        let marker = format!("lifeboat-child-test-{}", std::process::id());
        // The marker rides in $0 of two shells (`; :` keeps them from exec'ing sleep).
        let argv = sh(&format!(
            "sh -c 'sleep 1000; :' {marker}-a & exec sh -c 'sleep 1000; :' {marker}-b"
        ));
        let o = run(&spec(&argv, Duration::from_secs(1))).unwrap();
        assert_eq!(o.end, End::TimedOut);
        assert!(o.elapsed < Duration::from_secs(10), "{:?}", o.elapsed);
        assert!(!marked_running(&marker), "a process of the group survived");
        let why = o.failure(Duration::from_secs(1)).unwrap();
        assert!(why.contains("timeout of 1s"), "{why}");
    }

    /// RELIABILITY case 26: a command that exits but leaves a background process holding its
    /// output pipe ends at once; the leftover is stopped.
    #[test]
    fn a_background_leftover_holding_the_pipe_does_not_hold_the_run() {
        let marker = format!("lifeboat-child-leftover-{}", std::process::id());
        let argv = sh(&format!(
            "sh -c 'sleep 1000; :' {marker} & echo started; exit 0"
        ));
        let o = run(&spec(&argv, Duration::from_secs(60))).unwrap();
        assert!(o.success(), "{:?}", o.end);
        assert!(o.leftovers_stopped);
        assert!(o.elapsed < Duration::from_secs(10), "{:?}", o.elapsed);
        assert_eq!(o.output, "started\n");
        assert!(!marked_running(&marker), "the leftover survived");
    }

    /// RELIABILITY case 26: children started at the same time (hooks of jobs running in
    /// parallel, notification commands) never hold each other's output pipe. The pipe was
    /// made without close-on-exec, so a child forked while another run's pipe was open kept
    /// its write end: a background process of one hook held another run open, which then
    /// reported leftovers it did not have (found as a flaky unit test).
    #[test]
    fn runs_at_the_same_time_do_not_hold_each_others_output() {
        let marker = format!("lifeboat-child-crossed-{}", std::process::id());
        let leftover = sh(&format!("sh -c 'sleep 1000; :' {marker} & exit 0"));
        let quick = sh("echo quick");
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..10 {
                    let o = run(&spec(&leftover, Duration::from_secs(60))).unwrap();
                    assert!(o.success(), "{:?}", o.end);
                }
            });
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..40 {
                        let o = run(&spec(&quick, Duration::from_secs(60))).unwrap();
                        assert!(o.success(), "{:?}", o.end);
                        assert!(
                            !o.leftovers_stopped,
                            "a quick run was held by another run's background process"
                        );
                    }
                });
            }
        });
        assert!(!marked_running(&marker), "a leftover survived");
    }

    #[test]
    fn a_failure_reports_the_end_of_its_output() {
        let argv = sh("echo one; echo 'no route to host' >&2; exit 3");
        let o = run(&spec(&argv, Duration::from_secs(60))).unwrap();
        let why = o.failure(Duration::from_secs(60)).unwrap();
        assert!(why.contains("exit status: 3"), "{why}");
        assert!(why.ends_with("one no route to host"), "{why}");
        assert!(!o.leftovers_stopped);
    }

    /// RELIABILITY case 26 (and issue 19's secrets): a child sees only the passed variables,
    /// the configured ones and the caller's.
    #[test]
    fn the_environment_is_clean() {
        let base = base_env(
            [
                ("PATH", "/bin"),
                ("LANG", "C.UTF-8"),
                ("LC_TIME", "C"),
                ("LIFEBOAT_PASSWORD", "secret"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("CREDENTIALS_DIRECTORY", "/run/credentials/lifeboat.service"),
                ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into())),
        );
        let names: Vec<_> = base.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(names, ["PATH", "LANG", "LC_TIME"]);
        let no_path = base_env(std::iter::empty());
        assert_eq!(no_path[0].0, "PATH");

        let config: BTreeMap<String, String> = [("PGHOST".to_string(), "db".to_string())].into();
        let argv = sh("env");
        let mut s = spec(&argv, Duration::from_secs(60));
        s.config_env = &config;
        s.env = vec![("LIFEBOAT_JOB", "etc".into())];
        let o = run(&s).unwrap();
        assert!(o.output.contains("PGHOST=db\n"), "{}", o.output);
        assert!(o.output.contains("LIFEBOAT_JOB=etc\n"), "{}", o.output);
        assert!(o.output.contains("PATH="), "{}", o.output);
        assert!(
            !o.output.contains("CARGO"),
            "a variable of the test's environment reached the child: {}",
            o.output
        );
        assert!(check_env_name("PGHOST").is_ok());
        for bad in ["", "1A", "A=B", "A B"] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn input_is_written_and_a_missing_program_is_an_error() {
        let argv = sh("cat");
        let mut s = spec(&argv, Duration::from_secs(60));
        s.stdin = Some(b"hello".to_vec());
        let o = run(&s).unwrap();
        assert_eq!(o.output, "hello");
        let argv = vec!["/nonexistent/program".to_string()];
        assert!(run(&spec(&argv, Duration::from_secs(60))).is_err());
    }
}

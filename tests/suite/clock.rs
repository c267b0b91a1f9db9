//! Clocks that are wrong or jump (RELIABILITY case 20), with libfaketime (Debian's `faketime`
//! package, which `tests/run.sh` installs): `lifeboat` processes run with their wall clock a
//! day ahead or behind while storage (the kernel's file times, the S3 server's) keeps the real
//! time. The monotonic clock is left alone (`DONT_FAKE_MONOTONIC=1`).

use std::ffi::OsString;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::*;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// libfaketime's preload library; the test fails (never skips) without it.
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!(
            "libfaketime.so.1 not found under /usr/lib/*/faketime/: install Debian's `faketime` \
             package (tests/run.sh does)"
        )
    })
}

/// Runs `cmd` with its wall clock moved by `offset` (libfaketime syntax: "+1d", "-1d").
fn skewed(cmd: &mut Command, offset: &str) {
    cmd.env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", offset)
        .env("DONT_FAKE_MONOTONIC", "1");
}

/// libfaketime keeps its shared state in /dev/shm under the process's pid and removes it when
/// the process exits; a killed one leaves it behind.
fn forget_faketime_state(pid: u32) {
    for name in [
        format!("faketime_shm_{pid}"),
        format!("sem.faketime_sem_{pid}"),
    ] {
        let _ = std::fs::remove_file(std::path::Path::new("/dev/shm").join(name));
    }
}

struct Repo2 {
    url: String,
    s3: bool,
}

impl Repo2 {
    fn cmd(&self, offset: Option<&str>, sub: &str, rest: Vec<OsString>) -> Command {
        let mut cmd = if self.s3 {
            lifeboat_s3_cmd()
        } else {
            lifeboat_cmd()
        };
        cmd.arg(sub).arg("--repo").arg(&self.url).args(rest);
        if let Some(o) = offset {
            skewed(&mut cmd, o);
        }
        cmd
    }

    fn run(&self, offset: Option<&str>, sub: &str, rest: Vec<OsString>) -> Out {
        run_cmd(self.cmd(offset, sub, rest))
    }

    fn snapshots(&self) -> Vec<Value> {
        let out = self.run(None, "snapshots", args!["--json"]).success();
        out.json().as_array().cloned().expect("an array")
    }
}

fn time_of(snapshot: &Value) -> DateTime<Utc> {
    string(snapshot, "time").parse().expect("an RFC 3339 time")
}

/// RELIABILITY case 20: clients whose clocks are a day ahead and a day behind share a
/// repository, on local disk and on the S3 server. Their snapshots carry their (wrong)
/// times, and retention keeps a snapshot from the future without letting it push real ones
/// out. A running backup whose clock is a day behind is not taken for stale by a prune whose
/// clock is a day ahead (nor by `unlock`): lock ages are measured with the storage's clock.
/// Once that backup is killed, prunes a day ahead and a day behind keep the packs it had
/// uploaded (young by the storage's clock): no live data is deleted.
#[test]
fn clocks_a_day_off_delete_no_live_data() {
    let local = Scratch::new();
    for repo in [
        Repo2 {
            url: local.join("repo").display().to_string(),
            s3: false,
        },
        Repo2 {
            url: s3_url("clock"),
            s3: true,
        },
    ] {
        let scratch = Scratch::new();
        let src = scratch.join("src");
        build_plain_tree(&src, 5, 0, 1);
        repo.run(None, "init", args!["--pack-size-mib", "1"])
            .success();
        let now = Utc::now();
        repo.run(Some("-1d"), "backup", args![&src]).success();
        write_file(&src.join("v2.bin"), &random_bytes(MIB as usize, 2));
        repo.run(Some("+1d"), "backup", args![&src]).success();
        write_file(&src.join("v3.bin"), &random_bytes(MIB as usize, 3));
        repo.run(None, "backup", args![&src]).success();
        let snaps = repo.snapshots();
        assert_eq!(snaps.len(), 3);
        let hours = |s: &Value| (time_of(s) - now).num_hours();
        let mut offsets: Vec<i64> = snaps.iter().map(hours).collect();
        offsets.sort();
        assert!(
            offsets[0] <= -23 && offsets[2] >= 23 && offsets[1].abs() <= 1,
            "{}: the snapshots carry their clocks' times (hours from now: {offsets:?})",
            repo.url
        );
        // keep-last 1 keeps the newest real snapshot and the one from the future.
        repo.run(None, "forget", args!["--keep-last", "1"])
            .success();
        let kept: Vec<i64> = repo.snapshots().iter().map(hours).collect();
        assert_eq!(kept.len(), 2, "{}: {kept:?}", repo.url);
        assert!(kept.iter().all(|h| *h > -23), "{}: {kept:?}", repo.url);

        // A backup a day behind, running (paced uploads of new data).
        // 24 MiB at 2 MiB/s: it runs for seconds after its first pack (killed well before).
        write_file(&src.join("v4.bin"), &random_bytes(24 * MIB as usize, 4));
        let mut cmd = repo.cmd(
            Some("-1d"),
            "backup",
            args!["--json", "--limit-upload", "2048", &src],
        );
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn backup");
        let stdout = child.stdout.take().expect("stdout");
        let stored = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| {
                serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v["bytes_written"].as_u64())
                    .is_some_and(|b| b > 0)
            });
        assert!(stored, "{}: the paced backup stored something", repo.url);
        // A prune a day ahead sees its lock as fresh, and unlock leaves it.
        let out = repo.run(Some("+1d"), "prune", args![]).expect_code(1);
        assert!(
            out.stderr().contains("backup (shared)"),
            "{}: prune a day ahead refused: {out}",
            repo.url
        );
        let out = repo.run(Some("+1d"), "unlock", args![]).success();
        assert!(
            !out.stdout().contains("removed lock"),
            "{}: unlock a day ahead removed a live lock: {out}",
            repo.url
        );
        child.kill().expect("kill");
        child.wait().expect("wait");
        forget_faketime_state(child.id());
        // Its packs are unindexed now, and young by the storage's clock: kept by prunes a day
        // ahead and a day behind.
        for offset in ["+1d", "-1d"] {
            let out = repo.run(Some(offset), "prune", args!["--json"]).success();
            let report = out.json();
            assert!(
                num(&report, "unindexed_packs_kept") > 0
                    && num(&report, "unindexed_packs_removed") == 0,
                "{} with the clock {offset}: {report}",
                repo.url
            );
        }
        repo.run(None, "check", args!["--read-data"]).success();
        for s in repo.snapshots() {
            let target = scratch.join(format!("t-{}", string(&s, "id")));
            repo.run(
                None,
                "restore",
                args![string(&s, "id"), "--target", &target],
            )
            .success();
        }
    }
}

/// RELIABILITY case 20: the daemon's clock jumps back an hour while a job runs every two
/// seconds, then forward again. Runs scheduled in the hour it already lived through are not
/// run a second time, the hold is not silent (the log says the clock went back and until
/// when runs are held), and the schedule resumes when the clock passes that time again.
#[test]
fn a_clock_jumping_back_runs_nothing_twice_and_says_so() {
    use std::time::{Duration, Instant};
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 3, 0, 7);
    let repo = scratch.join("repo");
    lifeboat(args!["init", "--repo", &repo]).success();
    let pass = scratch.join("password");
    std::fs::write(&pass, format!("{PASSWORD}\n")).expect("write password");
    let d = scratch.path().display();
    let config = scratch.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"{d}/state\"\ncache_dir = \"{d}/cache\"\nruntime_dir = \"{d}/run\"\n\n\
             [repositories.local]\nurl = \"{}\"\npassword_file = \"{}\"\n\n\
             [[jobs]]\nname = \"often\"\nrepository = \"local\"\nsources = [\"{}\"]\nincremental = \"*/2 * * * * *\"\n",
            repo.display(),
            pass.display(),
            src.display()
        ),
    )
    .expect("write config");
    let clock = scratch.join("faketime");
    std::fs::write(&clock, "+0\n").expect("write clock");
    let log = scratch.join("daemon.log");
    let mut cmd = lifeboat_cmd();
    cmd.args(args!["daemon", "--config", &config])
        .env_remove("LIFEBOAT_PASSWORD")
        .env("LD_PRELOAD", libfaketime())
        .env("FAKETIME_TIMESTAMP_FILE", &clock)
        .env("FAKETIME_NO_CACHE", "1")
        .env("DONT_FAKE_MONOTONIC", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    let mut daemon = cmd.spawn().expect("start daemon");
    let count = || {
        lifeboat(args!["snapshots", "--json", "--repo", &repo])
            .success()
            .json()
            .as_array()
            .map_or(0, Vec::len)
    };
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait = |what: &str, mut cond: Box<dyn FnMut() -> bool + '_>| {
        let started = Instant::now();
        while !cond() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what} did not happen within a minute; the daemon's log:\n{}",
                read_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("two scheduled runs", Box::new(|| count() >= 2));

    // The clock goes back an hour.
    std::fs::write(&clock, "-1h\n").expect("set clock");
    wait(
        "the notice that the clock went back",
        Box::new(|| read_log().contains("the clock went back")),
    );
    // A run that had started before the jump may still finish; nothing new starts.
    for _ in 0..2 {
        wait(
            "the running backup to finish",
            Box::new(|| status_idle(&config)),
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let held = count();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        count(),
        held,
        "runs of the hour the clock went back over ran again:\n{}",
        read_log()
    );
    let notices = read_log().matches("the clock went back").count();
    assert_eq!(notices, 1, "said once per jump:\n{}", read_log());

    // Back to the real time: the schedule resumes.
    std::fs::write(&clock, "+0\n").expect("set clock");
    wait(
        "a run after the clock caught up",
        Box::new(|| count() > held),
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = daemon.wait().expect("wait");
    assert!(status.success(), "daemon exit {status}:\n{}", read_log());
    lifeboat(args!["check", "--repo", &repo]).success();
}

/// Whether the daemon of `config` runs no job right now.
fn status_idle(config: &std::path::Path) -> bool {
    let out = lifeboat(args!["status", "--config", config, "--json"]);
    out.code.is_some()
        && serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["jobs"].as_array().cloned())
            .is_some_and(|jobs| jobs.iter().all(|j| j["running"].is_null()))
}

//! The daemon end to end: the real binary as a process, seconds-level schedules, the control
//! socket, signals, catch-up and staleness, and the systemd unit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// A daemon setup in a scratch directory: a repository, a source folder, a config.
struct Setup {
    scratch: Scratch,
    config: PathBuf,
    repo: PathBuf,
    src: PathBuf,
}

impl Setup {
    fn new(jobs_toml: &str, daemon_extra: &str) -> Self {
        let scratch = Scratch::new();
        let src = scratch.join("src");
        build_plain_tree(&src, 10, 0, 1);
        let repo = scratch.join("repo");
        lifeboat(args!["init", "--repo", &repo]).success();
        let pass = scratch.join("password");
        std::fs::write(&pass, format!("{PASSWORD}\n")).expect("write password");
        let d = scratch.path().display().to_string();
        let text = format!(
            "[daemon]\nstate_dir = \"{d}/state\"\ncache_dir = \"{d}/cache\"\nruntime_dir = \"{d}/run\"\n{daemon_extra}\n\
             [repositories.local]\nurl = \"{}\"\npassword_file = \"{}\"\n\n{}",
            repo.display(),
            pass.display(),
            jobs_toml.replace("SRC", &src.display().to_string())
        );
        let config = scratch.join("lifeboat.toml");
        std::fs::write(&config, text).expect("write config");
        Setup {
            scratch,
            config,
            repo,
            src,
        }
    }

    fn start(&self) -> Daemon {
        self.start_with(&[])
    }

    fn start_with(&self, env: &[(&str, &str)]) -> Daemon {
        self.start_cmd(lifeboat_cmd(), env)
    }

    /// Starts the daemon through `wrapper` (e.g. setpriv as another user; as root only).
    fn start_as(&self, wrapper: &[&str]) -> Daemon {
        self.start_as_with(wrapper, &[])
    }

    fn start_as_with(&self, wrapper: &[&str], env: &[(&str, &str)]) -> Daemon {
        if !is_root() {
            return self.start_with(env);
        }
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(bin());
        lifeboat_env_for(&mut cmd);
        self.start_cmd(cmd, env)
    }

    fn start_cmd(&self, mut cmd: Command, env: &[(&str, &str)]) -> Daemon {
        cmd.env_remove("LIFEBOAT_PASSWORD");
        cmd.envs(env.iter().copied());
        cmd.args(args!["daemon", "--config", &self.config])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.scratch.join("daemon.log")).expect("log"));
        let child = cmd.spawn().expect("start daemon");
        let d = Daemon {
            child,
            log: self.scratch.join("daemon.log"),
        };
        let sock = self.scratch.join("run/lifeboat.sock");
        wait_until(Duration::from_secs(20), || sock.exists(), || d.log());
        d
    }

    fn cli(&self, cmd: &str, rest: Vec<std::ffi::OsString>) -> Out {
        let mut a = args![cmd, "--config", &self.config];
        a.extend(rest);
        lifeboat(a)
    }

    fn status(&self) -> Value {
        self.cli("status", args!["--json"]).json()
    }

    fn snapshots(&self) -> Vec<Value> {
        let out = lifeboat(args!["snapshots", "--json", "--repo", &self.repo]).success();
        out.json().as_array().cloned().unwrap_or_default()
    }
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .expect("signal");
    }

    /// Sends SIGTERM and waits for a clean exit within `bound`.
    fn stop(mut self, bound: Duration) -> String {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "daemon exit {status}: {}", self.log());
                return self.log();
            }
            assert!(
                started.elapsed() < bound,
                "daemon did not stop within {bound:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[track_caller]
fn wait_until(bound: Duration, mut cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < bound,
            "condition not met within {bound:?}; {}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn job(status: &Value, name: &str) -> Value {
    status["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no job {name} in {status}"))
}

#[test]
fn config_errors_name_file_line_and_field() {
    let scratch = Scratch::new();
    let config = scratch.join("broken.toml");
    std::fs::write(
        &config,
        "[repositories.local]\nurl = \"/r\"\n\n[[jobs]]\nname = \"etc\"\nrepository = \"nope\"\nsources = [\"/etc\"]\nincremental = \"0 25 * * *\"\n",
    )
    .expect("write");
    let out = lifeboat(args!["config", "check", "--config", &config]).expect_code(1);
    let err = out.stderr();
    assert!(err.contains(&format!("{}:6:", config.display())), "{err}");
    assert!(err.contains(".repository") && err.contains("nope"), "{err}");
    assert!(
        err.contains(&format!("{}:8:", config.display())) && err.contains(".incremental"),
        "{err}"
    );
    // The daemon refuses to start on it, with the same messages.
    let out = lifeboat(args!["daemon", "--config", &config]).expect_code(1);
    assert!(out.stderr().contains(".incremental"), "{}", out.stderr());
}

/// `config check` fails, naming the field and the file, when a repository's password file
/// does not exist (it said "valid", and every job of the repository then failed), and warns
/// when the group or others can read the password file.
#[test]
fn config_check_requires_the_password_file_and_warns_when_others_can_read_it() {
    let scratch = Scratch::new();
    let pass = scratch.join("local.pass");
    let config = scratch.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[repositories.local]\nurl = \"{}\"\npassword_file = \"{}\"\n",
            scratch.join("repo").display(),
            pass.display()
        ),
    )
    .expect("write");
    let check = || lifeboat(args!["config", "check", "--config", &config]);
    let out = check().expect_code(1);
    let err = out.stderr();
    assert!(
        err.contains("repositories.local.password_file")
            && err.contains(&format!("{} does not exist", pass.display())),
        "{out}"
    );
    assert!(!out.stdout().contains("valid"), "{out}");

    write_file(&pass, b"a password\n");
    set_mode(&pass, 0o600);
    let out = check().success();
    assert!(out.stdout().contains("valid"), "{out}");
    assert!(!out.stderr().contains("warning"), "{out}");

    set_mode(&pass, 0o644);
    let out = check().success();
    assert!(
        out.stderr().contains("warning:")
            && out
                .stderr()
                .contains("can be read by other users (mode 0644)")
            && out.stderr().contains("chmod 600"),
        "{out}"
    );
}

#[test]
fn scheduled_incremental_and_full_backups_status_run_reload_and_stop() {
    let setup = Setup::new(
        "[[jobs]]\nname = \"demo\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"*/2 * * * * *\"\nfull = \"*/9 * * * * *\"\n",
        "",
    );
    let daemon = setup.start();
    wait_until(
        Duration::from_secs(40),
        || {
            let snaps = setup.snapshots();
            let inc = snaps.iter().filter(|s| s["kind"] == "incremental").count();
            let full = snaps.iter().filter(|s| s["kind"] == "full").count();
            inc >= 2 && full >= 1
        },
        || daemon.log(),
    );
    for s in setup.snapshots() {
        assert_eq!(s["job"], "demo", "{s}");
    }
    let status = setup.status();
    let j = job(&status, "demo");
    assert_eq!(j["state"]["last_result"], "success", "{j}");
    assert!(
        j["next_incremental"].is_string() && j["next_full"].is_string(),
        "{j}"
    );
    assert!(setup
        .cli("status", args![])
        .success()
        .stdout()
        .contains("job demo"));

    // `run --full` goes through the daemon and waits for the result.
    let before = setup.snapshots().len();
    let out = setup.cli("run", args!["demo", "--full"]).success();
    assert!(
        out.stdout().contains("queued in the running daemon"),
        "{}",
        out.stdout()
    );
    assert!(setup.snapshots().len() > before);

    // A broken config on SIGHUP is reported and the old one stays in force.
    let good = std::fs::read_to_string(&setup.config).expect("read");
    std::fs::write(
        &setup.config,
        good.replace("*/2 * * * * *", "every two seconds"),
    )
    .expect("write");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until(
        Duration::from_secs(10),
        || daemon.log().contains("not loaded"),
        || daemon.log(),
    );
    let count = setup.snapshots().len();
    wait_until(
        Duration::from_secs(20),
        || setup.snapshots().len() > count,
        || daemon.log(),
    );
    assert_eq!(
        job(&setup.status(), "demo")["state"]["last_result"],
        "success"
    );

    // Pause holds scheduled runs; resume lets them go again.
    std::fs::write(&setup.config, &good).expect("write");
    setup.cli("pause", args!["demo"]).success();
    assert!(job(&setup.status(), "demo")["paused_until"].is_string());
    setup.cli("resume", args!["demo"]).success();
    assert!(job(&setup.status(), "demo")["paused_until"].is_null());

    let log = daemon.stop(Duration::from_secs(30));
    assert!(log.contains("lifeboat daemon stopped"), "{log}");
    assert!(
        !setup.scratch.join("run/lifeboat.sock").exists(),
        "socket removed at exit"
    );
    // The state survives: a new daemon knows the last success.
    let state: Value = serde_json::from_slice(
        &std::fs::read(setup.scratch.join("state/state.json")).expect("state"),
    )
    .expect("json");
    assert!(state["jobs"]["demo"]["last_success"].is_string(), "{state}");
    lifeboat(args!["check", "--read-data", "--repo", &setup.repo]).success();
}

/// RELIABILITY case 3: `systemctl stop` (SIGTERM) of the daemon while it backs up: it stops within a bound, the run is reported interrupted, no snapshot, the repository checks clean, and the next run reuses the upload.
#[test]
fn sigterm_during_a_backup_stops_cleanly_and_the_next_run_reuses_the_upload() {
    let setup = Setup::new(
        "[[jobs]]\nname = \"big\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n",
        "",
    );
    for i in 0..24 {
        write_file(
            &setup.src.join(format!("big{i:02}.bin")),
            &random_bytes(4 << 20, 100 + i),
        );
    }
    // Slow enough that the stop lands mid-backup: unthrottled, these 96 MiB back up in
    // about 0.1 s, before a status poll sees the first pack.
    with_repository_settings(&setup, "limit_upload_kib = 24576");
    let daemon = setup.start();
    setup
        .cli("run", args!["big", "--full", "--no-wait"])
        .success();
    // Wait until the backup has stored at least one pack, then stop the daemon.
    wait_until(
        Duration::from_secs(60),
        || {
            let j = job(&setup.status(), "big");
            j["running"]["bytes_added"].as_u64().unwrap_or(0) > 0
        },
        || daemon.log(),
    );
    let log = daemon.stop(Duration::from_secs(60));
    assert!(
        log.contains("FAILED") && log.contains("interrupted"),
        "the run was stopped: {log}"
    );
    assert!(
        setup.snapshots().is_empty(),
        "no snapshot from an interrupted run"
    );
    lifeboat(args!["check", "--read-data", "--repo", &setup.repo]).success();
    // Without a daemon, `run` runs the job in-process; it reuses what was uploaded.
    let out = setup.cli("run", args!["big"]).success();
    assert!(
        out.stderr().contains("no daemon is running"),
        "{}",
        out.stderr()
    );
    let snaps = setup.snapshots();
    assert_eq!(snaps.len(), 1);
    let added = snaps[0]["summary"]["bytes_added"]
        .as_u64()
        .expect("bytes_added");
    let total = snaps[0]["summary"]["total_bytes"].as_u64().expect("total");
    assert!(
        added < total,
        "the second run stored {added} of {total} bytes: nothing was reused"
    );
}

/// `status` of a running backup says how far it is (issue 21): a job with a parent snapshot
/// shows a percent between 0 and 100 and the time left, in JSON and in the text.
#[test]
fn status_shows_a_running_backup_s_percent_and_time_left() {
    let setup = Setup::new(
        "[[jobs]]\nname = \"big\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n",
        "",
    );
    for i in 0..12 {
        write_file(
            &setup.src.join(format!("big{i:02}.bin")),
            &random_bytes(4 << 20, 300 + i),
        );
    }
    // The parent snapshot, made without a daemon: the next backup's total comes from it.
    setup.cli("run", args!["big"]).success();
    // New content of the same size, uploaded slowly: the run takes seconds.
    for i in 0..12 {
        write_file(
            &setup.src.join(format!("big{i:02}.bin")),
            &random_bytes(4 << 20, 400 + i),
        );
    }
    with_repository_settings(&setup, "limit_upload_kib = 4096");
    let daemon = setup.start();
    setup
        .cli("run", args!["big", "--full", "--no-wait"])
        .success();
    let mut seen = Value::Null;
    wait_until(
        Duration::from_secs(60),
        || {
            let j = job(&setup.status(), "big");
            let running = &j["running"];
            let ok = running["percent"]
                .as_f64()
                .is_some_and(|p| p > 0.0 && p < 100.0)
                && running["eta_secs"].as_f64().is_some_and(|s| s > 0.0);
            if ok {
                seen = running.clone();
            }
            ok
        },
        || daemon.log(),
    );
    assert!(num(&seen, "bytes_read") > 0, "{seen}");
    wait_until(
        Duration::from_secs(60),
        || {
            let text = setup.cli("status", args![]).stdout();
            text.contains("% done, about") && text.contains("left")
        },
        || {
            format!(
                "{}\n{}",
                setup.cli("status", args![]).stdout(),
                daemon.log()
            )
        },
    );
    daemon.stop(Duration::from_secs(60));
}

/// RELIABILITY case 20 (a clock or daemon that jumps forward): runs missed while the daemon was stopped are caught up once, never replayed one by one.
#[test]
fn a_missed_run_is_caught_up_once_after_a_restart() {
    let jobs = "[[jobs]]\nname = \"yearly\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n";
    for catch_up in [true, false] {
        let setup = Setup::new(jobs, &format!("catch_up = {catch_up}"));
        // The daemon last looked in 2020: six New Year runs were missed since.
        std::fs::create_dir_all(setup.scratch.join("state")).expect("mkdir");
        std::fs::write(
            setup.scratch.join("state/state.json"),
            r#"{"jobs": {"yearly": {"cursor": "2020-06-01T00:00:00Z"}}}"#,
        )
        .expect("write state");
        let daemon = setup.start();
        if catch_up {
            wait_until(
                Duration::from_secs(30),
                || setup.snapshots().len() == 1,
                || daemon.log(),
            );
            std::thread::sleep(Duration::from_secs(2));
            assert_eq!(
                setup.snapshots().len(),
                1,
                "caught up once, not once per missed run"
            );
            let log = daemon.stop(Duration::from_secs(30));
            assert!(log.contains("catch-up"), "{log}");
        } else {
            std::thread::sleep(Duration::from_secs(3));
            let log = daemon.stop(Duration::from_secs(30));
            assert!(setup.snapshots().is_empty(), "catch_up = false: {log}");
            assert!(log.contains("catch_up is off"), "{log}");
        }
    }
}

#[test]
fn a_job_without_success_within_its_bound_is_reported_stale() {
    let setup = Setup::new(
        "[[jobs]]\nname = \"rare\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\nstale_after = \"2s\"\n",
        "",
    );
    let daemon = setup.start();
    wait_until(
        Duration::from_secs(20),
        || job(&setup.status(), "rare")["stale"] == true,
        || daemon.log(),
    );
    let out = setup.cli("status", args![]).expect_code(1);
    assert!(out.stdout().contains("STALE"), "{}", out.stdout());
    wait_until(
        Duration::from_secs(10),
        || daemon.log().contains("STALE"),
        || daemon.log(),
    );
    // A success clears it.
    setup.cli("run", args!["rare"]).success();
    assert_eq!(job(&setup.status(), "rare")["stale"], false);
    daemon.stop(Duration::from_secs(30));
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    for name in ["lifeboat.service", "lifeboat-shutdown.service"] {
        let scratch = Scratch::new();
        let unit = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("systemd")
                .join(name),
        )
        .expect("unit");
        // verify checks that the executables exist: point them at the binary under test.
        let unit = unit.replace("/usr/local/bin/lifeboat", bin());
        let path = scratch.join(name);
        std::fs::write(&path, unit).expect("write");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian package systemd) is needed to check the units");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn on_shutdown_runs_the_marked_jobs_once_each() {
    let setup = Setup::new(
        "[[jobs]]\nname = \"last\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\non_shutdown = true\n\n\
         [[jobs]]\nname = \"other\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n",
        "",
    );
    let daemon = setup.start();
    let out = setup.cli("run", args!["--on-shutdown"]).success();
    assert!(
        out.stdout().contains("job last") && !out.stdout().contains("job other"),
        "{}",
        out.stdout()
    );
    let snaps = setup.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["job"], "last");
    daemon.stop(Duration::from_secs(30));
    // Without a daemon (already stopped), it runs in-process.
    setup.cli("run", args!["--on-shutdown"]).success();
    assert_eq!(setup.snapshots().len(), 2);
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let attempt = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(addr)?;
        // A server that never answers fails the request instead of hanging the test.
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    };
    let text = match attempt() {
        Ok(t) => t,
        Err(e) => return (0, format!("request failed: {e}")),
    };
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn metrics_and_health_endpoints() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let setup = Setup::new(
        "[[jobs]]\nname = \"m\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\nstale_after = \"4s\"\n",
        &format!("metrics_listen = \"{addr}\""),
    );
    let daemon = setup.start();
    let (code, body) = http_get(&addr, "/health");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    setup.cli("run", args!["m"]).success();
    wait_until(
        Duration::from_secs(10),
        || {
            http_get(&addr, "/metrics")
                .1
                .contains("lifeboat_job_successes_total{job=\"m\"} 1")
        },
        || http_get(&addr, "/metrics").1,
    );
    let (code, metrics) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    for needle in [
        "lifeboat_job_last_success_timestamp_seconds{job=\"m\"}",
        "lifeboat_job_last_bytes_read{job=\"m\"}",
        "lifeboat_job_last_bytes_added{job=\"m\"}",
        "lifeboat_job_last_files{job=\"m\"} 10",
        "lifeboat_job_running{job=\"m\"} 0",
        "lifeboat_job_last_duration_seconds{job=\"m\"}",
        "lifeboat_job_failures_total{job=\"m\"} 0",
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes ",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    // Past its staleness bound without a success, /health answers 503 naming the job.
    wait_until(
        Duration::from_secs(20),
        || http_get(&addr, "/health").0 == 503,
        || http_get(&addr, "/health").1,
    );
    assert!(http_get(&addr, "/health").1.contains('m'));
    assert!(http_get(&addr, "/metrics")
        .1
        .contains("lifeboat_job_stale{job=\"m\"} 1"));
    assert_eq!(http_get(&addr, "/nope").0, 404);
    daemon.stop(Duration::from_secs(30));
}

/// A local HTTP receiver that records the bodies of the requests it gets.
fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut len = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line.trim_end() != "" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            sink.lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ = (&stream)
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn failures_and_staleness_are_notified_to_a_webhook() {
    let (url, got) = receiver();
    let setup = Setup::new(
        &format!(
            "[[notify]]\ntype = \"webhook\"\nname = \"ops\"\nurl = \"{url}\"\n\n\
             [repositories.gone]\nurl = \"/nonexistent/lifeboat-repo\"\npassword_file = \"/nonexistent/pass\"\n\n\
             [[jobs]]\nname = \"broken\"\nrepository = \"gone\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\nstale_after = \"3s\"\n"
        ),
        "",
    );
    let daemon = setup.start();
    let out = setup.cli("run", args!["broken"]).expect_code(1);
    assert!(out.stderr().contains("FAILED"), "{}", out.stderr());
    let has = |kind: &str| {
        got.lock()
            .expect("lock")
            .iter()
            .filter_map(|b| serde_json::from_str::<Value>(b).ok())
            .any(|e| e["kind"] == kind && (e["job"] == "broken" || kind == "daemon_started"))
    };
    wait_until(
        Duration::from_secs(20),
        || has("backup_failed"),
        || format!("{:?} {}", got.lock().map(|g| g.clone()), daemon.log()),
    );
    let failure = got
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .find(|e| e["kind"] == "backup_failed")
        .expect("failure event");
    assert!(
        failure["summary"].as_str().unwrap_or("").contains("broken"),
        "{failure}"
    );
    assert!(has("daemon_started"));
    wait_until(
        Duration::from_secs(30),
        || has("stale"),
        || format!("{:?}", got.lock().map(|g| g.clone())),
    );
    daemon.stop(Duration::from_secs(30));
    wait_until(
        Duration::from_secs(10),
        || {
            got.lock()
                .expect("lock")
                .iter()
                .any(|b| b.contains("daemon_stopping"))
        },
        || format!("{:?}", got.lock().map(|g| g.clone())),
    );
}

#[test]
fn logs_can_be_json_lines_for_collectors() {
    let setup = Setup::new(
        "[[jobs]]\nname = \"j\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n",
        "",
    );
    let daemon = setup.start_with(&[("LIFEBOAT_LOG_FORMAT", "json")]);
    setup.cli("run", args!["j"]).success();
    let log = daemon.stop(Duration::from_secs(30));
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "backup finished" && e["fields"]["job"] == "j"),
        "{log}"
    );
    assert!(events
        .iter()
        .all(|e| e["level"].is_string() && e["timestamp"].is_string()));
}

#[test]
fn a_job_runs_at_its_configured_nice_level_and_io_class() {
    let setup = Setup::new(
        "[[jobs]]\nname = \"gentle\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\nnice = 7\n\
         ionice_class = \"best-effort\"\nionice_level = 6\n\
         before = { command = [\"/bin/sh\", \"-c\", \"cut -d' ' -f19 /proc/self/stat > NICEFILE; ionice -p $$ > NICEFILE.io\"] }\n\n\
         [[jobs]]\nname = \"idle\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\nionice_class = \"idle\"\n\
         before = { command = [\"/bin/sh\", \"-c\", \"ionice -p $$ > NICEFILE.idle\"] }\n",
        "",
    );
    let nice_file = setup.scratch.join("nice.txt");
    let text = std::fs::read_to_string(&setup.config)
        .expect("read")
        .replace("NICEFILE", &nice_file.display().to_string());
    std::fs::write(&setup.config, text).expect("write");
    let daemon = setup.start();
    setup.cli("run", args!["gentle"]).success();
    let seen = std::fs::read_to_string(&nice_file).expect("the hook ran");
    let base: i32 = std::fs::read_to_string("/proc/self/stat")
        .expect("stat")
        .split(' ')
        .nth(18)
        .and_then(|n| n.parse().ok())
        .expect("own nice");
    // nice = 7 is absolute; without privileges the kernel refuses to lower a nice level, so a
    // test run that is itself niced beyond 7 keeps its own level (and the daemon warns).
    let expected = if is_root() { 7 } else { 7.max(base) };
    assert_eq!(
        seen.trim().parse::<i32>().expect("number"),
        expected,
        "{}",
        daemon.log()
    );
    let io = |suffix: &str| {
        std::fs::read_to_string(setup.scratch.join(format!("nice.txt.{suffix}")))
            .expect("the hook ran")
            .trim()
            .to_string()
    };
    assert_eq!(io("io"), "best-effort: prio 6", "{}", daemon.log());
    setup.cli("run", args!["idle"]).success();
    assert_eq!(io("idle"), "idle", "{}", daemon.log());
    daemon.stop(Duration::from_secs(30));
}

/// Every webhook event of `kind` received so far, as JSON.
fn events(got: &std::sync::Mutex<Vec<String>>, kind: &str) -> Vec<Value> {
    got.lock()
        .expect("lock")
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .filter(|e| e["kind"] == kind)
        .collect()
}

fn snapshot_time(s: &Value) -> chrono::DateTime<chrono::Utc> {
    s["time"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|| panic!("snapshot without time: {s}"))
}

#[test]
fn a_maintenance_window_is_announced_backed_up_before_held_and_reported_over() {
    let (url, got) = receiver();
    let setup = Setup::new(
        &format!(
            "[[notify]]\ntype = \"webhook\"\nname = \"ops\"\nurl = \"{url}\"\n\n\
             [[jobs]]\nname = \"final\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\non_shutdown = true\n\n\
             [[jobs]]\nname = \"busy\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"*/2 * * * * *\"\n"
        ),
        "maintenance_announce = [\"4s\"]\nmaintenance_final_backup = \"2s\"\n",
    );
    let daemon = setup.start();
    let added = setup
        .cli(
            "maintenance",
            args![
                "add",
                "--start",
                "+6s",
                "--duration",
                "6s",
                "--reason",
                "disk swap",
                "--impact",
                "web shop offline",
                "--json"
            ],
        )
        .success()
        .json();
    assert_eq!(added["phase"], "upcoming", "{added}");
    let start = chrono::DateTime::parse_from_rfc3339(added["start"].as_str().expect("start"))
        .expect("time")
        .with_timezone(&chrono::Utc);
    let end = start + chrono::TimeDelta::seconds(6);
    let listed = setup
        .cli("maintenance", args!["list", "--json"])
        .success()
        .json();
    assert_eq!(listed[0]["reason"], "disk swap", "{listed}");

    let phase = |p: &str| {
        events(&got, "maintenance")
            .into_iter()
            .find(|e| e["details"]["phase"] == p)
    };
    let context = || format!("{:?}\n{}", got.lock().map(|g| g.clone()), daemon.log());
    wait_until(
        Duration::from_secs(20),
        || phase("announced").is_some(),
        context,
    );
    let announced = phase("announced").expect("announced");
    let text = announced["summary"].as_str().unwrap_or("");
    assert!(
        text.contains("disk swap") && text.contains("web shop offline"),
        "{announced}"
    );
    wait_until(
        Duration::from_secs(20),
        || phase("started").is_some(),
        context,
    );
    let status = setup.status();
    assert_eq!(status["maintenance"][0]["phase"], "active", "{status}");
    wait_until(
        Duration::from_secs(30),
        || phase("first_backup").is_some(),
        context,
    );
    let ended = phase("ended").expect("ended");
    assert_eq!(
        ended["details"]["held_jobs"],
        serde_json::json!(["busy"]),
        "{ended}"
    );
    assert_eq!(phase("first_backup").expect("first")["job"], "busy");
    let log = daemon.stop(Duration::from_secs(30));
    assert!(
        log.contains("final backups before the maintenance window queued"),
        "{log}"
    );

    let snaps = setup.snapshots();
    let finals: Vec<_> = snaps.iter().filter(|s| s["job"] == "final").collect();
    assert_eq!(finals.len(), 1, "one final backup: {snaps:?}");
    let t = snapshot_time(finals[0]);
    assert!(
        t < start && t > start - chrono::TimeDelta::seconds(10),
        "final backup at {t}, window at {start}"
    );
    let during: Vec<_> = snaps
        .iter()
        .filter(|s| s["job"] == "busy")
        .map(snapshot_time)
        .filter(|t| *t >= start + chrono::TimeDelta::seconds(1) && *t < end)
        .collect();
    assert!(
        during.is_empty(),
        "backups ran during the window: {during:?}"
    );
    assert!(
        snaps
            .iter()
            .any(|s| s["job"] == "busy" && snapshot_time(s) >= end),
        "no backup after the window: {snaps:?}"
    );
    // Over now: listed only with --all.
    let all = setup
        .cli("maintenance", args!["list", "--all", "--json"])
        .success()
        .json();
    assert_eq!(all[0]["phase"], "over", "{all}");
    assert_eq!(
        setup
            .cli("maintenance", args!["list", "--json"])
            .success()
            .json(),
        serde_json::json!([])
    );
}

#[test]
fn maintenance_windows_are_validated_listed_and_cancelled_without_a_daemon() {
    let setup = Setup::new(
        "[[jobs]]\nname = \"j\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n",
        "",
    );
    let bad = |rest: Vec<std::ffi::OsString>, expect: &str| {
        let out = setup.cli("maintenance", rest).failure();
        assert!(out.stderr().contains(expect), "{}", out.stderr());
    };
    bad(
        args![
            "add",
            "--start",
            "soon",
            "--duration",
            "1h",
            "--reason",
            "x"
        ],
        "is not a time",
    );
    bad(
        args![
            "add",
            "--start",
            "+1h",
            "--duration",
            "lots",
            "--reason",
            "x"
        ],
        "--duration",
    );
    bad(
        args![
            "add",
            "--start",
            "2020-01-01 00:00",
            "--duration",
            "1h",
            "--reason",
            "x"
        ],
        "already over",
    );
    bad(
        args!["add", "--start", "+1h", "--duration", "1h", "--reason", " "],
        "give a reason",
    );
    let out = setup
        .cli(
            "maintenance",
            args![
                "add",
                "--start",
                "+2d",
                "--duration",
                "3h",
                "--reason",
                "move racks"
            ],
        )
        .success();
    assert!(
        out.stdout().contains("maintenance window 1"),
        "{}",
        out.stdout()
    );
    let out = setup.cli("maintenance", args!["list"]).success();
    assert!(
        out.stdout().contains("upcoming") && out.stdout().contains("move racks"),
        "{}",
        out.stdout()
    );
    setup.cli("maintenance", args!["cancel", "1"]).success();
    bad(args!["cancel", "1"], "already cancelled");
    bad(args!["cancel", "7"], "no maintenance window 7");
    let out = setup.cli("maintenance", args!["list"]).success();
    assert!(
        out.stdout().contains("no maintenance windows"),
        "{}",
        out.stdout()
    );
    let all = setup
        .cli("maintenance", args!["list", "--all", "--json"])
        .success()
        .json();
    assert_eq!(all[0]["phase"], "cancelled", "{all}");
}

/// Adds settings to the config's `[repositories.local]` section.
fn with_repository_settings(setup: &Setup, settings: &str) {
    let text = std::fs::read_to_string(&setup.config).expect("read config");
    let text = text.replacen(
        "[repositories.local]\n",
        &format!("[repositories.local]\n{settings}\n"),
        1,
    );
    std::fs::write(&setup.config, text).expect("write config");
}

fn task(status: &Value, key: &str) -> Value {
    status["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["task"] == key))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn retention_prune_check_and_drills_run_on_their_schedules() {
    let (url, got) = receiver();
    let setup = Setup::new(
        &format!(
            "[[notify]]\ntype = \"webhook\"\nname = \"ops\"\nurl = \"{url}\"\n\n\
             [[jobs]]\nname = \"t\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"*/2 * * * * *\"\n\
             drill = \"*/3 * * * * *\"\ndrill_sample = \"all\"\nretention = {{ keep_last = 2 }}\n"
        ),
        "",
    );
    // One more reader than this machine's default for a local repository (one per core, at
    // least 2), so the figure in the reports can only come from the setting.
    let readers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
        + 1;
    with_repository_settings(
        &setup,
        &format!(
            "prune = \"*/4 * * * * *\"\ncheck = \"*/3 * * * * *\"\ncheck_read_data_subset = \"50%\"\n\
             download_concurrency = {readers}"
        ),
    );
    std::fs::write(setup.src.join("changing"), b"0").expect("write");
    let daemon = setup.start();
    let done = |key: &str| {
        let s = setup.status();
        num(&task(&s, key)["state"], "runs") >= 2
    };
    let context = || format!("{}\n{}", setup.status(), daemon.log());
    wait_until(
        Duration::from_secs(60),
        || {
            // New content for every backup, so retention has something to forget.
            let n = rand::random::<u64>();
            let _ = std::fs::write(setup.src.join("changing"), n.to_string());
            done("prune:local") && done("check:local") && done("drill:t")
        },
        context,
    );
    let status = setup.status();
    for key in ["prune:local", "check:local", "drill:t"] {
        let t = task(&status, key);
        assert_eq!(t["state"]["last_ok"], true, "{key}: {t}");
    }
    let drill = &task(&status, "drill:t")["state"]["last_report"];
    assert_eq!(drill["passed"], true, "{drill}");
    assert!(
        drill["estimated_full_restore_secs"].as_f64().unwrap_or(0.0) > 0.0,
        "{drill}"
    );
    assert_eq!(
        drill["files_restored"], drill["total_files"],
        "drill_sample = all: {drill}"
    );
    // The repository's download_concurrency reaches the scheduled drill's restore and check.
    assert_eq!(drill["readers"], readers, "{drill}");
    let check = &task(&status, "check:local")["state"]["last_report"];
    assert_eq!(check["readers"], readers, "{check}");
    assert!(
        check["read_data_subset"]
            .as_str()
            .is_some_and(|s| s.ends_with("/2")),
        "{check}"
    );
    let j = job(&status, "t");
    assert!(num(&j["state"], "successes") >= 3, "{j}");
    daemon.stop(Duration::from_secs(60));
    // Retention kept at most two of the job's snapshots (the last run may have been between
    // its backup and its retention when the daemon stopped: then three).
    let snaps = setup.snapshots();
    assert!((1..=3).contains(&snaps.len()), "{snaps:?}");
    lifeboat(args!["check", "--read-data", "--repo", &setup.repo]).success();
    assert!(
        !events(&got, "drill_passed").is_empty(),
        "{:?}",
        got.lock().map(|g| g.clone())
    );
}

#[test]
fn a_damaged_repository_fails_its_drill_and_check_and_people_are_told() {
    let (url, got) = receiver();
    let setup = Setup::new(
        &format!(
            "[[notify]]\ntype = \"webhook\"\nname = \"ops\"\nurl = \"{url}\"\n\n\
             [[jobs]]\nname = \"d\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n\
             drill = \"*/2 * * * * *\"\ndrill_sample = \"all\"\n"
        ),
        "",
    );
    with_repository_settings(
        &setup,
        "check = \"*/2 * * * * *\"\ncheck_read_data_subset = \"100%\"",
    );
    std::fs::write(setup.src.join("big"), random_bytes(3 * MIB as usize, 4)).expect("write");
    let daemon = setup.start();
    setup.cli("run", args!["d"]).success();
    let repo = Repo::at(&setup.repo);
    let (pack, _) = repo.largest_pack();
    let len = std::fs::metadata(&pack).expect("stat").len();
    flip_byte(&pack, len / 3);
    let context = || format!("{:?}\n{}", got.lock().map(|g| g.clone()), daemon.log());
    wait_until(
        Duration::from_secs(40),
        || !events(&got, "drill_failed").is_empty() && !events(&got, "check_failed").is_empty(),
        context,
    );
    let failed = &events(&got, "drill_failed")[0];
    assert_eq!(failed["job"], "d", "{failed}");
    let status = setup.status();
    let t = task(&status, "drill:d");
    assert_eq!(t["state"]["last_ok"], false, "{t}");
    assert!(
        t["state"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("problems"),
        "{t}"
    );
    daemon.stop(Duration::from_secs(30));
}

#[test]
fn backups_hold_a_logind_delay_lock_and_a_shutdown_starts_nothing_new() {
    let fake = crate::common::logind::FakeLogind::start();
    let setup = Setup::new(
        "[[jobs]]\nname = \"slow\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n",
        "",
    );
    with_repository_settings(&setup, "limit_upload_kib = 1024");
    std::fs::write(setup.src.join("big"), random_bytes(3 * MIB as usize, 8)).expect("write");
    let daemon = setup.start_with(&[("DBUS_SYSTEM_BUS_ADDRESS", fake.address())]);
    setup.cli("run", args!["slow", "--no-wait"]).success();
    assert!(
        fake.wait_calls(1, Duration::from_secs(20)),
        "no inhibitor lock taken: {}",
        daemon.log()
    );
    let call = &fake.calls()[0];
    assert_eq!(call.mode, "delay");
    assert!(call.why.contains("backup of slow"), "{call:?}");
    assert!(fake.is_held(0), "held while the backup runs");
    assert!(
        fake.wait_released(0, Duration::from_secs(60)),
        "the lock outlived the backup: {}",
        daemon.log()
    );
    assert_eq!(
        job(&setup.status(), "slow")["state"]["last_result"],
        "success"
    );

    // logind announces a shutdown: a requested run waits.
    fake.prepare_for_shutdown(true);
    wait_until(
        Duration::from_secs(10),
        || daemon.log().contains("the system is shutting down"),
        || daemon.log(),
    );
    std::fs::write(setup.src.join("more"), b"more").expect("write");
    setup.cli("run", args!["slow", "--no-wait"]).success();
    std::thread::sleep(Duration::from_secs(2));
    let j = job(&setup.status(), "slow");
    assert_eq!(j["queued"], true, "{j}");
    assert!(j["running"].is_null(), "{j}");
    assert_eq!(fake.calls().len(), 1, "nothing new was started");
    // Cancelled: it runs.
    fake.prepare_for_shutdown(false);
    wait_until(
        Duration::from_secs(60),
        || num(&job(&setup.status(), "slow")["state"], "successes") == 2,
        || daemon.log(),
    );
    daemon.stop(Duration::from_secs(30));
}

/// The daemon derives a repository's key once, not once per run (a no-change run is mostly the
/// key derivation otherwise), and a password change through `key passwd` still takes effect at
/// the next run: the old key object is gone, so the remembered key is not used for the old
/// password, and the new password in the file opens the repository again.
#[test]
fn the_daemon_derives_the_key_once_and_a_removed_key_stops_opening() {
    let setup = Setup::new(
        "[[jobs]]\nname = \"j\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n",
        "",
    );
    let daemon = setup.start_with(&[("RUST_LOG", "lifeboat=debug")]);
    let cached = |log: &str| {
        log.matches("repository key from this process's key cache")
            .count()
    };
    setup.cli("run", args!["j"]).success();
    assert_eq!(cached(&daemon.log()), 0, "{}", daemon.log());
    setup.cli("run", args!["j"]).success();
    assert_eq!(cached(&daemon.log()), 1, "{}", daemon.log());
    assert_eq!(setup.snapshots().len(), 2);

    // The password changes (new key object, the old one removed); the daemon's password file
    // still holds the old one: the next run fails on it, whatever the daemon remembers.
    lifeboat_env(
        args!["key", "passwd", "--repo", &setup.repo],
        &[(
            "LIFEBOAT_NEW_PASSWORD",
            std::ffi::OsStr::new("the new password 9876"),
        )],
    )
    .success();
    setup.cli("run", args!["j"]).failure();
    assert!(daemon.log().contains("wrong password"), "{}", daemon.log());
    assert_eq!(cached(&daemon.log()), 1);

    std::fs::write(setup.scratch.join("password"), "the new password 9876\n").expect("write");
    setup.cli("run", args!["j"]).success();
    setup.cli("run", args!["j"]).success();
    assert_eq!(cached(&daemon.log()), 2, "{}", daemon.log());
    let snapshots = std::fs::read_dir(setup.repo.join("snapshots")).expect("snapshots");
    assert_eq!(snapshots.count(), 4);
    daemon.stop(Duration::from_secs(30));
}

// ---------------------------------------------------------------------------------------------
// Child processes, listeners, damaged state files, secrets (issue 19)

/// A yearly job (it runs when asked) with a `phase` hook running `script` in `/bin/sh -c`
/// (the script must not hold a single quote).
fn hook_job(phase: &str, script: &str, timeout: &str) -> String {
    format!(
        "[[jobs]]\nname = \"j\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n\
         {phase} = {{ command = [\"/bin/sh\", \"-c\", '{script}'], timeout = \"{timeout}\" }}\n"
    )
}

/// A marker unique to this test process and `what`, carried as $0 of the shells a hook starts.
fn marker(what: &str) -> String {
    format!("lbmark-{what}-{}", std::process::id())
}

/// Whether a live (not zombie) process has `marker` in its command line.
fn marked_alive(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .any(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X']));
            !zombie && String::from_utf8_lossy(&cmdline).contains(marker)
        })
}

/// Two shells marked `mark`: one in the background, one the hook's own process (exec), each
/// waiting on a long sleep.
fn two_sleepers(mark: &str) -> String {
    format!("sh -c \"sleep 1000; :\" {mark}-bg & exec sh -c \"sleep 1000; :\" {mark}-fg")
}

/// RELIABILITY case 26: a `before` hook that writes far more than a pipe holds (300 KB) to its
/// error output runs to its end and the backup follows (it was blocked on the full pipe until
/// its timeout killed it, and the job failed).
#[test]
fn a_hook_flooding_its_error_output_runs_to_its_end() {
    let setup = Setup::new(
        &hook_job(
            "before",
            "head -c 300000 /dev/zero | tr \"\\0\" x >&2; exit 0",
            "5s",
        ),
        "",
    );
    let daemon = setup.start();
    setup.cli("run", args!["j"]).success();
    let j = job(&setup.status(), "j");
    assert_eq!(j["state"]["last_result"], "success", "{j} {}", daemon.log());
    daemon.stop(Duration::from_secs(30));
}

/// RELIABILITY case 26: a `before` hook past its timeout is stopped with its whole process
/// group: the background child of its shell goes too (only the direct child was killed, so the
/// real work, a `pg_dump` say, went on), and the job fails saying why.
#[test]
fn a_hook_past_its_timeout_is_stopped_with_its_whole_process_group() {
    let mark = marker("timeout");
    let setup = Setup::new(&hook_job("before", &two_sleepers(&mark), "2s"), "");
    let daemon = setup.start();
    setup.cli("run", args!["j"]).expect_code(1);
    let j = job(&setup.status(), "j");
    assert_eq!(j["state"]["last_result"], "failed", "{j}");
    let error = j["state"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("before hook") && error.contains("timeout of 2s"),
        "{error}"
    );
    assert!(
        j["state"]["last_duration_secs"]
            .as_f64()
            .unwrap_or(f64::MAX)
            < 60.0,
        "the hook ran on past its timeout: {j}"
    );
    wait_until(
        Duration::from_secs(10),
        || !marked_alive(&mark),
        || {
            format!(
                "a process of the hook's group survived its timeout: {}",
                daemon.log()
            )
        },
    );
    daemon.stop(Duration::from_secs(30));
}

/// RELIABILITY case 26: a hook that fails but leaves a background child holding its output
/// pipe ends when it exits (its error output was read to the end, which came only when the
/// background child ended: the run hung), its error is reported, the leftover is stopped.
#[test]
fn a_hook_leaving_a_child_on_its_output_pipe_ends_when_it_exits() {
    let mark = marker("leftover");
    let setup = Setup::new(
        &hook_job(
            "before",
            &format!("sh -c \"sleep 1000; :\" {mark} & echo hook-failed-here >&2; exit 4"),
            "1h",
        ),
        "",
    );
    let daemon = setup.start();
    setup.cli("run", args!["j", "--no-wait"]).success();
    wait_until(
        Duration::from_secs(30),
        || job(&setup.status(), "j")["state"]["last_result"] == "failed",
        || format!("the run did not end: {}", daemon.log()),
    );
    let j = job(&setup.status(), "j");
    let error = j["state"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("exit status: 4") && error.contains("hook-failed-here"),
        "{error}"
    );
    wait_until(
        Duration::from_secs(10),
        || !marked_alive(&mark),
        || format!("the hook's leftover survived: {}", daemon.log()),
    );
    daemon.stop(Duration::from_secs(30));
}

/// RELIABILITY case 26: SIGTERM to the daemon while a `before` hook runs (its timeout an hour
/// away): the hook's whole group is stopped at once, the job reports it, and the daemon exits
/// well within systemd's stop timeout (it waited for the hook, past the 90 s).
#[test]
fn sigterm_during_a_long_hook_stops_its_group_and_the_daemon_promptly() {
    let mark = marker("sigterm");
    let setup = Setup::new(&hook_job("before", &two_sleepers(&mark), "1h"), "");
    let daemon = setup.start();
    setup.cli("run", args!["j", "--no-wait"]).success();
    wait_until(
        Duration::from_secs(30),
        || marked_alive(&format!("{mark}-bg")) && marked_alive(&format!("{mark}-fg")),
        || daemon.log(),
    );
    let log = daemon.stop(Duration::from_secs(20));
    assert!(log.contains("the daemon is stopping"), "{log}");
    wait_until(
        Duration::from_secs(10),
        || !marked_alive(&mark),
        || "a process of the hook's group survived the daemon".into(),
    );
    let state: Value = serde_json::from_slice(
        &std::fs::read(setup.scratch.join("state/state.json")).expect("state"),
    )
    .expect("state JSON");
    let error = state["jobs"]["j"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("before hook") && error.contains("stopped"),
        "{state}"
    );
}

/// Issue 19 (secrets): hooks and `command` channels start from a clean environment: the
/// daemon's LIFEBOAT_PASSWORD and AWS_SECRET_ACCESS_KEY never reach them (they inherited the
/// whole environment), while PATH and the job's LIFEBOAT_* variables do. The daemon allows no
/// core files.
#[test]
fn hooks_and_command_channels_get_no_secrets_and_the_daemon_no_core_files() {
    let setup = Setup::new("", "");
    let hook_env = setup.scratch.join("hook.env");
    let cmd_env = setup.scratch.join("command.env");
    let jobs = format!(
        "[[notify]]\ntype = \"command\"\nname = \"script\"\nargv = [\"/bin/sh\", \"-c\", 'env > {}']\n\n{}",
        cmd_env.display(),
        hook_job("before", &format!("env > {}", hook_env.display()), "30s")
            .replace("SRC", &setup.src.display().to_string())
    );
    let mut config = std::fs::read_to_string(&setup.config).expect("config");
    config.push_str(&jobs);
    std::fs::write(&setup.config, config).expect("config");
    let daemon = setup.start_with(&[
        ("LIFEBOAT_PASSWORD", "daemon-secret-password"),
        ("AWS_SECRET_ACCESS_KEY", "daemon-secret-aws-key"),
    ]);
    setup.cli("run", args!["j"]).success();
    wait_until(
        Duration::from_secs(20),
        || cmd_env.exists() && hook_env.exists(),
        || daemon.log(),
    );
    for file in [&hook_env, &cmd_env] {
        let env = std::fs::read_to_string(file).expect("env");
        assert!(!env.contains("daemon-secret"), "{}: {env}", file.display());
        assert!(env.contains("\nPATH=") || env.starts_with("PATH="), "{env}");
    }
    let env = std::fs::read_to_string(&hook_env).expect("env");
    assert!(env.contains("LIFEBOAT_JOB=j\n"), "{env}");
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", daemon.child.id())).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit");
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    daemon.stop(Duration::from_secs(30));
}

/// The daemon's resident memory, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// A client that sends `b"G"` once a second for up to 40 s; it says whether the server cut it
/// off (and so whether it was held to a deadline for the whole request).
fn trickler<S: std::io::Write + Send + 'static>(mut conn: S) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        for _ in 0..40 {
            if conn.write_all(b"G").is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        false
    })
}

/// RELIABILITY case 27: the metrics endpoint and the control socket serve everyone while
/// other clients stall: idle connections, clients trickling a byte a second (they held the
/// one serving thread: /health and `status` waited for them, `status` failed after 30 s), and
/// one sending 10 MiB without an end of line (it grew the daemon by the size sent).
#[test]
fn listeners_serve_others_while_clients_stall_trickle_or_flood() {
    use std::io::Write;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let setup = Setup::new(
        "[[jobs]]\nname = \"m\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n",
        &format!("metrics_listen = \"{addr}\""),
    );
    let daemon = setup.start();
    let sock = setup.scratch.join("run/lifeboat.sock");
    assert_eq!(http_get(&addr, "/health").0, 200);

    // 10 MiB without an end of line: the daemon does not keep it.
    let before = resident_bytes(daemon.child.id());
    let mut flood = std::net::TcpStream::connect(&addr).expect("connect");
    let junk = vec![b'x'; 10 << 20];
    let _ = flood.write_all(&junk); // the server may close early: that is the point
    let after = resident_bytes(daemon.child.id());
    assert!(
        after < before + (4 << 20),
        "the daemon grew from {before} to {after} bytes on one request"
    );
    let mut flood_control = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    let _ = flood_control.write_all(&junk);

    // Idle clients and tricklers on both listeners, then others ask.
    let idle: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    let idle_control: Vec<std::os::unix::net::UnixStream> = (0..8)
        .map(|_| std::os::unix::net::UnixStream::connect(&sock).expect("connect"))
        .collect();
    let trickling = trickler(std::net::TcpStream::connect(&addr).expect("connect"));
    let trickling_control =
        trickler(std::os::unix::net::UnixStream::connect(&sock).expect("connect"));
    std::thread::sleep(Duration::from_millis(500));
    let (code, body) = http_get(&addr, "/health");
    assert_eq!((code, body.as_str()), (200, "ok\n"), "{}", daemon.log());
    assert!(http_get(&addr, "/metrics")
        .1
        .contains("lifeboat_job_running"));
    let status = setup.cli("status", args!["--json"]).success().json();
    assert_eq!(status["ok"], true, "{status}");
    setup.cli("pause", args!["m"]).success();
    setup.cli("resume", args!["m"]).success();
    // The tricklers were cut off at the request deadline, not kept alive by each byte.
    assert!(
        trickling.join().expect("trickler"),
        "the metrics trickler was never cut off"
    );
    assert!(
        trickling_control.join().expect("trickler"),
        "the control trickler was never cut off"
    );
    drop((idle, idle_control, flood, flood_control));
    daemon.stop(Duration::from_secs(30));
}

/// Files in `dir` whose name starts with `prefix`.
fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// A damaged state.json kept the daemon from starting at all (no backups until someone
/// acted). It is moved aside (kept), reported once in the log and as a `state_damaged`
/// notification, and the daemon starts and runs its jobs.
#[test]
fn a_damaged_state_file_is_moved_aside_and_the_daemon_starts() {
    let (url, got) = receiver();
    let setup = Setup::new(
        &format!(
            "[[notify]]\ntype = \"webhook\"\nname = \"ops\"\nurl = \"{url}\"\n\n\
             [[jobs]]\nname = \"j\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n"
        ),
        "",
    );
    let state_dir = setup.scratch.join("state");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    let damage = b"{\"jobs\": {\"j\": {\"cursor\": ";
    std::fs::write(state_dir.join("state.json"), damage).expect("damage");
    let daemon = setup.start();
    let aside = files_starting(&state_dir, "state.json.damaged-");
    assert_eq!(aside.len(), 1, "{aside:?} {}", daemon.log());
    assert_eq!(std::fs::read(&aside[0]).expect("kept"), damage);
    setup.cli("run", args!["j"]).success();
    let state: Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("state.json")).expect("state"))
            .expect("a valid state file again");
    assert_eq!(state["jobs"]["j"]["last_result"], "success", "{state}");
    wait_until(
        Duration::from_secs(10),
        || !events(&got, "state_damaged").is_empty(),
        || format!("{:?}", got.lock().map(|g| g.clone())),
    );
    let log = daemon.stop(Duration::from_secs(30));
    let reported = events(&got, "state_damaged");
    assert_eq!(reported.len(), 1, "{reported:?}");
    let summary = reported[0]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("state.json") && summary.contains("moved aside"),
        "{summary}"
    );
    assert_eq!(log.matches("was damaged").count(), 1, "{log}");
}

/// A damaged maintenance.json was logged every second, for ever. It is moved aside (kept),
/// reported once (log and notification), and the daemon goes on running jobs.
#[test]
fn a_damaged_maintenance_file_is_reported_once_and_moved_aside() {
    let (url, got) = receiver();
    let setup = Setup::new(
        &format!(
            "[[notify]]\ntype = \"webhook\"\nname = \"ops\"\nurl = \"{url}\"\n\n\
             [[jobs]]\nname = \"j\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n"
        ),
        "",
    );
    let daemon = setup.start();
    let state_dir = setup.scratch.join("state");
    std::fs::write(state_dir.join("maintenance.json"), b"not json").expect("damage");
    wait_until(
        Duration::from_secs(10),
        || files_starting(&state_dir, "maintenance.json.damaged-").len() == 1,
        || daemon.log(),
    );
    // Several more looks at the windows (one a second): nothing more is said.
    std::thread::sleep(Duration::from_secs(3));
    setup.cli("run", args!["j"]).success();
    let log = daemon.stop(Duration::from_secs(30));
    let errors = log
        .lines()
        .filter(|l| l.contains("maintenance") && l.contains("ERROR"))
        .count();
    assert_eq!(errors, 1, "{log}");
    let reported = events(&got, "state_damaged");
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(
        reported[0]["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("maintenance.json"),
        "{reported:?}"
    );
    assert_eq!(
        files_starting(&state_dir, "maintenance.json.damaged-").len(),
        1
    );
}

/// RELIABILITY case 11 (issue 19 item 20): a backup that could not read some source files (the snapshot is written
/// without them) goes out as its own event, `backup_partial`, which a channel without an
/// `events` list receives (as it receives failures); not as `backup_succeeded`, which such a
/// channel leaves out, so that a partial backup alerted no one. The daemon runs as an
/// unprivileged user so that a mode-000 file is unreadable to it.
#[test]
fn a_partial_backup_is_notified_to_channels_that_take_failures() {
    let (url, got) = receiver();
    let setup = Setup::new(
        &format!(
            "[[notify]]\ntype = \"webhook\"\nname = \"ops\"\nurl = \"{url}\"\n\n\
             [[jobs]]\nname = \"j\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n"
        ),
        "",
    );
    let locked = setup.src.join("locked.txt");
    write_file(&locked, b"the daemon cannot read me\n");
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(setup.scratch.path())
            .status()
            .expect("chown");
        assert!(status.success());
        std::os::unix::fs::chown(&locked, Some(0), Some(0)).expect("chown locked file");
    }
    set_mode(&locked, 0o000);
    let daemon = setup.start_as(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]);
    let out = setup.cli("run", args!["j"]).expect_code(3);
    assert!(out.stderr().contains("locked.txt"), "{}", out.stderr());
    wait_until(
        Duration::from_secs(20),
        || !events(&got, "backup_partial").is_empty(),
        || format!("{:?} {}", got.lock().map(|g| g.clone()), daemon.log()),
    );
    let partial = &events(&got, "backup_partial")[0];
    assert_eq!(partial["job"], "j", "{partial}");
    assert_eq!(partial["details"]["result"], "partial", "{partial}");
    assert!(
        partial["summary"]
            .as_str()
            .is_some_and(|s| s.contains("locked.txt")),
        "{partial}"
    );
    assert!(
        events(&got, "backup_succeeded").is_empty(),
        "a partial backup is not a success: {:?}",
        got.lock().map(|g| g.clone())
    );
    daemon.stop(Duration::from_secs(30));
}

/// RELIABILITY case 12 (issue 19 item 18): names with a newline, an escape sequence and bytes
/// that are not UTF-8, unreadable to the daemon (so the backup reports them): the plain log
/// (at debug level, where the backup names each skipped file) holds no raw control character
/// and no forged line, `status` and `run` print them escaped, a command channel's
/// `LIFEBOAT_SUMMARY` is one line, and the event it gets on its input is JSON naming the file;
/// with `--log-format json` every log line parses as JSON.
#[test]
fn hostile_file_names_reach_logs_status_and_notifications_escaped() {
    use std::os::unix::ffi::OsStrExt;
    for json in [false, true] {
        let events_file_dir = Scratch::new();
        let events_file = events_file_dir.join("events");
        let setup = Setup::new(
            &format!(
                "[[notify]]\ntype = \"command\"\nname = \"script\"\nargv = [\"/bin/sh\", \"-c\", 'cat >> {0}; printf \"\\n%s\\n\" \"$LIFEBOAT_SUMMARY\" >> {0}.summary']\n\n\
                 [[jobs]]\nname = \"j\"\nrepository = \"local\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n",
                events_file.display()
            ),
            "",
        );
        let names: [&[u8]; 3] = [
            b"evil\n[lifeboat] forged line",
            b"\x1b]0;pwned\x07",
            b"bad\xff\xfename",
        ];
        for n in names {
            let f = setup.src.join(std::ffi::OsStr::from_bytes(n));
            write_file(&f, b"secret\n");
        }
        if is_root() {
            set_mode(events_file_dir.path(), 0o777);
            let status = Command::new("chown")
                .args(["-R", "65534:65534"])
                .arg(setup.scratch.path())
                .status()
                .expect("chown");
            assert!(status.success());
            for n in names {
                let f = setup.src.join(std::ffi::OsStr::from_bytes(n));
                std::os::unix::fs::chown(&f, Some(0), Some(0)).expect("chown");
            }
        }
        for n in names {
            set_mode(&setup.src.join(std::ffi::OsStr::from_bytes(n)), 0o000);
        }
        let wrapper = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ];
        let daemon = if json {
            setup.start_as_with(&wrapper, &[("LIFEBOAT_LOG_FORMAT", "json")])
        } else {
            setup.start_as_with(&wrapper, &[("RUST_LOG", "lifeboat=debug")])
        };
        let out = setup.cli("run", args!["j"]).expect_code(3);
        assert_clean("run's stderr", &out.stderr);
        assert_clean("run's stdout", &out.stdout);
        let status = setup.cli("status", args![]);
        assert_clean("status", &status.stdout);
        assert!(
            status.stdout().contains("source entries could not be read"),
            "{}",
            status.stdout()
        );
        wait_until(
            Duration::from_secs(20),
            || {
                std::fs::read(format!("{}.summary", events_file.display()))
                    .is_ok_and(|s| s.len() > 1)
            },
            || daemon.log(),
        );
        let log = daemon.stop(Duration::from_secs(30));
        if json {
            for line in log.lines() {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{log}"));
                assert!(v["level"].is_string(), "{line}");
            }
        } else {
            assert_clean("the daemon's log", log.as_bytes());
            assert!(
                log.contains("evil\\n[lifeboat] forged line") && log.contains("\\x1b]0;pwned\\x07"),
                "the log does not name the unreadable files escaped: {log}"
            );
        }
        let summaries =
            std::fs::read(format!("{}.summary", events_file.display())).expect("summaries");
        assert_clean("LIFEBOAT_SUMMARY", &summaries);
        let events = std::fs::read_to_string(&events_file).expect("events");
        let partial = serde_json::Deserializer::from_str(&events)
            .into_iter::<Value>()
            .map(|v| v.unwrap_or_else(|e| panic!("not JSON ({e}): {events}")))
            .find(|v| v["kind"] == "backup_partial")
            .unwrap_or_else(|| panic!("no backup_partial event: {events}"));
        assert!(
            partial["summary"].as_str().is_some_and(
                |s| !s.contains('\n') && s.contains("source entries could not be read")
            ),
            "{partial}"
        );
    }
}

/// A configured repository without a password of its own opens with the password sources of
/// the daemon's environment, in the command line's order (LIFEBOAT_PASSWORD_FILE, then
/// LIFEBOAT_PASSWORD, then the systemd credential), and an empty LIFEBOAT_PASSWORD is refused
/// naming the variable. (The daemon accepted an empty LIFEBOAT_PASSWORD and tried it as the
/// password, ignored LIFEBOAT_PASSWORD_FILE, and took the credential before LIFEBOAT_PASSWORD.)
#[test]
fn a_repository_without_its_own_password_uses_the_environment_in_the_command_lines_order() {
    let setup = Setup::new(
        "[repositories.bare]\nurl = \"REPO\"\n\n\
         [[jobs]]\nname = \"j\"\nrepository = \"bare\"\nsources = [\"SRC\"]\nincremental = \"0 0 1 1 *\"\n",
        "",
    );
    let text = std::fs::read_to_string(&setup.config).expect("read config");
    std::fs::write(
        &setup.config,
        text.replace("REPO", &setup.repo.display().to_string()),
    )
    .expect("write config");
    let good = setup.scratch.join("good");
    std::fs::write(&good, format!("{PASSWORD}\n")).expect("write");
    let creds = setup.scratch.join("credentials");
    std::fs::create_dir(&creds).expect("mkdir");
    std::fs::write(creds.join("lifeboat-password"), format!("{PASSWORD}\n")).expect("write");
    let run = |env: &[(&str, &std::ffi::OsStr)]| {
        let mut cmd = lifeboat_cmd();
        cmd.env_remove("LIFEBOAT_PASSWORD")
            .args(args!["run", "--config", &setup.config, "j"]);
        cmd.envs(env.iter().copied());
        run_cmd(cmd)
    };

    let out = run(&[("LIFEBOAT_PASSWORD", "".as_ref())]).expect_code(1);
    out.stderr_contains("LIFEBOAT_PASSWORD");
    out.stderr_contains("empty");
    run(&[("LIFEBOAT_PASSWORD_FILE", good.as_os_str())]).success();
    run(&[("LIFEBOAT_PASSWORD", "wrong password".as_ref())]).expect_code(1);
    run(&[
        ("LIFEBOAT_PASSWORD_FILE", good.as_os_str()),
        ("LIFEBOAT_PASSWORD", "wrong password".as_ref()),
    ])
    .success();
    // LIFEBOAT_PASSWORD comes before the credential: a wrong one is not passed over.
    run(&[
        ("LIFEBOAT_PASSWORD", "wrong password".as_ref()),
        ("CREDENTIALS_DIRECTORY", creds.as_os_str()),
    ])
    .expect_code(1);
    run(&[("CREDENTIALS_DIRECTORY", creds.as_os_str())]).success();
}

//! `lifeboat hosts` (issue 22): the fleet view of a repository for a monitoring machine with
//! read-only credentials: each host and job, its newest snapshot, age, staleness, JSON and a
//! Prometheus text file.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Every object path of the repository, with its size.
fn objects(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("entry");
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                out.push((e.path(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// `lifeboat hosts ARGS` as user nobody, who can read the repository and write nothing in it.
fn hosts_as_nobody(repo: &Repo, cache: &Path, args: Vec<std::ffi::OsString>) -> Out {
    let mut cmd = Command::new("setpriv");
    lifeboat_env_for(&mut cmd);
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        bin(),
        "hosts",
        "--repo",
    ])
    .arg(&repo.path)
    .args(args)
    .env("LIFEBOAT_CACHE_DIR", cache);
    run_cmd(cmd)
}

/// Makes `path` and everything beneath it readable by all and writable by its owner only, and
/// the directories above it searchable.
fn readable_by_all(path: &Path) {
    for p in path.ancestors() {
        if p == Path::new("/") {
            break;
        }
        let mode = fs::metadata(p).expect("stat").permissions().mode();
        fs::set_permissions(p, fs::Permissions::from_mode(mode | 0o005)).expect("chmod");
    }
    let status = Command::new("chmod")
        .args(["-R", "a+rX,go-w"])
        .arg(path)
        .status()
        .expect("chmod");
    assert!(status.success());
}

/// Issue 22: a monitoring machine lists each host and job with its newest snapshot, its age
/// and the count, from the repository alone, as a user who can write nothing and cannot read
/// the data or the index; the text,
/// JSON and Prometheus outputs agree; `--stale-after` marks the old ones, names them and exits
/// 1; the filters narrow it; nothing is written to the repository.
#[test]
fn hosts_lists_each_host_and_job_read_only_and_marks_the_stale() {
    if !is_root() {
        panic!("this test runs commands as another user: run the suite as root (tests/run.sh)");
    }
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("etc/hosts"), b"127.0.0.1 localhost\n");
    write_file(&src.join("db/dump.sql"), b"create table t (x int);\n");
    let job = |host: &str, job: &str, path: PathBuf| {
        repo.backup(args!["--host", host, "--job", job, path]);
    };
    job("web1", "etc", src.join("etc"));
    job("web1", "etc", src.join("etc"));
    job("web1", "db", src.join("db"));
    job("web2", "etc", src.join("etc"));
    repo.backup(args!["--host", "web2", src.join("db")]);
    readable_by_all(&repo.path);
    // What it needs is config, keys and snapshots (docs/SECURITY.md): data and index are out
    // of its reach.
    for dir in ["data", "index"] {
        fs::set_permissions(repo.path.join(dir), fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let cache = scratch.join("cache");
    fs::create_dir_all(&cache).expect("mkdir");
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).expect("chmod");
    readable_by_all(&cache);
    let before = objects(&repo.path);

    // JSON: one line per host and job, the newest snapshot of each, as snapshots --latest.
    let out = hosts_as_nobody(&repo, &cache, args!["--json"]).success();
    let lines = out.json();
    let lines = lines.as_array().expect("an array");
    let key = |v: &serde_json::Value| {
        (
            string(v, "host"),
            v["job"].as_str().unwrap_or("-").to_string(),
        )
    };
    let got: Vec<_> = lines
        .iter()
        .map(|l| (key(l), num(l, "snapshots")))
        .collect();
    let pair = |h: &str, j: &str, n: u64| ((h.to_string(), j.to_string()), n);
    assert_eq!(
        got,
        [
            pair("web1", "db", 1),
            pair("web1", "etc", 2),
            pair("web2", "-", 1),
            pair("web2", "etc", 1),
        ]
    );
    let latest = repo.snapshots(args!["--latest"]);
    for l in lines {
        let newest = latest
            .iter()
            .find(|s| key(s) == key(l))
            .unwrap_or_else(|| panic!("snapshots --latest has {l}"));
        assert_eq!(string(l, "snapshot_id"), string(newest, "id"));
        assert!(l["age_secs"].as_f64().expect("age") < 600.0, "{l}");
        assert_eq!(l["stale"], false);
    }
    assert_eq!(lines[2]["paths"][0], src.join("db").display().to_string());

    // Text, with a bound they all meet.
    let out = hosts_as_nobody(&repo, &cache, args!["--stale-after", "26h"]).success();
    let text = out.stdout();
    assert!(text.starts_with("HOST"), "{text}");
    assert!(text.contains("STATUS"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains("  ok")).count(),
        4,
        "{text}"
    );
    assert!(!text.contains("STALE"), "{text}");

    // A bound they all miss: STALE, named on stderr, exit 1, and the metrics file says so.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let prom = scratch.join("textfile/lifeboat.prom");
    fs::create_dir_all(prom.parent().expect("parent")).expect("mkdir");
    fs::set_permissions(
        prom.parent().expect("parent"),
        fs::Permissions::from_mode(0o777),
    )
    .expect("chmod");
    let out = hosts_as_nobody(
        &repo,
        &cache,
        args!["--stale-after", "1s", "--metrics-file", &prom],
    )
    .expect_code(1);
    assert_eq!(
        out.stdout().matches("STALE (older than").count(),
        4,
        "{out}"
    );
    out.stderr_contains("4 of 4 hosts and jobs older than")
        .stderr_contains("web1 job db");
    let m = fs::read_to_string(&prom).expect("metrics file");
    assert!(
        m.contains("lifeboat_snapshot_stale{host=\"web1\",job=\"etc\",paths=\"\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("lifeboat_snapshots{host=\"web1\",job=\"etc\",paths=\"\"} 2\n"),
        "{m}"
    );
    assert!(
        m.contains("lifeboat_snapshot_stale_after_seconds 1\n"),
        "{m}"
    );
    assert!(m.contains("lifeboat_damaged_snapshots 0\n"), "{m}");
    let left: Vec<_> = fs::read_dir(prom.parent().expect("parent"))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["lifeboat.prom"], "no temporary file is left");

    // The filters of every snapshot command narrow it; a host that has no snapshot is stale.
    let out = hosts_as_nobody(
        &repo,
        &cache,
        args!["--host", "web2", "--job", "etc", "--json"],
    )
    .success();
    assert_eq!(out.json().as_array().expect("array").len(), 1);
    let out = hosts_as_nobody(
        &repo,
        &cache,
        args!["--host", "web3", "--stale-after", "26h"],
    )
    .expect_code(1);
    out.stderr_contains("no snapshot at all");
    assert!(out.stdout().contains("no snapshot matches"), "{out}");

    assert_eq!(
        objects(&repo.path),
        before,
        "hosts wrote nothing to the repository"
    );
}

/// Issue 22: an empty repository lists nothing (exit 0), and with `--stale-after` it is an
/// alarm: nothing is protected.
#[test]
fn an_empty_repository_is_stale_when_a_bound_is_given() {
    let repo = Repo::new();
    let out = repo.run("hosts", args![]).success();
    assert!(
        out.stdout().contains("no snapshot in the repository"),
        "{out}"
    );
    let out = repo.run("hosts", args!["--json"]).success();
    assert_eq!(out.json(), serde_json::json!([]));
    repo.run("hosts", args!["--stale-after", "26h"])
        .expect_code(1)
        .stderr_contains("nothing is protected");
}

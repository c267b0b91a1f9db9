//! forget, prune and locks end to end: retention by the CLI, space reclaimed, the guards that
//! refuse to delete every backup, prune against live, dead and frozen writers, and prune
//! killed at random points.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

fn dir_size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

fn ids(snaps: &[Value]) -> Vec<String> {
    snaps.iter().map(|s| string(s, "id")).collect()
}

/// Restores every snapshot of `repo` with full verification, writing nothing.
#[track_caller]
fn every_snapshot_verifies(repo: &Repo) {
    for id in ids(&repo.snapshots(args![])) {
        let target = Scratch::new();
        repo.restore(&id, target.path(), args!["--verify-only"])
            .success();
    }
}

/// Five generations of a tree, each replacing a fifth of its data.
fn repo_with_generations(src: &Path) -> Repo {
    let repo = Repo::new();
    std::fs::create_dir_all(src).expect("mkdir");
    for gen in 0..5u64 {
        for f in 0..5u64 {
            if gen == 0 || f == gen {
                write_file(
                    &src.join(format!("f{f}")),
                    &random_bytes(2 * MIB as usize, gen * 10 + f),
                );
            }
        }
        repo.backup(args![src]);
    }
    repo
}

#[test]
fn forget_and_prune_reclaim_space_and_keep_what_remains_restorable() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let repo = repo_with_generations(&src);
    let before = dir_size(&repo.path.join("data"));
    let snaps = repo.snapshots(args![]);
    assert_eq!(snaps.len(), 5);

    let dry = repo
        .run("forget", args!["--keep-last", "2", "--dry-run", "--json"])
        .success()
        .json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        repo.snapshots(args![]).len(),
        5,
        "a dry run removes nothing"
    );
    let decisions = dry["plan"]["groups"][0]["decisions"]
        .as_array()
        .cloned()
        .expect("decisions");
    assert_eq!(decisions.len(), 5);
    assert_eq!(
        decisions.iter().filter(|d| d["keep"] == true).count(),
        2,
        "{dry}"
    );
    assert_eq!(decisions[0]["reasons"][0], "last", "{dry}");

    let out = repo
        .run("forget", args!["--keep-last", "2", "--prune"])
        .success();
    assert!(out.stdout().contains("removed 3 snapshots"), "{out}");
    let left = repo.snapshots(args![]);
    assert_eq!(ids(&left), ids(&snaps[3..]), "the two newest stay");
    let after = dir_size(&repo.path.join("data"));
    // Three generations replaced 3 of 5 files (6 of 10 MiB of unique data): about 6 MiB goes.
    assert!(
        after < before - 5 * MIB,
        "data/ went from {before} to {after} bytes"
    );
    repo.check(args!["--read-data"]).success();
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    assert_trees_equal(&src, &restored(target.path(), &src));
    every_snapshot_verifies(&repo);

    // Nothing left to do: a second prune changes nothing.
    let again = repo.run("prune", args!["--json"]).success().json();
    assert_eq!(num(&again, "packs_removed"), 0, "{again}");
    assert_eq!(num(&again, "new_packs"), 0, "{again}");
}

#[test]
fn prune_dry_run_changes_nothing_and_max_unused_controls_repacking() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let repo = repo_with_generations(&src);
    repo.run("forget", args!["--keep-last", "1"]).success();
    let before = fingerprint(&repo.path);
    let plan = repo
        .run("prune", args!["--dry-run", "--json"])
        .success()
        .json();
    assert_eq!(
        fingerprint(&repo.path),
        before,
        "dry run wrote or removed something"
    );
    assert!(num(&plan, "bytes_freed") > 0, "{plan}");
    // Never repack: only whole unused packs go.
    let none = repo
        .run("prune", args!["--max-unused", "100%", "--json"])
        .success()
        .json();
    assert_eq!(num(&none, "repacked_packs"), 0, "{none}");
    assert_eq!(num(&none, "new_packs"), 0, "{none}");
    // Repack everything partly unused.
    let all = repo
        .run("prune", args!["--max-unused", "0%", "--json"])
        .success()
        .json();
    assert_eq!(num(&all, "unused_packs"), 0, "{all}");
    repo.check(args!["--read-data"]).success();
    every_snapshot_verifies(&repo);
    repo.run("prune", args!["--max-unused", "150%"])
        .failure()
        .stderr_contains("0% to 100%");
}

/// RELIABILITY case 21: a policy that matches nothing, a mistyped tag, host or job, or no policy at all never deletes every snapshot; --force is needed.
#[test]
fn forget_refuses_to_delete_every_backup_by_mistake() {
    let scratch = Scratch::new();
    let a = scratch.join("a");
    let b = scratch.join("b");
    build_plain_tree(&a, 3, 0, 1);
    build_plain_tree(&b, 3, 0, 2);
    let repo = Repo::new();
    repo.backup(args![&a, "--tag", "keep"]);
    repo.backup(args![&a]);
    repo.backup(args![&b]);
    let all = ids(&repo.snapshots(args![]));

    let refused = |rest: Vec<std::ffi::OsString>, why: &str| {
        let out = repo.run("forget", rest).failure();
        assert!(out.stderr().contains(why), "{out}");
        assert_eq!(ids(&repo.snapshots(args![])), all, "nothing may go: {out}");
    };
    // Group b has no snapshot tagged "keep": the policy would empty it.
    refused(args!["--keep-tag", "keep"], "removes every snapshot of");
    // A mistyped tag, host, job or path.
    refused(
        args!["--keep-tag", "kepe", "--keep-last", "1"],
        "keep-tag \"kepe\"",
    );
    refused(
        args!["--keep-last", "1", "--host", "nosuchhost"],
        "host \"nosuchhost\"",
    );
    refused(
        args!["--keep-last", "1", "--job", "nosuchjob"],
        "job \"nosuchjob\"",
    );
    // No policy at all.
    refused(args![], "no policy given");
    refused(args!["--keep-last", "0"], "no policy given");

    // With --force, the tag policy does what it says.
    let out = repo
        .run("forget", args!["--keep-tag", "keep", "--force"])
        .success();
    assert!(out.stderr().contains("--force"), "{out}");
    let left = repo.snapshots(args![]);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["tags"][0], "keep");

    // By id.
    let id = string(&left[0], "id");
    repo.run("forget", args![&id[..8]]).success();
    assert!(repo.snapshots(args![]).is_empty());
    repo.run("forget", args!["latest"])
        .failure()
        .stderr_contains("snapshot ids");
}

/// Starts `lifeboat backup` of `src` as a child process (paced uploads keep it running).
fn spawn_backup(repo: &Repo, src: &Path, env: &[(&str, &str)], log: &Path) -> Child {
    let mut cmd = lifeboat_cmd();
    cmd.args(args![
        "backup",
        "--repo",
        &repo.path,
        src,
        "--limit-upload",
        "2048"
    ])
    .envs(env.iter().copied())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).expect("log"));
    cmd.spawn().expect("spawn backup")
}

/// The lock objects (not the `.tmp-*` file of one being written: a process killed between
/// writing and renaming it leaves that behind, and it is no lock; seen as a flaky failure
/// under load).
fn lock_names(repo: &Repo) -> Vec<PathBuf> {
    std::fs::read_dir(repo.path.join("locks"))
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[track_caller]
fn wait_for(bound: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < bound,
            "condition not met within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("signal");
}

/// RELIABILITY cases 1 and 19: prune refuses while a live backup holds a lock; a backup killed with SIGKILL leaves a lock that `unlock`, or prune by itself, detects as stale (its process is gone); the repository checks clean after the killed backups.
#[test]
fn prune_refuses_while_a_live_backup_holds_a_lock_and_clears_a_dead_ones_lock() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("big"), &random_bytes(12 * MIB as usize, 5));
    let repo = Repo::new();
    let mut child = spawn_backup(&repo, &src, &[], &scratch.join("log"));
    wait_for(Duration::from_secs(20), || !lock_names(&repo).is_empty());
    let out = repo.run("prune", args![]).failure();
    assert!(
        out.stderr().contains("in use") && out.stderr().contains("backup (shared)"),
        "{out}"
    );
    // The backup dies without cleaning up: its lock stays, naming a process that is gone.
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert!(
        !lock_names(&repo).is_empty(),
        "a killed process leaves its lock"
    );
    let out = repo.run("unlock", args![]).success();
    assert!(out.stdout().contains("is gone on this host"), "{out}");
    assert!(lock_names(&repo).is_empty());
    // Killed again; this time prune clears the stale lock by itself and runs.
    let mut child = spawn_backup(&repo, &src, &[], &scratch.join("log2"));
    wait_for(Duration::from_secs(20), || !lock_names(&repo).is_empty());
    child.kill().expect("kill");
    child.wait().expect("wait");
    repo.run("prune", args![]).success();
    assert!(lock_names(&repo).is_empty(), "prune released its lock");
    repo.check(args!["--read-data"]).success();
}

/// RELIABILITY case 18: The backup is frozen (SIGSTOP) past its lock's staleness bound while forget and prune
/// remove the data it deduplicated against and the packs it had uploaded. When it resumes it
/// notices before committing, starts over, and its snapshot is complete.
#[test]
fn a_backup_frozen_past_the_lock_bound_survives_a_prune() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("a/old"), &random_bytes(6 * MIB as usize, 1));
    let repo = Repo::new();
    repo.backup(args![&src]);
    write_file(&src.join("z/new"), &random_bytes(8 * MIB as usize, 2));
    let stale = [("LIFEBOAT_LOCK_STALE_AFTER", "2s")];
    let log = scratch.join("backup.log");
    let mut child = spawn_backup(&repo, &src, &stale, &log);
    wait_for(Duration::from_secs(20), || !lock_names(&repo).is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, nix::sys::signal::Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    // The only snapshot goes, and with it (after prune) the data of a/old that the frozen
    // backup found in the index, and the packs it stored more than 2 s ago.
    let first = ids(&repo.snapshots(args![]));
    repo.run("forget", args![&first[0]]).success();
    let env: Vec<(&str, &std::ffi::OsStr)> = stale
        .iter()
        .map(|(k, v)| (*k, std::ffi::OsStr::new(*v)))
        .collect();
    let pruned = lifeboat_env(args!["prune", "--repo", &repo.path, "--json"], &env)
        .success()
        .json();
    assert!(num(&pruned, "packs_removed") > 0, "{pruned}");
    signal(&child, nix::sys::signal::Signal::SIGCONT);
    let status = child.wait().expect("wait");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "the resumed backup failed: {text}");
    assert!(
        text.contains("starting over"),
        "the backup did not notice the lost data: {text}"
    );
    let snaps = repo.snapshots(args![]);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    repo.check(args!["--read-data"]).success();
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// RELIABILITY case 19: Two hosts back up the same data into one repository at the same time: both snapshots
/// restore, and after prune the shared data is stored once.
#[test]
fn two_writers_back_up_concurrently_and_shared_data_is_stored_once() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("shared"), &random_bytes(8 * MIB as usize, 9));
    let repo = Repo::new();
    let run = |host: &'static str| {
        let path = repo.path.clone();
        let src = src.clone();
        std::thread::spawn(move || {
            lifeboat(args!["backup", "--repo", &path, &src, "--host", host]).success();
        })
    };
    let (a, b) = (run("alpha"), run("beta"));
    a.join().expect("alpha");
    b.join().expect("beta");
    let snaps = repo.snapshots(args![]);
    let hosts: std::collections::BTreeSet<String> =
        snaps.iter().map(|s| string(s, "host")).collect();
    assert_eq!(hosts.len(), 2, "{snaps:?}");
    repo.run("prune", args![]).success();
    let stored = dir_size(&repo.path.join("data"));
    assert!(
        stored < 8 * MIB + MIB,
        "8 MiB of shared data takes {stored} bytes after prune"
    );
    repo.check(args!["--read-data"]).success();
    for s in &snaps {
        let target = Scratch::new();
        repo.restore(&string(s, "id"), target.path(), args![])
            .success();
        assert_trees_equal(&src, &restored(target.path(), &src));
    }
}

/// RELIABILITY case 16 (a partial view stops prune): a snapshot's data missing from storage: prune stops before changing anything.
#[test]
fn prune_on_a_damaged_repository_changes_nothing() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let repo = repo_with_generations(&src);
    repo.run("forget", args!["--keep-last", "1"]).success();
    // Remove a pack the latest snapshot needs.
    let (pack, _) = repo.largest_pack();
    std::fs::remove_file(&pack).expect("remove pack");
    let before = fingerprint(&repo.path);
    let out = repo.run("prune", args![]).failure();
    assert!(
        out.stderr()
            .contains("prune stopped before changing anything"),
        "{out}"
    );
    let mut after = fingerprint(&repo.path);
    let mut before = before;
    after.retain(|p, _| !p.starts_with("locks"));
    before.retain(|p, _| !p.starts_with("locks"));
    assert_eq!(after, before);
}

/// A restore (during an outage, the one command that must not fail) holds a shared lock, so
/// a prune cannot move or delete the packs it is reading.
#[test]
fn prune_does_not_run_under_a_restore() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("big"), &random_bytes(6 * MIB as usize, 31));
    let repo = Repo::new();
    repo.backup(args![&src]);
    let target = scratch.join("target");
    let mut cmd = lifeboat_cmd();
    cmd.args(args![
        "restore",
        "latest",
        "--repo",
        &repo.path,
        "--target",
        &target,
        "--limit-download",
        "1024"
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn restore");
    wait_for(Duration::from_secs(20), || !lock_names(&repo).is_empty());
    let out = repo.run("prune", args![]).failure();
    assert!(out.stderr().contains("restore (shared)"), "{out}");
    assert!(child.wait().expect("wait").success());
    assert_trees_equal(&src, &restored(&target, &src));
    assert!(lock_names(&repo).is_empty(), "restore released its lock");
}

/// RELIABILITY case 1: the temporary pack files killed backups leave are removed by prune once a day old (never a fresh one).
#[test]
fn prune_removes_temporary_pack_files_of_killed_backups_after_a_day() {
    // A local repository's data packs are filled as `data/.tmp-*` files; a backup killed with
    // SIGKILL cannot remove its own. Prune removes those not written for a day (a frozen backup
    // younger than that finds its file still there) and never touches a fresh one.
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let repo = repo_with_generations(&src);
    let data = repo.path.join("data");
    let old = data.join(".tmp-pack-00000000000000aa");
    let fresh = data.join(".tmp-pack-00000000000000bb");
    for p in [&old, &fresh] {
        write_file(p, &random_bytes(4096, 1));
    }
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .expect("open")
        .set_modified(two_days_ago)
        .expect("set mtime");
    let dry = repo
        .run("prune", args!["--dry-run", "--json"])
        .success()
        .json();
    assert_eq!(num(&dry, "temporary_files_removed"), 0, "{dry}");
    assert!(old.exists(), "a dry run removes nothing");
    let report = repo.run("prune", args!["--json"]).success().json();
    assert_eq!(num(&report, "temporary_files_removed"), 1, "{report}");
    assert!(!old.exists() && fresh.exists());
    repo.check(args!["--read-data"]).success();
}

/// The storage at a local path or an `s3://` URL of the S3 test server, without retries.
fn storage_at(url: &str) -> std::sync::Arc<dyn lifeboat::storage::Storage> {
    use lifeboat::storage::{CloudOptions, CloudStorage, CloudUrl, LocalStorage};
    match CloudUrl::parse(url).expect("url") {
        Some(parsed) => {
            let opts = CloudOptions {
                options: s3_options(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(20),
            };
            std::sync::Arc::new(CloudStorage::new(&parsed, url, &opts).expect("s3"))
        }
        None => std::sync::Arc::new(LocalStorage::new(url)),
    }
}

fn open_repo(url: &str) -> lifeboat::Repository {
    lifeboat::Repository::open(storage_at(url), || {
        Ok(lifeboat::repo::Credentials::Password(
            PASSWORD.as_bytes().to_vec().into(),
        ))
    })
    .expect("open")
}

/// RELIABILITY case 19, on local disk and on the S3 server: two prunes (two processes'
/// handles on one repository) reaching for the exclusive lock at the same moment, or one a
/// little after the other, round after round: never do both hold it; the one that does not get
/// it fails cleanly, naming the holder (or both back off); the winner's work runs alone.
#[test]
fn two_prunes_at_once_never_both_hold_the_exclusive_lock() {
    use lifeboat::repo::lock::LockSettings;
    let local = Scratch::new();
    for url in [
        local.join("repo").display().to_string(),
        s3_url("two-prunes"),
    ] {
        let repo = if url.starts_with("s3://") {
            lifeboat_s3(args!["init", "--repo", &url]).success();
            (open_repo(&url), open_repo(&url))
        } else {
            lifeboat(args!["init", "--repo", &url]).success();
            (open_repo(&url), open_repo(&url))
        };
        let settings = LockSettings::default();
        let held: std::sync::Mutex<Vec<(Instant, Instant)>> = std::sync::Mutex::new(Vec::new());
        let mut winners = 0;
        for round in 0..8 {
            let barrier = std::sync::Barrier::new(2);
            let results: Vec<Result<(), String>> = std::thread::scope(|s| {
                // Even rounds: at the same moment (both may back off, seeing each other's
                // lock); odd rounds: the second a little later (it finds the first holding).
                let delays = [0, if round % 2 == 0 { 0 } else { 20 * round }];
                let handles: Vec<_> = [&repo.0, &repo.1]
                    .into_iter()
                    .zip(delays)
                    .map(|(r, delay)| {
                        let (barrier, held) = (&barrier, &held);
                        s.spawn(move || {
                            barrier.wait();
                            std::thread::sleep(Duration::from_millis(delay));
                            match r.lock("prune", true, &settings) {
                                Ok(lock) => {
                                    let from = Instant::now();
                                    std::thread::sleep(Duration::from_millis(300));
                                    held.lock().expect("held").push((from, Instant::now()));
                                    lock.release();
                                    Ok(())
                                }
                                Err(e) => Err(e.to_string()),
                            }
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("thread"))
                    .collect()
            });
            for r in &results {
                if let Err(e) = r {
                    assert!(
                        e.contains("is in use") && e.contains("prune (exclusive)"),
                        "{url} round {round}: the loser fails cleanly, naming the holder: {e}"
                    );
                }
            }
            winners += results.iter().filter(|r| r.is_ok()).count();
            assert!(
                results.iter().filter(|r| r.is_ok()).count() <= 1,
                "{url} round {round}: both prunes got the exclusive lock"
            );
        }
        let spans = held.lock().expect("held").clone();
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                assert!(
                    a.1 <= b.0 || b.1 <= a.0,
                    "{url}: two exclusive holders at once"
                );
            }
        }
        assert!(winners > 0, "{url}: no prune ever got the lock");
        let locks = repo.0.locks(None, None, &settings).expect("locks");
        assert!(
            locks.is_empty(),
            "{url}: every lock was released: {locks:?}"
        );
    }
}

/// RELIABILITY case 19: a lock left by another host (whose process this host cannot see) is
/// respected while it is fresh — prune refuses, naming that host, and `unlock` leaves it — and
/// detected as stale only once the storage's clock says it has not been refreshed within the
/// bound; then prune removes it and runs. On local disk and on the S3 server.
#[test]
fn another_hosts_lock_is_respected_until_it_is_stale() {
    use lifeboat::ops::prune::{prune, PruneOptions};
    use lifeboat::repo::lock::{LockInfo, LockSettings};
    use lifeboat::repo::seal::ObjectType;
    use lifeboat::storage::FileKind;
    let local = Scratch::new();
    for url in [
        local.join("repo").display().to_string(),
        s3_url("other-host"),
    ] {
        let s3 = url.starts_with("s3://");
        let run = |a: Vec<std::ffi::OsString>| if s3 { lifeboat_s3(a) } else { lifeboat(a) };
        run(args!["init", "--repo", &url]).success();
        let repo = open_repo(&url);
        // The other host's backup lock, as it writes one (sealed JSON, named by its hash).
        let now = chrono::Utc::now();
        let info = LockInfo {
            operation: "backup".into(),
            exclusive: false,
            host: "other-host.example".into(),
            pid: 1,
            user: "root".into(),
            created: now,
            refreshed: now,
            nonce: 7,
        };
        let mut body = vec![0u8];
        body.extend(serde_json::to_vec(&info).expect("json"));
        let sealed = repo.sealer().seal(ObjectType::Lock, &body);
        let name = blake3::hash(&sealed).to_hex().to_string();
        assert!(repo
            .storage()
            .create(FileKind::Lock, &name, &sealed)
            .expect("write lock"));

        let err = prune(&repo, &PruneOptions::default(), Arc::default())
            .expect_err("a live lock of another host");
        assert!(
            err.to_string().contains("other-host.example"),
            "{url}: prune names the holder: {err}"
        );
        let out = run(args!["unlock", "--repo", &url]).success();
        assert!(
            !out.stdout().contains("removed lock")
                && out
                    .stdout()
                    .contains("still held: backup (shared) by root@other-host.example"),
            "{url}: unlock removed a fresh lock: {out}"
        );
        assert_eq!(
            repo.locks(None, None, &LockSettings::default())
                .expect("locks")
                .len(),
            1
        );
        // Not refreshed for longer than the bound (2 s here), by the storage's clock.
        std::thread::sleep(Duration::from_secs(3));
        let opts = PruneOptions {
            lock: LockSettings::with_stale_after(Duration::from_secs(2)),
            ..PruneOptions::default()
        };
        prune(&repo, &opts, Arc::default()).expect("prune after the lock went stale");
        assert!(
            repo.locks(None, None, &LockSettings::default())
                .expect("locks")
                .is_empty(),
            "{url}: the stale lock was removed"
        );
    }
}

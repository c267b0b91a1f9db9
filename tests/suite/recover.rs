//! `lifeboat recover --host H --target DIR` (issue 21): a whole server back in one verified
//! pass — the newest snapshot of every job of the host, all verified before any is placed.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

/// A dead host `web1` with three jobs (system: /etc and /home; db; logs), an older db
/// snapshot, a one-off snapshot without a job, and another host's job. Returns the repository,
/// the scratch directory and the source root (everything lies beneath it).
fn three_jobs() -> (Repo, Scratch, PathBuf) {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let root = scratch.join("server");
    write_file(&root.join("etc/app/app.conf"), b"listen 443\n");
    write_file(&root.join("home/ann/notes.txt"), b"remember the milk\n");
    write_file(&root.join("var/log/app.log"), b"started\n");
    // An older version of the db job's data, then the current one: the newest snapshot's data
    // (base and wal, 7 MiB) fills a pack of its own, the largest, which the damage test hits.
    write_file(
        &root.join("var/lib/db/old.dat"),
        &random_bytes(MIB as usize, 2),
    );
    repo.backup(args![
        "--job",
        "db",
        "--host",
        "web1",
        root.join("var/lib/db")
    ]);
    fs::remove_file(root.join("var/lib/db/old.dat")).expect("rm");
    write_file(
        &root.join("var/lib/db/base.dat"),
        &random_bytes(6 * MIB as usize, 1),
    );
    write_file(
        &root.join("var/lib/db/wal.dat"),
        &random_bytes(MIB as usize, 3),
    );
    repo.backup(args![
        "--job",
        "db",
        "--host",
        "web1",
        root.join("var/lib/db")
    ]);
    repo.backup(args![
        "--job",
        "system",
        "--host",
        "web1",
        root.join("etc"),
        root.join("home")
    ]);
    repo.backup(args![
        "--job",
        "logs",
        "--host",
        "web1",
        root.join("var/log")
    ]);
    // Another host, and a one-off backup of web1 without a job: neither is recovered.
    let other = scratch.join("other");
    write_file(&other.join("etc/other.conf"), b"not web1\n");
    repo.backup(args!["--job", "system", "--host", "web2", &other]);
    repo.backup(args!["--host", "web1", &other]);
    (repo, scratch, root)
}

/// Every job of the host comes back byte for byte, from its newest snapshot, in one command;
/// the report has one entry per job with its snapshot, files, bytes and time; the other host
/// and the snapshot without a job are not restored (the latter is named, with the command).
#[test]
fn recover_brings_back_every_job_of_the_host() {
    let (repo, scratch, root) = three_jobs();
    let target = scratch.join("target");
    let out = repo
        .run(
            "recover",
            args!["--host", "web1", "--target", &target, "--json"],
        )
        .success();
    let report = out.json();
    let jobs = report["jobs"].as_array().expect("jobs");
    let mut names: Vec<&str> = jobs
        .iter()
        .map(|j| j["job"].as_str().expect("job"))
        .collect();
    names.sort();
    assert_eq!(names, ["db", "logs", "system"], "{report}");
    for j in jobs {
        assert!(is_hex(j["snapshot_id"].as_str().expect("id"), 64), "{j}");
        assert!(num(j, "files") >= 1 && j["secs"].as_f64().is_some(), "{j}");
    }
    assert_eq!(report["written"], true);
    let db = jobs.iter().find(|j| j["job"] == "db").expect("db");
    assert_eq!(
        num(db, "bytes"),
        7 * MIB,
        "the newest db snapshot: base + wal"
    );
    assert!(out.stderr().contains("not recovering snapshot"), "{out}");

    let back = restored(&target, &root);
    assert_trees_equal(&root.join("etc"), &back.join("etc"));
    assert_trees_equal(&root.join("home"), &back.join("home"));
    assert_trees_equal(&root.join("var/lib/db"), &back.join("var/lib/db"));
    assert_trees_equal(&root.join("var/log"), &back.join("var/log"));
    assert!(
        !back.join("var/lib/db/old.dat").exists(),
        "the old snapshot was used"
    );
    // A directory two jobs restore into (var: the logs job's var/log, the db job's var/lib/db)
    // keeps the snapshot's mtime: the one placed second does not leave its own time on it.
    for dir in ["var", "var/lib"] {
        let mtime = |p: &Path| fs::metadata(p).expect("stat").modified().expect("mtime");
        assert_eq!(
            mtime(&back.join(dir)),
            mtime(&root.join(dir)),
            "{dir}: its mtime is the restore's, not the snapshot's"
        );
    }
    let other = restored(&target, &scratch.join("other"));
    assert!(
        !other.exists(),
        "another host's data or a one-off snapshot was restored"
    );
    assert!(
        staging_dirs(&target).is_empty(),
        "staging left behind: {:?}",
        staging_dirs(&target)
    );
}

/// One damaged chunk in one job: nothing of any job is written (the target is not even
/// created), exit code 1, and the damaged file is named.
#[test]
fn a_damaged_job_means_nothing_is_written() {
    let (repo, scratch, _root) = three_jobs();
    corrupt_largest_pack(&repo);
    let target = scratch.join("target");
    let out = repo
        .run("recover", args!["--host", "web1", "--target", &target])
        .expect_code(1);
    assert!(out.stderr().contains("damaged"), "{out}");
    assert!(out.stderr().contains("nothing was written"), "{out}");
    assert!(!target.exists(), "the target was written: {out}");
}

/// Two jobs that would create the same file: refused before anything is read, naming both
/// jobs and the path; with --job the operator chooses.
#[test]
fn jobs_that_hold_the_same_file_are_refused_not_guessed() {
    let (repo, scratch, root) = three_jobs();
    repo.backup(args![
        "--job",
        "everything",
        "--host",
        "web1",
        root.join("etc")
    ]);
    let target = scratch.join("target");
    let out = repo
        .run("recover", args!["--host", "web1", "--target", &target])
        .expect_code(1);
    let err = out.stderr();
    assert!(
        err.contains("job everything") && err.contains("job system") && err.contains("app.conf"),
        "{out}"
    );
    assert!(!target.exists(), "something was written: {out}");
    repo.run(
        "recover",
        args!["--host", "web1", "--job", "system", "--target", &target],
    )
    .success();
    assert_trees_equal(&root.join("etc"), &restored(&target, &root).join("etc"));
}

/// Recovering over a tree that has the files already (a rescue system's `/`): refused without
/// --overwrite, nothing changed; with it every file holds the snapshot's content.
#[test]
fn recover_over_an_existing_tree_needs_overwrite() {
    let (repo, scratch, root) = three_jobs();
    let target = scratch.join("target");
    let back = restored(&target, &root);
    write_file(&back.join("etc/app/app.conf"), b"broken config\n");
    write_file(&back.join("var/log/app.log"), b"other log\n");
    let out = repo
        .run("recover", args!["--host", "web1", "--target", &target])
        .expect_code(1);
    assert!(out.stderr().contains("--overwrite"), "{out}");
    assert_eq!(
        fs::read(back.join("etc/app/app.conf")).expect("read"),
        b"broken config\n"
    );
    assert!(
        !back.join("home").exists(),
        "a job was placed although another was refused"
    );
    repo.run(
        "recover",
        args!["--host", "web1", "--target", &target, "--overwrite"],
    )
    .success();
    assert_trees_equal(&root.join("etc"), &back.join("etc"));
    assert_trees_equal(&root.join("var/log"), &back.join("var/log"));
    assert_trees_equal(&root.join("var/lib/db"), &back.join("var/lib/db"));
}

/// `--dry-run` says what would be restored and how long it would take, and writes nothing to
/// the target; its totals are those of the real recover.
#[test]
fn dry_run_estimates_and_writes_nothing() {
    let (repo, scratch, _root) = three_jobs();
    let target = scratch.join("target");
    let plan = repo
        .run(
            "recover",
            args!["--host", "web1", "--target", &target, "--dry-run", "--json"],
        )
        .success()
        .json();
    assert!(!target.exists(), "a dry run created the target");
    assert_eq!(plan["jobs"].as_array().expect("jobs").len(), 3, "{plan}");
    assert!(
        plan["estimated_secs"].as_f64().expect("estimate") > 0.0,
        "{plan}"
    );
    let text = repo
        .run(
            "recover",
            args!["--host", "web1", "--target", &target, "--dry-run"],
        )
        .success()
        .stdout();
    assert!(text.contains("estimated time"), "{text}");
    let real = repo
        .run(
            "recover",
            args!["--host", "web1", "--target", &target, "--json"],
        )
        .success()
        .json();
    assert_eq!(num(&plan, "bytes"), num(&real, "bytes"), "{plan}\n{real}");
    assert_eq!(num(&plan, "files"), num(&real, "files"), "{plan}\n{real}");
}

/// A host the repository does not know, or no --host: refused, listing the hosts there are.
#[test]
fn an_unknown_host_is_refused_with_the_hosts_there_are() {
    let (repo, scratch, _root) = three_jobs();
    let target = scratch.join("target");
    let out = repo
        .run("recover", args!["--host", "web9", "--target", &target])
        .expect_code(1);
    assert!(
        out.stderr().contains("\"web1\"") && out.stderr().contains("\"web2\""),
        "{out}"
    );
    let out = repo
        .run("recover", args!["--target", &target])
        .expect_code(1);
    assert!(out.stderr().contains("--host"), "{out}");
    assert!(!target.exists());
}

fn staging_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(".lifeboat-restore-")
            {
                found.push(e.path());
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    found
}

//! Snapshot trees of hostile shape, crafted directly in a repository: a chain of 10,000
//! directory levels, one listing of 100,000 entries shared by 10,000 directories (10⁹ entries
//! from a repository of a few MB), and a file whose chunks do not cover its declared size.
//! Every command that walks a snapshot's tree must finish, or refuse per entry or as a whole
//! with a clear error, within bounded memory, and stop on SIGTERM: never a crash.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use lifeboat::id::BlobId;
use lifeboat::repo::BlobKind;

use crate::common::craft::{dir, file, Crafter};
use crate::common::*;

/// The report of a `--json` command: the line after the progress events.
fn report_of(out: &Out) -> serde_json::Value {
    out.json_lines()
        .into_iter()
        .rfind(|v| v["type"] != "progress")
        .unwrap_or_else(|| panic!("no report\n{out}"))
}

const DEPTH: usize = 10_000;

/// A repository with one snapshot: `/d/d/…/d/leaf.txt`, `DEPTH` directories deep.
fn deep_chain() -> (Repo, String) {
    let repo = Repo::new();
    let mut c = Crafter::new(&repo.path);
    let data = c.blob(BlobKind::Data, b"at the bottom\n");
    let mut below = c.tree(vec![file("leaf.txt", vec![data], 14)]);
    for _ in 0..DEPTH {
        below = c.tree(vec![dir("d", below)]);
    }
    let id = c.snapshot(below);
    (repo, id)
}

const SHARED_ENTRIES: usize = 100_000;
const SHARING_DIRS: usize = 10_000;

/// A repository with one snapshot whose root holds `SHARING_DIRS` directories that all have
/// the same listing of `SHARED_ENTRIES` empty files: 10⁹ entries.
fn shared_listing() -> (Repo, String) {
    let repo = Repo::new();
    let mut c = Crafter::new(&repo.path);
    let shared = c.tree(
        (0..SHARED_ENTRIES)
            .map(|i| file(&format!("f{i:06}"), Vec::new(), 0))
            .collect(),
    );
    let root = c.tree(
        (0..SHARING_DIRS)
            .map(|i| dir(&format!("d{i:05}"), shared))
            .collect(),
    );
    let id = c.snapshot(root);
    (repo, id)
}

/// `lifeboat ARGS` with its address space limited to `limit_mib` (so a process that tries to
/// grow past it fails its allocation and aborts, instead of taking the machine's memory).
fn limited(limit_mib: u64, args: Vec<OsString>) -> Command {
    let mut cmd = Command::new("sh");
    lifeboat_env_for(&mut cmd);
    cmd.arg("-c")
        .arg(format!(
            "ulimit -v {} && exec \"$0\" \"$@\"",
            limit_mib * 1024
        ))
        .arg(bin())
        .args(args);
    cmd
}

/// RELIABILITY case 24: a chain of 10,000 directory levels plans and verifies: `restore
/// --verify-only` reads every level and verifies the file at the bottom (it was refused
/// whole past 4,096 levels).
#[test]
fn a_ten_thousand_level_chain_verifies_with_restore_verify_only() {
    let (repo, id) = deep_chain();
    let out = repo
        .run("restore", args![&id, "--verify-only", "--json"])
        .success();
    let r = out.json();
    assert_eq!(num(&r, "files"), 1, "{out}");
    assert_eq!(num(&r, "dirs"), DEPTH as u64, "{out}");
    assert_eq!(num(&r, "bytes"), 14, "{out}");
}

/// RELIABILITY case 24: a chain of 10,000 directory levels (a path of 20 KB, five times
/// PATH_MAX) restores: every level is made, the file at the bottom has its content, and a
/// second restore with `--overwrite` over it succeeds. Before the fix it failed with "File
/// name too long".
#[test]
fn a_ten_thousand_level_chain_restores_at_full_depth() {
    let (repo, id) = deep_chain();
    let target = Scratch::new();
    let out = repo.restore(&id, target.path(), args!["--json"]).success();
    let r = report_of(&out);
    assert_eq!(num(&r, "dirs"), DEPTH as u64, "{out}");
    let rel: PathBuf = std::iter::repeat_n("d", DEPTH)
        .chain(["leaf.txt"])
        .collect();
    assert_eq!(read_deep(target.path(), &rel), b"at the bottom\n");
    let out = repo
        .restore(&id, target.path(), args!["--overwrite", "--json"])
        .success();
    assert_eq!(num(&report_of(&out), "replaced"), 1, "{out}");
    assert_eq!(read_deep(target.path(), &rel), b"at the bottom\n");
}

/// RELIABILITY case 24: a chain of 10,000 directory levels goes through `ls`, `check`,
/// `check --read-data`, `repair snapshots`, `prune` and `drill` without a crash: each lists,
/// checks or counts every level, and the drill restores the 20 KB path, verifies it and removes
/// its sample again (iteratively: its cleanup recursed by path).
#[test]
fn a_ten_thousand_level_chain_goes_through_ls_check_repair_prune_and_drill() {
    let (repo, id) = deep_chain();
    let out = repo.ls(&id, args![]).success();
    let lines: Vec<&str> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| std::str::from_utf8(l).expect("utf-8"))
        .collect();
    assert_eq!(
        lines.len(),
        DEPTH + 1,
        "every level and the file are listed"
    );
    let deepest = format!("{}/leaf.txt", "/d".repeat(DEPTH));
    assert!(
        lines.contains(&deepest.as_str()),
        "the file at the bottom is listed"
    );

    repo.check(args![]).success();
    repo.check(args!["--read-data"]).success();
    let out = lifeboat(args!["repair", "snapshots", "--repo", &repo.path, "--json"]).success();
    let r = out.json();
    assert_eq!(r["intact"].as_array().map(Vec::len), Some(1), "{out}");
    repo.run("prune", args![]).success();
    repo.check(args!["--read-data"]).success();

    let scratch = Scratch::new();
    let out = repo.run(
        "drill",
        args![&id, "--all", "--json", "--scratch", scratch.path()],
    );
    // The listing is walked to the bottom, the 20 KB path is restored into the scratch
    // directory and verified, and the scratch directory is removed again.
    let report = out
        .json_lines()
        .into_iter()
        .rfind(|v| v["type"] != "progress")
        .unwrap_or_else(|| panic!("the drill reports\n{out}"));
    assert_eq!(num(&report, "total_dirs"), DEPTH as u64, "{out}");
    assert_eq!(num(&report, "total_files"), 1, "{out}");
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        std::fs::read_dir(scratch.path())
            .expect("scratch")
            .next()
            .is_none(),
        "the drill removed its sample"
    );
}

/// RELIABILITY case 24: one listing of 100,000 entries referenced by 10,000 directories (10⁹
/// entries, a few MB stored): `restore` refuses with a clear error naming the snapshot and
/// suggesting `--include`, within bounded memory (under a 1.5 GiB address-space limit it used
/// to grow until an allocation failed and it aborted); a restore of one of the directories
/// works.
#[test]
fn a_listing_shared_by_ten_thousand_directories_is_refused_by_restore_within_bounded_memory() {
    let (repo, id) = shared_listing();
    let out = run_cmd(limited(
        1536,
        args!["restore", "--repo", &repo.path, &id, "--verify-only"],
    ));
    assert_eq!(out.code, Some(1), "a clean refusal, not a crash\n{out}");
    let err = out.stderr();
    assert!(err.contains(&id[..8]), "names the snapshot: {err}");
    assert!(err.contains("--include"), "suggests --include: {err}");

    let target = Scratch::new();
    let out = repo
        .restore(&id, target.path(), args!["--include", "/d00042", "--json"])
        .success();
    assert_eq!(
        num(&report_of(&out), "files"),
        SHARED_ENTRIES as u64,
        "{out}"
    );
}

/// RELIABILITY case 24: SIGTERM stops the planning of a 10⁹-entry restore promptly with exit
/// 130 (planning did not look at the signal).
#[test]
fn sigterm_stops_the_planning_of_a_huge_shared_tree() {
    let (repo, id) = shared_listing();
    let code = sigterm_after(
        limited(
            4096,
            args!["restore", "--repo", &repo.path, &id, "--verify-only"],
        ),
        Duration::from_millis(1500),
    );
    assert_eq!(code, Some(130));
}

/// RELIABILITY case 24: `ls` of a 10⁹-entry tree streams within bounded memory and stops on
/// SIGTERM with exit 130.
#[test]
fn ls_of_a_huge_shared_tree_streams_and_stops_on_sigterm() {
    let (repo, id) = shared_listing();
    let code = sigterm_after(
        limited(512, args!["ls", "--repo", &repo.path, &id]),
        Duration::from_millis(1500),
    );
    assert_eq!(code, Some(130));
}

/// RELIABILITY case 24: `check`, `check --read-data`, `prune`, `repair snapshots` and
/// `drill` walk a listing shared by 10,000 directories once, within bounded memory; the drill
/// still counts every entry of the snapshot.
#[test]
fn check_prune_repair_and_drill_walk_a_shared_listing_once() {
    let (repo, id) = shared_listing();
    // `words` name the command, `rest` follows the repository.
    let run = |words: &[&str], rest: Vec<OsString>| {
        let mut all: Vec<OsString> = words.iter().map(OsString::from).collect();
        all.extend(args!["--repo", &repo.path]);
        all.extend(rest);
        run_cmd(limited(1024, all))
    };
    run(&["check"], args![]).success();
    run(&["check"], args!["--read-data"]).success();
    run(&["repair", "snapshots"], args![]).success();
    run(&["prune"], args![]).success();
    let scratch = Scratch::new();
    let out = run(
        &["drill"],
        args![
            &id,
            "--sample-files",
            "0.01",
            "--json",
            "--scratch",
            scratch.path()
        ],
    )
    .success();
    let report = report_of(&out);
    assert_eq!(
        num(&report, "total_entries"),
        (SHARING_DIRS * (SHARED_ENTRIES + 1)) as u64,
        "{out}"
    );
    assert_eq!(num(&report, "total_dirs"), SHARING_DIRS as u64, "{out}");
    assert_eq!(report["passed"], true, "{out}");
}

/// RELIABILITY case 7: a file whose chunks do not cover its declared size (no chunks, and a
/// size of 2⁶³ − 1 bytes) is one damaged file: `--allow-partial` restores the rest and names
/// it (it used to abort the whole restore, sizing the staged file).
#[test]
fn a_file_with_no_chunks_and_a_huge_size_is_one_damaged_file() {
    let repo = Repo::new();
    let mut c = Crafter::new(&repo.path);
    let data = c.blob(BlobKind::Data, b"intact\n");
    let root = c.tree(vec![
        file("good.txt", vec![data], 7),
        file("huge.bin", Vec::new(), i64::MAX as u64),
    ]);
    let id = c.snapshot(root);
    let target = Scratch::new();
    let out = repo.restore(&id, target.path(), args!["--allow-partial"]);
    let out = out.expect_code(3);
    out.stderr_contains("/huge.bin");
    out.stderr_contains("its chunks hold 0 bytes");
    assert_eq!(
        std::fs::read(target.join("good.txt")).expect("the intact file is restored"),
        b"intact\n"
    );
    assert!(!target.join("huge.bin").exists());
    let out = repo.run("restore", args![&id, "--verify-only"]);
    out.expect_code(1).stderr_contains("/huge.bin");
}

/// RELIABILITY case 24: a missing chunk in a listing shared by 1,500 directories: `check`
/// reads the listing once and names the affected file under the first 1,000 of its paths,
/// then says there are more (it walked every snapshot again in full once it found a problem,
/// listing every path: 10⁹ entries for the tree of the tests above).
#[test]
fn check_names_the_paths_of_damage_in_a_shared_listing_up_to_a_bound() {
    let repo = Repo::new();
    let mut c = Crafter::new(&repo.path);
    let intact = c.blob(BlobKind::Data, b"intact\n");
    let lost = BlobId([7; 32]);
    let shared = c.tree(vec![
        file("lost.txt", vec![lost], 5),
        file("ok.txt", vec![intact], 7),
    ]);
    let root = c.tree(
        (0..1500)
            .map(|i| dir(&format!("d{i:04}"), shared))
            .collect(),
    );
    let id = c.snapshot(root);
    let out = repo.check(args!["--json"]).expect_code(1);
    let r = out.json();
    let errors = r["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{out}");
    assert_eq!(errors[0]["object"], format!("chunk {lost}"), "{out}");
    let affects: Vec<&str> = errors[0]["affects"]
        .as_array()
        .expect("affects")
        .iter()
        .map(|v| v.as_str().expect("string"))
        .collect();
    assert_eq!(affects.len(), 1001, "{out}");
    let label = format!("snapshot {}: /d", &id[..8]);
    let paths: HashSet<&str> = affects
        .iter()
        .copied()
        .filter(|a| a.starts_with(&label) && a.ends_with("/lost.txt"))
        .collect();
    assert_eq!(
        paths.len(),
        1000,
        "distinct paths of the damaged file: {affects:?}"
    );
    assert!(
        affects.iter().any(|a| a.contains("and more")),
        "{affects:?}"
    );
}

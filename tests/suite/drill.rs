//! `lifeboat drill`: restore drills on healthy and damaged repositories, samples and seeds,
//! JSON output, the daemon-config form, and the scratch directory (always removed).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// A repository with one snapshot of a plain tree of `files` files (10..60 KiB each).
fn backed_up_plain_tree(files: usize) -> (Repo, Scratch, PathBuf, TreeFacts) {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let facts = build_plain_tree(&src, files, 0, 3);
    repo.backup(args![&src]);
    (repo, scratch, src, facts)
}

/// `drill --json --scratch PARENT REST...` on `repo`: checks the JSON stream's shape
/// (progress events, then the report last) and returns the output and the report.
#[track_caller]
fn drill_json(repo: &Repo, parent: &Path, rest: Vec<std::ffi::OsString>) -> (Out, Value) {
    let mut all = args!["--json", "--scratch", parent];
    all.extend(rest);
    let out = repo.run("drill", all);
    let report = last_report(&out);
    (out, report)
}

#[track_caller]
fn last_report(out: &Out) -> Value {
    let lines = out.json_lines();
    let (last, events) = lines
        .split_last()
        .unwrap_or_else(|| panic!("drill --json printed nothing\n{out}"));
    for e in events {
        assert_eq!(e["type"], "progress", "unexpected JSON line {e}\n{out}");
    }
    assert_eq!(
        last["type"], "drill",
        "the report is not the last line\n{out}"
    );
    last.clone()
}

fn float(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} is not an array in {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// What is left in a scratch parent: nothing, after any drill.
#[track_caller]
fn assert_empty(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .expect("read scratch parent")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "scratch data left behind: {left:?}");
}

#[test]
fn healthy_drill_passes_and_reports_figures_consistent_with_the_snapshot() {
    let (repo, _s, _src, facts) = backed_up_plain_tree(40);
    let parent = Scratch::new();
    let (out, r) = drill_json(&repo, parent.path(), args!["--seed", "7"]);
    let out = out.success();
    assert_eq!(r["passed"], true, "{out}");
    assert_eq!(r["problems"].as_array().map(Vec::len), Some(0), "{out}");
    assert_eq!(r["sample"], "10% of files");
    assert_eq!(r["seed"], 7);
    let snaps = repo.snapshots(args![]);
    assert_eq!(r["snapshot_id"], snaps[0]["id"], "{out}");
    // The snapshot's figures.
    assert_eq!(num(&r, "total_files"), facts.regular_files as u64);
    assert_eq!(num(&r, "total_bytes"), facts.total_bytes);
    // 10% of 40 files, all restored and verified.
    assert_eq!(num(&r, "files_sampled"), 4);
    assert_eq!(num(&r, "files_restored"), 4);
    let bytes = num(&r, "bytes_restored");
    assert_eq!(bytes, num(&r, "bytes_sampled"));
    assert!((4 * 10 * KIB..=4 * 60 * KIB).contains(&bytes), "{bytes}");
    assert!(bytes < num(&r, "total_bytes"));
    // The files and the directories above them.
    assert!(num(&r, "entries_restored") > 4);
    assert!(num(&r, "entries_restored") < num(&r, "total_entries"));
    assert!(float(&r, "restore_secs") > 0.0);
    assert!(float(&r, "duration_secs") >= float(&r, "restore_secs"));
    assert!(float(&r, "throughput_bytes_per_sec") > 0.0);
    let estimate = float(&r, "estimated_full_restore_secs");
    assert!(estimate > 0.0 && estimate.is_finite(), "{estimate}");
    let scratch = PathBuf::from(string(&r, "scratch"));
    assert_eq!(scratch.parent(), Some(parent.path()), "{out}");
    assert!(
        scratch
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("lifeboat-drill-")),
        "{scratch:?}"
    );
    assert_empty(parent.path());
}

#[test]
fn human_output_says_passed_with_figures_and_estimate() {
    let (repo, _s, _src, _facts) = backed_up_plain_tree(20);
    let parent = Scratch::new();
    let out = repo
        .run("drill", args!["latest", "--scratch", parent.path()])
        .success();
    let text = out.stdout();
    assert!(
        text.starts_with("drill passed: restored 2 of 20 files ("),
        "{out}"
    );
    assert!(text.contains("MiB/s); estimated full restore: "), "{out}");
    assert!(text.contains("sample: 10% of files (seed "), "{out}");
    assert_empty(parent.path());
}

#[test]
fn all_restores_and_verifies_the_whole_snapshot() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    // Symlinks, hard links, a fifo, a sparse file, odd names and modes, empty files...
    build_everything_tree(&src);
    repo.backup(args![&src]);
    let parent = Scratch::new();
    let (out, r) = drill_json(&repo, parent.path(), args!["--all"]);
    let out = out.success();
    assert_eq!(r["passed"], true, "{out}");
    assert_eq!(r["sample"], "the whole snapshot");
    assert_eq!(num(&r, "files_restored"), num(&r, "total_files"));
    assert_eq!(num(&r, "bytes_restored"), num(&r, "total_bytes"));
    assert_eq!(
        num(&r, "entries_restored"),
        num(&r, "total_entries"),
        "{out}"
    );
    assert_eq!(num(&r, "dirs_restored"), num(&r, "total_dirs"));
    assert!(float(&r, "estimated_full_restore_secs") > 0.0);
    assert_empty(parent.path());
}

#[test]
fn byte_share_restores_at_least_that_share_of_the_bytes() {
    let (repo, _s, _src, facts) = backed_up_plain_tree(30);
    let parent = Scratch::new();
    let (out, r) = drill_json(&repo, parent.path(), args!["--sample-bytes", "30"]);
    out.success();
    assert_eq!(r["sample"], "30% of bytes");
    let bytes = num(&r, "bytes_restored");
    assert!(
        bytes * 10 >= facts.total_bytes * 3,
        "{bytes} of {}",
        facts.total_bytes
    );
    // Files are added only until the share is reached: at most one 60 KiB file beyond it.
    assert!(bytes < facts.total_bytes * 3 / 10 + 60 * KIB, "{bytes}");
    assert!(num(&r, "files_restored") < 30);
    assert_empty(parent.path());
}

#[test]
fn the_same_seed_picks_the_same_files() {
    let (repo, _s, src, _facts) = backed_up_plain_tree(40);
    let parent = Scratch::new();
    let sample = |seed: &str| {
        let (out, r) = drill_json(
            &repo,
            parent.path(),
            args!["--seed", seed, "--sample-files", "25", "--list"],
        );
        let out = out.success();
        let files = strings(&r, "files");
        assert_eq!(files.len(), 10, "{out}");
        assert_eq!(num(&r, "files_restored"), 10);
        for f in &files {
            assert!(
                Path::new(f).starts_with(&src),
                "{f} is not a file of {src:?}"
            );
        }
        files
    };
    let a = sample("12345");
    assert_eq!(a, sample("12345"), "the same seed chose other files");
    assert_ne!(
        a,
        sample("54321"),
        "another seed chose the same 10 of 40 files"
    );
    // --list in human form too.
    let out = repo
        .run(
            "drill",
            args![
                "--seed",
                "12345",
                "--sample-files",
                "25",
                "--list",
                "--scratch",
                parent.path()
            ],
        )
        .success();
    let listed: Vec<String> = out
        .stdout()
        .lines()
        .filter_map(|l| l.strip_prefix("sampled: ").map(str::to_string))
        .collect();
    assert_eq!(listed, a);
    assert_empty(parent.path());
}

/// RELIABILITY case 4: a flipped byte in a pack fails the drill, naming the pack.
#[test]
fn a_flipped_byte_in_a_pack_fails_the_drill_and_names_the_pack() {
    let (repo, _s, src, _summary) = repo_with_big_file();
    let pack = corrupt_largest_pack(&repo);
    let parent = Scratch::new();
    // big.bin holds nearly all the bytes: half of them cannot be sampled without it.
    let out = repo
        .run(
            "drill",
            args!["--sample-bytes", "50", "--scratch", parent.path()],
        )
        .expect_code(1);
    let text = out.all_output();
    assert!(text.contains(&pack), "the damaged pack is not named\n{out}");
    assert!(
        text.contains(&format!("{}: not restored", src.join("big.bin").display())),
        "the damaged file is not named\n{out}"
    );
    assert!(out.stdout().starts_with("drill FAILED: "), "{out}");
    out.stderr_contains("lifeboat: error: drill of snapshot");
    assert_empty(parent.path());

    // The whole snapshot: the same, as JSON; the intact files are restored and verified.
    let (out, r) = drill_json(&repo, parent.path(), args!["--all"]);
    let out = out.expect_code(1);
    assert_eq!(r["passed"], false);
    let problems = strings(&r, "problems");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("damaged repository object: data/") && p.contains(&pack)),
        "{out}"
    );
    assert_eq!(
        num(&r, "files_restored"),
        num(&r, "total_files") - 1,
        "{out}"
    );
    assert_empty(parent.path());
}

/// RELIABILITY case 6: a pack missing from storage fails the drill, naming the pack.
#[test]
fn a_missing_pack_fails_the_drill_and_names_the_pack() {
    let (repo, _s, _src, _summary) = repo_with_big_file();
    let (path, id) = repo.largest_pack();
    fs::remove_file(&path).expect("remove pack");
    let parent = Scratch::new();
    let (out, r) = drill_json(&repo, parent.path(), args!["--sample-bytes", "50"]);
    out.expect_code(1);
    assert_eq!(r["passed"], false);
    let problems = strings(&r, "problems");
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&id) && p.contains("missing")),
        "{problems:?}"
    );
    assert_empty(parent.path());
}

#[test]
fn a_damaged_directory_listing_fails_the_drill_with_a_report() {
    let (repo, _s, _src, _summary) = repo_with_big_file();
    let packs = repo.packs();
    // File data and directory listings go to separate packs: 8 MiB of data (one pack: data
    // goes to the first pack until a pack's worth is stored), a few listings in one small pack.
    assert_eq!(
        packs.len(),
        2,
        "test setup: expected one data and one listing pack"
    );
    let (path, id) = packs
        .into_iter()
        .min_by_key(|(p, _)| fs::metadata(p).expect("stat").len())
        .expect("two packs");
    let len = fs::metadata(&path).expect("stat").len();
    assert!(
        len < 64 << 10,
        "test setup: the listing pack is small ({len} bytes)"
    );
    flip_byte(&path, len / 3);
    let parent = Scratch::new();
    let (out, r) = drill_json(&repo, parent.path(), args![]);
    out.expect_code(1);
    assert_eq!(r["passed"], false);
    let problems = strings(&r, "problems");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("directory listing cannot be read") && p.contains(&id)),
        "{problems:?}"
    );
    assert_empty(parent.path());
}

#[test]
fn an_unreachable_repository_is_an_error_not_a_report() {
    let parent = Scratch::new();
    let out = lifeboat(args![
        "drill",
        "--repo",
        parent.join("no-repo-here"),
        "--scratch",
        parent.path(),
        "--json"
    ])
    .expect_code(1);
    out.stderr_contains("no Lifeboat repository");
    assert!(out.stdout().trim().is_empty(), "{out}");
    assert!(!parent.join("no-repo-here").exists());
}

#[test]
fn the_default_scratch_is_under_tmpdir_and_is_removed() {
    let (repo, _s, _src, _facts) = backed_up_plain_tree(10);
    let tmp = Scratch::new();
    let out = lifeboat_env(
        args!["drill", "--repo", &repo.path, "--json"],
        &[("TMPDIR", tmp.path().as_os_str())],
    )
    .success();
    let r = last_report(&out);
    assert_eq!(
        PathBuf::from(string(&r, "scratch")).parent(),
        Some(tmp.path())
    );
    assert_empty(tmp.path());
}

#[test]
fn bad_shares_are_refused() {
    let (repo, _s, _src, _facts) = backed_up_plain_tree(3);
    let parent = Scratch::new();
    for (flag, pct) in [
        ("--sample-files", "0"),
        ("--sample-files", "150"),
        ("--sample-bytes", "-5"),
    ] {
        let out = repo
            .run("drill", args![flag, pct, "--scratch", parent.path()])
            .failure();
        assert!(
            out.stderr().contains("percentage") || out.stderr().contains(pct),
            "{out}"
        );
    }
    repo.run("drill", args!["--all", "--sample-files", "5"])
        .expect_code(2);
    assert_empty(parent.path());
}

/// A daemon config with one job, `nightly`, backing up `src` into `repo`.
fn daemon_config(scratch: &Scratch, repo: &Path, src: &Path) -> PathBuf {
    let pass = scratch.join("password");
    fs::write(&pass, format!("{PASSWORD}\n")).expect("write password");
    let d = scratch.path().display();
    let text = format!(
        "[daemon]\nstate_dir = \"{d}/state\"\ncache_dir = \"{d}/cache\"\nruntime_dir = \"{d}/run\"\n\n\
         [repositories.local]\nurl = \"{}\"\npassword_file = \"{}\"\n\n\
         [[jobs]]\nname = \"nightly\"\nrepository = \"local\"\nsources = [\"{}\"]\nincremental = \"0 0 1 1 *\"\n",
        repo.display(),
        pass.display(),
        src.display()
    );
    let config = scratch.join("lifeboat.toml");
    fs::write(&config, text).expect("write config");
    config
}

#[test]
fn config_form_drills_the_latest_snapshot_of_the_job() {
    let scratch = Scratch::new();
    let repo = Repo::new();
    let src = scratch.join("src");
    let facts = build_plain_tree(&src, 12, 0, 5);
    let config = daemon_config(&scratch, &repo.path, &src);
    // The job's snapshot (no daemon runs: the job runs in this process)...
    lifeboat(args!["run", "--config", &config, "nightly"]).success();
    // ...and a newer snapshot of other files that is not the job's.
    let other = scratch.join("other");
    build_plain_tree(&other, 3, 0, 6);
    repo.backup(args![&other]);
    let snaps = repo.snapshots(args![]);
    let job_snap = snaps
        .iter()
        .find(|s| s["job"] == "nightly")
        .unwrap_or_else(|| panic!("no snapshot of job nightly: {snaps:?}"));

    let parent = Scratch::new();
    // The password comes from the config's password_file.
    let mut cmd = lifeboat_cmd();
    cmd.env_remove("LIFEBOAT_PASSWORD").args(args![
        "drill",
        "--config",
        &config,
        "nightly",
        "--all",
        "--scratch",
        parent.path(),
        "--json"
    ]);
    let out = run_cmd(cmd).success();
    let r = last_report(&out);
    assert_eq!(r["passed"], true, "{out}");
    assert_eq!(r["snapshot_id"], job_snap["id"], "{out}");
    assert_eq!(r["job"], "nightly");
    assert_eq!(num(&r, "total_files"), facts.regular_files as u64);
    assert_eq!(num(&r, "files_restored"), facts.regular_files as u64);
    assert_empty(parent.path());

    let out = lifeboat(args!["drill", "--config", &config, "weekly"]).expect_code(1);
    out.stderr_contains("no job named \"weekly\"");
}

#[test]
fn config_form_without_a_snapshot_of_the_job_says_so() {
    let scratch = Scratch::new();
    let repo = Repo::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 2, 0, 5);
    repo.backup(args![&src]); // not the job's
    let config = daemon_config(&scratch, &repo.path, &src);
    let out = lifeboat(args!["drill", "--config", &config, "nightly"]).expect_code(1);
    out.stderr_contains("no snapshot of job \"nightly\"");
}

#[test]
fn sigint_stops_the_drill_and_removes_the_scratch_data() {
    // 1 MiB packs: restore looks at the interruption flag between packs.
    let scratch = Scratch::new();
    let repo = Repo::at(&scratch.join("repo"));
    lifeboat(args!["init", "--repo", &repo.path, "--pack-size-mib", "1"]).success();
    let src = scratch.join("src");
    write_file(&src.join("big.bin"), &random_bytes(8 * MIB as usize, 9));
    repo.backup(args![&src]);
    let parent = Scratch::new();
    // Reading at 1 MiB/s, the 8 MiB restore takes long enough to be interrupted.
    let mut cmd = lifeboat_cmd();
    cmd.args(args![
        "drill",
        "--repo",
        &repo.path,
        "--all",
        "--limit-download",
        "1024",
        "--scratch",
        parent.path()
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start drill");
    let deadline = Instant::now() + Duration::from_secs(30);
    // Wait until the restore has staged its files in the scratch directory.
    loop {
        let staged = fs::read_dir(parent.path())
            .expect("read parent")
            .flatten()
            .any(|d| fs::read_dir(d.path()).is_ok_and(|mut e| e.next().is_some()));
        if staged {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the drill ended before it could be interrupted"
        );
        assert!(
            Instant::now() < deadline,
            "the drill never wrote to its scratch"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("send SIGINT");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_empty(parent.path());
}

/// `lifeboat drill JOB` on a server: the daemon's config comes from LIFEBOAT_CONFIG (or
/// /etc/lifeboat/lifeboat.toml) when no repository is given.
#[test]
fn drill_job_uses_the_daemon_config_by_default() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 5, 0, 3);
    let repo = Repo::new();
    repo.backup(args![&src]);
    let pass = scratch.join("pass");
    std::fs::write(&pass, PASSWORD).expect("write");
    let config = scratch.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[repositories.r]\nurl = \"{}\"\npassword_file = \"{}\"\n\n[[jobs]]\nname = \"web\"\nrepository = \"r\"\nsources = [\"{}\"]\nincremental = \"@daily\"\n",
            repo.path.display(),
            pass.display(),
            src.display()
        ),
    )
    .expect("write config");
    // The backup above was not made by the job: the job has no snapshot yet.
    let out = lifeboat_env(
        args!["drill", "web", "--scratch", scratch.path()],
        &[("LIFEBOAT_CONFIG", config.as_os_str())],
    )
    .failure();
    assert!(out.stderr().contains("no snapshot of job \"web\""), "{out}");
    // After the job's first run (in-process: no daemon runs), the drill passes.
    lifeboat(args!["run", "web", "--config", &config]).success();
    let out = lifeboat_env(
        args!["drill", "web", "--scratch", scratch.path()],
        &[("LIFEBOAT_CONFIG", config.as_os_str())],
    )
    .success();
    assert!(out.stdout().contains("drill passed"), "{out}");
}

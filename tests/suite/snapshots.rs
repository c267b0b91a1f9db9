//! `lifeboat snapshots` and how a SNAPSHOT argument is resolved (`latest`,
//! id prefixes, ambiguous and unknown ids).

use std::fs;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::common::*;

fn small_tree(root: &Path, seed: u64) {
    build_plain_tree(root, 3, 0, seed);
}

fn ids(snaps: &[Value]) -> Vec<String> {
    snaps.iter().map(|s| string(s, "id")).collect()
}

#[test]
fn empty_repository_lists_no_snapshots() {
    let repo = Repo::new();
    assert_eq!(repo.snapshots(args![]), Vec::<Value>::new());
}

/// Every documented field is present with the documented type, and agrees
/// with what `backup --json` reported.
#[test]
fn snapshot_json_has_all_documented_fields() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    small_tree(&src, 1);
    let before = Utc::now();
    let summary = repo.backup(args!["--tag", "nightly", &src]);
    let after = Utc::now();

    let snaps = repo.snapshots(args![]);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let s = &snaps[0];

    let id = string(s, "id");
    assert!(is_hex(&id, 64), "id {id:?}");
    assert_eq!(id, string(&summary, "snapshot_id"));
    let short = string(s, "short_id");
    assert!(is_hex(&short, 8), "short_id {short:?}");
    assert!(
        id.starts_with(&short),
        "short_id {short} is not a prefix of {id}"
    );

    let time = DateTime::parse_from_rfc3339(&string(s, "time"))
        .unwrap_or_else(|e| panic!("time is not RFC 3339: {e}: {s}"))
        .with_timezone(&Utc);
    let slack = chrono::Duration::seconds(2);
    assert!(
        time >= before - slack && time <= after + slack,
        "snapshot time {time} is not between {before} and {after}"
    );

    assert_eq!(s["host"], hostname().as_str(), "{s}");
    assert_eq!(s["kind"], "full", "{s}");
    assert!(s["parent"].is_null(), "{s}");
    assert_eq!(
        s["paths"],
        json!([src.to_str().expect("utf-8 path")]),
        "{s}"
    );
    assert_eq!(s["tags"], json!(["nightly"]), "{s}");

    let sum = &s["summary"];
    assert!(sum.is_object(), "summary is not an object: {s}");
    for field in [
        "files_new",
        "files_changed",
        "files_unchanged",
        "dirs",
        "bytes_read",
        "bytes_added",
        "total_bytes",
    ] {
        assert_eq!(
            num(sum, field),
            num(&summary, field),
            "summary.{field}: {s}"
        );
    }
    assert!(sum["duration_secs"].as_f64().is_some(), "{s}");
    assert_eq!(sum["errors"], json!([]), "{s}");
}

/// Snapshots come oldest first; each incremental snapshot names the previous
/// one as parent.
#[test]
fn snapshots_are_sorted_oldest_first_and_chained_by_parent() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    small_tree(&src, 2);
    let mut created = Vec::new();
    for round in 0..3 {
        write_file(&src.join(format!("round-{round}.txt")), b"another round\n");
        created.push(string(&repo.backup(args![&src]), "snapshot_id"));
    }

    let snaps = repo.snapshots(args![]);
    assert_eq!(ids(&snaps), created, "not in creation order");
    let kinds: Vec<&str> = snaps
        .iter()
        .map(|s| s["kind"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds, ["full", "incremental", "incremental"]);
    assert!(snaps[0]["parent"].is_null());
    assert_eq!(snaps[1]["parent"], created[0].as_str());
    assert_eq!(snaps[2]["parent"], created[1].as_str());
    let times: Vec<DateTime<chrono::FixedOffset>> = snaps
        .iter()
        .map(|s| DateTime::parse_from_rfc3339(&string(s, "time")).expect("RFC 3339"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "times not ascending: {times:?}"
    );
}

/// `--host` and `--path` narrow the listing.
#[test]
fn snapshots_can_be_filtered_by_host_and_path() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let a = scratch.join("a");
    let b = scratch.join("b");
    small_tree(&a, 3);
    small_tree(&b, 4);
    let a1 = string(&repo.backup(args!["--host", "alpha", &a]), "snapshot_id");
    let b1 = string(&repo.backup(args!["--host", "alpha", &b]), "snapshot_id");
    let a2 = string(&repo.backup(args!["--host", "beta", &a]), "snapshot_id");

    assert_eq!(
        ids(&repo.snapshots(args!["--host", "alpha"])),
        [a1.clone(), b1.clone()]
    );
    assert_eq!(
        ids(&repo.snapshots(args!["--host", "beta"])),
        vec![a2.clone()]
    );
    assert_eq!(
        ids(&repo.snapshots(args!["--path", &a])),
        [a1.clone(), a2.clone()]
    );
    assert_eq!(ids(&repo.snapshots(args!["--path", &b])), [b1]);
    assert_eq!(
        ids(&repo.snapshots(args!["--host", "beta", "--path", &a])),
        [a2]
    );
    assert_eq!(
        repo.snapshots(args!["--host", "gamma"]),
        Vec::<Value>::new()
    );
}

/// `latest` is the newest snapshot of one host's job or set of paths, narrowed by `--host` /
/// `--path`; when the snapshots left belong to more than one, it refuses (exit 5) and restores
/// nothing, instead of the newest of any (issue 21: the wrong job's data, exit 0).
#[test]
fn latest_selects_the_newest_matching_snapshot() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let a = scratch.join("a");
    let b = scratch.join("b");
    let file = a.join("version.txt");
    write_file(&file, b"version 1 on alpha\n");
    write_file(&b.join("other.txt"), b"from b\n");
    repo.backup(args!["--host", "alpha", &a]);
    write_file(&file, b"version 2 on beta\n");
    repo.backup(args!["--host", "beta", &a]);
    write_file(&file, b"version 3 on alpha, the newest\n");
    repo.backup(args!["--host", "alpha", &a]);
    repo.backup(args!["--host", "beta", &b]);

    let restored_version = |extra: Vec<std::ffi::OsString>| -> String {
        let target = Scratch::new();
        repo.restore("latest", target.path(), extra).success();
        fs::read_to_string(restored(target.path(), &file)).expect("restored version.txt")
    };
    assert_eq!(
        restored_version(args!["--host", "alpha", "--path", &a]),
        "version 3 on alpha, the newest\n"
    );
    assert_eq!(
        restored_version(args!["--host", "alpha"]),
        "version 3 on alpha, the newest\n"
    );
    assert_eq!(
        restored_version(args!["--host", "beta", "--path", &a]),
        "version 2 on beta\n"
    );
    // A path inside the snapshot selects it as well as the backed-up path does.
    assert_eq!(
        restored_version(args!["--host", "beta", "--path", &file]),
        "version 2 on beta\n"
    );

    // Plain `latest` (three lineages), and `--path a` (two hosts) refuse and write nothing.
    for extra in [args![], args!["--path", &a]] {
        let target = Scratch::new();
        let out = repo
            .restore("latest", target.path(), extra.clone())
            .expect_code(5);
        assert!(out.stderr().contains("does not guess"), "{extra:?}\n{out}");
        assert_eq!(
            relative_paths(target.path()).len(),
            0,
            "{extra:?}: restored\n{out}"
        );
    }
}

/// Recovery day (issue 21): a repository that three jobs of one host back up into. `latest`
/// alone refuses and prints, for each job, the exact command that restores its newest snapshot;
/// that command works as printed. `--job` selects, `ls latest PATH` finds the snapshot that
/// holds PATH, `snapshots` shows the job and filters by it, `snapshots --latest` gives the
/// newest per job, and every command says which snapshot it chose.
#[test]
fn latest_never_guesses_between_jobs_and_prints_the_command_for_each() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let (etc, db, home) = (
        scratch.join("etc"),
        scratch.join("db"),
        scratch.join("home"),
    );
    write_file(&etc.join("ssh/sshd_config"), b"PermitRootLogin no\n");
    write_file(&db.join("dump.sql"), b"-- database\n");
    write_file(&home.join("alice/notes"), b"notes\n");
    let mut newest = std::collections::BTreeMap::new();
    for round in 0..2 {
        for (job, dir) in [("etc", &etc), ("db", &db), ("home", &home)] {
            write_file(&dir.join("round"), format!("{job} {round}\n").as_bytes());
            let id = string(
                &repo.backup(args!["--host", "web1", "--job", job, dir]),
                "snapshot_id",
            );
            newest.insert(job, id);
        }
    }

    let target = Scratch::new();
    let out = repo
        .restore("latest", target.path(), args![])
        .expect_code(5);
    assert_eq!(relative_paths(target.path()).len(), 0, "restored\n{out}");
    let stderr = out.stderr();
    let commands: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("lifeboat restore"))
        .collect();
    assert_eq!(commands.len(), 3, "one command per job\n{out}");
    for (job, id) in &newest {
        assert!(
            out.stderr().contains(&format!("job {job}")) && out.stderr().contains(&id[..8]),
            "candidate {job} ({id}) not named\n{out}"
        );
    }
    // The printed command for the db job restores the db job's newest snapshot.
    let db_cmd = commands
        .iter()
        .find(|c| c.contains("--job db"))
        .unwrap_or_else(|| panic!("no command with --job db\n{out}"));
    let words: Vec<&str> = db_cmd.split_whitespace().skip(1).collect();
    let again = lifeboat(words.iter().map(std::ffi::OsString::from).collect()).success();
    assert!(
        again.stderr().contains(&newest["db"][..8]) && again.stderr().contains("job db"),
        "the restore says which snapshot it chose\n{again}"
    );
    assert_eq!(
        fs::read_to_string(restored(target.path(), &db).join("round")).expect("restored"),
        "db 1\n"
    );
    assert!(!restored(target.path(), &etc).exists());

    // `ls latest PATH`: the snapshot that holds PATH, without --job.
    let sshd = etc.join("ssh/sshd_config");
    let out = repo.ls("latest", args![&etc.join("ssh")]).success();
    assert!(out.stdout().contains(&*sshd.to_string_lossy()), "{out}");
    assert!(out.stderr().contains("job etc"), "{out}");
    // `restore latest --include PATH` too.
    let target = Scratch::new();
    repo.restore("latest", target.path(), args!["--include", &sshd])
        .success();
    assert!(restored(target.path(), &sshd).is_file());

    // The listing: a JOB column, --job, --latest (one per job), --tag.
    let text = repo.run("snapshots", args![]).success();
    assert!(
        text.stdout().lines().next().unwrap_or("").contains("JOB"),
        "{text}"
    );
    let only_db = repo.snapshots(args!["--job", "db"]);
    assert_eq!(only_db.len(), 2);
    assert!(only_db.iter().all(|s| s["job"] == "db"));
    let latest = repo.snapshots(args!["--latest"]);
    let mut got: Vec<String> = latest.iter().map(|s| string(s, "id")).collect();
    let mut want: Vec<String> = newest.values().cloned().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "snapshots --latest: the newest of each job");
    assert!(repo.snapshots(args!["--tag", "no-such-tag"]).is_empty());
    // A relative --path can be in no snapshot: refused, saying why.
    let out = repo.run("snapshots", args!["--path", "etc"]).expect_code(1);
    assert!(out.stderr().contains("absolute"), "{out}");
}

/// A full id and any unique prefix of it select that snapshot.
#[test]
fn unique_id_prefix_selects_the_snapshot() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let file = src.join("v.txt");
    write_file(&file, b"first\n");
    let first = string(&repo.backup(args![&src]), "snapshot_id");
    write_file(&file, b"second\n");
    let second = string(&repo.backup(args![&src]), "snapshot_id");

    // The shortest prefix of `first` that `second` does not share.
    let common = first
        .bytes()
        .zip(second.bytes())
        .take_while(|(x, y)| x == y)
        .count();
    let prefixes = [
        first.clone(),
        first[..8].to_owned(),
        first[..(common + 1).max(4)].to_owned(),
    ];
    for prefix in prefixes {
        let target = Scratch::new();
        repo.restore(&prefix, target.path(), args![]).success();
        assert_eq!(
            fs::read_to_string(restored(target.path(), &file)).expect("restored v.txt"),
            "first\n",
            "prefix {prefix} restored the wrong snapshot"
        );
    }
}

/// A prefix matching several snapshots is refused and nothing is restored.
#[test]
fn ambiguous_id_prefix_is_rejected() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let file = src.join("n.txt");
    // Among 17 ids two share their first hex digit; usually far fewer do.
    let mut seen: Vec<String> = Vec::new();
    let shared = loop {
        write_file(&file, format!("round {}\n", seen.len()).as_bytes());
        let id = string(&repo.backup(args![&src]), "snapshot_id");
        if let Some(other) = seen.iter().find(|s| s[..1] == id[..1]) {
            break other[..1].to_owned();
        }
        seen.push(id);
        assert!(
            seen.len() <= 16,
            "17 hex ids cannot all differ in the first digit"
        );
    };

    let target = Scratch::new();
    let out = repo.restore(&shared, target.path(), args![]).expect_code(1);
    assert!(!out.stderr().trim().is_empty(), "no error message\n{out}");
    assert_eq!(
        relative_paths(target.path()).len(),
        0,
        "something was restored"
    );
    repo.ls(&shared, args![]).expect_code(1);
}

/// An id that matches nothing, or `latest` with nothing to match, is an error.
#[test]
fn unknown_snapshot_is_rejected() {
    let repo = Repo::new();
    let target = Scratch::new();
    // Nothing at all yet.
    repo.restore("latest", target.path(), args![])
        .expect_code(1);

    let scratch = Scratch::new();
    let src = scratch.join("src");
    small_tree(&src, 5);
    let id = string(&repo.backup(args![&src]), "snapshot_id");
    let unknown = if id.starts_with("0000") {
        "ffffffff"
    } else {
        "00000000"
    };

    let out = repo.restore(unknown, target.path(), args![]).expect_code(1);
    assert!(!out.stderr().trim().is_empty(), "no error message\n{out}");
    repo.ls(unknown, args![]).expect_code(1);
    repo.restore("latest", target.path(), args!["--host", "no-such-host"])
        .expect_code(1);
    repo.restore("latest", target.path(), args!["--path", "/no/such/path"])
        .expect_code(1);
    assert_eq!(
        relative_paths(target.path()).len(),
        0,
        "something was restored"
    );
}

/// Without `--json`, the listing names each snapshot by its short id.
#[test]
fn text_listing_names_each_snapshot() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    small_tree(&src, 6);
    repo.backup(args![&src]);
    write_file(&src.join("more.txt"), b"more\n");
    repo.backup(args!["--host", "elsewhere", &src]);
    let out = repo.run("snapshots", args![]).success();
    for s in repo.snapshots(args![]) {
        let short = string(&s, "short_id");
        assert!(out.stdout().contains(&short), "{short} not listed\n{out}");
    }
    assert!(out.stdout().contains("elsewhere"), "host not shown\n{out}");
}

/// A reader that goes away early (`lifeboat snapshots | head -1`) stops the command quietly
/// with the status a shell gives a command killed by SIGPIPE, not a panic or an error message.
#[test]
fn output_into_a_closed_pipe_stops_quietly() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    small_tree(&src, 3);
    repo.backup(args![&src]);
    for command in [
        args!["snapshots"],
        args!["snapshots", "--json"],
        args!["ls", "latest"],
        args!["check"],
    ] {
        // A pipe whose read end is already closed: the first write fails with EPIPE.
        let (read, write) = nix::unistd::pipe().expect("pipe");
        drop(read);
        let mut cmd = lifeboat_cmd();
        let mut all = command.clone();
        all.extend(args!["--repo", &repo.path]);
        cmd.args(&all)
            .stdout(std::process::Stdio::from(write))
            .stderr(std::process::Stdio::piped());
        let out = cmd.output().expect("run lifeboat");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(141),
            "{command:?} into a closed pipe: {:?}, stderr: {stderr}",
            out.status
        );
        // Only the line saying which snapshot `ls` chose, printed before the listing.
        assert!(
            stderr.lines().all(|l| l.starts_with("lifeboat: snapshot ")),
            "{command:?} into a closed pipe printed: {stderr}"
        );
    }
}

/// RELIABILITY case 5 (damaged snapshot objects): one bit-rotten snapshot object and one stray
/// file under `snapshots/` block nothing but what must see every snapshot. `snapshots` lists
/// the intact ones and warns naming both (exit 3); `restore latest`, `restore <full id>` and
/// `ls` of intact snapshots work, a backup too; `restore` of the damaged one says it is
/// damaged; `check` names both and what removes them; `prune` refuses (the damaged snapshot
/// may reference data) and deletes nothing; `repair snapshots --forget` removes both, and
/// afterwards everything passes.
#[test]
fn a_damaged_snapshot_object_blocks_only_prune_until_repaired() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let file = src.join("v.txt");
    write_file(&file, b"first\n");
    let first = string(&repo.backup(args![&src]), "snapshot_id");
    write_file(&file, b"second\n");
    let second = string(&repo.backup(args![&src]), "snapshot_id");
    // A third snapshot whose own data a prune would delete once it is forgotten.
    write_file(&src.join("big.bin"), &random_bytes(2 * MIB as usize, 17));
    let third = string(&repo.backup(args![&src]), "snapshot_id");
    repo.run("forget", args![&third]).success();
    fs::remove_file(src.join("big.bin")).expect("remove big.bin");
    // The newest snapshot is then damaged, and a stray file appears beside the snapshots.
    write_file(&file, b"third\n");
    let damaged = string(&repo.backup(args![&src]), "snapshot_id");
    let damaged_path = repo.path.join("snapshots").join(&damaged);
    let len = fs::metadata(&damaged_path).expect("stat").len();
    flip_byte(&damaged_path, len / 2);
    write_file(
        &repo.path.join("snapshots").join("stray-file"),
        b"not a snapshot\n",
    );
    let damaged_object = format!("snapshots/{damaged}");

    let out = repo.run("snapshots", args!["--json"]).expect_code(3);
    let listed: Vec<String> = match out.json() {
        Value::Array(items) => ids(&items),
        other => panic!("not an array: {other}\n{out}"),
    };
    assert_eq!(listed, vec![first.clone(), second.clone()], "{out}");
    out.stderr_contains(&damaged_object);
    out.stderr_contains("snapshots/stray-file");
    let out = repo.run("snapshots", args![]).expect_code(3);
    assert!(out.stdout().contains(&second[..8]), "{out}");
    out.stderr_contains(&damaged_object);

    // `latest` is the newest readable snapshot; the warning names the damaged one.
    let target = Scratch::new();
    let out = repo.restore("latest", target.path(), args![]).success();
    out.stderr_contains(&damaged_object);
    assert_eq!(
        fs::read_to_string(restored(target.path(), &file)).expect("restored"),
        "second\n"
    );
    let target = Scratch::new();
    repo.restore(&first, target.path(), args![]).success();
    assert_eq!(
        fs::read_to_string(restored(target.path(), &file)).expect("restored"),
        "first\n"
    );
    repo.ls(&second, args![]).success();
    let target = Scratch::new();
    let out = repo
        .restore(&damaged, target.path(), args![])
        .expect_code(1);
    out.stderr_contains(&damaged_object);
    out.stderr_contains("damaged");

    let out = repo.check(args![]).expect_code(1);
    assert!(out.stdout().contains(&damaged_object), "{out}");
    assert!(out.stdout().contains("snapshots/stray-file"), "{out}");
    assert!(out.stdout().contains("repair snapshots --forget"), "{out}");

    let packs = repo.packs();
    let out = repo.run("prune", args![]).expect_code(1);
    out.stderr_contains(&damaged_object);
    out.stderr_contains("repair snapshots --forget");
    assert_eq!(repo.packs(), packs, "prune deleted packs\n{out}");

    // A backup still finds its parent among the intact snapshots.
    repo.backup(args![&src]);

    let out = lifeboat(args![
        "repair",
        "snapshots",
        "--repo",
        &repo.path,
        "--forget"
    ])
    .success();
    assert!(!damaged_path.exists(), "{out}");
    assert!(!repo.path.join("snapshots/stray-file").exists(), "{out}");
    assert_eq!(repo.snapshots(args![]).len(), 3);
    repo.run("prune", args![]).success();
    assert!(
        repo.packs().len() < packs.len(),
        "prune removed the forgotten data"
    );
    repo.check(args!["--read-data"]).success();
}

//! `lifeboat find` (issue 21): entries whose name or path matches a glob, across snapshots,
//! newest first; damaged listings reported and searched past; hostile names escaped.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use lifeboat::id::BlobId;
use lifeboat::repo::{BlobKind, Node};
use serde_json::Value;

use crate::common::craft::{dir, file, Crafter};
use crate::common::*;

/// An empty file entry.
fn empty(name: &str) -> Node {
    file(name, Vec::new(), 0)
}

/// The short ids of the snapshot headers of `find`'s text output, in order.
fn groups(out: &Out) -> Vec<String> {
    // (compared with arrays of &str below)
    out.stdout()
        .lines()
        .filter_map(|l| l.strip_prefix("snapshot "))
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect()
}

/// Four snapshots: web1's etc job twice (nginx.conf changed, the second tagged nightly),
/// web1's db job, web2's etc job. Returns the repository, the source and the snapshots'
/// `snapshots --json` objects in the order they were made.
fn fleet() -> (Repo, Scratch, PathBuf, Vec<Value>) {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let conf = src.join("etc/nginx/nginx.conf");
    write_file(&conf, b"worker_processes 1;\n");
    write_file(&src.join("etc/hosts"), b"127.0.0.1 localhost\n");
    write_file(&src.join("db/dump.sql"), b"CREATE TABLE t;\n");
    set_mode(&conf, 0o640);
    set_mtime(&conf, 1_700_000_000, 5);
    let etc = src.join("etc");
    repo.backup(args!["--host", "web1", "--job", "etc", &etc]);
    write_file(&conf, b"worker_processes 4;\nevents {}\n");
    set_mtime(&conf, 1_700_000_100, 0);
    repo.backup(args![
        "--host", "web1", "--job", "etc", "--tag", "nightly", &etc
    ]);
    repo.backup(args!["--host", "web1", "--job", "db", src.join("db")]);
    repo.backup(args!["--host", "web2", "--job", "etc", &etc]);
    let snaps = repo.snapshots(args![]);
    assert_eq!(snaps.len(), 4);
    (repo, scratch, src, snaps)
}

/// Name patterns, path patterns, several patterns, --ignore-case, the snapshot filters and
/// --newest choose what is searched and shown; the groups come newest first, each with a
/// header naming the snapshot, host and job, and the matches as `ls --long` shows them. No
/// match is exit 0 with "no entry matches"; a relative path pattern, a filter that leaves
/// nothing and a relative --path are refused (exit 1), naming why.
#[test]
fn find_searches_the_chosen_snapshots_newest_first_by_name_or_path() {
    let (repo, _scratch, src, snaps) = fleet();
    let short: Vec<String> = snaps.iter().map(|s| string(s, "short_id")).collect();
    let (s1, s2, s3, s4) = (
        short[0].as_str(),
        short[1].as_str(),
        short[2].as_str(),
        short[3].as_str(),
    );
    let find = |rest: Vec<std::ffi::OsString>| repo.run("find", rest);

    let out = find(args!["nginx.conf"]).success();
    assert_eq!(groups(&out), [s4, s2, s1], "{out}");
    let text = out.stdout();
    assert!(text.contains(&format!("snapshot {s4} ")), "{text}");
    assert!(text.contains("host web2, job etc"), "{text}");
    let conf = src.join("etc/nginx/nginx.conf");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("  -0640 ") && l.ends_with(&format!(" {}", conf.display()))),
        "{text}"
    );
    assert!(
        lines[2].contains(" 20 "),
        "the first version's size: {text}"
    );
    assert!(
        lines[1].contains(" 30 "),
        "the second version's size: {text}"
    );
    assert!(
        out.stderr()
            .contains("3 matches in 3 of the 4 snapshots searched"),
        "{out}"
    );

    let path_pattern = format!("{}/**/nginx.conf", src.display());
    let out = find(args!["--host", "web1", "--job", "etc", &path_pattern]).success();
    assert_eq!(groups(&out), [s2, s1], "{out}");
    let out = find(args!["--host", "web1", "--newest", "1", "nginx.conf"]).success();
    assert_eq!(groups(&out), [s2], "{out}");
    let out = find(args!["--tag", "nightly", "*.conf"]).success();
    assert_eq!(groups(&out), [s2], "{out}");
    let out = find(args!["--path", src.join("db"), "*.sql"]).success();
    assert_eq!(groups(&out), [s3], "{out}");
    let out = find(args!["hosts", "dump.sql"]).success();
    assert_eq!(groups(&out), [s4, s3, s2, s1], "{out}");
    // `*` stays within a component: /src/*/nginx.conf is one level short.
    let out = find(args![format!("{}/*/nginx.conf", src.display())]).success();
    assert_eq!(groups(&out), Vec::<String>::new(), "{out}");

    let out = find(args!["-i", "NGINX.CONF"]).success();
    assert_eq!(groups(&out), [s4, s2, s1], "{out}");
    let out = find(args!["NGINX.CONF"]).success();
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr()
            .contains("no entry matches NGINX.CONF in the 4"),
        "{out}"
    );

    let out = find(args!["etc/nginx/nginx.conf"]).expect_code(1);
    assert!(out.stderr().contains("not an absolute path"), "{out}");
    assert!(out.stderr().contains("/**/etc/nginx/nginx.conf"), "{out}");
    let out = find(args!["--job", "nope", "hosts"]).expect_code(1);
    assert!(
        out.stderr().contains("no snapshot matches job nope"),
        "{out}"
    );
    let out = find(args!["--path", "etc", "hosts"]).expect_code(1);
    assert!(out.stderr().contains("not an absolute path"), "{out}");
    let out = find(args!["--newest", "0", "hosts"]).expect_code(2);
    assert!(out.stdout.is_empty(), "{out}");
}

/// `find --json`: one object per match per line, newest snapshot first, each field as the
/// other commands give it: snapshot_id (the full id of `snapshots --json`), time (the
/// snapshot's), host, job, path, type, size, mode, mtime (RFC 3339, to the nanosecond).
#[test]
fn find_json_gives_one_object_per_match_with_its_snapshot() {
    let (repo, _scratch, src, snaps) = fleet();
    let out = repo
        .run("find", args!["--json", "--job", "etc", "nginx.conf"])
        .success();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 3, "{out}");
    let conf = src.join("etc/nginx/nginx.conf").display().to_string();
    for (v, (snap, size, mtime)) in lines.iter().zip([
        (&snaps[3], 30, "2023-11-14T22:15:00.000000000Z"),
        (&snaps[1], 30, "2023-11-14T22:15:00.000000000Z"),
        (&snaps[0], 20, "2023-11-14T22:13:20.000000005Z"),
    ]) {
        assert_eq!(v["snapshot_id"], snap["id"], "{v}");
        assert_eq!(v["time"], snap["time"], "{v}");
        assert_eq!(v["host"], snap["host"], "{v}");
        assert_eq!(v["job"], "etc", "{v}");
        assert_eq!(v["path"], conf.as_str(), "{v}");
        assert_eq!(v["type"], "file", "{v}");
        assert_eq!(v["size"], size, "{v}");
        assert_eq!(v["mode"], "640", "{v}");
        assert_eq!(v["mtime"], mtime, "{v}");
    }
}

/// RELIABILITY case 12: names with a newline, an escape sequence and bytes that are not UTF-8 are found and shown
/// escaped (no raw control character on stdout or stderr, no forged line); `--json` gives the
/// exact bytes back (`path_bytes`).
#[test]
fn find_shows_hostile_names_escaped_and_json_keeps_them_exact() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let names: [&[u8]; 3] = [
        b"evil\n[lifeboat] forged line",
        b"\x1b]0;pwned\x07",
        b"bad\xff\xfename",
    ];
    for n in names {
        write_file(&src.join(OsStr::from_bytes(n)), b"x");
    }
    repo.backup(args![&src]);
    let patterns = args!["evil*", "*pwned*", "bad*"];
    let out = repo.run("find", patterns.clone()).success();
    assert_clean("find's stdout", &out.stdout);
    assert_clean("find's stderr", &out.stderr);
    for shown in [
        "evil\\n[lifeboat] forged line",
        "\\x1b]0;pwned\\x07",
        "bad\\xff\\xfename",
    ] {
        assert!(out.stdout().contains(shown), "{shown} not shown: {out}");
    }
    let mut all = args!["--json"];
    all.extend(patterns);
    let out = repo.run("find", all).success();
    assert_clean("find --json", &out.stdout);
    let exact: Vec<Vec<u8>> = out
        .json_lines()
        .iter()
        .map(|v| match v.get("path_bytes") {
            Some(b) => b
                .as_array()
                .expect("path_bytes")
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).expect("byte"))
                .collect(),
            None => v["path"].as_str().expect("path").as_bytes().to_vec(),
        })
        .collect();
    for n in names {
        let want = src
            .join(OsStr::from_bytes(n))
            .as_os_str()
            .as_bytes()
            .to_vec();
        assert!(
            exact.contains(&want),
            "{:?} not exact",
            String::from_utf8_lossy(n)
        );
    }
}

/// RELIABILITY case 4: a directory listing that cannot be read (missing from the index; a flipped byte in the
/// pack of listings) is reported, naming the snapshot, the path and the damaged object, and
/// the search goes on: the matches elsewhere, in every snapshot, are shown, and the exit code
/// is 1 at the end. A listing missing in two snapshots is reported in each. A damaged
/// snapshot object is named and makes the search incomplete as well.
#[test]
fn find_reports_damaged_listings_and_searches_on() {
    let repo = Repo::new();
    let missing = BlobId([7; 32]);
    let mut c = Crafter::new(&repo.path);
    let ok = c.tree(vec![empty("x.conf")]);
    let root = c.tree(vec![dir("a", missing), dir("b", ok), empty("top.conf")]);
    let first = c.snapshot(root);
    let mut c = Crafter::new(&repo.path);
    let ok = c.tree(vec![empty("x.conf")]);
    let root = c.tree(vec![dir("a", missing), dir("b", ok), dir("c", ok)]);
    let second = c.snapshot(root);

    let out = repo.run("find", args!["*.conf"]).expect_code(1);
    let text = out.stdout();
    for want in ["/b/x.conf", "/c/x.conf", "/top.conf"] {
        assert!(text.contains(want), "{want} not found: {out}");
    }
    assert_eq!(groups(&out), [&second[..8], &first[..8]], "{out}");
    let err = out.stderr();
    for id in [&first, &second] {
        assert!(
            err.contains(&format!(
                "snapshot {}: /a: its directory listing cannot be read",
                &id[..8]
            )),
            "{err}"
        );
    }
    assert!(err.contains("missing"), "{err}");
    assert!(
        err.contains("the search is incomplete: 2 directory listing(s)"),
        "{err}"
    );

    // A real backup, a flipped byte in its pack of listings.
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("etc/app.conf"), b"a");
    write_file(&src.join("var/lib/data.bin"), &random_bytes(200_000, 3));
    repo.backup(args![&src]);
    let (path, id) = repo
        .packs()
        .into_iter()
        .min_by_key(|(p, _)| fs::metadata(p).expect("stat").len())
        .expect("packs");
    flip_byte(&path, 30);
    let out = repo.run("find", args!["*"]).expect_code(1);
    let err = out.stderr();
    assert!(
        err.contains("its directory listing cannot be read") && err.contains(&id),
        "the damaged pack is not named: {out}"
    );

    // A snapshot object that cannot be read is left out, named, and makes the search
    // incomplete too; the intact snapshot is searched.
    let repo = Repo::new();
    repo.backup(args![&src]);
    let stray = "f".repeat(64);
    fs::write(repo.path.join("snapshots").join(&stray), b"not a snapshot").expect("write");
    let out = repo.run("find", args!["app.conf"]).expect_code(1);
    assert_eq!(groups(&out).len(), 1, "{out}");
    let err = out.stderr();
    assert!(err.contains(&format!("snapshots/{stray}")), "{out}");
    assert!(
        err.contains("1 snapshot object(s) could not be read"),
        "{out}"
    );
}

const DEPTH: usize = 5_000;

/// RELIABILITY case 24: a chain of 5,000 directories is searched to the bottom, by name and by path (no stack
/// overflow), and a listing shared by 300 directories is reported at each of them (a name
/// pattern finds its match 300 times; a path pattern only under the directory it names).
#[test]
fn find_reaches_the_bottom_of_deep_trees_and_every_place_of_a_shared_listing() {
    let repo = Repo::new();
    let mut c = Crafter::new(&repo.path);
    let data = c.blob(BlobKind::Data, b"deep\n");
    let mut leaf = empty("leaf.txt");
    leaf.content = vec![data];
    leaf.size = 5;
    let mut below = c.tree(vec![leaf]);
    for _ in 0..DEPTH {
        below = c.tree(vec![dir("d", below)]);
    }
    let shared = c.tree((0..50).map(|i| empty(&format!("f{i:04}"))).collect());
    let mut top: Vec<Node> = (0..300).map(|i| dir(&format!("s{i:03}"), shared)).collect();
    top.push(dir("d", below));
    let root = c.tree(top);
    c.snapshot(root);

    // The root's "d" and the DEPTH levels of the chain beneath it.
    let bottom = format!("{}/leaf.txt", "/d".repeat(DEPTH + 1));
    for pattern in ["leaf.txt", "/d/**/leaf.txt"] {
        let out = repo.run("find", args!["--json", pattern]).success();
        let lines = out.json_lines();
        assert_eq!(lines.len(), 1, "{pattern}");
        assert!(
            lines[0]["path"] == bottom.as_str(),
            "{pattern}: not at the bottom"
        );
        assert_eq!(lines[0]["size"], 5, "{pattern}");
    }
    let out = repo.run("find", args!["--json", "f0042"]).success();
    let paths: Vec<String> = out.json_lines().iter().map(|v| string(v, "path")).collect();
    assert_eq!(paths.len(), 300);
    assert_eq!(paths[0], "/s000/f0042");
    assert_eq!(paths[299], "/s299/f0042");
    let out = repo.run("find", args!["--json", "/s007/*"]).success();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 50);
    assert!(lines
        .iter()
        .all(|v| string(v, "path").starts_with("/s007/f")));
}

/// RELIABILITY case 12: a reader that goes away (`lifeboat find '*' | head -1`) stops the search quietly, with
/// the status of a command killed by SIGPIPE.
#[test]
fn find_into_a_closed_pipe_stops_quietly() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 20, 0, 1);
    repo.backup(args![&src]);
    for json in [false, true] {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        drop(read);
        let mut cmd = lifeboat_cmd();
        cmd.args(args!["find", "--repo", &repo.path, "*"]);
        if json {
            cmd.arg("--json");
        }
        cmd.stdout(std::process::Stdio::from(write))
            .stderr(std::process::Stdio::piped());
        let out = cmd.output().expect("run lifeboat");
        assert_eq!(
            out.status.code(),
            Some(141),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A snapshot whose root holds 5,000 directories sharing one listing of 20,000 files (10⁸
/// entries); returns its id.
pub(crate) fn huge_shared_tree(repo: &Repo) -> String {
    let mut c = Crafter::new(&repo.path);
    let shared = c.tree((0..20_000).map(|i| empty(&format!("f{i:05}"))).collect());
    let root = c.tree(
        (0..5_000)
            .map(|i| dir(&format!("d{i:04}"), shared))
            .collect(),
    );
    c.snapshot(root)
}

/// RELIABILITY case 24: SIGTERM stops a search of a 10⁸-entry tree with exit 130, both while it reads listings (a
/// path pattern: each place is searched) and while it gives what it remembered (a name
/// pattern matching everything).
#[test]
fn sigterm_stops_a_search_of_a_huge_tree() {
    let repo = Repo::new();
    huge_shared_tree(&repo);
    for pattern in ["/*/f1*", "*"] {
        let mut cmd = lifeboat_cmd();
        cmd.args(args!["find", "--repo", &repo.path, pattern]);
        assert_eq!(
            sigterm_after(cmd, Duration::from_millis(1500)),
            Some(130),
            "{pattern}"
        );
    }
}

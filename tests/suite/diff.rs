//! `lifeboat diff` (issue 21): what changed between two snapshots, from their listings alone;
//! unchanged directories skipped whole, damage reported, hostile names escaped.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use lifeboat::id::BlobId;
use lifeboat::repo::BlobKind;
use serde_json::Value;

use crate::common::craft::{dir, file, Crafter};
use crate::common::*;

/// The change lines of `diff`'s text output beneath `root` (the directories above it are in
/// the snapshots too, and the temporary directory's mtime changes as other tests run), by
/// path relative to `root`: the whole line.
fn changes(out: &Out, root: &Path) -> BTreeMap<String, String> {
    let root = root.display().to_string();
    out.stdout()
        .lines()
        .filter(|l| l.starts_with(['+', '-', 'M']))
        .filter_map(|l| {
            let at = l.find(&root)?;
            let rest = &l[at + root.len()..];
            // Up to the details of a change, and a symlink's target.
            let path = rest.split("  [").next().unwrap_or_default();
            let path = path.split(" -> ").next().unwrap_or_default().to_string();
            Some((path, l.to_string()))
        })
        .collect()
}

/// A tree, then the same tree with one of each kind of change: content (same size), content
/// and size, mode, mtime, link target, owner and group, xattrs, a file become a directory, a
/// file and a directory tree removed, a directory added; an untouched directory. The
/// directory's own mtime is kept, so that the changes are exactly these.
fn two_versions() -> (Repo, Scratch, std::path::PathBuf) {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let p = |n: &str| src.join(n);
    for (name, content) in [
        ("keep.txt", &b"keep"[..]),
        ("content.txt", b"aaaa"),
        ("grow.txt", b"a"),
        ("mode.txt", b"m"),
        ("touch.txt", b"t"),
        ("owned.txt", b"o"),
        ("xattr.txt", b"x"),
        ("typechg", b"was a file"),
        ("gone.txt", b"gone..."),
        ("gonedir/a/b.txt", b"bbb"),
        ("gonedir/c.txt", b"cccc"),
    ] {
        write_file(&p(name), content);
        set_mtime(&p(name), 1_700_000_000, 0);
    }
    build_plain_tree(&p("untouched"), 30, 0, 9);
    set_mode(&p("mode.txt"), 0o644);
    symlink("a", &p("link"));
    set_mtime(&p("link"), 1_700_000_000, 0);
    xattr::set(p("xattr.txt"), "user.note", b"1").expect("setxattr");
    set_mtime(&src, 1_600_000_000, 0);
    repo.backup(args!["--job", "app", &src]);

    write_file(&p("content.txt"), b"bbbb");
    write_file(&p("grow.txt"), b"abc");
    set_mode(&p("mode.txt"), 0o600);
    fs::remove_file(p("link")).expect("rm link");
    symlink("b", &p("link"));
    if is_root() {
        std::os::unix::fs::chown(p("owned.txt"), Some(1234), Some(5678)).expect("chown");
    }
    xattr::set(p("xattr.txt"), "user.note", b"2").expect("setxattr");
    fs::remove_file(p("typechg")).expect("rm");
    write_file(&p("typechg/inner.txt"), b"inner!");
    fs::remove_file(p("gone.txt")).expect("rm");
    fs::remove_dir_all(p("gonedir")).expect("rm");
    write_file(&p("new/n.txt"), b"new!!");
    for name in [
        "content.txt",
        "grow.txt",
        "mode.txt",
        "owned.txt",
        "xattr.txt",
    ] {
        set_mtime(&p(name), 1_700_000_000, 0);
    }
    set_mtime(&p("touch.txt"), 1_700_000_001, 0);
    set_mtime(&p("link"), 1_700_000_000, 0);
    set_mtime(&p("typechg"), 1_700_000_000, 0);
    set_mtime(&src, 1_600_000_000, 0);
    repo.backup(args!["--job", "app", &src]);
    (repo, scratch, src)
}

/// Added (+), removed (-, a directory with everything beneath it) and changed (M) entries,
/// each changed one with exactly what changed; nothing of the untouched directory; the
/// summary counts them and the bytes of the files added and removed. Both snapshots are
/// named on stderr. Exit 0.
#[test]
fn diff_lists_added_removed_and_changed_entries_with_what_changed() {
    let (repo, _scratch, src) = two_versions();
    let snaps = repo.snapshots(args![]);
    let (a, b) = (string(&snaps[0], "short_id"), string(&snaps[1], "short_id"));
    // Restricted to the source: the directories above it change as other tests run.
    let out = repo.run("diff", args![&a, &b, &src]).success();
    for id in [&a, &b] {
        assert!(
            out.stderr().contains(&format!("lifeboat: snapshot {id} ")),
            "{id} not announced: {out}"
        );
    }
    let got = changes(&out, &src);
    let mut want: Vec<(&str, &str, &str)> = vec![
        ("/content.txt", "M", "[content]"),
        ("/grow.txt", "M", "[content; size 1 -> 3]"),
        ("/mode.txt", "M", "[mode 0644 -> 0600]"),
        ("/touch.txt", "M", "[mtime "),
        ("/link", "M", "[link target a -> b"),
        ("/xattr.txt", "M", "[xattrs]"),
        ("/typechg", "M", "[type file -> dir"),
        ("/typechg/inner.txt", "+", ""),
        ("/gone.txt", "-", ""),
        ("/gonedir", "-", ""),
        ("/gonedir/a", "-", ""),
        ("/gonedir/a/b.txt", "-", ""),
        ("/gonedir/c.txt", "-", ""),
        ("/new", "+", ""),
        ("/new/n.txt", "+", ""),
    ];
    if is_root() {
        want.push((
            "/owned.txt",
            "M",
            "[owner root -> 1234; group root -> 5678]",
        ));
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        {
            let mut k: Vec<String> = want.iter().map(|w| w.0.to_string()).collect();
            k.sort();
            k
        }
        .iter()
        .collect::<Vec<_>>(),
        "{out}"
    );
    for (path, sign, detail) in &want {
        let line = &got[*path];
        assert!(line.starts_with(&format!("{sign} ")), "{path}: {line}");
        assert!(line.contains(detail), "{path}: {detail:?} not in {line}");
    }
    let changed = if is_root() { 8 } else { 7 };
    let summary = out.stdout().lines().last().unwrap_or_default().to_string();
    assert_eq!(
        summary,
        format!("3 added (11 B), 5 removed (14 B), {changed} changed"),
        "{out}"
    );

    // The same as JSON, field by field.
    let out = repo.run("diff", args!["--json", &a, &b, &src]).success();
    let lines = out.json_lines();
    let (last, each) = lines.split_last().expect("lines");
    let root = src.display().to_string();
    let by_path: BTreeMap<String, &Value> = each
        .iter()
        .map(|v| (string(v, "path")[root.len()..].to_string(), v))
        .collect();
    assert_eq!(by_path.len(), want.len(), "{out}");
    let grow = by_path["/grow.txt"];
    assert_eq!(grow["change"], "changed");
    assert_eq!(grow["type"], "file");
    assert_eq!(grow["size"], 3);
    assert_eq!(grow["what"], serde_json::json!(["content", "size"]));
    assert_eq!(grow["before"]["size"], 1);
    let mode = by_path["/mode.txt"];
    assert_eq!(mode["what"], serde_json::json!(["mode"]));
    assert_eq!(
        (&mode["mode"], &mode["before"]["mode"]),
        (&"600".into(), &"644".into())
    );
    let typechg = by_path["/typechg"];
    assert_eq!(typechg["type"], "dir");
    assert_eq!(typechg["before"]["type"], "file");
    assert_eq!(typechg["what"][0], "type");
    let link = by_path["/link"];
    assert_eq!(link["link_target"], "b");
    assert_eq!(link["before"]["link_target"], "a");
    let added = by_path["/new/n.txt"];
    assert_eq!(
        (&added["change"], &added["size"]),
        (&"added".into(), &5.into())
    );
    let removed = by_path["/gonedir/a/b.txt"];
    assert_eq!(
        (&removed["change"], &removed["size"]),
        (&"removed".into(), &3.into())
    );
    let s = &last["summary"];
    assert_eq!(s["added"], 3);
    assert_eq!(s["removed"], 5);
    assert_eq!(s["changed"], changed);
    assert_eq!(s["added_bytes"], 11);
    assert_eq!(s["removed_bytes"], 14);
    assert_eq!(s["damaged"], 0);
    assert_eq!(
        s["snapshot_ids"],
        serde_json::json!([snaps[0]["id"], snaps[1]["id"]])
    );

    // A snapshot against itself: nothing.
    let out = repo.run("diff", args![&b, &b]).success();
    assert_eq!(out.stdout(), "0 added (0 B), 0 removed (0 B), 0 changed\n");
}

/// Choosing the two snapshots: `latest` over two jobs is refused (exit 5) listing the command
/// for each, and nothing is printed; `--job` picks one; PATH restricts the diff to one entry
/// and what is beneath it (and makes `latest` the newest snapshot that holds it); a typo or
/// a path in neither snapshot is refused, naming it.
#[test]
fn diff_chooses_its_snapshots_as_every_command_does() {
    let (repo, scratch, src) = two_versions();
    let other = scratch.join("other");
    write_file(&other.join("o.txt"), b"o");
    repo.backup(args!["--job", "other", &other]);
    let snaps = repo.snapshots(args![]);
    let first = string(&snaps[0], "short_id");

    let out = repo.run("diff", args![&first, "latest"]).expect_code(5);
    assert!(out.stdout.is_empty(), "{out}");
    let err = out.stderr();
    assert!(err.contains(&format!(" {first} --job app latest")), "{out}");
    assert!(
        err.contains(&format!(" {first} --job other latest")),
        "{out}"
    );

    let out = repo
        .run("diff", args!["--job", "app", &first, "latest"])
        .success();
    assert_eq!(changes(&out, &src).len(), if is_root() { 16 } else { 15 });
    let out = repo
        .run("diff", args![&first, "latest", src.join("gonedir")])
        .success();
    assert_eq!(
        changes(&out, &src).keys().collect::<Vec<_>>(),
        [
            "/gonedir",
            "/gonedir/a",
            "/gonedir/a/b.txt",
            "/gonedir/c.txt"
        ],
        "{out}"
    );
    let out = repo
        .run("diff", args![&first, "latest", src.join("grow.txt")])
        .success();
    assert_eq!(changes(&out, &src).len(), 1, "{out}");

    let out = repo.run("diff", args![&first, "zzz"]).expect_code(1);
    assert!(
        out.stderr().contains("\"zzz\" is not a snapshot id"),
        "{out}"
    );
    let out = repo
        .run(
            "diff",
            args!["--job", "app", &first, "latest", src.join("nope")],
        )
        .expect_code(1);
    assert!(out.stderr().contains("is in neither snapshot"), "{out}");
    let out = repo
        .run("diff", args![&first, "latest", "relative/path"])
        .expect_code(1);
    assert!(out.stderr().contains("absolute"), "{out}");
}

/// RELIABILITY case 4: a listing with the same id in both snapshots is not read at all: a missing listing that
/// both share is not even noticed (exit 0). A changed directory whose listing cannot be read
/// in one snapshot is reported, naming the snapshot, the path and the object, the rest of the
/// diff is given, and the exit code is 1.
#[test]
fn diff_skips_shared_listings_and_reports_a_damaged_changed_one() {
    let repo = Repo::new();
    let (missing, also_missing) = (BlobId([7; 32]), BlobId([8; 32]));
    let mut c = Crafter::new(&repo.path);
    let x = c.tree(vec![file("x", Vec::new(), 0)]);
    let root = c.tree(vec![dir("c", x), dir("shared", missing)]);
    let a = c.snapshot(root);
    let mut c = Crafter::new(&repo.path);
    let root = c.tree(vec![
        file("added", Vec::new(), 0),
        dir("c", also_missing),
        dir("shared", missing),
    ]);
    let b = c.snapshot(root);

    let out = repo.run("diff", args![&a, &a]).success();
    assert!(
        out.stderr().lines().all(|l| !l.contains("cannot be read")),
        "{out}"
    );

    let out = repo.run("diff", args![&a, &b]).expect_code(1);
    assert!(out.stdout().contains("+ "), "{out}");
    assert!(out.stdout().contains(" /added\n"), "{out}");
    let err = out.stderr();
    assert!(
        err.contains(&format!(
            "lifeboat: /c: the directory listing in snapshot {} cannot be read",
            &b[..8]
        )),
        "{out}"
    );
    assert!(
        err.contains(&also_missing.to_hex()),
        "the object is not named: {out}"
    );
    assert!(!err.contains("/shared"), "{out}");
    assert!(
        err.contains("the diff is incomplete: 1 directory listing(s)"),
        "{out}"
    );
    let out = repo.run("diff", args!["--json", &a, &b]).expect_code(1);
    let lines = out.json_lines();
    assert_eq!(
        lines.last().expect("summary")["summary"]["damaged"],
        1,
        "{out}"
    );
}

const DEPTH: usize = 5_000;

/// RELIABILITY case 24: chains of 5,000 directories: a file changed at the bottom is the one change (the
/// directories on the way have other listings but the same metadata), and a whole chain
/// added is 5,001 entries; no stack overflow.
#[test]
fn diff_compares_5000_level_chains() {
    let repo = Repo::new();
    let chain = |c: &mut Crafter, content: &[u8]| {
        let data = c.blob(BlobKind::Data, content);
        let mut below = c.tree(vec![file("leaf", vec![data], content.len() as u64)]);
        for _ in 0..DEPTH {
            below = c.tree(vec![dir("d", below)]);
        }
        below
    };
    let mut c = Crafter::new(&repo.path);
    let root = chain(&mut c, b"one");
    let a = c.snapshot(root);
    let mut c = Crafter::new(&repo.path);
    let root = chain(&mut c, b"three");
    let b = c.snapshot(root);
    let mut c = Crafter::new(&repo.path);
    let root = c.tree(Vec::new());
    let empty = c.snapshot(root);

    let out = repo.run("diff", args!["--json", &a, &b]).success();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "{out}");
    let bottom = format!("{}/leaf", "/d".repeat(DEPTH));
    assert!(lines[0]["path"] == bottom.as_str(), "not the bottom file");
    assert_eq!(lines[0]["what"], serde_json::json!(["content", "size"]));
    let out = repo.run("diff", args!["--json", &empty, &a]).success();
    let lines = out.json_lines();
    assert_eq!(lines.len(), DEPTH + 2);
    assert!(
        lines[DEPTH]["path"] == bottom.as_str(),
        "not the bottom file"
    );
    assert_eq!(lines[DEPTH + 1]["summary"]["added"], DEPTH as u64 + 1);
}

/// RELIABILITY case 12: hostile names in a diff reach the terminal escaped and stay exact in JSON; a reader that
/// goes away stops the diff quietly (exit 141).
#[test]
fn diff_escapes_hostile_names_and_stops_quietly_on_a_closed_pipe() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("plain"), b"p");
    repo.backup(args![&src]);
    for n in [&b"evil\n[lifeboat] forged line"[..], b"\x1b]0;pwned\x07"] {
        write_file(&src.join(OsStr::from_bytes(n)), b"x");
    }
    build_plain_tree(&src.join("many"), 50, 0, 2);
    repo.backup(args![&src]);
    let snaps = repo.snapshots(args![]);
    let (a, b) = (string(&snaps[0], "id"), string(&snaps[1], "id"));
    let out = repo.run("diff", args![&a, &b]).success();
    assert_clean("diff's stdout", &out.stdout);
    assert_clean("diff's stderr", &out.stderr);
    assert!(
        out.stdout().contains("evil\\n[lifeboat] forged line"),
        "{out}"
    );
    assert!(out.stdout().contains("\\x1b]0;pwned\\x07"), "{out}");
    let out = repo.run("diff", args!["--json", &a, &b]).success();
    let paths: Vec<String> = out
        .json_lines()
        .iter()
        .filter_map(|v| v["path"].as_str().map(String::from))
        .collect();
    assert!(paths.contains(&format!("{}/evil\n[lifeboat] forged line", src.display())));

    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    let mut cmd = lifeboat_cmd();
    cmd.args(args!["diff", "--repo", &repo.path, &a, &b])
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped());
    let out = cmd.output().expect("run lifeboat");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(
        err.lines().all(|l| l.starts_with("lifeboat: snapshot ")),
        "{err}"
    );
}

/// RELIABILITY case 24: SIGTERM stops a diff that lists 10⁸ added entries with exit 130.
#[test]
fn sigterm_stops_a_diff_of_a_huge_tree() {
    let repo = Repo::new();
    let mut c = Crafter::new(&repo.path);
    let root = c.tree(Vec::new());
    let empty = c.snapshot(root);
    let huge = crate::find::huge_shared_tree(&repo);
    let mut cmd = lifeboat_cmd();
    cmd.args(args!["diff", "--repo", &repo.path, &empty, &huge]);
    assert_eq!(
        sigterm_after(cmd, std::time::Duration::from_millis(1500)),
        Some(130)
    );
}

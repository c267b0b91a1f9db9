//! File names from a backed-up tree reach people escaped (issue 19 item 18): a local user who
//! can create files in a backed-up tree must not forge log lines (a newline in a name) or send
//! escape sequences to the administrator's terminal; JSON output stays JSON and keeps the
//! exact name.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

const FORGED: &[u8] = b"evil\n[lifeboat] forged line";
const TITLE: &[u8] = b"\x1b]0;pwned\x07";
const NOT_UTF8: &[u8] = b"bad\xff\xfename";

fn name(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// A source tree with the three names twice: readable in `ok/`, unreadable (mode 000, for an
/// unprivileged backup) in `locked/`.
fn hostile_tree(scratch: &Scratch) -> PathBuf {
    set_mode(scratch.path(), 0o777);
    let src = scratch.join("src");
    for dir in ["ok", "locked"] {
        std::fs::create_dir_all(src.join(dir)).expect("mkdir");
        for n in [FORGED, TITLE, NOT_UTF8] {
            write_file(&src.join(dir).join(name(n)), b"content\n");
            let mode = if dir == "ok" { 0o644 } else { 0o000 };
            set_mode(&src.join(dir).join(name(n)), mode);
        }
        set_mode(&src.join(dir), 0o755);
    }
    set_mode(&src, 0o755);
    src
}

fn full(src: &Path, dir: &str, n: &[u8]) -> Vec<u8> {
    src.join(dir).join(name(n)).as_os_str().as_bytes().to_vec()
}

/// RELIABILITY case 12: names with a newline, an escape sequence (a terminal title with BEL)
/// and bytes that are not UTF-8 reach backup warnings, `ls`, `ls --long` and a restore error
/// escaped (`\n`, `\x1b`, `\x07`, `\xff`), never raw; `ls --json` lines are JSON and give the
/// exact names back (`path`, and `path_bytes` where the name is not UTF-8).
#[test]
fn names_with_control_characters_reach_people_escaped() {
    let scratch = Scratch::new();
    let src = hostile_tree(&scratch);
    let repo_path = scratch.join("repo");
    lifeboat_unprivileged(args!["init", "--repo", &repo_path], scratch.path()).success();
    let out = lifeboat_unprivileged(args!["backup", "--repo", &repo_path, &src], scratch.path())
        .expect_code(3);
    assert_clean("backup's stderr", &out.stderr);
    assert_clean("backup's stdout", &out.stdout);
    let err = out.stderr();
    assert!(
        err.contains("locked/evil\\n[lifeboat] forged line"),
        "the warning does not name the file escaped: {err}"
    );
    assert!(err.contains("locked/\\x1b]0;pwned\\x07"), "{err}");

    let repo = Repo::at(&repo_path);
    for long in [false, true] {
        let mut rest = args![];
        if long {
            rest.push("--long".into());
        }
        let out = repo.ls("latest", rest).success();
        assert_clean("ls", &out.stdout);
        let listing = out.stdout();
        for shown in [
            "ok/evil\\n[lifeboat] forged line",
            "ok/\\x1b]0;pwned\\x07",
            "ok/bad\\xff\\xfename",
        ] {
            assert!(
                listing.contains(shown),
                "ls does not show {shown}: {listing}"
            );
        }
    }

    let out = repo.ls("latest", args!["--json"]).success();
    let exact: Vec<Vec<u8>> = out
        .stdout()
        .lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            match v.get("path_bytes") {
                Some(bytes) => bytes
                    .as_array()
                    .unwrap_or_else(|| panic!("path_bytes is not an array: {v}"))
                    .iter()
                    .map(|b| {
                        b.as_u64()
                            .and_then(|b| u8::try_from(b).ok())
                            .expect("a byte")
                    })
                    .collect(),
                None => v["path"].as_str().expect("path").as_bytes().to_vec(),
            }
        })
        .collect();
    for n in [FORGED, TITLE, NOT_UTF8] {
        let want = full(&src, "ok", n);
        assert!(
            exact.contains(&want),
            "ls --json does not give {:?} back exactly",
            String::from_utf8_lossy(&want)
        );
    }

    // A restore error naming the files: the target already holds them.
    let target = scratch.join("target");
    repo.restore("latest", &target, args!["--include", src.join("ok")])
        .success();
    let out = repo
        .restore("latest", &target, args!["--include", src.join("ok")])
        .expect_code(1);
    assert_clean("restore's stderr", &out.stderr);
    let err = out.stderr();
    assert!(err.contains("already exists"), "{err}");
    assert!(
        [
            "ok/evil\\n[lifeboat] forged line",
            "ok/\\x1b]0;pwned\\x07",
            "ok/bad\\xff\\xfename"
        ]
        .iter()
        .any(|shown| err.contains(shown)),
        "the error does not name a file escaped: {err}"
    );
}

//! `lifeboat ls`: lists the entries of a snapshot, recursively.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::*;

/// A small tree with files, nested and empty dirs and a symlink.
fn source(root: &Path) -> BTreeSet<PathBuf> {
    write_file(&root.join("top.txt"), b"top\n");
    write_file(&root.join("sub/inner.txt"), b"inner\n");
    write_file(&root.join("sub/deeper/deep.txt"), b"deep\n");
    std::fs::create_dir(root.join("sub/empty")).expect("mkdir");
    std::fs::create_dir(root.join("other")).expect("mkdir");
    symlink("../top.txt", &root.join("sub/link"));
    scan_tree(root)
        .into_keys()
        .map(|rel| {
            if rel.as_os_str().is_empty() {
                root.to_path_buf()
            } else {
                root.join(rel)
            }
        })
        .collect()
}

fn listed(out: &Out) -> BTreeSet<PathBuf> {
    out.stdout()
        .lines()
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Without PATH, `ls` lists every backed-up entry as an absolute path, and
/// nothing else but the ancestors of the backed-up directory.
#[test]
fn ls_lists_every_entry_as_an_absolute_path() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let expected = source(&src);
    let id = string(&repo.backup(args![&src]), "snapshot_id");

    let out = repo.ls(&id, args![]).success();
    let lines = listed(&out);
    let missing: Vec<_> = expected.difference(&lines).collect();
    assert!(missing.is_empty(), "not listed: {missing:?}\n{out}");
    for line in &lines {
        assert!(line.is_absolute(), "{line:?} is not absolute\n{out}");
        assert!(
            expected.contains(line) || src.starts_with(line),
            "{line:?} is neither a backed-up entry nor an ancestor of one\n{out}"
        );
    }
    // `latest` and a prefix name the same snapshot.
    assert_eq!(repo.ls("latest", args![]).success().stdout(), out.stdout());
    assert_eq!(repo.ls(&id[..8], args![]).success().stdout(), out.stdout());
}

/// With PATH, only that subtree is listed (recursively).
#[test]
fn ls_path_narrows_the_listing_to_a_subtree() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let all = source(&src);
    repo.backup(args![&src]);

    let sub = src.join("sub");
    let out = repo.ls("latest", args![&sub]).success();
    let lines = listed(&out);
    let below: BTreeSet<PathBuf> = all
        .iter()
        .filter(|p| p.starts_with(&sub) && **p != sub)
        .cloned()
        .collect();
    assert_eq!(below.len(), 5, "test setup");
    let missing: Vec<_> = below.difference(&lines).collect();
    assert!(missing.is_empty(), "not listed: {missing:?}\n{out}");
    for line in &lines {
        assert!(
            line.starts_with(&sub),
            "{line:?} lies outside {sub:?}\n{out}"
        );
    }
}

/// `--long` still names every entry.
#[test]
fn ls_long_names_every_entry() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let expected = source(&src);
    repo.backup(args![&src]);
    let out = repo.ls("latest", args!["--long"]).success();
    let text = out.stdout();
    for p in &expected {
        let p = p.to_str().expect("utf-8 path");
        assert!(
            text.lines()
                .any(|l| l.ends_with(p) || l.contains(&format!("{p} "))),
            "{p} not listed\n{out}"
        );
    }
}

/// `--json` prints JSON (one document, or one object per line) naming every
/// entry.
#[test]
fn ls_json_is_valid_json_naming_every_entry() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let expected = source(&src);
    repo.backup(args![&src]);
    let out = repo.ls("latest", args!["--json"]).success();
    let docs = match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
        Ok(doc) => vec![doc],
        Err(_) => out.json_lines(),
    };
    let mut strings = BTreeSet::new();
    fn collect(v: &serde_json::Value, into: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::String(s) => {
                into.insert(s.clone());
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| collect(i, into)),
            serde_json::Value::Object(map) => map.values().for_each(|i| collect(i, into)),
            _ => {}
        }
    }
    docs.iter().for_each(|d| collect(d, &mut strings));
    for p in &expected {
        let p = p.to_str().expect("utf-8 path");
        assert!(strings.contains(p), "{p} not named in the JSON\n{out}");
    }
}

#[test]
fn ls_of_unknown_snapshot_fails() {
    let repo = Repo::new();
    let out = repo.ls("latest", args![]).expect_code(1);
    assert!(!out.stderr().trim().is_empty(), "no error message\n{out}");
}

/// RELIABILITY case 19: `ls` reads its snapshot under a shared lock, as restore does: while
/// another process's prune holds the exclusive lock, `ls` waits for it and, when it is not
/// released in time, fails naming it (it read packs the prune may be deleting); once the
/// prune's lock is gone, it lists.
#[test]
fn ls_waits_for_a_running_prune_and_names_it() {
    use lifeboat::repo::LockSettings;
    let r = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    source(&src);
    r.backup(args![&src]);
    let repo = r.open();
    // Refreshed every third of a second: live for a reader whose bound is 2 s.
    let held = repo
        .lock(
            "prune",
            true,
            &LockSettings::with_stale_after(std::time::Duration::from_secs(2)),
        )
        .expect("lock");
    let out = lifeboat_env(
        args!["ls", "--repo", &r.path, "latest"],
        &[("LIFEBOAT_LOCK_STALE_AFTER", "2s".as_ref())],
    )
    .expect_code(1);
    out.stderr_contains("in use");
    out.stderr_contains("prune");
    held.release();
    let listed = r.run("ls", args!["latest"]).success();
    assert!(listed.stdout().contains("top.txt"), "{}", listed.stdout());
}

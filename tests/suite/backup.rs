//! `lifeboat backup`: round trips, incremental behaviour, excludes, tags and
//! hosts, unreadable sources.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::*;

/// RELIABILITY cases 12 and 13: Every kind of entry survives a backup and restore unchanged: contents,
/// modes, mtimes with nanoseconds, owners (as root), symlinks, hardlinks,
/// fifos, xattrs, sparse files, empty files/dirs, and odd names.
#[test]
fn round_trip_preserves_every_kind_of_entry() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_everything_tree(&src);

    let summary = repo.backup(args![&src]);
    assert_eq!(string(&summary, "kind"), "full");
    assert!(
        summary["parent"].is_null(),
        "first snapshot has a parent: {summary}"
    );
    let id = string(&summary, "snapshot_id");
    assert!(is_hex(&id, 64), "snapshot_id is not 64 hex digits: {id:?}");

    let target = Scratch::new();
    repo.restore(&id, target.path(), args![]).success();
    let restored_src = restored(target.path(), &src);
    assert_trees_equal(&src, &restored_src);

    // Holes stay holes.
    let sparse = fs::metadata(restored_src.join("sparse.img")).expect("stat restored sparse");
    assert_eq!(sparse.len(), 16 * MIB);
    assert!(
        sparse.blocks() * 512 < 2 * MIB,
        "sparse.img was restored dense: {} bytes allocated for {} bytes",
        sparse.blocks() * 512,
        sparse.len()
    );
}

/// The text summary (without --json) goes to stdout.
#[test]
fn backup_without_json_prints_a_text_summary() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 3, 0, 1);
    let out = repo.run("backup", args![&src]).success();
    assert!(
        !out.stdout().trim().is_empty(),
        "no summary on stdout\n{out}"
    );
    assert!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).is_err(),
        "without --json the summary should be text\n{out}"
    );
    assert_eq!(repo.snapshots(args![]).len(), 1);
}

/// `LIFEBOAT_REPOSITORY` stands in for `--repo`.
#[test]
fn repository_can_be_given_by_environment_variable() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 2, 0, 2);
    let env = [("LIFEBOAT_REPOSITORY", repo.path.as_os_str())];
    let out = lifeboat_env(args!["backup", "--json", &src], &env).success();
    let summary = parse_backup_stream(&out).expect("summary line");
    let listed = lifeboat_env(args!["snapshots", "--json"], &env)
        .success()
        .json();
    assert_eq!(listed[0]["id"], summary["snapshot_id"], "{listed}");
}

/// A relative source path is recorded as an absolute one.
#[test]
fn relative_source_paths_are_made_absolute() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 2, 0, 3);
    let mut cmd = lifeboat_cmd();
    cmd.current_dir(scratch.path())
        .args(args!["backup", "--repo", &repo.path, "--json", "src"]);
    let out = run_cmd(cmd).success();
    parse_backup_stream(&out).expect("summary line");
    let snaps = repo.snapshots(args![]);
    assert_eq!(
        snaps[0]["paths"],
        serde_json::json!([src.to_str().expect("utf-8 temp path")]),
        "{snaps:?}"
    );
}

/// A second backup of unchanged data reads nothing and stores only metadata.
#[test]
fn incremental_backup_of_unchanged_tree_reads_nothing() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let facts = build_plain_tree(&src, 12, 3 * MIB as usize, 4);

    let first = repo.backup(args![&src]);
    assert_eq!(string(&first, "kind"), "full");
    assert_eq!(
        num(&first, "files_new") as usize,
        facts.regular_files,
        "{first}"
    );
    assert_eq!(num(&first, "files_changed"), 0, "{first}");
    assert_eq!(num(&first, "files_unchanged"), 0, "{first}");
    assert_eq!(num(&first, "bytes_read"), facts.total_bytes, "{first}");
    assert_eq!(num(&first, "total_bytes"), facts.total_bytes, "{first}");
    assert!(num(&first, "dirs") >= 4, "{first}");
    assert!(first["duration_secs"].as_f64().is_some(), "{first}");

    let second = repo.backup(args![&src]);
    assert_eq!(string(&second, "kind"), "incremental", "{second}");
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");
    assert_ne!(second["snapshot_id"], first["snapshot_id"]);
    assert_eq!(
        num(&second, "files_unchanged") as usize,
        facts.regular_files,
        "{second}"
    );
    assert_eq!(num(&second, "files_new"), 0, "{second}");
    assert_eq!(num(&second, "files_changed"), 0, "{second}");
    // Every file is at least 10 KiB: reading any of them would show.
    assert!(
        num(&second, "bytes_read") < 4 * KIB,
        "unchanged files were read: {second}"
    );
    assert!(num(&second, "bytes_added") < 64 * KIB, "{second}");
    assert_eq!(num(&second, "total_bytes"), facts.total_bytes, "{second}");

    let target = Scratch::new();
    repo.restore(&string(&second, "snapshot_id"), target.path(), args![])
        .success();
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// Editing a few bytes in the middle of a 20 MiB file stores only the chunks
/// around the edit; the old snapshot still restores the old content.
#[test]
fn incremental_backup_after_small_edit_stores_only_changed_chunks() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let facts = build_plain_tree(&src, 6, 20 * MIB as usize, 5);
    let big = src.join("big.bin");
    let original_hash = file_hash(&big);

    let first = repo.backup(args![&src]);
    let first_added = num(&first, "bytes_added");
    assert!(
        first_added > 19 * MIB,
        "random data cannot shrink much: bytes_added {first_added}"
    );

    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&big)
            .expect("open big.bin");
        f.seek(SeekFrom::Start(10 * MIB)).expect("seek");
        f.write_all(&[0xAA; 100]).expect("write");
    }
    set_mtime(&big, 1_700_000_000, 5);

    let second = repo.backup(args![&src]);
    assert_eq!(string(&second, "kind"), "incremental", "{second}");
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");
    assert_eq!(num(&second, "files_changed"), 1, "{second}");
    assert_eq!(num(&second, "files_new"), 0, "{second}");
    assert_eq!(
        num(&second, "files_unchanged") as usize,
        facts.regular_files - 1,
        "{second}"
    );
    // Only the changed file is read, all of it.
    let read = num(&second, "bytes_read");
    assert!(
        (20 * MIB..20 * MIB + 4 * KIB).contains(&read),
        "expected bytes_read of just big.bin (20 MiB): {second}"
    );
    let added = num(&second, "bytes_added");
    assert!(added > 0, "the edit was not stored: {second}");
    assert!(
        added < 10 * MIB,
        "edit of 100 bytes added {added} bytes: {second}"
    );

    let new_target = Scratch::new();
    repo.restore(&string(&second, "snapshot_id"), new_target.path(), args![])
        .success();
    assert_trees_equal(&src, &restored(new_target.path(), &src));

    let old_target = Scratch::new();
    repo.restore(&string(&first, "snapshot_id"), old_target.path(), args![])
        .success();
    assert_eq!(
        file_hash(&restored(old_target.path(), &big)),
        original_hash,
        "the first snapshot no longer restores the original big.bin"
    );
}

/// New and deleted files are seen by an incremental backup.
#[test]
fn incremental_backup_counts_new_files_and_forgets_deleted_ones() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let facts = build_plain_tree(&src, 8, 0, 6);
    repo.backup(args![&src]);

    fs::remove_file(src.join("file-000.dat")).expect("remove");
    write_file(&src.join("sub/brand-new.txt"), &random_bytes(20_000, 66));
    write_file(&src.join("new-dir/another.txt"), b"another new file\n");

    let second = repo.backup(args![&src]);
    assert_eq!(num(&second, "files_new"), 2, "{second}");
    assert_eq!(num(&second, "files_changed"), 0, "{second}");
    assert_eq!(
        num(&second, "files_unchanged") as usize,
        facts.regular_files - 1,
        "{second}"
    );
    assert_eq!(num(&second, "bytes_read"), 20_000 + 17, "{second}");

    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// `--full` reads every file again, but identical content is still
/// deduplicated and counted as unchanged.
#[test]
fn full_backup_reads_everything_but_adds_little() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let facts = build_plain_tree(&src, 10, 2 * MIB as usize, 7);
    let first = repo.backup(args![&src]);

    let full = repo.backup(args!["--full", &src]);
    assert_eq!(string(&full, "kind"), "full", "{full}");
    assert_ne!(full["snapshot_id"], first["snapshot_id"]);
    assert_eq!(num(&full, "bytes_read"), facts.total_bytes, "{full}");
    assert_eq!(num(&full, "total_bytes"), facts.total_bytes, "{full}");
    assert_eq!(
        num(&full, "files_unchanged") as usize,
        facts.regular_files,
        "{full}"
    );
    assert_eq!(num(&full, "files_changed"), 0, "{full}");
    assert_eq!(num(&full, "files_new"), 0, "{full}");
    assert!(num(&full, "bytes_added") < 64 * KIB, "{full}");

    let snaps = repo.snapshots(args![]);
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1]["kind"], "full", "{snaps:?}");
}

/// A snapshot of a different path set does not use another path's snapshot
/// as parent.
#[test]
fn backup_of_other_paths_starts_a_full_chain() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let a = scratch.join("a");
    let b = scratch.join("b");
    build_plain_tree(&a, 2, 0, 8);
    build_plain_tree(&b, 2, 0, 9);
    repo.backup(args![&a]);
    let sb = repo.backup(args![&b]);
    assert_eq!(string(&sb, "kind"), "full", "{sb}");
    assert!(sb["parent"].is_null(), "{sb}");
    let sab = repo.backup(args![&a, &b]);
    assert_eq!(string(&sab, "kind"), "full", "{sab}");
    assert!(sab["parent"].is_null(), "{sab}");

    let target = Scratch::new();
    repo.restore(&string(&sab, "snapshot_id"), target.path(), args![])
        .success();
    assert_trees_equal(&a, &restored(target.path(), &a));
    assert_trees_equal(&b, &restored(target.path(), &b));
}

fn excludes_source(src: &Path) {
    for rel in [
        "keep.txt",
        "debug.log",
        "notes.log.txt",
        "sub/inner.log",
        "sub/keep2.txt",
        "sub/cache.txt",
        "cache/blob.bin",
        "node_modules/x.js",
        "sub/node_modules/y.js",
        "scratch.tmp",
        "sub/skipme/file.txt",
        "other/skipme/file.txt",
    ] {
        write_file(&src.join(rel), rel.as_bytes());
    }
}

fn restored_relative_paths(repo: &Repo, src: &Path) -> BTreeSet<PathBuf> {
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    relative_paths(&restored(target.path(), src))
}

fn set_of(paths: &[&str]) -> BTreeSet<PathBuf> {
    paths.iter().map(PathBuf::from).collect()
}

/// `--exclude`: a pattern without `/` matches entry names anywhere; one with
/// `/` matches the absolute path.
#[test]
fn exclude_patterns_match_names_and_absolute_paths() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    excludes_source(&src);
    let abs_cache = src.join("cache");
    repo.backup(args![
        "--exclude",
        "*.log",
        "--exclude",
        "node_modules",
        "--exclude",
        &abs_cache,
        &src
    ]);
    assert_eq!(
        restored_relative_paths(&repo, &src),
        set_of(&[
            "keep.txt",
            "notes.log.txt",
            "other",
            "other/skipme",
            "other/skipme/file.txt",
            "scratch.tmp",
            "sub",
            "sub/cache.txt",
            "sub/keep2.txt",
            "sub/skipme",
            "sub/skipme/file.txt",
        ])
    );
}

/// `--exclude-file` reads one pattern per line.
#[test]
fn exclude_file_reads_patterns_line_by_line() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    excludes_source(&src);
    let patterns = scratch.join("excludes.txt");
    let list = format!("*.tmp\n{}\n*.log\n", src.join("sub/skipme").display());
    write_file(&patterns, list.as_bytes());
    repo.backup(args!["--exclude-file", &patterns, &src]);
    assert_eq!(
        restored_relative_paths(&repo, &src),
        set_of(&[
            "cache",
            "cache/blob.bin",
            "keep.txt",
            "node_modules",
            "node_modules/x.js",
            "notes.log.txt",
            "other",
            "other/skipme",
            "other/skipme/file.txt",
            "sub",
            "sub/cache.txt",
            "sub/keep2.txt",
            "sub/node_modules",
            "sub/node_modules/y.js",
        ])
    );
}

/// Tags and an explicit host are recorded; the default host is the machine's.
#[test]
fn tags_and_host_are_recorded_in_the_snapshot() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 2, 0, 10);
    repo.backup(args![
        "--tag", "daily", "--tag", "db", "--host", "web01", &src
    ]);
    repo.backup(args![&src]);

    let snaps = repo.snapshots(args![]);
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert_eq!(snaps[0]["host"], "web01", "{}", snaps[0]);
    let mut tags: Vec<String> = snaps[0]["tags"]
        .as_array()
        .expect("tags array")
        .iter()
        .map(|t| t.as_str().expect("tag string").to_owned())
        .collect();
    tags.sort();
    assert_eq!(tags, ["daily", "db"]);
    assert_eq!(snaps[1]["host"], hostname().as_str(), "{}", snaps[1]);
    assert_eq!(snaps[1]["tags"], serde_json::json!([]), "{}", snaps[1]);
    // Different host: the second snapshot has no parent from web01.
    assert!(snaps[1]["parent"].is_null(), "{}", snaps[1]);
}

/// `--one-file-system` on a tree within one file system changes nothing.
#[test]
fn one_file_system_backs_up_a_single_file_system_tree() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 4, 0, 11);
    repo.backup(args!["--one-file-system", &src]);
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// RELIABILITY case 11: unreadable files and directories, at the top and deep in the tree,
/// are reported (exit code 3, `errors`, stderr), the snapshot is written, and every other
/// file restores byte for byte.
#[test]
fn unreadable_entries_are_reported_and_the_rest_is_saved() {
    let scratch = Scratch::new();
    set_mode(scratch.path(), 0o777);
    let src = scratch.join("src");
    let repo_path = scratch.join("repo");
    build_plain_tree(&src, 6, 0, 12);
    write_file(&src.join("sub/also-fine.txt"), b"fine\n");
    write_file(&src.join("locked.txt"), b"you cannot read me\n");
    write_file(&src.join("locked_dir/hidden.txt"), b"nor me\n");
    write_file(
        &src.join("sub/deeper/locked-deep.txt"),
        b"deep and locked\n",
    );
    write_file(
        &src.join("sub/deeper/locked-deep-dir/x.txt"),
        b"deep, in a locked dir\n",
    );
    write_file(&src.join("sub/deeper/after.txt"), b"readable, after them\n");
    stamp_mtimes(&src, 1_550_000_000);
    // Accessible to anyone...
    for (rel, entry) in scan_tree(&src) {
        let mode = if entry.kind == Kind::Dir {
            0o777
        } else {
            0o666
        };
        set_mode(&src.join(rel), mode);
    }
    // ...except these four.
    set_mode(&src.join("locked.txt"), 0o000);
    set_mode(&src.join("locked_dir"), 0o000);
    set_mode(&src.join("sub/deeper/locked-deep.txt"), 0o000);
    set_mode(&src.join("sub/deeper/locked-deep-dir"), 0o000);

    lifeboat_unprivileged(args!["init", "--repo", &repo_path], scratch.path()).success();
    let out = lifeboat_unprivileged(
        args!["backup", "--repo", &repo_path, "--json", &src],
        scratch.path(),
    );
    let out = out.expect_code(3);
    let summary = parse_backup_stream(&out).unwrap_or_else(|| panic!("no summary\n{out}"));

    let locked: Vec<PathBuf> = [
        "locked.txt",
        "locked_dir",
        "sub/deeper/locked-deep.txt",
        "sub/deeper/locked-deep-dir",
    ]
    .iter()
    .map(|p| src.join(p))
    .collect();
    let error_paths: Vec<String> = summary["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors is not an array: {summary}"))
        .iter()
        .map(|e| {
            assert!(e["error"].is_string(), "error entry without message: {e}");
            string(e, "path")
        })
        .collect();
    for p in &locked {
        let p = p.to_str().expect("utf-8 path");
        assert!(
            error_paths.iter().any(|e| e == p),
            "errors {error_paths:?} do not name {p}\n{out}"
        );
        out.stderr_contains(p);
    }
    assert_eq!(
        error_paths.len(),
        4,
        "only four entries are unreadable: {error_paths:?}"
    );

    let snaps = Repo::at(&repo_path).snapshots(args![]);
    assert_eq!(snaps.len(), 1, "the snapshot was not written: {snaps:?}");
    assert_eq!(snaps[0]["id"], summary["snapshot_id"]);

    let target = Scratch::new();
    lifeboat(args![
        "restore",
        "--repo",
        &repo_path,
        string(&summary, "snapshot_id"),
        "--target",
        target.path()
    ])
    .success();
    assert_trees_equal_except(
        &src,
        &restored(target.path(), &src),
        &[
            PathBuf::from("locked.txt"),
            PathBuf::from("locked_dir"),
            PathBuf::from("sub/deeper/locked-deep.txt"),
            PathBuf::from("sub/deeper/locked-deep-dir"),
        ],
    );
}

/// A single file (not a directory) can be backed up and restored.
#[test]
fn single_file_source_round_trips() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let file = scratch.join("lonely.txt");
    write_file(&file, b"just me\n");
    set_mode(&file, 0o640);
    set_mtime(&file, 1_234_567_890, 987_654_321);
    repo.backup(args![&file]);
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    assert_trees_equal(&file, &restored(target.path(), &file));
}

/// RELIABILITY case 12: Deep nesting and many small (partly identical) files round-trip.
#[test]
fn deep_and_wide_trees_round_trip() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let mut deep = src.clone();
    for level in 0..60 {
        deep.push(format!("level-{level:02}"));
    }
    write_file(&deep.join("bottom.txt"), b"the bottom\n");
    for i in 0..600 {
        let content = format!("file number {}\n", i % 100);
        write_file(
            &src.join(format!("wide/{:02}/f{i:04}.txt", i % 30)),
            content.as_bytes(),
        );
    }
    stamp_mtimes(&src, 1_450_000_000);
    let summary = repo.backup(args![&src]);
    assert_eq!(num(&summary, "files_new"), 601, "{summary}");
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// Identical content is stored once (deduplication across files).
#[test]
fn identical_content_is_stored_once() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let data = random_bytes(4 * MIB as usize, 20);
    write_file(&src.join("one.bin"), &data);
    write_file(&src.join("two.bin"), &data);
    write_file(&src.join("sub/three.bin"), &data);
    let summary = repo.backup(args![&src]);
    assert_eq!(num(&summary, "bytes_read"), 12 * MIB, "{summary}");
    let added = num(&summary, "bytes_added");
    assert!(
        (4 * MIB - 64 * KIB..5 * MIB).contains(&added),
        "three copies of 4 MiB of random data added {added} bytes: {summary}"
    );
}

/// Compressible data is stored compressed.
#[test]
fn compressible_data_is_stored_compressed() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("line {i}: lifeboat compresses repetitive text\n").into_bytes())
        .collect();
    assert!(text.len() as u64 > 8 * MIB);
    write_file(&src.join("log.txt"), &text);
    let summary = repo.backup(args![&src]);
    let added = num(&summary, "bytes_added");
    assert!(
        added < text.len() as u64 / 4,
        "{} bytes of text added {added} bytes: {summary}",
        text.len()
    );
}

/// Chunk boundaries depend on content: inserting bytes at the start of a
/// file leaves the later chunks unchanged, so they are not stored again.
#[test]
fn insertion_at_the_start_of_a_file_stores_only_the_first_chunks() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let data = random_bytes(16 * MIB as usize, 21);
    let file = src.join("shifted.bin");
    write_file(&file, &data);
    repo.backup(args![&src]);

    let mut shifted = b"ten bytes!".to_vec();
    shifted.extend_from_slice(&data);
    write_file(&file, &shifted);
    let summary = repo.backup(args![&src]);
    assert_eq!(num(&summary, "files_changed"), 1, "{summary}");
    let added = num(&summary, "bytes_added");
    assert!(
        added < 8 * MIB,
        "a 10-byte insertion into 16 MiB added {added} bytes: {summary}"
    );
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// The repository holds `data/<2 hex>/<64 hex>` packs of at most ~16 MiB,
/// index files and one file per snapshot.
#[test]
fn backup_writes_the_documented_repository_layout() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("a.bin"), &random_bytes(20 * MIB as usize, 22));
    write_file(&src.join("b.bin"), &random_bytes(20 * MIB as usize, 23));
    let summary = repo.backup(args![&src]);

    let packs = repo.packs();
    assert!(packs.len() >= 3, "40 MiB in {} packs", packs.len());
    for (path, id) in &packs {
        assert!(is_hex(id, 64), "pack name {id:?} is not 64 hex digits");
        let dir = path.parent().and_then(Path::file_name).expect("pack dir");
        assert_eq!(dir.to_str(), Some(&id[..2]), "pack {id} lies in {dir:?}");
        let len = fs::metadata(path).expect("stat pack").len();
        assert!(len <= 20 * MIB, "pack {id} is {len} bytes");
    }
    let indexes = fs::read_dir(repo.path.join("index"))
        .expect("index/")
        .count();
    assert!(indexes >= 1, "no index file");
    let id = string(&summary, "snapshot_id");
    assert!(
        repo.path.join("snapshots").join(&id).is_file(),
        "no snapshots/{id}"
    );
}

/// A file rewritten in place with the same size, whose mtime was then set
/// back, is still noticed (its ctime changed) and read again.
#[test]
fn rewritten_file_with_same_size_and_mtime_is_detected() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let facts = build_plain_tree(&src, 5, 0, 24);
    repo.backup(args![&src]);

    let file = src.join("sub/file-001.dat");
    let before = fs::symlink_metadata(&file).expect("lstat");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut content = fs::read(&file).expect("read");
    content[0] ^= 0xff;
    fs::write(&file, &content).expect("rewrite");
    set_mtime(&file, before.mtime(), before.mtime_nsec() as u32);
    let after = fs::symlink_metadata(&file).expect("lstat");
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec(), after.ino()),
        (
            before.len(),
            before.mtime(),
            before.mtime_nsec(),
            before.ino()
        )
    );

    let summary = repo.backup(args![&src]);
    assert_eq!(num(&summary, "files_changed"), 1, "{summary}");
    assert_eq!(
        num(&summary, "files_unchanged") as usize,
        facts.regular_files - 1,
        "{summary}"
    );
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// Changes to metadata alone (mode, xattrs, owner, mtimes, link targets)
/// are recorded by an incremental backup.
#[test]
fn incremental_backup_records_metadata_only_changes() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 4, 0, 25);
    symlink("file-000.dat", &src.join("link"));
    stamp_mtimes(&src, 1_400_000_000);
    repo.backup(args![&src]);

    set_mode(&src.join("file-000.dat"), 0o600);
    xattr::set(src.join("sub/file-001.dat"), "user.added", b"later").expect("setxattr");
    if is_root() {
        std::os::unix::fs::chown(src.join("sub/deeper/file-002.dat"), Some(42), Some(43))
            .expect("chown");
    }
    fs::remove_file(src.join("link")).expect("rm link");
    symlink("sub/file-001.dat", &src.join("link"));
    set_mtime(&src.join("link"), 1_300_000_000, 7);
    set_mtime(&src.join("other"), 1_300_000_000, 8);
    set_mtime(&src, 1_300_000_000, 9);

    repo.backup(args![&src]);
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// The listing of `src` in snapshot `id`, read through the library.
fn listing_of(repo: &Repo, id: &str, src: &Path) -> lifeboat::id::BlobId {
    let r = lifeboat::Repository::open(
        std::sync::Arc::new(lifeboat::storage::LocalStorage::new(&repo.path)),
        || {
            Ok(lifeboat::repo::Credentials::Password(
                PASSWORD.as_bytes().to_vec().into(),
            ))
        },
    )
    .expect("open the repository");
    let index = r.load_index().expect("index");
    let (_, snapshot) = r
        .load_snapshots()
        .expect("snapshots")
        .into_iter()
        .find(|(sid, _)| sid.to_hex() == id)
        .expect("the snapshot");
    let mut tree = snapshot.tree;
    for c in src.components().skip(1) {
        let listing = r.load_tree(&index, &tree).expect("listing");
        let name = c.as_os_str().as_encoded_bytes();
        tree = listing
            .find(name)
            .and_then(|n| n.subtree)
            .unwrap_or_else(|| panic!("no directory {c:?} on the way to {}", src.display()));
    }
    tree
}

/// Accesses everything under `root` once (directories listed, files read, symlinks read), so
/// that access times settle (relatime updates them on the first access after a change only)
/// and two backups in a row record the same ones.
fn settle_atimes(root: &Path) {
    let meta = fs::symlink_metadata(root).expect("lstat");
    if meta.is_dir() {
        for entry in fs::read_dir(root).expect("read_dir").flatten() {
            settle_atimes(&entry.path());
        }
    } else if meta.is_symlink() {
        fs::read_link(root).expect("readlink");
    } else if meta.is_file() {
        fs::read(root).expect("read");
    }
}

/// An incremental backup keeps the parent snapshot's listing of every directory whose entries
/// are all unchanged (without encoding it again) and writes a new listing for every directory
/// on the path to a change: its listings are exactly those a `--full` backup of the same tree
/// writes, for changes of content, metadata, xattrs, removals, additions, type changes,
/// entries newly excluded, and a directory's own metadata.
#[test]
fn incremental_listings_equal_those_of_a_full_backup() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 24, 0, 31);
    for d in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        write_file(&src.join(format!("{d}/x/y/file.txt")), d.as_bytes());
        write_file(&src.join(format!("{d}/x/sibling.txt")), b"sibling\n");
    }
    symlink("file.txt", &src.join("g/x/y/link"));
    stamp_mtimes(&src, 1_400_000_000);
    settle_atimes(&src);
    let first = repo.backup(args!["--exclude", "*.skip", &src]);

    // One change per branch, deep down: content (same size, new mtime), mode, an xattr, a
    // removal, an addition, a file that becomes a directory, a newly excluded name.
    write_file(&src.join("a/x/y/file.txt"), b"A");
    set_mtime(&src.join("a/x/y/file.txt"), 1_500_000_000, 1);
    set_mode(&src.join("b/x/y/file.txt"), 0o600);
    xattr::set(src.join("c/x/y/file.txt"), "user.note", b"added").expect("setxattr");
    fs::remove_file(src.join("d/x/y/file.txt")).expect("rm");
    write_file(&src.join("e/x/y/new.txt"), b"new\n");
    fs::remove_file(src.join("f/x/y/file.txt")).expect("rm");
    write_file(&src.join("f/x/y/file.txt/inside.txt"), b"now a directory\n");
    fs::rename(src.join("g/x/y/file.txt"), src.join("g/x/y/file.skip")).expect("rename");
    // A directory's own metadata: its listing stays, its parent's changes.
    set_mode(&src.join("h/x/y"), 0o700);
    settle_atimes(&src);

    let inc = repo.backup(args!["--exclude", "*.skip", &src]);
    assert_eq!(string(&inc, "kind"), "incremental", "{inc}");
    let full = repo.backup(args!["--full", "--exclude", "*.skip", &src]);
    let (first_id, inc_id, full_id) = (
        string(&first, "snapshot_id"),
        string(&inc, "snapshot_id"),
        string(&full, "snapshot_id"),
    );
    let listing = |id: &str, sub: &str| listing_of(&repo, id, &src.join(sub));
    for branch in ["a", "b", "c", "d", "e", "f", "g"] {
        for sub in [
            format!("{branch}/x/y"),
            format!("{branch}/x"),
            branch.to_string(),
        ] {
            assert_eq!(listing(&inc_id, &sub), listing(&full_id, &sub), "{sub}");
            assert_ne!(
                listing(&inc_id, &sub),
                listing(&first_id, &sub),
                "{sub} changed"
            );
        }
    }
    for sub in ["h/x", "h"] {
        assert_eq!(listing(&inc_id, sub), listing(&full_id, sub), "{sub}");
        assert_ne!(
            listing(&inc_id, sub),
            listing(&first_id, sub),
            "{sub} changed"
        );
    }
    // Untouched directories keep their listings; the whole tree matches the full backup's.
    for sub in ["h/x/y", "sub/deeper", "sub", "other"] {
        assert_eq!(listing(&inc_id, sub), listing(&first_id, sub), "{sub}");
    }
    assert_eq!(listing(&inc_id, ""), listing(&full_id, ""));

    // Nothing changed since: every listing is the parent's.
    let again = repo.backup(args!["--exclude", "*.skip", &src]);
    assert_eq!(
        listing(&string(&again, "snapshot_id"), ""),
        listing(&full_id, "")
    );
}

/// A backup indexes its packs as they fill index objects, not only at the end (their entries
/// need not stay in memory): with a small `index_every` the run writes several index objects,
/// the repository checks clean, every byte stored is counted, and the next backup finds every
/// chunk in the index.
#[test]
fn packs_are_indexed_during_the_run() {
    use lifeboat::ops::backup::{backup, BackupOptions};
    use lifeboat::storage::FileKind;
    let scratch = Scratch::new();
    let src = scratch.join("src");
    // 400 files of 10 KiB of random data: 400 chunks in four or five 1 MiB packs.
    for i in 0..400u64 {
        write_file(
            &src.join(format!("d{}/f{i:03}", i % 7)),
            &random_bytes(10 * KIB as usize, i),
        );
    }
    let storage = std::sync::Arc::new(lifeboat::storage::LocalStorage::new(scratch.join("repo")));
    let init = lifeboat::repo::InitOptions {
        kdf: lifeboat::repo::KdfSetting::CHEAPEST,
        pack_size: 1 << 20,
        ..Default::default()
    };
    let repo = lifeboat::Repository::init(storage, &init, Some(b"pw")).expect("init");
    let opts = BackupOptions {
        paths: vec![src.clone()],
        host: "h".into(),
        index_every: 50,
        ..BackupOptions::default()
    };
    let first = backup(&repo, &opts, Default::default()).expect("backup");
    let indexes = repo.storage().list(FileKind::Index).expect("list");
    assert!(indexes.len() >= 4, "{} index objects", indexes.len());
    let index = repo.load_index().expect("index");
    let stored: u64 = index
        .by_pack()
        .iter()
        .flat_map(|(_, e)| e.iter().map(|e| u64::from(e.stored_len)))
        .sum();
    assert_eq!(first.snapshot.summary.bytes_added, stored);
    assert_reads_clean(&repo, "after a backup indexed in parts");

    let again = BackupOptions { full: true, ..opts };
    let second = backup(&repo, &again, Default::default()).expect("backup");
    assert_eq!(second.snapshot.summary.bytes_read, 4000 * KIB);
    assert!(
        second.snapshot.summary.bytes_added < 4 * KIB,
        "every chunk was found in the index: {:?}",
        second.snapshot.summary
    );
}

/// An incremental backup follows entries that changed type since the parent
/// (file -> directory, directory -> symlink, symlink -> file, file -> fifo).
#[test]
fn incremental_backup_follows_type_changes() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("was_file"), b"a file\n");
    write_file(&src.join("was_dir/inside.txt"), b"inside\n");
    symlink("was_file", &src.join("was_link"));
    write_file(&src.join("becomes_fifo"), b"soon a fifo\n");
    stamp_mtimes(&src, 1_400_000_000);
    repo.backup(args![&src]);

    fs::remove_file(src.join("was_file")).expect("rm");
    write_file(&src.join("was_file/now_inside.txt"), b"now a directory\n");
    fs::remove_dir_all(src.join("was_dir")).expect("rm -r");
    symlink("was_file", &src.join("was_dir"));
    fs::remove_file(src.join("was_link")).expect("rm");
    write_file(&src.join("was_link"), b"now a file\n");
    fs::remove_file(src.join("becomes_fifo")).expect("rm");
    mkfifo(&src.join("becomes_fifo"), 0o600);
    stamp_mtimes(&src, 1_410_000_000);

    repo.backup(args![&src]);
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// A backup path that does not exist is an error before anything is written, not an empty
/// snapshot.
#[test]
fn missing_backup_path_fails_without_a_snapshot() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let missing = scratch.join("no-such-dir");
    let out = repo.run("backup", args![&missing]).expect_code(1);
    out.stderr_contains("no-such-dir");
    let listed = repo.run("snapshots", args!["--json"]).success();
    let snaps: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(snaps.as_array().map(Vec::len), Some(0));
}

/// RELIABILITY case 10: while a backup runs, source files are rewritten in place with other
/// sizes (grown, truncated), deleted and recreated, and swapped for a symlink and back. The
/// backup completes, the repository checks clean, and every such file is either reported in
/// the snapshot's errors or stored whole as of one moment: its restored content is one of the
/// versions it had, or what it held part-way through a writer's write of one (a prefix; empty
/// between truncating and writing) — never bytes of two versions.
#[test]
fn files_changing_while_being_read_are_stored_whole_or_reported() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src.join("stable"), 10, 2 * MIB as usize, 40);
    // Three versions of each changing file: 3 MiB, grown to 5 MiB, truncated to 1 MiB.
    let versions: Vec<Vec<u8>> = [3, 5, 1]
        .iter()
        .enumerate()
        .map(|(i, mib)| random_bytes(mib * MIB as usize, 500 + i as u64))
        .collect();
    let names = [
        "rewritten-0",
        "rewritten-1",
        "rewritten-2",
        "deleted",
        "symlinked",
    ];
    for name in names {
        write_file(&src.join(name), &versions[0]);
    }
    let outside = scratch.join("elsewhere.txt");
    write_file(&outside, b"a symlink target outside the source\n");
    let repo = Repo::new();

    // Three full backups, each read while the files change under it.
    for attempt in 0..3 {
        let done = AtomicBool::new(false);
        let rounds = std::thread::scope(|s| {
            let mutator = s.spawn(|| {
                let mut round = 0usize;
                while !done.load(Ordering::SeqCst) {
                    let v = &versions[round % versions.len()];
                    for name in &names[..3] {
                        // In place: truncate, then write (a reader may see either moment).
                        fs::write(src.join(name), v).expect("rewrite");
                    }
                    let deleted = src.join("deleted");
                    if round % 2 == 0 {
                        let _ = fs::remove_file(&deleted);
                    } else {
                        fs::write(&deleted, v).expect("recreate");
                    }
                    // Atomically a symlink, then atomically a file again.
                    let linked = src.join("symlinked");
                    let tmp = scratch.join("swap");
                    let _ = fs::remove_file(&tmp);
                    if round % 2 == 0 {
                        std::os::unix::fs::symlink(&outside, &tmp).expect("symlink");
                    } else {
                        fs::write(&tmp, v).expect("write");
                    }
                    fs::rename(&tmp, &linked).expect("swap");
                    round += 1;
                }
                round
            });
            let out = repo.run("backup", args!["--json", "--full", &src]);
            done.store(true, Ordering::SeqCst);
            let rounds = mutator.join().expect("mutator");
            (out, rounds)
        });
        let (out, rounds) = rounds;
        assert!(
            matches!(out.code, Some(0) | Some(3)),
            "the backup completes (3: some files reported)\n{out}"
        );
        assert!(rounds > 0, "the files changed while the backup ran");
        let summary = parse_backup_stream(&out).expect("summary");
        let reported: BTreeSet<String> = summary["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| string(e, "path"))
            .collect();
        repo.check(args!["--read-data"]).success();
        let target = Scratch::new();
        repo.restore("latest", target.path(), args![]).success();
        let back = restored(target.path(), &src);
        for name in names {
            let path = src.join(name);
            if reported.contains(path.to_str().expect("utf-8")) {
                continue;
            }
            let restored_path = back.join(name);
            let Ok(meta) = fs::symlink_metadata(&restored_path) else {
                // Absent: it did not exist when the walk came by (deleted), a consistent moment.
                assert_eq!(
                    name, "deleted",
                    "{name} is missing from the snapshot and not reported"
                );
                continue;
            };
            if meta.file_type().is_symlink() {
                assert_eq!(name, "symlinked");
                assert_eq!(fs::read_link(&restored_path).expect("readlink"), outside);
                continue;
            }
            // What the file held at one moment: a version, or — read while a writer was
            // part-way through writing one — the part of it written so far; never bytes of two
            // versions.
            let content = fs::read(&restored_path).expect("read");
            assert!(
                versions
                    .iter()
                    .any(|v| content.len() <= v.len() && v[..content.len()] == content[..]),
                "{name} was stored as a mix of versions ({} bytes), not as of one moment, and not reported",
                meta.len()
            );
        }
        // The files nobody touched are exact.
        assert_trees_equal(&src.join("stable"), &back.join("stable"));
        println!(
            "backup {attempt}: {rounds} rounds of changes while it ran; reported: {reported:?}"
        );
    }
}

/// The data regions of a file (SEEK_DATA/SEEK_HOLE), as (offset, length).
fn data_regions(path: &Path) -> Vec<(u64, u64)> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).expect("open");
    let len = f.metadata().expect("stat").len() as i64;
    let fd = f.as_raw_fd();
    let mut regions = Vec::new();
    let mut pos = 0i64;
    while pos < len {
        let Ok(start) = lseek(fd, pos, Whence::SeekData) else {
            break; // ENXIO: only a hole remains
        };
        let end = lseek(fd, start, Whence::SeekHole).expect("SEEK_HOLE");
        regions.push((start as u64, (end - start) as u64));
        pos = end;
    }
    regions
}

fn read_at(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len as usize];
    fs::File::open(path)
        .expect("open")
        .read_exact_at(&mut buf, offset)
        .expect("read");
    buf
}

/// RELIABILITY case 12: a file larger than 4 GiB (4.5 GiB, sparse, with data at the start,
/// across the 4 GiB boundary and at the end) round-trips byte for byte, its holes staying
/// holes.
#[test]
fn a_file_larger_than_4_gib_round_trips() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let big = src.join("huge.img");
    let len = 4 * 1024 * MIB + 512 * MIB;
    let pieces = [
        (0, random_bytes(MIB as usize, 1)),
        (4 * 1024 * MIB - 300 * KIB, random_bytes(MIB as usize, 2)),
        (len - MIB, random_bytes(MIB as usize, 3)),
    ];
    {
        fs::create_dir_all(&src).expect("mkdir");
        let f = fs::File::create(&big).expect("create");
        f.set_len(len).expect("set_len");
        for (offset, data) in &pieces {
            std::os::unix::fs::FileExt::write_all_at(&f, data, *offset).expect("write");
        }
    }
    let repo = Repo::new();
    let summary = repo.backup(args![&src]);
    assert_eq!(num(&summary, "total_bytes"), len, "{summary}");
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    let back = restored(target.path(), &big);
    let meta = fs::metadata(&back).expect("restored");
    assert_eq!(meta.len(), len);
    assert!(
        meta.blocks() * 512 < 64 * MIB,
        "the holes stayed holes: {} blocks",
        meta.blocks()
    );
    // Every byte the restored file stores is compared; the rest are holes, which read as zero,
    // as the source's do.
    for (offset, length) in data_regions(&back) {
        assert_eq!(
            read_at(&back, offset, length),
            read_at(&big, offset, length),
            "bytes {offset}..{} differ",
            offset + length
        );
    }
    for (offset, data) in &pieces {
        assert_eq!(
            &read_at(&back, *offset, data.len() as u64),
            data,
            "at {offset}"
        );
    }
    repo.check(args!["--read-data"]).success();
}

/// RELIABILITY case 13: symlink loops, a link to itself, and links pointing outside the source
/// (to an existing directory with files, to a file, to the root) are stored as links and never
/// followed: nothing outside the source is backed up, and they restore as the same links.
#[test]
fn symlink_loops_and_links_outside_the_source_are_stored_as_links() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let outside = scratch.join("outside");
    write_file(
        &outside.join("secret-outside.txt"),
        b"must not be backed up\n",
    );
    write_file(&src.join("inside.txt"), b"backed up\n");
    fs::create_dir(src.join("links")).expect("mkdir");
    symlink("loop_b", &src.join("links/loop_a"));
    symlink("loop_a", &src.join("links/loop_b"));
    symlink("self", &src.join("links/self"));
    symlink(&outside, &src.join("links/to_outside_dir"));
    symlink(
        outside.join("secret-outside.txt"),
        &src.join("links/to_outside_file"),
    );
    symlink("/", &src.join("links/to_root"));
    symlink("../../outside", &src.join("links/relative_outside"));
    let repo = Repo::new();
    let summary = repo.backup(args![&src]);
    assert_eq!(
        num(&summary, "files_new"),
        1,
        "only inside.txt is a file: {summary}"
    );
    assert_eq!(
        num(&summary, "total_bytes"),
        b"backed up\n".len() as u64,
        "{summary}"
    );
    let listing = repo.ls("latest", args![]).success().stdout();
    assert!(!listing.contains("secret-outside"), "{listing}");
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    assert_trees_equal(&src, &restored(target.path(), &src));
    let found: Vec<_> = walkdir::WalkDir::new(target.path())
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "secret-outside.txt")
        .collect();
    assert!(found.is_empty(), "a link was followed: {found:?}");
}

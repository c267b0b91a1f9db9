//! A full disk under a local repository, and under the metadata cache (RELIABILITY case 14).
//!
//! Each test mounts its own small tmpfs, which needs root (CAP_SYS_ADMIN): CI runs as root.
//! Without it the tests fail, saying so; they never skip.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::common::*;

/// Every entry below `dir` whose name starts with `.tmp` (temporary files of unfinished
/// writes).
fn temporary_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .map(|e| e.into_path())
        .collect()
}

/// Writes random data to `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("create filler");
    let block = random_bytes(64 * KIB as usize, 99);
    let mut written = 0;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("fill {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    written
}

/// RELIABILITY case 14: a local repository's file system fills up in the middle of a backup.
/// The backup fails at once with an error that names the repository's path, says the disk is
/// full and what to do; no snapshot is written; no temporary file is left to keep the disk
/// full; `check` passes; and once space is freed, the next backup succeeds (reusing what the
/// failed one stored) and `check --read-data` is clean.
#[test]
fn disk_full_mid_backup_fails_cleanly_and_the_next_backup_succeeds_after_space_is_freed() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let mnt = scratch.join("mnt");
    let fs = Tmpfs::mount(&mnt, 48);
    let repo = Repo::at(&mnt.join("repo"));
    lifeboat(args!["init", "--repo", &repo.path, "--pack-size-mib", "4"]).success();
    // A first, small snapshot fits.
    write_file(&src.join("small.txt"), b"a small first backup\n");
    repo.backup(args![&src]);
    // Half the file system goes to a filler; then 32 MiB of incompressible data cannot fit.
    let filler = mnt.join("filler");
    write_file(&filler, &random_bytes(24 * MIB as usize, 1));
    for i in 0..8 {
        write_file(
            &src.join(format!("data-{i}.bin")),
            &random_bytes(4 * MIB as usize, 10 + i),
        );
    }
    let free_before = fs.free();
    assert!(
        free_before < 32 * MIB,
        "test setup: {free_before} bytes free"
    );
    let out = repo.run("backup", args![&src]).expect_code(1);
    let err = out.stderr();
    assert!(
        err.contains(&repo.path.display().to_string()),
        "the error names the repository: {out}"
    );
    assert!(
        err.contains("file system is full") && err.contains("No space left on device"),
        "the error says the disk is full: {out}"
    );
    assert!(
        err.contains("free space"),
        "the error says what to do: {out}"
    );
    assert!(
        !err.contains("panicked"),
        "a clear error, not a panic: {out}"
    );
    assert_eq!(repo.snapshots(args![]).len(), 1, "no snapshot was written");
    let leftovers = temporary_files(&repo.path);
    assert!(
        leftovers.is_empty(),
        "the failed backup left temporary files: {leftovers:?}"
    );
    assert!(
        std::fs::read_dir(repo.path.join("locks"))
            .expect("locks/")
            .next()
            .is_none(),
        "the failed backup released its lock"
    );
    repo.check(args![]).success();
    repo.check(args!["--read-data"]).success();

    // Space is freed: the next backup succeeds, reusing the packs the failed one stored.
    std::fs::remove_file(&filler).expect("remove filler");
    let summary = repo.backup(args![&src]);
    assert!(
        num(&summary, "bytes_added") < 32 * MIB,
        "the packs the failed backup stored were reused: {summary}"
    );
    repo.check(args!["--read-data"]).success();
    let target = scratch.join("target");
    repo.restore("latest", &target, args![]).success();
    assert_trees_equal(&src, &restored(&target, &src));
    drop(fs);
}

/// RELIABILITY case 14, the local metadata cache: a cache directory on a full file system
/// does not fail a backup or a restore of a cloud (S3) repository; it is only a cache.
#[test]
fn a_full_cache_directory_does_not_fail_a_backup_or_restore() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 20, 2 * MIB as usize, 5);
    let mnt = scratch.join("mnt");
    let fs = Tmpfs::mount(&mnt, 4);
    std::fs::create_dir(mnt.join("cache")).expect("mkdir cache");
    fill(&mnt.join("filler"));
    assert!(fs.free() < 64 * KIB, "test setup: the file system is full");
    let url = s3_url("cache-full");
    let with_cache = |rest: Vec<std::ffi::OsString>| {
        let mut all = args!["--repo", &url, "--cache-dir", mnt.join("cache")];
        all.extend(rest);
        all
    };
    let mut init = args!["init"];
    init.extend(with_cache(args![]));
    lifeboat_s3(init).success();
    for _ in 0..2 {
        let mut backup = args!["backup"];
        backup.extend(with_cache(args![&src]));
        lifeboat_s3(backup).success();
    }
    let target = scratch.join("target");
    let mut restore = args!["restore"];
    restore.extend(with_cache(args!["latest", "--target", &target]));
    lifeboat_s3(restore).success();
    assert_trees_equal(&src, &restored(&target, &src));
    let mut check = args!["check"];
    check.extend(with_cache(args!["--read-data"]));
    lifeboat_s3(check).success();
    assert!(
        temporary_files(&mnt).is_empty(),
        "the cache left temporary files behind"
    );
    drop(fs);
}

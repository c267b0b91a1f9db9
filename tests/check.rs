//! `lifeboat check`: structure checks, and data checks with `--read-data`.

#[macro_use]
mod common;

use std::fs;

use common::*;

#[test]
fn check_passes_on_a_new_repository() {
    let repo = Repo::new();
    repo.check(args![]).success();
    repo.check(args!["--read-data"]).success();
}

#[test]
fn check_passes_on_a_healthy_repository() {
    let (repo, scratch, src, _) = repo_with_big_file();
    // A second, incremental snapshot sharing most data with the first.
    write_file(&src.join("a.txt"), b"alpha, changed\n");
    write_file(&scratch.join("src/new.txt"), b"new\n");
    repo.backup(args![&src]);
    repo.check(args![]).success();
    repo.check(args!["--read-data"]).success();
}

/// A flipped byte inside a pack is invisible to the structural check but
/// found by `--read-data`, which names the pack and what it affects.
#[test]
fn read_data_finds_a_flipped_byte_in_a_pack() {
    let (repo, _scratch, src, summary) = repo_with_big_file();
    let pack = corrupt_largest_pack(&repo);

    let quick = repo.check(args![]);
    assert!(
        matches!(quick.code, Some(0) | Some(1)),
        "check without --read-data must not crash on a damaged pack\n{quick}"
    );

    let out = repo.check(args!["--read-data"]).expect_code(1);
    let text = out.all_output();
    assert!(
        text.contains(&pack),
        "the damaged pack {pack} is not named\n{out}"
    );
    let short = &string(&summary, "snapshot_id")[..8];
    let big = src.join("big.bin");
    assert!(
        text.contains(short) || text.contains(big.to_str().expect("utf-8")),
        "neither the affected snapshot {short} nor the file {big:?} is named\n{out}"
    );
}

/// A deleted pack file is found by the structural check already.
#[test]
fn check_finds_a_deleted_pack() {
    let (repo, _scratch, src, summary) = repo_with_big_file();
    let (path, pack) = repo.largest_pack();
    fs::remove_file(&path).expect("delete pack");

    for extra in [args![], args!["--read-data"]] {
        let out = repo.check(extra).expect_code(1);
        let text = out.all_output();
        assert!(
            text.contains(&pack),
            "the missing pack {pack} is not named\n{out}"
        );
        let short = &string(&summary, "snapshot_id")[..8];
        let big = src.join("big.bin");
        assert!(
            text.contains(short) || text.contains(big.to_str().expect("utf-8")),
            "neither the affected snapshot {short} nor the file {big:?} is named\n{out}"
        );
    }
}

/// A truncated pack is found by `--read-data`.
#[test]
fn check_read_data_finds_a_truncated_pack() {
    let (repo, _scratch, _src, _) = repo_with_big_file();
    let (path, pack) = repo.largest_pack();
    let len = fs::metadata(&path).expect("stat").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open pack")
        .set_len(len / 2)
        .expect("truncate");
    let out = repo.check(args!["--read-data"]).expect_code(1);
    assert!(
        out.all_output().contains(&pack),
        "the damaged pack {pack} is not named\n{out}"
    );
}

/// Damage to a snapshot file is an error too.
#[test]
fn check_finds_a_damaged_snapshot_file() {
    let (repo, _scratch, _src, summary) = repo_with_big_file();
    let id = string(&summary, "snapshot_id");
    let path = repo.path.join("snapshots").join(&id);
    assert!(path.is_file(), "no snapshots/{id} file");
    let len = fs::metadata(&path).expect("stat").len();
    flip_byte(&path, len / 2);
    repo.check(args![]).expect_code(1);
}

/// Damage in the smallest pack (directory listings and small files) is
/// reported by `check --read-data` and stops a restore, which names the pack.
#[test]
fn damage_in_the_small_pack_is_reported_by_check_and_restore() {
    let (repo, _scratch, _src, _) = repo_with_big_file();
    let (path, pack) = repo
        .packs()
        .into_iter()
        .min_by_key(|(p, _)| fs::metadata(p).expect("stat pack").len())
        .expect("a pack");
    let len = fs::metadata(&path).expect("stat").len();
    flip_byte(&path, len / 2);

    let out = repo.check(args!["--read-data"]).expect_code(1);
    assert!(
        out.all_output().contains(&pack),
        "the damaged pack {pack} is not named\n{out}"
    );

    let target = Scratch::new();
    let before = fingerprint(target.path());
    let out = repo
        .restore("latest", target.path(), args![])
        .expect_code(1);
    out.stderr_contains(&pack);
    assert_fingerprint_unchanged(&before, &fingerprint(target.path()), "the target");
}

//! `lifeboat init`: creating repositories, and refusing to clobber anything.

use std::fs;

use crate::common::*;

#[track_caller]
fn assert_repository_layout(repo: &std::path::Path) {
    assert!(repo.join("config").is_file(), "no config file in {repo:?}");
    for dir in ["data", "index", "snapshots"] {
        assert!(repo.join(dir).is_dir(), "no {dir}/ in {repo:?}");
    }
}

#[test]
fn init_creates_the_repository_layout() {
    let scratch = Scratch::new();
    let repo = scratch.join("repo");
    lifeboat(args!["init", "--repo", &repo]).success();
    assert_repository_layout(&repo);
    assert_eq!(
        Repo::at(&repo).snapshots(args![]),
        Vec::<serde_json::Value>::new()
    );
}

#[test]
fn init_accepts_an_existing_empty_directory() {
    let scratch = Scratch::new();
    let repo = scratch.join("repo");
    fs::create_dir(&repo).expect("mkdir");
    lifeboat(args!["init", "--repo", &repo]).success();
    assert_repository_layout(&repo);
}

#[test]
fn init_reads_the_repository_from_the_environment() {
    let scratch = Scratch::new();
    let repo = scratch.join("repo");
    lifeboat_env(args!["init"], &[("LIFEBOAT_REPOSITORY", repo.as_os_str())]).success();
    assert_repository_layout(&repo);
}

#[test]
fn init_refuses_a_non_empty_directory() {
    let scratch = Scratch::new();
    let repo = scratch.join("repo");
    write_file(&repo.join("precious.txt"), b"do not lose me\n");
    write_file(&repo.join(".hidden"), b"me neither\n");
    let before = fingerprint(&repo);

    let out = lifeboat(args!["init", "--repo", &repo]).expect_code(1);
    assert!(!out.stderr().trim().is_empty(), "no error message\n{out}");
    assert_fingerprint_unchanged(&before, &fingerprint(&repo), "the directory");
}

#[test]
fn init_refuses_a_directory_holding_only_a_hidden_file() {
    let scratch = Scratch::new();
    let repo = scratch.join("repo");
    write_file(&repo.join(".hidden"), b"I count\n");
    let before = fingerprint(&repo);
    lifeboat(args!["init", "--repo", &repo]).expect_code(1);
    assert_fingerprint_unchanged(&before, &fingerprint(&repo), "the directory");
}

#[test]
fn init_refuses_an_existing_repository() {
    let repo = Repo::new();
    let config = fs::read(repo.path.join("config")).expect("read config");
    let before = fingerprint(&repo.path);

    let out = lifeboat(args!["init", "--repo", &repo.path]).expect_code(1);
    assert!(!out.stderr().trim().is_empty(), "no error message\n{out}");
    assert_eq!(
        fs::read(repo.path.join("config")).expect("read config"),
        config
    );
    assert_fingerprint_unchanged(&before, &fingerprint(&repo.path), "the repository");
}

#[test]
fn init_refuses_a_path_that_is_a_file() {
    let scratch = Scratch::new();
    let file = scratch.join("file");
    write_file(&file, b"not a directory\n");
    lifeboat(args!["init", "--repo", &file]).expect_code(1);
    assert_eq!(fs::read(&file).expect("read"), b"not a directory\n");
}

#[test]
fn commands_without_a_repository_fail() {
    let out = lifeboat(args!["init"]).failure();
    assert!(!out.stderr().trim().is_empty(), "no error message\n{out}");
    lifeboat(args!["snapshots"]).failure();
}

#[test]
fn commands_on_a_path_that_is_not_a_repository_fail() {
    let scratch = Scratch::new();
    let out = lifeboat(args!["snapshots", "--repo", scratch.path()]).expect_code(1);
    assert!(!out.stderr().trim().is_empty(), "no error message\n{out}");
    lifeboat(args!["check", "--repo", scratch.join("missing")]).expect_code(1);
}

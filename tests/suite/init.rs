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

/// Issue 22: `init --copy-params-from SRC` takes the source's chunking parameters and chunk-id
/// key (the source opened with its own credentials, never this repository's password): the same
/// data then gets the same chunk ids in both, where a repository made without it gives others;
/// a wrong source password is refused, and nothing is created.
#[test]
fn init_copy_params_from_gives_the_chunk_ids_of_the_source() {
    let src = Repo::new();
    let scratch = Scratch::new();
    let data = scratch.join("data");
    write_file(&data.join("a.bin"), &random_bytes(3 * MIB as usize, 7));
    write_file(&data.join("b.txt"), b"hello\n");
    let src_password = scratch.join("src-password");
    write_file(&src_password, format!("{PASSWORD}\n").as_bytes());

    // Without the source's credentials it does not borrow this repository's password.
    let dst = scratch.join("dst");
    let out = lifeboat(args![
        "init",
        "--repo",
        &dst,
        "--copy-params-from",
        &src.path
    ])
    .failure();
    out.stderr_contains("--from-password-file");
    assert!(!dst.join("config").exists());
    let wrong = scratch.join("wrong");
    write_file(&wrong, b"not the password\n");
    let out = lifeboat(args![
        "init",
        "--repo",
        &dst,
        "--copy-params-from",
        &src.path,
        "--from-password-file",
        &wrong
    ])
    .expect_code(12);
    out.stderr_contains("--copy-params-from");
    assert!(!dst.join("config").exists());

    let out = lifeboat(args![
        "init",
        "--repo",
        &dst,
        "--copy-params-from",
        &src.path,
        "--from-password-file",
        &src_password
    ])
    .success();
    assert!(out.stdout().contains("chunk ids as in"), "{out}");
    let dst = Repo::at(&dst);
    let other = Repo::new();
    // The same bytes get the same chunk id in both (and another in a repository of its own);
    // the chunking parameters are the source's.
    let id = |r: &Repo| {
        r.open()
            .sealer()
            .blob_id(&fs::read(data.join("a.bin")).expect("read"))
    };
    assert_eq!(id(&dst), id(&src), "the source's chunk ids");
    assert_ne!(id(&other), id(&src), "another repository's own id key");
    assert_eq!(dst.open().config().chunker, src.open().config().chunker);
    // The keys that seal the objects are the destination's own: the source's kit does not
    // open it.
    let kit = scratch.join("src.kit");
    lifeboat(args![
        "key", "export", "--repo", &src.path, "--output", &kit
    ])
    .success();
    lifeboat(args![
        "snapshots",
        "--repo",
        &dst.path,
        "--recovery-kit",
        &kit
    ])
    .failure();
}

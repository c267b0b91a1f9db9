//! `lifeboat check`: structure checks, and data checks with `--read-data`.

use std::fs;

use crate::common::*;

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
    let text = repo.check(args!["--read-data"]).success().stdout();
    // The final line gives what was read, the rate and the duration (issue 21).
    assert!(
        text.contains("of pack data read and verified (") && text.contains("/s) in "),
        "{text}"
    );
}

/// RELIABILITY case 4: A flipped byte inside a pack is invisible to the structural check but
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

/// RELIABILITY case 6: A deleted pack file is found by the structural check already.
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

/// RELIABILITY case 5: A truncated pack is found by `--read-data`.
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

/// RELIABILITY case 5: Damage to a snapshot file is an error too.
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

/// RELIABILITY case 4 (directory data): Damage in the smallest pack (directory listings and small files) is
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

/// Copies a repository directory (files and directories).
fn copy_repo(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir").flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_repo(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).expect("copy");
            set_mode(&dest, 0o600);
        }
    }
}

/// RELIABILITY case 5: a truncated or empty pack, index, snapshot, config and key object.
/// `check --read-data` fails naming the object; every other command (snapshots, restore,
/// backup) either works around it or fails with a clear error naming the object — never a
/// panic, never exit code 101 (`snapshots` lists what is intact and names a damaged snapshot,
/// exit 3). (Rebuilding the index from the packs: `repair index`.)
#[test]
fn truncated_or_empty_objects_give_a_clear_error_and_no_panic() {
    let (repo, scratch, src, _) = repo_with_big_file();
    let only = |dir: &str| -> (std::path::PathBuf, String) {
        let d = repo.path.join(dir);
        let e = fs::read_dir(&d)
            .expect("read_dir")
            .flatten()
            .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .unwrap_or_else(|| panic!("nothing in {dir}"));
        (
            e.path(),
            format!("{dir}/{}", e.file_name().to_string_lossy()),
        )
    };
    let (pack_path, pack_id) = repo.largest_pack();
    let pack = (pack_path, format!("data/{}/{pack_id}", &pack_id[..2]));
    let objects = [
        pack,
        only("index"),
        only("snapshots"),
        (repo.path.join("config"), "config".to_string()),
        only("keys"),
    ];
    for (path, name) in &objects {
        let rel = path
            .strip_prefix(&repo.path)
            .expect("inside the repository");
        let len = fs::metadata(path).expect("stat").len();
        for (how, keep) in [("truncated", len / 2), ("empty", 0)] {
            let damaged = scratch.join(format!("damaged-{how}-{}", name.replace('/', "-")));
            copy_repo(&repo.path, &damaged);
            fs::OpenOptions::new()
                .write(true)
                .open(damaged.join(rel))
                .expect("open")
                .set_len(keep)
                .expect("truncate");
            let r = Repo::at(&damaged);
            let target = scratch.join(format!("target-{how}-{}", name.replace('/', "-")));
            let runs = [
                ("check --read-data", r.check(args!["--read-data"])),
                ("snapshots", r.run("snapshots", args![])),
                ("restore", r.restore("latest", &target, args![])),
                ("backup", r.run("backup", args![&src])),
            ];
            for (cmd, out) in &runs {
                let what = format!("{cmd} with {how} {name}");
                assert!(
                    !out.stderr().contains("panicked") && out.code != Some(101),
                    "{what}: a panic\n{out}"
                );
                match out.code {
                    Some(0) => assert_ne!(*cmd, "check --read-data", "{what} passed\n{out}"),
                    // 3: `snapshots` lists the intact snapshots and names the damaged one.
                    Some(1) | Some(12) | Some(3) => {
                        assert!(
                            out.code != Some(3) || *cmd == "snapshots",
                            "{what}: exit code 3\n{out}"
                        );
                        // The key's name is its hash; a damaged key object is named by it.
                        let named = out.all_output().contains(name.as_str())
                            || (name == "config" && out.stderr().contains("config"));
                        assert!(named, "{what}: the error does not name {name}\n{out}");
                    }
                    other => panic!("{what}: exit code {other:?}\n{out}"),
                }
            }
        }
    }
}

/// Every mode bit a group or other users could use, of every file and directory below `root`.
fn exposed_paths(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = fs::symlink_metadata(&p).expect("stat");
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            out.push(format!("{} {mode:o}", p.display()));
        }
        if meta.is_dir() {
            for e in fs::read_dir(&p).expect("read_dir") {
                todo.push(e.expect("entry").path());
            }
        }
    }
    out
}

/// A local repository's files and directories are private to their owner (0600 and 0700,
/// though the umask would allow 0644 and 0755): a key object other users can read lets them
/// guess passwords offline. A repository shared with its group (`chmod 640 config`) gets new
/// files readable by the group. `check` warns about key objects that other users can read
/// (as older versions wrote them), naming each and the chmod that fixes it.
#[test]
fn repository_files_are_private_and_check_warns_about_readable_keys() {
    use std::os::unix::fs::PermissionsExt;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let (repo, _scratch, src, _) = repo_with_big_file();
    let exposed = exposed_paths(&repo.path);
    assert!(exposed.is_empty(), "readable by others: {exposed:#?}");
    let out = repo.check(args![]).success();
    assert!(!out.stdout().contains("other users"), "{out}");

    // Shared with the group: new objects are readable by it, not by others.
    set_mode(&repo.path.join("config"), 0o640);
    write_file(&src.join("new.txt"), b"a new file\n");
    let summary = repo.backup(args![&src]);
    let snapshot = repo
        .path
        .join("snapshots")
        .join(string(&summary, "snapshot_id"));
    let mode = fs::metadata(&snapshot).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "{}", snapshot.display());

    // A key object others can read (as older versions wrote them) is warned about.
    let key = fs::read_dir(repo.path.join("keys"))
        .expect("keys")
        .next()
        .expect("a key")
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .into_owned();
    set_mode(&repo.path.join("keys").join(&key), 0o644);
    let out = repo.check(args![]).success();
    assert!(
        out.stdout().contains(&format!(
            "warning: keys/{key} can be read by other users (mode 0644)"
        )),
        "{out}"
    );
    assert!(out.stdout().contains("chmod 600"), "{out}");
    // Readable by the group only: fine while the repository is shared with it, not after.
    set_mode(&repo.path.join("keys").join(&key), 0o640);
    let out = repo.check(args![]).success();
    assert!(!out.stdout().contains("other users"), "{out}");
    set_mode(&repo.path.join("config"), 0o600);
    let out = repo.check(args![]).success();
    assert!(
        out.stdout().contains(&format!("keys/{key} can be read")),
        "{out}"
    );
}

/// RELIABILITY case 28: a pack `check` may not read (its file's permissions: a fault of the
/// storage, not damage) stops `check --read-data` with an error naming it; it is never
/// reported as a damaged pack, which `repair` would act on. Before the fix every read error
/// but an unreachable storage was reported as "cannot be read" damage (exit 3).
#[test]
fn a_pack_check_may_not_read_is_an_error_not_damage() {
    let scratch = Scratch::new();
    // The unprivileged user makes the repository here.
    set_mode(scratch.path(), 0o777);
    let repo_path = scratch.join("repo");
    let src = scratch.join("src");
    build_plain_tree(&src, 4, 1 << 20, 28);
    for (rel, entry) in scan_tree(&src) {
        let dir = entry.kind == Kind::Dir;
        set_mode(&src.join(rel), if dir { 0o755 } else { 0o644 });
    }
    set_mode(&src, 0o755);
    let home = scratch.path();
    lifeboat_unprivileged(args!["init", "--repo", &repo_path], home).success();
    lifeboat_unprivileged(args!["backup", "--repo", &repo_path, &src], home).success();
    let repo = Repo::at(&repo_path);
    let (pack_path, pack) = repo.largest_pack();
    set_mode(&pack_path, 0o000);
    let out = lifeboat_unprivileged(args!["check", "--repo", &repo_path, "--read-data"], home);
    set_mode(&pack_path, 0o600);
    let out = out.expect_code(1);
    assert!(
        out.stderr().contains(&pack),
        "the error names the pack\n{out}"
    );
    assert!(out.stderr().contains("ermission denied"), "{out}");
    assert!(
        !out.all_output().contains("damaged"),
        "called damage\n{out}"
    );
}

//! `lifeboat restore`: selection, existing targets, conflicts, damaged
//! repositories, and symlinks planted in the target.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::common::*;

/// A small tree: two top-level files, a nested subtree, an empty dir.
fn small_source(root: &Path) {
    write_file(&root.join("a.txt"), b"alpha\n");
    write_file(&root.join("b.txt"), b"bravo\n");
    write_file(&root.join("sub/c.txt"), b"charlie\n");
    write_file(&root.join("sub/deeper/d.txt"), b"delta\n");
    fs::create_dir(root.join("sub/empty")).expect("mkdir");
    write_file(&root.join("other/e.txt"), b"echo\n");
    stamp_mtimes(root, 1_650_000_000);
}

fn backed_up_small_source() -> (Repo, Scratch, PathBuf) {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    small_source(&src);
    repo.backup(args![&src]);
    (repo, scratch, src)
}

/// A target directory with unrelated content, hidden entries included.
fn populated_target() -> Scratch {
    let target = Scratch::new();
    write_file(&target.join("existing.txt"), b"already here\n");
    write_file(&target.join(".hidden"), b"hidden\n");
    write_file(&target.join("dir/nested.txt"), b"nested\n");
    target
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

#[test]
fn restore_creates_a_missing_target_directory() {
    let (repo, _scratch, src) = backed_up_small_source();
    let parent = Scratch::new();
    let target = parent.join("not/yet/there");
    repo.restore("latest", &target, args![]).success();
    assert_trees_equal(&src, &restored(&target, &src));
}

/// `--include` restores only the named subtree.
#[test]
fn include_restores_only_the_named_subtree() {
    let (repo, _scratch, src) = backed_up_small_source();
    let target = Scratch::new();
    repo.restore("latest", target.path(), args!["--include", src.join("sub")])
        .success();
    let root = restored(target.path(), &src);
    assert_trees_equal(&src.join("sub"), &root.join("sub"));
    for absent in ["a.txt", "b.txt", "other"] {
        assert!(!exists(&root.join(absent)), "{absent} was restored too");
    }
}

/// Several `--include`s, one of them a single file.
#[test]
fn include_accepts_several_paths_and_single_files() {
    let (repo, _scratch, src) = backed_up_small_source();
    let target = Scratch::new();
    repo.restore(
        "latest",
        target.path(),
        args![
            "--include",
            src.join("a.txt"),
            "--include",
            src.join("other")
        ],
    )
    .success();
    let root = restored(target.path(), &src);
    assert_eq!(fs::read(root.join("a.txt")).expect("a.txt"), b"alpha\n");
    assert_trees_equal(&src.join("other"), &root.join("other"));
    assert!(!exists(&root.join("b.txt")), "b.txt was restored too");
    assert!(!exists(&root.join("sub")), "sub was restored too");
}

/// Restoring into a non-empty target that has nothing in the way works and
/// leaves the unrelated content alone.
#[test]
fn restore_into_non_empty_target_keeps_unrelated_content() {
    let (repo, _scratch, src) = backed_up_small_source();
    let target = populated_target();
    // An existing directory on the restore path is not a conflict.
    write_file(
        &target.join(first_component(&src)).join("unrelated.txt"),
        b"unrelated\n",
    );
    let before = fingerprint(target.path());

    repo.restore("latest", target.path(), args![]).success();
    assert_trees_equal(&src, &restored(target.path(), &src));
    let after = fingerprint(target.path());
    for (path, print) in &before {
        if path.as_os_str().is_empty() || print.starts_with("dir") {
            continue;
        }
        assert_eq!(after.get(path), Some(print), "{path:?} was touched");
    }
}

/// An existing file at a path the snapshot restores is a conflict: refused,
/// named, and nothing is written.
#[test]
fn conflicting_file_is_refused_without_overwrite() {
    let (repo, _scratch, src) = backed_up_small_source();
    let target = populated_target();
    let conflict = restored(target.path(), &src).join("sub/c.txt");
    write_file(&conflict, b"local edit\n");
    let before = fingerprint(target.path());

    let out = repo
        .restore("latest", target.path(), args![])
        .expect_code(1);
    out.stderr_contains(src.join("sub/c.txt").to_str().expect("utf-8"));
    assert_fingerprint_unchanged(&before, &fingerprint(target.path()), "the target");
}

/// `--overwrite` replaces conflicting files.
#[test]
fn overwrite_replaces_conflicting_files() {
    let (repo, _scratch, src) = backed_up_small_source();
    let target = populated_target();
    let root = restored(target.path(), &src);
    write_file(
        &root.join("sub/c.txt"),
        b"local edit, longer than the original\n",
    );
    write_file(&root.join("a.txt"), b"");

    repo.restore("latest", target.path(), args!["--overwrite"])
        .success();
    assert_trees_equal(&src, &root);
    assert_eq!(
        fs::read(target.join("existing.txt")).expect("read"),
        b"already here\n"
    );
}

/// Restoring the same snapshot twice with `--overwrite` is harmless.
#[test]
fn overwrite_over_an_identical_restore_succeeds() {
    let (repo, _scratch, src) = backed_up_small_source();
    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    repo.restore("latest", target.path(), args!["--overwrite"])
        .success();
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// RELIABILITY case 4: One flipped byte in a pack: restore fails before writing anything, names
/// the damaged file and the pack, and leaves the target exactly as it was.
#[test]
fn damaged_pack_fails_restore_and_leaves_target_untouched() {
    let (repo, _scratch, src, _) = repo_with_big_file();
    let pack = corrupt_largest_pack(&repo);
    let target = populated_target();
    let before = fingerprint(target.path());

    let out = repo
        .restore("latest", target.path(), args![])
        .expect_code(1);
    out.stderr_contains(src.join("big.bin").to_str().expect("utf-8"));
    out.stderr_contains(&pack);
    assert_fingerprint_unchanged(&before, &fingerprint(target.path()), "the target");
}

/// RELIABILITY case 4: A failed restore into a target that did not exist leaves it nonexistent.
#[test]
fn damaged_pack_restore_into_missing_target_creates_nothing() {
    let (repo, _scratch, _src, _) = repo_with_big_file();
    corrupt_largest_pack(&repo);
    let parent = Scratch::new();
    let target = parent.join("target");

    repo.restore("latest", &target, args![]).expect_code(1);
    assert_eq!(
        relative_paths(parent.path()),
        Default::default(),
        "the failed restore left something behind"
    );
}

/// RELIABILITY case 6: A missing pack file is found before anything is written.
#[test]
fn missing_pack_fails_restore_naming_it() {
    let (repo, _scratch, src, _) = repo_with_big_file();
    let (pack_path, pack) = repo.largest_pack();
    fs::remove_file(&pack_path).expect("delete pack");
    let target = populated_target();
    let before = fingerprint(target.path());

    let out = repo
        .restore("latest", target.path(), args![])
        .expect_code(1);
    out.stderr_contains(src.join("big.bin").to_str().expect("utf-8"));
    out.stderr_contains(&pack);
    assert_fingerprint_unchanged(&before, &fingerprint(target.path()), "the target");
}

/// `--verify-only` on a healthy repository: exit 0, nothing written.
#[test]
fn verify_only_on_healthy_repository_succeeds_and_writes_nothing() {
    let (repo, _scratch, _src, _) = repo_with_big_file();
    let target = populated_target();
    let before = fingerprint(target.path());
    repo.restore("latest", target.path(), args!["--verify-only"])
        .success();
    assert_fingerprint_unchanged(&before, &fingerprint(target.path()), "the target");
}

/// RELIABILITY case 4: `--verify-only` finds the damage too, and writes nothing.
#[test]
fn verify_only_detects_a_damaged_pack() {
    let (repo, _scratch, src, _) = repo_with_big_file();
    let pack = corrupt_largest_pack(&repo);
    let target = populated_target();
    let before = fingerprint(target.path());

    let out = repo
        .restore("latest", target.path(), args!["--verify-only"])
        .expect_code(1);
    out.stderr_contains(src.join("big.bin").to_str().expect("utf-8"));
    out.stderr_contains(&pack);
    assert_fingerprint_unchanged(&before, &fingerprint(target.path()), "the target");
}

/// RELIABILITY case 4: `--allow-partial` restores every intact file, lists the damaged one and
/// exits with 3.
#[test]
fn allow_partial_restores_intact_files_and_exits_3() {
    let (repo, _scratch, src, _) = repo_with_big_file();
    corrupt_largest_pack(&repo);
    let target = Scratch::new();

    let out = repo
        .restore("latest", target.path(), args!["--allow-partial"])
        .expect_code(3);
    let big = src.join("big.bin");
    out.stderr_contains(big.to_str().expect("utf-8"));
    let root = restored(target.path(), &src);
    assert!(
        !exists(&restored(target.path(), &big)),
        "damaged big.bin was restored"
    );
    assert_trees_equal_except(&src, &root, &[PathBuf::from("big.bin")]);
}

/// Backs up a small source, plants `target/<plant_at(src)>` as a symlink to
/// a directory outside the target, restores, and asserts that nothing was
/// written through the link: the restore either refuses (1, link untouched)
/// or succeeds (0) with a correct tree of real directories.
fn planted_directory_symlink_is_not_followed(plant_at: fn(&Path) -> PathBuf, extra: &[&str]) {
    let (repo, _scratch, src) = backed_up_small_source();
    let target = Scratch::new();
    let outside = Scratch::new();
    let link = target.join(plant_at(&src));
    fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
    symlink(outside.path(), &link);

    let rest: Vec<std::ffi::OsString> = extra.iter().map(std::ffi::OsString::from).collect();
    let out = repo.restore("latest", target.path(), rest);
    assert_eq!(
        relative_paths(outside.path()),
        Default::default(),
        "restore wrote through the symlink {link:?}\n{out}"
    );
    match out.code {
        Some(1) => {
            assert!(
                fs::symlink_metadata(&link)
                    .expect("lstat link")
                    .file_type()
                    .is_symlink(),
                "a refused restore changed {link:?}\n{out}"
            );
        }
        Some(0) => assert_trees_equal(&src, &restored(target.path(), &src)),
        _ => panic!("restore neither refused (1) nor succeeded (0)\n{out}"),
    }
}

fn first_component(p: &Path) -> PathBuf {
    p.components()
        .find_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            _ => None,
        })
        .expect("a normal component")
}

fn source_root(src: &Path) -> PathBuf {
    src.strip_prefix("/").expect("absolute").to_path_buf()
}

/// RELIABILITY case 9: a symlink to outside the target where the snapshot has a top-level directory is not followed.
#[test]
fn symlink_planted_at_a_top_level_directory_is_not_followed() {
    planted_directory_symlink_is_not_followed(first_component, &[]);
}

/// RELIABILITY case 9: the same with --overwrite.
#[test]
fn symlink_planted_at_a_top_level_directory_is_not_followed_with_overwrite() {
    planted_directory_symlink_is_not_followed(first_component, &["--overwrite"]);
}

/// RELIABILITY case 9: a symlink planted where the source directory is restored is not followed.
#[test]
fn symlink_planted_at_the_source_directory_is_not_followed() {
    planted_directory_symlink_is_not_followed(source_root, &[]);
    planted_directory_symlink_is_not_followed(source_root, &["--overwrite"]);
}

/// RELIABILITY case 9: a symlink planted at a nested directory (a parent of restored files) is not followed.
#[test]
fn symlink_planted_at_a_nested_directory_is_not_followed() {
    planted_directory_symlink_is_not_followed(|src| source_root(src).join("sub"), &[]);
    planted_directory_symlink_is_not_followed(
        |src| source_root(src).join("sub/deeper"),
        &["--overwrite"],
    );
}

/// RELIABILITY case 9: A symlink where a restored file goes is not written through, with or
/// without `--overwrite`.
#[test]
fn symlink_planted_at_a_file_is_not_written_through() {
    let (repo, _scratch, src) = backed_up_small_source();
    for overwrite in [false, true] {
        let target = Scratch::new();
        let outside = Scratch::new();
        let victim = outside.join("victim.txt");
        write_file(&victim, b"must stay\n");
        let link = restored(target.path(), &src).join("a.txt");
        fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
        symlink(&victim, &link);

        let rest = if overwrite {
            args!["--overwrite"]
        } else {
            args![]
        };
        let out = repo.restore("latest", target.path(), rest);
        assert_eq!(
            fs::read(&victim).expect("read victim"),
            b"must stay\n",
            "restore (overwrite={overwrite}) wrote through the symlink\n{out}"
        );
        assert_eq!(
            relative_paths(outside.path()),
            [PathBuf::from("victim.txt")].into_iter().collect(),
            "{out}"
        );
        if overwrite {
            let out = out.success();
            let meta = fs::symlink_metadata(&link).expect("lstat");
            assert!(
                meta.file_type().is_file(),
                "a.txt is not a regular file\n{out}"
            );
            assert_trees_equal(&src, &restored(target.path(), &src));
        } else {
            out.expect_code(1);
        }
    }
}

/// A file where the snapshot has a directory is a conflict; `--overwrite`
/// replaces it with the directory.
#[test]
fn file_where_the_snapshot_has_a_directory_is_a_conflict() {
    let (repo, _scratch, src) = backed_up_small_source();
    let target = Scratch::new();
    let in_the_way = restored(target.path(), &src).join("sub");
    write_file(&in_the_way, b"a file, not a directory\n");
    let before = fingerprint(target.path());

    let out = repo
        .restore("latest", target.path(), args![])
        .expect_code(1);
    out.stderr_contains(src.join("sub").to_str().expect("utf-8"));
    assert_fingerprint_unchanged(&before, &fingerprint(target.path()), "the target");

    repo.restore("latest", target.path(), args!["--overwrite"])
        .success();
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// A directory where the snapshot has a file is a conflict.
#[test]
fn directory_where_the_snapshot_has_a_file_is_a_conflict() {
    let (repo, _scratch, src) = backed_up_small_source();
    let target = Scratch::new();
    let in_the_way = restored(target.path(), &src).join("a.txt");
    write_file(&in_the_way.join("keep.txt"), b"keep me\n");
    let before = fingerprint(target.path());

    let out = repo
        .restore("latest", target.path(), args![])
        .expect_code(1);
    out.stderr_contains(src.join("a.txt").to_str().expect("utf-8"));
    assert_fingerprint_unchanged(&before, &fingerprint(target.path()), "the target");
}

/// Restoring an older snapshot with `--overwrite` brings back the old
/// content and metadata.
#[test]
fn overwrite_restores_an_older_version_over_a_newer_one() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    small_source(&src);
    let old = string(&repo.backup(args![&src]), "snapshot_id");
    let old_copy = scratch.join("old-copy");
    let status = std::process::Command::new("cp")
        .args(["-a".as_ref(), src.as_os_str(), old_copy.as_os_str()])
        .status()
        .expect("cp");
    assert!(status.success());

    write_file(&src.join("a.txt"), b"alpha, version two, longer\n");
    set_mode(&src.join("b.txt"), 0o600);
    set_mtime(&src.join("sub/c.txt"), 1_700_000_000, 1);
    repo.backup(args![&src]);

    let target = Scratch::new();
    repo.restore("latest", target.path(), args![]).success();
    repo.restore(&old, target.path(), args!["--overwrite"])
        .success();
    // Compare with the copy taken at the time of the old snapshot; the
    // restored root directory is compared against the copy's root.
    assert_trees_equal(&old_copy, &restored(target.path(), &src));
}

/// `--include` of a directory holding only the second name of a hardlinked
/// file still restores that file with its content.
#[test]
fn include_restores_a_hardlink_whose_other_name_is_excluded() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("a/first"), b"shared content\n");
    fs::create_dir(src.join("b")).expect("mkdir");
    fs::hard_link(src.join("a/first"), src.join("b/second")).expect("hard link");
    stamp_mtimes(&src, 1_620_000_000);
    repo.backup(args![&src]);

    let target = Scratch::new();
    repo.restore("latest", target.path(), args!["--include", src.join("b")])
        .success();
    let root = restored(target.path(), &src);
    assert!(!exists(&root.join("a")), "a/ was restored too");
    assert_trees_equal(&src.join("b"), &root.join("b"));
}

/// Where the target has some of the snapshot's directories already, at several depths,
/// restore moves the missing parts into them (whole subtrees where it can) and leaves what
/// was there alone; no staging directory is left behind.
#[test]
fn restore_merges_into_directories_the_target_has_at_every_depth() {
    let (repo, _scratch, src) = backed_up_small_source();
    let target = Scratch::new();
    let root = restored(target.path(), &src);
    write_file(&root.join("sub/deeper/local.txt"), b"local\n");
    write_file(&root.join("other/local.txt"), b"local too\n");

    repo.restore("latest", target.path(), args![]).success();
    // Existing directories keep their own metadata (without --overwrite): compare the rest.
    for rel in [
        "a.txt",
        "b.txt",
        "sub/c.txt",
        "sub/deeper/d.txt",
        "other/e.txt",
    ] {
        assert_eq!(
            fs::read(root.join(rel)).expect("restored"),
            fs::read(src.join(rel)).expect("source"),
            "{rel}"
        );
    }
    assert_trees_equal(&src.join("sub/empty"), &root.join("sub/empty"));
    assert_eq!(
        fs::read(root.join("sub/deeper/local.txt")).expect("read"),
        b"local\n"
    );
    assert_eq!(
        fs::read(root.join("other/local.txt")).expect("read"),
        b"local too\n"
    );
    let leftovers: Vec<_> = fs::read_dir(target.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".lifeboat-restore")
        })
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

/// RELIABILITY case 4: `--allow-partial` leaves out every name of a damaged hard-linked file, also where its
/// directory is moved into place whole.
#[test]
fn allow_partial_leaves_out_every_name_of_a_damaged_hardlinked_file() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(
        &src.join("data/big.bin"),
        &random_bytes(8 * MIB as usize, 7),
    );
    write_file(&src.join("data/small.txt"), b"small\n");
    fs::create_dir(src.join("links")).expect("mkdir");
    fs::hard_link(src.join("data/big.bin"), src.join("links/big.bin")).expect("hard link");
    write_file(&src.join("links/other.txt"), b"other\n");
    stamp_mtimes(&src, 1_640_000_000);
    repo.backup(args![&src]);
    corrupt_largest_pack(&repo);

    let target = Scratch::new();
    let out = repo
        .restore("latest", target.path(), args!["--allow-partial"])
        .expect_code(3);
    out.stderr_contains(src.join("data/big.bin").to_str().expect("utf-8"));
    let root = restored(target.path(), &src);
    assert!(!exists(&root.join("data/big.bin")), "damaged file restored");
    assert!(
        !exists(&root.join("links/big.bin")),
        "its hard link restored"
    );
    assert_trees_equal_except(
        &src,
        &root,
        &[
            PathBuf::from("data/big.bin"),
            PathBuf::from("links/big.bin"),
        ],
    );
}

/// Sets or clears the immutable flag (`chattr +i`), which even root cannot write through.
fn set_immutable(path: &Path, on: bool) {
    let flag = if on { "+i" } else { "-i" };
    let out = std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run chattr(1) (e2fsprogs): {e}"));
    assert!(
        out.status.success(),
        "chattr {flag} {}: {}\nThis test needs root and a file system with the immutable flag \
         (ext4, tmpfs); run the suite as root, as CI does",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `chattr ARGS PATH`; panics with what to do when it fails.
fn chattr(args: &[&str], path: &Path) {
    let out = std::process::Command::new("chattr")
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run chattr(1) (e2fsprogs): {e}"));
    assert!(
        out.status.success(),
        "chattr {args:?} {}: {}\nThis test needs root and a file system with inode flags \
         (ext4); run the suite as root, as CI does",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The inode flags of `path` (a file or directory) that `chattr` sets and a snapshot keeps:
/// without those the file system manages itself (extents and the like).
fn inode_flags(path: &Path) -> u32 {
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let flags = rustix::fs::ioctl_getflags(&f)
        .unwrap_or_else(|e| panic!("FS_IOC_GETFLAGS {}: {e}", path.display()));
    flags.bits() & lifeboat::repo::tree::INODE_FLAGS_KEPT
}

/// Clears the immutable and append-only flags beneath a directory when dropped, so that a
/// failing test's scratch directories can still be removed.
struct ClearsFlags(Vec<PathBuf>);

impl Drop for ClearsFlags {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::process::Command::new("chattr")
                .args(["-R", "-ia"])
                .arg(dir)
                .output();
        }
    }
}

/// Issue 19, item 20: inode flags (`chattr`: immutable, append-only, no-dump, no-atime, on
/// files and directories) are backed up, and a restore as root sets them again once
/// everything is in place (an immutable file or append-only directory takes no rename and
/// no new times after that); a flag added to an otherwise unchanged file reaches the next
/// incremental snapshot; a restore by an unprivileged user restores the content and warns,
/// per entry, about the flags it may not set. Before, they were dropped without a word.
#[test]
fn inode_flags_are_backed_up_and_restored_as_root() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let target = Scratch::new();
    let src = scratch.join("src");
    let _clear = ClearsFlags(vec![src.clone(), target.path().to_path_buf()]);
    write_file(&src.join("etc/resolv.conf"), b"nameserver 192.0.2.1\n");
    write_file(&src.join("var/log/app.log"), b"started\n");
    write_file(&src.join("var/cache/big.bin"), &random_bytes(300_000, 24));
    write_file(&src.join("var/cache/quiet"), b"no atime\n");
    write_file(&src.join("plain"), b"no flags\n");
    stamp_mtimes(&src, 1_600_000_000);
    chattr(&["+i"], &src.join("etc/resolv.conf"));
    chattr(&["+a"], &src.join("var/log/app.log"));
    chattr(&["+a"], &src.join("var/log"));
    chattr(&["+d"], &src.join("var/cache/big.bin"));
    chattr(&["+A"], &src.join("var/cache/quiet"));
    chattr(&["+d"], &src.join("var/cache"));
    let flagged = [
        ("etc/resolv.conf", 0x10),
        ("var/log/app.log", 0x20),
        ("var/log", 0x20),
        ("var/cache/big.bin", 0x40),
        ("var/cache/quiet", 0x80),
        ("var/cache", 0x40),
        ("plain", 0),
        ("etc", 0),
    ];
    for (rel, want) in flagged {
        assert_eq!(inode_flags(&src.join(rel)), want, "source {rel}");
    }
    repo.backup(args![&src]);

    let out = repo.restore("latest", target.path(), args![]).success();
    let root = restored(target.path(), &src);
    for (rel, want) in flagged {
        assert_eq!(inode_flags(&root.join(rel)), want, "restored {rel}\n{out}");
    }
    // Content, modes and times (of the append-only directory too) as in the source.
    assert_trees_equal(&src, &root);
    assert!(!out.stderr().contains("warning"), "{out}");

    // A flag added to a file whose content did not change reaches the next snapshot.
    chattr(&["-i"], &src.join("etc/resolv.conf"));
    chattr(&["+S"], &src.join("etc/resolv.conf"));
    chattr(&["+i"], &src.join("plain"));
    let summary = repo.backup(args![&src]);
    assert_eq!(num(&summary, "files_new"), 0, "{summary}");
    let again = Scratch::new();
    let _clear_again = ClearsFlags(vec![again.path().to_path_buf()]);
    let out = repo.restore("latest", again.path(), args![]).success();
    let root = restored(again.path(), &src);
    assert_eq!(inode_flags(&root.join("etc/resolv.conf")), 0x08, "{out}");
    assert_eq!(inode_flags(&root.join("plain")), 0x10, "{out}");
    assert_eq!(fs::read(root.join("plain")).expect("read"), b"no flags\n");

    // Without the privilege to set them: the content, and a warning naming each entry.
    let copy = Scratch::new();
    let repo_copy = copy.join("repo");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&repo.path)
        .arg(&repo_copy)
        .status()
        .expect("cp");
    assert!(status.success());
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(copy.path())
        .status()
        .expect("chown");
    assert!(status.success());
    let unpriv_target = copy.join("target");
    let out = lifeboat_unprivileged(
        args![
            "restore",
            "--repo",
            &repo_copy,
            "latest",
            "--target",
            &unpriv_target
        ],
        copy.path(),
    )
    .success();
    let root = restored(&unpriv_target, &src);
    assert_eq!(fs::read(root.join("plain")).expect("read"), b"no flags\n");
    assert_eq!(inode_flags(&root.join("plain")), 0, "{out}");
    for (rel, letters) in [
        ("plain", "(i)"),
        ("var/log", "(a)"),
        ("var/log/app.log", "(a)"),
    ] {
        let line = out
            .stderr()
            .lines()
            .find(|l| l.contains(&format!("{rel}: cannot set inode flags {letters}")))
            .map(str::to_owned);
        assert!(line.is_some(), "no warning for {rel}\n{out}");
    }
}

/// Names of the server-like files of the in-place tests, in the order restore places them.
const ETC_FILES: [&str; 5] = ["group", "hosts", "passwd", "resolv.conf", "shadow"];

/// Entries named `.lifeboat-*` anywhere beneath `dir` (staging areas, set-aside originals).
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".lifeboat-"))
        .map(|e| e.into_path())
        .collect()
}

/// RELIABILITY case 22: an in-place `restore --overwrite` that fails part-way — one file of
/// the target is immutable — puts back every file it had already replaced. Before the fix the
/// roll-back deleted them: `group` and `hosts` had neither their old content nor the
/// snapshot's.
#[test]
fn overwrite_that_fails_part_way_puts_every_replaced_file_back() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    for name in ETC_FILES {
        write_file(
            &src.join("etc").join(name),
            format!("snapshot {name}\n").as_bytes(),
        );
    }
    repo.backup(args![&src]);

    let target = Scratch::new();
    let etc = restored(target.path(), &src).join("etc");
    for name in ETC_FILES {
        write_file(&etc.join(name), format!("old {name}\n").as_bytes());
    }
    set_immutable(&etc.join("passwd"), true);
    let out = repo.restore("latest", target.path(), args!["--overwrite"]);
    set_immutable(&etc.join("passwd"), false);
    for name in ETC_FILES {
        assert_eq!(
            fs::read_to_string(etc.join(name)).unwrap_or_else(|e| panic!("{name}: {e}\n{out}")),
            format!("old {name}\n"),
            "{name} lost its old content\n{out}"
        );
    }
    let out = out.failure();
    let err = out.stderr();
    assert!(err.contains("passwd"), "the error names the file\n{out}");
    assert!(
        err.contains("put back") && err.contains("holds what it held before"),
        "the error says the target is as it was\n{out}"
    );
    assert_eq!(leftovers(target.path()), Vec::<PathBuf>::new(), "{out}");

    // With the flag gone the same restore replaces every file.
    let out = repo
        .restore("latest", target.path(), args!["--overwrite"])
        .success();
    assert!(
        out.stdout().contains("5 existing entries replaced"),
        "{out}"
    );
    for name in ETC_FILES {
        assert_eq!(
            fs::read_to_string(etc.join(name)).expect("read"),
            format!("snapshot {name}\n")
        );
    }
    assert_eq!(leftovers(target.path()), Vec::<PathBuf>::new());
}

/// RELIABILITY case 22: `--json` says what the target holds after a failed placement.
#[test]
fn overwrite_failure_is_reported_in_json() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    for name in ETC_FILES {
        write_file(&src.join("etc").join(name), b"new\n");
    }
    repo.backup(args![&src]);
    let target = Scratch::new();
    let etc = restored(target.path(), &src).join("etc");
    write_file(&etc.join("hosts"), b"old\n");
    write_file(&etc.join("shadow"), b"old\n");
    set_immutable(&etc.join("shadow"), true);
    let out = repo.restore("latest", target.path(), args!["--overwrite", "--json"]);
    set_immutable(&etc.join("shadow"), false);
    let out = out.failure();
    let v = out.json_lines().pop().expect("a JSON report");
    assert_eq!(v["written"], false, "{out}");
    assert_eq!(v["not_put_back"], serde_json::json!([]), "{out}");
    assert!(string(&v, "error").contains("shadow"), "{out}");
    assert_eq!(fs::read(etc.join("hosts")).expect("read"), b"old\n");
    // New files were removed again: the target has only what it had.
    assert!(!etc.join("group").exists() && !etc.join("passwd").exists());
}

/// RELIABILITY case 22: SIGTERM while an in-place `restore --overwrite` moves entries into
/// place: the restore puts back what it placed and exits 130; every file of the target has
/// its old content (or, when the restore finished first, the snapshot's), never neither.
/// Before the fix the files already replaced were deleted, and the exit said "stopped
/// cleanly".
#[test]
fn sigterm_while_an_overwrite_places_entries_leaves_every_file_old_or_new() {
    const FILES: usize = 20_000;
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let name = |i: usize| format!("f{i:05}");
    for i in 0..FILES {
        write_file(
            &src.join("etc").join(name(i)),
            format!("new {i}\n").as_bytes(),
        );
    }
    repo.backup(args![&src]);

    let mut stopped_while_placing = 0;
    for round in 0..6 {
        let target = Scratch::new();
        let etc = restored(target.path(), &src).join("etc");
        for i in 0..FILES {
            write_file(&etc.join(name(i)), format!("old {i}\n").as_bytes());
        }
        let mut cmd = lifeboat_cmd();
        cmd.args(["restore", "--repo"])
            .arg(&repo.path)
            .arg("latest")
            .arg("--target")
            .arg(target.path())
            .arg("--overwrite")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().expect("spawn restore");
        // The first file placed has the snapshot's content: placing has begun.
        let first = etc.join(name(0));
        let started = std::time::Instant::now();
        let mut placing = false;
        while started.elapsed() < std::time::Duration::from_secs(120) {
            if fs::read(&first).is_ok_and(|c| c.starts_with(b"new")) {
                placing = true;
                break;
            }
            std::thread::yield_now();
        }
        assert!(placing, "round {round}: the restore never began placing");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let out = child.wait_with_output().expect("wait");
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut old = 0;
        let mut new = 0;
        for i in 0..FILES {
            let p = etc.join(name(i));
            let content = fs::read_to_string(&p).unwrap_or_else(|e| {
                panic!(
                    "round {round}: {} is gone ({e}); exit {code:?}\n{stderr}",
                    p.display()
                )
            });
            if content == format!("old {i}\n") {
                old += 1;
            } else if content == format!("new {i}\n") {
                new += 1;
            } else {
                panic!("round {round}: {} holds {content:?}", p.display());
            }
        }
        match code {
            Some(130) => {
                assert_eq!(
                    new, 0,
                    "round {round}: exit 130 but {new} files are new\n{stderr}"
                );
                assert!(stderr.contains("put back"), "{stderr}");
                stopped_while_placing += 1;
            }
            Some(0) => assert_eq!(old, 0, "round {round}: exit 0 but {old} files are old"),
            other => panic!("round {round}: exit {other:?}\n{stderr}"),
        }
        assert_eq!(
            leftovers(target.path()),
            Vec::<PathBuf>::new(),
            "round {round}"
        );
        if stopped_while_placing >= 2 {
            break;
        }
    }
    assert!(
        stopped_while_placing > 0,
        "no SIGTERM landed while the restore placed entries in 6 rounds"
    );
}

/// RELIABILITY case 23: a target with a mount point inside it (a separate file system where
/// the snapshot has `home`), as when restoring `/` of a server in place: the restore stages
/// what goes beneath the mount point on that file system and succeeds, with and without
/// `--include` and `--overwrite`; a hard link whose names the target puts on two file systems
/// becomes a copy, with a warning. Before the fix every case failed with "Invalid cross-device
/// link".
#[test]
fn restore_into_a_target_with_a_mount_point_inside_it() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("etc/hosts"), b"127.0.0.1 localhost\n");
    write_file(&src.join("home/alice/notes"), b"alice's notes\n");
    write_file(
        &src.join("home/alice/deep/er/file"),
        &random_bytes(300_000, 1),
    );
    write_file(&src.join("home/bob/.profile"), b"export A=1\n");
    fs::hard_link(
        src.join("home/bob/.profile"),
        src.join("etc/profile-of-bob"),
    )
    .expect("link");
    stamp_mtimes(&src, 1_700_000_000);
    repo.backup(args![&src]);

    for (rest, overwrite) in [
        (args![], false),
        (args!["--overwrite"], true),
        (args!["--include", src.join("home/alice")], false),
    ] {
        let target = Scratch::new();
        let root = restored(target.path(), &src);
        let home = root.join("home");
        let _fs = Tmpfs::mount(&home, 16);
        if overwrite {
            write_file(&home.join("bob/.profile"), b"old profile\n");
            write_file(&root.join("etc/hosts"), b"old hosts\n");
        }
        let out = repo
            .restore("latest", target.path(), rest.clone())
            .success();
        if rest.is_empty() || overwrite {
            // (The mount point keeps its own metadata without --overwrite; what is beneath it
            // is compared.)
            assert_trees_equal(&src.join("home/alice"), &home.join("alice"));
            assert_trees_equal(&src.join("home/bob"), &home.join("bob"));
            assert_eq!(
                fs::read(root.join("etc/hosts")).expect("read"),
                b"127.0.0.1 localhost\n"
            );
            assert_eq!(
                fs::read(root.join("etc/profile-of-bob")).expect("read"),
                b"export A=1\n"
            );
            assert!(
                out.stderr().contains("restored as a copy"),
                "the hard link across file systems is reported\n{out}"
            );
        } else {
            assert_trees_equal(&src.join("home/alice"), &home.join("alice"));
            assert!(!home.join("bob").exists() && !root.join("etc").exists());
        }
        // What is beneath the mount point is on its file system.
        let dev = |p: &Path| std::os::unix::fs::MetadataExt::dev(&fs::metadata(p).expect("stat"));
        assert_eq!(dev(&home.join("alice/notes")), dev(&home));
        assert_ne!(dev(&home), dev(target.path()));
        assert_eq!(leftovers(target.path()), Vec::<PathBuf>::new(), "{out}");
    }
}

/// Staging directories at the top of `dir`.
fn staging_dirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".lifeboat-restore-")
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// A restore killed with SIGKILL leaves its staging directory; the next restore into the same
/// target removes it, says so, and succeeds. Before the fix it stayed forever.
#[test]
fn the_staging_area_of_a_killed_restore_is_removed_by_the_next_one() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    for i in 0..8 {
        write_file(
            &src.join(format!("big{i}")),
            &random_bytes(8 * MIB as usize, i),
        );
    }
    repo.backup(args![&src]);
    let target = Scratch::new();
    let mut killed = false;
    for _round in 0..5 {
        let mut cmd = lifeboat_cmd();
        cmd.args(["restore", "--repo"])
            .arg(&repo.path)
            .args(["latest", "--target"])
            .arg(target.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn restore");
        while staging_dirs(target.path()).is_empty() && child.try_wait().expect("wait").is_none() {
            std::thread::yield_now();
        }
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if !status.success() && !staging_dirs(target.path()).is_empty() {
            killed = true;
            break;
        }
        let _ = fs::remove_dir_all(restored(target.path(), &src));
    }
    assert!(
        killed,
        "no kill landed while the restore was staging in 5 rounds"
    );
    let left = staging_dirs(target.path());
    assert_eq!(left.len(), 1, "{left:?}");

    let out = repo.restore("latest", target.path(), args![]).success();
    assert!(
        out.stderr()
            .contains(&format!("removed {}", left[0].display()))
            && out.stderr().contains("killed"),
        "the restore says what it removed\n{out}"
    );
    assert_trees_equal(&src, &restored(target.path(), &src));
    assert_eq!(staging_dirs(target.path()), Vec::<PathBuf>::new());
}

/// The space a killed restore's staging area holds counts toward a restore's free-space check
/// only while a restore holds it: a dead one is removed first (before the fix the restore was
/// refused for want of space, without naming it); one held by a running restore is named in
/// the refusal.
#[test]
fn free_space_check_frees_dead_staging_areas_and_names_live_ones() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("data"), &random_bytes(6 * MIB as usize, 5));
    repo.backup(args![&src]);
    let target = scratch.join("target");
    let _fs = Tmpfs::mount(&target, 12);
    let dead = target.join(".lifeboat-restore-00000000deadbeef");
    write_file(&dead.join("tmp/x/data"), &random_bytes(8 * MIB as usize, 6));

    let out = repo.restore("latest", &target, args![]).success();
    assert!(
        out.stderr()
            .contains(&format!("removed {}", dead.display())),
        "{out}"
    );
    assert_trees_equal(&src, &restored(&target, &src));
    for e in fs::read_dir(&target).expect("list target").flatten() {
        fs::remove_dir_all(e.path()).expect("empty the target");
    }

    // A staging area a running restore holds (its lock taken here) is left and named.
    write_file(&dead.join("tmp/x/data"), &random_bytes(8 * MIB as usize, 6));
    let held = fs::File::open(&dead).expect("open");
    let _lock =
        nix::fcntl::Flock::lock(held, nix::fcntl::FlockArg::LockExclusiveNonblock).expect("lock");
    let out = repo.restore("latest", &target, args![]).failure();
    assert!(
        out.stderr().contains("only") && out.stderr().contains(&dead.display().to_string()),
        "{out}"
    );
    assert!(dead.join("tmp/x/data").exists());
}

/// RELIABILITY case 24: a source whose deepest path is just under PATH_MAX (4,096 bytes)
/// backs up, and restores beneath a target (which makes the path longer than PATH_MAX), with
/// and without `--overwrite`; `--verify-only` passes exactly when restore can write it. Before
/// the fix the backup and `--verify-only` passed but the restore failed with "File name too
/// long", even with `--allow-partial`.
#[test]
fn paths_near_path_max_restore_beneath_a_target() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let mut deep = src.clone();
    let component = "x".repeat(200);
    while deep.as_os_str().len() + 201 < 4080 {
        deep.push(&component);
    }
    deep.push("y".repeat(4080 - deep.as_os_str().len() - 1));
    write_file(&deep.join("bottom.txt"), b"near PATH_MAX\n");
    assert_eq!(deep.join("bottom.txt").as_os_str().len(), 4091);
    repo.backup(args![&src]);
    repo.restore("latest", Path::new("/"), args!["--verify-only"])
        .success();

    let target = Scratch::new();
    let out = repo.restore("latest", target.path(), args![]).success();
    let restored_path = restored(target.path(), &src);
    assert!(
        restored_path
            .join(deep.strip_prefix(&src).expect("beneath"))
            .as_os_str()
            .len()
            > 4096,
        "the restored path is longer than PATH_MAX"
    );
    // Read back one directory at a time (the path is too long for one call).
    let rel = deep.join("bottom.txt");
    assert_eq!(
        read_deep(target.path(), rel.strip_prefix("/").expect("absolute")),
        b"near PATH_MAX\n",
        "{out}"
    );
    repo.restore("latest", target.path(), args!["--overwrite"])
        .success();
}

/// RELIABILITY case 25: a directory of the target swapped for a symlink to a directory outside
/// it while an `--overwrite` restore runs is never written through: whatever the moment of the
/// swap, nothing appears in or changes outside the target.
#[test]
fn a_directory_swapped_for_a_symlink_during_a_restore_is_never_written_through() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    for i in 0..2000 {
        write_file(
            &src.join(format!("etc/f{i:04}")),
            format!("snapshot {i}\n").as_bytes(),
        );
    }
    repo.backup(args![&src]);
    let outside = scratch.join("outside");
    fs::create_dir_all(&outside).expect("mkdir");
    write_file(&outside.join("f0000"), b"outside, must stay\n");
    let before = fingerprint(&outside);

    for round in 0..4 {
        let target = Scratch::new();
        let etc = restored(target.path(), &src).join("etc");
        for i in 0..2000 {
            write_file(&etc.join(format!("f{i:04}")), b"old\n");
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                // Swap `etc` for a symlink to `outside` and back, again and again.
                let aside = etc.with_file_name("etc.real");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if fs::rename(&etc, &aside).is_ok() {
                        let _ = std::os::unix::fs::symlink(&outside, &etc);
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        let _ = fs::remove_file(&etc);
                        let _ = fs::rename(&aside, &etc);
                    }
                    std::thread::sleep(std::time::Duration::from_micros(300));
                }
            });
            let _ = repo.restore("latest", target.path(), args!["--overwrite"]);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(
            fingerprint(&outside),
            before,
            "round {round}: the restore wrote through the symlink"
        );
    }
}

/// RELIABILITY case 19: a restore reads under a shared lock the library takes before the
/// snapshot and the index are read (`Repository::read_snapshot`): while it is held the
/// repository lists a shared "restore" lock and an exclusive one (prune's) is refused; the
/// restore runs under it, and the lock is gone afterwards.
#[test]
fn restore_reads_under_a_shared_lock_the_library_takes() {
    use lifeboat::repo::LockSettings;
    let r = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 5, 0, 1);
    r.backup(args![&src]);
    let repo = r.open();
    let settings = LockSettings::default();

    let read = repo
        .read_snapshot("restore", "latest", &Default::default())
        .expect("read");
    let locks = repo.locks(None, None, &settings).expect("locks");
    assert!(
        locks.iter().any(|l| l
            .info
            .as_ref()
            .is_some_and(|i| i.operation == "restore" && !i.exclusive)),
        "{locks:?}"
    );
    let prune = repo.lock("prune", true, &settings);
    assert!(
        matches!(prune, Err(lifeboat::Error::Locked { .. })),
        "{prune:?}"
    );
    let opts = lifeboat::ops::restore::RestoreOptions {
        target: scratch.join("target"),
        ..Default::default()
    };
    let report = lifeboat::ops::restore::restore(
        &repo,
        &read.index,
        &read.snapshot.tree,
        &opts,
        std::sync::Arc::default(),
    )
    .expect("restore");
    assert_eq!(report.files, 5);
    drop(read);
    let left = repo.locks(None, None, &settings).expect("locks");
    assert!(left.is_empty(), "{left:?}");
}

//! Self-tests of the shared fixtures: the tree comparison used by every
//! round-trip test must accept a faithful copy and catch each kind of
//! difference. (These run without the lifeboat binary doing anything.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A faithful copy of `src` made by `cp -a` (keeps hardlinks, xattrs, modes,
/// owners, nanosecond mtimes, sparseness).
fn copy_tree(src: &Path, dst: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg("--sparse=always")
        .arg(src)
        .arg(dst)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp -a failed");
}

fn everything_and_copy() -> (Scratch, PathBuf, PathBuf) {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_everything_tree(&src);
    let dst = scratch.join("dst");
    copy_tree(&src, &dst);
    (scratch, src, dst)
}

#[test]
fn comparison_accepts_a_faithful_copy() {
    let (_scratch, src, dst) = everything_and_copy();
    assert_trees_equal(&src, &dst);
}

/// Applies `damage` to a faithful copy and asserts the comparison reports a
/// difference mentioning `expect`.
fn assert_detects(expect: &str, damage: impl FnOnce(&Path)) {
    let (_scratch, src, dst) = everything_and_copy();
    damage(&dst);
    let diffs = tree_differences(&src, &dst, &[]);
    assert!(
        diffs.iter().any(|d| d.contains(expect)),
        "expected a difference mentioning {expect:?}, got {diffs:?}"
    );
}

#[test]
fn comparison_detects_changed_content() {
    assert_detects("content differs", |d| {
        let p = d.join("big.bin");
        let mtime = fs::symlink_metadata(&p).expect("lstat");
        flip_byte(&p, 3 * MIB);
        let t = filetime::FileTime::from_last_modification_time(&mtime);
        filetime::set_file_mtime(&p, t).expect("reset mtime");
    });
}

#[test]
fn comparison_detects_changed_mode() {
    assert_detects("mode 644, expected 600", |d| {
        set_mode(&d.join("secret.txt"), 0o644)
    });
}

#[test]
fn comparison_detects_lost_sticky_bit() {
    assert_detects("mode 777, expected 1777", |d| {
        set_mode(&d.join("sticky"), 0o777)
    });
}

#[test]
fn comparison_detects_mtime_nanoseconds() {
    assert_detects("mtime", |d| {
        let p = d.join("small.txt");
        let m = fs::symlink_metadata(&p).expect("lstat");
        use std::os::unix::fs::MetadataExt;
        set_mtime(&p, m.mtime(), 0);
    });
}

#[test]
fn comparison_detects_directory_and_symlink_mtimes() {
    assert_detects("(Dir): mtime", |d| set_mtime(&d.join("nested"), 1, 1));
    assert_detects("(Symlink): mtime", |d| {
        set_mtime(&d.join("links/relative"), 1, 1)
    });
}

#[test]
fn comparison_detects_changed_symlink_target() {
    assert_detects("link target", |d| {
        let p = d.join("links/relative");
        fs::remove_file(&p).expect("rm");
        symlink("../secret.txt", &p);
    });
}

#[test]
fn comparison_detects_followed_symlink() {
    assert_detects("type File, expected Symlink", |d| {
        let p = d.join("links/relative");
        fs::remove_file(&p).expect("rm");
        fs::copy(d.join("small.txt"), &p).expect("copy");
    });
}

#[test]
fn comparison_detects_missing_xattr() {
    assert_detects("xattrs", |d| {
        xattr::remove(d.join("xattr.txt"), "user.binary").expect("removexattr")
    });
}

#[test]
fn comparison_detects_broken_hardlink() {
    assert_detects("hardlink groups", |d| {
        let p = d.join("nested/hard_2");
        let content = fs::read(&p).expect("read");
        let m = fs::symlink_metadata(&p).expect("lstat");
        fs::remove_file(&p).expect("rm");
        fs::write(&p, content).expect("write");
        let t = filetime::FileTime::from_last_modification_time(&m);
        filetime::set_file_mtime(&p, t).expect("reset mtime");
    });
}

#[test]
fn comparison_detects_missing_and_extra_entries() {
    assert_detects("missing", |d| {
        fs::remove_dir(d.join("empty_dir")).expect("rmdir")
    });
    assert_detects("unexpected", |d| write_file(&d.join("extra"), b"x"));
}

#[test]
fn comparison_detects_fifo_turned_into_file() {
    assert_detects("type File, expected Fifo", |d| {
        fs::remove_file(d.join("fifo")).expect("rm");
        write_file(&d.join("fifo"), b"");
    });
}

#[test]
fn comparison_detects_changed_owner_when_root() {
    if !is_root() {
        return;
    }
    assert_detects("owner", |d| {
        std::os::unix::fs::lchown(d.join("owned_link"), Some(0), Some(0)).expect("lchown")
    });
}

#[test]
fn fingerprint_notices_new_hidden_entries_and_changed_files() {
    let scratch = Scratch::new();
    write_file(&scratch.join("a"), b"a");
    let before = fingerprint(scratch.path());
    fs::create_dir(scratch.join(".staging")).expect("mkdir");
    assert_ne!(
        before,
        fingerprint(scratch.path()),
        "a hidden dir went unnoticed"
    );
    fs::remove_dir(scratch.join(".staging")).expect("rmdir");
    assert_eq!(before, fingerprint(scratch.path()));
    write_file(&scratch.join("a"), b"b");
    assert_ne!(
        before,
        fingerprint(scratch.path()),
        "new content went unnoticed"
    );
}

//! Device nodes: `/dev/null` is a character device on every Linux machine. A restore makes
//! device nodes only when asked (`--devices`) and as root; otherwise it leaves them out, lists
//! them and exits 3 (a device node gives whoever may open it the device itself, and a hostile
//! repository could name any device with any mode).

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::common::*;

/// A repository holding a backup of `/dev/null`.
fn backed_up_dev_null() -> (Repo, Scratch) {
    let repo = Repo::new();
    repo.backup(args!["/dev/null"]);
    let listing = repo.ls("latest", args!["--long", "/dev/null"]).success();
    assert!(
        listing.stdout().starts_with('c'),
        "listed as a character device: {listing}"
    );
    (repo, Scratch::new())
}

/// RELIABILITY case 12: a character device round-trips with `--devices`, as root.
#[test]
fn character_device_round_trips_with_devices() {
    assert!(
        is_root(),
        "this test makes a device node: run it as root, as CI does"
    );
    let (repo, scratch) = backed_up_dev_null();
    let target = scratch.join("target");
    let out = repo
        .restore("latest", &target, args!["--devices"])
        .success();
    let meta = std::fs::symlink_metadata(target.join("dev/null")).expect("restored device");
    assert!(meta.file_type().is_char_device(), "{out}");
    assert_eq!(
        meta.rdev(),
        std::fs::metadata("/dev/null").expect("stat").rdev()
    );
}

/// A device node is made only when asked: without `--devices` it is left out, listed, and the
/// restore exits 3. Before the fix it was made exactly as the snapshot said (any device, any
/// mode: a hostile snapshot gave every local user a disk).
#[test]
fn device_nodes_are_left_out_and_listed_without_devices() {
    let (repo, scratch) = backed_up_dev_null();
    let target = scratch.join("target");
    let out = repo.restore("latest", &target, args![]).expect_code(3);
    assert!(
        out.stderr().contains("/dev/null") && out.stderr().contains("--devices"),
        "{out}"
    );
    assert!(std::fs::symlink_metadata(target.join("dev/null")).is_err());
    assert!(target.join("dev").is_dir(), "the rest is restored\n{out}");
    let json = repo
        .restore("latest", &scratch.join("t2"), args!["--json"])
        .expect_code(3);
    let v = json.json_lines().pop().expect("report");
    assert_eq!(v["skipped"][0]["path"], "/dev/null", "{json}");
    assert_eq!(num(&v, "others"), 0, "{json}");
}

/// A restore by a user who is not root skips device nodes even with `--devices`: listed and
/// exit 3. Before the fix it warned but counted them as restored and exited 0.
#[test]
fn device_nodes_are_listed_and_exit_3_when_not_root() {
    let (repo, scratch) = backed_up_dev_null();
    std::fs::set_permissions(
        scratch.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    // The unprivileged user reads the repository.
    let _ = std::process::Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&repo.path)
        .status();
    let target = scratch.join("target");
    let out = lifeboat_unprivileged(
        args![
            "restore",
            "--repo",
            &repo.path,
            "latest",
            "--target",
            &target,
            "--devices"
        ],
        scratch.path(),
    )
    .expect_code(3);
    assert!(
        out.stderr().contains("/dev/null") && out.stderr().contains("only root"),
        "{out}"
    );
    assert!(std::fs::symlink_metadata(target.join("dev/null")).is_err());
}

//! Device nodes round-trip: `/dev/null` is a character device on every Linux machine.
//! As root it is restored as a device with the same number; otherwise restore says it skipped it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::Command;

mod common;

fn lifeboat() -> Command {
    common::lifeboat_cmd()
}

/// RELIABILITY case 12: a character device round-trips (as root; otherwise restore says it skipped it).
#[test]
fn character_device_round_trips() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    assert!(lifeboat()
        .args(["init", "--repo"])
        .arg(&repo)
        .status()
        .expect("run")
        .success());
    let out = lifeboat()
        .args(["backup", "--repo"])
        .arg(&repo)
        .arg("/dev/null")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = lifeboat()
        .args(["ls", "--long", "--repo"])
        .arg(&repo)
        .args(["latest", "/dev/null"])
        .output()
        .expect("run");
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        listing.starts_with('c'),
        "listed as a character device: {listing}"
    );

    let target = tmp.path().join("target");
    let out = lifeboat()
        .args(["restore", "--repo"])
        .arg(&repo)
        .args(["latest", "--target"])
        .arg(&target)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = target.join("dev/null");
    if nix::unistd::geteuid().is_root() {
        let meta = std::fs::symlink_metadata(&restored).expect("restored device");
        assert!(meta.file_type().is_char_device());
        assert_eq!(
            meta.rdev(),
            std::fs::metadata("/dev/null").expect("stat").rdev()
        );
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("only be restored by root"), "{stderr}");
        assert!(std::fs::symlink_metadata(&restored).is_err());
    }
}

//! Device nodes round-trip: `/dev/null` is a character device on every Linux machine.
//! As root it is restored as a device with the same number; otherwise restore says it skipped it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::Command;

const PASSWORD: &str = "test password";

fn lifeboat() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    c.env_remove("LIFEBOAT_REPOSITORY")
        .env_remove("LIFEBOAT_PASSWORD_FILE")
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("LIFEBOAT_KDF_MEMORY_KIB", "64")
        .env("LIFEBOAT_KDF_ITERATIONS", "1");
    c
}

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

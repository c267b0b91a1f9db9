//! Restore against crafted (hostile) snapshots: entry names with `..`, `/`, NUL, absolute
//! names, and symlinks planted in the target. Nothing may be written outside the target.

use std::path::Path;
use std::process::Command;

use lifeboat::repo::{BlobKind, Node, NodeKind};

use crate::common::craft::Crafter;

fn lifeboat() -> Command {
    crate::common::lifeboat_cmd()
}

/// Writes a snapshot whose root directory holds `nodes` (file nodes get `content` as data,
/// directories an empty listing, symlinks `content` as their target).
fn craft_snapshot(repo_dir: &Path, nodes: Vec<(Vec<u8>, NodeKind, &[u8])>) {
    let mut craft = Crafter::new(repo_dir);
    let mut root = Vec::new();
    for (name, kind, content) in nodes {
        let mut node = Node::new(name, kind);
        node.mode = 0o644;
        match kind {
            NodeKind::File => {
                node.content = vec![craft.blob(BlobKind::Data, content)];
                node.size = content.len() as u64;
            }
            NodeKind::Dir => {
                node.mode = 0o755;
                node.subtree = Some(craft.tree(Vec::new()));
            }
            NodeKind::Symlink => node.link_target = Some(content.to_vec()),
            _ => {}
        }
        root.push(node);
    }
    let root = craft.tree(root);
    craft.snapshot(root);
}

fn init(dir: &Path) {
    let st = lifeboat()
        .args(["init", "--repo"])
        .arg(dir)
        .status()
        .expect("run");
    assert!(st.success());
}

fn listing(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("walk").path().display().to_string())
        .collect();
    out.sort();
    out
}

/// RELIABILITY case 8: snapshot entries named `..`, `../x`, `a/b`, absolute, with NUL or backslash: restore refuses the unsafe ones and writes nothing outside the target.
#[test]
fn crafted_names_with_dotdot_slash_and_nul_never_escape_the_target() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init(&repo);
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let target = tmp.path().join("sandbox/target");
    std::fs::create_dir_all(&target).expect("mkdir");
    craft_snapshot(
        &repo,
        vec![
            (b"..".to_vec(), NodeKind::Dir, b""),
            (b"../escape".to_vec(), NodeKind::File, b"evil"),
            (b"a/b".to_vec(), NodeKind::File, b"evil"),
            (b"/etc/passwd".to_vec(), NodeKind::File, b"evil"),
            (b"nul\0name".to_vec(), NodeKind::File, b"evil"),
            (b".".to_vec(), NodeKind::File, b"evil"),
            (b"".to_vec(), NodeKind::File, b"evil"),
            (b"good".to_vec(), NodeKind::File, b"fine"),
            (b"back\\slash".to_vec(), NodeKind::File, b"fine"),
        ],
    );
    let before_sandbox = listing(&tmp.path().join("sandbox"));
    // The real file an entry named "/etc/passwd" would land on if a restore joined names
    // to the target as paths (the suite runs as root: a bug would overwrite it).
    let passwd = |_: ()| {
        let meta = std::fs::metadata("/etc/passwd").expect("stat /etc/passwd");
        (
            std::fs::read("/etc/passwd").expect("read /etc/passwd"),
            meta.modified().ok(),
        )
    };
    let passwd_before = passwd(());
    let out = lifeboat()
        .args(["restore", "--repo"])
        .arg(&repo)
        .args(["latest", "--target"])
        .arg(&target)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "unsafe names must refuse the restore: {stderr}"
    );
    assert!(stderr.contains("unsafe entry name"), "{stderr}");
    assert_eq!(
        listing(&tmp.path().join("sandbox")),
        before_sandbox,
        "nothing written"
    );
    assert!(listing(&outside).len() == 1, "nothing written outside");

    // With --allow-partial only the safe entries are restored, inside the target.
    let out = lifeboat()
        .args(["restore", "--repo"])
        .arg(&repo)
        .args(["latest", "--allow-partial", "--target"])
        .arg(&target)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(target.join("good")).expect("good restored"),
        b"fine"
    );
    assert_eq!(
        std::fs::read(target.join("back\\slash")).expect("backslash name"),
        b"fine"
    );
    let mut names: Vec<_> = std::fs::read_dir(&target)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["back\\slash", "good"]);
    assert!(!tmp.path().join("sandbox/escape").exists());
    // The entry named "/etc/passwd" went nowhere: not over the real file, not to an
    // `etc/passwd` beneath the target or above it.
    assert!(passwd(()) == passwd_before, "/etc/passwd was written");
    assert!(!target.join("etc").exists() && !tmp.path().join("sandbox/etc").exists());
    assert_eq!(listing(&outside).len(), 1);
}

/// RELIABILITY case 9: a symlink planted in the restore target, also as a parent directory, is never written through.
#[test]
fn symlink_planted_in_target_is_never_followed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init(&repo);
    craft_snapshot(
        &repo,
        vec![
            (b"etc".to_vec(), NodeKind::Dir, b""),
            (b"file".to_vec(), NodeKind::File, b"data"),
        ],
    );
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let target = tmp.path().join("target");
    std::fs::create_dir(&target).expect("mkdir");
    // A symlink where the snapshot has a directory, and one where it has a file.
    std::os::unix::fs::symlink(&outside, target.join("etc")).expect("symlink");
    std::os::unix::fs::symlink(outside.join("victim"), target.join("file")).expect("symlink");
    for extra in [&[][..], &["--overwrite"][..]] {
        let out = lifeboat()
            .args(["restore", "--repo"])
            .arg(&repo)
            .args(["latest", "--target"])
            .arg(&target)
            .args(extra)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("symlink"), "{stderr}");
        assert_eq!(
            listing(&outside).len(),
            1,
            "nothing written through the symlink"
        );
        assert!(!outside.join("victim").exists());
    }
    // The file symlink (not the directory one) may be replaced with --overwrite, never followed.
    std::fs::remove_file(target.join("etc")).expect("rm");
    let out = lifeboat()
        .args(["restore", "--repo"])
        .arg(&repo)
        .args(["latest", "--overwrite", "--target"])
        .arg(&target)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !outside.join("victim").exists(),
        "the symlink's destination was not written"
    );
    let meta = std::fs::symlink_metadata(target.join("file")).expect("stat");
    assert!(
        meta.is_file(),
        "the symlink itself was replaced by the file"
    );
    assert_eq!(std::fs::read(target.join("file")).expect("read"), b"data");
}

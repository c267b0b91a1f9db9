//! The source tree of the damaged-repository fixtures (`tests/fixtures/damaged/`): small and
//! deterministic (content from a fixed-seed generator, fixed modes and times), written the same
//! way by the generator (`cargo run --example make-damaged-fixtures`) and by the tests that
//! compare what the fixtures restore against it. Changing anything here changes the fixtures:
//! regenerate them (see tests/fixtures/damaged/README.md).
//!
//! Stage 1 is `alpha/` and `beta/`; stage 2 changes `alpha/b.bin` and adds `alpha/new.bin`,
//! leaving everything else as it was (so an incremental backup shares `alpha/sub`'s listing).
#![allow(dead_code)]

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use filetime::FileTime;

/// Where the generator writes the source; recorded in the fixtures' snapshots.
pub const SOURCE_ROOT: &str = "/tmp/lifeboat-fixture-source";

/// splitmix64: a generator whose output never changes with a dependency's version.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text lines (compressible), numbered from `seed`.
fn text(seed: u64, lines: usize) -> Vec<u8> {
    (0..lines)
        .map(|i| format!("line {} of the lifeboat fixture, seed {seed}\n", i + 1))
        .collect::<String>()
        .into_bytes()
}

fn file(root: &Path, rel: &str, content: &[u8], mode: u32, mtime: i64) -> io::Result<()> {
    let p = root.join(rel);
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&p, content)?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    filetime::set_file_mtime(&p, FileTime::from_unix_time(mtime, 123_456_789))
}

fn dir(root: &Path, rel: &str, mtime: i64) -> io::Result<()> {
    let p = root.join(rel);
    fs::create_dir_all(&p)?;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
    filetime::set_file_mtime(&p, FileTime::from_unix_time(mtime, 987_654_321))
}

const T1: i64 = 1_700_000_000;
const T2: i64 = 1_700_086_400;

/// Writes stage 1 under `root` (which must not hold a source yet).
pub fn write_stage1(root: &Path) -> io::Result<()> {
    file(root, "alpha/README.txt", &text(1, 12), 0o644, T1 + 1)?;
    file(root, "alpha/a.bin", &bytes(2, 1200), 0o600, T1 + 2)?;
    file(root, "alpha/b.bin", &bytes(3, 1800), 0o644, T1 + 3)?;
    file(root, "alpha/empty.txt", b"", 0o644, T1 + 4)?;
    file(root, "alpha/sub/c.bin", &bytes(5, 900), 0o644, T1 + 5)?;
    file(root, "alpha/sub/d.txt", &text(6, 9), 0o644, T1 + 6)?;
    file(root, "alpha/sub/deep/e.bin", &bytes(7, 700), 0o755, T1 + 7)?;
    std::os::unix::fs::symlink("a.bin", root.join("alpha/link"))?;
    filetime::set_symlink_file_times(
        root.join("alpha/link"),
        FileTime::from_unix_time(T1 + 8, 0),
        FileTime::from_unix_time(T1 + 8, 0),
    )?;
    dir(root, "alpha/empty", T1 + 9)?;
    file(root, "beta/f.bin", &bytes(10, 1500), 0o644, T1 + 10)?;
    file(root, "beta/g.txt", &text(11, 20), 0o644, T1 + 11)?;
    file(root, "beta/h/i.bin", &bytes(12, 1000), 0o644, T1 + 12)?;
    // Directories last: creating entries changed their times.
    for (rel, t) in [
        ("alpha/sub/deep", 20),
        ("alpha/sub", 21),
        ("alpha", 22),
        ("beta/h", 23),
        ("beta", 24),
    ] {
        dir(root, rel, T1 + t)?;
    }
    Ok(())
}

/// Changes a stage-1 tree under `root` into stage 2.
pub fn write_stage2(root: &Path) -> io::Result<()> {
    file(root, "alpha/b.bin", &bytes(103, 1600), 0o644, T2 + 3)?;
    file(root, "alpha/new.bin", &bytes(104, 1300), 0o644, T2 + 4)?;
    dir(root, "alpha", T2 + 22)
}

/// A file of the unreferenced backup (`gamma/`), which no snapshot keeps.
pub fn write_gamma(root: &Path) -> io::Result<()> {
    file(root, "gamma/lost.bin", &bytes(200, 1100), 0o644, T2 + 30)?;
    dir(root, "gamma", T2 + 31)
}

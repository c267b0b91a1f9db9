//! `lifeboat dump` (issue 21): one file of a snapshot to standard output, every chunk verified
//! before it is written; damage stops it with an error, never wrong bytes.

use std::fs;

use crate::common::*;

/// A file of one job's snapshot goes to a pipe byte for byte: chosen by `--job`, or by the
/// path alone (the only snapshots that hold it are the db job's), and the command says which
/// snapshot it read. A directory, a missing path and a relative path are refused, naming why.
#[test]
fn dump_writes_one_file_of_the_chosen_snapshot() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let (db, etc) = (scratch.join("db"), scratch.join("etc"));
    let dump = db.join("backups/db.sql");
    let content = random_bytes(5 * MIB as usize + 12345, 7);
    write_file(&dump, &content);
    write_file(&etc.join("hosts"), b"127.0.0.1 localhost\n");
    repo.backup(args!["--job", "db", &db]);
    repo.backup(args!["--job", "etc", &etc]);

    for extra in [args!["--job", "db"], args![]] {
        let mut all = extra.clone();
        all.extend(args!["latest", &dump]);
        let out = repo.run("dump", all).success();
        assert!(
            out.stdout == content,
            "{extra:?}: the bytes differ from the source"
        );
        assert!(
            out.stderr().contains("job db"),
            "{extra:?}\n{}",
            out.stderr()
        );
    }
    let out = repo
        .run("dump", args!["--job", "etc", "latest", etc.join("hosts")])
        .success();
    assert_eq!(out.stdout, b"127.0.0.1 localhost\n");

    let out = repo
        .run("dump", args!["--job", "db", "latest", db.join("backups")])
        .expect_code(1);
    assert!(out.stderr().contains("is a directory"), "{out}");
    assert!(
        out.stderr().contains("`--archive tar` writes a directory"),
        "{out}"
    );
    assert!(out.stdout.is_empty());
    let out = repo
        .run("dump", args!["--job", "db", "latest", db.join("nope.sql")])
        .expect_code(1);
    assert!(out.stderr().contains("is not in snapshot"), "{out}");
    let out = repo
        .run("dump", args!["latest", "backups/db.sql"])
        .expect_code(1);
    assert!(out.stderr().contains("absolute"), "{out}");
}

/// A damaged chunk in the middle of the file stops the dump with an error and a non-zero exit:
/// what went out is the file's beginning, exactly, and the error says how much it was.
#[test]
fn a_damaged_chunk_stops_the_dump_after_the_intact_beginning() {
    let (repo, _scratch, src, _) = repo_with_big_file();
    corrupt_largest_pack(&repo);
    let source = fs::read(src.join("big.bin")).expect("source");
    let out = repo
        .run("dump", args!["latest", src.join("big.bin")])
        .expect_code(1);
    assert!(
        out.stdout.len() < source.len() && source.starts_with(&out.stdout),
        "{} of {} bytes written, and they must be the file's beginning",
        out.stdout.len(),
        source.len()
    );
    assert!(
        out.stderr()
            .contains(&format!("stopped after {} bytes", out.stdout.len())),
        "{out}"
    );
}

// ---------------------------------------------------------------------------
// dump --archive tar
// ---------------------------------------------------------------------------

/// Runs `tar ARGS...` with `input` on its standard input.
fn tar_with_input(args: &[&std::ffi::OsStr], input: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new("tar")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tar");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("tar");
    writer.join().expect("writer");
    out
}

/// Extracts the tar stream `archive` into `dir` with GNU tar (as root: owners kept), and
/// asserts that tar accepted it whole.
#[track_caller]
fn extract(archive: &[u8], dir: &std::path::Path) {
    fs::create_dir_all(dir).expect("mkdir");
    let out = tar_with_input(&["-x".as_ref(), "-C".as_ref(), dir.as_os_str()], archive);
    assert!(
        out.status.success(),
        "tar -x failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 21: `dump --archive tar SNAPSHOT DIR | tar -x` gives back the directory as it was
/// backed up: every kind of entry (files of every size and mode, sparse, empty, symlinks,
/// hard links as links, a fifo, devices as root), modes, owners, mtimes to the nanosecond,
/// with relative paths as `tar -C / -c` writes them, and extended attributes for `tar
/// --xattrs -x`. A file PATH gives a one-entry archive, "/" the whole snapshot.
#[test]
fn dump_archive_tar_round_trips_through_gnu_tar() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_everything_tree(&src);
    repo.backup(args![&src]);
    let out = repo
        .run("dump", args!["--archive", "tar", "latest", &src])
        .success();
    assert!(out.stderr().contains("snapshot"), "{out}");
    let x = scratch.join("x");
    fs::create_dir(&x).expect("mkdir");
    let t = tar_with_input(
        &[
            "--xattrs".as_ref(),
            "--xattrs-include=user.*".as_ref(),
            "-x".as_ref(),
            "-C".as_ref(),
            x.as_os_str(),
        ],
        &out.stdout,
    );
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let rel = src.strip_prefix("/").expect("absolute");
    assert_eq!(
        fs::read_dir(&x).expect("x").count(),
        1,
        "one top-level entry, the first component of the path"
    );
    assert_trees_equal(&src, &x.join(rel));
    // Without --xattrs, tar extracts the same but for them.
    let plain = scratch.join("plain");
    extract(&out.stdout, &plain);
    let ignored = [
        std::path::PathBuf::from("xattr.txt"),
        std::path::PathBuf::from("xattr_dir"),
    ];
    assert_trees_equal_except(&src, &plain.join(rel), &ignored);

    // One file: a one-entry archive.
    let out = repo
        .run(
            "dump",
            args!["--archive", "tar", "latest", src.join("script.sh")],
        )
        .success();
    let list = tar_with_input(&["-t".as_ref()], &out.stdout);
    assert!(list.status.success());
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).trim(),
        rel.join("script.sh").to_string_lossy()
    );
    let one = scratch.join("one");
    extract(&out.stdout, &one);
    assert_eq!(
        fs::read(one.join(rel).join("script.sh")).expect("read"),
        fs::read(src.join("script.sh")).expect("read")
    );

    // The whole snapshot.
    let out = repo
        .run("dump", args!["--archive", "tar", "latest", "/"])
        .success();
    let all = scratch.join("all");
    extract(&out.stdout, &all);
    assert_trees_equal_except(&src, &all.join(rel), &ignored);
}

/// Issue 21: names with a newline, bytes that are not UTF-8, names longer than a tar header
/// holds (GNU long names), and a symlink to such a name round-trip; a chain of 600 directories
/// goes through the one walk and extracts whole.
#[test]
fn dump_archive_tar_keeps_odd_and_long_names_and_deep_trees() {
    use std::os::unix::ffi::OsStrExt;
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    let odd = |b: &[u8]| src.join(std::ffi::OsStr::from_bytes(b));
    write_file(&odd(b"new\nline"), b"newline\n");
    write_file(&odd(b"latin1-\xe9t\xe9"), b"not utf-8\n");
    let long = "n".repeat(200);
    write_file(&src.join(&long).join(&long).join("f"), b"long\n");
    symlink(format!("{long}/{long}/f"), &src.join("to-long"));
    let mut deep = src.join("deep");
    for _ in 0..600 {
        deep.push("d");
    }
    write_file(&deep.join("bottom"), b"at the bottom\n");
    stamp_mtimes(&src, 1_650_000_000);
    repo.backup(args![&src]);
    let out = repo
        .run("dump", args!["--archive", "tar", "latest", &src])
        .success();
    let x = scratch.join("x");
    extract(&out.stdout, &x);
    assert_trees_equal(&src, &x.join(src.strip_prefix("/").expect("absolute")));
}

/// Issue 21: a damaged chunk in the middle of a file stops the archive with exit 1: the
/// stream ends inside that file's entry with no end-of-archive marker, so `tar` refuses it
/// (never a complete-looking archive with wrong bytes), the entries before it extract intact,
/// and the error says after which entry it stopped and in which.
#[test]
fn a_damaged_chunk_truncates_the_archive_and_says_where() {
    let (repo, scratch, src, _) = repo_with_big_file();
    corrupt_largest_pack(&repo);
    let out = repo
        .run("dump", args!["--archive", "tar", "latest", &src])
        .expect_code(1);
    let rel = src.strip_prefix("/").expect("absolute");
    let stderr = out.stderr();
    assert!(stderr.contains("truncated"), "{out}");
    // In name order: a.txt, b.txt, big.bin, sub/.
    assert!(
        stderr.contains(&format!("the last {}", rel.join("b.txt").display()))
            && stderr.contains(&format!("in {}", rel.join("big.bin").display())),
        "{out}"
    );
    let x = scratch.join("x");
    fs::create_dir(&x).expect("mkdir");
    let t = tar_with_input(&["-x".as_ref(), "-C".as_ref(), x.as_os_str()], &out.stdout);
    assert!(
        !t.status.success(),
        "tar accepted a truncated archive: {}",
        String::from_utf8_lossy(&t.stderr)
    );
    assert_eq!(
        fs::read(x.join(rel).join("a.txt")).expect("a.txt before the damage"),
        b"alpha\n"
    );
    let big = fs::read(x.join(rel).join("big.bin")).unwrap_or_default();
    let source = fs::read(src.join("big.bin")).expect("source");
    assert!(
        big.len() < source.len() && source.starts_with(&big),
        "{} bytes of big.bin extracted: only its intact beginning may be",
        big.len()
    );
    assert_eq!(
        fs::read(x.join(rel).join("b.txt")).expect("b.txt before the damage"),
        b"bravo\n"
    );
    assert!(
        !x.join(rel).join("sub").exists(),
        "nothing after the damage"
    );
}

/// Issue 21: a crafted snapshot with unsafe names (`..`, a name with `/`, `.`, NUL), at the
/// root and inside a directory: never written to the archive; each is named (escaped) in a
/// warning, the rest is written, and the exit code is 3 (something left out). Extracting
/// writes nothing outside the target.
#[test]
fn unsafe_names_are_left_out_of_the_archive_with_a_warning() {
    use lifeboat::repo::{BlobKind, Node, NodeKind};
    let repo = Repo::new();
    let scratch = Scratch::new();
    let mut craft = crate::common::craft::Crafter::new(&repo.path);
    let file = |craft: &mut crate::common::craft::Crafter, name: &[u8], data: &[u8]| {
        let mut n = Node::new(name.to_vec(), NodeKind::File);
        n.mode = 0o644;
        n.content = vec![craft.blob(BlobKind::Data, data)];
        n.size = data.len() as u64;
        n
    };
    let dir = |craft: &mut crate::common::craft::Crafter, name: &[u8], nodes: Vec<Node>| {
        let mut n = Node::new(name.to_vec(), NodeKind::Dir);
        n.mode = 0o755;
        n.subtree = Some(craft.tree(nodes));
        n
    };
    let inner = vec![
        file(&mut craft, b"..", b"evil"),
        file(&mut craft, b"../../escape", b"evil"),
        file(&mut craft, b"fine.txt", b"fine\n"),
    ];
    let evil_dir = vec![file(&mut craft, b"x", b"evil")];
    let root = vec![
        dir(&mut craft, b"..", evil_dir),
        file(&mut craft, b"a/b", b"evil"),
        file(&mut craft, b".", b"evil"),
        file(&mut craft, b"nul\0name", b"evil"),
        file(&mut craft, b"ok\x1b[31m.txt", b"ok\n"),
        dir(&mut craft, b"sub", inner),
    ];
    let root = craft.tree(root);
    craft.snapshot(root);

    let out = repo
        .run("dump", args!["--archive", "tar", "latest", "/"])
        .expect_code(3);
    let stderr = out.stderr();
    for shown in [
        "a/b",
        "sub/..",
        "sub/../../escape",
        "nul\\x00name",
        "..: a name",
    ] {
        assert!(stderr.contains(shown), "no warning naming {shown}:\n{out}");
    }
    assert!(
        !stderr.contains('\x1b'),
        "a raw escape reached stderr: {out}"
    );
    let list = tar_with_input(&["-t".as_ref()], &out.stdout);
    assert!(list.status.success());
    let mut names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ok\\033[31m.txt", "sub", "sub/fine.txt"],
        "exactly the safe entries"
    );
    let sandbox = scratch.join("sandbox");
    let x = sandbox.join("x");
    extract(&out.stdout, &x);
    let mut all: Vec<_> = walkdir::WalkDir::new(&sandbox)
        .into_iter()
        .map(|e| e.expect("walk").path().to_path_buf())
        .collect();
    all.sort();
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(fs::read(x.join("sub/fine.txt")).expect("fine"), b"fine\n");
}

/// Issue 21: a reader that goes away (`| head -c`) stops the archive with the exit status of
/// a broken pipe (141), as `dump` of one file does, without an error message.
#[test]
fn a_closed_pipe_stops_the_archive_with_141() {
    use std::io::Read as _;
    let (repo, _scratch, src, _) = repo_with_big_file();
    let mut cmd = lifeboat_cmd();
    cmd.args(args![
        "dump",
        "--repo",
        &repo.path,
        "--archive",
        "tar",
        "latest",
        &src
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = vec![0u8; 4096];
    stdout
        .read_exact(&mut first)
        .expect("the archive's beginning");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(141),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("error"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 21: a directory listing that cannot be read stops the archive between two entries:
/// the stream then ends with a block that is no header, so `tar` fails on it instead of taking
/// it for a complete archive whose end marker is missing; the entries before it extract.
#[test]
fn a_damaged_listing_stops_the_archive_so_that_tar_fails() {
    use lifeboat::repo::{BlobKind, Node, NodeKind};
    let repo = Repo::new();
    let scratch = Scratch::new();
    let mut craft = crate::common::craft::Crafter::new(&repo.path);
    let mut a = Node::new(b"a.txt".to_vec(), NodeKind::File);
    a.mode = 0o644;
    a.content = vec![craft.blob(BlobKind::Data, b"alpha\n")];
    a.size = 6;
    let mut b = Node::new(b"b".to_vec(), NodeKind::Dir);
    b.mode = 0o755;
    // A listing that is in no pack.
    b.subtree = Some(lifeboat::id::BlobId::hash(b"no such listing"));
    let root = craft.tree(vec![a, b]);
    craft.snapshot(root);
    let out = repo
        .run("dump", args!["--archive", "tar", "latest", "/"])
        .expect_code(1);
    assert!(out.stderr().contains("truncated"), "{out}");
    assert!(out.stderr().contains("the last b"), "{out}");
    let x = scratch.join("x");
    fs::create_dir(&x).expect("mkdir");
    let t = tar_with_input(&["-x".as_ref(), "-C".as_ref(), x.as_os_str()], &out.stdout);
    assert!(
        !t.status.success(),
        "tar took the stopped archive for a whole one"
    );
    assert_eq!(fs::read(x.join("a.txt")).expect("a.txt"), b"alpha\n");
}

/// Issue 21: SIGINT while the archive streams stops it cleanly with exit 130, and what went
/// out is cut short so that `tar` fails on it: never a whole-looking archive of part of the
/// data.
#[test]
fn sigint_stops_the_archive_so_that_tar_fails() {
    use std::io::Read as _;
    let (repo, _scratch, src, _) = repo_with_big_file();
    let mut cmd = lifeboat_cmd();
    cmd.args(args![
        "dump",
        "--repo",
        &repo.path,
        "--archive",
        "tar",
        "latest",
        &src
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    // The first bytes: it is streaming, and blocked on the full pipe with most of the data
    // still to read (8 MiB of chunks against a 1 MiB buffer and the pipe's 64 KiB).
    let mut archive = vec![0u8; 4096];
    stdout
        .read_exact(&mut archive)
        .expect("the archive's beginning");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("kill");
    stdout.read_to_end(&mut archive).expect("the rest");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    let t = tar_with_input(&["-t".as_ref()], &archive);
    assert!(
        !t.status.success(),
        "tar took an interrupted archive ({} bytes) for a whole one",
        archive.len()
    );
}

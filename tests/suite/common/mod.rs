//! Shared fixtures for the end-to-end tests.
//!
//! Everything here drives the real `lifeboat` binary as a child process and
//! inspects the file system directly; nothing reaches into the library.
#![allow(dead_code)]

pub mod backends;
pub mod craft;
pub mod damaged_source;
pub mod faulty;
pub mod logind;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use filetime::FileTime;
use rand::{rngs::StdRng, RngCore, SeedableRng};
use serde_json::Value;
use tempfile::TempDir;

/// Builds a `Vec<OsString>` from a mix of `&str`, `String`, `&Path`, `&PathBuf`, ….
#[macro_export]
macro_rules! args {
    ($($x:expr),* $(,)?) => {
        vec![$(::std::ffi::OsString::from($x)),*]
    };
}

/// No single lifeboat invocation in this suite should come close to this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lifeboat")
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The password of every test repository.
pub const PASSWORD: &str = "correct horse battery staple";

/// Sets a clean lifeboat environment on `cmd`: no repository, the test password, and cheap
/// key stretching (Argon2id with 64 KiB and one pass: tests open repositories hundreds of
/// times; the default takes half a second each).
pub fn lifeboat_env_for(cmd: &mut Command) {
    for var in [
        "LIFEBOAT_REPOSITORY",
        "LIFEBOAT_PASSWORD_FILE",
        "LIFEBOAT_RECOVERY_KIT",
        "LIFEBOAT_NEW_PASSWORD",
        "LIFEBOAT_NEW_PASSWORD_FILE",
        "CREDENTIALS_DIRECTORY",
    ] {
        cmd.env_remove(var);
    }
    // Cloud tests cache metadata; keep it out of the user's cache.
    cmd.env(
        "LIFEBOAT_CACHE_DIR",
        std::env::temp_dir().join("lifeboat-test-cache"),
    );
    cmd.env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("LIFEBOAT_KDF_MEMORY_KIB", "64")
        .env("LIFEBOAT_KDF_ITERATIONS", "1")
        .env("NO_COLOR", "1");
}

/// A `lifeboat` command with a clean environment as far as lifeboat is
/// concerned (see [`lifeboat_env_for`]).
pub fn lifeboat_cmd() -> Command {
    let mut cmd = Command::new(bin());
    lifeboat_env_for(&mut cmd);
    cmd
}

/// The captured result of one process run.
pub struct Out {
    pub cmdline: String,
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Out {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout and stderr together, for "the output names X" assertions.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout(), self.stderr())
    }

    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    #[track_caller]
    pub fn success(self) -> Self {
        self.expect_code(0)
    }

    #[track_caller]
    pub fn failure(self) -> Self {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "expected a non-zero exit code\n{self}"
        );
        self
    }

    /// Asserts that `needle` occurs on stderr.
    #[track_caller]
    pub fn stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr().contains(needle),
            "expected stderr to contain {needle:?}\n{self}"
        );
        self
    }

    /// stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document: {e}\n{self}"))
    }

    /// stdout parsed as JSON lines (one JSON value per non-empty line).
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON: {e}: {l:?}\n{self}"))
            })
            .collect()
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn clip(s: String) -> String {
            const MAX: usize = 6000;
            if s.len() <= MAX {
                s
            } else {
                let mut end = MAX;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}… [{} more bytes]", &s[..end], s.len() - end)
            }
        }
        writeln!(f, "command: {}", self.cmdline)?;
        writeln!(f, "exit code: {:?}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", clip(self.stdout()))?;
        write!(f, "--- stderr ---\n{}", clip(self.stderr()))
    }
}

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Runs `cmd` to completion (killing it after a generous timeout so that a
/// hang, e.g. on a fifo, fails the test instead of stalling the suite).
pub fn run_cmd(mut cmd: Command) -> Out {
    let cmdline = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmdline}: {e}"));
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait().expect("wait for child") {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{cmdline} did not finish within {COMMAND_TIMEOUT:?}");
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    Out {
        cmdline,
        code: status.code(),
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Runs `lifeboat ARGS...` with `LIFEBOAT_REPOSITORY` unset.
pub fn lifeboat(args: Vec<OsString>) -> Out {
    let mut cmd = lifeboat_cmd();
    cmd.args(args);
    run_cmd(cmd)
}

/// Runs `lifeboat ARGS...` with extra environment variables.
pub fn lifeboat_env(args: Vec<OsString>, env: &[(&str, &OsStr)]) -> Out {
    let mut cmd = lifeboat_cmd();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_cmd(cmd)
}

// ---------------------------------------------------------------------------
// Temporary directories and repositories
// ---------------------------------------------------------------------------

/// A temporary directory with a canonical path (so that "paths are made
/// absolute" cannot be confused by symlinked temp roots). On drop every
/// directory below it is made writable first, so that trees containing
/// mode-000 or read-only directories can be removed when not running as root.
pub struct Scratch {
    path: PathBuf,
    _dir: TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-test-")
            .tempdir()
            .expect("create temp dir");
        let path = fs::canonicalize(dir.path()).expect("canonicalize temp dir");
        Scratch { path, _dir: dir }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        make_dirs_writable(&self.path);
    }
}

fn make_dirs_writable(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    if let Ok(rd) = fs::read_dir(dir) {
        for entry in rd.flatten() {
            make_dirs_writable(&entry.path());
        }
    }
}

/// An initialised repository in its own temporary directory.
pub struct Repo {
    pub path: PathBuf,
    _scratch: Option<Scratch>,
}

impl Repo {
    /// Runs `lifeboat init` on a fresh path and asserts it succeeds.
    pub fn new() -> Self {
        let scratch = Scratch::new();
        let path = scratch.join("repo");
        lifeboat(args!["init", "--repo", &path]).success();
        Repo {
            path,
            _scratch: Some(scratch),
        }
    }

    /// An existing repository at `path` (not removed on drop).
    pub fn at(path: &Path) -> Self {
        Repo {
            path: path.to_path_buf(),
            _scratch: None,
        }
    }

    /// The repository opened in this process, through the library's `RepoSpec` (the
    /// password as LIFEBOAT_PASSWORD would give it).
    pub fn open(&self) -> lifeboat::Repository {
        let mut spec = lifeboat::repo::RepoSpec::new(self.path.display().to_string());
        spec.credentials.env.password = Some(("LIFEBOAT_PASSWORD", PASSWORD.into()));
        spec.open().expect("open the repository")
    }

    /// `lifeboat SUBCOMMAND --repo R REST...`
    pub fn run(&self, subcommand: &str, rest: Vec<OsString>) -> Out {
        let mut all = args![subcommand, "--repo", &self.path];
        all.extend(rest);
        lifeboat(all)
    }

    /// `backup --json REST...`; asserts exit 0 and returns the summary object.
    #[track_caller]
    pub fn backup(&self, rest: Vec<OsString>) -> Value {
        let (out, summary) = self.backup_raw(rest);
        let out = out.success();
        let summary = summary.unwrap_or_else(|| panic!("no summary line\n{out}"));
        assert_eq!(
            summary["errors"].as_array().map(Vec::len),
            Some(0),
            "a clean backup reported errors\n{out}"
        );
        summary
    }

    /// `backup --json REST...` without judging the exit code; returns the
    /// output and the summary object, if one was printed. Checks the shape of
    /// the JSON stream: every line is an object with `type` "progress" or
    /// "summary", and the summary (if any) is the last line.
    #[track_caller]
    pub fn backup_raw(&self, rest: Vec<OsString>) -> (Out, Option<Value>) {
        let mut all = args!["--json"];
        all.extend(rest);
        let out = self.run("backup", all);
        let summary = parse_backup_stream(&out);
        (out, summary)
    }

    /// `snapshots --json REST...`; asserts exit 0 and returns the array.
    #[track_caller]
    pub fn snapshots(&self, rest: Vec<OsString>) -> Vec<Value> {
        let mut all = args!["--json"];
        all.extend(rest);
        let out = self.run("snapshots", all).success();
        match out.json() {
            Value::Array(items) => items,
            other => panic!("snapshots --json did not print an array: {other}\n{out}"),
        }
    }

    /// `restore SNAPSHOT --target TARGET REST...`
    pub fn restore(&self, snapshot: &str, target: &Path, rest: Vec<OsString>) -> Out {
        let mut all = args![snapshot, "--target", target];
        all.extend(rest);
        self.run("restore", all)
    }

    /// `check REST...`
    pub fn check(&self, rest: Vec<OsString>) -> Out {
        self.run("check", rest)
    }

    /// `ls SNAPSHOT REST...`
    pub fn ls(&self, snapshot: &str, rest: Vec<OsString>) -> Out {
        let mut all = args![snapshot];
        all.extend(rest);
        self.run("ls", all)
    }

    /// All pack files under `data/`, as (path, id) pairs.
    pub fn packs(&self) -> Vec<(PathBuf, String)> {
        let mut packs = Vec::new();
        let data = self.path.join("data");
        for sub in fs::read_dir(&data).expect("read data/").flatten() {
            if !sub.file_type().expect("file type").is_dir() {
                continue;
            }
            for pack in fs::read_dir(sub.path()).expect("read data/xx").flatten() {
                if pack.file_type().expect("file type").is_file() {
                    let id = pack.file_name().to_string_lossy().into_owned();
                    packs.push((pack.path(), id));
                }
            }
        }
        packs.sort();
        packs
    }

    /// The largest pack under `data/` (path, id).
    #[track_caller]
    pub fn largest_pack(&self) -> (PathBuf, String) {
        self.packs()
            .into_iter()
            .max_by_key(|(p, _)| fs::metadata(p).expect("stat pack").len())
            .expect("the repository has no pack files")
    }
}

/// Validates the `backup --json` stream and returns its summary object.
#[track_caller]
pub fn parse_backup_stream(out: &Out) -> Option<Value> {
    let lines = out.json_lines();
    let mut summary = None;
    for (i, line) in lines.iter().enumerate() {
        assert!(line.is_object(), "JSON line {i} is not an object\n{out}");
        match line["type"].as_str() {
            Some("progress") => {}
            Some("summary") => {
                assert_eq!(
                    i,
                    lines.len() - 1,
                    "the summary is not the last line\n{out}"
                );
                summary = Some(line.clone());
            }
            other => panic!("JSON line {i} has unexpected type {other:?}\n{out}"),
        }
    }
    summary
}

/// Reads a u64 field of a JSON object, failing loudly when it is absent.
#[track_caller]
pub fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field:?} is not an unsigned integer in {v}"))
}

#[track_caller]
pub fn string(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field:?} is not a string in {v}"))
        .to_owned()
}

pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where restoring `source` (an absolute path) into `target` puts it.
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").expect("source path is absolute"))
}

/// The machine's host name, as lifeboat should record it by default.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .expect("gethostname")
        .to_string_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------------
// Building source trees
// ---------------------------------------------------------------------------

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; len];
    rng.fill_bytes(&mut buf);
    buf
}

pub fn write_file(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent dirs");
    }
    fs::write(path, content).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
}

pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {path:?}: {e}"));
}

/// Sets atime and mtime of `path` without following symlinks.
pub fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    let t = FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(path, t, t)
        .unwrap_or_else(|e| panic!("set times on {path:?}: {e}"));
}

pub fn symlink(target: impl AsRef<Path>, link: &Path) {
    std::os::unix::fs::symlink(target.as_ref(), link)
        .unwrap_or_else(|e| panic!("symlink {link:?}: {e}"));
}

pub fn mkfifo(path: &Path, mode: u32) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(mode))
        .unwrap_or_else(|e| panic!("mkfifo {path:?}: {e}"));
    set_mode(path, mode);
}

pub fn file_hash(path: &Path) -> String {
    let data = fs::read(path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    blake3::hash(&data).to_hex().to_string()
}

/// Gives every entry below and including `root` a distinct mtime with a
/// non-zero nanosecond part (symlinks included, not followed). Run this last:
/// creating entries changes their parent directory's mtime.
pub fn stamp_mtimes(root: &Path, base_secs: i64) {
    let mut paths = Vec::new();
    collect_paths(root, &mut paths);
    paths.sort();
    for (i, p) in paths.iter().enumerate() {
        let i = i as i64;
        let nanos = (123_456_789 + i * 1_000_003) % 1_000_000_000;
        set_mtime(p, base_secs + i * 3_607, nanos as u32);
    }
}

fn collect_paths(path: &Path, out: &mut Vec<PathBuf>) {
    out.push(path.to_path_buf());
    let meta = fs::symlink_metadata(path).expect("lstat");
    if meta.is_dir() {
        for entry in fs::read_dir(path).expect("read_dir").flatten() {
            collect_paths(&entry.path(), out);
        }
    }
}

/// Facts about a built tree that tests need.
pub struct TreeFacts {
    /// Number of regular files (each hardlinked name counts once per name).
    pub regular_files: usize,
    /// Sum of regular file sizes (per name).
    pub total_bytes: u64,
    /// Relative path of the sparse file, if any.
    pub sparse: Option<PathBuf>,
}

/// Builds, under `root` (which must not exist yet), a tree holding every kind
/// of entry lifeboat promises to restore.
pub fn build_everything_tree(root: &Path) -> TreeFacts {
    fs::create_dir(root).expect("create root");
    let p = |rel: &str| root.join(rel);

    // Regular files of all sizes and modes.
    write_file(&p("empty.txt"), b"");
    write_file(&p("small.txt"), b"hello, lifeboat\n");
    write_file(&p(".hidden"), b"dotfile\n");
    write_file(&p("secret.txt"), b"top secret\n");
    set_mode(&p("secret.txt"), 0o600);
    write_file(&p("script.sh"), b"#!/bin/sh\necho hi\n");
    set_mode(&p("script.sh"), 0o755);
    write_file(&p("readonly.txt"), b"do not touch\n");
    set_mode(&p("readonly.txt"), 0o444);
    // Several chunks (average chunk ~1 MiB, max 4 MiB).
    write_file(&p("big.bin"), &random_bytes(6 * MIB as usize, 1));
    // Compressible data larger than one chunk, plus a duplicate of it.
    let text: Vec<u8> = b"lifeboat keeps your data afloat\n"
        .iter()
        .copied()
        .cycle()
        .take(3 * MIB as usize)
        .collect();
    write_file(&p("text.txt"), &text);
    write_file(&p("nested/text-copy.txt"), &text);

    // A sparse file: 16 MiB long, 4 KiB of data at 8 MiB.
    {
        let path = p("sparse.img");
        let mut f = fs::File::create(&path).expect("create sparse");
        f.set_len(16 * MIB).expect("set_len");
        f.seek(SeekFrom::Start(8 * MIB)).expect("seek");
        f.write_all(&random_bytes(4096, 2))
            .expect("write sparse data");
    }

    // Directories: nested, empty, sticky world-writable, private, read-only.
    write_file(&p("nested/a/b/c/deep.txt"), b"deep down\n");
    fs::create_dir(p("nested/a/empty-inner")).expect("mkdir");
    fs::create_dir(p("empty_dir")).expect("mkdir");
    write_file(&p("sticky/inside.txt"), b"sticky\n");
    set_mode(&p("sticky"), 0o1777);
    write_file(&p("private/key"), b"private key\n");
    set_mode(&p("private/key"), 0o400);
    set_mode(&p("private"), 0o700);
    write_file(&p("readonly_dir/inside.txt"), b"in a read-only dir\n");

    // Extended attributes on a file and a directory.
    write_file(&p("xattr.txt"), b"has xattrs\n");
    xattr::set(p("xattr.txt"), "user.comment", b"a comment").expect("setxattr");
    xattr::set(p("xattr.txt"), "user.binary", &[0u8, 1, 2, 0xff]).expect("setxattr");
    xattr::set(p("xattr.txt"), "user.empty", b"").expect("setxattr");
    fs::create_dir(p("xattr_dir")).expect("mkdir");
    xattr::set(p("xattr_dir"), "user.dir", b"yes").expect("setxattr");

    // Symlinks: relative, absolute, dangling, loops, to a directory.
    fs::create_dir(p("links")).expect("mkdir");
    symlink("../small.txt", &p("links/relative"));
    symlink(p("small.txt"), &p("links/absolute"));
    symlink("does/not/exist", &p("links/dangling"));
    symlink(
        "/nonexistent/lifeboat/target",
        &p("links/dangling-absolute"),
    );
    symlink("loop_b", &p("links/loop_a"));
    symlink("loop_a", &p("links/loop_b"));
    symlink("self", &p("links/self"));
    symlink("../nested", &p("links/dir_link"));

    // Hardlinks: three names for one inode, across directories.
    write_file(&p("hard_1"), b"one inode, three names\n");
    fs::hard_link(p("hard_1"), p("nested/hard_2")).expect("hard link");
    fs::hard_link(p("hard_1"), p("links/hard_3")).expect("hard link");

    // A fifo.
    mkfifo(&p("fifo"), 0o640);

    // Names that are not UTF-8, or contain a newline, or other odd bytes.
    let raw = |bytes: &[u8]| root.join(OsStr::from_bytes(bytes));
    write_file(&raw(b"caf\xe9.txt"), b"latin-1 name\n");
    fs::create_dir(raw(b"dir\xff\xfe")).expect("mkdir non-utf8");
    write_file(
        &raw(b"dir\xff\xfe/\x80\x81.bin"),
        b"inside a non-utf8 dir\n",
    );
    write_file(&p("new\nline.txt"), b"newline in the name\n");
    write_file(&p(" leading space"), b"space\n");
    write_file(&p("tab\tand*star?"), b"glob characters\n");
    write_file(&p("-dash"), b"dash\n");

    // Ownership (only root can give files away).
    if is_root() {
        write_file(&p("owned.txt"), b"owned by someone else\n");
        std::os::unix::fs::chown(p("owned.txt"), Some(1234), Some(5678)).expect("chown");
        fs::create_dir(p("owned_dir")).expect("mkdir");
        std::os::unix::fs::chown(p("owned_dir"), Some(4321), Some(8765)).expect("chown");
        symlink("small.txt", &p("owned_link"));
        std::os::unix::fs::lchown(p("owned_link"), Some(1111), Some(2222)).expect("lchown");
    }

    // Set-id bits (set after any chown, which clears them).
    write_file(&p("setuid.sh"), b"#!/bin/sh\n");
    write_file(&p("setgid_dir/inside.txt"), b"in a setgid dir\n");
    if is_root() {
        std::os::unix::fs::chown(p("setuid.sh"), Some(1234), Some(5678)).expect("chown");
        std::os::unix::fs::chown(p("setgid_dir"), Some(1234), Some(5678)).expect("chown");
    }
    set_mode(&p("setuid.sh"), 0o4755);
    set_mode(&p("setgid_dir"), 0o2775);

    // A hardlink whose other name lies outside the backed-up tree: restored
    // as a plain file.
    let outside = root.with_file_name(format!(
        "{}-outside-link",
        root.file_name().expect("root name").to_string_lossy()
    ));
    write_file(&outside, b"linked from outside the tree\n");
    fs::hard_link(&outside, p("linked_from_outside")).expect("hard link");

    // Read-only directory last: nothing more gets created inside it.
    set_mode(&p("readonly_dir"), 0o555);
    set_mode(root, 0o755);

    stamp_mtimes(root, 1_500_000_000);
    // Timestamps before the epoch and far in the future.
    write_file(&p("times/ancient.txt"), b"1969\n");
    write_file(&p("times/future.txt"), b"2200\n");
    set_mtime(&p("times/ancient.txt"), -31_536_000, 999_999_999);
    set_mtime(&p("times/future.txt"), 7_258_118_400, 1);
    set_mtime(&p("times"), -1, 500);
    // Creating times/ touched the root's mtime: stamp it again.
    set_mtime(root, 1_499_999_999, 1);

    let facts = facts_of(root);
    let sparse_meta = fs::metadata(p("sparse.img")).expect("stat sparse");
    assert!(
        sparse_meta.blocks() * 512 < MIB,
        "test setup: the file system did not keep sparse.img sparse"
    );
    TreeFacts {
        sparse: Some(PathBuf::from("sparse.img")),
        ..facts
    }
}

/// Builds a tree of regular files and directories only (for counting tests):
/// `count_small` random files of 10..60 KiB spread over a few directories, and
/// `big.bin` of `big_len` random bytes. All mtimes are in the past.
pub fn build_plain_tree(root: &Path, count_small: usize, big_len: usize, seed: u64) -> TreeFacts {
    fs::create_dir_all(root).expect("create root");
    let dirs = ["", "sub", "sub/deeper", "other"];
    for i in 0..count_small {
        let dir = dirs[i % dirs.len()];
        let len = 10 * KIB as usize + (i * 7919) % (50 * KIB as usize);
        write_file(
            &root.join(dir).join(format!("file-{i:03}.dat")),
            &random_bytes(len, seed * 1000 + i as u64),
        );
    }
    if big_len > 0 {
        write_file(
            &root.join("big.bin"),
            &random_bytes(big_len, seed * 1000 + 999),
        );
    }
    stamp_mtimes(root, 1_400_000_000);
    facts_of(root)
}

/// Counts regular files and their bytes below `root`.
pub fn facts_of(root: &Path) -> TreeFacts {
    let tree = scan_tree(root);
    let files: Vec<&Entry> = tree.values().filter(|e| e.kind == Kind::File).collect();
    TreeFacts {
        regular_files: files.len(),
        total_bytes: files.iter().map(|e| e.size).sum(),
        sparse: None,
    }
}

// ---------------------------------------------------------------------------
// Scanning and comparing trees
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// Everything observable about one directory entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub mtime: (i64, i64),
    /// BLAKE3 of the content, for regular files.
    pub content: Option<String>,
    /// For symlinks: the link target, unresolved.
    pub link: Option<OsString>,
    /// `user.*` extended attributes.
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
}

/// Scans `root` recursively without following symlinks. Keys are paths
/// relative to `root`; `root` itself has the empty path.
pub fn scan_tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    scan_tree_except(root, &[])
}

/// Like [`scan_tree`], skipping the relative paths in `ignored` and
/// everything below them (they are not even opened).
pub fn scan_tree_except(root: &Path, ignored: &[PathBuf]) -> BTreeMap<PathBuf, Entry> {
    let mut map = BTreeMap::new();
    scan_into(root, PathBuf::new(), ignored, &mut map);
    map
}

fn scan_into(path: &Path, rel: PathBuf, ignored: &[PathBuf], map: &mut BTreeMap<PathBuf, Entry>) {
    if within(&rel, ignored) {
        return;
    }
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {path:?}: {e}"));
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_socket() {
        Kind::Socket
    } else if ft.is_char_device() {
        Kind::CharDevice
    } else {
        Kind::BlockDevice
    };
    let content = (kind == Kind::File).then(|| file_hash(path));
    let link = (kind == Kind::Symlink).then(|| {
        fs::read_link(path)
            .unwrap_or_else(|e| panic!("readlink {path:?}: {e}"))
            .into_os_string()
    });
    let mut xattrs = BTreeMap::new();
    // `xattr::list`/`get` do not follow symlinks.
    if let Ok(names) = xattr::list(path) {
        for name in names {
            if name.as_bytes().starts_with(b"user.") {
                let value = xattr::get(path, &name).ok().flatten().unwrap_or_default();
                xattrs.insert(name, value);
            }
        }
    }
    map.insert(
        rel.clone(),
        Entry {
            kind,
            perm: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            blocks: meta.blocks(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            content,
            link,
            xattrs,
            dev: meta.dev(),
            ino: meta.ino(),
            nlink: meta.nlink(),
        },
    );
    if kind == Kind::Dir {
        let mut children: Vec<_> = fs::read_dir(path)
            .unwrap_or_else(|e| panic!("read_dir {path:?}: {e}"))
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        children.sort();
        for name in children {
            scan_into(&path.join(&name), rel.join(&name), ignored, map);
        }
    }
}

/// Groups of relative paths (size > 1) that share an inode.
pub fn hardlink_groups(tree: &BTreeMap<PathBuf, Entry>) -> BTreeSet<BTreeSet<PathBuf>> {
    let mut by_inode: BTreeMap<(u64, u64), BTreeSet<PathBuf>> = BTreeMap::new();
    for (rel, e) in tree {
        if e.kind != Kind::Dir {
            by_inode
                .entry((e.dev, e.ino))
                .or_default()
                .insert(rel.clone());
        }
    }
    by_inode.into_values().filter(|g| g.len() > 1).collect()
}

fn within(rel: &Path, ignored: &[PathBuf]) -> bool {
    ignored
        .iter()
        .any(|i| !i.as_os_str().is_empty() && rel.starts_with(i))
}

/// Compares `expected` (a source tree) and `actual` (a restored tree) and
/// returns every difference found, in readable form. Compared: the set of
/// entries, file type, permission bits, mtime to the nanosecond (every entry,
/// symlinks and directories included), content of regular files, symlink
/// targets, `user.*` xattrs, hardlink grouping, and uid/gid when running as
/// root. Relative paths in `ignored` (and everything below them) are skipped
/// on both sides.
pub fn tree_differences(expected: &Path, actual: &Path, ignored: &[PathBuf]) -> Vec<String> {
    let exp = scan_tree_except(expected, ignored);
    let act = scan_tree_except(actual, ignored);
    let check_owner = is_root();
    let mut diffs = Vec::new();
    for (rel, e) in &exp {
        let Some(a) = act.get(rel) else {
            diffs.push(format!("{rel:?}: missing ({:?} in the source)", e.kind));
            continue;
        };
        if e.kind != a.kind {
            diffs.push(format!("{rel:?}: type {:?}, expected {:?}", a.kind, e.kind));
            continue;
        }
        if e.kind == Kind::File {
            if e.size != a.size {
                diffs.push(format!("{rel:?}: size {}, expected {}", a.size, e.size));
            }
            if e.content != a.content {
                diffs.push(format!("{rel:?}: content differs"));
            }
        }
        if e.kind != Kind::Symlink && e.perm != a.perm {
            diffs.push(format!("{rel:?}: mode {:o}, expected {:o}", a.perm, e.perm));
        }
        if e.mtime != a.mtime {
            diffs.push(format!(
                "{rel:?} ({:?}): mtime {}.{:09}, expected {}.{:09}",
                e.kind, a.mtime.0, a.mtime.1, e.mtime.0, e.mtime.1
            ));
        }
        if e.link != a.link {
            diffs.push(format!(
                "{rel:?}: link target {:?}, expected {:?}",
                a.link, e.link
            ));
        }
        if e.xattrs != a.xattrs {
            diffs.push(format!(
                "{rel:?}: xattrs {:?}, expected {:?}",
                a.xattrs, e.xattrs
            ));
        }
        if check_owner && (e.uid, e.gid) != (a.uid, a.gid) {
            diffs.push(format!(
                "{rel:?}: owner {}:{}, expected {}:{}",
                a.uid, a.gid, e.uid, e.gid
            ));
        }
    }
    for (rel, a) in &act {
        if !exp.contains_key(rel) {
            diffs.push(format!("{rel:?}: unexpected {:?} in the restore", a.kind));
        }
    }
    let (eg, ag) = (hardlink_groups(&exp), hardlink_groups(&act));
    if eg != ag {
        diffs.push(format!("hardlink groups {ag:?}, expected {eg:?}"));
    }
    diffs
}

/// Asserts that the restored tree `actual` equals the source tree `expected`.
#[track_caller]
pub fn assert_trees_equal(expected: &Path, actual: &Path) {
    assert_trees_equal_except(expected, actual, &[]);
}

#[track_caller]
pub fn assert_trees_equal_except(expected: &Path, actual: &Path, ignored: &[PathBuf]) {
    assert!(
        fs::symlink_metadata(actual).is_ok(),
        "restored tree {actual:?} does not exist"
    );
    let diffs = tree_differences(expected, actual, ignored);
    assert!(
        diffs.is_empty(),
        "restored tree {actual:?} differs from {expected:?}:\n  {}",
        diffs.join("\n  ")
    );
}

/// A fingerprint of everything below `root` (hidden entries included): type,
/// mode, size, content, link target, inode and mtime of every non-directory.
/// Used to assert that a command left a directory exactly as it was.
pub fn fingerprint(root: &Path) -> BTreeMap<PathBuf, String> {
    scan_tree(root)
        .into_iter()
        .map(|(rel, e)| {
            let detail = if e.kind == Kind::Dir {
                format!("dir mode={:o}", e.perm)
            } else {
                format!(
                    "{:?} mode={:o} size={} content={:?} link={:?} ino={} mtime={}.{}",
                    e.kind, e.perm, e.size, e.content, e.link, e.ino, e.mtime.0, e.mtime.1
                )
            };
            (rel, detail)
        })
        .collect()
}

/// Asserts two fingerprints are equal, listing the differences.
#[track_caller]
pub fn assert_fingerprint_unchanged(
    before: &BTreeMap<PathBuf, String>,
    after: &BTreeMap<PathBuf, String>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diffs.push(format!("{k:?} disappeared")),
            Some(w) if w != v => diffs.push(format!("{k:?} changed: {v} -> {w}")),
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            diffs.push(format!("{k:?} appeared"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what} changed:\n  {}",
        diffs.join("\n  ")
    );
}

/// Relative paths (non-root) of everything below `root`.
pub fn relative_paths(root: &Path) -> BTreeSet<PathBuf> {
    scan_tree(root)
        .into_keys()
        .filter(|k| !k.as_os_str().is_empty())
        .collect()
}

// ---------------------------------------------------------------------------
// Damaging a repository
// ---------------------------------------------------------------------------

/// Flips (inverts) the byte at `offset` of `path`.
pub fn flip_byte(path: &Path, offset: u64) {
    let meta = fs::metadata(path).expect("stat");
    let mode = meta.permissions().mode();
    set_mode(path, mode | 0o200);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut byte).expect("read byte");
    byte[0] ^= 0xff;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&byte).expect("write byte");
    f.sync_all().expect("sync");
    drop(f);
    set_mode(path, mode & 0o7777);
}

/// A source with one 8 MiB random file `big.bin` and a few small files, backed
/// up into a fresh repository. Returns (repo, scratch, source dir, snapshot).
pub fn repo_with_big_file() -> (Repo, Scratch, PathBuf, Value) {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    fs::create_dir(&src).expect("mkdir src");
    write_file(&src.join("big.bin"), &random_bytes(8 * MIB as usize, 42));
    write_file(&src.join("a.txt"), b"alpha\n");
    write_file(&src.join("b.txt"), b"bravo\n");
    write_file(&src.join("sub/c.txt"), b"charlie\n");
    stamp_mtimes(&src, 1_600_000_000);
    let summary = repo.backup(args![&src]);
    (repo, scratch, src, summary)
}

/// Damages the pack holding most of big.bin's data by flipping one byte in
/// the middle of the largest pack (random data does not compress, so that
/// pack is made almost entirely of big.bin's chunks and its middle lies
/// within one of them). Returns the pack id.
pub fn corrupt_largest_pack(repo: &Repo) -> String {
    let (path, id) = repo.largest_pack();
    let len = fs::metadata(&path).expect("stat pack").len();
    assert!(
        len > 4 * MIB,
        "test setup: largest pack is only {len} bytes"
    );
    flip_byte(&path, len / 2);
    id
}

// ---------------------------------------------------------------------------
// The S3 test server (moto, started by tests/run.sh)
// ---------------------------------------------------------------------------

pub fn required_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the suite with `bash tests/run.sh`, which starts the S3 and Azure servers")
    })
}

/// The S3 test server's endpoint (`http://127.0.0.1:PORT`).
pub fn s3_endpoint() -> String {
    required_env("LIFEBOAT_TEST_S3_ENDPOINT")
}

/// Environment for a `lifeboat` process that reaches the S3 test server.
pub fn s3_env() -> Vec<(&'static str, String)> {
    s3_env_at(&s3_endpoint())
}

/// Environment for a `lifeboat` process that reaches the S3 test server at `endpoint` (the
/// server itself, or a proxy in front of it).
pub fn s3_env_at(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ]
}

/// Options for in-process [`lifeboat::storage::CloudStorage`] on the S3 test server.
pub fn s3_options() -> std::collections::HashMap<String, String> {
    s3_options_at(&s3_endpoint())
}

/// Options for in-process [`lifeboat::storage::CloudStorage`] on the S3 test server at
/// `endpoint` (the server itself, or a proxy in front of it).
pub fn s3_options_at(endpoint: &str) -> std::collections::HashMap<String, String> {
    [
        ("access_key_id", "test"),
        ("secret_access_key", "test"),
        ("region", "us-east-1"),
        ("endpoint", endpoint),
        ("allow_http", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// In-process storage for the S3 repository `url` reached at `endpoint`: object_store's own
/// retries cut to two and a 20-second request timeout, so a test sees faults quickly.
pub fn s3_storage_at(endpoint: &str, url: &str) -> std::sync::Arc<dyn lifeboat::storage::Storage> {
    use lifeboat::storage::{CloudOptions, CloudStorage, CloudUrl};
    let parsed = CloudUrl::parse(url).expect("url").expect("a cloud url");
    let opts = CloudOptions {
        options: s3_options_at(endpoint),
        max_retries: 2,
        retry_timeout: std::time::Duration::from_secs(10),
        request_timeout: std::time::Duration::from_secs(20),
    };
    std::sync::Arc::new(CloudStorage::new(&parsed, url, &opts).expect("s3 storage"))
}

/// Init options that make tests fast: 1 MiB packs, the cheapest key derivation.
pub fn fast_init() -> lifeboat::repo::InitOptions {
    lifeboat::repo::InitOptions {
        pack_size: 1 << 20,
        kdf: lifeboat::repo::KdfSetting::CHEAPEST,
        ..lifeboat::repo::InitOptions::default()
    }
}

/// A fresh repository URL on the S3 test server (nothing is created).
pub fn s3_url(prefix: &str) -> String {
    format!(
        "s3://{}/{prefix}-{:08x}",
        required_env("LIFEBOAT_TEST_S3_BUCKET"),
        rand::random::<u32>()
    )
}

/// A `lifeboat` command with the S3 test server's environment.
pub fn lifeboat_s3_cmd() -> Command {
    let mut cmd = lifeboat_cmd();
    for (k, v) in s3_env() {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `lifeboat ARGS...` against the S3 test server.
pub fn lifeboat_s3(args: Vec<OsString>) -> Out {
    let mut cmd = lifeboat_s3_cmd();
    cmd.args(args);
    run_cmd(cmd)
}

/// The BLAKE3 of every regular file below `root`, by relative path: what a restore of a
/// snapshot of `root` must give back.
pub fn content_map(root: &Path) -> BTreeMap<PathBuf, String> {
    scan_tree(root)
        .into_iter()
        .filter_map(|(rel, e)| e.content.map(|c| (rel, c)))
        .collect()
}

/// Asserts, through the library, that `check --read-data` finds `repo` clean (every pack read
/// and every chunk verified); `what` names the case in the failure.
#[track_caller]
pub fn assert_reads_clean(repo: &lifeboat::repo::Repository, what: &str) {
    let report = lifeboat::ops::check::check(
        repo,
        &lifeboat::ops::check::CheckOptions {
            read_data: true,
            read_data_subset: None,
            threads: 0,
        },
        std::sync::Arc::default(),
    )
    .unwrap_or_else(|e| panic!("{what}: check failed to run: {e}"));
    assert!(report.is_ok(), "{what}: {:?}", report.errors);
}

/// Runs lifeboat as an unprivileged user (nobody) when we are root, since
/// root reads files whatever their mode.
pub fn lifeboat_unprivileged(args: Vec<std::ffi::OsString>, home: &Path) -> Out {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()]);
        c
    } else {
        Command::new(bin())
    };
    lifeboat_env_for(&mut cmd);
    cmd.args(args)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join(".cache"));
    run_cmd(cmd)
}

/// Reads the file `rel` beneath `root` one directory at a time (through `/proc/self/fd`), so
/// paths of any length can be read.
pub fn read_deep(root: &Path, rel: &Path) -> Vec<u8> {
    let mut dir = fs::File::open(root).expect("open root");
    let comps: Vec<_> = rel.components().collect();
    let (last, dirs) = comps.split_last().expect("a file name");
    for c in dirs {
        let p = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir));
        dir = fs::File::open(Path::new(&p).join(c)).expect("open a level");
    }
    let p = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir));
    fs::read(Path::new(&p).join(last)).expect("read the deepest file")
}

/// Panics unless `out` is text for people: UTF-8, and no control character but the line
/// break (no C0 control, DEL or C1 control), and no line that a name forged.
#[track_caller]
pub fn assert_clean(what: &str, out: &[u8]) {
    let text = std::str::from_utf8(out).unwrap_or_else(|e| {
        panic!(
            "{what} is not UTF-8 ({e}): {:?}",
            String::from_utf8_lossy(out)
        )
    });
    if let Some(c) = text.chars().find(|&c| c != '\n' && c.is_control()) {
        panic!("{what} holds the raw control character {c:?}: {text:?}");
    }
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("[lifeboat] forged line")),
        "{what} holds a forged line: {text:?}"
    );
}

// ---------------------------------------------------------------------------
// File systems of a test's own
// ---------------------------------------------------------------------------

/// A tmpfs of a given size, unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size_mib: u64) -> Self {
        std::fs::create_dir_all(path).expect("mkdir mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0755")])
            .arg("lifeboat-test")
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount(8): {e}"));
        assert!(
            out.status.success(),
            "cannot mount a {size_mib} MiB tmpfs at {}: {}\nThis test needs root (CAP_SYS_ADMIN) to \
             mount a file system of its own; run the suite as root, as CI does",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Bytes free on the file system.
    pub fn free(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.path).expect("statvfs");
        st.blocks_available() * st.fragment_size()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Runs `cmd` (output discarded), sends SIGTERM after `after`, and returns its exit code;
/// fails the test if it finished before the signal or runs on a minute after it.
pub fn sigterm_after(mut cmd: Command, after: Duration) -> Option<i32> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(after);
    if let Some(st) = child.try_wait().expect("wait") {
        panic!("finished before the signal: {st}");
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).expect("kill");
    let signalled = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st.code();
        }
        if signalled.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running a minute after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

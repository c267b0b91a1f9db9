//! `lifeboat mount DIR` (issue 21): a read-only FUSE view of the repository, by id, host, job
//! and time; every chunk verified before any of its bytes is returned, EIO (never wrong bytes)
//! on damage; SIGINT/SIGTERM unmount and exit 0. Run as root (mount(2) without fusermount3).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::common::*;

/// Whether a file system is mounted at `dir` (per /proc/self/mountinfo).
fn is_mounted(dir: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.to_string_lossy();
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(dir.as_ref()))
}

/// A `lifeboat mount` child process, its mount in place. On drop (a failing test too) the
/// mount is detached (`umount -l`) and the process killed, so no test leaves a mount behind.
struct Mounted {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Mounted {
    /// Starts `lifeboat mount --repo R EXTRA... DIR` and waits (60 s at most) for the view.
    #[track_caller]
    fn start(repo: &Repo, dir: &Path, extra: Vec<OsString>) -> Mounted {
        fs::create_dir_all(dir).expect("mount point");
        let log = dir.with_extension("log");
        let mut cmd = lifeboat_cmd();
        cmd.arg("mount")
            .arg("--repo")
            .arg(&repo.path)
            .args(extra)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log"));
        let child = cmd.spawn().expect("spawn lifeboat mount");
        let mut m = Mounted {
            child,
            dir: dir.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if is_mounted(dir) && dir.join("ids").is_dir() {
                return m;
            }
            if let Some(status) = m.child.try_wait().expect("try_wait") {
                panic!(
                    "lifeboat mount exited ({status}) before mounting:\n{}",
                    m.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no mount at {dir:?} after 60 s:\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (30 s at most) for the process to exit; its exit code.
    #[track_caller]
    fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "lifeboat mount still runs after 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig` and waits for the exit code.
    #[track_caller]
    fn signal(&mut self, sig: nix::sys::signal::Signal) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("kill");
        self.wait()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The single entry of directory `dir`.
#[track_caller]
fn only_entry(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {dir:?}: {e}"))
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "{dir:?}: {entries:?}");
    entries[0].clone()
}

/// The names in directory `dir`, sorted.
#[track_caller]
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {dir:?}: {e}"))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// `path` (absolute) inside a snapshot's root directory `root`.
fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").expect("absolute"))
}

/// Every entry of a snapshot, as the mount shows it, is what was backed up: the set of names,
/// types, modes, owners, mtimes to the nanosecond (before the epoch too), content of every
/// file, symlink targets, user xattrs and hard-link groups (the names of one source inode
/// share an inode in the mount); and the same snapshot under jobs/<job>/latest. A file of
/// several chunks reads right sequentially in 128 KiB reads and at random offsets and lengths
/// (across chunk boundaries, past the end).
#[test]
fn mount_shows_a_snapshot_as_it_was_backed_up() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_everything_tree(&src);
    let summary = repo.backup(args!["--job", "etc", &src]);
    let id = string(&summary, "snapshot_id");
    assert!(is_hex(&id, 64), "{summary}");

    let mnt = scratch.join("mnt");
    let m = Mounted::start(&repo, &mnt, args![]);
    assert_eq!(names(&mnt), ["hosts", "ids", "jobs", "snapshots"]);
    let root = mnt.join("ids").join(&id);
    assert_trees_equal(&src, &inside(&root, &src));
    assert_trees_equal(&src, &inside(&mnt.join("jobs/etc/latest"), &src));

    let big = fs::read(src.join("big.bin")).expect("source");
    let file = fs::File::open(inside(&root, &src.join("big.bin"))).expect("open in the mount");
    let mut sequential = Vec::new();
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = file
            .read_at(&mut buf, sequential.len() as u64)
            .expect("read");
        if n == 0 {
            break;
        }
        sequential.extend_from_slice(&buf[..n]);
    }
    assert!(sequential == big, "sequential reads differ from the source");
    let mut rng = StdRng::seed_from_u64(21);
    for _ in 0..200 {
        let offset = rng.gen_range(0..big.len() as u64 + 1000);
        let len = rng.gen_range(1..3 * 1024 * 1024);
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = file
                .read_at(&mut buf[got..], offset + got as u64)
                .expect("read");
            if n == 0 {
                break;
            }
            got += n;
        }
        let from = (offset as usize).min(big.len());
        let want = &big[from..(from + len).min(big.len())];
        assert!(
            &buf[..got] == want,
            "{len} bytes at {offset}: {got} bytes read, differing from the source"
        );
    }
    drop(file);
    // Read-only: nothing can be written or created.
    let err = fs::OpenOptions::new()
        .write(true)
        .open(inside(&root, &src.join("small.txt")))
        .expect_err("write");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let err = fs::write(root.join("new"), b"x").expect_err("create");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    drop(m);
}

/// Snapshots are under ids/<id>, hosts/<host>/<time>, jobs/<job>/<time> (snapshots without a
/// job are not under jobs/) and snapshots/<time> (two in the same second would get `-1`: see
/// the unit test `snapshots_by_time_with_latest`); `latest`
/// in a host's or job's directory links to its newest, whose content it shows. The filters
/// (--job, --host, --tag, --path) leave the other snapshots out of every directory. A host
/// named to escape ("../../x", "a/b") is one safe directory inside hosts/.
#[test]
fn layout_by_id_host_job_and_time_with_latest_and_filters() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let (db, etc) = (scratch.join("db"), scratch.join("etc"));
    write_file(&db.join("dump.sql"), b"first\n");
    write_file(&etc.join("hosts"), b"127.0.0.1 localhost\n");
    let run = |extra: Vec<OsString>| string(&repo.backup(extra), "snapshot_id");
    let db1 = run(args!["--host", "web1", "--job", "db", &db]);
    write_file(&db.join("dump.sql"), b"second\n");
    let db2 = run(args![
        "--host", "web1", "--job", "db", "--tag", "nightly", &db
    ]);
    let etc1 = run(args!["--host", "web1", "--job", "etc", &etc]);
    let hand = run(args!["--host", "web2", &etc]);
    let evil = run(args!["--host", "../../x", &etc]);
    let slash = run(args!["--host", "a/b", &etc]);

    let mnt = scratch.join("mnt");
    let m = Mounted::start(&repo, &mnt, args![]);
    let mut ids = vec![
        db1.clone(),
        db2.clone(),
        etc1.clone(),
        hand.clone(),
        evil.clone(),
        slash.clone(),
    ];
    ids.sort();
    assert_eq!(names(&mnt.join("ids")), ids);
    assert_eq!(
        names(&mnt.join("hosts")),
        ["..%2F..%2Fx", "a%2Fb", "web1", "web2"]
    );
    assert_eq!(names(&mnt.join("jobs")), ["db", "etc"], "no job: not here");
    assert_eq!(names(&mnt.join("snapshots")).len(), 6);
    let web1 = names(&mnt.join("hosts/web1"));
    assert_eq!(web1.len(), 4, "{web1:?}");
    assert!(web1.contains(&"latest".to_string()));
    for n in web1.iter().filter(|n| *n != "latest") {
        assert!(
            n.len() >= 20 && n.as_bytes()[10] == b'T' && n[..20].ends_with('Z'),
            "{n}: a time as 2026-12-07T10:15:00Z (-N)"
        );
    }
    // Backups within one second are told apart by a suffix, never hidden.
    let db_times = names(&mnt.join("jobs/db"));
    assert_eq!(db_times.len(), 3, "{db_times:?}");
    let latest = fs::read_link(mnt.join("jobs/db/latest")).expect("latest link");
    assert_eq!(
        latest.to_string_lossy(),
        db_times[1],
        "the newest of {db_times:?}"
    );
    assert_eq!(
        fs::read(inside(&mnt.join("jobs/db/latest"), &db.join("dump.sql"))).expect("read"),
        b"second\n"
    );
    assert_eq!(
        fs::read(inside(&mnt.join("ids").join(&db1), &db.join("dump.sql"))).expect("read"),
        b"first\n"
    );
    // The hostile hosts: one directory each, inside hosts/, holding their snapshot.
    for (host, id) in [("..%2F..%2Fx", &evil), ("a%2Fb", &slash)] {
        let dir = mnt.join("hosts").join(host);
        let entries = names(&dir);
        assert_eq!(
            entries.len(),
            2,
            "{host}: one snapshot and latest: {entries:?}"
        );
        assert_eq!(
            fs::read(inside(&dir.join("latest"), &etc.join("hosts"))).expect("read"),
            b"127.0.0.1 localhost\n"
        );
        assert!(mnt.join("ids").join(id).is_dir());
    }
    assert!(!scratch.join("x").exists() && !mnt.join("x").exists());
    drop(m);

    // Filters: only what they leave, everywhere.
    for (extra, want) in [
        (args!["--job", "db"], vec![db1.clone(), db2.clone()]),
        (args!["--tag", "nightly"], vec![db2.clone()]),
        (
            args!["--host", "web1", "--path", etc.join("hosts")],
            vec![etc1.clone()],
        ),
    ] {
        let mnt = scratch.join(format!("mnt-{}", extra[1].to_string_lossy()));
        let m = Mounted::start(&repo, &mnt, extra.clone());
        let mut want = want;
        want.sort();
        assert_eq!(names(&mnt.join("ids")), want, "{extra:?}");
        assert_eq!(names(&mnt.join("snapshots")).len(), want.len(), "{extra:?}");
        assert_eq!(names(&mnt.join("hosts")), ["web1"], "{extra:?}");
        drop(m);
    }
}

/// A damaged pack: reading the file whose chunk it holds fails with EIO, and every byte read
/// before the error is the file's own (never wrong bytes); the other files read right and the
/// mount stays up.
#[test]
fn a_damaged_pack_is_eio_for_its_file_and_the_rest_still_reads() {
    let (repo, scratch, src, summary) = repo_with_big_file();
    corrupt_largest_pack(&repo);
    let id = string(&summary, "snapshot_id");
    let mnt = scratch.join("mnt");
    let m = Mounted::start(&repo, &mnt, args![]);
    let root = mnt.join("ids").join(&id);
    let source = fs::read(src.join("big.bin")).expect("source");
    let file = fs::File::open(inside(&root, &src.join("big.bin"))).expect("open");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 128 * 1024];
    let err = loop {
        match file.read_at(&mut buf, got.len() as u64) {
            Ok(0) => panic!("the whole file was read although a chunk of it is damaged"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        source.starts_with(&got),
        "the {} bytes read before the error are not the file's beginning",
        got.len()
    );
    // The same read again: still EIO (nothing wrong was cached).
    let again = file.read_at(&mut buf, got.len() as u64).expect_err("again");
    assert_eq!(again.raw_os_error(), Some(libc::EIO));
    drop(file);
    for (f, want) in [
        ("a.txt", &b"alpha\n"[..]),
        ("b.txt", b"bravo\n"),
        ("sub/c.txt", b"charlie\n"),
    ] {
        assert_eq!(fs::read(inside(&root, &src.join(f))).expect(f), want, "{f}");
    }
    assert!(is_mounted(&mnt));
    assert!(
        m.log().contains("EIO"),
        "the failed read is logged:\n{}",
        m.log()
    );
    drop(m);
}

/// SIGTERM and SIGINT unmount the view and exit 0, releasing the repository lock held while
/// mounted; so does an operator's `umount DIR`. A mount in use (a file open in it) is detached
/// on SIGTERM, still exit 0, and no mount is left behind.
#[test]
fn signals_and_umount_end_the_mount_cleanly() {
    use nix::sys::signal::Signal;
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("f.txt"), b"content\n");
    repo.backup(args![&src]);
    let locks = || {
        fs::read_dir(repo.path.join("locks"))
            .expect("locks")
            .count()
    };
    let mnt = scratch.join("mnt");

    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let mut m = Mounted::start(&repo, &mnt, args![]);
        assert_eq!(locks(), 1, "a shared lock while mounted");
        assert_eq!(m.signal(sig), Some(0), "{sig}:\n{}", m.log());
        assert!(!is_mounted(&mnt), "{sig}: still mounted");
        assert_eq!(locks(), 0, "{sig}: the lock is released");
        assert!(m.log().contains("unmounted"), "{}", m.log());
    }

    let mut m = Mounted::start(&repo, &mnt, args![]);
    let status = Command::new("umount").arg(&mnt).status().expect("umount");
    assert!(status.success());
    assert_eq!(m.wait(), Some(0), "{}", m.log());
    assert_eq!(locks(), 0);
    drop(m);

    let mut m = Mounted::start(&repo, &mnt, args![]);
    let snapshot = only_entry(&mnt.join("ids"));
    let open = fs::File::open(inside(&snapshot, &src.join("f.txt"))).expect("open");
    assert_eq!(m.signal(Signal::SIGTERM), Some(0), "{}", m.log());
    assert!(!is_mounted(&mnt), "detached");
    assert!(m.log().contains("detached"), "{}", m.log());
    drop(open);
    assert_eq!(locks(), 0);
}

/// A mount point that cannot take the mount (missing, a file, not empty) is refused with what
/// to do, before the repository is opened: no password is asked for.
#[test]
fn a_bad_mount_point_is_refused_before_the_password() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    write_file(&scratch.join("file"), b"x");
    write_file(&scratch.join("full/inside"), b"x");
    for (dir, says) in [
        ("missing", "does not exist: create an empty directory"),
        ("file", "is not a directory"),
        ("full", "is not empty"),
    ] {
        let mut cmd = lifeboat_cmd();
        cmd.env_remove("LIFEBOAT_PASSWORD")
            .stdin(Stdio::null())
            .args(args!["mount", "--repo", &repo.path, scratch.join(dir)]);
        let out = run_cmd(cmd).expect_code(1);
        assert!(out.stderr().contains(says), "{dir}: {out}");
        assert!(!out.stderr().contains("password"), "{dir}: {out}");
    }
    assert_eq!(
        fs::read(scratch.join("full/inside")).expect("untouched"),
        b"x"
    );
}

/// A hostile repository (case 8): entries named `..`, `a/b`, with NUL, empty, or longer than
/// a name can be are left out of the listings, and the safe ones around them are shown; a
/// host with NUL, `/` and `..` and an empty job name are one safe directory each; a file
/// whose chunk the index lacks, and one whose chunks hold fewer bytes than its listing says,
/// fail with EIO when read; an mtime of i64::MAX seconds is shown as it is. No panic: the
/// mount stays up and SIGTERM still ends it with exit 0.
#[test]
fn hostile_names_and_listings_in_a_repository_stay_inside_the_mount() {
    use lifeboat::repo::{BlobKind, Node, NodeKind, Timestamp};
    let repo = Repo::new();
    let file = |name: &[u8], content: Vec<lifeboat::id::BlobId>, size: u64| {
        let mut n = Node::new(name.to_vec(), NodeKind::File);
        n.mode = 0o644;
        n.content = content;
        n.size = size;
        n
    };
    let mut c = crate::common::craft::Crafter::new(&repo.path);
    let data = c.blob(BlobKind::Data, b"safe\n");
    let absent = lifeboat::id::BlobId([7; 32]);
    let mut far = file(b"far-future.txt", vec![data], 5);
    far.mtime = Timestamp {
        sec: i64::MAX,
        nsec: u32::MAX,
    };
    let root = c.tree(vec![
        file(b"..", vec![data], 5),
        file(b".", vec![data], 5),
        file(b"", vec![data], 5),
        file(b"a/b", vec![data], 5),
        file(b"nul\0byte", vec![data], 5),
        file(&[b'n'; 300], vec![data], 5),
        file(b"ok.txt", vec![data], 5),
        file(b"missing-chunk.bin", vec![absent], 5),
        file(b"short.bin", vec![data], 9),
        far,
    ]);
    let crafted = c.snapshot(root);
    // The same tree as a snapshot of a hostile host and an empty job name.
    let c = crate::common::craft::Crafter::new(&repo.path);
    let mut s = c
        .repo
        .load_snapshot(&lifeboat::id::SnapshotId::from_hex(&crafted).expect("id"))
        .expect("load");
    s.host = "\0/../..".into();
    s.job = Some(String::new());
    c.repo.save_snapshot(&s).expect("save");

    let scratch = Scratch::new();
    let mnt = scratch.join("mnt");
    let mut m = Mounted::start(&repo, &mnt, args![]);
    let root = mnt.join("ids").join(&crafted);
    assert_eq!(
        names(&root),
        ["far-future.txt", "missing-chunk.bin", "ok.txt", "short.bin"]
    );
    assert_eq!(fs::read(root.join("ok.txt")).expect("ok"), b"safe\n");
    assert_eq!(
        fs::metadata(root.join("far-future.txt"))
            .expect("stat")
            .modified()
            .expect("mtime"),
        std::time::UNIX_EPOCH + Duration::new(i64::MAX as u64, 999_999_999),
        "the stored time, its nanoseconds clamped"
    );
    for bad in ["missing-chunk.bin", "short.bin"] {
        let err = fs::read(root.join(bad)).expect_err(bad);
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{bad}: {err}");
    }
    assert_eq!(names(&mnt.join("hosts")), ["%00%2F..%2F..", "crafted"]);
    assert_eq!(names(&mnt.join("jobs")), ["(empty)"]);
    let evil = mnt.join("hosts/%00%2F..%2F..");
    assert_eq!(
        fs::read(evil.join("latest/ok.txt")).expect("via the hostile host"),
        b"safe\n"
    );
    assert!(is_mounted(&mnt));
    assert_eq!(
        m.signal(nix::sys::signal::Signal::SIGTERM),
        Some(0),
        "{}",
        m.log()
    );
    assert!(!m.log().contains("panicked"), "{}", m.log());
}

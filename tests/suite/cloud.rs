//! The backend conformance suite: the same checks against a local directory, a real S3 server
//! (moto) and a real Azure Blob server (Azurite), over HTTP. `tests/run.sh` starts both servers
//! and sets LIFEBOAT_TEST_S3_ENDPOINT / LIFEBOAT_TEST_S3_BUCKET and LIFEBOAT_TEST_AZURITE_URL /
//! LIFEBOAT_TEST_AZURE_CONTAINER; without them these tests fail, saying so.
//!
//! Also: faults injected under the retry layer (503s, resets, stalls, truncated bodies, lost
//! acknowledgements) are retried to success, permanent faults fail cleanly, and the repository
//! stays valid.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::backends::{backends, local, s3};
use crate::common::faulty::{Faults, FaultyStorage};
use crate::common::wire::WireProxy;
use crate::common::*;
use lifeboat::ops::backup::{backup, BackupOptions};
use lifeboat::ops::check::{check, CheckOptions};
use lifeboat::ops::restore::{restore, RestoreOptions};
use lifeboat::repo::{Credentials, Repository};
use lifeboat::storage::{FileKind, RetryPolicy, RetryingStorage, Storage};

/// Replaces an object by a copy with one byte flipped (create-only storage: remove, then
/// create).
fn flip_byte(storage: &dyn Storage, kind: FileKind, name: &str, at: usize) {
    let mut data = storage.read(kind, name).expect("read");
    let i = at.min(data.len() - 1);
    data[i] ^= 0x20;
    storage.remove(kind, name).expect("remove");
    assert!(storage.create(kind, name, &data).expect("create"));
}

/// RELIABILITY case 4: end to end on local disk, S3 and Azure, including a flipped byte in a pack: check --read-data names it, restore refuses and leaves the target as it was.
#[test]
fn end_to_end_conformance_on_every_backend() {
    for b in backends() {
        let scratch = Scratch::new();
        let src = scratch.join("src");
        build_plain_tree(&src, 20, 3 << 20, 11);
        let url = b.url("e2e");
        let repo = args!["--repo", &url];
        let with = |cmd: &str, rest: Vec<OsString>| {
            let mut a = args![cmd];
            a.extend(repo.clone());
            a.extend(rest);
            b.run(a)
        };
        with("init", args![]).success();
        with("init", args![]).expect_code(1); // not twice
        let first = with("backup", args!["--json", &src]).success();
        let first = parse_backup_stream(&first).expect("summary");
        assert_eq!(num(&first, "files_new"), 21, "{}: {first}", b.name);
        let again = with("backup", args!["--json", &src]).success();
        let again = parse_backup_stream(&again).expect("summary");
        assert_eq!(num(&again, "files_unchanged"), 21, "{}: {again}", b.name);
        assert_eq!(
            num(&again, "bytes_read"),
            0,
            "{}: incremental reads nothing",
            b.name
        );
        write_file(
            &src.join("changed.txt"),
            b"a new file after the first backups\n",
        );
        with("backup", args![&src]).success();

        let target = scratch.join("target");
        with("restore", args!["latest", "--target", &target]).success();
        assert_trees_equal(&src, &restored(&target, &src));
        with("check", args!["--read-data"]).success();

        // A damaged pack: check names it, restore refuses and leaves the target as it was.
        let storage = b.storage(&url);
        let packs = storage.list(FileKind::Pack).expect("list");
        let (largest, _) = packs
            .iter()
            .max_by_key(|(_, size)| *size)
            .expect("a pack")
            .clone();
        flip_byte(storage.as_ref(), FileKind::Pack, &largest, 1000);
        let out = with("check", args!["--read-data"]).expect_code(1);
        assert!(
            out.all_output().contains(&largest),
            "{}: {}",
            b.name,
            out.all_output()
        );
        let target2 = scratch.join("target2");
        std::fs::create_dir(&target2).expect("mkdir");
        let before = fingerprint(&target2);
        let out = with("restore", args!["latest", "--target", &target2]).expect_code(1);
        assert!(
            out.stderr().contains(&largest),
            "{}: {}",
            b.name,
            out.stderr()
        );
        assert_fingerprint_unchanged(&before, &fingerprint(&target2), "the target");
    }
}
/// RELIABILITY case 17: eight concurrent create-only writes of one name: exactly one wins (local, S3, Azure).
#[test]
fn eight_way_create_race_has_exactly_one_winner() {
    for b in backends() {
        let url = b.url("race");
        let s = b.storage(&url);
        s.create_layout().expect("layout");
        let wins: Vec<bool> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let s = &s;
                    sc.spawn(move || {
                        s.create(FileKind::Lock, "contended", &[i; 100])
                            .expect("create")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(
            wins.iter().filter(|w| **w).count(),
            1,
            "{}: {wins:?}",
            b.name
        );
    }
}

#[test]
fn odd_prefixes_and_repository_names_work() {
    for b in backends().into_iter().filter(|b| b.name != "local") {
        let scratch = Scratch::new();
        let src = scratch.join("src");
        build_plain_tree(&src, 3, 0, 5);
        let url = format!("{}/odd prefix ü+%/repo", b.url("odd"));
        b.run(args!["init", "--repo", &url]).success();
        b.run(args!["backup", "--repo", &url, &src]).success();
        let target = scratch.join("t");
        b.run(args![
            "restore", "--repo", &url, "latest", "--target", &target
        ])
        .success();
        assert_trees_equal(&src, &restored(&target, &src));
    }
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 12,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(100),
        total: Duration::from_secs(60),
    }
}

/// Backup, restore and check through a storage with `faults` under the retry layer.
fn run_through(s: Arc<dyn Storage>, src: &Path, target: &Path) -> lifeboat::Result<()> {
    let repo = Repository::init(s.clone(), &fast_init(), Some(b"pw"))?;
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        host: "faulty".into(),
        ..BackupOptions::default()
    };
    let done = backup(&repo, &opts, Arc::default())?;
    let repo = Repository::open(s, || Ok(Credentials::Password(b"pw".to_vec().into())))?;
    let index = repo.load_index()?;
    let ropts = RestoreOptions {
        target: target.to_path_buf(),
        ..RestoreOptions::default()
    };
    let report = restore(&repo, &index, &done.snapshot.tree, &ropts, Arc::default())?;
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            read_data_subset: None,
            threads: 0,
        },
        Arc::default(),
    )?;
    assert!(report.is_ok(), "{:?}", report.errors);
    Ok(())
}

/// RELIABILITY case 15: 503s, connection resets, stalls, truncated bodies and lost acknowledgements injected under the retry layer, on local disk and the S3 server: backup, restore and check --read-data succeed.
#[test]
fn transient_faults_are_retried_and_the_repository_stays_valid() {
    for b in [local(), s3()] {
        let scratch = Scratch::new();
        let src = scratch.join("src");
        build_plain_tree(&src, 30, 5 << 20, 21);
        let url = b.url("faults");
        let faults = Faults {
            throttle: 0.08,
            reset: 0.05,
            stall: 0.02,
            stall_for: Duration::from_millis(30),
            truncate: 0.05,
            lost_ack: 0.05,
            ..Faults::default()
        };
        let faulty = Arc::new(FaultyStorage::new(b.storage(&url), faults, 7));
        let s: Arc<dyn Storage> = Arc::new(RetryingStorage::new(faulty.clone(), quick_retries()));
        let target = scratch.join("target");
        run_through(s, &src, &target).unwrap_or_else(|e| panic!("{}: {e}", b.name));
        assert_trees_equal(&src, &restored(&target, &src));
        let counts = faulty.counts();
        assert!(
            counts.injected >= 5,
            "{}: faults were injected: {counts:?}",
            b.name
        );
    }
}

/// RELIABILITY case 15: 403s are permanent: the backup fails with an error naming the object, not retried forever, no snapshot; the repository checks clean and the next backup succeeds (local and S3).
#[test]
fn permanent_faults_fail_cleanly_and_leave_a_valid_repository() {
    for b in [local(), s3()] {
        let scratch = Scratch::new();
        let src = scratch.join("src");
        build_plain_tree(&src, 10, 3 << 20, 31);
        let url = b.url("forbidden");
        let clean = b.storage(&url);
        let repo = Repository::init(clean.clone(), &fast_init(), Some(b"pw")).expect("init");
        // Every third call is refused with 403: the backup must fail with a storage error
        // naming an object, write no snapshot, and not retry forever.
        let faults = Faults {
            forbid: 0.34,
            ..Faults::default()
        };
        let faulty: Arc<dyn Storage> = Arc::new(RetryingStorage::new(
            Arc::new(FaultyStorage::new(clean.clone(), faults, 3)),
            quick_retries(),
        ));
        let failing = Repository::open(faulty, || Ok(Credentials::Password(b"pw".to_vec().into())));
        let result = failing.and_then(|r| {
            backup(
                &r,
                &BackupOptions {
                    paths: vec![src.clone()],
                    host: "h".into(),
                    ..BackupOptions::default()
                },
                Arc::default(),
            )
        });
        let err = result.expect_err("a 403 is permanent");
        assert!(err.to_string().contains("403"), "{}: {err}", b.name);
        assert!(!err.is_retryable());
        assert!(
            repo.load_snapshots().expect("list").is_empty(),
            "{}: no snapshot",
            b.name
        );
        assert_reads_clean(&repo, b.name);
        // And a backup through the healthy storage succeeds afterwards.
        backup(
            &repo,
            &BackupOptions {
                paths: vec![src.clone()],
                host: "h".into(),
                ..BackupOptions::default()
            },
            Arc::default(),
        )
        .expect("backup after the fault");
    }
}

#[test]
fn metadata_cache_spares_downloads_and_can_be_deleted() {
    let b = s3();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 40, 0, 41);
    let url = b.url("cache");
    let cache_dir = scratch.join("cache");
    let counted = Arc::new(FaultyStorage::new(b.storage(&url), Faults::default(), 1));
    let storage: Arc<dyn Storage> = counted.clone();
    let open = |cache: Option<&Path>| {
        Repository::open(storage.clone(), || {
            Ok(Credentials::Password(b"pw".to_vec().into()))
        })
        .expect("open")
        .with_cache(cache)
    };
    let opts = BackupOptions {
        paths: vec![src.clone()],
        host: "cached".into(),
        ..BackupOptions::default()
    };
    Repository::init(storage.clone(), &fast_init(), Some(b"pw")).expect("init");
    backup(&open(Some(&cache_dir)), &opts, Arc::default()).expect("first backup");

    // The first backup filled the cache as it wrote: an incremental backup now reads only
    // the config and the key from the storage.
    let before = counted.counts().reads;
    let second = backup(&open(Some(&cache_dir)), &opts, Arc::default()).expect("second backup");
    assert_eq!(second.snapshot.summary.files_unchanged, 40);
    let with_cache = counted.counts().reads - before;
    assert!(with_cache <= 2, "reads with a warm cache: {with_cache}");

    // Without the cache the same backup downloads index, snapshots and listings.
    let before = counted.counts().reads;
    backup(&open(None), &opts, Arc::default()).expect("backup without cache");
    let without = counted.counts().reads - before;
    assert!(without > with_cache + 2, "reads without cache: {without}");

    // The cache can be deleted at any time; a damaged entry is ignored and replaced.
    std::fs::remove_dir_all(&cache_dir).expect("rm cache");
    let repo = open(Some(&cache_dir));
    let snaps = repo.load_snapshots().expect("snapshots");
    assert_eq!(snaps.len(), 3);
    for entry in walkdir::WalkDir::new(&cache_dir).into_iter().flatten() {
        if entry.file_type().is_file()
            && !entry.file_name().to_string_lossy().starts_with("CACHEDIR")
        {
            std::fs::write(entry.path(), b"garbage").expect("damage the cache");
        }
    }
    let repo = open(Some(&cache_dir));
    assert_eq!(repo.load_snapshots().expect("snapshots").len(), 3);
    let index = repo.load_index().expect("index");
    let target = scratch.join("t");
    let ropts = RestoreOptions {
        target: target.clone(),
        ..RestoreOptions::default()
    };
    restore(&repo, &index, &snaps[2].1.tree, &ropts, Arc::default()).expect("restore");
    assert_trees_equal(&src, &restored(&target, &src));

    // --no-cache: nothing is created.
    let xdg = scratch.join("xdg");
    let mut cmd = lifeboat_cmd();
    cmd.args(args!["snapshots", "--no-cache", "--repo", &url])
        .env_remove("LIFEBOAT_CACHE_DIR")
        .env("XDG_CACHE_HOME", &xdg);
    for (k, v) in &b.env {
        cmd.env(k, v);
    }
    cmd.env("LIFEBOAT_PASSWORD", "pw");
    run_cmd(cmd).success();
    assert!(!xdg.exists(), "--no-cache created {}", xdg.display());
    let mut cmd = lifeboat_cmd();
    cmd.args(args!["snapshots", "--repo", &url])
        .env_remove("LIFEBOAT_CACHE_DIR")
        .env("XDG_CACHE_HOME", &xdg);
    for (k, v) in &b.env {
        cmd.env(k, v);
    }
    cmd.env("LIFEBOAT_PASSWORD", "pw");
    run_cmd(cmd).success();
    assert!(xdg.join("lifeboat/CACHEDIR.TAG").exists());
}

/// RELIABILITY case 17: objects past the multipart threshold are uploaded in parts and stay create-only (local, S3, Azure).
#[test]
fn large_objects_go_up_in_parts_and_stay_create_only() {
    for b in backends() {
        let url = b.url("large");
        let s = b.storage(&url);
        s.create_layout().expect("layout");
        let big = random_bytes(lifeboat::storage::cloud::MULTIPART_THRESHOLD + (5 << 20), 9);
        assert!(
            s.create(FileKind::Pack, "cd0001", &big).expect("create"),
            "{}",
            b.name
        );
        assert!(
            !s.create(FileKind::Pack, "cd0001", b"other")
                .expect("create again"),
            "{}",
            b.name
        );
        let tail = s
            .read_range(FileKind::Pack, "cd0001", big.len() as u64 - 100, 100)
            .expect("range at the end");
        assert_eq!(tail, &big[big.len() - 100..], "{}", b.name);
        assert_eq!(
            s.read(FileKind::Pack, "cd0001").expect("read").len(),
            big.len()
        );
    }
}

/// RELIABILITY case 17: a store that accepts `If-None-Match` and ignores it (as Garage 2.5
/// does) is detected at init by the real probe — the S3 server behind a proxy that drops the
/// header — and recorded; backups through it still restore (objects are content-addressed).
#[test]
fn a_store_that_ignores_create_only_is_detected_and_recorded() {
    let b = s3();
    let proxy = WireProxy::start(&s3_endpoint());
    let honest = s3_storage_at(&proxy.endpoint(), &b.url("honest"));
    let repo = Repository::init(honest, &fast_init(), Some(b"pw")).expect("init");
    assert_eq!(repo.config().storage_create_only, Some(true));
    proxy.strip_if_none_match(true);
    let lying = s3_storage_at(&proxy.endpoint(), &b.url("lying"));
    let repo = Repository::init(lying.clone(), &fast_init(), Some(b"pw")).expect("init");
    assert_eq!(repo.config().storage_create_only, Some(false));
    // Backups still work and restore (content-addressed objects), with a warning.
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 5, 0, 3);
    let target = scratch.join("t");
    let repo =
        Repository::open(lying, || Ok(Credentials::Password(b"pw".to_vec().into()))).expect("open");
    let done = backup(
        &repo,
        &BackupOptions {
            paths: vec![src.clone()],
            host: "h".into(),
            ..BackupOptions::default()
        },
        Arc::default(),
    )
    .expect("backup");
    let index = repo.load_index().expect("index");
    let ropts = RestoreOptions {
        target: target.clone(),
        ..RestoreOptions::default()
    };
    restore(&repo, &index, &done.snapshot.tree, &ropts, Arc::default()).expect("restore");
    assert_trees_equal(&src, &restored(&target, &src));
}

/// `--limit-upload` paces uploads: 3 MiB of incompressible data at 1 MiB/s cannot be stored in
/// less than about two seconds (one second of burst is allowed). A lower bound only: it checks
/// that the limit is applied, not how fast anything is.
#[test]
fn upload_limit_is_applied() {
    let b = local();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("noise.bin"), &random_bytes(3 << 20, 77));
    let url = b.url("limited");
    b.run(args!["init", "--repo", &url]).success();
    let started = std::time::Instant::now();
    b.run(args![
        "backup",
        "--repo",
        &url,
        "--limit-upload",
        "1024",
        &src
    ])
    .success();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "3 MiB at 1 MiB/s took {took:?}"
    );
    let target = scratch.join("t");
    b.run(args![
        "restore",
        "--repo",
        &url,
        "--limit-download",
        "100000",
        "latest",
        "--target",
        &target
    ])
    .success();
    assert_trees_equal(&src, &restored(&target, &src));
}

/// RELIABILITY case 19: Two hosts back up the same data into one repository at the same time, on local disk and
/// on the S3 server: both snapshots restore, and after forget + prune the shared data is
/// stored once and the repository checks clean.
#[test]
fn two_writers_share_a_repository_and_prune_keeps_what_they_need() {
    for b in [local(), s3()] {
        let scratch = Scratch::new();
        let src = scratch.join("src");
        write_file(&src.join("shared.bin"), &random_bytes(6 * MIB as usize, 21));
        build_plain_tree(&src.join("small"), 20, 0, 22);
        let url = b.url("writers");
        let with = |cmd: &str, rest: Vec<OsString>| {
            let mut a = args![cmd, "--repo", &url];
            a.extend(rest);
            b.run(a)
        };
        with("init", args![]).success();
        std::thread::scope(|s| {
            for host in ["alpha", "beta"] {
                let with = &with;
                let src = &src;
                s.spawn(move || with("backup", args![src, "--host", host]).success());
            }
        });
        // An older generation for each host, forgotten, so prune has work to do.
        write_file(&src.join("shared.bin"), &random_bytes(6 * MIB as usize, 23));
        for host in ["alpha", "beta"] {
            with("backup", args![&src, "--host", host]).success();
        }
        with("forget", args!["--keep-last", "1"]).success();
        let out = with("prune", args!["--json"]).success().json();
        assert!(num(&out, "packs_removed") > 0, "{}: {out}", b.name);
        let after = num(&out, "repository_bytes_after");
        assert!(
            after < 6 * MIB + MIB,
            "{}: the shared 6 MiB is stored once after prune, not {after} bytes",
            b.name
        );
        with("check", args!["--read-data"]).success();
        let snaps = with("snapshots", args!["--json"]).success().json();
        let snaps = snaps.as_array().cloned().unwrap_or_default();
        assert_eq!(snaps.len(), 2, "{}: {snaps:?}", b.name);
        for s in &snaps {
            let target = scratch.join(format!("t-{}", string(s, "host")));
            with("restore", args![string(s, "id"), "--target", &target]).success();
            assert_trees_equal(&src, &restored(&target, &src));
        }
    }
}

/// RELIABILITY case 6, on local disk and on the S3 server: a pack named by the index but
/// missing from storage is reported by `check`, and the next backup of the same data stores it
/// again instead of deduplicating against the missing copy; that new snapshot restores.
#[test]
fn a_pack_missing_from_storage_is_reported_and_stored_again_by_the_next_backup() {
    for b in [local(), s3()] {
        let scratch = Scratch::new();
        let src = scratch.join("src");
        write_file(&src.join("big.bin"), &random_bytes(6 * MIB as usize, 61));
        build_plain_tree(&src.join("small"), 5, 0, 62);
        let url = b.url("missing");
        let with = |cmd: &str, rest: Vec<OsString>| {
            let mut a = args![cmd, "--repo", &url];
            a.extend(rest);
            b.run(a)
        };
        with("init", args![]).success();
        with("backup", args![&src]).success();
        let storage = b.storage(&url);
        let (lost, size) = storage
            .list(FileKind::Pack)
            .expect("list")
            .into_iter()
            .max_by_key(|(_, size)| *size)
            .expect("a pack");
        storage.remove(FileKind::Pack, &lost).expect("remove");
        let out = with("check", args![]).expect_code(1);
        assert!(out.all_output().contains(&lost), "{}: {out}", b.name);
        // The unchanged file is read again (its chunks are gone) and stored again.
        let again = with("backup", args!["--json", &src]).success();
        let summary = parse_backup_stream(&again).expect("summary");
        assert!(
            num(&summary, "bytes_added") >= size / 2,
            "{}: the lost pack's {size} bytes were not stored again: {summary}",
            b.name
        );
        let target = scratch.join("target");
        with("restore", args!["latest", "--target", &target]).success();
        assert_trees_equal(&src, &restored(&target, &src));
    }
}

/// Counts the pack reads in flight at once; each read is held until as many as expected are in
/// flight (or no read has started for half a second), so that reads that can overlap do, on
/// any machine.
#[derive(Debug)]
struct CountsReads {
    inner: Arc<dyn Storage>,
    /// Reads are held until this many are in flight (or none started for a while).
    hold_until: usize,
    last_start: parking_lot::Mutex<std::time::Instant>,
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

impl lifeboat::storage::StorageWrapper for CountsReads {
    fn inner(&self) -> &dyn Storage {
        &*self.inner
    }
    fn read(&self, kind: FileKind, name: &str) -> lifeboat::Result<Vec<u8>> {
        self.counted(kind, || self.inner.read(kind, name))
    }
    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        len: u32,
    ) -> lifeboat::Result<Vec<u8>> {
        self.counted(kind, || self.inner.read_range(kind, name, offset, len))
    }
}

impl CountsReads {
    fn new(inner: Arc<dyn Storage>, hold_until: usize) -> Self {
        CountsReads {
            inner,
            hold_until,
            last_start: parking_lot::Mutex::new(std::time::Instant::now()),
            now: Default::default(),
            most: Default::default(),
        }
    }
    fn counted<T>(&self, kind: FileKind, f: impl FnOnce() -> T) -> T {
        use std::sync::atomic::Ordering::SeqCst;
        if kind != FileKind::Pack {
            return f();
        }
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(n, SeqCst);
        *self.last_start.lock() = std::time::Instant::now();
        // Held until the reader has as many reads going as it should (then the most in flight
        // is what it starts, however fast or slow this machine is), or until no read has
        // started for a while (the last few reads of a restore: nothing more will come).
        while self.now.load(SeqCst) < self.hold_until
            && self.last_start.lock().elapsed() < Duration::from_millis(500)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let out = f();
        self.now.fetch_sub(1, SeqCst);
        out
    }
    fn most(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A restore or `check --read-data` from cloud storage keeps more pack reads in flight than
/// there are cores (a distant store answers each after tens of milliseconds; one read per core
/// would leave the link idle), from a local repository one per core; `--download-concurrency`
/// sets the number on both, and every setting restores the same tree.
#[test]
fn restores_from_cloud_storage_keep_many_reads_in_flight() {
    let cores = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    for b in backends() {
        let scratch = Scratch::new();
        let src = scratch.join("src");
        // Incompressible, so that 1 MiB packs hold it in about 24 packs.
        for i in 0..12 {
            write_file(
                &src.join(format!("f{i}.bin")),
                &random_bytes(2 << 20, 500 + i),
            );
        }
        let url = b.url("readers");
        let storage = b.storage(&url);
        assert_eq!(storage.remote(), b.name != "local", "{}", b.name);
        let repo = Repository::init(storage.clone(), &fast_init(), Some(PASSWORD.as_bytes()))
            .expect("init");
        let opts = BackupOptions {
            paths: vec![src.clone()],
            host: "readers".into(),
            ..BackupOptions::default()
        };
        let done = backup(&repo, &opts, Arc::default()).expect("backup");
        let packs = storage.list(FileKind::Pack).expect("list").len();
        assert!(packs >= 16, "{}: {packs} packs", b.name);

        let expected = if b.name == "local" {
            cores
        } else {
            cores.max(lifeboat::storage::REMOTE_READERS)
        };
        let counting = Arc::new(CountsReads::new(storage.clone(), expected));
        assert_eq!(
            lifeboat::storage::default_readers(counting.as_ref()),
            expected,
            "{}",
            b.name
        );
        let repo = Repository::open(counting.clone(), || {
            Ok(Credentials::Password(PASSWORD.as_bytes().to_vec().into()))
        })
        .expect("open");
        let index = repo.load_index().expect("index");
        let target = scratch.join("t");
        let ropts = RestoreOptions {
            target: target.clone(),
            ..RestoreOptions::default()
        };
        let report =
            restore(&repo, &index, &done.snapshot.tree, &ropts, Arc::default()).expect("restore");
        assert!(report.damaged.is_empty(), "{:?}", report.damaged);
        assert_trees_equal(&src, &restored(&target, &src));
        assert_eq!(counting.most(), expected, "{}: reads in flight", b.name);

        let checking = Arc::new(CountsReads::new(storage.clone(), expected));
        let repo = Repository::open(checking.clone(), || {
            Ok(Credentials::Password(PASSWORD.as_bytes().to_vec().into()))
        })
        .expect("open");
        let copts = CheckOptions {
            read_data: true,
            read_data_subset: None,
            threads: 0,
        };
        let report = check(&repo, &copts, Arc::default()).expect("check");
        assert!(report.is_ok(), "{:?}", report.errors);
        assert_eq!(checking.most(), expected, "{}: check's reads", b.name);

        // The command line sets it, one read at a time or many.
        for n in ["1", "16"] {
            let target = scratch.join(format!("cli-{n}"));
            b.run(args![
                "restore",
                "--repo",
                &url,
                "--download-concurrency",
                n,
                "latest",
                "--target",
                &target
            ])
            .success();
            assert_trees_equal(&src, &restored(&target, &src));
            b.run(args![
                "check",
                "--repo",
                &url,
                "--read-data",
                "--download-concurrency",
                n
            ])
            .success();
            let drill = b
                .run(args![
                    "drill",
                    "--repo",
                    &url,
                    "--all",
                    "--download-concurrency",
                    n,
                    "--scratch",
                    scratch.join(format!("drill-{n}"))
                ])
                .success();
            assert!(
                drill
                    .stdout()
                    .starts_with("drill passed: restored 12 of 12 files"),
                "{}: {drill}",
                b.name
            );
        }
        let out = b
            .run(args![
                "restore",
                "--repo",
                &url,
                "--download-concurrency",
                "0",
                "latest",
                "--target",
                scratch.join("zero")
            ])
            .expect_code(2);
        assert!(
            out.stderr().contains("--download-concurrency"),
            "{}",
            out.stderr()
        );
        assert!(!scratch.join("zero").exists());
    }
}

// ---------------------------------------------------------------------------
// Missing cloud credentials (issue 21): said before any request, with what to set.
// ---------------------------------------------------------------------------

/// A loopback port that accepts TCP connections without answering them, and tells afterwards
/// whether anything connected: a connection waits in the kernel's backlog whether or not it is
/// accepted, so an empty backlog means nothing was sent there.
struct Tripwire {
    listener: std::net::TcpListener,
}

impl Tripwire {
    fn new() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        Tripwire { listener }
    }

    fn url(&self) -> String {
        format!(
            "http://{}",
            self.listener.local_addr().expect("local address")
        )
    }

    #[track_caller]
    fn assert_untouched(&self, what: &str) {
        match self.listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("{what}: a connection was made (from {peer})"),
            Err(e) => panic!("{what}: accept: {e}"),
        }
    }
}

/// A loopback port nothing listens on: a connection to it is refused at once.
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", l.local_addr().expect("local address"));
    drop(l);
    url
}

/// `lifeboat ARGS...` with no cloud credentials anywhere: every AWS_, GOOGLE_, AZURE_ and
/// metadata variable of the test's own environment removed, HOME an empty directory (no
/// gcloud credentials file), and each cloud's metadata service moved to `metadata` on the
/// loopback, so that even a regression sends nothing to a metadata address.
fn without_credentials(
    home: &Path,
    metadata: &str,
    env: &[(&str, &str)],
    args: Vec<OsString>,
) -> Out {
    let mut cmd = lifeboat_cmd();
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if ["AWS_", "GOOGLE_", "AZURE_", "GCE_", "IDENTITY_", "MSI_"]
            .iter()
            .any(|p| k.starts_with(p))
            || k == "SERVICE_ACCOUNT"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let host = metadata.trim_start_matches("http://");
    cmd.env("HOME", home)
        .env("AWS_METADATA_ENDPOINT", metadata)
        .env("GCE_METADATA_HOST", host)
        .env("GCE_METADATA_ROOT", host)
        .env("GCE_METADATA_IP", host)
        .env(
            "AZURE_MSI_ENDPOINT",
            format!("{metadata}/metadata/identity/oauth2/token"),
        )
        .env(
            "IDENTITY_ENDPOINT",
            format!("{metadata}/metadata/identity/oauth2/token"),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args);
    run_cmd(cmd)
}

/// Issue 21: an S3, GCS or Azure repository opened with no credential source fails at once
/// with exit code 1, naming the cloud's variables to set and the option that allows the
/// instance metadata service, and sends nothing: neither the storage endpoint nor the
/// metadata service (both a listening loopback port here) sees a connection.
#[test]
fn missing_cloud_credentials_are_reported_before_any_request() {
    let scratch = Scratch::new();
    let home = scratch.join("home");
    std::fs::create_dir(&home).expect("mkdir home");
    let endpoint = Tripwire::new();
    let metadata = Tripwire::new();
    let cases: Vec<(&str, Vec<OsString>, &[&str])> = vec![
        (
            "s3://bucket/repo",
            args![
                "--option",
                format!("endpoint={}", endpoint.url()),
                "--option",
                "allow_http=true",
                "--option",
                "region=eu-west-1"
            ],
            &[
                "S3 credentials",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "instance_credentials=true",
                "EC2 instance role",
            ],
        ),
        (
            "gs://bucket/repo",
            args!["--option", format!("base_url={}", endpoint.url())],
            &[
                "Google Cloud Storage credentials",
                "GOOGLE_SERVICE_ACCOUNT",
                "GOOGLE_APPLICATION_CREDENTIALS",
                "instance_credentials=true",
            ],
        ),
        (
            "az://container/repo",
            args![
                "--option",
                "account_name=devstoreaccount1",
                "--option",
                format!("endpoint={}", endpoint.url()),
                "--option",
                "allow_http=true"
            ],
            &[
                "Azure credentials",
                "AZURE_STORAGE_ACCOUNT_NAME",
                "AZURE_STORAGE_ACCOUNT_KEY",
                "SAS",
                "instance_credentials=true",
                "managed identity",
            ],
        ),
    ];
    for (url, options, needles) in cases {
        for cmd in ["snapshots", "init"] {
            let mut a = args![cmd, "--repo", url];
            a.extend(options.clone());
            let out = without_credentials(&home, &metadata.url(), &[], a).expect_code(1);
            for n in needles {
                assert!(out.stderr().contains(n), "{url} {cmd}: no {n:?}:\n{out}");
            }
            assert!(out.stderr().contains("nothing was sent"), "{out}");
            endpoint.assert_untouched(&format!("{url} {cmd}: the storage endpoint"));
            metadata.assert_untouched(&format!("{url} {cmd}: the metadata service"));
        }
    }
}

/// Issue 21: each credential source counts, so the check refuses nothing it should not. With
/// keys, a GCS bearer token, an Azure SAS or the emulator, the command gets past the check to
/// the storage, here a closed loopback port (the error is about reaching it, never the
/// credential one); `instance_credentials=true` lets the client ask the metadata service (a
/// closed loopback port too); a value that is no boolean is refused naming the option.
#[test]
fn configured_cloud_credentials_pass_the_check() {
    let scratch = Scratch::new();
    let home = scratch.join("home");
    std::fs::create_dir(&home).expect("mkdir home");
    let closed = closed_port_url();
    let metadata = closed_port_url();
    let quick = ["--option", "retry_timeout=1s"];
    /// A name, the URL, the environment and the options of one case.
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<OsString>);
    let cases: Vec<Case> = vec![
        (
            "s3 keys",
            "s3://b/r",
            vec![("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")],
            args![
                "--option",
                format!("endpoint={closed}"),
                "--option",
                "allow_http=true"
            ],
        ),
        (
            "s3 instance role",
            "s3://b/r",
            vec![],
            args![
                "--option",
                format!("endpoint={closed}"),
                "--option",
                "allow_http=true",
                "--option",
                "instance_credentials=true"
            ],
        ),
        (
            "s3 unsigned",
            "s3://b/r",
            vec![],
            args![
                "--option",
                format!("endpoint={closed}"),
                "--option",
                "allow_http=true",
                "--option",
                "skip_signature=true"
            ],
        ),
        (
            "gcs bearer token",
            "gs://b/r",
            vec![("GOOGLE_BEARER_TOKEN", "t")],
            args!["--option", format!("base_url={closed}")],
        ),
        (
            "azure sas",
            "az://c/r",
            vec![
                ("AZURE_STORAGE_ACCOUNT_NAME", "a"),
                ("AZURE_STORAGE_SAS_KEY", "sv=2022-11-02&sig=x"),
            ],
            args![
                "--option",
                format!("endpoint={closed}"),
                "--option",
                "allow_http=true"
            ],
        ),
        (
            "azure emulator",
            "az://c/r",
            vec![
                ("AZURE_STORAGE_USE_EMULATOR", "true"),
                ("AZURITE_BLOB_STORAGE_URL", closed.as_str()),
            ],
            args![],
        ),
    ];
    for (name, url, env, options) in cases {
        let mut a = args!["snapshots", "--repo", url];
        a.extend(args![quick[0], quick[1]]);
        a.extend(options);
        let out = without_credentials(&home, &metadata, &env, a).failure();
        assert!(
            !out.stderr().contains("credentials are configured"),
            "{name}: refused as without credentials:\n{out}"
        );
    }
    let out = without_credentials(
        &home,
        &metadata,
        &[],
        args![
            "snapshots",
            "--repo",
            "s3://b/r",
            "--option",
            "instance_credentials=maybe"
        ],
    )
    .expect_code(1);
    out.stderr_contains("instance_credentials");
}

/// Issue 21: with credentials in the environment an S3 repository (the moto server) works end
/// to end, HOME empty and the metadata service a tripwire it never touches.
#[test]
fn s3_with_credentials_in_the_environment_works() {
    let scratch = Scratch::new();
    let home = scratch.join("home");
    std::fs::create_dir(&home).expect("mkdir home");
    let src = scratch.join("src");
    build_plain_tree(&src, 3, 0, 3);
    let metadata = Tripwire::new();
    let env = s3_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = s3_url("creds");
    for a in [
        args!["init", "--repo", &url],
        args!["backup", "--repo", &url, &src],
        args!["snapshots", "--repo", &url],
    ] {
        without_credentials(&home, &metadata.url(), &env, a).success();
    }
    metadata.assert_untouched("the metadata service");
}

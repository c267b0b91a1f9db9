//! SIGINT/SIGTERM (the interruption flag) during backup and restore: the operation stops
//! cleanly, the repository stays valid, a later run succeeds, and a restore target is left as
//! it was (RELIABILITY case 3). One in-process test function, because the flag is
//! process-wide; and `lifeboat backup` processes sent SIGTERM, on local disk and on the S3
//! server.

#[path = "suite/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::assert_reads_clean;
use lifeboat::ops::backup::{backup, BackupOptions};
use lifeboat::ops::restore::{restore, RestoreOptions};
use lifeboat::progress::Progress;
use lifeboat::repo::{InitOptions, KdfSetting};
use lifeboat::storage::{FileKind, LocalStorage, Storage};
use lifeboat::{interrupt, Error, Repository};
use rand::{RngCore, SeedableRng};

fn make_source(dir: &Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    std::fs::create_dir_all(dir).expect("mkdir");
    for i in 0..24 {
        let mut data = vec![0u8; 2 << 20];
        rng.fill_bytes(&mut data);
        std::fs::write(dir.join(format!("f{i:02}")), data).expect("write");
    }
}

/// Runs `op` while another thread requests interruption as soon as `counter` moves.
fn interrupt_when_started<T: Send>(
    progress: &Progress,
    counter: impl Fn(&Progress) -> u64 + Sync,
    op: impl FnOnce() -> T + Send,
) -> T {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if counter(progress) > 0 {
                    interrupt::request();
                    return;
                }
                std::thread::yield_now();
            }
        });
        let out = op();
        done.store(true, Ordering::Relaxed);
        let _ = watcher.join();
        out
    })
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("walk").path().display().to_string())
        .collect();
    v.sort();
    v
}

/// RELIABILITY case 3 (in-process): an interrupted backup writes no snapshot, removes its
/// temporary pack files, leaves a repository that checks clean, and the next backup reuses
/// what it stored; an interrupted restore leaves the target as it was.
#[test]
fn interrupted_backup_and_restore_stop_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    make_source(&src);
    let storage = Arc::new(LocalStorage::new(tmp.path().join("repo")));
    let opts = InitOptions {
        pack_size: 1 << 20,
        kdf: KdfSetting::CHEAPEST,
        ..InitOptions::default()
    };
    let repo = Repository::init(storage, &opts, Some(b"pw")).expect("init");
    let backup_opts = BackupOptions {
        paths: vec![src.clone()],
        host: "h".into(),
        ..BackupOptions::default()
    };

    // Backup interrupted once it has read something: no snapshot, repository valid.
    interrupt::reset();
    let progress = Arc::new(Progress::default());
    let result = interrupt_when_started(
        &progress,
        |p| Progress::get(&p.bytes_read),
        || backup(&repo, &backup_opts, progress.clone()),
    );
    interrupt::reset();
    assert!(matches!(result, Err(Error::Interrupted)), "{result:?}");
    assert!(
        repo.load_snapshots().expect("list").is_empty(),
        "no snapshot after an interruption"
    );
    // Data packs being filled are temporary files in data/ (local repositories): an
    // interrupted backup removes its own.
    let leftovers: Vec<String> = std::fs::read_dir(tmp.path().join("repo/data"))
        .expect("data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_reads_clean(&repo, "check --read-data");

    // The next backup completes, reusing what the interrupted one stored.
    let done = backup(&repo, &backup_opts, Arc::default()).expect("backup");
    assert_eq!(done.snapshot.summary.files_new, 24);
    assert!(done.snapshot.summary.errors.is_empty());
    assert_reads_clean(&repo, "check --read-data");
    assert!(repo.storage().list(FileKind::Pack).expect("packs").len() > 10);
    let data_root: Vec<_> = std::fs::read_dir(tmp.path().join("repo/data"))
        .expect("data dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(data_root.len(), 256, "only the 256 pack directories remain");

    // Restore interrupted once it has verified something: the target is left as it was.
    let target = tmp.path().join("target");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("keep"), b"already here").expect("write");
    let before = listing(&target);
    let index = repo.load_index().expect("index");
    let progress = Arc::new(Progress::default());
    let restore_opts = RestoreOptions {
        target: target.clone(),
        threads: 1,
        ..RestoreOptions::default()
    };
    let result = interrupt_when_started(
        &progress,
        |p| Progress::get(&p.bytes_read),
        || {
            restore(
                &repo,
                &index,
                &done.snapshot.tree,
                &restore_opts,
                progress.clone(),
            )
        },
    );
    interrupt::reset();
    assert!(matches!(result, Err(Error::Interrupted)), "{result:?}");
    assert_eq!(
        listing(&target),
        before,
        "target unchanged, no staging left"
    );

    // And a restore that is not interrupted brings everything back.
    let report = restore(
        &repo,
        &index,
        &done.snapshot.tree,
        &restore_opts,
        Arc::default(),
    )
    .expect("restore");
    assert_eq!(report.files, 24);
    let restored = target.join(src.strip_prefix("/").expect("absolute"));
    for i in 0..24 {
        let name = format!("f{i:02}");
        assert_eq!(
            std::fs::read(restored.join(&name)).expect("read"),
            std::fs::read(src.join(&name)).expect("read"),
            "{name}"
        );
    }
}

/// RELIABILITY case 3: SIGTERM (what `systemctl stop` sends) to a `lifeboat backup` process
/// that has stored data, on local disk and on the S3 server: it stops well within systemd's
/// default stop timeout (90 s) with exit code 130, writes no snapshot, releases its lock, and
/// the next backup reuses what it uploaded. (The daemon's side is tests/suite/daemon.rs,
/// `sigterm_during_a_backup_stops_cleanly_and_the_next_run_reuses_the_upload`.)
#[test]
fn sigterm_stops_a_backup_process_cleanly_and_the_next_backup_reuses_its_upload() {
    use common::*;
    use std::io::BufRead;
    use std::time::{Duration, Instant};

    for on_s3 in [false, true] {
        let scratch = Scratch::new();
        let src = scratch.join("src");
        make_source(&src);
        let (url, storage): (String, Arc<dyn Storage>) = if on_s3 {
            let url = s3_url("sigterm");
            let parsed = lifeboat::storage::CloudUrl::parse(&url)
                .expect("url")
                .expect("a cloud url");
            let opts = lifeboat::storage::CloudOptions {
                options: s3_options(),
                ..Default::default()
            };
            let s = lifeboat::storage::CloudStorage::new(&parsed, &url, &opts).expect("s3");
            (url, Arc::new(s))
        } else {
            let path = scratch.join("repo");
            (
                path.display().to_string(),
                Arc::new(LocalStorage::new(path)),
            )
        };
        let where_ = if on_s3 { "s3" } else { "local" };
        let command = |rest: Vec<std::ffi::OsString>| {
            let mut cmd = if on_s3 {
                lifeboat_s3_cmd()
            } else {
                lifeboat_cmd()
            };
            cmd.args(rest);
            cmd
        };
        run_cmd(command(args![
            "init",
            "--repo",
            &url,
            "--pack-size-mib",
            "4"
        ]))
        .success();
        // Paced uploads (48 MiB at 4 MiB/s, packs of 4 MiB) keep the backup running while it
        // is stopped.
        let mut cmd = command(args![
            "backup",
            "--repo",
            &url,
            "--json",
            "--limit-upload",
            "4096",
            &src
        ]);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn backup");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut { stderr }, &mut text);
            text
        });
        // Once a progress event shows stored bytes, stop it as systemd would.
        let mut lines = std::io::BufReader::new(stdout).lines();
        let stored = lines.by_ref().map_while(Result::ok).any(|line| {
            serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["bytes_written"].as_u64())
                .is_some_and(|b| b > 0)
        });
        assert!(
            stored,
            "{where_}: the backup ended before it stored anything"
        );
        let stopped_at = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        for _ in lines {}
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                stopped_at.elapsed() < Duration::from_secs(90),
                "{where_}: the backup did not stop within systemd's stop timeout"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = err_reader.join().expect("stderr reader");
        assert_eq!(status.code(), Some(130), "{where_}: {status}: {err}");
        assert!(err.contains("interrupted"), "{where_}: {err}");
        let snapshots = run_cmd(command(args!["snapshots", "--repo", &url, "--json"])).success();
        assert_eq!(
            snapshots.json(),
            serde_json::json!([]),
            "{where_}: no snapshot"
        );
        assert!(
            storage.list(FileKind::Lock).expect("list locks").is_empty(),
            "{where_}: the stopped backup released its lock"
        );
        let uploaded = storage.list(FileKind::Pack).expect("list packs").len();
        assert!(uploaded > 0, "{where_}: packs were stored before the stop");
        run_cmd(command(args!["check", "--repo", &url, "--read-data"])).success();
        // The next backup completes and stores less than everything: it reuses the upload.
        let out = run_cmd(command(args!["backup", "--repo", &url, "--json", &src])).success();
        let summary = parse_backup_stream(&out).expect("summary");
        let total = num(&summary, "total_bytes");
        assert!(
            num(&summary, "bytes_added") < total,
            "{where_}: nothing was reused: {summary}"
        );
        run_cmd(command(args!["check", "--repo", &url, "--read-data"])).success();
    }
}

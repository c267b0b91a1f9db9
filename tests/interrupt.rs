//! SIGINT/SIGTERM (the interruption flag) during backup and restore: the operation stops
//! cleanly, the repository stays valid, a later run succeeds, and a restore target is left as
//! it was. One test function, because the flag is process-wide.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use lifeboat::backup::{backup, BackupOptions};
use lifeboat::check::{check, CheckOptions};
use lifeboat::progress::Progress;
use lifeboat::repo::{InitOptions, KdfSetting};
use lifeboat::restore::{restore, RestoreOptions};
use lifeboat::storage::{FileKind, LocalStorage};
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
    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            read_data_subset: None,
            threads: 0,
        },
        Arc::default(),
    )
    .expect("check");
    assert!(report.is_ok(), "{:?}", report.errors);

    // The next backup completes, reusing what the interrupted one stored.
    let done = backup(&repo, &backup_opts, Arc::default()).expect("backup");
    assert_eq!(done.snapshot.summary.files_new, 24);
    assert!(done.snapshot.summary.errors.is_empty());
    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            read_data_subset: None,
            threads: 0,
        },
        Arc::default(),
    )
    .expect("check");
    assert!(report.is_ok(), "{:?}", report.errors);
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

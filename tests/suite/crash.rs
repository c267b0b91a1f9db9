//! Crash loops: `lifeboat backup` and `lifeboat prune` killed with SIGKILL at random points,
//! over and over, and prune stopped dead after each of its storage writes in turn
//! (RELIABILITY cases 1 and 2).
//!
//! After every kill the next run must succeed, `check --read-data` must be clean, and every
//! snapshot that existed before a killed prune must still restore to its content.
//!
//! How many kills: each loop runs until `LIFEBOAT_CRASH_LOOPS` kills have landed while the
//! process ran (default 5; 2 for the S3 loop, or `LIFEBOAT_CRASH_LOOPS_S3`); a round whose
//! process finished before its random delay was up (which tests the end of a run) does not
//! count. The random choices (kill delays, changes to the source) come
//! from a seed printed by each test; `LIFEBOAT_CRASH_SEED` repeats them (the moment a process
//! dies still depends on the machine). The long run of docs/RELIABILITY-TESTS.md:
//!
//! ```sh
//! LIFEBOAT_CRASH_LOOPS=100 cargo test --test suite -- --nocapture --test-threads 1 \
//!     crash::backup_killed_at_random_points_next crash::prune_killed
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use lifeboat::ops::prune::{prune, PruneOptions};
use lifeboat::repo::{Credentials, Repository};
use lifeboat::storage::{FileKind, LocalStorage, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn env_count(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a count")),
        Err(_) => default,
    }
}

/// The seed of a test's random choices, printed so that a failure can be repeated.
fn seeded(test: &str) -> StdRng {
    let seed = match std::env::var("LIFEBOAT_CRASH_SEED") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("LIFEBOAT_CRASH_SEED={v:?} is not a number")),
        Err(_) => rand::random::<u64>(),
    };
    println!("{test}: seed {seed} (LIFEBOAT_CRASH_SEED={seed} repeats the random choices)");
    StdRng::seed_from_u64(seed)
}

/// Where the repository is: a local path, or a URL on the S3 test server.
struct Target {
    repo: OsString,
    s3: bool,
}

impl Target {
    fn local(path: &Path) -> Self {
        Target {
            repo: path.into(),
            s3: false,
        }
    }

    fn s3(prefix: &str) -> Self {
        Target {
            repo: s3_url(prefix).into(),
            s3: true,
        }
    }

    fn command(&self, sub: &str, rest: Vec<OsString>) -> Command {
        let mut cmd = if self.s3 {
            lifeboat_s3_cmd()
        } else {
            lifeboat_cmd()
        };
        cmd.arg(sub).arg("--repo").arg(&self.repo).args(rest);
        cmd
    }

    fn run(&self, sub: &str, rest: Vec<OsString>) -> Out {
        run_cmd(self.command(sub, rest))
    }

    fn snapshot_ids(&self) -> Vec<String> {
        let out = self.run("snapshots", args!["--json"]).success();
        out.json()
            .as_array()
            .expect("an array of snapshots")
            .iter()
            .map(|s| string(s, "id"))
            .collect()
    }

    /// Restores snapshot `id` of `src` into a scratch directory and compares every file's
    /// content with `expected`.
    #[track_caller]
    fn assert_restores(&self, id: &str, src: &Path, expected: &BTreeMap<PathBuf, String>) {
        let target = Scratch::new();
        self.run("restore", args![id, "--target", target.path()])
            .success();
        let got = content_map(&restored(target.path(), src));
        assert!(
            &got == expected,
            "snapshot {id} restores other content than was backed up: {} files, expected {}",
            got.len(),
            expected.len()
        );
    }
}

/// Starts `cmd` with its output discarded, waits `delay` and kills it with SIGKILL. Returns
/// true when the kill landed; false when the process had finished by itself (it must then
/// have succeeded).
fn kill_after(mut cmd: Command, delay: Duration, what: &str) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    std::thread::sleep(delay);
    let _ = child.kill();
    let status = child.wait().expect("wait");
    if status.signal() == Some(libc::SIGKILL) {
        return true;
    }
    assert!(
        status.success(),
        "{what} ended by itself with {status} before it was killed"
    );
    false
}

/// A random delay up to a quarter more than the last complete run took, so that kills land
/// anywhere in a run, including before it started working and (sometimes) after it ended.
fn random_delay(rng: &mut StdRng, last_run: Duration) -> Duration {
    let bound = last_run.as_millis() as u64 * 5 / 4 + 20;
    Duration::from_millis(rng.gen_range(0..=bound))
}

/// Replaces `count` of the `big-*.bin` files of `src` with new random content of 1 to 2 MiB.
fn change_big_files(src: &Path, rng: &mut StdRng, files: usize, count: usize) {
    for _ in 0..count {
        let i = rng.gen_range(0..files);
        let len = rng.gen_range(MIB as usize..2 * MIB as usize);
        write_file(
            &src.join(format!("big-{i}.bin")),
            &random_bytes(len, rng.gen()),
        );
    }
}

/// Removes a few small files and adds a few (so packs of small files become partly unused).
fn change_small_files(src: &Path, rng: &mut StdRng) {
    let dir = src.join("small");
    let mut names: Vec<PathBuf> = walkdir::WalkDir::new(&dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    names.sort();
    for _ in 0..4.min(names.len()) {
        let i = rng.gen_range(0..names.len());
        let _ = std::fs::remove_file(names.swap_remove(i));
    }
    for _ in 0..4 {
        let len = rng.gen_range(10 * KIB as usize..60 * KIB as usize);
        let name = format!("new-{:016x}.dat", rng.gen::<u64>());
        write_file(&dir.join(name), &random_bytes(len, rng.gen()));
    }
}

/// A source of `files` random files of 1 to 2 MiB (several packs of 1 MiB) and 30 small ones.
fn make_source(src: &Path, rng: &mut StdRng, files: usize) {
    for i in 0..files {
        let len = rng.gen_range(MIB as usize..2 * MIB as usize);
        write_file(
            &src.join(format!("big-{i}.bin")),
            &random_bytes(len, rng.gen()),
        );
    }
    build_plain_tree(&src.join("small"), 30, 0, rng.gen_range(0..1_000_000));
}

/// Backups of `src` into `target` killed at random points until `kills` kills have landed
/// while a backup ran; after each round, a backup runs to the end, `check --read-data` is
/// clean and the latest snapshot restores to the source.
fn backup_crash_loop(target: &Target, test: &str, kills: usize, files: usize) {
    let mut rng = seeded(test);
    let scratch = Scratch::new();
    let src = scratch.join("src");
    make_source(&src, &mut rng, files);
    target.run("init", args!["--pack-size-mib", "1"]).success();
    let started = Instant::now();
    target.run("backup", args![&src]).success();
    let mut last_run = started.elapsed();
    let mut landed = 0;
    let mut round = 0;
    while landed < kills {
        assert!(
            round < 10 * kills + 10,
            "{test}: only {landed} of {round} kills landed while a backup ran: the delays are too long"
        );
        round += 1;
        // New data for every round, so the killed backup has packs to write.
        change_big_files(&src, &mut rng, files, files / 2);
        change_small_files(&src, &mut rng);
        let full = rng.gen_bool(0.25);
        let mut rest = args![&src];
        if full {
            rest.push("--full".into());
        }
        let delay = random_delay(&mut rng, last_run);
        let killed = kill_after(target.command("backup", rest), delay, "backup");
        landed += usize::from(killed);
        println!(
            "{test} round {round}: {} after {delay:?}{}",
            if killed { "killed" } else { "finished" },
            if full { " (--full)" } else { "" }
        );
        // The next backup completes, the repository checks clean, the snapshot restores.
        let started = Instant::now();
        let out = target.run("backup", args!["--json", &src]);
        let out = out.success();
        last_run = started.elapsed();
        let summary = parse_backup_stream(&out).expect("a summary");
        assert_eq!(
            summary["errors"].as_array().map(Vec::len),
            Some(0),
            "round {round}: {out}"
        );
        target.run("check", args!["--read-data"]).success();
        let id = string(&summary, "snapshot_id");
        target.assert_restores(&id, &src, &content_map(&src));
    }
    println!("{test}: {landed} kills landed while the backup ran, in {round} rounds");
}

/// RELIABILITY case 1: `kill -9` of a backup at random points, many times over: the next backup
/// succeeds, `check --read-data` is clean (so no snapshot references missing data), the latest
/// snapshot restores to the source, leftovers are ignored by check and removed by prune.
#[test]
fn backup_killed_at_random_points_next_backup_succeeds_and_check_is_clean() {
    let scratch = Scratch::new();
    let repo = scratch.join("repo");
    let target = Target::local(&repo);
    backup_crash_loop(
        &target,
        "backup_killed (local)",
        env_count("LIFEBOAT_CRASH_LOOPS", 5),
        12,
    );
    // Leftovers of the killed runs: temporary files of the packs they were filling (check
    // ignores them; prune removes them once a day old), and unindexed packs, which prune
    // removes once older than the lock bound (here one second).
    let leftovers: Vec<String> = walkdir::WalkDir::new(&repo)
        .into_iter()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    println!(
        "temporary files left by the killed backups: {}",
        leftovers.len()
    );
    assert!(
        leftovers
            .iter()
            .all(|n| n.starts_with(".tmp-pack-") || n.starts_with(".tmp-")),
        "{leftovers:?}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let out = lifeboat_env(
        args!["prune", "--repo", &repo, "--json"],
        &[("LIFEBOAT_LOCK_STALE_AFTER", "1s".as_ref())],
    )
    .success();
    let report = out.json();
    println!("prune after the crash loop: {report}");
    lifeboat(args!["check", "--read-data", "--repo", &repo]).success();
    let check = lifeboat(args!["check", "--repo", &repo]).success();
    assert!(
        !check.all_output().contains("not named by any index"),
        "prune left unindexed packs: {check}"
    );
}

/// RELIABILITY case 1 on the S3 server: backups killed mid-upload leave a bucket that the next
/// backup completes and `check --read-data` finds clean.
#[test]
fn backup_killed_at_random_points_on_s3_next_backup_succeeds_and_check_is_clean() {
    let target = Target::s3("crash-backup");
    backup_crash_loop(
        &target,
        "backup_killed (s3)",
        env_count("LIFEBOAT_CRASH_LOOPS_S3", 2),
        8,
    );
}

/// The names of the index objects of a local repository.
fn index_names(repo: &Path) -> BTreeSet<String> {
    std::fs::read_dir(repo.join("index"))
        .expect("read index/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Starts `cmd` and kills it with SIGKILL as soon as the set of index objects changes (prune
/// wrote its new index, or removed an old one). Returns (killed, caught between writing the
/// new index and removing the last old one).
fn kill_at_index_rewrite(mut cmd: Command, repo: &Path) -> (bool, bool) {
    let before = index_names(repo);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn prune");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "prune failed by itself: {status}");
            return (false, false);
        }
        let now = index_names(repo);
        if now != before {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let after = index_names(repo);
            let mid = after.iter().any(|n| !before.contains(n))
                && after.iter().any(|n| before.contains(n));
            return (status.signal() == Some(libc::SIGKILL), mid);
        }
        assert!(Instant::now() < deadline, "prune did not finish");
        std::thread::yield_now();
    }
}

/// A repository whose snapshots each hold a different generation of `src`, with the expected
/// content of every snapshot.
struct Generations {
    repo: PathBuf,
    src: PathBuf,
    expected: BTreeMap<String, BTreeMap<PathBuf, String>>,
}

impl Generations {
    fn new(scratch: &Scratch, rng: &mut StdRng, files: usize, count: usize) -> Self {
        let repo = scratch.join("repo");
        let src = scratch.join("src");
        lifeboat(args!["init", "--repo", &repo, "--pack-size-mib", "1"]).success();
        make_source(&src, rng, files);
        let mut g = Generations {
            repo,
            src,
            expected: BTreeMap::new(),
        };
        g.backup();
        for _ in 1..count {
            g.next(rng, files);
        }
        g
    }

    fn backup(&mut self) {
        let summary = Repo::at(&self.repo).backup(args![&self.src]);
        self.expected
            .insert(string(&summary, "snapshot_id"), content_map(&self.src));
    }

    /// A new generation: some big files replaced, some small ones gone, new ones added.
    fn next(&mut self, rng: &mut StdRng, files: usize) {
        change_big_files(&self.src, rng, files, 2);
        change_small_files(&self.src, rng);
        self.backup();
    }

    /// Forgets all but the newest `keep` snapshots, so prune has packs to delete and repack.
    fn forget_all_but(&mut self, keep: usize) {
        let target = Target::local(&self.repo);
        target
            .run("forget", args!["--keep-last", keep.to_string()])
            .success();
        let left: BTreeSet<String> = target.snapshot_ids().into_iter().collect();
        self.expected.retain(|id, _| left.contains(id));
        assert_eq!(self.expected.len(), keep);
    }

    /// Every snapshot is still there and restores to its content.
    #[track_caller]
    fn assert_every_snapshot_restores(&self) {
        let target = Target::local(&self.repo);
        let ids: BTreeSet<String> = target.snapshot_ids().into_iter().collect();
        let expected: BTreeSet<String> = self.expected.keys().cloned().collect();
        assert_eq!(ids, expected, "the snapshots changed");
        for (id, content) in &self.expected {
            target.assert_restores(id, &self.src, content);
        }
    }
}

/// RELIABILITY case 2: `kill -9` during prune, at random points and right at the index rewrite
/// (prune writes one new index, then removes the old ones, then the packs), many times over,
/// each time with deletes and repacks to do: every snapshot that existed before stays and
/// restores to its content, the next prune completes and `check --read-data` is clean.
#[test]
fn prune_killed_at_random_points_and_at_the_index_rewrite_keeps_every_snapshot() {
    let test = "prune_killed";
    let mut rng = seeded(test);
    let kills = env_count("LIFEBOAT_CRASH_LOOPS", 5);
    let scratch = Scratch::new();
    let files = 8;
    let mut g = Generations::new(&scratch, &mut rng, files, 3);
    let target = Target::local(&g.repo);
    let prune_args = || args!["--max-unused", "0%"];
    let mut last_run = Duration::from_millis(800);
    let (mut landed, mut mid_rewrite) = (0, 0);
    let mut round = 0;
    // Until the kills have landed and at least one of them between writing the new index and
    // removing the last old one (about one kill at the rewrite in four lands there).
    while landed < kills || mid_rewrite == 0 {
        assert!(
            round < 10 * kills + 10,
            "{test}: only {landed} of {round} kills landed while prune ran: the delays are too long"
        );
        assert!(
            round < 10 * kills + 40 || mid_rewrite > 0,
            "{test}: in {round} rounds no kill landed between writing the new index and \
             removing the old ones"
        );
        round += 1;
        // Work for prune: a new generation, the oldest forgotten.
        g.next(&mut rng, files);
        g.forget_all_but(3);
        let at_rewrite = round % 2 == 1 || landed >= kills;
        let (killed, mid) = if at_rewrite {
            kill_at_index_rewrite(target.command("prune", prune_args()), &g.repo)
        } else {
            let delay = random_delay(&mut rng, last_run);
            let killed = kill_after(target.command("prune", prune_args()), delay, "prune");
            (killed, false)
        };
        landed += usize::from(killed);
        mid_rewrite += usize::from(mid);
        println!(
            "{test} round {round}: {}{}",
            if killed { "killed" } else { "finished" },
            if at_rewrite {
                if mid {
                    " between the new index and the last old one's removal"
                } else {
                    " at the index rewrite"
                }
            } else {
                " at a random point"
            }
        );
        g.assert_every_snapshot_restores();
        let started = Instant::now();
        let report = target.run("prune", prune_args()).success();
        last_run = started.elapsed();
        assert!(
            !report.all_output().contains("error"),
            "round {round}: {report}"
        );
        target.run("check", args!["--read-data"]).success();
        g.assert_every_snapshot_restores();
    }
    println!(
        "{test}: {landed} kills landed while prune ran, in {round} rounds; {mid_rewrite} between writing the new index and removing the old ones"
    );
}

/// A storage that stops dead before its `allowed`-th change (a create or remove): that change
/// and every later one fail, as if the process had been killed there. Reads go through.
#[derive(Debug)]
struct DiesAfter {
    inner: Arc<dyn Storage>,
    allowed: AtomicI64,
    changes: AtomicU64,
}

impl DiesAfter {
    fn new(inner: Arc<dyn Storage>, allowed: i64) -> Self {
        DiesAfter {
            inner,
            allowed: AtomicI64::new(allowed),
            changes: AtomicU64::new(0),
        }
    }

    fn change(&self, name: &str) -> lifeboat::Result<()> {
        if self.allowed.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(lifeboat::Error::Storage {
                op: "write",
                name: name.to_string(),
                cause: std::io::Error::other("the process died here (simulated)"),
            });
        }
        self.changes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl lifeboat::storage::StorageWrapper for DiesAfter {
    fn inner(&self) -> &dyn Storage {
        &*self.inner
    }
    fn create(&self, kind: FileKind, name: &str, data: &[u8]) -> lifeboat::Result<bool> {
        self.change(name)?;
        self.inner.create(kind, name, data)
    }
    fn remove(&self, kind: FileKind, name: &str) -> lifeboat::Result<()> {
        self.change(name)?;
        self.inner.remove(kind, name)
    }
    fn local_path(&self) -> Option<PathBuf> {
        self.inner.local_path()
    }
    fn clean_spool(&self, kind: FileKind, older_than: Duration) -> lifeboat::Result<usize> {
        self.change("temporary pack files")?;
        self.inner.clean_spool(kind, older_than)
    }
}

/// Copies a directory tree (files, directories; a repository has nothing else).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}

fn open_dying(repo: &Path, allowed: i64) -> (Repository, Arc<DiesAfter>) {
    let storage = Arc::new(DiesAfter::new(Arc::new(LocalStorage::new(repo)), allowed));
    let repo = Repository::open(storage.clone(), || {
        Ok(Credentials::Password(PASSWORD.as_bytes().to_vec().into()))
    })
    .expect("open");
    (repo, storage)
}

/// RELIABILITY case 2, every crash point: prune (with packs to delete and to repack, and three
/// index objects to replace) is stopped dead before each of its storage changes in turn —
/// its lock, the repacked packs, the new index, each removal of an old index, each pack
/// removal, the lock's release. After each: every snapshot is still there and verifies, the
/// next prune completes and `check --read-data` is clean.
#[test]
fn prune_stopped_before_each_of_its_storage_changes_keeps_every_snapshot() {
    let mut rng = seeded("prune_stopped");
    let scratch = Scratch::new();
    let files = 3;
    let mut g = Generations::new(&scratch, &mut rng, files, 4);
    g.forget_all_but(2);
    assert!(index_names(&g.repo).len() >= 3, "one index per backup");
    let opts = PruneOptions {
        max_unused_percent: 0.0,
        ..PruneOptions::default()
    };
    // A complete prune on a copy: how many changes it makes, and that it has work of every
    // kind.
    let probe = scratch.join("probe");
    copy_tree(&g.repo, &probe);
    let (repo, storage) = open_dying(&probe, i64::MAX);
    let report = prune(&repo, &opts, Arc::default()).expect("prune");
    let changes = storage.changes.load(Ordering::SeqCst);
    assert!(
        report.packs_removed > 0 && report.new_packs > 0 && report.index_objects_removed >= 3,
        "the prune has deletes, repacks and an index rewrite to do: {report:?}"
    );
    println!("prune_stopped: a complete prune makes {changes} storage changes: {report:?}");
    for stop_at in 0..changes {
        let copy = scratch.join(format!("stopped-{stop_at}"));
        copy_tree(&g.repo, &copy);
        let (repo, _) = open_dying(&copy, stop_at as i64);
        let result = prune(&repo, &opts, Arc::default());
        drop(repo);
        // The "dead" prune's lock names this (live) test process: remove it as `unlock` would
        // remove the lock of a dead one.
        lifeboat(args!["unlock", "--remove-all", "--repo", &copy]).success();
        let target = Target::local(&copy);
        let ids: BTreeSet<String> = target.snapshot_ids().into_iter().collect();
        assert_eq!(
            ids,
            g.expected.keys().cloned().collect::<BTreeSet<_>>(),
            "stopped before change {stop_at} ({result:?}): the snapshots changed"
        );
        for id in &ids {
            let out = target.run(
                "restore",
                args![id, "--verify-only", "--target", scratch.join("unused")],
            );
            assert_eq!(
                out.code,
                Some(0),
                "stopped before change {stop_at} of {changes}: snapshot {id} no longer restores\n{out}"
            );
        }
        target.run("prune", args!["--max-unused", "0%"]).success();
        target.run("check", args!["--read-data"]).success();
        std::fs::remove_dir_all(&copy).expect("remove copy");
    }
    // And one of them restores its content, to be sure "verifies" means what it says.
    let (id, content) = g.expected.iter().next().expect("a snapshot");
    Target::local(&g.repo).assert_restores(id, &g.src, content);
}

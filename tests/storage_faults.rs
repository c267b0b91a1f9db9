//! Storage faults (RELIABILITY cases 15, 16 and 17): how requests to an S3 endpoint that
//! throttles, refuses, or never answers are retried and bounded; prune against listings that
//! fail or span several pages; and what reaches storage being verified and written
//! create-only. Against a local directory, the S3 test server (moto, started by
//! `tests/run.sh`), and a fake S3 endpoint in this file that answers what a test tells it to.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lifeboat::backup::{backup, BackupOptions};
use lifeboat::prune::{prune, PruneOptions};
use lifeboat::repo::{InitOptions, KdfSetting, Repository};
use lifeboat::restore::{restore, RestoreOptions};
use lifeboat::storage::faulty::{Faults, FaultyStorage};
use lifeboat::storage::{
    CloudOptions, CloudStorage, CloudUrl, FileKind, LocalStorage, RetryPolicy, RetryingStorage,
    Storage,
};
use lifeboat::Error;
use parking_lot::Mutex;

// ---------------------------------------------------------------------------
// A fake S3 endpoint
// ---------------------------------------------------------------------------

/// What the fake endpoint answers to every request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// This HTTP status with an S3 error document of this code.
    Status(u16, &'static str),
    /// Reads the request and never answers (a stuck request).
    Hang,
}

/// An HTTP server on 127.0.0.1 that answers every request alike and counts them.
struct FakeS3 {
    port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeS3 {
    fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, st) = (r.clone(), st.clone());
                std::thread::spawn(move || serve(conn, answer, &r, &st));
            }
        });
        FakeS3 {
            port,
            requests,
            stop,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// A storage on this endpoint whose client retries `max_retries` times and gives each
    /// request one second.
    fn storage(&self, max_retries: usize) -> CloudStorage {
        let url = "s3://fake-bucket/repo";
        let options = [
            ("access_key_id", "test".to_string()),
            ("secret_access_key", "test".to_string()),
            ("region", "us-east-1".to_string()),
            ("endpoint", format!("http://127.0.0.1:{}", self.port)),
            ("allow_http", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let opts = CloudOptions {
            options,
            max_retries,
            retry_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(1),
        };
        let parsed = CloudUrl::parse(url).expect("url").expect("cloud url");
        CloudStorage::new(&parsed, url, &opts).expect("storage")
    }
}

impl Drop for FakeS3 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One line of a request; `None` at the end of the connection or when the server stops.
fn request_line(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<String> {
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => return Some(line),
            // A read timeout keeps what was read so far in `line`.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

/// Answers the request of one connection (each answer closes the connection).
fn serve(conn: TcpStream, answer: Answer, requests: &AtomicUsize, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut conn = conn;
    // The request line and headers.
    if request_line(&mut reader, stop).is_none() {
        return;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let mut length = 0usize;
    loop {
        let Some(line) = request_line(&mut reader, stop) else {
            return;
        };
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    match answer {
        Answer::Status(code, s3_code) => {
            let doc = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3_code}</Code>\
                 <Message>injected by the test</Message><RequestId>1</RequestId></Error>"
            );
            let reply = format!(
                "HTTP/1.1 {code} {s3_code}\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{doc}",
                doc.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
        Answer::Hang => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Runs `op` on another thread and fails the test if it has not returned within `bound`:
/// what is asserted is that it returns at all, not how fast.
fn returns_within<T: Send + 'static>(
    bound: Duration,
    what: &str,
    op: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(op());
    });
    rx.recv_timeout(bound)
        .unwrap_or_else(|_| panic!("{what} did not return within {bound:?}: not bounded"))
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        total: Duration::from_secs(30),
    }
}

/// RELIABILITY case 15: an S3 endpoint answering 503 SlowDown to everything: reads and writes
/// are retried a bounded number of times (the client's retries, and not again by lifeboat's
/// own retry layer: the two never multiply), then fail with an error naming the object.
#[test]
fn s3_slowdown_is_retried_a_bounded_number_of_times() {
    let server = FakeS3::start(Answer::Status(503, "SlowDown"));
    let storage: Arc<dyn Storage> = Arc::new(RetryingStorage::new(
        Arc::new(server.storage(3)),
        quick_retries(),
    ));
    let s = storage.clone();
    let err = returns_within(Duration::from_secs(120), "a throttled read", move || {
        s.read(FileKind::Snapshot, "0123abcd")
            .expect_err("503 to every request")
    });
    assert_eq!(server.requests(), 4, "one request and three retries: {err}");
    assert!(err.to_string().contains("snapshots/0123abcd"), "{err}");
    assert!(!err.is_retryable(), "given up on: permanent now: {err}");
    let s = storage.clone();
    let err = returns_within(Duration::from_secs(120), "a throttled write", move || {
        s.create(FileKind::Index, "4567ef", b"index")
            .expect_err("503 to every request")
    });
    assert_eq!(server.requests(), 8, "four more requests: {err}");
}

/// RELIABILITY case 15: 403 Forbidden and 404 Not Found are answered once, never retried; a
/// 404 is "does not exist", a 403 an error naming the object.
#[test]
fn s3_forbidden_and_not_found_are_not_retried() {
    let forbidden = FakeS3::start(Answer::Status(403, "AccessDenied"));
    let storage = RetryingStorage::new(Arc::new(forbidden.storage(3)), quick_retries());
    let err = storage
        .read(FileKind::Snapshot, "0123abcd")
        .expect_err("403");
    assert_eq!(forbidden.requests(), 1, "{err}");
    assert!(err.to_string().contains("snapshots/0123abcd"), "{err}");
    let err = storage
        .create(FileKind::Index, "4567ef", b"x")
        .expect_err("403");
    assert_eq!(forbidden.requests(), 2, "{err}");

    let missing = FakeS3::start(Answer::Status(404, "NoSuchKey"));
    let storage = RetryingStorage::new(Arc::new(missing.storage(3)), quick_retries());
    let err = storage
        .read(FileKind::Snapshot, "0123abcd")
        .expect_err("404");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(missing.requests(), 1);
}

/// RELIABILITY case 15: a request the server accepts and never answers is cancelled by the
/// request timeout, retried a bounded number of times, and then fails: the call returns.
#[test]
fn a_stuck_s3_request_is_cancelled_and_the_call_returns() {
    let server = FakeS3::start(Answer::Hang);
    let storage = server.storage(2);
    let err = returns_within(Duration::from_secs(120), "a stuck read", move || {
        storage
            .read(FileKind::Snapshot, "0123abcd")
            .expect_err("never answered")
    });
    let requests = server.requests();
    assert!(
        (1..=3).contains(&requests),
        "{requests} requests for one read with two retries: {err}"
    );
    assert!(err.to_string().contains("snapshots/0123abcd"), "{err}");
}

/// RELIABILITY case 15, lifeboat's own retry layer (around every backend): transient faults
/// are retried up to the policy's attempts; a 403 or a missing object is tried once.
#[test]
fn the_retry_layer_retries_transient_faults_boundedly_and_permanent_ones_never() {
    let dir = Scratch::new();
    for (name, inner) in [
        (
            "local",
            Arc::new(LocalStorage::new(dir.path())) as Arc<dyn Storage>,
        ),
        ("s3", s3_storage(&s3_url("retry"))),
    ] {
        let always = |faults: Faults| Arc::new(FaultyStorage::new(inner.clone(), faults, 1));
        let throttled = always(Faults {
            throttle: 1.0,
            ..Faults::default()
        });
        let s = RetryingStorage::new(throttled.clone(), quick_retries());
        assert!(s.read(FileKind::Snapshot, "ab").is_err());
        assert_eq!(
            throttled.counts().calls,
            5,
            "{name}: the policy's 5 attempts"
        );
        let forbidden = always(Faults {
            forbid: 1.0,
            ..Faults::default()
        });
        let s = RetryingStorage::new(forbidden.clone(), quick_retries());
        assert!(s.create(FileKind::Snapshot, "ab", b"x").is_err());
        assert_eq!(forbidden.counts().calls, 1, "{name}: a 403 is not retried");
        let clean = always(Faults::default());
        let s = RetryingStorage::new(clean.clone(), quick_retries());
        assert!(matches!(
            s.read(FileKind::Snapshot, "missing"),
            Err(Error::NotFound { .. })
        ));
        assert_eq!(clean.counts().calls, 1, "{name}: a 404 is not retried");
    }
}

// ---------------------------------------------------------------------------
// Listings (case 16)
// ---------------------------------------------------------------------------

fn s3_storage(url: &str) -> Arc<dyn Storage> {
    let parsed = CloudUrl::parse(url).expect("url").expect("cloud url");
    let opts = CloudOptions {
        options: s3_options(),
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(20),
    };
    Arc::new(CloudStorage::new(&parsed, url, &opts).expect("s3 storage"))
}

fn fast_init() -> InitOptions {
    InitOptions {
        pack_size: 1 << 20,
        kdf: KdfSetting::Fixed {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    }
}

fn options(src: &Path) -> BackupOptions {
    BackupOptions {
        paths: vec![src.to_path_buf()],
        host: "h".into(),
        ..BackupOptions::default()
    }
}

/// Every object name of the repository, by kind (locks left out: taking and releasing one is
/// not a change).
fn everything(s: &dyn Storage) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for kind in [
        FileKind::Config,
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Key,
    ] {
        for (name, size) in s.list(kind).expect("list") {
            all.insert(format!("{} {size}", kind.path(&name)));
        }
    }
    all
}

/// RELIABILITY case 16: when listing packs, index objects or snapshots fails (a page of the
/// listing answered with an error), prune stops and deletes nothing — on local disk and on
/// the S3 server — and the next prune with a working listing does the work.
#[test]
fn prune_stops_and_deletes_nothing_when_a_listing_fails() {
    let dir = Scratch::new();
    for (name, url) in [
        ("local", dir.join("repo").display().to_string()),
        ("s3", s3_url("listing")),
    ] {
        let storage = if name == "s3" {
            s3_storage(&url)
        } else {
            Arc::new(LocalStorage::new(&url)) as Arc<dyn Storage>
        };
        let scratch = Scratch::new();
        let src = scratch.join("src");
        let repo = Repository::init(storage.clone(), &fast_init(), Some(PASSWORD.as_bytes()))
            .expect("init");
        // Two generations, the first forgotten: prune has packs to delete.
        write_file(&src.join("a.bin"), &random_bytes(3 * MIB as usize, 1));
        let first = backup(&repo, &options(&src), Arc::default()).expect("backup");
        write_file(&src.join("a.bin"), &random_bytes(3 * MIB as usize, 2));
        backup(&repo, &options(&src), Arc::default()).expect("backup");
        storage
            .remove(FileKind::Snapshot, &first.id.to_hex())
            .expect("forget the first");
        let before = everything(storage.as_ref());
        for kind in [FileKind::Pack, FileKind::Index, FileKind::Snapshot] {
            let faulty: Arc<dyn Storage> = Arc::new(FaultyStorage::new(
                storage.clone(),
                Faults {
                    fail_listing: Some(kind),
                    ..Faults::default()
                },
                1,
            ));
            let failing = Repository::open(faulty, || {
                Ok(lifeboat::repo::Credentials::Password(
                    PASSWORD.as_bytes().to_vec().into(),
                ))
            })
            .expect("open");
            let err = prune(&failing, &PruneOptions::default(), Arc::default())
                .expect_err("a failed listing stops prune");
            assert!(
                err.to_string().contains(kind.dir()),
                "{name}: the error names the listing: {err}"
            );
            assert_eq!(
                everything(storage.as_ref()),
                before,
                "{name}: prune changed the repository although listing {} failed",
                kind.dir()
            );
        }
        let report = prune(&repo, &PruneOptions::default(), Arc::default()).expect("prune");
        assert!(report.packs_removed > 0, "{name}: {report:?}");
    }
}

/// RELIABILITY case 16: a listing past 1,000 objects (one page of S3 ListObjects) on the S3
/// server: 1,100 snapshots, and the only one that references some data is listed on the
/// second page. Prune sees every snapshot and keeps that data; check and a restore of that
/// snapshot pass.
#[test]
fn prune_reads_every_page_of_a_snapshot_listing_past_1000_objects() {
    let url = s3_url("pages");
    let storage = s3_storage(&url);
    let repo =
        Repository::init(storage.clone(), &fast_init(), Some(PASSWORD.as_bytes())).expect("init");
    let scratch = Scratch::new();
    let (a, b) = (scratch.join("a"), scratch.join("b"));
    build_plain_tree(&a, 3, 0, 1);
    write_file(&b.join("only-here.bin"), &random_bytes(2 * MIB as usize, 7));
    let snap_a = backup(&repo, &options(&a), Arc::default()).expect("backup a");
    let snap_b = backup(&repo, &options(&b), Arc::default()).expect("backup b");
    // 1,100 more snapshots of a (distinct by a tag), written on four threads.
    std::thread::scope(|s| {
        for t in 0..4 {
            let (repo, snap) = (&repo, &snap_a.snapshot);
            s.spawn(move || {
                for i in (t..1100).step_by(4) {
                    let mut copy = snap.clone();
                    copy.tags = vec![format!("copy-{i}")];
                    repo.save_snapshot(&copy).expect("save snapshot");
                }
            });
        }
    });
    // b's snapshot goes to the second page: replaced by a copy whose name sorts after the
    // thousandth (a name of the first page is removed again: the page boundary stays put).
    let names = |s: &dyn Storage| -> Vec<String> {
        s.list(FileKind::Snapshot)
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    };
    storage
        .remove(FileKind::Snapshot, &snap_b.id.to_hex())
        .expect("remove b");
    let boundary = names(storage.as_ref())[999].clone();
    let mut tries = 0;
    let on_page_two = loop {
        tries += 1;
        assert!(tries < 1000, "no copy of b sorted after the first page");
        let mut copy = snap_b.snapshot.clone();
        copy.tags = vec![format!("b-{tries}")];
        let id = repo.save_snapshot(&copy).expect("save").to_hex();
        if id > boundary {
            break id;
        }
        storage.remove(FileKind::Snapshot, &id).expect("remove");
    };
    let listed = names(storage.as_ref());
    assert_eq!(listed.len(), 1102);
    assert!(listed.iter().position(|n| *n == on_page_two) >= Some(1000));

    let report = prune(&repo, &PruneOptions::default(), Arc::default()).expect("prune");
    assert_eq!(report.snapshots, 1102, "prune saw every page: {report:?}");
    assert_reads_clean(&repo, "check --read-data");
    let index = repo.load_index().expect("index");
    let target = scratch.join("target");
    let restored_b = restore(
        &repo,
        &index,
        &snap_b.snapshot.tree,
        &RestoreOptions {
            target: target.clone(),
            ..RestoreOptions::default()
        },
        Arc::default(),
    )
    .expect("restore the snapshot listed on the second page");
    assert!(restored_b.damaged.is_empty());
    assert_trees_equal(&b, &restored(&target, &b));
}

// ---------------------------------------------------------------------------
// What reaches storage (case 17)
// ---------------------------------------------------------------------------

/// An object as sent to storage: kind, name, bytes, whether it was written.
type Sent = (FileKind, String, Vec<u8>, bool);

/// Records every object written through it.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn Storage>,
    created: Mutex<Vec<Sent>>,
}

impl lifeboat::storage::StorageWrapper for Recording {
    fn inner(&self) -> &dyn Storage {
        &*self.inner
    }
    fn create(&self, kind: FileKind, name: &str, data: &[u8]) -> lifeboat::Result<bool> {
        let stored = self.inner.create(kind, name, data)?;
        self.created
            .lock()
            .push((kind, name.to_string(), data.to_vec(), stored));
        Ok(stored)
    }
}

/// RELIABILITY case 17, on local disk and on the S3 server: every object a backup and a prune
/// send to storage is whole and verifiable as sent — every pack is named by its hash, its
/// header parses and every blob in it decodes (decompressed, decrypted) to the chunk its id
/// names; every other object is named by the hash of its bytes — and writing an existing
/// name again never replaces it. (That a fault between encoding and upload is caught — the
/// decode-and-re-hash before each upload in `encode_blob`, `finish_verified` and
/// `save_metadata` — cannot be provoked from outside the process; docs/RELIABILITY-TESTS.md.)
#[test]
fn every_object_sent_to_storage_verifies_and_existing_objects_are_never_replaced() {
    let dir = Scratch::new();
    for (name, inner) in [
        (
            "local",
            Arc::new(LocalStorage::new(dir.join("repo"))) as Arc<dyn Storage>,
        ),
        ("s3", s3_storage(&s3_url("verified"))),
    ] {
        let rec = Arc::new(Recording {
            inner,
            created: Mutex::new(Vec::new()),
        });
        let storage: Arc<dyn Storage> = rec.clone();
        let repo = Repository::init(storage.clone(), &fast_init(), Some(PASSWORD.as_bytes()))
            .expect("init");
        let scratch = Scratch::new();
        let src = scratch.join("src");
        build_plain_tree(&src, 30, 3 * MIB as usize, 17);
        let first = backup(&repo, &options(&src), Arc::default()).expect("backup");
        write_file(&src.join("big.bin"), &random_bytes(2 * MIB as usize, 18));
        backup(&repo, &options(&src), Arc::default()).expect("backup");
        storage
            .remove(FileKind::Snapshot, &first.id.to_hex())
            .expect("forget");
        let opts = PruneOptions {
            max_unused_percent: 0.0,
            ..PruneOptions::default()
        };
        let report = prune(&repo, &opts, Arc::default()).expect("prune");
        assert!(report.new_packs > 0, "{name}: prune repacked: {report:?}");

        let created = std::mem::take(&mut *rec.created.lock());
        let sealer = repo.sealer();
        let mut packs = 0;
        for (kind, obj, bytes, _) in &created {
            match kind {
                FileKind::Pack => {
                    packs += 1;
                    assert_eq!(blake3::hash(bytes).to_hex().as_str(), obj, "{name}: {obj}");
                    let entries = lifeboat::repo::pack::read_pack_header(sealer, bytes, obj)
                        .unwrap_or_else(|e| panic!("{name}: pack {obj}: {e}"));
                    for e in &entries {
                        let stored = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
                        lifeboat::repo::pack::decode_blob(sealer, e, stored, obj).unwrap_or_else(
                            |err| panic!("{name}: pack {obj} blob {}: {err}", e.id),
                        );
                    }
                }
                FileKind::Index | FileKind::Snapshot | FileKind::Key | FileKind::Lock => {
                    if !obj.starts_with("probe-") {
                        assert_eq!(blake3::hash(bytes).to_hex().as_str(), obj, "{name}: {obj}");
                    }
                }
                FileKind::Config => {}
            }
        }
        assert!(packs > 2, "{name}: {packs} packs sent");

        // Create-only: a second write of an existing object's name, with other bytes, is
        // refused and the object keeps its content.
        let present: BTreeSet<String> = storage
            .list(FileKind::Pack)
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let (kind, obj, bytes, _) = created
            .iter()
            .find(|(k, n, ..)| *k == FileKind::Pack && present.contains(n))
            .expect("a pack that is still there")
            .clone();
        assert!(
            !storage.create(kind, &obj, b"other bytes").expect("create"),
            "{name}: a second create of {obj} reported a write"
        );
        assert_eq!(storage.read(kind, &obj).expect("read"), bytes, "{name}");
        assert_reads_clean(&repo, name);
    }
}

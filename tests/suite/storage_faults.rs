//! Storage faults (RELIABILITY cases 15, 16, 17 and 28): how requests to an S3 endpoint that
//! throttles, refuses, or never answers are retried and bounded; prune against listings that
//! fail or span several pages; what reaches storage being verified and written create-only;
//! and outages of the storage (a proxy that cuts and refuses connections) being waited out
//! within the retry budget and reported as such, never as damage. Against a local directory, the S3 test server (moto, started by
//! `tests/run.sh`), and a fake S3 endpoint in this file that answers what a test tells it to.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::faulty::{Faults, FaultyStorage};
use crate::common::*;
use lifeboat::ops::backup::{backup, BackupOptions};
use lifeboat::ops::prune::{prune, PruneOptions};
use lifeboat::ops::restore::{restore, RestoreOptions};
use lifeboat::repo::Repository;
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
    // RELIABILITY case 28: a storage that keeps answering "not now" is unreachable, not damage.
    assert!(
        matches!(err, Error::Unreachable { .. }) && !err.is_damage(),
        "{err:?}"
    );
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
    assert!(
        matches!(err, Error::Storage { .. }),
        "a refusal is no outage: {err:?}"
    );
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
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
}

/// RELIABILITY case 15, lifeboat's own retry layer (around every backend): transient faults
/// are retried up to the policy's attempts, then reported as the storage being unreachable; a
/// 403 or a missing object is tried once.
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
        let err = s
            .read(FileKind::Snapshot, "ab")
            .expect_err("throttled every time");
        assert!(
            matches!(err, Error::Unreachable { .. }) && !err.is_damage(),
            "{name}: a fault that outlasts every retry is an outage: {err:?}"
        );
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
    s3_storage_at(&s3_endpoint(), url)
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

// ---------------------------------------------------------------------------
// Outages (case 28)
// ---------------------------------------------------------------------------

/// When a [`OutageProxy`] takes the storage away.
#[derive(Debug, Clone)]
enum Trigger {
    /// Once this many bytes were sent towards the storage (in the middle of an upload).
    Uploaded(u64),
    /// At the first request whose bytes contain this text (e.g. a GET of a pack).
    Request(String),
}

/// What an [`OutageProxy`] shares with its threads.
struct ProxyState {
    upstream: std::net::SocketAddr,
    trigger: Trigger,
    /// How long the outage lasts (`None`: until the test ends it).
    length: Option<Duration>,
    uploaded: std::sync::atomic::AtomicU64,
    /// When the outage began, once it did.
    began: Mutex<Option<std::time::Instant>>,
    ended_by_test: AtomicBool,
    /// Connections accepted after the outage ended.
    after: AtomicUsize,
    /// Both ends of every open connection, to cut them when the outage begins.
    open: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

impl ProxyState {
    fn down(&self) -> bool {
        match *self.began.lock() {
            None => false,
            Some(_) if self.ended_by_test.load(Ordering::SeqCst) => false,
            Some(t) => self.length.is_none_or(|l| t.elapsed() < l),
        }
    }

    fn over(&self) -> bool {
        self.began.lock().is_some() && !self.down()
    }

    /// Begins the outage (once): every open connection is cut, and the listener goes away.
    fn begin(&self) {
        let mut began = self.began.lock();
        if began.is_some() {
            return;
        }
        *began = Some(std::time::Instant::now());
        drop(began);
        for c in self.open.lock().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A TCP proxy in front of the S3 test server that, once its trigger fires, makes the storage
/// unreachable — open connections cut, new ones refused (nothing listens on its port) — for a
/// while, then serves again on the same port.
struct OutageProxy {
    port: u16,
    state: Arc<ProxyState>,
}

impl OutageProxy {
    fn start(trigger: Trigger, length: Option<Duration>) -> Self {
        let endpoint = std::env::var("LIFEBOAT_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
            panic!("LIFEBOAT_TEST_S3_ENDPOINT is not set: run the suite with `bash tests/run.sh`")
        });
        let upstream = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("LIFEBOAT_TEST_S3_ENDPOINT is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(ProxyState {
            upstream,
            trigger,
            length,
            uploaded: Default::default(),
            began: Mutex::new(None),
            ended_by_test: AtomicBool::new(false),
            after: AtomicUsize::new(0),
            open: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            let mut listener = Some(listener);
            while !st.stop.load(Ordering::SeqCst) {
                if st.down() {
                    // Nothing listens: connections are refused.
                    listener = None;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let l = match &listener {
                    Some(l) => l,
                    None => match TcpListener::bind(("127.0.0.1", port)) {
                        Ok(l) => listener.insert(l),
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    },
                };
                l.set_nonblocking(true).expect("nonblocking");
                match l.accept() {
                    Ok((conn, _)) => {
                        if st.over() {
                            st.after.fetch_add(1, Ordering::SeqCst);
                        }
                        let st = st.clone();
                        std::thread::spawn(move || forward(conn, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        OutageProxy { port, state }
    }

    /// Environment for a `lifeboat` process that reaches the S3 test server through this proxy.
    fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        s3_env()
            .into_iter()
            .map(|(k, v)| {
                let v = if k == "AWS_ENDPOINT_URL" {
                    format!("http://127.0.0.1:{}", self.port)
                } else {
                    v
                };
                (k, v.into())
            })
            .collect()
    }

    fn run(&self, args: Vec<std::ffi::OsString>) -> Out {
        let env = self.env();
        let env: Vec<(&str, &std::ffi::OsStr)> =
            env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        lifeboat_env(args, &env)
    }

    fn began(&self) -> bool {
        self.state.began.lock().is_some()
    }

    /// Connections accepted after the outage was over.
    fn served_after(&self) -> usize {
        self.state.after.load(Ordering::SeqCst)
    }

    fn end(&self) {
        self.state.ended_by_test.store(true, Ordering::SeqCst);
    }
}

impl Drop for OutageProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.begin();
    }
}

/// Carries one connection to the upstream server and back, until either side closes or the
/// outage cuts it.
fn forward(client: TcpStream, st: &Arc<ProxyState>) {
    let _ = client.set_nonblocking(false);
    if st.down() {
        return;
    }
    let Ok(server) = TcpStream::connect(st.upstream) else {
        return;
    };
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut open = st.open.lock();
        for s in [&client, &server] {
            if let Ok(s) = s.try_clone() {
                open.push(s);
            }
        }
    }
    let back = {
        let st = st.clone();
        std::thread::spawn(move || pump(s2, c2, &st, false))
    };
    pump(client, server, st, true);
    let _ = back.join();
}

/// Copies `from` to `to`; towards the server, counts the bytes and fires the trigger.
fn pump(mut from: TcpStream, mut to: TcpStream, st: &ProxyState, upload: bool) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if upload {
            let total = st.uploaded.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            let fire = match &st.trigger {
                Trigger::Uploaded(at) => total >= *at,
                Trigger::Request(text) => {
                    buf[..n].windows(text.len()).any(|w| w == text.as_bytes())
                }
            };
            if fire {
                st.begin();
            }
        }
        if st.down() || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// A repository on the S3 test server, created through `proxy` (before its outage), and a
/// source of `mib` MiB in files of one MiB.
fn outage_setup(proxy: &OutageProxy, mib: usize) -> (String, Scratch) {
    let url = s3_url("outage");
    proxy
        .run(args!["init", "--repo", &url, "--pack-size-mib", "4"])
        .success();
    let scratch = Scratch::new();
    for i in 0..mib {
        write_file(
            &scratch.join(format!("src/f{i:02}.bin")),
            &random_bytes(MIB as usize, 280 + i as u64),
        );
    }
    (url, scratch)
}

/// Output that must not read as damage.
#[track_caller]
fn assert_unreachable_not_damage(out: &Out) {
    assert_eq!(out.code, Some(4), "exit code 4: storage unreachable\n{out}");
    out.stderr_contains("cannot reach the repository storage");
    for word in ["damaged", "corrupt", "allow-partial"] {
        assert!(
            !out.all_output().contains(word),
            "an outage reported as {word:?}\n{out}"
        );
    }
}

/// RELIABILITY case 28: the storage goes away for 8 seconds in the middle of a backup's
/// uploads (connections cut, new ones refused) and comes back. With a retry budget
/// (`--option retry_timeout=60s`) longer than the outage, the backup waits it out and
/// succeeds, and the repository checks clean. (The client's old bound of ten retries gave up
/// after 2-5 s of refused connections.)
#[test]
fn a_backup_spanning_an_eight_second_outage_waits_it_out() {
    let proxy = OutageProxy::start(Trigger::Uploaded(6 * MIB), Some(Duration::from_secs(8)));
    let (url, scratch) = outage_setup(&proxy, 16);
    let out = proxy.run(args![
        "backup",
        "--repo",
        &url,
        "--option",
        "retry_timeout=60s",
        scratch.join("src")
    ]);
    assert!(proxy.began(), "the outage never began\n{out}");
    let out = out.success();
    assert!(
        proxy.served_after() > 0,
        "the backup finished without reaching the storage after the outage\n{out}"
    );
    proxy
        .run(args!["check", "--repo", &url, "--read-data"])
        .success();
    let target = scratch.join("target");
    proxy
        .run(args![
            "restore", "--repo", &url, "latest", "--target", &target
        ])
        .success();
    assert_trees_equal(
        &scratch.join("src"),
        &restored(&target, &scratch.join("src")),
    );
}

/// RELIABILITY case 28: an outage longer than the retry budget (`retry_timeout=3s`) fails the
/// backup with the storage-unreachable error and its exit code (4), never as damage; once the
/// storage is back the repository checks clean and the next backup succeeds.
#[test]
fn an_outage_longer_than_retry_timeout_fails_the_backup_as_unreachable() {
    let proxy = OutageProxy::start(Trigger::Uploaded(6 * MIB), None);
    let (url, scratch) = outage_setup(&proxy, 16);
    let out = proxy.run(args![
        "backup",
        "--repo",
        &url,
        "--option",
        "retry_timeout=3s",
        scratch.join("src")
    ]);
    assert!(proxy.began(), "the outage never began\n{out}");
    assert_unreachable_not_damage(&out);
    proxy.end();
    proxy.run(args!["check", "--repo", &url]).success();
    proxy
        .run(args!["backup", "--repo", &url, scratch.join("src")])
        .success();
}

/// RELIABILITY case 28: the storage goes away when a restore starts reading packs and stays
/// away past the retry budget: the restore exits with the storage-unreachable code (4), never
/// says "damaged" nor suggests --allow-partial (with --allow-partial too: nothing is left out
/// as if it were damaged), and writes nothing into the target. `check --read-data` the same:
/// it stops with code 4 instead of reporting packs it could not read, and so do `repair index`
/// and `repair snapshots` (before the fix they exited 1, the outage hidden in an "invalid"
/// error).
#[test]
fn a_restore_or_check_during_an_outage_exits_unreachable_and_never_says_damaged() {
    let bucket = std::env::var("LIFEBOAT_TEST_S3_BUCKET").unwrap_or_default();
    let setup = OutageProxy::start(Trigger::Request("never".into()), None);
    let (url, scratch) = outage_setup(&setup, 6);
    setup
        .run(args!["backup", "--repo", &url, scratch.join("src")])
        .success();
    let prefix = url.trim_start_matches("s3://").trim_start_matches(&bucket);
    for extra in [args![], args!["--allow-partial"]] {
        // The outage begins at the first read of a pack.
        let proxy = OutageProxy::start(
            Trigger::Request(format!("GET /{bucket}{prefix}/data/")),
            None,
        );
        let target = scratch.join("target");
        let mut all = args![
            "restore",
            "--repo",
            &url,
            "--option",
            "retry_timeout=3s",
            "latest",
            "--target",
            &target
        ];
        all.extend(extra.clone());
        let out = proxy.run(all);
        assert!(proxy.began(), "no pack was read\n{out}");
        assert_unreachable_not_damage(&out);
        assert!(
            !target.exists() || fs::read_dir(&target).expect("target").next().is_none(),
            "{extra:?}: the restore wrote into the target\n{out}"
        );
    }
    let proxy = OutageProxy::start(
        Trigger::Request(format!("GET /{bucket}{prefix}/data/")),
        None,
    );
    let out = proxy.run(args![
        "check",
        "--repo",
        &url,
        "--option",
        "retry_timeout=3s",
        "--read-data"
    ]);
    assert!(proxy.began(), "no pack was read\n{out}");
    assert_unreachable_not_damage(&out);
    // The repairs read the repository too: an outage stops them with the same code (repair
    // index when it reads the index objects, repair snapshots when it reads packs).
    for (repair, object) in [
        (args!["repair", "index", "--no-cache"], "index"),
        (args!["repair", "snapshots", "--read-data"], "data"),
    ] {
        let proxy = OutageProxy::start(
            Trigger::Request(format!("GET /{bucket}{prefix}/{object}/")),
            None,
        );
        let mut all = repair.clone();
        all.extend(args!["--repo", &url, "--option", "retry_timeout=3s"]);
        let out = proxy.run(all);
        assert!(
            proxy.began(),
            "{repair:?}: nothing under {object}/ was read\n{out}"
        );
        assert_unreachable_not_damage(&out);
    }
}

/// RELIABILITY case 28 (the other side): a range read of an object shorter than asked — cut
/// short, or ending before the range starts (S3 answers 416) — is damage (a truncated object),
/// on local disk and on the S3 server; a missing object too. Neither is an outage.
#[test]
fn reading_past_the_end_of_a_truncated_object_is_damage_not_an_outage() {
    let dir = Scratch::new();
    for (name, storage) in [
        (
            "local",
            Arc::new(LocalStorage::new(dir.join("repo"))) as Arc<dyn Storage>,
        ),
        ("s3", s3_storage(&s3_url("short"))),
    ] {
        storage.create_layout().expect("layout");
        storage
            .create(FileKind::Pack, "ab01", b"0123456789")
            .expect("create");
        for (offset, len) in [(5, 10), (20, 5)] {
            let err = storage
                .read_range(FileKind::Pack, "ab01", offset, len)
                .expect_err("past the end");
            assert!(
                err.is_damage() && !matches!(err, Error::Unreachable { .. }),
                "{name}: {offset}+{len}: {err:?}"
            );
        }
        let err = storage
            .read_range(FileKind::Pack, "ab02", 0, 5)
            .expect_err("missing");
        assert!(err.is_damage(), "{name}: {err:?}");
    }
}

/// RELIABILITY case 28: SIGTERM to a backup waiting out an outage (a retry budget of 10
/// minutes) stops it cleanly, exit 130, instead of holding the stop for the whole budget.
#[test]
fn sigterm_stops_a_backup_waiting_out_an_outage() {
    let proxy = OutageProxy::start(Trigger::Uploaded(6 * MIB), None);
    let (url, scratch) = outage_setup(&proxy, 16);
    let mut cmd = lifeboat_cmd();
    for (k, v) in proxy.env() {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(args![
            "backup",
            "--repo",
            &url,
            "--option",
            "retry_timeout=10m",
            scratch.join("src")
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = std::time::Instant::now();
    while !proxy.began() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the outage never began"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Well into the retries.
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let stopped = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if stopped.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the backup did not stop within 120 s of SIGTERM: it waits out the outage");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(!stderr.contains("damaged"), "{stderr}");
}

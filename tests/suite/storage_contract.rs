//! The storage contract (`lifeboat::storage::Storage`, RELIABILITY cases 16 and 17), one check
//! per method, run against every backend — a local directory, the S3 test server, the Azure
//! test server — each bare and under every wrapper a repository is opened through: retries,
//! bandwidth limits, and retries over transient faults (503s, resets, bodies cut short). A
//! wrapper that changes what a method means (a create that reports "existed" for its own
//! write, a listing that loses a page, a publish that leaves its file) fails here, whatever
//! backend it wraps.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::common::backends::{backends, Backend};
use crate::common::faulty::{Faults, FaultyStorage};
use crate::common::*;
use lifeboat::storage::{FileKind, LimitedStorage, RetryPolicy, RetryingStorage, Storage};
use lifeboat::Error;

/// How a backend is wrapped.
#[derive(Debug, Clone, Copy)]
enum Wrapper {
    Bare,
    Retrying,
    Limited,
    /// Transient faults (throttling, resets, truncated reads) beneath the retry layer: what
    /// the layers above see must be the contract, unchanged.
    RetryingOverFaults,
}

const WRAPPERS: [Wrapper; 4] = [
    Wrapper::Bare,
    Wrapper::Retrying,
    Wrapper::Limited,
    Wrapper::RetryingOverFaults,
];

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 30,
        initial_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(20),
        total: Duration::from_secs(60),
    }
}

/// The storage at `url` of backend `b`, wrapped as `w`.
fn stack(b: &Backend, w: Wrapper, url: &str) -> Arc<dyn Storage> {
    let bare = b.storage(url);
    match w {
        Wrapper::Bare => bare,
        Wrapper::Retrying => Arc::new(RetryingStorage::new(bare, quick_retries())),
        // Limits far above what the checks move: the wrapper's plumbing, not its pace.
        Wrapper::Limited => Arc::new(LimitedStorage::new(bare, Some(1 << 30), Some(1 << 30))),
        Wrapper::RetryingOverFaults => {
            let faults = Faults {
                throttle: 0.15,
                reset: 0.1,
                truncate: 0.1,
                ..Faults::default()
            };
            let faulty = Arc::new(FaultyStorage::new(bare, faults, 24));
            Arc::new(RetryingStorage::new(faulty, quick_retries()))
        }
    }
}

type Check = fn(&dyn Storage, &Backend) -> Result<(), String>;

/// Every check, by name.
const CHECKS: [(&str, Check); 8] = [
    ("layout", layout),
    ("create is create-only", create_only),
    ("create_owned is create-only", create_owned),
    ("ranges", ranges),
    ("missing objects", missing),
    ("listing", listing),
    ("modified", modified),
    ("publish", publish),
];

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn ok<T>(r: lifeboat::Result<T>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// An empty location takes a layout; a used one (holding a config) refuses it.
fn layout(s: &dyn Storage, _: &Backend) -> Result<(), String> {
    ok(s.create_layout(), "layout of an empty location")?;
    ensure(!ok(s.has_config(), "has_config")?, || {
        "config before one was written".into()
    })?;
    ensure(
        ok(s.create(FileKind::Config, "config", b"{}"), "create config")?,
        || "the first config create reported an existing object".into(),
    )?;
    ensure(ok(s.has_config(), "has_config")?, || {
        "config not seen".into()
    })?;
    ensure(s.create_layout().is_err(), || {
        "a used location took a new layout".into()
    })
}

/// The first create wins and reports so; a second create of the name reports `false` and
/// keeps the first content; the store's own probe agrees.
fn create_only(s: &dyn Storage, _: &Backend) -> Result<(), String> {
    ok(s.create_layout(), "layout")?;
    ensure(
        ok(s.create(FileKind::Index, "aa11", b"first"), "create")?,
        || "the first create reported an existing object".into(),
    )?;
    ensure(
        !ok(s.create(FileKind::Index, "aa11", b"second"), "create again")?,
        || "a second create of a name reported success".into(),
    )?;
    let back = ok(s.read(FileKind::Index, "aa11"), "read")?;
    ensure(back == b"first", || {
        format!("content after a second create: {back:?}")
    })?;
    ensure(ok(s.probe_create_only(), "probe")?, || {
        "the probe says the store ignores create-only".into()
    })
}

/// The same through `create_owned` (the upload path of packs).
fn create_owned(s: &dyn Storage, _: &Backend) -> Result<(), String> {
    ok(s.create_layout(), "layout")?;
    let data = bytes::Bytes::from(random_bytes(300_000, 5));
    ensure(
        ok(
            s.create_owned(FileKind::Pack, "ab01", data.clone()),
            "create_owned",
        )?,
        || "the first create_owned reported an existing object".into(),
    )?;
    let other = bytes::Bytes::from_static(b"other");
    ensure(
        !ok(s.create_owned(FileKind::Pack, "ab01", other), "again")?,
        || "a second create_owned of a name reported success".into(),
    )?;
    ensure(ok(s.read(FileKind::Pack, "ab01"), "read")? == data, || {
        "create_owned changed the content".into()
    })
}

/// Ranges inside and at the end of an object; a range past the end is an error, never short
/// data.
fn ranges(s: &dyn Storage, _: &Backend) -> Result<(), String> {
    ok(s.create_layout(), "layout")?;
    ok(s.create(FileKind::Pack, "ab0123", b"0123456789"), "create")?;
    let mid = ok(s.read_range(FileKind::Pack, "ab0123", 2, 3), "range")?;
    ensure(mid == b"234", || format!("range 2+3: {mid:?}"))?;
    let end = ok(
        s.read_range(FileKind::Pack, "ab0123", 7, 3),
        "range at the end",
    )?;
    ensure(end == b"789", || format!("range 7+3: {end:?}"))?;
    ensure(
        s.read_range(FileKind::Pack, "ab0123", 8, 5).is_err(),
        || "a range past the end gave data".into(),
    )
}

/// A missing object is `NotFound` for read, read_range and modified; removing one is fine.
fn missing(s: &dyn Storage, _: &Backend) -> Result<(), String> {
    ok(s.create_layout(), "layout")?;
    let not_found = |r: lifeboat::Result<()>, what: &str| match r {
        Err(Error::NotFound { .. }) => Ok(()),
        other => Err(format!("{what} of a missing object: {other:?}")),
    };
    not_found(s.read(FileKind::Snapshot, "missing").map(drop), "read")?;
    not_found(
        s.read_range(FileKind::Pack, "ab00", 0, 4).map(drop),
        "read_range",
    )?;
    not_found(
        s.modified(FileKind::Snapshot, "missing").map(drop),
        "modified",
    )?;
    ok(
        s.remove(FileKind::Snapshot, "missing"),
        "remove of a missing object",
    )
}

/// A listing names every object of its kind with its size, and only those; after a remove,
/// not that one.
fn listing(s: &dyn Storage, _: &Backend) -> Result<(), String> {
    ok(s.create_layout(), "layout")?;
    ensure(ok(s.list(FileKind::Index), "list")?.is_empty(), || {
        "a new location lists indexes".into()
    })?;
    for i in 0..30u8 {
        ok(
            s.create(
                FileKind::Index,
                &format!("{i:02x}aa"),
                &vec![i; usize::from(i) + 1],
            ),
            "create",
        )?;
    }
    ok(s.create(FileKind::Snapshot, "ff00", b"snap"), "create")?;
    let mut listed = ok(s.list(FileKind::Index), "list")?;
    listed.sort();
    let expected: Vec<(String, u64)> = (0..30u8)
        .map(|i| (format!("{i:02x}aa"), u64::from(i) + 1))
        .collect();
    ensure(listed == expected, || format!("listing: {listed:?}"))?;
    ok(s.remove(FileKind::Index, "05aa"), "remove")?;
    let listed = ok(s.list(FileKind::Index), "list")?;
    ensure(
        listed.len() == 29 && listed.iter().all(|(n, _)| n != "05aa"),
        || format!("after a remove: {listed:?}"),
    )
}

/// The storage's clock says when an object was written: within minutes of now here (the test
/// servers run on this machine).
fn modified(s: &dyn Storage, _: &Backend) -> Result<(), String> {
    ok(s.create_layout(), "layout")?;
    ok(s.create(FileKind::Lock, "l1", b"x"), "create")?;
    let when = ok(s.modified(FileKind::Lock, "l1"), "modified")?
        .ok_or_else(|| "no modification time".to_string())?;
    let off = match SystemTime::now().duration_since(when) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    ensure(off < Duration::from_secs(600), || {
        format!("modified {off:?} away from now")
    })
}

/// Where a storage offers a spool directory, a file written there becomes the object
/// (create-only), and the file is gone afterwards whether or not the object existed.
fn publish(s: &dyn Storage, _: &Backend) -> Result<(), String> {
    ok(s.create_layout(), "layout")?;
    let Some(dir) = s.spool_dir(FileKind::Pack) else {
        return Ok(());
    };
    let tmp = dir.join(".tmp-contract-1");
    std::fs::write(&tmp, b"published").map_err(|e| format!("write {}: {e}", tmp.display()))?;
    ensure(
        ok(s.publish(FileKind::Pack, "ac01", &tmp), "publish")?,
        || "the first publish reported an existing object".into(),
    )?;
    ensure(!tmp.exists(), || "publish left its file".into())?;
    std::fs::write(&tmp, b"second").map_err(|e| format!("write: {e}"))?;
    ensure(
        !ok(s.publish(FileKind::Pack, "ac01", &tmp), "publish again")?,
        || "a second publish of a name reported success".into(),
    )?;
    ensure(!tmp.exists(), || "a refused publish left its file".into())?;
    let back = ok(s.read(FileKind::Pack, "ac01"), "read")?;
    ensure(back == b"published", || {
        format!("content after a second publish: {back:?}")
    })
}

/// Every check on every backend under every wrapper; all failures are reported together.
#[test]
fn the_storage_contract_holds_on_every_backend_under_every_wrapper() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for b in backends() {
        for w in WRAPPERS {
            for (name, check) in CHECKS {
                let url = b.url("contract");
                let s = stack(&b, w, &url);
                runs += 1;
                if let Err(e) = check(s.as_ref(), &b) {
                    failures.push(format!("{} {w:?}: {name}: {e}", b.name));
                }
                // Where the store is (or is not) on this machine, through every wrapper.
                let local = b.name == "local";
                if s.local_path().is_some() != local || s.remote() == local {
                    failures.push(format!(
                        "{} {w:?}: local_path {:?}, remote {}",
                        b.name,
                        s.local_path(),
                        s.remote()
                    ));
                }
            }
        }
    }
    assert_eq!(runs, 3 * WRAPPERS.len() * CHECKS.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A listing longer than one page of the store's listing API is complete: 1,100 objects on
/// local disk and S3 (pages of 1,000), 5,100 on Azure (pages of 5,000).
#[test]
fn listings_past_one_page_are_complete_on_every_backend() {
    for b in backends() {
        let count: usize = if b.name == "azure" { 5100 } else { 1100 };
        let url = b.url("pages");
        let s = b.storage(&url);
        s.create_layout().expect("layout");
        let names: Vec<String> = (0..count).map(|i| format!("{i:064x}")).collect();
        std::thread::scope(|sc| {
            for chunk in names.chunks(count.div_ceil(8)) {
                let s = &s;
                sc.spawn(move || {
                    for n in chunk {
                        s.create(FileKind::Snapshot, n, n.as_bytes())
                            .expect("create");
                    }
                });
            }
        });
        let mut listed = s.list(FileKind::Snapshot).expect("list");
        listed.sort();
        assert_eq!(listed.len(), count, "{}", b.name);
        assert!(
            listed
                .iter()
                .zip(&names)
                .all(|((n, size), want)| n == want && *size == 64),
            "{}: names or sizes differ",
            b.name
        );
    }
}

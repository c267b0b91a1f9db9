//! Faults on the wire (RELIABILITY cases 15, 16 and 28): the S3 test server behind a proxy
//! (`common::wire`) that answers 503 or 500, closes connections before or after the server did
//! the work, and sends bodies shorter than their `Content-Length`. Unlike the faults injected
//! above the storage layer (`common::faulty`), these go through object_store's HTTP client and
//! parsers and Lifeboat's classification of what it returns: every transient fault is retried
//! to a verified result and never reported as damage, and a listing whose second page fails is
//! never taken for the whole listing.

use std::sync::Arc;

use crate::common::wire::{Fault, Rule, WireProxy};
use crate::common::*;
use lifeboat::repo::Repository;
use lifeboat::storage::FileKind;

/// Runs `lifeboat ARGS` against the S3 repository `url` reached through `proxy`.
fn through(proxy: &WireProxy, url: &str, args: Vec<std::ffi::OsString>) -> Out {
    let mut cmd = lifeboat_cmd();
    for (k, v) in s3_env_at(&proxy.endpoint()) {
        cmd.env(k, v);
    }
    cmd.args(args).arg("--repo").arg(url);
    run_cmd(cmd)
}

/// RELIABILITY case 15: transient faults on the wire while creating the repository (the
/// config's answer lost) and backing up (503 Slow Down on pack
/// uploads, a connection closed before a pack upload reached the server, a pack upload cut off
/// while its body was going out, an index upload whose answer is lost after the server stored
/// it) and while restoring (pack reads cut short of
/// their `Content-Length`, a 503, a connection closed before the answer): the backup succeeds,
/// the restore succeeds with every file verified and nothing called damaged, and check reads
/// every pack clean. Every fault must have been applied (the proxy's log says where).
#[test]
fn transient_faults_on_the_wire_are_retried_and_the_restore_verifies() {
    let proxy = WireProxy::start(&s3_endpoint());
    let url = s3_url("wire");
    // The config's answer lost: the retried create finds the config it wrote, which is no
    // other repository (init said "a repository already exists there").
    proxy.inject(Rule::new("PUT", "/config", Fault::LostAnswer));
    through(&proxy, &url, args!["init", "--pack-size-mib", "1"]).success();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 40, 3 << 20, 15);

    proxy.inject(Rule::new("PUT", "/data/", Fault::Status(503)).times(2));
    proxy.inject(Rule::new("PUT", "/data/", Fault::Reset));
    // The client does not retry a create-only upload cut off mid-body itself (found as a flaky
    // outage test: "error writing a body to connection: Broken pipe" failed the backup).
    proxy.inject(Rule::new("PUT", "/data/", Fault::CutUpload));
    proxy.inject(Rule::new("PUT", "/index/", Fault::LostAnswer));
    let out = through(&proxy, &url, args!["backup", &src]).success();
    let applied = proxy.applied();
    assert_eq!(
        applied.len(),
        6,
        "every upload fault applied: {applied:?}\n{out}"
    );

    proxy.inject(Rule::new("GET", "/data/", Fault::ShortBody).times(2));
    proxy.inject(Rule::new("GET", "/data/", Fault::Status(503)));
    proxy.inject(Rule::new("GET", "/data/", Fault::Reset));
    let target = scratch.join("target");
    let out = through(
        &proxy,
        &url,
        args!["restore", "latest", "--target", &target],
    )
    .success();
    let applied = proxy.applied();
    assert_eq!(
        applied.len(),
        10,
        "every read fault applied: {applied:?}\n{out}"
    );
    assert!(
        !out.all_output().to_lowercase().contains("damaged"),
        "a fault on the wire was called damage\n{out}"
    );
    assert_trees_equal(&src, &restored(&target, &src));
    through(&proxy, &url, args!["check", "--read-data"]).success();
}

/// RELIABILITY case 16: a listing of more than one page (1,001 snapshots; S3 pages hold
/// 1,000) whose second page fails with 500 every time: `snapshots` fails, says the storage
/// could not be reached (exit 4), and does not print the first page as if it were all;
/// `forget --keep-last 1` deletes nothing. When the second page fails once, both see every
/// snapshot.
#[test]
fn a_listing_whose_second_page_fails_is_never_taken_for_the_whole() {
    let url = s3_url("wire-pages");
    let storage = s3_storage_at(&s3_endpoint(), &url);
    let repo =
        Repository::init(storage.clone(), &fast_init(), Some(PASSWORD.as_bytes())).expect("init");
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 3, 0, 16);
    let done = lifeboat::ops::backup::backup(
        &repo,
        &lifeboat::ops::backup::BackupOptions {
            paths: vec![src.clone()],
            host: "wire".into(),
            ..Default::default()
        },
        Arc::default(),
    )
    .expect("backup");
    // 1,000 more, distinct by a tag, on four threads.
    std::thread::scope(|s| {
        for t in 0..4 {
            let (repo, snap) = (&repo, &done.snapshot);
            s.spawn(move || {
                for i in (t..1000).step_by(4) {
                    let mut copy = snap.clone();
                    copy.tags = vec![format!("copy-{i}")];
                    repo.save_snapshot(&copy).expect("save snapshot");
                }
            });
        }
    });
    let count = || storage.list(FileKind::Snapshot).expect("list").len();
    assert_eq!(count(), 1001);

    let proxy = WireProxy::start(&s3_endpoint());
    proxy.inject(Rule::new("GET", "continuation-token=", Fault::Status(500)).times(usize::MAX));
    let quick = ["--option", "retry_timeout=3s"];
    let out = through(
        &proxy,
        &url,
        args!["snapshots", "--json", quick[0], quick[1]],
    );
    let out = out.expect_code(4);
    assert!(
        out.stdout().trim().is_empty(),
        "a partial listing was printed\n{out}"
    );
    assert!(!out.stderr().contains("damaged"), "{out}");
    assert!(out.stderr().contains("no sign of damage"), "{out}");
    let out = through(
        &proxy,
        &url,
        args!["forget", "--keep-last", "1", quick[0], quick[1]],
    );
    assert_ne!(
        out.code,
        Some(0),
        "forget went on without the second page\n{out}"
    );
    assert_eq!(count(), 1001, "forget deleted snapshots\n{out}");
    assert!(
        !proxy.applied().is_empty(),
        "the second page was never asked for"
    );

    proxy.clear();
    proxy.inject(Rule::new("GET", "continuation-token=", Fault::Status(500)));
    let out = through(&proxy, &url, args!["snapshots", "--json"]).success();
    let listed = out.json().as_array().map(Vec::len);
    assert_eq!(listed, Some(1001), "{out}");
    assert!(
        proxy.applied().len() >= 2,
        "the one-time fault was not applied: {:?}",
        proxy.applied()
    );
}

//! Progress that helps under stress (issue 21): a restore knows its total before it starts and
//! reports percent, rate and time left, as JSON events with `--json`; the final report gives
//! the duration and throughput.

use crate::common::*;

/// A restore slowed to about 2 MiB/s, one pack (of about 1 MiB) read at a time, emits JSON
/// progress events each second: the total is the snapshot's bytes from the first event on, the
/// percent grows and stays below 100, the rate and time left are there, and the counters move;
/// the final report has the duration and the throughput.
#[test]
fn a_restore_reports_its_total_percent_rate_and_time_left() {
    let scratch = Scratch::new();
    let repo_path = scratch.join("repo");
    lifeboat(args!["init", "--repo", &repo_path, "--pack-size-mib", "1"]).success();
    let repo = Repo::at(&repo_path);
    let src = scratch.join("src");
    write_file(&src.join("big.bin"), &random_bytes(8 * MIB as usize, 42));
    write_file(&src.join("a.txt"), b"alpha\n");
    write_file(&src.join("b.txt"), b"bravo\n");
    write_file(&src.join("sub/c.txt"), b"charlie\n");
    repo.backup(args![&src]);
    let target = scratch.join("target");
    let out = repo
        .run(
            "restore",
            args![
                "latest",
                "--target",
                &target,
                "--json",
                "--limit-download",
                "2048",
                "--download-concurrency",
                "1"
            ],
        )
        .success();
    let lines = out.json_lines();
    let events: Vec<_> = lines.iter().filter(|v| v["type"] == "progress").collect();
    assert!(!events.is_empty(), "no progress event in {out}");
    let total = 8 * MIB + "alpha\nbravo\ncharlie\n".len() as u64;
    let mut last = -1.0;
    for e in &events {
        assert_eq!(e["operation"], "restore", "{e}");
        assert_eq!(num(e, "bytes_total"), total, "{e}");
        let pct = e["percent"].as_f64().expect("percent");
        assert!((0.0..100.0).contains(&pct) && pct >= last, "{e}");
        last = pct;
        assert!(e["bytes_per_sec"].as_f64().is_some(), "{e}");
    }
    assert!(
        events
            .iter()
            .any(|e| e["eta_secs"].as_f64().is_some_and(|s| s > 0.0)),
        "no time left in {events:?} (packs {:?})",
        repo.packs()
            .iter()
            .map(|(p, _)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .collect::<Vec<_>>()
    );
    assert!(
        events
            .iter()
            .any(|e| num(e, "files") > 0 || num(e, "bytes_written") > 0),
        "counters that stay at zero: {events:?}"
    );
    let report = lines.last().expect("report");
    assert_eq!(num(report, "bytes"), total);
    assert!(
        report["duration_secs"].as_f64().expect("duration") > 0.0,
        "{report}"
    );
    assert!(num(report, "bytes_per_sec") > 0, "{report}");

    let text = repo
        .run("restore", args!["latest", "--verify-only"])
        .success()
        .stdout();
    assert!(text.contains(" in ") && text.contains("/s)"), "{text}");
}

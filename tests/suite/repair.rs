//! Golden damaged repositories (tests/fixtures/damaged/, made by
//! `cargo run --example make-damaged-fixtures`): what `check` says about each is pinned, and
//! each repair that applies is run on a copy and judged against the regenerated source:
//! intact files restore byte for byte, lost ones are absent and named, check ends clean, prune
//! works again.
//!
//! `LIFEBOAT_BLESS=1 cargo test --test suite repair::` rewrites the pinned check outputs (after
//! regenerating the fixtures); review the diff.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::common::damaged_source;
use crate::common::*;
use serde_json::{json, Value};

/// A copy of a fixture repository in a scratch directory.
struct Fixture {
    name: &'static str,
    /// The fixture's directory in the source tree.
    dir: PathBuf,
    manifest: Value,
    repo: Repo,
    _scratch: Scratch,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/damaged")
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {from:?}: {e}")) {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Sets the times of everything below `dir` two days back, as in a repository in use for a
/// while (prune removes unindexed packs only once they are older than the lock bound).
fn age(dir: &Path) {
    let old = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if entry.file_type().is_file() {
            fs::File::options()
                .write(true)
                .open(entry.path())
                .and_then(|f| f.set_modified(old))
                .expect("set mtime");
        }
    }
}

fn fixture(name: &'static str) -> Fixture {
    let dir = fixtures_dir().join(name);
    let manifest: Value = serde_json::from_slice(
        &fs::read(dir.join("damage.json")).unwrap_or_else(|e| panic!("{name}/damage.json: {e}")),
    )
    .expect("damage.json is JSON");
    let scratch = Scratch::new();
    let path = scratch.join("repo");
    copy_dir(&dir.join("repo"), &path);
    // Git keeps no empty directories: give the copy the whole layout.
    for d in ["index", "snapshots", "keys", "locks"] {
        fs::create_dir_all(path.join(d)).expect("mkdir");
    }
    for i in 0..=255u8 {
        fs::create_dir_all(path.join("data").join(format!("{i:02x}"))).expect("mkdir");
    }
    // Git keeps no modes but 0644: give the key objects the owner-only mode a repository
    // gives them (check warns about readable ones).
    for key in fs::read_dir(path.join("keys")).expect("keys").flatten() {
        set_mode(&key.path(), 0o600);
    }
    age(&path);
    Fixture {
        name,
        dir,
        manifest,
        repo: Repo::at(&path),
        _scratch: scratch,
    }
}

fn bless() -> bool {
    std::env::var_os("LIFEBOAT_BLESS").is_some_and(|v| v == "1")
}

/// The last JSON document on stdout (progress events are single lines before it), with the
/// scratch path of the repository replaced by `<repo>`.
fn report_json(out: &Out, repo: &Path) -> Value {
    let text = out.stdout().replace(&repo.display().to_string(), "<repo>");
    let start = text
        .lines()
        .scan(0usize, |pos, line| {
            let here = *pos;
            *pos += line.len() + 1;
            Some((here, line))
        })
        .filter(|(_, l)| *l == "{")
        .map(|(p, _)| p)
        .last()
        .unwrap_or_else(|| panic!("no JSON report on stdout\n{out}"));
    serde_json::from_str(&text[start..])
        .unwrap_or_else(|e| panic!("report is not JSON: {e}\n{out}"))
}

/// Runs `check --json` (with `--read-data` if asked) and compares exit code and report with
/// the pinned copy.
#[track_caller]
fn pinned_check(f: &Fixture, read_data: bool) -> Value {
    let mut rest = args!["--json"];
    if read_data {
        rest.push("--read-data".into());
    }
    let out = f.repo.check(rest);
    let mut report = report_json(&out, &f.repo.path);
    // Reads in flight depend on this machine's cores: checked here, not pinned.
    let readers = report
        .as_object_mut()
        .and_then(|r| r.remove("readers"))
        .and_then(|r| r.as_u64());
    match (read_data, readers) {
        (true, Some(n)) => assert!(
            n >= 1,
            "{}: check --read-data read with {n} readers",
            f.name
        ),
        (false, Some(n)) => assert_eq!(n, 0, "{}: check without --read-data", f.name),
        (_, None) => panic!("{}: the check report has no readers count\n{out}", f.name),
    }
    let actual = json!({"exit_code": out.code, "report": report});
    let file = f.dir.join(if read_data {
        "check-read-data.json"
    } else {
        "check.json"
    });
    if bless() {
        fs::write(
            &file,
            serde_json::to_string_pretty(&actual).expect("json") + "\n",
        )
        .expect("write pinned output");
        return actual;
    }
    let expected: Value = serde_json::from_slice(
        &fs::read(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (LIFEBOAT_BLESS=1 makes it)", file.display())),
    )
    .expect("pinned output is JSON");
    assert_eq!(
        actual,
        expected,
        "{}: check{} no longer says what is pinned in {}\nactual:\n{}",
        f.name,
        if read_data { " --read-data" } else { "" },
        file.display(),
        serde_json::to_string_pretty(&actual).expect("json")
    );
    actual
}

/// `check --json` now: (exit code, report).
fn check_now(f: &Fixture, read_data: bool) -> (Option<i32>, Value) {
    let mut rest = args!["--json"];
    if read_data {
        rest.push("--read-data".into());
    }
    let out = f.repo.check(rest);
    let report = report_json(&out, &f.repo.path);
    (out.code, report)
}

#[track_caller]
fn assert_clean(f: &Fixture, read_data: bool) -> Value {
    let (code, report) = check_now(f, read_data);
    assert_eq!(
        report["errors"],
        json!([]),
        "{}: check{} is not clean:\n{report:#}",
        f.name,
        if read_data { " --read-data" } else { "" }
    );
    assert_eq!(code, Some(0), "{report:#}");
    report
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn short(id: &str) -> &str {
    &id[..8]
}

/// Every "affects" line of a check report's errors.
fn affected(report: &Value) -> BTreeSet<String> {
    report["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| strings(&e["affects"]))
        .collect()
}

/// What the manifest says each snapshot loses, as check's "affects" lines.
fn expected_affects(f: &Fixture) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (id, loss) in f.manifest["lost"].as_object().into_iter().flatten() {
        for p in strings(&loss["removed_files"]) {
            out.insert(format!("snapshot {}: {p}", short(id)));
        }
        for p in strings(&loss["emptied_dirs"]) {
            out.insert(format!("snapshot {}: {p} (directory listing)", short(id)));
        }
    }
    out
}

/// The ids of the fixture's snapshots with their path and stage.
fn manifest_snapshots(f: &Fixture) -> Vec<(String, String, u64)> {
    f.manifest["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| (string(s, "id"), string(s, "path"), num(s, "stage")))
        .collect()
}

/// The source of stage 1 and of stage 2, written again.
struct Sources {
    scratch: Scratch,
}

impl Sources {
    fn new() -> Self {
        let scratch = Scratch::new();
        damaged_source::write_stage1(&scratch.join("1")).expect("stage 1");
        damaged_source::write_stage1(&scratch.join("2")).expect("stage 2");
        damaged_source::write_stage2(&scratch.join("2")).expect("stage 2");
        Sources { scratch }
    }

    /// The regenerated directory for a backed-up path of the given stage.
    fn dir(&self, path: &str, stage: u64) -> PathBuf {
        let rel = Path::new(path)
            .strip_prefix(damaged_source::SOURCE_ROOT)
            .expect("a fixture path is under the source root");
        self.scratch.join(stage.to_string()).join(rel)
    }
}

/// Restores `snapshot` (of `path`, from the source `stage`) and compares it with the source:
/// every entry restores exactly (type, content byte for byte, mode, mtime, link target)
/// except the files in `lost`, which must be absent, and what lay beneath `emptied`, which must
/// be empty.
#[track_caller]
fn assert_restores(
    f: &Fixture,
    sources: &Sources,
    snapshot: &str,
    path: &str,
    stage: u64,
    lost: &[String],
    emptied: &[String],
) {
    let target = Scratch::new();
    f.repo.restore(snapshot, target.path(), args![]).success();
    let restored_dir = restored(target.path(), Path::new(path));
    let source = scan_tree(&sources.dir(path, stage));
    let got = scan_tree(&restored_dir);
    let rel = |p: &String| {
        PathBuf::from(
            p.strip_prefix(&format!("{path}/"))
                .unwrap_or_else(|| panic!("{p} is not under {path}")),
        )
    };
    let lost: BTreeSet<PathBuf> = lost.iter().map(rel).collect();
    let emptied: Vec<PathBuf> = emptied.iter().map(rel).collect();
    let expected: BTreeMap<&PathBuf, &Entry> = source
        .iter()
        .filter(|(p, _)| !lost.contains(*p) && !emptied.iter().any(|d| p.starts_with(d) && *p != d))
        .collect();
    let got_keys: BTreeSet<&PathBuf> = got.keys().collect();
    let want_keys: BTreeSet<&PathBuf> = expected.keys().copied().collect();
    assert_eq!(
        got_keys, want_keys,
        "{}: snapshot {snapshot} restores other entries than the intact ones",
        f.name
    );
    for (p, want) in expected {
        let have = &got[p];
        assert_eq!(have.kind, want.kind, "{p:?}");
        assert_eq!(
            have.content, want.content,
            "{}: {p:?}: content differs",
            f.name
        );
        assert_eq!(have.link, want.link, "{p:?}");
        assert_eq!(have.mtime, want.mtime, "{}: {p:?}: mtime", f.name);
        if want.kind != Kind::Symlink {
            assert_eq!(have.perm, want.perm, "{}: {p:?}: mode", f.name);
        }
    }
}

/// `repair snapshots --json REST...`, asserting success.
#[track_caller]
fn repair_snapshots(f: &Fixture, rest: Vec<std::ffi::OsString>) -> Value {
    let mut all = args!["snapshots", "--repo", &f.repo.path, "--json"];
    all.extend(rest);
    let mut cmd = args!["repair"];
    cmd.extend(all);
    let out = lifeboat(cmd).success();
    report_json(&out, &f.repo.path)
}

#[track_caller]
fn repair_index(f: &Fixture, rest: Vec<std::ffi::OsString>, code: i32) -> Value {
    let mut cmd = args!["repair", "index", "--repo", &f.repo.path, "--json"];
    cmd.extend(rest);
    let out = lifeboat(cmd).expect_code(code);
    report_json(&out, &f.repo.path)
}

/// Checks a `repair snapshots` report against the manifest: exactly the damaged snapshots are
/// repaired, each naming exactly the files and directories the damage costs; the others are
/// left alone. Returns (original, new) ids.
#[track_caller]
fn assert_repaired_as_manifest(f: &Fixture, report: &Value) -> Vec<(String, String)> {
    let lost = f.manifest["lost"].as_object().expect("lost");
    let repaired = report["repaired"].as_array().expect("repaired");
    let originals: BTreeSet<String> = repaired.iter().map(|r| string(r, "original")).collect();
    assert_eq!(
        originals,
        lost.keys().cloned().collect::<BTreeSet<_>>(),
        "{}: repaired other snapshots than the damaged ones\n{report:#}",
        f.name
    );
    let intact: BTreeSet<String> = strings(&report["intact"]).into_iter().collect();
    for (id, _, _) in manifest_snapshots(f) {
        assert_eq!(
            intact.contains(&id),
            !lost.contains_key(&id),
            "{}: snapshot {id} intact or not\n{report:#}",
            f.name
        );
    }
    let mut pairs = Vec::new();
    for r in repaired {
        let orig = string(r, "original");
        let paths = |field: &str| -> Vec<String> {
            r[field]
                .as_array()
                .expect(field)
                .iter()
                .map(|l| {
                    assert!(
                        !string(l, "reason").is_empty(),
                        "a loss without a reason: {l}"
                    );
                    string(l, "path")
                })
                .collect()
        };
        let mut removed = paths("removed_files");
        removed.sort();
        let mut emptied = paths("emptied_dirs");
        emptied.sort();
        assert_eq!(
            removed,
            strings(&lost[&orig]["removed_files"]),
            "{}: {orig}",
            f.name
        );
        assert_eq!(
            emptied,
            strings(&lost[&orig]["emptied_dirs"]),
            "{}: {orig}",
            f.name
        );
        assert_eq!(r["removed_entries"], json!([]));
        if !report["dry_run"].as_bool().unwrap_or(false) {
            pairs.push((orig, string(r, "new")));
        }
    }
    pairs
}

/// The repaired snapshots restore with exactly the intact files; they are tagged `repaired` and
/// name their original.
#[track_caller]
fn assert_repaired_restore(f: &Fixture, sources: &Sources, pairs: &[(String, String)]) {
    let listed = f.repo.snapshots(args![]);
    for (orig, new) in pairs {
        let (_, path, stage) = manifest_snapshots(f)
            .into_iter()
            .find(|(id, _, _)| id == orig)
            .expect("original in the manifest");
        let snap = listed
            .iter()
            .find(|s| string(s, "id") == *new)
            .unwrap_or_else(|| panic!("repaired snapshot {new} is not listed"));
        assert!(
            strings(&snap["tags"]).contains(&"repaired".to_string()),
            "{snap}"
        );
        assert_eq!(string(snap, "original"), *orig, "{snap}");
        let loss = &f.manifest["lost"][orig];
        // Its size counts what it holds: the intact files.
        let lost = strings(&loss["lost_files"]);
        let held: u64 = scan_tree(&sources.dir(&path, stage))
            .iter()
            .filter(|(rel, e)| {
                e.kind == Kind::File && !lost.contains(&format!("{path}/{}", rel.display()))
            })
            .map(|(_, e)| e.size)
            .sum();
        assert_eq!(num(&snap["summary"], "total_bytes"), held, "{snap}");
        assert_restores(
            f,
            sources,
            new,
            &path,
            stage,
            &strings(&loss["lost_files"]),
            &strings(&loss["emptied_dirs"]),
        );
    }
}

/// Every snapshot in the repository restores (verified, nothing written).
#[track_caller]
fn every_snapshot_verifies(f: &Fixture) {
    for s in f.repo.snapshots(args![]) {
        let target = Scratch::new();
        f.repo
            .restore(&string(&s, "id"), target.path(), args!["--verify-only"])
            .success();
    }
}

/// Every snapshot of an undamaged fixture restores exactly as the source.
#[track_caller]
fn all_restore_whole(f: &Fixture, sources: &Sources) {
    for (id, path, stage) in manifest_snapshots(f) {
        assert_restores(f, sources, &id, &path, stage, &[], &[]);
    }
}

#[track_caller]
fn prune_succeeds(f: &Fixture) -> Value {
    let out = f.repo.run("prune", args!["--json"]).success();
    report_json(&out, &f.repo.path)
}

fn packs_named(report: &Value, field: &str) -> Vec<String> {
    strings(&report[field])
}

fn warnings(report: &Value) -> Vec<String> {
    strings(&report["warnings"])
}

// ---------------------------------------------------------------------------------------------

#[test]
fn healthy_fixture_checks_clean_restores_whole_and_repairs_change_nothing() {
    let f = fixture("healthy");
    let sources = Sources::new();
    let quick = pinned_check(&f, false);
    let full = pinned_check(&f, true);
    for r in [&quick, &full] {
        assert_eq!(r["exit_code"], 0, "{r:#}");
        assert_eq!(r["report"]["snapshots"], 3);
        assert_eq!(warnings(&r["report"]), Vec::<String>::new());
    }
    all_restore_whole(&f, &sources);
    let index = repair_index(&f, args![], 0);
    for field in [
        "missing_packs",
        "added_packs",
        "damaged_packs",
        "unreadable_packs",
        "corrected_packs",
    ] {
        assert_eq!(index[field], json!([]), "{field}: {index:#}");
    }
    assert_eq!(
        num(&index, "packs_reused"),
        num(&index, "packs"),
        "{index:#}"
    );
    let all = repair_index(&f, args!["--read-all-packs"], 0);
    assert_eq!(num(&all, "packs_read"), num(&all, "packs"), "{all:#}");
    assert_eq!(num(&all, "blobs"), num(&index, "blobs"));
    let snaps = repair_snapshots(&f, args!["--read-data"]);
    assert_eq!(snaps["repaired"], json!([]), "{snaps:#}");
    assert_eq!(strings(&snaps["intact"]).len(), 3);
    assert_clean(&f, true);
    all_restore_whole(&f, &sources);
}

#[test]
fn missing_pack_fixture_is_pinned_and_repaired() {
    let f = fixture("pack-missing");
    let sources = Sources::new();
    let object = string(&f.manifest, "damaged_object");
    let pack_id = object.rsplit('/').next().expect("id").to_string();
    for read_data in [false, true] {
        let r = pinned_check(&f, read_data);
        assert_eq!(r["exit_code"], 1);
        let errors = r["report"]["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "{r:#}");
        assert_eq!(errors[0]["object"], json!(object));
        assert_eq!(errors[0]["message"], "is missing from storage");
        assert_eq!(affected(&r["report"]), expected_affects(&f));
    }
    // Prune refuses on the damaged repository.
    f.repo
        .run("prune", args![])
        .failure()
        .stderr_contains("prune stopped before changing anything");

    // repair index drops the missing pack's entries, naming it.
    let dry = repair_index(&f, args!["--dry-run"], 0);
    assert_eq!(dry["missing_packs"][0]["pack"], json!(object), "{dry:#}");
    assert_eq!(
        pinned_check(&f, false)["exit_code"],
        1,
        "the dry run changed nothing"
    );
    let index = repair_index(&f, args![], 0);
    assert_eq!(
        index["missing_packs"][0]["pack"],
        json!(object),
        "{index:#}"
    );
    assert_eq!(num(&index["missing_packs"][0], "blobs"), 2, "{index:#}");
    // The same files are affected, now as chunks the index lacks.
    let (_, after) = check_now(&f, false);
    assert_eq!(affected(&after), expected_affects(&f), "{after:#}");
    assert!(
        after.to_string().contains("is not in the index (missing)"),
        "{after:#}"
    );
    assert!(!after.to_string().contains(&pack_id), "{after:#}");

    // repair snapshots (the text output names every file).
    let text = lifeboat(args![
        "repair",
        "snapshots",
        "--repo",
        &f.repo.path,
        "--dry-run"
    ])
    .success();
    for p in expected_affects(&f) {
        let path = p.split_once(": ").expect("affects line").1;
        assert!(
            text.stdout().contains(&format!("removed file {path}")),
            "{text}"
        );
    }
    assert!(text.stdout().contains("would be repaired"), "{text}");
    let report = repair_snapshots(&f, args![]);
    let pairs = assert_repaired_as_manifest(&f, &report);
    assert_repaired_restore(&f, &sources, &pairs);
    // The originals are kept until forgotten.
    assert_eq!(f.repo.snapshots(args![]).len(), 4);
    let (code, _) = check_now(&f, false);
    assert_eq!(code, Some(1), "the damaged original is still there");
    for (orig, _) in &pairs {
        f.repo.run("forget", args![orig]).success();
    }
    assert_clean(&f, false);
    assert_clean(&f, true);
    prune_succeeds(&f);
    assert_clean(&f, true);
    every_snapshot_verifies(&f);
    // The intact snapshots are untouched.
    for (id, path, stage) in manifest_snapshots(&f) {
        if f.manifest["lost"].get(&id).is_none() {
            assert_restores(&f, &sources, &id, &path, stage, &[], &[]);
        }
    }
}

#[test]
fn missing_index_fixture_is_pinned_and_rebuilt_by_repair_index() {
    let f = fixture("index-missing");
    let sources = Sources::new();
    for read_data in [false, true] {
        let r = pinned_check(&f, read_data);
        assert_eq!(r["exit_code"], 1);
        // Snapshot 3's root listing is in an unindexed pack.
        assert!(
            r["report"]["errors"][0]["message"] == "is not in the index (missing)",
            "{r:#}"
        );
        assert_eq!(
            warnings(&r["report"]).len(),
            2,
            "its two packs are unreferenced: {r:#}"
        );
    }
    f.repo
        .run("prune", args![])
        .failure()
        .stderr_contains("prune stopped before changing anything");
    let report = repair_index(&f, args![], 0);
    assert_eq!(packs_named(&report, "added_packs").len(), 2, "{report:#}");
    assert_eq!(report["missing_packs"], json!([]));
    assert_eq!(num(&report, "index_objects_written"), 1);
    assert_eq!(num(&report, "index_objects_removed"), 2);
    let clean = assert_clean(&f, false);
    assert!(warnings(&clean).is_empty(), "{clean:#}");
    assert_clean(&f, true);
    // Nothing was lost: nothing to repair, every snapshot whole.
    let snaps = repair_snapshots(&f, args!["--read-data"]);
    assert_eq!(snaps["repaired"], json!([]), "{snaps:#}");
    all_restore_whole(&f, &sources);
    let pruned = prune_succeeds(&f);
    assert_eq!(num(&pruned, "packs_removed"), 0, "{pruned:#}");
}

#[test]
fn truncated_pack_fixture_is_pinned_salvaged_and_repaired() {
    let f = fixture("truncated-pack");
    let sources = Sources::new();
    let object = string(&f.manifest, "damaged_object");
    for read_data in [false, true] {
        let r = pinned_check(&f, read_data);
        assert_eq!(r["exit_code"], 1);
        assert_eq!(affected(&r["report"]), expected_affects(&f), "{r:#}");
        assert!(
            r["report"]["errors"].to_string().contains(&object),
            "the truncated pack is named: {r:#}"
        );
    }
    // repair index salvages the chunks before the cut and leaves the pack out.
    let index = repair_index(&f, args![], 0);
    let damaged = &index["damaged_packs"];
    assert_eq!(damaged.as_array().map(Vec::len), Some(1), "{index:#}");
    assert_eq!(damaged[0]["pack"], json!(object));
    assert_eq!(damaged[0]["located_by"], "old index");
    assert!(num(&damaged[0], "salvaged") > 0, "{index:#}");
    assert!(!strings(&damaged[0]["lost"]).is_empty(), "{index:#}");
    assert_eq!(packs_named(&index, "new_packs").len(), 1, "{index:#}");
    let (code, after) = check_now(&f, false);
    assert_eq!(code, Some(1));
    assert_eq!(affected(&after), expected_affects(&f), "{after:#}");
    assert!(
        warnings(&after).iter().any(|w| w.contains(&object)),
        "the damaged pack is now an unindexed leftover: {after:#}"
    );
    // repair snapshots drops exactly the files whose chunks were cut off; --forget removes the
    // originals; what stayed intact in the truncated pack is still restored.
    let report = repair_snapshots(&f, args!["--forget"]);
    let pairs = assert_repaired_as_manifest(&f, &report);
    assert_eq!(strings(&report["forgotten"]).len(), pairs.len());
    assert_eq!(f.repo.snapshots(args![]).len(), 3);
    assert_repaired_restore(&f, &sources, &pairs);
    assert_clean(&f, false);
    let full = assert_clean(&f, true);
    assert!(
        warnings(&full)
            .iter()
            .any(|w| w.contains(&object) && w.contains("is damaged")),
        "{full:#}"
    );
    // Prune removes the damaged leftover; then nothing is left to warn about.
    let pruned = prune_succeeds(&f);
    assert!(num(&pruned, "unindexed_packs_removed") >= 1, "{pruned:#}");
    let full = assert_clean(&f, true);
    assert!(warnings(&full).is_empty(), "{full:#}");
    every_snapshot_verifies(&f);
}

#[test]
fn flipped_byte_in_a_directory_listing_fixture_is_pinned_and_repaired() {
    let f = fixture("tree-flipped-byte");
    let sources = Sources::new();
    let object = string(&f.manifest, "damaged_object");
    for read_data in [false, true] {
        let r = pinned_check(&f, read_data);
        assert_eq!(r["exit_code"], 1);
        assert_eq!(affected(&r["report"]), expected_affects(&f), "{r:#}");
    }
    f.repo
        .run("prune", args![])
        .failure()
        .stderr_contains("prune stopped before changing anything");
    // Listings are always read: no --read-data needed to find the damage.
    let report = repair_snapshots(&f, args![]);
    let pairs = assert_repaired_as_manifest(&f, &report);
    for r in report["repaired"].as_array().expect("repaired") {
        assert!(
            string(&r["emptied_dirs"][0], "reason").contains(&object),
            "the reason names the damaged pack: {r:#}"
        );
    }
    assert_repaired_restore(&f, &sources, &pairs);
    for (orig, _) in &pairs {
        f.repo.run("forget", args![orig]).success();
    }
    assert_clean(&f, false);
    // The damaged listing is still in the index: check --read-data says so until repair index
    // --read-data copies the pack's other listings out and leaves it.
    let (code, full) = check_now(&f, true);
    assert_eq!(code, Some(1), "{full:#}");
    assert!(full["errors"].to_string().contains(&object), "{full:#}");
    let index = repair_index(&f, args!["--read-data"], 0);
    assert_eq!(
        index["damaged_packs"][0]["pack"],
        json!(object),
        "{index:#}"
    );
    assert_eq!(
        index["damaged_packs"][0]["lost"].as_array().map(Vec::len),
        Some(1)
    );
    assert_clean(&f, true);
    prune_succeeds(&f);
    let full = assert_clean(&f, true);
    assert!(warnings(&full).is_empty(), "{full:#}");
    every_snapshot_verifies(&f);
    assert_repaired_restore(&f, &sources, &pairs);
}

#[test]
fn flipped_byte_in_file_data_fixture_is_pinned_and_repaired_with_read_data() {
    let f = fixture("data-flipped-byte");
    let sources = Sources::new();
    let object = string(&f.manifest, "damaged_object");
    let quick = pinned_check(&f, false);
    assert_eq!(quick["exit_code"], 0, "the structure is intact: {quick:#}");
    let full = pinned_check(&f, true);
    assert_eq!(full["exit_code"], 1);
    assert_eq!(affected(&full["report"]), expected_affects(&f), "{full:#}");
    assert!(full["report"]["errors"].to_string().contains(&object));
    // Without --read-data, repair snapshots cannot see the damage and leaves every snapshot.
    let blind = repair_snapshots(&f, args![]);
    assert_eq!(blind["repaired"], json!([]), "{blind:#}");
    // With it, the damaged file goes.
    let dry = repair_snapshots(&f, args!["--read-data", "--dry-run"]);
    assert_repaired_as_manifest(&f, &dry);
    assert_eq!(
        f.repo.snapshots(args![]).len(),
        3,
        "a dry run writes nothing"
    );
    let report = repair_snapshots(&f, args!["--read-data", "--forget"]);
    assert!(num(&report, "bytes_read") > 0);
    let pairs = assert_repaired_as_manifest(&f, &report);
    assert_repaired_restore(&f, &sources, &pairs);
    let index = repair_index(&f, args!["--read-data"], 0);
    assert_eq!(
        index["damaged_packs"][0]["pack"],
        json!(object),
        "{index:#}"
    );
    assert_clean(&f, true);
    prune_succeeds(&f);
    assert_clean(&f, true);
    every_snapshot_verifies(&f);
}

#[test]
fn unreferenced_pack_fixture_warns_and_repair_index_adds_its_packs() {
    let f = fixture("unreferenced-pack");
    for read_data in [false, true] {
        let r = pinned_check(&f, read_data);
        assert_eq!(r["exit_code"], 0, "leftovers are harmless: {r:#}");
        assert_eq!(r["report"]["errors"], json!([]));
        let w = warnings(&r["report"]);
        assert_eq!(w.len(), 2, "{r:#}");
        assert!(w.iter().all(|w| w.contains("is not named by any index")));
    }
    let report = repair_index(&f, args![], 0);
    assert_eq!(packs_named(&report, "added_packs").len(), 2, "{report:#}");
    let clean = assert_clean(&f, true);
    assert!(warnings(&clean).is_empty(), "{clean:#}");
    // Now indexed but used by no snapshot: prune deletes them.
    let pruned = prune_succeeds(&f);
    assert_eq!(num(&pruned, "unused_packs"), 2, "{pruned:#}");
    assert_clean(&f, true);
    all_restore_whole(&f, &Sources::new());
}

#[test]
fn duplicate_fixtures_are_healthy_and_repair_index_merges_them() {
    let sources = Sources::new();
    for name in ["duplicate-blob", "duplicate-index"] {
        let f = fixture(name);
        for read_data in [false, true] {
            let r = pinned_check(&f, read_data);
            assert_eq!(r["exit_code"], 0, "{name}: {r:#}");
            assert!(warnings(&r["report"]).is_empty(), "{name}: {r:#}");
        }
        let report = repair_index(&f, args!["--read-all-packs"], 0);
        assert_eq!(report["damaged_packs"], json!([]), "{name}: {report:#}");
        assert_eq!(num(&report, "index_objects_written"), 1, "{name}");
        assert_eq!(num(&report, "index_objects_before"), 4, "{name}");
        assert_clean(&f, true);
        let pruned = prune_succeeds(&f);
        if name == "duplicate-blob" {
            // The second copy goes (or its pack is repacked away).
            assert!(num(&pruned, "packs_removed") >= 1, "{pruned:#}");
        }
        assert_clean(&f, true);
        all_restore_whole(&f, &sources);
    }
}

#[test]
fn repair_dry_runs_change_nothing() {
    for name in ["truncated-pack", "tree-flipped-byte", "index-missing"] {
        let f = fixture(name);
        let before = fingerprint(&f.repo.path);
        repair_index(&f, args!["--dry-run"], 0);
        repair_index(&f, args!["--dry-run", "--read-data"], 0);
        repair_snapshots(&f, args!["--dry-run", "--read-data", "--forget"]);
        let mut after = fingerprint(&f.repo.path);
        let mut before = before;
        after.retain(|p, _| !p.starts_with("locks"));
        before.retain(|p, _| !p.starts_with("locks"));
        assert_eq!(after, before, "{name}: a dry run changed the repository");
    }
}

#[test]
fn repair_snapshots_selects_by_id_and_filter() {
    let f = fixture("pack-missing");
    let damaged = f.manifest["lost"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .expect("a damaged snapshot");
    // A snapshot without damage, chosen by id: nothing to do.
    let other = manifest_snapshots(&f)
        .into_iter()
        .find(|(id, _, _)| *id != damaged)
        .expect("another snapshot");
    let r = repair_snapshots(&f, args![&other.0[..8]]);
    assert_eq!(r["repaired"], json!([]), "{r:#}");
    assert_eq!(num(&r, "snapshots"), 1);
    // A path filter that matches nothing is refused, not silently empty.
    let out = lifeboat(args![
        "repair",
        "snapshots",
        "--repo",
        &f.repo.path,
        "--path",
        "/no/such/path"
    ])
    .failure();
    assert!(out.stderr().contains("no snapshot matches"), "{out}");
    // The damaged one by prefix.
    let r = repair_snapshots(&f, args![&damaged[..10], "--host", "fixture-host"]);
    assert_eq!(r["repaired"].as_array().map(Vec::len), Some(1), "{r:#}");
}

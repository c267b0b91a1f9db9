//! Encrypted repositories, end to end: nothing readable reaches the storage, every kind of
//! damage or forgery is caught and named before anything is written, wrong passwords are
//! refused with exit code 12, and a snapshot comes back on a fresh machine with only the
//! repository and a password or a recovery kit.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

/// A password that opens none of the test repositories.
const WRONG_PASSWORD: &str = "Tr0ub4dor&3 is not it";

/// Every secret a test here hands to lifeboat; none may ever appear in its output.
const SECRETS: &[&str] = &[PASSWORD, WRONG_PASSWORD];

/// Asserts that no secret appears in the output of a command, and passes it on.
#[track_caller]
fn checked(out: Out) -> Out {
    let all = out.all_output();
    for secret in SECRETS {
        assert!(
            !all.contains(secret),
            "the output contains the password {secret:?}\n{out}"
        );
    }
    out
}

/// `lifeboat ARGS...` in the test environment, output checked for secrets.
#[track_caller]
fn lb(args: Vec<std::ffi::OsString>) -> Out {
    checked(lifeboat(args))
}

/// `lifeboat SUBCOMMAND --repo R REST...`, output checked for secrets.
#[track_caller]
fn lb_repo(repo: &Repo, subcommand: &str, rest: Vec<std::ffi::OsString>) -> Out {
    checked(repo.run(subcommand, rest))
}

/// Runs a prepared command, output checked for secrets.
#[track_caller]
fn run(cmd: Command) -> Out {
    checked(run_cmd(cmd))
}

/// A lifeboat command with no password in the environment at all.
fn cmd_without_password() -> Command {
    let mut cmd = lifeboat_cmd();
    cmd.env_remove("LIFEBOAT_PASSWORD");
    cmd
}

/// 64 fixed, random-looking ASCII bytes that occur nowhere by chance.
fn marker() -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    random_bytes(64, 0x5eed_4d61_726b)
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()])
        .collect()
}

const SECRET_DIR: &str = "quixotic-zebra-ledger-5150";
const SECRET_FILE: &str = "xylophone-marmalade-payroll-4411.txt";

/// A source whose file holds the marker four times between stretches of random
/// (incompressible) bytes, in a directory and file with distinctive names.
fn marked_source(root: &Path) -> PathBuf {
    let src = root.join("src");
    let mut content = Vec::new();
    for i in 0..4 {
        content.extend_from_slice(&random_bytes(40 * KIB as usize, 700 + i));
        content.extend_from_slice(&marker());
    }
    content.extend_from_slice(&random_bytes(1000, 799));
    write_file(&src.join(SECRET_DIR).join(SECRET_FILE), &content);
    write_file(&src.join("notes.txt"), b"nothing to see\n");
    stamp_mtimes(&src, 1_600_000_000);
    src
}

/// Every regular file below `root`, with its bytes.
fn all_files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for (rel, e) in scan_tree(root) {
        if e.kind == Kind::File {
            let p = root.join(&rel);
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("read {p:?}: {e}"));
            out.push((rel, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The files below `root` that contain `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    all_files(root)
        .into_iter()
        .filter(|(_, bytes)| contains(bytes, needle))
        .map(|(rel, _)| rel)
        .collect()
}

/// The names of the objects in one directory of the repository (`keys`, `index`, …).
fn objects(repo: &Repo, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo.path.join(dir))
        .unwrap_or_else(|e| panic!("read {dir}/: {e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[track_caller]
fn only_object(repo: &Repo, dir: &str) -> String {
    let names = objects(repo, dir);
    assert_eq!(names.len(), 1, "expected one object in {dir}/: {names:?}");
    names.into_iter().next().expect("one object")
}

fn pack_name(id: &str) -> String {
    format!("data/{}/{}", &id[..2], id)
}

fn read_config(repo: &Repo) -> Value {
    let bytes = fs::read(repo.path.join("config")).expect("read config");
    serde_json::from_slice(&bytes).expect("config is JSON")
}

fn write_config(repo: &Repo, config: &Value) {
    let mut bytes = serde_json::to_vec_pretty(config).expect("serialize config");
    bytes.push(b'\n');
    fs::write(repo.path.join("config"), bytes).expect("write config");
}

fn write_password_file(path: &Path, password: &str) {
    write_file(path, format!("{password}\n").as_bytes());
}

/// A repository with one snapshot of a small source (a 300 KiB random file, so one data pack,
/// and a few small files and directories, so one tree pack), restored once into `target`;
/// then one restored file was changed and an unrelated file added, so a restore with
/// `--overwrite` would change the target.
struct Restored {
    repo: Repo,
    scratch: Scratch,
    src: PathBuf,
    target: PathBuf,
}

fn backed_up_and_restored() -> Restored {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    write_file(&src.join("big.bin"), &random_bytes(300 * KIB as usize, 11));
    write_file(&src.join("a.txt"), b"alpha\n");
    write_file(&src.join("sub/b.txt"), b"bravo\n");
    write_file(&src.join("sub/deeper/c.txt"), b"charlie\n");
    stamp_mtimes(&src, 1_600_000_000);
    repo.backup(args![&src]);
    let target = scratch.join("target");
    lb_repo(&repo, "restore", args!["latest", "--target", &target]).success();
    assert_trees_equal(&src, &restored(&target, &src));
    write_file(
        &restored(&target, &src).join("a.txt"),
        b"changed since the restore\n",
    );
    write_file(&target.join("keep.txt"), b"not from the snapshot\n");
    Restored {
        repo,
        scratch,
        src,
        target,
    }
}

/// Runs `restore latest --overwrite` into `target`, asserts exit code `code`, that stderr
/// names each of `names`, and that the target was left exactly as it was.
#[track_caller]
fn assert_restore_refused(repo: &Repo, target: &Path, code: i32, names: &[&str]) -> Out {
    let before = fingerprint(target);
    let out = lb_repo(
        repo,
        "restore",
        args!["latest", "--target", target, "--overwrite"],
    )
    .expect_code(code);
    for name in names {
        out.stderr_contains(name);
    }
    assert_fingerprint_unchanged(&before, &fingerprint(target), "the restore target");
    out
}

/// Asserts that `check --read-data` fails and names `name`.
#[track_caller]
fn assert_check_finds(repo: &Repo, name: &str) {
    let out = lb_repo(repo, "check", args!["--read-data"]).failure();
    assert!(
        out.all_output().contains(name),
        "check --read-data does not name {name}\n{out}"
    );
}

// ---------------------------------------------------------------------------
// What reaches the storage
// ---------------------------------------------------------------------------

#[test]
fn init_records_encryption_and_one_key_named_by_its_hash() {
    let repo = Repo::new();
    let config = read_config(&repo);
    // Without --cipher: the faster cipher on this machine.
    assert_eq!(
        config["encryption"],
        lifeboat::repo::Cipher::preferred().name(),
        "config: {config}"
    );
    let mac = config["mac"].as_str().unwrap_or_default();
    assert!(is_hex(mac, 64), "config has no 64-hex mac: {config}");
    let key = only_object(&repo, "keys");
    assert_eq!(
        file_hash(&repo.path.join("keys").join(&key)),
        key,
        "a key object is not named by the BLAKE3 hash of its bytes"
    );
}

#[test]
fn no_plaintext_content_or_name_reaches_an_encrypted_repository() {
    let scratch = Scratch::new();
    let src = marked_source(scratch.path());
    let repo = Repo::new();
    repo.backup(args![&src]);
    let m = marker();
    // The scratch directory's random name is part of every backed-up path.
    let scratch_name = scratch
        .path()
        .file_name()
        .expect("scratch name")
        .to_string_lossy()
        .into_owned();
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("the content marker", m.clone()),
        ("the first half of the marker", m[..32].to_vec()),
        ("the second half of the marker", m[32..].to_vec()),
        ("the directory name", SECRET_DIR.as_bytes().to_vec()),
        ("the file name", SECRET_FILE.as_bytes().to_vec()),
        ("the source path", scratch_name.as_bytes().to_vec()),
        ("the password", PASSWORD.as_bytes().to_vec()),
    ];
    let files = all_files(&repo.path);
    assert!(
        files.iter().any(|(rel, _)| rel.starts_with("data")),
        "the backup wrote no packs: {:?}",
        files.iter().map(|(r, _)| r).collect::<Vec<_>>()
    );
    for (what, needle) in &needles {
        let found = files_containing(&repo.path, needle);
        assert!(
            found.is_empty(),
            "{what} appears in the encrypted repository, in {found:?}"
        );
    }
    // The snapshot still restores the marker.
    let target = scratch.join("target");
    lb_repo(&repo, "restore", args!["latest", "--target", &target]).success();
    assert_trees_equal(&src, &restored(&target, &src));

    // Contrast: the same scan finds the marker in an unencrypted repository.
    let plain = scratch.join("plain");
    run({
        let mut c = cmd_without_password();
        c.args(args!["init", "--repo", &plain, "--insecure-no-encryption"]);
        c
    })
    .success();
    let plain_repo = Repo::at(&plain);
    plain_repo.backup(args![&src]);
    assert!(
        !files_containing(&plain, &m).is_empty(),
        "the scan does not find the marker even in an unencrypted repository"
    );
}

#[test]
fn deduplication_works_in_an_encrypted_repository() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let content = random_bytes(600 * KIB as usize, 21);
    write_file(&scratch.join("one/data.bin"), &content);
    let first = repo.backup(args![scratch.join("one")]);
    assert!(num(&first, "bytes_added") >= 600 * KIB, "{first}");
    // The same content under another path: keyed chunk ids are stable within a repository.
    write_file(&scratch.join("two/copy.bin"), &content);
    let second = repo.backup(args![scratch.join("two")]);
    assert!(
        num(&second, "bytes_added") < 64 * KIB,
        "the same content was stored again: {second}"
    );
}

// ---------------------------------------------------------------------------
// Damaged objects
// ---------------------------------------------------------------------------

/// RELIABILITY case 4: one flipped byte in a pack of file data: restore refuses naming the file and the pack, check --read-data finds it.
#[test]
fn a_flipped_byte_in_a_data_pack_is_detected() {
    let r = backed_up_and_restored();
    let packs = r.repo.packs();
    // A data pack (a small backup fills one) and a tree pack.
    assert_eq!(
        packs.len(),
        2,
        "test setup: expected a data and a tree pack"
    );
    let (path, id) = r.repo.largest_pack();
    let len = fs::metadata(&path).expect("stat").len();
    assert!(len > 200 * KIB, "test setup: data pack is {len} bytes");
    flip_byte(&path, len / 2);
    let name = pack_name(&id);
    let out = assert_restore_refused(&r.repo, &r.target, 1, &[&name]);
    out.stderr_contains("corrupt or tampered");
    assert_check_finds(&r.repo, &name);
}

/// RELIABILITY case 4 (directory data): one flipped byte in a pack of directory listings: restore refuses naming the pack, check --read-data finds it.
#[test]
fn a_flipped_byte_in_a_tree_pack_is_detected() {
    let r = backed_up_and_restored();
    let (path, id) = r
        .repo
        .packs()
        .into_iter()
        .min_by_key(|(p, _)| fs::metadata(p).expect("stat").len())
        .expect("packs");
    let len = fs::metadata(&path).expect("stat").len();
    assert!(len < 64 * KIB, "test setup: tree pack is {len} bytes");
    // Inside the first directory listing (blobs start at offset 0; a sealed blob is at least
    // 40 bytes).
    flip_byte(&path, 30);
    let name = pack_name(&id);
    let out = assert_restore_refused(&r.repo, &r.target, 1, &[&name]);
    out.stderr_contains("corrupt or tampered");
    assert_check_finds(&r.repo, &name);
}

#[test]
fn a_flipped_byte_in_a_pack_header_is_found_by_check() {
    let r = backed_up_and_restored();
    let (path, id) = r.repo.largest_pack();
    let len = fs::metadata(&path).expect("stat").len();
    // Just before the trailer (header length and magic): inside the sealed header.
    flip_byte(&path, len - 8 - 20);
    assert_check_finds(&r.repo, &pack_name(&id));
}

#[test]
fn a_flipped_byte_in_the_index_is_detected() {
    let r = backed_up_and_restored();
    let id = only_object(&r.repo, "index");
    let path = r.repo.path.join("index").join(&id);
    flip_byte(&path, fs::metadata(&path).expect("stat").len() / 2);
    let name = format!("index/{id}");
    assert_restore_refused(&r.repo, &r.target, 1, &[&name]);
    assert_check_finds(&r.repo, &name);
}

#[test]
fn a_flipped_byte_in_the_snapshot_is_detected() {
    let r = backed_up_and_restored();
    let id = only_object(&r.repo, "snapshots");
    let path = r.repo.path.join("snapshots").join(&id);
    flip_byte(&path, fs::metadata(&path).expect("stat").len() / 2);
    let name = format!("snapshots/{id}");
    assert_restore_refused(&r.repo, &r.target, 1, &[&name]);
    assert_check_finds(&r.repo, &name);
    lb_repo(&r.repo, "snapshots", args![])
        .failure()
        .stderr_contains(&name);
}

#[test]
fn a_flipped_byte_in_the_config_is_detected() {
    let r = backed_up_and_restored();
    let path = r.repo.path.join("config");
    flip_byte(&path, fs::metadata(&path).expect("stat").len() / 2);
    let out = assert_restore_refused(&r.repo, &r.target, 1, &["config"]);
    out.stderr_contains("corrupt");
    lb_repo(&r.repo, "snapshots", args![])
        .expect_code(1)
        .stderr_contains("config");
}

/// RELIABILITY case 7: a damaged key object reads as a wrong password (exit 12) that names the key object.
#[test]
fn a_flipped_byte_in_the_key_reads_as_a_wrong_password_naming_the_key() {
    let r = backed_up_and_restored();
    let id = only_object(&r.repo, "keys");
    let path = r.repo.path.join("keys").join(&id);
    flip_byte(&path, fs::metadata(&path).expect("stat").len() / 2);
    let name = format!("keys/{id}");
    assert_restore_refused(&r.repo, &r.target, 12, &["wrong password", &name]);
    lb_repo(&r.repo, "snapshots", args![])
        .expect_code(12)
        .stderr_contains(&name);
}

/// RELIABILITY case 7: a forged config parameter fails authentication.
#[test]
fn a_changed_config_parameter_fails_authentication() {
    let r = backed_up_and_restored();
    let mut config = read_config(&r.repo);
    config["compression_level"] = Value::from(9);
    write_config(&r.repo, &config);
    let out = assert_restore_refused(&r.repo, &r.target, 1, &["config"]);
    out.stderr_contains("tampered");
    let (out, _) = r.repo.backup_raw(args![&r.src]);
    checked(out).expect_code(1).stderr_contains("config");
    assert_eq!(objects(&r.repo, "snapshots").len(), 1);
}

/// RELIABILITY case 7: a snapshot object stored under another snapshot's name is rejected.
#[test]
fn swapped_snapshots_are_detected() {
    let r = backed_up_and_restored();
    write_file(&r.src.join("a.txt"), b"alpha, second version\n");
    r.repo.backup(args![&r.src]);
    let snaps = objects(&r.repo, "snapshots");
    assert_eq!(snaps.len(), 2);
    let (pa, pb) = (
        r.repo.path.join("snapshots").join(&snaps[0]),
        r.repo.path.join("snapshots").join(&snaps[1]),
    );
    let (a, b) = (fs::read(&pa).expect("read"), fs::read(&pb).expect("read"));
    fs::write(&pa, &b).expect("write");
    fs::write(&pb, &a).expect("write");

    // Both are damaged now: listed as such (exit 3, a partial listing), never used.
    let out = lb_repo(&r.repo, "snapshots", args![]).expect_code(3);
    let names: Vec<String> = snaps.iter().map(|s| format!("snapshots/{s}")).collect();
    assert!(
        names.iter().any(|n| out.stderr().contains(n.as_str())),
        "the error names neither swapped snapshot {names:?}\n{out}"
    );
    out.stderr_contains("does not match its name");
    let out = assert_restore_refused(&r.repo, &r.target, 1, &[]);
    assert!(
        names.iter().any(|n| out.stderr().contains(n.as_str())),
        "restore names neither swapped snapshot {names:?}\n{out}"
    );
}

/// RELIABILITY case 7: a pack stored under another pack's name is rejected.
#[test]
fn swapped_packs_are_detected() {
    let r = backed_up_and_restored();
    let packs = r.repo.packs();
    // A data pack (a small backup fills one) and a tree pack.
    assert_eq!(
        packs.len(),
        2,
        "test setup: expected a data and a tree pack"
    );
    let (pa, ida) = &packs[0];
    let (pb, idb) = &packs[1];
    let (a, b) = (fs::read(pa).expect("read"), fs::read(pb).expect("read"));
    fs::write(pa, &b).expect("write");
    fs::write(pb, &a).expect("write");
    let (na, nb) = (pack_name(ida), pack_name(idb));
    let out = assert_restore_refused(&r.repo, &r.target, 1, &[]);
    assert!(
        out.stderr().contains(&na) || out.stderr().contains(&nb),
        "restore names neither swapped pack\n{out}"
    );
    let out = lb_repo(&r.repo, "check", args!["--read-data"]).expect_code(1);
    for n in [&na, &nb] {
        assert!(
            out.all_output().contains(n.as_str()),
            "check does not name {n}\n{out}"
        );
    }
}

/// RELIABILITY case 7 (type confusion): an index object stored as a snapshot (named by its
/// hash, so only the type bound into the sealed object tells them apart) is rejected.
#[test]
fn an_index_presented_as_a_snapshot_fails_authentication() {
    let r = backed_up_and_restored();
    let index = only_object(&r.repo, "index");
    // Named by the hash of its bytes, so the name check passes; only the type binding of
    // the encryption can tell it is not a snapshot.
    fs::copy(
        r.repo.path.join("index").join(&index),
        r.repo.path.join("snapshots").join(&index),
    )
    .expect("copy index into snapshots/");
    let out = lb_repo(&r.repo, "snapshots", args![]).expect_code(3);
    out.stderr_contains("corrupt or tampered")
        .stderr_contains(&format!("snapshots/{index}"));
}

/// RELIABILITY case 7 (a forged snapshot): a snapshot sealed with another repository's key is rejected as corrupt or tampered.
#[test]
fn a_snapshot_from_another_repository_fails_authentication() {
    let r = backed_up_and_restored();
    let other = Repo::new();
    other.backup(args![&r.src]);
    let foreign = only_object(&other, "snapshots");
    fs::copy(
        other.path.join("snapshots").join(&foreign),
        r.repo.path.join("snapshots").join(&foreign),
    )
    .expect("copy snapshot");
    lb_repo(&r.repo, "snapshots", args![])
        .expect_code(3)
        .stderr_contains("corrupt or tampered")
        .stderr_contains(&format!("snapshots/{foreign}"));
}

/// RELIABILITY case 7 (a wrong key): a key object of another repository does not open this one.
#[test]
fn a_key_from_another_repository_does_not_open_this_one() {
    let r = backed_up_and_restored();
    // Same password, other repository: the key is bound to its repository.
    let other = Repo::new();
    let own = only_object(&r.repo, "keys");
    let foreign = only_object(&other, "keys");
    fs::copy(
        other.path.join("keys").join(&foreign),
        r.repo.path.join("keys").join(&foreign),
    )
    .expect("copy key");
    fs::remove_file(r.repo.path.join("keys").join(&own)).expect("remove own key");
    assert_restore_refused(&r.repo, &r.target, 12, &["wrong password"]);
}

#[test]
fn both_ciphers_back_up_restore_and_check() {
    for cipher in ["xaes-256-gcm", "xchacha20-poly1305"] {
        let scratch = Scratch::new();
        let path = scratch.join("repo");
        let out = lb(args!["init", "--repo", &path, "--cipher", cipher, "--json"]).success();
        let json: Value = serde_json::from_slice(&out.stdout).expect("init --json");
        assert_eq!(json["encryption"], cipher, "{out}");
        let repo = Repo::at(&path);
        assert_eq!(read_config(&repo)["encryption"], cipher);
        let src = marked_source(&scratch.join("src"));
        repo.backup(args![&src]);
        // Every object is sealed: the marker is nowhere in the repository.
        assert!(
            files_containing(&repo.path, &marker()).is_empty(),
            "{cipher}: plaintext in the repository"
        );
        let target = scratch.join("target");
        lb_repo(&repo, "restore", args!["latest", "--target", &target]).success();
        assert_trees_equal(&src, &restored(&target, &src));
        lb_repo(&repo, "check", args!["--read-data"]).success();
    }
}

#[test]
fn init_refuses_an_unknown_cipher_and_a_cipher_without_encryption() {
    let scratch = Scratch::new();
    let path = scratch.join("repo");
    let out = lb(args!["init", "--repo", &path, "--cipher", "aes-128-ecb"]).expect_code(2);
    out.stderr_contains("aes-128-ecb")
        .stderr_contains("xaes-256-gcm")
        .stderr_contains("xchacha20-poly1305");
    let out = lb(args![
        "init",
        "--repo",
        &path,
        "--cipher",
        "xaes-256-gcm",
        "--insecure-no-encryption"
    ])
    .expect_code(2);
    out.stderr_contains("--insecure-no-encryption");
    assert!(!path.join("config").exists(), "no repository was made");
}

/// The config names the cipher, under the config's MAC: an edit from one cipher to the other
/// is refused as tampering, and nothing is read or written.
#[test]
fn a_changed_cipher_in_the_config_is_refused() {
    let r = backed_up_and_restored();
    let mut config = read_config(&r.repo);
    let other = if config["encryption"] == "xaes-256-gcm" {
        "xchacha20-poly1305"
    } else {
        "xaes-256-gcm"
    };
    config["encryption"] = Value::from(other);
    write_config(&r.repo, &config);
    let before = fingerprint(&r.repo.path);
    let target_before = fingerprint(&r.target);
    for (sub, rest) in [
        ("snapshots", args![]),
        (
            "restore",
            args!["latest", "--target", &r.target, "--overwrite"],
        ),
        ("backup", args![&r.src]),
        ("check", args!["--read-data"]),
    ] {
        let out = lb_repo(&r.repo, sub, rest).expect_code(1);
        out.stderr_contains("config").stderr_contains("tampered");
    }
    assert_fingerprint_unchanged(&before, &fingerprint(&r.repo.path), "the repository");
    assert_fingerprint_unchanged(&target_before, &fingerprint(&r.target), "the target");
}

#[test]
fn a_downgrade_to_no_encryption_is_refused_by_every_command() {
    let r = backed_up_and_restored();
    let mut config = read_config(&r.repo);
    config["encryption"] = Value::from("none");
    write_config(&r.repo, &config);
    let before = fingerprint(&r.repo.path);
    let snap = only_object(&r.repo, "snapshots");

    let commands: Vec<(&str, Vec<std::ffi::OsString>)> = vec![
        ("snapshots", args![]),
        ("ls", args!["latest"]),
        (
            "restore",
            args!["latest", "--target", &r.target, "--overwrite"],
        ),
        ("backup", args![&r.src]),
        ("check", args![]),
        ("check", args!["--read-data"]),
    ];
    let target_before = fingerprint(&r.target);
    for (sub, rest) in commands {
        for env_password in [true, false] {
            let mut cmd = if env_password {
                lifeboat_cmd()
            } else {
                cmd_without_password()
            };
            cmd.arg(sub).arg("--repo").arg(&r.repo.path).args(&rest);
            let out = run(cmd).expect_code(1);
            out.stderr_contains("tampered").stderr_contains("keys");
        }
    }
    for sub in ["list", "add", "export"] {
        let out = run({
            let mut c = lifeboat_cmd();
            c.args(args!["key", sub, "--repo", &r.repo.path])
                .env("LIFEBOAT_NEW_PASSWORD", "another password 1234");
            c
        })
        .expect_code(1);
        out.stderr_contains("tampered");
    }
    assert_fingerprint_unchanged(&before, &fingerprint(&r.repo.path), "the repository");
    assert_fingerprint_unchanged(&target_before, &fingerprint(&r.target), "the target");
    assert_eq!(objects(&r.repo, "snapshots"), vec![snap.clone()]);

    // With the keys deleted as well, the repository looks unencrypted; its encrypted objects
    // still do not open as plain ones, so nothing is read, and no plaintext is written.
    for key in objects(&r.repo, "keys") {
        fs::remove_file(r.repo.path.join("keys").join(key)).expect("remove key");
    }
    let before = fingerprint(&r.repo.path);
    for (sub, rest) in [
        ("backup", args![&r.src]),
        ("snapshots", args![]),
        (
            "restore",
            args!["latest", "--target", &r.target, "--overwrite"],
        ),
    ] {
        let mut cmd = cmd_without_password();
        cmd.arg(sub).arg("--repo").arg(&r.repo.path).args(&rest);
        // Read as plain objects, encrypted ones are refused by their type byte ("corrupt or
        // tampered") — except when the random first byte of a nonce happens to equal the
        // expected type (1 time in 256), when the next check refuses them ("is corrupt:
        // unknown compression"). Either way: an error naming the object, nothing written.
        // (`snapshots` lists the readable snapshots, none here, and names the unreadable one
        // with exit 3.)
        let code = if sub == "snapshots" { 3 } else { 1 };
        run(cmd).expect_code(code).stderr_contains("corrupt");
    }
    assert_fingerprint_unchanged(&before, &fingerprint(&r.repo.path), "the repository");
    assert_fingerprint_unchanged(&target_before, &fingerprint(&r.target), "the target");
}

#[test]
fn a_config_without_its_mac_is_refused() {
    let r = backed_up_and_restored();
    let mut config = read_config(&r.repo);
    config.as_object_mut().expect("config object").remove("mac");
    write_config(&r.repo, &config);
    assert_restore_refused(&r.repo, &r.target, 1, &["config", "tampered"]);
}

// ---------------------------------------------------------------------------
// Passwords
// ---------------------------------------------------------------------------

/// RELIABILITY case 7 (a wrong password): a wrong password is reported as a wrong password (exit 12) by every command, and writes nothing.
#[test]
fn a_wrong_password_writes_nothing() {
    let r = backed_up_and_restored();
    write_file(&r.src.join("new.txt"), b"new since the first backup\n");
    let repo_before = fingerprint(&r.repo.path);

    let (out, summary) = {
        let mut cmd = lifeboat_cmd();
        cmd.env("LIFEBOAT_PASSWORD", WRONG_PASSWORD).args(args![
            "backup",
            "--json",
            "--repo",
            &r.repo.path,
            &r.src
        ]);
        let out = run(cmd);
        let summary = out
            .json_lines()
            .into_iter()
            .find(|v| v["type"] == "summary");
        (out, summary)
    };
    let out = out.expect_code(12);
    out.stderr_contains("wrong password");
    assert!(summary.is_none(), "a summary was printed\n{out}");
    assert_fingerprint_unchanged(&repo_before, &fingerprint(&r.repo.path), "the repository");
    assert_eq!(r.repo.snapshots(args![]).len(), 1);

    let target_before = fingerprint(&r.target);
    let mut cmd = lifeboat_cmd();
    cmd.env("LIFEBOAT_PASSWORD", WRONG_PASSWORD).args(args![
        "restore",
        "--repo",
        &r.repo.path,
        "latest",
        "--target",
        &r.target,
        "--overwrite"
    ]);
    run(cmd).expect_code(12).stderr_contains("wrong password");
    assert_fingerprint_unchanged(&target_before, &fingerprint(&r.target), "the target");

    // A wrong password from a file is just as wrong, and not echoed either.
    let pwfile = r.scratch.join("wrong-password");
    write_password_file(&pwfile, WRONG_PASSWORD);
    for sub in ["snapshots", "check"] {
        lb_repo(&r.repo, sub, args!["--password-file", &pwfile])
            .expect_code(12)
            .stderr_contains("wrong password");
    }
}

#[test]
fn password_sources() {
    let r = backed_up_and_restored();
    let dir = r.scratch.join("secrets");
    let good = dir.join("good");
    let bad = dir.join("bad");
    write_password_file(&good, PASSWORD);
    write_password_file(&bad, WRONG_PASSWORD);
    let snapshots = |configure: &dyn Fn(&mut Command)| -> Out {
        let mut cmd = lifeboat_cmd();
        cmd.args(args!["snapshots", "--repo", &r.repo.path]);
        configure(&mut cmd);
        run(cmd)
    };

    // LIFEBOAT_PASSWORD_FILE, alone and ahead of LIFEBOAT_PASSWORD.
    snapshots(&|c| {
        c.env_remove("LIFEBOAT_PASSWORD")
            .env("LIFEBOAT_PASSWORD_FILE", &good);
    })
    .success();
    snapshots(&|c| {
        c.env("LIFEBOAT_PASSWORD", WRONG_PASSWORD)
            .env("LIFEBOAT_PASSWORD_FILE", &good);
    })
    .success();
    // --password-file ahead of LIFEBOAT_PASSWORD, and ahead of LIFEBOAT_PASSWORD_FILE.
    snapshots(&|c| {
        c.env("LIFEBOAT_PASSWORD", WRONG_PASSWORD)
            .env("LIFEBOAT_PASSWORD_FILE", &bad)
            .arg("--password-file")
            .arg(&good);
    })
    .success();
    // Only the first line of a password file counts; a CRLF ending is not part of it.
    let crlf = dir.join("crlf");
    write_file(&crlf, format!("{PASSWORD}\r\nsecond line\n").as_bytes());
    snapshots(&|c| {
        c.env_remove("LIFEBOAT_PASSWORD")
            .arg("--password-file")
            .arg(&crlf);
    })
    .success();
    // A password file that is empty is an error, not an empty password.
    let empty = dir.join("empty");
    write_file(&empty, b"");
    snapshots(&|c| {
        c.arg("--password-file").arg(&empty);
    })
    .expect_code(1)
    .stderr_contains("empty");

    // A missing password file is named; an empty LIFEBOAT_PASSWORD is an error.
    let missing = dir.join("missing");
    snapshots(&|c| {
        c.arg("--password-file").arg(&missing);
    })
    .expect_code(1)
    .stderr_contains(&missing.to_string_lossy());
    snapshots(&|c| {
        c.env("LIFEBOAT_PASSWORD", "");
    })
    .expect_code(1)
    .stderr_contains("LIFEBOAT_PASSWORD");

    // The systemd credential, alone; LIFEBOAT_PASSWORD comes first.
    let creds = r.scratch.join("credentials");
    write_password_file(&creds.join("lifeboat-password"), PASSWORD);
    snapshots(&|c| {
        c.env_remove("LIFEBOAT_PASSWORD")
            .env("CREDENTIALS_DIRECTORY", &creds);
    })
    .success();
    snapshots(&|c| {
        c.env("LIFEBOAT_PASSWORD", WRONG_PASSWORD)
            .env("CREDENTIALS_DIRECTORY", &creds);
    })
    .expect_code(12);
    // A credentials directory without our credential: no password.
    let other_creds = r.scratch.join("other-credentials");
    write_password_file(&other_creds.join("something-else"), PASSWORD);

    // No password at all, no terminal: a helpful refusal.
    for with_credentials_dir in [false, true] {
        let out = snapshots(&|c| {
            c.env_remove("LIFEBOAT_PASSWORD");
            if with_credentials_dir {
                c.env("CREDENTIALS_DIRECTORY", &other_creds);
            }
        })
        .expect_code(1);
        out.stderr_contains("LIFEBOAT_PASSWORD")
            .stderr_contains("--password-file");
    }
    let target_before = fingerprint(&r.target);
    run({
        let mut c = cmd_without_password();
        c.args(args![
            "restore",
            "--repo",
            &r.repo.path,
            "latest",
            "--target",
            &r.target,
            "--overwrite"
        ]);
        c
    })
    .expect_code(1)
    .stderr_contains("LIFEBOAT_PASSWORD");
    assert_fingerprint_unchanged(&target_before, &fingerprint(&r.target), "the target");
    // init without a password creates nothing.
    let new_repo = r.scratch.join("new-repo");
    run({
        let mut c = cmd_without_password();
        c.args(args!["init", "--repo", &new_repo]);
        c
    })
    .expect_code(1)
    .stderr_contains("LIFEBOAT_PASSWORD");
    assert!(
        !new_repo.join("config").exists(),
        "init without a password wrote a config"
    );
}

/// Every command, verbose or not, successful or not, keeps the password to itself.
#[test]
fn the_password_never_appears_in_any_output() {
    let scratch = Scratch::new();
    let repo_path = scratch.join("repo");
    let src = marked_source(scratch.path());
    let target = scratch.join("target");
    let kit = scratch.join("kit.txt");
    let pwfile = scratch.join("pw");
    write_password_file(&pwfile, PASSWORD);
    let r = &repo_path;
    let runs: Vec<Vec<std::ffi::OsString>> = vec![
        args!["init", "--repo", r],
        args!["-vv", "backup", "--repo", r, &src],
        args!["backup", "--json", "--repo", r, &src],
        args!["-vv", "snapshots", "--repo", r],
        args!["snapshots", "--json", "--repo", r],
        args!["-vv", "ls", "--repo", r, "latest"],
        args!["-vv", "restore", "--repo", r, "latest", "--target", &target],
        args!["-vv", "check", "--repo", r, "--read-data"],
        args!["-vv", "key", "list", "--repo", r],
        args!["key", "list", "--json", "--repo", r],
        args!["-vv", "key", "export", "--repo", r, "--output", &kit],
        args!["-vv", "snapshots", "--repo", r, "--password-file", &pwfile],
    ];
    for a in runs {
        lb(a).success();
    }
    // Failures too.
    let mut cmd = lifeboat_cmd();
    cmd.env("LIFEBOAT_PASSWORD", WRONG_PASSWORD)
        .args(args!["-vv", "snapshots", "--repo", r]);
    run(cmd).expect_code(12);
    let mut cmd = lifeboat_cmd();
    cmd.args(args!["-vv", "init", "--repo", r]);
    run(cmd).failure();
    // The recovery kit holds the key, not the password.
    let kit_text = fs::read_to_string(&kit).expect("read kit");
    assert!(
        !kit_text.contains(PASSWORD),
        "the kit contains the password"
    );
}

// ---------------------------------------------------------------------------
// Restoring on a fresh machine
// ---------------------------------------------------------------------------

/// A lifeboat command as on a freshly installed machine: an empty environment apart from
/// empty home, cache and config directories, run from an empty working directory.
fn fresh_machine(root: &Path) -> Command {
    let home = root.join("home");
    for d in ["home", "cache", "config", "data", "state", "cwd"] {
        fs::create_dir_all(root.join(d)).expect("mkdir fresh machine dir");
    }
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &home)
        .env("XDG_CACHE_HOME", root.join("cache"))
        .env("XDG_CONFIG_HOME", root.join("config"))
        .env("XDG_DATA_HOME", root.join("data"))
        .env("XDG_STATE_HOME", root.join("state"))
        .env("NO_COLOR", "1")
        .current_dir(root.join("cwd"));
    cmd
}

/// A source with a few directories, files, a symlink and an empty directory.
fn small_tree(root: &Path) -> PathBuf {
    let src = root.join("src");
    build_plain_tree(&src, 6, 200 * KIB as usize, 5);
    fs::create_dir(src.join("empty")).expect("mkdir");
    symlink("sub/file-001.dat", &src.join("link"));
    stamp_mtimes(&src, 1_500_000_000);
    src
}

#[test]
fn restore_on_a_fresh_machine_with_only_the_password() {
    let scratch = Scratch::new();
    let src = small_tree(scratch.path());
    let repo = Repo::new();
    repo.backup(args![&src]);

    let machine = scratch.join("machine");
    let pwfile = scratch.join("password.txt");
    write_password_file(&pwfile, PASSWORD);
    let target = scratch.join("target");
    let url = format!("file://{}", repo.path.display());
    let mut cmd = fresh_machine(&machine);
    cmd.args(args![
        "restore",
        "--repo",
        &url,
        "--password-file",
        &pwfile,
        "latest",
        "--target",
        &target
    ]);
    run(cmd).success();
    assert_trees_equal(&src, &restored(&target, &src));
}

#[test]
fn restore_on_a_fresh_machine_with_only_the_recovery_kit() {
    let scratch = Scratch::new();
    let src = small_tree(scratch.path());
    let repo = Repo::new();
    repo.backup(args![&src]);
    let kit = scratch.join("kit.txt");
    lb(args![
        "key", "export", "--repo", &repo.path, "--output", &kit
    ])
    .success();

    // With --recovery-kit, and no password anywhere.
    let machine = scratch.join("machine");
    let target = scratch.join("target");
    let mut cmd = fresh_machine(&machine);
    cmd.args(args![
        "restore",
        "--repo",
        &repo.path,
        "--recovery-kit",
        &kit,
        "latest",
        "--target",
        &target
    ]);
    run(cmd).success();
    assert_trees_equal(&src, &restored(&target, &src));

    // With LIFEBOAT_RECOVERY_KIT, in the usual test environment minus the password.
    let target2 = scratch.join("target2");
    let mut cmd = cmd_without_password();
    cmd.env("LIFEBOAT_RECOVERY_KIT", &kit).args(args![
        "restore", "--repo", &repo.path, "latest", "--target", &target2
    ]);
    run(cmd).success();
    assert_trees_equal(&src, &restored(&target2, &src));
}

#[test]
fn a_recovery_kit_of_another_repository_is_refused() {
    let scratch = Scratch::new();
    let src = small_tree(scratch.path());
    let repo = Repo::new();
    repo.backup(args![&src]);
    let other = Repo::new();
    let other_kit = scratch.join("other-kit.txt");
    lb(args![
        "key",
        "export",
        "--repo",
        &other.path,
        "--output",
        &other_kit
    ])
    .success();

    let target = scratch.join("target");
    fs::create_dir(&target).expect("mkdir target");
    let mut cmd = fresh_machine(&scratch.join("machine"));
    cmd.args(args![
        "restore",
        "--repo",
        &repo.path,
        "--recovery-kit",
        &other_kit,
        "latest",
        "--target",
        &target
    ]);
    let out = run(cmd).failure();
    out.stderr_contains("recovery kit");
    assert!(
        relative_paths(&target).is_empty(),
        "a refused restore wrote into the target"
    );

    // A kit with a mistyped digit is recognised as mistyped.
    let own_kit = scratch.join("kit.txt");
    lb(args![
        "key", "export", "--repo", &repo.path, "--output", &own_kit
    ])
    .success();
    let text = fs::read_to_string(&own_kit).expect("read kit");
    let at = text.find("lbk1-").expect("key line") + 5;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    let typo = scratch.join("typo-kit.txt");
    write_file(&typo, &bytes);
    let mut cmd = cmd_without_password();
    cmd.args(args![
        "snapshots",
        "--repo",
        &repo.path,
        "--recovery-kit",
        &typo
    ]);
    run(cmd).expect_code(1).stderr_contains("recovery kit");
}

// ---------------------------------------------------------------------------
// Unencrypted repositories
// ---------------------------------------------------------------------------

#[test]
fn insecure_no_encryption_needs_no_password() {
    let scratch = Scratch::new();
    let src = small_tree(scratch.path());
    let path = scratch.join("plain-repo");
    let no_pw = |rest: Vec<std::ffi::OsString>| {
        let mut cmd = cmd_without_password();
        cmd.args(rest);
        run(cmd)
    };
    no_pw(args!["init", "--repo", &path, "--insecure-no-encryption"]).success();
    let repo = Repo::at(&path);
    let config = read_config(&repo);
    assert_eq!(config["encryption"], "none", "config: {config}");
    assert!(config.get("mac").is_none(), "config: {config}");
    assert!(
        objects(&repo, "keys").is_empty(),
        "an unencrypted repo has keys"
    );

    no_pw(args!["backup", "--repo", &path, &src]).success();
    no_pw(args!["snapshots", "--repo", &path]).success();
    no_pw(args!["check", "--repo", &path, "--read-data"]).success();
    let target = scratch.join("target");
    no_pw(args![
        "restore", "--repo", &path, "latest", "--target", &target
    ])
    .success();
    assert_trees_equal(&src, &restored(&target, &src));

    // There is no key to export or add to.
    no_pw(args!["key", "export", "--repo", &path])
        .expect_code(1)
        .stderr_contains("not encrypted");
    let mut cmd = cmd_without_password();
    cmd.env("LIFEBOAT_NEW_PASSWORD", "some new password 99")
        .args(args!["key", "add", "--repo", &path]);
    run(cmd).expect_code(1).stderr_contains("not encrypted");
    assert!(objects(&repo, "keys").is_empty());
}

#[test]
fn every_object_is_named_by_the_hash_of_its_bytes() {
    let r = backed_up_and_restored();
    for (rel, bytes) in all_files(&r.repo.path) {
        if rel == Path::new("config") {
            continue;
        }
        let name = rel
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            name,
            "{rel:?} is not named by its hash"
        );
    }
    // An object under a name that is not its hash is refused (not listed, named, exit 3).
    let id = only_object(&r.repo, "snapshots");
    let wrong = format!("{}{}", &id[..63], if id.ends_with('0') { '1' } else { '0' });
    fs::rename(
        r.repo.path.join("snapshots").join(&id),
        r.repo.path.join("snapshots").join(&wrong),
    )
    .expect("rename");
    lb_repo(&r.repo, "snapshots", args![])
        .expect_code(3)
        .stderr_contains(&format!("snapshots/{wrong}"));
}

/// Replaces the repository's index objects by one that says what `forge` makes of them,
/// sealed with the repository's key (so it authenticates: a forgery by someone who holds the
/// key, or a bug that wrote a wrong index).
fn forge_index(
    repo: &Repo,
    forge: impl FnOnce(&mut Vec<(lifeboat::id::PackId, Vec<lifeboat::repo::PackEntry>)>),
) {
    use lifeboat::storage::{FileKind, LocalStorage, Storage};
    let storage = std::sync::Arc::new(LocalStorage::new(&repo.path));
    let r = lifeboat::Repository::open(storage.clone(), || {
        Ok(lifeboat::repo::Credentials::Password(
            PASSWORD.as_bytes().to_vec().into(),
        ))
    })
    .expect("open");
    let names: Vec<String> = storage
        .list(FileKind::Index)
        .expect("list")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut packs = Vec::new();
    for n in &names {
        packs.extend(r.load_index_file(n).expect("index"));
    }
    forge(&mut packs);
    r.save_index(&packs).expect("save forged index");
    for n in &names {
        storage.remove(FileKind::Index, n).expect("remove index");
    }
}

/// RELIABILITY case 7: forged index entries that authenticate (written with the key): a chunk
/// placed at a wrong offset, a file's chunk typed as a directory listing, and the root
/// listing typed as file data. Restore refuses as "corrupt or tampered", naming the object,
/// and leaves the target as it was; `check --read-data` reports it; nothing panics.
#[test]
fn forged_index_entries_are_rejected_as_corrupt_or_tampered() {
    use lifeboat::repo::BlobKind;
    type Forgery = fn(&mut Vec<(lifeboat::id::PackId, Vec<lifeboat::repo::PackEntry>)>);
    let forgeries: [(&str, Forgery); 3] = [
        ("a chunk at a wrong offset", |packs| {
            let e = packs
                .iter_mut()
                .flat_map(|(_, es)| es.iter_mut())
                .find(|e| e.kind == BlobKind::Data && e.offset > 0)
                .expect("a data chunk after the first");
            e.offset -= 1;
        }),
        ("file data typed as a directory listing", |packs| {
            for e in packs.iter_mut().flat_map(|(_, es)| es.iter_mut()) {
                if e.kind == BlobKind::Data {
                    e.kind = BlobKind::Tree;
                }
            }
        }),
        ("directory listings typed as file data", |packs| {
            for e in packs.iter_mut().flat_map(|(_, es)| es.iter_mut()) {
                if e.kind == BlobKind::Tree {
                    e.kind = BlobKind::Data;
                }
            }
        }),
    ];
    for (what, forgery) in forgeries {
        let r = backed_up_and_restored();
        forge_index(&r.repo, forgery);
        let out = assert_restore_refused(&r.repo, &r.target, 1, &["corrupt or tampered"]);
        assert!(!out.stderr().contains("panicked"), "{what}: a panic\n{out}");
        let check = lb_repo(&r.repo, "check", args!["--read-data"]).expect_code(1);
        assert!(
            !check.stderr().contains("panicked"),
            "{what}: a panic\n{check}"
        );
        println!("{what}: {}", out.stderr().trim());
    }
}

//! `lifeboat key add | list | remove | passwd | export`: several passwords for one
//! repository, changing and removing them, and the recovery kit.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

const NEW_PASSWORD: &str = "a brand new passphrase 4711";
const THIRD_PASSWORD: &str = "yet another passphrase 0815";
const WRONG_PASSWORD: &str = "Tr0ub4dor&3 is not it";

const SECRETS: &[&str] = &[PASSWORD, NEW_PASSWORD, THIRD_PASSWORD, WRONG_PASSWORD];

/// Runs `cmd`, asserting that no password appears in its output.
#[track_caller]
fn run(cmd: Command) -> Out {
    let out = run_cmd(cmd);
    let all = out.all_output();
    for secret in SECRETS {
        assert!(
            !all.contains(secret),
            "the output contains the password {secret:?}\n{out}"
        );
    }
    out
}

/// `lifeboat ARGS...` opened with `password` (from LIFEBOAT_PASSWORD).
#[track_caller]
fn with_password(password: &str, args: Vec<OsString>) -> Out {
    let mut cmd = lifeboat_cmd();
    cmd.env("LIFEBOAT_PASSWORD", password).args(args);
    run(cmd)
}

/// `lifeboat ARGS...` opened with the recovery kit `kit` and no password anywhere.
#[track_caller]
fn with_kit(kit: &Path, args: Vec<OsString>) -> Out {
    let mut cmd = lifeboat_cmd();
    cmd.env_remove("LIFEBOAT_PASSWORD")
        .env("LIFEBOAT_RECOVERY_KIT", kit)
        .args(args);
    run(cmd)
}

fn write_password_file(path: &Path, password: &str) {
    write_file(path, format!("{password}\n").as_bytes());
}

/// The key objects under `keys/`.
fn key_ids(repo: &Repo) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(repo.path.join("keys"))
        .expect("read keys/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

#[track_caller]
fn only_key(repo: &Repo) -> String {
    let ids = key_ids(repo);
    assert_eq!(ids.len(), 1, "expected one key: {ids:?}");
    ids.into_iter().next().expect("one key")
}

/// `key list --json` opened with `password`.
#[track_caller]
fn key_list(repo: &Repo, password: &str) -> Vec<Value> {
    let out = with_password(
        password,
        args!["key", "list", "--json", "--repo", &repo.path],
    )
    .success();
    match out.json() {
        Value::Array(items) => items,
        other => panic!("key list --json did not print an array: {other}\n{out}"),
    }
}

/// The ids of the listed keys marked `current`.
fn current_ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .filter(|k| k["current"] == Value::Bool(true))
        .map(|k| string(k, "id"))
        .collect()
}

/// `snapshots --json` opened with `password`: asserts success, returns the count.
#[track_caller]
fn snapshot_count(repo: &Repo, password: &str) -> usize {
    let out = with_password(password, args!["snapshots", "--json", "--repo", &repo.path]).success();
    out.json().as_array().map(Vec::len).expect("an array")
}

/// Asserts that `password` no longer opens the repository.
#[track_caller]
fn assert_password_refused(repo: &Repo, password: &str) {
    with_password(password, args!["snapshots", "--repo", &repo.path])
        .expect_code(12)
        .stderr_contains("wrong password");
}

/// A repository with one snapshot of a small tree. Returns (repo, scratch, source).
fn repo_with_snapshot() -> (Repo, Scratch, PathBuf) {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 3, 0, 9);
    repo.backup(args![&src]);
    (repo, scratch, src)
}

/// Exports a recovery kit of `repo` to `path` (opened with the test password).
#[track_caller]
fn export_kit(repo: &Repo, path: &Path) {
    with_password(
        PASSWORD,
        args!["key", "export", "--repo", &repo.path, "--output", path],
    )
    .success();
}

/// The key lines of a kit (the line starting with `lbk1-` and the four after it).
#[track_caller]
fn kit_key_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("lbk1-"))
        .unwrap_or_else(|| panic!("no line starting with lbk1- in the kit:\n{text}"));
    assert!(
        at + 5 <= lines.len(),
        "the kit ends before its key's five lines"
    );
    lines[at..at + 5].join("\n")
}

/// The commands a kit prints (its lines `    lifeboat ...`), without the indentation.
fn kit_commands(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("    lifeboat "))
        .map(|l| format!("lifeboat {l}"))
        .collect()
}

/// Runs a kit's command line `line` as an operator pastes it: through `sh`, in `dir` (where
/// the kit is saved as kit.txt), with `lifeboat` on the PATH, no password and no cloud
/// variable of the test's environment, the kit's restore target replaced by `target`, and
/// `env` set.
fn run_kit_command(dir: &Path, line: &str, target: &Path, env: &[(&str, String)]) -> Out {
    let line = line.replace("/mnt/restore", &target.to_string_lossy());
    let bin_dir = Path::new(bin()).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    lifeboat_env_for(&mut cmd);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if ["AWS_", "GOOGLE_", "AZURE_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.env_remove("LIFEBOAT_PASSWORD")
        .env("PATH", path)
        .current_dir(dir)
        .args(["-c", &line]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd)
}

#[test]
fn key_add_then_remove_the_old_key() {
    let (repo, scratch, src) = repo_with_snapshot();
    let old = only_key(&repo);
    let new_file = scratch.join("new-password");
    write_password_file(&new_file, NEW_PASSWORD);

    let out = with_password(
        PASSWORD,
        args![
            "key",
            "add",
            "--repo",
            &repo.path,
            "--new-password-file",
            &new_file
        ],
    )
    .success();
    let ids = key_ids(&repo);
    assert_eq!(ids.len(), 2, "key add did not add one key: {ids:?}");
    let new = ids
        .iter()
        .find(|id| **id != old)
        .expect("the new key")
        .clone();
    assert!(
        out.stdout().contains(&new[..8]),
        "key add does not print the new key's id {}\n{out}",
        &new[..8]
    );
    assert_eq!(
        file_hash(&repo.path.join("keys").join(&new)),
        new,
        "the new key object is not named by its hash"
    );

    // Both passwords open the repository, each through its own key.
    assert_eq!(snapshot_count(&repo, NEW_PASSWORD), 1);
    assert_eq!(snapshot_count(&repo, PASSWORD), 1);
    let list = key_list(&repo, NEW_PASSWORD);
    assert_eq!(list.len(), 2, "key list: {list:?}");
    assert_eq!(current_ids(&list), vec![new.clone()], "key list: {list:?}");
    let mut listed: Vec<String> = list.iter().map(|k| string(k, "id")).collect();
    listed.sort();
    assert_eq!(listed, ids);
    for k in &list {
        for field in ["created", "host", "username"] {
            assert!(k[field].is_string(), "key list entry without {field}: {k}");
        }
        assert_eq!(k["host"], hostname().as_str(), "{k}");
        assert_eq!(k["kdf"]["algorithm"], "argon2id", "{k}");
        // The test environment's cheap parameters are what new keys get.
        assert_eq!(k["kdf"]["memory_kib"], 64, "{k}");
        assert_eq!(k["kdf"]["iterations"], 1, "{k}");
    }
    assert_eq!(current_ids(&key_list(&repo, PASSWORD)), vec![old.clone()]);

    // Remove the old key (by prefix) while opened with the new password.
    with_password(
        NEW_PASSWORD,
        args!["key", "remove", "--repo", &repo.path, &old[..8]],
    )
    .success();
    assert_eq!(key_ids(&repo), vec![new.clone()]);
    assert_password_refused(&repo, PASSWORD);
    assert_eq!(snapshot_count(&repo, NEW_PASSWORD), 1);
    let target = scratch.join("target");
    with_password(
        NEW_PASSWORD,
        args!["restore", "--repo", &repo.path, "latest", "--target", &target],
    )
    .success();
    assert_trees_equal(&src, &restored(&target, &src));
}

#[test]
fn key_add_takes_the_new_password_from_the_environment() {
    let (repo, scratch, _src) = repo_with_snapshot();

    let mut cmd = lifeboat_cmd();
    cmd.env("LIFEBOAT_NEW_PASSWORD", NEW_PASSWORD)
        .args(args!["key", "add", "--repo", &repo.path]);
    run(cmd).success();
    assert_eq!(key_ids(&repo).len(), 2);
    assert_eq!(snapshot_count(&repo, NEW_PASSWORD), 1);

    let third = scratch.join("third");
    write_password_file(&third, THIRD_PASSWORD);
    let mut cmd = lifeboat_cmd();
    cmd.env("LIFEBOAT_NEW_PASSWORD_FILE", &third)
        .args(args!["key", "add", "--repo", &repo.path]);
    run(cmd).success();
    assert_eq!(key_ids(&repo).len(), 3);
    assert_eq!(snapshot_count(&repo, THIRD_PASSWORD), 1);

    // No new password and no terminal: refused, nothing added. The repository password is
    // not taken as the new one.
    let mut cmd = lifeboat_cmd();
    cmd.args(args!["key", "add", "--repo", &repo.path]);
    run(cmd).expect_code(1);
    assert_eq!(key_ids(&repo).len(), 3);

    // The wrong password adds nothing either.
    let mut cmd = lifeboat_cmd();
    cmd.env("LIFEBOAT_PASSWORD", WRONG_PASSWORD)
        .env("LIFEBOAT_NEW_PASSWORD", NEW_PASSWORD)
        .args(args!["key", "add", "--repo", &repo.path]);
    run(cmd).expect_code(12);
    assert_eq!(key_ids(&repo).len(), 3);
}

#[test]
fn key_remove_refuses_the_key_in_use_and_the_last_key() {
    let (repo, scratch, _src) = repo_with_snapshot();
    let old = only_key(&repo);
    let kit = scratch.join("kit.txt");
    export_kit(&repo, &kit);
    let mut cmd = lifeboat_cmd();
    cmd.env("LIFEBOAT_NEW_PASSWORD", NEW_PASSWORD)
        .args(args!["key", "add", "--repo", &repo.path]);
    run(cmd).success();
    let new = key_ids(&repo)
        .into_iter()
        .find(|id| *id != old)
        .expect("new key");

    // The key in use, by full id and by prefix.
    for id in [old.as_str(), &old[..8]] {
        with_password(PASSWORD, args!["key", "remove", "--repo", &repo.path, id])
            .expect_code(1)
            .stderr_contains("in use");
    }
    assert_eq!(key_ids(&repo).len(), 2);
    // A prefix that matches both keys, and one that matches none.
    with_password(PASSWORD, args!["key", "remove", "--repo", &repo.path, ""])
        .expect_code(1)
        .stderr_contains("several");
    with_password(
        PASSWORD,
        args!["key", "remove", "--repo", &repo.path, "not-a-key"],
    )
    .expect_code(1);
    assert_eq!(key_ids(&repo).len(), 2);

    // Remove the other key, then try to remove the last one with the recovery kit (the only
    // way it is not also the key in use).
    with_password(PASSWORD, args!["key", "remove", "--repo", &repo.path, &new]).success();
    assert_eq!(key_ids(&repo), vec![old.clone()]);
    let list = with_kit(&kit, args!["key", "list", "--json", "--repo", &repo.path]).success();
    let list = list.json();
    assert_eq!(
        current_ids(list.as_array().expect("array")),
        Vec::<String>::new(),
        "opened with a recovery kit, no key is current: {list}"
    );
    with_kit(&kit, args!["key", "remove", "--repo", &repo.path, &old])
        .expect_code(1)
        .stderr_contains("last key");
    assert_eq!(key_ids(&repo), vec![old]);
    assert_eq!(snapshot_count(&repo, PASSWORD), 1);
    assert_password_refused(&repo, NEW_PASSWORD);
}

#[test]
fn key_passwd_replaces_the_password_in_use() {
    let (repo, scratch, src) = repo_with_snapshot();
    let old = only_key(&repo);
    let kit = scratch.join("kit.txt");
    export_kit(&repo, &kit);
    let new_file = scratch.join("new-password");
    write_password_file(&new_file, NEW_PASSWORD);

    with_password(
        PASSWORD,
        args![
            "key",
            "passwd",
            "--repo",
            &repo.path,
            "--new-password-file",
            &new_file
        ],
    )
    .success();
    let new = only_key(&repo);
    assert_ne!(new, old, "key passwd kept the old key object");
    assert_password_refused(&repo, PASSWORD);
    assert_eq!(snapshot_count(&repo, NEW_PASSWORD), 1);
    let list = key_list(&repo, NEW_PASSWORD);
    assert_eq!(list.len(), 1, "key list: {list:?}");
    assert_eq!(current_ids(&list), vec![new.clone()]);

    // The recovery kit stays valid when the password changes.
    let target = scratch.join("target");
    with_kit(
        &kit,
        args!["restore", "--repo", &repo.path, "latest", "--target", &target],
    )
    .success();
    assert_trees_equal(&src, &restored(&target, &src));

    // key passwd needs a password in use: not with a recovery kit.
    let mut cmd = lifeboat_cmd();
    cmd.env_remove("LIFEBOAT_PASSWORD")
        .env("LIFEBOAT_RECOVERY_KIT", &kit)
        .env("LIFEBOAT_NEW_PASSWORD", THIRD_PASSWORD)
        .args(args!["key", "passwd", "--repo", &repo.path]);
    run(cmd).expect_code(1);
    assert_eq!(key_ids(&repo), vec![new]);
    assert_password_refused(&repo, THIRD_PASSWORD);
}

#[test]
fn a_lost_password_is_replaced_with_the_recovery_kit() {
    let (repo, scratch, _src) = repo_with_snapshot();
    let kit = scratch.join("kit.txt");
    export_kit(&repo, &kit);
    let mut cmd = lifeboat_cmd();
    cmd.env_remove("LIFEBOAT_PASSWORD")
        .env("LIFEBOAT_NEW_PASSWORD", NEW_PASSWORD)
        .args(args![
            "key",
            "add",
            "--repo",
            &repo.path,
            "--recovery-kit",
            &kit
        ]);
    run(cmd).success();
    assert_eq!(key_ids(&repo).len(), 2);
    assert_eq!(snapshot_count(&repo, NEW_PASSWORD), 1);
}

#[test]
fn key_export_writes_a_private_kit_once() {
    let (repo, scratch, _src) = repo_with_snapshot();
    let kit = scratch.join("kit.txt");
    export_kit(&repo, &kit);
    let mode = fs::metadata(&kit).expect("stat kit").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the kit file has mode {mode:o}");
    let text = fs::read_to_string(&kit).expect("read kit");
    let key_lines = kit_key_lines(&text);
    let config: Value =
        serde_json::from_slice(&fs::read(repo.path.join("config")).expect("read config"))
            .expect("config is JSON");
    assert!(
        text.contains(&string(&config, "id")),
        "the kit does not name the repository id:\n{text}"
    );

    // To standard output: the same key.
    let out = with_password(PASSWORD, args!["key", "export", "--repo", &repo.path]).success();
    assert_eq!(kit_key_lines(&out.stdout()), key_lines);

    // A second export to the same path is refused and leaves the file alone.
    with_password(
        PASSWORD,
        args!["key", "export", "--repo", &repo.path, "--output", &kit],
    )
    .failure();
    assert_eq!(fs::read_to_string(&kit).expect("read kit"), text);

    // The kit opens the repository without any password.
    let out = with_kit(&kit, args!["snapshots", "--json", "--repo", &repo.path]).success();
    assert_eq!(out.json().as_array().map(Vec::len), Some(1), "{out}");
    let mut cmd = lifeboat_cmd();
    cmd.env_remove("LIFEBOAT_PASSWORD").args(args![
        "snapshots",
        "--repo",
        &repo.path,
        "--recovery-kit",
        &kit
    ]);
    run(cmd).success();
}

/// `key export` into a file other users can read (`> kit.txt` under umask 022) warns on
/// stderr and points at `--output`, which creates the file 0600; into a private file or a
/// pipe it says nothing.
#[test]
fn key_export_into_a_file_others_can_read_warns() {
    use std::os::unix::fs::OpenOptionsExt;
    let (repo, scratch, _src) = repo_with_snapshot();
    for (name, mode, warns) in [("shared.txt", 0o644, true), ("private.txt", 0o600, false)] {
        let path = scratch.join(name);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .expect("create");
        file.set_permissions(fs::Permissions::from_mode(mode))
            .expect("chmod");
        // Standard output is the file itself (run_cmd would pipe it).
        let out = lifeboat_cmd()
            .args(args!["key", "export", "--repo", &repo.path])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(file))
            .output()
            .expect("run lifeboat");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {:?}: {stderr}", out.status);
        assert!(
            fs::read_to_string(&path).expect("kit").contains("lbk1-"),
            "{name}: no kit written"
        );
        assert_eq!(
            stderr.contains("other users can read"),
            warns,
            "{name}: mode {mode:o}: {stderr}"
        );
        if warns {
            assert!(stderr.contains("--output"), "{stderr}");
        }
    }
    let out = with_password(PASSWORD, args!["key", "export", "--repo", &repo.path]).success();
    assert!(!out.stderr().contains("other users"), "{out}");
}

/// Issue 21: the kit prints the exact commands of a recovery: `snapshots --latest`, one
/// `restore` per job the repository holds (`--job J --host H latest`), and `recover --host H`,
/// each with the repository and `--recovery-kit kit.txt`, values shell-quoted (a job name with
/// a quote and a space, a host name with a space). Pasted into `sh` on a machine with no
/// password, each restore brings back exactly its job's data.
#[test]
fn the_kits_commands_restore_each_job_without_a_password() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let (db, etc) = (scratch.join("db"), scratch.join("etc"));
    build_plain_tree(&db, 4, 200_000, 31);
    build_plain_tree(&etc, 6, 0, 32);
    let db_job = "it's db";
    repo.backup(args!["--job", db_job, "--host", "web one", &db]);
    repo.backup(args!["--job", "etc", "--host", "web one", &etc]);
    repo.backup(args!["--job", "etc", "--host", "web2", &etc]);
    let dir = scratch.join("rescue");
    fs::create_dir(&dir).expect("mkdir");
    let kit = dir.join("kit.txt");
    export_kit(&repo, &kit);
    let text = fs::read_to_string(&kit).expect("kit");
    let commands = kit_commands(&text);
    let quoted_repo = repo.path.to_string_lossy().into_owned();
    for c in &commands {
        assert!(
            c.contains(&format!("--repo {quoted_repo} ")) && c.contains("--recovery-kit kit.txt"),
            "{c}"
        );
    }
    let find =
        |needle: &str| -> Vec<&String> { commands.iter().filter(|c| c.contains(needle)).collect() };
    assert_eq!(find("lifeboat snapshots ").len(), 1, "{text}");
    assert!(
        find("lifeboat snapshots ")[0].ends_with("--latest"),
        "{text}"
    );
    let restores = find("lifeboat restore ");
    assert_eq!(restores.len(), 3, "one per job and host:\n{text}");
    let db_line = restores
        .iter()
        .find(|c| c.contains("--job 'it'\\''s db' --host 'web one' latest --target /mnt/restore"))
        .unwrap_or_else(|| panic!("no restore of the db job, shell-quoted:\n{text}"));
    let etc_line = restores
        .iter()
        .find(|c| c.contains("--job etc --host 'web one' latest"))
        .unwrap_or_else(|| panic!("no restore of web one's etc job:\n{text}"));
    assert!(
        restores
            .iter()
            .any(|c| c.contains("--job etc --host web2 latest")),
        "{text}"
    );
    let recovers = find("lifeboat recover ");
    assert_eq!(recovers.len(), 2, "one per host:\n{text}");
    assert!(
        recovers
            .iter()
            .any(|c| c.ends_with("--host 'web one' --target /mnt/restore")),
        "{text}"
    );

    let out = run_kit_command(&dir, find("lifeboat snapshots ")[0], &dir, &[]).success();
    assert!(out.stdout().contains("it's db"), "{out}");
    for (line, src, other) in [(db_line, &db, &etc), (etc_line, &etc, &db)] {
        let target = scratch.join(format!("t-{}", rand::random::<u32>()));
        run_kit_command(&dir, line, &target, &[]).success();
        assert_trees_equal(src, &restored(&target, src));
        assert!(
            !restored(&target, other).exists(),
            "{line}: only that job's data"
        );
    }
}

/// Issue 21: the kit of an empty repository prints the generic commands (`restore latest`,
/// `recover` of this host), and the kit of a repository in a daemon config (`key export
/// --config FILE --repository NAME`, or `--job`) is written with the config's password and
/// carries its url and storage options.
#[test]
fn the_kit_of_an_empty_repository_and_of_a_config_repository() {
    let repo = Repo::new();
    let scratch = Scratch::new();
    let out = with_password(PASSWORD, args!["key", "export", "--repo", &repo.path]).success();
    let commands = kit_commands(&out.stdout());
    assert!(
        commands
            .iter()
            .any(|c| c.ends_with("--recovery-kit kit.txt latest --target /mnt/restore")),
        "{out}"
    );
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("lifeboat recover ")
                && c.contains(&format!("--host {}", hostname()))),
        "{out}"
    );

    let pw = scratch.join("password");
    write_password_file(&pw, PASSWORD);
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = scratch.join("lifeboat.toml");
    write_file(
        &config,
        format!(
            "[repositories.main]\nurl = \"{}\"\npassword_file = \"{}\"\n\
             options = {{ retry_timeout = \"2m\" }}\n\n\
             [[jobs]]\nname = \"etc\"\nrepository = \"main\"\nsources = [\"/etc\"]\n\
             incremental = \"0 3 * * *\"\n",
            repo.path.display(),
            pw.display()
        )
        .as_bytes(),
    );
    for pick in [
        args!["--repository", "main"],
        args!["--job", "etc"],
        args![],
    ] {
        let mut a = args!["key", "export", "--config", &config];
        a.extend(pick.clone());
        let mut cmd = lifeboat_cmd();
        cmd.env_remove("LIFEBOAT_PASSWORD").args(a);
        let out = run(cmd).success();
        let text = out.stdout();
        assert!(
            text.contains(&format!("Repository: {}", repo.path.display())),
            "{pick:?}: {text}"
        );
        for c in kit_commands(&text) {
            assert!(c.contains("--option retry_timeout=2m"), "{pick:?}: {c}");
        }
    }
    let mut cmd = lifeboat_cmd();
    cmd.args(args![
        "key",
        "export",
        "--config",
        &config,
        "--repository",
        "nope"
    ]);
    run(cmd)
        .expect_code(1)
        .stderr_contains("no repository named");
}

/// Issue 21: the kit of an S3 repository carries the storage settings it was exported with,
/// from `--option` and from the cloud's environment (endpoint, region, allow_http), and names
/// the credential variables without their values: its restore command, pasted on a machine
/// whose environment holds nothing but the two keys, restores the snapshot.
#[test]
fn the_kit_of_an_s3_repository_carries_its_endpoint_and_options() {
    let scratch = Scratch::new();
    let src = scratch.join("src");
    build_plain_tree(&src, 5, 100_000, 41);
    let url = s3_url("kit");
    let secret = "kit-secret-4c1d8e";
    let mut env = s3_env();
    env.retain(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY");
    env.push(("AWS_SECRET_ACCESS_KEY", secret.to_string()));
    let s3 = |a: Vec<OsString>| {
        let mut cmd = lifeboat_cmd();
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.args(a);
        run(cmd)
    };
    s3(args!["init", "--repo", &url]).success();
    s3(args!["backup", "--repo", &url, "--job", "files", &src]).success();
    let dir = scratch.join("rescue");
    fs::create_dir(&dir).expect("mkdir");
    let kit = dir.join("kit.txt");
    s3(args![
        "key",
        "export",
        "--repo",
        &url,
        "--option",
        "retry_timeout=3m",
        "--output",
        &kit
    ])
    .success();
    let text = fs::read_to_string(&kit).expect("kit");
    assert!(
        !text.contains(secret),
        "the kit holds the secret key:\n{text}"
    );
    assert!(
        text.contains("export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=..."),
        "{text}"
    );
    let restore = kit_commands(&text)
        .into_iter()
        .find(|c| c.starts_with("lifeboat restore ") && c.contains("--job files"))
        .unwrap_or_else(|| panic!("no restore of the job:\n{text}"));
    for option in [
        format!("--option endpoint={}", s3_endpoint()),
        "--option allow_http=true".to_string(),
        "--option region=us-east-1".to_string(),
        "--option retry_timeout=3m".to_string(),
    ] {
        assert!(restore.contains(&option), "no {option}: {restore}");
    }
    let target = scratch.join("target");
    let keys_only = [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
    ];
    run_kit_command(&dir, &restore, &target, &keys_only).success();
    assert_trees_equal(&src, &restored(&target, &src));
}

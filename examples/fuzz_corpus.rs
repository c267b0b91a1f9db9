//! Writes the seed corpus of the fuzz targets: `fuzz/corpus/TARGET/valid-*`, real objects made
//! by Lifeboat's own code, each of which its target must accept (`tests/suite/fuzz_corpus.rs` checks
//! that on every `cargo test`).
//!
//!     cargo run --example fuzz_corpus [-- DIR]      (DIR: fuzz/corpus by default)
//!
//! An unencrypted repository is made in a temporary directory and backed up to twice; its
//! config, packs, pack headers, blobs, listings, indexes, snapshots and a lock are taken as
//! they are stored. Encrypted seeds are the same plaintexts sealed with the fuzz harness's fixed
//! test key; key objects use its fixed password and the fastest key derivation parameters.
//! The daemon's seeds are the example configs of `config/`, and files and requests made by the
//! daemon's own types. Only `valid-*` files are replaced; inputs the fuzzers found are kept.
//! Encryption uses random nonces, so a new run changes the bytes of the encrypted seeds.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::collections::BTreeMap;
use std::error::Error;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lifeboat::daemon::control::Request;
use lifeboat::daemon::maintenance::{self, Windows};
use lifeboat::daemon::state::{JobState, RunResult, State, TaskState};
use lifeboat::ops::backup::{backup, BackupOptions};
use lifeboat::progress::Progress;
use lifeboat::repo::pack::{self, BlobKind, PackBuilder, PackEntry};
use lifeboat::repo::{
    kit, open_metadata, Cipher, InitOptions, KdfParams, KeyFile, LockSettings, MasterKey,
    ObjectType, RepoConfig, Repository, Sealer,
};
use lifeboat::storage::LocalStorage;

use harness::{fuzz_now, fuzz_sealer, FUZZ_MASTER_KEY, FUZZ_PASSWORD, FUZZ_REPO_ID};

type Res<T> = Result<T, Box<dyn Error>>;

/// Seeds by target.
#[derive(Default)]
struct Seeds(BTreeMap<&'static str, Vec<(String, Vec<u8>)>>);

impl Seeds {
    fn add(&mut self, target: &'static str, name: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0
            .entry(target)
            .or_default()
            .push((format!("valid-{}", name.into()), bytes.into()));
    }
}

fn main() -> Res<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let mut seeds = Seeds::default();
    let scratch = tempfile::tempdir()?;
    let plain = plain_repository(scratch.path())?;
    repository_seeds(&plain, &mut seeds)?;
    key_and_config_seeds(&mut seeds)?;
    daemon_seeds(&mut seeds)?;

    // Every seed must be accepted by its target before anything is written.
    for (target, files) in &seeds.0 {
        let run = harness::TARGETS
            .iter()
            .find(|(name, _)| name == target)
            .map(|(_, run)| run)
            .ok_or_else(|| format!("no fuzz target {target}"))?;
        for (name, bytes) in files {
            run(bytes).map_err(|e| format!("seed {target}/{name} is refused: {e}"))?;
        }
    }
    for (target, _) in harness::TARGETS {
        let dir = out.join(target);
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().as_bytes().starts_with(b"valid-") {
                fs::remove_file(entry.path())?;
            }
        }
        let files = seeds.0.get(target).map_or(&[][..], Vec::as_slice);
        if files.is_empty() {
            return Err(format!("no seed for fuzz target {target}").into());
        }
        for (name, bytes) in files {
            fs::write(dir.join(name), bytes)?;
        }
        println!("{target}: {} seeds", files.len());
    }
    Ok(())
}

/// Deterministic bytes that do not compress.
fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An unencrypted repository in `dir` with two snapshots of a small tree of every kind of
/// entry.
fn plain_repository(dir: &Path) -> Res<Repository> {
    let src = dir.join("src");
    fs::create_dir_all(src.join("sub/deeper"))?;
    let text: String = (0..300)
        .map(|i| format!("{i:04} GET /index.html 200 0.003\n"))
        .collect();
    fs::write(src.join("notes.txt"), &text)?;
    fs::write(src.join("random.bin"), noise(3000, 7))?;
    fs::write(src.join("empty"), b"")?;
    fs::write(src.join("sub/inner.txt"), b"hello\n")?;
    fs::write(src.join("sub/deeper/x"), b"x")?;
    fs::write(
        src.join(std::ffi::OsStr::from_bytes(b"caf\xe9 \n name")),
        b"not UTF-8",
    )?;
    std::os::unix::fs::symlink("notes.txt", src.join("link"))?;
    let storage = Arc::new(LocalStorage::new(dir.join("repo")));
    let opts = InitOptions {
        encryption: false,
        pack_size: 1 << 20,
        ..InitOptions::default()
    };
    let repo = Repository::init(storage, &opts, None)?;
    let backup_opts = BackupOptions {
        paths: vec![src.clone()],
        host: "fuzzhost".into(),
        tags: vec!["seed".into()],
        threads: 1,
        ..BackupOptions::default()
    };
    backup(&repo, &backup_opts, Arc::new(Progress::default()))?;
    fs::write(src.join("sub/inner.txt"), b"hello again\n")?;
    backup(&repo, &backup_opts, Arc::new(Progress::default()))?;
    Ok(repo)
}

/// The files of a local repository's directory, sorted by path.
fn files(dir: &Path) -> Res<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            out.extend(files(&p)?);
        } else if !p
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(b"."))
        {
            out.push((p.clone(), fs::read(&p)?));
        }
    }
    out.sort();
    Ok(out)
}

/// The entry fields of the `blob` and `sealed` targets.
fn blob_prefix(e: &PackEntry) -> Vec<u8> {
    let mut p = vec![u8::from(e.kind == BlobKind::Tree), u8::from(e.compressed)];
    p.extend_from_slice(&e.raw_len.to_le_bytes());
    p.extend_from_slice(&e.id.0);
    p
}

/// The selector byte of the `sealed` target for `ty` (plus 0x80: seal the plaintext first).
fn selector(ty: ObjectType) -> u8 {
    harness::OBJECT_TYPES
        .iter()
        .position(|t| *t == ty)
        .map_or(0, |i| i as u8)
}

fn repository_seeds(repo: &Repository, seeds: &mut Seeds) -> Res<()> {
    let root = repo
        .storage()
        .local_path()
        .ok_or("the seed repository is not local")?;
    let plain = Sealer::plain();
    let key = fuzz_sealer();
    seeds.add("repo_config", "plain", fs::read(root.join("config"))?);

    for (i, (_, bytes)) in files(&root.join("data"))?.iter().enumerate() {
        seeds.add("pack", format!("pack-{i}"), bytes.clone());
        let entries = pack::read_pack_header(&plain, bytes, "seed pack")?;
        let data_len: usize = entries.iter().map(|e| e.stored_len as usize).sum();
        let header = &bytes[data_len..bytes.len() - pack::TRAILER_LEN];
        let header_plain = plain.open(ObjectType::PackHeader, header, "seed")?;
        let mut input = (data_len as u32).to_le_bytes().to_vec();
        input.extend_from_slice(&header_plain);
        seeds.add("pack_header", format!("pack-{i}"), input);
        // The same blobs in a pack sealed with the test key.
        let mut encrypted = PackBuilder::default();
        for (j, e) in entries.iter().enumerate() {
            let stored = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            let mut input = blob_prefix(e);
            input.extend_from_slice(stored);
            seeds.add("blob", format!("pack-{i}-blob-{j}"), input);
            let raw = pack::decode_blob(&plain, e, stored, "seed")?;
            if e.kind == BlobKind::Tree {
                seeds.add("tree", format!("pack-{i}-blob-{j}"), raw.clone());
            }
            let b = pack::encode_blob(key, e.kind, key.blob_id(&raw), &raw, 3)?;
            let ty = e.kind.object_type();
            let sealed_entry = PackEntry {
                kind: b.kind,
                compressed: b.compressed,
                id: b.id,
                offset: 0,
                stored_len: b.stored.len() as u32,
                raw_len: b.raw_len,
            };
            let mut input = vec![selector(ty)];
            input.extend_from_slice(&blob_prefix(&sealed_entry));
            input.extend_from_slice(&b.stored);
            seeds.add("sealed", format!("pack-{i}-blob-{j}"), input);
            let payload = key.open(ty, &b.stored, "seed")?;
            let mut input = vec![selector(ty) | 0x80];
            input.extend_from_slice(&blob_prefix(&sealed_entry));
            input.extend_from_slice(&payload);
            seeds.add("sealed", format!("plaintext-pack-{i}-blob-{j}"), input);
            encrypted.add(&b);
        }
        let (enc, enc_entries) = encrypted.finish(key);
        let enc_data: usize = enc_entries.iter().map(|e| e.stored_len as usize).sum();
        let enc_header = &enc[enc_data..enc.len() - pack::TRAILER_LEN];
        let mut input = vec![selector(ObjectType::PackHeader)];
        input.extend_from_slice(&(enc_data as u32).to_le_bytes());
        input.extend_from_slice(enc_header);
        seeds.add("sealed", format!("pack-{i}-header"), input);
        let mut input = vec![selector(ObjectType::PackHeader) | 0x80];
        input.extend_from_slice(&(enc_data as u32).to_le_bytes());
        input.extend_from_slice(&key.open(ObjectType::PackHeader, enc_header, "seed")?);
        seeds.add("sealed", format!("plaintext-pack-{i}-header"), input);
    }

    let lock = repo.lock("fuzz-seed", false, &LockSettings::default())?;
    let locks = files(&root.join("locks"))?;
    lock.release();
    let metadata = [
        ("index", ObjectType::Index, files(&root.join("index"))?),
        (
            "snapshot",
            ObjectType::Snapshot,
            files(&root.join("snapshots"))?,
        ),
        ("lock", ObjectType::Lock, locks),
    ];
    for (what, ty, objects) in metadata {
        if objects.is_empty() {
            return Err(format!("the seed repository has no {what} object").into());
        }
        let sel = [ObjectType::Index, ObjectType::Snapshot, ObjectType::Lock]
            .iter()
            .position(|t| *t == ty)
            .map_or(0, |i| i as u8);
        for (i, (_, stored)) in objects.iter().enumerate() {
            let mut input = vec![sel];
            input.extend_from_slice(stored);
            seeds.add("metadata", format!("{what}-{i}"), input);
            let text = open_metadata(&plain, ty, stored, "seed")?;
            if ty != ObjectType::Lock {
                seeds.add(what, format!("{i}"), text);
            }
            // Stored as `type | compression | body`: the same body sealed with the test key.
            let body = plain.open(ty, stored, "seed")?;
            let mut input = vec![selector(ty)];
            input.extend_from_slice(&key.seal(ty, &body));
            seeds.add("sealed", format!("{what}-{i}"), input);
            let mut input = vec![selector(ty) | 0x80];
            input.extend_from_slice(&body);
            seeds.add("sealed", format!("plaintext-{what}-{i}"), input);
        }
    }
    Ok(())
}

fn key_and_config_seeds(seeds: &mut Seeds) -> Res<()> {
    let master = MasterKey::from_bytes(&FUZZ_MASTER_KEY);
    let kdf = KdfParams::new(64, 1, 1)?;
    let k = KeyFile::seal(
        &master,
        FUZZ_PASSWORD,
        kdf,
        FUZZ_REPO_ID,
        "fuzzhost",
        "fuzz",
    )?;
    seeds.add("key", "key.json", k.to_bytes());
    let mut c = RepoConfig::new(3, 16 << 20, Some(Cipher::XChaCha20Poly1305))?;
    c.id = FUZZ_REPO_ID.into();
    c.storage_create_only = Some(true);
    c.mac = fuzz_sealer().config_mac(&c.mac_input());
    seeds.add("repo_config", "encrypted", c.to_bytes());
    seeds.add(
        "kit",
        "kit.txt",
        kit::render(
            &master,
            &kit::KitInfo {
                location: "s3://bucket/lifeboat",
                repo_id: FUZZ_REPO_ID,
                storage: &lifeboat::storage::cloud::kit_settings(
                    "s3://bucket/lifeboat",
                    &[("endpoint".into(), "https://s3.example.net".into())],
                )?,
                newest: &[],
                local_host: "fuzzhost",
            },
        ),
    );
    seeds.add("kit", "key-line.txt", kit::encode_key(&master));
    Ok(())
}

fn daemon_seeds(seeds: &mut Seeds) -> Res<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["lifeboat.toml", "demo.toml"] {
        seeds.add(
            "daemon_config",
            name,
            fs::read(root.join("config").join(name))?,
        );
    }
    // The zone selector (1: UTC, 2: Europe/Berlin, 3: America/New_York, 4: Lord Howe) and a line.
    for (i, (zone, line)) in [
        (1u8, "0 3 * * 1-5"),
        (1, "*/10 * * * * *"),
        (2, "30 2 * * *"),
        (3, "0 0 29 2 *"),
        (4, "@hourly"),
        (2, "15 4 1-7 * sun"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut input = vec![zone];
        input.extend_from_slice(line.as_bytes());
        seeds.add("schedule", format!("{i}"), input);
    }
    for (i, t) in [
        "now",
        "+90m",
        "in 2h 30m",
        "2026-12-02T03:00:00+01:00",
        "2027-02-01 03:00",
        "2027-02-01T03:00:30",
    ]
    .into_iter()
    .enumerate()
    {
        seeds.add("maintenance_time", format!("{i}"), t);
    }
    let now = fuzz_now();
    let mut w = Windows::default();
    let hour = Duration::from_secs(3600);
    w.add(
        now + chrono::TimeDelta::hours(2),
        3 * hour,
        "kernel upgrade",
        Some("web down"),
        now,
    )?;
    w.add(
        now - chrono::TimeDelta::hours(1),
        2 * hour,
        "disk swap",
        None,
        now,
    )?;
    w.add(
        now + chrono::TimeDelta::days(9),
        48 * hour,
        "move",
        None,
        now,
    )?;
    let _ = maintenance::due(&mut w, now, &maintenance::Settings::default());
    maintenance::hold(&mut w, "etc", true, now);
    w.cancel(3, now)?;
    seeds.add(
        "maintenance_windows",
        "maintenance.json",
        serde_json::to_vec_pretty(&w)?,
    );

    let mut state = State::default();
    state.jobs.insert(
        "etc".into(),
        JobState {
            cursor: Some(now),
            last_start: Some(now),
            last_end: Some(now),
            last_kind: Some("incremental".into()),
            last_result: Some(RunResult::Partial),
            last_error: Some("2 files could not be read".into()),
            last_success: Some(now),
            last_snapshot: Some("ab".repeat(32)),
            last_duration_secs: Some(12.5),
            last_files: 1234,
            successes: 3,
            failures: 1,
            ..JobState::default()
        },
    );
    state.tasks.insert(
        "prune:local".into(),
        TaskState {
            cursor: Some(now),
            last_ok: Some(true),
            last_report: Some(serde_json::json!({"packs_removed": 3})),
            runs: 1,
            ..TaskState::default()
        },
    );
    seeds.add(
        "daemon_state",
        "state.json",
        serde_json::to_vec_pretty(&state)?,
    );
    for (i, r) in [
        Request::Status,
        Request::Run {
            job: "etc".into(),
            full: true,
        },
        Request::Pause {
            job: Some("etc".into()),
            for_secs: Some(3600),
        },
        Request::Pause {
            job: None,
            for_secs: None,
        },
        Request::Resume { job: None },
    ]
    .iter()
    .enumerate()
    {
        seeds.add("control", format!("{i}"), serde_json::to_vec(r)?);
    }
    Ok(())
}

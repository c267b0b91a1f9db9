//! The fuzz harness: one function per cargo-fuzz target, each handing raw bytes to Lifeboat's
//! real parsing code and checking what the parser promises about what it accepted.
//!
//! This file is shared three ways, so that the fuzzers, the corpus replay and the seed
//! generator can never disagree about what an input means:
//! - the cargo-fuzz crate (`fuzz/`) builds it as its library; each `fuzz/fuzz_targets/NAME.rs`
//!   calls the function of the same name;
//! - `tests/suite/fuzz_corpus.rs` includes it (`#[path]`) and feeds every file of
//!   `fuzz/corpus/NAME/` to [`TARGETS`] under plain `cargo test`;
//! - `examples/fuzz_corpus.rs` includes it for the fixed test key and the input layouts when
//!   it writes the seed corpus.
//!
//! A function returns `Ok` when the parser accepted the input and `Err` with the parser's
//! message when it refused it: both are fine. A panic is a bug, either in the parser or in a
//! property checked here (a round trip that does not hold, an accepted pack header whose blobs
//! do not fill the pack, a sealed object that opens as another type, ...).
//!
//! Encrypted objects: the fuzzer cannot forge an authenticated ciphertext, so a target fed only
//! ciphertext would stop at "authentication failed". The plaintext parsers are fuzzed directly
//! (unencrypted repositories seal by a type byte only, which the fuzzer finds at once), and the
//! `sealed` target fuzzes the encrypted path both ways: ciphertext opened with a fixed test key
//! (real sealed seeds, and every mutation of them, which must fail authentication), and
//! plaintext sealed with that key and then read back through the real reader (open, then parse).

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lifeboat::daemon::config::Config;
use lifeboat::daemon::control::{self, Request};
use lifeboat::daemon::maintenance::{self, Windows};
use lifeboat::daemon::schedule::Schedule;
use lifeboat::daemon::state::{self, State};
use lifeboat::id::BlobId;
use lifeboat::repo::index::{self, IndexBuilder};
use lifeboat::repo::pack::{self, BlobKind, PackEntry};
use lifeboat::repo::{
    kit, open_metadata, KeyFile, LockInfo, MasterKey, ObjectType, RepoConfig, Sealer, Snapshot,
    Tree,
};

/// The master key of the encrypted seeds and of the `sealed` target: a fixed test key, never
/// the key of a real repository.
pub const FUZZ_MASTER_KEY: [u8; 64] =
    *b"lifeboat fuzzing test key: not a secret, never use it for data!!";
/// The password that opens the key objects of the seed corpus.
pub const FUZZ_PASSWORD: &[u8] = b"fuzz password";
/// The repository id the seed key objects and config are bound to.
pub const FUZZ_REPO_ID: &str = "f022f022f022f022f022f022f022f022f022f022f022f022f022f022f022f022";

/// What the parser said about one input: `Err` is a refusal, which is fine.
pub type Outcome = Result<(), String>;

/// A target's function.
pub type Target = fn(&[u8]) -> Outcome;

/// Every target: its name (a directory of `fuzz/corpus/` and a file of `fuzz/fuzz_targets/`)
/// and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("pack", pack),
    ("pack_header", pack_header),
    ("blob", blob),
    ("index", index),
    ("metadata", metadata),
    ("tree", tree),
    ("snapshot", snapshot),
    ("key", key),
    ("kit", kit),
    ("repo_config", repo_config),
    ("sealed", sealed),
    ("daemon_config", daemon_config),
    ("schedule", schedule),
    ("maintenance_time", maintenance_time),
    ("maintenance_windows", maintenance_windows),
    ("daemon_state", daemon_state),
    ("control", control),
];

/// The sealer of the fixed test key.
pub fn fuzz_sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER.get_or_init(|| Sealer::encrypted(&MasterKey::from_bytes(&FUZZ_MASTER_KEY)))
}

/// The same key with the other cipher, XAES-256-GCM.
pub fn fuzz_xaes_sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER.get_or_init(|| {
        Sealer::encrypted_with(
            &MasterKey::from_bytes(&FUZZ_MASTER_KEY),
            lifeboat::repo::Cipher::Xaes256Gcm,
        )
    })
}

/// The "now" of the daemon targets (2027-01-15 08:00:00 UTC), fixed so a run is repeatable.
pub fn fuzz_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
}

const WHAT: &str = "fuzz input";

fn refused(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn le32(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

/// The object types, by a selector byte.
pub const OBJECT_TYPES: [ObjectType; 6] = [
    ObjectType::DataBlob,
    ObjectType::TreeBlob,
    ObjectType::PackHeader,
    ObjectType::Index,
    ObjectType::Snapshot,
    ObjectType::Lock,
];

// ---------------------------------------------------------------------------------------------
// Repository objects

/// A whole pack of an unencrypted repository: `read_pack_header`, then `decode_blob` of every
/// blob it lists.
pub fn pack(data: &[u8]) -> Outcome {
    let s = Sealer::plain();
    let entries = pack::read_pack_header(&s, data, WHAT).map_err(refused)?;
    let data_len = data.len() - pack::TRAILER_LEN - header_len(data);
    check_entries_fill(&entries, data_len as u64);
    let mut first_refusal = None;
    for e in &entries {
        let start = e.offset as usize;
        let stored = &data[start..start + e.stored_len as usize];
        if let Err(err) = pack::decode_blob(&s, e, stored, WHAT) {
            first_refusal.get_or_insert(refused(err));
        }
    }
    first_refusal.map_or(Ok(()), Err)
}

/// The header length of a pack whose trailer was accepted.
fn header_len(pack: &[u8]) -> usize {
    let t = &pack[pack.len() - pack::TRAILER_LEN..];
    le32(t).map_or(0, |l| l as usize)
}

/// An accepted header's entries lie back to back from offset 0 and fill `data_len` exactly.
fn check_entries_fill(entries: &[PackEntry], data_len: u64) {
    let mut at = 0u64;
    for e in entries {
        assert_eq!(
            u64::from(e.offset),
            at,
            "accepted pack header: blob not where the previous ended"
        );
        assert!(
            e.raw_len <= pack::MAX_BLOB_LEN,
            "accepted pack header: raw length out of range"
        );
        assert!(
            e.stored_len <= pack::MAX_STORED_LEN,
            "accepted pack header: stored length out of range"
        );
        at += u64::from(e.stored_len);
    }
    assert_eq!(
        at, data_len,
        "accepted pack header: blobs do not fill the pack"
    );
}

/// A pack header's plaintext: `data length (u32) | header`, parsed by `parse_header` of an
/// unencrypted repository.
pub fn pack_header(data: &[u8]) -> Outcome {
    let data_len = le32(data).ok_or("too short for the data length")?;
    let mut sealed = vec![ObjectType::PackHeader as u8];
    sealed.extend_from_slice(&data[4..]);
    let entries = pack::parse_header(&Sealer::plain(), &sealed, u64::from(data_len), WHAT)
        .map_err(refused)?;
    check_entries_fill(&entries, u64::from(data_len));
    Ok(())
}

/// The fields of a pack entry ahead of a blob: `kind (u8) | compressed (u8) | raw length
/// (u32) | blob id (32)`, 38 bytes.
pub const BLOB_PREFIX_LEN: usize = 38;

fn blob_entry(prefix: &[u8], stored_len: usize) -> Option<PackEntry> {
    let kind = if prefix.first()? & 1 == 0 {
        BlobKind::Data
    } else {
        BlobKind::Tree
    };
    Some(PackEntry {
        kind,
        compressed: prefix.get(1)? & 1 == 1,
        raw_len: le32(prefix.get(2..6)?)?,
        id: BlobId::from_slice(prefix.get(6..BLOB_PREFIX_LEN)?)?,
        offset: 0,
        stored_len: u32::try_from(stored_len).ok()?,
    })
}

/// One stored blob of an unencrypted repository: `entry (see [`BLOB_PREFIX_LEN`]) | stored
/// blob`, through `decode_blob` (open, decompress within the raw length, verify the id).
pub fn blob(data: &[u8]) -> Outcome {
    let stored = data
        .get(BLOB_PREFIX_LEN..)
        .ok_or("too short for an entry")?;
    let e = blob_entry(data, stored.len()).ok_or("bad entry")?;
    let raw = pack::decode_blob(&Sealer::plain(), &e, stored, WHAT).map_err(refused)?;
    assert_eq!(
        raw.len(),
        e.raw_len as usize,
        "decoded blob has another length than its entry"
    );
    if e.kind == BlobKind::Tree {
        Tree::from_bytes(&raw, WHAT).map_err(refused)?;
    }
    Ok(())
}

/// An index object's plaintext, through `index::decode`; what it accepts must encode back to
/// the same bytes and load into the in-memory index.
pub fn index(data: &[u8]) -> Outcome {
    let packs = index::decode(data, WHAT).map_err(refused)?;
    check_index(&packs);
    assert_eq!(
        index::encode(&packs),
        data,
        "index does not encode back to its bytes"
    );
    Ok(())
}

fn check_index(packs: &[(lifeboat::id::PackId, Vec<PackEntry>)]) {
    let mut b = IndexBuilder::default();
    for (id, entries) in packs {
        for e in entries {
            assert!(
                e.raw_len <= pack::MAX_BLOB_LEN,
                "accepted index: raw length out of range"
            );
            assert!(
                e.stored_len <= pack::MAX_STORED_LEN,
                "accepted index: stored length out of range"
            );
        }
        b.add_pack(*id, entries);
    }
    let idx = b.finish();
    for (_, entries) in packs {
        for e in entries {
            assert!(idx.contains(&e.id), "an indexed blob is not found");
        }
    }
    let _ = idx.by_pack();
}

/// A stored metadata object of an unencrypted repository: `type selector (u8) | stored
/// object`, through `open_metadata` (type, compression, bounded decompression), then the
/// parser of that type (index, snapshot or lock).
pub fn metadata(data: &[u8]) -> Outcome {
    let (&sel, stored) = data.split_first().ok_or("empty")?;
    let ty = [ObjectType::Index, ObjectType::Snapshot, ObjectType::Lock][usize::from(sel % 3)];
    let plain = open_metadata(&Sealer::plain(), ty, stored, WHAT).map_err(refused)?;
    parse_plaintext(ty, &plain, 0)
}

/// Parses an opened object's plaintext by its type (`data_len`: pack headers only).
fn parse_plaintext(ty: ObjectType, plain: &[u8], data_len: u32) -> Outcome {
    match ty {
        ObjectType::Index => index(plain),
        ObjectType::Snapshot => snapshot(plain),
        ObjectType::Lock => LockInfo::from_bytes(plain, WHAT)
            .map(|_| ())
            .map_err(refused),
        ObjectType::TreeBlob => tree(plain),
        ObjectType::DataBlob => Ok(()),
        ObjectType::PackHeader => {
            let mut input = data_len.to_le_bytes().to_vec();
            input.extend_from_slice(plain);
            pack_header(&input)
        }
    }
}

/// A directory listing (postcard), through `Tree::from_bytes`; what it accepts must survive a
/// round trip and answer lookups of its own names.
pub fn tree(data: &[u8]) -> Outcome {
    let t = Tree::from_bytes(data, WHAT).map_err(refused)?;
    match Tree::from_bytes(&t.to_bytes(), WHAT) {
        Ok(back) => assert_eq!(back, t, "tree does not survive a round trip"),
        Err(e) => panic!("re-encoded tree does not parse: {e}"),
    }
    for n in &t.nodes {
        let _ = n.name_is_safe();
        let _ = t.find(&n.name);
    }
    Ok(())
}

/// A snapshot's plaintext (JSON), through `Snapshot::from_bytes`; what it accepts must
/// serialize to something it accepts again.
pub fn snapshot(data: &[u8]) -> Outcome {
    let s = Snapshot::from_bytes(data, WHAT).map_err(refused)?;
    if let Err(e) = Snapshot::from_bytes(&s.to_bytes(), WHAT) {
        panic!("a snapshot that was read does not read back after writing: {e}");
    }
    Ok(())
}

/// Bounds of `docs/FORMAT.md` on key derivation parameters.
const KDF_MAX_MEMORY_KIB: u32 = 4 << 20;
const KDF_MAX_ITERATIONS: u32 = 1000;
const KDF_MAX_PARALLELISM: u32 = 64;

/// A key object (JSON), through `KeyFile::from_bytes`, then `open` with [`FUZZ_PASSWORD`] for
/// the repository [`FUZZ_REPO_ID`]. Parameters inside the format's bounds but costly (the
/// bounds allow 4 GiB and 1000 passes, by design) are not run: only cheap ones and ones past
/// the bounds, which must be refused before any work.
pub fn key(data: &[u8]) -> Outcome {
    let k = KeyFile::from_bytes(data, WHAT).map_err(refused)?;
    let p = &k.kdf;
    let cheap = p.memory_kib <= 1024 && p.iterations <= 4 && p.parallelism <= 8;
    let past_bounds = p.memory_kib > KDF_MAX_MEMORY_KIB
        || p.iterations > KDF_MAX_ITERATIONS
        || p.parallelism > KDF_MAX_PARALLELISM;
    if !(cheap || past_bounds) {
        return Err("costly key derivation parameters: not run".into());
    }
    let opened = k.open(FUZZ_PASSWORD, FUZZ_REPO_ID, WHAT).map_err(refused);
    if past_bounds {
        assert!(
            opened.is_err(),
            "key derivation parameters past the bounds were used"
        );
    }
    if opened?.is_none() {
        return Err("wrong password".into());
    }
    // The right password: the key must still fit no other repository.
    let other = k
        .open(FUZZ_PASSWORD, "another repository", WHAT)
        .map_err(refused)?;
    assert!(
        other.is_none(),
        "a key object opened for another repository"
    );
    Ok(())
}

/// A recovery kit's text, through `kit::parse`; a key it accepts must encode back to a kit that
/// parses to the same key.
pub fn kit(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(refused)?;
    let m = kit::parse(text).map_err(refused)?;
    match kit::parse(&kit::encode_key(&m)) {
        Ok(back) => assert_eq!(back.to_bytes(), m.to_bytes(), "kit does not round-trip"),
        Err(e) => panic!("encoded kit does not parse: {e}"),
    }
    Ok(())
}

/// The repository's `config` object, through `RepoConfig::from_bytes` (parse and validate);
/// encrypted ones are then authenticated with the fixed test key, as `Repository::open` does.
pub fn repo_config(data: &[u8]) -> Outcome {
    let c = RepoConfig::from_bytes(data, WHAT).map_err(refused)?;
    match RepoConfig::from_bytes(&c.to_bytes(), WHAT) {
        Ok(back) => assert_eq!(back, c, "config does not survive a round trip"),
        Err(e) => panic!("config does not read back: {e}"),
    }
    if c.is_encrypted() && c.mac != fuzz_sealer().config_mac(&c.mac_input()) {
        return Err("config failed authentication".into());
    }
    Ok(())
}

/// The encrypted path, with the fixed test key. Layout: `selector (u8) | parameters | rest`.
/// The selector's low bits pick the object type ([`OBJECT_TYPES`], modulo 6); its top bit
/// picks the mode:
/// - clear: `rest` is a sealed object, opened with the test key (then parsed by its type);
/// - set: `rest` is plaintext, sealed with the test key and read back through the real reader
///   of its type (`open_metadata`, `parse_header`, `decode_blob`), which decrypts and parses.
///
/// Parameters: a pack header has `data length (u32)`; a blob the entry fields of [`blob`]
/// ([`BLOB_PREFIX_LEN`] bytes); other types none. In both modes an object must open as its own
/// type only.
pub fn sealed(data: &[u8]) -> Outcome {
    let (&sel, rest) = data.split_first().ok_or("empty")?;
    let ty = OBJECT_TYPES[usize::from(sel & 0x7f) % OBJECT_TYPES.len()];
    let seal_first = sel & 0x80 != 0;
    let params = match ty {
        ObjectType::PackHeader => 4,
        ObjectType::DataBlob | ObjectType::TreeBlob => BLOB_PREFIX_LEN,
        _ => 0,
    };
    if rest.len() < params {
        return Err("too short for the parameters".into());
    }
    let (params, body) = rest.split_at(params);
    let s = fuzz_sealer();
    let owned;
    let sealed: &[u8] = if seal_first {
        owned = s.seal(ty, body);
        match s.open(ty, &owned, WHAT) {
            Ok(opened) => assert_eq!(&*opened, body, "a sealed object opens to other bytes"),
            Err(e) => panic!("a sealed object does not open: {e}"),
        }
        &owned
    } else {
        body
    };
    // Both ciphers: what one seals opens to the same bytes with it, never with the other;
    // opening where the bytes lie agrees with opening a copy, for any input.
    let x = fuzz_xaes_sealer();
    if seal_first {
        let by_xaes = x.seal(ty, body);
        match x.open(ty, &by_xaes, WHAT) {
            Ok(opened) => assert_eq!(&*opened, body, "an XAES object opens to other bytes"),
            Err(e) => panic!("an XAES object does not open: {e}"),
        }
        assert!(
            s.open(ty, &by_xaes, WHAT).is_err(),
            "XChaCha opened an XAES object"
        );
        assert!(
            x.open(ty, sealed, WHAT).is_err(),
            "XAES opened an XChaCha object"
        );
    }
    for sealer in [s, x] {
        let mut copy = sealed.to_vec();
        assert_eq!(
            sealer.open(ty, sealed, WHAT).ok().as_deref(),
            sealer.open_in_place(ty, &mut copy, WHAT).ok(),
            "open and open_in_place disagree"
        );
    }
    s.open(ty, sealed, WHAT).map_err(refused)?;
    for other in OBJECT_TYPES {
        if other != ty {
            assert!(
                s.open(other, sealed, WHAT).is_err(),
                "an object opened as another type"
            );
        }
    }
    match ty {
        ObjectType::Index | ObjectType::Snapshot | ObjectType::Lock => {
            let plain = open_metadata(s, ty, sealed, WHAT).map_err(refused)?;
            parse_plaintext(ty, &plain, 0)
        }
        ObjectType::PackHeader => {
            let data_len = le32(params).unwrap_or(0);
            let entries =
                pack::parse_header(s, sealed, u64::from(data_len), WHAT).map_err(refused)?;
            check_entries_fill(&entries, u64::from(data_len));
            Ok(())
        }
        ObjectType::DataBlob | ObjectType::TreeBlob => {
            let mut e = blob_entry(params, sealed.len()).ok_or("bad entry")?;
            e.kind = if ty == ObjectType::DataBlob {
                BlobKind::Data
            } else {
                BlobKind::Tree
            };
            let decoded = pack::decode_blob(s, &e, sealed, WHAT);
            let mut copy = sealed.to_vec();
            assert_eq!(
                decoded.as_deref().ok(),
                pack::decode_blob_in_place(s, &e, &mut copy, WHAT)
                    .ok()
                    .as_deref(),
                "decode_blob and decode_blob_in_place disagree"
            );
            let raw = decoded.map_err(refused)?;
            parse_plaintext(ty, &raw, 0)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon's files and inputs

/// The daemon's TOML config, through `Config::parse` (parse and validate); the schedules of
/// what it accepts are evaluated.
pub fn daemon_config(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(refused)?;
    let c = Config::parse(Path::new("fuzz.toml"), text).map_err(refused)?;
    let now = fuzz_now();
    for j in &c.jobs {
        for s in [&j.incremental, &j.full, &j.drill].into_iter().flatten() {
            let _ = s.next_after(now);
        }
    }
    for t in c.repository_tasks.values() {
        for s in [&t.prune, &t.check].into_iter().flatten() {
            let _ = s.next_after(now);
        }
    }
    Ok(())
}

/// Time zones the `schedule` target picks from (`None`: the machine's).
const ZONES: [Option<chrono_tz::Tz>; 5] = [
    None,
    Some(chrono_tz::UTC),
    Some(chrono_tz::Europe::Berlin),
    Some(chrono_tz::America::New_York),
    Some(chrono_tz::Australia::Lord_Howe),
];

/// A cron line: `zone selector (u8) | line`, through `Schedule::parse`, then evaluated: the
/// next occurrences must come in order, each after the last.
pub fn schedule(data: &[u8]) -> Outcome {
    let (&sel, line) = data.split_first().ok_or("empty")?;
    let line = std::str::from_utf8(line).map_err(refused)?;
    let s = Schedule::parse(line, ZONES[usize::from(sel) % ZONES.len()])?;
    let now = fuzz_now();
    let _ = s.next_after(now);
    let ahead = now + chrono::TimeDelta::days(3);
    let runs = s.between(now, ahead, 20);
    for w in runs.windows(2) {
        assert!(w[0] < w[1], "schedule occurrences out of order");
    }
    assert!(
        runs.iter().all(|t| *t > now && *t <= ahead),
        "occurrence outside the window"
    );
    Ok(())
}

/// A start time of `lifeboat maintenance add`, through `maintenance::parse_time`; the time it
/// gives must be usable for a window of a day.
pub fn maintenance_time(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(refused)?;
    let now = fuzz_now();
    let t = maintenance::parse_time(text, now).map_err(refused)?;
    let mut w = Windows::default();
    let _ = w.add(t, Duration::from_secs(86400), "fuzz", None, now);
    Ok(())
}

/// The maintenance windows file (`maintenance.json`), through the state directory's JSON
/// parsing, then everything the daemon and the CLI do with it.
pub fn maintenance_windows(data: &[u8]) -> Outcome {
    let mut w: Windows = state::parse_json(
        data,
        Path::new("maintenance.json"),
        "maintenance windows file",
        "fix it",
    )
    .map_err(refused)?;
    let now = fuzz_now();
    let settings = [
        maintenance::Settings::default(),
        maintenance::Settings {
            announce: Some(vec![
                Duration::from_secs(3600),
                Duration::from_secs(u64::MAX / 2),
            ]),
            final_backup: Duration::from_secs(u64::MAX),
        },
    ];
    for st in &settings {
        let _ = maintenance::due(&mut w, now, st);
    }
    let _ = maintenance::hold(&mut w, "job", true, now);
    let _ = maintenance::first_backup_after(&mut w, "job", now);
    for win in &w.windows {
        let _ = (win.to_json(now), win.describe(), win.leads(None));
    }
    let first = w.windows.first().map(|x| x.id);
    let _ = w.add(now, Duration::from_secs(3600), "fuzz", None, now);
    if let Some(id) = first {
        let _ = w.cancel(id, now);
    }
    Ok(())
}

/// The daemon's state file (`state.json`), through the state directory's JSON parsing; what it
/// accepts must be written and read back.
pub fn daemon_state(data: &[u8]) -> Outcome {
    let s: State = state::parse_json(
        data,
        Path::new("state.json"),
        "daemon state",
        "move it away",
    )
    .map_err(refused)?;
    let bytes = match serde_json::to_vec_pretty(&s) {
        Ok(b) => b,
        Err(e) => panic!("a state that was read does not serialize: {e}"),
    };
    let back: lifeboat::Result<State> =
        state::parse_json(&bytes, Path::new("state.json"), "daemon state", "");
    if let Err(e) = back {
        panic!("a state that was read does not read back after writing: {e}");
    }
    Ok(())
}

/// A request on the daemon's control socket (one JSON line), through its parser, then the
/// time a pause would last until.
pub fn control(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(refused)?;
    let r = control::parse_request(text).map_err(refused)?;
    if let Request::Pause { for_secs, .. } = r {
        let now = fuzz_now();
        assert!(
            control::pause_until(now, for_secs) >= now,
            "a pause that ends before it starts"
        );
    }
    Ok(())
}

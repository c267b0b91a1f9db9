//! The repository: its objects, and the typed operations on them.
//!
//! Every object goes through [`Sealer`] (one seal/open place) and is named by the BLAKE3 hash
//! of its stored bytes, which is checked on every read. Objects are written create-only.

pub mod cache;
pub mod config;
pub mod index;
pub mod key;
pub mod kit;
pub mod lock;
pub mod open;
pub mod pack;
pub mod read;
pub mod seal;
pub mod select;
pub mod snapshot;
pub mod tree;
pub mod walk;

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

pub use config::{ChunkerParams, RepoConfig};
pub use index::{Index, IndexBuilder, IndexEntry};
pub use key::{KdfParams, KeyFile};
pub use lock::{LockInfo, LockSettings, RepoLock, SnapshotRead};
pub use open::{CredentialSource, PasswordEnv, RepoSpec};
pub use pack::{BlobKind, PackEntry};
pub use read::PackBytes;
pub use seal::{Cipher, MasterKey, ObjectType, Sealer};
pub use select::{newest_per_lineage, select_snapshot, Candidate, Lineage, SnapshotFilter};
pub use snapshot::{BackupKind, DamagedSnapshot, Snapshot, SnapshotList, SourceError, Summary};
pub use tree::{Node, NodeKind, Timestamp, Tree, Xattr};
pub use walk::{Damage, Step, TreeWalk};

use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::storage::{FileKind, Storage};

/// Blobs per index object written by a backup (about 3 MiB encoded).
pub const INDEX_SPLIT_BLOBS: usize = 65_536;

/// Largest plaintext of an index object. Prune writes one index naming every pack that stays,
/// so an index grows with the repository (46 bytes per chunk: 4 GiB is ~90 million chunks).
pub const MAX_INDEX_LEN: u64 = 4 << 30;
/// An index's plaintext is mostly BLAKE3 ids, which do not compress: one that inflates to more
/// than this many times its stored size (plus [`INDEX_RATIO_SLACK`]) is not one we wrote. This
/// bounds what a small hostile index can make a reader allocate.
pub const MAX_INDEX_RATIO: u64 = 64;
/// See [`MAX_INDEX_RATIO`].
pub const INDEX_RATIO_SLACK: u64 = 64 << 10;
/// Largest plaintext of a snapshot object (JSON; its list of unreadable files is what grows).
pub const MAX_SNAPSHOT_LEN: u64 = 256 << 20;
/// Largest plaintext of a lock object (JSON of a few hundred bytes).
pub const MAX_LOCK_LEN: u64 = 1 << 20;

/// How a new key's password is stretched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KdfSetting {
    /// Argon2id at 64 MiB, with iterations measured to take about half a second here.
    Calibrate,
    /// Explicit Argon2id parameters.
    Fixed {
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
    },
}

impl KdfSetting {
    /// The cheapest Argon2id parameters the format accepts: for tests, fixtures and benchmarks
    /// that make many repositories, never for a key that protects data.
    pub const CHEAPEST: KdfSetting = KdfSetting::Fixed {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn params(&self) -> Result<KdfParams> {
        match self {
            KdfSetting::Calibrate => KdfParams::calibrate(Duration::from_millis(500)),
            KdfSetting::Fixed {
                memory_kib,
                iterations,
                parallelism,
            } => KdfParams::new(*memory_kib, *iterations, *parallelism),
        }
    }
}

/// Options of `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// zstd level, 1 to 22.
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Encrypt (the default); `false` is `--insecure-no-encryption`.
    pub encryption: bool,
    /// The cipher of an encrypted repository; `None`: the faster one on this machine
    /// ([`Cipher::preferred`]).
    pub cipher: Option<Cipher>,
    /// Password stretching of the first key.
    pub kdf: KdfSetting,
    /// Chunking parameters (fixed for the repository's life).
    pub chunker: ChunkerParams,
    /// The master key of an encrypted repository, instead of a new random one: one made with
    /// [`MasterKey::sharing_ids_with`] another repository's (`init --copy-params-from`), so
    /// that copies between the two deduplicate without hashing again. Not used by an
    /// unencrypted repository (its ids are plain BLAKE3).
    pub master: Option<MasterKey>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            compression_level: 3,
            pack_size: 16 << 20,
            encryption: true,
            cipher: None,
            kdf: KdfSetting::Calibrate,
            chunker: ChunkerParams::default(),
            master: None,
        }
    }
}

/// Master keys that passwords opened earlier in this process, so a long-running process
/// (the daemon, which opens its repositories for every scheduled run) pays the key derivation
/// (Argon2id: about half a second of CPU and 64 MiB) once per repository, not once per run.
///
/// An entry is used only for the same repository (config id), the same password (compared
/// by a BLAKE3 MAC under a key of this process, so the password itself is not kept) and while
/// the key object it opened is still listed in the repository: a password changed in its file
/// derives again, and `lifeboat key remove` of that key object stops the next run from
/// opening with it. Master keys are wiped from memory when the cache is dropped.
pub struct KeyCache {
    mac_key: zeroize::Zeroizing<[u8; 32]>,
    entries: std::sync::Mutex<HashMap<String, CachedKey>>,
    hits: std::sync::atomic::AtomicU64,
}

struct CachedKey {
    password_mac: [u8; 32],
    key_id: String,
    master: MasterKey,
}

impl Default for KeyCache {
    fn default() -> Self {
        let mut mac_key = zeroize::Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, mac_key.as_mut());
        KeyCache {
            mac_key,
            entries: Default::default(),
            hits: Default::default(),
        }
    }
}

impl KeyCache {
    fn password_mac(&self, password: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.mac_key, password).as_bytes()
    }

    fn lookup(
        &self,
        repo_id: &str,
        password: &[u8],
        keys: &[(String, u64)],
    ) -> Option<(MasterKey, String)> {
        let mac = self.password_mac(password);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(repo_id)?;
        // Constant time is not needed here (the MAC key never leaves the process), but
        // costs nothing.
        let same = blake3::Hash::from(e.password_mac) == blake3::Hash::from(mac);
        if !same || !keys.iter().any(|(name, _)| *name == e.key_id) {
            return None;
        }
        self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(key = %e.key_id, "repository key from this process's key cache");
        Some((e.master.clone(), e.key_id.clone()))
    }

    fn remember(&self, repo_id: &str, password: &[u8], key_id: &str, master: &MasterKey) {
        let entry = CachedKey {
            password_mac: self.password_mac(password),
            key_id: key_id.to_owned(),
            master: master.clone(),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(repo_id.to_owned(), entry);
    }

    /// How many opens used a remembered key (for tests and logs).
    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What opens an encrypted repository.
pub enum Credentials {
    /// A password of one of the key objects.
    Password(Zeroizing<Vec<u8>>),
    /// The master key itself, from a recovery kit.
    MasterKey(MasterKey),
}

/// An open repository.
#[derive(Debug, Clone)]
pub struct Repository {
    storage: Arc<dyn Storage>,
    config: RepoConfig,
    sealer: Sealer,
    master: Option<Arc<MasterKey>>,
    /// The key object that opened the repository.
    key_id: Option<String>,
    /// Local copies of metadata objects (cloud repositories).
    cache: Option<Arc<cache::MetadataCache>>,
    /// Lock timings of the operations on it ([`RepoSpec::lock`]).
    lock: LockSettings,
}

fn this_host() -> (String, String) {
    let host = snapshot::local_host();
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    (host, user)
}

impl Repository {
    /// Creates a repository in an empty location. `password` is required when encrypting.
    pub fn init(
        storage: Arc<dyn Storage>,
        opts: &InitOptions,
        password: Option<&[u8]>,
    ) -> Result<Self> {
        let cipher = opts
            .encryption
            .then(|| opts.cipher.unwrap_or_else(Cipher::preferred));
        let mut config = RepoConfig::new(opts.compression_level, opts.pack_size, cipher)?;
        config.chunker = opts.chunker;
        if storage.has_config()? {
            return Err(Error::RepositoryExists {
                location: storage.location(),
                reason: "a repository already exists there".into(),
            });
        }
        let (sealer, master, key) = if let Some(cipher) = cipher {
            let password = password
                .ok_or_else(|| Error::Invalid("an encrypted repository needs a password".into()))?;
            let master = match &opts.master {
                Some(m) => m.clone(),
                None => MasterKey::random(),
            };
            let (host, user) = this_host();
            let key = KeyFile::seal(
                &master,
                password,
                opts.kdf.params()?,
                &config.id,
                &host,
                &user,
            )?;
            let sealer = Sealer::encrypted_with(&master, cipher);
            (sealer, Some(Arc::new(master)), Some(key))
        } else {
            (Sealer::plain(), None, None)
        };
        storage.create_layout()?;
        config.storage_create_only = Some(storage.probe_create_only()?);
        if config.storage_create_only == Some(false) {
            tracing::warn!(
                location = %storage.location(),
                "the storage ignores create-only writes (If-None-Match); data stays safe because objects are content-addressed, but concurrent writers cannot be coordinated by it"
            );
        }
        if let Some(mac) = sealer.config_mac(&config.mac_input()) {
            config.mac = Some(mac);
        }
        // The key first, the config last: a config marks a complete repository.
        let key_id = match key {
            Some(k) => {
                let bytes = k.to_bytes();
                let name = blake3::hash(&bytes).to_hex().to_string();
                storage.create(FileKind::Key, &name, &bytes)?;
                Some(name)
            }
            None => None,
        };
        let bytes = config.to_bytes();
        // `false` is someone else's config, or ours: an upload retried after its first
        // attempt landed unacknowledged finds the very bytes it sent (the config carries a
        // random id, so no other init writes them).
        if !storage.create(FileKind::Config, "config", &bytes)?
            && storage.read(FileKind::Config, "config").ok().as_deref() != Some(&bytes[..])
        {
            return Err(Error::RepositoryExists {
                location: storage.location(),
                reason: "a repository already exists there".into(),
            });
        }
        Ok(Repository {
            storage,
            config,
            sealer,
            master,
            key_id,
            cache: None,
            lock: LockSettings::default(),
        })
    }

    /// Opens an existing repository; `credentials` is called only if it is encrypted.
    pub fn open(
        storage: Arc<dyn Storage>,
        credentials: impl FnOnce() -> Result<Credentials>,
    ) -> Result<Self> {
        Self::open_inner(storage, credentials, None)
    }

    /// Like [`Repository::open`], for a process that opens the same repository again and
    /// again (the daemon): a password that opened a key object before opens it again without
    /// the key derivation, while that key object is still in the repository.
    pub fn open_with_keys(
        storage: Arc<dyn Storage>,
        credentials: impl FnOnce() -> Result<Credentials>,
        keys: &KeyCache,
    ) -> Result<Self> {
        Self::open_inner(storage, credentials, Some(keys))
    }

    fn open_inner(
        storage: Arc<dyn Storage>,
        credentials: impl FnOnce() -> Result<Credentials>,
        key_cache: Option<&KeyCache>,
    ) -> Result<Self> {
        let location = storage.location();
        let bytes = match storage.read(FileKind::Config, "config") {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => {
                return Err(Error::NoRepository {
                    location,
                    reason: "there is no config object".into(),
                })
            }
            Err(e) => return Err(e),
        };
        let config = RepoConfig::from_bytes(&bytes, &location)?;
        let keys = storage.list(FileKind::Key)?;
        if !config.is_encrypted() {
            if !keys.is_empty() {
                return Err(Error::corrupt(
                    "config",
                    "it says the repository is unencrypted, but the repository has keys (corrupt or tampered); refusing to write unencrypted data",
                ));
            }
            return Ok(Repository {
                storage,
                config,
                sealer: Sealer::plain(),
                master: None,
                key_id: None,
                cache: None,
                lock: LockSettings::default(),
            });
        }
        let (master, key_id, via_kit) = match credentials()? {
            Credentials::MasterKey(m) => (m, None, true),
            Credentials::Password(password) => {
                let mut damaged = Vec::new();
                let cached = key_cache.and_then(|c| c.lookup(&config.id, &password, &keys));
                // With a remembered key, no key object is read, nothing derived.
                let to_try: &[(String, u64)] = if cached.is_some() { &[] } else { &keys };
                let mut found = None;
                for (name, _) in to_try {
                    let what = FileKind::Key.path(name);
                    let key = storage
                        .read(FileKind::Key, name)
                        .and_then(|b| {
                            if blake3::hash(&b).to_hex().as_str() != name {
                                return Err(Error::corrupt(
                                    &what,
                                    "content does not match its name",
                                ));
                            }
                            KeyFile::from_bytes(&b, &what)
                        })
                        .and_then(|k| k.open(&password, &config.id, &what));
                    match key {
                        Ok(Some(m)) => {
                            found = Some((m, name.clone()));
                            break;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::debug!(key = %what, error = %e, "unusable key object");
                            damaged.push(what);
                        }
                    }
                }
                if let (Some(c), Some((m, name))) = (key_cache, &found) {
                    c.remember(&config.id, &password, name, m);
                }
                match cached.or(found) {
                    Some((m, name)) => (m, Some(name), false),
                    None => {
                        return Err(Error::WrongPassword {
                            location,
                            damaged_keys: damaged,
                        })
                    }
                }
            }
        };
        // Validated when read: an encrypted config names a cipher this version knows.
        let cipher = config.cipher().ok_or_else(|| {
            Error::corrupt(
                "config",
                format!("unknown encryption scheme {:?}", config.encryption),
            )
        })?;
        let sealer = Sealer::encrypted_with(&master, cipher);
        if config.mac != sealer.config_mac(&config.mac_input()) {
            let reason = if via_kit {
                "does not match the recovery kit: the kit belongs to another repository, or the config was tampered with"
            } else {
                "failed authentication (corrupt or tampered)"
            };
            return Err(Error::corrupt("config", reason));
        }
        Ok(Repository {
            storage,
            config,
            sealer,
            master: Some(Arc::new(master)),
            key_id,
            cache: None,
            lock: LockSettings::default(),
        })
    }

    /// Uses a local metadata cache under `base` (for repositories not on a local disk;
    /// a local repository is its own cache).
    pub fn with_cache(mut self, base: Option<&std::path::Path>) -> Self {
        self.cache = match base {
            Some(b) if self.storage.local_path().is_none() => {
                cache::MetadataCache::open(b, &self.config.id).map(Arc::new)
            }
            _ => None,
        };
        self
    }

    /// Uses `settings` for the locks its operations take.
    pub fn with_lock_settings(mut self, settings: LockSettings) -> Self {
        self.lock = settings;
        self
    }

    /// The lock timings of its operations (the defaults unless [`RepoSpec::lock`] says).
    pub fn lock_settings(&self) -> LockSettings {
        self.lock
    }

    /// The master key (encrypted repositories).
    pub fn master_key(&self) -> Option<&MasterKey> {
        self.master.as_deref()
    }

    /// The key object that opened the repository (not when opened with a recovery kit).
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// Adds a key object for `password`; returns its id.
    pub fn add_key(&self, password: &[u8], kdf: &KdfSetting) -> Result<String> {
        let master = self.master.as_ref().ok_or_else(|| {
            Error::Invalid("the repository is not encrypted: it has no keys".into())
        })?;
        let (host, user) = this_host();
        let key = KeyFile::seal(
            master,
            password,
            kdf.params()?,
            &self.config.id,
            &host,
            &user,
        )?;
        let bytes = key.to_bytes();
        let name = blake3::hash(&bytes).to_hex().to_string();
        self.storage.create(FileKind::Key, &name, &bytes)?;
        Ok(name)
    }

    /// Every key object, parsed (or why it could not be).
    pub fn list_keys(&self) -> Result<Vec<(String, Result<KeyFile>)>> {
        let mut out = Vec::new();
        for (name, _) in self.storage.list(FileKind::Key)? {
            let what = FileKind::Key.path(&name);
            let key = self
                .storage
                .read(FileKind::Key, &name)
                .and_then(|b| KeyFile::from_bytes(&b, &what));
            out.push((name, key));
        }
        Ok(out)
    }

    /// Removes the key object whose id starts with `prefix`; refuses to remove the key in use
    /// or the last key.
    pub fn remove_key(&self, prefix: &str) -> Result<String> {
        let keys = self.storage.list(FileKind::Key)?;
        let matches: Vec<&String> = keys
            .iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(prefix))
            .collect();
        let name = match matches.as_slice() {
            [] => return Err(Error::Invalid(format!("no key matches {prefix:?}"))),
            [one] => (*one).clone(),
            _ => {
                return Err(Error::Invalid(format!(
                    "{prefix:?} matches several keys; give more characters"
                )))
            }
        };
        if Some(name.as_str()) == self.key_id() {
            return Err(Error::Invalid(
                "refusing to remove the key in use: open the repository with another password to remove this one".into(),
            ));
        }
        if keys.len() <= 1 {
            return Err(Error::Invalid("refusing to remove the last key".into()));
        }
        self.storage.remove(FileKind::Key, &name)?;
        Ok(name)
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The repository's parameters.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The seal/open place.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Seals and stores a metadata object; returns its name.
    fn save_metadata(&self, kind: FileKind, ty: ObjectType, plain: &[u8]) -> Result<[u8; 32]> {
        let cap = metadata_cap(ty).unwrap_or(0);
        if plain.len() as u64 > cap {
            return Err(Error::Invalid(format!(
                "a {} object of {} bytes is larger than the {} bytes a reader accepts",
                ty.name(),
                plain.len(),
                cap
            )));
        }
        let mut body = Vec::with_capacity(plain.len() / 2 + 16);
        body.push(1u8); // zstd
        let compressed =
            zstd::bulk::compress(plain, self.config.compression_level).map_err(|cause| {
                Error::Compression {
                    what: format!("a new {} object", ty.name()),
                    cause,
                }
            })?;
        body.extend_from_slice(&compressed);
        let stored = self.sealer.seal(ty, &body);
        let id = *blake3::hash(&stored).as_bytes();
        let name = hex::encode(id);
        // Verify before storing: it must open back to the same plaintext.
        let back = self.open_metadata(ty, &stored, &kind.path(&name))?;
        if back != plain {
            return Err(Error::corrupt(
                kind.path(&name),
                "does not decode to what was written",
            ));
        }
        self.storage.create(kind, &name, &stored)?;
        if let Some(c) = &self.cache {
            c.put(kind, &name, &stored);
        }
        Ok(id)
    }

    fn open_metadata(&self, ty: ObjectType, stored: &[u8], what: &str) -> Result<Vec<u8>> {
        open_metadata(&self.sealer, ty, stored, what)
    }

    /// Reads a metadata object, verifying it against its name.
    fn load_metadata(&self, kind: FileKind, ty: ObjectType, name: &str) -> Result<Vec<u8>> {
        let what = kind.path(name);
        let stored = match self.cache.as_ref().and_then(|c| c.get(kind, name)) {
            Some(cached) => cached,
            None => {
                let fetched = self.storage.read(kind, name)?;
                if let Some(c) = &self.cache {
                    if blake3::hash(&fetched).to_hex().as_str() == name {
                        c.put(kind, name, &fetched);
                    }
                }
                fetched
            }
        };
        if blake3::hash(&stored).to_hex().as_str() != name {
            return Err(Error::corrupt(
                &what,
                "content does not match its name (damaged)",
            ));
        }
        self.open_metadata(ty, &stored, &what)
    }

    /// Stores a finished pack; returns its id.
    pub fn save_pack(&self, bytes: &[u8]) -> Result<PackId> {
        let id = PackId::hash(bytes);
        self.storage.create(FileKind::Pack, &id.to_hex(), bytes)?;
        Ok(id)
    }

    /// [`Repository::save_pack`] of a pack the caller hands over (no copy on its way to a
    /// cloud store); returns its id.
    pub fn save_pack_owned(&self, bytes: bytes::Bytes) -> Result<PackId> {
        let id = PackId::hash(&bytes);
        self.storage
            .create_owned(FileKind::Pack, &id.to_hex(), bytes)?;
        Ok(id)
    }

    /// Where a pack may be built as a file instead of in memory (local repositories).
    pub fn pack_spool_dir(&self) -> Option<std::path::PathBuf> {
        self.storage.spool_dir(FileKind::Pack)
    }

    /// Stores a pack built in [`Repository::pack_spool_dir`] and finished.
    pub fn publish_pack(&self, pack: &pack::SpooledPack) -> Result<()> {
        self.storage
            .publish(FileKind::Pack, &pack.id.to_hex(), &pack.path)?;
        Ok(())
    }

    /// Stores index objects naming these packs, one per [`INDEX_SPLIT_BLOBS`] blobs or so: the
    /// encoded, compressed and sealed copies of an index object are made one object at a time,
    /// so a backup of millions of chunks does not hold three more copies of all its entries.
    pub fn save_indexes(&self, packs: &[(PackId, Vec<PackEntry>)]) -> Result<Vec<IndexId>> {
        let mut ids = Vec::new();
        let mut start = 0;
        while start < packs.len() {
            let mut end = start;
            let mut blobs = 0;
            while end < packs.len() && (end == start || blobs < INDEX_SPLIT_BLOBS) {
                blobs += packs[end].1.len();
                end += 1;
            }
            ids.push(self.save_index(&packs[start..end])?);
            start = end;
        }
        Ok(ids)
    }

    /// Stores an index object naming these packs.
    pub fn save_index(&self, packs: &[(PackId, Vec<PackEntry>)]) -> Result<IndexId> {
        let plain = index::encode(packs);
        self.save_metadata(FileKind::Index, ObjectType::Index, &plain)
            .map(IndexId)
    }

    /// Loads and merges every index object. Packs that an index names but storage does not
    /// have (lost, or deleted by hand; `check` reports them) come last, so that a blob stored
    /// twice is read from the copy that exists; a blob only they hold still names its missing
    /// pack when it is read. A backup uses [`Repository::load_index_of_present_packs`].
    pub fn load_index(&self) -> Result<Index> {
        self.load_index_with(true)
    }

    /// Like [`Repository::load_index`], but without the packs missing from storage: what a
    /// backup deduplicates against, so that it stores their data again instead of
    /// referencing the missing copy.
    pub fn load_index_of_present_packs(&self) -> Result<Index> {
        self.load_index_with(false)
    }

    fn load_index_with(&self, keep_missing: bool) -> Result<Index> {
        let mut idx = Index::builder();
        // Packs are written before the index objects that name them: listed first, every
        // pack an index read below names is in this listing unless it is missing (or was
        // written meanwhile, which the second listing below tells apart).
        let present = self.present_packs()?;
        let mut unlisted: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
        let names = self.storage.list(FileKind::Index)?;
        if let Some(c) = &self.cache {
            c.retain(
                FileKind::Index,
                &names.iter().map(|(n, _)| n.clone()).collect(),
            );
        }
        // Index objects are read, checked, decrypted and decoded on several threads (the
        // larger part of opening a big repository); this thread merges them in listing order,
        // so the first location of a blob listed twice does not depend on thread timing.
        crate::pool::run(
            crate::pool::workers(0, 1),
            &names,
            || Ok(()),
            |(), (name, _)| self.load_index_file(name),
            |packs| {
                for (pack, entries) in packs {
                    if present.contains(&pack) {
                        idx.add_pack(pack, &entries);
                    } else {
                        unlisted.push((pack, entries));
                    }
                }
                Ok(())
            },
        )?;
        if !unlisted.is_empty() {
            let present = self.present_packs()?;
            let mut missing = Vec::new();
            let mut gone = Vec::new();
            for (pack, entries) in unlisted {
                if present.contains(&pack) {
                    idx.add_pack(pack, &entries);
                } else {
                    missing.push(FileKind::Pack.path(&pack.to_hex()));
                    gone.push((pack, entries));
                }
            }
            if keep_missing {
                for (pack, entries) in gone {
                    idx.add_pack(pack, &entries);
                }
            }
            missing.sort();
            missing.dedup();
            if !missing.is_empty() {
                tracing::warn!(
                    count = missing.len(),
                    first = %missing[0],
                    "packs named by the index are missing from storage: what only they held cannot be read, and a backup stores it again; run `lifeboat check` to see what is affected"
                );
            }
        }
        let idx = idx.finish();
        if let Some(c) = &self.cache {
            c.retain(
                FileKind::Pack,
                &idx.packs().iter().map(PackId::to_hex).collect(),
            );
        }
        Ok(idx)
    }

    /// The packs in storage (names that are not pack ids are no packs).
    fn present_packs(&self) -> Result<std::collections::HashSet<PackId>> {
        Ok(self
            .storage
            .list(FileKind::Pack)?
            .into_iter()
            .filter_map(|(n, _)| PackId::from_hex(&n).ok())
            .collect())
    }

    /// Reads one index object, pack by pack, without merging.
    pub fn load_index_file(&self, name: &str) -> Result<Vec<(PackId, Vec<PackEntry>)>> {
        let plain = self.load_metadata(FileKind::Index, ObjectType::Index, name)?;
        index::decode(&plain, &FileKind::Index.path(name))
    }

    /// Stores a snapshot (the commit point of a backup).
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        self.save_metadata(FileKind::Snapshot, ObjectType::Snapshot, &snap.to_bytes())
            .map(SnapshotId)
    }

    /// Loads one snapshot.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let name = id.to_hex();
        let plain = self.load_metadata(FileKind::Snapshot, ObjectType::Snapshot, &name)?;
        Snapshot::from_bytes(&plain, &FileKind::Snapshot.path(&name))
    }

    /// What `snapshots/` holds: every readable snapshot, oldest first, and each object that
    /// is damaged (content that fails verification, or a name that is no snapshot id). A
    /// snapshot removed while listing (a concurrent forget) is left out; a storage fault is an
    /// error (it says nothing about damage).
    pub fn list_snapshots(&self) -> Result<SnapshotList> {
        let mut list = SnapshotList::default();
        for (name, _) in self.storage.list(FileKind::Snapshot)? {
            let Ok(id) = SnapshotId::from_hex(&name) else {
                list.damaged.push(DamagedSnapshot::new(
                    &name,
                    "the name is not a snapshot id (a stray or damaged file)",
                ));
                continue;
            };
            match self.load_snapshot(&id) {
                Ok(s) => list.snapshots.push((id, s)),
                Err(Error::Corrupt { reason, .. }) => {
                    list.damaged.push(DamagedSnapshot::new(&name, reason));
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        list.snapshots
            .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(list)
    }

    /// Every readable snapshot, oldest first; damaged snapshot objects are left out with a
    /// warning each (see [`SnapshotList`]; prune uses [`SnapshotList::complete`] instead).
    pub fn load_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let list = self.list_snapshots()?;
        list.warn();
        Ok(list.snapshots)
    }

    /// Selects a snapshot: a full id, a unique id prefix, or `latest` (the newest of the one
    /// lineage `filter` leaves, see [`select_snapshot`]), among the readable snapshots; a
    /// selector naming a damaged object is refused saying so
    /// ([`SnapshotList::check_selector`]).
    pub fn find_snapshot(
        &self,
        selector: &str,
        filter: &SnapshotFilter,
    ) -> Result<(SnapshotId, Snapshot)> {
        let list = self.list_snapshots()?;
        list.check_selector(selector)?;
        select_snapshot(list.snapshots, selector, filter)
    }

    /// Keeps a copy of a pack of directory listings just written (write-through cache).
    pub fn cache_tree_pack(&self, id: &PackId, bytes: &[u8]) {
        if let Some(c) = &self.cache {
            c.put(FileKind::Pack, &id.to_hex(), bytes);
        }
    }

    /// Reads a directory listing.
    pub fn load_tree(&self, index: &Index, id: &BlobId) -> Result<Tree> {
        match index.get(id) {
            Some(e) if e.kind == BlobKind::Tree => {}
            Some(_) => {
                return Err(Error::corrupt(
                    format!("tree {id}"),
                    "a directory listing is expected but the index says file data (corrupt or tampered)",
                ))
            }
            None => return Err(Error::MissingBlob { id: id.to_hex() }),
        }
        let raw = self.read_blob(index, id)?;
        Tree::from_bytes(&raw, &format!("directory listing {id}"))
    }
}

/// The hard bound on the plaintext of a metadata object of type `ty` (`None`: not a metadata
/// type).
fn metadata_cap(ty: ObjectType) -> Option<u64> {
    match ty {
        ObjectType::Index => Some(MAX_INDEX_LEN),
        ObjectType::Snapshot => Some(MAX_SNAPSHOT_LEN),
        ObjectType::Lock => Some(MAX_LOCK_LEN),
        ObjectType::DataBlob | ObjectType::TreeBlob | ObjectType::PackHeader => None,
    }
}

/// Opens a stored metadata object (index, snapshot or lock: `seal(type, compression u8 |
/// body)`) into its plaintext; `what` names it in errors.
///
/// The plaintext is bounded before it is allocated, against decompression bombs: by
/// [`MAX_INDEX_LEN`], [`MAX_SNAPSHOT_LEN`] or [`MAX_LOCK_LEN`], and for an index also by
/// [`MAX_INDEX_RATIO`] times its stored size. [`Repository`] reads every metadata object through
/// this; it is public as the pure bytes-to-plaintext step for tests and the fuzz targets.
pub fn open_metadata(
    sealer: &Sealer,
    ty: ObjectType,
    stored: &[u8],
    what: &str,
) -> Result<Vec<u8>> {
    let cap = metadata_cap(ty)
        .ok_or_else(|| Error::Invalid(format!("a {} is not a metadata object", ty.name())))?;
    let body = sealer.open(ty, stored, what)?;
    let body: &[u8] = &body;
    let (&compression, payload) = body
        .split_first()
        .ok_or_else(|| Error::corrupt(what, "empty object"))?;
    let limit = match ty {
        ObjectType::Index => cap.min(
            (payload.len() as u64)
                .saturating_mul(MAX_INDEX_RATIO)
                .saturating_add(INDEX_RATIO_SLACK),
        ),
        _ => cap,
    };
    let too_large = || {
        Error::corrupt(
            what,
            format!(
                "{} is larger than the {limit} bytes a reader accepts (damaged, or a decompression bomb)",
                ty.name()
            ),
        )
    };
    match compression {
        0 if payload.len() as u64 > limit => Err(too_large()),
        0 => Ok(payload.to_vec()),
        1 => decompress_bounded(payload, limit, what)?.ok_or_else(too_large),
        other => Err(Error::corrupt(what, format!("unknown compression {other}"))),
    }
}

/// Decompresses zstd `payload` into at most `limit` bytes; `None` when there are more. Memory
/// grows with the output actually produced (never past `limit`), not with any size the
/// payload declares.
fn decompress_bounded(payload: &[u8], limit: u64, what: &str) -> Result<Option<Vec<u8>>> {
    let fail = |e: std::io::Error| Error::corrupt(what, format!("does not decompress: {e}"));
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut decoder = zstd::stream::read::Decoder::with_buffer(payload).map_err(fail)?;
    let mut out: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => return Ok(Some(out)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(e)),
        };
        if n > limit - out.len() {
            return Ok(None);
        }
        if out.capacity() - out.len() < n {
            // Double, but never past the limit (reserve_exact: no speculative extra).
            let want = (out.capacity().saturating_mul(2))
                .max(out.len() + n)
                .min(limit);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored metadata object of an unencrypted repository whose body is `plain` compressed.
    fn bomb(ty: ObjectType, plain: &[u8]) -> Vec<u8> {
        let mut body = vec![1u8];
        body.extend_from_slice(&zstd::bulk::compress(plain, 19).expect("compress"));
        Sealer::plain().seal(ty, &body)
    }

    #[test]
    fn a_lock_that_decompresses_past_its_bound_is_refused() {
        // A 2 MiB lock compresses to a few hundred bytes; locks were bounded only by 4 GiB,
        // like every metadata object, so a tiny object could make a reader allocate 4 GiB.
        let stored = bomb(ObjectType::Lock, &vec![b' '; 2 << 20]);
        assert!(stored.len() < 1000);
        let err = open_metadata(&Sealer::plain(), ObjectType::Lock, &stored, "locks/x")
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("larger than") && err.contains("locks/x"),
            "{err}"
        );
        let fine = bomb(ObjectType::Lock, &vec![b' '; 1000]);
        assert_eq!(
            open_metadata(&Sealer::plain(), ObjectType::Lock, &fine, "l")
                .expect("open")
                .len(),
            1000
        );
    }

    #[test]
    fn an_index_that_inflates_far_beyond_its_size_is_refused() {
        // Index plaintext is mostly hashes and does not compress; 16 MiB from a few hundred
        // bytes is a decompression bomb, not an index.
        let stored = bomb(ObjectType::Index, &vec![0u8; 16 << 20]);
        let err = open_metadata(&Sealer::plain(), ObjectType::Index, &stored, "index/x")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("larger than"), "{err}");
        // A real index of many entries opens, however large.
        let packs: Vec<(PackId, Vec<PackEntry>)> = (0..20u32)
            .map(|p| {
                let entries = (0..2000u32)
                    .map(|i| PackEntry {
                        kind: BlobKind::Data,
                        compressed: true,
                        id: BlobId::hash(&(p * 2000 + i).to_le_bytes()),
                        offset: i * 100,
                        stored_len: 100,
                        raw_len: 300,
                    })
                    .collect();
                (PackId::hash(&p.to_le_bytes()), entries)
            })
            .collect();
        let plain = index::encode(&packs);
        let stored = bomb(ObjectType::Index, &plain);
        let back = open_metadata(&Sealer::plain(), ObjectType::Index, &stored, "i").expect("open");
        assert_eq!(back, plain);
    }

    #[test]
    fn the_key_cache_skips_the_derivation_only_for_the_same_password_and_a_key_still_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            kdf: KdfSetting::CHEAPEST,
            ..InitOptions::default()
        };
        let storage: Arc<dyn Storage> =
            Arc::new(crate::storage::LocalStorage::new(dir.path().join("r")));
        let first = Repository::init(storage.clone(), &opts, Some(b"pw-a")).expect("init");
        let key_a = first.key_id().expect("key").to_owned();
        let key_b = first.add_key(b"pw-b", &KdfSetting::CHEAPEST).expect("add");
        let cache = KeyCache::default();
        let pw = |p: &'static [u8]| move || Ok(Credentials::Password(Zeroizing::new(p.to_vec())));
        let open = |p: &'static [u8]| Repository::open_with_keys(storage.clone(), pw(p), &cache);

        // First open derives, the second is served from the cache; both open the same key.
        let a1 = open(b"pw-a").expect("open a");
        assert_eq!(cache.hits(), 0);
        let a2 = open(b"pw-a").expect("open a again");
        assert_eq!(cache.hits(), 1);
        assert_eq!(a2.key_id(), Some(key_a.as_str()));
        let blob = a1.sealer().seal(ObjectType::DataBlob, b"content");
        assert_eq!(
            a2.sealer()
                .open(ObjectType::DataBlob, &blob, "x")
                .expect("the cached key is the master key")
                .as_ref(),
            b"content"
        );

        // A wrong password is not let in by the cache, and does not evict the entry.
        assert!(matches!(open(b"wrong"), Err(Error::WrongPassword { .. })));
        // Another password (the file was changed) derives again, with its own key object.
        let b = open(b"pw-b").expect("open b");
        assert_eq!(b.key_id(), Some(key_b.as_str()));
        assert_eq!(cache.hits(), 1);

        // Once its key object is removed, password a opens nothing, cache or not.
        b.remove_key(&key_a).expect("remove key a");
        assert!(matches!(open(b"pw-a"), Err(Error::WrongPassword { .. })));
        assert_eq!(cache.hits(), 1);
        open(b"pw-b").expect("open b again");
        assert_eq!(cache.hits(), 2);
    }

    #[test]
    fn a_large_index_is_split_into_objects_that_load_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            kdf: KdfSetting::CHEAPEST,
            ..InitOptions::default()
        };
        let storage = std::sync::Arc::new(crate::storage::LocalStorage::new(dir.path().join("r")));
        let repo = Repository::init(storage, &opts, Some(b"pw")).expect("init");
        let per_pack = 40_000u32;
        let packs: Vec<(PackId, Vec<PackEntry>)> = (0..3u32)
            .map(|p| {
                let entries = (0..per_pack)
                    .map(|i| PackEntry {
                        kind: BlobKind::Data,
                        compressed: false,
                        id: BlobId::hash(&(p * per_pack + i).to_le_bytes()),
                        offset: i * 10,
                        stored_len: 10,
                        raw_len: 10,
                    })
                    .collect();
                (PackId::hash(&p.to_le_bytes()), entries)
            })
            .collect();
        // Loading leaves out packs missing from storage: these three are there (as stand-ins).
        for (pack, _) in &packs {
            repo.storage()
                .create(FileKind::Pack, &pack.to_hex(), b"stand-in")
                .expect("create pack");
        }
        // 40k + 40k reaches the split size: packs 0 and 1 in one object, pack 2 in the next.
        let ids = repo.save_indexes(&packs).expect("save");
        assert_eq!(ids.len(), 2);
        assert_eq!(
            repo.load_index_file(&ids[0].to_hex()).expect("first").len(),
            2
        );
        let index = repo.load_index().expect("load");
        assert_eq!(index.len(), 3 * per_pack as usize);
        assert_eq!(index.packs().len(), 3);
        assert!(repo.save_indexes(&[]).expect("nothing").is_empty());
    }
}

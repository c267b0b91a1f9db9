//! The parallel part of a backup: reading and chunking files, compressing new chunks, filling
//! packs and storing them.
//!
//! ```text
//! file jobs ─▶ file workers (read, FastCDC, BLAKE3, dedup) ─▶ new chunks ─▶ compressors
//!          (zstd, seal, verify) ─▶ pack builders ─▶ full packs ─▶ uploaders (store, fsync)
//! ```
//!
//! Every channel is bounded except the job queue (whose length the walker's event queue bounds),
//! so memory stays flat whatever the size of files or of the dataset. On the first error, the
//! pipeline is marked failed: workers drain their queues without doing work, and the error is
//! handed to the caller, which writes no snapshot. Packs already stored stay unreferenced until
//! a later backup reuses them or prune removes them.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::chunker::Chunker;
use super::dirfd::{self, DirFd, Meta};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::progress::Progress;
use crate::repo::config::ChunkerParams;
use crate::repo::pack::{encode_blob, EncodedBlob, PackBuilder, SpoolPack};
use crate::repo::{BlobKind, Index, PackEntry, Repository, Xattr, INDEX_SPLIT_BLOBS};

/// A chunk on its way to a pack.
pub struct ChunkJob {
    pub kind: BlobKind,
    pub id: BlobId,
    pub data: Vec<u8>,
}

/// A file to read: `name` in the open directory `dir`, the inode its listing recorded.
pub struct FileJob {
    pub dir: DirFd,
    pub name: Vec<u8>,
    pub inode: u64,
    pub reply: Sender<FileOutcome>,
}

/// What reading a file gave.
#[derive(Debug)]
pub enum FileOutcome {
    /// Content chunks, size read, and the file's metadata at the time of the read (`fstat`
    /// of the file opened).
    Read {
        content: Vec<BlobId>,
        size: u64,
        meta: Meta,
        /// The file kept changing while it was read; stored as of the last read.
        unstable: bool,
        /// The file opened is not the one listed (replaced, e.g. by `mv`, in between): it is
        /// stored as found, with its own metadata and these extended attributes.
        replaced: Option<Vec<Xattr>>,
    },
    /// The file could not be read.
    Failed(String),
}

/// Stored packs not yet in an index object, and how many blobs they hold.
#[derive(Default)]
struct Written {
    packs: Vec<(PackId, Vec<PackEntry>)>,
    blobs: usize,
}

/// State shared by all threads of one backup.
pub struct Shared {
    pub repo: Repository,
    pub index: Arc<Index>,
    pub progress: Arc<Progress>,
    /// The blobs this run has claimed (see [`Claimed`]).
    seen: Mutex<Claimed>,
    /// The open data packs: one per compressor when they are spooled (past the first pack's
    /// worth, a compressor appends to one no other is writing to, so a direct write, which
    /// waits for the device, holds up no other compressor);
    /// one shared pack in memory otherwise (each would be another pack of memory).
    data_packers: Vec<Mutex<OpenPack>>,
    /// Bytes of data blobs added to packs so far.
    data_appended: std::sync::atomic::AtomicUsize,
    tree_packer: Mutex<OpenPack>,
    /// Buffers of stored packs, reused for the next packs: allocating and freeing 16 MiB
    /// buffers on several threads made glibc keep the freed ones in per-thread arenas, which
    /// cost tens of MiB of resident memory.
    spare: Mutex<Vec<Vec<u8>>>,
    /// Packs stored and not yet indexed, with their entries.
    written: Mutex<Written>,
    /// Once the packs not yet indexed hold this many blobs, they are indexed (see
    /// [`Shared::record_pack`]).
    index_every: usize,
    /// Bytes stored in this run's packs.
    bytes_added: std::sync::atomic::AtomicU64,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    chunker: ChunkerParams,
    level: i32,
    pack_size: usize,
    spool: Option<PathBuf>,
}

/// The blobs a run has claimed: those not yet indexed in a hash set, those indexed during the
/// run in one sorted list. A first backup of a million small files claims a million blobs: in
/// a hash set alone that was 64-100 MiB at the end (a third of its buckets empty, and the old
/// and new tables together while it grew); as a sorted list, 32 bytes each.
/// Lookups in the list start from a table of where each 16-bit prefix of the (uniformly
/// distributed) ids starts: a plain binary search over a million ids cost a cache miss per
/// step, 0.8 s of a 19 s backup of a million files.
#[derive(Debug, Default)]
struct Claimed {
    recent: HashSet<BlobId>,
    indexed: Vec<BlobId>,
    /// `starts[p]..starts[p + 1]`: the ids in `indexed` whose first two bytes are `p` (empty
    /// while `indexed` is).
    starts: Vec<u32>,
}

fn prefix(id: &BlobId) -> usize {
    usize::from(u16::from_be_bytes([id.0[0], id.0[1]]))
}

impl Claimed {
    /// Claims `id`: true if it was not claimed before.
    fn insert(&mut self, id: &BlobId) -> bool {
        !self.in_indexed(id) && self.recent.insert(*id)
    }

    fn in_indexed(&self, id: &BlobId) -> bool {
        let p = prefix(id);
        match (self.starts.get(p), self.starts.get(p + 1)) {
            (Some(&lo), Some(&hi)) => self.indexed[lo as usize..hi as usize]
                .binary_search(id)
                .is_ok(),
            _ => false,
        }
    }

    /// Moves the blobs of packs just indexed from the hash set to the sorted list.
    fn indexed(&mut self, packs: &[(PackId, Vec<PackEntry>)]) {
        let before = self.indexed.len();
        self.indexed
            .reserve_exact(packs.iter().map(|(_, e)| e.len()).sum());
        for (_, entries) in packs {
            for e in entries {
                if self.recent.remove(&e.id) {
                    self.indexed.push(e.id);
                }
            }
        }
        // Two sorted runs: the stable sort merges them in one pass.
        self.indexed[before..].sort_unstable();
        self.indexed.sort();
        self.recent.shrink_to_fit();
        let mut starts = vec![0u32; (1 << 16) + 1];
        for id in &self.indexed {
            starts[prefix(id) + 1] += 1;
        }
        for p in 0..1 << 16 {
            starts[p + 1] += starts[p];
        }
        self.starts = starts;
    }
}

/// A pack being filled: in memory, or in a temporary file of the repository.
#[derive(Debug)]
pub enum OpenPack {
    Memory(PackBuilder),
    Spooled(Box<SpoolPack>),
}

impl Default for OpenPack {
    fn default() -> Self {
        OpenPack::Memory(PackBuilder::default())
    }
}

impl OpenPack {
    fn is_empty(&self) -> bool {
        match self {
            OpenPack::Memory(p) => p.is_empty(),
            OpenPack::Spooled(p) => p.is_empty(),
        }
    }

    fn finished_len_with(&self, stored_len: usize) -> usize {
        match self {
            OpenPack::Memory(p) => p.finished_len_with(stored_len),
            OpenPack::Spooled(p) => p.finished_len_with(stored_len),
        }
    }

    fn add(&mut self, blob: &EncodedBlob) -> Result<()> {
        match self {
            OpenPack::Memory(p) => {
                p.add(blob);
                Ok(())
            }
            OpenPack::Spooled(p) => p.add(blob),
        }
    }
}

impl Shared {
    /// Shared state for a backup into `repo` whose existing blobs are in `index`, for
    /// `compressors` compressor threads (at least one), indexing stored packs every
    /// `index_every` blobs (0: [`INDEX_SPLIT_BLOBS`], an index object's worth).
    pub fn new(
        repo: Repository,
        index: Arc<Index>,
        progress: Arc<Progress>,
        compressors: usize,
        index_every: usize,
    ) -> Self {
        let cfg = repo.config().clone();
        let pack_size = cfg.pack_size as usize;
        // Data packs are written to a file as they fill where the storage allows it (a local
        // repository): then no data pack is held in memory. Tree packs stay in memory (they
        // also go to the cache). Memory packs are made when their first blob comes.
        let spool = repo.pack_spool_dir();
        let mut shared = Shared {
            repo,
            index,
            progress,
            seen: Mutex::new(Claimed::default()),
            data_packers: Vec::new(),
            data_appended: Default::default(),
            tree_packer: Mutex::new(OpenPack::default()),
            spool,
            spare: Mutex::new(Vec::new()),
            written: Mutex::new(Written::default()),
            index_every: if index_every == 0 {
                INDEX_SPLIT_BLOBS
            } else {
                index_every
            },
            bytes_added: Default::default(),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            chunker: cfg.chunker,
            level: cfg.compression_level,
            pack_size,
        };
        let data_packs = if shared.spool.is_some() {
            compressors.max(1)
        } else {
            1
        };
        shared.data_packers = (0..data_packs)
            .map(|_| Mutex::new(shared.new_pack(BlobKind::Data)))
            .collect();
        shared.tree_packer = Mutex::new(shared.new_pack(BlobKind::Tree));
        shared
    }

    /// An empty pack builder, in a reused buffer when one is spare.
    fn new_pack(&self, kind: BlobKind) -> OpenPack {
        if let (BlobKind::Data, Some(dir)) = (kind, &self.spool) {
            return OpenPack::Spooled(Box::new(SpoolPack::new(dir.clone())));
        }
        OpenPack::Memory(match self.spare.lock().pop() {
            Some(buf) => PackBuilder::from_buffer(buf),
            None => PackBuilder::with_capacity(self.pack_size + PACK_SLACK),
        })
    }

    /// Keeps the buffer of a stored pack for the next one (a few at most).
    fn recycle(&self, buf: Vec<u8>) {
        let mut spare = self.spare.lock();
        if buf.capacity() >= self.pack_size && spare.len() < MAX_SPARE_PACKS {
            spare.push(buf);
        }
    }

    /// Records the first error and stops the pipeline.
    pub fn fail(&self, err: Error) {
        let mut slot = self.error.lock();
        if slot.is_none() {
            *slot = Some(err);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Whether the pipeline has failed (or was interrupted by a signal).
    pub fn has_failed(&self) -> bool {
        if self.failed.load(Ordering::Relaxed) {
            return true;
        }
        if crate::interrupt::requested() {
            self.fail(Error::Interrupted);
            return true;
        }
        false
    }

    /// Takes the recorded error.
    pub fn take_error(&self) -> Option<Error> {
        self.error.lock().take()
    }

    /// Claims a blob for storing: true if neither the repository nor this run has it yet.
    pub fn claim(&self, id: &BlobId) -> bool {
        !self.index.contains(id) && self.seen.lock().insert(id)
    }

    /// Packs stored by this run and not indexed yet.
    pub fn take_written(&self) -> Vec<(PackId, Vec<PackEntry>)> {
        std::mem::take(&mut *self.written.lock()).packs
    }

    /// Bytes stored in this run's packs (indexed or not).
    pub fn bytes_added(&self) -> u64 {
        self.bytes_added.load(Ordering::Relaxed)
    }

    /// Records a stored pack. Once the packs not yet indexed hold an index object's worth of
    /// blobs, they are indexed now rather than at the end of the run: their entries need not
    /// stay in memory (48 bytes a chunk: 48 MB for a first backup of a million small files), and the packs of a
    /// run that is interrupted later are already indexed, so the next run reuses them. An index
    /// naming packs is harmless without a snapshot (the write order packs, index, snapshot
    /// holds); a pack deleted meanwhile by a prune that took this run's lock for stale is
    /// caught before the snapshot is written (see `missing_references`).
    pub fn record_pack(&self, id: PackId, entries: Vec<PackEntry>) -> Result<()> {
        let stored: u64 = entries.iter().map(|e| u64::from(e.stored_len)).sum();
        self.bytes_added.fetch_add(stored, Ordering::Relaxed);
        let full = {
            let mut written = self.written.lock();
            written.blobs += entries.len();
            written.packs.push((id, entries));
            (written.blobs >= self.index_every).then(|| std::mem::take(&mut *written).packs)
        };
        if let Some(packs) = full {
            self.repo.save_index(&packs)?;
            self.seen.lock().indexed(&packs);
        }
        Ok(())
    }

    /// An open pack for a blob of this kind from compressor `slot`, locked: the first data
    /// pack no other compressor is writing to, else the compressor's own. Until a pack's worth
    /// of data has been stored, always the first: a small backup (and the tests' repositories)
    /// fills a single pack, whichever compressor gets which chunk.
    fn packer(&self, kind: BlobKind, slot: usize) -> parking_lot::MutexGuard<'_, OpenPack> {
        match kind {
            BlobKind::Data if self.data_appended.load(Ordering::Relaxed) < self.pack_size => {
                self.data_packers[0].lock()
            }
            BlobKind::Data => self
                .data_packers
                .iter()
                .find_map(|p| p.try_lock())
                .unwrap_or_else(|| self.data_packers[slot % self.data_packers.len()].lock()),
            BlobKind::Tree => self.tree_packer.lock(),
        }
    }

    /// Takes the partly filled packs at the end of a run.
    pub fn take_partial_packs(&self) -> Vec<OpenPack> {
        self.data_packers
            .iter()
            .chain(std::iter::once(&self.tree_packer))
            .map(|p| std::mem::take(&mut *p.lock()))
            .filter(|p| !p.is_empty())
            .collect()
    }
}

/// Reads one file: chunks, hashes and hands new chunks on. Retries a file that changes while it
/// is read (size, mtime or ctime differ before and after), up to three reads.
pub fn read_file(
    shared: &Shared,
    chunker: &mut Chunker,
    job: &FileJob,
    chunks: &Sender<ChunkJob>,
) -> FileOutcome {
    const ATTEMPTS: usize = 3;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match read_once(shared, chunker, job, chunks) {
            Ok(read) => {
                if read.stable {
                    return read.outcome(false);
                }
                last = Some(read);
            }
            Err(e) => return FileOutcome::Failed(e),
        }
        if shared.has_failed() {
            break;
        }
    }
    match last {
        Some(read) => read.outcome(true),
        None => FileOutcome::Failed("backup stopped".into()),
    }
}

/// One read of a file.
struct ReadOnce {
    content: Vec<BlobId>,
    size: u64,
    meta: Meta,
    stable: bool,
    replaced: Option<Vec<Xattr>>,
}

impl ReadOnce {
    fn outcome(self, unstable: bool) -> FileOutcome {
        FileOutcome::Read {
            content: self.content,
            size: self.size,
            meta: self.meta,
            unstable,
            replaced: self.replaced,
        }
    }
}

fn read_once(
    shared: &Shared,
    chunker: &mut Chunker,
    job: &FileJob,
    chunks: &Sender<ChunkJob>,
) -> std::result::Result<ReadOnce, String> {
    // Relative to the open directory, not following a symlink: a file (or a directory above
    // it) swapped for a symlink is never followed.
    let file =
        dirfd::open_file_at(job.dir.as_fd(), &job.name).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                "replaced by a symlink while backing up (not followed)".to_string()
            }
            Some(libc::ENOENT) => "vanished before it could be read".to_string(),
            _ => e.to_string(),
        })?;
    let before = dirfd::fstat(file.as_fd()).map_err(|e| e.to_string())?;
    if !before.is_file() {
        return Err("replaced by something that is not a regular file while backing up".into());
    }
    // Another file than the one listed (renamed over it in between): stored as found, as its
    // own metadata says.
    let replaced = (before.ino != job.inode).then(|| dirfd::xattrs_of(&file));
    let mut content = Vec::new();
    let mut size = 0u64;
    let reader = CountingReader {
        inner: &file,
        progress: &shared.progress,
    };
    chunker
        .for_each_chunk(reader, |data| -> std::result::Result<(), ChunkStop> {
            if shared.has_failed() {
                return Err(ChunkStop::Stopped);
            }
            let id = shared.repo.sealer().blob_id(data);
            size += data.len() as u64;
            if shared.claim(&id) {
                let job = ChunkJob {
                    kind: BlobKind::Data,
                    id,
                    data: data.to_vec(),
                };
                if chunks.send(job).is_err() {
                    return Err(ChunkStop::Stopped);
                }
            }
            content.push(id);
            Ok(())
        })
        .map_err(|e| match e {
            ChunkStop::Stopped => "backup stopped".to_string(),
            ChunkStop::Read(e) => e.to_string(),
        })?;
    let after = dirfd::fstat(file.as_fd()).map_err(|e| e.to_string())?;
    let stable = after.size == size
        && before.size == size
        && after.mtime == before.mtime
        && after.ctime == before.ctime;
    Ok(ReadOnce {
        content,
        size,
        meta: before,
        stable,
        replaced,
    })
}

/// Why chunking a file stopped early.
enum ChunkStop {
    Stopped,
    Read(io::Error),
}

impl From<io::Error> for ChunkStop {
    fn from(e: io::Error) -> Self {
        ChunkStop::Read(e)
    }
}

struct CountingReader<'a> {
    inner: &'a File,
    progress: &'a Progress,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        Progress::add(&self.progress.bytes_read, n as u64);
        Ok(n)
    }
}

/// A file worker: reads files from `jobs` until the queue closes.
pub fn file_worker(shared: &Shared, jobs: Receiver<FileJob>, chunks: Sender<ChunkJob>) {
    let mut chunker = Chunker::new(shared.chunker);
    for job in jobs {
        let outcome = if shared.has_failed() {
            FileOutcome::Failed("backup stopped".into())
        } else {
            read_file(shared, &mut chunker, &job, &chunks)
        };
        // The builder may be gone after a failure; nothing to do then.
        let _ = job.reply.send(outcome);
    }
}

/// Room for the header beyond a pack's target size.
const PACK_SLACK: usize = 256 << 10;
/// Stored packs' buffers kept for reuse (more than the packs in flight is never needed).
const MAX_SPARE_PACKS: usize = 4;

/// A compressor (number `slot`): encodes chunks into its pack builders; hands full packs to the
/// uploaders.
pub fn compressor(
    shared: &Shared,
    slot: usize,
    chunks: Receiver<ChunkJob>,
    packs: Sender<OpenPack>,
) {
    for job in chunks {
        if shared.has_failed() {
            continue;
        }
        let blob = match encode_blob(
            shared.repo.sealer(),
            job.kind,
            job.id,
            &job.data,
            shared.level,
        ) {
            Ok(b) => b,
            Err(e) => {
                shared.fail(e);
                continue;
            }
        };
        drop(job);
        let full = {
            let mut p = shared.packer(blob.kind, slot);
            // A pack is handed on before a blob would push it, finished with its header, past
            // the target size, so its buffer never grows beyond what it was given. (Counting
            // without the header, packs of small files' chunks outgrew their buffer, and the
            // doubling made a 34 MiB allocation.)
            let full = if !p.is_empty() && p.finished_len_with(blob.stored.len()) > shared.pack_size
            {
                Some(std::mem::replace(&mut *p, shared.new_pack(blob.kind)))
            } else {
                None
            };
            if let Err(e) = p.add(&blob) {
                // Writing a spooled pack failed (a full disk, an I/O error): the backup stops.
                shared.fail(e);
            }
            if blob.kind == BlobKind::Data {
                shared
                    .data_appended
                    .fetch_add(blob.stored.len(), Ordering::Relaxed);
            }
            full
        };
        if let Some(pack) = full {
            if packs.send(pack).is_err() {
                shared.fail(Error::Interrupted);
            }
        }
    }
}

/// An uploader: finishes packs, verifies them and stores them.
pub fn uploader(shared: &Shared, packs: Receiver<OpenPack>) {
    for pack in packs {
        if shared.has_failed() {
            continue;
        }
        if let Err(e) = store_pack(shared, pack) {
            shared.fail(e);
        }
    }
}

fn store_pack(shared: &Shared, pack: OpenPack) -> Result<()> {
    let pack = match pack {
        OpenPack::Memory(p) => p,
        OpenPack::Spooled(p) => {
            let done = p.finish_verified(shared.repo.sealer())?;
            shared.repo.publish_pack(&done)?;
            Progress::add(&shared.progress.bytes_written, done.len as u64);
            return shared.record_pack(done.id, done.entries);
        }
    };
    let sealer = shared.repo.sealer();
    let (bytes, entries) = pack.finish_verified(sealer)?;
    let len = bytes.len();
    // Handed over as it is (a cloud store uploads it without a copy) and taken back for the
    // next pack once the storage is done with it.
    let bytes = bytes::Bytes::from(bytes);
    let id = shared.repo.save_pack_owned(bytes.clone())?;
    if entries.first().is_some_and(|e| e.kind == BlobKind::Tree) {
        shared.repo.cache_tree_pack(&id, &bytes);
    }
    Progress::add(&shared.progress.bytes_written, len as u64);
    shared.record_pack(id, entries)?;
    if let Ok(buffer) = bytes.try_into_mut() {
        shared.recycle(buffer.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::InitOptions;
    use crate::storage::LocalStorage;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;

    fn shared(dir: &std::path::Path) -> Shared {
        shared_indexing_every(dir, 0)
    }

    fn shared_indexing_every(dir: &std::path::Path, index_every: usize) -> Shared {
        let opts = InitOptions {
            kdf: crate::repo::KdfSetting::CHEAPEST,
            ..InitOptions::default()
        };
        let repo = Repository::init(
            Arc::new(LocalStorage::new(dir.join("repo"))),
            &opts,
            Some(b"pw"),
        )
        .expect("init");
        Shared::new(
            repo,
            Arc::new(Index::default()),
            Arc::new(Progress::default()),
            2,
            index_every,
        )
    }

    /// A job for the file at `path`, listed with `inode`.
    fn job(path: &std::path::Path, inode: u64) -> FileJob {
        let (reply, _rx) = crossbeam_channel::bounded(1);
        let dir = dirfd::open_dir_path(path.parent().expect("a parent")).expect("open the dir");
        FileJob {
            dir: Arc::new(dir),
            name: path.file_name().expect("a name").as_bytes().to_vec(),
            inode,
            reply,
        }
    }

    fn read(shared: &Shared, path: PathBuf, inode: u64) -> FileOutcome {
        let (chunks, rx) = crossbeam_channel::unbounded();
        let mut chunker = Chunker::new(shared.chunker);
        let out = read_file(shared, &mut chunker, &job(&path, inode), &chunks);
        drop(rx);
        out
    }

    fn entries(pack: u8, blobs: u8) -> Vec<PackEntry> {
        (0..blobs)
            .map(|b| PackEntry {
                kind: BlobKind::Data,
                compressed: false,
                id: BlobId::hash(&[pack, b]),
                offset: u32::from(b) * 100,
                stored_len: 100,
                raw_len: 90,
            })
            .collect()
    }

    #[test]
    fn stored_packs_are_indexed_once_they_hold_an_index_objects_worth() {
        use crate::storage::FileKind;
        let dir = tempfile::tempdir().expect("tempdir");
        let s = shared_indexing_every(dir.path(), 4);
        let indexes = || s.repo.storage().list(FileKind::Index).expect("list").len();
        let (a, b, c) = (PackId::hash(b"a"), PackId::hash(b"b"), PackId::hash(b"c"));
        // Blobs are claimed before they are stored.
        for (pack, n) in [(1, 2), (2, 3), (3, 1)] {
            for e in entries(pack, n) {
                assert!(s.claim(&e.id));
            }
        }
        s.record_pack(a, entries(1, 2)).expect("record");
        assert_eq!(indexes(), 0, "2 of 4 blobs: nothing indexed yet");
        s.record_pack(b, entries(2, 3)).expect("record");
        assert_eq!(indexes(), 1, "5 blobs: the packs so far are indexed");
        let index = s.repo.load_index().expect("index");
        for (pack, n) in [(a, 2), (b, 3)] {
            assert_eq!(index.blobs_in(&pack), Some(n));
        }
        assert!(index.contains(&BlobId::hash(&[2, 2])));
        {
            let claimed = s.seen.lock();
            assert_eq!(
                claimed.indexed.len(),
                5,
                "indexed blobs move to the sorted list"
            );
            assert!(claimed.indexed.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(claimed.recent.len(), 1, "the blob not stored yet stays");
        }
        for e in entries(1, 2)
            .iter()
            .chain(&entries(2, 3))
            .chain(&entries(3, 1))
        {
            assert!(!s.claim(&e.id), "claimed once, indexed or not");
        }
        s.record_pack(c, entries(3, 1)).expect("record");
        assert_eq!(indexes(), 1);
        let rest = s.take_written();
        assert_eq!(rest.len(), 1, "only the pack stored since is left to index");
        assert_eq!(rest[0].0, c);
        assert_eq!(
            s.bytes_added(),
            600,
            "every pack's bytes count, indexed or not"
        );
    }

    #[test]
    fn vanished_file_is_reported_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = shared(dir.path());
        match read(&s, dir.path().join("gone"), 1) {
            FileOutcome::Failed(msg) => assert!(msg.contains("vanished"), "{msg}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(
            !s.has_failed(),
            "one unreadable file does not stop the backup"
        );
    }

    #[test]
    fn file_replaced_by_symlink_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = shared(dir.path());
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"not for the snapshot").expect("write");
        let path = dir.path().join("file");
        std::os::unix::fs::symlink(&secret, &path).expect("symlink");
        match read(&s, path, 1) {
            FileOutcome::Failed(msg) => assert!(msg.contains("symlink"), "{msg}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// RELIABILITY case 25: a file replaced by `mv` between listing and reading is stored as
    /// found (its own metadata and xattrs), flagged as replaced; not left out.
    #[test]
    fn file_replaced_by_another_file_is_stored_as_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = shared(dir.path());
        let path = dir.path().join("file");
        std::fs::write(&path, b"old content").expect("write");
        let listed = std::fs::metadata(&path).expect("stat").ino();
        let new = dir.path().join("new");
        std::fs::write(&new, b"the new content").expect("write");
        std::fs::rename(&new, &path).expect("mv");
        let now = std::fs::metadata(&path).expect("stat");
        assert_ne!(now.ino(), listed);
        match read(&s, path, listed) {
            FileOutcome::Read {
                size,
                meta,
                replaced,
                unstable,
                ..
            } => {
                assert_eq!(size, 15);
                assert_eq!(meta.ino, now.ino());
                assert_eq!(meta.size, 15);
                assert!(replaced.is_some(), "flagged as replaced");
                assert!(!unstable);
            }
            other => panic!("expected the new file stored, got {other:?}"),
        }
    }

    /// A fifo put in place of a file is refused, not opened for a read that never ends.
    #[test]
    fn file_replaced_by_a_fifo_does_not_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = shared(dir.path());
        let path = dir.path().join("file");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        match read(&s, path, 1) {
            FileOutcome::Failed(msg) => assert!(msg.contains("not a regular file"), "{msg}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn stable_file_is_chunked_and_new_chunks_are_claimed_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = shared(dir.path());
        let path = dir.path().join("file");
        std::fs::write(&path, vec![42u8; 3 << 20]).expect("write");
        let inode = std::fs::metadata(&path).expect("stat").ino();
        let (chunks, rx) = crossbeam_channel::unbounded();
        let job = job(&path, inode);
        let FileOutcome::Read {
            content,
            size,
            unstable,
            ..
        } = read_file(&s, &mut Chunker::new(s.chunker), &job, &chunks)
        else {
            panic!("read failed")
        };
        assert_eq!(size, 3 << 20);
        assert!(!unstable);
        assert!(!content.is_empty());
        let queued = rx.try_iter().count();
        // Reading the same file again queues nothing new: every chunk is already claimed.
        let FileOutcome::Read { content: again, .. } =
            read_file(&s, &mut Chunker::new(s.chunker), &job, &chunks)
        else {
            panic!("read failed")
        };
        assert_eq!(again, content);
        assert!(queued >= 1);
        assert_eq!(rx.try_iter().count(), 0);
    }
}

//! Packs: many blobs in one object, self-describing.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! blob 0 | blob 1 | ... | blob n-1 | sealed header | header length (u32) | "LBP1"
//! ```
//!
//! Each blob is `seal(type, payload)` where the payload is the chunk, zstd-compressed or raw.
//! The header, sealed as [`ObjectType::PackHeader`], lists the blobs in order, so the index can
//! be rebuilt from the packs alone: `version u8 = 1 | count u32 | count × entry`, entry =
//! `type u8 | compression u8 | stored length u32 | raw length u32 | blob id [32]`. Offsets are
//! implied by the order. A pack's id is the BLAKE3 hash of all its bytes.

use std::cell::RefCell;

pub use super::read::{decode_blob, decode_blob_in_place};
use super::seal::{ObjectType, Sealer, NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN};

/// Trailer magic at the end of every pack.
pub const PACK_MAGIC: &[u8; 4] = b"LBP1";
/// Bytes of the trailer (header length + magic).
pub const TRAILER_LEN: usize = 8;
const HEADER_VERSION: u8 = 1;
const ENTRY_LEN: usize = 2 + 4 + 4 + ID_LEN;
/// Largest header accepted when reading, a bound against hostile length fields.
const MAX_HEADER_LEN: usize = 64 << 20;
/// Largest raw chunk accepted (the chunker's maximum is far lower).
pub const MAX_BLOB_LEN: u32 = 64 << 20;
/// Largest stored blob accepted: a blob is stored compressed only when that is smaller, so it
/// is at most its raw length plus the sealing overhead.
pub const MAX_STORED_LEN: u32 = MAX_BLOB_LEN + (NONCE_LEN + TAG_LEN) as u32;

/// The kind of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobKind {
    /// File content.
    Data = 1,
    /// A directory listing.
    Tree = 2,
}

impl BlobKind {
    /// The sealing type of this kind of blob.
    pub fn object_type(self) -> ObjectType {
        match self {
            BlobKind::Data => ObjectType::DataBlob,
            BlobKind::Tree => ObjectType::TreeBlob,
        }
    }

    /// From the on-disk tag.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(BlobKind::Data),
            2 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// One blob's place in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub kind: BlobKind,
    pub compressed: bool,
    pub id: BlobId,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
}

/// A blob ready to be placed in a pack: sealed, compressed when that helped, verified.
#[derive(Debug)]
pub struct EncodedBlob {
    pub kind: BlobKind,
    pub id: BlobId,
    pub compressed: bool,
    pub raw_len: u32,
    pub stored: Vec<u8>,
}

impl EncodedBlob {
    /// Its pack entry, placed at `offset` in a pack.
    fn entry_at(&self, offset: u32) -> PackEntry {
        PackEntry {
            kind: self.kind,
            compressed: self.compressed,
            id: self.id,
            offset,
            stored_len: self.stored.len() as u32,
            raw_len: self.raw_len,
        }
    }
}

thread_local! {
    // zstd contexts are reused per thread: creating one per chunk costs time and memory.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    // The fastest level, for samples (see `worth_compressing`), with its output buffer.
    static SAMPLER: RefCell<Option<(zstd::bulk::Compressor<'static>, Vec<u8>)>> = const { RefCell::new(None) };
}

/// Size of each slice of a chunk that `worth_compressing` tries.
const SAMPLE_SLICE: usize = 16 << 10;
/// Slices tried per chunk: the start, the end and two between.
const SAMPLE_SLICES: usize = 4;

/// Whether compressing `raw` is likely to pay: four 16 KiB slices spread over it, compressed at
/// zstd's fastest level, must shrink by at least 3% together. Already-compressed or encrypted
/// content (archives, media, random data) fails this in a fraction of the time a full
/// compression at the repository's level takes, and is stored as it is; so is its restore
/// (nothing to decompress). Small chunks are always compressed.
fn worth_compressing(raw: &[u8]) -> bool {
    if raw.len() <= 2 * SAMPLE_SLICES * SAMPLE_SLICE {
        return true;
    }
    let step = (raw.len() - SAMPLE_SLICE) / (SAMPLE_SLICES - 1);
    SAMPLER.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            match zstd::bulk::Compressor::new(1) {
                Ok(c) => *slot = Some((c, Vec::with_capacity(2 * SAMPLE_SLICE))),
                // No sampler: compress everything, as without the test.
                Err(_) => return true,
            }
        }
        let Some((c, out)) = slot.as_mut() else {
            return true;
        };
        let mut stored = 0;
        for i in 0..SAMPLE_SLICES {
            let slice = &raw[i * step..i * step + SAMPLE_SLICE];
            out.clear();
            match c.compress_to_buffer(slice, out) {
                Ok(n) => stored += n,
                Err(_) => return true,
            }
        }
        stored * 100 < SAMPLE_SLICES * SAMPLE_SLICE * 97
    })
}

fn compress(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        match &mut *slot {
            Some((l, c)) if *l == level => c.compress(raw),
            _ => {
                let mut c = zstd::bulk::Compressor::new(level)?;
                let out = c.compress(raw);
                *slot = Some((level, c));
                out
            }
        }
    })
}

/// Compresses (when a sample says it pays and it shrinks the data) and seals a blob, then proves
/// it decodes back to `id`.
pub fn encode_blob(
    sealer: &Sealer,
    kind: BlobKind,
    id: BlobId,
    raw: &[u8],
    level: i32,
) -> Result<EncodedBlob> {
    let what = || format!("new chunk {id}");
    let raw_len = u32::try_from(raw.len())
        .ok()
        .filter(|&l| l <= MAX_BLOB_LEN)
        .ok_or_else(|| Error::Invalid(format!("chunk of {} bytes is too large", raw.len())))?;
    let compressed = if worth_compressing(raw) {
        compress(raw, level).map_err(|cause| Error::Compression {
            what: what(),
            cause,
        })?
    } else {
        Vec::new()
    };
    let (payload, is_compressed) = if !compressed.is_empty() && compressed.len() < raw.len() {
        (compressed.as_slice(), true)
    } else {
        (raw, false)
    };
    // Verify before it is stored: the payload must decompress to content with this id. (The
    // sealing that follows is not decrypted again: the AEAD itself authenticates it on read.)
    if is_compressed {
        let back = super::read::decompress(payload, raw_len as usize).map_err(|e| {
            Error::corrupt(
                what(),
                format!("does not decompress after compression: {e}"),
            )
        })?;
        if back.len() != raw.len() || sealer.blob_id(&back) != id {
            return Err(Error::corrupt(
                what(),
                "does not decompress to its content (memory or codec fault)",
            ));
        }
    } else if sealer.blob_id(raw) != id {
        return Err(Error::corrupt(
            what(),
            "content changed after it was hashed (memory fault)",
        ));
    }
    Ok(EncodedBlob {
        kind,
        id,
        compressed: is_compressed,
        raw_len,
        stored: sealer.seal(kind.object_type(), payload),
    })
}

/// Accumulates blobs into a pack.
#[derive(Debug, Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// An empty pack with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        PackBuilder {
            buf: Vec::with_capacity(capacity),
            entries: Vec::new(),
        }
    }

    /// An empty pack built in a buffer that held an earlier one (reusing its memory).
    pub fn from_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }

    /// Bytes of blob data so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The size the pack would have, finished, with one more blob of `stored_len` bytes: an
    /// upper bound (exact for encrypted repositories). A pack of many small blobs has a header
    /// of several hundred KiB, which must fit in the buffer too.
    pub fn finished_len_with(&self, stored_len: usize) -> usize {
        finished_len(self.buf.len() + stored_len, self.entries.len() + 1)
    }

    /// Appends a blob.
    pub fn add(&mut self, blob: &EncodedBlob) {
        self.entries.push(blob.entry_at(self.buf.len() as u32));
        self.buf.extend_from_slice(&blob.stored);
    }

    /// Finishes the pack and proves its header parses back to exactly what was written, as
    /// every pack must before it is stored.
    pub fn finish_verified(self, sealer: &Sealer) -> Result<(Vec<u8>, Vec<PackEntry>)> {
        let (bytes, entries) = self.finish(sealer);
        if read_pack_header(sealer, &bytes, "new pack")? != entries {
            return Err(Error::corrupt(
                "new pack",
                "header does not read back as written",
            ));
        }
        Ok((bytes, entries))
    }

    /// Writes the header and trailer; returns the pack's bytes and its entries.
    pub fn finish(mut self, sealer: &Sealer) -> (Vec<u8>, Vec<PackEntry>) {
        self.buf
            .extend_from_slice(&header_and_trailer(sealer, &self.entries));
        (self.buf, self.entries)
    }
}

/// The end of a pack: its sealed header, then the trailer (header length, magic).
fn header_and_trailer(sealer: &Sealer, entries: &[PackEntry]) -> Vec<u8> {
    let mut header = Vec::with_capacity(5 + entries.len() * ENTRY_LEN);
    header.push(HEADER_VERSION);
    header.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        header.push(e.kind as u8);
        header.push(u8::from(e.compressed));
        header.extend_from_slice(&e.stored_len.to_le_bytes());
        header.extend_from_slice(&e.raw_len.to_le_bytes());
        header.extend_from_slice(&e.id.0);
    }
    let mut out = sealer.seal(ObjectType::PackHeader, &header);
    let sealed_len = out.len() as u32;
    out.extend_from_slice(&sealed_len.to_le_bytes());
    out.extend_from_slice(PACK_MAGIC);
    out
}

/// The finished size of a pack holding `data_len` bytes of `blobs` blobs (an upper bound; exact
/// when encrypted).
fn finished_len(data_len: usize, blobs: usize) -> usize {
    data_len + 5 + blobs * ENTRY_LEN + NONCE_LEN + TAG_LEN + TRAILER_LEN
}

/// The exact size of a pack holding `blobs` blobs in `data_len` bytes of blob data, sealed by
/// `sealer`: blob data, sealed header, trailer. For a pack whose index entries are all known,
/// this is its size in storage; with some entries unknown it is a lower bound.
pub fn pack_len(sealer: &Sealer, data_len: u64, blobs: usize) -> u64 {
    data_len + (sealer.overhead() + 5 + blobs * ENTRY_LEN + TRAILER_LEN) as u64
}

/// A pack written to a temporary file as its blobs arrive, so that building it holds no pack
/// in memory (for storages with a [`crate::storage::Storage::spool_dir`]). The file is
/// removed when the pack is dropped unfinished.
#[derive(Debug)]
pub struct SpoolPack {
    dir: std::path::PathBuf,
    file: Option<SpoolFile>,
    hasher: blake3::Hasher,
    len: usize,
    entries: Vec<PackEntry>,
}

/// Alignment of direct writes (offset, length and memory): the largest logical block size of
/// the devices in use, and a multiple of the smaller 512.
const DIRECT_ALIGN: usize = 4096;
/// Bytes collected before one direct write.
const DIRECT_BUF: usize = 1 << 20;

/// The temporary file of a [`SpoolPack`].
///
/// Written with direct I/O where the file system allows it (`O_DIRECT`: from an aligned
/// buffer of ours to the device, past the page cache). A backup writes its packs once and does
/// not read them again, so caching them would only evict the server's own working set, and
/// filling fresh page-cache pages is most of the CPU a buffered write costs (measured: 900 MiB
/// of packs written buffered and synced took 1.1 CPU-s, direct 0.07). The last partial block
/// is written padded with zeros and the file then cut to its length. Where direct I/O is
/// refused (some file systems reject `O_DIRECT` at open or at the first write), the file is
/// written through the page cache as before.
#[derive(Debug)]
struct SpoolFile {
    file: std::fs::File,
    path: std::path::PathBuf,
    direct: bool,
    /// `DIRECT_BUF + DIRECT_ALIGN` bytes; the block buffer starts at `at`, aligned.
    buf: Vec<u8>,
    at: usize,
    /// Bytes in the block buffer.
    filled: usize,
    /// Bytes of the file written (a multiple of `DIRECT_ALIGN` while direct).
    written: u64,
}

impl SpoolFile {
    fn create(path: std::path::PathBuf) -> std::io::Result<Self> {
        Self::create_with(path, true)
    }

    /// `try_direct` false: through the page cache (as on a file system refusing direct I/O).
    fn create_with(path: std::path::PathBuf, try_direct: bool) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |flags| {
            std::fs::OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                // Private while it is written; publishing gives it the objects' mode.
                .mode(0o600)
                .custom_flags(flags)
                .open(&path)
        };
        let (file, direct) = match open(if try_direct { libc::O_DIRECT } else { 0 }) {
            Ok(f) => (f, try_direct),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
            Err(e) => return Err(e),
        };
        let (buf, at) = if direct {
            let buf = vec![0u8; DIRECT_BUF + DIRECT_ALIGN];
            let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
            (buf, at)
        } else {
            (Vec::new(), 0)
        };
        Ok(SpoolFile {
            file,
            path,
            direct,
            buf,
            at,
            filled: 0,
            written: 0,
        })
    }

    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if !self.direct {
            self.file.write_all_at(bytes, self.written)?;
            self.written += bytes.len() as u64;
            return Ok(());
        }
        while !bytes.is_empty() {
            let n = bytes.len().min(DIRECT_BUF - self.filled);
            let from = self.at + self.filled;
            self.buf[from..from + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == DIRECT_BUF {
                self.write_block()?;
            }
        }
        Ok(())
    }

    /// Writes the block buffer, padded with zeros to the alignment (only the last one of a
    /// file is ever short), and empties it.
    fn write_block(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let len = self.filled.next_multiple_of(DIRECT_ALIGN);
        self.buf[self.at + self.filled..self.at + len].fill(0);
        let block = self.at..self.at + len;
        match self
            .file
            .write_all_at(&self.buf[block.clone()], self.written)
        {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.written == 0 => {
                // Opened with O_DIRECT, but this file system refuses direct writes (or
                // wants a larger alignment): write through the page cache instead.
                self.stop_direct()?;
                self.file.write_all_at(&self.buf[block], 0)?;
            }
            Err(e) => return Err(e),
        }
        self.written += self.filled as u64;
        if len != self.filled {
            // The padded last block: cut the padding off. What follows (none but in a
            // fallback) must not land after it, and the header's read-back needs no alignment.
            if self.direct {
                self.stop_direct()?;
            }
            self.file.set_len(self.written)?;
        }
        self.filled = 0;
        if !self.direct {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Turns direct I/O off: writes and reads go through the page cache from here on.
    fn stop_direct(&mut self) -> std::io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
        fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_DIRECT))?;
        self.direct = false;
        Ok(())
    }

    /// Writes what is buffered, then syncs the file to the device.
    fn finish(&mut self) -> std::io::Result<()> {
        if self.direct && self.filled > 0 {
            self.write_block()?;
        }
        if self.direct {
            // The file ended on a block boundary: reading back needs no alignment.
            self.stop_direct()?;
            self.buf = Vec::new();
        }
        self.file.sync_all()
    }
}

/// A spooled pack, finished: its id, entries and the synced temporary file to publish.
#[derive(Debug)]
pub struct SpooledPack {
    pub id: crate::id::PackId,
    pub entries: Vec<PackEntry>,
    pub path: std::path::PathBuf,
    pub len: usize,
}

impl SpoolPack {
    /// An empty pack whose file will be made in `dir` when the first blob arrives.
    pub fn new(dir: std::path::PathBuf) -> Self {
        SpoolPack {
            dir,
            file: None,
            hasher: blake3::Hasher::new(),
            len: 0,
            entries: Vec::new(),
        }
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// See [`PackBuilder::finished_len_with`].
    pub fn finished_len_with(&self, stored_len: usize) -> usize {
        finished_len(self.len + stored_len, self.entries.len() + 1)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.file.is_none() {
            let path = self
                .dir
                .join(format!(".tmp-pack-{:016x}", rand::random::<u64>()));
            let f = SpoolFile::create(path.clone())
                .map_err(|e| Error::io("create temporary pack", &path, e))?;
            self.file = Some(f);
        }
        if let Some(f) = &mut self.file {
            f.write(bytes)
                .map_err(|e| Error::io("write temporary pack", &f.path, e))?;
        }
        self.hasher.update(bytes);
        self.len += bytes.len();
        Ok(())
    }

    /// Appends a blob to the file.
    pub fn add(&mut self, blob: &EncodedBlob) -> Result<()> {
        let entry = blob.entry_at(self.len as u32);
        self.write(&blob.stored)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Writes header and trailer, syncs the file, and proves the header reads back from the
    /// file to exactly what was written.
    pub fn finish_verified(mut self, sealer: &Sealer) -> Result<SpooledPack> {
        use std::os::unix::fs::FileExt;
        let end = header_and_trailer(sealer, &self.entries);
        let data_len = self.len;
        self.write(&end)?;
        let Some(mut spool) = self.file.take() else {
            return Err(Error::Invalid("an empty pack cannot be finished".into()));
        };
        let path = spool.path.clone();
        let fail = |op, e| {
            let _ = std::fs::remove_file(&path);
            Error::io(op, &path, e)
        };
        spool
            .finish()
            .map_err(|e| fail("write and sync temporary pack", e))?;
        let mut back = vec![0u8; end.len()];
        spool
            .file
            .read_exact_at(&mut back, data_len as u64)
            .map_err(|e| fail("read back temporary pack", e))?;
        let hlen = back.len() - TRAILER_LEN;
        let parsed = header_len_from_trailer(&back[hlen..], self.len as u64, "new pack")
            .and_then(|_| parse_header(sealer, &back[..hlen], data_len as u64, "new pack"));
        if parsed.ok().as_ref() != Some(&self.entries) {
            let _ = std::fs::remove_file(&path);
            return Err(Error::corrupt(
                "new pack",
                "header does not read back as written",
            ));
        }
        Ok(SpooledPack {
            id: crate::id::PackId(*self.hasher.finalize().as_bytes()),
            entries: std::mem::take(&mut self.entries),
            path,
            len: self.len,
        })
    }
}

impl Drop for SpoolPack {
    fn drop(&mut self) {
        if let Some(spool) = self.file.take() {
            let _ = std::fs::remove_file(spool.path);
        }
    }
}

/// Reads the header length from a pack's trailer; `pack_len` is the pack's total size.
pub fn header_len_from_trailer(trailer: &[u8], pack_len: u64, what: &str) -> Result<u32> {
    if trailer.len() != TRAILER_LEN || &trailer[4..] != PACK_MAGIC {
        return Err(Error::corrupt(what, "not a pack (bad trailer)"));
    }
    let len = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if len as usize > MAX_HEADER_LEN || u64::from(len) + TRAILER_LEN as u64 > pack_len {
        return Err(Error::corrupt(
            what,
            format!("pack header length {len} is out of range"),
        ));
    }
    Ok(len)
}

/// Parses a pack's sealed header; `data_len` is the length of the blob area before it.
pub fn parse_header(
    sealer: &Sealer,
    sealed: &[u8],
    data_len: u64,
    what: &str,
) -> Result<Vec<PackEntry>> {
    let h = sealer.open(ObjectType::PackHeader, sealed, what)?;
    let h: &[u8] = &h;
    let bad = |reason: &str| Error::corrupt(what, format!("pack header: {reason}"));
    if h.len() < 5 || h[0] != HEADER_VERSION {
        return Err(bad("unknown version or truncated"));
    }
    let count = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
    let body = &h[5..];
    if body.len() != count.saturating_mul(ENTRY_LEN) {
        return Err(bad("entry count does not match its length"));
    }
    let mut entries = Vec::with_capacity(count);
    let mut offset: u64 = 0;
    for raw in body.chunks_exact(ENTRY_LEN) {
        let kind = BlobKind::from_u8(raw[0]).ok_or_else(|| bad("unknown blob type"))?;
        let compressed = match raw[1] {
            0 => false,
            1 => true,
            _ => return Err(bad("unknown compression")),
        };
        let stored_len = u32::from_le_bytes([raw[2], raw[3], raw[4], raw[5]]);
        let raw_len = u32::from_le_bytes([raw[6], raw[7], raw[8], raw[9]]);
        if raw_len > MAX_BLOB_LEN || stored_len > MAX_STORED_LEN {
            return Err(bad("blob length out of range"));
        }
        let id = BlobId::from_slice(&raw[10..]).ok_or_else(|| bad("bad blob id"))?;
        entries.push(PackEntry {
            kind,
            compressed,
            id,
            offset: offset as u32,
            stored_len,
            raw_len,
        });
        offset += u64::from(stored_len);
        if offset > data_len {
            return Err(bad("blobs extend past the header"));
        }
    }
    if offset != data_len {
        return Err(bad("blobs do not fill the pack"));
    }
    Ok(entries)
}

/// Parses the header of a whole pack held in memory.
pub fn read_pack_header(sealer: &Sealer, pack: &[u8], what: &str) -> Result<Vec<PackEntry>> {
    if pack.len() < TRAILER_LEN {
        return Err(Error::corrupt(what, "truncated pack"));
    }
    let trailer = &pack[pack.len() - TRAILER_LEN..];
    let hlen = header_len_from_trailer(trailer, pack.len() as u64, what)? as usize;
    let data_len = pack.len() - TRAILER_LEN - hlen;
    parse_header(
        sealer,
        &pack[data_len..pack.len() - TRAILER_LEN],
        data_len as u64,
        what,
    )
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn blob(s: &Sealer, data: &[u8], kind: BlobKind) -> EncodedBlob {
        encode_blob(s, kind, s.blob_id(data), data, 3).expect("encode")
    }

    #[test]
    fn pack_round_trip_and_compression_choice() {
        let s = Sealer::default();
        let text = b"hello hello hello hello hello hello hello".repeat(100);
        let noise: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let a = blob(&s, &text, BlobKind::Data);
        let b = blob(&s, &noise, BlobKind::Tree);
        assert!(a.compressed);
        let mut p = PackBuilder::default();
        p.add(&a);
        p.add(&b);
        let (bytes, entries) = p.finish(&s);
        let parsed = read_pack_header(&s, &bytes, "p").expect("header");
        assert_eq!(parsed, entries);
        for (e, raw) in parsed.iter().zip([&text[..], &noise[..]]) {
            let stored = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            assert_eq!(decode_blob(&s, e, stored, "p").expect("decode"), raw);
        }
    }

    #[test]
    fn incompressible_chunks_are_stored_as_they_are() {
        use rand::{RngCore, SeedableRng};
        let s = Sealer::default();
        let mut random = vec![0u8; 1 << 20];
        rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut random);
        assert!(!worth_compressing(&random));
        let r = blob(&s, &random, BlobKind::Data);
        assert!(!r.compressed);
        // Text with a random first half: the sample sees both, and compression pays.
        let mut mixed = random.clone();
        for (i, b) in mixed[1 << 19..].iter_mut().enumerate() {
            *b = b"GET /index.html 200 0.003\n"[i % 26];
        }
        assert!(worth_compressing(&mixed));
        let m = blob(&s, &mixed, BlobKind::Data);
        assert!(
            m.compressed && m.stored.len() < 600 << 10,
            "{}",
            m.stored.len()
        );
        // Small chunks skip the sample and are compressed when that shrinks them.
        let small = b"abc".repeat(1000);
        assert!(worth_compressing(&small) && blob(&s, &small, BlobKind::Data).compressed);
        for (b, raw) in [(r, &random), (m, &mixed)] {
            let mut p = PackBuilder::default();
            p.add(&b);
            let (bytes, entries) = p.finish(&s);
            let e = entries[0];
            let stored = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            assert_eq!(&decode_blob(&s, &e, stored, "p").expect("decode"), raw);
            // Decoded where it lies: the same content, compressed or not.
            let mut in_place = stored.to_vec();
            let got = decode_blob_in_place(&s, &e, &mut in_place, "p").expect("decode in place");
            assert_eq!(got.as_ref(), raw.as_slice());
            assert_eq!(matches!(got, Cow::Borrowed(_)), !e.compressed);
            // A damaged byte is refused in place too.
            let mut damaged = stored.to_vec();
            damaged[NONCE_LEN + 3] ^= 0x40;
            assert!(decode_blob_in_place(&s, &e, &mut damaged, "p").is_err());
        }
    }

    #[test]
    fn pack_len_is_the_exact_size_of_a_finished_pack() {
        for s in [
            Sealer::plain(),
            Sealer::encrypted(&crate::repo::MasterKey::random()),
        ] {
            let mut p = PackBuilder::default();
            for i in 0..7u32 {
                p.add(&blob(
                    &s,
                    &i.to_le_bytes().repeat(i as usize + 1),
                    BlobKind::Data,
                ));
            }
            let data_len = p.len() as u64;
            let (bytes, entries) = p.finish(&s);
            assert_eq!(pack_len(&s, data_len, entries.len()), bytes.len() as u64);
        }
    }

    #[test]
    fn finished_size_is_known_before_adding() {
        for s in [
            Sealer::plain(),
            Sealer::encrypted(&crate::repo::MasterKey::random()),
        ] {
            let mut p = PackBuilder::default();
            let mut predicted = 0;
            for i in 0..3000u32 {
                let b = blob(&s, &i.to_le_bytes(), BlobKind::Tree);
                predicted = p.finished_len_with(b.stored.len());
                p.add(&b);
            }
            let (bytes, _) = p.finish(&s);
            assert!(bytes.len() <= predicted);
            if s.is_encrypted() {
                assert_eq!(bytes.len(), predicted);
            }
        }
    }

    #[test]
    fn spooled_pack_is_a_valid_pack_and_leaves_nothing_behind_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Sealer::encrypted(&crate::repo::MasterKey::random());
        let blobs: Vec<(Vec<u8>, EncodedBlob)> = (0..50u32)
            .map(|i| {
                let data = format!("blob {i} ")
                    .repeat(i as usize * 40 + 1)
                    .into_bytes();
                let b = blob(&s, &data, BlobKind::Data);
                (data, b)
            })
            .collect();
        let mut p = SpoolPack::new(dir.path().to_path_buf());
        let mut predicted = 0;
        for (_, b) in &blobs {
            predicted = p.finished_len_with(b.stored.len());
            p.add(b).expect("add");
        }
        let done = p.finish_verified(&s).expect("finish");
        let bytes = std::fs::read(&done.path).expect("read back");
        assert_eq!((bytes.len(), done.len), (predicted, predicted));
        assert_eq!(
            crate::id::PackId::hash(&bytes),
            done.id,
            "named by its content"
        );
        assert_eq!(
            read_pack_header(&s, &bytes, "p").expect("header"),
            done.entries
        );
        for (e, (raw, _)) in done.entries.iter().zip(&blobs) {
            let stored = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            assert_eq!(&decode_blob(&s, e, stored, "p").expect("decode"), raw);
        }
        std::fs::remove_file(&done.path).expect("remove");
        // Dropped before it is finished (a failed backup): its file is removed.
        let mut p = SpoolPack::new(dir.path().to_path_buf());
        p.add(&blobs[3].1).expect("add");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
        drop(p);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
        // No directory to write in: a clear error naming the file, not a panic.
        let mut p = SpoolPack::new(dir.path().join("gone"));
        let err = p.add(&blobs[0].1).expect_err("no directory").to_string();
        assert!(
            err.contains("temporary pack") && err.contains("gone"),
            "{err}"
        );
    }

    #[test]
    fn spool_file_holds_exactly_what_was_written_whatever_the_block_boundaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pattern: Vec<u8> = (0..5 * DIRECT_BUF + 3)
            .map(|i| (i * 7 + i / 4099) as u8)
            .collect();
        // Totals: under one aligned block, one block exactly, one buffer exactly (no padded
        // last block), buffers and a tail; pieces smaller and larger than the buffer.
        for (direct, total, piece) in [
            (false, 4095, 1000),
            (false, 2 * DIRECT_BUF + 1, 700_001),
            (true, 1, 1),
            (true, 4095, 1000),
            (true, DIRECT_ALIGN, 3000),
            (true, DIRECT_BUF, 65_536),
            (true, 2 * DIRECT_BUF, 3 * DIRECT_BUF),
            (true, 2 * DIRECT_BUF + 1, 700_001),
            (true, 5 * DIRECT_BUF + 3, DIRECT_BUF - 1),
        ] {
            let path = dir.path().join(format!("spool-{direct}-{total}-{piece}"));
            let mut f = SpoolFile::create_with(path.clone(), direct).expect("create");
            for part in pattern[..total].chunks(piece) {
                f.write(part).expect("write");
            }
            f.finish().expect("finish");
            assert!(!f.direct, "reads after finishing need no alignment");
            let mut tail = vec![0u8; 3.min(total)];
            let from = (total - tail.len()) as u64;
            std::os::unix::fs::FileExt::read_exact_at(&f.file, &mut tail, from).expect("read");
            assert_eq!(tail, pattern[total - tail.len()..total]);
            drop(f);
            let back = std::fs::read(&path).expect("read back");
            assert!(
                back == pattern[..total],
                "direct {direct}, total {total}, pieces of {piece}"
            );
        }
    }

    #[test]
    fn damaged_blob_and_header_are_detected() {
        let s = Sealer::default();
        let data = vec![7u8; 10_000];
        let mut p = PackBuilder::default();
        p.add(&blob(&s, &data, BlobKind::Data));
        let (mut bytes, entries) = p.finish(&s);
        let e = entries[0];
        bytes[3] ^= 0x40;
        let stored = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
        assert!(decode_blob(&s, &e, stored, "p").is_err());
        let n = bytes.len();
        // A flipped id in the header parses, but the blob no longer matches it.
        let mut bad_id = bytes.clone();
        bad_id[3] ^= 0x40; // undo the data damage
        bad_id[n - 9] ^= 1;
        let parsed = read_pack_header(&s, &bad_id, "p").expect("parses");
        let stored = &bad_id[e.offset as usize..(e.offset + e.stored_len) as usize];
        assert!(decode_blob(&s, &parsed[0], stored, "p").is_err());
        bytes[n - 8] ^= 1; // header length
        assert!(read_pack_header(&s, &bytes, "p").is_err());
        assert!(read_pack_header(&s, &bytes[..4], "p").is_err());
        assert!(read_pack_header(&s, &[], "p").is_err());
    }

    #[test]
    fn a_hostile_stored_length_in_a_pack_header_is_refused() {
        // A header entry claiming a blob larger than any blob can be was accepted as long as
        // the claimed data area matched it.
        let s = Sealer::plain();
        let e = PackEntry {
            kind: BlobKind::Data,
            compressed: false,
            id: BlobId::hash(b"x"),
            offset: 0,
            stored_len: MAX_STORED_LEN + 1,
            raw_len: 1,
        };
        let end = header_and_trailer(&s, &[e]);
        let header = &end[..end.len() - TRAILER_LEN];
        let data_len = u64::from(MAX_STORED_LEN) + 1;
        let err = parse_header(&s, header, data_len, "p")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("blob length out of range"), "{err}");
        let ok = PackEntry {
            stored_len: MAX_STORED_LEN,
            ..e
        };
        let end = header_and_trailer(&s, &[ok]);
        let header = &end[..end.len() - TRAILER_LEN];
        assert!(parse_header(&s, header, data_len - 1, "p").is_ok());
    }

    #[test]
    fn type_confusion_in_pack_is_detected() {
        let s = Sealer::default();
        let data = b"{\"nodes\":[]}".to_vec();
        let b = blob(&s, &data, BlobKind::Tree);
        let e = PackEntry {
            kind: BlobKind::Data,
            compressed: b.compressed,
            id: b.id,
            offset: 0,
            stored_len: b.stored.len() as u32,
            raw_len: b.raw_len,
        };
        assert!(decode_blob(&s, &e, &b.stored, "p").is_err());
    }
}

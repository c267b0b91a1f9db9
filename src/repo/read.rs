//! The one verified reader of blobs: every command that reads file data or directory listings
//! (restore, check, prune, repair, drills through restore, and [`Repository::read_blob`])
//! reads them through here, and nothing else decodes a stored blob.
//!
//! A reader asks for a pack's bytes — the whole pack ([`Repository::read_pack`]) or a range
//! holding many blobs ([`Repository::read_pack_range`]) — and takes blobs out of them
//! ([`PackBytes`]): each is opened (decrypted, in place where the caller lets it), decompressed
//! into at most the raw length its entry gives (a bound against decompression bombs), and its
//! id checked; a blob the entry places outside the bytes read is damage too. Every failure is
//! an [`Error::Corrupt`] naming the pack, so callers classify it with [`Error::is_damage`]
//! like a missing or truncated object; a storage fault stays what it is.

use std::borrow::Cow;
use std::cell::RefCell;

use super::pack::{EncodedBlob, PackEntry};
use super::{BlobKind, Index, Repository, Sealer};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::storage::FileKind;

thread_local! {
    // zstd contexts are reused per thread: creating one per chunk costs time and memory.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Decompresses into at most `capacity` bytes (a bound against decompression bombs).
pub(super) fn decompress(payload: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        match &mut *slot {
            Some(d) => d.decompress(payload, capacity),
            None => {
                let mut d = zstd::bulk::Decompressor::new()?;
                let out = d.decompress(payload, capacity);
                *slot = Some(d);
                out
            }
        }
    })
}

/// Opens, decompresses and verifies a stored blob against its id (the pure bytes-to-content
/// step, public for tests, fuzz targets and benchmarks; readers use [`PackBytes`]).
pub fn decode_blob(
    sealer: &Sealer,
    entry: &PackEntry,
    stored: &[u8],
    what: &str,
) -> Result<Vec<u8>> {
    let payload = sealer.open(entry.kind.object_type(), stored, what)?;
    Ok(check_payload(sealer, entry, payload, what)?.into_owned())
}

/// [`decode_blob`], decrypting where the stored blob lies: an uncompressed blob's content is
/// returned as a part of `stored`, without a copy. On error, `stored` holds unspecified bytes.
pub fn decode_blob_in_place<'a>(
    sealer: &Sealer,
    entry: &PackEntry,
    stored: &'a mut [u8],
    what: &str,
) -> Result<Cow<'a, [u8]>> {
    let payload = sealer.open_in_place(entry.kind.object_type(), stored, what)?;
    check_payload(sealer, entry, Cow::Borrowed(payload), what)
}

/// Decompresses an opened blob (if it is compressed) and checks its length and hash.
fn check_payload<'a>(
    sealer: &Sealer,
    entry: &PackEntry,
    payload: Cow<'a, [u8]>,
    what: &str,
) -> Result<Cow<'a, [u8]>> {
    let raw = if entry.compressed {
        Cow::Owned(decompress(&payload, entry.raw_len as usize).map_err(|e| {
            Error::corrupt(what, format!("chunk {} does not decompress: {e}", entry.id))
        })?)
    } else {
        payload
    };
    if raw.len() != entry.raw_len as usize {
        return Err(Error::corrupt(
            what,
            format!(
                "chunk {} has {} bytes, expected {}",
                entry.id,
                raw.len(),
                entry.raw_len
            ),
        ));
    }
    if sealer.blob_id(&raw) != entry.id {
        return Err(Error::corrupt(
            what,
            format!("chunk {} does not match its hash", entry.id),
        ));
    }
    Ok(raw)
}

/// Bytes read from a pack — all of it, or a range holding many blobs — and the blobs in them,
/// each verified as it is taken out.
#[derive(Debug)]
pub struct PackBytes<'r> {
    sealer: &'r Sealer,
    pack: PackId,
    /// The pack's path in the repository, which errors name.
    what: String,
    /// Where `bytes` begin in the pack.
    start: u32,
    bytes: Vec<u8>,
}

impl<'r> PackBytes<'r> {
    fn new(sealer: &'r Sealer, pack: PackId, start: u32, bytes: Vec<u8>) -> Self {
        PackBytes {
            sealer,
            what: FileKind::Pack.path(&pack.to_hex()),
            pack,
            start,
            bytes,
        }
    }

    /// The pack's path in the repository (`data/…`).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The bytes read.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the bytes hash to the pack's name (meaningful for a whole pack only).
    pub fn matches_name(&self) -> bool {
        PackId::hash(&self.bytes) == self.pack
    }

    /// The stored bytes of the blob `e` places here; damage when they lie outside what was read.
    fn range(&self, e: &PackEntry) -> Result<std::ops::Range<usize>> {
        let from = e.offset.checked_sub(self.start).map(|f| f as usize);
        from.and_then(|f| Some(f..f.checked_add(e.stored_len as usize)?))
            .filter(|r| r.end <= self.bytes.len())
            .ok_or_else(|| {
                Error::corrupt(&self.what, "the pack ends before this chunk (truncated)")
            })
    }

    /// The content of blob `e`, verified.
    pub fn blob(&self, e: &PackEntry) -> Result<Vec<u8>> {
        let range = self.range(e)?;
        decode_blob(self.sealer, e, &self.bytes[range], &self.what)
    }

    /// The content of blob `e`, verified, decrypted where it lies (an uncompressed blob is
    /// returned without a copy). Its stored bytes are used up: take each blob once.
    pub fn blob_in_place(&mut self, e: &PackEntry) -> Result<Cow<'_, [u8]>> {
        let range = self.range(e)?;
        decode_blob_in_place(self.sealer, e, &mut self.bytes[range], &self.what)
    }

    /// Blob `e` as it is stored, once its content is verified: ready to be copied into a new
    /// pack (prune's repacking, repair's salvage) without spreading a damaged chunk.
    pub fn verified_copy(&self, e: &PackEntry) -> Result<EncodedBlob> {
        self.blob(e)?;
        let range = self.range(e)?;
        Ok(EncodedBlob {
            kind: e.kind,
            id: e.id,
            compressed: e.compressed,
            raw_len: e.raw_len,
            stored: self.bytes[range].to_vec(),
        })
    }
}

impl Repository {
    /// Reads a whole pack from storage (never from a cache: what is read is what storage holds).
    pub fn read_pack(&self, pack: &PackId) -> Result<PackBytes<'_>> {
        let bytes = self.storage.read(FileKind::Pack, &pack.to_hex())?;
        Ok(PackBytes::new(&self.sealer, *pack, 0, bytes))
    }

    /// Reads `len` bytes of a pack from `start`: one request for a run of blobs.
    pub fn read_pack_range(&self, pack: &PackId, start: u32, len: u32) -> Result<PackBytes<'_>> {
        let bytes =
            self.storage
                .read_range(FileKind::Pack, &pack.to_hex(), u64::from(start), len)?;
        Ok(PackBytes::new(&self.sealer, *pack, start, bytes))
    }

    /// Reads one blob and verifies it against its id.
    pub fn read_blob(&self, index: &Index, id: &BlobId) -> Result<Vec<u8>> {
        let e = index
            .get(id)
            .ok_or_else(|| Error::MissingBlob { id: id.to_hex() })?;
        let pack = index.pack_id(e.pack);
        let entry = e.to_pack_entry(*id);
        match (&self.cache, e.kind) {
            // Packs of directory listings are cached whole: an incremental backup or a
            // restore reads many listings from few packs.
            (Some(cache), BlobKind::Tree) => {
                let name = pack.to_hex();
                let whole = match cache.get(FileKind::Pack, &name) {
                    Some(w) => PackBytes::new(&self.sealer, pack, 0, w),
                    None => {
                        let w = self.read_pack(&pack)?;
                        if !w.matches_name() {
                            return Err(Error::corrupt(
                                w.what(),
                                "content does not match its name (damaged)",
                            ));
                        }
                        cache.put(FileKind::Pack, &name, w.bytes());
                        w
                    }
                };
                whole.blob(&entry)
            }
            _ => self
                .read_pack_range(&pack, e.offset, e.stored_len)?
                .blob(&entry),
        }
    }
}

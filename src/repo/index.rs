//! The index: where each blob lives (pack, offset, length).
//!
//! On disk an index object lists packs and their blobs (see docs/FORMAT.md); in memory all index
//! objects merge into one [`Index`], a hash map keyed by blob id. Memory grows only with the
//! number of distinct blobs: one entry is the 32-byte id plus 20 bytes of location.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::pack::{BlobKind, PackEntry, MAX_BLOB_LEN};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, ID_LEN};

const INDEX_VERSION: u8 = 1;
const ENTRY_LEN: usize = 2 + 4 + 4 + 4 + ID_LEN;

/// Hasher for random ids: their first bytes are already uniformly distributed.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // The id bytes are the last write (after the slice length); keep their first 8 bytes.
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 = u64::from_le_bytes(b);
    }
}

/// A hash map keyed by ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Where a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Position of the pack in [`Index::pack_id`].
    pub pack: u32,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub kind: BlobKind,
    pub compressed: bool,
}

impl IndexEntry {
    /// The same location as a pack entry.
    pub fn to_pack_entry(&self, id: BlobId) -> PackEntry {
        PackEntry {
            kind: self.kind,
            compressed: self.compressed,
            id,
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
        }
    }
}

/// All blobs of a repository.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<PackId>,
    pack_pos: IdMap<PackId, u32>,
    blobs: IdMap<BlobId, IndexEntry>,
}

impl Index {
    /// Adds a pack's blobs; a blob already known keeps its first location.
    pub fn add_pack(&mut self, pack: PackId, entries: &[PackEntry]) {
        let pos = *self.pack_pos.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as u32
        });
        self.blobs.reserve(entries.len());
        for e in entries {
            self.blobs.entry(e.id).or_insert(IndexEntry {
                pack: pos,
                offset: e.offset,
                stored_len: e.stored_len,
                raw_len: e.raw_len,
                kind: e.kind,
                compressed: e.compressed,
            });
        }
    }

    /// Location of a blob.
    pub fn get(&self, id: &BlobId) -> Option<&IndexEntry> {
        self.blobs.get(id)
    }

    /// Whether a blob is known.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    /// The id of the pack at position `pos`.
    pub fn pack_id(&self, pos: u32) -> PackId {
        self.packs[pos as usize]
    }

    /// Every pack the index names.
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Every blob with its location.
    pub fn iter(&self) -> impl Iterator<Item = (&BlobId, &IndexEntry)> {
        self.blobs.iter()
    }

    /// Every pack with the blobs the index places in it, in pack order, blobs by offset.
    pub fn by_pack(&self) -> Vec<(PackId, Vec<PackEntry>)> {
        let mut out: Vec<(PackId, Vec<PackEntry>)> =
            self.packs.iter().map(|p| (*p, Vec::new())).collect();
        for (id, e) in &self.blobs {
            out[e.pack as usize].1.push(e.to_pack_entry(*id));
        }
        for (_, entries) in &mut out {
            entries.sort_by_key(|e| e.offset);
        }
        out
    }
}

/// Serializes index content: packs and their entries.
pub fn encode(packs: &[(PackId, Vec<PackEntry>)]) -> Vec<u8> {
    let blobs: usize = packs.iter().map(|(_, e)| e.len()).sum();
    let mut out = Vec::with_capacity(5 + packs.len() * (ID_LEN + 4) + blobs * ENTRY_LEN);
    out.push(INDEX_VERSION);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for (id, entries) in packs {
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            out.push(e.kind as u8);
            out.push(u8::from(e.compressed));
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.stored_len.to_le_bytes());
            out.extend_from_slice(&e.raw_len.to_le_bytes());
            out.extend_from_slice(&e.id.0);
        }
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    what: &'a str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::corrupt(self.what, "index is truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Parses index content; every count is checked against the bytes actually present.
pub fn decode(bytes: &[u8], what: &str) -> Result<Vec<(PackId, Vec<PackEntry>)>> {
    let mut r = Reader { buf: bytes, what };
    let bad = |reason: &str| Error::corrupt(what, format!("index: {reason}"));
    if r.take(1)?[0] != INDEX_VERSION {
        return Err(bad("unknown version"));
    }
    let pack_count = r.u32()? as usize;
    if pack_count > r.buf.len() / (ID_LEN + 4) {
        return Err(bad("pack count exceeds the object's size"));
    }
    let mut packs = Vec::with_capacity(pack_count);
    for _ in 0..pack_count {
        let id = PackId::from_slice(r.take(ID_LEN)?).ok_or_else(|| bad("bad pack id"))?;
        let n = r.u32()? as usize;
        if n > r.buf.len() / ENTRY_LEN {
            return Err(bad("blob count exceeds the object's size"));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let e = r.take(ENTRY_LEN)?;
            let kind = BlobKind::from_u8(e[0]).ok_or_else(|| bad("unknown blob type"))?;
            let compressed = match e[1] {
                0 => false,
                1 => true,
                _ => return Err(bad("unknown compression")),
            };
            let le = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
            let raw_len = le(10);
            if raw_len > MAX_BLOB_LEN {
                return Err(bad("blob length out of range"));
            }
            entries.push(PackEntry {
                kind,
                compressed,
                offset: le(2),
                stored_len: le(6),
                raw_len,
                id: BlobId::from_slice(&e[14..]).ok_or_else(|| bad("bad blob id"))?,
            });
        }
        packs.push((id, entries));
    }
    if !r.buf.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8) -> PackEntry {
        PackEntry {
            kind: if i % 2 == 0 {
                BlobKind::Data
            } else {
                BlobKind::Tree
            },
            compressed: i % 3 == 0,
            id: BlobId::hash(&[i]),
            offset: u32::from(i) * 100,
            stored_len: 100,
            raw_len: 120,
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let packs = vec![
            (PackId::hash(b"a"), (0..5).map(entry).collect::<Vec<_>>()),
            (PackId::hash(b"b"), vec![entry(9)]),
        ];
        let bytes = encode(&packs);
        assert_eq!(decode(&bytes, "i").expect("decode"), packs);
        for cut in [0, 1, 5, 40, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], "i").is_err(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge, "i").is_err());
    }

    #[test]
    fn in_memory_lookup_keeps_first_location() {
        let mut idx = Index::default();
        idx.add_pack(PackId::hash(b"a"), &[entry(1)]);
        idx.add_pack(PackId::hash(b"b"), &[entry(1), entry(2)]);
        assert_eq!(idx.len(), 2);
        let e = idx.get(&BlobId::hash(&[1])).expect("present");
        assert_eq!(idx.pack_id(e.pack), PackId::hash(b"a"));
        assert!(idx.contains(&BlobId::hash(&[2])));
        assert!(!idx.contains(&BlobId::hash(&[3])));
    }
}

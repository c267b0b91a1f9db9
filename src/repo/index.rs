//! The index: where each blob lives (pack, offset, length).
//!
//! On disk an index object lists packs and their blobs (see docs/FORMAT.md). In memory all index
//! objects merge into one [`Index`]: an [`IndexBuilder`] collects every pack's entries, then
//! [`IndexBuilder::finish`] sorts them by blob id into one flat table. A lookup goes to the
//! table's bucket for the id's first bits (ids are uniformly distributed hashes, so a bucket
//! holds a handful of entries) and binary-searches it.
//!
//! Memory is one table row per distinct blob: the 32-byte id and 20 bytes of location, 52 bytes,
//! plus under one byte of bucket table: about 53 bytes per blob, against ~130 for the hash map
//! this replaced (measured by `cargo bench --bench index_scale`). A repository of 10 million
//! chunks needs about half a GiB.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::pack::{BlobKind, PackEntry, MAX_BLOB_LEN, MAX_STORED_LEN};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, ID_LEN};

const INDEX_VERSION: u8 = 1;
const ENTRY_LEN: usize = 2 + 4 + 4 + 4 + ID_LEN;

/// Average number of table rows per bucket the bucket table aims at.
const ROWS_PER_BUCKET: usize = 4;
/// Upper bound of bucket-table bits (16 Mi buckets, 64 MiB of table for 64 Mi blobs and more).
const MAX_BUCKET_BITS: u32 = 24;

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

/// One row of the table: 52 bytes (checked by a test).
type Row = (BlobId, IndexEntry);

/// Collects the packs of index objects; [`IndexBuilder::finish`] makes the [`Index`].
#[derive(Debug, Default)]
pub struct IndexBuilder {
    packs: Vec<PackId>,
    pack_pos: IdMap<PackId, u32>,
    rows: Vec<Row>,
}

impl IndexBuilder {
    /// Adds a pack's blobs. A blob listed more than once keeps the location in the pack added
    /// first (and the lowest offset within it).
    pub fn add_pack(&mut self, pack: PackId, entries: &[PackEntry]) {
        let pos = *self.pack_pos.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as u32
        });
        self.rows.extend(entries.iter().map(|e| {
            (
                e.id,
                IndexEntry {
                    pack: pos,
                    offset: e.offset,
                    stored_len: e.stored_len,
                    raw_len: e.raw_len,
                    kind: e.kind,
                    compressed: e.compressed,
                },
            )
        }));
    }

    /// Sorts and deduplicates the rows into the lookup table.
    pub fn finish(self) -> Index {
        let IndexBuilder {
            packs, mut rows, ..
        } = self;
        // In place (no second copy of the table): by id, then by the order packs were added.
        rows.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.pack.cmp(&b.1.pack))
                .then(a.1.offset.cmp(&b.1.offset))
        });
        rows.dedup_by(|later, first| later.0 == first.0);
        rows.shrink_to_fit();
        let bits = bucket_bits(rows.len());
        let mut starts = vec![0u32; (1usize << bits) + 1];
        // starts[b] = first row whose bucket is >= b. Rows are sorted, so buckets ascend.
        let mut row = 0usize;
        for (b, start) in starts.iter_mut().enumerate() {
            while row < rows.len() && bucket(&rows[row].0, bits) < b {
                row += 1;
            }
            *start = row as u32;
        }
        Index {
            packs,
            rows,
            starts,
            bits,
        }
    }
}

/// How many leading id bits select a bucket for a table of `n` rows.
fn bucket_bits(n: usize) -> u32 {
    let buckets = (n / ROWS_PER_BUCKET).max(1);
    // floor(log2(buckets)), bounded.
    (usize::BITS - 1 - buckets.leading_zeros()).min(MAX_BUCKET_BITS)
}

/// The bucket of an id: its first `bits` bits.
fn bucket(id: &BlobId, bits: u32) -> usize {
    if bits == 0 {
        return 0;
    }
    let head = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
    (head >> (32 - bits)) as usize
}

/// All blobs of a repository: a table sorted by blob id, read-only once built.
#[derive(Debug)]
pub struct Index {
    packs: Vec<PackId>,
    rows: Vec<Row>,
    /// Row ranges per bucket: bucket `b` is `rows[starts[b]..starts[b + 1]]`.
    starts: Vec<u32>,
    bits: u32,
}

impl Default for Index {
    fn default() -> Self {
        IndexBuilder::default().finish()
    }
}

impl Index {
    /// Starts an index.
    pub fn builder() -> IndexBuilder {
        IndexBuilder::default()
    }

    /// Location of a blob.
    pub fn get(&self, id: &BlobId) -> Option<&IndexEntry> {
        let b = bucket(id, self.bits);
        let (lo, hi) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        let rows = &self.rows[lo..hi];
        rows.binary_search_by(|r| r.0.cmp(id))
            .ok()
            .map(|i| &rows[i].1)
    }

    /// Whether a blob is known.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.get(id).is_some()
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
        self.rows.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every blob with its location, by blob id.
    pub fn iter(&self) -> impl Iterator<Item = (&BlobId, &IndexEntry)> {
        self.rows.iter().map(|(id, e)| (id, e))
    }

    /// How many blobs the index places in `pack` (`None`: a pack it does not know).
    #[cfg(test)]
    pub fn blobs_in(&self, pack: &PackId) -> Option<usize> {
        let n = self.packs.iter().position(|p| p == pack)?;
        Some(
            self.rows
                .iter()
                .filter(|(_, e)| e.pack as usize == n)
                .count(),
        )
    }

    /// Every pack with the blobs the index places in it, in pack order, blobs by offset.
    pub fn by_pack(&self) -> Vec<(PackId, Vec<PackEntry>)> {
        let mut out: Vec<(PackId, Vec<PackEntry>)> =
            self.packs.iter().map(|p| (*p, Vec::new())).collect();
        for (id, e) in &self.rows {
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
            let (stored_len, raw_len) = (le(6), le(10));
            // A reader allocates the stored length before it reads a blob: bound it too.
            if raw_len > MAX_BLOB_LEN || stored_len > MAX_STORED_LEN {
                return Err(bad("blob length out of range"));
            }
            entries.push(PackEntry {
                kind,
                compressed,
                offset: le(2),
                stored_len,
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
    fn a_hostile_stored_length_is_refused() {
        // An entry's stored length is what a reader allocates before it reads the blob: an
        // index claiming a 4 GiB blob made restore allocate 4 GiB.
        let mut e = entry(1);
        e.stored_len = u32::MAX;
        let bytes = encode(&[(PackId::hash(b"a"), vec![e])]);
        let err = decode(&bytes, "i").expect_err("refused").to_string();
        assert!(err.contains("blob length out of range"), "{err}");
        e.stored_len = MAX_STORED_LEN;
        e.raw_len = MAX_BLOB_LEN;
        assert!(decode(&encode(&[(PackId::hash(b"a"), vec![e])]), "i").is_ok());
    }

    #[test]
    fn in_memory_lookup_keeps_first_location() {
        let mut b = Index::builder();
        b.add_pack(PackId::hash(b"a"), &[entry(1)]);
        b.add_pack(PackId::hash(b"b"), &[entry(1), entry(2)]);
        let idx = b.finish();
        assert_eq!(idx.len(), 2);
        let e = idx.get(&BlobId::hash(&[1])).expect("present");
        assert_eq!(idx.pack_id(e.pack), PackId::hash(b"a"));
        assert!(idx.contains(&BlobId::hash(&[2])));
        assert!(!idx.contains(&BlobId::hash(&[3])));
    }

    #[test]
    fn a_row_is_52_bytes() {
        assert_eq!(std::mem::size_of::<Row>(), 52);
    }

    #[test]
    fn empty_index_finds_nothing() {
        let idx = Index::default();
        assert!(idx.is_empty());
        assert!(idx.get(&BlobId::hash(b"x")).is_none());
        assert_eq!(idx.iter().count(), 0);
    }

    #[test]
    fn first_pack_wins_even_when_added_later_in_the_table() {
        // The same blob in three packs: the location of the pack added first is kept, whatever
        // the pack ids' order.
        let id = BlobId::hash(b"dup");
        let at = |offset| PackEntry {
            kind: BlobKind::Data,
            compressed: false,
            id,
            offset,
            stored_len: 10,
            raw_len: 10,
        };
        let mut b = Index::builder();
        b.add_pack(PackId([9; 32]), &[at(300)]);
        b.add_pack(PackId([1; 32]), &[at(100)]);
        b.add_pack(PackId([9; 32]), &[at(50)]);
        let idx = b.finish();
        assert_eq!(idx.len(), 1);
        let e = idx.get(&id).expect("present");
        assert_eq!(idx.pack_id(e.pack), PackId([9; 32]));
        assert_eq!(e.offset, 50, "lowest offset within the first pack");
    }

    proptest::proptest! {
        /// The table answers exactly like a hash map of the first locations, for present and
        /// absent ids, at sizes around bucket boundaries, and with ids sharing leading bytes.
        #[test]
        fn table_matches_a_hash_map(
            seeds in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..600),
            per_pack in 1usize..40,
            prefix in 0usize..5,
        ) {
            let mut reference: HashMap<BlobId, (PackId, u32)> = HashMap::new();
            let mut b = Index::builder();
            for (p, chunk) in seeds.chunks(per_pack).enumerate() {
                let pack = PackId::hash(&p.to_le_bytes());
                let entries: Vec<PackEntry> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let mut id = BlobId::hash(&s.to_le_bytes());
                        // Force shared leading bytes: many ids land in one bucket.
                        id.0[..prefix].fill(0);
                        PackEntry {
                            kind: BlobKind::Data,
                            compressed: true,
                            id,
                            offset: i as u32 * 7,
                            stored_len: 7,
                            raw_len: 9,
                        }
                    })
                    .collect();
                for e in &entries {
                    let first = reference.entry(e.id).or_insert((pack, e.offset));
                    if first.0 == pack && e.offset < first.1 {
                        first.1 = e.offset;
                    }
                }
                b.add_pack(pack, &entries);
            }
            let idx = b.finish();
            proptest::prop_assert_eq!(idx.len(), reference.len());
            for (id, (pack, offset)) in &reference {
                let e = idx.get(id).expect("present");
                proptest::prop_assert_eq!(idx.pack_id(e.pack), *pack);
                proptest::prop_assert_eq!(e.offset, *offset);
            }
            for s in 0..200u16 {
                let absent = BlobId::hash(&[s.to_le_bytes().as_slice(), b"absent"].concat());
                proptest::prop_assert!(idx.get(&absent).is_none());
            }
            let listed: Vec<&BlobId> = idx.iter().map(|(id, _)| id).collect();
            proptest::prop_assert!(listed.windows(2).all(|w| w[0] < w[1]));
        }
    }
}

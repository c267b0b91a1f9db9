//! What a mount keeps of what it read: verified chunks and parsed directory listings, each in
//! a least-recently-used cache bounded by bytes; and where in a file each chunk begins.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

/// A least-recently-used cache of at most `capacity` bytes (as each value's cost says). A value
/// larger than the whole capacity is not kept.
#[derive(Debug)]
pub struct Lru<K, V> {
    capacity: usize,
    used: usize,
    tick: u64,
    map: HashMap<K, (Arc<V>, usize, u64)>,
    /// Tick of last use to key: the oldest first.
    order: BTreeMap<u64, K>,
}

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    /// An empty cache of `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            used: 0,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The value of `key`, marked as just used.
    pub fn get(&mut self, key: &K) -> Option<Arc<V>> {
        self.tick += 1;
        let tick = self.tick;
        let (value, _, used) = self.map.get_mut(key)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, key.clone());
        Some(value.clone())
    }

    /// Keeps `value` (costing `cost` bytes) under `key`, dropping the least recently used
    /// values as needed.
    pub fn put(&mut self, key: K, value: Arc<V>, cost: usize) {
        if cost > self.capacity {
            return;
        }
        if let Some((_, old_cost, old_tick)) = self.map.remove(&key) {
            self.order.remove(&old_tick);
            self.used -= old_cost;
        }
        while self.used + cost > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, c, _)) = self.map.remove(&oldest) {
                self.used -= c;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, (value, cost, self.tick));
        self.used += cost;
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used
    }
}

/// Where each chunk of a file begins, from the chunk sizes the index gives: `starts[i]` is
/// the offset of chunk `i`, and the last element the end of the last chunk whose size is
/// known. A chunk the index does not have ends what is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkMap {
    starts: Vec<u64>,
}

impl ChunkMap {
    /// The map of chunks of these sizes (`None`: not in the index).
    pub fn new(sizes: impl IntoIterator<Item = Option<u64>>) -> Self {
        let mut starts = vec![0u64];
        let mut at = 0u64;
        for size in sizes {
            let Some(size) = size else { break };
            at = at.saturating_add(size);
            starts.push(at);
        }
        ChunkMap { starts }
    }

    /// How many leading chunks have a known place.
    pub fn known(&self) -> usize {
        self.starts.len() - 1
    }

    /// The end of the last chunk with a known place.
    pub fn known_len(&self) -> u64 {
        self.starts[self.starts.len() - 1]
    }

    /// The chunks that hold bytes `from..to` (with `to` at most [`ChunkMap::known_len`]):
    /// each chunk's number, and the range of its bytes that lies within `from..to`.
    /// Found by binary search over the chunk starts.
    pub fn span(&self, from: u64, to: u64) -> Vec<(usize, std::ops::Range<usize>)> {
        let mut out = Vec::new();
        if from >= to || to > self.known_len() {
            return out;
        }
        // The last chunk starting at or before `from` (chunks of size 0 are skipped over).
        let mut i = self.starts.partition_point(|&s| s <= from) - 1;
        while i < self.known() && self.starts[i] < to {
            let (start, end) = (self.starts[i], self.starts[i + 1]);
            if end > from && end > start {
                let a = from.max(start) - start;
                let b = to.min(end) - start;
                out.push((i, a as usize..b as usize));
            }
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache holds at most its capacity, drops the least recently used first (a `get`
    /// counts as a use), and never keeps a value larger than itself.
    #[test]
    fn lru_keeps_the_recently_used_within_its_bytes() {
        let mut c: Lru<u32, Vec<u8>> = Lru::new(100);
        c.put(1, Arc::new(vec![1]), 40);
        c.put(2, Arc::new(vec![2]), 40);
        assert!(c.get(&1).is_some());
        c.put(3, Arc::new(vec![3]), 40);
        assert!(c.get(&2).is_none(), "the least recently used went");
        assert!(c.get(&1).is_some() && c.get(&3).is_some());
        assert_eq!(c.used(), 80);
        c.put(4, Arc::new(vec![4]), 101);
        assert!(c.get(&4).is_none());
        c.put(3, Arc::new(vec![5]), 10);
        assert_eq!(c.used(), 50);
        assert_eq!(c.get(&3).map(|v| v[0]), Some(5));
    }

    /// A read's chunks and the part of each it needs, found by offset: within one chunk,
    /// across chunk boundaries, at the exact start of a chunk, over empty chunks; nothing past
    /// a chunk the index lacks.
    #[test]
    fn chunk_map_finds_the_chunks_of_a_range() {
        let m = ChunkMap::new([Some(10), Some(0), Some(5), Some(20)]);
        assert_eq!(m.known_len(), 35);
        assert_eq!(m.span(0, 4), vec![(0, 0..4)]);
        assert_eq!(m.span(8, 12), vec![(0, 8..10), (2, 0..2)]);
        assert_eq!(m.span(10, 15), vec![(2, 0..5)]);
        assert_eq!(m.span(14, 35), vec![(2, 4..5), (3, 0..20)]);
        assert_eq!(m.span(34, 36), vec![], "past the end is not served");
        assert_eq!(m.span(5, 5), vec![]);
        let partial = ChunkMap::new([Some(10), None, Some(5)]);
        assert_eq!((partial.known(), partial.known_len()), (1, 10));
        assert_eq!(partial.span(0, 10), vec![(0, 0..10)]);
        assert!(partial.span(5, 11).is_empty());
    }
}

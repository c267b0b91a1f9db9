//! Index scale: how long a repository with many distinct chunks takes to open for a backup,
//! and how much memory its index takes per chunk.
//!
//! Writes a synthetic index (random chunk ids in packs of 400 chunks, spread over index objects
//! of 100,000 chunks, as backups write them) into a repository in a temporary directory, then
//! loads it the way a backup does and reports the time and the growth of the process's peak
//! resident memory (VmHWM). Run with
//!
//!     cargo bench --bench index_scale                    # 10 million chunks
//!     LIFEBOAT_BENCH_CHUNKS=1000000 cargo bench --bench index_scale
//!
//! Needs about 45 bytes of disk per chunk (450 MB for 10 million) in $TMPDIR.

use std::time::Instant;

use lifeboat::id::{BlobId, PackId};
use lifeboat::repo::{BlobKind, InitOptions, KdfSetting, PackEntry, Repository};
use lifeboat::storage::LocalStorage;
use rand::{RngCore, SeedableRng};

/// Peak resident memory of this process so far, in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs the bench without it, as a
    // check that it still works: a small index then (the figures mean nothing at that size).
    let measuring = std::env::args().any(|a| a == "--bench");
    let chunks: u64 = std::env::var("LIFEBOAT_BENCH_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 10_000_000 } else { 100_000 });
    let dir = tempfile::tempdir().expect("temporary directory");
    let opts = InitOptions {
        kdf: KdfSetting::CHEAPEST,
        ..InitOptions::default()
    };
    let storage = std::sync::Arc::new(LocalStorage::new(dir.path().join("repo")));
    let repo = Repository::init(storage, &opts, Some(b"bench")).expect("init");

    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let per_pack = 400u64;
    let per_index = 100_000u64;
    let mut written = 0u64;
    while written < chunks {
        let mut packs = Vec::new();
        let mut in_index = 0;
        while in_index < per_index && written < chunks {
            let mut pack_id = [0u8; 32];
            rng.fill_bytes(&mut pack_id);
            let n = per_pack.min(chunks - written);
            let mut entries = Vec::with_capacity(n as usize);
            for i in 0..n {
                let mut id = [0u8; 32];
                rng.fill_bytes(&mut id);
                entries.push(PackEntry {
                    kind: BlobKind::Data,
                    compressed: true,
                    id: BlobId(id),
                    offset: (i * 40_000) as u32,
                    stored_len: 40_000,
                    raw_len: 65_536,
                });
            }
            // An empty stand-in for the pack (loading the index leaves out packs missing
            // from storage, holding their entries aside until it is sure they are missing).
            let name = PackId(pack_id).to_hex();
            std::fs::File::create(dir.path().join("repo/data").join(&name[..2]).join(&name))
                .expect("create stand-in pack");
            packs.push((PackId(pack_id), entries));
            written += n;
            in_index += n;
        }
        repo.save_index(&packs).expect("save index");
    }
    let write_secs = started.elapsed().as_secs_f64();

    let before = peak_rss();
    let started = Instant::now();
    let index = repo.load_index().expect("load index");
    let load_secs = started.elapsed().as_secs_f64();
    let after = peak_rss();
    assert_eq!(index.len() as u64, chunks);
    let grown = after.saturating_sub(before);
    println!(
        "index_scale: {chunks} chunks in {} packs: written in {write_secs:.1} s; loaded in {load_secs:.2} s; \
         peak RSS {:.0} MiB (+{:.0} MiB while loading, {:.0} bytes per chunk)",
        index.packs().len(),
        after as f64 / 1048576.0,
        grown as f64 / 1048576.0,
        grown as f64 / chunks as f64
    );

    // Lookup speed: a backup asks for every chunk of every file it reads.
    let present: Vec<BlobId> = index.iter().step_by(10).map(|(id, _)| *id).collect();
    let started = Instant::now();
    let found = present.iter().filter(|id| index.contains(id)).count();
    let present_ns = started.elapsed().as_nanos() as f64 / present.len().max(1) as f64;
    assert_eq!(found, present.len());
    let absent: Vec<BlobId> = (0..present.len())
        .map(|_| {
            let mut id = [0u8; 32];
            rng.fill_bytes(&mut id);
            BlobId(id)
        })
        .collect();
    let started = Instant::now();
    let found = absent.iter().filter(|id| index.contains(id)).count();
    let absent_ns = started.elapsed().as_nanos() as f64 / absent.len().max(1) as f64;
    assert_eq!(found, 0);
    println!(
        "index_scale: lookups of {} present ids: {present_ns:.0} ns each; of absent ids: {absent_ns:.0} ns each",
        present.len()
    );
}

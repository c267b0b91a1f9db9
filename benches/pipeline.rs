//! Micro-benchmarks of the backup hot path: chunk → hash → compress (+ verify), and the
//! restore path's decode (open, decompress, re-hash). Run with `cargo bench --bench pipeline`.
//!
//! The input is deterministic: half compressible text (log-like lines), half random bytes, so
//! both zstd outcomes (stored compressed, stored raw) are exercised.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastcdc::v2020::FastCDC;
use lifeboat::id::BlobId;
use lifeboat::repo::config::ChunkerParams;
use lifeboat::repo::pack::{decode_blob, encode_blob, PackEntry};
use lifeboat::repo::{BlobKind, Sealer};
use rand::{RngCore, SeedableRng};

const SIZE: usize = 32 << 20;

fn dataset() -> Vec<u8> {
    let mut data = Vec::with_capacity(SIZE);
    let mut n = 0u64;
    while data.len() < SIZE / 2 {
        n += 1;
        data.extend_from_slice(
            format!("2026-11-26T10:{:02}:{:02}Z app[{}]: request id={} path=/api/v1/items/{} status=200 took={}ms\n",
                n % 60, (n * 7) % 60, n % 97, n * 7919, n % 1000, n % 250)
                .as_bytes(),
        );
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut noise = vec![0u8; SIZE - data.len()];
    rng.fill_bytes(&mut noise);
    data.extend_from_slice(&noise);
    data
}

fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let p = ChunkerParams::default();
    FastCDC::new(data, p.min_size, p.avg_size, p.max_size)
        .map(|c| &data[c.offset..c.offset + c.length])
        .collect()
}

fn bench(c: &mut Criterion) {
    let data = dataset();
    let sealer = Sealer::default();
    let p = ChunkerParams::default();
    let mut g = c.benchmark_group("backup_path");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc_chunk", |b| {
        b.iter(|| FastCDC::new(black_box(&data), p.min_size, p.avg_size, p.max_size).count())
    });
    g.bench_function("blake3_hash_chunks", |b| {
        let cs = chunks(&data);
        b.iter(|| {
            cs.iter()
                .fold(0u8, |acc, c| acc ^ BlobId::hash(black_box(c)).0[0])
        })
    });
    g.bench_function("encode_blob_zstd3_verified", |b| {
        let cs = chunks(&data);
        b.iter(|| {
            cs.iter()
                .map(|c| {
                    encode_blob(&sealer, BlobKind::Data, BlobId::hash(c), black_box(c), 3)
                        .map(|e| e.stored.len())
                        .unwrap_or(0)
                })
                .sum::<usize>()
        })
    });
    g.bench_function("chunk_hash_encode", |b| {
        b.iter(|| {
            chunks(black_box(&data))
                .into_iter()
                .map(|c| {
                    encode_blob(&sealer, BlobKind::Data, BlobId::hash(c), c, 3)
                        .map(|e| e.stored.len())
                        .unwrap_or(0)
                })
                .sum::<usize>()
        })
    });
    let encoded: Vec<_> = chunks(&data)
        .into_iter()
        .filter_map(|c| encode_blob(&sealer, BlobKind::Data, BlobId::hash(c), c, 3).ok())
        .collect();
    g.bench_function("restore_decode_verify", |b| {
        b.iter(|| {
            encoded
                .iter()
                .map(|e| {
                    let entry = PackEntry {
                        kind: e.kind,
                        compressed: e.compressed,
                        id: e.id,
                        offset: 0,
                        stored_len: e.stored.len() as u32,
                        raw_len: e.raw_len,
                    };
                    decode_blob(&sealer, &entry, black_box(&e.stored), "bench")
                        .map(|r| r.len())
                        .unwrap_or(0)
                })
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

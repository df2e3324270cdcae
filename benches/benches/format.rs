//! Micro-benchmarks of the format layer: envelope seal/open, keyed id hashing, chunking.
//!
//! Run: `cargo bench -p cairn-benches --bench format`. Throughput is reported in MB/s of
//! plaintext.
#![allow(missing_docs, clippy::unwrap_used)]

use cairn_format::envelope::{self, Compression, ObjectKind};
use cairn_format::{Chunker, ChunkerParams, MasterKey};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const SIZE: usize = 1 << 20;

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut random = vec![0u8; SIZE];
    rng.fill_bytes(&mut random);
    // Text-like data: compresses about 3-4x with zstd -3.
    let words = [
        "backup ",
        "restore ",
        "chunk ",
        "pack ",
        "index ",
        "snapshot ",
        "tree ",
        "blob\n",
    ];
    let mut text = Vec::with_capacity(SIZE);
    while text.len() < SIZE {
        let w = words[(rng.next_u32() as usize) % words.len()];
        text.extend_from_slice(w.as_bytes());
        text.extend_from_slice(format!("{} ", rng.next_u32() % 1000).as_bytes());
    }
    text.truncate(SIZE);
    vec![("random", random), ("text", text)]
}

fn envelope_bench(c: &mut Criterion) {
    let key = MasterKey::from_parts([1; 32], [2; 32], [3; 32]);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let id = [9u8; 32];
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Bytes(SIZE as u64));
    for (name, data) in inputs() {
        for (cname, comp) in [
            ("raw", Compression::Off),
            ("zstd2", Compression::Zstd(2)),
            ("zstd3", Compression::Zstd(3)),
        ] {
            g.bench_with_input(
                BenchmarkId::new(format!("seal/{cname}"), name),
                &data,
                |b, d| {
                    b.iter(|| {
                        envelope::seal(&key, ObjectKind::DataBlob, &id, d, comp, &mut rng).unwrap()
                    })
                },
            );
            let sealed =
                envelope::seal(&key, ObjectKind::DataBlob, &id, &data, comp, &mut rng).unwrap();
            g.bench_with_input(
                BenchmarkId::new(format!("open/{cname}"), name),
                &sealed,
                |b, s| {
                    b.iter(|| envelope::open(&key, ObjectKind::DataBlob, &id, s, "blob").unwrap())
                },
            );
        }
    }
    g.finish();
}

fn id_bench(c: &mut Criterion) {
    let key = MasterKey::from_parts([1; 32], [2; 32], [3; 32]).id_key();
    let mut g = c.benchmark_group("id");
    for size in [4 * 1024, SIZE] {
        let data = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("keyed_blake3", size), &data, |b, d| {
            b.iter(|| key.blob_id(d))
        });
    }
    g.finish();
}

fn chunker_bench(c: &mut Criterion) {
    let chunker = Chunker::new(&[7; 32], ChunkerParams::default()).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut data = vec![0u8; 16 * SIZE];
    rng.fill_bytes(&mut data);
    let mut g = c.benchmark_group("chunker");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(20);
    g.bench_function("fastcdc2020_keyed/random_16MiB", |b| {
        b.iter(|| chunker.chunk_lengths(&data))
    });
    g.finish();
}

criterion_group!(benches, envelope_bench, id_bench, chunker_bench);
criterion_main!(benches);

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Property tests of the keyed FastCDC chunker: size limits, determinism, keying, streaming
//! equivalence and stability of earlier cut points under appends.

use std::collections::BTreeSet;

use cairn_format::{Chunker, ChunkerParams, FormatError};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

fn params(min_size: u32, avg_size: u32, max_size: u32, normalization: u8) -> ChunkerParams {
    ChunkerParams {
        min_size,
        avg_size,
        max_size,
        normalization,
    }
}

/// Named parameter sets, including sizes that are not powers of two (but even, as required).
fn fixed_params() -> Vec<ChunkerParams> {
    vec![
        params(2048, 8192, 32768, 1),
        params(4000, 12000, 48000, 1),
        params(4000, 12000, 48000, 3),
        params(64, 300, 1026, 0),
        params(64, 300, 1026, 2),
        params(64, 256, 1024, 3),
        params(1000, 1000, 1024, 1),
    ]
}

/// Small valid parameters so that inputs of a few hundred KiB hold many chunks.
fn small_params() -> impl Strategy<Value = ChunkerParams> {
    prop_oneof![
        select(fixed_params()),
        (128u32..=8192, 0u8..=3)
            .prop_flat_map(|(avg_half, normalization)| {
                let avg = avg_half * 2;
                (
                    Just(avg),
                    32u32..=avg / 2,
                    avg.max(1024) / 2..=avg * 4,
                    Just(normalization),
                )
            })
            .prop_map(|(avg, min_half, max_half, n)| params(min_half * 2, avg, max_half * 2, n)),
    ]
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Inputs: random, all zero (no cut point ever matches), small alphabet, and a repeated block.
fn input(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (0..=max, any::<u64>()).prop_map(|(len, seed)| random_bytes(seed, len)),
        1 => (0..=max).prop_map(|len| vec![0u8; len]),
        1 => (0..=max, any::<u64>()).prop_map(|(len, seed)| {
            random_bytes(seed, len).into_iter().map(|b| b & 3).collect()
        }),
        1 => (0..=max, 1usize..5000, any::<u64>()).prop_map(|(len, block, seed)| {
            random_bytes(seed, block).into_iter().cycle().take(len).collect()
        }),
    ]
}

fn cut_points(lengths: &[usize]) -> Vec<usize> {
    lengths
        .iter()
        .scan(0, |end, len| {
            *end += len;
            Some(*end)
        })
        .collect()
}

/// Feeds `data` through `next_chunk` the way a streaming reader does: keep a buffer, ask for the
/// next chunk, and read another piece (sizes taken in turn from `pieces`) only when it says
/// `None`.
fn stream_lengths(chunker: &Chunker, data: &[u8], pieces: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut next_piece = pieces.iter().cycle();
    loop {
        let eof = pos == data.len();
        match chunker.next_chunk(&buf, eof) {
            Some(0) => {
                assert!(eof && buf.is_empty(), "empty chunk before the end");
                return out;
            }
            Some(n) => {
                assert!(n <= buf.len());
                out.push(n);
                buf.drain(..n);
            }
            None => {
                assert!(!eof, "None at end of input");
                let step = (*next_piece.next().unwrap()).min(data.len() - pos);
                buf.extend_from_slice(&data[pos..pos + step]);
                pos += step;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn lengths_cover_input_within_limits(
        seed in any::<[u8; 32]>(),
        p in small_params(),
        data in input(200_000),
    ) {
        let chunker = Chunker::new(&seed, p).unwrap();
        prop_assert_eq!(chunker.params(), p);
        let lengths = chunker.chunk_lengths(&data);
        prop_assert_eq!(lengths.iter().sum::<usize>(), data.len());
        prop_assert_eq!(lengths.is_empty(), data.is_empty());
        if let Some((last, rest)) = lengths.split_last() {
            for (i, len) in rest.iter().enumerate() {
                prop_assert!(*len >= p.min_size as usize, "chunk {} of {}: {} < min", i, lengths.len(), len);
                prop_assert!(*len <= p.max_size as usize, "chunk {}: {} > max", i, len);
            }
            prop_assert!(*last >= 1 && *last <= p.max_size as usize);
        }
    }

    #[test]
    fn chunking_is_deterministic(
        seed in any::<[u8; 32]>(),
        p in small_params(),
        data in input(100_000),
    ) {
        let a = Chunker::new(&seed, p).unwrap();
        let b = Chunker::new(&seed, p).unwrap();
        let first = a.chunk_lengths(&data);
        prop_assert_eq!(&first, &a.chunk_lengths(&data));
        prop_assert_eq!(&first, &b.chunk_lengths(&data));
        prop_assert_eq!(&first, &a.clone().chunk_lengths(&data));
    }

    #[test]
    fn streaming_equals_whole_input(
        seed in any::<[u8; 32]>(),
        p in small_params(),
        data in input(200_000),
        pieces in vec(prop_oneof![1usize..64, 1usize..5000, 1usize..100_000], 1..8),
    ) {
        let chunker = Chunker::new(&seed, p).unwrap();
        let whole = chunker.chunk_lengths(&data);
        let streamed = stream_lengths(&chunker, &data, &pieces);
        prop_assert_eq!(streamed, whole);
    }

    #[test]
    fn appending_never_moves_earlier_cut_points(
        seed in any::<[u8; 32]>(),
        p in small_params(),
        prefix in input(150_000),
        suffix in input(60_000),
    ) {
        let chunker = Chunker::new(&seed, p).unwrap();
        let short = cut_points(&chunker.chunk_lengths(&prefix));
        let mut longer = prefix.clone();
        longer.extend_from_slice(&suffix);
        let long = cut_points(&chunker.chunk_lengths(&longer));
        let max = p.max_size as usize;
        // A cut point c with c + max_size <= len(prefix) belongs to a chunk that started at least
        // max_size before the end of the prefix, so its scan never saw the end.
        let stable: Vec<usize> = short
            .iter()
            .copied()
            .take_while(|c| c + max <= prefix.len())
            .collect();
        prop_assert!(long.len() >= stable.len());
        prop_assert_eq!(&long[..stable.len()], stable.as_slice());
    }

    #[test]
    fn different_seeds_cut_differently(
        a in any::<[u8; 32]>(),
        b in any::<[u8; 32]>(),
        data_seed in any::<u64>(),
    ) {
        prop_assume!(a != b);
        let p = params(2048, 8192, 32768, 1);
        let data = random_bytes(data_seed, 128 * 1024);
        let ca = Chunker::new(&a, p).unwrap().chunk_lengths(&data);
        let cb = Chunker::new(&b, p).unwrap().chunk_lengths(&data);
        prop_assert_ne!(ca, cb);
    }
}

#[test]
fn different_seeds_give_unrelated_cut_points_on_1mib() {
    let data = random_bytes(7, 1 << 20);
    let p = params(2048, 8192, 32768, 1);
    let seeds = [[1u8; 32], [2u8; 32], [0xa5; 32]];
    let cuts: Vec<BTreeSet<usize>> = seeds
        .iter()
        .map(|s| {
            let lengths = Chunker::new(s, p).unwrap().chunk_lengths(&data);
            let mut c = cut_points(&lengths);
            c.pop(); // the end of input is a cut point under every seed
            c.into_iter().collect()
        })
        .collect();
    for c in &cuts {
        // 1 MiB at ~8 KiB per chunk: on the order of a hundred cut points.
        assert!((40..=400).contains(&c.len()), "{} cut points", c.len());
    }
    for i in 0..cuts.len() {
        for j in i + 1..cuts.len() {
            assert_ne!(cuts[i], cuts[j]);
            let shared = cuts[i].intersection(&cuts[j]).count();
            // Independent gear tables: a shared cut point is a coincidence (~1 in several
            // thousand positions), so at most a handful are shared.
            assert!(
                shared * 10 < cuts[i].len().min(cuts[j].len()),
                "seeds {i} and {j} share {shared} of {} cut points",
                cuts[i].len()
            );
        }
    }
}

#[test]
fn mean_chunk_size_is_near_the_target_on_random_data() {
    let data = random_bytes(11, 1 << 20);
    for p in fixed_params() {
        let lengths = Chunker::new(&[3; 32], p).unwrap().chunk_lengths(&data);
        let mean = data.len() / lengths.len();
        let avg = p.avg_size as usize;
        assert!(
            mean >= avg / 2 && mean <= avg * 2,
            "{p:?}: mean chunk {mean} for target {avg}"
        );
    }
}

#[test]
fn next_chunk_edge_cases() {
    let p = params(4000, 12000, 48000, 1);
    let c = Chunker::new(&[9; 32], p).unwrap();
    assert_eq!(c.next_chunk(&[], true), Some(0));
    assert_eq!(c.next_chunk(&[], false), None);
    assert!(c.chunk_lengths(&[]).is_empty());
    // Less than min_size buffered and more to come: undecided; at the end: everything.
    let data = random_bytes(1, 3999);
    assert_eq!(c.next_chunk(&data, false), None);
    assert_eq!(c.next_chunk(&data, true), Some(3999));
    // max_size buffered: always decided, and never more than max_size.
    let zeros = vec![0u8; 48000];
    assert_eq!(c.next_chunk(&zeros, false), Some(48000));
    let zeros = vec![0u8; 100_001];
    assert_eq!(c.next_chunk(&zeros, false), Some(48000));
    assert_eq!(c.chunk_lengths(&zeros), vec![48000, 48000, 4001]);
}

#[test]
fn invalid_parameters_are_rejected() {
    let seed = [0u8; 32];
    let bad = [
        params(4001, 12000, 48000, 1),         // odd min
        params(4000, 12001, 48000, 1),         // odd avg
        params(4000, 12000, 48001, 1),         // odd max
        params(62, 300, 1026, 1),              // min below 64
        params(64, 254, 1026, 1),              // avg below 256
        params(64, 300, 1022, 1),              // max below 1 KiB
        params(20000, 12000, 48000, 1),        // min > avg
        params(4000, 50000, 48000, 1),         // avg > max
        params(4000, 12000, 48000, 4),         // normalization above 3
        params(2 << 20, 4 << 20, 16 << 20, 1), // min above 1 MiB
        params(64, 8 << 20, 16 << 20, 1),      // avg above 4 MiB
        params(64, 4 << 20, 32 << 20, 1),      // max above 16 MiB
    ];
    for p in bad {
        assert!(
            matches!(p.validate(), Err(FormatError::InvalidParameter { .. })),
            "{p:?} accepted"
        );
        assert!(
            matches!(
                Chunker::new(&seed, p),
                Err(FormatError::InvalidParameter { .. })
            ),
            "{p:?} accepted by Chunker::new"
        );
    }
    for p in fixed_params().into_iter().chain([ChunkerParams::default()]) {
        p.validate().unwrap();
    }
}

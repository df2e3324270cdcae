//! Keyed FastCDC on arbitrary parameters and data: `Chunker::new` may reject parameters but never
//! panics; with valid ones, `chunk_lengths` covers the input exactly, every chunk but the last is
//! at least `min_size`, none exceeds `max_size`, and `next_chunk` never runs past the input.
#![no_main]

use arbitrary::Arbitrary;
use cairn_format::{Chunker, ChunkerParams};
use libfuzzer_sys::fuzz_target;

/// Raw parameters are almost never valid, so most inputs use small sizes scaled into (or near)
/// the valid ranges, which also makes cuts happen within libFuzzer's few-KiB inputs.
#[derive(Debug, Arbitrary)]
enum Params {
    Raw {
        min: u32,
        avg: u32,
        max: u32,
        normalization: u8,
    },
    Small {
        min: u16,
        avg: u16,
        max: u16,
        normalization: u8,
    },
}

impl Params {
    fn get(&self) -> ChunkerParams {
        match *self {
            Params::Raw {
                min,
                avg,
                max,
                normalization,
            } => ChunkerParams {
                min_size: min,
                avg_size: avg,
                max_size: max,
                normalization,
            },
            Params::Small {
                min,
                avg,
                max,
                normalization,
            } => ChunkerParams {
                min_size: 62 + 2 * u32::from(min % 512),
                avg_size: 254 + 2 * u32::from(avg % 2048),
                max_size: 1022 + 2 * u32::from(max % 8192),
                normalization: normalization % 5,
            },
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    seed: [u8; 32],
    params: Params,
    data: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let params = input.params.get();
    let Ok(chunker) = Chunker::new(&input.seed, params) else {
        return;
    };
    assert_eq!(chunker.params(), params);
    let data = input.data;
    let min = params.min_size as usize;
    let max = params.max_size as usize;

    let lengths = chunker.chunk_lengths(data);
    assert_eq!(lengths.iter().sum::<usize>(), data.len());
    if let Some((_, but_last)) = lengths.split_last() {
        assert!(but_last.iter().all(|&l| l >= min), "{lengths:?} min {min}");
    }
    assert!(
        lengths.iter().all(|&l| l <= max && l > 0),
        "{lengths:?} max {max}"
    );

    for eof in [false, true] {
        match chunker.next_chunk(data, eof) {
            Some(n) => assert!(n <= data.len(), "next_chunk {n} > {}", data.len()),
            None => assert!(!eof, "next_chunk at eof must decide"),
        }
    }
    if let Some(&first) = lengths.first() {
        assert_eq!(chunker.next_chunk(data, true), Some(first));
    }
});

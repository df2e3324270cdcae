//! Keyed content-defined chunking (FastCDC 2020 with a secret gear table).
//!
//! FastCDC cuts where a rolling "gear" hash of the data matches a mask. With the published gear
//! table, cut points (and so chunk lengths) leak information about content: an observer of pack
//! sizes can test for known files. Cairn draws the whole 256-entry table from the repository's
//! secret chunker seed:
//!
//! ```text
//! stream  = BLAKE3 keyed with chunker_seed, input "cairn gear table v1", extended output (XOF)
//! gear[i] = u64 little-endian of stream bytes 8*i .. 8*i+8, for i in 0..256
//! gear_ls[i] = gear[i] << 1
//! ```
//!
//! The scan itself is `fastcdc::v2020::cut_gear` with normalization level
//! [`ChunkerParams::normalization`] and masks from `fastcdc::v2020::select_masks`.

use fastcdc::v2020::{Normalization, cut_gear, select_masks};

use crate::codec::{Reader, Writer};
use crate::error::{FormatError, Result};

/// Context string of the gear table derivation.
pub const GEAR_CONTEXT: &[u8] = b"cairn gear table v1";

/// Chunk size limits, stored in the repository config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkerParams {
    /// Smallest chunk (except a stream's last).
    pub min_size: u32,
    /// Target average.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
    /// FastCDC normalization level, 0..=3.
    pub normalization: u8,
}

impl Default for ChunkerParams {
    /// 512 KiB / 1 MiB / 8 MiB, normalization 1: the sizes restic and rustic use, which keep the
    /// index near one entry per MiB of unique data while still deduplicating edits within files.
    fn default() -> Self {
        Self {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
            normalization: 1,
        }
    }
}

impl ChunkerParams {
    /// Checks the limits FastCDC imposes: even sizes, min 64..=1 MiB, avg 256..=4 MiB,
    /// max 1 KiB..=16 MiB, min <= avg <= max, normalization <= 3.
    pub fn validate(&self) -> Result<()> {
        let (min, avg, max) = (self.min_size, self.avg_size, self.max_size);
        let ok = min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0
            && (64..=1024 * 1024).contains(&min)
            && (256..=4 * 1024 * 1024).contains(&avg)
            && (1024..=16 * 1024 * 1024).contains(&max)
            && min <= avg
            && avg <= max
            && self.normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(FormatError::InvalidParameter {
                what: "chunker parameters",
                reason: format!(
                    "min={min} avg={avg} max={max} normalization={}: sizes must be even, \
                     min 64..=1MiB, avg 256..=4MiB, max 1KiB..=16MiB, min<=avg<=max, normalization 0..=3",
                    self.normalization
                ),
            })
        }
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.put_u32(self.min_size);
        out.put_u32(self.avg_size);
        out.put_u32(self.max_size);
        out.put_u8(self.normalization);
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        let p = Self {
            min_size: r.u32()?,
            avg_size: r.u32()?,
            max_size: r.u32()?,
            normalization: r.u8()?,
        };
        p.validate()
            .map_err(|e| FormatError::malformed(r.what(), e.to_string()))?;
        Ok(p)
    }
}

/// A keyed FastCDC chunker.
#[derive(Clone)]
pub struct Chunker {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Derives the gear table from a chunker seed.
pub fn gear_table(seed: &[u8; 32]) -> Box<[u64; 256]> {
    let mut xof = blake3::Hasher::new_keyed(seed)
        .update(GEAR_CONTEXT)
        .finalize_xof();
    let mut bytes = [0u8; 256 * 8];
    xof.fill(&mut bytes);
    let mut gear = Box::new([0u64; 256]);
    for (g, b) in gear.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        *g = u64::from_le_bytes(w);
    }
    gear
}

impl Chunker {
    /// A chunker for a repository's seed and parameters.
    pub fn new(seed: &[u8; 32], params: ChunkerParams) -> Result<Self> {
        params.validate()?;
        let gear = gear_table(seed);
        let mut gear_ls = Box::new([0u64; 256]);
        for (l, g) in gear_ls.iter_mut().zip(gear.iter()) {
            *l = g << 1;
        }
        let level = match params.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        };
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, level);
        Ok(Self {
            gear,
            gear_ls,
            params,
            mask_s,
            mask_l,
        })
    }

    /// The parameters.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// The length of the next chunk at the start of `data`, or `None` when more input is needed
    /// to decide (no cut found, fewer than `max_size` bytes buffered, and not at end of input).
    /// At end of input (`eof`) the rest is returned as the last chunk; an empty input gives
    /// `Some(0)`.
    pub fn next_chunk(&self, data: &[u8], eof: bool) -> Option<usize> {
        let p = &self.params;
        let (_, len) = cut_gear(
            data,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            self.gear.as_slice(),
            self.gear_ls.as_slice(),
        );
        (len < data.len() || eof || data.len() >= p.max_size as usize).then_some(len)
    }

    /// The lengths of all chunks of a complete input, in order. They sum to `data.len()`.
    pub fn chunk_lengths(&self, data: &[u8]) -> Vec<usize> {
        let mut out = Vec::with_capacity(data.len() / self.params.avg_size as usize + 1);
        let mut rest = data;
        while !rest.is_empty() {
            let len = self.next_chunk(rest, true).unwrap_or(rest.len()).max(1);
            out.push(len);
            rest = rest.get(len..).unwrap_or_default();
        }
        out
    }
}

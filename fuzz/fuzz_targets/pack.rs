//! Pack decoding on untrusted bytes: `Trailer::decode` on the last 16 bytes (and
//! `Trailer::header_offset`), `decode_header` with an arbitrary data-section length, and
//! `read_pack` under a fixed key. None may panic; accepted headers must be self-consistent.
#![no_main]

use arbitrary::Arbitrary;
use cairn_format::MasterKey;
use cairn_format::pack::{self, TRAILER_LEN, Trailer};
use libfuzzer_sys::fuzz_target;

/// Input layout: `data_len` (4 bytes, little-endian) then the rest of the input as `bytes`.
#[derive(Debug, Arbitrary)]
struct Input<'a> {
    data_len: u32,
    bytes: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let bytes = input.bytes;
    if let Some(tail) = bytes.len().checked_sub(TRAILER_LEN).map(|s| &bytes[s..])
        && let Ok(trailer) = Trailer::decode(tail)
    {
        assert_eq!(
            trailer.encode(),
            tail,
            "trailer did not re-encode to its input"
        );
        if let Ok(off) = trailer.header_offset(bytes.len() as u64) {
            assert_eq!(
                off + TRAILER_LEN as u64 + u64::from(trailer.header_len),
                bytes.len() as u64
            );
        }
    }

    let data_len = u64::from(input.data_len);
    if let Ok(entries) = pack::decode_header(bytes, data_len) {
        let mut offset = 0u64;
        for e in &entries {
            assert_eq!(u64::from(e.offset), offset);
            offset = e.range().end;
        }
        assert_eq!(offset, data_len);
        let encoded = pack::encode_header(&entries).expect("decoded header must encode");
        assert_eq!(encoded, bytes, "pack header did not re-encode to its input");
    }

    let key = MasterKey::from_parts([1; 32], [2; 32], [3; 32]);
    if let Ok(entries) = pack::read_pack(&key, bytes) {
        // Only reachable from seeds sealed under the fixed key: entries lie inside the pack.
        for e in &entries {
            assert!(e.range().end <= bytes.len() as u64);
        }
    }
});

//! `delta::decode` on untrusted patches and lengths: never panics, never returns other than
//! exactly `len` bytes; a patch made by `delta::encode` decodes back to its block.
#![no_main]

use arbitrary::Arbitrary;
use cairn_format::delta;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    base: &'a [u8],
    block: &'a [u8],
    patch: &'a [u8],
    len: u16,
}

fuzz_target!(|input: Input<'_>| {
    let len = usize::from(input.len);
    if let Ok(out) = delta::decode(input.base, input.patch, len) {
        assert_eq!(out.len(), len);
    }
    let patch = delta::encode(input.base, input.block).expect("small blocks encode");
    let back = delta::decode(input.base, &patch, input.block.len()).expect("own patch decodes");
    assert_eq!(back, input.block);
});

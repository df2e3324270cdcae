//! `KeySlot::decode` on untrusted bytes: never panics; when it accepts a slot, `encode()`
//! reproduces the input byte for byte (the format has exactly one encoding per slot).
//!
//! A random input almost never carries a valid BLAKE3 checksum, so each input is also tried with
//! its last 32 bytes replaced by the checksum of the rest: that lets mutations reach the body
//! parser (label, KDF parameters, fixed-size fields, trailing bytes).
#![no_main]

use cairn_format::KeySlot;
use libfuzzer_sys::fuzz_target;

const CHECKSUM_LEN: usize = 32;

fn check(bytes: &[u8]) {
    if let Ok(slot) = KeySlot::decode(bytes) {
        let encoded = slot.encode().expect("a decoded key slot must encode");
        assert_eq!(encoded, bytes, "key slot did not re-encode to its input");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(body_len) = data.len().checked_sub(CHECKSUM_LEN) {
        let mut fixed = data.to_vec();
        let sum = *blake3::hash(&data[..body_len]).as_bytes();
        fixed[body_len..].copy_from_slice(&sum);
        check(&fixed);
    }
});

//! `BlobId::from_hex` on arbitrary UTF-8: never panics; an accepted string is 64 hex digits and
//! `to_hex()` gives it back in lower case.
#![no_main]

use cairn_format::BlobId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(id) = BlobId::from_hex(s) {
        assert_eq!(id.to_hex(), s.to_ascii_lowercase());
        assert_eq!(s.len(), 64);
    }
});

//! `IndexFile::decode` on untrusted bytes: never panics; an accepted index re-encodes, and that
//! encoding decodes to an equal index (round trip stability).
#![no_main]

use cairn_format::IndexFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = IndexFile::decode(data) {
        let encoded = index.encode().expect("a decoded index must encode");
        let again = IndexFile::decode(&encoded).expect("a re-encoded index must decode");
        assert_eq!(again, index);
        assert_eq!(encoded, data, "index did not re-encode to its input");
    }
});

//! `Snapshot::decode` on untrusted bytes: never panics; an accepted snapshot encodes and decodes
//! back to an equal snapshot.
#![no_main]

use cairn_format::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = Snapshot::decode(data) {
        let encoded = snapshot.encode().expect("a decoded snapshot must encode");
        let again = Snapshot::decode(&encoded).expect("a re-encoded snapshot must decode");
        assert_eq!(again, snapshot);
    }
});

//! `Tree::decode` on untrusted bytes: never panics; an accepted tree encodes (names are safe and
//! sorted) and decodes back to an equal tree.
#![no_main]

use cairn_format::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(data) {
        let encoded = tree.encode().expect("a decoded tree must encode");
        let again = Tree::decode(&encoded).expect("a re-encoded tree must decode");
        assert_eq!(again, tree);
    }
});

//! `EnvelopeHeader::parse` and `envelope::open` on untrusted bytes: never panic, and `open` under
//! a fixed key fails for every object kind (a fuzzer cannot forge the Poly1305 tag), never as
//! "unsupported version".
#![no_main]

use cairn_format::MasterKey;
use cairn_format::envelope::{self, EnvelopeHeader, ObjectKind};
use libfuzzer_sys::fuzz_target;

const KINDS: [ObjectKind; 6] = [
    ObjectKind::DataBlob,
    ObjectKind::TreeBlob,
    ObjectKind::PackHeader,
    ObjectKind::Index,
    ObjectKind::Snapshot,
    ObjectKind::Config,
];

fuzz_target!(|data: &[u8]| {
    let parsed = EnvelopeHeader::parse(data);
    if let Ok((header, rest)) = &parsed {
        assert!(rest.len() >= envelope::TAG_LEN);
        assert_eq!(rest.len() + envelope::HEADER_LEN, data.len());
        assert_eq!(header.version, envelope::ENVELOPE_VERSION);
    }
    let key = MasterKey::from_parts([1; 32], [2; 32], [3; 32]);
    for kind in KINDS {
        for id in [[0u8; 32], [0xff; 32]] {
            let opened = envelope::open(&key, kind, &id, data, "fuzz");
            assert!(opened.is_err(), "fuzz input opened as {kind:?}");
            // An unknown version byte is "newer Cairn" only for an envelope that authenticates,
            // which a fuzzer cannot forge: here it is always damage.
            assert!(
                !matches!(
                    opened,
                    Err(cairn_format::FormatError::UnsupportedVersion { .. })
                ),
                "{opened:?}"
            );
            if parsed.is_ok() {
                // A well-formed header leaves only authentication to fail.
                assert!(
                    matches!(
                        opened,
                        Err(cairn_format::FormatError::Authentication { .. })
                    ),
                    "{opened:?}"
                );
            }
        }
    }
});

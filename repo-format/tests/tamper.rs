#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Tampering: every flipped byte and every truncation of every stored structure is a typed
//! error (never a panic, never a silent success); wrong passphrases, moved or relabelled blobs and
//! spliced pack headers are detected.

use cairn_format::envelope::EnvelopeHeader;
use cairn_format::keyslot::unlock;
use cairn_format::pack::{Trailer, check_pack_id, decode_header, encode_header};
use cairn_format::{
    BlobId, BlobType, Compression, FinishedPack, FormatError, IndexFile, IndexId, IndexPack,
    KdfParams, KeySlot, MasterKey, PackBuilder, RepoConfig, Snapshot, SnapshotId, SnapshotKind,
    Timestamp, open_blob, read_pack, seal_blob,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const MASKS: [u8; 2] = [0x01, 0x80];

fn key() -> MasterKey {
    MasterKey::from_parts([0x11; 32], [0x22; 32], [0x33; 32])
}

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn flipped(bytes: &[u8], i: usize, mask: u8) -> Vec<u8> {
    let mut t = bytes.to_vec();
    t[i] ^= mask;
    t
}

/// A typed error saying the bytes are damaged, or were written by a newer version.
fn corrupt_or_newer<T: std::fmt::Debug>(r: &Result<T, FormatError>) -> bool {
    match r {
        Err(FormatError::UnsupportedVersion { .. }) => true,
        Err(e) => e.is_corruption(),
        Ok(_) => false,
    }
}

fn blobs() -> Vec<Vec<u8>> {
    let mut noise = vec![0u8; 100];
    rng(99).fill_bytes(&mut noise);
    vec![b"compressible ".repeat(20), noise, b"tiny".to_vec()]
}

fn build_pack(blob_type: BlobType, plains: &[Vec<u8>], seed: u64) -> FinishedPack {
    let k = key();
    let mut rng = rng(seed);
    let mut b = PackBuilder::new(&k, blob_type, 4096);
    for p in plains {
        let (id, sealed) = seal_blob(&k, blob_type, p, Compression::default(), &mut rng).unwrap();
        b.add(id, &sealed, p.len() as u32).unwrap();
    }
    b.finish(&k, &mut rng).unwrap()
}

#[test]
fn pack_every_flip_is_detected() {
    let k = key();
    let plains = blobs();
    let pack = build_pack(BlobType::Data, &plains, 1);
    assert_eq!(read_pack(&k, &pack.bytes).unwrap(), pack.entries);
    check_pack_id(&k, &pack.id, &pack.bytes).unwrap();
    let data_end = pack.entries.last().unwrap().range().end as usize;
    for i in 0..pack.bytes.len() {
        for mask in MASKS {
            let t = flipped(&pack.bytes, i, mask);
            let id_check = check_pack_id(&k, &pack.id, &t);
            assert!(
                matches!(id_check, Err(FormatError::IdMismatch { .. })),
                "byte {i} ^ {mask:#x}: pack id still matches: {id_check:?}"
            );
            let r = read_pack(&k, &t);
            if i < data_end {
                // Inside a blob: the header is intact, but that blob no longer opens.
                let entries = r.unwrap_or_else(|e| panic!("byte {i}: header unreadable: {e:?}"));
                assert_eq!(entries, pack.entries);
                for (e, plain) in entries.iter().zip(&plains) {
                    let range = e.range().start as usize..e.range().end as usize;
                    let opened = e.open(&k, &t[range.clone()]);
                    if range.contains(&i) {
                        assert!(
                            matches!(
                                opened,
                                Err(FormatError::Authentication { .. }
                                    | FormatError::Malformed { .. }
                                    | FormatError::Truncated { .. }
                                    | FormatError::UnsupportedVersion { .. })
                            ),
                            "byte {i} ^ {mask:#x} in blob {:?}: {opened:?}",
                            e.id
                        );
                    } else {
                        assert_eq!(&opened.unwrap(), plain);
                    }
                }
            } else {
                assert!(
                    corrupt_or_newer(&r),
                    "byte {i} ^ {mask:#x} in header/trailer: {r:?}"
                );
            }
        }
    }
}

#[test]
fn pack_every_truncation_is_detected() {
    let k = key();
    let pack = build_pack(BlobType::Tree, &blobs(), 2);
    for n in 0..pack.bytes.len() {
        let t = &pack.bytes[..n];
        let r = read_pack(&k, t);
        assert!(corrupt_or_newer(&r), "length {n}: {r:?}");
        assert!(check_pack_id(&k, &pack.id, t).is_err());
    }
    // Appended bytes are detected too.
    let mut longer = pack.bytes.clone();
    longer.push(0);
    assert!(read_pack(&k, &longer).is_err());
    assert!(check_pack_id(&k, &pack.id, &longer).is_err());
}

#[test]
fn pack_header_spliced_onto_other_blobs_is_detected() {
    let k = key();
    // Two packs whose blobs have the same lengths (raw, equal-size plaintexts), so that the
    // header of A fits exactly on the data section of B.
    let plain = |seed: u64| {
        (0..3)
            .map(|i| {
                let mut v = vec![0u8; 50 + 10 * i];
                rng(seed + i as u64).fill_bytes(&mut v);
                v
            })
            .collect::<Vec<_>>()
    };
    let a = build_pack(BlobType::Data, &plain(100), 3);
    let b = build_pack(BlobType::Data, &plain(200), 4);
    let data_len = a.entries.last().unwrap().range().end as usize;
    assert_eq!(data_len, b.entries.last().unwrap().range().end as usize);
    let mut spliced = b.bytes[..data_len].to_vec();
    spliced.extend_from_slice(&a.bytes[data_len..]);
    assert!(matches!(
        check_pack_id(&k, &a.id, &spliced),
        Err(FormatError::IdMismatch { .. })
    ));
    assert!(matches!(
        check_pack_id(&k, &b.id, &spliced),
        Err(FormatError::IdMismatch { .. })
    ));
    // The header alone authenticates (it is A's), but it names A's blobs: B's bytes at those
    // ranges do not open under A's ids.
    let entries = read_pack(&k, &spliced).unwrap();
    assert_eq!(entries, a.entries);
    for e in &entries {
        let r = e.open(
            &k,
            &spliced[e.range().start as usize..e.range().end as usize],
        );
        assert!(
            matches!(r, Err(FormatError::Authentication { .. })),
            "{r:?}"
        );
    }
    // A header of a different length on B's blobs: the layout no longer adds up.
    let c = build_pack(BlobType::Data, &blobs(), 5);
    let c_data = c.entries.last().unwrap().range().end as usize;
    let mut spliced = b.bytes[..data_len].to_vec();
    spliced.extend_from_slice(&c.bytes[c_data..]);
    assert!(check_pack_id(&k, &b.id, &spliced).is_err());
    assert!(check_pack_id(&k, &c.id, &spliced).is_err());
    let r = read_pack(&k, &spliced);
    assert!(matches!(r, Err(FormatError::Malformed { .. })), "{r:?}");
}

#[test]
fn blob_moved_or_relabelled_fails_authentication() {
    let k = key();
    let mut rng = rng(6);
    let (id, sealed) = seal_blob(
        &k,
        BlobType::Data,
        b"some content",
        Compression::Off,
        &mut rng,
    )
    .unwrap();
    let (other_id, _) = seal_blob(
        &k,
        BlobType::Data,
        b"other content",
        Compression::Off,
        &mut rng,
    )
    .unwrap();
    assert_eq!(
        open_blob(&k, BlobType::Data, &id, &sealed).unwrap(),
        b"some content"
    );
    let moved = open_blob(&k, BlobType::Data, &other_id, &sealed);
    assert!(
        matches!(moved, Err(FormatError::Authentication { .. })),
        "{moved:?}"
    );
    let moved = open_blob(&k, BlobType::Data, &BlobId::from_bytes([0; 32]), &sealed);
    assert!(
        matches!(moved, Err(FormatError::Authentication { .. })),
        "{moved:?}"
    );
    let relabelled = open_blob(&k, BlobType::Tree, &id, &sealed);
    assert!(
        matches!(relabelled, Err(FormatError::Authentication { .. })),
        "{relabelled:?}"
    );
    let other_key = MasterKey::from_parts([0x12; 32], [0x22; 32], [0x33; 32]);
    let foreign = open_blob(&other_key, BlobType::Data, &id, &sealed);
    assert!(
        matches!(foreign, Err(FormatError::Authentication { .. })),
        "{foreign:?}"
    );
}

fn sealed_index() -> (IndexId, Vec<u8>) {
    let pack = build_pack(BlobType::Data, &blobs(), 7);
    let index = IndexFile {
        supersedes: vec![IndexId::from_bytes([0xab; 32])],
        packs: vec![IndexPack {
            id: pack.id,
            blobs: pack.entries,
        }],
    };
    index.seal(&key(), &mut rng(8)).unwrap()
}

#[test]
fn index_every_flip_and_truncation_is_detected() {
    let k = key();
    let (id, sealed) = sealed_index();
    IndexFile::open(&k, &id, &sealed).unwrap();
    for i in 0..sealed.len() {
        for mask in MASKS {
            let r = IndexFile::open(&k, &id, &flipped(&sealed, i, mask));
            assert!(corrupt_or_newer(&r), "byte {i} ^ {mask:#x}: {r:?}");
        }
    }
    for n in 0..sealed.len() {
        let r = IndexFile::open(&k, &id, &sealed[..n]);
        assert!(corrupt_or_newer(&r), "length {n}: {r:?}");
    }
    let wrong_name = IndexFile::open(&k, &IndexId::from_bytes([1; 32]), &sealed);
    assert!(
        matches!(wrong_name, Err(FormatError::Authentication { .. })),
        "{wrong_name:?}"
    );
}

fn slot() -> (KeySlot, Vec<u8>) {
    let slot = KeySlot::wrap_passphrase(
        &key(),
        b"correct horse",
        KdfParams::INSECURE_FOR_TESTS,
        "tamper test",
        1_700_000_000,
        &mut rng(9),
    )
    .unwrap();
    let bytes = slot.encode().unwrap();
    (slot, bytes)
}

#[test]
fn key_slot_every_flip_and_truncation_is_detected() {
    let (_, bytes) = slot();
    for i in 0..bytes.len() {
        for mask in MASKS {
            let r = KeySlot::decode(&flipped(&bytes, i, mask));
            assert!(
                matches!(
                    r,
                    Err(FormatError::ChecksumMismatch { .. }
                        | FormatError::BadMagic { .. }
                        | FormatError::UnsupportedVersion { .. })
                ),
                "byte {i} ^ {mask:#x}: {r:?}"
            );
            if i < 8 {
                assert!(matches!(r, Err(FormatError::BadMagic { .. })), "{r:?}");
            }
        }
    }
    for n in 0..bytes.len() {
        let r = KeySlot::decode(&bytes[..n]);
        assert!(
            matches!(
                r,
                Err(FormatError::ChecksumMismatch { .. } | FormatError::Truncated { .. })
            ),
            "length {n}: {r:?}"
        );
    }
}

#[test]
fn wrong_passphrase_is_reported_as_such() {
    let (slot, bytes) = slot();
    let decoded = KeySlot::decode(&bytes).unwrap();
    assert!(decoded.unwrap(b"correct horse").unwrap() == key());
    for wrong in [
        &b"correct horsE"[..],
        b"",
        b"correct horse ",
        b"battery staple",
    ] {
        let r = decoded.unwrap(wrong);
        assert!(matches!(r, Err(FormatError::WrongPassphrase)), "{r:?}");
    }
    let r = unlock([&slot, &decoded], b"nope");
    assert!(matches!(r, Err(FormatError::WrongPassphrase)), "{r:?}");
    let (i, k) = unlock([&slot, &decoded], b"correct horse").unwrap();
    assert_eq!(i, 0);
    assert!(k == key());
}

#[test]
fn key_slot_relabelled_with_fixed_checksum_does_not_unwrap() {
    // Someone edits the clear label and recomputes the (unkeyed) checksum: the slot decodes,
    // but the label is authenticated data of the wrapped key, so unwrapping fails.
    let (mut slot, _) = slot();
    slot.label = "evil".into();
    let bytes = slot.encode().unwrap();
    let decoded = KeySlot::decode(&bytes).unwrap();
    assert_eq!(decoded.label, "evil");
    let r = decoded.unwrap(b"correct horse");
    assert!(matches!(r, Err(FormatError::WrongPassphrase)), "{r:?}");
    let (mut slot, _) = self::slot();
    slot.created += 1;
    let r = KeySlot::decode(&slot.encode().unwrap())
        .unwrap()
        .unwrap(b"correct horse");
    assert!(matches!(r, Err(FormatError::WrongPassphrase)), "{r:?}");
}

fn sealed_snapshot() -> (SnapshotId, Vec<u8>) {
    let mut s = Snapshot::new(
        SnapshotKind::Files,
        Timestamp {
            secs: 1_700_000_000,
            nanos: 5,
        },
        BlobId::from_bytes([4; 32]),
    );
    s.hostname = "host".into();
    s.username = "user".into();
    s.paths = vec![b"/home".to_vec(), b"/etc".to_vec()];
    s.tags = vec!["daily".into()];
    s.parent = Some(SnapshotId::from_bytes([5; 32]));
    s.meta = vec![("k".into(), b"v".to_vec())];
    s.seal(&key(), &mut rng(10)).unwrap()
}

#[test]
fn snapshot_every_flip_and_truncation_is_detected() {
    let k = key();
    let (id, sealed) = sealed_snapshot();
    Snapshot::open(&k, &id, &sealed).unwrap();
    for i in 0..sealed.len() {
        for mask in MASKS {
            let r = Snapshot::open(&k, &id, &flipped(&sealed, i, mask));
            assert!(corrupt_or_newer(&r), "byte {i} ^ {mask:#x}: {r:?}");
        }
    }
    for n in 0..sealed.len() {
        let r = Snapshot::open(&k, &id, &sealed[..n]);
        assert!(corrupt_or_newer(&r), "length {n}: {r:?}");
    }
    let moved = Snapshot::open(&k, &SnapshotId::from_bytes([6; 32]), &sealed);
    assert!(
        matches!(moved, Err(FormatError::Authentication { .. })),
        "{moved:?}"
    );
}

fn stored_config() -> Vec<u8> {
    let cfg = RepoConfig::new(
        Timestamp {
            secs: 1_700_000_000,
            nanos: 0,
        },
        &mut rng(11),
    );
    cfg.seal(&key(), &mut rng(12)).unwrap()
}

#[test]
fn config_every_flip_and_truncation_is_detected() {
    let k = key();
    let stored = stored_config();
    RepoConfig::open(&k, &stored).unwrap();
    for i in 0..stored.len() {
        for mask in MASKS {
            let t = flipped(&stored, i, mask);
            let r = RepoConfig::open(&k, &t);
            assert!(corrupt_or_newer(&r), "byte {i} ^ {mask:#x}: {r:?}");
            if i < 8 {
                assert!(matches!(r, Err(FormatError::BadMagic { .. })), "{r:?}");
                assert!(matches!(
                    RepoConfig::check_prefix(&t),
                    Err(FormatError::BadMagic { .. })
                ));
            } else if i < 12 {
                assert!(
                    matches!(r, Err(FormatError::UnsupportedVersion { .. })),
                    "{r:?}"
                );
            }
        }
    }
    for n in 0..stored.len() {
        let r = RepoConfig::open(&k, &stored[..n]);
        assert!(corrupt_or_newer(&r), "length {n}: {r:?}");
    }
    let other_key = MasterKey::from_parts([0; 32], [0x22; 32], [0x33; 32]);
    let r = RepoConfig::open(&other_key, &stored);
    assert!(
        matches!(r, Err(FormatError::Authentication { .. })),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Arbitrary damage to plaintext encodings (what a decoder sees after authentication, or when a
// bug or another implementation wrote bad bytes): decoders never panic, and whatever they accept
// re-encodes to the same bytes (the encodings are canonical; only the snapshot summary, whose
// length is free by design, is not).
// ---------------------------------------------------------------------------------------------

fn valid_encodings() -> Vec<Vec<u8>> {
    let k = key();
    let pack = build_pack(BlobType::Data, &blobs(), 13);
    let (id, sealed) = sealed_snapshot();
    let snapshot = Snapshot::open(&k, &id, &sealed).unwrap();
    let mut tree = cairn_format::Tree {
        nodes: vec![
            cairn_format::Node::new("dir", cairn_format::NodeKind::Dir),
            cairn_format::Node::new("file", cairn_format::NodeKind::File),
            cairn_format::Node::new("link", cairn_format::NodeKind::Symlink),
        ],
    };
    tree.nodes[0].subtree = Some(BlobId::from_bytes([1; 32]));
    tree.nodes[1].content = vec![BlobId::from_bytes([2; 32]); 2];
    tree.nodes[1].xattrs = vec![cairn_format::tree::Xattr {
        name: b"user.x".to_vec(),
        value: b"y".to_vec(),
    }];
    tree.nodes[2].target = b"file".to_vec();
    let index = IndexFile {
        supersedes: vec![IndexId::from_bytes([3; 32])],
        packs: vec![IndexPack {
            id: pack.id,
            blobs: pack.entries.clone(),
        }],
    };
    let cfg = RepoConfig::new(Timestamp::default(), &mut rng(14));
    vec![
        tree.encode().unwrap(),
        snapshot.encode().unwrap(),
        index.encode().unwrap(),
        cfg.encode().unwrap(),
        key().encode().to_vec(),
        slot().1,
        encode_header(&pack.entries).unwrap(),
        pack.bytes.clone(),
    ]
}

fn decode_everything(bytes: &[u8]) -> Result<(), TestCaseError> {
    let k = key();
    if let Ok(t) = cairn_format::Tree::decode(bytes) {
        prop_assert_eq!(t.encode().unwrap(), bytes);
    }
    if let Ok(s) = Snapshot::decode(bytes) {
        let again = Snapshot::decode(&s.encode().unwrap()).unwrap();
        prop_assert_eq!(again, s);
    }
    if let Ok(i) = IndexFile::decode(bytes) {
        prop_assert_eq!(i.encode().unwrap(), bytes);
    }
    if let Ok(c) = RepoConfig::decode(bytes) {
        prop_assert_eq!(c.encode().unwrap(), bytes);
    }
    if let Ok(m) = MasterKey::decode(bytes) {
        let enc = m.encode();
        prop_assert_eq!(enc.as_slice(), bytes);
    }
    if let Ok(s) = KeySlot::decode(bytes) {
        prop_assert_eq!(s.encode().unwrap(), bytes);
    }
    if let Ok(entries) = decode_header(bytes, 200) {
        prop_assert_eq!(encode_header(&entries).unwrap(), bytes);
    }
    let _ = Trailer::decode(bytes);
    let _ = EnvelopeHeader::parse(bytes);
    let _ = read_pack(&k, bytes);
    let _ = RepoConfig::open(&k, bytes);
    Ok(())
}

proptest! {
    #[test]
    fn decoders_never_panic_on_damaged_input(
        which in any::<Index>(),
        edits in vec((any::<Index>(), any::<u8>()), 0..6),
        insert in proptest::option::of((any::<Index>(), vec(any::<u8>(), 1..8))),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let bases = valid_encodings();
        let mut bytes = which.get(&bases).clone();
        for (at, value) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        if let Some((at, extra)) = insert {
            let i = at.index(bytes.len() + 1);
            bytes.splice(i..i, extra);
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len() + 1));
        }
        decode_everything(&bytes)?;
    }

    #[test]
    fn decoders_never_panic_on_random_input(bytes in vec(any::<u8>(), 0..600)) {
        decode_everything(&bytes)?;
    }
}

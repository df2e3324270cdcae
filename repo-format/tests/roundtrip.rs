#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Property tests: every codec of the format round-trips, and no strict prefix (truncation) of a
//! valid encoding decodes.

use cairn_format::envelope::{self, FLAG_ZSTD, OVERHEAD};
use cairn_format::pack::check_pack_id;
use cairn_format::tree::{Extension, Xattr};
use cairn_format::{
    BlobId, BlobType, ChunkerParams, Compression, DeltaBlock, FormatError, IndexFile, IndexId,
    IndexPack, KdfParams, KeyId, KeySlot, MasterKey, Node, NodeKind, ObjectKind, PackBuilder,
    PackEntry, PackId, RepoConfig, Snapshot, SnapshotId, SnapshotKind, Summary, Timestamp, Tree,
    read_pack, seal_blob,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

// ---------------------------------------------------------------------------------------------
// Helpers and strategies
// ---------------------------------------------------------------------------------------------

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// The prefix lengths to try: every one for short encodings, otherwise both ends and a sample.
fn prefix_lengths(len: usize, picks: &[Index]) -> Vec<usize> {
    if len <= 512 {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..48).chain(len - 4..len).collect();
    v.extend(picks.iter().map(|i| i.index(len)));
    v
}

fn master_key() -> impl Strategy<Value = MasterKey> {
    (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<[u8; 32]>())
        .prop_map(|(d, i, c)| MasterKey::from_parts(d, i, c))
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        (any::<i64>(), 0u32..1_000_000_000).prop_map(|(secs, nanos)| Timestamp { secs, nanos }),
        Just(Timestamp {
            secs: i64::MIN,
            nanos: 999_999_999
        }),
        Just(Timestamp {
            secs: i64::MAX,
            nanos: 0
        }),
    ]
}

/// Extension lists as writers must produce them: strictly increasing tags, none critical (bit 15).
fn extensions() -> impl Strategy<Value = Vec<Extension>> {
    proptest::collection::btree_map(0u16..0x8000, vec(any::<u8>(), 0..40), 0..4).prop_map(|m| {
        m.into_iter()
            .map(|(tag, bytes)| Extension { tag, bytes })
            .collect()
    })
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,16}"
}

/// Plaintexts of 0..=64 KiB: random, highly compressible (a short pattern repeated), all zero,
/// small-alphabet text, and short ones.
fn plaintext(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..64),
        3 => (0..=max / 16, any::<u64>()).prop_map(|(len, seed)| random_bytes(seed, len)),
        2 => (0..=max, any::<u64>()).prop_map(|(len, seed)| random_bytes(seed, len)),
        2 => (0..=max, vec(any::<u8>(), 1..8))
            .prop_map(|(len, pat)| pat.iter().copied().cycle().take(len).collect()),
        1 => (0..=max).prop_map(|len| vec![0u8; len]),
        1 => (0..=max, any::<u64>()).prop_map(|(len, seed)| {
            random_bytes(seed, len).into_iter().map(|b| b"abc de\n"[usize::from(b % 7)]).collect()
        }),
    ]
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::Off),
        (-7i32..=12).prop_map(Compression::Zstd),
        select(vec![19, 22]).prop_map(Compression::Zstd),
    ]
}

fn object_kind() -> impl Strategy<Value = ObjectKind> {
    select(vec![
        ObjectKind::DataBlob,
        ObjectKind::TreeBlob,
        ObjectKind::PackHeader,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Config,
    ])
}

fn blob_type() -> impl Strategy<Value = BlobType> {
    select(vec![BlobType::Data, BlobType::Tree])
}

fn pack_entry() -> impl Strategy<Value = PackEntry> {
    (
        blob_type(),
        any::<[u8; 32]>(),
        any::<u32>(),
        (OVERHEAD as u32)..=u32::MAX,
        any::<u32>(),
    )
        .prop_map(|(blob_type, id, offset, stored_len, plain_len)| PackEntry {
            blob_type,
            id: BlobId::from_bytes(id),
            offset,
            stored_len,
            plain_len,
        })
}

fn index_file() -> impl Strategy<Value = IndexFile> {
    (
        vec(any::<[u8; 32]>(), 0..5),
        vec((any::<[u8; 32]>(), vec(pack_entry(), 0..10)), 0..6),
    )
        .prop_map(|(sup, packs)| IndexFile {
            supersedes: sup.into_iter().map(IndexId::from_bytes).collect(),
            packs: packs
                .into_iter()
                .map(|(id, blobs)| IndexPack {
                    id: PackId::from_bytes(id),
                    blobs,
                })
                .collect(),
        })
}

/// Valid node names: non-empty, no `/` or NUL, not `.` or `..`.
fn node_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(
            any::<u8>().prop_filter("no '/' or NUL", |b| *b != b'/' && *b != 0),
            1..24
        )
        .prop_filter("not . or ..", |n| n.as_slice() != b"." && n.as_slice() != b".."),
        1 => select(vec![
            b"...".to_vec(),
            b".a".to_vec(),
            b"..a".to_vec(),
            b"a".to_vec(),
            vec![0xff, 0xfe],
            "é".as_bytes().to_vec(),
        ]),
    ]
}

fn node_kind() -> impl Strategy<Value = NodeKind> {
    select(vec![
        NodeKind::File,
        NodeKind::Dir,
        NodeKind::Symlink,
        NodeKind::BlockDevice,
        NodeKind::CharDevice,
        NodeKind::Fifo,
        NodeKind::Socket,
    ])
}

fn node() -> impl Strategy<Value = Node> {
    let ident = (
        node_name(),
        node_kind(),
        vec(any::<[u8; 32]>(), 0..6),
        any::<[u8; 32]>(),
    );
    let owner = (any::<u32>(), any::<u32>(), any::<u32>(), text(), text());
    let times = (timestamp(), timestamp(), timestamp());
    let numbers = (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    );
    let extra = (
        vec(any::<u8>(), 0..40),
        vec(
            (vec(any::<u8>(), 0..20), vec(any::<u8>(), 0..60))
                .prop_map(|(name, value)| Xattr { name, value }),
            0..4,
        ),
        extensions(),
    );
    (ident, owner, times, numbers, extra).prop_map(
        |(
            (name, kind, content, subtree),
            (mode, uid, gid, user, group),
            (mtime, ctime, atime),
            (size, inode, links, device, rdev),
            (target, xattrs, extensions),
        )| {
            let mut n = Node::new(name, kind);
            n.mode = mode;
            n.uid = uid;
            n.gid = gid;
            n.user = user;
            n.group = group;
            n.mtime = mtime;
            n.ctime = ctime;
            n.atime = atime;
            n.size = size;
            n.inode = inode;
            n.links = links;
            n.device = device;
            n.rdev = rdev;
            n.target = target;
            n.xattrs = xattrs;
            if kind == NodeKind::File {
                n.content = content.into_iter().map(BlobId::from_bytes).collect();
                // Every third block (from a mode-derived start) stored as a delta.
                n.deltas = (0..n.content.len())
                    .filter(|i| (i + mode as usize) % 3 == 0)
                    .map(|i| DeltaBlock {
                        index: i as u32,
                        len: (mode % 65537) + i as u32,
                        patch: BlobId::from_bytes([i as u8; 32]),
                        base: BlobId::from_bytes([!(i as u8); 32]),
                    })
                    .collect();
            }
            if kind == NodeKind::Dir {
                n.subtree = Some(BlobId::from_bytes(subtree));
            }
            n.extensions = extensions;
            n
        },
    )
}

fn tree() -> impl Strategy<Value = Tree> {
    vec(node(), 0..12).prop_map(|nodes| {
        let mut t = Tree { nodes };
        t.sort();
        t.nodes.dedup_by(|a, b| a.name == b.name);
        t
    })
}

fn summary() -> impl Strategy<Value = Summary> {
    any::<[u64; 12]>().prop_map(|f| Summary {
        files_new: f[0],
        files_changed: f[1],
        files_unchanged: f[2],
        dirs_new: f[3],
        dirs_changed: f[4],
        dirs_unchanged: f[5],
        bytes_read: f[6],
        total_bytes: f[7],
        blobs_added: f[8],
        bytes_added_plain: f[9],
        bytes_added_stored: f[10],
        duration_nanos: f[11],
    })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    let kind = prop_oneof![
        Just(SnapshotKind::Files),
        Just(SnapshotKind::PgBaseBackup),
        // 0 and 1 are the known kinds; `Other` holds only the bytes this build does not know.
        (2u8..=255).prop_map(SnapshotKind::Other),
    ];
    let head = (kind, timestamp(), -86_400i32..=86_400, text(), text());
    let lists = (
        vec(vec(any::<u8>(), 0..40), 0..5),
        vec(text(), 0..5),
        any::<[u8; 32]>(),
        proptest::option::of(any::<[u8; 32]>()),
    );
    let rest = (
        summary(),
        vec((text(), vec(any::<u8>(), 0..40)), 0..5),
        extensions(),
    );
    (head, lists, rest).prop_map(
        |(
            (kind, time, tz, hostname, username),
            (paths, tags, tree, parent),
            (summary, meta, extensions),
        )| {
            let mut s = Snapshot::new(kind, time, BlobId::from_bytes(tree));
            s.tz_offset_secs = tz;
            s.hostname = hostname;
            s.username = username;
            s.paths = paths;
            s.tags = tags;
            s.parent = parent.map(SnapshotId::from_bytes);
            s.summary = summary;
            s.meta = meta;
            s.extensions = extensions;
            s
        },
    )
}

/// Valid chunker parameters: even sizes, min 64..=1 MiB, avg 256..=4 MiB, max 1 KiB..=16 MiB.
fn chunker_params() -> impl Strategy<Value = ChunkerParams> {
    (128u32..=2 * 1024 * 1024, 0u8..=3)
        .prop_flat_map(|(avg_half, normalization)| {
            let avg = avg_half * 2;
            (
                Just(avg),
                32u32..=avg.min(1024 * 1024) / 2,
                avg.max(1024) / 2..=8 * 1024 * 1024,
                Just(normalization),
            )
        })
        .prop_map(|(avg, min_half, max_half, normalization)| ChunkerParams {
            min_size: min_half * 2,
            avg_size: avg,
            max_size: max_half * 2,
            normalization,
        })
}

fn repo_config() -> impl Strategy<Value = RepoConfig> {
    (
        any::<[u8; 32]>(),
        timestamp(),
        chunker_params(),
        prop_oneof![
            Just(Compression::Off),
            (-7i32..=22)
                .prop_filter("0 means off", |l| *l != 0)
                .prop_map(Compression::Zstd),
        ],
        64 * 1024u32..=u32::MAX / 2,
        64 * 1024u32..=u32::MAX / 2,
        extensions(),
    )
        .prop_map(
            |(repo_id, created, chunker, compression, data, tree, extensions)| RepoConfig {
                repo_id,
                created,
                chunker,
                compression,
                data_pack_target: data,
                tree_pack_target: tree,
                extensions,
            },
        )
}

fn check_envelope(
    key: &MasterKey,
    kind: ObjectKind,
    id: &[u8; 32],
    plain: &[u8],
    compression: Compression,
    seed: u64,
    picks: &[Index],
) -> Result<(), TestCaseError> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let sealed = envelope::seal(key, kind, id, plain, compression, &mut rng).unwrap();
    prop_assert_eq!(sealed[0], 1);
    prop_assert!(sealed.len() <= plain.len() + OVERHEAD);
    prop_assert_eq!(
        u32::from_le_bytes(sealed[2..6].try_into().unwrap()) as usize,
        plain.len()
    );
    let flagged = sealed[1] & FLAG_ZSTD != 0;
    if compression == Compression::Off || !flagged {
        prop_assert_eq!(sealed[1], 0);
        prop_assert_eq!(sealed.len(), plain.len() + OVERHEAD);
    }
    if compression != Compression::Off && plain.len() >= 1024 && plain.iter().all(|b| *b == 0) {
        prop_assert!(flagged, "1 KiB+ of zeros was not compressed");
    }
    let opened = envelope::open(key, kind, id, &sealed, "test").unwrap();
    prop_assert_eq!(opened.as_slice(), plain);
    let (oid, osealed) = envelope::seal_object(key, kind, plain, compression, &mut rng).unwrap();
    prop_assert_eq!(oid, key.id_key().hash(plain));
    let opened = envelope::open_object(key, kind, &oid, &osealed, "test").unwrap();
    prop_assert_eq!(opened.as_slice(), plain);
    for n in prefix_lengths(sealed.len(), picks) {
        prop_assert!(
            envelope::open(key, kind, id, &sealed[..n], "test").is_err(),
            "prefix {} opened",
            n
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    // Envelopes up to 64 KiB: XChaCha20-Poly1305 runs at a few MB/s in debug builds.
    #[test]
    fn envelope_round_trip(
        key in master_key(),
        kind in object_kind(),
        id in any::<[u8; 32]>(),
        plain in plaintext(64 * 1024),
        compression in compression(),
        seed in any::<u64>(),
        picks in vec(any::<Index>(), 6),
    ) {
        check_envelope(&key, kind, &id, &plain, compression, seed, &picks)?;
    }
}

proptest! {
    #[test]
    fn master_key_round_trip(key in master_key(), extra in any::<u8>()) {
        let enc = key.encode();
        prop_assert_eq!(enc.len(), 97);
        prop_assert_eq!(enc[0], 1);
        let back = MasterKey::decode(&enc).unwrap();
        prop_assert_eq!(back.data_key(), key.data_key());
        prop_assert_eq!(back.id_key(), key.id_key());
        prop_assert_eq!(back.chunker_seed(), key.chunker_seed());
        prop_assert!(back == key);
        for n in 0..enc.len() {
            prop_assert!(MasterKey::decode(&enc[..n]).is_err(), "prefix {} decoded", n);
        }
        let mut longer = enc.to_vec();
        longer.push(extra);
        let r = MasterKey::decode(&longer);
        prop_assert!(matches!(r, Err(FormatError::TrailingBytes { extra: 1, .. })), "{:?}", r);
    }

    #[test]
    fn key_slot_round_trip(
        key in master_key(),
        passphrase in vec(any::<u8>(), 0..32),
        label in "\\PC{0,40}",
        created in any::<i64>(),
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let slot = KeySlot::wrap_passphrase(
            &key, &passphrase, KdfParams::INSECURE_FOR_TESTS, &label, created, &mut rng,
        ).unwrap();
        prop_assert_eq!(&slot.label, &label);
        prop_assert_eq!(slot.created, created);
        prop_assert_eq!(slot.kdf_params(), KdfParams::INSECURE_FOR_TESTS);
        let bytes = slot.encode().unwrap();
        prop_assert_eq!(&bytes[..8], b"CAIRNKEY");
        let back = KeySlot::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &slot);
        prop_assert_eq!(back.encode().unwrap(), bytes.clone());
        prop_assert!(back.unwrap(&passphrase).unwrap() == key);
        let id_key = key.id_key();
        prop_assert_eq!(slot.id(&id_key).unwrap(), KeyId::from_bytes(id_key.hash(&bytes)));
        for n in prefix_lengths(bytes.len(), &[]) {
            prop_assert!(KeySlot::decode(&bytes[..n]).is_err(), "prefix {} decoded", n);
        }
    }

    #[test]
    fn pack_round_trip(
        key in master_key(),
        blob_type in blob_type(),
        blobs in vec((plaintext(4096), compression()), 0..20),
        seed in any::<u64>(),
        picks in vec(any::<Index>(), 8),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut builder = PackBuilder::new(&key, blob_type, 1024);
        prop_assert!(builder.is_empty());
        prop_assert_eq!(builder.blob_type(), blob_type);
        let mut data_len = 0;
        for (plain, compression) in &blobs {
            let (id, sealed) = seal_blob(&key, blob_type, plain, *compression, &mut rng).unwrap();
            prop_assert_eq!(id, key.id_key().blob_id(plain));
            builder.add(id, &sealed, plain.len() as u32).unwrap();
            data_len += sealed.len();
        }
        prop_assert_eq!(builder.len(), data_len);
        prop_assert_eq!(builder.count(), blobs.len());
        let fin = builder.finish(&key, &mut rng).unwrap();
        prop_assert_eq!(fin.entries.len(), blobs.len());
        let entries = read_pack(&key, &fin.bytes).unwrap();
        prop_assert_eq!(&entries, &fin.entries);
        for (entry, (plain, _)) in entries.iter().zip(&blobs) {
            prop_assert_eq!(entry.blob_type, blob_type);
            prop_assert_eq!(entry.id, key.id_key().blob_id(plain));
            prop_assert_eq!(entry.plain_len as usize, plain.len());
            let r = entry.range();
            let sealed = &fin.bytes[r.start as usize..r.end as usize];
            prop_assert_eq!(&entry.open(&key, sealed).unwrap(), plain);
        }
        prop_assert!(check_pack_id(&key, &fin.id, &fin.bytes).is_ok());
        prop_assert_eq!(fin.id, PackId::from_bytes(key.id_key().hash(&fin.bytes)));
        for n in prefix_lengths(fin.bytes.len(), &picks) {
            prop_assert!(read_pack(&key, &fin.bytes[..n]).is_err(), "prefix {} read", n);
            prop_assert!(check_pack_id(&key, &fin.id, &fin.bytes[..n]).is_err());
        }
    }

    #[test]
    fn index_round_trip(
        key in master_key(),
        index in index_file(),
        seed in any::<u64>(),
        picks in vec(any::<Index>(), 16),
    ) {
        let plain = index.encode().unwrap();
        prop_assert_eq!(IndexFile::decode(&plain).unwrap(), index.clone());
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (id, sealed) = index.seal(&key, &mut rng).unwrap();
        prop_assert_eq!(id, IndexId::from_bytes(key.id_key().hash(&plain)));
        prop_assert_eq!(IndexFile::open(&key, &id, &sealed).unwrap(), index);
        for n in prefix_lengths(plain.len(), &picks) {
            prop_assert!(IndexFile::decode(&plain[..n]).is_err(), "plain prefix {} decoded", n);
        }
        for n in prefix_lengths(sealed.len(), &picks) {
            prop_assert!(IndexFile::open(&key, &id, &sealed[..n]).is_err(), "sealed prefix {} opened", n);
        }
    }

    #[test]
    fn tree_round_trip(
        key in master_key(),
        tree in tree(),
        seed in any::<u64>(),
        picks in vec(any::<Index>(), 16),
    ) {
        let plain = tree.encode().unwrap();
        let back = Tree::decode(&plain).unwrap();
        prop_assert_eq!(&back, &tree);
        prop_assert_eq!(back.encode().unwrap(), plain.clone());
        // A tree is stored as a tree blob.
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (id, sealed) =
            seal_blob(&key, BlobType::Tree, &plain, Compression::default(), &mut rng).unwrap();
        let opened = cairn_format::open_blob(&key, BlobType::Tree, &id, &sealed).unwrap();
        prop_assert_eq!(Tree::decode(&opened).unwrap(), tree);
        for n in prefix_lengths(plain.len(), &picks) {
            prop_assert!(Tree::decode(&plain[..n]).is_err(), "prefix {} decoded", n);
        }
    }

    #[test]
    fn snapshot_round_trip(
        key in master_key(),
        snap in snapshot(),
        seed in any::<u64>(),
        picks in vec(any::<Index>(), 16),
    ) {
        let plain = snap.encode().unwrap();
        prop_assert_eq!(&Snapshot::decode(&plain).unwrap(), &snap);
        for (k, _) in &snap.meta {
            let first = snap.meta.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v.as_slice());
            prop_assert_eq!(snap.meta(k), first);
        }
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (id, sealed) = snap.seal(&key, &mut rng).unwrap();
        prop_assert_eq!(id, SnapshotId::from_bytes(key.id_key().hash(&plain)));
        prop_assert_eq!(&Snapshot::open(&key, &id, &sealed).unwrap(), &snap);
        for n in prefix_lengths(plain.len(), &picks) {
            prop_assert!(Snapshot::decode(&plain[..n]).is_err(), "plain prefix {} decoded", n);
        }
        for n in prefix_lengths(sealed.len(), &picks) {
            prop_assert!(Snapshot::open(&key, &id, &sealed[..n]).is_err(), "sealed prefix {} opened", n);
        }
    }

    #[test]
    fn config_round_trip(
        key in master_key(),
        cfg in repo_config(),
        seed in any::<u64>(),
    ) {
        cfg.validate().unwrap();
        let plain = cfg.encode().unwrap();
        prop_assert_eq!(&RepoConfig::decode(&plain).unwrap(), &cfg);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let stored = cfg.seal(&key, &mut rng).unwrap();
        prop_assert_eq!(&stored[..8], b"CAIRNCFG");
        prop_assert_eq!(RepoConfig::check_prefix(&stored).unwrap(), 1);
        prop_assert_eq!(&RepoConfig::open(&key, &stored).unwrap(), &cfg);
        for n in 0..plain.len() {
            prop_assert!(RepoConfig::decode(&plain[..n]).is_err(), "plain prefix {} decoded", n);
        }
        for n in 0..stored.len() {
            prop_assert!(RepoConfig::open(&key, &stored[..n]).is_err(), "stored prefix {} opened", n);
        }
    }
}

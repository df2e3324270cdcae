//! Writers refuse what readers would reject, so no object is ever sealed that cannot be opened.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use cairn_format::tree::Extension;
use cairn_format::{
    BlobId, Compression, FormatError, IndexFile, IndexPack, Node, NodeKind, PackEntry, PackId,
};
use cairn_format::{BlobType, DeltaBlock, RepoConfig, Snapshot, SnapshotKind, Timestamp, Tree};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn invalid<T: std::fmt::Debug>(r: Result<T, FormatError>) {
    assert!(
        matches!(r, Err(FormatError::InvalidParameter { .. })),
        "{r:?}"
    );
}

#[test]
fn timestamps_and_offsets() {
    let bad = Timestamp {
        secs: 0,
        nanos: 1_000_000_000,
    };
    invalid(Snapshot::new(SnapshotKind::Files, bad, BlobId::default()).encode());
    let mut s = Snapshot::new(SnapshotKind::Files, Timestamp::default(), BlobId::default());
    s.tz_offset_secs = 86_401;
    invalid(s.encode());
    s.tz_offset_secs = -86_400;
    assert!(Snapshot::decode(&s.encode().unwrap()).is_ok());
    invalid(
        Snapshot::new(
            SnapshotKind::Other(1),
            Timestamp::default(),
            BlobId::default(),
        )
        .encode(),
    );
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut c = RepoConfig::new(bad, &mut rng);
    invalid(c.encode());
    c.created = Timestamp::default();
    c.compression = Compression::Zstd(0);
    invalid(c.validate());
}

#[test]
fn node_kinds_and_extensions() {
    let mut dir = Node::new("d", NodeKind::Dir);
    invalid(
        Tree {
            nodes: vec![dir.clone()],
        }
        .encode(),
    );
    dir.subtree = Some(BlobId::default());
    assert!(
        Tree::decode(
            &Tree {
                nodes: vec![dir.clone()]
            }
            .encode()
            .unwrap()
        )
        .is_ok()
    );
    let mut link = Node::new("l", NodeKind::Symlink);
    link.content = vec![BlobId::default()];
    invalid(Tree { nodes: vec![link] }.encode());
    let mut file = Node::new("f", NodeKind::File);
    file.subtree = Some(BlobId::default());
    invalid(Tree { nodes: vec![file] }.encode());
    dir.extensions = vec![
        Extension {
            tag: 5,
            bytes: vec![],
        },
        Extension {
            tag: 5,
            bytes: vec![],
        },
    ];
    invalid(
        Tree {
            nodes: vec![dir.clone()],
        }
        .encode(),
    );
    dir.extensions = vec![Extension {
        tag: 0x8001,
        bytes: vec![],
    }];
    invalid(Tree { nodes: vec![dir] }.encode());
}

#[test]
fn critical_extension_is_refused_by_readers() {
    let mut dir = Node::new("d", NodeKind::Dir);
    dir.subtree = Some(BlobId::default());
    dir.extensions = vec![Extension {
        tag: 0x0002,
        bytes: vec![1, 2],
    }];
    let mut bytes = Tree { nodes: vec![dir] }.encode().unwrap();
    // The tag is the 6 bytes before the extension's 2-byte payload: tag[2] || len[4].
    // 0x8002 is not defined (0x8001, delta blocks, is).
    let at = bytes.len() - 2 - 4 - 2;
    assert_eq!(&bytes[at..at + 2], &2u16.to_le_bytes());
    bytes[at + 1] = 0x80;
    let r = Tree::decode(&bytes);
    assert!(
        matches!(r, Err(FormatError::UnsupportedVersion { .. })),
        "{r:?}"
    );
}

#[test]
fn index_entries_shorter_than_an_envelope() {
    let file = IndexFile {
        supersedes: vec![],
        packs: vec![IndexPack {
            id: PackId::default(),
            blobs: vec![PackEntry {
                blob_type: BlobType::Data,
                id: BlobId::default(),
                offset: 0,
                stored_len: 3,
                plain_len: 1,
            }],
        }],
    };
    invalid(file.encode());
}

fn delta_file() -> Node {
    let mut f = Node::new("rel", NodeKind::File);
    f.content = vec![BlobId::from_bytes([1; 32]), BlobId::from_bytes([2; 32])];
    f.deltas = vec![DeltaBlock {
        index: 1,
        len: 65536,
        patch: BlobId::from_bytes([3; 32]),
        base: BlobId::from_bytes([4; 32]),
    }];
    f
}

#[test]
fn delta_blocks_round_trip_and_name_their_blobs() {
    let mut f = delta_file();
    f.extensions = vec![Extension {
        tag: 0x0005,
        bytes: vec![9],
    }];
    let tree = Tree { nodes: vec![f] };
    let back = Tree::decode(&tree.encode().unwrap()).unwrap();
    assert_eq!(back, tree);
    let node = &back.nodes[0];
    assert!(node.delta(0).is_none());
    assert_eq!(node.delta(1).unwrap().len, 65536);
    let stored: Vec<BlobId> = node.stored_blobs().collect();
    assert_eq!(
        stored,
        vec![
            BlobId::from_bytes([1; 32]),
            BlobId::from_bytes([3; 32]),
            BlobId::from_bytes([4; 32])
        ]
    );
}

#[test]
fn delta_blocks_rules() {
    // Beyond the content list, out of order, on a directory, too long: writers refuse.
    let mut f = delta_file();
    f.deltas[0].index = 2;
    invalid(Tree { nodes: vec![f] }.encode());
    let mut f = delta_file();
    f.deltas.push(f.deltas[0]);
    invalid(Tree { nodes: vec![f] }.encode());
    let mut f = delta_file();
    f.deltas[0].len = u32::MAX;
    invalid(Tree { nodes: vec![f] }.encode());
    let mut d = Node::new("d", NodeKind::Dir);
    d.subtree = Some(BlobId::default());
    d.deltas = delta_file().deltas;
    d.deltas[0].index = 0;
    invalid(Tree { nodes: vec![d] }.encode());

    // Readers reject the same when the bytes say it: the index is the 4 bytes after the
    // extension header at the end of the node (tag[2] || len[4] || count[4] || index[4] ...).
    let good = Tree {
        nodes: vec![delta_file()],
    }
    .encode()
    .unwrap();
    let entry = good.len() - (4 + 4 + 32 + 32);
    let mut bad = good.clone();
    bad[entry..entry + 4].copy_from_slice(&7u32.to_le_bytes());
    let r = Tree::decode(&bad);
    assert!(matches!(r, Err(FormatError::Malformed { .. })), "{r:?}");
    // An empty delta list is malformed too (writers leave the tag out).
    let mut bad = good.clone();
    bad.truncate(entry);
    let ext_len_at = entry - 4 - 4;
    bad[ext_len_at..ext_len_at + 4].copy_from_slice(&4u32.to_le_bytes());
    let count_at = entry - 4;
    bad[count_at..count_at + 4].copy_from_slice(&0u32.to_le_bytes());
    let r = Tree::decode(&bad);
    assert!(matches!(r, Err(FormatError::Malformed { .. })), "{r:?}");
}

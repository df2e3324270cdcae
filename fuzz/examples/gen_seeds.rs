//! Writes small valid seed inputs for the fuzz targets into `fuzz/seeds/<target>/`.
//!
//! Run from `fuzz/`: `cargo run --example gen_seeds`. Output is deterministic (seeded
//! `ChaCha20Rng`), so re-running it leaves the committed seeds unchanged. Objects meant to be
//! opened by a target (pack, config) are sealed under the targets' fixed key
//! `MasterKey::from_parts([1; 32], [2; 32], [3; 32])`; envelope seeds are sealed under another
//! key, since that target asserts that nothing opens under the fixed one.

use std::fs;
use std::path::{Path, PathBuf};

use cairn_format::envelope::{self, ObjectKind};
use cairn_format::pack::{self, TRAILER_LEN};
use cairn_format::tree::{Extension, Xattr};
use cairn_format::{
    BlobId, BlobType, Compression, IndexFile, IndexId, IndexPack, KdfParams, KeySlot, MasterKey,
    Node, NodeKind, PackBuilder, PackId, RepoConfig, Snapshot, SnapshotId, SnapshotKind, Timestamp,
    Tree, seal_blob,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn fuzz_key() -> MasterKey {
    MasterKey::from_parts([1; 32], [2; 32], [3; 32])
}

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = root.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes)?;
    println!("{target}/{name}: {} bytes", bytes.len());
    Ok(())
}

fn id(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    b
}

fn ts(secs: i64, nanos: u32) -> Timestamp {
    Timestamp { secs, nanos }
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut rng = ChaCha20Rng::seed_from_u64(0x000c_a124);
    let key = fuzz_key();

    // keyslot: two passphrase slots with cheap KDF parameters.
    let slot = KeySlot::wrap_passphrase(
        &key,
        b"fuzz",
        KdfParams::INSECURE_FOR_TESTS,
        "seed@fuzz",
        1_700_000_000,
        &mut rng,
    )?;
    write(&root, "keyslot", "labelled", &slot.encode()?)?;
    let slot = KeySlot::wrap_passphrase(&key, b"", KdfParams::INSECURE_FOR_TESTS, "", 0, &mut rng)?;
    write(&root, "keyslot", "empty_label", &slot.encode()?)?;

    // envelope: well-formed, raw and zstd, sealed under a key other than the fixed one.
    let other = MasterKey::generate(&mut rng);
    let raw = envelope::seal(
        &other,
        ObjectKind::DataBlob,
        &[0; 32],
        b"hello fuzzer",
        Compression::Off,
        &mut rng,
    )?;
    write(&root, "envelope", "raw", &raw)?;
    let zstd = envelope::seal(
        &other,
        ObjectKind::Index,
        &[0xff; 32],
        &b"compressible ".repeat(16),
        Compression::Zstd(3),
        &mut rng,
    )?;
    write(&root, "envelope", "zstd", &zstd)?;

    // pack: two data blobs, under the fixed key. Target input = data_len (u32 LE) || bytes.
    let mut builder = PackBuilder::new(&key, BlobType::Data, 1024);
    let mut pack_ids = Vec::new();
    for plain in [&b"first blob"[..], &b"second blob, a bit longer ".repeat(4)] {
        let (blob_id, sealed) = seal_blob(
            &key,
            BlobType::Data,
            plain,
            Compression::default(),
            &mut rng,
        )?;
        builder.add(blob_id, &sealed, plain.len() as u32)?;
        pack_ids.push(blob_id);
    }
    let finished = builder.finish(&key, &mut rng)?;
    assert_eq!(pack::read_pack(&key, &finished.bytes)?, finished.entries);
    let data_len = finished.entries.last().map_or(0, |e| e.range().end);
    let header = pack::encode_header(&finished.entries)?;
    assert_eq!(pack::decode_header(&header, data_len)?, finished.entries);
    let data_len = u32::try_from(data_len)?;
    let mut whole = data_len.to_le_bytes().to_vec();
    whole.extend_from_slice(&finished.bytes);
    write(&root, "pack", "whole_pack", &whole)?;
    let mut plain_header = data_len.to_le_bytes().to_vec();
    plain_header.extend_from_slice(&header);
    write(&root, "pack", "header_plaintext", &plain_header)?;
    assert!(finished.bytes.len() > TRAILER_LEN);

    // index: two packs (the one above and a made-up tree pack), superseding one index.
    let tree_pack_id = PackId::from_bytes(id(&mut rng));
    let tree_entries = vec![cairn_format::PackEntry {
        blob_type: BlobType::Tree,
        id: BlobId::from_bytes(id(&mut rng)),
        offset: 0,
        stored_len: 200,
        plain_len: 400,
    }];
    let index = IndexFile {
        supersedes: vec![IndexId::from_bytes(id(&mut rng))],
        packs: vec![
            IndexPack {
                id: finished.id,
                blobs: finished.entries.clone(),
            },
            IndexPack {
                id: tree_pack_id,
                blobs: tree_entries,
            },
        ],
    };
    let bytes = index.encode()?;
    assert_eq!(IndexFile::decode(&bytes)?, index);
    write(&root, "index", "two_packs", &bytes)?;

    // tree: a directory, a file and a symlink, sorted by name.
    let mut dir = Node::new(&b"dir"[..], NodeKind::Dir);
    dir.mode = 0o755;
    dir.subtree = Some(BlobId::from_bytes(id(&mut rng)));
    dir.mtime = ts(1_700_000_000, 5);
    let mut file = Node::new(&b"file.txt"[..], NodeKind::File);
    file.mode = 0o644;
    file.uid = 1000;
    file.gid = 1000;
    file.user = "user".into();
    file.group = "group".into();
    file.size = 131;
    file.links = 1;
    file.content = pack_ids.clone();
    file.xattrs.push(Xattr {
        name: b"user.comment".to_vec(),
        value: b"seed".to_vec(),
    });
    file.extensions.push(Extension {
        tag: 7,
        bytes: b"ext".to_vec(),
    });
    let mut link = Node::new(&b"link"[..], NodeKind::Symlink);
    link.mode = 0o777;
    link.target = b"file.txt".to_vec();
    link.size = 8;
    let mut tree = Tree {
        nodes: vec![link, file, dir],
    };
    tree.sort();
    let bytes = tree.encode()?;
    assert_eq!(Tree::decode(&bytes)?, tree);
    write(&root, "tree", "three_nodes", &bytes)?;

    // snapshot: every field set.
    let mut snap = Snapshot::new(
        SnapshotKind::Files,
        ts(1_700_000_123, 456),
        BlobId::from_bytes(id(&mut rng)),
    );
    snap.tz_offset_secs = 3600;
    snap.hostname = "host".into();
    snap.username = "user".into();
    snap.paths = vec![b"/home/user".to_vec(), b"/etc".to_vec()];
    snap.tags = vec!["daily".into()];
    snap.parent = Some(SnapshotId::from_bytes(id(&mut rng)));
    snap.summary.files_new = 3;
    snap.summary.bytes_read = 131;
    snap.meta.push(("timeline".into(), b"1".to_vec()));
    snap.extensions.push(Extension {
        tag: 1,
        bytes: vec![9],
    });
    let bytes = snap.encode()?;
    assert_eq!(Snapshot::decode(&bytes)?, snap);
    write(&root, "snapshot", "full", &bytes)?;
    let bare = Snapshot::new(SnapshotKind::PgBaseBackup, ts(0, 0), BlobId::default());
    write(&root, "snapshot", "bare", &bare.encode()?)?;

    // config: sealed under the fixed key (opens), and its plaintext (decodes).
    let cfg = RepoConfig::new(ts(1_700_000_000, 0), &mut rng);
    let sealed = cfg.seal(&key, &mut rng)?;
    assert_eq!(RepoConfig::open(&key, &sealed)?, cfg);
    write(&root, "config", "sealed", &sealed)?;
    let plain = cfg.encode()?;
    assert_eq!(RepoConfig::decode(&plain)?, cfg);
    write(&root, "config", "plaintext", &plain)?;

    // id_hex: an id in lower and in upper case.
    let hex = BlobId::from_bytes(id(&mut rng)).to_hex();
    write(&root, "id_hex", "lower", hex.as_bytes())?;
    write(&root, "id_hex", "upper", hex.to_uppercase().as_bytes())?;

    // chunker: seed[32] || variant (u32 LE; >= 2^31 picks `Params::Small`) || min, avg, max
    // (u16 LE each) || normalization (u8) || data. These pick min 62+2*97=256, avg 254+2*385=1024,
    // max 1022+2*1513=4048, normalization 1, all valid.
    let mut chunker = key.chunker_seed().to_vec();
    chunker.extend_from_slice(&0x8000_0000u32.to_le_bytes());
    for v in [97u16, 385, 1513] {
        chunker.extend_from_slice(&v.to_le_bytes());
    }
    chunker.push(1);
    let mut data = vec![0u8; 3000];
    rng.fill_bytes(&mut data);
    chunker.extend_from_slice(&data);
    write(&root, "chunker", "small_params", &chunker)?;
    Ok(())
}

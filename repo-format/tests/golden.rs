#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Golden vectors of format v1 (`tests/vectors/v1.json`).
//!
//! Everything is derived from fixed inputs: a master key built from fixed bytes, and for each
//! vector a `ChaCha20Rng` seeded with a fixed `u64` for its nonces and salts. The test regenerates
//! the vectors in memory and compares them with the file; `CAIRN_BLESS=1` rewrites the file.
//! A second test decodes every stored vector back with the fixed key and passphrase, so the
//! vectors are proven readable independently of how they were produced.
//!
//! Note: vectors sealed with zstd (the compressible envelope, the index and the snapshot) depend
//! on the zstd library's output; a zstd upgrade can change them without a format change (they
//! then still decode, which the second test checks).

use std::collections::BTreeMap;
use std::path::Path;

use cairn_format::chunker::gear_table;
use cairn_format::envelope::{self, FLAG_ZSTD};
use cairn_format::id::hex_encode;
use cairn_format::pack::check_pack_id;
use cairn_format::tree::{Extension, Xattr};
use cairn_format::{
    BlobId, BlobType, Chunker, ChunkerParams, Compression, IndexFile, IndexId, IndexPack,
    KdfParams, KeyId, KeySlot, MasterKey, Node, NodeKind, ObjectKind, PackBuilder, PackEntry,
    PackId, RepoConfig, Snapshot, SnapshotId, SnapshotKind, Summary, Timestamp, Tree, read_pack,
    seal_blob,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::{Value, json};

type Vectors = BTreeMap<String, Value>;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/v1.json");
const HINT: &str = "run CAIRN_BLESS=1 cargo test -p cairn-format --test golden to regenerate, \
                    and bump the format version if bytes of v1 changed";
const PASSPHRASE: &str = "correct horse";
const CHUNKER_INPUT_LEN: usize = 300_001;
const CHUNKER_INPUT_SEED: u64 = 42;

// ---------------------------------------------------------------------------------------------
// Fixed inputs
// ---------------------------------------------------------------------------------------------

fn counting(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn fixed_key() -> MasterKey {
    MasterKey::from_parts(counting(0x00), counting(0x20), counting(0x40))
}

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn chacha_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng(seed).fill_bytes(&mut v);
    v
}

fn chunker_sets() -> Vec<(&'static str, ChunkerParams, usize)> {
    let p = |min_size, avg_size, max_size, normalization| ChunkerParams {
        min_size,
        avg_size,
        max_size,
        normalization,
    };
    vec![
        (
            "chunks/min2048_avg8192_max32768_n1",
            p(2048, 8192, 32768, 1),
            CHUNKER_INPUT_LEN,
        ),
        (
            "chunks/min4000_avg12000_max48000_n2",
            p(4000, 12000, 48000, 2),
            CHUNKER_INPUT_LEN,
        ),
        (
            "chunks/min1000_avg3000_max9002_n3",
            p(1000, 3000, 9002, 3),
            CHUNKER_INPUT_LEN,
        ),
        (
            "chunks/min64_avg300_max1026_n0_first4097",
            p(64, 300, 1026, 0),
            4097,
        ),
    ]
}

fn pack_plaintexts() -> Vec<Vec<u8>> {
    vec![
        b"alpha".to_vec(),
        b"beta beta beta beta beta beta beta beta".to_vec(),
        chacha_bytes(3, 32),
    ]
}

fn golden_tree(key: &MasterKey) -> Tree {
    let id_key = key.id_key();
    let t = |secs, nanos| Timestamp { secs, nanos };
    let mut bin = Node::new("bin", NodeKind::Dir);
    bin.mode = 0o755;
    bin.user = "root".into();
    bin.group = "root".into();
    bin.mtime = t(1_700_000_000, 123);
    bin.ctime = t(1_700_000_001, 0);
    bin.atime = t(-1, 999_999_999);
    bin.inode = 10;
    bin.links = 2;
    bin.device = 2049;
    bin.subtree = Some(id_key.blob_id(b"subtree"));
    let mut hello = Node::new("hello.txt", NodeKind::File);
    hello.mode = 0o644;
    hello.uid = 1000;
    hello.gid = 1000;
    hello.user = "alice".into();
    hello.group = "staff".into();
    hello.mtime = t(1_600_000_000, 1);
    hello.size = 11;
    hello.inode = 11;
    hello.links = 1;
    hello.content = vec![id_key.blob_id(b"hello "), id_key.blob_id(b"world")];
    hello.xattrs = vec![Xattr {
        name: b"user.comment".to_vec(),
        value: b"hi".to_vec(),
    }];
    hello.extensions = vec![Extension {
        tag: 1,
        bytes: vec![1, 2, 3],
    }];
    let mut link = Node::new("link", NodeKind::Symlink);
    link.mode = 0o777;
    link.size = 9;
    link.target = b"hello.txt".to_vec();
    let mut fifo = Node::new(vec![0xff, b'x'], NodeKind::Fifo);
    fifo.rdev = 0x0801;
    let mut tree = Tree {
        nodes: vec![fifo, link, hello, bin],
    };
    tree.sort();
    tree
}

fn golden_snapshot(tree: BlobId) -> Snapshot {
    let mut s = Snapshot::new(
        SnapshotKind::Files,
        Timestamp {
            secs: 1_700_000_000,
            nanos: 500_000_000,
        },
        tree,
    );
    s.tz_offset_secs = 3600;
    s.hostname = "golden-host".into();
    s.username = "alice".into();
    s.paths = vec![b"/home/alice".to_vec(), vec![b'/', 0xff]];
    s.tags = vec!["daily".into(), "golden".into()];
    s.parent = Some(SnapshotId::from_bytes([7; 32]));
    s.summary = Summary {
        files_new: 1,
        files_changed: 2,
        files_unchanged: 3,
        dirs_new: 4,
        dirs_changed: 5,
        dirs_unchanged: 6,
        bytes_read: 7,
        total_bytes: 8,
        blobs_added: 9,
        bytes_added_plain: 10,
        bytes_added_stored: 11,
        duration_nanos: 12,
    };
    s.meta = vec![("pg.start_lsn".into(), b"0/2000028".to_vec())];
    s.extensions = vec![Extension {
        tag: 2,
        bytes: b"x".to_vec(),
    }];
    s
}

fn golden_config() -> RepoConfig {
    RepoConfig {
        repo_id: counting(0x80),
        created: Timestamp {
            secs: 1_700_000_000,
            nanos: 42,
        },
        chunker: ChunkerParams {
            min_size: 4000,
            avg_size: 12000,
            max_size: 48000,
            normalization: 1,
        },
        compression: Compression::Zstd(3),
        data_pack_target: 16 << 20,
        tree_pack_target: 4 << 20,
        extensions: vec![],
    }
}

fn cut_points(lengths: &[usize]) -> Vec<usize> {
    lengths
        .iter()
        .scan(0, |end, len| {
            *end += len;
            Some(*end)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

fn generate() -> Vectors {
    let key = fixed_key();
    let id_key = key.id_key();
    let mut v = Vectors::new();
    v.insert(
        "_about".into(),
        json!(
            "Cairn format v1 golden vectors, generated by repo-format/tests/golden.rs. \
             All byte strings are lower-case hex. Each sealed vector draws its nonces and salts \
             from ChaCha20Rng::seed_from_u64(rng_seed)."
        ),
    );
    v.insert(
        "master_key".into(),
        json!({
            "data_key": hex_encode(key.data_key()),
            "id_key": hex_encode(id_key.as_bytes()),
            "chunker_seed": hex_encode(key.chunker_seed()),
            "encoding": hex_encode(&key.encode()),
        }),
    );

    let gear = gear_table(key.chunker_seed());
    v.insert(
        "gear_table_first8".into(),
        json!(
            gear[..8]
                .iter()
                .map(|g| format!("{g:016x}"))
                .collect::<Vec<_>>()
        ),
    );

    let input = chacha_bytes(CHUNKER_INPUT_SEED, CHUNKER_INPUT_LEN);
    v.insert(
        "chunker_input".into(),
        json!({
            "generator": "ChaCha20Rng::seed_from_u64(42).fill_bytes",
            "len": CHUNKER_INPUT_LEN,
            "id_key_hash": hex_encode(&id_key.hash(&input)),
        }),
    );
    for (name, p, len) in chunker_sets() {
        let chunker = Chunker::new(key.chunker_seed(), p).unwrap();
        let cuts = cut_points(&chunker.chunk_lengths(&input[..len]));
        v.insert(
            name.into(),
            json!({
                "min_size": p.min_size,
                "avg_size": p.avg_size,
                "max_size": p.max_size,
                "normalization": p.normalization,
                "input_len": len,
                "cut_points": cuts,
            }),
        );
    }

    let big: Vec<u8> = (0..(1usize << 20) + 7).map(|i| (i % 251) as u8).collect();
    v.insert(
        "blob_ids".into(),
        json!({
            "empty": id_key.blob_id(b"").to_hex(),
            "hello world": id_key.blob_id(b"hello world").to_hex(),
            "zeros_4096": id_key.blob_id(&[0; 4096]).to_hex(),
            "i_mod_251_len_1048583": id_key.blob_id(&big).to_hex(),
        }),
    );

    for (name, plain, seed) in [
        (
            "envelope/compressible",
            b"cairn cairn cairn cairn cairn cairn cairn cairn cairn cairn ".to_vec(),
            1u64,
        ),
        ("envelope/incompressible", chacha_bytes(2, 48), 2u64),
    ] {
        let (id, sealed) = seal_blob(
            &key,
            BlobType::Data,
            &plain,
            Compression::Zstd(3),
            &mut rng(seed),
        )
        .unwrap();
        v.insert(
            name.into(),
            json!({
                "kind": "DataBlob",
                "compression": "zstd 3",
                "rng_seed": seed,
                "plaintext": hex_encode(&plain),
                "id": id.to_hex(),
                "sealed": hex_encode(&sealed),
            }),
        );
    }

    let plains = pack_plaintexts();
    let mut rng_pack = rng(4);
    let mut builder = PackBuilder::new(&key, BlobType::Data, 1024);
    for p in &plains {
        let (id, sealed) =
            seal_blob(&key, BlobType::Data, p, Compression::Zstd(3), &mut rng_pack).unwrap();
        builder.add(id, &sealed, p.len() as u32).unwrap();
    }
    let pack = builder.finish(&key, &mut rng_pack).unwrap();
    v.insert(
        "pack".into(),
        json!({
            "rng_seed": 4,
            "blob_type": "data",
            "plaintexts": plains.iter().map(|p| hex_encode(p)).collect::<Vec<_>>(),
            "id": pack.id.to_hex(),
            "bytes": hex_encode(&pack.bytes),
        }),
    );

    let index = IndexFile {
        supersedes: vec![IndexId::from_bytes([0xee; 32])],
        packs: vec![IndexPack {
            id: pack.id,
            blobs: pack.entries.clone(),
        }],
    };
    let (index_id, index_sealed) = index.seal(&key, &mut rng(5)).unwrap();
    v.insert(
        "index".into(),
        json!({
            "rng_seed": 5,
            "plaintext": hex_encode(&index.encode().unwrap()),
            "id": index_id.to_hex(),
            "sealed": hex_encode(&index_sealed),
        }),
    );

    let slot = KeySlot::wrap_passphrase(
        &key,
        PASSPHRASE.as_bytes(),
        KdfParams::INSECURE_FOR_TESTS,
        "golden",
        1_700_000_000,
        &mut rng(6),
    )
    .unwrap();
    v.insert(
        "keyslot".into(),
        json!({
            "rng_seed": 6,
            "passphrase": PASSPHRASE,
            "label": "golden",
            "created": 1_700_000_000,
            "kdf": "argon2id m=8KiB t=1 p=1 (KdfParams::INSECURE_FOR_TESTS)",
            "bytes": hex_encode(&slot.encode().unwrap()),
            "key_id": slot.id(&id_key).unwrap().to_hex(),
        }),
    );

    let tree = golden_tree(&key);
    let tree_plain = tree.encode().unwrap();
    let tree_id = id_key.blob_id(&tree_plain);
    v.insert(
        "tree".into(),
        json!({
            "plaintext": hex_encode(&tree_plain),
            "blob_id": tree_id.to_hex(),
        }),
    );

    let snap = golden_snapshot(tree_id);
    let (snap_id, snap_sealed) = snap.seal(&key, &mut rng(7)).unwrap();
    v.insert(
        "snapshot".into(),
        json!({
            "rng_seed": 7,
            "plaintext": hex_encode(&snap.encode().unwrap()),
            "id": snap_id.to_hex(),
            "sealed": hex_encode(&snap_sealed),
        }),
    );

    let cfg = golden_config();
    v.insert(
        "config".into(),
        json!({
            "rng_seed": 8,
            "plaintext": hex_encode(&cfg.encode().unwrap()),
            "stored": hex_encode(&cfg.seal(&key, &mut rng(8)).unwrap()),
        }),
    );
    v
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn vectors_match_v1() {
    let fresh = generate();
    if std::env::var("CAIRN_BLESS").as_deref() == Ok("1") {
        let text = serde_json::to_string_pretty(&fresh).unwrap() + "\n";
        let path = Path::new(VECTORS);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
        eprintln!("wrote {VECTORS}");
        return;
    }
    let text = std::fs::read_to_string(VECTORS)
        .unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}; {HINT}"));
    let stored: Vectors = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{VECTORS} is not valid JSON: {e}; {HINT}"));
    let mut differ = Vec::new();
    for k in fresh
        .keys()
        .chain(stored.keys().filter(|k| !fresh.contains_key(*k)))
    {
        match (fresh.get(k), stored.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => differ.push(format!("{k} (changed)")),
            (Some(_), None) => differ.push(format!("{k} (missing from the file)")),
            (None, _) => differ.push(format!("{k} (no longer generated)")),
        }
    }
    assert!(
        differ.is_empty(),
        "golden vectors differ from {VECTORS}:\n  {}\n{HINT}",
        differ.join("\n  ")
    );
}

fn stored() -> Vectors {
    let text = std::fs::read_to_string(VECTORS)
        .unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}; {HINT}"));
    serde_json::from_str(&text).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a hex string: {v}"));
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn unhex32(v: &Value) -> [u8; 32] {
    unhex(v).try_into().unwrap()
}

/// Decodes every stored vector back, using only the file, the fixed passphrase and the key the
/// file records.
#[test]
fn stored_vectors_decode() {
    let v = stored();
    let mk = &v["master_key"];
    let key = MasterKey::from_parts(
        unhex32(&mk["data_key"]),
        unhex32(&mk["id_key"]),
        unhex32(&mk["chunker_seed"]),
    );
    assert!(MasterKey::decode(&unhex(&mk["encoding"])).unwrap() == key);
    assert!(key == fixed_key(), "the file records another master key");
    let id_key = key.id_key();

    // Gear table and cut points: well-formed, and reproduced by this build's chunker.
    let gear = gear_table(key.chunker_seed());
    let first8: Vec<String> = v["gear_table_first8"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(first8.len(), 8);
    for (g, s) in gear.iter().zip(&first8) {
        assert_eq!(*g, u64::from_str_radix(s, 16).unwrap());
    }
    let input = chacha_bytes(CHUNKER_INPUT_SEED, CHUNKER_INPUT_LEN);
    assert_eq!(
        hex_encode(&id_key.hash(&input)),
        v["chunker_input"]["id_key_hash"].as_str().unwrap()
    );
    for (name, p, len) in chunker_sets() {
        let c = &v[name];
        assert_eq!(c["input_len"].as_u64().unwrap() as usize, len);
        let cuts: Vec<usize> = c["cut_points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(*cuts.last().unwrap(), len, "{name}");
        let mut prev = 0;
        for (i, cut) in cuts.iter().enumerate() {
            let chunk = cut - prev;
            assert!(chunk <= p.max_size as usize, "{name}");
            assert!(
                i + 1 == cuts.len() || chunk >= p.min_size as usize,
                "{name}"
            );
            prev = *cut;
        }
        let chunker = Chunker::new(key.chunker_seed(), p).unwrap();
        assert_eq!(cut_points(&chunker.chunk_lengths(&input[..len])), cuts);
    }

    // Blob ids.
    let ids = &v["blob_ids"];
    assert_eq!(ids["empty"].as_str().unwrap(), id_key.blob_id(b"").to_hex());
    assert_eq!(
        ids["hello world"].as_str().unwrap(),
        id_key.blob_id(b"hello world").to_hex()
    );

    // Envelopes open to their plaintexts under their ids.
    for (name, compressed) in [
        ("envelope/compressible", true),
        ("envelope/incompressible", false),
    ] {
        let e = &v[name];
        let plain = unhex(&e["plaintext"]);
        let id = BlobId::from_bytes(unhex32(&e["id"]));
        let sealed = unhex(&e["sealed"]);
        assert_eq!(id, id_key.blob_id(&plain));
        assert_eq!(sealed[1] & FLAG_ZSTD != 0, compressed, "{name}");
        assert_eq!(
            envelope::open(&key, ObjectKind::DataBlob, id.as_bytes(), &sealed, "blob").unwrap(),
            plain
        );
        assert_eq!(
            cairn_format::open_blob(&key, BlobType::Data, &id, &sealed).unwrap(),
            plain
        );
    }

    // The pack: header, blobs, and id.
    let p = &v["pack"];
    let pack_bytes = unhex(&p["bytes"]);
    let pack_id = PackId::from_bytes(unhex32(&p["id"]));
    check_pack_id(&key, &pack_id, &pack_bytes).unwrap();
    let entries = read_pack(&key, &pack_bytes).unwrap();
    let plains: Vec<Vec<u8>> = p["plaintexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(unhex)
        .collect();
    assert_eq!(entries.len(), plains.len());
    assert_eq!(entries.len(), 3);
    for (e, plain) in entries.iter().zip(&plains) {
        assert_eq!(e.blob_type, BlobType::Data);
        assert_eq!(e.id, id_key.blob_id(plain));
        let blob = &pack_bytes[e.range().start as usize..e.range().end as usize];
        assert_eq!(&e.open(&key, blob).unwrap(), plain);
    }

    // The index lists that pack.
    let i = &v["index"];
    let index_id = IndexId::from_bytes(unhex32(&i["id"]));
    let index = IndexFile::open(&key, &index_id, &unhex(&i["sealed"])).unwrap();
    assert_eq!(IndexFile::decode(&unhex(&i["plaintext"])).unwrap(), index);
    assert_eq!(index.supersedes, vec![IndexId::from_bytes([0xee; 32])]);
    assert_eq!(index.packs.len(), 1);
    assert_eq!(index.packs[0].id, pack_id);
    let listed: &[PackEntry] = &index.packs[0].blobs;
    assert_eq!(listed, entries.as_slice());

    // The key slot unwraps to the master key with the passphrase.
    let k = &v["keyslot"];
    let slot_bytes = unhex(&k["bytes"]);
    let slot = KeySlot::decode(&slot_bytes).unwrap();
    assert_eq!(slot.label, k["label"].as_str().unwrap());
    assert_eq!(slot.created, k["created"].as_i64().unwrap());
    assert_eq!(slot.kdf_params(), KdfParams::INSECURE_FOR_TESTS);
    let passphrase = k["passphrase"].as_str().unwrap();
    assert!(slot.unwrap(passphrase.as_bytes()).unwrap() == key);
    assert_eq!(
        KeyId::from_bytes(id_key.hash(&slot_bytes)),
        KeyId::from_bytes(unhex32(&k["key_id"]))
    );

    // The tree.
    let t = &v["tree"];
    let tree_plain = unhex(&t["plaintext"]);
    let tree = Tree::decode(&tree_plain).unwrap();
    let tree_id = BlobId::from_bytes(unhex32(&t["blob_id"]));
    assert_eq!(tree_id, id_key.blob_id(&tree_plain));
    assert_eq!(tree.encode().unwrap(), tree_plain);
    let names: Vec<&[u8]> = tree.nodes.iter().map(|n| n.name.as_slice()).collect();
    assert_eq!(names, [&b"bin"[..], b"hello.txt", b"link", &[0xff, b'x']]);
    assert_eq!(tree, golden_tree(&key));

    // The snapshot: plaintext, id, sealed form, and its link to the tree.
    let s = &v["snapshot"];
    let snap_plain = unhex(&s["plaintext"]);
    let snap_id = SnapshotId::from_bytes(unhex32(&s["id"]));
    assert_eq!(snap_id, SnapshotId::from_bytes(id_key.hash(&snap_plain)));
    let snap = Snapshot::decode(&snap_plain).unwrap();
    assert_eq!(
        Snapshot::open(&key, &snap_id, &unhex(&s["sealed"])).unwrap(),
        snap
    );
    assert_eq!(snap.tree, tree_id);
    assert_eq!(snap.meta("pg.start_lsn"), Some(&b"0/2000028"[..]));
    assert_eq!(snap, golden_snapshot(tree_id));

    // The config.
    let c = &v["config"];
    let stored_cfg = unhex(&c["stored"]);
    assert_eq!(RepoConfig::check_prefix(&stored_cfg).unwrap(), 1);
    let cfg = RepoConfig::open(&key, &stored_cfg).unwrap();
    assert_eq!(RepoConfig::decode(&unhex(&c["plaintext"])).unwrap(), cfg);
    assert_eq!(cfg, golden_config());
}

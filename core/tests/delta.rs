//! Fixed-block files backed up against a parent: changed blocks stored as patches against the
//! parent's whole blocks (never patch on patch), restored and dumped byte for byte, checked, and
//! kept restorable when the snapshots that first stored the bases are forgotten and pruned.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::backup::{BackupSession, Policy, PolicyFn};
use cairn::format::{Node, NodeKind, Snapshot, SnapshotKind, Tree};
use cairn::prune::{PruneOptions, prune};
use cairn::{BackupOptions, Error, NoProgress, Repository, RestoreOptions, dump, restore};
use cairn_testkit::{assert_clean, fast_options, init_repo, noise, read_node};

const BLOCK: usize = 64 * 1024;
const BLOCKS: usize = 24;

/// Page-like blocks: mostly repeated filler with a few numbers, like a table's rows.
fn pages(blocks: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks * BLOCK);
    let mut row = 0u64;
    while out.len() < blocks * BLOCK {
        let line = format!("{row:>10}|{:>8}|{:<80}|\n", row % 97, "");
        out.extend_from_slice(line.as_bytes());
        row += 1;
    }
    out.truncate(blocks * BLOCK);
    out
}

/// Changes a few rows in every block (as updates do) and returns the new file.
fn update(data: &[u8], round: u64) -> Vec<u8> {
    let mut d = data.to_vec();
    for b in 0..d.len() / BLOCK {
        for k in 0..3u64 {
            let at = b * BLOCK + ((k * 7919 + round * 104_729) as usize % (BLOCK - 16));
            d[at..at + 8].copy_from_slice(&(round * 1000 + k).to_le_bytes());
        }
    }
    d
}

fn fixed_blocks(block: usize) -> PolicyFn {
    Arc::new(move |_: &Path, md: &std::fs::Metadata| {
        if md.is_file() {
            Policy::FixedBlocks(block)
        } else {
            Policy::Keep
        }
    })
}

/// Backs up `dir` against `parent` (the node of `dir` in the parent snapshot); returns the new
/// snapshot, its `dir` node and the bytes it stored.
async fn session(repo: &Repository, dir: &Path, parent: Option<Node>) -> (Snapshot, Node, u64) {
    session_with(repo, dir, parent, BLOCK).await
}

async fn session_with(
    repo: &Repository,
    dir: &Path,
    parent: Option<Node>,
    block: usize,
) -> (Snapshot, Node, u64) {
    let mut o = BackupOptions::default();
    o.always_read = true;
    let s = BackupSession::new(repo, &o, Arc::new(NoProgress), Some(fixed_blocks(block)))
        .await
        .unwrap();
    let node = s.entry_with_parent(dir, parent).await.unwrap().unwrap();
    let root = s
        .tree(Tree {
            nodes: vec![node.clone()],
        })
        .await
        .unwrap();
    let done = s.finish().await.unwrap();
    let mut snap = Snapshot::new(SnapshotKind::Files, cairn::repo::now(), root);
    snap.summary = done.summary;
    repo.save_snapshot(&snap).await.unwrap();
    (snap, node, done.packer.stored_bytes)
}

async fn file_node(repo: &Repository, dir_node: &Node) -> Node {
    let tree = repo.read_tree(&dir_node.subtree.unwrap()).await.unwrap();
    tree.nodes.into_iter().find(|n| n.name == b"rel").unwrap()
}

async fn restored(repo: &Repository, snap: &Snapshot, to: &Path) -> Vec<u8> {
    let out = restore(
        repo,
        snap,
        to,
        &RestoreOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    std::fs::read(to.join("data/rel")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_blocks_are_patches_that_restore_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_repo(tmp.path(), fast_options()).await;
    let dir: PathBuf = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let v1 = pages(BLOCKS);
    std::fs::write(dir.join("rel"), &v1).unwrap();
    let (s1, d1, stored1) = session(&repo, &dir, None).await;
    let f1 = file_node(&repo, &d1).await;
    assert!(f1.deltas.is_empty());
    assert_eq!(f1.content.len(), BLOCKS);

    // Round 2: rows changed in every block, one block replaced by noise, two blocks appended.
    let mut v2 = update(&v1, 1);
    v2[5 * BLOCK..6 * BLOCK].copy_from_slice(&noise(BLOCK, 9));
    v2.extend_from_slice(&pages(2)[..]);
    std::fs::write(dir.join("rel"), &v2).unwrap();
    let (s2, d2, stored2) = session(&repo, &dir, Some(d1.clone())).await;
    let f2 = file_node(&repo, &d2).await;
    let patched: Vec<usize> = f2.deltas.iter().map(|d| d.index as usize).collect();
    let expect: Vec<usize> = (0..BLOCKS).filter(|&i| i != 5).collect();
    assert_eq!(
        patched, expect,
        "every updated block, not the noise, not the new ones"
    );
    for d in &f2.deltas {
        // The base is the parent's whole block at the same place.
        assert_eq!(d.base, f1.content[d.index as usize]);
        assert_eq!(d.len as usize, BLOCK);
    }
    let id_key = repo.key().id_key();
    for (i, id) in f2.content.iter().enumerate() {
        let end = ((i + 1) * BLOCK).min(v2.len());
        assert_eq!(
            *id,
            id_key.blob_id(&v2[i * BLOCK..end]),
            "content id of block {i}"
        );
    }
    // Patches are small: the second backup stores little beyond the noise block.
    assert!(
        stored2 < BLOCK as u64 + 2 * stored1 / 10,
        "first {stored1}, second {stored2}"
    );

    // Round 3: updated again; patches are against the first backup's whole blocks (depth one).
    let v3 = update(&v2, 2);
    std::fs::write(dir.join("rel"), &v3).unwrap();
    let (s3, d3, _) = session(&repo, &dir, Some(d2.clone())).await;
    let f3 = file_node(&repo, &d3).await;
    assert!(!f3.deltas.is_empty());
    for d in &f3.deltas {
        let i = d.index as usize;
        assert!(f2.delta(i).is_none_or(|p| p.base == d.base), "block {i}");
        assert!(f1.content.contains(&d.base) || f2.content.contains(&d.base));
    }
    // Unchanged since round 3: the same patches are reused, nothing new stored.
    let (_, d4, stored4) = session(&repo, &dir, Some(d3.clone())).await;
    let f4 = file_node(&repo, &d4).await;
    assert_eq!(f4.deltas, f3.deltas);
    assert_eq!(f4.content, f3.content);
    assert!(stored4 < 4096, "{stored4}");

    // Every snapshot restores and dumps byte for byte; the repository checks clean.
    assert_eq!(read_node(&repo, &f2).await, v2);
    assert_eq!(restored(&repo, &s2, &tmp.path().join("r2")).await, v2);
    assert_eq!(restored(&repo, &s3, &tmp.path().join("r3")).await, v3);
    assert_eq!(restored(&repo, &s1, &tmp.path().join("r1")).await, v1);
    let mut out = Vec::new();
    let n = dump(&repo, &s3, "data/rel", &mut out).await.unwrap();
    assert_eq!(n as usize, v3.len());
    assert_eq!(out, v3);
    assert_clean(&repo).await;

    // Forget the snapshots that first stored the bases; prune (twice: plan, then execute)
    // must keep every base the last snapshot's patches need.
    let mut o = PruneOptions::default();
    o.grace_secs = 0;
    o.allow_short_grace = true;
    for (id, s) in repo.list_snapshots().await.unwrap() {
        if s.tree != s3.tree {
            repo.storage()
                .delete(&cairn::repo::snapshot_name(&id))
                .await
                .unwrap();
        }
    }
    prune(&repo, &o, Arc::new(NoProgress)).await.unwrap();
    prune(&repo, &o, Arc::new(NoProgress)).await.unwrap();
    let fresh = Repository::open(repo.storage().clone(), cairn_testkit::PASSWORD)
        .await
        .unwrap();
    assert_eq!(restored(&fresh, &s3, &tmp.path().join("r3b")).await, v3);
    assert_clean(&fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_on_the_wrong_base_is_named_not_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_repo(tmp.path(), fast_options()).await;
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let v1 = pages(4);
    std::fs::write(dir.join("rel"), &v1).unwrap();
    let (_, d1, _) = session(&repo, &dir, None).await;
    std::fs::write(dir.join("rel"), update(&v1, 1)).unwrap();
    let (_, d2, _) = session(&repo, &dir, Some(d1)).await;
    let f2 = file_node(&repo, &d2).await;
    assert_eq!(f2.deltas.len(), 4);
    // Swap the bases of blocks 0 and 1: each patch then meets a base of the right length but
    // the wrong content, and the rebuilt bytes do not match the block's id.
    let mut bad = f2.clone();
    let (b0, b1) = (bad.deltas[0].base, bad.deltas[1].base);
    bad.deltas[0].base = b1;
    bad.deltas[1].base = b0;
    let r = repo.read_content_block(&bad, 0).await;
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains(&f2.content[0].short()), "{msg}");
    // The untouched blocks still read.
    assert_eq!(
        repo.read_content_block(&bad, 2).await.unwrap(),
        update(&v1, 1)[2 * BLOCK..3 * BLOCK]
    );
    assert!(bad.kind == NodeKind::File);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_with_another_block_size_never_gives_a_base_of_the_wrong_length() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_repo(tmp.path(), fast_options()).await;
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    // Four zero 8 KiB pages first, so the 8 KiB blocks 0-3 share one id; the file is three
    // 64 KiB blocks and one of 8 KiB. In the next backup (64 KiB blocks) blocks 0-2 (64 KiB)
    // and the last block (8 KiB) all find that id as their parent block: only the last may
    // use it as a base.
    let mut v1 = vec![0u8; 32 * 1024];
    v1.extend_from_slice(&pages(3)[..3 * BLOCK + 8192 - 32 * 1024]);
    std::fs::write(dir.join("rel"), &v1).unwrap();
    let (_, d1, _) = session_with(&repo, &dir, None, 8192).await;
    let mut v2 = update(&v1, 1);
    let n = v2.len();
    v2[n - 100] ^= 1;
    std::fs::write(dir.join("rel"), &v2).unwrap();
    let (s2, d2, _) = session_with(&repo, &dir, Some(d1), BLOCK).await;
    let f2 = file_node(&repo, &d2).await;
    let index = repo.index().await.unwrap();
    for d in &f2.deltas {
        let base = index.read().unwrap().get(&d.base).unwrap();
        assert_eq!(base.plain_len, d.len, "block {}", d.index);
    }
    assert_eq!(f2.content.len(), 4);
    assert!(f2.delta(0).is_none(), "a 64 KiB block on an 8 KiB base");
    assert_eq!(restored(&repo, &s2, &tmp.path().join("r")).await, v2);
    assert_clean(&repo).await;
}

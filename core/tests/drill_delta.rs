//! A drill over a snapshot whose file has blocks stored as patches (fixed-block files backed
//! up against a parent): the verification takes those blocks' lengths from the snapshot's delta
//! records (their plaintext is no blob of its own, so the index does not know them) and passes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::sync::Arc;

use cairn::backup::{BackupSession, Policy, PolicyFn};
use cairn::drill::{DrillOptions, DrillSnapshot};
use cairn::format::{Node, Snapshot, SnapshotId, SnapshotKind, Tree};
use cairn::{BackupOptions, NoProgress, Repository, Verdict, drill_files};
use cairn_testkit::{fast_options, init_repo};

const BLOCK: usize = 64 * 1024;

/// Page-like blocks (a table's rows): what makes small patches.
fn pages(blocks: usize, round: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks * BLOCK);
    let mut row = 0u64;
    while out.len() < blocks * BLOCK {
        let changed = if row % 50 == 0 { round } else { 0 };
        let line = format!("{row:>10}|{changed:>8}|{:<80}|\n", "");
        out.extend_from_slice(line.as_bytes());
        row += 1;
    }
    out.truncate(blocks * BLOCK);
    out
}

fn fixed_blocks() -> PolicyFn {
    Arc::new(|_: &Path, md: &std::fs::Metadata| {
        if md.is_file() {
            Policy::FixedBlocks(BLOCK)
        } else {
            Policy::Keep
        }
    })
}

/// Backs up `dir` (fixed blocks) against `parent`; saves a file snapshot; returns the node
/// and the snapshot's id.
async fn session(repo: &Repository, dir: &Path, parent: Option<Node>) -> (Node, SnapshotId) {
    let mut o = BackupOptions::default();
    o.always_read = true;
    let s = BackupSession::new(repo, &o, Arc::new(NoProgress), Some(fixed_blocks()))
        .await
        .unwrap();
    let node = s.entry_with_parent(dir, parent).await.unwrap().unwrap();
    let root = s
        .tree(Tree {
            nodes: vec![node.clone()],
        })
        .await
        .unwrap();
    s.finish().await.unwrap();
    let snap = Snapshot::new(SnapshotKind::Files, cairn::repo::now(), root);
    let id = repo.save_snapshot(&snap).await.unwrap();
    (node, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_verifies_blocks_stored_as_patches() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init_repo(tmp.path(), fast_options()).await;
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rel"), pages(12, 0)).unwrap();
    let (first, _) = session(&repo, &dir, None).await;
    let v2 = pages(12, 7);
    std::fs::write(dir.join("rel"), &v2).unwrap();
    let (second, id) = session(&repo, &dir, Some(first)).await;
    let tree = repo.read_tree(&second.subtree.unwrap()).await.unwrap();
    let file = tree.nodes.iter().find(|n| n.name == b"rel").unwrap();
    assert!(!file.deltas.is_empty(), "the test needs patched blocks");

    let r = drill_files(
        &repo,
        &DrillSnapshot::Named(id.to_hex()),
        &DrillOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(r.verdict, Verdict::Ok, "{r:#?}");
    assert_eq!((r.files, r.bytes), (1, v2.len() as u64), "{r:#?}");
}

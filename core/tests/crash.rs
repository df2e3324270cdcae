//! Failures in the middle of a backup: a store that fails a share of calls. Whatever happens,
//! the repository checks clean, earlier snapshots stay readable, and the next backup completes.
//! (`kill -9` of a running backup is tested on the CLI in examples/files/tests/kill9.rs.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::sync::Arc;

use cairn::format::{BlobId, KdfParams};
use cairn::storage::FaultyStorage;
use cairn::{
    BackupOptions, BackupSource, CheckOptions, InitOptions, NoProgress, ReadData, Repository,
    Storage,
};
use cairn::{backup, check, open_storage};

fn options() -> InitOptions {
    let mut o = InitOptions::default();
    o.kdf = KdfParams::INSECURE_FOR_TESTS;
    let mut c = o.chunker;
    c.min_size = 16 * 1024;
    c.avg_size = 64 * 1024;
    c.max_size = 256 * 1024;
    o.chunker = c;
    o.data_pack_target = 256 * 1024;
    o.tree_pack_target = 64 * 1024;
    o
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// A tree of `files` random files of `size` bytes each.
fn make_tree(root: &Path, files: usize, size: usize, seed: u64) {
    for i in 0..files {
        let d = root.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), noise(size, seed + i as u64)).unwrap();
    }
}

async fn assert_clean(repo: &Repository) {
    let mut o = CheckOptions::default();
    o.read_data = ReadData::All;
    let report = check(repo, &o, Arc::new(NoProgress)).await.unwrap();
    assert!(
        report.is_ok(),
        "check found problems: {:#?}",
        report.problems
    );
}

/// Every file of every snapshot reads back equal to `expected` (path -> content) when given.
async fn read_file(repo: &Repository, root: BlobId, path: &Path) -> Vec<u8> {
    let node = cairn::walk::resolve(repo, root, path.to_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    for id in &node.content {
        out.extend(repo.read_blob(id).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_store_never_leaves_a_broken_repository() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 40, 100_000, 1);
    let inner = open_storage(dir.path().join("repo").to_str().unwrap()).unwrap();
    Repository::init(inner.clone(), b"pw", options())
        .await
        .unwrap();

    // A good first snapshot.
    let repo = Repository::open(inner.clone(), b"pw").await.unwrap();
    let first = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();

    make_tree(&src.join("more"), 40, 100_000, 1000);
    // Half of all calls fail: the backup must fail, and leave no snapshot behind.
    let faulty: Arc<dyn Storage> = Arc::new(FaultyStorage::new(inner.clone(), 0.5, 42));
    let repo_f = Repository::open(inner.clone(), b"pw")
        .await
        .unwrap()
        .with_storage(faulty);
    let r = backup(
        &repo_f,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await;
    assert!(
        r.is_err(),
        "a store failing half the calls cannot complete a backup"
    );
    let repo = Repository::open(inner.clone(), b"pw").await.unwrap();
    assert_eq!(repo.list_snapshots().await.unwrap().len(), 1);
    assert_clean(&repo).await;
    assert_eq!(
        read_file(&repo, first.snapshot.tree, &src.join("d0/f0")).await,
        noise(100_000, 1)
    );

    // A few failures are absorbed by retries.
    let flaky: Arc<dyn Storage> = Arc::new(FaultyStorage::new(inner.clone(), 0.03, 7));
    let repo_flaky = Repository::open(inner.clone(), b"pw")
        .await
        .unwrap()
        .with_storage(flaky);
    let ok = backup(
        &repo_flaky,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let repo = Repository::open(inner.clone(), b"pw").await.unwrap();
    assert_clean(&repo).await;
    assert_eq!(
        read_file(&repo, ok.snapshot.tree, &src.join("more/d3/f3")).await,
        noise(100_000, 1003)
    );
}

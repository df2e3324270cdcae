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

use cairn::storage::FaultyStorage;
use cairn::{BackupOptions, BackupSource, InitOptions, NoProgress, Repository, Storage};
use cairn::{backup, open_storage};
use cairn_testkit::{assert_clean, noise, read_file, small_options};

fn options() -> InitOptions {
    small_options(256 * 1024, 64 * 1024)
}

/// A tree of `files` random files of `size` bytes each.
fn make_tree(root: &Path, files: usize, size: usize, seed: u64) {
    for i in 0..files {
        let d = root.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), noise(size, seed + i as u64)).unwrap();
    }
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

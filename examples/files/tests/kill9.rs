//! `kill -9` of `cairn-files backup` part way: the repository checks clean, and the next backup
//! completes and does not upload again what the killed one had indexed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::format::{BlobId, KdfParams};
use cairn::storage::CountingStorage;
use cairn::{
    BackupOptions, BackupSource, CheckOptions, InitOptions, NoProgress, ReadData, Repository,
};
use cairn::{backup, check, open_storage};

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
async fn kill_9_mid_backup() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let src = dir.path().join("src");
    // 48 MB of incompressible data in 120 files: about 190 packs of 256 KiB.
    for i in 0..120u64 {
        let d = src.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), noise(400_000, 5 + i)).unwrap();
    }
    let storage = open_storage(repo_dir.to_str().unwrap()).unwrap();
    let mut o = InitOptions::default();
    o.kdf = KdfParams::INSECURE_FOR_TESTS;
    let mut c = o.chunker;
    c.min_size = 16 * 1024;
    c.avg_size = 64 * 1024;
    c.max_size = 256 * 1024;
    o.chunker = c;
    o.data_pack_target = 256 * 1024;
    Repository::init(storage.clone(), b"pw", o).await.unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn-files"))
        .arg("--repo")
        .arg(&repo_dir)
        .arg("--no-cache")
        .arg("backup")
        .arg(&src)
        .env("CAIRN_PASSWORD", "pw")
        .spawn()
        .unwrap();
    // Kill once enough packs and at least two index files have landed.
    let started = Instant::now();
    loop {
        let packs = std::fs::read_dir(repo_dir.join("data"))
            .map(|d| d.count())
            .unwrap_or(0);
        let indexes = std::fs::read_dir(repo_dir.join("index"))
            .map(|d| d.count())
            .unwrap_or(0);
        if packs >= 80 && indexes >= 2 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the backup ended ({status}) before it could be killed: make the data larger");
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "backup made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // No snapshot, a clean repository (packs no index lists are allowed: prune removes them).
    let repo = Repository::open(storage.clone(), b"pw").await.unwrap();
    assert!(repo.list_snapshots().await.unwrap().is_empty());
    assert_clean(&repo).await;
    assert!(!repo.load_index().await.unwrap().is_empty());

    // The next backup completes and does not upload again what the index already lists.
    let counting = Arc::new(CountingStorage::new(storage.clone()));
    let repo2 = repo.with_storage(counting.clone());
    let out = backup(
        &repo2,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let total = 120 * 400_000u64;
    assert_eq!(out.snapshot.summary.bytes_read, total);
    assert!(
        out.snapshot.summary.bytes_added_plain < total,
        "nothing was reused: added {} of {total}",
        out.snapshot.summary.bytes_added_plain
    );
    assert!(
        counting.counts().bytes_put < total,
        "{:?}",
        counting.counts()
    );
    let repo = Repository::open(storage, b"pw").await.unwrap();
    assert_clean(&repo).await;
    assert_eq!(
        read_file(&repo, out.snapshot.tree, &src.join("d5/f54")).await,
        noise(400_000, 59)
    );
}

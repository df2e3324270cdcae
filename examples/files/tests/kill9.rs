//! `kill -9` of `cairn-files backup` part way: the repository checks clean, and the next backup
//! completes and does not upload again what the killed one had indexed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::storage::CountingStorage;
use cairn::{BackupOptions, BackupSource, CheckOptions, NoProgress, Repository};
use cairn::{backup, check, open_storage};
use cairn_testkit::{assert_clean, noise, read_file, small_chunks};

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
    let mut o = small_chunks();
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

/// `kill -9` of `cairn-files prune` at random points: the repository still checks clean, every
/// snapshot still reads back, and a later prune completes the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_prune() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let storage = open_storage(repo_dir.to_str().unwrap()).unwrap();
    let mut o = small_chunks();
    o.data_pack_target = 128 * 1024;
    let repo = Repository::init(storage.clone(), b"pw", o).await.unwrap();
    // Rounds of backups with shared and changing files, most forgotten: lots to prune and repack.
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut last = None;
    for round in 0..6u64 {
        for f in 0..8u64 {
            let seed = if f < 3 { f } else { 100 + round * 10 + f };
            std::fs::write(src.join(format!("f{f}")), noise(150_000, seed)).unwrap();
        }
        let out = backup(
            &repo,
            BackupSource::Paths(vec![src.clone()]),
            &BackupOptions::default(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        if round < 5 {
            repo.storage()
                .delete(&cairn::repo::snapshot_name(&out.id))
                .await
                .unwrap();
        }
        last = Some(out);
    }
    let last = last.unwrap();
    let expect: Vec<(String, u64)> = (0..8u64)
        .map(|f| (format!("f{f}"), if f < 3 { f } else { 100 + 50 + f }))
        .collect();

    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..8 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn-files"))
            .args([
                "--repo",
                repo_dir.to_str().unwrap(),
                "--no-cache",
                "prune",
                "--grace",
                "0s",
                "--allow-short-grace",
            ])
            .env("CAIRN_PASSWORD", "pw")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(x % 400));
        let _ = child.kill();
        child.wait().unwrap();
        let repo = Repository::open(storage.clone(), b"pw").await.unwrap();
        assert_clean(&repo).await;
        for (name, seed) in &expect {
            assert_eq!(
                read_file(&repo, last.snapshot.tree, &src.join(name)).await,
                noise(150_000, *seed)
            );
        }
    }
    // Uninterrupted runs finish the job: plan, then execute.
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn-files"))
            .args([
                "--repo",
                repo_dir.to_str().unwrap(),
                "--no-cache",
                "prune",
                "--grace",
                "0s",
                "--allow-short-grace",
            ])
            .env("CAIRN_PASSWORD", "pw")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let repo = Repository::open(storage, b"pw").await.unwrap();
    assert_clean(&repo).await;
    let r = cairn::prune::prune(
        &repo,
        &{
            let mut o = cairn::prune::PruneOptions::default();
            o.grace_secs = 0;
            o.allow_short_grace = true;
            o.dry_run = true;
            o
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    // Nothing left to condemn (packs still mostly used may keep a few unused blobs: they are
    // below the repack threshold), and no plan is pending.
    assert_eq!(r.packs_condemned, 0, "{r:?}");
    assert!(repo.prune_plans().await.unwrap().is_empty());
    let report = check(&repo, &CheckOptions::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(
        report.unindexed_packs.is_empty(),
        "{:?}",
        report.unindexed_packs
    );
    for (name, seed) in &expect {
        assert_eq!(
            read_file(&repo, last.snapshot.tree, &src.join(name)).await,
            noise(150_000, *seed)
        );
    }
}

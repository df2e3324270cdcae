//! Prune: frees what forgotten snapshots alone used and nothing else, repacks, runs safely
//! beside backups; check finds injected faults; repair rebuilds a lost index.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::format::BlobId;
use cairn::prune::{PruneOptions, prune};
use cairn::{BackupOptions, BackupSource, CheckOptions, NoProgress, ReadData, Repository};
use cairn::{backup, check};
use cairn_testkit::{check_all, init_repo, noise, read_file, small_options};

async fn new_repo(dir: &Path) -> Repository {
    init_repo(dir, small_options(256 * 1024, 64 * 1024)).await
}

fn no_grace() -> PruneOptions {
    let mut o = PruneOptions::default();
    o.grace_secs = 0;
    o.allow_short_grace = true;
    o
}

fn repo_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("repo/data"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_after_forget_frees_exactly_the_forgotten_data() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("big"), noise(3_000_000, 1)).unwrap();
    std::fs::write(b.join("big"), noise(2_000_000, 2)).unwrap();
    let opts = BackupOptions::default();
    let sa = backup(
        &repo,
        BackupSource::Paths(vec![a.clone()]),
        &opts,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let sb = backup(
        &repo,
        BackupSource::Paths(vec![b.clone()]),
        &opts,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let before = repo_bytes(dir.path());

    // Nothing is unused yet: prune plans nothing.
    let r = prune(&repo, &no_grace(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!((r.packs_condemned, r.new_plan), (0, None));

    // Forget A. A dry run reports the bytes and changes nothing.
    repo.storage()
        .delete(&cairn::repo::snapshot_name(&sa.id))
        .await
        .unwrap();
    let mut dry = no_grace();
    dry.dry_run = true;
    let r = prune(&repo, &dry, Arc::new(NoProgress)).await.unwrap();
    assert!(r.bytes_to_free >= 2_900_000, "{r:?}");
    assert_eq!(repo_bytes(dir.path()), before);

    // Phase one condemns; nothing is deleted yet.
    let r1 = prune(&repo, &no_grace(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(r1.new_plan.is_some() && r1.packs_deleted == 0, "{r1:?}");
    assert_eq!(repo_bytes(dir.path()), before);
    // Phase two (grace 0: due at once) deletes.
    let r2 = prune(&repo, &no_grace(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(r2.plans_executed, 1, "{r2:?}");
    let after = repo_bytes(dir.path());
    let freed = before - after;
    assert!(
        (2_900_000..=3_300_000).contains(&freed),
        "freed {freed} of {before}: {r2:?}"
    );

    let repo = Repository::open(repo.storage().clone(), b"pw")
        .await
        .unwrap();
    assert!(
        check_all(&repo).await.is_ok(),
        "{:?}",
        check_all(&repo).await.problems
    );
    assert_eq!(
        read_file(&repo, sb.snapshot.tree, &b.join("big")).await,
        noise(2_000_000, 2)
    );
    assert!(repo.prune_plans().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mostly_unused_packs_are_repacked() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Many small files share packs; forgetting most of them leaves packs mostly unused.
    for i in 0..40 {
        std::fs::write(src.join(format!("f{i}")), noise(20_000, i)).unwrap();
    }
    let opts = BackupOptions::default();
    let first = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        &opts,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    for i in 4..40 {
        std::fs::remove_file(src.join(format!("f{i}"))).unwrap();
    }
    let second = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        &opts,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    repo.storage()
        .delete(&cairn::repo::snapshot_name(&first.id))
        .await
        .unwrap();
    let r1 = prune(&repo, &no_grace(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(r1.packs_repacked >= 1, "{r1:?}");
    let r2 = prune(&repo, &no_grace(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(r2.packs_deleted >= 1, "{r2:?}");
    let repo = Repository::open(repo.storage().clone(), b"pw")
        .await
        .unwrap();
    assert!(check_all(&repo).await.is_ok());
    for i in 0..4 {
        assert_eq!(
            read_file(&repo, second.snapshot.tree, &src.join(format!("f{i}"))).await,
            noise(20_000, i)
        );
    }
}

/// Backups and prunes at once, for a sustained run: every snapshot that finished restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_backups_and_prune_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let storage = repo.storage().clone();
    // Longer than one backup here, even on a loaded machine; a backup that still outlives it
    // refuses to write its snapshot (and is retried).
    let grace = 4;
    let deadline = Instant::now() + Duration::from_secs(120);
    let writers_done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let storage = storage.clone();
        let writers_done = writers_done.clone();
        let src = dir.path().join(format!("src{w}"));
        writers.push(tokio::spawn(async move {
            let repo = Repository::open(storage, b"pw").await.unwrap();
            let mut done: Vec<(cairn::format::SnapshotId, BlobId, BTreeMap<PathBuf, u64>)> =
                Vec::new();
            let mut round = 0u64;
            // Until four snapshots of this writer landed (or the deadline).
            while done.len() < 4 && Instant::now() < deadline {
                round += 1;
                std::fs::create_dir_all(&src).unwrap();
                let mut expect = BTreeMap::new();
                // Each round keeps some files, changes some, adds one: dedup against old data.
                for f in 0..6u64 {
                    let seed = if f < 3 {
                        w * 1000 + f
                    } else {
                        w * 1000 + round * 10 + f
                    };
                    let p = src.join(format!("f{f}"));
                    std::fs::write(&p, noise(60_000, seed)).unwrap();
                    expect.insert(p, seed);
                }
                let mut o = BackupOptions::default();
                o.parent = cairn::ParentChoice::None;
                match backup(
                    &repo,
                    BackupSource::Paths(vec![src.clone()]),
                    &o,
                    Arc::new(NoProgress),
                )
                .await
                {
                    Ok(out) => done.push((out.id, out.snapshot.tree, expect)),
                    // A backup that outlived the grace period refuses to write its snapshot.
                    Err(cairn::Error::Failed(m)) if m.contains("grace period") => {}
                    Err(e) => panic!("backup failed: {e}"),
                }
            }
            writers_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            done
        }));
    }
    let pruner = {
        let storage = storage.clone();
        let writers_done = writers_done.clone();
        tokio::spawn(async move {
            let repo = Repository::open(storage, b"pw").await.unwrap();
            let mut runs = 0;
            // Prune as long as backups run, and at least three times.
            while runs < 3
                || (writers_done.load(std::sync::atomic::Ordering::SeqCst) < 2
                    && Instant::now() < deadline)
            {
                // Forget all but the newest three snapshots per group, then prune.
                let mut p = cairn::forget::KeepPolicy::default();
                p.last = 3;
                let d = cairn::forget::plan(&repo, &p, cairn::forget::GroupBy::default())
                    .await
                    .unwrap();
                cairn::forget::forget(&repo, &d).await.unwrap();
                let mut o = PruneOptions::default();
                o.grace_secs = grace;
                o.allow_short_grace = true;
                prune(&repo, &o, Arc::new(NoProgress)).await.unwrap();
                runs += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            runs
        })
    };
    let mut finished = Vec::new();
    for w in writers {
        finished.extend(w.await.unwrap());
    }
    let runs = pruner.await.unwrap();
    assert!(
        runs >= 3 && finished.len() == 8,
        "runs {runs}, snapshots {}",
        finished.len()
    );
    let repo = Repository::open(storage, b"pw").await.unwrap();
    let r = check_all(&repo).await;
    assert!(r.is_ok(), "{:#?}", r.problems);
    let alive: std::collections::HashSet<_> = repo
        .list_snapshots()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut checked = 0;
    for (id, tree, expect) in &finished {
        if !alive.contains(id) {
            continue; // forgotten by the policy
        }
        for (path, seed) in expect {
            assert_eq!(
                read_file(&repo, *tree, path).await,
                noise(60_000, *seed),
                "{} in {}",
                path.display(),
                id.short()
            );
        }
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} snapshots left to check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_each_fault_and_repair_rebuilds_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        std::fs::write(src.join(format!("f{i}")), noise(150_000, i)).unwrap();
    }
    let out = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(check_all(&repo).await.is_ok());
    let data = dir.path().join("repo/data");
    let mut packs: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    packs.sort();
    let index = repo.load_index().await.unwrap();
    let data_pack = |p: &PathBuf| {
        let id = cairn::format::PackId::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap();
        index
            .iter()
            .any(|(_, l)| l.pack == id && l.blob_type == cairn::format::BlobType::Data)
    };
    let victims: Vec<PathBuf> = packs
        .iter()
        .filter(|p| data_pack(p))
        .take(3)
        .cloned()
        .collect();
    assert_eq!(victims.len(), 3);
    let named = |r: &cairn::CheckReport, p: &Path| {
        let name = p.file_name().unwrap().to_str().unwrap();
        r.problems
            .iter()
            .any(|x| x.object.contains(name) || x.message.contains(&name[..8]))
    };

    // Flipped bit.
    let original = std::fs::read(&victims[0]).unwrap();
    let mut flipped = original.clone();
    flipped[100] ^= 0x04;
    std::fs::write(&victims[0], &flipped).unwrap();
    let r = check_all(&repo).await;
    assert!(named(&r, &victims[0]), "{:#?}", r.problems);
    std::fs::write(&victims[0], &original).unwrap();

    // Truncated pack.
    std::fs::write(&victims[1], &std::fs::read(&victims[1]).unwrap()[..1000]).unwrap();
    let mut structure = CheckOptions::default();
    structure.read_data = ReadData::None;
    let r = check(&repo, &structure, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(
        named(&r, &victims[1]),
        "structure check sees the short pack: {:#?}",
        r.problems
    );

    // Missing pack.
    std::fs::remove_file(&victims[2]).unwrap();
    let r = check(&repo, &structure, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(named(&r, &victims[2]), "{:#?}", r.problems);

    // Index entry into nowhere: an index file naming a pack that does not exist.
    let fake = cairn::format::IndexFile {
        supersedes: vec![],
        packs: vec![cairn::format::IndexPack {
            id: cairn::format::PackId::from_bytes([0xee; 32]),
            blobs: vec![cairn::format::PackEntry {
                blob_type: cairn::format::BlobType::Data,
                id: BlobId::from_bytes([0xdd; 32]),
                offset: 0,
                stored_len: 100,
                plain_len: 50,
            }],
        }],
    };
    repo.write_index(&fake).await.unwrap();
    let r = check(&repo, &structure, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.object.contains(&"ee".repeat(32))),
        "{:#?}",
        r.problems
    );

    // Repair: delete every index file; the rebuilt index lists every readable pack again.
    for e in std::fs::read_dir(dir.path().join("repo/index")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let repo = Repository::open(repo.storage().clone(), b"pw")
        .await
        .unwrap();
    let fixed = cairn::check::repair::repair_index(&repo, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(
        fixed.unreadable.len(),
        1,
        "the truncated pack cannot be read: {fixed:?}"
    );
    let repo = Repository::open(repo.storage().clone(), b"pw")
        .await
        .unwrap();
    // Files whose data was in intact packs read back.
    let intact = |p: &PathBuf| !victims[1..].contains(p);
    let index = repo.load_index().await.unwrap();
    for i in 0..8 {
        let path = src.join(format!("f{i}"));
        let node = cairn::walk::resolve(&repo, out.snapshot.tree, path.to_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        let all_intact = node.content.iter().all(|b| {
            index
                .get(b)
                .is_some_and(|l| intact(&data.join(l.pack.to_hex())))
        });
        if all_intact {
            assert_eq!(
                read_file(&repo, out.snapshot.tree, &path).await,
                noise(150_000, i)
            );
        }
    }
    assert!(index.len() > 8);
}

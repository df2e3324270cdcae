//! `repair index` salvages: a truncated pack loses only the blobs that were cut off.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashSet;
use std::sync::Arc;

use cairn::format::BlobType;
use cairn::{BackupOptions, BackupSource, NoProgress, Repository, backup};
use cairn_testkit::{check_all, init_repo, noise, read_file, small_options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_pack_loses_only_what_was_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        std::fs::write(src.join(format!("f{i}")), noise(150_000, i)).unwrap();
    }
    let repo = init_repo(dir.path(), small_options(4 << 20, 128 * 1024)).await;
    let out = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();

    // The data pack with the most blobs, cut in half.
    let index = repo.load_index().await.unwrap();
    let mut by_pack: std::collections::HashMap<_, Vec<_>> = Default::default();
    for (id, loc) in index.iter() {
        if loc.blob_type == BlobType::Data {
            by_pack.entry(loc.pack).or_default().push((id, loc));
        }
    }
    let (victim, blobs) = by_pack.into_iter().max_by_key(|(_, b)| b.len()).unwrap();
    assert!(blobs.len() >= 8, "{} blobs", blobs.len());
    let path = dir.path().join("repo/data").join(victim.to_hex());
    let size = std::fs::metadata(&path).unwrap().len();
    let cut = size / 2;
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..cut as usize]).unwrap();
    let survive: HashSet<_> = blobs
        .iter()
        .filter(|(_, l)| u64::from(l.offset) + u64::from(l.stored_len) <= cut)
        .map(|(id, _)| *id)
        .collect();
    let lost: HashSet<_> = blobs
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !survive.contains(id))
        .collect();
    assert!(!survive.is_empty() && !lost.is_empty());

    let r = cairn::check::repair::repair_index(&repo, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(r.unreadable.len(), 1, "{r:?}");
    assert_eq!(r.unreadable[0].0, victim);
    assert_eq!(r.salvage.len(), 1);
    let s = &r.salvage[0];
    assert_eq!(s.pack, victim);
    assert_eq!(s.listed, blobs.len() as u64);
    assert_eq!(s.salvaged, survive.len() as u64, "{s:?}");
    assert_eq!(s.lost.iter().copied().collect::<HashSet<_>>(), lost);
    assert_eq!(r.new_packs.len(), 1);

    // A full check names exactly the lost blobs; the damaged pack is in no index any more.
    let repo = Repository::open(repo.storage().clone(), b"pw")
        .await
        .unwrap();
    let report = check_all(&repo).await;
    let named: HashSet<String> = report
        .problems
        .iter()
        .map(|p| {
            p.message
                .strip_prefix("data blob ")
                .and_then(|m| m.strip_suffix(" not in the index"))
                .unwrap_or_else(|| panic!("unexpected problem {p:?}"))
                .to_owned()
        })
        .collect();
    assert_eq!(
        named,
        lost.iter().map(|b| b.short()).collect::<HashSet<_>>(),
        "{:#?}",
        report.problems
    );
    assert!(report.unindexed_packs.contains(&victim));
    assert!(
        report
            .unindexed_damaged
            .iter()
            .all(|p| p.object.ends_with(&victim.to_hex()))
    );

    // Every file whose blobs all survived reads back exactly.
    let mut intact = 0;
    for i in 0..8 {
        let file = src.join(format!("f{i}"));
        let node = cairn::walk::resolve(&repo, out.snapshot.tree, file.to_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        if node.content.iter().all(|b| !lost.contains(b)) {
            assert_eq!(
                read_file(&repo, out.snapshot.tree, &file).await,
                noise(150_000, i)
            );
            intact += 1;
        }
    }
    assert!(intact > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_trailer_version_is_damage_and_every_blob_is_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), noise(100_000, i)).unwrap();
    }
    let repo = init_repo(dir.path(), small_options(4 << 20, 128 * 1024)).await;
    let out = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let data = dir.path().join("repo/data");
    let victim = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    // The trailer is header_len[4] || version[1] || reserved[3] || magic[8].
    let at = bytes.len() - 12;
    assert_eq!(bytes[at], 1);
    bytes[at] = 2;
    std::fs::write(&victim, &bytes).unwrap();

    let r = cairn::check::repair::repair_index(&repo, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(r.unreadable.len(), 1, "{r:?}");
    let why = &r.unreadable[0].1;
    assert!(
        why.contains("corrupt") && !why.contains("upgrade"),
        "a damaged version byte reads as damage: {why}"
    );
    assert!(r.salvage[0].lost.is_empty(), "{r:?}");
    assert!(r.salvage[0].salvaged > 0);
    let repo = Repository::open(repo.storage().clone(), b"pw")
        .await
        .unwrap();
    let report = check_all(&repo).await;
    assert!(report.is_ok(), "{:#?}", report.problems);
    for i in 0..4 {
        let file = src.join(format!("f{i}"));
        assert_eq!(
            read_file(&repo, out.snapshot.tree, &file).await,
            noise(100_000, i)
        );
    }
}

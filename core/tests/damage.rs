//! One damaged object costs what it holds, nothing more: snapshot listings, parent choice and
//! forget skip and name a snapshot that cannot be read, and `forget ID` removes it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::forget::{GroupBy, KeepPolicy};
use cairn::format::SnapshotId;
use cairn::repo::snapshot_name;
use cairn::{BackupOptions, BackupSource, DamageKind, Error, NoProgress, Repository, backup};
use cairn_testkit::{init_repo, small_options};

/// Backs `src` up `n` times, changing a file in between; returns the snapshot ids, oldest first.
async fn snapshots(repo: &Repository, src: &Path, n: usize) -> Vec<SnapshotId> {
    let mut ids = Vec::new();
    for i in 0..n {
        std::fs::write(src.join("f.txt"), format!("version {i}\n")).unwrap();
        let out = backup(
            repo,
            BackupSource::Paths(vec![src.to_path_buf()]),
            &BackupOptions::default(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        ids.push(out.id);
    }
    ids
}

/// Flips one bit of byte `at` of a local object.
fn flip(repo_dir: &Path, object: &str, at: usize) {
    let path: PathBuf = repo_dir.join(object);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_skipped_named_and_forgettable_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let repo = init_repo(dir.path(), small_options(512 * 1024, 128 * 1024)).await;
    let ids = snapshots(&repo, &src, 3).await;
    let bad = ids[2];
    flip(&dir.path().join("repo"), &snapshot_name(&bad), 40);

    // The strict listing fails, naming the object; the checked one names it and goes on.
    let strict = repo.list_snapshots().await;
    assert!(
        matches!(&strict, Err(Error::Corrupt { object, .. }) if *object == snapshot_name(&bad)),
        "{strict:?}"
    );
    let (good, damaged) = repo.list_snapshots_checked().await.unwrap();
    assert_eq!(good.iter().map(|g| g.0).collect::<Vec<_>>(), ids[..2]);
    assert_eq!(damaged.len(), 1);
    assert_eq!(damaged[0].object, snapshot_name(&bad));
    assert_eq!(damaged[0].kind, DamageKind::Corrupt);
    assert_eq!(damaged[0].snapshot_id(), Some(bad));
    assert_eq!(repo.damaged_snapshots().await.unwrap(), damaged);

    // `latest` is the newest readable snapshot; a prefix naming the damaged one gets its error.
    assert_eq!(repo.find_snapshot("latest").await.unwrap().0, ids[1]);
    let r = repo.find_snapshot(&bad.to_hex()[..12]).await;
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");

    // A backup chooses the newest readable snapshot of the same paths as its parent.
    std::fs::write(src.join("f.txt"), b"version 3\n").unwrap();
    let out = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(out.snapshot.parent, Some(ids[1]));

    // A policy neither fails on it nor removes it; it is reported.
    let mut p = KeepPolicy::default();
    p.last = 1;
    let plan = cairn::forget::plan(&repo, &p, GroupBy::default())
        .await
        .unwrap();
    assert_eq!(plan.decisions.len(), 3);
    assert!(plan.decisions.iter().all(|d| d.id != bad));
    assert_eq!(plan.damaged, damaged);
    let removed = cairn::forget::forget(&repo, &plan).await.unwrap();
    assert_eq!(removed.len(), 2);
    assert!(repo.snapshot_ids().await.unwrap().contains(&bad));

    // Named, it goes; a name that is not there fails before anything is deleted.
    let missing = SnapshotId::from_bytes([7; 32]);
    let r = cairn::forget::forget_ids(&repo, &[bad, missing]).await;
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    assert!(repo.snapshot_ids().await.unwrap().contains(&bad));
    let id = repo.resolve_snapshot_id(&bad.to_hex()[..10]).await.unwrap();
    assert_eq!(
        cairn::forget::forget_ids(&repo, &[id]).await.unwrap(),
        [bad]
    );
    let left = repo.list_snapshots().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, out.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_every_damaged_object_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let repo = init_repo(dir.path(), small_options(512 * 1024, 128 * 1024)).await;
    let ids = snapshots(&repo, &src, 2).await;
    cairn_testkit::assert_clean(&repo).await;

    // A second key of another password is not damage; the same slot with one byte flipped is.
    let other = repo
        .add_key(b"other", "", cairn::format::KdfParams::INSECURE_FOR_TESTS)
        .await
        .unwrap();
    cairn_testkit::assert_clean(&repo).await;
    let third = repo
        .add_key(b"third", "", cairn::format::KdfParams::INSECURE_FOR_TESTS)
        .await
        .unwrap();
    flip(&root, &format!("keys/{other}"), 30);
    // A slot whose checksum was made to match again still does not hash to its name.
    let slot_path = root.join(format!("keys/{third}"));
    let mut slot = cairn::format::KeySlot::decode(&std::fs::read(&slot_path).unwrap()).unwrap();
    slot.label = "relabelled".into();
    std::fs::write(&slot_path, slot.encode().unwrap()).unwrap();
    flip(&root, &snapshot_name(&ids[0]), 50);

    let report = cairn_testkit::check_all(&repo).await;
    let mut named: Vec<&str> = report.problems.iter().map(|p| p.object.as_str()).collect();
    named.sort();
    let mut want = vec![
        format!("keys/{other}"),
        format!("keys/{third}"),
        snapshot_name(&ids[0]),
    ];
    want.sort();
    assert_eq!(named, want, "{:?}", report.problems);
    // The readable snapshot was still checked.
    assert_eq!(report.snapshots, 2);

    // The key list shows the damaged slots instead of failing; they can be removed.
    let keys = repo.list_keys().await.unwrap();
    assert_eq!(keys.len(), 3);
    let damaged: Vec<_> = keys.iter().filter(|k| k.damaged.is_some()).collect();
    assert_eq!(damaged.len(), 2, "{keys:?}");
    assert!(keys.iter().any(|k| k.current && k.damaged.is_none()));
    repo.remove_key(other).await.unwrap();
    repo.remove_key(third).await.unwrap();
    // The last usable key stays.
    let r = repo.remove_key(repo.key_id()).await;
    assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}");
    assert_eq!(repo.list_keys().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_version_byte_is_corruption_not_a_newer_cairn() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let repo = init_repo(dir.path(), small_options(512 * 1024, 128 * 1024)).await;
    let ids = snapshots(&repo, &src, 1).await;
    // Byte 0 of the snapshot's envelope is its version: 1 -> 0x11.
    flip(&dir.path().join("repo"), &snapshot_name(&ids[0]), 0);
    let r = repo.read_snapshot(&ids[0]).await;
    match &r {
        Err(e @ Error::Corrupt { object, .. }) => {
            assert_eq!(*object, snapshot_name(&ids[0]));
            assert_eq!(e.exit_code(), 5);
        }
        other => panic!("expected corruption naming the snapshot, got {other:?}"),
    }
    let damaged = repo.damaged_snapshots().await.unwrap();
    assert_eq!(damaged.len(), 1);
    assert_eq!(damaged[0].kind, DamageKind::Corrupt);
}

#[tokio::test]
async fn only_init_creates_a_local_repository_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing/here");
    let r = cairn::open_existing_storage(missing.to_str().unwrap());
    assert!(matches!(r, Err(Error::NotARepository { .. })), "{r:?}");
    let url = format!("file://{}", missing.display());
    let r = cairn::open_existing_storage(&url);
    assert!(matches!(r, Err(Error::NotARepository { .. })), "{r:?}");
    assert!(!dir.path().join("nothing").exists());

    // A path that is a file: a clear usage error, from both.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    for r in [
        cairn::open_existing_storage(file.to_str().unwrap()).map(|_| ()),
        cairn::open_storage(file.to_str().unwrap()).map(|_| ()),
    ] {
        match r {
            Err(e @ Error::Invalid(_)) => {
                assert!(e.to_string().contains("not a directory"), "{e}");
                assert_eq!(e.exit_code(), 2);
            }
            other => panic!("expected a usage error, got {other:?}"),
        }
    }
    // An existing directory opens (and is not a repository until init).
    let storage = cairn::open_existing_storage(dir.path().to_str().unwrap()).unwrap();
    let r = Repository::open(storage, b"pw").await;
    assert!(matches!(r, Err(Error::NotARepository { .. })), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_damaged_index_file_and_checks_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let repo = init_repo(dir.path(), small_options(512 * 1024, 128 * 1024)).await;
    snapshots(&repo, &src, 2).await;
    let mut files: Vec<_> = std::fs::read_dir(root.join("index"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let bad = format!("index/{}", files[0]);
    flip(&root, &bad, 45);
    let repo = Repository::open(repo.storage().clone(), b"pw")
        .await
        .unwrap();
    // The strict listing fails; the index leaves the file out and names it; check names it and
    // goes on with the others.
    assert!(matches!(
        repo.read_index_files().await,
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(
        repo.load_index().await.unwrap().damaged_files(),
        std::slice::from_ref(&bad)
    );
    let report = cairn_testkit::check_all(&repo).await;
    assert_eq!(
        report.problems.iter().filter(|p| p.object == bad).count(),
        1,
        "{:#?}",
        report.problems
    );
    assert_eq!(report.snapshots, 2);
    assert!(report.blobs > 0, "the other index files were loaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_of_an_unknown_type_is_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = init_repo(dir.path(), small_options(512 * 1024, 128 * 1024)).await;
    // The slot in use, turned into a well-formed slot of type 2 (public key, not implemented),
    // with its checksum and its name made right.
    let mut bytes = std::fs::read(root.join(format!("keys/{}", repo.key_id()))).unwrap();
    bytes[9] = 2;
    let n = bytes.len() - 32;
    let sum = *blake3::hash(&bytes[..n]).as_bytes();
    bytes[n..].copy_from_slice(&sum);
    let id = cairn::format::KeyId::from_bytes(repo.key().id_key().hash(&bytes));
    std::fs::write(root.join(format!("keys/{id}")), &bytes).unwrap();

    let keys = repo.list_keys().await.unwrap();
    let other = keys.iter().find(|k| k.id == id).unwrap();
    assert_eq!(
        other.damaged.as_ref().unwrap().kind,
        DamageKind::Unsupported
    );
    cairn_testkit::assert_clean(&repo).await;
    // Opening skips it; it can be removed.
    let again = Repository::open(repo.storage().clone(), b"pw")
        .await
        .unwrap();
    assert_eq!(again.key_id(), repo.key_id());
    repo.remove_key(id).await.unwrap();
    assert_eq!(repo.list_keys().await.unwrap().len(), 1);
}

//! Prune and damage: it deletes nothing while snapshots need data that is missing or damaged
//! (unless told to go ahead), and it removes the files interrupted writes leave behind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::prune::{PruneOptions, prune};
use cairn::{BackupOptions, BackupSource, Error, NoProgress, Repository, backup};
use cairn_testkit::{init_repo, noise, resolve, small_options};

fn short_grace() -> PruneOptions {
    let mut o = PruneOptions::default();
    o.grace_secs = 0;
    o.allow_short_grace = true;
    o
}

async fn stream_backup(repo: &Repository, data: Vec<u8>, name: &str) -> cairn::BackupOutcome {
    backup(
        repo,
        BackupSource::Reader {
            name: name.into(),
            reader: Box::new(std::io::Cursor::new(data)),
        },
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap()
}

fn packs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("repo/data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// A pack that a snapshot needs is truncated: prune refuses (exit 5, the pack named) in both
/// phases and deletes nothing, also not the packs that forgotten snapshots alone used; with
/// `ignore_damage` it goes ahead and says what it ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_pack_stops_prune_until_told() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), small_options(256 * 1024, 64 * 1024)).await;
    let old = stream_backup(&repo, noise(1_500_000, 1), "old.bin").await;
    let kept = stream_backup(&repo, noise(1_500_000, 2), "kept.bin").await;
    // Forget the old snapshot: the plan condemns the packs it alone used.
    repo.storage()
        .delete(&cairn::repo::snapshot_name(&old.id))
        .await
        .unwrap();
    let planned = prune(&repo, &short_grace(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(planned.packs_condemned > 0, "{planned:?}");

    // Truncate a pack the kept snapshot needs.
    let node = resolve(&repo, kept.snapshot.tree, Path::new("kept.bin")).await;
    let pack = repo.locate(&node.content[0]).await.unwrap().pack;
    let before = packs(dir.path());
    let victim = dir.path().join("repo/data").join(pack.to_hex());
    let len = std::fs::metadata(&victim).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap();
    f.set_len(len / 2).unwrap();

    let r = prune(&repo, &short_grace(), Arc::new(NoProgress)).await;
    let Err(e) = r else {
        panic!("prune must refuse, got {r:?}")
    };
    assert!(matches!(e, Error::Damaged(_)), "{e:?}");
    assert_eq!(e.exit_code(), 5);
    let name = victim.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(e.to_string().contains(&name), "{e}");
    assert_eq!(packs(dir.path()), before, "nothing deleted");
    assert_eq!(
        repo.prune_plans().await.unwrap().len(),
        1,
        "the plan is kept"
    );

    let mut o = short_grace();
    o.ignore_damage = true;
    let r = prune(&repo, &o, Arc::new(NoProgress)).await.unwrap();
    assert!(r.packs_deleted > 0, "{r:?}");
    assert!(r.damage_ignored.iter().any(|d| d.contains(&name)), "{r:?}");
}

/// Staged files (`<name>#<n>`) of interrupted writes: removed once an hour old, kept younger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_stale_staged_files() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), small_options(256 * 1024, 64 * 1024)).await;
    stream_backup(&repo, noise(300_000, 3), "a.bin").await;
    let data = dir.path().join("repo/data");
    let old = data.join(format!("{}#7", "ab".repeat(32)));
    let young = data.join(format!("{}#8", "cd".repeat(32)));
    let old_index = dir
        .path()
        .join("repo/index")
        .join(format!("{}#1", "ef".repeat(32)));
    for p in [&old, &young, &old_index] {
        std::fs::write(p, noise(10_000, 4)).unwrap();
    }
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    for p in [&old, &old_index] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    let r = prune(&repo, &short_grace(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(r.interrupted_writes_removed, 2, "{r:?}");
    assert!(!old.exists() && !old_index.exists());
    assert!(
        young.exists(),
        "a staged file under an hour old may be a write in progress"
    );
    cairn_testkit::assert_clean(&repo).await;

    // A dry run removes nothing.
    std::fs::File::options()
        .write(true)
        .open(&young)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let mut o = short_grace();
    o.dry_run = true;
    let r = prune(&repo, &o, Arc::new(NoProgress)).await.unwrap();
    assert_eq!(r.interrupted_writes_removed, 0);
    assert!(young.exists());
}

/// A damaged prune plan blocks no backup (no prune ever executes it); prune refuses until told,
/// then deletes it unexecuted and plans anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_plan_blocks_no_backup_and_prune_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), small_options(256 * 1024, 64 * 1024)).await;
    let old = stream_backup(&repo, noise(600_000, 5), "old.bin").await;
    stream_backup(&repo, noise(600_000, 6), "new.bin").await;
    repo.storage()
        .delete(&cairn::repo::snapshot_name(&old.id))
        .await
        .unwrap();
    let planned = prune(&repo, &short_grace(), Arc::new(NoProgress))
        .await
        .unwrap();
    let plan = planned.new_plan.unwrap();
    let path = dir.path().join("repo/prune").join(plan.to_hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();

    // Backups go on, deduplicating as before (only the new root tree is stored).
    let again = stream_backup(&repo, noise(600_000, 5), "old.bin").await;
    assert!(again.packer.plain_bytes < 10_000, "{:?}", again.packer);

    let r = prune(&repo, &short_grace(), Arc::new(NoProgress)).await;
    let Err(e) = r else {
        panic!("prune must refuse, got {r:?}")
    };
    assert!(matches!(e, Error::Damaged(_)), "{e:?}");
    assert!(e.to_string().contains(&plan.to_hex()), "{e}");
    assert!(path.exists());

    let mut o = short_grace();
    o.ignore_damage = true;
    let r = prune(&repo, &o, Arc::new(NoProgress)).await.unwrap();
    assert_eq!(
        r.plans_executed, 0,
        "a damaged plan is never executed: {r:?}"
    );
    assert!(!path.exists(), "the damaged plan is deleted");
    cairn_testkit::assert_clean(&repo).await;
}

/// A damaged index file blocks no backup (what only it lists is stored again), a read that
/// needs it names it, prune refuses, and `repair index` brings everything back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_index_file_blocks_no_backup() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), small_options(256 * 1024, 64 * 1024)).await;
    let first = stream_backup(&repo, noise(400_000, 7), "a.bin").await;
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path().join("repo/index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&files[0], bytes).unwrap();

    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    let fresh = Repository::open(repo.storage().clone(), cairn_testkit::PASSWORD)
        .await
        .unwrap();
    let r = cairn::dump(&fresh, &first.snapshot, "a.bin", &mut std::io::sink()).await;
    assert!(
        matches!(&r, Err(e) if e.to_string().contains(&name)),
        "a read that needs the damaged index file names it: {r:?}"
    );
    let fresh = Repository::open(repo.storage().clone(), cairn_testkit::PASSWORD)
        .await
        .unwrap();
    let second = stream_backup(&fresh, noise(400_000, 7), "a.bin").await;
    assert!(
        second.packer.plain_bytes >= 400_000,
        "stored again: {:?}",
        second.packer
    );
    let r = prune(&fresh, &short_grace(), Arc::new(NoProgress)).await;
    assert!(
        matches!(&r, Err(e) if e.exit_code() == 5 && e.to_string().contains(&name)),
        "{r:?}"
    );
    cairn::check::repair::repair_index(&fresh, Arc::new(NoProgress))
        .await
        .unwrap();
    let repaired = Repository::open(repo.storage().clone(), cairn_testkit::PASSWORD)
        .await
        .unwrap();
    cairn_testkit::assert_clean(&repaired).await;
    let node = resolve(&repaired, first.snapshot.tree, Path::new("a.bin")).await;
    assert_eq!(
        cairn_testkit::read_node(&repaired, &node).await,
        noise(400_000, 7)
    );
}

/// A snapshot that cannot be read: prune cannot know what it needs, so it refuses (naming it
/// and how to remove it); once it is forgotten by id, prune goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_snapshot_stops_prune_until_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), small_options(256 * 1024, 64 * 1024)).await;
    let bad = stream_backup(&repo, noise(300_000, 8), "a.bin").await;
    stream_backup(&repo, noise(300_000, 9), "b.bin").await;
    let path = dir.path().join("repo/snapshots").join(bad.id.to_hex());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    std::fs::write(&path, bytes).unwrap();

    let r = prune(&repo, &short_grace(), Arc::new(NoProgress)).await;
    assert!(
        matches!(&r, Err(Error::Damaged(m)) if m.contains(&bad.id.to_hex()) && m.contains("forget")),
        "{r:?}"
    );
    let before = packs(dir.path());
    cairn::forget::forget_ids(&repo, &[bad.id]).await.unwrap();
    let r = prune(&repo, &short_grace(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(
        r.packs_condemned > 0,
        "a.bin's packs are condemned now: {r:?}"
    );
    assert_eq!(packs(dir.path()), before);
}

//! The snapshot guard (SPEC.md §11.2): a backup that outlives prune's grace period, or whose
//! snapshot write races a prune execution, fails and leaves no snapshot; it never saves one
//! that needs deleted packs, and the next backup stores the lost data anew.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::future::Future;
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use cairn::forget::{GroupBy, KeepPolicy};
use cairn::prune::{PruneOptions, prune};
use cairn::{
    BackupOptions, BackupSource, Error, NoProgress, ObjectInfo, PutOutcome, Repository, Storage,
    backup,
};
use cairn_testkit::{PASSWORD, assert_clean, init_repo, noise, read_file, small_options};

fn short_grace() -> PruneOptions {
    let mut o = PruneOptions::default();
    o.grace_secs = 0;
    o.allow_short_grace = true;
    o
}

async fn stream_backup(repo: &Repository, data: Vec<u8>) -> cairn::Result<cairn::BackupOutcome> {
    backup(
        repo,
        BackupSource::Reader {
            name: "d.bin".into(),
            reader: Box::new(std::io::Cursor::new(data)),
        },
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
}

/// `forget --keep-last 1`, then prune twice with no grace: the first run condemns what only the
/// forgotten snapshots used, the second deletes it.
async fn forget_and_delete(repo: &Repository) {
    let mut keep = KeepPolicy::default();
    keep.last = 1;
    let d = cairn::forget::plan(repo, &keep, GroupBy::default())
        .await
        .unwrap();
    cairn::forget::forget(repo, &d).await.unwrap();
    let planned = prune(repo, &short_grace(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(planned.packs_condemned > 0, "{planned:?}");
    let executed = prune(repo, &short_grace(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(executed.packs_deleted > 0, "{executed:?}");
}

/// A reader that hands out `data`, then says so and waits for a go before its end of file.
struct Gated {
    data: std::io::Cursor<Vec<u8>>,
    read_all: Option<mpsc::Sender<()>>,
    go: mpsc::Receiver<()>,
}

impl Read for Gated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.read(buf)?;
        if n == 0 {
            if let Some(tx) = self.read_all.take() {
                tx.send(()).unwrap();
                self.go.recv().unwrap();
            }
        }
        Ok(n)
    }
}

async fn snapshot_count(repo: &Repository) -> usize {
    repo.list_snapshots().await.unwrap().len()
}

/// The sequence: D1, D2, then a slow backup of D1 that deduplicates against D1's packs;
/// meanwhile `forget --keep-last 1` and two prunes delete those packs (and the plan). The slow
/// backup must fail without a snapshot; the next backup of D1 stores it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_outliving_the_grace_period_saves_nothing_and_the_next_one_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), small_options(256 * 1024, 64 * 1024)).await;
    let (d1, d2) = (noise(3_000_000, 1), noise(1_000_000, 2));
    stream_backup(&repo, d1.clone()).await.unwrap();
    stream_backup(&repo, d2.clone()).await.unwrap();

    let (read_all_tx, read_all) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let slow = {
        let storage = repo.storage().clone();
        let d1 = d1.clone();
        tokio::spawn(async move {
            let repo = Repository::open(storage, PASSWORD).await.unwrap();
            let reader = Gated {
                data: std::io::Cursor::new(d1),
                read_all: Some(read_all_tx),
                go: go_rx,
            };
            backup(
                &repo,
                BackupSource::Reader {
                    name: "d.bin".into(),
                    reader: Box::new(reader),
                },
                &BackupOptions::default(),
                Arc::new(NoProgress),
            )
            .await
        })
    };
    tokio::task::spawn_blocking(move || read_all.recv().unwrap())
        .await
        .unwrap();
    forget_and_delete(&repo).await;
    go.send(()).unwrap();
    let r = slow.await.unwrap();
    match &r {
        Err(Error::Failed(m)) => assert!(m.contains("deleted by prune"), "{m}"),
        other => panic!("the slow backup must fail, got {other:?}"),
    }
    assert_eq!(r.unwrap_err().exit_code(), 1);
    assert_eq!(snapshot_count(&repo).await, 1, "only D2's snapshot is left");
    assert_clean(&repo).await;

    // The next backup does not inherit the lost blobs: it stores D1 again.
    let again = stream_backup(&repo, d1.clone()).await.unwrap();
    assert!(again.packer.blobs > 0);
    let repo = Repository::open(repo.storage().clone(), PASSWORD)
        .await
        .unwrap();
    assert_clean(&repo).await;
    assert_eq!(
        read_file(&repo, again.snapshot.tree, Path::new("d.bin")).await,
        d1
    );
}

/// The first check passes, then a prune plans and executes before the snapshot lands (the
/// execution listed the snapshots before ours existed): the check after the write finds the
/// packs gone, removes the snapshot just written and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_racing_the_snapshot_write_is_caught_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), small_options(256 * 1024, 64 * 1024)).await;
    let (d1, d2) = (noise(2_000_000, 3), noise(500_000, 4));
    stream_backup(&repo, d1.clone()).await.unwrap();
    stream_backup(&repo, d2.clone()).await.unwrap();

    let pruner = repo.clone();
    let hooked = Hooked::new(
        repo.storage().clone(),
        "put",
        Some(Box::pin(async move {
            forget_and_delete(&pruner).await;
        })),
    );
    let racing = Repository::open(hooked, PASSWORD).await.unwrap();
    let r = stream_backup(&racing, d1.clone()).await;
    match &r {
        Err(Error::Failed(m)) => assert!(m.contains("deleted by prune"), "{m}"),
        other => panic!("the racing backup must fail, got {other:?}"),
    }
    assert_eq!(
        snapshot_count(&repo).await,
        1,
        "the snapshot written was removed"
    );
    assert_clean(&repo).await;
    let again = stream_backup(&repo, d1.clone()).await.unwrap();
    assert_clean(&repo).await;
    assert_eq!(
        read_file(&repo, again.snapshot.tree, Path::new("d.bin")).await,
        d1
    );
}

/// A plan made during the backup that condemns a pack the backup uses, due but not executed:
/// the backup fails before writing anything. Packs it does not use do not matter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_plan_condemning_a_used_pack_refuses_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), small_options(256 * 1024, 64 * 1024)).await;
    let (d1, d2) = (noise(2_000_000, 5), noise(500_000, 6));
    stream_backup(&repo, d1.clone()).await.unwrap();
    stream_backup(&repo, d2.clone()).await.unwrap();

    let pruner = repo.clone();
    let hooked = Hooked::new(repo.storage().clone(), "put", None);
    let racing = Repository::open(hooked.clone(), PASSWORD).await.unwrap();
    let mut keep = KeepPolicy::default();
    keep.last = 1;
    // The backup of D1 loads its index before the plan exists (the hook runs at its snapshot).
    let plan_now: Hook = Box::pin(async move {
        let d = cairn::forget::plan(&pruner, &keep, GroupBy::default())
            .await
            .unwrap();
        cairn::forget::forget(&pruner, &d).await.unwrap();
        let r = prune(&pruner, &short_grace(), Arc::new(NoProgress))
            .await
            .unwrap();
        assert!(r.packs_condemned > 0);
    });
    // Only the plan: condemned, due at once (grace 0), not executed.
    *hooked.hook.lock().unwrap() = Some(plan_now);
    let r = stream_backup(&racing, d1.clone()).await;
    match &r {
        Err(Error::Failed(m)) => assert!(m.contains("condemns"), "{m}"),
        other => panic!("the backup must be refused, got {other:?}"),
    }
    // A backup of unrelated data is not refused by that plan.
    let other = stream_backup(&repo, noise(300_000, 7)).await;
    assert!(other.is_ok(), "{other:?}");
}

#[tokio::test]
async fn prune_refuses_a_grace_below_the_minimum_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), small_options(256 * 1024, 64 * 1024)).await;
    let mut o = PruneOptions::default();
    o.grace_secs = 10;
    let r = prune(&repo, &o, Arc::new(NoProgress)).await;
    assert!(
        matches!(&r, Err(Error::Invalid(m)) if m.contains("minimum")),
        "{r:?}"
    );
    o.grace_secs = cairn::prune::MIN_GRACE_SECS;
    prune(&repo, &o, Arc::new(NoProgress)).await.unwrap();
    o.grace_secs = 0;
    o.allow_short_grace = true;
    prune(&repo, &o, Arc::new(NoProgress)).await.unwrap();
}

/// `tag` rewrites a snapshot (new object, old one deleted) while prune reads the snapshots:
/// prune lists again and finds the copy, so the data it needs is not condemned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_does_not_miss_a_snapshot_retagged_while_it_lists() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), small_options(256 * 1024, 64 * 1024)).await;
    let d = noise(800_000, 11);
    let only = stream_backup(&repo, d.clone()).await.unwrap();
    let tagger = repo.clone();
    let id = only.id;
    let hooked = Hooked::new(
        repo.storage().clone(),
        "get",
        Some(Box::pin(async move {
            cairn::forget::retag(&tagger, &id, &["permanent".into()], &[])
                .await
                .unwrap();
        })),
    );
    let pruning = Repository::open(hooked, PASSWORD).await.unwrap();
    for _ in 0..2 {
        let r = prune(&pruning, &short_grace(), Arc::new(NoProgress))
            .await
            .unwrap();
        assert_eq!(r.packs_condemned + r.packs_deleted, 0, "{r:?}");
    }
    let (latest_id, latest) = repo.find_snapshot("latest").await.unwrap();
    assert_ne!(latest_id, id, "retagged");
    assert_clean(&repo).await;
    assert_eq!(read_file(&repo, latest.tree, Path::new("d.bin")).await, d);
}

/// `tag` of a snapshot that goes while it works (here: forgotten just before the copy is
/// written) fails and leaves no copy behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_of_a_snapshot_removed_meanwhile_leaves_no_copy() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), small_options(256 * 1024, 64 * 1024)).await;
    let only = stream_backup(&repo, noise(100_000, 12)).await.unwrap();
    let forgetter = repo.clone();
    let id = only.id;
    let hooked = Hooked::new(
        repo.storage().clone(),
        "put",
        Some(Box::pin(async move {
            cairn::forget::forget_ids(&forgetter, &[id]).await.unwrap();
        })),
    );
    let tagging = Repository::open(hooked, PASSWORD).await.unwrap();
    let r = cairn::forget::retag(&tagging, &id, &["x".into()], &[]).await;
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    assert_eq!(snapshot_count(&repo).await, 0);
}

type Hook = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a hook once, right before the first snapshot is written (or read) through it.
struct Hooked {
    inner: Arc<dyn Storage>,
    hook: Mutex<Option<Hook>>,
    /// The operation (`put` or `get`) of a snapshot object that runs the hook first.
    on: &'static str,
}

impl Hooked {
    fn new(inner: Arc<dyn Storage>, on: &'static str, hook: Option<Hook>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            hook: Mutex::new(hook),
            on,
        })
    }

    async fn run_hook(&self, op: &str, name: &str) {
        if op == self.on && name.starts_with("snapshots/") {
            let hook = self.hook.lock().unwrap().take();
            if let Some(h) = hook {
                h.await;
            }
        }
    }
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked").finish_non_exhaustive()
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Storage for Hooked {
    async fn put_new(&self, name: &str, bytes: Bytes) -> cairn::Result<PutOutcome> {
        self.run_hook("put", name).await;
        self.inner.put_new(name, bytes).await
    }
    async fn get(&self, name: &str) -> cairn::Result<Bytes> {
        self.run_hook("get", name).await;
        self.inner.get(name).await
    }
    async fn get_range(&self, name: &str, range: Range<u64>) -> cairn::Result<Bytes> {
        self.inner.get_range(name, range).await
    }
    async fn size(&self, name: &str) -> cairn::Result<Option<u64>> {
        self.inner.size(name).await
    }
    async fn list(&self, prefix: &str) -> cairn::Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, name: &str) -> cairn::Result<()> {
        self.inner.delete(name).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn reads_inline(&self) -> bool {
        self.inner.reads_inline()
    }

    async fn remove_interrupted_writes(
        &self,
        prefix: &str,
        min_age_secs: u64,
    ) -> cairn::Result<u64> {
        self.inner
            .remove_interrupted_writes(prefix, min_age_secs)
            .await
    }
}

//! The packer's memory bound: with the store stalled, workers stop after a fixed number of
//! packs' worth of data, and a store that fails stops them with an error instead of a hang.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cairn::format::{BlobType, Compression};
use cairn::packer::{OPEN_DATA_PACKS, Packer, UPLOAD_CONCURRENCY};
use cairn::{Error, Index, ObjectInfo, PutOutcome, Repository, Storage, open_storage};
use cairn_testkit::{PASSWORD, noise, small_options};
use tokio::sync::watch;

/// Passes everything through, except that pack writes wait until the gate opens (or fail,
/// once it is set to fail).
#[derive(Debug)]
struct Gated {
    inner: Arc<dyn Storage>,
    gate: watch::Receiver<Gate>,
    packs_put: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Closed,
    Open,
    Fail,
}

#[async_trait]
impl Storage for Gated {
    async fn put_new(&self, name: &str, bytes: Bytes) -> cairn::Result<PutOutcome> {
        if name.starts_with("data/") {
            let mut gate = self.gate.clone();
            let state = *gate.wait_for(|g| *g != Gate::Closed).await.unwrap();
            if state == Gate::Fail {
                return Err(Error::Storage {
                    op: "put",
                    object: name.to_owned(),
                    transient: false,
                    message: "refused by the test".into(),
                });
            }
            self.packs_put.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.put_new(name, bytes).await
    }
    async fn get(&self, name: &str) -> cairn::Result<Bytes> {
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
}

const TARGET: u32 = 1 << 20;
const BLOB: usize = 200_000;
const WORKERS: u64 = 4;
const PER_WORKER: u64 = 40;

async fn gated_packer(name: &str) -> (Arc<Packer>, Arc<Gated>, watch::Sender<Gate>) {
    let (tx, rx) = watch::channel(Gate::Closed);
    let gated = Arc::new(Gated {
        inner: open_storage(&format!("memory://{name}")).unwrap(),
        gate: rx,
        packs_put: AtomicU64::new(0),
    });
    let repo = Repository::init(gated.clone(), PASSWORD, small_options(TARGET, TARGET))
        .await
        .unwrap();
    let packer = Packer::new(&repo, Arc::new(RwLock::new(Index::default())));
    (Arc::new(packer), gated, tx)
}

/// Adds incompressible blobs (seeds `first..first + n`) from a worker thread until all are in
/// or an add fails; counts the blobs added.
fn adder(
    packer: Arc<Packer>,
    first: u64,
    n: u64,
    added: Arc<AtomicU64>,
) -> std::thread::JoinHandle<cairn::Result<()>> {
    std::thread::spawn(move || {
        for i in first..first + n {
            let plain = noise(BLOB, i + 1);
            let id = packer.key().id_key().blob_id(&plain);
            assert!(!packer.claim(&id)?);
            let (_, sealed) = cairn::format::pack::seal_blob(
                packer.key(),
                BlobType::Data,
                &plain,
                Compression::Off,
                &mut rand::thread_rng(),
            )
            .unwrap();
            packer.add(BlobType::Data, id, &sealed, plain.len() as u32)?;
            added.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_stops_workers_within_the_pack_budget() {
    let (packer, gated, gate) = gated_packer("stalled").await;
    let added = Arc::new(AtomicU64::new(0));
    // Several workers: each one blocked on a full pack must not let the others open more.
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| adder(packer.clone(), w * PER_WORKER, PER_WORKER, added.clone()))
        .collect();
    // Let the workers run into the stalled uploads: wait for half a second without progress
    // (a loaded machine can leave the workers unscheduled for a tenth of a second).
    let (mut last, mut quiet) = (u64::MAX, 0);
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = added.load(Ordering::Relaxed);
        quiet = if now == last && now > 0 { quiet + 1 } else { 0 };
        if quiet == 5 {
            break;
        }
        last = now;
    }
    let held = added.load(Ordering::Relaxed) as usize * BLOB;
    // Every pack buffer, open, queued, held by a blocked sender or being uploaded, holds its
    // share of the budget: (open data packs + uploads) data packs plus a tree pack's share
    // (here as large as a data pack's), each overshooting its target by at most a blob.
    // Without the budget, every blocked worker held one more full pack while the others
    // opened new ones.
    let packs = OPEN_DATA_PACKS + UPLOAD_CONCURRENCY + 1;
    let bound = packs * (TARGET as usize + BLOB);
    assert!(
        held <= bound,
        "{held} bytes added with the store stalled, bound {bound}"
    );
    assert!(
        held >= 2 * TARGET as usize,
        "{held}: the workers should fill the packs the budget allows"
    );
    assert_eq!(gated.packs_put.load(Ordering::Relaxed), 0);
    assert!(
        workers.iter().all(|w| !w.is_finished()),
        "the workers must wait for the store"
    );
    // Open the gate: everything lands.
    gate.send(Gate::Open).unwrap();
    for worker in workers {
        tokio::task::spawn_blocking(move || worker.join().unwrap())
            .await
            .unwrap()
            .unwrap();
    }
    let p = packer.clone();
    let stats = tokio::task::spawn_blocking(move || p.finish_blocking())
        .await
        .unwrap()
        .unwrap();
    let total = WORKERS * PER_WORKER;
    assert_eq!(stats.blobs, total);
    assert_eq!(stats.packs, gated.packs_put.load(Ordering::Relaxed));
    assert!(stats.packs >= total * BLOB as u64 / (u64::from(TARGET) + BLOB as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_stops_waiting_workers_with_an_error() {
    let (packer, _gated, gate) = gated_packer("failing").await;
    let added = Arc::new(AtomicU64::new(0));
    let worker = adder(packer.clone(), 0, 100, added.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!worker.is_finished(), "the worker must wait for the store");
    gate.send(Gate::Fail).unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || worker.join().unwrap()),
    )
    .await
    .expect("a worker waiting for the pack budget hung after the upload task failed")
    .unwrap();
    assert!(matches!(result, Err(Error::Storage { .. })), "{result:?}");
    let p = packer.clone();
    let finished = tokio::task::spawn_blocking(move || p.finish_blocking())
        .await
        .unwrap();
    match finished {
        Err(Error::Storage { message, .. }) => assert!(message.contains("refused"), "{message}"),
        other => panic!("{other:?}"),
    }
}

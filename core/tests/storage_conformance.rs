//! One conformance suite for the [`Storage`] contract, run on every backend available here.
//!
//! Memory and local directories run in-process. S3 (Garage), Azure Blob (Azurite) and GCS
//! (fake-gcs-server) run against real servers on loopback, which `.ci/services.sh start` starts
//! (`.ci/test` does so); without them those three tests fail, they do not skip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use bytes::Bytes;
use cairn::storage::CountingStorage;
use cairn::{Error, PutOutcome, Storage, open_storage};

async fn conformance(s: Arc<dyn Storage>) {
    let loc = s.location();
    // Missing objects.
    assert!(
        matches!(s.get("data/missing").await, Err(Error::NotFound { .. })),
        "{loc}"
    );
    assert_eq!(s.size("data/missing").await.unwrap(), None, "{loc}");
    assert!(s.list("data").await.unwrap().is_empty(), "{loc}");

    // Write-once: a second put of the same name leaves the first bytes.
    let a = Bytes::from_static(b"first version");
    assert_eq!(
        s.put_new("data/aa", a.clone()).await.unwrap(),
        PutOutcome::Created,
        "{loc}"
    );
    assert_eq!(
        s.put_new("data/aa", Bytes::from_static(b"other"))
            .await
            .unwrap(),
        PutOutcome::Existed,
        "{loc}"
    );
    assert_eq!(s.get("data/aa").await.unwrap(), a, "{loc}");
    assert_eq!(
        s.size("data/aa").await.unwrap(),
        Some(a.len() as u64),
        "{loc}"
    );
    assert_eq!(
        s.get_range("data/aa", 6..13).await.unwrap(),
        Bytes::from_static(b"version"),
        "{loc}"
    );

    // Listing by folder, with sizes; other folders are not included.
    s.put_new("data/bb", Bytes::from(vec![7u8; 100_000]))
        .await
        .unwrap();
    s.put_new("index/cc", Bytes::from_static(b"i"))
        .await
        .unwrap();
    let mut listed = s.list("data").await.unwrap();
    listed.sort_by(|x, y| x.name.cmp(&y.name));
    let names: Vec<_> = listed.iter().map(|o| (o.name.as_str(), o.size)).collect();
    assert_eq!(names, vec![("data/aa", 13), ("data/bb", 100_000)], "{loc}");

    // Delete is idempotent.
    s.delete("data/aa").await.unwrap();
    s.delete("data/aa").await.unwrap();
    assert!(
        matches!(s.get("data/aa").await, Err(Error::NotFound { .. })),
        "{loc}"
    );
    // A deleted name can be created again (prune may delete, a later backup may re-add).
    assert_eq!(
        s.put_new("data/aa", a.clone()).await.unwrap(),
        PutOutcome::Created,
        "{loc}"
    );

    // Concurrent creators of one name: exactly one sees Created where the store can tell.
    let results = futures::future::join_all((0..8).map(|i| {
        let s = s.clone();
        async move {
            s.put_new("data/race", Bytes::from(vec![i as u8; 10]))
                .await
                .unwrap()
        }
    }))
    .await;
    assert!(results.contains(&PutOutcome::Created), "{loc}");
    let stored = s.get("data/race").await.unwrap();
    assert_eq!(stored.len(), 10, "{loc}");
}

#[tokio::test]
async fn memory() {
    conformance(open_storage("memory://conformance").unwrap()).await;
}

#[tokio::test]
async fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_storage(dir.path().join("r").to_str().unwrap()).unwrap();
    conformance(s).await;
    // Local stores leave no temporary files behind.
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.contains('#') || p.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn local_directory_reads_inline_without_a_runtime() {
    // `reads_inline` promises that reads complete on the calling thread with no tokio runtime
    // (backups read their parent's trees that way); a store that does not promise it is read
    // through the runtime instead.
    let dir = tempfile::tempdir().unwrap();
    let s = open_storage(dir.path().join("r").to_str().unwrap()).unwrap();
    assert!(s.reads_inline());
    assert!(!open_storage("memory://inline").unwrap().reads_inline());
    let counting = CountingStorage::new(s.clone());
    assert!(counting.reads_inline(), "the counting wrapper forwards it");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(s.put_new("data/x", Bytes::from_static(b"0123456789")))
        .unwrap();
    drop(rt);
    let got = futures::executor::block_on(s.get_range("data/x", 2..5)).unwrap();
    assert_eq!(&got[..], b"234");
    let missing = futures::executor::block_on(s.get_range("data/y", 0..1));
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_large_ranged_reads() {
    // Ranged reads of 1 MiB and more of a local store go into reused buffers: every read must
    // still return exactly its bytes, while earlier results are alive and after they are gone.
    let dir = tempfile::tempdir().unwrap();
    let s = open_storage(dir.path().join("r").to_str().unwrap()).unwrap();
    let a: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let b: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8 ^ 0x5A).collect();
    s.put_new("data/aaaa", Bytes::from(a.clone()))
        .await
        .unwrap();
    s.put_new("data/bbbb", Bytes::from(b.clone()))
        .await
        .unwrap();
    let r1 = s.get_range("data/aaaa", 100..4_000_100).await.unwrap();
    let r2 = s.get_range("data/bbbb", 0..3_000_000).await.unwrap();
    assert_eq!(&r1[..], &a[100..4_000_100]);
    assert_eq!(&r2[..], &b[..]);
    drop(r1);
    drop(r2);
    for round in 0..4u64 {
        let (start, end) = (round * 250_000, round * 250_000 + 1_500_000 + round);
        let r = s.get_range("data/bbbb", start..end).await.unwrap();
        assert_eq!(&r[..], &b[start as usize..end as usize], "round {round}");
        let r = s
            .get_range("data/aaaa", end..end + 2_000_000)
            .await
            .unwrap();
        assert_eq!(
            &r[..],
            &a[end as usize..end as usize + 2_000_000],
            "round {round}"
        );
    }
    // Reads in parallel, each with its own buffer.
    let reads = (0..6u64).map(|k| {
        let s = s.clone();
        tokio::spawn(async move {
            s.get_range("data/aaaa", k * 100_000..k * 100_000 + 1_200_000)
                .await
        })
    });
    for (k, r) in futures::future::join_all(reads)
        .await
        .into_iter()
        .enumerate()
    {
        let r = r.unwrap().unwrap();
        let k = k * 100_000;
        assert_eq!(&r[..], &a[k..k + 1_200_000]);
    }
    // A range past the end is an error that names the object; a missing object is NotFound.
    match s.get_range("data/bbbb", 2_000_000..4_000_000).await {
        Err(Error::Storage { object, .. }) => assert_eq!(object, "data/bbbb"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.get_range("data/cccc", 0..2_000_000).await,
        Err(Error::NotFound { .. })
    ));
    // Outside a runtime, too.
    let s2 = s.clone();
    let b2 = b.clone();
    std::thread::spawn(move || {
        let r = futures::executor::block_on(s2.get_range("data/bbbb", 1..1_100_001)).unwrap();
        assert_eq!(&r[..], &b2[1..1_100_001]);
    })
    .join()
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_direct_writes() {
    // Objects of 1 MiB and more (packs) are written to a local directory with O_DIRECT through
    // an aligned buffer, padded and cut back: every length must read back exactly, and the
    // write-once protocol (staged name, hard link) must hold as for small objects.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("r");
    std::fs::create_dir_all(root.join("data")).unwrap();
    let direct = cairn_testkit::supports_direct_io(dir.path());
    let local = object_store::local::LocalFileSystem::new_with_prefix(&root)
        .unwrap()
        .with_fsync(true);
    let s = Arc::new(cairn::storage::ObjectStorage::local(
        Arc::new(local),
        root.clone(),
    ));
    let body = |len: usize, salt: u8| -> Vec<u8> {
        (0..len)
            .map(|i| (i % 253) as u8 ^ salt ^ (i >> 12) as u8)
            .collect()
    };
    let lens = [
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
        4 << 20,
        (4 << 20) + 4096,
        (9 << 20) + 123,
    ];
    for (k, len) in lens.into_iter().enumerate() {
        let name = format!("data/obj{k}");
        let want = body(len, k as u8);
        assert_eq!(
            s.put_new(&name, Bytes::from(want.clone())).await.unwrap(),
            PutOutcome::Created,
            "{len}"
        );
        assert_eq!(s.size(&name).await.unwrap(), Some(len as u64), "{len}");
        assert!(s.get(&name).await.unwrap() == want, "{len} bytes differ");
        // Write-once: a second put leaves the first bytes.
        assert_eq!(
            s.put_new(&name, Bytes::from(body(len, 0xFF)))
                .await
                .unwrap(),
            PutOutcome::Existed
        );
        assert!(s.get(&name).await.unwrap() == want, "{len} overwritten");
    }
    // The objects under 1 MiB went the usual way; the others directly, where supported.
    let expected = if direct { lens.len() as u64 - 1 } else { 0 };
    assert_eq!(s.direct_writes(), expected);

    // A directory that does not exist yet: the put creates it (the usual way).
    let nested = body(2 << 20, 7);
    assert_eq!(
        s.put_new("data/ab/nested", Bytes::from(nested.clone()))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert!(s.get("data/ab/nested").await.unwrap() == nested);

    // Racing puts of one name: exactly one creates it, and its bytes are the ones stored.
    let puts = (0..4u8).map(|k| {
        let s = s.clone();
        let bytes = Bytes::from(body((3 << 20) + 77, 0x10 + k));
        tokio::spawn(async move { (s.put_new("data/race", bytes.clone()).await, bytes) })
    });
    let mut created = Vec::new();
    for r in futures::future::join_all(puts).await {
        let (outcome, bytes) = r.unwrap();
        if outcome.unwrap() == PutOutcome::Created {
            created.push(bytes);
        }
    }
    assert_eq!(created.len(), 1);
    assert!(s.get("data/race").await.unwrap() == created[0]);

    // Outside a runtime, too.
    let s2 = s.clone();
    let off_rt = body(1 << 21, 9);
    let b2 = off_rt.clone();
    std::thread::spawn(move || {
        let put = futures::executor::block_on(s2.put_new("data/offrt", Bytes::from(b2)));
        assert_eq!(put.unwrap(), PutOutcome::Created);
    })
    .join()
    .unwrap();
    assert!(s.get("data/offrt").await.unwrap() == off_rt);

    // No staged `name#n` files are left, and listings show exactly the objects.
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                files.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    assert!(files.iter().all(|f| !f.contains('#')), "{files:?}");
    assert_eq!(files.len(), lens.len() + 3, "{files:?}");
    assert_eq!(s.list("data").await.unwrap().len(), lens.len() + 3);
}

#[tokio::test]
async fn counting_wrapper_forwards_and_counts() {
    let inner = open_storage("memory://counting").unwrap();
    let c = Arc::new(CountingStorage::new(inner));
    conformance(c.clone()).await;
    let n = c.counts();
    assert!(
        n.puts >= 13 && n.gets >= 5 && n.lists >= 2 && n.deletes == 2,
        "{n:?}"
    );
}

// Real servers on loopback, started by `.ci/services.sh` (which `.ci/test` runs). Each run
// writes under a fresh prefix, so reruns against the same servers start from an empty folder.
// A missing variable is a failure, not a skip: these tests must not pass without a server.

/// `$var` joined with a prefix unique to this run and test, opened with `open_storage`.
fn server_store(var: &str, test: &str) -> Arc<dyn Storage> {
    let url = std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: this test needs the local object-store servers; start them \
             with `bash .ci/services.sh start && source .ci/services.env` (stop: `bash \
             .ci/services.sh stop`)"
        )
    });
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let unique = format!("conformance-{test}-{}-{nanos}", std::process::id());
    open_storage(&format!("{}/{unique}", url.trim_end_matches('/')))
        .unwrap_or_else(|e| panic!("{var}={url}: {e}"))
}

#[tokio::test]
async fn s3_garage() {
    conformance(server_store("CAIRN_TEST_S3_URL", "s3")).await;
}

#[tokio::test]
async fn azure_azurite() {
    conformance(server_store("CAIRN_TEST_AZURE_URL", "azure")).await;
}

#[tokio::test]
async fn gcs_fake_gcs_server() {
    conformance(server_store("CAIRN_TEST_GCS_URL", "gcs")).await;
}

fn walk(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

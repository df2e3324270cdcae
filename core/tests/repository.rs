//! Repository lifecycle on every backend this machine has: memory and a local directory (S3 joins
//! the same suite when a server is configured; see `storage_conformance.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use cairn::format::KdfParams;
use cairn::storage::FaultyStorage;
use cairn::{Error, Repository, Storage, open_storage};
use cairn_testkit::fast_options;

fn backends() -> Vec<(Arc<dyn Storage>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let local = open_storage(dir.path().join("repo").to_str().unwrap()).unwrap();
    let name = format!("memory://repo-{}", rand_name());
    let memory = open_storage(&name).unwrap();
    vec![(local, tempfile::tempdir().unwrap()), (memory, dir)]
}

fn rand_name() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn init_open_and_wrong_password() {
    for (storage, _guard) in backends() {
        let repo = Repository::init(storage.clone(), b"pw", fast_options())
            .await
            .unwrap();
        let again = Repository::open(storage.clone(), b"pw").await.unwrap();
        assert_eq!(again.config(), repo.config());
        assert_eq!(again.key(), repo.key());
        assert_eq!(again.key_id(), repo.key_id());
        let r = Repository::open(storage.clone(), b"nope").await;
        assert!(matches!(r, Err(Error::WrongPassword { slots: 1 })), "{r:?}");
        let r = Repository::init(storage.clone(), b"pw", fast_options()).await;
        assert!(matches!(r, Err(Error::AlreadyExists { .. })), "{r:?}");
    }
}

#[tokio::test]
async fn open_empty_location_is_not_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_storage(dir.path().to_str().unwrap()).unwrap();
    assert!(matches!(
        Repository::open(s, b"pw").await,
        Err(Error::NotARepository { .. })
    ));
}

#[tokio::test]
async fn key_management_never_touches_data() {
    for (storage, _guard) in backends() {
        let mut repo = Repository::init(storage.clone(), b"first", fast_options())
            .await
            .unwrap();
        let config_before = storage.get("config").await.unwrap();
        let second = repo
            .add_key(b"second", "backup host", KdfParams::INSECURE_FOR_TESTS)
            .await
            .unwrap();
        let keys = repo.list_keys().await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.iter().filter(|k| k.current).count(), 1);
        assert!(
            keys.iter()
                .any(|k| k.id == second && k.label == "backup host" && !k.current)
        );

        // Either password opens the same master key.
        let by_second = Repository::open(storage.clone(), b"second").await.unwrap();
        assert_eq!(by_second.key(), repo.key());
        assert_eq!(by_second.key_id(), second);

        // The key in use cannot be removed; another can.
        assert!(matches!(
            repo.remove_key(repo.key_id()).await,
            Err(Error::Invalid(_))
        ));
        repo.remove_key(second).await.unwrap();
        assert!(matches!(
            Repository::open(storage.clone(), b"second").await,
            Err(Error::WrongPassword { .. })
        ));
        assert!(matches!(
            repo.remove_key(second).await,
            Err(Error::NotFound { .. })
        ));

        // Changing the password replaces the slot; the old password stops working.
        let old = repo.key_id();
        let new = repo
            .change_password(b"third", KdfParams::INSECURE_FOR_TESTS)
            .await
            .unwrap();
        assert_ne!(old, new);
        assert!(matches!(
            Repository::open(storage.clone(), b"first").await,
            Err(Error::WrongPassword { .. })
        ));
        let reopened = Repository::open(storage.clone(), b"third").await.unwrap();
        assert_eq!(reopened.key(), repo.key());
        assert_eq!(repo.list_keys().await.unwrap().len(), 1);

        // The config object was never rewritten.
        assert_eq!(storage.get("config").await.unwrap(), config_before);
    }
}

#[tokio::test]
async fn corrupt_key_slot_is_named_not_a_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo");
    let storage = open_storage(path.to_str().unwrap()).unwrap();
    let repo = Repository::init(storage.clone(), b"pw", fast_options())
        .await
        .unwrap();
    let slot = path.join("keys").join(repo.key_id().to_hex());
    let mut bytes = std::fs::read(&slot).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&slot, bytes).unwrap();
    let r = Repository::open(storage, b"pw").await;
    match r {
        Err(Error::Corrupt { object, .. }) => {
            assert!(object.contains(&repo.key_id().to_hex()), "{object}")
        }
        other => panic!("expected Corrupt naming the slot, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo");
    let storage = open_storage(path.to_str().unwrap()).unwrap();
    Repository::init(storage.clone(), b"pw", fast_options())
        .await
        .unwrap();
    let cfg = path.join("config");
    let mut bytes = std::fs::read(&cfg).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&cfg, &bytes).unwrap();
    let r = Repository::open(storage.clone(), b"pw").await;
    assert!(
        matches!(&r, Err(Error::Corrupt { object, .. }) if object == "config"),
        "{r:?}"
    );
    // A config from a newer format version is refused as unsupported, before any decryption.
    bytes[8] = 9;
    std::fs::write(&cfg, &bytes).unwrap();
    let r = Repository::open(storage, b"pw").await;
    assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
}

#[tokio::test]
async fn failing_store_gives_transient_errors_and_no_partial_repository() {
    let inner = open_storage(&format!("memory://faulty-{}", rand_name())).unwrap();
    let faulty: Arc<dyn Storage> = Arc::new(FaultyStorage::new(inner.clone(), 1.0, 7));
    let r = Repository::init(faulty, b"pw", fast_options()).await;
    assert!(matches!(&r, Err(e) if e.is_transient()), "{r:?}");
    // Nothing half-made: no config, so the location is still not a repository.
    assert!(matches!(
        Repository::open(inner.clone(), b"pw").await,
        Err(Error::NotARepository { .. })
    ));
    // After the failure, a clean init works.
    Repository::init(inner, b"pw", fast_options())
        .await
        .unwrap();
}

//! Where a repository's objects live.
//!
//! [`Storage`] is the narrow contract the engine needs from an object store; [`ObjectStorage`]
//! implements it over any [`object_store::ObjectStore`] (local directory, S3, GCS, Azure, memory).
//! Test tools wrap it ([`FaultyStorage`], [`CountingStorage`]) and forward every method.

mod faulty;
mod object;
mod staged;
mod url;

use std::fmt::Debug;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

pub use faulty::{CountingStorage, FaultyStorage, StorageCounts};
pub use object::ObjectStorage;
pub use url::{open_existing_storage, open_storage};

use crate::error::Result;

/// What [`Storage::put_new`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was created by this call.
    Created,
    /// An object of that name was already there; it was left untouched.
    Existed,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The full object name, e.g. `data/3fa2...`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, unix seconds, when the store reports it.
    pub modified: Option<i64>,
}

/// The object store contract of a Cairn repository.
///
/// # Contract
///
/// * Names are `/`-separated relative paths (`config`, `keys/<hex>`, `data/<hex>`, ...).
/// * **Write-once.** [`Storage::put_new`] never replaces an existing object: if the name exists
///   it returns [`PutOutcome::Existed`] and leaves the stored bytes alone. Where the store offers
///   conditional create (`If-None-Match: *`, `O_EXCL`) the check is atomic; elsewhere it is a
///   check-then-put whose race can only rewrite a content-addressed name with identical content.
///   Callers that store non-content-addressed names must compare content on `Existed`.
/// * **Atomic and durable.** A reader sees an object whole or not at all, and once `put_new`
///   returns `Ok` the object survives a crash of this process and of the machine (local
///   directories are fsynced, file and directory).
/// * **Read-after-write.** An object is readable by name as soon as `put_new` returned. Listings
///   may lag.
/// * **Only prune deletes.** [`Storage::delete`] is called by prune and key removal alone, so a
///   backup credential without delete rights works; a backup only deletes its own snapshot when
///   the snapshot guard's check after the write fails (see [`crate::prune::save_snapshot_guarded`];
///   without delete rights it then fails and names the snapshot to forget).
/// * Errors are [`crate::Error::NotFound`] for a missing object and [`crate::Error::Storage`]
///   (flagged transient or not) for everything else.
#[async_trait]
pub trait Storage: Send + Sync + Debug + 'static {
    /// Creates `name` with `bytes` unless it exists; see the contract.
    async fn put_new(&self, name: &str, bytes: Bytes) -> Result<PutOutcome>;

    /// Reads a whole object.
    async fn get(&self, name: &str) -> Result<Bytes>;

    /// Reads a byte range of an object.
    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes>;

    /// The size of an object, or `None` when it does not exist.
    async fn size(&self, name: &str) -> Result<Option<u64>>;

    /// Every object whose name starts with `prefix` followed by `/` (e.g. `data`).
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Deletes an object (prune and key removal only). Deleting a missing object succeeds.
    async fn delete(&self, name: &str) -> Result<()>;

    /// A human-readable location (`/srv/backup`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// True when [`Storage::get_range`] completes on the calling thread without a tokio runtime
    /// (a local directory, whose reads run inline when no runtime is current). Blocking
    /// callers with many small reads (a backup reading its parent's trees) then skip a thread
    /// hand-off per read. False unless a store says otherwise.
    fn reads_inline(&self) -> bool {
        false
    }

    /// Removes what interrupted writes left under `prefix` and that listings do not show (a
    /// local directory's staged `<name>#<n>` files), once at least `min_age_secs` old; returns
    /// how many were removed. Stores that leave nothing of the kind return 0. Prune calls it.
    async fn remove_interrupted_writes(&self, prefix: &str, min_age_secs: u64) -> Result<u64> {
        let _ = (prefix, min_age_secs);
        Ok(0)
    }
}

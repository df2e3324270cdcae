//! Storage wrappers for tests and measurements. Each forwards every method of [`Storage`].

use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{ObjectInfo, PutOutcome, Storage};
use crate::error::{Error, Result};

/// Fails a share of calls with a transient storage error, reproducibly from a seed.
///
/// Failures happen *before* the call reaches the inner store, except for `put_new` where a
/// failure may also be injected *after* the object was written (the client lost the answer),
/// the hardest case for a writer.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    rng: Mutex<StdRng>,
    fail_ratio: f64,
}

impl FaultyStorage {
    /// Fails about `fail_ratio` (0.0..=1.0) of calls.
    pub fn new(inner: Arc<dyn Storage>, fail_ratio: f64, seed: u64) -> Self {
        Self {
            inner,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            fail_ratio,
        }
    }

    fn roll(&self) -> bool {
        match self.rng.lock() {
            Ok(mut rng) => rng.gen_bool(self.fail_ratio.clamp(0.0, 1.0)),
            Err(_) => true,
        }
    }

    fn fault(&self, op: &'static str, name: &str) -> Result<()> {
        if self.roll() {
            return Err(Error::Storage {
                op,
                object: name.to_owned(),
                transient: true,
                message: "injected fault".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Storage for FaultyStorage {
    async fn put_new(&self, name: &str, bytes: Bytes) -> Result<PutOutcome> {
        self.fault("put", name)?;
        let out = self.inner.put_new(name, bytes).await?;
        self.fault("put", name)?;
        Ok(out)
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        self.fault("get", name)?;
        self.inner.get(name).await
    }

    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        self.fault("get", name)?;
        self.inner.get_range(name, range).await
    }

    async fn size(&self, name: &str) -> Result<Option<u64>> {
        self.fault("head", name)?;
        self.inner.size(name).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.fault("list", prefix)?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.fault("delete", name)?;
        self.inner.delete(name).await
    }

    fn location(&self) -> String {
        format!("faulty({})", self.inner.location())
    }

    fn reads_inline(&self) -> bool {
        self.inner.reads_inline()
    }

    async fn remove_interrupted_writes(&self, prefix: &str, min_age_secs: u64) -> Result<u64> {
        self.fault("delete", prefix)?;
        self.inner
            .remove_interrupted_writes(prefix, min_age_secs)
            .await
    }
}

/// Call and byte counts of a [`CountingStorage`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StorageCounts {
    /// `put_new` calls.
    pub puts: u64,
    /// Bytes passed to `put_new` that created an object.
    pub bytes_put: u64,
    /// `get` and `get_range` calls.
    pub gets: u64,
    /// Bytes returned by `get` and `get_range`.
    pub bytes_got: u64,
    /// `size` calls.
    pub heads: u64,
    /// `list` calls.
    pub lists: u64,
    /// `delete` calls.
    pub deletes: u64,
}

/// Counts calls and bytes, for tests and benchmarks.
#[derive(Debug)]
pub struct CountingStorage {
    inner: Arc<dyn Storage>,
    puts: AtomicU64,
    bytes_put: AtomicU64,
    gets: AtomicU64,
    bytes_got: AtomicU64,
    heads: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
}

impl CountingStorage {
    /// Wraps a store.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            puts: AtomicU64::new(0),
            bytes_put: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            bytes_got: AtomicU64::new(0),
            heads: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> StorageCounts {
        StorageCounts {
            puts: self.puts.load(Ordering::Relaxed),
            bytes_put: self.bytes_put.load(Ordering::Relaxed),
            gets: self.gets.load(Ordering::Relaxed),
            bytes_got: self.bytes_got.load(Ordering::Relaxed),
            heads: self.heads.load(Ordering::Relaxed),
            lists: self.lists.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Storage for CountingStorage {
    async fn put_new(&self, name: &str, bytes: Bytes) -> Result<PutOutcome> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        let len = bytes.len() as u64;
        let out = self.inner.put_new(name, bytes).await?;
        if out == PutOutcome::Created {
            self.bytes_put.fetch_add(len, Ordering::Relaxed);
        }
        Ok(out)
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        let b = self.inner.get(name).await?;
        self.bytes_got.fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(b)
    }

    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        let b = self.inner.get_range(name, range).await?;
        self.bytes_got.fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(b)
    }

    async fn size(&self, name: &str) -> Result<Option<u64>> {
        self.heads.fetch_add(1, Ordering::Relaxed);
        self.inner.size(name).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.deletes.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(name).await
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn reads_inline(&self) -> bool {
        self.inner.reads_inline()
    }

    async fn remove_interrupted_writes(&self, prefix: &str, min_age_secs: u64) -> Result<u64> {
        self.inner
            .remove_interrupted_writes(prefix, min_age_secs)
            .await
    }
}

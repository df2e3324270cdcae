//! A store for interleaving tests: every call first yields to the scheduler a seeded number of
//! times (and now and then sleeps a little), so concurrent actors interleave differently for
//! each seed; after a seeded number of calls the store "dies": every later call fails, as if
//! the process had been killed at that point. A `put_new` at the kill point may land before
//! the failure (the answer was lost).
//!
//! A store can also **pause** at a seeded call: that call and every later one wait until the
//! test resumes the store (or kills it there), so the actor using it stands still at a known
//! point while other actors run; the schedule then depends on the seed alone.

use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cairn::{Error, ObjectInfo, PutOutcome, Result, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The message of the errors a dead [`ChaosStorage`] returns.
pub const KILLED: &str = "killed by the test";

/// Where a [`ChaosStorage`] pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausePoint {
    /// At call number `n` (from 0).
    Call(u64),
    /// At the first write of an object whose name starts with this (`snapshots/`, `data/`).
    Put(&'static str),
}

/// See the module documentation.
#[derive(Debug)]
pub struct ChaosStorage {
    inner: Arc<dyn Storage>,
    rng: Mutex<StdRng>,
    calls: AtomicU64,
    kill_after: Option<u64>,
    pause_at: Option<PausePoint>,
    reached: tokio::sync::watch::Sender<bool>,
    resumed: tokio::sync::Semaphore,
    killed_at_pause: std::sync::atomic::AtomicBool,
}

impl ChaosStorage {
    /// Forwards to `inner`, shuffled by `seed`; dies after `kill_after` calls when given.
    pub fn new(inner: Arc<dyn Storage>, seed: u64, kill_after: Option<u64>) -> Self {
        Self {
            inner,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            calls: AtomicU64::new(0),
            kill_after,
            pause_at: None,
            reached: tokio::sync::watch::channel(false).0,
            resumed: tokio::sync::Semaphore::new(0),
            killed_at_pause: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Like [`ChaosStorage::new`] without a kill point, pausing at `at`: that call and every
    /// later one wait for [`ChaosStorage::resume`].
    pub fn pausing(inner: Arc<dyn Storage>, seed: u64, at: PausePoint) -> Self {
        Self {
            pause_at: Some(at),
            ..Self::new(inner, seed, None)
        }
    }

    /// Waits until a call has reached the pause point (forever if none does: race it with the
    /// actor's end).
    pub async fn paused(&self) {
        let mut rx = self.reached.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Lets the calls waiting at the pause point (and later ones) go on, or, with `kill`, fail
    /// them and every later call, as if the process had died there.
    pub fn resume(&self, kill: bool) {
        if kill {
            self.killed_at_pause.store(true, Ordering::SeqCst);
        }
        self.resumed
            .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    /// True once the store has died.
    pub fn killed(&self) -> bool {
        self.killed_at_pause.load(Ordering::SeqCst)
            || self
                .kill_after
                .is_some_and(|k| self.calls.load(Ordering::SeqCst) > k)
    }

    /// Yields and maybe sleeps; then `Ok(true)` to go on, `Ok(false)` when this call is the kill
    /// point of a `put_new` that lands anyway, or the kill error.
    async fn step(&self, op: &'static str, name: &str) -> Result<bool> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let pause = match self.pause_at {
            None => false,
            Some(_) if *self.reached.borrow() => true,
            Some(PausePoint::Call(k)) => n >= k,
            Some(PausePoint::Put(prefix)) => op == "put" && name.starts_with(prefix),
        };
        if pause {
            self.reached.send_replace(true);
            // Permits are added once, in bulk, and never taken back.
            drop(self.resumed.acquire().await);
            if self.killed_at_pause.load(Ordering::SeqCst) {
                return Err(killed(op, name));
            }
        }
        let (yields, sleep_us, land) = {
            let mut rng = self.rng.lock().unwrap();
            let yields = rng.gen_range(0..4u32);
            let sleep_us = if rng.gen_bool(0.03) {
                rng.gen_range(100..2000u64)
            } else {
                0
            };
            (yields, sleep_us, rng.gen_bool(0.5))
        };
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
        if sleep_us > 0 {
            tokio::time::sleep(Duration::from_micros(sleep_us)).await;
        }
        match self.kill_after {
            Some(k) if n == k && op == "put" && land => Ok(false),
            Some(k) if n >= k => Err(killed(op, name)),
            _ => Ok(true),
        }
    }
}

fn killed(op: &'static str, name: &str) -> Error {
    Error::Storage {
        op,
        object: name.to_owned(),
        transient: false,
        message: KILLED.into(),
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Storage for ChaosStorage {
    async fn put_new(&self, name: &str, bytes: Bytes) -> Result<PutOutcome> {
        if self.step("put", name).await? {
            return self.inner.put_new(name, bytes).await;
        }
        self.inner.put_new(name, bytes).await?;
        Err(killed("put", name))
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        self.step("get", name).await?;
        self.inner.get(name).await
    }

    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        self.step("get_range", name).await?;
        self.inner.get_range(name, range).await
    }

    async fn size(&self, name: &str) -> Result<Option<u64>> {
        self.step("size", name).await?;
        self.inner.size(name).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.step("list", prefix).await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.step("delete", name).await?;
        self.inner.delete(name).await
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn reads_inline(&self) -> bool {
        false
    }

    async fn remove_interrupted_writes(&self, prefix: &str, min_age_secs: u64) -> Result<u64> {
        self.step("delete", prefix).await?;
        self.inner
            .remove_interrupted_writes(prefix, min_age_secs)
            .await
    }
}

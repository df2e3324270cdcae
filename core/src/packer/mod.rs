//! The packer: collects sealed blobs into packs, uploads them, and records them in index files.
//!
//! Called from many worker threads at once. Blobs of each type go to one of several open packs
//! chosen at random, so that the order of blobs in packs does not mirror the order of data in
//! files (a counter to fingerprinting by pack layout). A pack that reaches the repository's
//! target size is sealed and handed to the upload task through a bounded channel. Every pack
//! buffer, open or on its way to the store, holds a share of one budget of
//! `(OPEN_DATA_PACKS + UPLOAD_CONCURRENCY) * data target + tree target` bytes, given back once
//! its upload has landed: when uploads lag, a worker that needs a new pack buffer adds to a
//! pack already open, or waits when none is, so pack memory stays within that budget (each
//! pack can overshoot its target by one blob). Buffers of uploaded packs are reused for new
//! packs.
//!
//! Uploaded packs are written to an index file every [`INDEX_EVERY_PACKS`] packs or
//! [`INDEX_EVERY`], and at the end, so an interrupted backup leaves most of its uploads indexed
//! and the next backup deduplicates against them instead of uploading them again.
//!
//! The packer also records what a backup comes to depend on: the packs of every blob it found
//! already stored ([`Packer::claim`], [`Packer::has`], [`Packer::locate_used`]) and the packs it
//! wrote. [`Packer::dependencies`] hands them to the snapshot guard
//! ([`crate::prune::save_snapshot_guarded`]), which refuses a snapshot when prune deleted or is
//! deleting one of them.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use cairn_format::{BlobId, BlobType, FinishedPack, IndexId, MasterKey, PackBuilder, PackId};
use rand::Rng;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

mod upload;
use crate::index::Index;
use crate::repo::Repository;
use upload::upload_loop;

/// Open packs per blob type for data blobs (random placement across them).
pub const OPEN_DATA_PACKS: usize = 2;
/// Packs waiting for an upload slot.
pub const UPLOAD_QUEUE: usize = 1;
/// Uploads in flight at once.
pub const UPLOAD_CONCURRENCY: usize = 2;
/// Buffers of uploaded packs kept for the next packs (at most every pack that can be in memory
/// at once, so the pool never raises the memory bound).
const SPARE_BUFFERS: usize = OPEN_DATA_PACKS + 1 + UPLOAD_QUEUE + UPLOAD_CONCURRENCY;
/// Write an index file after this many uploaded packs...
pub const INDEX_EVERY_PACKS: usize = 32;
/// ...or once the oldest pack not yet in one landed this long ago.
pub const INDEX_EVERY: Duration = Duration::from_secs(60);

/// What the packer wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PackerStats {
    /// Blobs added.
    pub blobs: u64,
    /// Plaintext bytes of blobs added.
    pub plain_bytes: u64,
    /// Stored bytes of blobs added (envelopes).
    pub stored_bytes: u64,
    /// Packs uploaded.
    pub packs: u64,
    /// Index files written.
    pub index_files: u64,
}

/// The upload task; it returns (packs uploaded, index files written).
type Uploader = tokio::task::JoinHandle<Result<(u64, u64)>>;

/// The bytes of pack buffers allowed at once (see the module documentation).
#[derive(Debug)]
struct PackBudget {
    /// Bytes held, and whether the upload task has stopped (no more will be given back).
    state: Mutex<(usize, bool)>,
    freed: Condvar,
    limit: usize,
}

impl PackBudget {
    fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new((0, false)),
            freed: Condvar::new(),
            limit,
        }
    }

    /// Takes `n` bytes if the budget has them now.
    fn try_take(&self, n: usize) -> Result<bool> {
        let mut s = self.state.lock().map_err(poisoned)?;
        if s.0 + n <= self.limit || s.0 == 0 {
            s.0 += n;
            return Ok(true);
        }
        Ok(false)
    }

    /// Takes `n` bytes, waiting for uploads to give some back; fails once the upload task has
    /// stopped (its error is reported by [`Packer::finish_blocking`]).
    fn take(&self, n: usize) -> Result<()> {
        let mut s = self.state.lock().map_err(poisoned)?;
        loop {
            if s.0 + n <= self.limit || s.0 == 0 {
                s.0 += n;
                return Ok(());
            }
            if s.1 {
                return Err(upload_stopped());
            }
            s = self.freed.wait(s).map_err(poisoned)?;
        }
    }

    fn give_back(&self, n: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = s.0.saturating_sub(n);
        }
        self.freed.notify_all();
    }

    /// The upload task has stopped: waiters give up.
    fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.1 = true;
        }
        self.freed.notify_all();
    }
}

/// Closes the budget when the upload task ends, however it ends.
struct CloseOnDrop(Arc<PackBudget>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn upload_stopped() -> Error {
    Error::Storage {
        op: "put",
        object: "data/".into(),
        transient: false,
        message: "the upload task stopped after an error".into(),
    }
}

/// A sealed pack on its way to the store, with the budget it holds.
struct Outgoing {
    pack: FinishedPack,
    budget: usize,
}

/// Open packs, each with the budget its buffer holds.
struct Open {
    data: Vec<(PackBuilder, usize)>,
    tree: Vec<(PackBuilder, usize)>,
}

/// Collects blobs into packs and uploads them. See the module documentation.
pub struct Packer {
    repo: Repository,
    key: Arc<MasterKey>,
    open: Mutex<Open>,
    tx: Mutex<Option<mpsc::Sender<Outgoing>>>,
    uploader: Mutex<Option<Uploader>>,
    known: Mutex<HashSet<BlobId>>,
    index: Arc<RwLock<Index>>,
    stats: Mutex<PackerStats>,
    handle: tokio::runtime::Handle,
    spare: Spare,
    budget: Arc<PackBudget>,
    /// Pack numbers (of `index`) holding blobs this packer found already stored: a bit each.
    used: Mutex<Vec<u64>>,
    /// Packs this packer uploaded.
    written: Arc<Mutex<Vec<PackId>>>,
}

/// Buffers of uploaded packs, reused for new packs: a fresh 16 MiB buffer costs a page fault
/// and a page clearing per 4 KiB (7 % of a backup's CPU before this pool).
type Spare = Arc<Mutex<Vec<Vec<u8>>>>;

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer").finish_non_exhaustive()
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Invalid("internal lock poisoned (a worker panicked)".into())
}

impl Packer {
    /// A packer writing into `repo`, deduplicating against `index` (which it also updates as
    /// packs land). Must be created inside a tokio runtime.
    pub fn new(repo: &Repository, index: Arc<RwLock<Index>>) -> Self {
        let handle = tokio::runtime::Handle::current();
        let (tx, rx) = mpsc::channel::<Outgoing>(UPLOAD_QUEUE);
        let spare = Spare::default();
        let config = repo.config();
        let budget = Arc::new(PackBudget::new(
            (OPEN_DATA_PACKS + UPLOAD_CONCURRENCY) * config.data_pack_target as usize
                + config.tree_pack_target as usize,
        ));
        let written = Arc::new(Mutex::new(Vec::new()));
        let uploader = handle.spawn(upload_loop(
            repo.clone(),
            index.clone(),
            rx,
            spare.clone(),
            budget.clone(),
            written.clone(),
        ));
        Self {
            repo: repo.clone(),
            key: Arc::new(repo.key().clone()),
            open: Mutex::new(Open {
                data: Vec::new(),
                tree: Vec::new(),
            }),
            tx: Mutex::new(Some(tx)),
            uploader: Mutex::new(Some(uploader)),
            known: Mutex::new(HashSet::new()),
            index,
            stats: Mutex::new(PackerStats::default()),
            handle,
            spare,
            budget,
            used: Mutex::new(Vec::new()),
            written,
        }
    }

    /// Records that the snapshot being built references a blob of pack number `n`.
    fn note_used(&self, n: u32) -> Result<()> {
        let mut used = self.used.lock().map_err(poisoned)?;
        let (word, bit) = ((n / 64) as usize, n % 64);
        if used.len() <= word {
            used.resize(word + 1, 0);
        }
        if let Some(w) = used.get_mut(word) {
            *w |= 1 << bit;
        }
        Ok(())
    }

    /// The packs a snapshot of what went through this packer depends on: those holding blobs
    /// found already stored, and those this packer wrote. Complete once [`Packer::finish_blocking`]
    /// returned.
    pub fn dependencies(&self) -> Result<HashSet<PackId>> {
        let mut out: HashSet<PackId> = self
            .written
            .lock()
            .map_err(poisoned)?
            .iter()
            .copied()
            .collect();
        let used = self.used.lock().map_err(poisoned)?;
        let index = self.index.read().map_err(poisoned)?;
        let packs = index.packs();
        for (w, word) in used.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                if let Some(p) = packs.get(w * 64 + b as usize) {
                    out.insert(*p);
                }
            }
        }
        Ok(out)
    }

    /// The index files the packer's index was built from or wrote.
    pub fn index_files(&self) -> Result<HashSet<IndexId>> {
        Ok(self.index.read().map_err(poisoned)?.files().clone())
    }

    /// The repository's master key.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// True when the blob is in the repository or was added through this packer. When it is
    /// neither, it is *claimed*: the caller must add it (so two workers never both add one blob).
    pub fn claim(&self, id: &BlobId) -> Result<bool> {
        let found = self.index.read().map_err(poisoned)?.pack_number_of(id);
        if let Some(n) = found {
            self.note_used(n)?;
            return Ok(true);
        }
        Ok(!self.known.lock().map_err(poisoned)?.insert(*id))
    }

    /// Where a blob of the index this packer deduplicates against lives (blobs added through
    /// this packer are not located until their pack is uploaded).
    pub fn locate(&self, id: &BlobId) -> Option<crate::index::BlobLocation> {
        self.index.read().ok()?.get(id)
    }

    /// [`Packer::locate`] for a blob the snapshot being built will reference (a delta base):
    /// its pack becomes a dependency.
    pub fn locate_used(&self, id: &BlobId) -> Result<Option<crate::index::BlobLocation>> {
        let index = self.index.read().map_err(poisoned)?;
        let (Some(n), Some(loc)) = (index.pack_number_of(id), index.get(id)) else {
            return Ok(None);
        };
        drop(index);
        self.note_used(n)?;
        Ok(Some(loc))
    }

    /// True when the blob is in the index this packer deduplicates against (which leaves out
    /// packs condemned by prune) or was added through this packer.
    pub fn has(&self, id: &BlobId) -> Result<bool> {
        let found = self.index.read().map_err(poisoned)?.pack_number_of(id);
        if let Some(n) = found {
            self.note_used(n)?;
            return Ok(true);
        }
        Ok(self.known.lock().map_err(poisoned)?.contains(id))
    }

    /// Adds a sealed blob. Blocks while the pack budget is spent (uploads lag). Call from worker
    /// threads, not from async tasks.
    pub fn add(
        &self,
        blob_type: BlobType,
        id: BlobId,
        sealed: &[u8],
        plain_len: u32,
    ) -> Result<()> {
        let (want, target) = match blob_type {
            BlobType::Data => (OPEN_DATA_PACKS, self.repo.config().data_pack_target),
            BlobType::Tree => (1, self.repo.config().tree_pack_target),
        };
        let target = target as usize;
        // Budget taken while waiting (outside the lock) because no pack of this type was open.
        let mut reserved: Option<usize> = None;
        let full = loop {
            let mut open = self.open.lock().map_err(poisoned)?;
            let packs = match blob_type {
                BlobType::Data => &mut open.data,
                BlobType::Tree => &mut open.tree,
            };
            // One more open pack when the budget allows (more packs to place blobs in at
            // random), never more than `want`.
            let more = match reserved.take() {
                Some(n) if packs.len() < want => Some(n),
                Some(n) => {
                    // Other workers opened enough meanwhile.
                    self.budget.give_back(n);
                    None
                }
                None if packs.len() < want && self.budget.try_take(target)? => Some(target),
                None => None,
            };
            if let Some(n) = more {
                // Reserved address space, not memory: pages count only once written, and the
                // pack never reallocates (which would briefly double it). Only data packs
                // reuse the buffers of uploaded packs: a tree pack's share of the budget is
                // smaller than a data pack's buffer.
                let cap = target + self.repo.config().chunker.max_size as usize + (1 << 20);
                let reuse = match blob_type {
                    BlobType::Data => self.spare.lock().map_err(poisoned)?.pop(),
                    BlobType::Tree => None,
                };
                let pack = match reuse {
                    Some(buf) => PackBuilder::with_buffer(&self.key, blob_type, buf, cap),
                    None => PackBuilder::new(&self.key, blob_type, cap),
                };
                packs.push((pack, n));
            }
            if packs.is_empty() {
                // None open and the budget spent: wait for an upload to land, then retry.
                drop(open);
                self.budget.take(target)?;
                reserved = Some(target);
                continue;
            }
            let i = rand::thread_rng().gen_range(0..packs.len());
            let (pack, _) = packs
                .get_mut(i)
                .ok_or_else(|| Error::Invalid("no open pack".into()))?;
            pack.add(id, sealed, plain_len)
                .map_err(|e| Error::Invalid(format!("pack: {e}")))?;
            break if pack.len() >= target {
                Some(packs.swap_remove(i))
            } else {
                None
            };
        };
        {
            let mut s = self.stats.lock().map_err(poisoned)?;
            s.blobs += 1;
            s.plain_bytes += u64::from(plain_len);
            s.stored_bytes += sealed.len() as u64;
        }
        if let Some(pack) = full {
            self.send(pack)?;
        }
        Ok(())
    }

    fn send(&self, (pack, budget): (PackBuilder, usize)) -> Result<()> {
        let finished = match pack.finish(&self.key, &mut rand::thread_rng()) {
            Ok(f) => f,
            Err(e) => {
                self.budget.give_back(budget);
                return Err(Error::Invalid(format!("pack: {e}")));
            }
        };
        let tx = self.tx.lock().map_err(poisoned)?.clone();
        let Some(tx) = tx else {
            return Err(Error::Invalid("packer already finished".into()));
        };
        let out = Outgoing {
            pack: finished,
            budget,
        };
        if tx.blocking_send(out).is_err() {
            // The upload task stopped: its error is reported by `finish`.
            return Err(upload_stopped());
        }
        Ok(())
    }

    /// Seals the open packs, waits for every upload, writes the last index file. Returns what
    /// was written. Call from a blocking context (or `spawn_blocking`).
    pub fn finish_blocking(&self) -> Result<PackerStats> {
        let rest: Vec<(PackBuilder, usize)> = {
            let mut open = self.open.lock().map_err(poisoned)?;
            let mut all: Vec<(PackBuilder, usize)> = open.data.drain(..).collect();
            all.append(&mut open.tree);
            all
        };
        let mut first_err = None;
        for p in rest {
            if p.0.is_empty() {
                self.budget.give_back(p.1);
                continue;
            }
            if let Err(e) = self.send(p) {
                first_err.get_or_insert(e);
            }
        }
        self.tx.lock().map_err(poisoned)?.take();
        let uploader = self.uploader.lock().map_err(poisoned)?.take();
        let uploaded = match uploader {
            Some(h) => self
                .handle
                .block_on(h)
                .map_err(|e| Error::Invalid(format!("upload task failed: {e}")))?,
            None => Ok((0, 0)),
        };
        let (packs, index_files) = uploaded?;
        if let Some(e) = first_err {
            return Err(e);
        }
        let mut s = *self.stats.lock().map_err(poisoned)?;
        s.packs = packs;
        s.index_files = index_files;
        Ok(s)
    }
}

/// Retries a transient storage failure a few times (put is idempotent: write-once names).
pub(crate) async fn with_retries<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt < 4 => {
                attempt += 1;
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            other => return other,
        }
    }
}

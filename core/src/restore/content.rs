//! Fetching file content, pack by pack, and writing every chunk where it belongs.
//!
//! Each needed blob is located in the index; blobs are grouped by pack and sorted by offset,
//! and neighbouring blobs of one pack (gaps up to [`MAX_GAP`]) are merged into one ranged read
//! of at most [`MAX_RANGE`] bytes (or one blob, when a blob is larger). A blob used by several
//! files, or several times in one file, is fetched and opened once and written to each place.
//! A ranged read that fails or comes back short is read again blob by blob ([`fetch`]): a
//! truncated or partly unreadable pack costs only the blobs that cannot be read, and a blob
//! that does not authenticate costs only itself.
//!
//! A block stored as a patch (a [`DeltaBlock`]) is restored in two passes: the first writes its
//! base where the block belongs, like any other blob; the second, once every first-pass job has
//! finished, fetches the patch, reads the base back from the file, rebuilds the block, checks it
//! against the block's id and writes it over the base. Both passes count as places of the file,
//! so the file is finished (metadata, progress) after its last patch.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use cairn_format::{BlobId, BlobType, DeltaBlock, PackId};
use futures::StreamExt;
use futures::stream;
use tokio::sync::Semaphore;

use super::direct::{self, DirectFile};
use super::fsops;
use super::{Ctx, DirectSlot};
use crate::error::Result;
use crate::index::{BlobLocation, Index};
use crate::repo::{Repository, pack_name};

/// Largest gap between two needed blobs of a pack that is read rather than split.
pub(super) const MAX_GAP: u64 = 256 << 10;
/// Largest merged range (a single larger blob is read alone).
pub(super) const MAX_RANGE: u64 = 8 << 20;
/// Sealed bytes fetched and not yet written, at most (a range larger than this runs alone).
pub(super) const MEMORY_BUDGET: u64 = 32 << 20;
/// The same for a local directory, whose reads return at once: more bytes waiting for a
/// writer would only raise peak memory (32 MiB with four workers: +20-30 MiB, no faster).
pub(super) const MEMORY_BUDGET_LOCAL: u64 = 16 << 20;
/// Blob reads in flight when a failed ranged read is retried blob by blob.
const SINGLE_READS: usize = 4;
/// Buffer pairs kept between jobs (at least the number of jobs applied at once).
const MAX_SPARE_BUFFERS: usize = 8;
/// Granularity of the memory budget's permits.
const PERMIT_BYTES: u64 = 64 << 10;

/// Where a blob's plaintext goes.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// File number.
    file: usize,
    /// Offset in the file.
    offset: u64,
    /// What the plaintext is there.
    role: Role,
}

/// What a blob is to one place.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// The content at the offset.
    Whole,
    /// The base of a block stored as a patch (written first, replaced by the patch pass).
    Base,
    /// The patch rebuilding block `.0` (delta entry `.1`) from the base at the offset.
    Patch(BlobId, DeltaBlock),
}

/// One blob to read and the places its plaintext goes.
#[derive(Debug)]
struct Wanted {
    id: BlobId,
    loc: BlobLocation,
    places: Vec<Place>,
}

/// One ranged read of a pack and the blobs in it.
#[derive(Debug)]
pub(super) struct Job {
    pack: PackId,
    start: u64,
    end: u64,
    blobs: Vec<Wanted>,
}

/// Locates a data blob; `None` (with the file marked failed) when it is missing or a tree.
fn locate_data(ctx: &Ctx, index: &Index, fi: usize, id: &BlobId) -> Option<BlobLocation> {
    match index.get(id) {
        Some(loc) if loc.blob_type == BlobType::Data => Some(loc),
        Some(_) => {
            ctx.fail_file(fi, format!("blob {id} is a tree, not file content"));
            None
        }
        None => {
            ctx.fail_file(fi, format!("blob {id}: not found in any index"));
            None
        }
    }
}

fn want(map: &mut HashMap<BlobId, Wanted>, id: BlobId, loc: BlobLocation, place: Place) {
    map.entry(id)
        .or_insert_with(|| Wanted {
            id,
            loc,
            places: Vec::new(),
        })
        .places
        .push(place);
}

/// Locates every chunk of every created file and groups them into ranged reads: the jobs of
/// the first pass (whole blobs and the bases of patched blocks) and of the second (patches).
/// Files with a chunk missing from the index are marked failed (the chunks before it are still
/// written).
pub(super) fn plan_jobs(ctx: &Ctx, index: &Index) -> (Vec<Job>, Vec<Job>) {
    let mut wanted: HashMap<BlobId, Wanted> = HashMap::new();
    let mut patches: HashMap<BlobId, Wanted> = HashMap::new();
    for (fi, file) in ctx.files.iter().enumerate() {
        let Some(state) = ctx.state.get(fi) else {
            continue;
        };
        if !state.created.load(Ordering::Relaxed) {
            continue;
        }
        let mut offset = 0u64;
        let mut places = 0usize;
        let mut complete = true;
        for (i, id) in file.node.content.iter().enumerate() {
            let place = Place {
                file: fi,
                offset,
                role: Role::Whole,
            };
            let Some(d) = file.node.delta(i) else {
                let Some(loc) = locate_data(ctx, index, fi, id) else {
                    complete = false;
                    break;
                };
                want(&mut wanted, *id, loc, place);
                places += 1;
                offset += u64::from(loc.plain_len);
                continue;
            };
            let (Some(base), Some(patch)) = (
                locate_data(ctx, index, fi, &d.base),
                locate_data(ctx, index, fi, &d.patch),
            ) else {
                complete = false;
                break;
            };
            if base.plain_len != d.len {
                ctx.fail_file(
                    fi,
                    format!(
                        "block {id}: base {} is {} bytes, the block {} (damaged tree)",
                        d.base, base.plain_len, d.len
                    ),
                );
                complete = false;
                break;
            }
            let base_place = Place {
                role: Role::Base,
                ..place
            };
            want(&mut wanted, d.base, base, base_place);
            let patch_place = Place {
                role: Role::Patch(*id, *d),
                ..place
            };
            want(&mut patches, d.patch, patch, patch_place);
            places += 2;
            offset += u64::from(d.len);
        }
        if complete && offset != file.node.size {
            ctx.fail_file(
                fi,
                format!(
                    "content is {offset} bytes but the snapshot records {} (damaged tree)",
                    file.node.size
                ),
            );
        }
        state.remaining.store(places, Ordering::Relaxed);
    }
    (group(wanted), group(patches))
}

/// Groups blobs into ranged reads; orders packs by the first file needing them, so files
/// complete (and get their metadata) progressively rather than all at the end.
fn group(wanted: HashMap<BlobId, Wanted>) -> Vec<Job> {
    let mut by_pack: HashMap<PackId, (usize, Vec<Wanted>)> = HashMap::new();
    for w in wanted.into_values() {
        let first = w.places.iter().map(|p| p.file).min().unwrap_or(0);
        let e = by_pack.entry(w.loc.pack).or_insert((first, Vec::new()));
        e.0 = e.0.min(first);
        e.1.push(w);
    }
    let mut packs: Vec<(PackId, usize, Vec<Wanted>)> =
        by_pack.into_iter().map(|(p, (f, w))| (p, f, w)).collect();
    packs.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let mut jobs = Vec::new();
    for (pack, _, mut blobs) in packs {
        blobs.sort_by_key(|w| w.loc.offset);
        let mut job: Option<Job> = None;
        for w in blobs {
            let range = w.loc.entry(w.id).range();
            if let Some(j) = job.as_mut() {
                let fits = range.start <= j.end + MAX_GAP && range.end - j.start <= MAX_RANGE;
                if fits && range.start >= j.end {
                    j.end = range.end;
                    j.blobs.push(w);
                    continue;
                }
            }
            if let Some(j) = job.take() {
                jobs.push(j);
            }
            job = Some(Job {
                pack,
                start: range.start,
                end: range.end,
                blobs: vec![w],
            });
        }
        jobs.extend(job);
    }
    jobs
}

/// Runs the jobs: `threads` blocking workers open and write, up to `2 * threads` ranged reads are
/// in flight, and at most [`MEMORY_BUDGET`] sealed bytes are held ([`MEMORY_BUDGET_LOCAL`] from
/// a local directory).
pub(super) async fn run(repo: &Repository, ctx: &Arc<Ctx>, jobs: Vec<Job>, threads: usize) {
    let budget_bytes = if repo.reads_inline() {
        MEMORY_BUDGET_LOCAL
    } else {
        MEMORY_BUDGET
    };
    let permits_total = (budget_bytes / PERMIT_BYTES) as u32;
    let budget = Arc::new(Semaphore::new(permits_total as usize));
    let workers = Arc::new(Semaphore::new(threads));
    stream::iter(jobs)
        .map(|job| {
            let budget = budget.clone();
            let workers = workers.clone();
            let ctx = ctx.clone();
            async move {
                let want = (job.end - job.start).div_ceil(PERMIT_BYTES);
                let want = u32::try_from(want).unwrap_or(u32::MAX).min(permits_total);
                // The semaphores are never closed, so acquiring cannot fail.
                let memory = budget.acquire_many_owned(want).await.ok();
                let fetched = fetch(repo, job).await;
                let worker = workers.acquire_owned().await.ok();
                let blocking_ctx = ctx.clone();
                let places: Vec<usize> = fetched
                    .iter()
                    .flat_map(|(job, _)| &job.blobs)
                    .flat_map(|w| w.places.iter().map(|p| p.file))
                    .collect();
                let done = tokio::task::spawn_blocking(move || {
                    for (job, bytes) in fetched {
                        blocking_ctx.apply(job, bytes);
                    }
                    drop(worker);
                    drop(memory);
                })
                .await;
                if let Err(e) = done {
                    // The worker died (a panic): account for what it would have finished.
                    for fi in places {
                        ctx.fail_file(fi, format!("restore worker failed: {e}"));
                        ctx.place_done(fi);
                    }
                }
            }
        })
        .buffer_unordered(threads * 2)
        .for_each(|()| async {})
        .await;
}

/// Reads the range of `job`. When that fails or comes back short (a truncated or damaged pack,
/// a store that cut the read), each of its blobs is read alone, so that every blob that can
/// still be read is used and only the others fail.
async fn fetch(repo: &Repository, job: Job) -> Vec<(Job, Result<Bytes>)> {
    let name = pack_name(&job.pack);
    let get = |start: u64, end: u64| {
        let name = &name;
        crate::packer::with_retries(move || repo.storage().get_range(name, start..end))
    };
    let whole = get(job.start, job.end).await;
    let complete = whole
        .as_ref()
        .is_ok_and(|b| b.len() as u64 == job.end - job.start);
    if complete || job.blobs.len() < 2 {
        return vec![(job, whole)];
    }
    drop(whole);
    let Job { pack, blobs, .. } = job;
    stream::iter(blobs)
        .map(|w| async move {
            let range = w.loc.entry(w.id).range();
            let bytes = get(range.start, range.end).await;
            let single = Job {
                pack,
                start: range.start,
                end: range.end,
                blobs: vec![w],
            };
            (single, bytes)
        })
        .buffered(SINGLE_READS)
        .collect()
        .await
}

/// Reads into `buf` from `offset` up to the end of the file; what lies past it stays as it is.
fn read_at_most(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        match f.read_at(rest, offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn is_zero(buf: &[u8]) -> bool {
    let mut words = buf.chunks_exact(16);
    words.all(|w| *w == [0u8; 16]) && words.remainder().iter().all(|&b| b == 0)
}

impl Ctx {
    /// Opens, verifies and writes the blobs of one ranged read (blocking).
    fn apply(&self, job: Job, fetched: Result<Bytes>) {
        let pack = pack_name(&job.pack);
        let expected = job.end - job.start;
        let bytes = match fetched {
            Ok(b) if b.len() as u64 == expected => b,
            Ok(b) => {
                let msg = format!("{pack}: short read ({} of {expected} bytes)", b.len());
                return self.fail_blobs(&job.blobs, &msg);
            }
            // The error names the pack.
            Err(e) => return self.fail_blobs(&job.blobs, &e.to_string()),
        };
        let mut open: Option<(usize, File)> = None;
        let (mut scratch, mut plain) = self.take_buffers();
        for w in &job.blobs {
            let from = (u64::from(w.loc.offset) - job.start) as usize;
            let sealed = bytes
                .get(from..from + w.loc.stored_len as usize)
                .unwrap_or_default();
            let opened =
                w.loc
                    .entry(w.id)
                    .open_into(self.repo.key(), sealed, &mut scratch, &mut plain);
            if let Err(e) = opened {
                let msg = format!("{pack}: corrupt: {e}");
                self.fail_blobs(std::slice::from_ref(w), &msg);
                continue;
            }
            let zero = self.sparse && is_zero(&plain);
            for &Place {
                file: fi,
                offset,
                role,
            } in &w.places
            {
                // Skipped zeros read back as zeros: the file gets its size when it is finished.
                let written = match role {
                    Role::Whole => match self.direct_file(fi) {
                        Ok(Some(df)) => df.write(offset, &plain, zero).map(|()| plain.len()),
                        Ok(None) if zero => Ok(plain.len()),
                        Ok(None) => self
                            .write(fi, offset, &plain, &mut open)
                            .map(|()| plain.len()),
                        Err(e) => Err(e),
                    },
                    // Bases are not counted: the patch pass counts the block.
                    Role::Base if zero => Ok(0),
                    Role::Base => self.write(fi, offset, &plain, &mut open).map(|()| 0),
                    Role::Patch(block, d) => {
                        self.apply_patch(fi, offset, &block, &d, &plain, &mut open)
                    }
                };
                match written {
                    Ok(n) => self.progress.bytes_done(n as u64),
                    Err(e) => self.fail_file(fi, format!("write at offset {offset}: {e}")),
                }
                if self.place_done_keep(fi) {
                    let mine = match open.take() {
                        Some((f, file)) if f == fi => Some(file),
                        other => {
                            open = other;
                            None
                        }
                    };
                    self.finish_file(fi, mine.as_ref());
                }
            }
        }
        self.return_buffers(scratch, plain);
    }

    /// File `fi`'s `O_DIRECT` writer, opened by its first chunk; `None` when the file is
    /// written buffered: small, with patched blocks, `direct_io` off, or a file system that
    /// refuses `O_DIRECT`.
    fn direct_file(&self, fi: usize) -> std::io::Result<Option<Arc<DirectFile>>> {
        let Some((f, slot)) = self.files.get(fi).zip(self.direct.get(fi)) else {
            return Ok(None);
        };
        if !self.direct_io || f.node.size < direct::DIRECT_MIN || !f.node.deltas.is_empty() {
            return Ok(None);
        }
        let mut slot = slot
            .lock()
            .map_err(|_| std::io::Error::other("direct slot poisoned"))?;
        if matches!(*slot, DirectSlot::Untried) {
            *slot = match DirectFile::open(self.tmp_path(fi)?, f.node.size)? {
                Some(df) => {
                    self.counts.direct_files.fetch_add(1, Ordering::Relaxed);
                    DirectSlot::Open(Arc::new(df))
                }
                None => DirectSlot::Buffered,
            };
        }
        Ok(match &*slot {
            DirectSlot::Open(df) => Some(df.clone()),
            _ => None,
        })
    }

    /// Buffers for opening a job's blobs: those of a finished job, or new ones.
    fn take_buffers(&self) -> (Vec<u8>, Vec<u8>) {
        self.buffers
            .lock()
            .ok()
            .and_then(|mut b| b.pop())
            .unwrap_or_default()
    }

    /// Keeps a job's buffers for the next, as many as jobs run at once (their size is that of
    /// the largest blob opened, which the memory budget already allows per running job).
    fn return_buffers(&self, scratch: Vec<u8>, plain: Vec<u8>) {
        if let Ok(mut b) = self.buffers.lock() {
            if b.len() < MAX_SPARE_BUFFERS {
                b.push((scratch, plain));
            }
        }
    }

    /// Rebuilds a patched block from the base already written at `offset` and writes it there;
    /// returns the block's length.
    fn apply_patch(
        &self,
        fi: usize,
        offset: u64,
        block: &BlobId,
        d: &DeltaBlock,
        patch: &[u8],
        open: &mut Option<(usize, File)>,
    ) -> std::io::Result<usize> {
        let mut base = vec![0u8; d.len as usize];
        // A base of zeros left as a hole at the end is not in the file yet: zeros.
        self.with_file(fi, open, |f| read_at_most(f, &mut base, offset))?;
        let rebuilt = crate::repo::rebuild_block(&self.repo.key().id_key(), block, d, &base, patch)
            .map_err(std::io::Error::other)?;
        self.write(fi, offset, &rebuilt, open)?;
        Ok(rebuilt.len())
    }

    fn write(
        &self,
        fi: usize,
        offset: u64,
        plain: &[u8],
        open: &mut Option<(usize, File)>,
    ) -> std::io::Result<()> {
        self.with_file(fi, open, |f| f.write_all_at(plain, offset))
    }

    /// Runs `op` on file `fi`, opening it (read-write) unless it is the one open.
    fn with_file<T>(
        &self,
        fi: usize,
        open: &mut Option<(usize, File)>,
        op: impl FnOnce(&File) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        if open.as_ref().is_none_or(|(f, _)| *f != fi) {
            let path = self.tmp_path(fi)?;
            *open = None;
            *open = Some((fi, fsops::open_for_write(path)?));
        }
        match open {
            Some((_, f)) => op(f),
            None => Err(std::io::Error::other("file not open")),
        }
    }

    /// Records a blob failure for every file that needed the blobs, and accounts the places.
    fn fail_blobs(&self, blobs: &[Wanted], msg: &str) {
        for w in blobs {
            for &Place { file: fi, .. } in &w.places {
                self.fail_file(fi, format!("blob {}: {msg}", w.id));
                self.place_done(fi);
            }
        }
    }

    /// One chunk of a file is accounted (written or failed); finishes the file after its last.
    pub(super) fn place_done(&self, fi: usize) {
        if self.place_done_keep(fi) {
            self.finish_file(fi, None);
        }
    }

    /// Like [`Ctx::place_done`] but leaves finishing to the caller; true when it was the last.
    fn place_done_keep(&self, fi: usize) -> bool {
        self.state
            .get(fi)
            .is_some_and(|s| s.remaining.fetch_sub(1, Ordering::AcqRel) == 1)
    }
}

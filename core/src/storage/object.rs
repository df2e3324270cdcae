//! [`Storage`] over the `object_store` crate.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{ObjectInfo, PutOutcome, Storage};
use crate::direct_io;
use crate::error::{Error, Result};

/// Ranged reads of a local directory at least this long go into reused buffers.
const POOLED_READ_MIN: u64 = 1 << 20;
/// Buffers a local directory store keeps for ranged reads (restore has at most a few reads of
/// up to 8 MiB in flight and in use; the buffers kept are ones that were in use at once).
const POOLED_BUFFERS: usize = 6;

/// Read buffers larger than this are not kept (restore reads at most 8 MiB at a time, or one
/// larger blob).
const POOLED_KEEP_MAX: usize = 16 << 20;

/// Objects at least this long (packs) are written to a local directory with `O_DIRECT`.
const DIRECT_WRITE_MIN: usize = 1 << 20;
/// Aligned write buffers a local directory store keeps (one per upload in flight).
const DIRECT_BUFFERS: usize = 4;

/// Buffers of finished large reads, for the next ones.
#[derive(Debug, Default)]
struct ReadPool(Mutex<Vec<Vec<u8>>>);

/// The owner of a pooled read's bytes: gives the buffer back when the last `Bytes` is dropped.
struct PooledRead {
    buf: Vec<u8>,
    pool: Weak<ReadPool>,
}

impl AsRef<[u8]> for PooledRead {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledRead {
    fn drop(&mut self) {
        // A rare very large read (a whole pack) is not kept resident.
        if self.buf.capacity() > POOLED_KEEP_MAX {
            return;
        }
        if let Some(pool) = self.pool.upgrade() {
            if let Ok(mut kept) = pool.0.lock() {
                if kept.len() < POOLED_BUFFERS {
                    kept.push(std::mem::take(&mut self.buf));
                }
            }
        }
    }
}

/// A repository store backed by any [`ObjectStore`].
#[derive(Debug)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    location: String,
    /// Cleared the first time the store answers that it cannot do conditional create.
    conditional_put: AtomicBool,
    /// The directory of a local store, whose large ranged reads Cairn does itself (into
    /// reused buffers) and which reads inline (see [`Storage::reads_inline`]).
    local_root: Option<PathBuf>,
    read_pool: Arc<ReadPool>,
    /// Cleared the first time the local directory refuses an `O_DIRECT` write.
    direct_writes: AtomicBool,
    /// Objects written with `O_DIRECT` so far.
    direct_written: AtomicU64,
    /// Reused staging buffers of `O_DIRECT` writes (`direct_io::staging`).
    write_pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ObjectStorage {
    /// Wraps a store; `location` is what error messages and `location()` show.
    pub fn new(store: Arc<dyn ObjectStore>, location: impl Into<String>) -> Self {
        Self {
            store,
            location: location.into(),
            conditional_put: AtomicBool::new(true),
            local_root: None,
            read_pool: Arc::default(),
            direct_writes: AtomicBool::new(true),
            direct_written: AtomicU64::new(0),
            write_pool: Arc::default(),
        }
    }

    /// Wraps a local directory store: `store` must be `object_store`'s `LocalFileSystem` with
    /// `root` as its prefix. Its reads run on the calling thread when no tokio runtime is
    /// current, and large ranged reads (a restore's pack reads) are done here into buffers
    /// reused once their bytes are dropped: a fresh buffer per read cost a page fault per
    /// 4 KiB read, over a third of a restore's system time. Objects of 1 MiB and more (packs)
    /// are written with `O_DIRECT` where the file system allows it (see SPEC.md §6, "Durability").
    pub fn local(store: Arc<dyn ObjectStore>, root: PathBuf) -> Self {
        Self {
            local_root: Some(root.clone()),
            ..Self::new(store, root.display().to_string())
        }
    }

    /// How many objects this store has written with `O_DIRECT` (local directories only; see
    /// [`ObjectStorage::local`]).
    pub fn direct_writes(&self) -> u64 {
        self.direct_written.load(Ordering::Relaxed)
    }

    /// Writes a large object (a pack) into a local directory with `O_DIRECT`, following the
    /// same write-once protocol as `object_store`'s local create: a staged file `<name>#<n>`,
    /// fsynced, hard-linked to its name (which fails if the name exists), the directory
    /// fsynced, the staged name removed. Buffered writes cost about 1-2 ns per byte of system
    /// time copying into the page cache (a fifth of a first backup's CPU here), and fill the
    /// cache with packs nobody reads soon. `None` when this put is not one for this path:
    /// other stores, small objects, odd names, a missing directory, or a file system that
    /// refuses `O_DIRECT` (remembered); the caller then puts the usual way.
    async fn local_put_direct(&self, name: &str, bytes: &Bytes) -> Option<Result<PutOutcome>> {
        let root = self.local_root.as_ref()?;
        if bytes.len() < DIRECT_WRITE_MIN
            || !self.direct_writes.load(Ordering::Relaxed)
            || !plain_name(name)
        {
            return None;
        }
        let path = root.join(name);
        let data = bytes.clone();
        let pool = Arc::clone(&self.write_pool);
        let written = blocking(move || Ok(write_direct(&path, &data, &pool)))
            .await
            .unwrap_or_else(|e| Err(DirectError::Failed(e)));
        match written {
            Ok(outcome) => {
                if outcome == PutOutcome::Created {
                    self.direct_written.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(outcome))
            }
            Err(DirectError::Unsupported) => {
                self.direct_writes.store(false, Ordering::Relaxed);
                None
            }
            Err(DirectError::NotHere) => None,
            Err(DirectError::Existed) => Some(Ok(PutOutcome::Existed)),
            Err(DirectError::Failed(e)) => Some(Err(Error::Storage {
                op: "put",
                object: name.to_owned(),
                transient: false,
                message: e.to_string(),
            })),
        }
    }

    /// `Existed`, once the object found is durable: on a local directory another writer may
    /// have linked it and not yet synced its directory.
    async fn existed(&self, name: &str) -> Result<PutOutcome> {
        if let Some(root) = self.local_root.as_ref().filter(|_| plain_name(name)) {
            let path = root.join(name);
            blocking(move || sync_parent(&path))
                .await
                .map_err(|e| Error::Storage {
                    op: "put",
                    object: name.to_owned(),
                    transient: false,
                    message: format!("syncing the directory of an existing object: {e}"),
                })?;
        }
        Ok(PutOutcome::Existed)
    }

    /// A large ranged read of a local store, into a pooled buffer; `None` when this read is
    /// not one (other stores, short ranges, names that are not plain relative paths).
    async fn local_range(&self, name: &str, range: &Range<u64>) -> Option<Result<Bytes>> {
        let root = self.local_root.as_ref()?;
        if !plain_name(name) || range.end < range.start.saturating_add(POOLED_READ_MIN) {
            return None;
        }
        let path = root.join(name);
        let mut buf = self
            .read_pool
            .0
            .lock()
            .ok()
            .and_then(|mut kept| kept.pop())
            .unwrap_or_default();
        let (start, end) = (range.start, range.end);
        let read =
            blocking(move || read_range_into(&path, start, end, &mut buf).map(|()| buf)).await;
        Some(match read {
            Ok(buf) => Ok(Bytes::from_owner(PooledRead {
                buf,
                pool: Arc::downgrade(&self.read_pool),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound {
                object: name.to_owned(),
            }),
            Err(e) => Err(Error::Storage {
                op: "get",
                object: name.to_owned(),
                transient: false,
                message: e.to_string(),
            }),
        })
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    async fn put_checked(&self, path: &Path, name: &str, bytes: Bytes) -> Result<PutOutcome> {
        if self.size(name).await?.is_some() {
            return Ok(PutOutcome::Existed);
        }
        self.store
            .put(path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| map_err("put", name, e))?;
        Ok(PutOutcome::Created)
    }
}

/// Maps an `object_store` error into the engine's, deciding whether it is transient.
pub(crate) fn map_err(op: &'static str, name: &str, e: object_store::Error) -> Error {
    use object_store::Error as E;
    let transient = match &e {
        E::NotFound { .. } => {
            return Error::NotFound {
                object: name.to_owned(),
            };
        }
        E::AlreadyExists { .. } => {
            return Error::AlreadyExists {
                object: name.to_owned(),
                hint: String::new(),
            };
        }
        // Network failures, timeouts, 5xx and throttling surface as Generic after the store's
        // own retries; a later attempt may succeed.
        E::Generic { .. } | E::JoinError { .. } => true,
        _ => false,
    };
    Error::Storage {
        op,
        object: name.to_owned(),
        transient,
        message: e.to_string(),
    }
}

#[async_trait]
impl Storage for ObjectStorage {
    async fn put_new(&self, name: &str, bytes: Bytes) -> Result<PutOutcome> {
        if let Some(put) = self.local_put_direct(name, &bytes).await {
            return put;
        }
        let path = Path::from(name);
        if !self.conditional_put.load(Ordering::Relaxed) {
            return self.put_checked(&path, name, bytes).await;
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from_bytes(bytes.clone()), opts)
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => self.existed(name).await,
            Err(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ) => {
                self.conditional_put.store(false, Ordering::Relaxed);
                self.put_checked(&path, name, bytes).await
            }
            Err(e) => Err(map_err("put", name, e)),
        }
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        let r = self
            .store
            .get(&Path::from(name))
            .await
            .map_err(|e| map_err("get", name, e))?;
        r.bytes().await.map_err(|e| map_err("get", name, e))
    }

    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        if let Some(read) = self.local_range(name, &range).await {
            return read;
        }
        self.store
            .get_range(&Path::from(name), range)
            .await
            .map_err(|e| map_err("get", name, e))
    }

    async fn size(&self, name: &str) -> Result<Option<u64>> {
        match self.store.head(&Path::from(name)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err("head", name, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let p = Path::from(prefix);
        self.store
            .list(Some(&p))
            .map_ok(|m| ObjectInfo {
                name: m.location.to_string(),
                size: m.size,
                modified: Some(m.last_modified.timestamp()),
            })
            .try_collect()
            .await
            .map_err(|e| map_err("list", prefix, e))
    }

    async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&Path::from(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err("delete", name, e)),
        }
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn reads_inline(&self) -> bool {
        self.local_root.is_some()
    }

    async fn remove_interrupted_writes(&self, prefix: &str, min_age_secs: u64) -> Result<u64> {
        let Some(root) = self.local_root.as_ref().filter(|_| plain_name(prefix)) else {
            return Ok(0);
        };
        let dir = root.join(prefix);
        let age = std::time::Duration::from_secs(min_age_secs);
        blocking(move || super::staged::remove_stale(&dir, age))
            .await
            .map_err(|e| Error::Storage {
                op: "delete",
                object: format!("{prefix}/*#*"),
                transient: false,
                message: e.to_string(),
            })
    }
}

/// Whether `name` is a plain relative path (segments of `[A-Za-z0-9._-]`, no `.` or `..`), which
/// the local fast paths may join to the store's root; anything else goes through `object_store`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

/// Runs blocking file work on tokio's blocking pool, or right here outside a runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt
            .spawn_blocking(f)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("file task failed: {e}")))),
        Err(_) => f(),
    }
}

/// Why an `O_DIRECT` put did not happen.
enum DirectError {
    /// The file system refuses `O_DIRECT` (or its alignment): stop trying on this store.
    Unsupported,
    /// Not for this object (its directory does not exist yet): put it the usual way.
    NotHere,
    /// Another put created the name first (and its directory is synced): `Existed`.
    Existed,
    /// The write failed for real: report it.
    Failed(std::io::Error),
}

/// Whether an error is the kernel refusing `O_DIRECT` or its alignment.
fn refused(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::EINVAL)
}

/// Fsyncs the directory that holds `path`.
fn sync_parent(path: &std::path::Path) -> std::io::Result<()> {
    path.parent()
        .map_or(Ok(()), |dir| std::fs::File::open(dir)?.sync_all())
}

/// The `O_DIRECT` write-once put of `data` at `path` (see `ObjectStorage::local_put_direct`).
fn write_direct(
    path: &std::path::Path,
    data: &[u8],
    pool: &Mutex<Vec<Vec<u8>>>,
) -> std::result::Result<PutOutcome, DirectError> {
    use std::io::ErrorKind;
    // The staged file: `<name>#<n>`, the names `object_store` uses for its own staged uploads
    // (which its listings skip). Created exclusively, so any file there is this put's own.
    let mut n = 1u32;
    let (file, staged) = loop {
        let mut staged = path.as_os_str().to_owned();
        staged.push(format!("#{n}"));
        let staged = PathBuf::from(staged);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staged)
        {
            Ok(f) => break (f, staged),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(DirectError::NotHere),
            Err(e) => return Err(DirectError::Failed(e)),
        }
    };
    // `O_DIRECT` is switched on once the file exists: an open with it on a file system that
    // refuses it would create the file and then fail.
    let direct = nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_DIRECT),
    );
    if let Err(e) = direct {
        drop(file);
        let _ = std::fs::remove_file(&staged);
        let e = std::io::Error::from(e);
        return Err(if refused(&e) {
            DirectError::Unsupported
        } else {
            DirectError::Failed(e)
        });
    }
    let mut buf = pool
        .lock()
        .ok()
        .and_then(|mut kept| kept.pop())
        .unwrap_or_else(direct_io::staging);
    let written = write_aligned(&file, data, &mut buf);
    if let Ok(mut kept) = pool.lock() {
        if kept.len() < DIRECT_BUFFERS {
            kept.push(buf);
        }
    }
    let published = written.and_then(|()| {
        file.sync_all().map_err(DirectError::Failed)?;
        nix::unistd::close(file).map_err(|e| DirectError::Failed(e.into()))?;
        std::fs::hard_link(&staged, path).map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                // Another put won; its object is durable once its directory is (it may not
                // have synced it yet).
                match sync_parent(path) {
                    Ok(()) => DirectError::Existed,
                    Err(e) => DirectError::Failed(e),
                }
            } else {
                DirectError::Failed(e)
            }
        })
    });
    let outcome = match published {
        Ok(()) => {
            // The new name is durable once its directory is; the staged name may linger after a
            // crash (listings skip it).
            let synced = sync_parent(path);
            let _ = std::fs::remove_file(&staged);
            return synced
                .map(|()| PutOutcome::Created)
                .map_err(DirectError::Failed);
        }
        Err(DirectError::Existed) => Ok(PutOutcome::Existed),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&staged);
    outcome
}

/// Writes `data` from offset 0 of `file` (opened with `O_DIRECT`) and cuts the file back to
/// `data`'s length. EINVAL on the first write is the file system refusing `O_DIRECT`
/// (`Unsupported`); a short write (a full disk, say) or any later error is `Failed`.
fn write_aligned(
    file: &std::fs::File,
    data: &[u8],
    buf: &mut [u8],
) -> std::result::Result<(), DirectError> {
    match direct_io::write_at(file, 0, data, buf) {
        Ok(()) => {}
        Err(f) if f.offset == 0 && refused(&f.error) => return Err(DirectError::Unsupported),
        Err(f) => return Err(DirectError::Failed(f.error)),
    }
    if data.len() % direct_io::ALIGN != 0 {
        file.set_len(data.len() as u64)
            .map_err(DirectError::Failed)?;
    }
    Ok(())
}

/// Reads bytes `start..end` of the file at `path` into `buf` (replacing its content, without
/// zero-filling it first); a file that ends before `end` is an error.
fn read_range_into(
    path: &std::path::Path,
    start: u64,
    end: u64,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let want = end - start;
    buf.clear();
    buf.reserve(usize::try_from(want).map_err(std::io::Error::other)?);
    file.take(want).read_to_end(buf)?;
    if (buf.len() as u64) < want {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "range {start}..{end} runs past the end of the object ({} bytes there)",
                buf.len()
            ),
        ));
    }
    Ok(())
}

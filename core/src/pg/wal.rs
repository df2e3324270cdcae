//! PostgreSQL WAL archiving: the library behind `archive_command` and `restore_command`.
//!
//! Every WAL file (segment, `.partial`, `.backup`, `.history`) is one object:
//!
//! ```text
//! wal/<system identifier, 16 lower-case hex>/<file name as PostgreSQL names it>
//!   = envelope (kind Wal, id = keyed BLAKE3 of the file name), zstd at the repository's level
//! ```
//!
//! The contracts PostgreSQL expects, and how this module keeps them:
//!
//! * [`push`] returns only once the object is durable (after [`Storage::put_new`] returned), and
//!   never overwrites: pushing a name that is already stored succeeds when the stored content is
//!   byte-identical (PostgreSQL retries a push whose answer it did not get) and fails otherwise.
//!   Segments are checked before they are stored: right cluster (system identifier of
//!   `pg_control`), name matching the header, size matching the segment size.
//! * [`fetch`] answers [`FetchOutcome::NotFound`] only when the store said "not found"; any other
//!   failure, after retries, is an error, so that a command-line tool can make recovery stop
//!   instead of ending it early (see `cairn-wal`).
//!
//! Opening a repository with a password costs an Argon2id derivation; [`open_with_key_file`]
//! opens it with a key file ([`cairn_format::KeyFile`]) instead, for one process per WAL file.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_format::envelope::{self, Compression, ObjectKind};
use cairn_format::wal::{HistoryEntry, parse_history};
use cairn_format::{
    FormatError, KeyFile, MasterKey, RepoConfig, SegmentHeader, SegmentName, WalFileName,
};
use futures::stream::{self, StreamExt};
use rand_core::OsRng;

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::storage::{PutOutcome, Storage};

/// Folder of WAL objects.
pub const WAL_PREFIX: &str = "wal";
/// Name of the prefetch spool folder inside `pg_wal/`.
pub const SPOOL_DIR_NAME: &str = ".cairn-prefetch";
/// How long transient storage errors are retried by default before giving up.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(30);
/// How many look-ahead pushes or prefetch downloads run at once.
const CONCURRENCY: usize = 4;

/// What WAL archiving needs of a repository: its storage, master key and config.
///
/// Built from an open [`Repository`] (`WalRepo::from(&repo)`) or from a key file with
/// [`open_with_key_file`], which needs no password and no key derivation.
#[derive(Debug, Clone)]
pub struct WalRepo {
    storage: Arc<dyn Storage>,
    key: Arc<MasterKey>,
    config: RepoConfig,
}

impl WalRepo {
    /// A handle from parts; `config` must be the repository's config opened with `key`.
    pub fn new(storage: Arc<dyn Storage>, key: MasterKey, config: RepoConfig) -> Self {
        Self {
            storage,
            key: Arc::new(key),
            config,
        }
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The master key.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The repository config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The same repository through another storage handle (tests: fault injection).
    pub fn with_storage(&self, storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            key: self.key.clone(),
            config: self.config.clone(),
        }
    }
}

impl From<&Repository> for WalRepo {
    fn from(repo: &Repository) -> Self {
        Self {
            storage: repo.storage().clone(),
            key: Arc::new(repo.key().clone()),
            config: repo.config().clone(),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Names, pg_control, retries
// ------------------------------------------------------------------------------------------

/// zstd level for WAL objects (see [`push`]).
pub const WAL_ZSTD_LEVEL: i32 = 1;

/// The object name of a WAL file of cluster `sysid`.
pub fn object_name(sysid: u64, file_name: &str) -> String {
    format!("{WAL_PREFIX}/{sysid:016x}/{file_name}")
}

/// The envelope id (associated data) of a WAL file: the keyed hash of its file name.
pub fn object_id(key: &MasterKey, file_name: &str) -> [u8; 32] {
    key.id_key().hash(file_name.as_bytes())
}

/// Parses a system identifier given as 16 hex digits or in decimal (as `pg_controldata` prints
/// it).
pub fn parse_system_id(s: &str) -> Result<u64> {
    let s = s.trim();
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.len() == 16 {
        if let Ok(v) = u64::from_str_radix(hex, 16) {
            return Ok(v);
        }
    }
    s.parse::<u64>().map_err(|_| {
        Error::Invalid(format!(
            "{s:?} is not a system identifier (16 hex digits, or decimal as pg_controldata prints it)"
        ))
    })
}

/// Reads the system identifier of the cluster in `pgdata`: the first 8 bytes of
/// `global/pg_control` (little-endian).
pub fn system_id_from_pgdata(pgdata: &Path) -> Result<u64> {
    let path = pgdata.join("global").join("pg_control");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let first: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Invalid(format!("{}: too short for pg_control", path.display())))?;
    let sysid = u64::from_le_bytes(first);
    if sysid == 0 {
        return Err(Error::Invalid(format!(
            "{}: system identifier 0 (not a pg_control file?)",
            path.display()
        )));
    }
    Ok(sysid)
}

fn format_err(object: &str, e: FormatError) -> Error {
    Error::format(object.to_owned(), e)
}

/// Runs `op`, retrying transient storage errors with exponential backoff (100 ms doubling to
/// 5 s) until `budget` has passed; each attempt is also cut off at the end of the budget, so
/// the whole call returns within about `budget`. Non-transient errors and
/// [`Error::NotFound`] return at once.
pub async fn with_retry<T, F, Fut>(budget: Duration, op_name: &'static str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let budget = budget.max(Duration::from_millis(100));
    let deadline = Instant::now() + budget;
    let mut delay = Duration::from_millis(100);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = match tokio::time::timeout(remaining, op()).await {
            Ok(r) => r,
            Err(_) => Err(Error::Storage {
                op: op_name,
                object: String::new(),
                transient: true,
                message: format!("no answer within the retry budget of {budget:?}"),
            }),
        };
        match result {
            Err(e) if e.is_transient() && Instant::now() + delay < deadline => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

// ------------------------------------------------------------------------------------------
// push
// ------------------------------------------------------------------------------------------

/// Options of [`push`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PushOptions {
    /// The cluster's data directory, for `global/pg_control`. Default: the current directory
    /// (`archive_command` runs in the data directory).
    pub pgdata: Option<PathBuf>,
    /// The system identifier, instead of reading `pg_control`.
    pub system_id: Option<u64>,
    /// How long transient storage errors are retried.
    pub retry_budget: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            pgdata: None,
            system_id: None,
            retry_budget: DEFAULT_RETRY_BUDGET,
        }
    }
}

impl PushOptions {
    fn system_id(&self) -> Result<u64> {
        if let Some(id) = self.system_id {
            return Ok(id);
        }
        let pgdata = match &self.pgdata {
            Some(p) => p.clone(),
            None => std::env::current_dir().map_err(|e| Error::io(".", e))?,
        };
        system_id_from_pgdata(&pgdata)
    }
}

/// What [`push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file was stored by this call.
    Stored,
    /// The same name was already stored with byte-identical content; nothing was written.
    AlreadyStoredIdentical,
}

/// The file name of `path` as a WAL file name.
fn wal_file_name(path: &Path) -> Result<(String, WalFileName)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("{}: no file name", path.display())))?;
    let parsed = WalFileName::parse(name)
        .map_err(|e| Error::Invalid(format!("{}: {e}; refusing to archive it", path.display())))?;
    Ok((name.to_owned(), parsed))
}

/// Checks a WAL file's content before it is archived.
fn check_content(
    path: &Path,
    name: &str,
    file: &WalFileName,
    bytes: &[u8],
    sysid: u64,
) -> Result<()> {
    let refuse =
        |why: String| Error::Invalid(format!("{}: {why}; refusing to archive it", path.display()));
    match file {
        WalFileName::Segment(_) | WalFileName::Partial(_) => {
            let h = SegmentHeader::parse(bytes).map_err(|e| refuse(e.to_string()))?;
            if h.sysid != sysid {
                return Err(refuse(format!(
                    "it belongs to the cluster with system identifier {:016x}, not to this one ({sysid:016x}, from pg_control)",
                    h.sysid
                )));
            }
            let parsed =
                WalFileName::parse_for(name, h.seg_size).map_err(|e| refuse(e.to_string()))?;
            if let Some(seg) = parsed.segment() {
                h.check_name(&seg).map_err(|e| refuse(e.to_string()))?;
            }
            if bytes.len() as u64 != u64::from(h.seg_size) {
                return Err(refuse(format!(
                    "{} bytes, but its header says segments are {} bytes",
                    bytes.len(),
                    h.seg_size
                )));
            }
        }
        WalFileName::History { timeline } => {
            let entries = parse_history(bytes).map_err(|e| refuse(e.to_string()))?;
            if entries.iter().any(|e| e.parent >= *timeline) {
                return Err(refuse(format!(
                    "it names a parent timeline not older than {timeline}"
                )));
            }
        }
        WalFileName::Backup { .. } => {
            if bytes.is_empty() || std::str::from_utf8(bytes).is_err() {
                return Err(refuse("a backup history file is non-empty text".into()));
            }
        }
    }
    Ok(())
}

/// Archives one WAL file (`archive_command`); see the module documentation for the contract.
///
/// Errors: [`Error::Invalid`] for a file that must not be archived (not a WAL file name, another
/// cluster's segment, a header that does not match the name), [`Error::AlreadyExists`] when the
/// name is stored with different content (never overwritten), [`Error::Storage`] when the store
/// failed (after retries), [`Error::Io`] when the file cannot be read.
pub async fn push(repo: &WalRepo, path: &Path, opts: &PushOptions) -> Result<PushOutcome> {
    let (name, file) = wal_file_name(path)?;
    let sysid = opts.system_id()?;
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| Error::io(path, e))?;
    check_content(path, &name, &file, &bytes, sysid)?;
    let object = object_name(sysid, &name);
    let id = object_id(&repo.key, &name);
    let bytes = Bytes::from(bytes);
    let sealed = {
        let key = repo.key.clone();
        let plain = bytes.clone();
        // WAL is pushed one segment per process while PostgreSQL waits: zstd's fastest
        // regular level keeps most of the ratio (WAL compresses well) at about twice the speed
        // of level 3, which dominated push time (measured: ~38 of ~60 ms a segment).
        let compression = match repo.config.compression {
            Compression::Off => Compression::Off,
            Compression::Zstd(_) => Compression::Zstd(WAL_ZSTD_LEVEL),
        };
        tokio::task::spawn_blocking(move || {
            envelope::seal(&key, ObjectKind::Wal, &id, &plain, compression, &mut OsRng)
        })
        .await
        .map_err(|e| Error::Invalid(format!("sealing task failed: {e}")))?
        .map_err(|e| Error::Invalid(format!("{object}: {e}")))?
    };
    let sealed = Bytes::from(sealed);
    let outcome = with_retry(opts.retry_budget, "put", || {
        repo.storage.put_new(&object, sealed.clone())
    })
    .await?;
    if outcome == PutOutcome::Created {
        return Ok(PushOutcome::Stored);
    }
    let stored = with_retry(opts.retry_budget, "get", || repo.storage.get(&object)).await?;
    let plain = envelope::open(&repo.key, ObjectKind::Wal, &id, &stored, "WAL file")
        .map_err(|e| format_err(&object, e))?;
    if plain == bytes {
        Ok(PushOutcome::AlreadyStoredIdentical)
    } else {
        Err(Error::AlreadyExists {
            object,
            hint: format!(
                " with different content; refusing to overwrite a different {name} (two clusters archiving to one place, or a changed file?)"
            ),
        })
    }
}

/// Pushes up to `limit` other WAL files that PostgreSQL has marked ready
/// (`<pg_wal>/archive_status/<name>.ready`), oldest first, `except` excluded (the file the
/// current `archive_command` call is about), a few at a time.
///
/// Does not touch `archive_status/`: PostgreSQL renames `.ready` to `.done` itself when its own
/// call for that file succeeds, which it then does at once ([`PushOutcome::AlreadyStoredIdentical`]).
/// Failures are returned per file and are harmless: PostgreSQL will push those files itself.
pub async fn push_ready(
    repo: &WalRepo,
    pg_wal: &Path,
    limit: usize,
    except: Option<&str>,
    opts: &PushOptions,
) -> Vec<(String, Result<PushOutcome>)> {
    let status = pg_wal.join("archive_status");
    let Ok(entries) = std::fs::read_dir(&status) else {
        return Vec::new();
    };
    let mut ready: Vec<(bool, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".ready"))
                .map(str::to_owned)
        })
        .filter(|n| Some(n.as_str()) != except)
        .filter_map(|n| {
            // History files first, as PostgreSQL's archiver orders them; then by name.
            WalFileName::parse(&n)
                .ok()
                .map(|f| (!matches!(f, WalFileName::History { .. }), n))
        })
        .collect();
    ready.sort();
    ready.truncate(limit);
    stream::iter(ready)
        .map(|(_, name)| async move {
            let r = push(repo, &pg_wal.join(&name), opts).await;
            (name, r)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

// ------------------------------------------------------------------------------------------
// fetch
// ------------------------------------------------------------------------------------------

/// Options of [`fetch`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FetchOptions {
    /// After fetching a segment, also download this many following segments of the same
    /// timeline into `spool_dir` (in this call).
    pub prefetch: usize,
    /// The prefetch spool, where earlier prefetches left sealed segments
    /// (`<pgdata>/pg_wal/.cairn-prefetch`); `None` disables it.
    pub spool_dir: Option<PathBuf>,
    /// How long transient storage errors are retried.
    pub retry_budget: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            prefetch: 0,
            spool_dir: None,
            retry_budget: DEFAULT_RETRY_BUDGET,
        }
    }
}

/// The spool folder of a data directory.
pub fn default_spool_dir(pgdata: &Path) -> PathBuf {
    pgdata.join("pg_wal").join(SPOOL_DIR_NAME)
}

/// What [`fetch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The file was written to the destination.
    Found,
    /// The store answered that the file does not exist.
    NotFound,
}

/// Opens a stored WAL envelope and checks a segment's header against the cluster and name.
fn open_wal(
    key: &MasterKey,
    sysid: u64,
    name: &str,
    file: &WalFileName,
    sealed: &[u8],
) -> Result<(Vec<u8>, Option<u32>)> {
    let object = object_name(sysid, name);
    let plain = envelope::open(
        key,
        ObjectKind::Wal,
        &object_id(key, name),
        sealed,
        "WAL file",
    )
    .map_err(|e| format_err(&object, e))?;
    if !file.has_segment_header() {
        return Ok((plain, None));
    }
    let h = SegmentHeader::parse(&plain).map_err(|e| format_err(&object, e))?;
    let corrupt = |why: String| {
        format_err(
            &object,
            FormatError::Malformed {
                what: "WAL segment",
                reason: why,
            },
        )
    };
    if h.sysid != sysid {
        return Err(corrupt(format!(
            "belongs to cluster {:016x}, stored under {sysid:016x}",
            h.sysid
        )));
    }
    if let Some(seg) = file.segment() {
        seg.segno(h.seg_size).map_err(|e| format_err(&object, e))?;
        h.check_name(&seg).map_err(|e| format_err(&object, e))?;
    }
    if plain.len() as u64 != u64::from(h.seg_size) {
        return Err(corrupt(format!(
            "{} bytes, not {}",
            plain.len(),
            h.seg_size
        )));
    }
    Ok((plain, Some(h.seg_size)))
}

/// Writes `bytes` to `dest` through a temporary file in the same folder and a rename, so that
/// `dest` never exists half-written.
fn write_atomically(dest: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let file_name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("{}: no file name", dest.display())))?;
    let tmp = dest.with_file_name(format!(".{file_name}.cairn-tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dest)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(dest, e)
    })
}

/// Restores one WAL file (`restore_command`) to `dest`.
///
/// Takes a file prefetched into `opts.spool_dir` first (it is authenticated like a download and
/// deleted once used), then asks the store, retrying transient errors for `opts.retry_budget`.
/// Returns [`FetchOutcome::NotFound`] only when the store answered "not found".
pub async fn fetch(
    repo: &WalRepo,
    sysid: u64,
    name: &str,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<FetchOutcome> {
    let file = WalFileName::parse(name).map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
    let mut found = None;
    if let Some(spool) = &opts.spool_dir {
        let spooled = spool.join(name);
        if let Ok(sealed) = tokio::fs::read(&spooled).await {
            // A spooled copy that does not open is dropped and fetched again.
            found = open_wal(&repo.key, sysid, name, &file, &sealed).ok();
            let _ = tokio::fs::remove_file(&spooled).await;
            clean_spool(spool, &file);
        }
    }
    let (plain, seg_size) = match found {
        Some(f) => f,
        None => {
            let object = object_name(sysid, name);
            let sealed =
                match with_retry(opts.retry_budget, "get", || repo.storage.get(&object)).await {
                    Ok(b) => b,
                    Err(Error::NotFound { .. }) => return Ok(FetchOutcome::NotFound),
                    Err(e) => return Err(e),
                };
            open_wal(&repo.key, sysid, name, &file, &sealed)?
        }
    };
    write_atomically(dest, &plain, false)?;
    if let (Some(spool), Some(seg_size), WalFileName::Segment(seg), n @ 1..) =
        (&opts.spool_dir, seg_size, file, opts.prefetch)
    {
        // Best effort: a failed prefetch only means a later fetch goes to the store.
        let _ = prefetch(repo, sysid, seg, seg_size, n, spool, opts.retry_budget).await;
    }
    Ok(FetchOutcome::Found)
}

/// Removes spooled segments of `file`'s timeline older than it (recovery has moved past them),
/// and temporary files of interrupted downloads.
fn clean_spool(spool: &Path, file: &WalFileName) {
    let Some(current) = file.segment() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let n = e.file_name();
        let Some(n) = n.to_str() else { continue };
        let stale = match WalFileName::parse(n) {
            Ok(WalFileName::Segment(s)) => s.timeline == current.timeline && s < current,
            _ => n.starts_with('.') && n.contains(".cairn-tmp"),
        };
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// What [`prefetch`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefetchReport {
    /// Segments downloaded into the spool.
    pub downloaded: Vec<String>,
    /// Segments that were already spooled.
    pub already_spooled: usize,
    /// The first segment the store did not have, if any.
    pub not_found: Option<String>,
}

/// Downloads the `count` segments after `after` (same timeline) into `spool`, sealed as stored,
/// skipping those already there, stopping at the first the store does not have.
pub async fn prefetch(
    repo: &WalRepo,
    sysid: u64,
    after: SegmentName,
    seg_size: u32,
    count: usize,
    spool: &Path,
    retry_budget: Duration,
) -> Result<PrefetchReport> {
    std::fs::create_dir_all(spool).map_err(|e| Error::io(spool, e))?;
    let mut names = Vec::with_capacity(count);
    let mut cur = after;
    for _ in 0..count {
        match cur
            .next(seg_size)
            .map_err(|e| Error::Invalid(e.to_string()))?
        {
            Some(n) => {
                names.push(n.to_string());
                cur = n;
            }
            None => break,
        }
    }
    let mut report = PrefetchReport::default();
    let results: Vec<(String, Result<Option<Bytes>>)> = stream::iter(names)
        .map(|name| async move {
            if spool.join(&name).exists() {
                return (name, Ok(None));
            }
            let object = object_name(sysid, &name);
            let r = with_retry(retry_budget, "get", || repo.storage.get(&object)).await;
            (name, r.map(Some))
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    for (name, r) in results {
        match r {
            Ok(None) => report.already_spooled += 1,
            Ok(Some(sealed)) => {
                write_atomically(&spool.join(&name), &sealed, false)?;
                report.downloaded.push(name);
            }
            Err(Error::NotFound { .. }) => {
                report.not_found = Some(name);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

// ------------------------------------------------------------------------------------------
// list and verify
// ------------------------------------------------------------------------------------------

/// One stored WAL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalInfo {
    /// Its file name.
    pub name: String,
    /// The parsed name.
    pub file: WalFileName,
    /// Its stored (compressed, encrypted) size in bytes.
    pub stored_size: u64,
}

/// Every WAL file stored for cluster `sysid`, by name (timeline, then position). Objects whose
/// names are not WAL file names are ignored.
pub async fn list(repo: &WalRepo, sysid: u64) -> Result<Vec<WalInfo>> {
    let prefix = format!("{WAL_PREFIX}/{sysid:016x}");
    let listed = repo.storage.list(&prefix).await?;
    let mut out: Vec<WalInfo> = listed
        .into_iter()
        .filter_map(|o| {
            let name = o.name.strip_prefix(&prefix)?.strip_prefix('/')?.to_owned();
            let file = WalFileName::parse(&name).ok()?;
            Some(WalInfo {
                name,
                file,
                stored_size: o.size,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The system identifiers that have WAL in the repository.
pub async fn list_systems(repo: &WalRepo) -> Result<Vec<u64>> {
    let listed = repo.storage.list(WAL_PREFIX).await?;
    let ids: BTreeSet<u64> = listed
        .iter()
        .filter_map(|o| o.name.split('/').nth(1))
        .filter(|s| s.len() == 16)
        .filter_map(|s| u64::from_str_radix(s, 16).ok())
        .collect();
    Ok(ids.into_iter().collect())
}

/// A run of missing segments on one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The first missing segment.
    pub first: SegmentName,
    /// The last missing segment.
    pub last: SegmentName,
    /// How many segments are missing.
    pub count: u64,
}

/// Continuity of one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineReport {
    /// The timeline.
    pub timeline: u32,
    /// Its parent and the LSN where it branched off, from its history file.
    pub branched_from: Option<(u32, u64)>,
    /// True when it is the newest timeline or one of its ancestors.
    pub on_newest_path: bool,
    /// Oldest and newest stored segment.
    pub first: Option<SegmentName>,
    /// Newest stored segment.
    pub last: Option<SegmentName>,
    /// How many complete segments are stored.
    pub segments: u64,
    /// `.partial` files stored.
    pub partials: Vec<SegmentName>,
    /// Missing segments, as ranges.
    pub gaps: Vec<Gap>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The segment size (read from a stored segment's header).
    pub seg_size: Option<u32>,
    /// One entry per timeline, oldest first.
    pub timelines: Vec<TimelineReport>,
    /// Other problems: missing or unreadable history files, unreadable segments.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when no segment is missing and nothing else is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.timelines.iter().all(|t| t.gaps.is_empty())
    }

    /// Every gap with its timeline.
    pub fn gaps(&self) -> impl Iterator<Item = &Gap> {
        self.timelines.iter().flat_map(|t| t.gaps.iter())
    }
}

fn gaps_in(timeline: u32, stored: &BTreeSet<u64>, lo: u64, hi: u64, seg_size: u32) -> Vec<Gap> {
    let gap = |a: u64, b: u64| {
        Some(Gap {
            first: SegmentName::from_segno(timeline, a, seg_size).ok()?,
            last: SegmentName::from_segno(timeline, b, seg_size).ok()?,
            count: b - a + 1,
        })
    };
    // Walk the stored segments rather than every number in [lo, hi]: ranges may be huge.
    let mut out = Vec::new();
    let mut expect = lo;
    for &s in stored.range(lo..=hi) {
        if s > expect {
            out.extend(gap(expect, s - 1));
        }
        expect = s + 1;
    }
    if expect <= hi {
        out.extend(gap(expect, hi));
    }
    out
}

/// Checks the continuity of the stored WAL of cluster `sysid`, from its oldest segment (or
/// `from`) to its newest.
///
/// Per timeline, every segment between the oldest and newest stored must be there. History
/// files say where each timeline branched from its parent: along the path to the newest
/// timeline, a parent must reach the segment before the switch point, and a child must start at
/// the segment holding it (the server copies that segment's beginning from the parent).
pub async fn verify(repo: &WalRepo, sysid: u64, from: Option<SegmentName>) -> Result<VerifyReport> {
    let files = list(repo, sysid).await?;
    let mut report = VerifyReport::default();
    let newest_seg = files
        .iter()
        .rev()
        .find(|f| f.file.has_segment_header())
        .cloned();
    let Some(sample) = newest_seg else {
        return Ok(report);
    };
    let object = object_name(sysid, &sample.name);
    let sealed = repo.storage.get(&object).await?;
    let (_, seg_size) = open_wal(&repo.key, sysid, &sample.name, &sample.file, &sealed)?;
    let Some(seg_size) = seg_size else {
        return Ok(report);
    };
    report.seg_size = Some(seg_size);
    let from_segno = match from {
        Some(f) => f
            .segno(seg_size)
            .map_err(|e| Error::Invalid(e.to_string()))?,
        None => 0,
    };

    let mut segments: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut partials: BTreeMap<u32, Vec<SegmentName>> = BTreeMap::new();
    let mut histories: BTreeMap<u32, Vec<HistoryEntry>> = BTreeMap::new();
    for f in &files {
        match f.file {
            WalFileName::Segment(s) => match s.segno(seg_size) {
                Ok(n) => {
                    segments.entry(s.timeline).or_default().insert(n);
                }
                Err(e) => report.problems.push(format!("{}: {e}", f.name)),
            },
            WalFileName::Partial(s) => partials.entry(s.timeline).or_default().push(s),
            WalFileName::History { timeline } => {
                let object = object_name(sysid, &f.name);
                let parsed = async {
                    let sealed = repo.storage.get(&object).await?;
                    let (plain, _) = open_wal(&repo.key, sysid, &f.name, &f.file, &sealed)?;
                    parse_history(&plain).map_err(|e| format_err(&object, e))
                }
                .await;
                match parsed {
                    Ok(h) => {
                        histories.insert(timeline, h);
                    }
                    Err(e) => report.problems.push(format!("{}: {e}", f.name)),
                }
            }
            WalFileName::Backup { .. } => {}
        }
    }

    let mut timelines: BTreeSet<u32> = segments.keys().copied().collect();
    timelines.extend(partials.keys().copied());
    timelines.extend(histories.keys().copied());
    let newest = timelines.last().copied().unwrap_or(1);
    for &t in &timelines {
        if t > 1 && !histories.contains_key(&t) {
            report.problems.push(format!(
                "{t:08X}.history is missing: cannot tell where timeline {t} branched off"
            ));
        }
    }
    // The path to the newest timeline: (timeline, switch point to its child).
    let mut path: BTreeMap<u32, Option<u64>> = BTreeMap::new();
    path.insert(newest, None);
    if let Some(h) = histories.get(&newest) {
        for e in h {
            path.insert(e.parent, Some(e.switchpoint));
            timelines.insert(e.parent);
        }
    }
    let branched_from = |t: u32| -> Option<(u32, u64)> {
        histories
            .get(&t)
            .and_then(|h| h.last())
            .map(|e| (e.parent, e.switchpoint))
    };
    let seg_of = |lsn: u64| lsn / u64::from(seg_size);

    for &t in &timelines {
        let empty = BTreeSet::new();
        let stored = segments.get(&t).unwrap_or(&empty);
        let on_path = path.contains_key(&t);
        let first = stored.iter().next().copied();
        let last = stored.iter().next_back().copied();
        let mut lo = first;
        let mut hi = last;
        if on_path {
            if let Some((_, x)) = branched_from(t) {
                // The child starts at the segment holding the switch point, once it has any.
                if hi.is_some() {
                    lo = Some(seg_of(x));
                }
            }
            if let Some(Some(x)) = path.get(&t) {
                // The parent must reach the segment before the switch point.
                let end = seg_of(*x).checked_sub(1);
                hi = match (hi, end) {
                    (Some(h), Some(e)) => Some(h.max(e)),
                    (None, e) => e,
                    (h, None) => h,
                };
                if lo.is_none() {
                    // Nothing stored on this timeline at all: it is needed from where the
                    // oldest stored WAL starts (or its own branch point).
                    lo = Some(match branched_from(t) {
                        Some((_, bx)) => seg_of(bx),
                        None => segments
                            .values()
                            .filter_map(|s| s.first())
                            .min()
                            .copied()
                            .unwrap_or(0),
                    });
                }
            }
        }
        let gaps = match (lo, hi) {
            (Some(lo), Some(hi)) if lo.max(from_segno) <= hi => {
                gaps_in(t, stored, lo.max(from_segno), hi, seg_size)
            }
            _ => Vec::new(),
        };
        let name = |n: u64| SegmentName::from_segno(t, n, seg_size).ok();
        report.timelines.push(TimelineReport {
            timeline: t,
            branched_from: branched_from(t),
            on_newest_path: on_path,
            first: first.and_then(name),
            last: last.and_then(name),
            segments: stored.len() as u64,
            partials: partials.get(&t).cloned().unwrap_or_default(),
            gaps,
        });
    }
    Ok(report)
}

// ------------------------------------------------------------------------------------------
// key files
// ------------------------------------------------------------------------------------------

/// Reads a key file; see [`crate::repo::read_key_file`].
pub fn read_key_file(path: &Path) -> Result<KeyFile> {
    crate::repo::read_key_file(path)
}

/// Opens a repository with a key file instead of a password (no key derivation); see
/// [`Repository::open_with_key_file`].
pub async fn open_with_key_file(storage: Arc<dyn Storage>, path: &Path) -> Result<WalRepo> {
    Ok(WalRepo::from(
        &Repository::open_with_key_file(storage, path).await?,
    ))
}

/// Writes a key file for `repo` at `path`; see [`Repository::export_key_file`].
pub fn export_key_file(repo: &WalRepo, path: &Path) -> Result<()> {
    Repository::from_key(
        repo.storage.clone(),
        (*repo.key).clone(),
        repo.config.clone(),
    )
    .export_key_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InitOptions;
    use crate::format::KdfParams;
    use crate::storage::{FaultyStorage, open_storage};

    pub(super) const SEG: u32 = 1 << 20;

    /// A synthetic segment of `seg_size` bytes with a valid long header.
    pub(super) fn segment(sysid: u64, tli: u32, segno: u64, fill: u8) -> Vec<u8> {
        let mut b = vec![fill; SEG as usize];
        let mut h = Vec::new();
        h.extend_from_slice(&0xD110u16.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&tli.to_le_bytes());
        h.extend_from_slice(&(segno * u64::from(SEG)).to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&sysid.to_le_bytes());
        h.extend_from_slice(&SEG.to_le_bytes());
        h.extend_from_slice(&8192u32.to_le_bytes());
        b[..40].copy_from_slice(&h);
        b
    }

    async fn repo(name: &str) -> WalRepo {
        let storage = open_storage(&format!("memory://pg-wal-{name}")).unwrap();
        let o = InitOptions {
            kdf: KdfParams::INSECURE_FOR_TESTS,
            ..Default::default()
        };
        let r = Repository::init(storage, b"pw", o).await.unwrap();
        WalRepo::from(&r)
    }

    fn write_seg(dir: &Path, tli: u32, segno: u64, fill: u8) -> PathBuf {
        let name = SegmentName::from_segno(tli, segno, SEG)
            .unwrap()
            .to_string();
        let p = dir.join(name);
        std::fs::write(&p, segment(7, tli, segno, fill)).unwrap();
        p
    }

    fn opts() -> PushOptions {
        PushOptions {
            system_id: Some(7),
            retry_budget: Duration::from_millis(500),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn push_fetch_duplicates_and_refusals() {
        let r = repo("push").await;
        let dir = tempfile::tempdir().unwrap();
        let p = write_seg(dir.path(), 1, 3, 0xAB);
        assert_eq!(push(&r, &p, &opts()).await.unwrap(), PushOutcome::Stored);
        assert_eq!(
            push(&r, &p, &opts()).await.unwrap(),
            PushOutcome::AlreadyStoredIdentical
        );
        // Different content under the same name: refused, stored object unchanged.
        std::fs::write(&p, segment(7, 1, 3, 0xCD)).unwrap();
        let e = push(&r, &p, &opts()).await.unwrap_err();
        assert!(
            e.to_string().contains("refusing to overwrite a different"),
            "{e}"
        );
        let dest = dir.path().join("out");
        let got = fetch(
            &r,
            7,
            &p.file_name().unwrap().to_string_lossy(),
            &dest,
            &FetchOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(got, FetchOutcome::Found);
        assert_eq!(std::fs::read(&dest).unwrap(), segment(7, 1, 3, 0xAB));
        // Another cluster's segment, a header that does not match the name, a short file.
        let other = dir.path().join("000000010000000000000004");
        std::fs::write(&other, segment(8, 1, 4, 0)).unwrap();
        assert!(matches!(
            push(&r, &other, &opts()).await,
            Err(Error::Invalid(_))
        ));
        std::fs::write(&other, segment(7, 1, 5, 0)).unwrap();
        assert!(matches!(
            push(&r, &other, &opts()).await,
            Err(Error::Invalid(_))
        ));
        std::fs::write(&other, &segment(7, 1, 4, 0)[..4096]).unwrap();
        assert!(matches!(
            push(&r, &other, &opts()).await,
            Err(Error::Invalid(_))
        ));
        let junk = dir.path().join("RECOVERYXLOG");
        std::fs::write(&junk, b"x").unwrap();
        assert!(matches!(
            push(&r, &junk, &opts()).await,
            Err(Error::Invalid(_))
        ));
        // Missing file: not found, not an error.
        assert_eq!(
            fetch(
                &r,
                7,
                "000000010000000000000009",
                &dest,
                &FetchOptions::default()
            )
            .await
            .unwrap(),
            FetchOutcome::NotFound
        );
        // Same name under another cluster: not found.
        assert_eq!(
            fetch(
                &r,
                8,
                "000000010000000000000003",
                &dest,
                &FetchOptions::default()
            )
            .await
            .unwrap(),
            FetchOutcome::NotFound
        );
    }

    #[tokio::test]
    async fn storage_failures_are_errors_not_not_found() {
        let r = repo("faulty").await;
        let dir = tempfile::tempdir().unwrap();
        let p = write_seg(dir.path(), 1, 1, 1);
        push(&r, &p, &opts()).await.unwrap();
        let fr = r.with_storage(Arc::new(FaultyStorage::new(r.storage().clone(), 1.0, 1)));
        let t = Instant::now();
        let fo = FetchOptions {
            retry_budget: Duration::from_millis(400),
            ..Default::default()
        };
        let e = fetch(
            &fr,
            7,
            "000000010000000000000001",
            &dir.path().join("x"),
            &fo,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Storage { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        // A quarter of the calls fail (some after the write landed): retries still push and fetch.
        let flaky = r.with_storage(Arc::new(FaultyStorage::new(r.storage().clone(), 0.25, 7)));
        let o = PushOptions {
            retry_budget: Duration::from_secs(20),
            ..opts()
        };
        for n in 2..8 {
            let p = write_seg(dir.path(), 1, n, n as u8);
            push(&flaky, &p, &o).await.unwrap();
            push(&flaky, &p, &o).await.unwrap();
        }
        let fo = FetchOptions {
            retry_budget: Duration::from_secs(20),
            ..Default::default()
        };
        for n in 2..8 {
            let name = SegmentName::from_segno(1, n, SEG).unwrap().to_string();
            let dest = dir.path().join("restored");
            assert_eq!(
                fetch(&flaky, 7, &name, &dest, &fo).await.unwrap(),
                FetchOutcome::Found
            );
            assert_eq!(std::fs::read(&dest).unwrap(), segment(7, 1, n, n as u8));
        }
    }

    #[tokio::test]
    async fn prefetch_spool_and_ready_look_ahead() {
        let r = repo("spool").await;
        let pgwal = tempfile::tempdir().unwrap();
        std::fs::create_dir(pgwal.path().join("archive_status")).unwrap();
        for n in 1..=6 {
            let p = write_seg(pgwal.path(), 1, n, n as u8);
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::write(
                pgwal
                    .path()
                    .join("archive_status")
                    .join(format!("{name}.ready")),
                b"",
            )
            .unwrap();
        }
        let done = push_ready(
            &r,
            pgwal.path(),
            4,
            Some("000000010000000000000001"),
            &opts(),
        )
        .await;
        assert_eq!(done.len(), 4);
        assert!(
            done.iter()
                .all(|(_, r)| matches!(r, Ok(PushOutcome::Stored)))
        );
        // .ready files are PostgreSQL's to rename.
        assert_eq!(
            std::fs::read_dir(pgwal.path().join("archive_status"))
                .unwrap()
                .count(),
            6
        );
        let first = pgwal.path().join("000000010000000000000001");
        push(&r, &first, &opts()).await.unwrap();
        assert_eq!(
            push(&r, &pgwal.path().join("000000010000000000000002"), &opts())
                .await
                .unwrap(),
            PushOutcome::AlreadyStoredIdentical
        );

        let spool = pgwal.path().join(SPOOL_DIR_NAME);
        let out = tempfile::tempdir().unwrap();
        let fo = FetchOptions {
            prefetch: 3,
            spool_dir: Some(spool.clone()),
            ..Default::default()
        };
        let dest = out.path().join("RECOVERYXLOG");
        fetch(&r, 7, "000000010000000000000001", &dest, &fo)
            .await
            .unwrap();
        let mut spooled: Vec<String> = std::fs::read_dir(&spool)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        spooled.sort();
        assert_eq!(
            spooled,
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004"
            ]
        );
        // A damaged spooled file is dropped and fetched from the store instead.
        std::fs::write(spool.join("000000010000000000000002"), b"garbage").unwrap();
        let fo0 = FetchOptions {
            prefetch: 0,
            ..fo.clone()
        };
        fetch(&r, 7, "000000010000000000000002", &dest, &fo0)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), segment(7, 1, 2, 2));
        fetch(&r, 7, "000000010000000000000003", &dest, &fo0)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), segment(7, 1, 3, 3));
        assert!(!spool.join("000000010000000000000003").exists());
        // Prefetch stops at the first missing segment (6 was never pushed, 5 was).
        let rep = prefetch(
            &r,
            7,
            SegmentName::from_segno(1, 4, SEG).unwrap(),
            SEG,
            5,
            &spool,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(rep.downloaded, ["000000010000000000000005"]);
        assert_eq!(rep.not_found.as_deref(), Some("000000010000000000000006"));
    }

    #[tokio::test]
    async fn verify_reports_gaps_and_timeline_branches() {
        let r = repo("verify").await;
        let dir = tempfile::tempdir().unwrap();
        for n in [1, 2, 3, 5, 6, 9] {
            push(&r, &write_seg(dir.path(), 1, n, 0), &opts())
                .await
                .unwrap();
        }
        let rep = verify(&r, 7, None).await.unwrap();
        assert_eq!(rep.seg_size, Some(SEG));
        let gaps: Vec<_> = rep.gaps().map(|g| (g.first.to_string(), g.count)).collect();
        assert_eq!(
            gaps,
            [
                ("000000010000000000000004".into(), 1),
                ("000000010000000000000007".to_string(), 2)
            ]
        );
        // From segment 7 on, only 7-8 are missing.
        let rep = verify(&r, 7, Some(SegmentName::from_segno(1, 7, SEG).unwrap()))
            .await
            .unwrap();
        assert_eq!(rep.gaps().count(), 1);
        // Timeline 2 branched in segment 11: timeline 1 must reach 10, timeline 2 start at 11.
        let hist = dir.path().join("00000002.history");
        std::fs::write(&hist, "1\t0/B00100\tno recovery target specified\n").unwrap();
        push(&r, &hist, &opts()).await.unwrap();
        // Its first segment keeps timeline 1 in its header (copied from the parent).
        let p = dir.path().join("00000002000000000000000C");
        std::fs::write(&p, segment(7, 1, 12, 0)).unwrap();
        push(&r, &p, &opts()).await.unwrap();
        let rep = verify(&r, 7, Some(SegmentName::from_segno(1, 9, SEG).unwrap()))
            .await
            .unwrap();
        let gaps: Vec<_> = rep
            .gaps()
            .map(|g| format!("{}-{}", g.first, g.last))
            .collect();
        assert_eq!(
            gaps,
            [
                "00000001000000000000000A-00000001000000000000000A",
                "00000002000000000000000B-00000002000000000000000B"
            ]
        );
        assert!(rep.problems.is_empty(), "{:?}", rep.problems);
        assert_eq!(rep.timelines[1].branched_from, Some((1, 0xB0_0100)));
        let listed = list(&r, 7).await.unwrap();
        assert_eq!(listed.len(), 8);
        assert_eq!(list_systems(&r).await.unwrap(), [7]);
    }

    #[tokio::test]
    async fn key_files() {
        let r = repo("keyfile").await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        export_key_file(&r, &path).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&path).unwrap()) & 0o777,
            0o600
        );
        assert!(matches!(
            export_key_file(&r, &path),
            Err(Error::AlreadyExists { .. })
        ));
        let opened = open_with_key_file(r.storage().clone(), &path)
            .await
            .unwrap();
        assert_eq!(opened.config(), r.config());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            open_with_key_file(r.storage().clone(), &path).await,
            Err(Error::Invalid(_))
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        open_with_key_file(r.storage().clone(), &path)
            .await
            .unwrap();
        // Another repository's key file.
        let other = repo("keyfile-other").await;
        let p2 = dir.path().join("key2");
        export_key_file(&other, &p2).unwrap();
        let e = open_with_key_file(r.storage().clone(), &p2)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("does not open"), "{e}");
        assert_eq!(parse_system_id("00000000000000ff").unwrap(), 255);
        assert_eq!(
            parse_system_id("7331234567890123456").unwrap(),
            7_331_234_567_890_123_456
        );
    }
}

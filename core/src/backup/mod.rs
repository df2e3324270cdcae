//! Backup: file trees and streams into snapshots.
//!
//! ```text
//! walk (rayon, parallel by directory and file)
//!   -> read windows (max chunk + 2 MiB) -> keyed FastCDC -> keyed BLAKE3 -> dedup against the index
//!   -> zstd + XChaCha20-Poly1305 (parallel per chunk) -> packer (random open pack)
//!   -> upload (tokio, bounded queue) -> index files -> trees -> snapshot
//! ```
//!
//! Unchanged files (same size, mtime, ctime and inode as in the parent snapshot) are not read.
//! The snapshot is written last, after every pack and index file it needs has landed, so a
//! backup that fails or is killed leaves no snapshot pointing at missing data. Nothing is ever
//! overwritten or deleted.
//!
//! Peak memory is bounded by design, whatever the size of the data:
//! `threads * (window + max chunk) + (open data packs + uploads) * data pack target + tree pack target`
//! (the packer's budget, see [`crate::packer`]; each pack may overshoot its target by a blob)
//! plus the index (48 bytes a blob, loaded once: the parent's trees are located in the backup's
//! own index); buffers of uploaded packs are reused, never more than that, and each worker
//! thread seals into one envelope buffer it keeps (the `max chunk` term).
//! With the defaults (2 threads, 10 MiB windows, 16 MiB data packs, 4 MiB tree packs, 8 MiB max
//! chunks) that is 104 MiB plus a blob per pack plus the index; measured on the 1 GiB `mixed`
//! benchmark set: 116-122 MiB peak RSS for the whole program, with the programs' allocator
//! setting of [`crate::memory::return_freed_memory`]. Base backups
//! add the bases of one window's changed blocks per thread (16 MiB each at most).

mod archiver;
mod exclude;
mod file;
mod meta;
mod session;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cairn_format::{BlobId, Chunker, Snapshot, SnapshotId, SnapshotKind, Summary, Tree};

pub use exclude::Excludes;

use crate::error::{Error, Result};
use crate::packer::{Packer, PackerStats};
use crate::progress::Progress;
use crate::repo::{Repository, now};
use archiver::{Counters, Ctx, Virtual};
pub use archiver::{Policy, PolicyFn};
pub use session::{BackupSession, SessionOutcome};

/// What to back up.
pub enum BackupSource {
    /// Files and directories (made absolute).
    Paths(Vec<PathBuf>),
    /// A stream read from a reader, stored as one file named `name`.
    Reader {
        /// File name in the snapshot.
        name: String,
        /// The data.
        reader: Box<dyn Read + Send>,
    },
    /// A command's standard output, stored as one file named `name`. The backup fails (and no
    /// snapshot is written) when the command exits non-zero.
    Command {
        /// File name in the snapshot.
        name: String,
        /// Program and arguments.
        argv: Vec<String>,
    },
}

impl std::fmt::Debug for BackupSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Paths(p) => f.debug_tuple("Paths").field(p).finish(),
            Self::Reader { name, .. } => f
                .debug_struct("Reader")
                .field("name", name)
                .finish_non_exhaustive(),
            Self::Command { name, argv } => f
                .debug_struct("Command")
                .field("name", name)
                .field("argv", argv)
                .finish(),
        }
    }
}

/// Which snapshot a backup compares against to skip unchanged files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParentChoice {
    /// The latest snapshot of the same host and paths.
    #[default]
    Auto,
    /// None: read every file.
    None,
    /// This one.
    Id(SnapshotId),
}

/// Options of a backup.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackupOptions {
    /// Host name recorded in the snapshot. Default: this machine's.
    pub host: Option<String>,
    /// Tags. Default: none.
    pub tags: Vec<String>,
    /// Parent snapshot. Default: [`ParentChoice::Auto`].
    pub parent: ParentChoice,
    /// Glob patterns to leave out (see [`Excludes::new`]). Default: none.
    pub exclude: Vec<String>,
    /// Files of patterns to leave out. Default: none.
    pub exclude_files: Vec<PathBuf>,
    /// Leave out the contents of directories holding one of these file names. Default: none.
    pub exclude_if_present: Vec<String>,
    /// Leave out files larger than this. Default: none.
    pub exclude_larger_than: Option<u64>,
    /// Stay on the file system of each path given. Default: false.
    pub one_file_system: bool,
    /// Worker threads. Default: the number of CPUs.
    pub threads: Option<usize>,
    /// Record access times. Default: false, and the access time is recorded as the modification
    /// time: reading files for a backup changes their access times, which would otherwise make
    /// every directory's tree differ from the last snapshot's.
    pub atime: bool,
    /// Read every file even when its metadata says it did not change since the parent snapshot
    /// (base backups: the parent then only serves to deduplicate and patch blocks). Default:
    /// false.
    pub always_read: bool,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            host: None,
            tags: Vec::new(),
            parent: ParentChoice::Auto,
            exclude: Vec::new(),
            exclude_files: Vec::new(),
            exclude_if_present: Vec::new(),
            exclude_larger_than: None,
            one_file_system: false,
            threads: None,
            atime: false,
            always_read: false,
        }
    }
}

/// What a backup did.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The new snapshot.
    pub snapshot: Snapshot,
    /// What the packer wrote.
    pub packer: PackerStats,
    /// Files and directories that could not be read (left out of the snapshot).
    pub warnings: Vec<String>,
}

/// Removes `.` and resolves `..` lexically (without following symlinks, so a symlink given as a
/// path is backed up as the symlink).
fn normalize(p: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

pub(crate) fn username() -> String {
    std::env::var("USER").ok().unwrap_or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default()
    })
}

/// Backs up `source` into `repo` and writes a snapshot.
pub async fn backup(
    repo: &Repository,
    source: BackupSource,
    options: &BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time = now();
    let host = options.host.clone().unwrap_or_else(hostname);
    let paths: Vec<PathBuf> = match &source {
        BackupSource::Paths(p) => {
            if p.is_empty() {
                return Err(Error::Invalid("nothing to back up: no path given".into()));
            }
            p.iter()
                .map(|p| {
                    std::path::absolute(p)
                        .map(|a| normalize(&a))
                        .map_err(|e| Error::io(p, e))
                })
                .collect::<Result<_>>()?
        }
        BackupSource::Reader { name, .. } | BackupSource::Command { name, .. } => {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(Error::Invalid(format!(
                    "stream file name {name:?} must be a plain file name"
                )));
            }
            vec![PathBuf::from(name)]
        }
    };
    for p in &paths {
        if matches!(source, BackupSource::Paths(_)) && std::fs::symlink_metadata(p).is_err() {
            return Err(Error::NotFound {
                object: p.display().to_string(),
            });
        }
    }
    let path_bytes: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
        .collect();
    let parent = match options.parent {
        ParentChoice::None => None,
        ParentChoice::Id(id) => Some((id, repo.read_snapshot(&id).await?)),
        ParentChoice::Auto => {
            let mut sorted = path_bytes.clone();
            sorted.sort();
            // Snapshots that cannot be read are skipped: they cannot be a parent.
            repo.list_snapshots_checked()
                .await?
                .0
                .into_iter()
                .rev()
                .find(|(_, s)| {
                    let mut p = s.paths.clone();
                    p.sort();
                    s.kind == SnapshotKind::Files && s.hostname == host && p == sorted
                })
        }
    };
    let ctx = make_ctx(repo, options, progress.clone(), None).await?;
    let threads = options.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let parent_tree = parent.as_ref().map(|(_, s)| s.tree);
    progress.start("backup", None, None);
    let work = ctx.clone();
    let (tree, stats) = tokio::task::spawn_blocking(move || -> Result<(BlobId, PackerStats)> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("cairn-backup-{i}"))
            .build()
            .map_err(|e| Error::Invalid(format!("thread pool: {e}")))?;
        let walked = pool.install(|| match source {
            BackupSource::Paths(_) => {
                let mut v = Virtual::default();
                for p in &paths {
                    v.insert(p);
                }
                work.virtual_dir(&v, std::path::Path::new("/"), parent_tree)
            }
            BackupSource::Reader { name, mut reader } => stream_tree(&work, &name, &mut reader),
            BackupSource::Command { name, argv } => {
                let (prog, args) = argv
                    .split_first()
                    .ok_or_else(|| Error::Invalid("empty command".into()))?;
                let mut child = Command::new(prog)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .map_err(|e| Error::io(prog, e))?;
                let mut out = child
                    .stdout
                    .take()
                    .ok_or_else(|| Error::Invalid("no stdout".into()))?;
                let tree = stream_tree(&work, &name, &mut out);
                drop(out);
                let status = child.wait().map_err(|e| Error::io(prog, e))?;
                if !status.success() {
                    return Err(Error::Failed(format!(
                        "command {argv:?} failed ({status}); no snapshot was written"
                    )));
                }
                tree
            }
        });
        // Always drain the packer so uploads stop cleanly; the walk's error wins.
        let finished = work.packer.finish_blocking();
        let tree = walked?;
        Ok((tree, finished?))
    })
    .await
    .map_err(|e| Error::Invalid(format!("backup worker failed: {e}")))??;
    progress.finish("backup");

    let mut snapshot = Snapshot::new(SnapshotKind::Files, time, tree);
    snapshot.hostname = host;
    snapshot.username = username();
    snapshot.paths = path_bytes;
    snapshot.tags = options.tags.clone();
    snapshot.parent = parent.map(|(id, _)| id);
    snapshot.summary = summary(&ctx, &stats, started);
    let deps = crate::prune::Dependencies::of(&ctx.packer)?;
    let id = crate::prune::save_snapshot_guarded(repo, &snapshot, &deps).await?;
    let warnings = ctx.warnings.lock().map(|w| w.clone()).unwrap_or_default();
    Ok(BackupOutcome {
        id,
        snapshot,
        packer: stats,
        warnings,
    })
}

/// Builds the shared worker context.
pub(crate) async fn make_ctx(
    repo: &Repository,
    options: &BackupOptions,
    progress: Arc<dyn Progress>,
    policy: Option<PolicyFn>,
) -> Result<Arc<Ctx>> {
    let index = Arc::new(std::sync::RwLock::new(repo.load_index_for_backup().await?));
    let config = repo.config().clone();
    Ok(Arc::new(Ctx {
        repo: repo.clone(),
        packer: Packer::new(repo, index),
        chunker: Chunker::new(repo.key().chunker_seed(), config.chunker)
            .map_err(|e| Error::Invalid(e.to_string()))?,
        compression: config.compression,
        excludes: Excludes::new(
            &options.exclude,
            &options.exclude_files,
            &options.exclude_if_present,
            options.exclude_larger_than,
        )?,
        one_file_system: options.one_file_system,
        progress,
        counters: Counters::default(),
        names: Default::default(),
        atime: options.atime,
        always_read: options.always_read,
        policy,
        handle: tokio::runtime::Handle::current(),
        hardlinks: Mutex::new(Default::default()),
        warnings: Mutex::new(Vec::new()),
    }))
}

/// The snapshot summary from the workers' counters.
pub(crate) fn summary(ctx: &Ctx, stats: &PackerStats, started: Instant) -> Summary {
    let c = &ctx.counters;
    Summary {
        files_new: c.files_new.load(Ordering::Relaxed),
        files_changed: c.files_changed.load(Ordering::Relaxed),
        files_unchanged: c.files_unchanged.load(Ordering::Relaxed),
        dirs_new: c.dirs_new.load(Ordering::Relaxed),
        dirs_changed: c.dirs_changed.load(Ordering::Relaxed),
        dirs_unchanged: c.dirs_unchanged.load(Ordering::Relaxed),
        bytes_read: c.bytes_read.load(Ordering::Relaxed),
        total_bytes: c.total_bytes.load(Ordering::Relaxed),
        blobs_added: stats.blobs,
        bytes_added_plain: stats.plain_bytes,
        bytes_added_stored: stats.stored_bytes,
        duration_nanos: u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
    }
}

/// A root tree holding one file made from a stream.
fn stream_tree(ctx: &Ctx, name: &str, reader: &mut dyn Read) -> Result<BlobId> {
    let node = ctx.stream_file(name, reader, 0o600)?;
    ctx.counters.files_new.fetch_add(1, Ordering::Relaxed);
    ctx.counters
        .total_bytes
        .fetch_add(node.size, Ordering::Relaxed);
    ctx.store_tree(Tree { nodes: vec![node] })
}

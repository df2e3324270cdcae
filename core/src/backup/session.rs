//! A backup session: the pipeline without the snapshot, for callers that assemble their own
//! trees (PostgreSQL base backups: PGDATA plus `backup_label` and `tablespace_map`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cairn_format::{BlobId, Node, Summary, Tree};

use super::archiver::{Ctx, PolicyFn};
use super::{BackupOptions, make_ctx, summary};
use crate::error::{Error, Result};
use crate::packer::PackerStats;
use crate::progress::Progress;
use crate::repo::Repository;

/// A running backup pipeline. Stores directories, byte strings and trees; [`BackupSession::finish`]
/// waits until everything stored has landed (packs and index files), after which the caller may
/// write a snapshot that references it.
pub struct BackupSession {
    ctx: Arc<Ctx>,
    pool: Arc<rayon::ThreadPool>,
    started: Instant,
}

impl std::fmt::Debug for BackupSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSession").finish_non_exhaustive()
    }
}

/// What a finished session wrote.
#[derive(Debug, Clone)]
pub struct SessionOutcome {
    /// Counters for the snapshot summary.
    pub summary: Summary,
    /// What the packer wrote.
    pub packer: PackerStats,
    /// Entries that could not be read.
    pub warnings: Vec<String>,
    /// What a snapshot of this session's output depends on: write it with
    /// [`crate::prune::save_snapshot_guarded`].
    pub dependencies: crate::prune::Dependencies,
}

impl BackupSession {
    /// Starts a session. `policy` decides, per entry, whether to skip it, keep a directory
    /// empty, or cut a file into fixed blocks.
    pub async fn new(
        repo: &Repository,
        options: &BackupOptions,
        progress: Arc<dyn Progress>,
        policy: Option<PolicyFn>,
    ) -> Result<Self> {
        let ctx = make_ctx(repo, options, progress, policy).await?;
        let threads = options.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("cairn-session-{i}"))
            .build()
            .map_err(|e| Error::Invalid(format!("thread pool: {e}")))?;
        Ok(Self {
            ctx,
            pool: Arc::new(pool),
            started: Instant::now(),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Ctx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let ctx = self.ctx.clone();
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || pool.install(|| f(&ctx)))
            .await
            .map_err(|e| Error::Invalid(format!("backup worker failed: {e}")))?
    }

    /// Backs up the contents of a directory (every file read: no parent); returns its tree.
    pub async fn dir(&self, path: &Path) -> Result<BlobId> {
        self.dir_with_parent(path, None).await
    }

    /// [`BackupSession::dir`] against the same directory's tree in a parent snapshot.
    pub async fn dir_with_parent(&self, path: &Path, parent: Option<BlobId>) -> Result<BlobId> {
        let path: PathBuf = path.to_path_buf();
        self.run(move |ctx| {
            let root_dev = if ctx.one_file_system {
                std::fs::symlink_metadata(&path)
                    .ok()
                    .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
            } else {
                None
            };
            ctx.dir(&path, parent, root_dev)
        })
        .await
    }

    /// Backs up one entry (a file, or a directory with everything below it, following the
    /// policy); `None` when it is skipped or unreadable.
    pub async fn entry(&self, path: &Path) -> Result<Option<Node>> {
        self.entry_with_parent(path, None).await
    }

    /// [`BackupSession::entry`] against the entry's node in a parent snapshot.
    pub async fn entry_with_parent(
        &self,
        path: &Path,
        parent: Option<Node>,
    ) -> Result<Option<Node>> {
        let path: PathBuf = path.to_path_buf();
        self.run(move |ctx| {
            use std::os::unix::ffi::OsStrExt;
            let name = path
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .ok_or_else(|| Error::Invalid(format!("{} has no file name", path.display())))?;
            ctx.entry(&path, &name, parent.as_ref(), None)
        })
        .await
    }

    /// Stores `data` as the content of a regular file node named `name` (mode `mode`, owned by
    /// the current user, times now).
    pub async fn file(&self, name: &str, data: Vec<u8>, mode: u32) -> Result<Node> {
        let name = name.to_owned();
        self.run(move |ctx| ctx.stream_file(&name, &mut std::io::Cursor::new(data), mode))
            .await
    }

    /// Stores a tree (sorted first); returns its id.
    pub async fn tree(&self, tree: Tree) -> Result<BlobId> {
        self.run(move |ctx| ctx.store_tree(tree)).await
    }

    /// Seals the open packs, waits for every upload and index file.
    pub async fn finish(self) -> Result<SessionOutcome> {
        let ctx = self.ctx.clone();
        let stats = tokio::task::spawn_blocking(move || ctx.packer.finish_blocking())
            .await
            .map_err(|e| Error::Invalid(format!("backup worker failed: {e}")))??;
        Ok(SessionOutcome {
            summary: summary(&self.ctx, &stats, self.started),
            dependencies: crate::prune::Dependencies::of(&self.ctx.packer)?,
            packer: stats,
            warnings: self
                .ctx
                .warnings
                .lock()
                .map(|w| w.clone())
                .unwrap_or_default(),
        })
    }
}

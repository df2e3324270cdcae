//! Restore: snapshots back into directories, and single files to a writer.
//!
//! ```text
//! plan   walk the snapshot's trees (16 reads in flight): directories, files with their content
//!        blob ids, symlinks and special files, hard links grouped by (device, inode)
//! create directories (parents first), then each file empty under a temporary name beside its
//!        own (`.NAME.cairn-restore-` and 16 random hex digits), symlinks, fifos, device nodes
//!        (in parallel)
//! fetch  blobs located in the index, grouped by pack, neighbouring blobs merged into one
//!        ranged read (one that fails or comes back short is read again blob by blob); each
//!        envelope opened (authenticated, checked against its blob id) and its plaintext
//!        written at each of its places with pwrite (files of 8 MiB and more: whole blocks
//!        with O_DIRECT, see `direct`); all-zero chunks skipped (holes) when sparse
//! finish a file as soon as its last chunk is accounted: complete, it gets its size and
//!        metadata and is renamed to its name (replacing what was there, with `overwrite`);
//!        otherwise its temporary file is removed
//! link   further names of hard-linked files whose first name was restored
//!        then directories' metadata last, deepest first, so their times stick
//! ```
//!
//! Memory is bounded whatever the snapshot's size, apart from the plan (a node per entry):
//! at most `MEMORY_BUDGET` (32 MiB; 16 MiB from a local directory) of fetched, not yet written
//! pack bytes, plus one blob's plaintext (and its decrypted compressed form) and a 1 MiB
//! aligned staging buffer for `O_DIRECT` writes per worker thread. Those buffers are
//! reused from job to job, as a local store reuses its read buffers, so pages are touched once
//! rather than faulted in for every blob.
//!
//! Nothing outside the target is ever written: node names are single path components (the
//! format refuses others), symlinks found in the target are never followed (they are replaced,
//! with `overwrite`, or refused), and files are opened with `O_NOFOLLOW`.
//!
//! A file is at its name only when all of its content was read, authenticated and written:
//! a damaged or missing blob, a failed or short write (a full file system), anything that
//! stops a file from being complete leaves nothing at its name (with `overwrite`, what was
//! there stays as it was) and is recorded in [`RestoreOutcome::errors`] (naming the file, the
//! blob and the pack); the rest of the restore goes on. A restore that is killed leaves its
//! unfinished files under their temporary names. Metadata that cannot be applied (an xattr the
//! file system refuses, an owner when not root), skipped sockets and device nodes are
//! warnings, reported through [`Progress::warn`] only.

mod content;
mod direct;
mod dump;
mod fsops;
mod plan;

pub use dump::dump;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cairn_format::Snapshot;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use plan::Entry;

/// Options of [`restore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Absolute paths inside the snapshot to restore, each with everything below it. Default:
    /// empty, the whole snapshot.
    pub include: Vec<String>,
    /// Worker threads writing files. Default: the number of CPUs plus 2 (a restore waits on
    /// I/O: `O_DIRECT` writes return once the device has the data).
    pub threads: Option<usize>,
    /// Restore metadata: mode, owner (when running as root; otherwise silently not), access and
    /// modification times (of symlinks too), xattrs (failures are warnings). Default: true.
    pub metadata: bool,
    /// Leave all-zero chunks as holes instead of writing them. Default: true.
    pub sparse: bool,
    /// Write into an existing non-empty target directory, replacing entries of the same name.
    /// A file (or hard link) replaces what is there only once its content is complete, in
    /// one rename; a file that fails leaves it as it was. Default: false
    /// ([`Error::AlreadyExists`]).
    pub overwrite: bool,
    /// Write files of 8 MiB and more with `O_DIRECT` where the file system allows it: past the
    /// page cache, from reused buffers (buffered writes copy every byte into new cache pages,
    /// which cost more than the rest of a restore on machines that must fault memory back in).
    /// Turn off to leave restored files in the page cache. Default: true.
    pub direct_io: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            threads: None,
            metadata: true,
            sparse: true,
            overwrite: false,
            direct_io: true,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreOutcome {
    /// Regular files restored completely, content verified, at their names (a hard-linked file
    /// once).
    pub files: u64,
    /// Directories created or reused.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Fifos and device nodes created.
    pub special: u64,
    /// Additional names of hard-linked files.
    pub hardlinks: u64,
    /// Content bytes of the files restored (holes included; files that failed not counted).
    pub bytes: u64,
    /// Files whose content was written with `O_DIRECT` ([`RestoreOptions::direct_io`]).
    pub direct_files: u64,
    /// Regular files and hard-link names not restored: nothing was written at their names (with
    /// `overwrite`, what was there is left as it was). Those below a directory that could not
    /// be created count too, and are named by that directory's entry in `errors`.
    pub failed_files: u64,
    /// Entries not restored, one line each, naming the path and what failed.
    pub errors: Vec<String>,
}

#[derive(Debug, Default)]
struct Counts {
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    special: AtomicU64,
    hardlinks: AtomicU64,
    bytes: AtomicU64,
    direct_files: AtomicU64,
    failed_files: AtomicU64,
}

/// Progress of one regular file.
#[derive(Debug, Default)]
struct FileState {
    created: AtomicBool,
    /// The temporary name the content is written under (set when created).
    tmp: OnceLock<PathBuf>,
    /// Complete and at its name.
    restored: AtomicBool,
    /// Chunks not yet accounted (written or failed).
    remaining: AtomicUsize,
    failures: AtomicU64,
    first_failure: OnceLock<String>,
}

/// What the workers share.
struct Ctx {
    repo: Repository,
    files: Vec<Entry>,
    state: Vec<FileState>,
    metadata: bool,
    sparse: bool,
    overwrite: bool,
    is_root: bool,
    progress: Arc<dyn Progress>,
    counts: Counts,
    errors: Mutex<Vec<String>>,
    /// Buffers (scratch, plaintext) of finished jobs for the next ones: blobs opened into
    /// resident buffers cost no page faults (fresh ones cost half of a restore's faults).
    buffers: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Whether large files are written with `O_DIRECT` ([`RestoreOptions::direct_io`]).
    direct_io: bool,
    /// Per file: its `O_DIRECT` writer, once the first chunk decided.
    direct: Vec<Mutex<DirectSlot>>,
}

/// How a file's content is written.
enum DirectSlot {
    /// Not decided yet.
    Untried,
    /// With `O_DIRECT`, through this writer.
    Open(Arc<direct::DirectFile>),
    /// Buffered (small, patched, or the file system refuses `O_DIRECT`), or finished.
    Buffered,
}

impl Ctx {
    fn error(&self, path: &Path, msg: String) {
        self.progress.warn(path, &msg);
        if let Ok(mut e) = self.errors.lock() {
            e.push(format!("{}: {msg}", path.display()));
        }
    }

    /// Records that part of a file could not be restored.
    fn fail_file(&self, fi: usize, msg: String) {
        if let Some(s) = self.state.get(fi) {
            s.failures.fetch_add(1, Ordering::Relaxed);
            let _ = s.first_failure.set(msg);
        }
    }

    /// The temporary name file `fi`'s content is written under.
    fn tmp_path(&self, fi: usize) -> std::io::Result<&Path> {
        self.state
            .get(fi)
            .and_then(|s| s.tmp.get())
            .map(PathBuf::as_path)
            .ok_or_else(|| std::io::Error::other("file not created"))
    }

    /// A file's content is complete (or failed). Complete: its size, metadata and name are
    /// given to it. Failed: its temporary file is removed and the error recorded; nothing is
    /// written at its name. `open`: the file, when the caller has it open.
    fn finish_file(&self, fi: usize, open: Option<&File>) {
        let (Some(f), Some(s)) = (self.files.get(fi), self.state.get(fi)) else {
            return;
        };
        let Some(tmp) = s.tmp.get() else {
            return;
        };
        let direct = self
            .direct
            .get(fi)
            .and_then(|slot| slot.lock().ok())
            .map(|mut slot| std::mem::replace(&mut *slot, DirectSlot::Buffered));
        let failed = || s.failures.load(Ordering::Acquire) > 0;
        if !failed() {
            // Sparse files end in a hole, and the last direct block was padded.
            let sized = match direct {
                Some(DirectSlot::Open(df)) => df.finish(),
                _ => fsops::set_size(tmp, f.node.size, open),
            };
            if let Err(e) = sized {
                self.fail_file(fi, format!("setting its size: {e}"));
            }
        }
        if !failed() {
            if self.metadata {
                for w in fsops::apply_metadata(tmp, &f.node, self.is_root) {
                    self.progress.warn(&f.path, &w);
                }
            }
            match fsops::publish(tmp, &f.path, self.overwrite) {
                Ok(()) => {
                    s.restored.store(true, Ordering::Release);
                    self.counts.files.fetch_add(1, Ordering::Relaxed);
                    self.counts.bytes.fetch_add(f.node.size, Ordering::Relaxed);
                }
                Err(e) => self.fail_file(fi, format!("cannot put it in place: {e}")),
            }
        }
        if failed() {
            self.counts.failed_files.fetch_add(1, Ordering::Relaxed);
            let failures = s.failures.load(Ordering::Acquire);
            let first = s.first_failure.get().cloned().unwrap_or_default();
            let mut msg = if failures == 1 {
                format!("not restored: {first}")
            } else {
                format!("not restored ({failures} problems; first: {first})")
            };
            if let Err(e) = fsops::discard(tmp) {
                msg.push_str(&format!(
                    "; its partial content is left in {}: {e}",
                    tmp.display()
                ));
            }
            self.error(&f.path, msg);
        }
        self.progress.item(&f.path);
        self.progress.items_done(1);
    }

    /// Creates directories, the temporary files of regular files, and special files; returns
    /// which directories exist. Entries below a directory that could not be created are
    /// skipped (the directory's error names them).
    fn create(&self, dirs: &[(usize, Entry)], others: &[Entry]) -> Vec<bool> {
        let mut failed: HashSet<&Path> = HashSet::new();
        let mut dir_ok = Vec::with_capacity(dirs.len());
        for (_, d) in dirs {
            if parent_failed(&failed, &d.path) {
                failed.insert(&d.path);
                dir_ok.push(false);
                continue;
            }
            match fsops::create_dir(&d.path, self.overwrite, self.metadata) {
                Ok(()) => {
                    self.counts.dirs.fetch_add(1, Ordering::Relaxed);
                    dir_ok.push(true);
                }
                Err(e) => {
                    self.error(&d.path, format!("cannot create directory: {e}"));
                    failed.insert(&d.path);
                    dir_ok.push(false);
                }
            }
        }
        self.files.par_iter().enumerate().for_each(|(fi, f)| {
            if parent_failed(&failed, &f.path) {
                self.counts.failed_files.fetch_add(1, Ordering::Relaxed);
                self.progress.items_done(1);
                return;
            }
            match fsops::create_temp(&f.path, self.metadata) {
                Ok(tmp) => {
                    if let Some(s) = self.state.get(fi) {
                        let _ = s.tmp.set(tmp);
                        s.created.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    self.counts.failed_files.fetch_add(1, Ordering::Relaxed);
                    self.error(&f.path, format!("not restored: cannot create it: {e}"));
                    self.progress.items_done(1);
                }
            }
        });
        others.par_iter().for_each(|o| {
            if parent_failed(&failed, &o.path) {
                return;
            }
            match fsops::create_special(&o.path, &o.node, self.overwrite, self.is_root) {
                Ok(fsops::Special::Skipped(why)) => self.progress.warn(&o.path, why),
                Ok(made) => {
                    let counter = if made == fsops::Special::Symlink {
                        &self.counts.symlinks
                    } else {
                        &self.counts.special
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if self.metadata {
                        for w in fsops::apply_metadata(&o.path, &o.node, self.is_root) {
                            self.progress.warn(&o.path, &w);
                        }
                    }
                }
                Err(e) => self.error(&o.path, format!("cannot create {:?}: {e}", o.node.kind)),
            }
        });
        dir_ok
    }

    /// Creates the further names of hard-linked files whose first name was restored.
    fn link(&self, links: &[(Entry, usize)], dirs: &[(usize, Entry)], dir_ok: &[bool]) {
        let failed: HashSet<&Path> = dirs
            .iter()
            .zip(dir_ok)
            .filter(|(_, ok)| !**ok)
            .map(|((_, d), _)| d.path.as_path())
            .collect();
        for (l, first) in links {
            if parent_failed(&failed, &l.path) {
                self.counts.failed_files.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let restored = self
                .state
                .get(*first)
                .is_some_and(|s| s.restored.load(Ordering::Acquire));
            let target = self.files.get(*first).map(|f| f.path.as_path());
            let made = match target {
                Some(t) if restored => fsops::hard_link(t, &l.path, self.overwrite)
                    .map_err(|e| format!("cannot link to {}: {e}", t.display())),
                Some(t) => Err(format!(
                    "hard link to {}, which was not restored",
                    t.display()
                )),
                None => Err("hard link to an unknown file".into()),
            };
            match made {
                Ok(()) => {
                    self.counts.hardlinks.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counts.failed_files.fetch_add(1, Ordering::Relaxed);
                    self.error(&l.path, format!("not restored: {e}"));
                }
            }
        }
    }
}

/// True when the parent directory of `p` could not be created.
fn parent_failed(failed: &HashSet<&Path>, p: &Path) -> bool {
    p.parent().is_some_and(|parent| failed.contains(parent))
}

/// Restores `snapshot` (or its `include` paths) into `target`, recreating the snapshot's
/// absolute paths below it (a backup of `/a/b` restores to `target/a/b`).
///
/// Returns `Ok` with [`RestoreOutcome::errors`] when some entries could not be restored (a
/// damaged or missing blob, a file that cannot be created or written); such files are left
/// out, nothing at their names (see the module documentation). `Err` when nothing can be: the
/// snapshot's root tree (or the way to an include path) is unreadable, an include path is not
/// in the snapshot ([`Error::NotFound`]), or the target is not empty and `overwrite` is off
/// ([`Error::AlreadyExists`]).
pub async fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    target: &Path,
    options: &RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreOutcome> {
    let threads = options.threads.map_or_else(
        || {
            std::thread::available_parallelism()
                .map(|n| n.get() + 2)
                .unwrap_or(4)
        },
        |t| t.max(1),
    );
    let target: PathBuf = std::path::absolute(target).map_err(|e| Error::io(target, e))?;
    let overwrite = options.overwrite;
    {
        let target = target.clone();
        tokio::task::spawn_blocking(move || fsops::prepare_target(&target, overwrite))
            .await
            .map_err(|e| Error::Invalid(format!("restore worker failed: {e}")))??;
    }
    let index = repo.index().await?;
    let plan = if repo.reads_inline() {
        // A local directory: the trees are read in place on a thread of its own, outside the
        // runtime (a blocking-pool thread is inside it, where each read would still be handed
        // to another thread; bursts of those spawned hundreds of threads).
        let (r, root, t, include) = (
            repo.clone(),
            snapshot.tree,
            target.clone(),
            options.include.clone(),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("cairn-restore-plan".into())
            .spawn(move || {
                let _ = tx.send(futures::executor::block_on(plan::build(
                    &r, root, &t, &include,
                )));
            })
            .map_err(|e| Error::Invalid(format!("restore planner: {e}")))?;
        rx.await
            .map_err(|_| Error::Invalid("restore planner failed".into()))??
    } else {
        plan::build(repo, snapshot.tree, &target, &options.include).await?
    };
    progress.start(
        "restore",
        Some(plan.files.len() as u64),
        Some(plan.total_bytes()),
    );
    let plan::Plan {
        dirs,
        files,
        others,
        links,
        errors,
    } = plan;
    for e in &errors {
        progress.warn(&target, e);
    }
    let state = files.iter().map(|_| FileState::default()).collect();
    let n_files = files.len();
    let ctx = Arc::new(Ctx {
        repo: repo.clone(),
        files,
        state,
        metadata: options.metadata,
        sparse: options.sparse,
        overwrite,
        is_root: nix::unistd::geteuid().is_root(),
        progress: progress.clone(),
        counts: Counts::default(),
        errors: Mutex::new(errors),
        buffers: Mutex::new(Vec::new()),
        direct_io: options.direct_io,
        direct: (0..n_files)
            .map(|_| Mutex::new(DirectSlot::Untried))
            .collect(),
    });

    // Create every entry, then plan the reads (both blocking work).
    let work = ctx.clone();
    let (dirs, dir_ok, links, jobs) = tokio::task::spawn_blocking(move || -> Result<_> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("cairn-restore-{i}"))
            .build()
            .map_err(|e| Error::Invalid(format!("thread pool: {e}")))?;
        let dir_ok = pool.install(|| work.create(&dirs, &others));
        let jobs = {
            let index = index
                .read()
                .map_err(|_| Error::Invalid("index lock poisoned".into()))?;
            content::plan_jobs(&work, &index)
        };
        // Files without content to fetch (empty, or whose chunks are all unknown) are done.
        for (fi, s) in work.state.iter().enumerate() {
            if s.created.load(Ordering::Relaxed) && s.remaining.load(Ordering::Relaxed) == 0 {
                work.finish_file(fi, None);
            }
        }
        Ok((dirs, dir_ok, links, jobs))
    })
    .await
    .map_err(|e| Error::Invalid(format!("restore worker failed: {e}")))??;

    // Patches only once every base is in place.
    let (whole, patches) = jobs;
    content::run(repo, &ctx, whole, threads).await;
    content::run(repo, &ctx, patches, threads).await;

    // Hard links once their files are in place; directory metadata last, deepest first, so
    // that nothing written below changes it again.
    let work = ctx.clone();
    tokio::task::spawn_blocking(move || {
        work.link(&links, &dirs, &dir_ok);
        if work.metadata {
            for ((_, d), ok) in dirs.iter().zip(dir_ok).rev() {
                if ok {
                    for w in fsops::apply_metadata(&d.path, &d.node, work.is_root) {
                        work.progress.warn(&d.path, &w);
                    }
                }
            }
        }
    })
    .await
    .map_err(|e| Error::Invalid(format!("restore worker failed: {e}")))?;
    progress.finish("restore");

    let c = &ctx.counts;
    let errors = ctx.errors.lock().map(|e| e.clone()).unwrap_or_default();
    Ok(RestoreOutcome {
        files: c.files.load(Ordering::Relaxed),
        dirs: c.dirs.load(Ordering::Relaxed),
        symlinks: c.symlinks.load(Ordering::Relaxed),
        special: c.special.load(Ordering::Relaxed),
        hardlinks: c.hardlinks.load(Ordering::Relaxed),
        bytes: c.bytes.load(Ordering::Relaxed),
        direct_files: c.direct_files.load(Ordering::Relaxed),
        failed_files: c.failed_files.load(Ordering::Relaxed),
        errors,
    })
}

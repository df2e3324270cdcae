//! Restore drills: prove that a snapshot can be restored by restoring it, and measure how long
//! that takes (the recovery time objective, RTO, for that data) and how old the data is (the
//! recovery point objective, RPO).
//!
//! ```text
//! pick     the snapshot named, or one chosen at random (seeded from the OS) among the file
//!          snapshots that read; PostgreSQL base backups are refused (they are drilled by
//!          restoring them with cairn-basebackup)
//! scratch  `target` (must be empty or absent) or a fresh `cairn-drill-` + 16 hex digits
//!          directory (mode 0700) in the system's temporary directory ($TMPDIR, else /tmp)
//! restore  the whole snapshot with the ordinary restore, metadata included (timed)
//! verify   independently of the restore code path (timed): see `verify_restored`
//! remove   the scratch, unless `keep` (on failure too)
//! ```
//!
//! RTO = restore + verify seconds; RPO = drill start minus the snapshot's time (when its
//! backup started). The [`DrillReport`] is serde-serializable: a journal record or metrics can
//! be made from it as it is.

mod verify;

pub use verify::{Mismatch, Verification, verify_restored};

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cairn_format::{Snapshot, SnapshotId, SnapshotKind, Timestamp};
use rand::Rng;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::{RestoreOptions, restore};

/// Which snapshot a drill restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrillSnapshot {
    /// `latest`, a full id or a unique id prefix.
    Named(String),
    /// One chosen at random (seeded from the OS) among the readable file snapshots.
    Random,
}

/// Options of [`drill_files`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DrillOptions {
    /// Scratch directory to restore into: must be empty or absent (created then). Default:
    /// `None`, a fresh directory `cairn-drill-XXXXXXXXXXXXXXXX` in [`std::env::temp_dir`].
    pub target: Option<PathBuf>,
    /// Leave the scratch directory in place afterwards (on failure too). Default: false, it is
    /// removed (a `target` that was absent is removed itself; one that existed is emptied).
    pub keep: bool,
    /// Worker threads of the restore and of the verification. Default: `None`, as
    /// [`RestoreOptions::threads`] (the verification: the number of CPUs).
    pub threads: Option<usize>,
}

/// The outcome of a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Everything was restored and matches the snapshot.
    Ok,
    /// Something could not be restored or does not match (see the mismatches).
    Failed,
}

/// What a drill did and measured. Times are Unix seconds (UTC) with fractions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillReport {
    /// The snapshot drilled (full id, hex).
    pub snapshot: String,
    /// When the snapshot's backup started.
    pub snapshot_time: f64,
    /// The snapshot's host.
    pub hostname: String,
    /// The snapshot's backed-up paths.
    pub paths: Vec<String>,
    /// When the drill started (before the snapshot was looked up).
    pub started: f64,
    /// When the drill finished (the scratch removed).
    pub finished: f64,
    /// Recovery point: `started - snapshot_time`, the age of the data restored.
    pub rpo_secs: f64,
    /// Recovery time: `restore_secs + verify_secs`.
    pub rto_secs: f64,
    /// Wall time of the restore (reading the trees, fetching, decrypting, writing).
    pub restore_secs: f64,
    /// Wall time of the verification (walking the trees again, reading back, re-hashing).
    pub verify_secs: f64,
    /// Wall time of removing the scratch (not part of the RTO; 0 with `keep`).
    pub cleanup_secs: f64,
    /// The scratch directory.
    pub scratch: String,
    /// Whether the scratch directory was left in place.
    pub kept: bool,
    /// Regular files verified correct (each hard-linked inode once).
    pub files: u64,
    /// Content bytes read back and re-hashed.
    pub bytes: u64,
    /// Directories verified correct.
    pub dirs: u64,
    /// Symlinks verified correct.
    pub symlinks: u64,
    /// Further names of hard-linked files verified to be links.
    pub hardlinks: u64,
    /// Fifos and device nodes verified correct.
    pub special: u64,
    /// Entries a restore does not create (sockets; device nodes when not root), not checked.
    pub skipped: u64,
    /// What the restore reported it could not restore, one line each, paths as in the
    /// snapshot; or why the restore failed as a whole (nothing was verified then); and a
    /// scratch directory that could not be removed. Any of these fails the drill.
    pub restore_errors: Vec<String>,
    /// Every difference the verification found, by path (as in the snapshot).
    pub mismatches: Vec<Mismatch>,
    /// Ok when nothing failed and nothing differs.
    pub verdict: Verdict,
}

fn unix_secs(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn timestamp_secs(t: Timestamp) -> f64 {
    t.secs as f64 + f64::from(t.nanos) / 1e9
}

/// Finds the snapshot to drill; refuses anything but file snapshots.
async fn pick(repo: &Repository, which: &DrillSnapshot) -> Result<(SnapshotId, Snapshot)> {
    let (id, snapshot) = match which {
        DrillSnapshot::Named(spec) => repo.find_snapshot(spec).await?,
        DrillSnapshot::Random => {
            let (all, _damaged) = repo.list_snapshots_checked().await?;
            let mut files: Vec<(SnapshotId, Snapshot)> = all
                .into_iter()
                .filter(|(_, s)| s.kind == SnapshotKind::Files)
                .collect();
            if files.is_empty() {
                return Err(Error::NotFound {
                    object: "snapshots/ (the repository has no readable file snapshot)".into(),
                });
            }
            let i = rand::rngs::OsRng.gen_range(0..files.len());
            files.swap_remove(i)
        }
    };
    match snapshot.kind {
        SnapshotKind::Files => Ok((id, snapshot)),
        SnapshotKind::PgBaseBackup => Err(Error::Invalid(format!(
            "snapshot {} is a PostgreSQL base backup: a files drill checks file snapshots only \
             (drill a base backup by restoring it with cairn-basebackup and starting PostgreSQL \
             on it)",
            id.short()
        ))),
        other => Err(Error::Invalid(format!(
            "snapshot {} is of a kind this version does not know ({other:?})",
            id.short()
        ))),
    }
}

/// The scratch directory: where, and whether the drill created the directory itself.
struct Scratch {
    path: PathBuf,
    created: bool,
}

impl Scratch {
    fn prepare(target: Option<&Path>) -> Result<Self> {
        let Some(t) = target else {
            let base = std::env::temp_dir();
            loop {
                let name = format!("cairn-drill-{:016x}", rand::rngs::OsRng.r#gen::<u64>());
                let path = base.join(name);
                match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                    Ok(()) => {
                        return Ok(Self {
                            path,
                            created: true,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(Error::io(&path, e)),
                }
            }
        };
        let path = std::path::absolute(t).map_err(|e| Error::io(t, e))?;
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .map_err(|e| Error::io(&path, e))?;
                Ok(Self {
                    path,
                    created: true,
                })
            }
            Err(e) => Err(Error::io(&path, e)),
            Ok(md) if !md.is_dir() => Err(Error::AlreadyExists {
                object: path.display().to_string(),
                hint: "; the drill target exists and is not a directory".into(),
            }),
            Ok(_) => {
                let mut entries = std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))?;
                if entries.next().is_some() {
                    return Err(Error::AlreadyExists {
                        object: path.display().to_string(),
                        hint: "; the drill target is not empty (a drill restores into an empty \
                               or absent directory and removes what it restored)"
                            .into(),
                    });
                }
                Ok(Self {
                    path,
                    created: false,
                })
            }
        }
    }

    /// Removes what the drill put there (the directory too when the drill created it).
    fn remove(&self) -> io::Result<()> {
        if self.created {
            return remove_tree(&self.path);
        }
        for e in std::fs::read_dir(&self.path)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                remove_tree(&e.path())?;
            } else {
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }
}

/// Removes a restored directory tree. Restored directories carry the snapshot's modes: one
/// without write permission (`0555`) cannot be emptied by a user other than root, so when the
/// first attempt fails every directory is given `u+rwx` and it is tried again.
fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(first) => {
            open_up(path);
            std::fs::remove_dir_all(path).map_err(|_| first)
        }
    }
}

/// Gives every directory below `path` (symlinks not followed) owner read, write and search.
fn open_up(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !md.is_dir() {
        return;
    }
    let mode = md.permissions().mode() | 0o700;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            open_up(&e.path());
        }
    }
}

/// Restore and verification, timed.
struct Ran {
    restore_secs: f64,
    verify_secs: f64,
    restore_errors: Vec<String>,
    verification: Verification,
}

async fn run(
    repo: &Repository,
    snapshot: &Snapshot,
    scratch: &Path,
    options: &DrillOptions,
    progress: Arc<dyn Progress>,
) -> Ran {
    let ro = RestoreOptions {
        threads: options.threads,
        ..RestoreOptions::default()
    };
    let t = Instant::now();
    let restored = restore(repo, snapshot, scratch, &ro, progress.clone()).await;
    let restore_secs = t.elapsed().as_secs_f64();
    let prefix = scratch.display().to_string();
    let mut ran = Ran {
        restore_secs,
        verify_secs: 0.0,
        restore_errors: Vec::new(),
        verification: Verification::default(),
    };
    match restored {
        Ok(out) => {
            // The restore names entries by their place in the scratch: name them as in the
            // snapshot (the scratch is gone when the report is read).
            ran.restore_errors = out
                .errors
                .iter()
                .map(|e| e.strip_prefix(&prefix).map_or(e.clone(), str::to_owned))
                .collect();
        }
        Err(e) => {
            ran.restore_errors.push(format!("the restore failed: {e}"));
            return ran;
        }
    }
    let t = Instant::now();
    ran.verification =
        match verify_restored(repo, snapshot, scratch, options.threads, progress).await {
            Ok(v) => v,
            Err(e) => {
                ran.restore_errors
                    .push(format!("the verification could not run: {e}"));
                Verification::default()
            }
        };
    ran.verify_secs = t.elapsed().as_secs_f64();
    ran
}

/// Drills a file snapshot: restores it into a scratch directory, verifies every entry against
/// the snapshot (see [`verify_restored`]), measures RTO and RPO, and removes the scratch
/// unless [`DrillOptions::keep`] (see the module documentation).
///
/// `Ok` with [`Verdict::Failed`] when something could not be restored or differs (the report
/// names each path); `Err` only before anything was restored: the snapshot is not found or
/// not a file snapshot ([`Error::Invalid`]), or the target is not empty
/// ([`Error::AlreadyExists`]) or cannot be created.
pub async fn drill_files(
    repo: &Repository,
    which: &DrillSnapshot,
    options: &DrillOptions,
    progress: Arc<dyn Progress>,
) -> Result<DrillReport> {
    let started = SystemTime::now();
    let (id, snapshot) = pick(repo, which).await?;
    let scratch = Scratch::prepare(options.target.as_deref())?;
    let ran = run(repo, &snapshot, &scratch.path, options, progress.clone()).await;
    let t = Instant::now();
    let mut restore_errors = ran.restore_errors;
    if !options.keep {
        if let Err(e) = scratch.remove() {
            progress.warn(
                &scratch.path,
                &format!("cannot remove the drill's scratch: {e}"),
            );
            restore_errors.push(format!(
                "{}: the scratch directory could not be removed: {e}",
                scratch.path.display()
            ));
        }
    }
    let cleanup_secs = if options.keep {
        0.0
    } else {
        t.elapsed().as_secs_f64()
    };
    let v = ran.verification;
    let verdict = if restore_errors.is_empty() && v.mismatches.is_empty() {
        Verdict::Ok
    } else {
        Verdict::Failed
    };
    let snapshot_time = timestamp_secs(snapshot.time);
    let started_secs = unix_secs(started);
    Ok(DrillReport {
        snapshot: id.to_hex(),
        snapshot_time,
        hostname: snapshot.hostname.clone(),
        paths: snapshot
            .paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
        started: started_secs,
        finished: unix_secs(SystemTime::now()),
        rpo_secs: started_secs - snapshot_time,
        rto_secs: ran.restore_secs + ran.verify_secs,
        restore_secs: ran.restore_secs,
        verify_secs: ran.verify_secs,
        cleanup_secs,
        scratch: scratch.path.display().to_string(),
        kept: options.keep,
        files: v.files,
        bytes: v.bytes,
        dirs: v.dirs,
        symlinks: v.symlinks,
        hardlinks: v.hardlinks,
        special: v.special,
        skipped: v.skipped,
        restore_errors,
        mismatches: v.mismatches,
        verdict,
    })
}

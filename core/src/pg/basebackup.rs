//! PostgreSQL base backups: every one a full snapshot, deduplicated page by page.
//!
//! The backup runs PostgreSQL's non-exclusive low-level API on one session that stays open
//! throughout: `pg_backup_start(label, fast)` (`pg_start_backup` before 15), a copy of PGDATA
//! read directly from disk, then `pg_backup_stop(true)` (`pg_stop_backup(false, true)`), which
//! waits until the WAL the backup needs is archived and returns `backup_label` and
//! `tablespace_map`; those are stored byte for byte at the root of the snapshot.
//!
//! What PostgreSQL's own BASE_BACKUP leaves out is left out (see [`policy`]). Relation files
//! are cut into fixed blocks of [`BaseBackupOptions::block_size`] bytes rather than by content:
//! pages change in place and nothing shifts, so an unchanged block dedups against every earlier
//! backup and each backup is a full snapshot that can be deleted on its own. Every file is read
//! (no timestamp shortcuts: a page rewritten within the same clock tick must not be missed).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_format::{Node, NodeKind, Snapshot, SnapshotId, SnapshotKind, Tree};
use tokio_postgres::{Client, NoTls};

use crate::backup::{BackupOptions, BackupSession, Policy, PolicyFn, hostname};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::{Repository, now};

/// Top-level folder of a base backup snapshot holding tablespace contents, one subfolder per
/// tablespace oid (PGDATA's `pg_tblspc/<oid>` entries stay symlinks).
pub const TABLESPACES_DIR: &str = ".cairn-tablespaces";

/// Options of [`base_backup`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BaseBackupOptions {
    /// libpq-style connection string (`host=/run/postgresql port=5432 user=postgres`).
    pub conninfo: String,
    /// The data directory; default: the server's `data_directory` setting.
    pub pgdata: Option<PathBuf>,
    /// Backup label. Default: `cairn base backup`.
    pub label: String,
    /// Ask for an immediate checkpoint. Default: true.
    pub fast_checkpoint: bool,
    /// Block size for relation files, a multiple of 8 KiB. Default: 64 KiB (see benches/README.md).
    pub block_size: usize,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Host name recorded. Default: this machine's.
    pub host: Option<String>,
    /// Worker threads. Default: CPUs.
    pub threads: Option<usize>,
    /// Compare with the newest earlier base backup of the same cluster and store each changed
    /// block of a relation file as a patch against that backup's block when that is much
    /// smaller (SPEC §12.3). Every file is still read. Default: true.
    pub delta: bool,
}

impl Default for BaseBackupOptions {
    fn default() -> Self {
        Self {
            conninfo: String::new(),
            pgdata: None,
            label: "cairn base backup".into(),
            fast_checkpoint: true,
            block_size: 64 * 1024,
            tags: Vec::new(),
            host: None,
            threads: None,
            delta: true,
        }
    }
}

/// Facts about a base backup, stored in the snapshot's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupInfo {
    /// `pg_backup_start`'s LSN.
    pub start_lsn: String,
    /// `pg_backup_stop`'s LSN.
    pub stop_lsn: String,
    /// Timeline at the start.
    pub timeline: u32,
    /// The cluster's system identifier.
    pub system_identifier: u64,
    /// `server_version_num`.
    pub pg_version: u32,
    /// WAL segment size in bytes.
    pub wal_segment_size: u64,
    /// First WAL file the backup needs.
    pub start_wal: String,
    /// Last WAL file the backup needs.
    pub stop_wal: String,
    /// Unix seconds when the backup stopped.
    pub stop_time: i64,
    /// The data directory backed up.
    pub pgdata: String,
}

impl BaseBackupInfo {
    fn to_meta(&self) -> Vec<(String, Vec<u8>)> {
        let mut m = vec![
            ("pg.start_lsn", self.start_lsn.clone()),
            ("pg.stop_lsn", self.stop_lsn.clone()),
            ("pg.timeline", self.timeline.to_string()),
            ("pg.system_identifier", self.system_identifier.to_string()),
            ("pg.version", self.pg_version.to_string()),
            ("pg.wal_segment_size", self.wal_segment_size.to_string()),
            ("pg.start_wal", self.start_wal.clone()),
            ("pg.stop_wal", self.stop_wal.clone()),
            ("pg.stop_time", self.stop_time.to_string()),
            ("pg.pgdata", self.pgdata.clone()),
        ];
        m.sort();
        m.into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_bytes()))
            .collect()
    }

    /// Reads the facts back from a base backup snapshot.
    pub fn from_snapshot(s: &Snapshot) -> Result<Self> {
        if s.kind != SnapshotKind::PgBaseBackup {
            return Err(Error::Invalid(
                "not a PostgreSQL base backup snapshot".into(),
            ));
        }
        let get = |k: &str| -> Result<String> {
            s.meta(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .ok_or_else(|| Error::Invalid(format!("base backup snapshot lacks {k}")))
        };
        let num = |k: &str| -> Result<u64> {
            get(k)?
                .parse()
                .map_err(|_| Error::Invalid(format!("base backup snapshot: bad {k}")))
        };
        Ok(Self {
            start_lsn: get("pg.start_lsn")?,
            stop_lsn: get("pg.stop_lsn")?,
            timeline: u32::try_from(num("pg.timeline")?).unwrap_or(0),
            system_identifier: num("pg.system_identifier")?,
            pg_version: u32::try_from(num("pg.version")?).unwrap_or(0),
            wal_segment_size: num("pg.wal_segment_size")?,
            start_wal: get("pg.start_wal")?,
            stop_wal: get("pg.stop_wal")?,
            stop_time: i64::try_from(num("pg.stop_time")?).unwrap_or(0),
            pgdata: get("pg.pgdata")?,
        })
    }
}

/// What [`base_backup`] did.
#[derive(Debug, Clone)]
pub struct BaseBackupOutcome {
    /// The snapshot id.
    pub id: SnapshotId,
    /// The snapshot.
    pub snapshot: Snapshot,
    /// The backup's facts.
    pub info: BaseBackupInfo,
    /// Files that could not be read.
    pub warnings: Vec<String>,
}

fn pg_err(what: &str, e: tokio_postgres::Error) -> Error {
    Error::Invalid(format!("PostgreSQL {what}: {e}"))
}

async fn one_string(client: &Client, sql: &str) -> Result<String> {
    let row = client
        .query_one(sql, &[])
        .await
        .map_err(|e| pg_err(sql, e))?;
    row.try_get::<_, String>(0).map_err(|e| pg_err(sql, e))
}

/// Files PostgreSQL's BASE_BACKUP leaves out, wherever they are.
const EXCLUDED_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
];
/// Files left out at the top of PGDATA (the backup stores its own `backup_label` and
/// `tablespace_map`).
const EXCLUDED_TOP_FILES: &[&str] = &["backup_label", "tablespace_map", "backup_label.old"];
/// Directories kept empty.
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_replslot",
];

fn is_relation_file(name: &[u8]) -> bool {
    name.first().is_some_and(u8::is_ascii_digit)
        && name
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'a'..=b'z'))
}

fn is_temp_relation(name: &[u8]) -> bool {
    // t<backend>_<relfilenode>[_fork][.segment]
    let Some(rest) = name.strip_prefix(b"t") else {
        return false;
    };
    let mut parts = rest.splitn(2, |&b| b == b'_');
    let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
        return false;
    };
    !a.is_empty() && a.iter().all(u8::is_ascii_digit) && b.first().is_some_and(u8::is_ascii_digit)
}

/// The relfilenode part of a relation file name (`16384`, `16384_fsm`, `16384.1` -> `16384`).
fn relfilenode(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .position(|&b| b == b'_' || b == b'.')
        .unwrap_or(name.len());
    name.get(..end).unwrap_or(name)
}

/// The rule deciding what a base backup of `pgdata` (and tablespace roots) keeps.
pub fn policy(pgdata: PathBuf, tablespaces: Vec<PathBuf>, block_size: usize) -> PolicyFn {
    Arc::new(move |path: &Path, md: &std::fs::Metadata| {
        let Some(name) = path.file_name().map(|n| n.as_bytes()) else {
            return Policy::Keep;
        };
        if name.starts_with(b"pgsql_tmp") {
            return Policy::Skip;
        }
        let parent = path.parent().unwrap_or(path);
        let at_top = parent == pgdata;
        if md.is_dir() {
            if at_top && EMPTY_DIRS.iter().any(|d| d.as_bytes() == name) {
                return Policy::EmptyDir;
            }
            return Policy::Keep;
        }
        if EXCLUDED_FILES.iter().any(|f| f.as_bytes() == name)
            || name.starts_with(b"pg_internal.init")
        {
            return Policy::Skip;
        }
        if at_top && EXCLUDED_TOP_FILES.iter().any(|f| f.as_bytes() == name) {
            return Policy::Skip;
        }
        // Relation files live in global/, base/<db>/ and <tablespace>/<version dir>/<db>/.
        let in_relation_dir = parent == pgdata.join("global")
            || parent.parent() == Some(&pgdata.join("base"))
            || tablespaces.iter().any(|t| parent.starts_with(t));
        if in_relation_dir && md.is_file() {
            if is_temp_relation(name) {
                return Policy::Skip;
            }
            if is_relation_file(name) {
                // Unlogged relation: only its _init fork is kept.
                let base = relfilenode(name);
                if !name.ends_with(b"_init") {
                    let mut init = base.to_vec();
                    init.extend_from_slice(b"_init");
                    if parent.join(std::ffi::OsStr::from_bytes(&init)).exists() {
                        return Policy::Skip;
                    }
                }
                return Policy::FixedBlocks(block_size);
            }
        }
        Policy::Keep
    })
}

/// Takes a base backup of a running cluster and writes it as a snapshot.
pub async fn base_backup(
    repo: &Repository,
    options: &BaseBackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BaseBackupOutcome> {
    if options.block_size == 0
        || options.block_size % 8192 != 0
        || options.block_size > cairn_format::delta::MAX_BLOCK_LEN
    {
        return Err(Error::Invalid(format!(
            "block size {} is not a positive multiple of 8 KiB of at most 16 MiB",
            options.block_size
        )));
    }
    let time = now();
    let (client, connection) = tokio_postgres::connect(&options.conninfo, NoTls)
        .await
        .map_err(|e| pg_err("connect", e))?;
    let conn_task = tokio::spawn(connection);
    let version: u32 = one_string(&client, "SHOW server_version_num")
        .await?
        .parse()
        .map_err(|_| Error::Invalid("PostgreSQL: bad server_version_num".into()))?;
    if version < 130_000 {
        return Err(Error::Invalid(format!(
            "PostgreSQL {version} is not supported (13 or newer)"
        )));
    }
    let pgdata = match &options.pgdata {
        Some(p) => p.clone(),
        None => PathBuf::from(one_string(&client, "SHOW data_directory").await?),
    };
    let sysid: u64 = one_string(
        &client,
        "SELECT system_identifier::text FROM pg_control_system()",
    )
    .await?
    .parse()
    .map_err(|_| Error::Invalid("PostgreSQL: bad system identifier".into()))?;
    let seg_size: u64 = one_string(
        &client,
        "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'",
    )
    .await?
    .parse()
    .map_err(|_| Error::Invalid("PostgreSQL: bad wal_segment_size".into()))?;
    let rows = client
        .query(
            "SELECT oid::text, pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')",
            &[],
        )
        .await
        .map_err(|e| pg_err("list tablespaces", e))?;
    let mut tablespaces: Vec<(String, PathBuf)> = Vec::new();
    for r in rows {
        let oid: String = r.try_get(0).map_err(|e| pg_err("tablespace oid", e))?;
        let loc: String = r.try_get(1).map_err(|e| pg_err("tablespace location", e))?;
        if !loc.is_empty() {
            tablespaces.push((oid, PathBuf::from(loc)));
        }
    }

    let start_sql = if version >= 150_000 {
        "SELECT pg_backup_start($1, $2)::text"
    } else {
        "SELECT pg_start_backup($1, $2, false)::text"
    };
    let row = client
        .query_one(start_sql, &[&options.label, &options.fast_checkpoint])
        .await
        .map_err(|e| pg_err("backup start", e))?;
    let start_lsn: String = row.try_get(0).map_err(|e| pg_err("backup start", e))?;
    let timeline: i32 = client
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| pg_err("timeline", e))?;

    // The base backup this one is compared with: the newest of the same cluster.
    // A parent that cannot be read only costs the patches: every block is then stored whole.
    let mut parent = None;
    let mut parent_root = None;
    if options.delta {
        match crate::pg::restore::list_base_backups(repo, Some(sysid)).await {
            Ok(mut all) => parent = all.pop(),
            Err(e) => progress.warn(&pgdata, &format!("earlier base backups: {e}; no patches")),
        }
        if let Some((id, s, _)) = &parent {
            match repo.read_tree(&s.tree).await {
                Ok(t) => parent_root = Some(t),
                Err(e) => {
                    progress.warn(
                        &pgdata,
                        &format!("base backup {}: {e}; no patches", id.short()),
                    );
                    parent = None;
                }
            }
        }
    }
    // Copy while the session stays open; on any failure, stop the backup before returning.
    let copied = copy(
        repo,
        options,
        &pgdata,
        &tablespaces,
        parent_root.as_ref(),
        progress,
    )
    .await;
    let stop_sql = if version >= 150_000 {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(true)"
    } else {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, true)"
    };
    let stopped = client
        .query_one(stop_sql, &[])
        .await
        .map_err(|e| pg_err("backup stop", e));
    let (session, mut nodes) = copied?;
    let row = stopped?;
    let stop_lsn: String = row.try_get(0).map_err(|e| pg_err("backup stop", e))?;
    let labelfile: String = row.try_get(1).map_err(|e| pg_err("backup stop", e))?;
    let spcmap: Option<String> = row.try_get(2).map_err(|e| pg_err("backup stop", e))?;
    let walfile = |lsn: &str| {
        let client = &client;
        let lsn = lsn.to_owned();
        async move {
            // pg_walfile_name() needs the timeline of the server, which is right for a primary.
            let r = client
                .query_one("SELECT pg_walfile_name($1::text::pg_lsn)", &[&lsn])
                .await
                .map_err(|e| pg_err("pg_walfile_name", e))?;
            r.try_get::<_, String>(0)
                .map_err(|e| pg_err("pg_walfile_name", e))
        }
    };
    let start_wal = walfile(&start_lsn).await?;
    let stop_wal = walfile(&stop_lsn).await?;
    drop(client);
    conn_task.abort();

    nodes.push(
        session
            .file("backup_label", labelfile.into_bytes(), 0o600)
            .await?,
    );
    if let Some(map) = spcmap.filter(|m| !m.is_empty()) {
        nodes.push(
            session
                .file("tablespace_map", map.into_bytes(), 0o600)
                .await?,
        );
    }
    let root = session.tree(Tree { nodes }).await?;
    let done = session.finish().await?;

    let info = BaseBackupInfo {
        start_lsn,
        stop_lsn,
        timeline: u32::try_from(timeline).unwrap_or(0),
        system_identifier: sysid,
        pg_version: version,
        wal_segment_size: seg_size,
        start_wal,
        stop_wal,
        stop_time: now().secs,
        pgdata: pgdata.display().to_string(),
    };
    let mut snapshot = Snapshot::new(SnapshotKind::PgBaseBackup, time, root);
    snapshot.parent = parent.map(|(id, _, _)| id);
    snapshot.hostname = options.host.clone().unwrap_or_else(hostname);
    snapshot.username = crate::backup::username();
    snapshot.paths = vec![pgdata.as_os_str().as_bytes().to_vec()];
    snapshot.tags = options.tags.clone();
    snapshot.summary = done.summary;
    snapshot.meta = info.to_meta();
    let id = crate::prune::save_snapshot_guarded(repo, &snapshot, &done.dependencies).await?;
    Ok(BaseBackupOutcome {
        id,
        snapshot,
        info,
        warnings: done.warnings,
    })
}

/// Copies PGDATA's top level (and tablespaces) through a session; returns it and the root nodes.
async fn copy(
    repo: &Repository,
    options: &BaseBackupOptions,
    pgdata: &Path,
    tablespaces: &[(String, PathBuf)],
    parent: Option<&Tree>,
    progress: Arc<dyn Progress>,
) -> Result<(BackupSession, Vec<Node>)> {
    let bo = BackupOptions {
        threads: options.threads,
        atime: false,
        always_read: true,
        ..BackupOptions::default()
    };
    let parent_node = |tree: Option<&Tree>, name: &[u8]| {
        tree.and_then(|t| t.nodes.iter().find(|n| n.name == name).cloned())
    };
    let spc_roots: Vec<PathBuf> = tablespaces.iter().map(|(_, p)| p.clone()).collect();
    let rule = policy(pgdata.to_path_buf(), spc_roots, options.block_size);
    let session = BackupSession::new(repo, &bo, progress, Some(rule)).await?;
    let mut names: Vec<_> = std::fs::read_dir(pgdata)
        .map_err(|e| Error::io(pgdata, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    let mut nodes = Vec::new();
    for n in names {
        let old = parent_node(parent, n.as_bytes());
        if let Some(node) = session.entry_with_parent(&pgdata.join(&n), old).await? {
            nodes.push(node);
        }
    }
    if !tablespaces.is_empty() {
        let old_spc = match parent_node(parent, TABLESPACES_DIR.as_bytes()).and_then(|n| n.subtree)
        {
            Some(id) => repo.read_tree(&id).await.ok(),
            None => None,
        };
        let mut spc_nodes = Vec::new();
        for (oid, loc) in tablespaces {
            let old = parent_node(old_spc.as_ref(), oid.as_bytes()).and_then(|n| n.subtree);
            let subtree = session.dir_with_parent(loc, old).await?;
            let md = std::fs::metadata(loc).map_err(|e| Error::io(loc, e))?;
            let mut node = Node::new(oid.as_bytes().to_vec(), NodeKind::Dir);
            node.mode = std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777;
            node.uid = std::os::unix::fs::MetadataExt::uid(&md);
            node.gid = std::os::unix::fs::MetadataExt::gid(&md);
            node.subtree = Some(subtree);
            spc_nodes.push(node);
        }
        let spc_tree = session.tree(Tree { nodes: spc_nodes }).await?;
        let mut node = Node::new(TABLESPACES_DIR.as_bytes().to_vec(), NodeKind::Dir);
        node.mode = 0o700;
        node.subtree = Some(spc_tree);
        nodes.push(node);
    }
    Ok((session, nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_relation_file(b"16384"));
        assert!(is_relation_file(b"16384_fsm"));
        assert!(is_relation_file(b"16384.12"));
        assert!(!is_relation_file(b"PG_VERSION"));
        assert!(!is_relation_file(b"pg_filenode.map"));
        assert!(is_temp_relation(b"t3_16384"));
        assert!(is_temp_relation(b"t12_16384_fsm"));
        assert!(!is_temp_relation(b"tablespace"));
        assert_eq!(relfilenode(b"16384_vm"), b"16384");
        assert_eq!(relfilenode(b"16384.3"), b"16384");
    }

    #[test]
    fn policy_follows_base_backup_rules() {
        let dir = tempfile::tempdir().unwrap();
        let pg = dir.path().to_path_buf();
        for d in ["base/5", "global", "pg_wal", "pg_stat_tmp", "pg_tblspc"] {
            std::fs::create_dir_all(pg.join(d)).unwrap();
        }
        for f in [
            "postmaster.pid",
            "PG_VERSION",
            "backup_label",
            "base/5/16384",
            "base/5/16385",
            "base/5/16385_init",
            "base/5/16385_fsm",
            "base/5/t3_99",
            "base/5/pg_internal.init",
            "global/1262",
        ] {
            std::fs::write(pg.join(f), b"x").unwrap();
        }
        let rule = policy(pg.clone(), vec![], 65536);
        let p = |rel: &str| {
            let path = pg.join(rel);
            rule(&path, &std::fs::symlink_metadata(&path).unwrap())
        };
        assert_eq!(p("postmaster.pid"), Policy::Skip);
        assert_eq!(p("backup_label"), Policy::Skip);
        assert_eq!(p("PG_VERSION"), Policy::Keep);
        assert_eq!(p("pg_wal"), Policy::EmptyDir);
        assert_eq!(p("pg_stat_tmp"), Policy::EmptyDir);
        assert_eq!(p("base/5/16384"), Policy::FixedBlocks(65536));
        assert_eq!(p("base/5/16385"), Policy::Skip, "unlogged main fork");
        assert_eq!(p("base/5/16385_fsm"), Policy::Skip);
        assert_eq!(p("base/5/16385_init"), Policy::FixedBlocks(65536));
        assert_eq!(p("base/5/t3_99"), Policy::Skip, "temporary relation");
        assert_eq!(p("base/5/pg_internal.init"), Policy::Skip);
        assert_eq!(p("global/1262"), Policy::FixedBlocks(65536));
    }
}

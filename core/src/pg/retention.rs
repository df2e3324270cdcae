//! WAL retention: delete archived WAL that no remaining base backup needs.
//!
//! For each cluster (system identifier) with WAL in the repository, the oldest remaining base
//! backup's start segment is the first one any restore can need: every segment numbered below it,
//! on any timeline, is deleted, along with `.partial` and `.backup` files below it. Timeline
//! `.history` files are always kept (they are tiny and recovery needs them to follow timelines).
//! A cluster without any base backup keeps all its WAL. The recovery window is enforced by which
//! base backups `forget` keeps (see [`crate::forget::KeepPolicy::recovery_window_secs`]).

use std::collections::HashMap;

use cairn_format::wal::{SegmentName, WalFileName};

use super::basebackup::BaseBackupInfo;
use super::restore::list_base_backups;
use super::wal::{WalRepo, list, list_systems, object_name};
use crate::error::{Error, Result};
use crate::repo::Repository;

/// What [`prune_wal`] did (or would do).
#[derive(Debug, Clone, Default)]
pub struct WalRetentionReport {
    /// Per system identifier: the first segment number kept, when any base backup exists.
    pub keep_from: Vec<(u64, Option<u64>)>,
    /// WAL files deleted (or to delete, in a dry run).
    pub deleted: Vec<String>,
    /// Their stored bytes.
    pub bytes: u64,
}

fn start_segno(info: &BaseBackupInfo) -> Result<u64> {
    let seg = u32::try_from(info.wal_segment_size)
        .map_err(|_| Error::Invalid("bad WAL segment size".into()))?;
    SegmentName::parse(&info.start_wal)
        .and_then(|s| s.segno(seg))
        .map_err(|e| Error::Invalid(format!("base backup start WAL {}: {e}", info.start_wal)))
}

/// Deletes archived WAL older than every remaining base backup; see the module documentation.
pub async fn prune_wal(repo: &Repository, dry_run: bool) -> Result<WalRetentionReport> {
    let wal = WalRepo::from(repo);
    let mut report = WalRetentionReport::default();
    let backups = list_base_backups(repo, None).await?;
    let mut oldest: HashMap<u64, (u64, u32)> = HashMap::new();
    for (_, _, info) in &backups {
        let segno = start_segno(info)?;
        let seg = u32::try_from(info.wal_segment_size).unwrap_or(0);
        let e = oldest.entry(info.system_identifier).or_insert((segno, seg));
        if segno < e.0 {
            *e = (segno, seg);
        }
    }
    for sysid in list_systems(&wal).await? {
        let Some(&(keep_from, seg_size)) = oldest.get(&sysid) else {
            report.keep_from.push((sysid, None));
            continue;
        };
        report.keep_from.push((sysid, Some(keep_from)));
        for f in list(&wal, sysid).await? {
            let segment = match &f.file {
                WalFileName::Segment(s) | WalFileName::Partial(s) => *s,
                WalFileName::Backup { segment, .. } => *segment,
                WalFileName::History { .. } => continue,
            };
            let Ok(no) = segment.segno(seg_size) else {
                continue;
            };
            if no < keep_from {
                if !dry_run {
                    repo.storage().delete(&object_name(sysid, &f.name)).await?;
                }
                report.bytes += f.stored_size;
                report.deleted.push(f.name);
            }
        }
    }
    Ok(report)
}

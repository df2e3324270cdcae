//! The metadata objects `check` reads one by one, so that a damaged one is reported by name and
//! the rest is still checked: key slots, prune plans, index files.

use std::collections::HashSet;

use cairn_format::{IndexId, PackId};

use super::CheckReport;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::repo::{DamageKind, INDEX, PRUNE, Repository, index_name};

fn id_of<T: std::str::FromStr>(name: &str) -> Option<T> {
    name.rsplit('/').next().and_then(|h| h.parse().ok())
}

/// Reports every key slot that is damaged: its checksum fails, it does not parse, or its bytes
/// do not hash (keyed) to its name. Slots that only do not open with this password, and slots of
/// a type this build does not know, are not problems.
pub(super) async fn check_keys(repo: &Repository, report: &mut CheckReport) -> Result<()> {
    for k in repo.list_keys().await? {
        if let Some(d) = k.damaged.filter(|d| d.kind == DamageKind::Corrupt) {
            report.problem(d.object, d.error);
        }
    }
    Ok(())
}

/// Opens every prune plan; returns the packs the readable ones condemn and reports the others.
pub(super) async fn condemned(
    repo: &Repository,
    report: &mut CheckReport,
) -> Result<HashSet<PackId>> {
    let mut out = HashSet::new();
    for o in repo.storage().list(PRUNE).await? {
        let Some(id) = id_of::<IndexId>(&o.name) else {
            continue;
        };
        let bytes = match repo.storage().get(&o.name).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => continue, // executed by a prune since the listing
            Err(e) => return Err(e),
        };
        match cairn_format::PrunePlan::open(repo.key(), id.as_bytes(), &bytes) {
            Ok(plan) => out.extend(plan.condemned),
            Err(e) => report.problem(o.name, e.to_string()),
        }
    }
    Ok(out)
}

/// Loads the index from every index file that reads; reports the others by name.
pub(super) async fn load_index(repo: &Repository, report: &mut CheckReport) -> Result<Index> {
    let condemned = condemned(repo, report).await?;
    let mut files = Vec::new();
    for o in repo.storage().list(INDEX).await? {
        let Some(id) = id_of::<IndexId>(&o.name) else {
            continue;
        };
        match repo.read_index_file(&id).await {
            Ok(f) => files.push((id, f)),
            Err(Error::NotFound { .. }) => {} // replaced by prune or repair since the listing
            Err(e @ (Error::Corrupt { .. } | Error::Unsupported(_))) => {
                report.problem(index_name(&id), e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Index::from_files_with(files, &condemned, false))
}

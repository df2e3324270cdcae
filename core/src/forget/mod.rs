//! Forgetting snapshots by retention policy. Forget removes snapshot objects only; the data
//! they alone referenced is freed later by prune.

pub mod policy;

use cairn_format::SnapshotId;

pub use policy::{Decision, GroupBy, KeepPolicy, PERMANENT_TAG, apply};

use crate::error::{Error, Result};
use crate::repo::{Repository, snapshot_name};

/// Plans which snapshots a policy keeps; nothing is deleted.
pub async fn plan(repo: &Repository, policy: &KeepPolicy, by: GroupBy) -> Result<Vec<Decision>> {
    if policy.is_empty() {
        return Err(Error::Invalid(
            "no keep rule given: refusing to forget every snapshot (give --keep-last 1 or another rule)".into(),
        ));
    }
    Ok(apply(&repo.list_snapshots().await?, policy, by))
}

/// Deletes the snapshot objects of the decisions that do not keep them; returns their ids.
pub async fn forget(repo: &Repository, decisions: &[Decision]) -> Result<Vec<SnapshotId>> {
    let mut removed = Vec::new();
    for d in decisions.iter().filter(|d| !d.keep) {
        repo.storage().delete(&snapshot_name(&d.id)).await?;
        removed.push(d.id);
    }
    Ok(removed)
}

/// Changes a snapshot's tags (e.g. adds [`PERMANENT_TAG`]): writes the changed snapshot as a new
/// object, then deletes the old one. Returns the new id (snapshot ids hash their content).
pub async fn retag(
    repo: &Repository,
    id: &SnapshotId,
    add: &[String],
    remove: &[String],
) -> Result<SnapshotId> {
    let mut s = repo.read_snapshot(id).await?;
    s.tags.retain(|t| !remove.contains(t));
    for t in add {
        if !s.tags.contains(t) {
            s.tags.push(t.clone());
        }
    }
    let new = repo.save_snapshot(&s).await?;
    if new != *id {
        repo.storage().delete(&snapshot_name(id)).await?;
    }
    Ok(new)
}

//! Forgetting snapshots by retention policy or by id. Forget removes snapshot objects only; the
//! data they alone referenced is freed later by prune.
//!
//! A snapshot that cannot be read (damaged, or written by a newer Cairn) is never removed by a
//! policy, whose rules need its time, host and tags; it is reported in [`ForgetPlan::damaged`]
//! and can be removed by naming it ([`forget_ids`]).

pub mod policy;

use cairn_format::SnapshotId;

pub use policy::{Decision, GroupBy, KeepPolicy, PERMANENT_TAG, apply};

use crate::error::{Error, Result};
use crate::repo::{Damaged, Repository, snapshot_name};

/// What a policy decides: one decision per readable snapshot, and the snapshots that could not be
/// read (kept, since no rule can be applied to them).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ForgetPlan {
    /// One decision per readable snapshot, grouped, newest first within a group.
    pub decisions: Vec<Decision>,
    /// Snapshots that could not be read: left alone.
    pub damaged: Vec<Damaged>,
}

impl std::ops::Deref for ForgetPlan {
    type Target = [Decision];

    /// The decisions, so that a plan passes straight to [`forget`].
    fn deref(&self) -> &[Decision] {
        &self.decisions
    }
}

/// Plans which snapshots a policy keeps; nothing is deleted. Snapshots that cannot be read do not
/// stop the plan; they are kept and listed in [`ForgetPlan::damaged`].
pub async fn plan(repo: &Repository, policy: &KeepPolicy, by: GroupBy) -> Result<ForgetPlan> {
    if policy.is_empty() {
        return Err(Error::Invalid(
            "no keep rule given: refusing to forget every snapshot (give --keep-last 1 or another rule)".into(),
        ));
    }
    let (snapshots, damaged) = repo.list_snapshots_checked().await?;
    Ok(ForgetPlan {
        decisions: apply(&snapshots, policy, by),
        damaged,
    })
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

/// Deletes the named snapshot objects, whether or not they can be read (the way to remove a
/// damaged snapshot). Every id must name a snapshot in the store ([`Error::NotFound`] before
/// anything is deleted otherwise). Returns the ids removed.
pub async fn forget_ids(repo: &Repository, ids: &[SnapshotId]) -> Result<Vec<SnapshotId>> {
    let present = repo.snapshot_ids().await?;
    if let Some(missing) = ids.iter().find(|id| present.binary_search(id).is_err()) {
        return Err(Error::NotFound {
            object: snapshot_name(missing),
        });
    }
    let mut removed = Vec::new();
    for id in ids {
        if !removed.contains(id) {
            repo.storage().delete(&snapshot_name(id)).await?;
            removed.push(*id);
        }
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
        // The old snapshot must still be there: if it went meanwhile (forgotten, or removed by
        // the backup that wrote it because its guard failed), the copy must not outlive it.
        if repo.storage().size(&snapshot_name(id)).await?.is_none() {
            repo.storage().delete(&snapshot_name(&new)).await?;
            return Err(Error::NotFound {
                object: format!("{} (removed while it was being tagged)", snapshot_name(id)),
            });
        }
        repo.storage().delete(&snapshot_name(id)).await?;
    }
    Ok(new)
}

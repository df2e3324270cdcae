//! The snapshot guard: a backup writes its snapshot only if nothing the snapshot needs has been
//! deleted by prune, or is being deleted (SPEC.md §11.2).
//!
//! A backup depends on every pack holding a blob its snapshot references: packs it found
//! already stored (deduplication, unchanged files taken from the parent, delta bases) and packs
//! it wrote. Prune deletes a pack only in the execution of a plan that condemns it, and the
//! execution lists the snapshots first: a snapshot it listed keeps its packs. The danger is a
//! snapshot that becomes visible after an execution listed the snapshots and before it deleted
//! the packs, or after the packs were deleted. The guard runs twice:
//!
//! 1. **Before** the snapshot is written, to fail early without writing anything.
//! 2. **After** it is written, to close the window between the first check and the write. If
//!    this check fails, the backup deletes the snapshot it has just written and fails.
//!
//! Each check (a) lists the prune plans: a plan that condemns a pack of the backup and is due
//! (within [`CLOCK_MARGIN_SECS`], for clocks that differ between hosts) may be executing now,
//! so the check fails; then (b) looks for traces of an execution since the backup loaded its
//! index (an index file it loaded is gone, or a new index file supersedes others: executions
//! rewrite the index before they delete any pack) and, when it finds one, checks that every
//! pack the backup depends on still exists.
//!
//! Why the second check is enough, whatever the grace period: an execution that listed the
//! snapshots before ours was visible either still has its plan in place when the check lists
//! the plans (the plan is deleted last; it is due, so (a) fails), or has finished, in which
//! case it rewrote the index before deleting and (b) finds the deleted packs missing.

use std::collections::HashSet;

use cairn_format::{IndexId, PackId, Snapshot, SnapshotId};
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::packer::{Packer, with_retries};
use crate::repo::{INDEX, Repository, now, pack_name, snapshot_name};

/// Seconds by which the clocks of the hosts that back up and prune may differ: a plan due
/// within this margin counts as due.
pub const CLOCK_MARGIN_SECS: i64 = 60;

/// Up to this many packs, the existence check asks for each; above, it lists `data/` once.
const ASK_EACH_UP_TO: usize = 64;

/// What a backup's snapshot depends on: the packs holding the blobs it references, and the
/// index files the backup loaded or wrote (to see whether prune rewrote the index since).
#[derive(Debug, Clone, Default)]
pub struct Dependencies {
    packs: HashSet<PackId>,
    index_files: HashSet<IndexId>,
}

impl Dependencies {
    /// What went through `packer` (call once it has finished).
    pub fn of(packer: &Packer) -> Result<Self> {
        Ok(Self {
            packs: packer.dependencies()?,
            index_files: packer.index_files()?,
        })
    }

    /// The packs the snapshot needs.
    pub fn packs(&self) -> &HashSet<PackId> {
        &self.packs
    }
}

/// Writes `snapshot` if, before and after the write, nothing in `deps` has been deleted by
/// prune or is condemned by a plan that is due. Fails with [`Error::Failed`] otherwise,
/// leaving no snapshot behind (the packs and index files stay; running the backup again stores
/// what was lost and deduplicates against the rest).
pub async fn save_snapshot_guarded(
    repo: &Repository,
    snapshot: &Snapshot,
    deps: &Dependencies,
) -> Result<SnapshotId> {
    verify_dependencies(repo, deps).await?;
    let id = with_retries(|| repo.save_snapshot(snapshot)).await?;
    if let Err(e) = verify_dependencies(repo, deps).await {
        let name = snapshot_name(&id);
        return Err(match with_retries(|| repo.storage().delete(&name)).await {
            Ok(()) => Error::Failed(format!(
                "{e} (checked after the snapshot was written: {name} was removed again)"
            )),
            Err(d) => Error::Failed(format!(
                "{e} (checked after the snapshot was written); {name} could not be removed \
                 ({d}): remove it with `forget {}`",
                id.short()
            )),
        });
    }
    Ok(id)
}

/// Fails when prune deleted a pack of `deps`, or a plan that is due condemns one.
pub async fn verify_dependencies(repo: &Repository, deps: &Dependencies) -> Result<()> {
    let now_secs = now().secs;
    // A damaged plan is never executed (see `Repository::prune_plans_checked`).
    for (id, plan) in with_retries(|| repo.prune_plans_checked()).await?.0 {
        let due = plan
            .created
            .secs
            .saturating_add(i64::try_from(plan.grace_secs).unwrap_or(i64::MAX));
        if due > now_secs.saturating_add(CLOCK_MARGIN_SECS) {
            continue;
        }
        let hit = plan
            .condemned
            .iter()
            .filter(|p| deps.packs.contains(p))
            .count();
        if hit > 0 {
            return Err(Error::Failed(format!(
                "prune plan {} (due) condemns {hit} pack(s) this backup uses: it was made while \
                 the backup ran, so the backup took longer than prune's grace period; no \
                 snapshot was written. Run the backup again (it stores that data anew), and \
                 prune with a --grace longer than your longest backup",
                id.short()
            )));
        }
    }
    if !index_rewritten(repo, &deps.index_files).await? {
        return Ok(());
    }
    let missing = missing_packs(repo, &deps.packs).await?;
    if let Some(first) = missing.first() {
        return Err(Error::Failed(format!(
            "{} pack(s) this backup uses were deleted by prune while it ran (first: {}): the \
             backup took longer than prune's grace period; no snapshot was written. Run the \
             backup again (it stores that data anew), and prune with a --grace longer than your \
             longest backup",
            missing.len(),
            pack_name(first)
        )));
    }
    Ok(())
}

/// True when a prune execution (or `repair index`) rewrote the index since `known` was read:
/// a file of `known` is gone, or a file not in `known` supersedes others.
async fn index_rewritten(repo: &Repository, known: &HashSet<IndexId>) -> Result<bool> {
    let listed: Vec<IndexId> = with_retries(|| repo.storage().list(INDEX))
        .await?
        .iter()
        .filter_map(|o| o.name.rsplit('/').next()?.parse().ok())
        .collect();
    let present: HashSet<IndexId> = listed.iter().copied().collect();
    if known.iter().any(|id| !present.contains(id)) {
        return Ok(true);
    }
    let new: Vec<IndexId> = listed
        .into_iter()
        .filter(|id| !known.contains(id))
        .collect();
    let rewritten: Vec<bool> = stream::iter(new)
        .map(|id| async move {
            match with_retries(|| repo.read_index_file(&id)).await {
                Ok(f) => Ok(!f.supersedes.is_empty()),
                // Deleted since the listing: only an execution deletes index files. One that
                // cannot be read might supersede others: look at the packs.
                Err(Error::NotFound { .. } | Error::Corrupt { .. } | Error::Unsupported(_)) => {
                    Ok(true)
                }
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    Ok(rewritten.into_iter().any(|r| r))
}

/// The packs of `packs` that the store does not have, sorted.
async fn missing_packs(repo: &Repository, packs: &HashSet<PackId>) -> Result<Vec<PackId>> {
    let mut missing: Vec<PackId> = if packs.len() <= ASK_EACH_UP_TO {
        stream::iter(packs.iter().copied())
            .map(|p| async move {
                let name = pack_name(&p);
                let size = with_retries(|| repo.storage().size(&name)).await?;
                Ok::<_, Error>(size.is_none().then_some(p))
            })
            .buffer_unordered(16)
            .try_filter_map(|p| async move { Ok(p) })
            .try_collect()
            .await?
    } else {
        let stored: HashSet<PackId> = with_retries(|| repo.list_packs())
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        packs
            .iter()
            .filter(|p| !stored.contains(p))
            .copied()
            .collect()
    };
    missing.sort();
    Ok(missing)
}

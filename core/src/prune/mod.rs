//! Prune: free the space of data no snapshot references, safely while backups run.
//!
//! # Protocol (two phases, time based; see SPEC.md "Prune")
//!
//! 1. **Plan.** Prune finds the blobs every snapshot reaches. Packs holding none of them are
//!    condemned; packs holding few (used share below [`PruneOptions::repack_below`]) have their
//!    used blobs copied into new packs first, then are condemned. Packs no index lists (left by
//!    interrupted backups) are condemned once older than the grace period. The condemned list
//!    is written as a prune plan (`prune/<id>`). Nothing is deleted. From then on, backups that
//!    start never deduplicate against blobs that only condemned packs hold (they upload them
//!    again), so no new snapshot comes to depend on a condemned pack.
//! 2. **Execute**, in a later prune run, once `grace` has passed since the plan: backups that
//!    started before the plan (and may have deduplicated against its packs) have finished by then
//!    when the grace period exceeds the longest backup; a backup that outlives it is refused by
//!    the snapshot guard ([`save_snapshot_guarded`]) instead of saving a snapshot that needs
//!    deleted data.
//!    Prune again computes what every snapshot now references; a condemned pack still needed is
//!    spared; the others are deleted. Then the index is rewritten: a new
//!    index file listing every remaining entry, superseding the old files, is written before the
//!    old files are deleted. Last, the plan is deleted.
//!
//! Only prune deletes packs and index files; a crash at any point leaves a repository that
//! checks clean (the next run finishes the work).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use cairn_format::{BlobId, IndexFile, IndexId, IndexPack, NodeKind, PackEntry, PackId, PrunePlan};
use rand_core::OsRng;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::packer::{Packer, with_retries};
use crate::progress::Progress;
use crate::repo::{DATA, INDEX, KEYS, PRUNE, Repository, SNAPSHOTS, index_name, now, pack_name};

mod damage;
mod guard;

pub use guard::{CLOCK_MARGIN_SECS, Dependencies, save_snapshot_guarded, verify_dependencies};

/// Default grace period: a day, longer than any backup should run.
pub const DEFAULT_GRACE_SECS: u64 = 24 * 3600;

/// The shortest grace period prune accepts without [`PruneOptions::allow_short_grace`]. A
/// backup that runs longer than the grace period is refused (it saves no snapshot), so a short
/// grace costs failed backups; below this, even backups of seconds can be refused, and a backup
/// killed in the instant between writing its snapshot and checking it again could leave a
/// snapshot that needs deleted data (SPEC.md §11.2).
pub const MIN_GRACE_SECS: u64 = 5 * 60;

/// Packs that no index file lists (left by interrupted backups) are condemned once older than
/// the grace period, and never younger than this: a running backup indexes its packs within a
/// minute or two, and leftovers are in no hurry.
pub const UNINDEXED_MIN_AGE_SECS: u64 = 3600;

/// Options of [`prune`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PruneOptions {
    /// Time between planning and deleting. Default: 24 h.
    pub grace_secs: u64,
    /// Repack packs whose used share of bytes is below this (0.0..=1.0). Default: 0.5.
    pub repack_below: f64,
    /// Plan and report only: write nothing, delete nothing.
    pub dry_run: bool,
    /// Accept a grace period below [`MIN_GRACE_SECS`] (tests, throw-away repositories).
    /// Default: false.
    pub allow_short_grace: bool,
    /// Go ahead although snapshots need blobs that no stored, whole pack of the index holds
    /// (missing or truncated packs, blobs in no index). Default: false: prune then refuses with
    /// [`Error::Damaged`] before it deletes or condemns anything.
    pub ignore_damage: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            grace_secs: DEFAULT_GRACE_SECS,
            repack_below: 0.5,
            dry_run: false,
            allow_short_grace: false,
            ignore_damage: false,
        }
    }
}

/// What a prune run did (or, in a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Plans executed (their grace period had passed).
    pub plans_executed: u64,
    /// Packs deleted.
    pub packs_deleted: u64,
    /// Bytes freed by deleting packs.
    pub bytes_freed: u64,
    /// Condemned packs spared because a snapshot written since needs them.
    pub packs_spared: u64,
    /// Packs condemned by the new plan.
    pub packs_condemned: u64,
    /// Bytes the new plan will free when executed.
    pub bytes_to_free: u64,
    /// Packs whose used blobs were copied into new packs.
    pub packs_repacked: u64,
    /// Bytes of blobs copied.
    pub bytes_repacked: u64,
    /// Unreferenced blobs found.
    pub unused_blobs: u64,
    /// The plan written, if any.
    pub new_plan: Option<IndexId>,
    /// Index files replaced.
    pub index_files_replaced: u64,
    /// Files that interrupted writes left (a local directory's `<name>#<n>`), removed once an
    /// hour old.
    pub interrupted_writes_removed: u64,
    /// Damage found and ignored ([`PruneOptions::ignore_damage`]), one line each.
    pub damage_ignored: Vec<String>,
}

/// Every blob reachable from every snapshot (trees and data), and the damage met on the way
/// (trees that cannot be read: what they reach is unknown).
async fn reachable(
    repo: &Repository,
    progress: &dyn Progress,
) -> Result<(HashSet<BlobId>, Vec<String>)> {
    // Snapshots first, then a fresh index: every snapshot's index files were written before
    // the snapshot, so the index loaded after the listing covers all of them.
    let (snapshots, damaged) = repo.list_snapshots_checked().await?;
    let repo = repo.with_storage(repo.storage().clone());
    progress.start("prune: find used data", Some(snapshots.len() as u64), None);
    let mut used: HashSet<BlobId> = HashSet::new();
    // What a snapshot that cannot be read references is unknown.
    let mut problems: Vec<String> = damaged
        .iter()
        .map(|d| {
            format!(
                "{}: cannot be read ({}); `forget {}` removes it",
                d.object,
                d.error,
                d.object.rsplit('/').next().unwrap_or_default()
            )
        })
        .collect();
    for (id, s) in snapshots {
        let mut stack = vec![s.tree];
        while let Some(t) = stack.pop() {
            if !used.insert(t) {
                continue;
            }
            let tree = match repo.read_tree(&t).await {
                Ok(tree) => tree,
                Err(e @ (Error::NotFound { .. } | Error::Corrupt { .. })) => {
                    problems.push(format!("snapshot {}: tree {}: {e}", id.short(), t.short()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for n in tree.nodes {
                if n.kind == NodeKind::Dir {
                    stack.extend(n.subtree);
                } else {
                    used.extend(n.stored_blobs());
                }
            }
        }
        progress.items_done(1);
    }
    progress.finish("prune: find used data");
    Ok((used, problems))
}

/// Runs prune: executes plans whose grace has passed, then writes a new plan.
pub async fn prune(
    repo: &Repository,
    options: &PruneOptions,
    progress: Arc<dyn Progress>,
) -> Result<PruneReport> {
    if options.grace_secs < MIN_GRACE_SECS && !options.allow_short_grace {
        return Err(Error::Invalid(format!(
            "a grace period of {} s is below the minimum of {} s: backups running longer than the \
             grace period are refused, and below the minimum even short ones can be (see \
             SPEC.md §11.2); use a longer grace, or allow a short one explicitly",
            options.grace_secs, MIN_GRACE_SECS
        )));
    }
    let mut report = PruneReport::default();
    let now_secs = now().secs;
    let (plans, damaged_plans) = repo.prune_plans_checked().await?;
    if !damaged_plans.is_empty() {
        let problems: Vec<String> = damaged_plans
            .iter()
            .map(|(name, e)| format!("{name}: damaged plan ({e}); never executed"))
            .collect();
        refuse_damage(&problems, options, &mut report)?;
        if !options.dry_run {
            // Going ahead: its packs are condemned again by a later plan if still unused.
            for (name, _) in &damaged_plans {
                repo.storage().delete(name).await?;
            }
        }
    }
    let due: Vec<(IndexId, PrunePlan)> = plans
        .iter()
        .filter(|(_, p)| {
            p.created
                .secs
                .saturating_add(i64::try_from(p.grace_secs).unwrap_or(i64::MAX))
                <= now_secs
        })
        .cloned()
        .collect();
    let pending: HashSet<PackId> = plans
        .iter()
        .filter(|(id, _)| !due.iter().any(|(d, _)| d == id))
        .flat_map(|(_, p)| p.condemned.iter().copied())
        .collect();

    // Fresh view: the shared index may be stale.
    let repo = repo.with_storage(repo.storage().clone());
    if !due.is_empty() {
        execute(&repo, &due, options, &mut report, progress.as_ref()).await?;
    }

    // Phase one: a new plan.
    let (used, unreadable) = reachable(&repo, progress.as_ref()).await?;
    refuse_damage(&unreadable, options, &mut report)?;
    if !options.dry_run {
        for prefix in [DATA, INDEX, SNAPSHOTS, PRUNE, KEYS] {
            report.interrupted_writes_removed += repo
                .storage()
                .remove_interrupted_writes(prefix, UNINDEXED_MIN_AGE_SECS)
                .await?;
        }
    }
    let files = repo.read_index_files().await?;
    let superseded: HashSet<IndexId> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut packs: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for (id, f) in &files {
        if superseded.contains(id) {
            continue;
        }
        for p in &f.packs {
            packs
                .entry(p.id)
                .or_default()
                .extend(p.blobs.iter().copied());
        }
    }
    let sizes: HashMap<PackId, (u64, Option<i64>)> = repo
        .list_packs()
        .await?
        .into_iter()
        .map(|(id, o)| (id, (o.size, o.modified)))
        .collect();
    let listed: HashMap<PackId, u64> = sizes.iter().map(|(p, (s, _))| (*p, *s)).collect();
    refuse_damage(&damage::find(&used, &packs, &listed), options, &mut report)?;
    let already: HashSet<PackId> = pending.clone();
    let mut condemned: Vec<PackId> = Vec::new();
    let mut to_repack: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    // Blobs in a pack that stays: repacking need not copy them again.
    let mut kept_blobs: HashSet<BlobId> = HashSet::new();
    let mut candidates: Vec<(PackId, Vec<PackEntry>, u64, u64)> = Vec::new();
    for (pack, entries) in &packs {
        if already.contains(pack) || !sizes.contains_key(pack) {
            continue;
        }
        let total: u64 = entries.iter().map(|e| u64::from(e.stored_len)).sum();
        let used_bytes: u64 = entries
            .iter()
            .filter(|e| used.contains(&e.id))
            .map(|e| u64::from(e.stored_len))
            .sum();
        report.unused_blobs += entries.iter().filter(|e| !used.contains(&e.id)).count() as u64;
        candidates.push((*pack, entries.clone(), total, used_bytes));
    }
    for (_, entries, total, used_bytes) in &candidates {
        if *used_bytes > 0 && (*used_bytes as f64) >= options.repack_below * (*total as f64) {
            kept_blobs.extend(entries.iter().map(|e| e.id));
        }
    }
    for (pack, entries, total, used_bytes) in candidates {
        if used_bytes == 0 {
            condemned.push(pack);
        } else if (used_bytes as f64) < options.repack_below * (total as f64) {
            let keep: Vec<PackEntry> = entries
                .into_iter()
                .filter(|e| used.contains(&e.id) && !kept_blobs.contains(&e.id))
                .collect();
            kept_blobs.extend(keep.iter().map(|e| e.id));
            to_repack.push((pack, keep));
            condemned.push(pack);
        }
    }
    // Packs no index lists, old enough that no running backup can still be about to index them.
    let grace = i64::try_from(options.grace_secs.max(UNINDEXED_MIN_AGE_SECS)).unwrap_or(i64::MAX);
    for (pack, (_, modified)) in &sizes {
        if !packs.contains_key(pack)
            && !already.contains(pack)
            && modified.is_some_and(|m| m.saturating_add(grace) <= now_secs)
        {
            condemned.push(*pack);
        }
    }
    condemned.sort();
    condemned.dedup();
    report.packs_condemned = condemned.len() as u64;
    report.bytes_to_free = condemned
        .iter()
        .filter_map(|p| sizes.get(p))
        .map(|(s, _)| s)
        .sum();
    report.packs_repacked = to_repack.len() as u64;
    report.bytes_repacked = to_repack
        .iter()
        .flat_map(|(_, e)| e.iter())
        .map(|e| u64::from(e.plain_len))
        .sum();
    if options.dry_run || condemned.is_empty() {
        return Ok(report);
    }

    // Copy what condemned packs still hold into new packs before condemning them.
    if !to_repack.is_empty() {
        progress.start("prune: repack", Some(to_repack.len() as u64), None);
        let index = Arc::new(RwLock::new(Index::new()));
        let packer = Arc::new(Packer::new(&repo, index));
        for (pack, entries) in &to_repack {
            for e in entries {
                let loc = crate::index::BlobLocation {
                    pack: *pack,
                    blob_type: e.blob_type,
                    offset: e.offset,
                    stored_len: e.stored_len,
                    plain_len: e.plain_len,
                };
                let plain = repo.read_blob_at(&e.id, &loc).await?;
                let sealed = cairn_format::envelope::seal(
                    repo.key(),
                    e.blob_type.object_kind(),
                    e.id.as_bytes(),
                    &plain,
                    repo.config().compression,
                    &mut OsRng,
                )
                .map_err(|err| Error::Invalid(format!("seal: {err}")))?;
                let p = packer.clone();
                let (id, t, len) = (e.id, e.blob_type, e.plain_len);
                tokio::task::spawn_blocking(move || {
                    if !p.claim(&id)? {
                        p.add(t, id, &sealed, len)?;
                    }
                    Ok::<_, Error>(())
                })
                .await
                .map_err(|err| Error::Invalid(format!("repack worker: {err}")))??;
            }
            progress.items_done(1);
        }
        let p = packer.clone();
        tokio::task::spawn_blocking(move || p.finish_blocking())
            .await
            .map_err(|err| Error::Invalid(format!("repack worker: {err}")))??;
        progress.finish("prune: repack");
    }
    let plan = PrunePlan {
        created: now(),
        grace_secs: options.grace_secs,
        condemned,
        extensions: Vec::new(),
    };
    let (id, sealed) = plan
        .seal(repo.key(), &mut OsRng)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let id = IndexId::from_bytes(id);
    let name = format!("{PRUNE}/{id}");
    with_retries(|| repo.storage().put_new(&name, Bytes::from(sealed.clone()))).await?;
    report.new_plan = Some(id);
    Ok(report)
}

/// Phase two for the plans whose grace has passed.
async fn execute(
    repo: &Repository,
    due: &[(IndexId, PrunePlan)],
    options: &PruneOptions,
    report: &mut PruneReport,
    progress: &dyn Progress,
) -> Result<()> {
    let (used, unreadable) = reachable(repo, progress).await?;
    refuse_damage(&unreadable, options, report)?;
    let files = repo.read_index_files().await?;
    let condemned: HashSet<PackId> = due
        .iter()
        .flat_map(|(_, p)| p.condemned.iter().copied())
        .collect();
    // Where each used blob can be found outside the condemned packs.
    let mut elsewhere: HashSet<BlobId> = HashSet::new();
    let mut in_condemned: HashMap<PackId, Vec<BlobId>> = HashMap::new();
    let superseded_files: HashSet<IndexId> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    for (id, f) in &files {
        if superseded_files.contains(id) {
            continue;
        }
        for p in &f.packs {
            for e in &p.blobs {
                if condemned.contains(&p.id) {
                    in_condemned.entry(p.id).or_default().push(e.id);
                } else {
                    elsewhere.insert(e.id);
                }
            }
        }
    }
    let sizes: HashMap<PackId, u64> = repo
        .list_packs()
        .await?
        .into_iter()
        .map(|(id, o)| (id, o.size))
        .collect();
    let mut live: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for (id, f) in &files {
        if !superseded_files.contains(id) {
            for p in &f.packs {
                live.entry(p.id)
                    .or_default()
                    .extend(p.blobs.iter().copied());
            }
        }
    }
    refuse_damage(&damage::find(&used, &live, &sizes), options, report)?;
    let mut delete: Vec<PackId> = Vec::new();
    for pack in &condemned {
        let needed = in_condemned.get(pack).is_some_and(|blobs| {
            blobs
                .iter()
                .any(|b| used.contains(b) && !elsewhere.contains(b))
        });
        if needed {
            report.packs_spared += 1;
        } else {
            delete.push(*pack);
        }
    }
    if options.dry_run {
        report.packs_deleted = delete.len() as u64;
        report.bytes_freed = delete.iter().filter_map(|p| sizes.get(p)).sum();
        return Ok(());
    }
    // Rewrite the index without the deleted packs first, so no index ever points at a pack
    // that is gone; then delete packs, old index files, and the plans.
    let deleted: HashSet<PackId> = delete.iter().copied().collect();
    let old_ids: Vec<IndexId> = files.iter().map(|(id, _)| *id).collect();
    let superseded: HashSet<IndexId> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut merged: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for (id, f) in &files {
        if superseded.contains(id) {
            continue;
        }
        for p in &f.packs {
            if !deleted.contains(&p.id) {
                let list = merged.entry(p.id).or_default();
                if list.is_empty() {
                    list.extend(p.blobs.iter().copied());
                }
            }
        }
    }
    let mut packs: Vec<IndexPack> = merged
        .into_iter()
        .map(|(id, blobs)| IndexPack { id, blobs })
        .collect();
    packs.sort_by_key(|p| p.id);
    let new_index = IndexFile {
        supersedes: old_ids.clone(),
        packs,
    };
    with_retries(|| repo.write_index(&new_index)).await?;
    progress.start("prune: delete", Some(delete.len() as u64), None);
    for pack in &delete {
        repo.storage().delete(&pack_name(pack)).await?;
        report.packs_deleted += 1;
        report.bytes_freed += sizes.get(pack).copied().unwrap_or(0);
        progress.items_done(1);
    }
    progress.finish("prune: delete");
    for id in &old_ids {
        repo.storage().delete(&index_name(id)).await?;
        report.index_files_replaced += 1;
    }
    for (id, _) in due {
        repo.storage().delete(&format!("{PRUNE}/{id}")).await?;
        report.plans_executed += 1;
    }
    Ok(())
}

/// Refuses (unless told to go ahead) when `problems` is not empty.
fn refuse_damage(
    problems: &[String],
    options: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    if !options.ignore_damage {
        return Err(Error::Damaged(damage::refusal(problems)));
    }
    for p in problems {
        if !report.damage_ignored.contains(p) {
            report.damage_ignored.push(p.clone());
        }
    }
    Ok(())
}

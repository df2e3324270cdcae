//! `repair index`: rebuild the index from the packs themselves.

use std::sync::Arc;

use cairn_format::{IndexFile, IndexPack, PackId, Trailer};
use futures::stream::{self, StreamExt};

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::{Repository, index_name, pack_name};

pub use super::salvage::PackSalvage;

/// Bytes read from the end of a pack at first: the trailer and, usually, the whole header.
const TAIL_GUESS: u64 = 64 * 1024;

/// What [`repair_index`] did.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    /// Packs whose header was read.
    pub packs: u64,
    /// Blobs indexed.
    pub blobs: u64,
    /// Packs whose header could not be read (left out of the index; listed with the reason).
    pub unreadable: Vec<(PackId, String)>,
    /// Index files replaced.
    pub replaced: u64,
    /// Per pack whose header could not be read: the blobs the old index listed in it, how many
    /// were salvaged (still authentic, copied into [`RepairReport::new_packs`], or held by another
    /// pack) and which are lost.
    pub salvage: Vec<PackSalvage>,
    /// Packs written with the salvaged blobs.
    pub new_packs: Vec<PackId>,
}

/// Reads a pack's header with one ranged read of its tail (two when the header is large).
pub async fn read_pack_header(
    repo: &Repository,
    pack: &PackId,
    size: u64,
) -> Result<Vec<cairn_format::PackEntry>> {
    let name = pack_name(pack);
    let start = size.saturating_sub(TAIL_GUESS);
    let tail = repo.storage().get_range(&name, start..size).await?;
    let bad = |e| Error::format(name.clone(), e);
    let trailer_at = tail
        .len()
        .checked_sub(cairn_format::pack::TRAILER_LEN)
        .ok_or_else(|| {
            bad(cairn_format::FormatError::Truncated {
                what: "pack",
                needed: cairn_format::pack::TRAILER_LEN,
                available: tail.len(),
            })
        })?;
    let trailer = match Trailer::decode(tail.get(trailer_at..).unwrap_or_default()) {
        Ok(t) => t,
        // The trailer is in the clear: only the pack id (a keyed hash of every byte) tells a
        // newer writer's pack from a damaged version byte.
        Err(e @ cairn_format::FormatError::UnsupportedVersion { .. }) => {
            let whole = repo.storage().get(&name).await?;
            return Err(
                match cairn_format::pack::check_pack_id(repo.key(), pack, &whole) {
                    Ok(()) => bad(e),
                    Err(damaged) => bad(damaged),
                },
            );
        }
        Err(e) => return Err(bad(e)),
    };
    let header_offset = trailer.header_offset(size).map_err(bad)?;
    let header = if header_offset >= start {
        let from = usize::try_from(header_offset - start).unwrap_or(usize::MAX);
        tail.get(from..trailer_at)
            .map(bytes::Bytes::copy_from_slice)
            .unwrap_or_default()
    } else {
        repo.storage()
            .get_range(
                &name,
                header_offset..size - cairn_format::pack::TRAILER_LEN as u64,
            )
            .await?
    };
    cairn_format::pack::open_header(repo.key(), &header, header_offset).map_err(bad)
}

/// Rebuilds the index from every pack's header: writes one index file listing every readable
/// pack, superseding all existing index files, then deletes those. Use when index files are
/// lost or damaged. Safe beside backups; run it while no prune runs.
///
/// A pack whose header cannot be read (truncated, damaged) is not given up: every blob the old
/// index files list in it that still authenticates is copied into a new pack and indexed there
/// ([`RepairReport::salvage`] says per pack how many blobs were salvaged and which are lost). The
/// damaged pack is left in place, in no index; prune removes it.
pub async fn repair_index(repo: &Repository, progress: Arc<dyn Progress>) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    // The old index first: the entries are what salvage uses, and every pack an index file
    // listed here was uploaded before that file, so the pack listing below has it (a file
    // listed after the packs could name packs this repair never saw, and supersede them).
    let (old, old_entries) = super::salvage::old_index(repo).await?;
    let packs: Vec<(PackId, u64)> = repo
        .list_packs()
        .await?
        .into_iter()
        .map(|(id, o)| (id, o.size))
        .collect();
    progress.start("repair index", Some(packs.len() as u64), None);
    let results: Vec<(PackId, Result<Vec<cairn_format::PackEntry>>)> = stream::iter(packs)
        .map(|(id, size)| async move {
            let header = crate::packer::with_retries(|| read_pack_header(repo, &id, size)).await;
            (id, header)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    // A pack the store could not serve is not damaged: stop before superseding anything.
    if let Some((id, e)) = results.iter().find_map(|(id, r)| match r {
        Err(e @ (Error::Storage { .. } | Error::Io { .. })) => Some((id, e)),
        _ => None,
    }) {
        return Err(Error::Failed(format!(
            "repair index stopped, nothing changed: {} could not be read ({e}); run it again \
             once the store answers",
            crate::repo::pack_name(id)
        )));
    }
    let mut index = IndexFile::default();
    for (id, r) in results {
        progress.items_done(1);
        match r {
            Ok(entries) => {
                report.packs += 1;
                report.blobs += entries.len() as u64;
                index.packs.push(IndexPack { id, blobs: entries });
            }
            Err(e) => report.unreadable.push((id, e.to_string())),
        }
    }
    report.unreadable.sort_by_key(|(id, _)| *id);
    let available = index
        .packs
        .iter()
        .flat_map(|p| p.blobs.iter().map(|b| b.id))
        .collect();
    let damaged: Vec<PackId> = report.unreadable.iter().map(|(id, _)| *id).collect();
    let (salvaged, records) =
        super::salvage::salvage(repo, &damaged, &old_entries, &available).await?;
    for p in salvaged {
        report.packs += 1;
        report.blobs += p.blobs.len() as u64;
        report.new_packs.push(p.id);
        index.packs.push(p);
    }
    report.salvage = records;
    index.packs.sort_by_key(|p| p.id);
    index.supersedes = old.clone();
    let new_id = repo.write_index(&index).await?;
    for id in old.iter().filter(|id| **id != new_id) {
        repo.storage().delete(&index_name(id)).await?;
        report.replaced += 1;
    }
    progress.finish("repair index");
    Ok(report)
}

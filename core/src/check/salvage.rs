//! Salvage for `repair index`: the blobs of a pack whose header cannot be read (a truncated or
//! damaged pack) that still authenticate are copied into new packs.
//!
//! A blob envelope does not carry its id (the id is in its associated data, §4.4) and a
//! compressed envelope does not carry its stored length, so a pack cannot be cut into blobs from
//! its bytes alone. The existing index files say where each blob of the pack was: each such range
//! that is still there and opens (authenticates, hashes to its id, has its recorded length) is
//! kept. The damaged pack itself is left in place, listed by no index (prune removes it), so
//! nothing that might still be recovered from it is deleted here.

use std::collections::{HashMap, HashSet};

use cairn_format::{BlobId, BlobType, IndexId, IndexPack, PackBuilder, PackEntry, PackId};
use rand_core::OsRng;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::repo::{INDEX, Repository, pack_name};

/// What salvage did with one pack whose header could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PackSalvage {
    /// The damaged pack (hex in JSON).
    #[serde(serialize_with = "pack_hex")]
    pub pack: PackId,
    /// Blobs the old index files listed in it.
    pub listed: u64,
    /// Of those, blobs still available: authenticated in the damaged pack and copied, or found
    /// in another pack.
    pub salvaged: u64,
    /// Blobs that are gone: they do not authenticate any more and no other pack holds them
    /// (hex in JSON).
    #[serde(serialize_with = "blobs_hex")]
    pub lost: Vec<BlobId>,
}

fn pack_hex<S: serde::Serializer>(id: &PackId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_hex())
}

fn blobs_hex<S: serde::Serializer>(ids: &[BlobId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(|i| i.to_hex()))
}

/// The ids of the index files in the store and the entries they list per pack (files that
/// cannot be read are skipped: they are what repair replaces).
pub(super) async fn old_index(
    repo: &Repository,
) -> Result<(Vec<IndexId>, HashMap<PackId, Vec<PackEntry>>)> {
    let mut ids = Vec::new();
    let mut entries: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for o in repo.storage().list(INDEX).await? {
        let Some(id) = o
            .name
            .rsplit('/')
            .next()
            .and_then(|h| IndexId::from_hex(h).ok())
        else {
            continue;
        };
        ids.push(id);
        match repo.read_index_file(&id).await {
            Ok(f) => {
                for p in f.packs {
                    entries.entry(p.id).or_default().extend(p.blobs);
                }
            }
            Err(Error::NotFound { .. } | Error::Corrupt { .. } | Error::Unsupported(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((ids, entries))
}

/// Packs being filled with salvaged blobs, one per blob type.
struct Writer {
    open: HashMap<BlobType, PackBuilder>,
    written: Vec<IndexPack>,
}

impl Writer {
    async fn add(&mut self, repo: &Repository, e: &PackEntry, sealed: &[u8]) -> Result<()> {
        let target = match e.blob_type {
            BlobType::Tree => repo.config().tree_pack_target,
            _ => repo.config().data_pack_target,
        } as usize;
        let b = self
            .open
            .entry(e.blob_type)
            .or_insert_with(|| PackBuilder::new(repo.key(), e.blob_type, target));
        b.add(e.id, sealed, e.plain_len)
            .map_err(|err| Error::Invalid(format!("salvage of blob {}: {err}", e.id.short())))?;
        if b.len() >= target {
            if let Some(full) = self.open.remove(&e.blob_type) {
                self.finish(repo, full).await?;
            }
        }
        Ok(())
    }

    async fn finish(&mut self, repo: &Repository, b: PackBuilder) -> Result<()> {
        let pack = b
            .finish(repo.key(), &mut OsRng)
            .map_err(|e| Error::Invalid(format!("salvage pack: {e}")))?;
        repo.write_pack(&pack).await?;
        self.written.push(IndexPack {
            id: pack.id,
            blobs: pack.entries,
        });
        Ok(())
    }
}

/// Salvages the blobs of `damaged` packs that still authenticate into new packs (written
/// before this returns); `available` holds the blobs of the readable packs, which need no copy.
/// Returns the new packs, for the index, and one record per damaged pack.
pub(super) async fn salvage(
    repo: &Repository,
    damaged: &[PackId],
    old: &HashMap<PackId, Vec<PackEntry>>,
    available: &HashSet<BlobId>,
) -> Result<(Vec<IndexPack>, Vec<PackSalvage>)> {
    let mut writer = Writer {
        open: HashMap::new(),
        written: Vec::new(),
    };
    let mut copied: HashSet<BlobId> = HashSet::new();
    let mut records = Vec::new();
    for pack in damaged {
        let mut entries: Vec<PackEntry> = old.get(pack).cloned().unwrap_or_default();
        entries.sort_by_key(|e| (e.offset, e.id));
        entries.dedup_by_key(|e| e.id);
        let mut record = PackSalvage {
            pack: *pack,
            listed: entries.len() as u64,
            ..PackSalvage::default()
        };
        if entries.is_empty() {
            records.push(record);
            continue;
        }
        let bytes = match repo.storage().get(&pack_name(pack)).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => bytes::Bytes::new(),
            Err(e) => return Err(e),
        };
        for e in &entries {
            let r = e.range();
            let sealed = usize::try_from(r.start)
                .ok()
                .zip(usize::try_from(r.end).ok())
                .and_then(|(a, b)| bytes.get(a..b));
            let intact = sealed.filter(|s| e.open(repo.key(), s).is_ok());
            match intact {
                _ if available.contains(&e.id) || copied.contains(&e.id) => record.salvaged += 1,
                Some(s) => {
                    writer.add(repo, e, s).await?;
                    copied.insert(e.id);
                    record.salvaged += 1;
                }
                None => record.lost.push(e.id),
            }
        }
        records.push(record);
    }
    let open: Vec<PackBuilder> = writer.open.drain().map(|(_, b)| b).collect();
    for b in open {
        if !b.is_empty() {
            writer.finish(repo, b).await?;
        }
    }
    Ok((writer.written, records))
}

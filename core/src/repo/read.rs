//! Reading and writing repository objects: index, blobs, trees, snapshots, packs.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use cairn_format::{
    BlobId, DeltaBlock, FinishedPack, IndexFile, IndexId, Node, PackId, Snapshot, SnapshotId, Tree,
};
use futures::stream::{self, StreamExt, TryStreamExt};
use rand_core::OsRng;

use super::{DATA, INDEX, PRUNE, Repository, SNAPSHOTS};
use crate::error::{Error, Result};
use crate::index::{BlobLocation, Index};
use crate::storage::PutOutcome;

/// What [`Repository::prune_plans_checked`] returns: the plans read, and the damaged ones by
/// object name with their error.
pub type PlansChecked = (
    Vec<(IndexId, cairn_format::PrunePlan)>,
    Vec<(String, Error)>,
);

/// What [`Repository::read_index_files_checked`] returns: the index files read, and the
/// damaged ones with their error.
pub type IndexFilesChecked = (Vec<(IndexId, IndexFile)>, Vec<(IndexId, Error)>);

/// How many objects are fetched at once when loading many (index files, snapshots).
const FETCH_CONCURRENCY: usize = 16;

/// The object name of a pack.
pub fn pack_name(id: &PackId) -> String {
    format!("{DATA}/{id}")
}

/// The object name of an index file.
pub fn index_name(id: &IndexId) -> String {
    format!("{INDEX}/{id}")
}

/// The object name of a snapshot.
pub fn snapshot_name(id: &SnapshotId) -> String {
    format!("{SNAPSHOTS}/{id}")
}

/// The last path segment of an object name, parsed as a hex id; `None` for foreign objects
/// (readers ignore names that are not ids).
fn id_of<T: std::str::FromStr>(name: &str) -> Option<T> {
    name.rsplit('/').next().and_then(|h| h.parse().ok())
}

impl Repository {
    /// Reads and decodes one index file (through the local cache when one is set).
    pub async fn read_index_file(&self, id: &IndexId) -> Result<IndexFile> {
        let name = index_name(id);
        let bytes = self.get_cached(&name).await?;
        match IndexFile::open(&self.key, id, &bytes) {
            Ok(f) => Ok(f),
            Err(_) if self.cache_dir.is_some() => {
                // A damaged cache entry: read the store's copy and replace the entry.
                let fresh = self.storage.get(&name).await?;
                let f = IndexFile::open(&self.key, id, &fresh)
                    .map_err(|e| Error::format(name.clone(), e))?;
                if let Some(dir) = &self.cache_dir {
                    let _ = tokio::fs::write(dir.join(&name), &fresh).await;
                }
                Ok(f)
            }
            Err(e) => Err(Error::format(name, e)),
        }
    }

    /// Loads every index file into a fresh [`Index`]. Blobs also found outside packs condemned
    /// by a prune plan are located there.
    /// Index files that cannot be read are left out (their blobs cannot be located; a reader
    /// that misses one names them, see [`Index::damaged_files`]).
    pub async fn load_index(&self) -> Result<Index> {
        let condemned = self.condemned_packs().await?;
        let (files, damaged) = self.read_index_files_checked().await?;
        let mut index = Index::from_files_with(files, &condemned, false);
        index.note_damaged(damaged.into_iter().map(|(id, _)| index_name(&id)));
        Ok(index)
    }

    /// The index a backup deduplicates against: blobs only in condemned packs are left out, so
    /// a backup never comes to depend on a pack that prune is going to delete.
    /// Index files that cannot be read are left out: the backup stores again what only they
    /// list, so one damaged index file blocks no backup.
    pub async fn load_index_for_backup(&self) -> Result<Index> {
        let condemned = self.condemned_packs().await?;
        let (files, damaged) = self.read_index_files_checked().await?;
        let mut index = Index::from_files_with(files, &condemned, true);
        index.note_damaged(damaged.into_iter().map(|(id, _)| index_name(&id)));
        Ok(index)
    }

    /// Every prune plan, with its id. Fails on a plan that cannot be read (naming it).
    pub async fn prune_plans(&self) -> Result<Vec<(IndexId, cairn_format::PrunePlan)>> {
        let (plans, mut damaged) = self.prune_plans_checked().await?;
        match damaged.pop() {
            Some((_, e)) => Err(e),
            None => Ok(plans),
        }
    }

    /// Every prune plan that can be read, and the name and error of each damaged one. No prune
    /// executes a damaged plan (prune refuses to run while one exists, and with `ignore_damage`
    /// deletes it unexecuted), so backups may ignore damaged plans. A plan of a newer format is
    /// not damage: it fails the listing ("upgrade Cairn"), since a newer prune may execute it.
    pub async fn prune_plans_checked(&self) -> Result<PlansChecked> {
        let listed = self.storage.list(PRUNE).await?;
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for o in listed {
            let Some(id) = id_of::<IndexId>(&o.name) else {
                continue;
            };
            let bytes = match self.storage.get(&o.name).await {
                Ok(b) => b,
                // Executed and removed by another prune since the listing.
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            match cairn_format::PrunePlan::open(&self.key, id.as_bytes(), &bytes) {
                Ok(plan) => out.push((id, plan)),
                // Written by a newer Cairn: a newer prune may execute it, so it cannot be
                // ignored (SPEC §5.1).
                Err(e @ cairn_format::FormatError::UnsupportedVersion { .. }) => {
                    return Err(Error::format(o.name.clone(), e));
                }
                Err(e) => damaged.push((o.name.clone(), Error::format(o.name.clone(), e))),
            }
        }
        Ok((out, damaged))
    }

    /// Packs condemned by any prune plan that can be read (see
    /// [`Repository::prune_plans_checked`] for why damaged plans are ignored here).
    pub async fn condemned_packs(&self) -> Result<std::collections::HashSet<PackId>> {
        Ok(self
            .prune_plans_checked()
            .await?
            .0
            .into_iter()
            .flat_map(|(_, p)| p.condemned)
            .collect())
    }

    /// Every index file, decoded. A file listed but gone when fetched was deleted by a prune
    /// execution after it wrote the file that supersedes it (SPEC §11.3): the index is listed
    /// again (a few times at most) rather than reported missing.
    pub async fn read_index_files(&self) -> Result<Vec<(IndexId, IndexFile)>> {
        let (files, mut damaged) = self.read_index_files_checked().await?;
        match damaged.pop() {
            Some((_, e)) => Err(e),
            None => Ok(files),
        }
    }

    /// [`Repository::read_index_files`], with the index files that cannot be read (damaged,
    /// or of a newer format) apart, each with its error.
    pub async fn read_index_files_checked(&self) -> Result<IndexFilesChecked> {
        let mut damaged: Vec<(IndexId, Error)> = Vec::new();
        let mut read: std::collections::HashMap<IndexId, IndexFile> = Default::default();
        let mut attempt = 0;
        loop {
            let listed = self.storage.list(INDEX).await?;
            let ids: Vec<IndexId> = listed.iter().filter_map(|o| id_of(&o.name)).collect();
            let present: std::collections::HashSet<IndexId> = ids.iter().copied().collect();
            read.retain(|id, _| present.contains(id));
            let todo: Vec<IndexId> = ids
                .into_iter()
                .filter(|id| !read.contains_key(id))
                .collect();
            let fetched: Vec<(IndexId, Result<IndexFile>)> = stream::iter(todo)
                .map(|id| async move { (id, self.read_index_file(&id).await) })
                .buffer_unordered(FETCH_CONCURRENCY)
                .collect()
                .await;
            let mut vanished = None;
            damaged.clear();
            for (id, r) in fetched {
                match r {
                    Ok(f) => {
                        read.insert(id, f);
                    }
                    Err(e @ Error::NotFound { .. }) => vanished = Some(e),
                    Err(e @ (Error::Corrupt { .. } | Error::Unsupported(_))) => {
                        damaged.push((id, e));
                    }
                    Err(e) => return Err(e),
                }
            }
            match vanished {
                None => return Ok((read.into_iter().collect(), damaged)),
                Some(e) if attempt >= 4 => return Err(e),
                Some(_) => attempt += 1,
            }
        }
    }

    /// The shared index of this handle, loaded on first use.
    pub async fn index(&self) -> Result<Arc<RwLock<Index>>> {
        let loaded = self
            .index
            .get_or_try_init(|| async { self.load_index().await.map(|i| Arc::new(RwLock::new(i))) })
            .await?;
        Ok(loaded.clone())
    }

    /// Records a pack just written in this handle's shared index, when it is loaded (writers
    /// with their own index call this so that reads through the handle see new blobs).
    pub fn note_pack(&self, pack: PackId, entries: &[cairn_format::PackEntry]) {
        if let Some(index) = self.index.get() {
            if let Ok(mut i) = index.write() {
                i.add_pack(pack, entries);
            }
        }
    }

    /// Where a blob lives.
    pub async fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        let index = self.index().await?;
        let found = index
            .read()
            .map_err(|_| Error::Invalid("index lock poisoned".into()))?
            .get(id);
        found.ok_or_else(|| {
            let damaged = index
                .read()
                .map(|i| i.damaged_files().to_vec())
                .unwrap_or_default();
            Error::NotFound {
                object: match damaged.first() {
                    None => format!("blob {id} (not in any index)"),
                    Some(first) => format!(
                        "blob {id} (not in any index that could be read; {} index file(s) are \
                         damaged, first {first}: run `check`, then `repair index`)",
                        damaged.len()
                    ),
                },
            }
        })
    }

    /// Every pack in the store with its listing (size, modification time); objects in `data/`
    /// whose name is not a pack id are ignored.
    pub async fn list_packs(&self) -> Result<Vec<(PackId, crate::storage::ObjectInfo)>> {
        Ok(self
            .storage
            .list(DATA)
            .await?
            .into_iter()
            .filter_map(|o| Some((id_of::<PackId>(&o.name)?, o)))
            .collect())
    }

    /// Reads one blob: a ranged read of its pack, authenticated and checked against its id.
    pub async fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(id).await?;
        self.read_blob_at(id, &loc).await
    }

    /// Reads one blob at a known location.
    pub async fn read_blob_at(&self, id: &BlobId, loc: &BlobLocation) -> Result<Vec<u8>> {
        let name = pack_name(&loc.pack);
        let range = u64::from(loc.offset)..u64::from(loc.offset) + u64::from(loc.stored_len);
        let sealed = self.storage.get_range(&name, range).await?;
        if sealed.len() != loc.stored_len as usize {
            return Err(Error::format(
                format!("{name} (blob {})", id.short()),
                cairn_format::FormatError::Truncated {
                    what: "pack",
                    needed: loc.stored_len as usize,
                    available: sealed.len(),
                },
            ));
        }
        loc.entry(*id)
            .open(&self.key, &sealed)
            .map_err(|e| Error::format(format!("{name} (blob {})", id.short()), e))
    }

    /// Reads content block `index` of a file node: the blob itself, or, for a block stored as
    /// a patch ([`cairn_format::DeltaBlock`]), its base and patch, rebuilt and checked against the
    /// block's content id.
    pub async fn read_content_block(&self, node: &Node, index: usize) -> Result<Vec<u8>> {
        let Some(id) = node.content.get(index) else {
            return Err(Error::Invalid(format!(
                "content block {index} of a file of {} blocks",
                node.content.len()
            )));
        };
        match node.delta(index) {
            None => self.read_blob(id).await,
            Some(d) => {
                let (base, patch) =
                    futures::try_join!(self.read_blob(&d.base), self.read_blob(&d.patch))?;
                rebuild_block(&self.key.id_key(), id, d, &base, &patch)
            }
        }
    }

    /// Reads and decodes a tree.
    pub async fn read_tree(&self, id: &BlobId) -> Result<Tree> {
        let loc = self.locate(id).await?;
        self.read_tree_at(id, &loc).await
    }

    /// Reads and decodes a tree whose location is known (from an index the caller holds, such
    /// as a backup's own), without loading this handle's index.
    pub async fn read_tree_at(&self, id: &BlobId, loc: &BlobLocation) -> Result<Tree> {
        // Content-addressed: a data blob with the same bytes is the same tree, whatever type
        // its index entry records.
        let plain = match &self.cache_dir {
            Some(dir) => self.read_tree_cached(dir, id, loc).await?,
            None => self.read_blob_at(id, loc).await?,
        };
        Tree::decode(&plain).map_err(|e| Error::format(format!("tree {}", id.short()), e))
    }

    /// True when blob and tree reads through this handle complete on the calling thread
    /// without a tokio runtime (see [`crate::storage::Storage::reads_inline`]; a handle with a
    /// local cache uses `tokio::fs` and does not qualify). The index must be loaded already
    /// ([`Repository::index`]) for reads that locate blobs.
    pub fn reads_inline(&self) -> bool {
        self.cache_dir.is_none() && self.storage.reads_inline()
    }

    /// [`Repository::read_tree_at`] for a thread outside the runtime (a rayon worker). On a
    /// store whose reads run inline (a local directory, no cache) the read happens on this
    /// thread; elsewhere it blocks on `handle`.
    pub fn read_tree_at_blocking(
        &self,
        handle: &tokio::runtime::Handle,
        id: &BlobId,
        loc: &BlobLocation,
    ) -> Result<Tree> {
        let read = self.read_tree_at(id, loc);
        if self.reads_inline() {
            // No runtime is current here, so the local store reads in place instead of handing
            // each small read to a blocking-pool thread and back.
            futures::executor::block_on(read)
        } else {
            handle.block_on(read)
        }
    }

    /// Reads a tree blob through the local cache: trees are write-once and small, and a re-backup
    /// or `ls`/`find`/`diff` reads the same ones again. Cached envelopes are authenticated on
    /// every read; a damaged cache entry is replaced from the store.
    async fn read_tree_cached(
        &self,
        dir: &std::path::Path,
        id: &BlobId,
        loc: &BlobLocation,
    ) -> Result<Vec<u8>> {
        let path = dir.join("trees").join(id.to_hex());
        if let Ok(sealed) = tokio::fs::read(&path).await {
            if let Ok(plain) = loc.entry(*id).open(&self.key, &sealed) {
                return Ok(plain);
            }
        }
        let name = pack_name(&loc.pack);
        let range = u64::from(loc.offset)..u64::from(loc.offset) + u64::from(loc.stored_len);
        let sealed = self.storage.get_range(&name, range).await?;
        let plain = loc
            .entry(*id)
            .open(&self.key, &sealed)
            .map_err(|e| Error::format(format!("{name} (blob {})", id.short()), e))?;
        if let Some(parent) = path.parent() {
            let _ = tokio::fs::create_dir_all(parent).await;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if tokio::fs::write(&tmp, &sealed).await.is_ok() {
            let _ = tokio::fs::rename(&tmp, &path).await;
        }
        Ok(plain)
    }

    /// Writes a finished pack (never overwriting).
    pub async fn write_pack(&self, pack: &FinishedPack) -> Result<PutOutcome> {
        self.write_pack_bytes(&pack.id, Bytes::from(pack.bytes.clone()))
            .await
    }

    /// Writes a pack's bytes under its id (never overwriting); `Bytes` clones are cheap, so
    /// retries do not copy the pack.
    pub async fn write_pack_bytes(&self, id: &PackId, bytes: Bytes) -> Result<PutOutcome> {
        self.storage.put_new(&pack_name(id), bytes).await
    }

    /// Seals and writes an index file; returns its id.
    pub async fn write_index(&self, file: &IndexFile) -> Result<IndexId> {
        let (id, sealed) = file
            .seal(&self.key, &mut OsRng)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        self.storage
            .put_new(&index_name(&id), Bytes::from(sealed))
            .await?;
        Ok(id)
    }

    /// Seals and writes a snapshot; returns its id.
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotId> {
        let (id, sealed) = snapshot
            .seal(&self.key, &mut OsRng)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        self.storage
            .put_new(&snapshot_name(&id), Bytes::from(sealed))
            .await?;
        Ok(id)
    }

    /// Reads one snapshot.
    pub async fn read_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let name = snapshot_name(id);
        let bytes = self.storage.get(&name).await?;
        Snapshot::open(&self.key, id, &bytes).map_err(|e| Error::format(name, e))
    }

    /// Every snapshot, oldest first. Fails on the first snapshot that cannot be read (naming
    /// it); [`Repository::list_snapshots_checked`] skips and names such snapshots instead.
    pub async fn list_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let listed = self.storage.list(SNAPSHOTS).await?;
        let ids: Vec<SnapshotId> = listed.iter().filter_map(|o| id_of(&o.name)).collect();
        let mut all: Vec<(SnapshotId, Snapshot)> = stream::iter(ids)
            .map(|id| async move {
                match self.read_snapshot(&id).await {
                    Ok(s) => Ok(Some((id, s))),
                    // Forgotten (or removed by the snapshot guard) since the listing.
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await?;
        all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(all)
    }

    /// Finds a snapshot by `latest`, a full id, or a unique hex prefix. Snapshots that cannot be
    /// read do not stop the search: `latest` is the newest snapshot that reads, and a prefix that
    /// names only a damaged snapshot fails with that snapshot's error.
    pub async fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if spec.len() == 64 {
            if let Ok(id) = SnapshotId::from_hex(spec) {
                return Ok((id, self.read_snapshot(&id).await?));
            }
        }
        let (all, damaged) = self.list_snapshots_checked().await?;
        if spec == "latest" {
            return all.into_iter().last().ok_or_else(|| Error::NotFound {
                object: "snapshots/ (the repository has no readable snapshot)".into(),
            });
        }
        let want = spec.to_ascii_lowercase();
        let bad: Vec<SnapshotId> = damaged
            .iter()
            .filter_map(|d| d.snapshot_id())
            .filter(|id| id.to_hex().starts_with(&want))
            .collect();
        let mut matches = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&want));
        match (matches.next(), matches.next(), bad.as_slice()) {
            (Some(one), None, []) => Ok(one),
            // Read again: its error names it (or it was repaired in the meantime).
            (None, _, [one]) => self.read_snapshot(one).await.map(|s| (*one, s)),
            (None, _, []) => Err(Error::NotFound {
                object: format!("snapshot {spec}"),
            }),
            _ => Err(Error::Invalid(format!(
                "snapshot prefix {spec:?} is ambiguous"
            ))),
        }
    }

    /// Reads an object, through the local cache for write-once metadata when a cache is set.
    pub(crate) async fn get_cached(&self, name: &str) -> Result<Bytes> {
        if let Some(dir) = &self.cache_dir {
            let path = dir.join(name);
            if let Ok(b) = tokio::fs::read(&path).await {
                return Ok(Bytes::from(b));
            }
            let bytes = self.storage.get(name).await?;
            // Best effort: a cache that cannot be written only costs a later download.
            if let Some(parent) = path.parent() {
                let _ = tokio::fs::create_dir_all(parent).await;
            }
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if tokio::fs::write(&tmp, &bytes).await.is_ok() {
                let _ = tokio::fs::rename(&tmp, &path).await;
            }
            return Ok(bytes);
        }
        self.storage.get(name).await
    }
}

/// Rebuilds a block stored as a patch and checks it against its content id `id`.
pub(crate) fn rebuild_block(
    id_key: &cairn_format::IdKey,
    id: &BlobId,
    d: &DeltaBlock,
    base: &[u8],
    patch: &[u8],
) -> Result<Vec<u8>> {
    let object = || {
        format!(
            "block {} (patch {} on base {})",
            id.short(),
            d.patch.short(),
            d.base.short()
        )
    };
    if base.len() != d.len as usize {
        return Err(Error::format(
            object(),
            cairn_format::FormatError::Malformed {
                what: "delta block",
                reason: format!("the base is {} bytes, the block {}", base.len(), d.len),
            },
        ));
    }
    let block = cairn_format::delta::decode(base, patch, d.len as usize)
        .map_err(|e| Error::format(object(), e))?;
    let got = id_key.blob_id(&block);
    if got != *id {
        return Err(Error::format(
            object(),
            cairn_format::FormatError::IdMismatch {
                what: "delta block",
                expected: id.to_hex(),
                actual: got.to_hex(),
            },
        ));
    }
    Ok(block)
}

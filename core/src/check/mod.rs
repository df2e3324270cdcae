//! Check: is every snapshot fully restorable from what the store holds?
//!
//! Structure (always): every index entry points into a pack that exists and is long enough;
//! every snapshot's trees decode, and every blob they reference (trees and file content) is in
//! the index. With [`ReadData`], selected packs are downloaded whole: the pack id must match the
//! keyed hash of its bytes, its header must match the index, and every blob must open
//! (authenticate, decompress, hash to its id).

mod objects;
pub mod repair;
mod salvage;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cairn_format::{BlobId, NodeKind, PackId, SnapshotId};
use futures::stream::{self, StreamExt};

use crate::error::{Error, Result};
use crate::index::Index;
use crate::progress::Progress;
use crate::repo::{Repository, pack_name};

/// Which packs `check` downloads and verifies in full.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ReadData {
    /// None: structure only.
    #[default]
    None,
    /// Every pack.
    All,
    /// Subset `n` of `m` (1-based): packs whose id's first byte falls in the n-th of m buckets.
    /// Running `1/m` to `m/m` on successive days reads everything once.
    Subset(u32, u32),
    /// About this percentage of packs (chosen at random).
    Percent(f64),
    /// Packs chosen at random until about this many bytes are read.
    Bytes(u64),
}

/// Options of [`check`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CheckOptions {
    /// Which packs to read in full.
    pub read_data: ReadData,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The object concerned (`data/<id>`, `snapshots/<id>`, `blob <id>`, `index`).
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// What `check` found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Snapshots found, readable or not (those that cannot be read are problems).
    pub snapshots: u64,
    /// Packs in the store.
    pub packs: u64,
    /// Packs read in full.
    pub packs_read: u64,
    /// Bytes read in full.
    pub bytes_read: u64,
    /// Blobs in the index.
    pub blobs: u64,
    /// PostgreSQL clusters whose archived WAL was checked for continuity.
    pub wal_systems: u64,
    /// Packs in the store that no index lists (left by interrupted backups; prune removes them).
    pub unindexed_packs: Vec<PackId>,
    /// What reading packs in full found wrong with packs that no index lists (such as a damaged
    /// pack whose blobs `repair index` salvaged): nothing any snapshot can use is in them, so
    /// these are not [`CheckReport::problems`].
    pub unindexed_damaged: Vec<Problem>,
    /// Problems: empty means the repository is sound.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, object: impl Into<String>, message: impl Into<String>) {
        let object = object.into();
        let mut message = message.into();
        // Errors name their object; the problem already does.
        if let Some(rest) = message.strip_prefix(&format!("{object}: ")) {
            message = rest.to_owned();
        }
        self.problems.push(Problem { object, message });
    }
}

/// Checks the repository; see the module documentation.
pub async fn check(
    repo: &Repository,
    options: &CheckOptions,
    progress: Arc<dyn Progress>,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let sizes: HashMap<PackId, u64> = repo
        .list_packs()
        .await?
        .into_iter()
        .map(|(id, o)| (id, o.size))
        .collect();
    report.packs = sizes.len() as u64;
    objects::check_keys(repo, &mut report).await?;
    let index = objects::load_index(repo, &mut report).await?;
    report.blobs = index.len() as u64;

    // Index entries point into existing packs.
    let mut indexed_packs: HashSet<PackId> = HashSet::new();
    let mut by_pack: HashMap<PackId, Vec<(BlobId, crate::index::BlobLocation)>> = HashMap::new();
    for (id, loc) in index.iter() {
        indexed_packs.insert(loc.pack);
        by_pack.entry(loc.pack).or_default().push((id, loc));
    }
    for (pack, blobs) in &by_pack {
        match sizes.get(pack) {
            None => report.problem(
                pack_name(pack),
                format!("missing, but the index lists {} blobs in it", blobs.len()),
            ),
            Some(&size) => {
                if let Some((id, loc)) = blobs
                    .iter()
                    .find(|(_, l)| u64::from(l.offset) + u64::from(l.stored_len) > size)
                {
                    report.problem(
                        pack_name(pack),
                        format!(
                            "{size} bytes long, but blob {} is indexed at {}+{}",
                            id.short(),
                            loc.offset,
                            loc.stored_len
                        ),
                    );
                }
            }
        }
    }
    let mut unindexed: Vec<PackId> = sizes
        .keys()
        .filter(|p| !indexed_packs.contains(p))
        .copied()
        .collect();
    unindexed.sort();
    report.unindexed_packs = unindexed;

    // Snapshots reach only indexed blobs.
    let (snapshots, damaged) = repo.list_snapshots_checked().await?;
    report.snapshots = (snapshots.len() + damaged.len()) as u64;
    for d in damaged {
        report.problem(d.object, d.error);
    }
    progress.start("check trees", Some(snapshots.len() as u64), None);
    let mut seen_trees: HashSet<BlobId> = HashSet::new();
    for (sid, snap) in &snapshots {
        check_tree(
            repo,
            &index,
            &sizes,
            *sid,
            snap.tree,
            &mut seen_trees,
            &mut report,
        )
        .await;
        progress.items_done(1);
    }
    progress.finish("check trees");

    // WAL continuity, per cluster, from its oldest base backup's start on.
    check_wal(repo, &snapshots, &mut report).await?;

    // Read data.
    let mut chosen: Vec<PackId> = select(&options.read_data, &sizes);
    chosen.sort();
    progress.start(
        "read data",
        Some(chosen.len() as u64),
        Some(chosen.iter().filter_map(|p| sizes.get(p)).sum()),
    );
    let results: Vec<(PackId, u64, Vec<Problem>)> = stream::iter(chosen)
        .map(|pack| {
            let expected = by_pack.get(&pack).cloned().unwrap_or_default();
            async move { read_pack_fully(repo, pack, expected).await }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    for (pack, bytes, problems) in results {
        report.packs_read += 1;
        report.bytes_read += bytes;
        progress.items_done(1);
        progress.bytes_done(bytes);
        if indexed_packs.contains(&pack) {
            report.problems.extend(problems);
        } else {
            report.unindexed_damaged.extend(problems);
        }
    }
    progress.finish("read data");
    Ok(report)
}

fn select(read: &ReadData, sizes: &HashMap<PackId, u64>) -> Vec<PackId> {
    use rand::seq::SliceRandom;
    let mut all: Vec<PackId> = sizes.keys().copied().collect();
    match *read {
        ReadData::None => Vec::new(),
        ReadData::All => all,
        ReadData::Subset(n, m) => {
            let (n, m) = (n.max(1), m.max(1));
            all.into_iter()
                .filter(|p| {
                    let b = u32::from(p.as_bytes()[0]);
                    b * m / 256 + 1 == n
                })
                .collect()
        }
        ReadData::Percent(p) => {
            all.shuffle(&mut rand::thread_rng());
            let k = ((all.len() as f64) * p.clamp(0.0, 100.0) / 100.0).ceil() as usize;
            all.truncate(k);
            all
        }
        ReadData::Bytes(limit) => {
            all.shuffle(&mut rand::thread_rng());
            let mut total = 0;
            all.into_iter()
                .take_while(|p| {
                    let go = total < limit;
                    total += sizes.get(p).copied().unwrap_or(0);
                    go
                })
                .collect()
        }
    }
}

async fn check_tree(
    repo: &Repository,
    index: &Index,
    sizes: &HashMap<PackId, u64>,
    sid: SnapshotId,
    root: BlobId,
    seen: &mut HashSet<BlobId>,
    report: &mut CheckReport,
) {
    let mut stack = vec![(root, String::from("/"))];
    while let Some((tree_id, path)) = stack.pop() {
        if !seen.insert(tree_id) {
            continue;
        }
        let what = format!(
            "snapshots/{} tree {} ({path})",
            sid.short(),
            tree_id.short()
        );
        match index.get(&tree_id) {
            None => {
                report.problem(what, "tree blob not in the index");
                continue;
            }
            Some(loc) if !sizes.contains_key(&loc.pack) => {
                report.problem(what, format!("its pack {} is missing", loc.pack.short()));
                continue;
            }
            Some(_) => {}
        }
        let tree = match repo.read_tree(&tree_id).await {
            Ok(t) => t,
            Err(e) => {
                report.problem(what, e.to_string());
                continue;
            }
        };
        for node in tree.nodes {
            let child = format!(
                "{}{}{}",
                path,
                if path.ends_with('/') { "" } else { "/" },
                String::from_utf8_lossy(&node.name)
            );
            if node.kind == NodeKind::Dir {
                if let Some(s) = node.subtree {
                    stack.push((s, child));
                }
                continue;
            }
            for blob in &node.stored_blobs().collect::<Vec<_>>() {
                match index.get(blob) {
                    None => report.problem(
                        format!("snapshots/{} {child}", sid.short()),
                        format!("data blob {} not in the index", blob.short()),
                    ),
                    Some(loc) if !sizes.contains_key(&loc.pack) => report.problem(
                        format!("snapshots/{} {child}", sid.short()),
                        format!(
                            "data blob {} is in missing pack {}",
                            blob.short(),
                            loc.pack.short()
                        ),
                    ),
                    Some(_) => {}
                }
            }
            for d in &node.deltas {
                match index.get(&d.base) {
                    Some(loc) if loc.plain_len != d.len => report.problem(
                        format!("snapshots/{} {child}", sid.short()),
                        format!(
                            "block {}: base {} is {} bytes, the block {}",
                            d.index,
                            d.base.short(),
                            loc.plain_len,
                            d.len
                        ),
                    ),
                    _ => {}
                }
            }
        }
    }
}

async fn read_pack_fully(
    repo: &Repository,
    pack: PackId,
    expected: Vec<(BlobId, crate::index::BlobLocation)>,
) -> (PackId, u64, Vec<Problem>) {
    let name = pack_name(&pack);
    let mut problems = Vec::new();
    let bytes = match repo.storage().get(&name).await {
        Ok(b) => b,
        Err(e) => {
            problems.push(Problem {
                object: name,
                message: e.to_string(),
            });
            return (pack, 0, problems);
        }
    };
    let len = bytes.len() as u64;
    let key = repo.key();
    if let Err(e) = cairn_format::pack::check_pack_id(key, &pack, &bytes) {
        problems.push(Problem {
            object: name.clone(),
            message: format!("content does not match its name: {e}"),
        });
    }
    let entries = match cairn_format::read_pack(key, &bytes) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem {
                object: name.clone(),
                message: format!("header: {e}"),
            });
            // The index still says where its blobs are: name each one that does not open.
            for (id, loc) in &expected {
                let entry = loc.entry(*id);
                let r = entry.range();
                let blob = usize::try_from(r.start)
                    .ok()
                    .zip(usize::try_from(r.end).ok())
                    .and_then(|(a, b)| bytes.get(a..b));
                let opened = match blob {
                    None => Err(format!("cut off (the pack is {len} bytes)")),
                    Some(b) => entry.open(key, b).map(|_| ()).map_err(|e| e.to_string()),
                };
                if let Err(err) = opened {
                    problems.push(Problem {
                        object: name.clone(),
                        message: format!("blob {} ({}): {err}", id.short(), loc.blob_type.name()),
                    });
                }
            }
            return (pack, len, problems);
        }
    };
    let in_header: HashMap<BlobId, cairn_format::PackEntry> =
        entries.iter().map(|e| (e.id, *e)).collect();
    for (id, loc) in &expected {
        match in_header.get(id) {
            Some(e)
                if e.offset == loc.offset
                    && e.stored_len == loc.stored_len
                    && e.blob_type == loc.blob_type => {}
            _ => problems.push(Problem {
                object: name.clone(),
                message: format!(
                    "index entry for blob {} does not match the pack header",
                    id.short()
                ),
            }),
        }
    }
    for e in &entries {
        let r = e.range();
        let blob = bytes
            .get(r.start as usize..r.end as usize)
            .unwrap_or_default();
        if let Err(err) = e.open(key, blob) {
            problems.push(Problem {
                object: name.clone(),
                message: format!("blob {} ({}): {err}", e.id.short(), e.blob_type.name()),
            });
        }
    }
    (pack, len, problems)
}

impl From<Problem> for Error {
    fn from(p: Problem) -> Self {
        Error::Invalid(format!("{}: {}", p.object, p.message))
    }
}

/// Adds a problem for every gap in the archived WAL of each cluster that has base backups,
/// counted from the oldest base backup's first segment (older WAL is not needed).
async fn check_wal(
    repo: &Repository,
    snapshots: &[(SnapshotId, cairn_format::Snapshot)],
    report: &mut CheckReport,
) -> Result<()> {
    use crate::pg::wal::{WalRepo, list_systems, verify};
    let wal = WalRepo::from(repo);
    let systems = list_systems(&wal).await?;
    if systems.is_empty() {
        return Ok(());
    }
    // The readable base backups (the others are problems of their own already).
    let mut backups = Vec::new();
    for (_, s) in snapshots {
        if s.kind == cairn_format::SnapshotKind::PgBaseBackup {
            backups.push(crate::pg::basebackup::BaseBackupInfo::from_snapshot(s)?);
        }
    }
    for sysid in systems {
        let from = backups
            .iter()
            .filter(|i| i.system_identifier == sysid)
            .filter_map(|i| cairn_format::wal::SegmentName::parse(&i.start_wal).ok())
            .min_by_key(|s| (s.timeline, s.log, s.seg));
        let v = verify(&wal, sysid, from).await?;
        report.wal_systems += 1;
        for t in &v.timelines {
            for g in &t.gaps {
                report.problem(
                    format!("wal/{sysid:016x}"),
                    format!(
                        "timeline {}: {} segment(s) missing, {} .. {}",
                        t.timeline, g.count, g.first, g.last
                    ),
                );
            }
        }
        for p in &v.problems {
            report.problem(format!("wal/{sysid:016x}"), p.clone());
        }
    }
    Ok(())
}

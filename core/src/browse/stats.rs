//! Counting what snapshots hold and what they cost in the repository.

use std::collections::{HashMap, HashSet};

use cairn_format::{BlobId, NodeKind, Snapshot, Tree};
use futures::future::BoxFuture;

use super::{Reader, dir_subtree};
use crate::error::{Error, Result};
use crate::repo::Repository;

/// What [`stats`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StatsMode {
    /// Only what a restore would produce: counts and logical size. The blob fields stay 0.
    RestoreSize,
    /// Also the distinct blobs referenced and their plaintext and stored sizes (from the
    /// index), hence deduplication and compression ratios.
    #[default]
    RawData,
}

/// What a set of snapshots holds. Counts and sizes of files are summed over the snapshots (a
/// file in two snapshots counts twice); blob counts and sizes count each distinct blob once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Stats {
    /// The mode these were computed in.
    pub mode: StatsMode,
    /// Snapshots counted.
    pub snapshots: u64,
    /// Regular files (every path of a hard-linked file).
    pub files: u64,
    /// Directories (the snapshot roots not included).
    pub dirs: u64,
    /// Symlinks, devices, fifos and sockets.
    pub others: u64,
    /// Logical size: the sum of the sizes of the files.
    pub total_size: u64,
    /// Distinct data blobs referenced by files.
    pub data_blobs: u64,
    /// Distinct tree blobs (directories, snapshot roots included).
    pub tree_blobs: u64,
    /// Plaintext bytes of the distinct data blobs.
    pub data_plain_bytes: u64,
    /// Plaintext bytes of the distinct tree blobs.
    pub tree_plain_bytes: u64,
    /// Stored bytes (compressed, encrypted envelopes) of the distinct data and tree blobs.
    pub stored_bytes: u64,
    /// Referenced blobs not found in the index (counted in no size; run a check).
    pub missing_blobs: u64,
}

impl Stats {
    /// Distinct blobs referenced, data and trees.
    pub fn blobs(&self) -> u64 {
        self.data_blobs + self.tree_blobs
    }

    /// Plaintext bytes of the distinct blobs, data and trees.
    pub fn plain_bytes(&self) -> u64 {
        self.data_plain_bytes + self.tree_plain_bytes
    }

    /// Logical bytes per byte of distinct data plaintext: what deduplication saves (1.0 =
    /// nothing, 2.0 = half).
    pub fn dedup_ratio(&self) -> f64 {
        ratio(self.total_size, self.data_plain_bytes)
    }

    /// Plaintext bytes per stored byte (compression, net of encryption overhead).
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.plain_bytes(), self.stored_bytes)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// Counts what `snapshots` hold (see [`Stats`]). Each distinct tree is read once per call,
/// however many snapshots or directories share it.
pub async fn stats(repo: &Repository, snapshots: &[Snapshot], mode: StatsMode) -> Result<Stats> {
    let mut counter = Counter {
        reader: Reader::new(repo),
        raw: mode == StatsMode::RawData,
        memo: HashMap::new(),
        data: HashSet::new(),
    };
    let mut out = Stats {
        mode,
        ..Stats::default()
    };
    for s in snapshots {
        let c = counter.counts(s.tree, None).await?;
        out.snapshots += 1;
        out.files += c.files;
        out.dirs += c.dirs;
        out.others += c.others;
        out.total_size += c.size;
    }
    if counter.raw {
        let index = repo.index().await?;
        let index = index
            .read()
            .map_err(|_| Error::Invalid("index lock poisoned".into()))?;
        for id in counter.memo.keys() {
            match index.get(id) {
                Some(loc) => {
                    out.tree_blobs += 1;
                    out.tree_plain_bytes += u64::from(loc.plain_len);
                    out.stored_bytes += u64::from(loc.stored_len);
                }
                None => out.missing_blobs += 1,
            }
        }
        for id in &counter.data {
            match index.get(id) {
                Some(loc) => {
                    out.data_blobs += 1;
                    out.data_plain_bytes += u64::from(loc.plain_len);
                    out.stored_bytes += u64::from(loc.stored_len);
                }
                None => out.missing_blobs += 1,
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    files: u64,
    dirs: u64,
    others: u64,
    size: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.others += o.others;
        self.size += o.size;
    }
}

struct Counter {
    reader: Reader,
    raw: bool,
    /// Counts below each distinct tree (its keys are the distinct trees).
    memo: HashMap<BlobId, Counts>,
    /// Distinct data blobs (in raw mode).
    data: HashSet<BlobId>,
}

impl Counter {
    async fn counts(&mut self, id: BlobId, tree: Option<Tree>) -> Result<Counts> {
        if let Some(c) = self.memo.get(&id) {
            return Ok(*c);
        }
        let tree = match tree {
            Some(t) => t,
            None => self.reader.read(&id).await?,
        };
        let c = self.walk(tree).await?;
        self.memo.insert(id, c);
        Ok(c)
    }

    fn walk(&mut self, tree: Tree) -> BoxFuture<'_, Result<Counts>> {
        Box::pin(async move {
            let mut listed = HashSet::new();
            let ahead: Vec<BlobId> = tree
                .nodes
                .iter()
                .filter_map(dir_subtree)
                .filter(|id| !self.memo.contains_key(id) && listed.insert(*id))
                .collect();
            let mut ahead = self.reader.prefetch(ahead);
            let mut c = Counts::default();
            for node in tree.nodes {
                match node.kind {
                    NodeKind::File => {
                        c.files += 1;
                        c.size += node.size;
                        if self.raw {
                            self.data.extend(node.stored_blobs());
                        }
                    }
                    NodeKind::Dir => {
                        c.dirs += 1;
                        if let Some(id) = node.subtree {
                            let sub = if self.memo.contains_key(&id) {
                                ahead.skip(&id);
                                self.counts(id, None).await?
                            } else {
                                let t = ahead.get(&id).await?;
                                self.counts(id, Some(t)).await?
                            };
                            c.add(sub);
                        }
                    }
                    _ => c.others += 1,
                }
            }
            Ok(c)
        })
    }
}

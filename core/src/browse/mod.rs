//! Browsing snapshots: list a directory ([`ls`]), search by name ([`find`]), compare two
//! snapshots ([`diff`]) and count what they hold ([`stats`]).
//!
//! Every walk here leans on content addressing: a tree's id is the hash of everything below
//! it, so identical subtrees are recognised by id alone. [`diff`] never reads a subtree whose
//! id is the same on both sides, and [`find`] and [`stats`] read each distinct tree once per
//! call however many snapshots (or directories) share it. Subtrees are read ahead
//! concurrently ([`READ_AHEAD`] per directory, [`MAX_READS`] in flight per call), which is
//! what keeps walks fast on high-latency object stores.

mod diff;
mod find;
mod stats;

use std::collections::VecDeque;
use std::sync::Arc;

use cairn_format::{BlobId, Node, NodeKind, Snapshot, Tree};
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use diff::{Change, ChangeKind, diff};
pub use find::{FindOptions, find};
pub use stats::{Stats, StatsMode, stats};

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::walk;

/// Subtrees of one directory read ahead while it is being walked.
pub const READ_AHEAD: usize = 8;
/// Tree reads in flight at once in one browse call.
pub const MAX_READS: usize = 32;

/// A node of a snapshot with its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path inside the snapshot (`/home/me/notes.txt`), lossily converted to UTF-8
    /// for display.
    pub path: String,
    /// The same path as raw bytes (file names need not be UTF-8).
    pub raw_path: Vec<u8>,
    /// The node: kind, metadata, content.
    pub node: Node,
}

impl Entry {
    /// An entry at `raw_path`.
    pub fn new(raw_path: Vec<u8>, node: Node) -> Self {
        Self {
            path: String::from_utf8_lossy(&raw_path).into_owned(),
            raw_path,
            node,
        }
    }
}

/// Lists `path` in `snapshot`: the entries of a directory (every descendant, depth first in
/// name order, when `recursive`), or the entry itself when `path` is not a directory. The
/// directory itself is not listed. `path` is absolute inside the snapshot; `/` (or an empty
/// string) is the root.
pub async fn ls(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    recursive: bool,
) -> Result<Vec<Entry>> {
    let base = normalize(path);
    let tree_id = match walk::resolve(repo, snapshot.tree, path).await? {
        None => snapshot.tree,
        Some(n) if n.kind == NodeKind::Dir => subtree_of(&n, &base)?,
        Some(n) => return Ok(vec![Entry::new(base, n)]),
    };
    let reader = Reader::new(repo);
    let tree = reader.read(&tree_id).await?;
    let mut out = Vec::new();
    list(&reader, tree, base, recursive, &mut |e| out.push(e)).await?;
    Ok(out)
}

/// The absolute raw path for a user-given path: `/` plus its normal components.
pub(crate) fn normalize(path: &str) -> Vec<u8> {
    let parts = walk::components(path);
    if parts.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::new();
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    out
}

/// `parent/name` for raw paths (`parent` is absolute; `/` is the root).
pub(crate) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// The subtree of a directory node.
pub(crate) fn subtree_of(node: &Node, path: &[u8]) -> Result<BlobId> {
    node.subtree.ok_or_else(|| {
        Error::Invalid(format!(
            "{}: directory without a subtree",
            String::from_utf8_lossy(path)
        ))
    })
}

/// The subtree of a node when it is a directory.
pub(crate) fn dir_subtree(node: &Node) -> Option<BlobId> {
    match node.kind {
        NodeKind::Dir => node.subtree,
        _ => None,
    }
}

/// Reads trees for one browse call, bounding the reads in flight.
#[derive(Clone)]
pub(crate) struct Reader {
    repo: Repository,
    limit: Arc<Semaphore>,
}

impl Reader {
    pub(crate) fn new(repo: &Repository) -> Self {
        Self {
            repo: repo.clone(),
            limit: Arc::new(Semaphore::new(MAX_READS)),
        }
    }

    /// Reads one tree (waiting for a read slot).
    pub(crate) async fn read(&self, id: &BlobId) -> Result<Tree> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| Error::Invalid("tree reader closed".into()))?;
        self.repo.read_tree(id).await
    }

    /// Starts reading `ids`, in order, up to [`READ_AHEAD`] at a time.
    pub(crate) fn prefetch(&self, ids: Vec<BlobId>) -> Prefetch {
        let mut p = Prefetch {
            reader: self.clone(),
            pending: ids.into(),
            running: VecDeque::new(),
        };
        p.fill();
        p
    }
}

/// Trees being read ahead, handed out in the order they were asked for.
pub(crate) struct Prefetch {
    reader: Reader,
    pending: VecDeque<BlobId>,
    running: VecDeque<(BlobId, JoinHandle<Result<Tree>>)>,
}

impl Prefetch {
    fn fill(&mut self) {
        while self.running.len() < READ_AHEAD {
            let Some(id) = self.pending.pop_front() else {
                break;
            };
            let reader = self.reader.clone();
            let task = tokio::spawn(async move { reader.read(&id).await });
            self.running.push_back((id, task));
        }
    }

    /// The tree `id` if it is the next one read ahead; otherwise `None` (the caller reads it
    /// itself). Call in the order the ids were given, also for ids no longer needed, so that
    /// read-ahead stays in step.
    pub(crate) async fn take(&mut self, id: &BlobId) -> Option<Result<Tree>> {
        // `fill` keeps `running` non-empty while anything is pending.
        if self.running.front().map(|(f, _)| f) != Some(id) {
            return None;
        }
        let (_, task) = self.running.pop_front()?;
        self.fill();
        Some(
            task.await
                .unwrap_or_else(|e| Err(Error::Invalid(format!("tree read task failed: {e}")))),
        )
    }

    /// Drops the tree `id` if it is the next one (read ahead but not needed after all).
    pub(crate) fn skip(&mut self, id: &BlobId) {
        if self.running.front().map(|(f, _)| f) == Some(id) {
            if let Some((_, task)) = self.running.pop_front() {
                task.abort();
            }
            self.fill();
        }
    }

    /// The tree `id`: read ahead when it is next, else read now.
    pub(crate) async fn get(&mut self, id: &BlobId) -> Result<Tree> {
        match self.take(id).await {
            Some(t) => t,
            None => self.reader.read(id).await,
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        for (_, task) in &self.running {
            task.abort();
        }
    }
}

/// Emits every node of `tree` under `prefix` (and, when `recursive`, of its subtrees, depth
/// first in name order).
pub(crate) fn list<'a>(
    reader: &'a Reader,
    tree: Tree,
    prefix: Vec<u8>,
    recursive: bool,
    emit: &'a mut (dyn FnMut(Entry) + Send),
) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        let mut ahead = reader.prefetch(if recursive {
            tree.nodes.iter().filter_map(dir_subtree).collect()
        } else {
            Vec::new()
        });
        for node in tree.nodes {
            let path = join(&prefix, &node.name);
            let sub = if recursive { dir_subtree(&node) } else { None };
            emit(Entry::new(path.clone(), node));
            if let Some(id) = sub {
                let child = ahead.get(&id).await?;
                list(reader, child, path, true, &mut *emit).await?;
            }
        }
        Ok(())
    })
}

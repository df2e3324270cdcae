//! Comparing two snapshots.

use std::cmp::Ordering;

use cairn_format::{BlobId, Node, NodeKind, Snapshot};
use futures::future::BoxFuture;

use super::{Entry, Reader, dir_subtree, join, list};
use crate::error::Result;
use crate::repo::Repository;

/// How a path differs between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Only in the second snapshot.
    Added,
    /// Only in the first snapshot.
    Removed,
    /// In both, with the same kind, but different.
    Modified {
        /// The content differs: a file's blobs or size, a symlink's target, a device's number.
        /// Always false for directories, whose changed children are reported on their own.
        content: bool,
        /// The metadata differs: mode, owner (ids or names), modification time, or extended
        /// attributes. Access and change times, inode and link counts are not compared.
        metadata: bool,
    },
    /// In both, but of a different kind (a file became a directory, ...). What is below a
    /// directory on either side is not listed.
    TypeChanged,
}

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Absolute path inside the snapshots, lossy UTF-8.
    pub path: String,
    /// The same path as raw bytes.
    pub raw_path: Vec<u8>,
    /// What changed.
    pub kind: ChangeKind,
}

impl Change {
    fn new(raw_path: Vec<u8>, kind: ChangeKind) -> Self {
        Self {
            path: String::from_utf8_lossy(&raw_path).into_owned(),
            raw_path,
            kind,
        }
    }
}

/// The differences from snapshot `a` to snapshot `b`, depth first in name order.
///
/// Subtrees with the same id on both sides are identical and are not read. A directory only
/// in one snapshot is reported with everything below it.
pub async fn diff(repo: &Repository, a: &Snapshot, b: &Snapshot) -> Result<Vec<Change>> {
    let reader = Reader::new(repo);
    let mut out = Vec::new();
    diff_trees(&reader, a.tree, b.tree, b"/".to_vec(), &mut out).await?;
    Ok(out)
}

/// How `b` differs from `a` (two nodes of the same kind), or `None` when it does not.
fn compare(a: &Node, b: &Node) -> Option<ChangeKind> {
    let content = match a.kind {
        NodeKind::File => a.size != b.size || a.content != b.content,
        NodeKind::Symlink => a.target != b.target,
        NodeKind::BlockDevice | NodeKind::CharDevice => a.rdev != b.rdev,
        NodeKind::Dir | NodeKind::Fifo | NodeKind::Socket => false,
    };
    let metadata = a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.user != b.user
        || a.group != b.group
        || a.mtime != b.mtime
        || a.xattrs != b.xattrs;
    (content || metadata).then_some(ChangeKind::Modified { content, metadata })
}

fn diff_trees<'a>(
    reader: &'a Reader,
    a: BlobId,
    b: BlobId,
    prefix: Vec<u8>,
    out: &'a mut Vec<Change>,
) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        if a == b {
            return Ok(());
        }
        let (ta, tb) = futures::try_join!(reader.read(&a), reader.read(&b))?;
        let mut left = ta.nodes.into_iter().peekable();
        let mut right = tb.nodes.into_iter().peekable();
        loop {
            let order = match (left.peek(), right.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(x), Some(y)) => x.name.cmp(&y.name),
            };
            match order {
                Ordering::Less => {
                    if let Some(x) = left.next() {
                        whole(reader, x, &prefix, ChangeKind::Removed, out).await?;
                    }
                }
                Ordering::Greater => {
                    if let Some(y) = right.next() {
                        whole(reader, y, &prefix, ChangeKind::Added, out).await?;
                    }
                }
                Ordering::Equal => {
                    let (Some(x), Some(y)) = (left.next(), right.next()) else {
                        break;
                    };
                    let path = join(&prefix, &x.name);
                    if x.kind != y.kind {
                        out.push(Change::new(path, ChangeKind::TypeChanged));
                        continue;
                    }
                    if let Some(kind) = compare(&x, &y) {
                        out.push(Change::new(path.clone(), kind));
                    }
                    if let (Some(sa), Some(sb)) = (dir_subtree(&x), dir_subtree(&y)) {
                        diff_trees(reader, sa, sb, path, out).await?;
                    }
                }
            }
        }
        Ok(())
    })
}

/// Reports `node` (and everything below it) as added or removed.
async fn whole(
    reader: &Reader,
    node: Node,
    prefix: &[u8],
    kind: ChangeKind,
    out: &mut Vec<Change>,
) -> Result<()> {
    let path = join(prefix, &node.name);
    let sub = dir_subtree(&node);
    out.push(Change::new(path.clone(), kind));
    if let Some(id) = sub {
        let tree = reader.read(&id).await?;
        list(reader, tree, path, true, &mut |e: Entry| {
            out.push(Change::new(e.raw_path, kind));
        })
        .await?;
    }
    Ok(())
}

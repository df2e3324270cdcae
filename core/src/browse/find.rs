//! Finding nodes by glob pattern across snapshots.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use cairn_format::{BlobId, Node, Snapshot, SnapshotId, Tree};
use futures::future::BoxFuture;
use globset::{GlobBuilder, GlobMatcher};

use super::{Entry, Reader, dir_subtree, join};
use crate::error::{Error, Result};
use crate::repo::Repository;

/// Options of [`find`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FindOptions {
    /// Match regardless of case. Default: false.
    pub ignore_case: bool,
}

/// Finds the nodes matching `pattern` in `snapshots`.
///
/// A pattern without `/` is matched against file names (`*.pdf`, `report-202?.*`). A pattern
/// with `/` is matched against absolute paths inside the snapshot, where `*` stays within one
/// path component and `**` crosses any number (`/home/*/notes.txt`, `/etc/**/*.conf`); one that
/// does not start with `/` may match at any depth (`doc/*.txt` is `**/doc/*.txt`).
///
/// Results come per snapshot, in the order given, each depth first in name order. Each
/// distinct tree is read once per call: a subtree shared by many snapshots is walked once and
/// its matches are reported for every snapshot that holds it.
pub async fn find(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    pattern: &str,
    options: &FindOptions,
) -> Result<Vec<(SnapshotId, Entry)>> {
    let full_path = pattern.contains('/');
    let glob = if full_path && !pattern.starts_with('/') {
        format!("**/{pattern}")
    } else {
        pattern.to_owned()
    };
    let matcher = GlobBuilder::new(&glob)
        .literal_separator(full_path)
        .case_insensitive(options.ignore_case)
        .backslash_escape(true)
        .build()
        .map_err(|e| Error::Invalid(format!("pattern {pattern:?}: {e}")))?
        .compile_matcher();
    let mut finder = Finder {
        reader: Reader::new(repo),
        matcher,
        full_path,
        memo: HashMap::new(),
    };
    let mut out = Vec::new();
    for (id, snapshot) in snapshots {
        let found = finder.found(snapshot.tree, b"/".to_vec(), None).await?;
        expand(&found, b"/", *id, &mut out);
    }
    Ok(out)
}

/// The matches below one tree, relative to it, sharing the results of its subtrees.
#[derive(Debug, Default)]
struct Found {
    items: Vec<Hit>,
}

#[derive(Debug)]
enum Hit {
    /// A matching node of this tree.
    Node(Box<Node>),
    /// A subdirectory (by name) with matches below it.
    Sub(Vec<u8>, Arc<Found>),
}

struct Finder {
    reader: Reader,
    matcher: GlobMatcher,
    full_path: bool,
    /// Results by tree id (and, for full-path patterns, the path the tree is at).
    memo: HashMap<(BlobId, Vec<u8>), Arc<Found>>,
}

impl Finder {
    fn key(&self, id: BlobId, path: &[u8]) -> (BlobId, Vec<u8>) {
        (
            id,
            if self.full_path {
                path.to_vec()
            } else {
                Vec::new()
            },
        )
    }

    /// The matches below the tree `id` at `path`: memoised, or walked (from `tree` when it has
    /// been read already).
    async fn found(&mut self, id: BlobId, path: Vec<u8>, tree: Option<Tree>) -> Result<Arc<Found>> {
        let key = self.key(id, &path);
        if let Some(f) = self.memo.get(&key) {
            return Ok(f.clone());
        }
        let tree = match tree {
            Some(t) => t,
            None => self.reader.read(&id).await?,
        };
        let found = self.walk(tree, path).await?;
        self.memo.insert(key, found.clone());
        Ok(found)
    }

    fn walk(&mut self, tree: Tree, prefix: Vec<u8>) -> BoxFuture<'_, Result<Arc<Found>>> {
        Box::pin(async move {
            let mut listed = HashSet::new();
            let ahead: Vec<BlobId> = tree
                .nodes
                .iter()
                .filter_map(|n| {
                    let id = dir_subtree(n)?;
                    let key = self.key(id, &join(&prefix, &n.name));
                    (!self.memo.contains_key(&key) && listed.insert(id)).then_some(id)
                })
                .collect();
            let mut ahead = self.reader.prefetch(ahead);
            let mut items = Vec::new();
            for node in tree.nodes {
                let path = join(&prefix, &node.name);
                let matched = if self.full_path {
                    self.matcher.is_match(Path::new(OsStr::from_bytes(&path)))
                } else {
                    self.matcher
                        .is_match(Path::new(OsStr::from_bytes(&node.name)))
                };
                let sub = dir_subtree(&node).map(|id| (id, node.name.clone()));
                if matched {
                    items.push(Hit::Node(Box::new(node)));
                }
                let Some((id, name)) = sub else {
                    continue;
                };
                let found = if self.memo.contains_key(&self.key(id, &path)) {
                    ahead.skip(&id);
                    self.found(id, path, None).await?
                } else {
                    let tree = ahead.get(&id).await?;
                    self.found(id, path, Some(tree)).await?
                };
                if !found.items.is_empty() {
                    items.push(Hit::Sub(name, found));
                }
            }
            Ok(Arc::new(Found { items }))
        })
    }
}

fn expand(found: &Found, prefix: &[u8], snapshot: SnapshotId, out: &mut Vec<(SnapshotId, Entry)>) {
    for item in &found.items {
        match item {
            Hit::Node(n) => out.push((snapshot, Entry::new(join(prefix, &n.name), (**n).clone()))),
            Hit::Sub(name, f) => expand(f, &join(prefix, name), snapshot, out),
        }
    }
}

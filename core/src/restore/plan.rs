//! Planning a restore: walk the snapshot's trees (several reads in flight) and list what to
//! create, where, before any byte of content is fetched.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use cairn_format::{BlobId, Node, NodeKind};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::error::{Error, Result};
use crate::repo::Repository;

/// Tree reads in flight while planning.
const TREE_CONCURRENCY: usize = 16;

/// One thing to create: its path under the target and its snapshot node.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) path: PathBuf,
    pub(super) node: Node,
}

/// Everything a restore creates.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Directories with their depth below the target (parents before children after sorting).
    pub(super) dirs: Vec<(usize, Entry)>,
    /// Regular files (the first path of each hard-linked inode).
    pub(super) files: Vec<Entry>,
    /// Symlinks, fifos, device nodes, sockets.
    pub(super) others: Vec<Entry>,
    /// Further names of a hard-linked file: the entry and the index in `files` it links to.
    pub(super) links: Vec<(Entry, usize)>,
    /// Subtrees that could not be read.
    pub(super) errors: Vec<String>,
}

impl Plan {
    /// Total content bytes (each hard-linked inode once).
    pub(super) fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.node.size).sum()
    }
}

/// The components of an include path; `..` is refused rather than resolved.
fn include_parts(path: &str) -> Result<Vec<Vec<u8>>> {
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => parts.push(s.as_bytes().to_vec()),
            Component::ParentDir => {
                return Err(Error::Invalid(format!(
                    "include path {path:?}: `..` is not allowed"
                )));
            }
            _ => {}
        }
    }
    Ok(parts)
}

/// True when a node name is a plain, single path component (the format checks this when it
/// decodes a tree; checked again here because a restore must never leave its target).
fn safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
}

struct Builder<'a> {
    plan: Plan,
    queue: VecDeque<(PathBuf, BlobId, usize)>,
    /// First file of each hard-linked inode: (device, inode) -> index in `plan.files`.
    inodes: HashMap<(u64, u64), usize>,
    seen_dirs: HashSet<PathBuf>,
    target: &'a Path,
}

impl Builder<'_> {
    fn add(&mut self, path: PathBuf, node: Node, depth: usize) {
        match node.kind {
            NodeKind::Dir => {
                if let Some(sub) = node.subtree {
                    self.queue.push_back((path.clone(), sub, depth));
                }
                if self.seen_dirs.insert(path.clone()) {
                    self.plan.dirs.push((depth, Entry { path, node }));
                }
            }
            NodeKind::File => {
                if node.links > 1 {
                    let key = (node.device, node.inode);
                    if let Some(&first) = self.inodes.get(&key) {
                        let same = self.plan.files.get(first).is_some_and(|f| {
                            f.node.size == node.size && f.node.content == node.content
                        });
                        if same {
                            self.plan.links.push((Entry { path, node }, first));
                            return;
                        }
                    } else {
                        self.inodes.insert(key, self.plan.files.len());
                    }
                }
                self.plan.files.push(Entry { path, node });
            }
            _ => self.plan.others.push(Entry { path, node }),
        }
    }

    fn child_path(&mut self, dir: &Path, node: &Node) -> Option<PathBuf> {
        if safe_name(&node.name) {
            Some(dir.join(OsStr::from_bytes(&node.name)))
        } else {
            self.plan.errors.push(format!(
                "{}: unsafe name {:?} in the snapshot; skipped",
                dir.display(),
                String::from_utf8_lossy(&node.name)
            ));
            None
        }
    }

    /// Resolves one include path from the root, adding its ancestors as directories.
    async fn include(&mut self, repo: &Repository, root: BlobId, parts: &[Vec<u8>]) -> Result<()> {
        let shown = || {
            let mut s = String::new();
            for p in parts {
                s.push('/');
                s.push_str(&String::from_utf8_lossy(p));
            }
            s
        };
        let mut tree_id = root;
        let mut path = self.target.to_path_buf();
        for (i, part) in parts.iter().enumerate() {
            let tree = repo.read_tree(&tree_id).await?;
            let node = tree
                .nodes
                .into_iter()
                .find(|n| n.name == *part)
                .ok_or_else(|| Error::NotFound {
                    object: format!("{} in the snapshot", shown()),
                })?;
            path = match self.child_path(&path, &node) {
                Some(p) => p,
                None => return Err(Error::Invalid(format!("{}: unsafe name", shown()))),
            };
            if i + 1 == parts.len() {
                self.add(path.clone(), node, i + 1);
            } else {
                tree_id = match (node.kind, node.subtree) {
                    (NodeKind::Dir, Some(s)) => s,
                    _ => {
                        return Err(Error::NotFound {
                            object: format!(
                                "{} in the snapshot ({} is not a directory)",
                                shown(),
                                String::from_utf8_lossy(part)
                            ),
                        });
                    }
                };
                if self.seen_dirs.insert(path.clone()) {
                    let entry = Entry {
                        path: path.clone(),
                        node,
                    };
                    self.plan.dirs.push((i + 1, entry));
                }
            }
        }
        Ok(())
    }

    /// Reads every queued tree (and the trees below them), several at a time.
    async fn walk(&mut self, repo: &Repository) {
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < TREE_CONCURRENCY {
                let Some((path, id, depth)) = self.queue.pop_front() else {
                    break;
                };
                running.push(async move {
                    let tree = repo.read_tree(&id).await;
                    (path, id, depth, tree)
                });
            }
            let Some((path, id, depth, tree)) = running.next().await else {
                break;
            };
            match tree {
                Ok(tree) => {
                    for node in tree.nodes {
                        if let Some(p) = self.child_path(&path, &node) {
                            self.add(p, node, depth + 1);
                        }
                    }
                }
                Err(e) => self.plan.errors.push(format!(
                    "{}: directory listing (tree {}) unreadable: {e}",
                    path.display(),
                    id.short()
                )),
            }
        }
    }
}

/// Plans the restore of the tree `root` (or of the `include` paths in it) into `target`.
///
/// The root tree and the trees on the way to an include path must be readable (else `Err`);
/// a subtree below that cannot be read is recorded in [`Plan::errors`] and skipped.
pub(super) async fn build(
    repo: &Repository,
    root: BlobId,
    target: &Path,
    include: &[String],
) -> Result<Plan> {
    let mut b = Builder {
        plan: Plan::default(),
        queue: VecDeque::new(),
        inodes: HashMap::new(),
        seen_dirs: HashSet::new(),
        target,
    };
    let mut parts: Vec<Vec<Vec<u8>>> = include
        .iter()
        .map(|p| include_parts(p))
        .collect::<Result<_>>()?;
    parts.sort();
    parts.dedup();
    // Drop includes below another include: the outer one restores them already.
    let mut kept: Vec<Vec<Vec<u8>>> = Vec::new();
    for p in parts {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    if kept.is_empty() || kept.iter().any(|k| k.is_empty()) {
        // The whole snapshot: the root must be readable; the target itself has no node.
        let tree = repo.read_tree(&root).await?;
        for node in tree.nodes {
            if let Some(p) = b.child_path(target, &node) {
                b.add(p, node, 1);
            }
        }
    } else {
        for p in &kept {
            b.include(repo, root, p).await?;
        }
    }
    b.walk(repo).await;
    // Parents before children (a stable sort keeps discovery order within a depth).
    b.plan.dirs.sort_by_key(|(depth, _)| *depth);
    Ok(b.plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_paths() {
        assert_eq!(
            include_parts("/a/./b/").ok(),
            Some(vec![b"a".to_vec(), b"b".to_vec()])
        );
        assert_eq!(include_parts("/").ok(), Some(vec![]));
        assert!(include_parts("/a/../b").is_err());
        assert!(safe_name(b"x") && !safe_name(b"..") && !safe_name(b"a/b") && !safe_name(b""));
    }
}

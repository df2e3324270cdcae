//! Navigating snapshot trees.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use cairn_format::{BlobId, Node, NodeKind, Tree};

use crate::error::{Error, Result};
use crate::repo::Repository;

/// The components of a path inside a snapshot (`/usr/share/doc` -> `usr`, `share`, `doc`).
pub fn components(path: &str) -> Vec<&[u8]> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.as_bytes()),
            _ => None,
        })
        .collect()
}

/// Finds the node at `path` below the tree `root`. `Ok(None)` for the root itself (`/`, which
/// has no node); [`Error::NotFound`] when a component is missing or not a directory.
pub async fn resolve(repo: &Repository, root: BlobId, path: &str) -> Result<Option<Node>> {
    let parts = components(path);
    let mut tree_id = root;
    let mut found = None;
    for (i, part) in parts.iter().enumerate() {
        let tree = repo.read_tree(&tree_id).await?;
        let node = tree
            .nodes
            .into_iter()
            .find(|n| n.name.as_slice() == *part)
            .ok_or_else(|| Error::NotFound {
                object: format!("{path} in the snapshot"),
            })?;
        if i + 1 < parts.len() {
            tree_id = match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(s)) => s,
                _ => {
                    return Err(Error::NotFound {
                        object: format!(
                            "{path} in the snapshot ({} is not a directory)",
                            String::from_utf8_lossy(part)
                        ),
                    });
                }
            };
        }
        found = Some(node);
    }
    Ok(found)
}

/// The tree at `path` (a directory) below `root`.
pub async fn resolve_tree(repo: &Repository, root: BlobId, path: &str) -> Result<(BlobId, Tree)> {
    let id = match resolve(repo, root, path).await? {
        None => root,
        Some(n) => n
            .subtree
            .ok_or_else(|| Error::Invalid(format!("{path} is not a directory")))?,
    };
    Ok((id, repo.read_tree(&id).await?))
}

//! Writing one file of a snapshot to a writer.

use std::io::Write;

use cairn_format::{FormatError, NodeKind, Snapshot};
use futures::StreamExt;
use futures::stream;

use crate::error::{Error, Result};
use crate::repo::Repository;

/// Blobs read ahead by [`dump`].
const DUMP_PREFETCH: usize = 4;

/// Writes the content of the file at `path` in `snapshot` to `out`, every blob verified;
/// returns the number of bytes written. A directory (or another non-regular file) is
/// [`Error::Invalid`]; a missing path is [`Error::NotFound`]; a damaged blob fails the dump.
pub async fn dump(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let node = match crate::walk::resolve(repo, snapshot.tree, path).await? {
        Some(n) if n.kind == NodeKind::File => n,
        None => {
            return Err(Error::Invalid(format!(
                "{path} is a directory; dump writes the content of one file"
            )));
        }
        Some(n) if n.kind == NodeKind::Dir => {
            return Err(Error::Invalid(format!(
                "{path} is a directory; dump writes the content of one file"
            )));
        }
        Some(n) => {
            return Err(Error::Invalid(format!(
                "{path} is not a regular file ({:?})",
                n.kind
            )));
        }
    };
    let node = &node;
    let mut blobs = stream::iter(0..node.content.len())
        .map(|i| repo.read_content_block(node, i))
        .buffered(DUMP_PREFETCH);
    let mut written = 0u64;
    while let Some(plain) = blobs.next().await {
        let plain = plain?;
        out.write_all(&plain)
            .map_err(|e| Error::io("<dump output>", e))?;
        written += plain.len() as u64;
    }
    out.flush().map_err(|e| Error::io("<dump output>", e))?;
    if written != node.size {
        return Err(Error::Corrupt {
            object: format!("{path} in the snapshot"),
            source: FormatError::Malformed {
                what: "file content",
                reason: format!(
                    "content is {written} bytes, the snapshot records {}",
                    node.size
                ),
            },
        });
    }
    Ok(written)
}

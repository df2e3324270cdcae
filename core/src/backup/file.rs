//! Reading a regular file for a backup, and noticing when it changes meanwhile.
//!
//! A file backup stats the open file before and after reading it. When size, modification or
//! change time, or inode differ, another process wrote it while it was read and the copy may
//! be torn (half old, half new): it is read again, up to [`READS`] times in all. A file still
//! changing after that is stored as last read, with a warning (the CLI then exits 8), and with
//! the times of the stat taken before that read, so the next backup reads it again rather than
//! taking the torn copy as unchanged. Base backups (a [`super::Policy`] is set) read files that
//! PostgreSQL writes while they are copied by design (WAL replay repairs them): no re-reads,
//! no warnings.

use std::path::Path;

use cairn_format::Node;

use super::archiver::{Content, Ctx};
use super::meta::{refresh, same_version};
use crate::error::Result;

/// Reads of a file that keeps changing, in all.
pub(crate) const READS: usize = 3;

impl Ctx {
    /// Reads and stores `path`'s content (or takes the content read earlier for another hard
    /// link of it). `node` is the file's node from its stat; with change detection its times
    /// and size are updated to those of the version read. The outer error is opening or
    /// stating the file, the inner one storing its content.
    pub(crate) fn file_content(
        &self,
        path: &Path,
        node: &mut Node,
        fixed: Option<usize>,
        parent: Option<&Node>,
    ) -> std::io::Result<Result<Content>> {
        let key = (node.device, node.inode);
        if node.links > 1 {
            if let Some(c) = self
                .hardlinks
                .lock()
                .ok()
                .and_then(|m| m.get(&key).cloned())
            {
                if c.size == node.size {
                    return Ok(Ok(Content { size: 0, ..c }));
                }
            }
        }
        let detect = self.policy.is_none();
        let mut reads = 0;
        let content = loop {
            reads += 1;
            let mut f = std::fs::File::open(path)?;
            let before = f.metadata()?;
            let out = self.store_stream(&mut f, fixed, Some(before.len()), parent);
            let Ok(c) = out else { return Ok(out) };
            if !detect {
                if c.size != node.size && c.size != 0 {
                    self.progress.warn(path, "file changed while being read");
                }
                break c;
            }
            let after = f.metadata()?;
            let stable = same_version(&before, &after) && c.size == before.len();
            if stable || reads >= READS {
                refresh(node, &before, self.atime);
                if !stable {
                    self.warn(
                        path,
                        format!(
                            "changed while being read ({READS} reads); the last copy read is \
                             stored and may be inconsistent"
                        ),
                    );
                }
                break c;
            }
        };
        if node.links > 1 {
            if let Ok(mut m) = self.hardlinks.lock() {
                m.insert(key, content.clone());
            }
        }
        Ok(Ok(content))
    }
}

//! Progress reporting: an injectable trait with a no-op default.
//!
//! Long operations (backup, restore, check) report through a [`Progress`]: the CLI draws bars
//! from it, `--json` prints events, and services can export metrics from the same calls. Every
//! method has an empty default, so an implementation overrides only what it shows.

use std::path::Path;

/// Receives progress events. Calls may come from several threads at once.
pub trait Progress: Send + Sync {
    /// A phase starts (`"scan"`, `"backup"`, `"restore"`, ...), with totals when known.
    fn start(&self, _phase: &str, _total_items: Option<u64>, _total_bytes: Option<u64>) {}
    /// An item (file, directory) is being worked on.
    fn item(&self, _path: &Path) {}
    /// `n` more items are done.
    fn items_done(&self, _n: u64) {}
    /// `n` more bytes are done (read for a backup, written for a restore).
    fn bytes_done(&self, _n: u64) {}
    /// Something was skipped or went wrong without stopping the operation.
    fn warn(&self, _path: &Path, _message: &str) {}
    /// The phase ended.
    fn finish(&self, _phase: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

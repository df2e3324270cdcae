//! Walks file trees and streams, chunks, deduplicates and seals their content, and builds trees.
//!
//! Runs on a rayon pool: directories and files are processed in parallel by work stealing, and
//! the chunks of one large file are sealed in parallel too. Content goes to the [`Packer`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cairn_format::envelope::{self, Compression};
use cairn_format::{BlobId, BlobType, Chunker, Node, NodeKind, Tree};
use rayon::prelude::*;

use super::exclude::Excludes;
use super::meta::{Names, node_from, unchanged};
use crate::error::{Error, Result};
use crate::packer::Packer;
use crate::progress::Progress;
use crate::repo::Repository;

/// Bytes of a file read and chunked at a time (the chunks of one window are sealed in parallel).
const WINDOW: usize = 16 << 20;

/// What to do with one file-system entry (decided by a caller-supplied rule, e.g. PostgreSQL's
/// list of what a base backup leaves out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Back it up as usual.
    Keep,
    /// Leave it out.
    Skip,
    /// A directory: keep it, but not its contents.
    EmptyDir,
    /// A file: cut it into fixed blocks of this many bytes (pages change in place).
    FixedBlocks(usize),
}

/// A rule deciding the [`Policy`] of each entry from its path and metadata.
pub type PolicyFn = std::sync::Arc<dyn Fn(&Path, &std::fs::Metadata) -> Policy + Send + Sync>;

/// Content of hard-linked files already read: (device, inode) -> (size, content blobs).
pub(crate) type HardLinks = HashMap<(u64, u64), (u64, Vec<BlobId>)>;

/// Counters shared by all workers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub files_new: AtomicU64,
    pub files_changed: AtomicU64,
    pub files_unchanged: AtomicU64,
    pub dirs_new: AtomicU64,
    pub dirs_changed: AtomicU64,
    pub dirs_unchanged: AtomicU64,
    pub bytes_read: AtomicU64,
    pub total_bytes: AtomicU64,
    pub errors: AtomicU64,
}

/// Everything a worker needs.
pub(crate) struct Ctx {
    pub repo: Repository,
    pub packer: Packer,
    pub chunker: Chunker,
    pub compression: Compression,
    pub excludes: Excludes,
    pub one_file_system: bool,
    pub progress: Arc<dyn Progress>,
    pub counters: Counters,
    pub names: Names,
    pub policy: Option<PolicyFn>,
    pub atime: bool,
    pub handle: tokio::runtime::Handle,
    /// Content of hard-linked files already read in this backup, by (device, inode).
    pub hardlinks: Mutex<HardLinks>,
    pub warnings: Mutex<Vec<String>>,
}

impl Ctx {
    fn warn(&self, path: &Path, msg: String) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.progress.warn(path, &msg);
        if let Ok(mut w) = self.warnings.lock() {
            w.push(format!("{}: {msg}", path.display()));
        }
    }

    /// True when every blob is in the backup's index: the parent's content may only be reused
    /// when none of it sits in packs that prune has condemned.
    fn all_indexed(&self, ids: &[BlobId]) -> Result<bool> {
        for id in ids {
            if !self.packer.has(id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Stores a blob unless the repository already has it; returns its id.
    pub(crate) fn store(&self, blob_type: BlobType, plain: &[u8]) -> Result<BlobId> {
        let id = self.packer.key().id_key().blob_id(plain);
        if !self.packer.claim(&id)? {
            let sealed = envelope::seal(
                self.packer.key(),
                blob_type.object_kind(),
                id.as_bytes(),
                plain,
                self.compression,
                &mut rand::thread_rng(),
            )
            .map_err(|e| Error::Invalid(format!("seal: {e}")))?;
            self.packer
                .add(blob_type, id, &sealed, plain.len() as u32)?;
        }
        Ok(id)
    }

    /// Stores a stream as the content of a new regular file node named `name` (mode `mode`,
    /// owned by the current user, times now).
    pub(crate) fn stream_file(&self, name: &str, reader: &mut dyn Read, mode: u32) -> Result<Node> {
        let (content, size) = self.store_stream(reader, None, None)?;
        let mut node = Node::new(name.as_bytes().to_vec(), NodeKind::File);
        let t = crate::repo::now();
        node.mode = mode;
        node.mtime = t;
        node.ctime = t;
        node.atime = t;
        node.size = size;
        node.links = 1;
        node.uid = nix::unistd::getuid().as_raw();
        node.gid = nix::unistd::getgid().as_raw();
        node.content = content;
        Ok(node)
    }

    /// Encodes and stores a tree; returns its id.
    pub(crate) fn store_tree(&self, mut tree: Tree) -> Result<BlobId> {
        tree.sort();
        let plain = tree
            .encode()
            .map_err(|e| Error::Invalid(format!("tree: {e}")))?;
        self.store(BlobType::Tree, &plain)
    }

    /// Reads a parent subtree (blocking the worker on the async read).
    fn parent_tree(&self, id: Option<BlobId>) -> Option<Tree> {
        let id = id?;
        match self.handle.block_on(self.repo.read_tree(&id)) {
            Ok(t) => Some(t),
            Err(e) => {
                // A damaged parent only costs a full read of this directory.
                self.progress.warn(
                    Path::new("/"),
                    &format!("parent tree {}: {e}; reading files again", id.short()),
                );
                None
            }
        }
    }

    /// Chunks, deduplicates and stores a stream; returns its content blobs and size.
    /// With `fixed`, chunks are cut every `fixed` bytes instead of by content (for data that
    /// changes in place, like database pages).
    pub(crate) fn store_stream(
        &self,
        reader: &mut dyn Read,
        fixed: Option<usize>,
        size_hint: Option<u64>,
    ) -> Result<(Vec<BlobId>, u64)> {
        let max = fixed.unwrap_or(self.chunker.params().max_size as usize);
        let window = WINDOW.max(2 * max);
        let mut buf: Vec<u8> = Vec::with_capacity(
            size_hint.map_or(window, |n| (n as usize).saturating_add(1).min(window)),
        );
        let mut ids = Vec::new();
        let mut total = 0u64;
        let mut eof = false;
        while !eof || !buf.is_empty() {
            // Fill the window. `read_to_end` on a `take` reads into spare capacity without
            // zero-filling it first (which cost a third of the CPU on trees of small files).
            while !eof && buf.len() < window {
                let before = buf.len();
                let want = (window - before) as u64;
                let n = loop {
                    match (&mut *reader).take(want).read_to_end(&mut buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(Error::io("<input>", e)),
                    }
                };
                if (n as u64) < want {
                    eof = true;
                }
                total += n as u64;
                self.counters
                    .bytes_read
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.progress.bytes_done(n as u64);
            }
            // Cut as many chunks as the window allows.
            let mut cuts = Vec::new();
            let mut pos = 0;
            while pos < buf.len() {
                let rest = buf.get(pos..).unwrap_or_default();
                let next = match fixed {
                    Some(b) if rest.len() >= b => Some(b),
                    Some(_) => eof.then_some(rest.len()),
                    None => self.chunker.next_chunk(rest, eof),
                };
                match next {
                    Some(len) if len > 0 => {
                        cuts.push(pos..pos + len);
                        pos += len;
                    }
                    _ => break,
                }
            }
            if cuts.is_empty() && eof && !buf.is_empty() {
                cuts.push(0..buf.len());
                pos = buf.len();
            }
            let chunk_ids: Vec<BlobId> = cuts
                .par_iter()
                .map(|r| self.store(BlobType::Data, buf.get(r.clone()).unwrap_or_default()))
                .collect::<Result<_>>()?;
            ids.extend(chunk_ids);
            buf.drain(..pos);
            if eof && pos == 0 {
                break;
            }
        }
        Ok((ids, total))
    }

    fn file_content(
        &self,
        path: &Path,
        node: &Node,
        fixed: Option<usize>,
    ) -> std::io::Result<Result<(Vec<BlobId>, u64)>> {
        let key = (node.device, node.inode);
        if node.links > 1 {
            if let Some((size, ids)) = self
                .hardlinks
                .lock()
                .ok()
                .and_then(|m| m.get(&key).cloned())
            {
                if size == node.size {
                    return Ok(Ok((ids, 0)));
                }
            }
        }
        let mut f = std::fs::File::open(path)?;
        let out = self.store_stream(&mut f, fixed, Some(node.size));
        if let (Ok((ids, size)), true) = (&out, node.links > 1) {
            if let Ok(mut m) = self.hardlinks.lock() {
                m.insert(key, (*size, ids.clone()));
            }
        }
        Ok(out)
    }

    /// Backs up one file-system entry; `old` is the node of the same name in the parent snapshot.
    /// Returns `None` when the entry is excluded or unreadable (a warning is recorded).
    pub(crate) fn entry(
        &self,
        path: &Path,
        name: &[u8],
        old: Option<&Node>,
        root_dev: Option<u64>,
    ) -> Result<Option<Node>> {
        let md = match std::fs::symlink_metadata(path) {
            Ok(md) => md,
            Err(e) => {
                self.warn(path, format!("cannot stat: {e}"));
                return Ok(None);
            }
        };
        let is_file = md.is_file();
        if self.excludes.excludes(path, is_file, md.size()) {
            return Ok(None);
        }
        let policy = self.policy.as_ref().map_or(Policy::Keep, |p| p(path, &md));
        if policy == Policy::Skip {
            return Ok(None);
        }
        let fixed = match policy {
            Policy::FixedBlocks(b) => Some(b),
            _ => None,
        };
        let mut node = match node_from(path, name, &md, &self.names, self.atime) {
            Ok(n) => n,
            Err(e) => {
                self.warn(path, format!("cannot read metadata: {e}"));
                return Ok(None);
            }
        };
        self.progress.item(path);
        match node.kind {
            NodeKind::File => {
                self.counters
                    .total_bytes
                    .fetch_add(node.size, Ordering::Relaxed);
                match old {
                    Some(o) if unchanged(o, &node) && self.all_indexed(&o.content)? => {
                        node.content = o.content.clone();
                        self.counters
                            .files_unchanged
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        match self.file_content(path, &node, fixed) {
                            Ok(Ok((ids, size))) => {
                                node.content = ids;
                                if size != node.size && size != 0 {
                                    // The file changed while it was read: keep what was read.
                                    self.progress.warn(path, "file changed while being read");
                                    node.size = size;
                                }
                            }
                            Ok(Err(e)) => match e {
                                Error::Io { source, .. } => {
                                    self.warn(path, format!("read error: {source}"));
                                    return Ok(None);
                                }
                                other => return Err(other),
                            },
                            Err(e) => {
                                self.warn(path, format!("cannot open: {e}"));
                                return Ok(None);
                            }
                        }
                        let counter = if old.is_some() {
                            &self.counters.files_changed
                        } else {
                            &self.counters.files_new
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.progress.items_done(1);
            }
            NodeKind::Dir => {
                let crosses = root_dev.is_some_and(|d| d != node.device);
                let subtree = if crosses
                    || policy == Policy::EmptyDir
                    || self.excludes.excludes_dir_contents(path)
                {
                    self.store_tree(Tree::default())?
                } else {
                    self.dir(path, old.and_then(|o| o.subtree), root_dev)?
                };
                let counter = match old.and_then(|o| o.subtree) {
                    None => &self.counters.dirs_new,
                    Some(s) if s == subtree => &self.counters.dirs_unchanged,
                    Some(_) => &self.counters.dirs_changed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                node.subtree = Some(subtree);
            }
            _ => {}
        }
        Ok(Some(node))
    }

    /// Backs up a directory's contents; returns its tree id.
    pub(crate) fn dir(
        &self,
        path: &Path,
        old: Option<BlobId>,
        root_dev: Option<u64>,
    ) -> Result<BlobId> {
        let parent = self.parent_tree(old);
        let old_nodes: HashMap<&[u8], &Node> = parent
            .as_ref()
            .map(|t| t.nodes.iter().map(|n| (n.name.as_slice(), n)).collect())
            .unwrap_or_default();
        let mut names: Vec<OsString> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
            Err(e) => {
                self.warn(path, format!("cannot list directory: {e}"));
                Vec::new()
            }
        };
        names.sort();
        let nodes: Vec<Option<Node>> = names
            .par_iter()
            .map(|n| {
                let name = n.as_bytes();
                self.entry(&path.join(n), name, old_nodes.get(name).copied(), root_dev)
            })
            .collect::<Result<_>>()?;
        self.store_tree(Tree {
            nodes: nodes.into_iter().flatten().collect(),
        })
    }
}

/// A virtual directory of the snapshot root: the absolute paths given to a backup, merged.
#[derive(Debug, Default)]
pub(crate) struct Virtual {
    /// Children that are themselves virtual (intermediate directories).
    pub dirs: std::collections::BTreeMap<Vec<u8>, Virtual>,
    /// Children that are backed up from disk.
    pub real: std::collections::BTreeMap<Vec<u8>, PathBuf>,
    /// Set when `/` itself is backed up: the root is the real root directory.
    pub whole: bool,
}

impl Virtual {
    /// Adds an absolute path.
    pub(crate) fn insert(&mut self, path: &Path) {
        let parts: Vec<&[u8]> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(s) => Some(s.as_bytes()),
                _ => None,
            })
            .collect();
        let Some((last, dirs)) = parts.split_last() else {
            // `/` itself: everything below the root.
            self.whole = true;
            return;
        };
        let mut v = self;
        for d in dirs {
            if v.real.contains_key(*d) {
                return; // an ancestor is already backed up whole
            }
            v = v.dirs.entry(d.to_vec()).or_default();
        }
        v.dirs.remove(*last);
        v.real.insert(last.to_vec(), path.to_path_buf());
    }
}

impl Ctx {
    /// Backs up a virtual directory at `at` (an absolute path on disk); returns its tree id.
    pub(crate) fn virtual_dir(
        &self,
        v: &Virtual,
        at: &Path,
        old: Option<BlobId>,
    ) -> Result<BlobId> {
        if v.whole {
            let root_dev = if self.one_file_system {
                std::fs::symlink_metadata(at).ok().map(|m| m.dev())
            } else {
                None
            };
            return self.dir(at, old, root_dev);
        }
        let parent = self.parent_tree(old);
        let old_nodes: HashMap<&[u8], &Node> = parent
            .as_ref()
            .map(|t| t.nodes.iter().map(|n| (n.name.as_slice(), n)).collect())
            .unwrap_or_default();
        let mut nodes = Vec::new();
        for (name, sub) in &v.dirs {
            let path = at.join(std::ffi::OsStr::from_bytes(name));
            let md = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            let mut node = node_from(&path, name, &md, &self.names, self.atime)
                .map_err(|e| Error::io(&path, e))?;
            let old_sub = old_nodes.get(name.as_slice()).and_then(|n| n.subtree);
            node.subtree = Some(self.virtual_dir(sub, &path, old_sub)?);
            nodes.push(node);
        }
        let real: Vec<Option<Node>> = v
            .real
            .par_iter()
            .map(|(name, path)| {
                let root_dev = if self.one_file_system {
                    std::fs::symlink_metadata(path).ok().map(|m| m.dev())
                } else {
                    None
                };
                let node = self.entry(
                    path,
                    name,
                    old_nodes.get(name.as_slice()).copied(),
                    root_dev,
                )?;
                if node.is_none() && std::fs::symlink_metadata(path).is_err() {
                    return Err(Error::NotFound {
                        object: path.display().to_string(),
                    });
                }
                Ok(node)
            })
            .collect::<Result<_>>()?;
        nodes.extend(real.into_iter().flatten());
        self.store_tree(Tree { nodes })
    }
}

//! Walks file trees and streams, chunks, deduplicates and seals their content, and builds trees.
//!
//! Runs on a rayon pool: directories and files are processed in parallel by work stealing, and
//! the chunks of one large file are sealed in parallel too. Content goes to the [`Packer`].

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cairn_format::envelope::{self, Compression};
use cairn_format::{BlobId, BlobType, Chunker, DeltaBlock, Node, NodeKind, Tree};
use futures::StreamExt;
use rayon::prelude::*;

use super::exclude::Excludes;
use super::meta::{Names, node_from, unchanged};
use crate::error::{Error, Result};
use crate::packer::Packer;
use crate::progress::Progress;
use crate::repo::Repository;

/// A file is read and chunked in windows of the largest chunk plus this much (so that every
/// window yields at least this much of whole chunks, sealed in parallel). With 8 MiB chunks a
/// window is 10 MiB; 16 MiB windows cost 25-30 MiB more peak memory on the `mixed` benchmark
/// set for no speed.
const WINDOW_MARGIN: usize = 2 << 20;

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

/// What a file's content was stored as.
#[derive(Debug, Clone, Default)]
pub(crate) struct Content {
    /// Content ids, one per chunk or block.
    pub ids: Vec<BlobId>,
    /// Blocks stored as patches (fixed-block files only).
    pub deltas: Vec<DeltaBlock>,
    /// Bytes read.
    pub size: u64,
}

/// Content of hard-linked files already read: (device, inode) -> their content.
pub(crate) type HardLinks = HashMap<(u64, u64), Content>;

/// A patch shorter than this share of its block (1/32) is kept without comparing it with the
/// base's stored size; a longer one must be under 3/4 of that.
const PATCH_SURE: usize = 32;

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

/// Envelope buffers up to this capacity are kept by their worker thread.
const SEALED_KEEP: usize = 4 << 20;

thread_local! {
    /// The envelope buffer of a worker thread (see [`Ctx::store_id`]); at most
    /// [`SEALED_KEEP`] is kept, within the memory bound's `max chunk` per thread.
    static SEALED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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
    /// Read files even when they look unchanged since the parent.
    pub always_read: bool,
    pub handle: tokio::runtime::Handle,
    /// Content of hard-linked files already read in this backup, by (device, inode).
    pub hardlinks: Mutex<HardLinks>,
    pub warnings: Mutex<Vec<String>>,
}

impl Ctx {
    pub(crate) fn warn(&self, path: &Path, msg: String) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.progress.warn(path, &msg);
        if let Ok(mut w) = self.warnings.lock() {
            w.push(format!("{}: {msg}", path.display()));
        }
    }

    /// True when every blob is in the backup's index: the parent's content may only be reused
    /// when none of it sits in packs that prune has condemned.
    fn all_indexed(&self, ids: impl IntoIterator<Item = BlobId>) -> Result<bool> {
        for id in ids {
            if !self.packer.has(&id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Seals a blob into `out` (replacing its content).
    fn seal_into(
        &self,
        blob_type: BlobType,
        id: &BlobId,
        plain: &[u8],
        c: Compression,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        envelope::seal_into(
            self.packer.key(),
            blob_type.object_kind(),
            id.as_bytes(),
            plain,
            c,
            &mut rand::thread_rng(),
            out,
        )
        .map_err(|e| Error::Invalid(format!("seal: {e}")))
    }

    /// Stores a blob unless the repository already has it; returns its id.
    pub(crate) fn store(&self, blob_type: BlobType, plain: &[u8]) -> Result<BlobId> {
        self.store_with(blob_type, plain, self.compression)
    }

    /// [`Ctx::store`] with the given compression.
    fn store_with(&self, blob_type: BlobType, plain: &[u8], c: Compression) -> Result<BlobId> {
        let id = self.packer.key().id_key().blob_id(plain);
        self.store_id(blob_type, id, plain, c)?;
        Ok(id)
    }

    /// Stores `plain` under its already computed `id` unless the repository has it.
    fn store_id(
        &self,
        blob_type: BlobType,
        id: BlobId,
        plain: &[u8],
        c: Compression,
    ) -> Result<()> {
        if self.packer.claim(&id)? {
            return Ok(());
        }
        SEALED.with(|cell| {
            // The envelope is copied into a pack at once, so each worker thread seals into one
            // buffer it keeps: fresh envelopes cost a page fault per 4 KiB written (most of a
            // backup's faults). A nested use on this thread, should there ever be one, gets a
            // buffer of its own.
            let mut own = Vec::new();
            let mut kept = cell.try_borrow_mut();
            let out = match kept.as_mut() {
                Ok(b) => &mut **b,
                Err(_) => &mut own,
            };
            self.seal_into(blob_type, &id, plain, c, out)?;
            let added = self.packer.add(blob_type, id, out, plain.len() as u32);
            // A rare large chunk's buffer is not kept: memory stays what it was without reuse.
            if out.capacity() > SEALED_KEEP {
                *out = Vec::new();
            }
            added
        })
    }

    /// Fetches the plaintext of the bases the changed blocks of one window need, with their
    /// stored size. Bases that are not in the backup's index, are longer than a block may be,
    /// or cannot be read are left out: their blocks are stored whole (as are blocks whose base
    /// has another length, see [`Ctx::store_block`]).
    fn fetch_bases(&self, wanted: &HashSet<BlobId>) -> HashMap<BlobId, (Vec<u8>, usize)> {
        let located: Vec<_> = wanted
            .iter()
            .filter_map(|id| {
                let loc = self.packer.locate_used(id).ok().flatten()?;
                (loc.plain_len as usize <= cairn_format::delta::MAX_BLOCK_LEN).then_some((*id, loc))
            })
            .collect();
        if located.is_empty() {
            return HashMap::new();
        }
        let repo = &self.repo;
        self.handle.block_on(
            futures::stream::iter(located)
                .map(|(id, loc)| async move { (id, loc, repo.read_blob_at(&id, &loc).await) })
                .buffer_unordered(16)
                .filter_map(|(id, loc, r)| async move {
                    r.ok().map(|plain| (id, (plain, loc.stored_len as usize)))
                })
                .collect(),
        )
    }

    /// Stores block `i` of a fixed-block file whose parent version is `parent`: unchanged, it
    /// keeps the parent's form (whole or patch); changed, it is stored as a patch against the
    /// parent's whole block at the same place (`bases`) when that is clearly smaller, else whole.
    fn store_block(
        &self,
        plain: &[u8],
        id: BlobId,
        i: usize,
        parent: &Node,
        bases: &HashMap<BlobId, (Vec<u8>, usize)>,
    ) -> Result<(BlobId, Option<DeltaBlock>)> {
        let index = u32::try_from(i).map_err(|_| Error::Invalid("too many blocks".into()))?;
        let whole = || -> Result<(BlobId, Option<DeltaBlock>)> {
            self.store_id(BlobType::Data, id, plain, self.compression)?;
            Ok((id, None))
        };
        let Some(old) = parent.content.get(i) else {
            return whole();
        };
        let old_delta = parent.delta(i);
        if *old == id {
            return match old_delta {
                Some(d) if self.all_indexed([d.patch, d.base])? => {
                    Ok((id, Some(DeltaBlock { index, ..*d })))
                }
                _ => whole(),
            };
        }
        let base_id = old_delta.map_or(*old, |d| d.base);
        // A base must have the block's length (SPEC §4.7): a parent cut with another block size
        // (or whose blocks repeat) may offer one that does not.
        let Some((base, base_stored)) = bases.get(&base_id).filter(|(b, _)| b.len() == plain.len())
        else {
            return whole();
        };
        if self.packer.has(&id)? {
            return Ok((id, None));
        }
        let Ok(patch) = cairn_format::delta::encode(base, plain) else {
            // Too large for a patch, or zstd refused: the block is stored whole.
            return whole();
        };
        // What restores will do, once now (about 1 GB/s): a patch that does not rebuild its
        // block exactly is never stored.
        if cairn_format::delta::decode(base, &patch, plain.len())
            .ok()
            .as_deref()
            != Some(plain)
        {
            return whole();
        }
        // Not clearly small: compare with the base's stored size, which stands for what this
        // block would cost whole (same place, same length, mostly the same bytes) without
        // compressing it a second time.
        if patch.len() * PATCH_SURE > plain.len()
            && patch.len() + envelope::OVERHEAD >= base_stored * 3 / 4
        {
            return whole();
        }
        let patch_id = self.store_with(BlobType::Data, &patch, Compression::Off)?;
        let len =
            u32::try_from(plain.len()).map_err(|_| Error::Invalid("block too large".into()))?;
        Ok((
            id,
            Some(DeltaBlock {
                index,
                len,
                patch: patch_id,
                base: base_id,
            }),
        ))
    }

    /// Stores a stream as the content of a new regular file node named `name` (mode `mode`,
    /// owned by the current user, times now).
    pub(crate) fn stream_file(&self, name: &str, reader: &mut dyn Read, mode: u32) -> Result<Node> {
        let Content {
            ids: content, size, ..
        } = self.store_stream(reader, None, None, None)?;
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

    /// Reads a parent subtree (blocking the worker on the read). The tree is located in the
    /// backup's own index, so the handle's index is never loaded a second time; only a tree
    /// left out of it (its packs condemned by prune) is located through the handle.
    fn parent_tree(&self, id: Option<BlobId>) -> Option<Tree> {
        let id = id?;
        let read = match self.packer.locate(&id) {
            Some(loc) => self.repo.read_tree_at_blocking(&self.handle, &id, &loc),
            None => self.handle.block_on(self.repo.read_tree(&id)),
        };
        match read {
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

    /// Chunks, deduplicates and stores a stream; returns its content.
    /// With `fixed`, chunks are cut every `fixed` bytes instead of by content (for data that
    /// changes in place, like database pages), and with a `parent` (the same file in the parent
    /// snapshot) changed blocks may be stored as patches against the parent's blocks.
    pub(crate) fn store_stream(
        &self,
        reader: &mut dyn Read,
        fixed: Option<usize>,
        size_hint: Option<u64>,
        parent: Option<&Node>,
    ) -> Result<Content> {
        let parent = parent.filter(|p| fixed.is_some() && !p.content.is_empty());
        let mut deltas = Vec::new();
        let max = fixed.unwrap_or(self.chunker.params().max_size as usize);
        let window = max + WINDOW_MARGIN;
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
            let block = |r: &std::ops::Range<usize>| buf.get(r.clone()).unwrap_or_default();
            match parent {
                None => {
                    let chunk_ids: Vec<BlobId> = cuts
                        .par_iter()
                        .map(|r| self.store(BlobType::Data, block(r)))
                        .collect::<Result<_>>()?;
                    ids.extend(chunk_ids);
                }
                Some(parent) => {
                    let id_key = self.packer.key().id_key();
                    let hashes: Vec<BlobId> =
                        cuts.par_iter().map(|r| id_key.blob_id(block(r))).collect();
                    let start = ids.len();
                    // The bases of changed blocks, fetched together.
                    let mut wanted = HashSet::new();
                    for (k, id) in hashes.iter().enumerate() {
                        match parent.content.get(start + k) {
                            Some(old) if old != id => {
                                wanted.insert(parent.delta(start + k).map_or(*old, |d| d.base));
                            }
                            _ => {}
                        }
                    }
                    let bases = self.fetch_bases(&wanted);
                    let stored: Vec<(BlobId, Option<DeltaBlock>)> = cuts
                        .par_iter()
                        .zip(hashes)
                        .enumerate()
                        .map(|(k, (r, id))| {
                            self.store_block(block(r), id, start + k, parent, &bases)
                        })
                        .collect::<Result<_>>()?;
                    for (id, d) in stored {
                        ids.push(id);
                        deltas.extend(d);
                    }
                }
            }
            buf.drain(..pos);
            if eof && pos == 0 {
                break;
            }
        }
        Ok(Content {
            ids,
            deltas,
            size: total,
        })
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
                    Some(o)
                        if !self.always_read
                            && unchanged(o, &node)
                            && self.all_indexed(o.stored_blobs())? =>
                    {
                        node.content = o.content.clone();
                        node.deltas = o.deltas.clone();
                        self.counters
                            .files_unchanged
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        let parent = old.filter(|o| o.kind == NodeKind::File);
                        match self.file_content(path, &mut node, fixed, parent) {
                            Ok(Ok(Content { ids, deltas, size })) => {
                                node.content = ids;
                                node.deltas = deltas;
                                if size != node.size && size != 0 {
                                    // Changed while read (see `file_content`): what was read.
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

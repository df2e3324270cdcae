//! Verifying a restored tree against its snapshot, independently of the restore code path:
//! the snapshot's trees are walked again, every regular file is read back and re-hashed chunk
//! by chunk (keyed BLAKE3, the chunk lengths from the index's plain lengths, or from the delta
//! block for blocks stored as patches) and its size, mode, modification time (owner as root)
//! compared; symlink targets, directories, fifos, device nodes (as root) and hard links too.
//! Entries in the restored tree that the snapshot does not hold are mismatches as well.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cairn_format::{BlobId, IdKey, Node, NodeKind};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;

/// One difference between a restored tree and its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The entry's absolute path in the snapshot (`/home/ann/notes.txt`).
    pub path: String,
    /// What differs, e.g. `missing`, `content differs in chunk 3 (bytes 196608..262144)`,
    /// `mode 644, expected 600`.
    pub reason: String,
}

/// What [`verify_restored`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Regular files whose content, size and metadata match (each hard-linked inode once).
    pub files: u64,
    /// Content bytes read back and re-hashed (of every file read, matching or not).
    pub bytes: u64,
    /// Directories that match.
    pub dirs: u64,
    /// Symlinks that match.
    pub symlinks: u64,
    /// Further names of hard-linked files that are links to their first name.
    pub hardlinks: u64,
    /// Fifos and device nodes that match.
    pub special: u64,
    /// Entries not checked because a restore does not create them: sockets, and device nodes
    /// when not running as root.
    pub skipped: u64,
    /// Every difference found, by path.
    pub mismatches: Vec<Mismatch>,
}

/// A regular file to read back.
struct FileCheck {
    shown: String,
    disk: PathBuf,
    node: Node,
    /// Plain length of each content block, `None` where the index does not know the blob.
    lens: Vec<Option<u32>>,
}

/// Per file read back: bytes read, whether it matched, its (device, inode) on disk.
type FileResult = (u64, bool, Option<(u64, u64)>);

/// What the walk of the snapshot collects.
#[derive(Default)]
struct Listing {
    files: Vec<FileCheck>,
    /// Further names of hard-linked files: (shown, disk path, index in `files`).
    links: Vec<(String, PathBuf, usize)>,
    /// Directories, symlinks, fifos, devices, sockets: (shown, disk path, node).
    others: Vec<(String, PathBuf, Node)>,
    /// Each directory's expected names: (shown, disk path, names), the restore root first.
    children: Vec<(String, PathBuf, HashSet<OsString>)>,
    mismatches: Vec<Mismatch>,
}

/// Joins a snapshot path and a name for display.
fn shown_child(parent: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Walks the snapshot's trees, reading each once; unreadable trees become mismatches.
async fn walk(repo: &Repository, root: BlobId, dir: &Path) -> Result<Listing> {
    let index = repo.index().await?;
    let mut out = Listing::default();
    let mut inodes: HashMap<(u64, u64), usize> = HashMap::new();
    let mut queue = vec![("/".to_owned(), dir.to_path_buf(), root)];
    while let Some((shown, disk, id)) = queue.pop() {
        let tree = match repo.read_tree(&id).await {
            Ok(t) => t,
            Err(e) => {
                out.mismatches.push(Mismatch {
                    path: shown,
                    reason: format!("directory listing (tree {}) unreadable: {e}", id.short()),
                });
                continue;
            }
        };
        let mut names = HashSet::new();
        for node in tree.nodes {
            let name = OsStr::from_bytes(&node.name);
            names.insert(name.to_os_string());
            let child = shown_child(&shown, &node.name);
            let path = disk.join(name);
            match node.kind {
                NodeKind::Dir => {
                    if let Some(sub) = node.subtree {
                        queue.push((child.clone(), path.clone(), sub));
                    }
                    out.others.push((child, path, node));
                }
                NodeKind::File => {
                    if node.links > 1 {
                        let key = (node.device, node.inode);
                        if let Some(&first) = inodes.get(&key) {
                            let same = out.files.get(first).is_some_and(|f| {
                                f.node.size == node.size && f.node.content == node.content
                            });
                            if same {
                                out.links.push((child, path, first));
                                continue;
                            }
                        } else {
                            inodes.insert(key, out.files.len());
                        }
                    }
                    let lens = {
                        let index = index
                            .read()
                            .map_err(|_| Error::Invalid("index lock poisoned".into()))?;
                        node.content
                            .iter()
                            .enumerate()
                            .map(|(i, id)| {
                                let delta = node.deltas.iter().find(|d| d.index as usize == i);
                                match delta {
                                    Some(d) => Some(d.len),
                                    None => index.get(id).map(|l| l.plain_len),
                                }
                            })
                            .collect()
                    };
                    out.files.push(FileCheck {
                        shown: child,
                        disk: path,
                        node,
                        lens,
                    });
                }
                _ => out.others.push((child, path, node)),
            }
        }
        out.children.push((shown, disk, names));
    }
    Ok(out)
}

/// Verifies the tree restored from `snapshot` into `dir` (a whole-snapshot restore: the
/// snapshot's absolute paths below `dir`) against the snapshot, reading every file back.
///
/// This is the verification step of [`drill_files`](super::drill_files), public so that any
/// restore can be checked. `Err` only when the index cannot be loaded or a worker fails;
/// differences, unreadable trees and unreadable files are [`Verification::mismatches`].
/// Owners are compared only when running as root (a restore sets them only then); extended
/// attributes and access times are not compared.
pub async fn verify_restored(
    repo: &Repository,
    snapshot: &cairn_format::Snapshot,
    dir: &Path,
    threads: Option<usize>,
    progress: Arc<dyn Progress>,
) -> Result<Verification> {
    let listing = walk(repo, snapshot.tree, dir).await?;
    let key = repo.key().id_key();
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(2)
        .max(1);
    tokio::task::spawn_blocking(move || check_listing(listing, &key, threads, progress.as_ref()))
        .await
        .map_err(|e| Error::Invalid(format!("verify worker failed: {e}")))?
}

fn check_listing(
    listing: Listing,
    key: &IdKey,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Verification> {
    let Listing {
        files,
        links,
        others,
        children,
        mismatches,
    } = listing;
    let total: u64 = files.iter().map(|f| f.node.size).sum();
    progress.start("verify", Some(files.len() as u64), Some(total));
    let is_root = nix::unistd::geteuid().is_root();
    let found = Mutex::new(mismatches);
    let push = |path: &str, reason: String| {
        if let Ok(mut m) = found.lock() {
            m.push(Mismatch {
                path: path.to_owned(),
                reason,
            });
        }
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("cairn-verify-{i}"))
        .build()
        .map_err(|e| Error::Invalid(format!("thread pool: {e}")))?;
    let results: Vec<FileResult> = pool.install(|| {
        files
            .par_iter()
            .map(|f| {
                progress.item(&f.disk);
                let (read, problems, ino) = check_file(f, key, is_root, progress);
                progress.items_done(1);
                let ok = problems.is_empty();
                for p in problems {
                    push(&f.shown, p);
                }
                (read, ok, ino)
            })
            .collect()
    });
    let mut v = Verification {
        files: results.iter().filter(|r| r.1).count() as u64,
        bytes: results.iter().map(|r| r.0).sum(),
        ..Verification::default()
    };
    for (shown, disk, first) in &links {
        let want = results.get(*first).and_then(|r| r.2);
        let first_name = files.get(*first).map_or("?", |f| f.shown.as_str());
        match (fs::symlink_metadata(disk), want) {
            (Err(e), _) => push(shown, absent(&e)),
            (Ok(md), Some(ino)) if (md.dev(), md.ino()) == ino => v.hardlinks += 1,
            (Ok(_), Some(_)) => push(shown, format!("not a hard link of {first_name}")),
            (Ok(_), None) => push(
                shown,
                format!("hard link of {first_name}, which is missing"),
            ),
        }
    }
    for (shown, disk, node) in &others {
        match check_other(disk, node, is_root) {
            Ok(Some(counter)) => match counter {
                NodeKind::Dir => v.dirs += 1,
                NodeKind::Symlink => v.symlinks += 1,
                _ => v.special += 1,
            },
            Ok(None) => v.skipped += 1,
            Err(problems) => {
                for p in problems {
                    push(shown, p);
                }
            }
        }
    }
    for (shown, disk, names) in &children {
        let Ok(entries) = fs::read_dir(disk) else {
            continue; // a missing directory is reported above
        };
        let mut extra: Vec<OsString> = entries
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .filter(|n| !names.contains(n))
            .collect();
        extra.sort();
        for n in extra {
            push(
                &shown_child(shown, n.as_bytes()),
                "not in the snapshot".into(),
            );
        }
    }
    progress.finish("verify");
    let mut mismatches = found.into_inner().unwrap_or_default();
    mismatches.sort_by(|a, b| a.path.cmp(&b.path));
    v.mismatches = mismatches;
    Ok(v)
}

/// The reason for an entry that cannot be looked at.
fn absent(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "missing".into()
    } else {
        format!("cannot be examined: {e}")
    }
}

fn kind_of(md: &Metadata) -> &'static str {
    let t = md.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_block_device() || t.is_char_device() {
        "a device node"
    } else {
        "a socket"
    }
}

/// Mode, modification time and (as root) owner of an entry.
fn check_metadata(md: &Metadata, node: &Node, is_root: bool, problems: &mut Vec<String>) {
    if node.kind != NodeKind::Symlink && md.mode() & 0o7777 != node.mode & 0o7777 {
        problems.push(format!(
            "mode {:o}, expected {:o}",
            md.mode() & 0o7777,
            node.mode & 0o7777
        ));
    }
    let mtime = (md.mtime(), md.mtime_nsec());
    let want = (node.mtime.secs, i64::from(node.mtime.nanos));
    if mtime != want {
        problems.push(format!(
            "modification time {}.{:09}, expected {}.{:09}",
            mtime.0, mtime.1, want.0, want.1
        ));
    }
    if is_root && (md.uid(), md.gid()) != (node.uid, node.gid) {
        problems.push(format!(
            "owner {}:{}, expected {}:{}",
            md.uid(),
            md.gid(),
            node.uid,
            node.gid
        ));
    }
}

/// Checks one regular file; returns the bytes read, the problems, and its (device, inode).
fn check_file(
    f: &FileCheck,
    key: &IdKey,
    is_root: bool,
    progress: &dyn Progress,
) -> (u64, Vec<String>, Option<(u64, u64)>) {
    let mut problems = Vec::new();
    let md = match fs::symlink_metadata(&f.disk) {
        Ok(md) => md,
        Err(e) => return (0, vec![absent(&e)], None),
    };
    if !md.is_file() {
        let found = kind_of(&md);
        return (
            0,
            vec![format!("is {found}, expected a regular file")],
            None,
        );
    }
    let ino = Some((md.dev(), md.ino()));
    if md.len() != f.node.size {
        problems.push(format!("size {}, expected {}", md.len(), f.node.size));
    }
    check_metadata(&md, &f.node, is_root, &mut problems);
    let read = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&f.disk)
    {
        Ok(file) => check_content(file, f, key, progress, &mut problems),
        Err(e) => {
            problems.push(format!("cannot be opened: {e}"));
            0
        }
    };
    (read, problems, ino)
}

/// Re-hashes a file's content chunk by chunk; returns the bytes read.
fn check_content(
    mut file: File,
    f: &FileCheck,
    key: &IdKey,
    progress: &dyn Progress,
    problems: &mut Vec<String>,
) -> u64 {
    let mut buf = Vec::new();
    let mut offset = 0u64;
    for (i, (id, len)) in f.node.content.iter().zip(&f.lens).enumerate() {
        let Some(len) = *len else {
            problems.push(format!(
                "content blob {} (chunk {i}) is not in the index: cannot be verified",
                id.short()
            ));
            return offset;
        };
        buf.resize(len as usize, 0);
        if let Err(e) = file.read_exact(&mut buf) {
            // A short file is reported by its size already.
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                problems.push(format!("read failed at byte {offset}: {e}"));
            }
            return offset;
        }
        progress.bytes_done(u64::from(len));
        if key.blob_id(&buf) != *id {
            problems.push(format!(
                "content differs in chunk {i} (bytes {offset}..{})",
                offset + u64::from(len)
            ));
        }
        offset += u64::from(len);
    }
    if offset != f.node.size && problems.is_empty() {
        problems.push(format!(
            "the snapshot's chunks add up to {offset} bytes, not its size {}",
            f.node.size
        ));
    }
    offset
}

/// Checks a directory, symlink or special file: `Ok(Some(kind))` matched, `Ok(None)` skipped
/// (not something a restore creates here), `Err` the problems.
fn check_other(
    disk: &Path,
    node: &Node,
    is_root: bool,
) -> std::result::Result<Option<NodeKind>, Vec<String>> {
    let skipped = match node.kind {
        NodeKind::Socket => true,
        NodeKind::BlockDevice | NodeKind::CharDevice => !is_root,
        _ => false,
    };
    if skipped {
        return Ok(None);
    }
    let md = fs::symlink_metadata(disk).map_err(|e| vec![absent(&e)])?;
    let t = md.file_type();
    let (right, expected) = match node.kind {
        NodeKind::Dir => (t.is_dir(), "a directory"),
        NodeKind::Symlink => (t.is_symlink(), "a symlink"),
        NodeKind::Fifo => (t.is_fifo(), "a fifo"),
        NodeKind::BlockDevice => (t.is_block_device(), "a block device"),
        NodeKind::CharDevice => (t.is_char_device(), "a character device"),
        NodeKind::File | NodeKind::Socket => (false, "a regular file"),
    };
    if !right {
        return Err(vec![format!("is {}, expected {expected}", kind_of(&md))]);
    }
    let mut problems = Vec::new();
    if node.kind == NodeKind::Symlink {
        match fs::read_link(disk) {
            Ok(target) if target.as_os_str().as_bytes() == node.target.as_slice() => {}
            Ok(target) => problems.push(format!(
                "points to {}, expected {}",
                target.display(),
                String::from_utf8_lossy(&node.target)
            )),
            Err(e) => problems.push(format!("target unreadable: {e}")),
        }
    }
    if matches!(node.kind, NodeKind::BlockDevice | NodeKind::CharDevice) && md.rdev() != node.rdev {
        problems.push(format!(
            "device {:#x}, expected {:#x}",
            md.rdev(),
            node.rdev
        ));
    }
    check_metadata(&md, node, is_root, &mut problems);
    if problems.is_empty() {
        Ok(Some(node.kind))
    } else {
        Err(problems)
    }
}

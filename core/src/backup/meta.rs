//! Reading a file's metadata into a tree node.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use cairn_format::tree::Xattr;
use cairn_format::{Node, NodeKind, Timestamp};

/// Caches uid/gid -> name lookups.
#[derive(Debug, Default)]
pub(crate) struct Names {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

impl Names {
    fn user(&self, uid: u32) -> String {
        let Ok(mut m) = self.users.lock() else {
            return String::new();
        };
        m.entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default()
            })
            .clone()
    }

    fn group(&self, gid: u32) -> String {
        let Ok(mut m) = self.groups.lock() else {
            return String::new();
        };
        m.entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_default()
            })
            .clone()
    }
}

fn ts(secs: i64, nanos: i64) -> Timestamp {
    Timestamp {
        secs,
        nanos: u32::try_from(nanos).unwrap_or(0).min(999_999_999),
    }
}

/// The kind of a file from its metadata.
pub(crate) fn kind_of(md: &std::fs::Metadata) -> NodeKind {
    let ft = md.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

/// A node for `path` from its (lstat) metadata, with xattrs and symlink target; no content.
pub(crate) fn node_from(
    path: &Path,
    name: &[u8],
    md: &std::fs::Metadata,
    names: &Names,
    atime: bool,
) -> std::io::Result<Node> {
    let kind = kind_of(md);
    let mut node = Node::new(name.to_vec(), kind);
    node.mode = md.mode() & 0o7777;
    node.uid = md.uid();
    node.gid = md.gid();
    node.user = names.user(md.uid());
    node.group = names.group(md.gid());
    node.mtime = ts(md.mtime(), md.mtime_nsec());
    node.ctime = ts(md.ctime(), md.ctime_nsec());
    node.atime = if atime {
        ts(md.atime(), md.atime_nsec())
    } else {
        node.mtime
    };
    node.size = if kind == NodeKind::File { md.size() } else { 0 };
    node.inode = md.ino();
    node.links = md.nlink();
    node.device = md.dev();
    node.rdev = md.rdev();
    if kind == NodeKind::Symlink {
        use std::os::unix::ffi::OsStrExt;
        node.target = std::fs::read_link(path)?.as_os_str().as_bytes().to_vec();
        node.size = node.target.len() as u64;
    }
    node.xattrs = read_xattrs(path);
    Ok(node)
}

/// Sets the fields of a file node that tell whether it changed (times, size, inode, owner,
/// mode) from a newer stat of the same file.
pub(crate) fn refresh(node: &mut Node, md: &std::fs::Metadata, atime: bool) {
    node.mode = md.mode() & 0o7777;
    node.uid = md.uid();
    node.gid = md.gid();
    node.mtime = ts(md.mtime(), md.mtime_nsec());
    node.ctime = ts(md.ctime(), md.ctime_nsec());
    node.atime = if atime {
        ts(md.atime(), md.atime_nsec())
    } else {
        node.mtime
    };
    node.size = md.size();
    node.inode = md.ino();
    node.links = md.nlink();
    node.device = md.dev();
}

/// True when two stats of a file show the same version of it: same size, modification and
/// change time, and inode.
pub(crate) fn same_version(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.size() == b.size()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
        && a.ino() == b.ino()
}

fn read_xattrs(path: &Path) -> Vec<Xattr> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<Xattr> = names
        .filter_map(|n| {
            let value = xattr::get(path, &n).ok().flatten()?;
            Some(Xattr {
                name: n.as_bytes().to_vec(),
                value,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// True when a file can be taken from the parent snapshot without reading it: same kind, size,
/// modification and change time, and inode.
pub(crate) fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && new.kind == NodeKind::File
        && old.size == new.size
        && old.mtime == new.mtime
        && old.ctime == new.ctime
        && old.inode == new.inode
}

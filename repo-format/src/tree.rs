//! Trees: one directory's listing.
//!
//! A tree is itself a blob (type [`crate::pack::BlobType::Tree`]): equal directories have equal
//! ids, so an unchanged subtree is stored once. Plaintext layout:
//!
//! ```text
//! tree  = version[1] = 1 || count[4] || node * count           (nodes in strictly increasing name order)
//! node  = name_len[2] || name || kind[1] || mode[4] || uid[4] || gid[4]
//!         || user_len[2] || user || group_len[2] || group
//!         || mtime || ctime || atime                            (each: seconds[8] i64 || nanos[4] < 10^9)
//!         || size[8] || inode[8] || links[8] || device[8] || rdev[8]
//!         || target_len[4] || target                           (symlink target, empty otherwise)
//!         || xattr_count[4] || (name_len[2] || name || value_len[4] || value) * xattr_count
//!         || content_count[4] || blob_id[32] * content_count   (files only)
//!         || has_subtree[1] || subtree blob_id[32] if has_subtree = 1   (directories: always 1)
//!         || ext_count[2] || (tag[2] || len[4] || bytes) * ext_count
//! ```
//!
//! Extension tags are strictly increasing; a tag with bit 15 set is critical: a reader that does
//! not know it refuses the tree. Defined tags:
//!
//! ```text
//! 0x8001 delta blocks (files): count[4] || (index[4] || len[4] || patch[32] || base[32]) * count
//! ```
//!
//! Content blob `index` of the file is then not stored as a blob: its `len` bytes are rebuilt from
//! the data blobs `patch` and `base` ([`crate::delta::decode`]) and must hash to the content id.
//!
//! `name` is raw bytes (file names need not be UTF-8), non-empty, without `/` or NUL, and not
//! `.` or `..`, so a restore can never escape its target. `ext` carries optional fields added by
//! later versions: readers keep unknown tags as they are and ignore them.

use crate::codec::{
    Reader, Writer, check_version, len32, put_bytes16, put_bytes32, put_extensions,
    put_extensions_known, read_extensions_known,
};
use crate::error::{FormatError, Result};
use crate::id::{BlobId, ID_LEN};

/// Tree version written by this build.
pub const TREE_VERSION: u8 = 1;

/// The kind of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NodeKind {
    /// Regular file.
    File = 0,
    /// Directory.
    Dir = 1,
    /// Symbolic link.
    Symlink = 2,
    /// Block device.
    BlockDevice = 3,
    /// Character device.
    CharDevice = 4,
    /// Named pipe.
    Fifo = 5,
    /// Unix socket.
    Socket = 6,
}

impl NodeKind {
    fn from_u8(b: u8) -> Result<Self> {
        Ok(match b {
            0 => Self::File,
            1 => Self::Dir,
            2 => Self::Symlink,
            3 => Self::BlockDevice,
            4 => Self::CharDevice,
            5 => Self::Fifo,
            6 => Self::Socket,
            _ => {
                return Err(FormatError::malformed(
                    "tree node",
                    format!("unknown node kind {b}"),
                ));
            }
        })
    }
}

/// A point in time: seconds since the Unix epoch and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub secs: i64,
    /// Nanoseconds, below 10^9.
    pub nanos: u32,
}

impl Timestamp {
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        if self.nanos >= 1_000_000_000 {
            return Err(FormatError::InvalidParameter {
                what: "timestamp",
                reason: format!("nanoseconds {} out of range", self.nanos),
            });
        }
        out.put_i64(self.secs);
        out.put_u32(self.nanos);
        Ok(())
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        let t = Self {
            secs: r.i64()?,
            nanos: r.u32()?,
        };
        if t.nanos >= 1_000_000_000 {
            return Err(FormatError::malformed(r.what(), "nanoseconds out of range"));
        }
        Ok(t)
    }
}

/// An extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Xattr {
    /// Attribute name (e.g. `user.comment`).
    pub name: Vec<u8>,
    /// Attribute value.
    pub value: Vec<u8>,
}

/// Critical node extension: delta blocks (see the module documentation).
pub const TAG_DELTA_BLOCKS: u16 = 0x8001;
/// Bytes of one delta entry.
const DELTA_ENTRY_LEN: usize = 4 + 4 + 2 * ID_LEN;

/// A content block of a file stored as a patch against an earlier block ([`crate::delta`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeltaBlock {
    /// Position of the block in the node's content list.
    pub index: u32,
    /// Length of the block in bytes.
    pub len: u32,
    /// Data blob holding the patch (a zstd frame).
    pub patch: BlobId,
    /// Data blob holding the base block.
    pub base: BlobId,
}

/// An optional field added by a later version, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extension {
    /// Field tag.
    pub tag: u16,
    /// Field bytes.
    pub bytes: Vec<u8>,
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    /// File name, raw bytes.
    pub name: Vec<u8>,
    /// Node kind.
    pub kind: NodeKind,
    /// Permission and mode bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name, if known.
    pub user: String,
    /// Group name, if known.
    pub group: String,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status change time.
    pub ctime: Timestamp,
    /// Access time.
    pub atime: Timestamp,
    /// Size in bytes (files), target length (symlinks), 0 otherwise.
    pub size: u64,
    /// Inode number.
    pub inode: u64,
    /// Hard link count.
    pub links: u64,
    /// Device of the containing file system (`st_dev`).
    pub device: u64,
    /// Device number of a device node (`st_rdev`).
    pub rdev: u64,
    /// Symlink target.
    pub target: Vec<u8>,
    /// Extended attributes, in the order read.
    pub xattrs: Vec<Xattr>,
    /// Content blobs in order (files).
    pub content: Vec<BlobId>,
    /// The subtree (directories).
    pub subtree: Option<BlobId>,
    /// Content blocks stored as patches (files), by increasing index: for these, the id in
    /// `content` names the block's plaintext, which is not stored as a blob of its own.
    pub deltas: Vec<DeltaBlock>,
    /// Optional fields from later versions (tags below 0x8000), kept verbatim.
    pub extensions: Vec<Extension>,
}

impl Node {
    /// A node with the given name and kind and every other field empty.
    pub fn new(name: impl Into<Vec<u8>>, kind: NodeKind) -> Self {
        Self {
            name: name.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            atime: Timestamp::default(),
            size: 0,
            inode: 0,
            links: 0,
            device: 0,
            rdev: 0,
            target: Vec::new(),
            xattrs: Vec::new(),
            content: Vec::new(),
            subtree: None,
            deltas: Vec::new(),
            extensions: Vec::new(),
        }
    }

    /// The delta entry of content block `index`, if that block is stored as a patch.
    pub fn delta(&self, index: usize) -> Option<&DeltaBlock> {
        self.deltas
            .binary_search_by_key(&index, |d| d.index as usize)
            .ok()
            .and_then(|i| self.deltas.get(i))
    }

    /// Every data blob the file's content needs, in content order, with repeats: the content
    /// id of each block stored whole, the patch and the base of each block stored as a patch.
    pub fn stored_blobs(&self) -> impl Iterator<Item = BlobId> + '_ {
        let mut deltas = self.deltas.iter().peekable();
        self.content
            .iter()
            .enumerate()
            .flat_map(
                move |(i, id)| match deltas.next_if(|d| d.index as usize == i) {
                    Some(d) => [Some(d.patch), Some(d.base)],
                    None => [Some(*id), None],
                },
            )
            .flatten()
    }

    /// Delta entries strictly increasing, inside the content list, only on files, not too long.
    fn check_deltas(&self) -> std::result::Result<(), &'static str> {
        if self.deltas.is_empty() {
            return Ok(());
        }
        if self.kind != NodeKind::File {
            return Err("delta blocks on a node that is not a file");
        }
        let increasing = self
            .deltas
            .windows(2)
            .all(|w| matches!(w, [a, b] if a.index < b.index));
        if !increasing {
            return Err("delta block indexes not strictly increasing");
        }
        if self
            .deltas
            .iter()
            .any(|d| d.index as usize >= self.content.len())
        {
            return Err("delta block index beyond the content list");
        }
        if self
            .deltas
            .iter()
            .any(|d| d.len as usize > crate::delta::MAX_BLOCK_LEN)
        {
            return Err("delta block longer than the largest block");
        }
        Ok(())
    }

    fn encode_deltas(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(4 + self.deltas.len() * DELTA_ENTRY_LEN);
        out.put_u32(len32("delta blocks", self.deltas.len())?);
        for d in &self.deltas {
            out.put_u32(d.index);
            out.put_u32(d.len);
            out.put(d.patch.as_bytes());
            out.put(d.base.as_bytes());
        }
        Ok(out)
    }

    fn decode_deltas(bytes: &[u8]) -> Result<Vec<DeltaBlock>> {
        let mut r = Reader::new(bytes, "delta blocks");
        let n = r.count(DELTA_ENTRY_LEN)?;
        if n == 0 {
            return Err(FormatError::malformed("delta blocks", "empty list"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(DeltaBlock {
                index: r.u32()?,
                len: r.u32()?,
                patch: BlobId::from_bytes(r.array()?),
                base: BlobId::from_bytes(r.array()?),
            });
        }
        r.finish()?;
        Ok(out)
    }

    /// Content only on files, a subtree on every directory and only there.
    fn check_kind(&self) -> std::result::Result<(), &'static str> {
        match (self.kind, self.subtree.is_some(), self.content.is_empty()) {
            (NodeKind::Dir, true, true) | (NodeKind::File, false, _) => Ok(()),
            (NodeKind::Dir, ..) => Err("directory without subtree or with content"),
            (_, false, true) => Ok(()),
            _ => Err("content or subtree on a node that cannot have it"),
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        self.check_kind()
            .and_then(|()| self.check_deltas())
            .map_err(|reason| FormatError::InvalidParameter {
                what: "tree node",
                reason: reason.into(),
            })?;
        put_bytes16(out, "tree node name", &self.name)?;
        out.put_u8(self.kind as u8);
        out.put_u32(self.mode);
        out.put_u32(self.uid);
        out.put_u32(self.gid);
        put_bytes16(out, "tree node user", self.user.as_bytes())?;
        put_bytes16(out, "tree node group", self.group.as_bytes())?;
        self.mtime.encode_into(out)?;
        self.ctime.encode_into(out)?;
        self.atime.encode_into(out)?;
        out.put_u64(self.size);
        out.put_u64(self.inode);
        out.put_u64(self.links);
        out.put_u64(self.device);
        out.put_u64(self.rdev);
        put_bytes32(out, "symlink target", &self.target)?;
        out.put_u32(len32("xattrs", self.xattrs.len())?);
        for x in &self.xattrs {
            put_bytes16(out, "xattr name", &x.name)?;
            put_bytes32(out, "xattr value", &x.value)?;
        }
        out.put_u32(len32("content", self.content.len())?);
        for id in &self.content {
            out.put(id.as_bytes());
        }
        match &self.subtree {
            Some(id) => {
                out.put_u8(1);
                out.put(id.as_bytes());
            }
            None => out.put_u8(0),
        }
        if self.deltas.is_empty() {
            return put_extensions(out, &self.extensions);
        }
        // Optional tags are below 0x8000, so the delta tag sorts last.
        let mut exts = self.extensions.clone();
        exts.push(Extension {
            tag: TAG_DELTA_BLOCKS,
            bytes: self.encode_deltas()?,
        });
        put_extensions_known(out, &exts, &[TAG_DELTA_BLOCKS])
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        let what = r.what();
        let name = r.bytes16()?.to_vec();
        check_name(&name)?;
        let kind = NodeKind::from_u8(r.u8()?)?;
        let mut node = Self::new(name, kind);
        node.mode = r.u32()?;
        node.uid = r.u32()?;
        node.gid = r.u32()?;
        node.user = r.str16()?;
        node.group = r.str16()?;
        node.mtime = Timestamp::decode_from(r)?;
        node.ctime = Timestamp::decode_from(r)?;
        node.atime = Timestamp::decode_from(r)?;
        node.size = r.u64()?;
        node.inode = r.u64()?;
        node.links = r.u64()?;
        node.device = r.u64()?;
        node.rdev = r.u64()?;
        node.target = r.bytes32()?.to_vec();
        let n = r.count(6)?;
        node.xattrs.reserve(n);
        for _ in 0..n {
            let name = r.bytes16()?.to_vec();
            let value = r.bytes32()?.to_vec();
            node.xattrs.push(Xattr { name, value });
        }
        let n = r.count(ID_LEN)?;
        node.content.reserve(n);
        for _ in 0..n {
            node.content.push(BlobId::from_bytes(r.array()?));
        }
        node.subtree = match r.u8()? {
            0 => None,
            1 => Some(BlobId::from_bytes(r.array()?)),
            b => return Err(FormatError::malformed(what, format!("subtree flag {b}"))),
        };
        let mut extensions = read_extensions_known(r, &[TAG_DELTA_BLOCKS])?;
        if let Some(i) = extensions.iter().position(|e| e.tag == TAG_DELTA_BLOCKS) {
            node.deltas = Self::decode_deltas(&extensions.remove(i).bytes)?;
        }
        node.extensions = extensions;
        node.check_kind()
            .and_then(|()| node.check_deltas())
            .map_err(|reason| FormatError::malformed(what, reason))?;
        Ok(node)
    }
}

fn check_name(name: &[u8]) -> Result<()> {
    let bad = name.is_empty()
        || name == b"."
        || name == b".."
        || name.iter().any(|&b| b == b'/' || b == 0);
    if bad {
        return Err(FormatError::malformed(
            "tree node",
            format!("unsafe file name {:?}", String::from_utf8_lossy(name)),
        ));
    }
    Ok(())
}

/// A directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Tree {
    /// Nodes in strictly increasing byte order of name.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Sorts nodes by name (encoding requires it).
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Plaintext encoding; fails if names are not strictly increasing or unsafe.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(5 + self.nodes.len() * 160);
        out.put_u8(TREE_VERSION);
        out.put_u32(len32("tree", self.nodes.len())?);
        let mut prev: Option<&[u8]> = None;
        for n in &self.nodes {
            check_name(&n.name).map_err(|e| FormatError::InvalidParameter {
                what: "tree node name",
                reason: e.to_string(),
            })?;
            if prev.is_some_and(|p| p >= n.name.as_slice()) {
                return Err(FormatError::InvalidParameter {
                    what: "tree",
                    reason: "node names must be unique and sorted (call Tree::sort)".into(),
                });
            }
            prev = Some(&n.name);
            n.encode_into(&mut out)?;
        }
        Ok(out)
    }

    /// Decodes the plaintext encoding.
    pub fn decode(plain: &[u8]) -> Result<Self> {
        let mut r = Reader::new(plain, "tree");
        check_version(r.what(), u32::from(r.u8()?), u32::from(TREE_VERSION))?;
        let n = r.count(100)?;
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        let mut r = Reader::new(plain.get(5..).unwrap_or_default(), "tree node");
        for _ in 0..n {
            let node = Node::decode_from(&mut r)?;
            if nodes.last().is_some_and(|p| p.name >= node.name) {
                return Err(FormatError::malformed(
                    "tree",
                    "node names not strictly increasing",
                ));
            }
            nodes.push(node);
        }
        r.finish()?;
        Ok(Self { nodes })
    }
}

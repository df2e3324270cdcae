//! Snapshots: one backup's root, provenance and summary.
//!
//! Plaintext layout (sealed as kind `Snapshot`, stored under its [`SnapshotId`]):
//!
//! ```text
//! snapshot = version[1] = 1 || kind[1] || time (seconds[8] i64 || nanos[4]) || tz_offset[4] i32 seconds
//!            || hostname_len[2] || hostname || username_len[2] || username
//!            || path_count[4] || (path_len[4] || path) * path_count
//!            || tag_count[4] || (tag_len[2] || tag) * tag_count
//!            || tree[32] || has_parent[1] || parent[32] if has_parent = 1
//!            || summary_len[2] || summary (summary_len bytes: u64 fields in the order of
//!               [`Summary`]; summary_len is a multiple of 8; a reader takes the fields it
//!               knows, ignores further ones and takes zero for missing ones)
//!            || meta_count[4] || (key_len[2] || key || value_len[4] || value) * meta_count
//!            || ext_count[2] || (tag[2] || len[4] || bytes) * ext_count
//! ```
//!
//! `kind` 0 is a file-tree backup, 1 a PostgreSQL base backup; `meta` holds kind-specific
//! key/value pairs (start and stop LSN, timeline, ...), with UTF-8 keys.

use rand_core::CryptoRngCore;

use crate::codec::{
    Reader, Writer, check_version, len16, len32, put_bytes16, put_bytes32, put_extensions,
    read_extensions,
};
use crate::envelope::{self, Compression, ObjectKind};
use crate::error::{FormatError, Result};
use crate::id::{BlobId, SnapshotId};
use crate::keys::MasterKey;
use crate::tree::{Extension, Timestamp};

/// Snapshot version written by this build.
pub const SNAPSHOT_VERSION: u8 = 1;

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SnapshotKind {
    /// A file tree (or stream) backup.
    Files,
    /// A PostgreSQL base backup.
    PgBaseBackup,
    /// A kind written by a newer version; kept as its byte.
    Other(u8),
}

impl SnapshotKind {
    fn to_u8(self) -> u8 {
        match self {
            Self::Files => 0,
            Self::PgBaseBackup => 1,
            Self::Other(b) => b,
        }
    }

    fn from_u8(b: u8) -> Self {
        match b {
            0 => Self::Files,
            1 => Self::PgBaseBackup,
            b => Self::Other(b),
        }
    }
}

/// What a backup did. Every field is a u64 on disk, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Summary {
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files in the parent whose content or metadata changed.
    pub files_changed: u64,
    /// Files unchanged since the parent (not read).
    pub files_unchanged: u64,
    /// Directories not in the parent.
    pub dirs_new: u64,
    /// Directories that changed.
    pub dirs_changed: u64,
    /// Directories unchanged.
    pub dirs_unchanged: u64,
    /// Bytes of file content read.
    pub bytes_read: u64,
    /// Total size of all files in the snapshot.
    pub total_bytes: u64,
    /// Blobs added to the repository.
    pub blobs_added: u64,
    /// Plaintext bytes of blobs added (after dedup, before compression).
    pub bytes_added_plain: u64,
    /// Stored bytes of blobs added (after compression and encryption).
    pub bytes_added_stored: u64,
    /// Wall-clock duration of the backup in nanoseconds.
    pub duration_nanos: u64,
}

const SUMMARY_FIELDS: usize = 12;

impl Summary {
    fn fields(&self) -> [u64; SUMMARY_FIELDS] {
        [
            self.files_new,
            self.files_changed,
            self.files_unchanged,
            self.dirs_new,
            self.dirs_changed,
            self.dirs_unchanged,
            self.bytes_read,
            self.total_bytes,
            self.blobs_added,
            self.bytes_added_plain,
            self.bytes_added_stored,
            self.duration_nanos,
        ]
    }

    fn from_fields(f: [u64; SUMMARY_FIELDS]) -> Self {
        let [
            files_new,
            files_changed,
            files_unchanged,
            dirs_new,
            dirs_changed,
            dirs_unchanged,
            bytes_read,
            total_bytes,
            blobs_added,
            bytes_added_plain,
            bytes_added_stored,
            duration_nanos,
        ] = f;
        Self {
            files_new,
            files_changed,
            files_unchanged,
            dirs_new,
            dirs_changed,
            dirs_unchanged,
            bytes_read,
            total_bytes,
            blobs_added,
            bytes_added_plain,
            bytes_added_stored,
            duration_nanos,
        }
    }

    /// Bytes read per byte of plaintext added: how much deduplication saved (1.0 = nothing).
    pub fn dedup_ratio(&self) -> f64 {
        ratio(self.bytes_read, self.bytes_added_plain)
    }

    /// Plaintext bytes per stored byte of what was added (compression, after encryption overhead).
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.bytes_added_plain, self.bytes_added_stored)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// A snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// What it holds.
    pub kind: SnapshotKind,
    /// When the backup started.
    pub time: Timestamp,
    /// The local time zone's offset from UTC at that time, seconds.
    pub tz_offset_secs: i32,
    /// Host name.
    pub hostname: String,
    /// User name.
    pub username: String,
    /// Paths backed up (raw bytes).
    pub paths: Vec<Vec<u8>>,
    /// Tags.
    pub tags: Vec<String>,
    /// Root tree blob.
    pub tree: BlobId,
    /// The snapshot this one was compared against.
    pub parent: Option<SnapshotId>,
    /// What the backup did.
    pub summary: Summary,
    /// Kind-specific key/value metadata.
    pub meta: Vec<(String, Vec<u8>)>,
    /// Fields from later versions.
    pub extensions: Vec<Extension>,
}

impl Snapshot {
    /// A snapshot of `kind` rooted at `tree`, every other field empty.
    pub fn new(kind: SnapshotKind, time: Timestamp, tree: BlobId) -> Self {
        Self {
            kind,
            time,
            tz_offset_secs: 0,
            hostname: String::new(),
            username: String::new(),
            paths: Vec::new(),
            tags: Vec::new(),
            tree,
            parent: None,
            summary: Summary::default(),
            meta: Vec::new(),
            extensions: Vec::new(),
        }
    }

    /// The value of a metadata key.
    pub fn meta(&self, key: &str) -> Option<&[u8]> {
        self.meta
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// Plaintext encoding.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        out.put_u8(SNAPSHOT_VERSION);
        if matches!(self.kind, SnapshotKind::Other(0 | 1)) {
            return Err(FormatError::InvalidParameter {
                what: "snapshot kind",
                reason: "Other(0) and Other(1) are spelled Files and PgBaseBackup".into(),
            });
        }
        if self.tz_offset_secs.unsigned_abs() > 24 * 3600 {
            return Err(FormatError::InvalidParameter {
                what: "snapshot time zone offset",
                reason: format!("{} s is beyond a day", self.tz_offset_secs),
            });
        }
        out.put_u8(self.kind.to_u8());
        self.time.encode_into(&mut out)?;
        out.put_i32(self.tz_offset_secs);
        put_bytes16(&mut out, "hostname", self.hostname.as_bytes())?;
        put_bytes16(&mut out, "username", self.username.as_bytes())?;
        out.put_u32(len32("paths", self.paths.len())?);
        for p in &self.paths {
            put_bytes32(&mut out, "path", p)?;
        }
        out.put_u32(len32("tags", self.tags.len())?);
        for t in &self.tags {
            put_bytes16(&mut out, "tag", t.as_bytes())?;
        }
        out.put(self.tree.as_bytes());
        match &self.parent {
            Some(p) => {
                out.put_u8(1);
                out.put(p.as_bytes());
            }
            None => out.put_u8(0),
        }
        out.put_u16(len16("summary", SUMMARY_FIELDS * 8)?);
        for f in self.summary.fields() {
            out.put_u64(f);
        }
        out.put_u32(len32("meta", self.meta.len())?);
        for (k, v) in &self.meta {
            put_bytes16(&mut out, "meta key", k.as_bytes())?;
            put_bytes32(&mut out, "meta value", v)?;
        }
        put_extensions(&mut out, &self.extensions)?;
        Ok(out)
    }

    /// Decodes the plaintext encoding.
    pub fn decode(plain: &[u8]) -> Result<Self> {
        let mut r = Reader::new(plain, "snapshot");
        check_version(r.what(), u32::from(r.u8()?), u32::from(SNAPSHOT_VERSION))?;
        let kind = SnapshotKind::from_u8(r.u8()?);
        let time = Timestamp::decode_from(&mut r)?;
        let tz_offset_secs = r.i32()?;
        if tz_offset_secs.unsigned_abs() > 24 * 3600 {
            return Err(FormatError::malformed(
                "snapshot",
                "time zone offset beyond a day",
            ));
        }
        let mut s = Self::new(kind, time, BlobId::default());
        s.tz_offset_secs = tz_offset_secs;
        s.hostname = r.str16()?;
        s.username = r.str16()?;
        let n = r.count(4)?;
        for _ in 0..n {
            s.paths.push(r.bytes32()?.to_vec());
        }
        let n = r.count(2)?;
        for _ in 0..n {
            s.tags.push(r.str16()?);
        }
        s.tree = BlobId::from_bytes(r.array()?);
        s.parent = match r.u8()? {
            0 => None,
            1 => Some(SnapshotId::from_bytes(r.array()?)),
            b => {
                return Err(FormatError::malformed(
                    "snapshot",
                    format!("parent flag {b}"),
                ));
            }
        };
        let summary = r.bytes16()?;
        if summary.len() % 8 != 0 {
            return Err(FormatError::malformed(
                "snapshot",
                "summary length is not a multiple of 8",
            ));
        }
        let mut fields = [0u64; SUMMARY_FIELDS];
        let mut sr = Reader::new(summary, "snapshot summary");
        for f in fields.iter_mut() {
            if sr.remaining() < 8 {
                break;
            }
            *f = sr.u64()?;
        }
        s.summary = Summary::from_fields(fields);
        let n = r.count(6)?;
        for _ in 0..n {
            let k = r.str16()?;
            let v = r.bytes32()?.to_vec();
            s.meta.push((k, v));
        }
        s.extensions = read_extensions(&mut r)?;
        r.finish()?;
        Ok(s)
    }

    /// Seals the snapshot; returns its id and bytes.
    pub fn seal(
        &self,
        key: &MasterKey,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(SnapshotId, Vec<u8>)> {
        let plain = self.encode()?;
        let (id, sealed) =
            envelope::seal_object(key, ObjectKind::Snapshot, &plain, Compression::Zstd(3), rng)?;
        Ok((SnapshotId::from_bytes(id), sealed))
    }

    /// Opens a sealed snapshot stored under `id`.
    pub fn open(key: &MasterKey, id: &SnapshotId, sealed: &[u8]) -> Result<Self> {
        let plain =
            envelope::open_object(key, ObjectKind::Snapshot, id.as_bytes(), sealed, "snapshot")?;
        Self::decode(&plain)
    }
}

//! Pack files: many blobs in one object.
//!
//! ```text
//! pack    = blob_0 || blob_1 || ... || blob_{n-1} || header || trailer
//! blob_i  = envelope (kind DataBlob or TreeBlob, id = the blob id)
//! header  = envelope (kind PackHeader, id = 32 zero bytes) of
//!           version[1] = 1 || count[4] || entry * count
//! entry   = blob_type[1] || blob_id[32] || offset[4] || stored_len[4] || plain_len[4]   (45 bytes)
//! trailer = header_len[4] || version[1] = 1 || reserved[3] = 0 || magic[8] = "CAIRNPAK"   (16 bytes)
//! ```
//!
//! All entries of a pack have the same blob type. Entries are in file order: the first starts at offset 0 and each starts where the previous
//! ends; the last ends where the header starts. A reader fetches the last [`TRAILER_LEN`] bytes
//! (or, in one ranged read, a larger suffix that usually holds the header too), learns the header
//! length, and opens the header. The pack id is the keyed hash of the whole file, which binds the
//! header to its blobs; each blob is in addition bound to its id and type by its envelope.

use rand_core::CryptoRngCore;

use crate::codec::{Reader, Writer, check_version, len32};
use crate::envelope::{self, Compression, OVERHEAD, ObjectKind};
use crate::error::{FormatError, Result};
use crate::id::{BlobId, ID_LEN, IdHasher, PackId};
use crate::keys::MasterKey;

/// Magic bytes closing every pack.
pub const PACK_MAGIC: [u8; 8] = *b"CAIRNPAK";
/// Pack version written by this build.
pub const PACK_VERSION: u8 = 1;
/// Length of the fixed trailer.
pub const TRAILER_LEN: usize = 4 + 1 + 3 + 8;
/// Length of one header entry.
pub const ENTRY_LEN: usize = 1 + ID_LEN + 4 + 4 + 4;
/// Largest pack: offsets are u32.
pub const MAX_PACK_LEN: u64 = u32::MAX as u64;
/// The id used as associated data of pack headers.
pub const HEADER_AD_ID: [u8; ID_LEN] = [0; ID_LEN];

/// What a blob holds. Data and trees never share a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum BlobType {
    /// File content.
    Data = 0,
    /// A directory listing ([`crate::tree::Tree`]).
    Tree = 1,
}

impl BlobType {
    /// Decodes the type byte.
    pub fn from_u8(b: u8) -> Result<Self> {
        match b {
            0 => Ok(Self::Data),
            1 => Ok(Self::Tree),
            _ => Err(FormatError::malformed(
                "blob type",
                format!("unknown blob type {b}"),
            )),
        }
    }

    /// The envelope kind blobs of this type are sealed as.
    pub fn object_kind(self) -> ObjectKind {
        match self {
            Self::Data => ObjectKind::DataBlob,
            Self::Tree => ObjectKind::TreeBlob,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Tree => "tree",
        }
    }
}

/// Where one blob lies in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackEntry {
    /// Blob type.
    pub blob_type: BlobType,
    /// Blob id.
    pub id: BlobId,
    /// Offset of the blob's envelope from the start of the pack.
    pub offset: u32,
    /// Length of the envelope.
    pub stored_len: u32,
    /// Length of the plaintext.
    pub plain_len: u32,
}

impl PackEntry {
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        if (self.stored_len as usize) < OVERHEAD {
            return Err(FormatError::InvalidParameter {
                what: "pack entry",
                reason: "stored length shorter than an envelope".into(),
            });
        }
        out.put_u8(self.blob_type as u8);
        out.put(self.id.as_bytes());
        out.put_u32(self.offset);
        out.put_u32(self.stored_len);
        out.put_u32(self.plain_len);
        Ok(())
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        let entry = Self {
            blob_type: BlobType::from_u8(r.u8()?)?,
            id: BlobId::from_bytes(r.array()?),
            offset: r.u32()?,
            stored_len: r.u32()?,
            plain_len: r.u32()?,
        };
        if (entry.stored_len as usize) < OVERHEAD {
            return Err(FormatError::malformed(
                r.what(),
                "blob shorter than an envelope",
            ));
        }
        Ok(entry)
    }

    /// The byte range of the blob in its pack.
    pub fn range(&self) -> std::ops::Range<u64> {
        u64::from(self.offset)..u64::from(self.offset) + u64::from(self.stored_len)
    }

    /// Opens this blob's envelope (the bytes at [`PackEntry::range`]) and checks the plaintext
    /// against the blob id.
    pub fn open(&self, key: &MasterKey, sealed: &[u8]) -> Result<Vec<u8>> {
        let mut plain = Vec::new();
        self.open_into(key, sealed, &mut Vec::new(), &mut plain)?;
        Ok(plain)
    }

    /// [`PackEntry::open`] into `out` (replacing its content), with `scratch` for the
    /// compressed payload: both reused by a caller opening many blobs (see
    /// [`envelope::open_into`]).
    pub fn open_into(
        &self,
        key: &MasterKey,
        sealed: &[u8],
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        envelope::open_object_into(
            key,
            self.blob_type.object_kind(),
            self.id.as_bytes(),
            sealed,
            blob_what(self.blob_type),
            scratch,
            out,
        )?;
        if out.len() != self.plain_len as usize {
            return Err(FormatError::malformed(
                "pack entry",
                "plain length differs from the blob's",
            ));
        }
        Ok(())
    }
}

/// Seals a blob's plaintext; returns its id and envelope.
pub fn seal_blob(
    key: &MasterKey,
    blob_type: BlobType,
    plain: &[u8],
    compression: Compression,
    rng: &mut impl CryptoRngCore,
) -> Result<(BlobId, Vec<u8>)> {
    let id = key.id_key().blob_id(plain);
    let sealed = envelope::seal(
        key,
        blob_type.object_kind(),
        id.as_bytes(),
        plain,
        compression,
        rng,
    )?;
    Ok((id, sealed))
}

/// Opens a blob's envelope and checks its plaintext against `id`.
pub fn open_blob(
    key: &MasterKey,
    blob_type: BlobType,
    id: &BlobId,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    envelope::open_object(
        key,
        blob_type.object_kind(),
        id.as_bytes(),
        sealed,
        blob_what(blob_type),
    )
}

/// What errors call a blob of this type.
fn blob_what(blob_type: BlobType) -> &'static str {
    match blob_type {
        BlobType::Data => "data blob",
        BlobType::Tree => "tree blob",
    }
}

/// The decoded trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Length of the sealed header right before the trailer.
    pub header_len: u32,
}

impl Trailer {
    /// Decodes the last [`TRAILER_LEN`] bytes of a pack.
    pub fn decode(tail: &[u8]) -> Result<Self> {
        let what = "pack trailer";
        let mut r = Reader::new(tail, what);
        let header_len = r.u32()?;
        let version = r.u8()?;
        let reserved = r.array::<3>()?;
        if r.array::<8>()? != PACK_MAGIC {
            return Err(FormatError::BadMagic { what });
        }
        check_version(what, u32::from(version), u32::from(PACK_VERSION))?;
        if reserved != [0; 3] {
            return Err(FormatError::malformed(what, "reserved bytes are not zero"));
        }
        r.finish()?;
        Ok(Self { header_len })
    }

    /// Encodes the trailer.
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut v = Vec::with_capacity(TRAILER_LEN);
        v.put_u32(self.header_len);
        v.put_u8(PACK_VERSION);
        v.put(&[0; 3]);
        v.put(&PACK_MAGIC);
        let mut out = [0u8; TRAILER_LEN];
        out.copy_from_slice(&v);
        out
    }

    /// Where the sealed header starts in a pack of `pack_len` bytes.
    pub fn header_offset(&self, pack_len: u64) -> Result<u64> {
        pack_len
            .checked_sub(TRAILER_LEN as u64 + u64::from(self.header_len))
            .ok_or(FormatError::malformed(
                "pack trailer",
                "header length exceeds pack length",
            ))
    }
}

/// Decodes a header's plaintext and validates it against the data section length (the offset
/// where the header starts).
pub fn decode_header(plain: &[u8], data_len: u64) -> Result<Vec<PackEntry>> {
    let what = "pack header";
    let mut r = Reader::new(plain, what);
    check_version(what, u32::from(r.u8()?), u32::from(PACK_VERSION))?;
    let count = r.count(ENTRY_LEN)?;
    let mut entries = Vec::with_capacity(count);
    let mut expected_offset = 0u64;
    for _ in 0..count {
        let e = PackEntry::decode_from(&mut r)?;
        if entries
            .first()
            .is_some_and(|f: &PackEntry| f.blob_type != e.blob_type)
        {
            return Err(FormatError::malformed(
                what,
                "data and tree blobs mixed in one pack",
            ));
        }
        if u64::from(e.offset) != expected_offset {
            return Err(FormatError::malformed(
                what,
                format!(
                    "entry at offset {} where {} was expected",
                    e.offset, expected_offset
                ),
            ));
        }
        expected_offset = e.range().end;
        entries.push(e);
    }
    r.finish()?;
    if expected_offset != data_len {
        return Err(FormatError::malformed(
            what,
            format!("entries end at {expected_offset}, header starts at {data_len}"),
        ));
    }
    Ok(entries)
}

/// Encodes a header's plaintext.
pub fn encode_header(entries: &[PackEntry]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(5 + entries.len() * ENTRY_LEN);
    out.put_u8(PACK_VERSION);
    out.put_u32(len32("pack header", entries.len())?);
    for e in entries {
        e.encode_into(&mut out)?;
    }
    Ok(out)
}

/// Opens the sealed header found at `header_offset` (which is also the data section length).
pub fn open_header(
    key: &MasterKey,
    sealed_header: &[u8],
    header_offset: u64,
) -> Result<Vec<PackEntry>> {
    let plain = envelope::open(
        key,
        ObjectKind::PackHeader,
        &HEADER_AD_ID,
        sealed_header,
        "pack header",
    )?;
    decode_header(&plain, header_offset)
}

/// Reads the header of a pack held whole in memory.
pub fn read_pack(key: &MasterKey, pack: &[u8]) -> Result<Vec<PackEntry>> {
    let tail_start = pack
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or(FormatError::Truncated {
            what: "pack",
            needed: TRAILER_LEN,
            available: pack.len(),
        })?;
    let trailer = Trailer::decode(pack.get(tail_start..).unwrap_or_default())?;
    let header_offset = trailer.header_offset(pack.len() as u64)?;
    let sealed = usize::try_from(header_offset)
        .ok()
        .and_then(|start| pack.get(start..tail_start))
        .ok_or(FormatError::malformed("pack", "header out of range"))?;
    open_header(key, sealed, header_offset)
}

/// Checks a pack's bytes against its id.
pub fn check_pack_id(key: &MasterKey, id: &PackId, pack: &[u8]) -> Result<()> {
    envelope::check_id(key, id.as_bytes(), pack, "pack")
}

/// Builds a pack in memory, blob by blob.
#[derive(Debug)]
pub struct PackBuilder {
    blob_type: BlobType,
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    hasher: IdHasher,
}

/// A finished pack: its name, bytes, and entries for the index.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    /// The pack id (its name in `data/`).
    pub id: PackId,
    /// The whole file.
    pub bytes: Vec<u8>,
    /// The blobs it holds.
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// Starts a pack of blobs of one type; `capacity` pre-allocates.
    pub fn new(key: &MasterKey, blob_type: BlobType, capacity: usize) -> Self {
        Self {
            blob_type,
            buf: Vec::with_capacity(capacity),
            entries: Vec::new(),
            hasher: key.id_key().hasher(),
        }
    }

    /// Starts a pack in a buffer left over from an earlier pack (its contents are discarded),
    /// so that the memory of a finished pack is reused instead of freed and faulted in again;
    /// `capacity` is reserved as with [`PackBuilder::new`].
    pub fn with_buffer(
        key: &MasterKey,
        blob_type: BlobType,
        mut buf: Vec<u8>,
        capacity: usize,
    ) -> Self {
        buf.clear();
        buf.reserve(capacity);
        Self {
            blob_type,
            buf,
            entries: Vec::new(),
            hasher: key.id_key().hasher(),
        }
    }

    /// The type of blobs in this pack.
    pub fn blob_type(&self) -> BlobType {
        self.blob_type
    }

    /// Appends a sealed blob.
    pub fn add(&mut self, id: BlobId, sealed: &[u8], plain_len: u32) -> Result<()> {
        let offset = self.buf.len() as u64;
        let end = offset + sealed.len() as u64;
        if end + (TRAILER_LEN + OVERHEAD + (self.entries.len() + 1) * ENTRY_LEN + 5) as u64
            > MAX_PACK_LEN
        {
            return Err(FormatError::TooLarge {
                what: "pack",
                size: end,
                limit: MAX_PACK_LEN,
            });
        }
        if sealed.len() < OVERHEAD {
            return Err(FormatError::InvalidParameter {
                what: "sealed blob",
                reason: "shorter than an envelope".into(),
            });
        }
        self.entries.push(PackEntry {
            blob_type: self.blob_type,
            id,
            offset: offset as u32,
            stored_len: sealed.len() as u32,
            plain_len,
        });
        self.hasher.update(sealed);
        self.buf.extend_from_slice(sealed);
        Ok(())
    }

    /// Bytes of blobs so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of blobs so far.
    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// Seals the header, appends it and the trailer, and names the pack.
    pub fn finish(mut self, key: &MasterKey, rng: &mut impl CryptoRngCore) -> Result<FinishedPack> {
        let header = encode_header(&self.entries)?;
        // Headers are mostly random ids: compression rarely helps, so skip it.
        let sealed = envelope::seal(
            key,
            ObjectKind::PackHeader,
            &HEADER_AD_ID,
            &header,
            Compression::Off,
            rng,
        )?;
        let trailer = Trailer {
            header_len: len32("pack header", sealed.len())?,
        }
        .encode();
        self.hasher.update(&sealed).update(&trailer);
        self.buf.extend_from_slice(&sealed);
        self.buf.extend_from_slice(&trailer);
        Ok(FinishedPack {
            id: PackId::from_bytes(self.hasher.finalize()),
            bytes: self.buf,
            entries: self.entries,
        })
    }
}

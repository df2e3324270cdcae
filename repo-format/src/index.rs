//! Index files: which pack holds which blob.
//!
//! Index files are write-once: a writer adds new ones, and only prune replaces several by one
//! that lists them in `supersedes`. Plaintext layout (sealed as kind `Index`, stored under its
//! [`IndexId`]):
//!
//! ```text
//! index      = version[1] = 1 || supersedes_count[4] || index_id[32] * supersedes_count
//!              || pack_count[4] || pack * pack_count
//! pack       = pack_id[32] || entry_count[4] || entry * entry_count
//! entry      = blob_type[1] || blob_id[32] || offset[4] || stored_len[4] || plain_len[4]
//! ```

use rand_core::CryptoRngCore;

use crate::codec::{Reader, Writer, check_version, len32};
use crate::envelope::{self, Compression, ObjectKind};
use crate::error::Result;
use crate::id::{ID_LEN, IndexId, PackId};
use crate::keys::MasterKey;
use crate::pack::{ENTRY_LEN, PackEntry};

/// Index version written by this build.
pub const INDEX_VERSION: u8 = 1;

/// The blobs of one pack, as listed in an index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPack {
    /// The pack.
    pub id: PackId,
    /// Its blobs.
    pub blobs: Vec<PackEntry>,
}

/// A decoded index file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexFile {
    /// Index files this one replaces (written by prune; empty otherwise).
    pub supersedes: Vec<IndexId>,
    /// Packs and their blobs.
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    /// Plaintext encoding.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let what = "index";
        let blobs: usize = self.packs.iter().map(|p| p.blobs.len()).sum();
        let mut out = Vec::with_capacity(
            9 + self.supersedes.len() * ID_LEN + self.packs.len() * 36 + blobs * ENTRY_LEN,
        );
        out.put_u8(INDEX_VERSION);
        out.put_u32(len32(what, self.supersedes.len())?);
        for s in &self.supersedes {
            out.put(s.as_bytes());
        }
        out.put_u32(len32(what, self.packs.len())?);
        for p in &self.packs {
            out.put(p.id.as_bytes());
            out.put_u32(len32(what, p.blobs.len())?);
            for e in &p.blobs {
                e.encode_into(&mut out)?;
            }
        }
        Ok(out)
    }

    /// Decodes the plaintext encoding.
    pub fn decode(plain: &[u8]) -> Result<Self> {
        let mut r = Reader::new(plain, "index");
        check_version(r.what(), u32::from(r.u8()?), u32::from(INDEX_VERSION))?;
        let n = r.count(ID_LEN)?;
        let mut supersedes = Vec::with_capacity(n);
        for _ in 0..n {
            supersedes.push(IndexId::from_bytes(r.array()?));
        }
        let n = r.count(ID_LEN + 4)?;
        let mut packs = Vec::with_capacity(n);
        for _ in 0..n {
            let id = PackId::from_bytes(r.array()?);
            let m = r.count(ENTRY_LEN)?;
            let mut blobs = Vec::with_capacity(m);
            for _ in 0..m {
                blobs.push(PackEntry::decode_from(&mut r)?);
            }
            packs.push(IndexPack { id, blobs });
        }
        r.finish()?;
        Ok(Self { supersedes, packs })
    }

    /// Seals the index file; returns its id and bytes.
    pub fn seal(
        &self,
        key: &MasterKey,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(IndexId, Vec<u8>)> {
        let plain = self.encode()?;
        let (id, sealed) =
            envelope::seal_object(key, ObjectKind::Index, &plain, Compression::Zstd(3), rng)?;
        Ok((IndexId::from_bytes(id), sealed))
    }

    /// Opens and decodes a sealed index file stored under `id`.
    pub fn open(key: &MasterKey, id: &IndexId, sealed: &[u8]) -> Result<Self> {
        let plain = envelope::open_object(key, ObjectKind::Index, id.as_bytes(), sealed, "index")?;
        Self::decode(&plain)
    }
}

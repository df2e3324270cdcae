//! The repository config: parameters every writer must agree on.
//!
//! Stored at the object name `config`:
//!
//! ```text
//! config = magic[8] = "CAIRNCFG" || version[4] = 1 || envelope (kind Config, id = 32 zero bytes)
//! plaintext = repo_id[32] || created (seconds[8] i64 || nanos[4])
//!             || chunker: min[4] || avg[4] || max[4] || normalization[1]
//!             || compression_level[4] i32 (0 = off, else zstd level)
//!             || data_pack_target[4] || tree_pack_target[4]
//!             || ext_count[2] || (tag[2] || len[4] || bytes) * ext_count
//! ```
//!
//! The magic and version are in the clear so that a reader recognises a Cairn repository and a
//! newer format before it has a key. `repo_id` is random, not secret; it names the repository in
//! caches.

use rand_core::CryptoRngCore;

use crate::chunker::ChunkerParams;
use crate::codec::{Reader, Writer, check_version, put_extensions, read_extensions};
use crate::envelope::{self, Compression, ObjectKind};
use crate::error::{FormatError, Result};
use crate::keys::MasterKey;
use crate::pack::MAX_PACK_LEN;
use crate::tree::{Extension, Timestamp};

/// Magic bytes opening the config object.
pub const CONFIG_MAGIC: [u8; 8] = *b"CAIRNCFG";
/// Repository format version written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// The id used as associated data of the config envelope.
pub const CONFIG_AD_ID: [u8; 32] = [0; 32];
/// Default target size of data packs: see SPEC.md, "Pack size".
pub const DEFAULT_DATA_PACK_TARGET: u32 = 16 * 1024 * 1024;
/// Default target size of tree packs.
pub const DEFAULT_TREE_PACK_TARGET: u32 = 4 * 1024 * 1024;

/// Repository-wide parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoConfig {
    /// Random repository id (not secret).
    pub repo_id: [u8; 32],
    /// When the repository was created.
    pub created: Timestamp,
    /// Chunk size limits.
    pub chunker: ChunkerParams,
    /// Compression of new blobs.
    pub compression: Compression,
    /// Target size of data packs in bytes.
    pub data_pack_target: u32,
    /// Target size of tree packs in bytes.
    pub tree_pack_target: u32,
    /// Fields from later versions.
    pub extensions: Vec<Extension>,
}

impl RepoConfig {
    /// A config with a fresh repository id and default parameters.
    pub fn new(created: Timestamp, rng: &mut impl CryptoRngCore) -> Self {
        let mut repo_id = [0u8; 32];
        rng.fill_bytes(&mut repo_id);
        Self {
            repo_id,
            created,
            chunker: ChunkerParams::default(),
            compression: Compression::default(),
            data_pack_target: DEFAULT_DATA_PACK_TARGET,
            tree_pack_target: DEFAULT_TREE_PACK_TARGET,
            extensions: Vec::new(),
        }
    }

    /// Checks every parameter.
    pub fn validate(&self) -> Result<()> {
        self.chunker.validate()?;
        if self.created.nanos >= 1_000_000_000 {
            return Err(FormatError::InvalidParameter {
                what: "config created time",
                reason: "nanoseconds out of range".into(),
            });
        }
        let level = self.compression.level();
        if !(-7..=22).contains(&level) || self.compression == Compression::Zstd(0) {
            return Err(FormatError::InvalidParameter {
                what: "compression level",
                reason: format!("{level} is outside -7..=22 (0 is spelled Compression::Off)"),
            });
        }
        for (what, v) in [
            ("data pack target", self.data_pack_target),
            ("tree pack target", self.tree_pack_target),
        ] {
            if !(64 * 1024..=(MAX_PACK_LEN / 2) as u32).contains(&v) {
                return Err(FormatError::InvalidParameter {
                    what,
                    reason: format!("{v} is outside 64 KiB..2 GiB"),
                });
            }
        }
        Ok(())
    }

    /// Plaintext encoding.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(80);
        out.put(&self.repo_id);
        self.created.encode_into(&mut out)?;
        self.chunker.encode_into(&mut out);
        out.put_i32(self.compression.level());
        out.put_u32(self.data_pack_target);
        out.put_u32(self.tree_pack_target);
        put_extensions(&mut out, &self.extensions)?;
        Ok(out)
    }

    /// Decodes the plaintext encoding.
    pub fn decode(plain: &[u8]) -> Result<Self> {
        let mut r = Reader::new(plain, "config");
        let repo_id = r.array()?;
        let created = Timestamp::decode_from(&mut r)?;
        let chunker = ChunkerParams::decode_from(&mut r)?;
        let compression = Compression::from_level(r.i32()?);
        let data_pack_target = r.u32()?;
        let tree_pack_target = r.u32()?;
        let extensions = read_extensions(&mut r)?;
        r.finish()?;
        let cfg = Self {
            repo_id,
            created,
            chunker,
            compression,
            data_pack_target,
            tree_pack_target,
            extensions,
        };
        cfg.validate()
            .map_err(|e| FormatError::malformed("config", e.to_string()))?;
        Ok(cfg)
    }

    /// The stored `config` object.
    pub fn seal(&self, key: &MasterKey, rng: &mut impl CryptoRngCore) -> Result<Vec<u8>> {
        self.validate()?;
        let mut out = Vec::with_capacity(160);
        out.put(&CONFIG_MAGIC);
        out.put_u32(FORMAT_VERSION);
        let sealed = envelope::seal(
            key,
            ObjectKind::Config,
            &CONFIG_AD_ID,
            &self.encode()?,
            Compression::Off,
            rng,
        )?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Checks the clear prefix of a `config` object: a Cairn repository of a version this build reads.
    pub fn check_prefix(stored: &[u8]) -> Result<u32> {
        let mut r = Reader::new(stored, "config");
        if r.array::<8>()? != CONFIG_MAGIC {
            return Err(FormatError::BadMagic { what: "config" });
        }
        let version = r.u32()?;
        check_version("repository format", version, FORMAT_VERSION)?;
        Ok(version)
    }

    /// Opens the stored `config` object.
    pub fn open(key: &MasterKey, stored: &[u8]) -> Result<Self> {
        Self::check_prefix(stored)?;
        let sealed = stored.get(12..).unwrap_or_default();
        let plain = envelope::open(key, ObjectKind::Config, &CONFIG_AD_ID, sealed, "config")?;
        Self::decode(&plain)
    }
}

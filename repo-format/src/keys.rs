//! The repository master key.
//!
//! Generated once at `init` from a cryptographic RNG and never changed; key slots
//! ([`crate::keyslot`]) wrap it under passphrases. Encoding (97 bytes, inside a key slot only,
//! never stored in the clear):
//!
//! ```text
//! version[1] = 1 || data_key[32] || id_key[32] || chunker_seed[32]
//! ```

use std::fmt;

use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::codec::{Reader, Writer, check_version};
use crate::error::Result;
use crate::id::IdKey;

/// Version of the master key encoding.
pub const MASTER_KEY_VERSION: u8 = 1;
/// Length of the master key encoding.
pub const MASTER_KEY_LEN: usize = 1 + 32 + 32 + 32;

/// The three secrets of a repository.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct MasterKey {
    data_key: [u8; 32],
    id_key: [u8; 32],
    chunker_seed: [u8; 32],
}

impl MasterKey {
    /// Draws a fresh master key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut key = Self {
            data_key: [0; 32],
            id_key: [0; 32],
            chunker_seed: [0; 32],
        };
        rng.fill_bytes(&mut key.data_key);
        rng.fill_bytes(&mut key.id_key);
        rng.fill_bytes(&mut key.chunker_seed);
        key
    }

    /// Builds a key from its parts (tests and golden vectors).
    pub fn from_parts(data_key: [u8; 32], id_key: [u8; 32], chunker_seed: [u8; 32]) -> Self {
        Self {
            data_key,
            id_key,
            chunker_seed,
        }
    }

    /// The XChaCha20-Poly1305 key every envelope is sealed with.
    pub fn data_key(&self) -> &[u8; 32] {
        &self.data_key
    }

    /// The BLAKE3 key every id is computed with.
    pub fn id_key(&self) -> IdKey {
        IdKey::from_bytes(self.id_key)
    }

    /// The seed of the keyed FastCDC gear table.
    pub fn chunker_seed(&self) -> &[u8; 32] {
        &self.chunker_seed
    }

    /// The 97-byte encoding (wrapped inside key slots).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(MASTER_KEY_LEN));
        out.put_u8(MASTER_KEY_VERSION);
        out.put(&self.data_key);
        out.put(&self.id_key);
        out.put(&self.chunker_seed);
        out
    }

    /// Decodes the 97-byte encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "master key");
        check_version(r.what(), u32::from(r.u8()?), u32::from(MASTER_KEY_VERSION))?;
        let key = Self {
            data_key: r.array()?,
            id_key: r.array()?,
            chunker_seed: r.array()?,
        };
        r.finish()?;
        Ok(key)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

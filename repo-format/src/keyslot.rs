//! Key slots: the master key wrapped under a passphrase.
//!
//! A repository has one or more key slot files in `keys/`. Each wraps the same
//! [`MasterKey`]; adding, removing or changing a passphrase writes or deletes a slot and never
//! touches data. Layout of a slot file (all integers little-endian):
//!
//! ```text
//! magic[8] = "CAIRNKEY" || version[1] = 1 || slot_type[1] || created[8] (i64 unix seconds)
//!   || label_len[2] || label[label_len] (UTF-8)
//!   || body (depends on slot_type)
//!   || checksum[32] = BLAKE3(everything before it)
//!
//! slot_type 1, passphrase (Argon2id):
//!   body = m_cost_kib[4] || t_cost[4] || p_cost[4] || salt[32] || nonce[24] || wrapped[113]
//!   wrapping key = Argon2id(passphrase, salt, m_cost_kib, t_cost, p_cost, out = 32 bytes)
//!   wrapped      = XChaCha20-Poly1305(wrapping key, nonce, master key encoding (97 bytes),
//!                                     AD = every byte of the slot before `wrapped`)
//!
//! slot_type 2, public key (reserved, not implemented by this build): a write-only key that can
//!   add data but not read it. Readers that meet a slot type they do not know skip the slot.
//! ```
//!
//! In every version the last 32 bytes are the checksum of the rest, and readers verify it before
//! anything but the magic. The unkeyed checksum tells a damaged slot ([`FormatError::ChecksumMismatch`]) apart from a wrong
//! passphrase ([`FormatError::WrongPassphrase`]).

use argon2::{Algorithm, Argon2, Params, Version};

/// One 1 KiB block of Argon2id working memory (see [`KeySlot::unwrap_in`]).
pub use argon2::Block as KdfBlock;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer, check_version, put_bytes16};
use crate::error::{FormatError, Result};
use crate::id::{IdKey, KeyId};
use crate::keys::{MASTER_KEY_LEN, MasterKey};

/// Magic bytes opening every key slot.
pub const KEYSLOT_MAGIC: [u8; 8] = *b"CAIRNKEY";
/// Key slot version written by this build.
pub const KEYSLOT_VERSION: u8 = 1;
/// Slot type: passphrase wrapped with Argon2id.
pub const SLOT_TYPE_PASSPHRASE: u8 = 1;
/// Slot type reserved for public-key (write-only) slots.
pub const SLOT_TYPE_PUBLIC_KEY: u8 = 2;
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const WRAPPED_LEN: usize = MASTER_KEY_LEN + 16;
const CHECKSUM_LEN: usize = 32;

/// Argon2id cost parameters, stored in each slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// Smallest memory cost a slot may declare (8 KiB per lane is Argon2's own floor).
    pub const MIN_M_COST_KIB: u32 = 8;
    /// Largest memory cost a slot may declare: 4 GiB. Bounds what a hostile slot can make a reader
    /// allocate.
    pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
    /// Largest pass count a slot may declare.
    pub const MAX_T_COST: u32 = 64;
    /// Largest lane count a slot may declare.
    pub const MAX_P_COST: u32 = 16;

    /// Cheap parameters for tests only: never use them for a real repository.
    pub const INSECURE_FOR_TESTS: Self = Self {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };

    fn validate(&self) -> Result<()> {
        let ok = (1..=Self::MAX_P_COST).contains(&self.p_cost)
            && (1..=Self::MAX_T_COST).contains(&self.t_cost)
            && self.m_cost_kib >= Self::MIN_M_COST_KIB.saturating_mul(self.p_cost)
            && self.m_cost_kib <= Self::MAX_M_COST_KIB;
        if ok {
            Ok(())
        } else {
            Err(FormatError::InvalidParameter {
                what: "argon2id parameters",
                reason: format!(
                    "m={} KiB t={} p={} outside m 8*p..=4194304, t 1..=64, p 1..=16",
                    self.m_cost_kib, self.t_cost, self.p_cost
                ),
            })
        }
    }

    fn argon2_params(&self) -> Result<Params> {
        self.validate()?;
        Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32)).map_err(|e| {
            FormatError::InvalidParameter {
                what: "argon2id parameters",
                reason: e.to_string(),
            }
        })
    }

    /// The number of 1 KiB memory blocks a derivation with these parameters works in (what
    /// [`KeySlot::unwrap_in`] needs); an error for parameters outside the accepted ranges.
    pub fn memory_blocks(&self) -> Result<usize> {
        Ok(self.argon2_params()?.block_count())
    }

    /// Derives the wrapping key, in `memory` when given (at least [`KdfParams::memory_blocks`]
    /// blocks, any content), else in memory allocated here.
    fn derive(
        &self,
        passphrase: &[u8],
        salt: &[u8; SALT_LEN],
        memory: Option<&mut [KdfBlock]>,
    ) -> Result<Zeroizing<[u8; 32]>> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.argon2_params()?);
        let mut out = Zeroizing::new([0u8; 32]);
        match memory {
            Some(m) => argon2.hash_password_into_with_memory(passphrase, salt, out.as_mut(), m),
            None => argon2.hash_password_into(passphrase, salt, out.as_mut()),
        }
        .map_err(|e| FormatError::InvalidParameter {
            what: "argon2id input",
            reason: e.to_string(),
        })?;
        Ok(out)
    }
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 4 lanes: RFC 9106's second recommended option (section 4), and 64 MiB
    /// per guess for an attacker. The lanes are computed in parallel, so opening takes about
    /// 0.08 s on 2 cores instead of 0.16 s with one lane (the same memory and passes).
    fn default() -> Self {
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 4,
        }
    }
}

/// The type-specific part of a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotBody {
    /// Master key wrapped under an Argon2id-derived key.
    Passphrase {
        /// KDF cost.
        params: KdfParams,
        /// KDF salt.
        salt: [u8; SALT_LEN],
        /// AEAD nonce.
        nonce: [u8; NONCE_LEN],
        /// The wrapped master key with its tag.
        wrapped: [u8; WRAPPED_LEN],
    },
}

/// A decoded key slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    /// When the slot was created, unix seconds.
    pub created: i64,
    /// A free label (who or what uses this key), at most 65535 bytes.
    pub label: String,
    /// The wrapped key.
    pub body: SlotBody,
}

impl KeySlot {
    /// Wraps `master` under `passphrase`.
    pub fn wrap_passphrase(
        master: &MasterKey,
        passphrase: &[u8],
        params: KdfParams,
        label: &str,
        created: i64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self> {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut salt);
        rng.fill_bytes(&mut nonce);
        let mut slot = Self {
            created,
            label: label.to_owned(),
            body: SlotBody::Passphrase {
                params,
                salt,
                nonce,
                wrapped: [0; WRAPPED_LEN],
            },
        };
        let ad = slot.prefix()?;
        let wrapping = params.derive(passphrase, &salt, None)?;
        let ct = XChaCha20Poly1305::new(wrapping.as_ref().into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &master.encode(),
                    aad: &ad,
                },
            )
            .map_err(|_| FormatError::malformed("key slot", "encryption failed"))?;
        let SlotBody::Passphrase { wrapped, .. } = &mut slot.body;
        if ct.len() != WRAPPED_LEN {
            return Err(FormatError::malformed(
                "key slot",
                "unexpected wrapped length",
            ));
        }
        wrapped.copy_from_slice(&ct);
        Ok(slot)
    }

    /// Unwraps the master key; [`FormatError::WrongPassphrase`] when the passphrase is not this slot's.
    pub fn unwrap(&self, passphrase: &[u8]) -> Result<MasterKey> {
        self.unwrap_with(passphrase, None)
    }

    /// [`KeySlot::unwrap`], with Argon2id working in `memory` (at least
    /// [`KdfParams::memory_blocks`] blocks of the slot's parameters, any content; it is
    /// overwritten). Lets a caller supply memory that is cheaper to fill than a fresh
    /// allocation (mapped and populated at once), or reuse it across slots.
    pub fn unwrap_in(&self, passphrase: &[u8], memory: &mut [KdfBlock]) -> Result<MasterKey> {
        self.unwrap_with(passphrase, Some(memory))
    }

    fn unwrap_with(&self, passphrase: &[u8], memory: Option<&mut [KdfBlock]>) -> Result<MasterKey> {
        let SlotBody::Passphrase {
            params,
            salt,
            nonce,
            wrapped,
        } = &self.body;
        let ad = self.prefix()?;
        let wrapping = params.derive(passphrase, salt, memory)?;
        let plain = XChaCha20Poly1305::new(wrapping.as_ref().into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: wrapped,
                    aad: &ad,
                },
            )
            .map_err(|_| FormatError::WrongPassphrase)?;
        MasterKey::decode(&Zeroizing::new(plain))
    }

    /// The Argon2id parameters of a passphrase slot.
    pub fn kdf_params(&self) -> KdfParams {
        let SlotBody::Passphrase { params, .. } = &self.body;
        *params
    }

    /// Every byte before `wrapped` (the AEAD's associated data).
    fn prefix(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(128 + self.label.len());
        out.put(&KEYSLOT_MAGIC);
        out.put_u8(KEYSLOT_VERSION);
        let SlotBody::Passphrase {
            params,
            salt,
            nonce,
            ..
        } = &self.body;
        out.put_u8(SLOT_TYPE_PASSPHRASE);
        out.put_i64(self.created);
        put_bytes16(&mut out, "key slot label", self.label.as_bytes())?;
        out.put_u32(params.m_cost_kib);
        out.put_u32(params.t_cost);
        out.put_u32(params.p_cost);
        out.put(salt);
        out.put(nonce);
        Ok(out)
    }

    /// The slot file's bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = self.prefix()?;
        let SlotBody::Passphrase { wrapped, .. } = &self.body;
        out.put(wrapped);
        let sum = *blake3::hash(&out).as_bytes();
        out.put(&sum);
        Ok(out)
    }

    /// The slot file's name: keyed hash of its bytes.
    pub fn id(&self, id_key: &IdKey) -> Result<KeyId> {
        Ok(KeyId::from_bytes(id_key.hash(&self.encode()?)))
    }

    /// Decodes a slot file. Slots of unknown type fail with [`FormatError::UnsupportedSlotType`]
    /// (readers skip them); damaged slots with [`FormatError::ChecksumMismatch`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let what = "key slot";
        let mut r = Reader::new(bytes, what);
        if r.array::<8>()? != KEYSLOT_MAGIC {
            return Err(FormatError::BadMagic { what });
        }
        let body_len = bytes
            .len()
            .checked_sub(CHECKSUM_LEN)
            .ok_or(FormatError::Truncated {
                what,
                needed: CHECKSUM_LEN,
                available: bytes.len(),
            })?;
        let (body, sum) = bytes.split_at(body_len);
        if blake3::hash(body).as_bytes() != sum {
            return Err(FormatError::ChecksumMismatch { what });
        }
        let mut r = Reader::new(body, what);
        r.take(8)?;
        check_version(what, u32::from(r.u8()?), u32::from(KEYSLOT_VERSION))?;
        let slot_type = r.u8()?;
        if slot_type != SLOT_TYPE_PASSPHRASE {
            return Err(FormatError::UnsupportedSlotType { slot_type });
        }
        let created = r.i64()?;
        let label = r.str16()?;
        let params = KdfParams {
            m_cost_kib: r.u32()?,
            t_cost: r.u32()?,
            p_cost: r.u32()?,
        };
        params
            .validate()
            .map_err(|e| FormatError::malformed(what, e.to_string()))?;
        let salt = r.array()?;
        let nonce = r.array()?;
        let wrapped = r.array()?;
        r.finish()?;
        Ok(Self {
            created,
            label,
            body: SlotBody::Passphrase {
                params,
                salt,
                nonce,
                wrapped,
            },
        })
    }
}

/// Tries every decoded slot in turn with `passphrase`; returns the master key and the index of the
/// slot that opened. (Slots of unknown types fail to decode; callers leave them out.)
pub fn unlock<'a>(
    slots: impl IntoIterator<Item = &'a KeySlot>,
    passphrase: &[u8],
) -> Result<(usize, MasterKey)> {
    for (i, slot) in slots.into_iter().enumerate() {
        match slot.unwrap(passphrase) {
            Ok(key) => return Ok((i, key)),
            Err(FormatError::WrongPassphrase) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(FormatError::WrongPassphrase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn unwrap_in_caller_memory() {
        let mut rng = ChaCha20Rng::seed_from_u64(10);
        let master = MasterKey::generate(&mut rng);
        let params = KdfParams::INSECURE_FOR_TESTS;
        let slot = KeySlot::wrap_passphrase(&master, b"pw", params, "", 0, &mut rng).unwrap();
        let n = params.memory_blocks().unwrap();
        assert!(n >= params.m_cost_kib as usize / 2 && n <= params.m_cost_kib as usize);
        // Whatever the memory held before (here: leftovers of another derivation, then junk),
        // the key is the same; the memory may be larger than needed.
        let mut memory = vec![KdfBlock::default(); n + 3];
        assert_eq!(slot.unwrap_in(b"pw", &mut memory).unwrap(), master);
        assert_eq!(
            slot.unwrap_in(b"pW", &mut memory),
            Err(FormatError::WrongPassphrase)
        );
        for b in &mut memory {
            b.as_mut().fill(0xA5A5_5A5A_F00D_BEEF);
        }
        assert_eq!(slot.unwrap_in(b"pw", &mut memory).unwrap(), master);
        // Too little memory is an error, not a panic or a wrong key.
        let mut small = vec![KdfBlock::default(); n - 1];
        assert!(matches!(
            slot.unwrap_in(b"pw", &mut small),
            Err(FormatError::InvalidParameter { .. })
        ));
    }

    #[test]
    fn wrap_unwrap_and_wrong_passphrase() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let master = MasterKey::generate(&mut rng);
        let slot = KeySlot::wrap_passphrase(
            &master,
            b"pw",
            KdfParams::INSECURE_FOR_TESTS,
            "me@host",
            1_700_000_000,
            &mut rng,
        )
        .unwrap();
        let bytes = slot.encode().unwrap();
        let back = KeySlot::decode(&bytes).unwrap();
        assert_eq!(back, slot);
        assert_eq!(back.unwrap(b"pw").unwrap(), master);
        assert_eq!(back.unwrap(b"pW"), Err(FormatError::WrongPassphrase));
        let other = KeySlot::wrap_passphrase(
            &master,
            b"second",
            KdfParams::INSECURE_FOR_TESTS,
            "",
            0,
            &mut rng,
        )
        .unwrap();
        let (i, k) = unlock([&slot, &other], b"second").unwrap();
        assert_eq!((i, &k), (1, &master));
        assert!(matches!(
            unlock([&slot, &other], b"none"),
            Err(FormatError::WrongPassphrase)
        ));
    }

    #[test]
    fn every_flipped_byte_is_a_typed_error() {
        let mut rng = ChaCha20Rng::seed_from_u64(10);
        let master = MasterKey::generate(&mut rng);
        let slot = KeySlot::wrap_passphrase(
            &master,
            b"pw",
            KdfParams::INSECURE_FOR_TESTS,
            "x",
            5,
            &mut rng,
        )
        .unwrap();
        let bytes = slot.encode().unwrap();
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x80;
            let r = KeySlot::decode(&t);
            assert!(
                matches!(
                    r,
                    Err(FormatError::ChecksumMismatch { .. })
                        | Err(FormatError::BadMagic { .. })
                        | Err(FormatError::UnsupportedVersion { .. })
                ),
                "byte {i}: {r:?}"
            );
        }
        for n in 0..bytes.len() {
            assert!(KeySlot::decode(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn hostile_kdf_parameters_are_rejected() {
        let bad = KdfParams {
            m_cost_kib: u32::MAX,
            t_cost: 1,
            p_cost: 1,
        };
        assert!(matches!(
            bad.validate(),
            Err(FormatError::InvalidParameter { .. })
        ));
    }
}

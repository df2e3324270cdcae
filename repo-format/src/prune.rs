//! Prune plans: the packs a prune run condemned, written before anything is deleted.
//!
//! Prune frees space in two phases so that it can run while backups run (see SPEC.md, "Prune").
//! Phase one writes a plan listing the condemned packs; backups that start later never
//! deduplicate against blobs in those packs. Phase two, in a prune run at least `grace_secs`
//! after the plan, re-checks what every snapshot then references, deletes the condemned packs
//! nothing needs, and removes the plan.
//!
//! Plaintext layout (sealed as kind `PrunePlan`, stored under `prune/<id>`, id = keyed BLAKE3 of
//! the plaintext):
//!
//! ```text
//! plan = version[1] = 1 || created (seconds[8] i64 || nanos[4]) || grace_secs[8]
//!        || count[4] || pack_id[32] * count
//!        || ext_count[2] || (tag[2] || len[4] || bytes) * ext_count
//! ```

use rand_core::CryptoRngCore;

use crate::codec::{Reader, Writer, check_version, len32, put_extensions, read_extensions};
use crate::envelope::{self, Compression, ObjectKind};
use crate::error::Result;
use crate::id::{ID_LEN, PackId};
use crate::keys::MasterKey;
use crate::tree::{Extension, Timestamp};

/// Prune plan version written by this build.
pub const PRUNE_PLAN_VERSION: u8 = 1;

/// A decoded prune plan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrunePlan {
    /// When the plan was written.
    pub created: Timestamp,
    /// How long after `created` the packs may be deleted.
    pub grace_secs: u64,
    /// The condemned packs, sorted.
    pub condemned: Vec<PackId>,
    /// Fields from later versions.
    pub extensions: Vec<Extension>,
}

impl PrunePlan {
    /// Plaintext encoding.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(27 + self.condemned.len() * ID_LEN);
        out.put_u8(PRUNE_PLAN_VERSION);
        self.created.encode_into(&mut out)?;
        out.put_u64(self.grace_secs);
        out.put_u32(len32("prune plan", self.condemned.len())?);
        for p in &self.condemned {
            out.put(p.as_bytes());
        }
        put_extensions(&mut out, &self.extensions)?;
        Ok(out)
    }

    /// Decodes the plaintext encoding.
    pub fn decode(plain: &[u8]) -> Result<Self> {
        let mut r = Reader::new(plain, "prune plan");
        check_version(r.what(), u32::from(r.u8()?), u32::from(PRUNE_PLAN_VERSION))?;
        let created = Timestamp::decode_from(&mut r)?;
        let grace_secs = r.u64()?;
        let n = r.count(ID_LEN)?;
        let mut condemned = Vec::with_capacity(n);
        for _ in 0..n {
            condemned.push(PackId::from_bytes(r.array()?));
        }
        let extensions = read_extensions(&mut r)?;
        r.finish()?;
        Ok(Self {
            created,
            grace_secs,
            condemned,
            extensions,
        })
    }

    /// Seals the plan; returns its id bytes and the sealed object.
    pub fn seal(
        &self,
        key: &MasterKey,
        rng: &mut impl CryptoRngCore,
    ) -> Result<([u8; ID_LEN], Vec<u8>)> {
        envelope::seal_object(
            key,
            ObjectKind::PrunePlan,
            &self.encode()?,
            Compression::Zstd(3),
            rng,
        )
    }

    /// Opens a sealed plan stored under `id`.
    pub fn open(key: &MasterKey, id: &[u8; ID_LEN], sealed: &[u8]) -> Result<Self> {
        let plain = envelope::open_object(key, ObjectKind::PrunePlan, id, sealed, "prune plan")?;
        Self::decode(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn round_trip_and_tamper() {
        let key = MasterKey::from_parts([1; 32], [2; 32], [3; 32]);
        let plan = PrunePlan {
            created: Timestamp {
                secs: 1_800_000_000,
                nanos: 5,
            },
            grace_secs: 86_400,
            condemned: vec![PackId::from_bytes([4; 32]), PackId::from_bytes([5; 32])],
            extensions: vec![],
        };
        let (id, sealed) = plan.seal(&key, &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
        assert_eq!(PrunePlan::open(&key, &id, &sealed).unwrap(), plan);
        let plain = plan.encode().unwrap();
        for n in 0..plain.len() {
            assert!(PrunePlan::decode(&plain[..n]).is_err());
        }
        let mut t = sealed.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(PrunePlan::open(&key, &id, &t).is_err());
    }
}

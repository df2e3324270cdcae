//! Key files: an unwrapped master key on local disk, for fast non-interactive use.
//!
//! A key slot costs an Argon2id derivation (about a second by design) each time it is opened;
//! PostgreSQL calls `archive_command` and `restore_command` once per WAL file, so those
//! commands read the master key from a key file instead. A key file is as secret as the
//! repository itself: anyone who reads it reads every backup. It is never stored in the
//! repository.
//!
//! ```text
//! key_file = magic[8] = "CAIRNKF1" || version[1] = 1 || repo_id[32]
//!            || master_key[97] (the encoding of [`MasterKey`])
//!            || checksum[32] = BLAKE3(every byte before it)
//! ```
//!
//! 170 bytes in all. The unkeyed checksum detects damage (it is not authentication: a key file
//! is trusted like the file system that holds it); the `repo_id` lets a reader check that the
//! key file belongs to the repository it is about to open before trying the key.

use std::fmt;

use zeroize::Zeroizing;

use crate::codec::{Reader, Writer, check_version};
use crate::error::{FormatError, Result};
use crate::keys::{MASTER_KEY_LEN, MasterKey};

/// Magic bytes opening a key file.
pub const KEY_FILE_MAGIC: [u8; 8] = *b"CAIRNKF1";
/// Key file version written by this build.
pub const KEY_FILE_VERSION: u8 = 1;
const CHECKSUM_LEN: usize = 32;
/// Length of a key file.
pub const KEY_FILE_LEN: usize = 8 + 1 + 32 + MASTER_KEY_LEN + CHECKSUM_LEN;

/// The contents of a key file.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// The id of the repository the key opens (its config's `repo_id`).
    pub repo_id: [u8; 32],
    /// The master key.
    pub key: MasterKey,
}

impl KeyFile {
    /// The 170-byte encoding (secret: zeroed when dropped).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(KEY_FILE_LEN));
        out.put(&KEY_FILE_MAGIC);
        out.put_u8(KEY_FILE_VERSION);
        out.put(&self.repo_id);
        out.put(&self.key.encode());
        let sum = blake3::hash(&out);
        out.put(sum.as_bytes());
        out
    }

    /// Decodes a key file: magic, then version, then the checksum, then the fields.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "key file";
        let mut r = Reader::new(bytes, WHAT);
        if r.array::<8>()? != KEY_FILE_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        check_version(WHAT, u32::from(r.u8()?), u32::from(KEY_FILE_VERSION))?;
        if bytes.len() < KEY_FILE_LEN {
            return Err(FormatError::Truncated {
                what: WHAT,
                needed: KEY_FILE_LEN,
                available: bytes.len(),
            });
        }
        if bytes.len() > KEY_FILE_LEN {
            return Err(FormatError::TrailingBytes {
                what: WHAT,
                extra: bytes.len() - KEY_FILE_LEN,
            });
        }
        let (body, sum) = bytes.split_at(KEY_FILE_LEN - CHECKSUM_LEN);
        if blake3::hash(body).as_bytes() != sum {
            return Err(FormatError::ChecksumMismatch { what: WHAT });
        }
        let repo_id = r.array()?;
        let key = MasterKey::decode(r.take(MASTER_KEY_LEN)?)?;
        r.take(CHECKSUM_LEN)?;
        r.finish()?;
        Ok(Self { repo_id, key })
    }
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("repo_id", &crate::id::hex_encode(&self.repo_id))
            .field("key", &self.key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> KeyFile {
        KeyFile {
            repo_id: [5; 32],
            key: MasterKey::from_parts([1; 32], [2; 32], [3; 32]),
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let k = sample();
        let b = k.encode();
        assert_eq!(b.len(), KEY_FILE_LEN);
        assert_eq!(KEY_FILE_LEN, 170);
        assert_eq!(&b[..8], b"CAIRNKF1");
        assert_eq!(b[8], 1);
        assert_eq!(&b[9..41], &[5; 32]);
        assert_eq!(&b[41..138], &k.key.encode()[..]);
        assert_eq!(&b[138..], blake3::hash(&b[..138]).as_bytes());
        assert_eq!(KeyFile::decode(&b).unwrap(), k);
        assert!(!format!("{k:?}").contains("0101"));
    }

    #[test]
    fn typed_errors() {
        let b = sample().encode().to_vec();
        let mut m = b.clone();
        m[0] = b'X';
        assert!(matches!(
            KeyFile::decode(&m),
            Err(FormatError::BadMagic { .. })
        ));
        let mut v = b.clone();
        v[8] = 2;
        assert!(matches!(
            KeyFile::decode(&v),
            Err(FormatError::UnsupportedVersion { version: 2, .. })
        ));
        let mut c = b.clone();
        c[50] ^= 1;
        assert!(matches!(
            KeyFile::decode(&c),
            Err(FormatError::ChecksumMismatch { .. })
        ));
        assert!(matches!(
            KeyFile::decode(&b[..100]),
            Err(FormatError::Truncated { .. })
        ));
        let mut t = b.clone();
        t.push(0);
        assert!(matches!(
            KeyFile::decode(&t),
            Err(FormatError::TrailingBytes { extra: 1, .. })
        ));
        // A damaged master key version under a valid checksum is still refused.
        let mut k = b[..138].to_vec();
        k[41] = 9;
        let sum = blake3::hash(&k);
        k.extend_from_slice(sum.as_bytes());
        assert!(matches!(
            KeyFile::decode(&k),
            Err(FormatError::UnsupportedVersion { .. })
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = KeyFile::decode(&bytes);
        }

        #[test]
        fn every_flip_is_detected(i in 0usize..KEY_FILE_LEN, bit in 0u8..8) {
            let mut b = sample().encode().to_vec();
            b[i] ^= 1 << bit;
            prop_assert!(KeyFile::decode(&b).is_err());
        }
    }
}

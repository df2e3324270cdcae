//! Typed 32-byte identifiers.
//!
//! Every id in a repository is a BLAKE3 hash *keyed* with the repository's id key
//! ([`IdKey`]), so an id reveals nothing about content to anyone without the key: an attacker
//! who can list the store cannot test whether a known file is in it.
//!
//! | id            | keyed BLAKE3 over                                  |
//! |---------------|----------------------------------------------------|
//! | [`BlobId`]    | the blob's plaintext (before compression)          |
//! | [`PackId`]    | the complete pack file, as stored                  |
//! | [`IndexId`]   | the index file's plaintext encoding                |
//! | [`SnapshotId`]| the snapshot's plaintext encoding                  |
//! | [`KeyId`]     | the key slot file, as stored                       |

use std::fmt;
use std::str::FromStr;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::FormatError;

/// Length of every id in bytes.
pub const ID_LEN: usize = 32;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name([u8; ID_LEN]);

        impl $name {
            /// Wraps raw id bytes.
            pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
                Self(bytes)
            }

            /// The raw id bytes.
            pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }

            /// Lower-case hex, 64 characters (the object name in the store).
            pub fn to_hex(&self) -> String {
                hex_encode(&self.0)
            }

            /// The first 8 hex characters, for display to people.
            pub fn short(&self) -> String {
                let mut s = self.to_hex();
                s.truncate(8);
                s
            }

            /// Parses 64 hex characters (either case).
            pub fn from_hex(s: &str) -> Result<Self, FormatError> {
                hex_decode(s, $what).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = FormatError;
            fn from_str(s: &str) -> Result<Self, FormatError> {
                Self::from_hex(s)
            }
        }

        impl From<[u8; ID_LEN]> for $name {
            fn from(bytes: [u8; ID_LEN]) -> Self {
                Self(bytes)
            }
        }
    };
}

typed_id!(
    /// Id of a blob: keyed BLAKE3 of its plaintext. Blobs with equal content share an id and are
    /// stored once.
    BlobId,
    "blob id"
);
typed_id!(
    /// Id of a pack file: keyed BLAKE3 of the whole stored file. The file's name in `data/`.
    PackId,
    "pack id"
);
typed_id!(
    /// Id of an index file: keyed BLAKE3 of its plaintext. The file's name in `index/`.
    IndexId,
    "index id"
);
typed_id!(
    /// Id of a snapshot: keyed BLAKE3 of its plaintext. The file's name in `snapshots/`.
    SnapshotId,
    "snapshot id"
);
typed_id!(
    /// Id of a key slot file: keyed BLAKE3 of the stored slot. The file's name in `keys/`.
    KeyId,
    "key id"
);

/// The repository's id key: the BLAKE3 key every id is computed with.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct IdKey([u8; 32]);

impl IdKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Keyed BLAKE3 of `data`.
    pub fn hash(&self, data: &[u8]) -> [u8; ID_LEN] {
        *blake3::keyed_hash(&self.0, data).as_bytes()
    }

    /// The id of a blob with this plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(self.hash(plaintext))
    }

    /// An incremental keyed hasher, for data that arrives in pieces (pack files).
    pub fn hasher(&self) -> IdHasher {
        IdHasher(blake3::Hasher::new_keyed(&self.0))
    }
}

impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdKey(..)")
    }
}

/// Incremental keyed BLAKE3, from [`IdKey::hasher`].
#[derive(Clone)]
pub struct IdHasher(blake3::Hasher);

impl IdHasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.0.update(data);
        self
    }

    /// The hash of everything fed so far.
    pub fn finalize(&self) -> [u8; ID_LEN] {
        *self.0.finalize().as_bytes()
    }
}

impl fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdHasher(..)")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of arbitrary bytes.
pub fn hex_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            if let Some(&c) = HEX.get(usize::from(nibble)) {
                s.push(char::from(c));
            }
        }
    }
    s
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex_decode(s: &str, what: &'static str) -> Result<[u8; ID_LEN], FormatError> {
    let raw = s.as_bytes();
    if raw.len() != ID_LEN * 2 {
        return Err(FormatError::malformed(
            what,
            format!("expected {} hex characters, got {}", ID_LEN * 2, raw.len()),
        ));
    }
    let mut out = [0u8; ID_LEN];
    for (byte, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
        let (hi, lo) = match pair {
            [hi, lo] => (hex_value(*hi), hex_value(*lo)),
            _ => (None, None),
        };
        match (hi, lo) {
            (Some(hi), Some(lo)) => *byte = hi << 4 | lo,
            _ => return Err(FormatError::malformed(what, "not a hex string")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let id = BlobId::from_bytes([0xab; 32]);
        assert_eq!(id.to_hex().len(), 64);
        assert_eq!(BlobId::from_hex(&id.to_hex()), Ok(id));
        assert_eq!(BlobId::from_hex(&id.to_hex().to_uppercase()), Ok(id));
        assert!(matches!(
            BlobId::from_hex("abc"),
            Err(FormatError::Malformed { .. })
        ));
        let bad = "g".repeat(64);
        assert!(matches!(
            PackId::from_hex(&bad),
            Err(FormatError::Malformed { .. })
        ));
        assert_eq!(id.short(), "abababab");
    }

    #[test]
    fn keyed_ids_depend_on_key() {
        let a = IdKey::from_bytes([1; 32]);
        let b = IdKey::from_bytes([2; 32]);
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(
            a.blob_id(b"x"),
            BlobId::from_bytes(*blake3::hash(b"x").as_bytes())
        );
        let mut h = a.hasher();
        h.update(b"hello ").update(b"world");
        assert_eq!(h.finalize(), a.hash(b"hello world"));
    }
}

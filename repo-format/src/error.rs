//! Errors of the format layer.
//!
//! # Error policy
//!
//! Every decoder in this crate parses untrusted bytes and answers malformed input with a
//! [`FormatError`], never a panic. Variants say *what kind* of failure happened so that callers can
//! react differently: a [`FormatError::Authentication`] failure means the bytes were changed,
//! moved, or sealed under another key and must not be trusted; [`FormatError::WrongPassphrase`]
//! means the user should try another passphrase; [`FormatError::UnsupportedVersion`] means a newer
//! Cairn wrote the object. Each variant carries a static `what` naming the structure concerned
//! (`"pack trailer"`, `"tree node"`, ...). The engine (`cairn` crate) adds the object name
//! (which pack, which snapshot) when it maps these into its own error type; this crate does not
//! know object names.

use thiserror::Error;

/// A failure to encode, decode, seal or open a format structure.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The input ended before the structure was complete.
    #[error("{what}: truncated (needed {needed} more bytes, {available} available)")]
    Truncated {
        /// The structure being decoded.
        what: &'static str,
        /// Bytes the decoder needed at the point it stopped.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// Bytes remained after a complete structure.
    #[error("{what}: {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The structure being decoded.
        what: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// The magic bytes identifying the structure are wrong: this is not a Cairn object of that kind.
    #[error("{what}: bad magic bytes (not a Cairn {what})")]
    BadMagic {
        /// The structure being decoded.
        what: &'static str,
    },
    /// The structure has a version this reader does not know (written by a newer Cairn).
    #[error(
        "{what}: unsupported version {version} (this build reads up to {supported}); upgrade Cairn"
    )]
    UnsupportedVersion {
        /// The structure being decoded.
        what: &'static str,
        /// The version found.
        version: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The structure is syntactically complete but violates a rule of the format.
    #[error("{what}: malformed: {reason}")]
    Malformed {
        /// The structure being decoded.
        what: &'static str,
        /// Which rule was violated.
        reason: String,
    },
    /// Authenticated decryption failed: the object was modified, truncated, moved to another name,
    /// relabelled as another type, or sealed under a different key.
    #[error(
        "{what}: authentication failed (object corrupt, tampered with, moved, or from another repository)"
    )]
    Authentication {
        /// The structure being opened.
        what: &'static str,
    },
    /// No key slot accepted the passphrase.
    #[error("wrong passphrase: no key slot could be unlocked with it")]
    WrongPassphrase,
    /// A checksum over an unencrypted structure did not match: the bytes are corrupt.
    #[error("{what}: checksum mismatch (corrupt)")]
    ChecksumMismatch {
        /// The structure being decoded.
        what: &'static str,
    },
    /// Content decrypted correctly but does not hash to the id it is stored under.
    #[error("{what}: content does not match its id {expected} (found {actual})")]
    IdMismatch {
        /// The structure being verified.
        what: &'static str,
        /// The id it is stored under, in hex.
        expected: String,
        /// The id its content hashes to, in hex.
        actual: String,
    },
    /// A key slot has a type this build cannot unlock (for example a public-key slot).
    #[error("key slot type {slot_type} is not supported by this build")]
    UnsupportedSlotType {
        /// The slot type byte.
        slot_type: u8,
    },
    /// zstd failed to compress or decompress.
    #[error("{what}: compression error: {reason}")]
    Compression {
        /// The structure concerned.
        what: &'static str,
        /// zstd's message.
        reason: String,
    },
    /// A caller-supplied parameter is out of range.
    #[error("invalid parameter {what}: {reason}")]
    InvalidParameter {
        /// The parameter.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A structure is too large to be encoded in its length fields.
    #[error("{what}: too large ({size} bytes, limit {limit})")]
    TooLarge {
        /// The structure being encoded.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl FormatError {
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            reason: reason.into(),
        }
    }

    /// True when the failure means the stored bytes are damaged or not authentic (as opposed to a
    /// wrong passphrase, an unsupported version, or a bad parameter).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Self::Truncated { .. }
                | Self::TrailingBytes { .. }
                | Self::BadMagic { .. }
                | Self::Malformed { .. }
                | Self::Authentication { .. }
                | Self::ChecksumMismatch { .. }
                | Self::IdMismatch { .. }
                | Self::Compression { .. }
        )
    }
}

/// Result alias of this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

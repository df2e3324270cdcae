//! The envelope: how every blob and every stored object is compressed and encrypted.
//!
//! ```text
//! envelope = version[1] || flags[1] || plain_len[4] || nonce[24] || ciphertext[n] || tag[16]
//! AD       = kind[1] || id[32] || version[1] || flags[1] || plain_len[4]
//! ```
//!
//! * `version` is 1. Another value is "written by a newer Cairn" only when the envelope
//!   authenticates with it ([`open`] tries); otherwise the byte is damaged and opening fails
//!   with [`FormatError::Authentication`]. [`EnvelopeHeader::parse`], which has no key, cannot
//!   tell the two apart.
//! * `flags` bit 0 set: the payload is one zstd frame; clear: the payload is the plaintext as is
//!   (chosen when compression does not make it smaller). Other bits are reserved and must be 0.
//! * `plain_len` is the plaintext length (after decompression), little-endian.
//! * `nonce` is 24 random bytes (XChaCha20-Poly1305's 192-bit nonce: random nonces are safe).
//! * ciphertext and tag are XChaCha20-Poly1305 of the payload under the data key, with the
//!   associated data `AD`. `kind` and `id` are not stored in the envelope: the reader knows them
//!   from where it found the envelope (pack header entry, object name), so an envelope moved to
//!   another id or relabelled as another kind fails to open.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand_core::CryptoRngCore;

use crate::codec::{Reader, Writer, check_version};
use crate::error::{FormatError, Result};
use crate::id::ID_LEN;
use crate::keys::MasterKey;

/// Envelope version written by this build.
pub const ENVELOPE_VERSION: u8 = 1;
/// Flag bit: the payload is zstd-compressed.
pub const FLAG_ZSTD: u8 = 0b0000_0001;
/// Length of the nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Length of the clear header: version, flags, plain_len, nonce.
pub const HEADER_LEN: usize = 1 + 1 + 4 + NONCE_LEN;
/// Bytes an envelope adds to its payload.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Largest plaintext an envelope holds (its length field is a u32).
pub const MAX_PLAIN_LEN: usize = u32::MAX as usize;

/// What an envelope holds; part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ObjectKind {
    /// A file-content blob, inside a data pack.
    DataBlob = 1,
    /// A tree (directory listing) blob, inside a tree pack.
    TreeBlob = 2,
    /// A pack header.
    PackHeader = 3,
    /// An index file.
    Index = 4,
    /// A snapshot file.
    Snapshot = 5,
    /// The repository config.
    Config = 6,
    /// A PostgreSQL WAL file (segment, `.history`, `.partial`, `.backup`); its id is the keyed
    /// hash of its file name.
    Wal = 7,
    /// A prune plan (packs condemned by prune, deleted after a grace period).
    PrunePlan = 8,
}

/// Compression setting for sealing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Store the plaintext as is.
    Off,
    /// zstd at this level (1..=22; negative levels are zstd's fast modes).
    Zstd(i32),
}

impl Compression {
    /// The config encoding: 0 = off, otherwise the zstd level.
    pub fn from_level(level: i32) -> Self {
        if level == 0 {
            Self::Off
        } else {
            Self::Zstd(level)
        }
    }

    /// Inverse of [`Compression::from_level`].
    pub fn level(self) -> i32 {
        match self {
            Self::Off => 0,
            Self::Zstd(l) => l,
        }
    }
}

impl Default for Compression {
    /// zstd level 2. On chunks of about 1 MiB, compressed one by one, it compresses log and CSV
    /// text at 240 MB/s against level 3's 162 MB/s, for 0.8 % more output (2.573x against
    /// 2.593x; 2.7 % more on a database-like image, 0.5 % on `/usr/share/doc`): level 3's
    /// larger window and tables buy almost nothing within one chunk.
    fn default() -> Self {
        Self::Zstd(2)
    }
}

/// The clear header of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Format version.
    pub version: u8,
    /// Flag bits.
    pub flags: u8,
    /// Length of the plaintext.
    pub plain_len: u32,
    /// The nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl EnvelopeHeader {
    /// Parses and validates the clear header of `sealed`; returns it and the rest (ciphertext
    /// and tag).
    pub fn parse(sealed: &[u8]) -> Result<(Self, &[u8])> {
        let mut r = Reader::new(sealed, "envelope");
        let version = r.u8()?;
        check_version(r.what(), u32::from(version), u32::from(ENVELOPE_VERSION))?;
        let flags = r.u8()?;
        if flags & !FLAG_ZSTD != 0 {
            return Err(FormatError::malformed(
                "envelope",
                format!("reserved flag bits set: {flags:#04x}"),
            ));
        }
        let plain_len = r.u32()?;
        let nonce = r.array()?;
        let rest = r.take(r.remaining())?;
        if rest.len() < TAG_LEN {
            return Err(FormatError::Truncated {
                what: "envelope",
                needed: TAG_LEN,
                available: rest.len(),
            });
        }
        if flags & FLAG_ZSTD == 0 && rest.len() - TAG_LEN != plain_len as usize {
            return Err(FormatError::malformed(
                "envelope",
                "stored length does not match plain length",
            ));
        }
        Ok((
            Self {
                version,
                flags,
                plain_len,
                nonce,
            },
            rest,
        ))
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.put_u8(self.version);
        out.put_u8(self.flags);
        out.put_u32(self.plain_len);
        out.put(&self.nonce);
    }

    fn aad(&self, kind: ObjectKind, id: &[u8; ID_LEN]) -> [u8; 1 + ID_LEN + 6] {
        let mut ad = [0u8; 1 + ID_LEN + 6];
        let mut v = Vec::with_capacity(ad.len());
        v.put_u8(kind as u8);
        v.put(id);
        v.put_u8(self.version);
        v.put_u8(self.flags);
        v.put_u32(self.plain_len);
        ad.copy_from_slice(&v);
        ad
    }
}

thread_local! {
    /// One zstd compression context per thread and level: creating one per blob cost a few
    /// percent of a backup.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses `plain` into `out` after what it holds (into its spare capacity, which must be
/// at least the compress bound); returns the compressed length.
fn compress_after(plain: &[u8], level: i32, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let at = out.len() as u64;
    let mut cursor = std::io::Cursor::new(out);
    cursor.set_position(at);
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match slot.as_mut() {
            Some((_, c)) => c.compress_to_buffer(plain, &mut cursor),
            None => zstd::bulk::Compressor::new(level)?.compress_to_buffer(plain, &mut cursor),
        }
    })
}

/// Decompresses `data` into `out` (replacing its content), at most `capacity` bytes (more is
/// an error).
fn decompress_into(data: &[u8], capacity: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    out.reserve(capacity);
    // The frame may write up to the buffer's capacity, which can exceed `capacity`: the
    // caller compares the length with the one recorded.
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress_to_buffer(data, out),
            None => zstd::bulk::Decompressor::new()?.decompress_to_buffer(data, out),
        }
    })?;
    Ok(())
}

fn cipher(key: &MasterKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.data_key().into())
}

/// Compresses (when it helps) and encrypts `plain` as an object of `kind` named `id`.
pub fn seal(
    key: &MasterKey,
    kind: ObjectKind,
    id: &[u8; ID_LEN],
    plain: &[u8],
    compression: Compression,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    seal_into(key, kind, id, plain, compression, rng, &mut out)?;
    Ok(out)
}

/// [`seal`] into `out`, replacing what it held: a caller sealing many blobs reuses one buffer
/// (whose pages are already resident) instead of allocating each envelope afresh. The bytes
/// are the same as [`seal`]'s for the same random nonce.
pub fn seal_into(
    key: &MasterKey,
    kind: ObjectKind,
    id: &[u8; ID_LEN],
    plain: &[u8],
    compression: Compression,
    rng: &mut impl CryptoRngCore,
    out: &mut Vec<u8>,
) -> Result<()> {
    let plain_len = u32::try_from(plain.len()).map_err(|_| FormatError::TooLarge {
        what: "envelope plaintext",
        size: plain.len() as u64,
        limit: MAX_PLAIN_LEN as u64,
    })?;
    let mut header = EnvelopeHeader {
        version: ENVELOPE_VERSION,
        flags: 0,
        plain_len,
        nonce: [0; NONCE_LEN],
    };
    rng.fill_bytes(&mut header.nonce);
    out.clear();
    let mut compressed = false;
    if let Compression::Zstd(level) = compression {
        // The header, then the frame written straight after it (the flags are set below).
        header.encode_into(out);
        out.reserve(zstd::zstd_safe::compress_bound(plain.len()) + TAG_LEN);
        let n = compress_after(plain, level, out).map_err(|e| FormatError::Compression {
            what: "envelope",
            reason: e.to_string(),
        })?;
        // Kept only when it helps.
        compressed = n < plain.len();
    }
    if compressed {
        header.flags |= FLAG_ZSTD;
    } else {
        out.clear();
        out.reserve(OVERHEAD + plain.len());
        header.encode_into(out);
        out.extend_from_slice(plain);
    }
    // The flags byte follows the version byte.
    if let Some(flags) = out.get_mut(1) {
        *flags = header.flags;
    }
    let ad = header.aad(kind, id);
    let tag = cipher(key)
        .encrypt_in_place_detached(
            XNonce::from_slice(&header.nonce),
            &ad,
            out.get_mut(HEADER_LEN..).unwrap_or_default(),
        )
        .map_err(|_| FormatError::TooLarge {
            what: "envelope plaintext",
            size: plain.len() as u64,
            limit: MAX_PLAIN_LEN as u64,
        })?;
    out.extend_from_slice(&tag);
    Ok(())
}

/// Authenticates, decrypts and decompresses an envelope of `kind` named `id`.
///
/// `what` names the structure in errors. Every failure of authentication (tampering, truncation,
/// wrong id or kind, wrong key) is [`FormatError::Authentication`].
pub fn open(
    key: &MasterKey,
    kind: ObjectKind,
    id: &[u8; ID_LEN],
    sealed: &[u8],
    what: &'static str,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    open_into(key, kind, id, sealed, what, &mut Vec::new(), &mut out)?;
    Ok(out)
}

/// [`open`] into `out` (replacing its content), decrypting a compressed payload in `scratch`
/// first: a caller opening many envelopes reuses both buffers, whose pages are already
/// resident, instead of allocating two per envelope. On error `out` holds nothing useful.
pub fn open_into(
    key: &MasterKey,
    kind: ObjectKind,
    id: &[u8; ID_LEN],
    sealed: &[u8],
    what: &'static str,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<()> {
    if sealed.first().is_some_and(|v| *v != ENVELOPE_VERSION) {
        return Err(unknown_version(key, kind, id, sealed, what));
    }
    let (header, rest) = EnvelopeHeader::parse(sealed).map_err(|e| rename(e, what))?;
    let split = rest.len() - TAG_LEN;
    let (ct, tag) = rest.split_at(split);
    let compressed = header.flags & FLAG_ZSTD != 0;
    // An uncompressed payload is decrypted where it ends up.
    let buf = if compressed { &mut *scratch } else { &mut *out };
    buf.clear();
    buf.extend_from_slice(ct);
    cipher(key)
        .decrypt_in_place_detached(
            XNonce::from_slice(&header.nonce),
            &header.aad(kind, id),
            buf,
            Tag::from_slice(tag),
        )
        .map_err(|_| FormatError::Authentication { what })?;
    if !compressed {
        return Ok(());
    }
    let plain_len = header.plain_len as usize;
    decompress_into(scratch, plain_len, out).map_err(|e| FormatError::Compression {
        what,
        reason: e.to_string(),
    })?;
    if out.len() != plain_len {
        return Err(FormatError::malformed(
            what,
            "decompressed length differs from the recorded length",
        ));
    }
    Ok(())
}

/// The error for an envelope whose version byte is not [`ENVELOPE_VERSION`]. The version byte is
/// in the clear, so on its own it cannot tell a newer writer from a damaged byte; it is also in
/// the AD. A newer Cairn keeps the clear header and the AEAD of version 1 (§4.4), so: when the
/// envelope authenticates with the version it carries, it was written by a newer Cairn
/// ([`FormatError::UnsupportedVersion`]); when it does not, the bytes are damaged
/// ([`FormatError::Authentication`]). Nothing is decompressed or returned.
fn unknown_version(
    key: &MasterKey,
    kind: ObjectKind,
    id: &[u8; ID_LEN],
    sealed: &[u8],
    what: &'static str,
) -> FormatError {
    let mut r = Reader::new(sealed, what);
    let parsed = (|| -> Result<(EnvelopeHeader, &[u8])> {
        let header = EnvelopeHeader {
            version: r.u8()?,
            flags: r.u8()?,
            plain_len: r.u32()?,
            nonce: r.array()?,
        };
        let rest = r.take(r.remaining())?;
        if rest.len() < TAG_LEN {
            return Err(FormatError::Truncated {
                what,
                needed: TAG_LEN,
                available: rest.len(),
            });
        }
        Ok((header, rest))
    })();
    let (header, rest) = match parsed {
        Ok(p) => p,
        Err(e) => return e,
    };
    use chacha20poly1305::aead::Aead;
    let authentic = cipher(key)
        .decrypt(
            XNonce::from_slice(&header.nonce),
            chacha20poly1305::aead::Payload {
                msg: rest,
                aad: &header.aad(kind, id),
            },
        )
        .is_ok();
    if authentic {
        FormatError::UnsupportedVersion {
            what,
            version: u32::from(header.version),
            supported: u32::from(ENVELOPE_VERSION),
        }
    } else {
        FormatError::Authentication { what }
    }
}

fn rename(e: FormatError, what: &'static str) -> FormatError {
    match e {
        FormatError::Truncated {
            needed, available, ..
        } => FormatError::Truncated {
            what,
            needed,
            available,
        },
        FormatError::Malformed { reason, .. } => FormatError::Malformed { what, reason },
        FormatError::UnsupportedVersion {
            version, supported, ..
        } => FormatError::UnsupportedVersion {
            what,
            version,
            supported,
        },
        other => other,
    }
}

/// Seals the plaintext encoding of a whole object (index, snapshot): its id is the keyed hash
/// of `plain`. Returns the id bytes and the sealed bytes.
pub fn seal_object(
    key: &MasterKey,
    kind: ObjectKind,
    plain: &[u8],
    compression: Compression,
    rng: &mut impl CryptoRngCore,
) -> Result<([u8; ID_LEN], Vec<u8>)> {
    let id = key.id_key().hash(plain);
    let sealed = seal(key, kind, &id, plain, compression, rng)?;
    Ok((id, sealed))
}

/// Opens a whole object stored under `id` and checks that its plaintext hashes to `id`.
pub fn open_object(
    key: &MasterKey,
    kind: ObjectKind,
    id: &[u8; ID_LEN],
    sealed: &[u8],
    what: &'static str,
) -> Result<Vec<u8>> {
    let plain = open(key, kind, id, sealed, what)?;
    check_id(key, id, &plain, what)?;
    Ok(plain)
}

/// [`open_object`] into reused buffers (see [`open_into`]).
pub fn open_object_into(
    key: &MasterKey,
    kind: ObjectKind,
    id: &[u8; ID_LEN],
    sealed: &[u8],
    what: &'static str,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<()> {
    open_into(key, kind, id, sealed, what, scratch, out)?;
    check_id(key, id, out, what)
}

/// Fails with [`FormatError::IdMismatch`] unless `plain` hashes to `id`.
pub fn check_id(
    key: &MasterKey,
    id: &[u8; ID_LEN],
    plain: &[u8],
    what: &'static str,
) -> Result<()> {
    let actual = key.id_key().hash(plain);
    if &actual != id {
        return Err(FormatError::IdMismatch {
            what,
            expected: crate::id::hex_encode(id),
            actual: crate::id::hex_encode(&actual),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    fn key() -> MasterKey {
        MasterKey::from_parts([7; 32], [8; 32], [9; 32])
    }

    /// A dirty, reused buffer gives the bytes a fresh one does. (That these are the bytes the
    /// format has always produced is checked against stored vectors in `tests/golden.rs`.)
    #[test]
    fn seal_into_a_reused_buffer_matches_seal() {
        let k = key();
        let mut noise = vec![0u8; 70_000];
        ChaCha20Rng::seed_from_u64(5).fill_bytes(&mut noise);
        let text = b"a line of text that repeats\n".repeat(3000);
        // One buffer for every case, left dirty and oversized by the one before.
        let mut out = vec![0xEE; 300_000];
        let (mut scratch, mut plain_buf) = (vec![0xDD; 10], vec![0xCC; 500_000]);
        for plain in [&text[..], &noise[..], b"", b"x", &text[..10]] {
            for c in [
                Compression::Zstd(3),
                Compression::Zstd(-1),
                Compression::Off,
            ] {
                let expect = seal(
                    &k,
                    ObjectKind::DataBlob,
                    &[4; 32],
                    plain,
                    c,
                    &mut ChaCha20Rng::seed_from_u64(9),
                )
                .unwrap();
                seal_into(
                    &k,
                    ObjectKind::DataBlob,
                    &[4; 32],
                    plain,
                    c,
                    &mut ChaCha20Rng::seed_from_u64(9),
                    &mut out,
                )
                .unwrap();
                assert_eq!(out, expect, "{} bytes, {c:?}", plain.len());
                let back = open(&k, ObjectKind::DataBlob, &[4; 32], &out, "blob").unwrap();
                assert_eq!(back, plain);
                // Opened into the dirty buffers of the case before, too.
                open_into(
                    &k,
                    ObjectKind::DataBlob,
                    &[4; 32],
                    &out,
                    "blob",
                    &mut scratch,
                    &mut plain_buf,
                )
                .unwrap();
                assert_eq!(plain_buf, plain);
                let mut bad = out.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                assert!(matches!(
                    open_into(
                        &k,
                        ObjectKind::DataBlob,
                        &[4; 32],
                        &bad,
                        "blob",
                        &mut scratch,
                        &mut plain_buf
                    ),
                    Err(FormatError::Authentication { .. })
                ));
                let flags = out[1];
                let compressible = plain.len() > 1000 && plain.first() == Some(&b'a');
                assert_eq!(
                    flags & FLAG_ZSTD != 0,
                    compressible && c != Compression::Off
                );
            }
        }
    }

    #[test]
    fn round_trip_compressed_and_raw() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let k = key();
        let id = [3u8; 32];
        let text = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".repeat(10);
        let s = seal(
            &k,
            ObjectKind::DataBlob,
            &id,
            &text,
            Compression::default(),
            &mut rng,
        )
        .unwrap();
        assert!(s.len() < text.len());
        assert_eq!(s.get(1), Some(&FLAG_ZSTD));
        assert_eq!(
            open(&k, ObjectKind::DataBlob, &id, &s, "blob").unwrap(),
            text
        );
        // Incompressible data is stored raw.
        let mut noise = vec![0u8; 1000];
        rng.fill_bytes(&mut noise);
        let s = seal(
            &k,
            ObjectKind::DataBlob,
            &id,
            &noise,
            Compression::default(),
            &mut rng,
        )
        .unwrap();
        assert_eq!(s.len(), noise.len() + OVERHEAD);
        assert_eq!(s.get(1), Some(&0));
        assert_eq!(
            open(&k, ObjectKind::DataBlob, &id, &s, "blob").unwrap(),
            noise
        );
    }

    #[test]
    fn wrong_id_kind_or_key_fails_authentication() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let k = key();
        let s = seal(
            &k,
            ObjectKind::DataBlob,
            &[1; 32],
            b"hello",
            Compression::Off,
            &mut rng,
        )
        .unwrap();
        let auth = |r: Result<Vec<u8>>| matches!(r, Err(FormatError::Authentication { .. }));
        assert!(auth(open(&k, ObjectKind::DataBlob, &[2; 32], &s, "blob")));
        assert!(auth(open(&k, ObjectKind::TreeBlob, &[1; 32], &s, "blob")));
        let other = MasterKey::from_parts([0; 32], [8; 32], [9; 32]);
        assert!(auth(open(
            &other,
            ObjectKind::DataBlob,
            &[1; 32],
            &s,
            "blob"
        )));
    }

    #[test]
    fn every_flipped_byte_is_an_error() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let k = key();
        let s = seal(
            &k,
            ObjectKind::Index,
            &[5; 32],
            &b"index body ".repeat(20),
            Compression::default(),
            &mut rng,
        )
        .unwrap();
        for i in 0..s.len() {
            let mut t = s.clone();
            if let Some(b) = t.get_mut(i) {
                *b ^= 0x01;
            }
            let r = open(&k, ObjectKind::Index, &[5; 32], &t, "index");
            // The version byte too: a damaged one does not authenticate, so it is corruption,
            // not "written by a newer Cairn".
            assert!(
                r.as_ref().is_err_and(FormatError::is_corruption),
                "byte {i}: {r:?}"
            );
        }
        for n in 0..s.len() {
            assert!(
                open(
                    &k,
                    ObjectKind::Index,
                    &[5; 32],
                    s.get(..n).unwrap(),
                    "index"
                )
                .is_err()
            );
        }
    }

    #[test]
    fn unknown_version_is_unsupported_only_when_it_authenticates() {
        use chacha20poly1305::aead::Aead;
        let k = key();
        let id = [9u8; 32];
        let plain = b"from a newer writer";
        // An envelope a newer Cairn could write: version 2, the same clear header and AEAD.
        let header = EnvelopeHeader {
            version: 2,
            flags: 0,
            plain_len: plain.len() as u32,
            nonce: [3; NONCE_LEN],
        };
        let ct = cipher(&k)
            .encrypt(
                XNonce::from_slice(&header.nonce),
                chacha20poly1305::aead::Payload {
                    msg: plain,
                    aad: &header.aad(ObjectKind::Snapshot, &id),
                },
            )
            .unwrap();
        let mut sealed = Vec::new();
        header.encode_into(&mut sealed);
        sealed.extend_from_slice(&ct);
        let r = open(&k, ObjectKind::Snapshot, &id, &sealed, "snapshot");
        assert!(
            matches!(
                r,
                Err(FormatError::UnsupportedVersion {
                    version: 2,
                    supported: 1,
                    ..
                })
            ),
            "{r:?}"
        );
        // Under another id or kind, or with any other byte changed, it is not authentic.
        let r = open(&k, ObjectKind::Index, &id, &sealed, "index");
        assert!(
            matches!(r, Err(FormatError::Authentication { .. })),
            "{r:?}"
        );
        for i in 1..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x40;
            let r = open(&k, ObjectKind::Snapshot, &id, &t, "snapshot");
            assert!(
                r.as_ref().is_err_and(FormatError::is_corruption),
                "byte {i}: {r:?}"
            );
        }
        // Too short to hold a header and a tag: truncated.
        let r = open(&k, ObjectKind::Snapshot, &id, &sealed[..40], "snapshot");
        assert!(matches!(r, Err(FormatError::Truncated { .. })), "{r:?}");
    }
}

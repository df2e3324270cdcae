//! Little-endian byte codec helpers shared by every structure.
//!
//! All integers in the format are little-endian. [`Reader`] never panics: every read is bounds
//! checked and returns [`FormatError::Truncated`] when the input is short.

use crate::error::{FormatError, Result};

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub(crate) fn what(&self) -> &'static str {
        self.what
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let available = self.remaining();
        let end = self.pos.checked_add(n).filter(|_| n <= available);
        match end.and_then(|end| self.buf.get(self.pos..end).map(|s| (s, end))) {
            Some((slice, end)) => {
                self.pos = end;
                Ok(slice)
            }
            None => Err(FormatError::Truncated {
                what: self.what,
                needed: n,
                available,
            }),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Bytes prefixed by a u16 length.
    pub(crate) fn bytes16(&mut self) -> Result<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// Bytes prefixed by a u32 length.
    pub(crate) fn bytes32(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()?;
        self.take(n as usize)
    }

    /// A UTF-8 string prefixed by a u16 length.
    pub(crate) fn str16(&mut self) -> Result<String> {
        let what = self.what;
        let raw = self.bytes16()?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| FormatError::malformed(what, "string is not UTF-8"))
    }

    /// A count of items that each take at least `min_item_len` bytes; rejects counts that cannot
    /// fit in the remaining input, so that callers may pre-allocate safely.
    pub(crate) fn count(&mut self, min_item_len: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        let need = n.saturating_mul(min_item_len.max(1));
        if need > self.remaining() {
            return Err(FormatError::Truncated {
                what: self.what,
                needed: need,
                available: self.remaining(),
            });
        }
        Ok(n)
    }

    /// A u16 count, checked like [`Reader::count`].
    pub(crate) fn count16(&mut self, min_item_len: usize) -> Result<usize> {
        let n = usize::from(self.u16()?);
        let need = n.saturating_mul(min_item_len.max(1));
        if need > self.remaining() {
            return Err(FormatError::Truncated {
                what: self.what,
                needed: need,
                available: self.remaining(),
            });
        }
        Ok(n)
    }

    /// Fails unless the whole input was consumed.
    pub(crate) fn finish(self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(FormatError::TrailingBytes {
                what: self.what,
                extra,
            }),
        }
    }
}

/// Appends little-endian fields to a buffer.
pub(crate) trait Writer {
    fn put(&mut self, bytes: &[u8]);
    fn put_u8(&mut self, v: u8) {
        self.put(&v.to_le_bytes());
    }
    fn put_u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    fn put_i32(&mut self, v: i32) {
        self.put(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.put(&v.to_le_bytes());
    }
}

impl Writer for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Converts a length to u16, or fails with [`FormatError::TooLarge`].
pub(crate) fn len16(what: &'static str, n: usize) -> Result<u16> {
    u16::try_from(n).map_err(|_| FormatError::TooLarge {
        what,
        size: n as u64,
        limit: u64::from(u16::MAX),
    })
}

/// Converts a length to u32, or fails with [`FormatError::TooLarge`].
pub(crate) fn len32(what: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| FormatError::TooLarge {
        what,
        size: n as u64,
        limit: u64::from(u32::MAX),
    })
}

/// Writes bytes with a u16 length prefix.
pub(crate) fn put_bytes16(out: &mut Vec<u8>, what: &'static str, b: &[u8]) -> Result<()> {
    out.put_u16(len16(what, b.len())?);
    out.put(b);
    Ok(())
}

/// Writes bytes with a u32 length prefix.
pub(crate) fn put_bytes32(out: &mut Vec<u8>, what: &'static str, b: &[u8]) -> Result<()> {
    out.put_u32(len32(what, b.len())?);
    out.put(b);
    Ok(())
}

/// Tags with this bit set are *critical*: a reader that does not know such a tag must refuse the
/// structure instead of ignoring the field.
pub(crate) const CRITICAL_EXTENSION: u16 = 0x8000;

/// Writes an extension list: `count[2] || (tag[2] || len[4] || bytes) * count`.
pub(crate) fn put_extensions(out: &mut Vec<u8>, exts: &[crate::tree::Extension]) -> Result<()> {
    put_extensions_known(out, exts, &[])
}

/// [`put_extensions`] for a structure whose critical tags `known` this version defines.
pub(crate) fn put_extensions_known(
    out: &mut Vec<u8>,
    exts: &[crate::tree::Extension],
    known: &[u16],
) -> Result<()> {
    let sorted = exts
        .windows(2)
        .all(|w| matches!(w, [a, b] if a.tag < b.tag));
    let unknown_critical = exts
        .iter()
        .any(|e| e.tag & CRITICAL_EXTENSION != 0 && !known.contains(&e.tag));
    if !sorted || unknown_critical {
        return Err(FormatError::InvalidParameter {
            what: "extensions",
            reason: "tags must be strictly increasing, and critical ones (0x8000 and up) defined by this version".into(),
        });
    }
    out.put_u16(len16("extensions", exts.len())?);
    for e in exts {
        out.put_u16(e.tag);
        put_bytes32(out, "extension", &e.bytes)?;
    }
    Ok(())
}

/// Reads an extension list of a structure for which this version defines no critical tag
/// (config, snapshot, prune plan; SPEC.md §1). Tags must be strictly increasing; a critical one
/// is refused with [`FormatError::UnsupportedVersion`].
pub(crate) fn read_extensions(r: &mut Reader<'_>) -> Result<Vec<crate::tree::Extension>> {
    read_extensions_known(r, &[])
}

/// [`read_extensions`] for a structure whose critical tags `known` this version defines: they
/// are returned with the others, for the caller to interpret.
pub(crate) fn read_extensions_known(
    r: &mut Reader<'_>,
    known: &[u16],
) -> Result<Vec<crate::tree::Extension>> {
    let n = r.count16(6)?;
    let mut out: Vec<crate::tree::Extension> = Vec::with_capacity(n);
    for _ in 0..n {
        let tag = r.u16()?;
        let bytes = r.bytes32()?.to_vec();
        if out.last().is_some_and(|p| p.tag >= tag) {
            return Err(FormatError::malformed(
                r.what(),
                "extension tags not strictly increasing",
            ));
        }
        if tag & CRITICAL_EXTENSION != 0 && !known.contains(&tag) {
            return Err(FormatError::UnsupportedVersion {
                what: "critical extension",
                version: u32::from(tag),
                supported: 0,
            });
        }
        out.push(crate::tree::Extension { tag, bytes });
    }
    Ok(out)
}

/// Checks a version byte against the newest supported one.
pub(crate) fn check_version(what: &'static str, version: u32, supported: u32) -> Result<()> {
    if version == 0 || version > supported {
        return Err(FormatError::UnsupportedVersion {
            what,
            version,
            supported,
        });
    }
    Ok(())
}

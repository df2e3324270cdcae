//! Writes past the page cache (`O_DIRECT`) from a reused, page-aligned buffer: the local
//! store's pack writes and restore's large files share them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Alignment of `O_DIRECT` offsets, lengths and buffer addresses: the page size, a multiple of
/// every common logical block size (512 B, 4 KiB).
pub(crate) const ALIGN: usize = 4096;
/// Bytes copied into the aligned window and written per call (4 MiB was no faster on a first
/// backup here, and kept 3 MiB more per buffer).
pub(crate) const PIECE: usize = 1 << 20;

/// A staging buffer for [`write_at`]: long enough to hold an aligned window of [`PIECE`] bytes.
pub(crate) fn staging() -> Vec<u8> {
    vec![0u8; PIECE + ALIGN]
}

/// A failed [`write_at`]: the error and the file offset of the write that failed.
pub(crate) struct Failed {
    pub(crate) error: io::Error,
    pub(crate) offset: u64,
}

/// Writes `data` at the aligned `offset` of `file` (opened with `O_DIRECT`), piece by piece
/// through the page-aligned window of `buf` (from [`staging`]). The last piece is padded with
/// zeros to [`ALIGN`]: the caller cuts the file back to its length. A short write is an error
/// (`WriteZero`), since the rest would be unaligned.
pub(crate) fn write_at(
    file: &File,
    mut offset: u64,
    data: &[u8],
    buf: &mut [u8],
) -> Result<(), Failed> {
    debug_assert_eq!(offset % ALIGN as u64, 0, "unaligned direct write");
    let skip = buf.as_ptr().align_offset(ALIGN);
    let window = skip
        .checked_add(PIECE)
        .and_then(|end| buf.get_mut(skip..end))
        .ok_or_else(|| Failed {
            error: io::Error::other("staging buffer too small to align"),
            offset,
        })?;
    for piece in data.chunks(PIECE) {
        let padded = piece.len().next_multiple_of(ALIGN);
        let (head, tail) = window.split_at_mut(piece.len());
        head.copy_from_slice(piece);
        if let Some(pad) = tail.get_mut(..padded - piece.len()) {
            pad.fill(0);
        }
        let bytes = window.get(..padded).unwrap_or_default();
        let written = loop {
            match file.write_at(bytes, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match written {
            Ok(n) if n == padded => {}
            Ok(n) => {
                return Err(Failed {
                    error: io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write: {n} of {padded} bytes at offset {offset}"),
                    ),
                    offset,
                });
            }
            Err(error) => return Err(Failed { error, offset }),
        }
        offset += piece.len() as u64;
    }
    Ok(())
}

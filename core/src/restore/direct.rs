//! Writing large restored files with `O_DIRECT`, past the page cache.
//!
//! A buffered write copies every byte into a freshly allocated page-cache page; on a machine
//! whose free memory has to be faulted back in (a VM after other work freed memory) that copy
//! cost up to 3.5 s of system time per GiB restored, more than all of Cairn's own work. Large
//! files are therefore written with `O_DIRECT` from a reused, page-aligned buffer.
//!
//! `O_DIRECT` needs file offsets and lengths in whole 4 KiB blocks, but chunks end anywhere.
//! Each chunk's whole blocks go with `O_DIRECT`; the partial blocks at its two ends (the
//! "edges", shared with the neighbouring chunks) are written through a second, buffered
//! descriptor, so nothing waits in memory for a neighbour. The two never touch the same block,
//! so the page cache and the direct writes stay coherent. A chunk that ends the file writes its
//! last block padded with zeros, and the file is cut back to its size when it is finished.
//! Chunks that are all zeros are left as holes, as in the buffered path.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::direct_io;

/// Files at least this large are written with `O_DIRECT` (smaller ones are few blocks, and
/// their edges would be most of them).
pub(super) const DIRECT_MIN: u64 = 8 << 20;
/// Block size of `O_DIRECT` offsets and lengths (see `crate::direct_io`).
const ALIGN: u64 = direct_io::ALIGN as u64;

thread_local! {
    /// Each writer thread's staging buffer (`direct_io::staging`).
    static STAGING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whether this machine's pages are 4 KiB. With larger pages one cached page spans several
/// blocks, and a buffered edge write could bring stale bytes back over a direct write: no
/// `O_DIRECT` there.
fn pages_are_4k() -> bool {
    static FOUR_K: OnceLock<bool> = OnceLock::new();
    *FOUR_K.get_or_init(|| {
        matches!(
            nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE),
            Ok(Some(4096))
        )
    })
}

/// One large file being restored with `O_DIRECT`.
pub(super) struct DirectFile {
    /// Opened with `O_DIRECT`: whole blocks.
    direct: File,
    /// The same file, buffered: the partial blocks at chunk edges.
    buffered: File,
    size: u64,
    /// Set when a direct write was refused (EINVAL) after the open allowed it: from then on
    /// this file's whole blocks go through the buffered descriptor too (still never a block
    /// written both ways at once, so the cache stays coherent).
    refused: AtomicBool,
}

impl DirectFile {
    /// Opens `path` (already created, never through a symlink) for `O_DIRECT` writes of a
    /// file of `size` bytes; `None` when the file system refuses `O_DIRECT`.
    pub(super) fn open(path: &Path, size: u64) -> io::Result<Option<Self>> {
        if !pages_are_4k() {
            return Ok(None);
        }
        let direct = super::fsops::open_for_write(path)?;
        match nix::fcntl::fcntl(
            &direct,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_DIRECT),
        ) {
            Ok(_) => Ok(Some(Self {
                direct,
                buffered: super::fsops::open_for_write(path)?,
                size,
                refused: AtomicBool::new(false),
            })),
            Err(nix::errno::Errno::EINVAL) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `data` at `offset` (`zero`: it is all zeros, leave a hole). Chunks may come in
    /// any order, from any thread; each byte of the file is written at most once.
    pub(super) fn write(&self, offset: u64, data: &[u8], zero: bool) -> io::Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| io::Error::other("write past the end of the file"))?;
        if zero {
            // Unwritten bytes read as zeros (`finish` sets the size).
            return Ok(());
        }
        let part = |from: u64, to: u64| {
            data.get((from - offset) as usize..(to - offset) as usize)
                .unwrap_or_default()
        };
        let mut pos = offset;
        // The head: the rest of a block begun by the chunk before.
        if pos % ALIGN != 0 {
            let head_end = end.min(pos.next_multiple_of(ALIGN));
            self.buffered.write_all_at(part(pos, head_end), pos)?;
            pos = head_end;
        }
        // Whole blocks, and the file's last block when this chunk ends the file.
        let body_end = if end == self.size {
            end
        } else {
            end - end % ALIGN
        };
        if body_end > pos {
            let body = part(pos, body_end);
            if self.refused.load(Ordering::Relaxed) {
                self.buffered.write_all_at(body, pos)?;
            } else if let Err(e) = self.write_body(pos, body) {
                if e.raw_os_error() != Some(nix::libc::EINVAL) {
                    return Err(e);
                }
                self.refused.store(true, Ordering::Relaxed);
                self.buffered.write_all_at(body, pos)?;
            }
            pos = body_end;
        }
        // The tail: the start of a block the next chunk ends.
        if end > pos {
            self.buffered.write_all_at(part(pos, end), pos)?;
        }
        Ok(())
    }

    /// Writes bytes starting at the aligned `offset` with `O_DIRECT`, through the thread's
    /// staging buffer (the file's last block padded, cut back in `finish`).
    fn write_body(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        STAGING.with(|staging| {
            let mut staging = staging.borrow_mut();
            if staging.is_empty() {
                *staging = direct_io::staging();
            }
            direct_io::write_at(&self.direct, offset, data, &mut staging).map_err(|f| f.error)
        })
    }

    /// Gives the file its size: cut back where a padded last block grew it, extended where it
    /// ends in a hole.
    pub(super) fn finish(&self) -> io::Result<()> {
        self.direct.set_len(self.size)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    /// Writes `content` cut at random points, in random order, from several threads, with
    /// all-zero chunks left as holes; the file must read back exactly.
    fn round_trip(size: usize, seed: u64, zero_share: f64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        f.set_len(size as u64).unwrap();
        drop(f);
        let Some(df) = DirectFile::open(&path, size as u64).unwrap() else {
            eprintln!("no O_DIRECT in {}: nothing to test", dir.path().display());
            return;
        };
        // Chunks of 1 B .. 3 MiB; some all zeros.
        let mut content = vec![0u8; size];
        let mut chunks = Vec::new();
        let mut pos = 0;
        while pos < size {
            let len = match rng.gen_range(0..10) {
                0 => rng.gen_range(1..64),
                1..=3 => rng.gen_range(64..8192),
                _ => rng.gen_range(8192..3 << 20),
            }
            .min(size - pos);
            let zero = rng.gen_bool(zero_share);
            if !zero {
                rng.fill(&mut content[pos..pos + len]);
            }
            chunks.push((pos, len, zero));
            pos += len;
        }
        chunks.shuffle(&mut rng);
        let df = std::sync::Arc::new(df);
        let halves: Vec<Vec<_>> = chunks
            .chunks(chunks.len().div_ceil(3))
            .map(<[_]>::to_vec)
            .collect();
        std::thread::scope(|s| {
            for part in &halves {
                let (df, content) = (&df, &content);
                s.spawn(move || {
                    for &(pos, len, zero) in part {
                        df.write(pos as u64, &content[pos..pos + len], zero)
                            .unwrap();
                    }
                });
            }
        });
        df.finish().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), size, "size (seed {seed})");
        assert!(
            back == content,
            "content differs (seed {seed}, size {size})"
        );
    }

    #[test]
    fn direct_writes_of_chunks_in_any_order_read_back_exactly() {
        for (k, size) in [
            (8 << 20) + 1,
            8 << 20,
            (9 << 20) + 4095,
            (11 << 20) + 4097,
            12_345_678,
        ]
        .into_iter()
        .enumerate()
        {
            round_trip(size, k as u64, 0.0);
            round_trip(size, 100 + k as u64, 0.3);
        }
    }

    #[test]
    fn writes_past_the_end_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap().set_len(10_000).unwrap();
        if let Some(df) = DirectFile::open(&path, 10_000).unwrap() {
            assert!(df.write(9_000, &[1u8; 1_001], false).is_err());
            df.write(9_000, &[1u8; 1_000], false).unwrap();
        }
    }
}

//! Process-wide memory tuning for programs built on Cairn.
//!
//! Backup and restore move large, short-lived buffers (read windows, packs, merged range reads
//! of 1-16 MiB) between threads. glibc's allocator raises its mmap threshold each time such a
//! buffer is freed, after which the buffers come from per-thread arenas that keep freed memory
//! resident: a restore whose heap never exceeded 46 MiB showed a peak RSS of 160-200 MiB.
//! [`return_freed_memory`] pins the threshold so that buffers of 4 MiB and more are mapped and
//! unmapped on their own and freed memory goes back to the system (measured with 1 and 4 MiB: restore of the
//! 1 GiB `mixed` benchmark set 157-197 -> 56-69 MiB peak RSS; see benches/README.md).
//!
//! It also holds `KdfMemory`, Argon2id's working memory mapped and populated in one call.
//! These are the crate's only `unsafe` blocks, each with its reason.

/// Buffers of this size and larger are given their own mapping by glibc's allocator.
pub const MMAP_THRESHOLD: usize = 4 << 20;

/// Makes glibc's allocator map buffers of [`MMAP_THRESHOLD`] bytes and more on their own, and
/// keep that threshold fixed, so freed large buffers leave the process instead of staying
/// resident in thread arenas. Call once, early in `main`, before threads start. It changes
/// the allocator of the whole process, which is the program's decision, so the library never
/// calls it itself. Returns false where it has no effect (other C libraries).
pub fn return_freed_memory() -> bool {
    set_mmap_threshold(MMAP_THRESHOLD)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_mmap_threshold(bytes: usize) -> bool {
    let Ok(value) = std::ffi::c_int::try_from(bytes) else {
        return false;
    };
    // SAFETY: mallopt takes two integers and only changes allocator parameters; glibc
    // documents it as safe to call at any time, and M_MMAP_THRESHOLD accepts any value up to
    // HEAP_MAX_SIZE / 2 (32 MiB on 64-bit), which 4 MiB is below. Nothing is dereferenced.
    unsafe { nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, value) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: usize) -> bool {
    false
}

/// Zeroed working memory for Argon2id, mapped and populated in one call (`MAP_POPULATE`).
///
/// Argon2id writes every block of its memory once per pass; in a fresh allocation the first
/// pass takes a page fault per 4 KiB (16,384 for the default 64 MiB), which cost about 40 ms
/// of the ~135 ms an open took on the benchmark machine. Populating the mapping up front
/// costs one call. Where mapping fails (or on other systems) callers fall back to an ordinary
/// allocation, so this is an optimisation only. The mapping is unmapped on drop, so no key
/// material stays behind in the process's heap.
pub(crate) struct KdfMemory {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    map: std::ptr::NonNull<std::ffi::c_void>,
    blocks: usize,
}

// SAFETY: KdfMemory owns its mapping exclusively (nothing else holds the pointer), like a
// Box<[KdfBlock]>; moving it to another thread moves that ownership.
#[allow(unsafe_code)]
unsafe impl Send for KdfMemory {}

impl KdfMemory {
    /// A populated mapping of `blocks` Argon2id blocks; `None` where that is not available.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    pub(crate) fn new(blocks: usize) -> Option<Self> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
        let bytes = blocks.checked_mul(std::mem::size_of::<cairn_format::keyslot::KdfBlock>())?;
        let len = std::num::NonZeroUsize::new(bytes)?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing aliases
        // nothing; the result is checked, and only this struct keeps the pointer.
        let map = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE,
            )
        }
        .ok()?;
        Some(Self { map, blocks })
    }

    /// Not available here.
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub(crate) fn new(_blocks: usize) -> Option<Self> {
        None
    }

    /// The memory, as Argon2id blocks.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    pub(crate) fn blocks(&mut self) -> &mut [cairn_format::keyslot::KdfBlock] {
        // SAFETY: the mapping is `blocks * size_of::<KdfBlock>()` bytes, readable and writable,
        // page-aligned (more than KdfBlock's 64-byte alignment) and zero-filled by the kernel;
        // KdfBlock is a plain array of u64, for which any bytes (zeros included) are valid.
        // The slice borrows `self` mutably, so it is the only reference until it ends, and
        // the mapping lives until `drop`.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().cast(), self.blocks) }
    }

    /// Not available here.
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub(crate) fn blocks(&mut self) -> &mut [cairn_format::keyslot::KdfBlock] {
        &mut []
    }

    /// Its size in blocks.
    pub(crate) fn len(&self) -> usize {
        self.blocks
    }
}

impl Drop for KdfMemory {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let bytes = self.blocks * std::mem::size_of::<cairn_format::keyslot::KdfBlock>();
        // SAFETY: `map` and `bytes` are exactly what mmap returned and was asked for, and no
        // slice of it outlives `self` (`blocks` borrows `self`). A failure leaves the mapping
        // in place, which is only a leak.
        let _ = unsafe { nix::sys::mman::munmap(self.map, bytes) };
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn drop(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_memory_is_zeroed_writable_and_sized() {
        let made = KdfMemory::new(300);
        // Mapping is available exactly on Linux with glibc.
        assert_eq!(
            made.is_some(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
        let Some(mut m) = made else { return };
        assert_eq!(m.len(), 300);
        let blocks = m.blocks();
        assert_eq!(blocks.len(), 300);
        assert!(blocks.iter().all(|b| b.as_ref().iter().all(|&w| w == 0)));
        for (i, b) in blocks.iter_mut().enumerate() {
            b.as_mut().fill(i as u64);
        }
        assert_eq!(m.blocks()[299].as_ref()[127], 299);
        assert!(KdfMemory::new(0).is_none());
    }

    #[test]
    fn threshold_is_accepted() {
        // glibc returns 1 on success and 0 for an out-of-range value.
        assert_eq!(
            return_freed_memory(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
        assert!(!set_mmap_threshold(usize::MAX));
    }
}

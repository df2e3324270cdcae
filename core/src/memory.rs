//! Process-wide memory tuning for programs built on Cairn.
//!
//! Backup and restore move large, short-lived buffers (read windows, packs, merged range reads
//! of 1-16 MiB) between threads. glibc's allocator raises its mmap threshold each time such a
//! buffer is freed, after which the buffers come from per-thread arenas that keep freed memory
//! resident: a restore whose heap never exceeded 46 MiB showed a peak RSS of 160-200 MiB.
//! [`return_freed_memory`] pins the threshold so that buffers of 4 MiB and more are mapped and
//! unmapped on their own and freed memory goes back to the system (measured with 1 and 4 MiB: restore of the
//! 1 GiB `mixed` benchmark set 157-197 -> 56-69 MiB peak RSS; see benches/README.md).

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

#[cfg(test)]
mod tests {
    use super::*;

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

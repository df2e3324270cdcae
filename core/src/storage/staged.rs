//! Files that interrupted writes leave in a local directory: `object_store`'s local store and
//! Cairn's `O_DIRECT` writer both write `<name>#<n>` first and link or rename it to `<name>`
//! once complete. A process killed in between leaves the staged file; listings skip it, so
//! without a clean-up these pile up.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// Removes the staged files (names holding `#`) under `dir`, at any depth, whose last
/// modification is at least `min_age` old; returns how many were removed. A missing `dir` holds
/// none.
pub(crate) fn remove_stale(dir: &Path, min_age: Duration) -> std::io::Result<u64> {
    let cutoff = SystemTime::now()
        .checked_sub(min_age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut removed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Published (renamed away) or removed by another process meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            let staged = entry.file_name().as_encoded_bytes().contains(&b'#');
            if staged && meta.modified()? <= cutoff {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(removed)
}

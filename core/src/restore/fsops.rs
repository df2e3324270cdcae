//! File system operations of a restore: creating entries without following symlinks found in
//! the target, and applying metadata.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use cairn_format::{Node, NodeKind, Timestamp};
use filetime::FileTime;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};

use crate::error::{Error, Result};

/// Checks (or creates) the target directory. Without `overwrite`, an existing non-empty
/// directory is refused.
pub(super) fn prepare_target(target: &Path, overwrite: bool) -> Result<()> {
    // The target itself is the caller's choice and may be a symlink to a directory.
    match fs::metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(target).map_err(|e| Error::io(target, e))
        }
        Err(e) => Err(Error::io(target, e)),
        Ok(md) if !md.is_dir() => Err(Error::AlreadyExists {
            object: target.display().to_string(),
            hint: "; the restore target exists and is not a directory".into(),
        }),
        Ok(_) => {
            let mut entries = fs::read_dir(target).map_err(|e| Error::io(target, e))?;
            if !overwrite && entries.next().is_some() {
                return Err(Error::AlreadyExists {
                    object: target.display().to_string(),
                    hint: "; the restore target is not empty (restore with overwrite to write \
                           into it)"
                        .into(),
                });
            }
            Ok(())
        }
    }
}

/// Makes room at `path`: returns true when a real directory is there and `want_dir` (it is
/// reused); otherwise whatever is there is removed (only with `overwrite`). Symlinks are never
/// followed: a symlink where a directory is wanted is replaced, not entered.
fn clear(path: &Path, want_dir: bool, overwrite: bool) -> io::Result<bool> {
    let md = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
        Ok(md) => md,
    };
    if want_dir && md.is_dir() {
        return Ok(true);
    }
    if !overwrite {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "already exists (restore with overwrite to replace it)",
        ));
    }
    if md.is_dir() {
        fs::remove_dir_all(path)?;
    } else {
        fs::remove_file(path)?;
    }
    Ok(false)
}

/// Runs `make`; when something is in the way, [`clear`]s it (or reuses a directory) and runs
/// `make` again. Trying first saves a `stat` per entry in the usual, empty target.
fn create_with(
    path: &Path,
    want_dir: bool,
    overwrite: bool,
    make: impl Fn() -> io::Result<()>,
) -> io::Result<()> {
    match make() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if clear(path, want_dir, overwrite)? {
                return Ok(());
            }
            make()
        }
        other => other,
    }
}

/// Creates a directory (mode 0700 until its metadata is applied, when `private`).
pub(super) fn create_dir(path: &Path, overwrite: bool, private: bool) -> io::Result<()> {
    create_with(path, true, overwrite, || {
        fs::DirBuilder::new()
            .mode(if private { 0o700 } else { 0o777 })
            .create(path)
    })
}

/// Longest part of an entry's name kept in its temporary name (which must stay within the
/// 255-byte limit of a name).
const TMP_NAME_KEEP: usize = 200;
/// What marks a temporary name: `.NAME.cairn-restore-XXXXXXXXXXXXXXXX`.
const TMP_MARK: &str = ".cairn-restore-";

/// A temporary name beside `path`: `.NAME.cairn-restore-` and 16 random hex digits.
fn temp_name(path: &Path) -> io::Result<std::path::PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no file name"));
    };
    let name = name.as_bytes();
    let mut tmp = Vec::with_capacity(TMP_NAME_KEEP + 40);
    tmp.push(b'.');
    tmp.extend_from_slice(name.get(..TMP_NAME_KEEP).unwrap_or(name));
    tmp.extend_from_slice(format!("{TMP_MARK}{:016x}", rand::random::<u64>()).as_bytes());
    Ok(dir.join(OsStr::from_bytes(&tmp)))
}

/// Creates an empty regular file under a new temporary name beside `path` (see
/// [`temp_name`]), where its content is written; [`publish`] gives it its name once it is
/// complete, [`discard`] removes it otherwise. Nothing at `path` is touched.
pub(super) fn create_temp(path: &Path, private: bool) -> io::Result<std::path::PathBuf> {
    loop {
        let tmp = temp_name(path)?;
        let made = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o666 })
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&tmp);
        match made {
            Ok(_) => return Ok(tmp),
            // 64 random bits: met only if someone plants names.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn already_exists() -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        "already exists (restore with overwrite to replace it)",
    )
}

/// Renames `tmp` to `path` unless something is there.
fn rename_noreplace(tmp: &Path, path: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EEXIST) => return Err(already_exists()),
            // File systems that cannot refuse atomically: check, then rename (the target was
            // checked empty, so only a concurrent writer could slip in between).
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {}
            Err(e) => return Err(nix_io(e)),
        }
    }
    match fs::symlink_metadata(path) {
        Ok(_) => Err(already_exists()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::rename(tmp, path),
        Err(e) => Err(e),
    }
}

/// Gives the complete file at `tmp` its name `path`, in one step: whatever `path` was (with
/// `overwrite`; otherwise it must not exist) stays there, intact, until that moment. A
/// directory in the way (only with `overwrite`) is removed first.
pub(super) fn publish(tmp: &Path, path: &Path, overwrite: bool) -> io::Result<()> {
    if !overwrite {
        return rename_noreplace(tmp, path);
    }
    // rename(2) replaces files, symlinks (not followed) and special files atomically; a
    // directory in the way makes it fail.
    match fs::rename(tmp, path) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EISDIR | nix::libc::ENOTEMPTY | nix::libc::EEXIST)
            ) =>
        {
            clear(path, false, true)?;
            fs::rename(tmp, path)
        }
        other => other,
    }
}

/// Removes the temporary file of an entry that could not be restored.
pub(super) fn discard(tmp: &Path) -> io::Result<()> {
    match fs::remove_file(tmp) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Gives the file at `tmp` its final `size` (through `open` when the caller has it open).
pub(super) fn set_size(tmp: &Path, size: u64, open: Option<&File>) -> io::Result<()> {
    match open {
        Some(f) => f.set_len(size),
        None if size == 0 => Ok(()),
        None => open_for_write(tmp)?.set_len(size),
    }
}

/// Opens a restored file for writing its content, never through a symlink.
pub(super) fn open_for_write(path: &Path) -> io::Result<File> {
    // Readable too: a block stored as a patch is rebuilt from its base, written there first.
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Makes an entry with `make` under a temporary name beside `path`, then [`publish`]es it: an
/// entry replaced with `overwrite` is kept if making the new one fails.
fn make_then_publish(
    path: &Path,
    overwrite: bool,
    make: impl Fn(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = loop {
        let tmp = temp_name(path)?;
        match make(&tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    publish(&tmp, path, overwrite).inspect_err(|_| {
        let _ = discard(&tmp);
    })
}

/// Adds another name, `path`, for the restored file at `first`.
pub(super) fn hard_link(first: &Path, path: &Path, overwrite: bool) -> io::Result<()> {
    // linkat without AT_SYMLINK_FOLLOW: links `first` itself, which is the file restored.
    make_then_publish(path, overwrite, |tmp| fs::hard_link(first, tmp))
}

/// What happened to a non-regular, non-directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    /// A symlink was created.
    Symlink,
    /// A fifo or device node was created.
    Created,
    /// Skipped, with the reason (a warning, not an error).
    Skipped(&'static str),
}

fn nix_io(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Creates a symlink, fifo or device node (device nodes need root; sockets are skipped), under a
/// temporary name first, so that what it replaces (with `overwrite`) is kept if that fails.
pub(super) fn create_special(
    path: &Path,
    node: &Node,
    overwrite: bool,
    is_root: bool,
) -> io::Result<Special> {
    let private = Mode::from_bits_truncate(0o600);
    match node.kind {
        NodeKind::Symlink => {
            make_then_publish(path, overwrite, |tmp| {
                std::os::unix::fs::symlink(OsStr::from_bytes(&node.target), tmp)
            })?;
            Ok(Special::Symlink)
        }
        NodeKind::Fifo => {
            make_then_publish(path, overwrite, |tmp| {
                nix::unistd::mkfifo(tmp, private).map_err(nix_io)
            })?;
            Ok(Special::Created)
        }
        NodeKind::BlockDevice | NodeKind::CharDevice => {
            if !is_root {
                return Ok(Special::Skipped(
                    "device node not restored: creating device nodes needs root",
                ));
            }
            let kind = if node.kind == NodeKind::BlockDevice {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFCHR
            };
            make_then_publish(path, overwrite, |tmp| {
                nix::sys::stat::mknod(tmp, kind, private, node.rdev).map_err(nix_io)
            })?;
            Ok(Special::Created)
        }
        NodeKind::Socket => Ok(Special::Skipped(
            "socket not restored (sockets are created by the programs that listen on them)",
        )),
        NodeKind::File | NodeKind::Dir => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a special file",
        )),
    }
}

fn file_time(t: Timestamp) -> FileTime {
    FileTime::from_unix_time(t.secs, t.nanos)
}

/// Applies a node's metadata to `path`: xattrs, owner (as root only), mode (not on symlinks),
/// then access and modification times (without following symlinks). Returns the failures, as
/// warnings.
pub(super) fn apply_metadata(path: &Path, node: &Node, is_root: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    // Xattrs first: as non-root, user.* attributes need write permission, which the mode may
    // take away.
    for x in &node.xattrs {
        if let Err(e) = xattr::set(path, OsStr::from_bytes(&x.name), &x.value) {
            warnings.push(format!("xattr {}: {e}", String::from_utf8_lossy(&x.name)));
        }
    }
    if is_root {
        if let Err(e) = std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)) {
            warnings.push(format!("chown {}:{}: {e}", node.uid, node.gid));
        }
    }
    // After chown, which clears set-uid and set-gid bits.
    if node.kind != NodeKind::Symlink {
        let mode = fs::Permissions::from_mode(node.mode & 0o7777);
        if let Err(e) = fs::set_permissions(path, mode) {
            warnings.push(format!("chmod {:o}: {e}", node.mode & 0o7777));
        }
    }
    if let Err(e) =
        filetime::set_symlink_file_times(path, file_time(node.atime), file_time(node.mtime))
    {
        warnings.push(format!("set times: {e}"));
    }
    warnings
}

//! Key files: the unwrapped master key in a file of mode 0600, so that a process can open the
//! repository without a password and without the Argon2id derivation (WAL archiving runs one
//! process per segment; scheduled backups need no password prompt). SPEC.md §10.2 has the
//! byte layout.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use cairn_format::{FormatError, KeyFile, RepoConfig};

use super::{CONFIG, Repository};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// Reads a key file, refusing one that others can read or that another user owns.
pub fn read_key_file(path: &Path) -> Result<KeyFile> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::Invalid(format!(
            "{}: key file mode is {mode:04o}; it must not be accessible to group or others (chmod 600)",
            path.display()
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::Invalid(format!(
            "{}: key file is owned by uid {}, not by this user (uid {me})",
            path.display(),
            meta.uid()
        )));
    }
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| Error::io(path, e))?);
    KeyFile::decode(&bytes).map_err(|e| Error::format(path.display().to_string(), e))
}

impl Repository {
    /// Opens a repository with a key file instead of a password (no key derivation): reads the
    /// key file (see [`read_key_file`]), checks that it is for this repository, and opens the
    /// config with it. The handle has no key slot in use, so [`Repository::change_password`]
    /// refuses to run on it.
    pub async fn open_with_key_file(storage: Arc<dyn Storage>, path: &Path) -> Result<Self> {
        let kf = read_key_file(path)?;
        let stored = match storage.get(CONFIG).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => {
                return Err(Error::NotARepository {
                    location: storage.location(),
                });
            }
            Err(e) => return Err(e),
        };
        RepoConfig::check_prefix(&stored).map_err(|e| Error::format(CONFIG, e))?;
        let config = match RepoConfig::open(&kf.key, &stored) {
            Ok(c) => c,
            Err(FormatError::Authentication { .. }) => {
                return Err(Error::Invalid(format!(
                    "{}: this key file (for repository {}) does not open the repository at {}",
                    path.display(),
                    cairn_format::id::hex_encode(&kf.repo_id),
                    storage.location()
                )));
            }
            Err(e) => return Err(Error::format(CONFIG, e)),
        };
        if config.repo_id != kf.repo_id {
            return Err(Error::Invalid(format!(
                "{}: key file is for repository {}, but {} is repository {}",
                path.display(),
                cairn_format::id::hex_encode(&kf.repo_id),
                storage.location(),
                cairn_format::id::hex_encode(&config.repo_id)
            )));
        }
        Ok(Self::from_key(storage, kf.key, config))
    }

    /// Writes a key file for this repository at `path`: created exclusively (never replacing a
    /// file), mode 0600, synced. The file holds the unwrapped master key: keep it as safe as the
    /// data. Removing a key slot does not revoke key files: the master key never changes.
    pub fn export_key_file(&self, path: &Path) -> Result<()> {
        let kf = KeyFile {
            repo_id: self.config.repo_id,
            key: (*self.key).clone(),
        };
        let bytes = kf.encode();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::AlreadyExists {
                        object: path.display().to_string(),
                        hint: "; a key file is never overwritten".into(),
                    }
                } else {
                    Error::io(path, e)
                }
            })?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(path, e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

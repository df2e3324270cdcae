//! A repository: storage plus the unlocked master key and the config.

mod damage;
mod keyfile;
mod keys;
mod read;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_format::{
    ChunkerParams, Compression, KdfParams, KeyId, KeySlot, MasterKey, RepoConfig, Timestamp,
};
use rand_core::OsRng;

pub use damage::{DamageKind, Damaged, SnapshotListing};
pub use keyfile::read_key_file;
pub use keys::KeyInfo;
pub(crate) use read::rebuild_block;
pub use read::{IndexFilesChecked, PlansChecked, index_name, pack_name, snapshot_name};

use crate::error::{Error, Result};
use crate::index::Index;
use crate::storage::{PutOutcome, Storage};

/// Name of the config object.
pub const CONFIG: &str = "config";
/// Folder of key slots.
pub const KEYS: &str = "keys";
/// Folder of pack files.
pub const DATA: &str = "data";
/// Folder of index files.
pub const INDEX: &str = "index";
/// Folder of snapshots.
pub const SNAPSHOTS: &str = "snapshots";
/// Folder of prune plans.
pub const PRUNE: &str = "prune";

/// Options of [`Repository::init`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InitOptions {
    /// Argon2id cost of the first key slot. Default: 64 MiB, t=3, p=4.
    pub kdf: KdfParams,
    /// Label of the first key slot (e.g. `user@host`). Default: empty.
    pub label: String,
    /// Chunk sizes. Default: 512 KiB / 1 MiB / 8 MiB.
    pub chunker: ChunkerParams,
    /// Compression of new blobs. Default: zstd level 2 (see [`Compression::default`]).
    pub compression: Compression,
    /// Target size of data packs. Default: 16 MiB.
    pub data_pack_target: u32,
    /// Target size of tree packs. Default: 4 MiB.
    pub tree_pack_target: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            kdf: KdfParams::default(),
            label: String::new(),
            chunker: ChunkerParams::default(),
            compression: Compression::default(),
            data_pack_target: cairn_format::config::DEFAULT_DATA_PACK_TARGET,
            tree_pack_target: cairn_format::config::DEFAULT_TREE_PACK_TARGET,
        }
    }
}

/// An open repository. Cheap to clone: clones share the key, the config and the index.
#[derive(Debug, Clone)]
pub struct Repository {
    storage: Arc<dyn Storage>,
    key: Arc<MasterKey>,
    key_id: KeyId,
    config: RepoConfig,
    index: Arc<tokio::sync::OnceCell<Arc<std::sync::RwLock<Index>>>>,
    cache_dir: Option<PathBuf>,
}

/// Seconds and nanoseconds since the epoch, now.
pub fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos(),
    }
}

impl Repository {
    /// Creates a repository in an empty location.
    ///
    /// Writes the first key slot, then the config; the config's presence is what makes the
    /// location a repository. Fails with [`Error::AlreadyExists`] when a config is there.
    pub async fn init(
        storage: Arc<dyn Storage>,
        password: &[u8],
        options: InitOptions,
    ) -> Result<Self> {
        if storage.size(CONFIG).await?.is_some() {
            return Err(Error::AlreadyExists {
                object: format!("{}/{CONFIG}", storage.location()),
                hint: "; a repository is already initialised here".into(),
            });
        }
        let created = now();
        let mut config = RepoConfig::new(created, &mut OsRng);
        config.chunker = options.chunker;
        config.compression = options.compression;
        config.data_pack_target = options.data_pack_target;
        config.tree_pack_target = options.tree_pack_target;
        config
            .validate()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let key = MasterKey::generate(&mut OsRng);
        let slot = KeySlot::wrap_passphrase(
            &key,
            password,
            options.kdf,
            &options.label,
            created.secs,
            &mut OsRng,
        )
        .map_err(|e| Error::Invalid(e.to_string()))?;
        let key_id = put_slot(storage.as_ref(), &key, &slot).await?;
        let sealed = config
            .seal(&key, &mut OsRng)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        if storage.put_new(CONFIG, Bytes::from(sealed)).await? == PutOutcome::Existed {
            return Err(Error::AlreadyExists {
                object: format!("{}/{CONFIG}", storage.location()),
                hint: "; another process initialised this repository at the same time".into(),
            });
        }
        Ok(Self {
            storage,
            key: Arc::new(key),
            key_id,
            config,
            index: Arc::default(),
            cache_dir: None,
        })
    }

    /// Opens a repository with a password, trying every key slot.
    pub async fn open(storage: Arc<dyn Storage>, password: &[u8]) -> Result<Self> {
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
        let (key, key_id) = keys::unlock(storage.as_ref(), password).await?;
        let config = RepoConfig::open(&key, &stored).map_err(|e| Error::format(CONFIG, e))?;
        Ok(Self {
            storage,
            key: Arc::new(key),
            key_id,
            config,
            index: Arc::default(),
            cache_dir: None,
        })
    }

    /// Caches write-once metadata (index files) under `dir/<repository id>/`. Cached objects
    /// are authenticated on every read like downloaded ones, so a damaged cache is detected.
    pub fn with_cache(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = dir.map(|d| d.join(cairn_format::id::hex_encode(&self.config.repo_id)));
        self
    }

    /// The default cache folder: `$XDG_CACHE_HOME/cairn` or `~/.cache/cairn`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("cairn"))
    }

    /// A handle from a master key and a config already opened with it (e.g. through a key file,
    /// without a password). The key slot is unknown (its id reads as all zeros).
    pub fn from_key(storage: Arc<dyn Storage>, key: MasterKey, config: RepoConfig) -> Self {
        Self {
            storage,
            key: Arc::new(key),
            key_id: KeyId::default(),
            config,
            index: Arc::default(),
            cache_dir: None,
        }
    }

    /// The same repository (key, config) reached through another storage handle, e.g. a
    /// wrapper that counts or injects faults. The index is not shared.
    pub fn with_storage(&self, storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            key: self.key.clone(),
            key_id: self.key_id,
            config: self.config.clone(),
            index: Arc::default(),
            cache_dir: self.cache_dir.clone(),
        }
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The master key.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The key slot this handle was opened with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
}

/// Writes a key slot under its id.
pub(crate) async fn put_slot(
    storage: &dyn Storage,
    key: &MasterKey,
    slot: &KeySlot,
) -> Result<KeyId> {
    let bytes = slot.encode().map_err(|e| Error::Invalid(e.to_string()))?;
    let id = KeyId::from_bytes(key.id_key().hash(&bytes));
    storage
        .put_new(&format!("{KEYS}/{id}"), Bytes::from(bytes))
        .await?;
    Ok(id)
}

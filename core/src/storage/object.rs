//! [`Storage`] over the `object_store` crate.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{ObjectInfo, PutOutcome, Storage};
use crate::error::{Error, Result};

/// A repository store backed by any [`ObjectStore`].
#[derive(Debug)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    location: String,
    /// Cleared the first time the store answers that it cannot do conditional create.
    conditional_put: AtomicBool,
    /// Reads complete without a runtime (see [`Storage::reads_inline`]).
    reads_inline: bool,
}

impl ObjectStorage {
    /// Wraps a store; `location` is what error messages and `location()` show.
    pub fn new(store: Arc<dyn ObjectStore>, location: impl Into<String>) -> Self {
        Self {
            store,
            location: location.into(),
            conditional_put: AtomicBool::new(true),
            reads_inline: false,
        }
    }

    /// Wraps a local directory store (`object_store`'s `LocalFileSystem`), whose reads run on
    /// the calling thread when no tokio runtime is current.
    pub fn local(store: Arc<dyn ObjectStore>, location: impl Into<String>) -> Self {
        Self {
            reads_inline: true,
            ..Self::new(store, location)
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    async fn put_checked(&self, path: &Path, name: &str, bytes: Bytes) -> Result<PutOutcome> {
        if self.size(name).await?.is_some() {
            return Ok(PutOutcome::Existed);
        }
        self.store
            .put(path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| map_err("put", name, e))?;
        Ok(PutOutcome::Created)
    }
}

/// Maps an `object_store` error into the engine's, deciding whether it is transient.
pub(crate) fn map_err(op: &'static str, name: &str, e: object_store::Error) -> Error {
    use object_store::Error as E;
    let transient = match &e {
        E::NotFound { .. } => {
            return Error::NotFound {
                object: name.to_owned(),
            };
        }
        E::AlreadyExists { .. } => {
            return Error::AlreadyExists {
                object: name.to_owned(),
                hint: String::new(),
            };
        }
        // Network failures, timeouts, 5xx and throttling surface as Generic after the store's
        // own retries; a later attempt may succeed.
        E::Generic { .. } | E::JoinError { .. } => true,
        _ => false,
    };
    Error::Storage {
        op,
        object: name.to_owned(),
        transient,
        message: e.to_string(),
    }
}

#[async_trait]
impl Storage for ObjectStorage {
    async fn put_new(&self, name: &str, bytes: Bytes) -> Result<PutOutcome> {
        let path = Path::from(name);
        if !self.conditional_put.load(Ordering::Relaxed) {
            return self.put_checked(&path, name, bytes).await;
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from_bytes(bytes.clone()), opts)
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(PutOutcome::Existed),
            Err(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ) => {
                self.conditional_put.store(false, Ordering::Relaxed);
                self.put_checked(&path, name, bytes).await
            }
            Err(e) => Err(map_err("put", name, e)),
        }
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        let r = self
            .store
            .get(&Path::from(name))
            .await
            .map_err(|e| map_err("get", name, e))?;
        r.bytes().await.map_err(|e| map_err("get", name, e))
    }

    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        self.store
            .get_range(&Path::from(name), range)
            .await
            .map_err(|e| map_err("get", name, e))
    }

    async fn size(&self, name: &str) -> Result<Option<u64>> {
        match self.store.head(&Path::from(name)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err("head", name, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let p = Path::from(prefix);
        self.store
            .list(Some(&p))
            .map_ok(|m| ObjectInfo {
                name: m.location.to_string(),
                size: m.size,
                modified: Some(m.last_modified.timestamp()),
            })
            .try_collect()
            .await
            .map_err(|e| map_err("list", prefix, e))
    }

    async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&Path::from(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err("delete", name, e)),
        }
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn reads_inline(&self) -> bool {
        self.reads_inline
    }
}

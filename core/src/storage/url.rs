//! Opening a store from a URL or a path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;

use super::{ObjectStorage, Storage};
use crate::error::{Error, Result};

/// In-process memory stores by name, so that every `memory://name` in one process is the same
/// store (tests open one repository from several handles).
fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// Opens the store at `location`:
///
/// * a local path, or `file:///path`: a directory (created if missing, for `init`; see
///   [`open_existing_storage`] to open a repository that must already be there), every write
///   fsynced. A path that is not a directory is [`Error::Invalid`];
/// * `memory://name`: an in-process store, shared by every handle with the same name;
/// * `s3://bucket/prefix`: S3 or an S3-compatible server, configured from the `AWS_*`
///   environment variables that `object_store` reads (`AWS_ACCESS_KEY_ID`,
///   `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, ...);
/// * `gs://bucket/prefix`: Google Cloud Storage (`GOOGLE_*` variables);
/// * `az://container/prefix`: Azure Blob Storage (`AZURE_*` variables).
pub fn open_storage(location: &str) -> Result<Arc<dyn Storage>> {
    let (scheme, rest) = match location.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("file".to_owned(), location),
    };
    let bad = |e: object_store::Error| Error::Invalid(format!("{location}: {e}"));
    let (bucket, prefix) = match rest.split_once('/') {
        Some((b, p)) => (b, p.trim_matches('/')),
        None => (rest, ""),
    };
    let store: Arc<dyn ObjectStore> = match scheme.as_str() {
        "file" => return open_local(rest, location),
        "memory" => {
            let mut stores = memory_stores()
                .lock()
                .map_err(|_| Error::Invalid("memory store registry poisoned".into()))?;
            stores.entry(rest.to_owned()).or_default().clone()
        }
        "s3" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(bad)?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(bad)?,
        ),
        "az" | "azure" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .build()
                .map_err(bad)?,
        ),
        other => {
            return Err(Error::Invalid(format!(
                "{location}: unknown scheme {other:?} (use a path, file://, memory://, s3://, gs:// or az://)"
            )));
        }
    };
    let store = if prefix.is_empty() || scheme == "memory" {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    Ok(Arc::new(ObjectStorage::new(store, location)))
}

/// [`open_storage`] for a repository that must exist already: a local directory is never
/// created. A missing local path is [`Error::NotARepository`] (so reading commands leave no empty
/// directory behind), a path that is not a directory [`Error::Invalid`]. Other stores are opened
/// as by [`open_storage`] (their absence shows as a missing `config`).
pub fn open_existing_storage(location: &str) -> Result<Arc<dyn Storage>> {
    let local = match location.split_once("://") {
        None => Some(location),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("file") => Some(rest),
        Some(_) => None,
    };
    if let Some(path) = local.filter(|p| !p.is_empty()) {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotARepository {
                    location: location.to_owned(),
                });
            }
            Err(e) => return Err(Error::io(path, e)),
            Ok(m) if !m.is_dir() => return Err(not_a_directory(location)),
            Ok(_) => {}
        }
    }
    open_storage(location)
}

fn not_a_directory(location: &str) -> Error {
    Error::Invalid(format!(
        "{location}: not a directory; a local repository is a directory (give a new or existing directory)"
    ))
}

fn open_local(path: &str, location: &str) -> Result<Arc<dyn Storage>> {
    if path.is_empty() {
        return Err(Error::Invalid("empty repository path".into()));
    }
    if std::fs::metadata(path).is_ok_and(|m| !m.is_dir()) {
        return Err(not_a_directory(location));
    }
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
    let root = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let store = LocalFileSystem::new_with_prefix(&root)
        .map_err(|e| Error::Invalid(format!("{location}: {e}")))?
        .with_fsync(true);
    Ok(Arc::new(ObjectStorage::local(Arc::new(store), root)))
}

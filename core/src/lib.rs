//! # Cairn
//!
//! A content-addressed, deduplicating, encrypted storage engine for backups. This crate is the
//! engine: storage over any object store ([`storage`]), repositories ([`Repository`]), and,
//! as they land, the chunking pipeline, backup, restore, retention, prune, check and PostgreSQL
//! support. The on-disk format lives in [`cairn_format`] (re-exported as [`format`](mod@format)).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cairn::Result<()> {
//! use cairn::{InitOptions, Repository, open_storage};
//! use cairn::format::KdfParams;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let storage = open_storage(dir.path().to_str().unwrap())?;
//! let mut options = InitOptions::default();
//! options.kdf = KdfParams::INSECURE_FOR_TESTS; // tests only: real repositories keep the default
//! let repo = Repository::init(storage.clone(), b"correct horse", options).await?;
//! let again = Repository::open(storage, b"correct horse").await?;
//! assert_eq!(again.config(), repo.config());
//! # Ok(())
//! # }
//! ```

pub mod backup;
pub mod browse;
pub mod check;
mod direct_io;
pub mod drill;
pub mod error;
pub mod forget;
pub mod index;
pub mod memory;
pub mod ops;
pub mod packer;
pub mod password;
pub mod pg;
pub mod progress;
pub mod prune;
pub mod repo;
pub mod restore;
pub mod storage;
pub mod walk;

pub use backup::{BackupOptions, BackupOutcome, BackupSource, ParentChoice, backup};
pub use browse::{Change, ChangeKind, Entry, FindOptions, Stats, StatsMode, diff, find, ls, stats};
pub use cairn_format as format;
pub use check::{CheckOptions, CheckReport, ReadData, check};
pub use drill::{DrillOptions, DrillReport, DrillSnapshot, Verdict, drill_files};
pub use error::{Error, Result};
pub use index::Index;
pub use password::PasswordSource;
pub use progress::{NoProgress, Progress};
pub use repo::{DamageKind, Damaged, InitOptions, KeyInfo, Repository};
pub use restore::{RestoreOptions, RestoreOutcome, dump, restore};
pub use storage::{ObjectInfo, PutOutcome, Storage, open_existing_storage, open_storage};

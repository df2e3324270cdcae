//! PostgreSQL support: continuous WAL archiving ([`wal`]).
//!
//! WAL files are stored one object each under `wal/<system identifier>/<file name>`, outside
//! packs, so that `archive_command` and `restore_command` move one file with one request.

pub mod basebackup;
pub mod restore;
pub mod retention;
pub mod wal;

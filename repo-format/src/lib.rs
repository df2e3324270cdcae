//! # cairn-format
//!
//! The on-disk format of a Cairn repository: typed ids, the master key and its key slots, the
//! encryption envelope, pack files, index files, trees, snapshots, the repository config, and the
//! keyed content-defined chunker. Everything here is pure: no I/O, no async runtime, no object
//! store. Randomness comes in through a `rand_core::CryptoRngCore` the caller supplies.
//!
//! `SPEC.md` at the repository root describes every byte; each module's documentation repeats
//! the layout it implements.
//!
//! Every decoder takes untrusted bytes and returns a typed [`FormatError`] on malformed input; none
//! panics.
//!
//! ```
//! use cairn_format::{BlobType, Compression, MasterKey, PackBuilder, read_pack};
//! use rand_core::OsRng;
//!
//! let key = MasterKey::generate(&mut OsRng);
//! let (id, sealed) = cairn_format::seal_blob(&key, BlobType::Data, b"hello", Compression::default(), &mut OsRng)?;
//! let mut pack = PackBuilder::new(&key, BlobType::Data, 1024);
//! pack.add(id, &sealed, 5)?;
//! let finished = pack.finish(&key, &mut OsRng)?;
//! let entries = read_pack(&key, &finished.bytes)?;
//! let entry = entries[0];
//! let blob = &finished.bytes[entry.range().start as usize..entry.range().end as usize];
//! assert_eq!(entry.open(&key, blob)?, b"hello");
//! # Ok::<(), cairn_format::FormatError>(())
//! ```

pub mod chunker;
mod codec;
pub mod config;
pub mod delta;
pub mod envelope;
pub mod error;
pub mod id;
pub mod index;
pub mod keyfile;
pub mod keys;
pub mod keyslot;
pub mod pack;
pub mod prune;
pub mod snapshot;
pub mod tree;
pub mod wal;

pub use chunker::{Chunker, ChunkerParams};
pub use config::{FORMAT_VERSION, RepoConfig};
pub use envelope::{Compression, ObjectKind};
pub use error::{FormatError, Result};
pub use id::{BlobId, ID_LEN, IdKey, IndexId, KeyId, PackId, SnapshotId};
pub use index::{IndexFile, IndexPack};
pub use keyfile::KeyFile;
pub use keys::MasterKey;
pub use keyslot::{KdfParams, KeySlot};
pub use pack::{
    BlobType, FinishedPack, PackBuilder, PackEntry, Trailer, open_blob, read_pack, seal_blob,
};
pub use prune::PrunePlan;
pub use snapshot::{Snapshot, SnapshotKind, Summary};
pub use tree::{DeltaBlock, Node, NodeKind, Timestamp, Tree};
pub use wal::{SegmentHeader, SegmentName, WalFileName};

//! Objects that are there but cannot be read, and the listings that skip and name them.
//!
//! One damaged object costs what it holds, nothing more: a listing returns every readable
//! snapshot and names the others ([`Damaged`]) instead of failing as a whole. Callers decide
//! what a damaged object means for them: a listing shows it, parent selection and retention
//! policies leave it alone, prune must not plan as if it did not exist.

use cairn_format::SnapshotId;
use futures::stream::{self, StreamExt};
use serde::Serialize;

use super::{Repository, SNAPSHOTS, snapshot_name};
use crate::error::{Error, Result};

/// How many snapshots are fetched at once by a listing.
const FETCH_CONCURRENCY: usize = 16;

/// Why an object cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DamageKind {
    /// Damaged, tampered with, or not from this repository (exit code 5).
    Corrupt,
    /// Authentic but written by a newer Cairn (exit code 1): upgrade to read it.
    Unsupported,
}

/// An object that exists but cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damaged {
    /// The object name (`snapshots/<id>`, `keys/<id>`, ...).
    pub object: String,
    /// Corrupt or written by a newer Cairn.
    pub kind: DamageKind,
    /// What the reader found.
    pub error: String,
}

impl Damaged {
    /// A damaged-object record for `error` found in `object`; `None` for errors that are not
    /// about the object's bytes (storage failures, a missing object, ...).
    pub fn from_error(object: impl Into<String>, error: &Error) -> Option<Self> {
        let kind = match error {
            Error::Corrupt { .. } => DamageKind::Corrupt,
            Error::Unsupported(_) => DamageKind::Unsupported,
            _ => return None,
        };
        Some(Self {
            object: object.into(),
            kind,
            error: error.to_string(),
        })
    }

    /// The snapshot id, when this is a snapshot object.
    pub fn snapshot_id(&self) -> Option<SnapshotId> {
        self.object
            .strip_prefix(SNAPSHOTS)
            .and_then(|s| s.strip_prefix('/'))
            .and_then(|h| SnapshotId::from_hex(h).ok())
    }
}

/// Every readable snapshot (oldest first) and every snapshot that could not be read.
pub type SnapshotListing = (Vec<(SnapshotId, cairn_format::Snapshot)>, Vec<Damaged>);

impl Repository {
    /// The ids of the snapshot objects in the store, from their names alone (nothing is
    /// downloaded or decrypted), sorted. Objects whose names are not ids are ignored.
    pub async fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let mut ids: Vec<SnapshotId> = self
            .storage
            .list(SNAPSHOTS)
            .await?
            .iter()
            .filter_map(|o| o.name.rsplit('/').next()?.parse().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every snapshot that reads, oldest first, and every one that does not, named
    /// ([`Damaged`], sorted by name). A snapshot deleted between the listing and its read is
    /// left out, after listing again (a snapshot rewritten by `tag` is then found under its new
    /// name); storage failures fail the call. Use this wherever one damaged snapshot must not
    /// stop the work (listing, parent choice, retention); [`Repository::list_snapshots`] fails
    /// instead.
    pub async fn list_snapshots_checked(&self) -> Result<SnapshotListing> {
        // A snapshot listed but gone when read was forgotten, or rewritten by `tag` (which
        // writes the new snapshot before it deletes the old one): list again until nothing
        // vanishes, so that the rewritten copy is not missed.
        let mut seen: std::collections::HashSet<SnapshotId> = Default::default();
        let mut good = Vec::new();
        let mut damaged = Vec::new();
        for _ in 0..8 {
            let new: Vec<SnapshotId> = self
                .snapshot_ids()
                .await?
                .into_iter()
                .filter(|id| seen.insert(*id))
                .collect();
            let read: Vec<(SnapshotId, Result<cairn_format::Snapshot>)> = stream::iter(new)
                .map(|id| async move { (id, self.read_snapshot(&id).await) })
                .buffer_unordered(FETCH_CONCURRENCY)
                .collect()
                .await;
            let mut vanished = false;
            for (id, r) in read {
                match r {
                    Ok(s) => good.push((id, s)),
                    Err(Error::NotFound { .. }) => vanished = true,
                    Err(e) => match Damaged::from_error(snapshot_name(&id), &e) {
                        Some(d) => damaged.push(d),
                        None => return Err(e),
                    },
                }
            }
            if !vanished {
                good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
                damaged.sort_by(|a, b| a.object.cmp(&b.object));
                return Ok((good, damaged));
            }
        }
        Err(Error::Failed(
            "snapshots keep vanishing while they are listed (a tag or forget loop?); try again"
                .into(),
        ))
    }

    /// The snapshots that cannot be read (damaged, or written by a newer Cairn). Prune must not
    /// plan while this is not empty: it cannot know what such a snapshot references.
    pub async fn damaged_snapshots(&self) -> Result<Vec<Damaged>> {
        Ok(self.list_snapshots_checked().await?.1)
    }

    /// Resolves a full snapshot id or a unique prefix from the object names alone, so that a
    /// snapshot that cannot be read can still be named (to forget it).
    pub async fn resolve_snapshot_id(&self, spec: &str) -> Result<SnapshotId> {
        let want = spec.to_ascii_lowercase();
        if want.is_empty() || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "snapshot {spec:?}: give a snapshot id or a unique prefix of one"
            )));
        }
        let ids = self.snapshot_ids().await?;
        let mut matches = ids.iter().filter(|id| id.to_hex().starts_with(&want));
        match (matches.next(), matches.next()) {
            (Some(one), None) => Ok(*one),
            (None, _) => Err(Error::NotFound {
                object: format!("snapshot {spec}"),
            }),
            (Some(_), Some(_)) => Err(Error::Invalid(format!(
                "snapshot prefix {spec:?} is ambiguous"
            ))),
        }
    }
}

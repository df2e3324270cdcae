//! The packer's upload task: uploads sealed packs (a few at once), then lists them in index
//! files, and makes sure no index file names a pack that prune may have removed meanwhile.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cairn_format::{IndexFile, IndexId, IndexPack, PackId};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{
    CloseOnDrop, INDEX_EVERY, INDEX_EVERY_PACKS, Outgoing, PackBudget, SPARE_BUFFERS, Spare,
    UPLOAD_CONCURRENCY, poisoned, with_retries,
};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::repo::Repository;

pub(super) async fn upload_loop(
    repo: Repository,
    index: Arc<RwLock<Index>>,
    rx: mpsc::Receiver<Outgoing>,
    spare: Spare,
    budget: Arc<PackBudget>,
    written: Arc<Mutex<Vec<PackId>>>,
) -> Result<(u64, u64)> {
    let _close = CloseOnDrop(budget.clone());
    let mut pending = IndexFile::default();
    let (mut packs, mut files) = (0u64, 0u64);
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
    let uploads = stream
        .map(|out: Outgoing| {
            let repo = repo.clone();
            let spare = spare.clone();
            let budget = budget.clone();
            async move {
                let Outgoing {
                    mut pack,
                    budget: held,
                } = out;
                // Move the bytes out once; every retry shares them.
                let bytes = bytes::Bytes::from(std::mem::take(&mut pack.bytes));
                let written = with_retries(|| repo.write_pack_bytes(&pack.id, bytes.clone())).await;
                // The storage keeps no reference once the write returned: take the buffer back.
                if let Ok(buf) = bytes.try_into_mut() {
                    let mut spare = spare.lock().map_err(poisoned)?;
                    if spare.len() < SPARE_BUFFERS {
                        spare.push(Vec::from(buf));
                    }
                }
                budget.give_back(held);
                written?;
                Ok::<_, Error>(pack)
            }
        })
        .buffer_unordered(UPLOAD_CONCURRENCY);
    let mut uploads = std::pin::pin!(uploads);
    // When each pending pack landed: the index file is written within INDEX_EVERY of the
    // oldest, even when no other pack lands (a backup of mostly unchanged data).
    let mut since: Vec<Instant> = Vec::new();
    loop {
        let flush_at = since.first().map(|t| *t + INDEX_EVERY);
        let done = tokio::select! {
            done = uploads.next() => done,
            () = sleep_until_or_never(flush_at) => {
                write_index(&repo, &index, &mut pending, &mut since).await?;
                files += 1;
                continue;
            }
        };
        let Some(done) = done else { break };
        let pack = done?;
        packs += 1;
        written.lock().map_err(poisoned)?.push(pack.id);
        index
            .write()
            .map_err(poisoned)?
            .add_pack(pack.id, &pack.entries);
        repo.note_pack(pack.id, &pack.entries);
        pending.packs.push(IndexPack {
            id: pack.id,
            blobs: pack.entries,
        });
        since.push(Instant::now());
        if pending.packs.len() >= INDEX_EVERY_PACKS {
            write_index(&repo, &index, &mut pending, &mut since).await?;
            files += 1;
        }
    }
    if !pending.packs.is_empty() {
        write_index(&repo, &index, &mut pending, &mut since).await?;
        files += 1;
    }
    Ok((packs, files))
}

async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Packs that waited this long for their index file are checked before it is written: prune
/// condemns packs no index lists once an hour old ([`crate::prune::UNINDEXED_MIN_AGE_SECS`]),
/// so a backup stalled that long may have lost them.
const STALE_PENDING: Duration = Duration::from_secs(30 * 60);

/// Fails when a pack that waited [`STALE_PENDING`] for its index file is condemned by a prune
/// plan or gone: an index file must never list a pack prune deleted (later backups would
/// deduplicate against it).
async fn check_stale(repo: &Repository, pending: &IndexFile, since: &[Instant]) -> Result<()> {
    let stale: Vec<PackId> = pending
        .packs
        .iter()
        .zip(since)
        .filter(|(_, t)| t.elapsed() >= STALE_PENDING)
        .map(|(p, _)| p.id)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let condemned = with_retries(|| repo.condemned_packs()).await?;
    for p in &stale {
        let name = crate::repo::pack_name(p);
        let gone =
            condemned.contains(p) || with_retries(|| repo.storage().size(&name)).await?.is_none();
        if gone {
            return Err(Error::Failed(format!(
                "{} waited over {} minutes for its index file and prune has condemned or \
                 deleted it (the backup stalled); no snapshot is written: run the backup again",
                name,
                STALE_PENDING.as_secs() / 60
            )));
        }
    }
    Ok(())
}

async fn write_index(
    repo: &Repository,
    index: &Arc<RwLock<Index>>,
    pending: &mut IndexFile,
    since: &mut Vec<Instant>,
) -> Result<IndexId> {
    check_stale(repo, pending, since).await?;
    since.clear();
    let file = std::mem::take(pending);
    let id = with_retries(|| repo.write_index(&file)).await?;
    index.write().map_err(poisoned)?.add_file(id);
    Ok(id)
}

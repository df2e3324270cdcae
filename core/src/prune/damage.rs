//! What prune checks before it deletes or condemns anything: that every blob a snapshot needs
//! is indexed in a pack that is stored whole. Otherwise the repository has damage that `check`
//! would report, and deleting on the strength of the index could throw away what `repair`
//! could still salvage (a truncated pack's intact blobs, packs an index file no longer lists).

use std::collections::{HashMap, HashSet};

use cairn_format::{BlobId, PackEntry, PackId};

/// At most this many problems are named in the refusal.
const NAMED: usize = 5;

/// The damage found, one line each (empty when there is none). `packs` are the live index's
/// packs and entries, `sizes` the listing of `data/`.
pub(crate) fn find(
    used: &HashSet<BlobId>,
    packs: &HashMap<PackId, Vec<PackEntry>>,
    sizes: &HashMap<PackId, u64>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut held: HashSet<BlobId> = HashSet::new();
    let mut ids: Vec<&PackId> = packs.keys().collect();
    ids.sort();
    for pack in ids {
        let entries = &packs[pack];
        let Some(size) = sizes.get(pack) else {
            if entries.iter().any(|e| used.contains(&e.id)) {
                problems.push(format!(
                    "data/{pack}: missing, and snapshots need blobs of it"
                ));
            }
            continue;
        };
        let end = entries
            .iter()
            .map(|e| u64::from(e.offset) + u64::from(e.stored_len))
            .max()
            .unwrap_or(0);
        if *size < end {
            problems.push(format!(
                "data/{pack}: truncated ({size} bytes stored, the index needs {end})"
            ));
            continue;
        }
        held.extend(entries.iter().map(|e| e.id));
    }
    let mut unheld: Vec<&BlobId> = used.iter().filter(|b| !held.contains(b)).collect();
    unheld.sort();
    if let Some(first) = unheld.first() {
        problems.push(format!(
            "{} blob(s) that snapshots need are in no stored pack of the index (first: {first})",
            unheld.len()
        ));
    }
    problems
}

/// The refusal for `problems`.
pub(crate) fn refusal(problems: &[String]) -> String {
    let mut msg = format!(
        "prune deletes nothing while the repository is damaged ({} problem(s)):",
        problems.len()
    );
    for p in problems.iter().take(NAMED) {
        msg.push_str("\n  ");
        msg.push_str(p);
    }
    if problems.len() > NAMED {
        msg.push_str(&format!("\n  ... and {} more", problems.len() - NAMED));
    }
    msg.push_str(
        "\nRun `check`, then `repair index` (it keeps every blob that still authenticates) or \
         `forget` the snapshots that need lost data; or prune with --ignore-damage to go ahead \
         anyway (packs that only damaged snapshots would need may then be deleted).",
    );
    msg
}

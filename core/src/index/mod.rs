//! The in-memory blob index: blob id -> pack, offset, lengths, type.
//!
//! Built from the repository's write-once index files. Entries live in one vector sorted by id
//! (48 bytes an entry: 32-byte id, then pack number with the blob type in its top bit, offset,
//! stored length, plain length, all `u32`), searched by binary search; pack ids are stored once
//! in a side table. Blobs added while a process runs go to a small hash map that is merged into
//! the sorted vector when it grows past an eighth of it.

use std::collections::{HashMap, HashSet};

use cairn_format::{BlobId, BlobType, IndexFile, IndexId, PackEntry, PackId};

const TREE_BIT: u32 = 1 << 31;

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack.
    pub pack: PackId,
    /// The blob's type.
    pub blob_type: BlobType,
    /// Offset of its envelope in the pack.
    pub offset: u32,
    /// Length of the envelope.
    pub stored_len: u32,
    /// Length of the plaintext.
    pub plain_len: u32,
}

impl BlobLocation {
    /// The pack entry this location describes.
    pub fn entry(&self, id: BlobId) -> PackEntry {
        PackEntry {
            blob_type: self.blob_type,
            id,
            offset: self.offset,
            stored_len: self.stored_len,
            plain_len: self.plain_len,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Entry {
    id: [u8; 32],
    pack_and_type: u32,
    offset: u32,
    stored_len: u32,
    plain_len: u32,
}

/// Bytes one indexed blob takes in memory (before the vector's spare capacity).
pub const BYTES_PER_BLOB: usize = std::mem::size_of::<Entry>();

/// The blob index of a repository.
#[derive(Debug, Default, Clone)]
pub struct Index {
    packs: Vec<PackId>,
    pack_numbers: HashMap<PackId, u32>,
    sorted: Vec<Entry>,
    recent: HashMap<BlobId, Entry>,
    files: HashSet<IndexId>,
    damaged: Vec<String>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an index from decoded index files. Files superseded by another file in the set
    /// are skipped (prune writes the replacement before deleting what it replaces).
    pub fn from_files(files: Vec<(IndexId, IndexFile)>) -> Self {
        Self::from_files_with(files, &HashSet::new(), false)
    }

    /// Like [`Index::from_files`], aware of packs condemned by prune: a blob found both in a
    /// condemned pack and elsewhere is located elsewhere; with `exclude`, blobs found only in
    /// condemned packs are left out altogether (backups must not deduplicate against them).
    pub fn from_files_with(
        files: Vec<(IndexId, IndexFile)>,
        condemned: &HashSet<PackId>,
        exclude: bool,
    ) -> Self {
        let superseded: HashSet<IndexId> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        let mut index = Self::new();
        let total: usize = files
            .iter()
            .map(|(_, f)| f.packs.iter().map(|p| p.blobs.len()).sum::<usize>())
            .sum();
        index.sorted.reserve_exact(total);
        for (id, file) in files {
            if superseded.contains(&id) {
                continue;
            }
            index.files.insert(id);
            for pack in &file.packs {
                if exclude && condemned.contains(&pack.id) {
                    continue;
                }
                let n = index.pack_number(pack.id);
                for e in &pack.blobs {
                    index.sorted.push(Entry::new(n, e));
                }
            }
        }
        // Within one id, entries in condemned packs sort last, so dedup keeps another location.
        let bad: HashSet<u32> = condemned
            .iter()
            .filter_map(|p| index.pack_numbers.get(p).copied())
            .collect();
        index
            .sorted
            .sort_unstable_by_key(|e| (e.id, bad.contains(&(e.pack_and_type & !TREE_BIT))));
        index.sorted.dedup_by(|a, b| a.id == b.id);
        index
    }

    fn pack_number(&mut self, id: PackId) -> u32 {
        if let Some(n) = self.pack_numbers.get(&id) {
            return *n;
        }
        let n = self.packs.len() as u32;
        self.packs.push(id);
        self.pack_numbers.insert(id, n);
        n
    }

    /// Records the blobs of a pack that was just written.
    pub fn add_pack(&mut self, pack: PackId, entries: &[PackEntry]) {
        let n = self.pack_number(pack);
        for e in entries {
            if self.find(&e.id).is_none() {
                self.recent.insert(e.id, Entry::new(n, e));
            }
        }
        if self.recent.len() > 1024 && self.recent.len() > self.sorted.len() / 8 {
            self.sorted.extend(self.recent.drain().map(|(_, e)| e));
            self.sorted.sort_unstable_by_key(|e| e.id);
        }
    }

    /// Records index files that could not be read (left out of this index).
    pub fn note_damaged(&mut self, names: impl IntoIterator<Item = String>) {
        self.damaged.extend(names);
    }

    /// Index files that could not be read when this index was loaded, by object name.
    pub fn damaged_files(&self) -> &[String] {
        &self.damaged
    }

    /// Records that an index file is known (loaded or written by this process).
    pub fn add_file(&mut self, id: IndexId) {
        self.files.insert(id);
    }

    fn find(&self, id: &BlobId) -> Option<&Entry> {
        let bytes = id.as_bytes();
        match self.sorted.binary_search_by(|e| e.id.cmp(bytes)) {
            Ok(i) => self.sorted.get(i),
            Err(_) => self.recent.get(id),
        }
    }

    /// Where a blob lives.
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        let e = self.find(id)?;
        let pack = *self.packs.get((e.pack_and_type & !TREE_BIT) as usize)?;
        Some(BlobLocation {
            pack,
            blob_type: if e.pack_and_type & TREE_BIT != 0 {
                BlobType::Tree
            } else {
                BlobType::Data
            },
            offset: e.offset,
            stored_len: e.stored_len,
            plain_len: e.plain_len,
        })
    }

    /// The number of the pack holding a blob (an index into [`Index::packs`]).
    pub fn pack_number_of(&self, id: &BlobId) -> Option<u32> {
        self.find(id).map(|e| e.pack_and_type & !TREE_BIT)
    }

    /// True when the blob is in the repository.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.find(id).is_some()
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// True when no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Packs referenced by the index.
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// Index files the index was built from (and written since).
    pub fn files(&self) -> &HashSet<IndexId> {
        &self.files
    }

    /// Every blob with its location, in id order for the loaded part.
    pub fn iter(&self) -> impl Iterator<Item = (BlobId, BlobLocation)> + '_ {
        self.sorted
            .iter()
            .chain(self.recent.values())
            .filter_map(|e| {
                let id = BlobId::from_bytes(e.id);
                self.get(&id).map(|loc| (id, loc))
            })
    }

    /// Approximate heap bytes used.
    pub fn memory_bytes(&self) -> usize {
        self.sorted.capacity() * BYTES_PER_BLOB
            + self.recent.capacity() * (BYTES_PER_BLOB + 32 + 8)
            + self.packs.capacity() * 32
            + self.pack_numbers.capacity() * (32 + 4 + 8)
    }
}

impl Entry {
    fn new(pack: u32, e: &PackEntry) -> Self {
        let tree = if e.blob_type == BlobType::Tree {
            TREE_BIT
        } else {
            0
        };
        Self {
            id: *e.id.as_bytes(),
            pack_and_type: (pack & !TREE_BIT) | tree,
            offset: e.offset,
            stored_len: e.stored_len,
            plain_len: e.plain_len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_format::IndexPack;

    fn entry(i: u8, t: BlobType) -> PackEntry {
        PackEntry {
            blob_type: t,
            id: BlobId::from_bytes([i; 32]),
            offset: u32::from(i) * 100,
            stored_len: 100,
            plain_len: 90 + u32::from(i),
        }
    }

    #[test]
    fn entry_is_48_bytes() {
        assert_eq!(BYTES_PER_BLOB, 48);
    }

    #[test]
    fn lookup_supersedes_and_recent() {
        let p1 = PackId::from_bytes([1; 32]);
        let p2 = PackId::from_bytes([2; 32]);
        let old = IndexId::from_bytes([10; 32]);
        let new = IndexId::from_bytes([11; 32]);
        let files = vec![
            (
                old,
                IndexFile {
                    supersedes: vec![],
                    packs: vec![IndexPack {
                        id: p1,
                        blobs: vec![entry(1, BlobType::Data), entry(9, BlobType::Data)],
                    }],
                },
            ),
            (
                new,
                IndexFile {
                    supersedes: vec![old],
                    packs: vec![IndexPack {
                        id: p2,
                        blobs: vec![entry(1, BlobType::Data), entry(3, BlobType::Tree)],
                    }],
                },
            ),
        ];
        let mut idx = Index::from_files(files);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.get(&BlobId::from_bytes([1; 32])).unwrap().pack, p2);
        assert!(
            !idx.contains(&BlobId::from_bytes([9; 32])),
            "superseded file ignored"
        );
        let t = idx.get(&BlobId::from_bytes([3; 32])).unwrap();
        assert_eq!(
            (t.blob_type, t.offset, t.plain_len),
            (BlobType::Tree, 300, 93)
        );
        assert!(idx.files().contains(&new) && !idx.files().contains(&old));
        let p3 = PackId::from_bytes([3; 32]);
        idx.add_pack(p3, &[entry(5, BlobType::Data), entry(3, BlobType::Tree)]);
        assert_eq!(idx.get(&BlobId::from_bytes([5; 32])).unwrap().pack, p3);
        assert_eq!(
            idx.get(&BlobId::from_bytes([3; 32])).unwrap().pack,
            p2,
            "first location kept"
        );
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.iter().count(), 3);
    }

    #[test]
    fn many_recent_entries_merge() {
        let mut idx = Index::new();
        let p = PackId::from_bytes([7; 32]);
        for chunk in 0..10u32 {
            let entries: Vec<_> = (0..500u32)
                .map(|i| {
                    let n = chunk * 500 + i;
                    let mut id = [0u8; 32];
                    id[..4].copy_from_slice(&n.to_le_bytes());
                    PackEntry {
                        blob_type: BlobType::Data,
                        id: BlobId::from_bytes(id),
                        offset: n,
                        stored_len: 50,
                        plain_len: 10,
                    }
                })
                .collect();
            idx.add_pack(p, &entries);
        }
        assert_eq!(idx.len(), 5000);
        for n in [0u32, 1234, 4999] {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            assert_eq!(idx.get(&BlobId::from_bytes(id)).unwrap().offset, n);
        }
    }
}

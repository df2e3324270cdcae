//! Helpers shared by Cairn's integration tests: repositories with small parameters (fast key
//! derivation, small chunks and packs), deterministic pseudo-random content, reading a file back
//! from a snapshot, and a full check that must come out clean.
//!
//! Test code: the helpers panic on any error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

mod chaos;
pub mod http;

pub use chaos::{ChaosStorage, KILLED, PausePoint};

use cairn::format::{BlobId, KdfParams, Node};
use cairn::{
    CheckOptions, CheckReport, InitOptions, NoProgress, ReadData, Repository, check, open_storage,
};

/// The password of the repositories [`init_repo`] creates.
pub const PASSWORD: &[u8] = b"pw";

/// Default options with the insecure, fast key derivation: for tests only.
pub fn fast_options() -> InitOptions {
    let mut o = InitOptions::default();
    o.kdf = KdfParams::INSECURE_FOR_TESTS;
    o
}

/// [`fast_options`] with small chunks (16 KiB minimum, 64 KiB average, 256 KiB maximum); pack
/// targets keep their defaults.
pub fn small_chunks() -> InitOptions {
    let mut o = fast_options();
    let mut c = o.chunker;
    c.min_size = 16 * 1024;
    c.avg_size = 64 * 1024;
    c.max_size = 256 * 1024;
    o.chunker = c;
    o
}

/// [`small_chunks`] with the given data and tree pack targets (bytes).
pub fn small_options(data_pack_target: u32, tree_pack_target: u32) -> InitOptions {
    let mut o = small_chunks();
    o.data_pack_target = data_pack_target;
    o.tree_pack_target = tree_pack_target;
    o
}

/// Initialises a repository in the local directory `dir/repo` with [`PASSWORD`].
pub async fn init_repo(dir: &Path, options: InitOptions) -> Repository {
    Repository::init(
        open_storage(dir.join("repo").to_str().unwrap()).unwrap(),
        PASSWORD,
        options,
    )
    .await
    .unwrap()
}

/// `n` deterministic pseudo-random (incompressible) bytes from `seed` (xorshift64, high bytes).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// `n` deterministic pseudo-random bytes from `seed`: a different generator from [`noise`]
/// (LCG-scrambled seed, xorshift64, bits 24..32), kept for the tests written against it.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The node at `path` below the snapshot tree `root`; panics when there is none.
pub async fn resolve(repo: &Repository, root: BlobId, path: &Path) -> Node {
    cairn::walk::resolve(repo, root, path.to_str().unwrap())
        .await
        .unwrap()
        .unwrap()
}

/// The content of a file node: its blocks (whole or rebuilt from patches), concatenated.
pub async fn read_node(repo: &Repository, node: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..node.content.len() {
        out.extend(repo.read_content_block(node, i).await.unwrap());
    }
    out
}

/// The content of the file at `path` below the snapshot tree `root`.
pub async fn read_file(repo: &Repository, root: BlobId, path: &Path) -> Vec<u8> {
    read_node(repo, &resolve(repo, root, path).await).await
}

/// A full check, reading all data.
pub async fn check_all(repo: &Repository) -> CheckReport {
    let mut o = CheckOptions::default();
    o.read_data = ReadData::All;
    check(repo, &o, Arc::new(NoProgress)).await.unwrap()
}

/// Asserts that a full check ([`check_all`]) finds no problem.
pub async fn assert_clean(repo: &Repository) {
    let report = check_all(repo).await;
    assert!(
        report.is_ok(),
        "check found problems: {:#?}",
        report.problems
    );
}

/// Whether `dir`'s file system takes a 4 KiB-aligned `O_DIRECT` write (tmpfs before Linux 6.6
/// does not), probed with a real write; says so on stderr when it does not, so a test that
/// then checks only the buffered path shows it.
pub fn supports_direct_io(dir: &Path) -> bool {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let probe = dir.join("direct-io-probe");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(&probe)
        .and_then(|f| {
            // A page-aligned 4 KiB window of a larger buffer.
            let buf = vec![7u8; 8192];
            let skip = buf.as_ptr().align_offset(4096);
            let window = buf
                .get(skip..skip + 4096)
                .ok_or_else(|| std::io::Error::other("cannot align the probe buffer"))?;
            f.write_all_at(window, 0)
        })
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    if !ok {
        eprintln!(
            "{}: no O_DIRECT here, the buffered path is tested",
            dir.display()
        );
    }
    ok
}

//! Backup behaviour: content lands byte-exact, unchanged files are not read again, streams.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::sync::Arc;

use cairn::format::NodeKind;
use cairn::storage::CountingStorage;
use cairn::{BackupOptions, BackupSource, Error, NoProgress, ParentChoice, Repository, backup};
use cairn_testkit::{init_repo, pseudo_random, read_node, resolve, small_options};

async fn repo(dir: &Path) -> Repository {
    init_repo(dir, small_options(512 * 1024, 128 * 1024)).await
}

/// Reads a file's content back from its snapshot node.
async fn content(repo: &Repository, root: cairn::format::BlobId, path: &Path) -> Vec<u8> {
    let node = resolve(repo, root, path).await;
    assert_eq!(node.kind, NodeKind::File);
    let out = read_node(repo, &node).await;
    assert_eq!(out.len() as u64, node.size);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_unchanged_rebackup_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    let big = pseudo_random(3 << 20, 1);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("sub/small.txt"), b"hello world\n").unwrap();
    std::fs::write(src.join("sub/deeper/empty"), b"").unwrap();
    std::fs::write(src.join("sub/copy.bin"), &big).unwrap();
    std::os::unix::fs::symlink("../big.bin", src.join("sub/link")).unwrap();
    let repo = repo(dir.path()).await;

    let first = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let s = first.snapshot.summary;
    assert_eq!(s.files_new, 4);
    assert_eq!(s.bytes_read, 2 * big.len() as u64 + 12);
    // The copy deduplicates: stored plaintext is about one copy of the big file, not two.
    assert!(s.bytes_added_plain < big.len() as u64 + 200_000, "{s:?}");
    assert!(first.warnings.is_empty());
    assert_eq!(
        content(&repo, first.snapshot.tree, &src.join("big.bin")).await,
        big
    );
    assert_eq!(
        content(&repo, first.snapshot.tree, &src.join("sub/small.txt")).await,
        b"hello world\n"
    );
    assert_eq!(
        content(&repo, first.snapshot.tree, &src.join("sub/deeper/empty")).await,
        b""
    );
    let link = cairn::walk::resolve(
        &repo,
        first.snapshot.tree,
        src.join("sub/link").to_str().unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (link.kind, link.target.as_slice()),
        (NodeKind::Symlink, b"../big.bin".as_slice())
    );

    // Unchanged re-backup, through a fresh handle: no content read, nothing added, same tree.
    let repo2 = Repository::open(repo.storage().clone(), b"pw")
        .await
        .unwrap();
    let second = backup(
        &repo2,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let s2 = second.snapshot.summary;
    assert_eq!(s2.bytes_read, 0, "{s2:?}");
    assert_eq!(s2.files_unchanged, 4);
    // The backed-up directory's tree is identical; only ancestors outside it (whose times other
    // processes change, e.g. /tmp) may get new tree blobs.
    let src_tree = |t| {
        let repo = repo2.clone();
        let src = src.clone();
        async move {
            cairn::walk::resolve_tree(&repo, t, src.to_str().unwrap())
                .await
                .unwrap()
                .0
        }
    };
    assert_eq!(
        src_tree(second.snapshot.tree).await,
        src_tree(first.snapshot.tree).await
    );
    let depth = src.components().count() as u64;
    assert!(s2.blobs_added <= depth, "{s2:?}");
    assert_eq!(second.snapshot.parent, Some(first.id));

    // A changed file is read again, the rest not.
    std::fs::write(src.join("sub/small.txt"), b"changed\n").unwrap();
    let third = backup(
        &repo2,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(third.snapshot.summary.files_changed, 1);
    assert_eq!(third.snapshot.summary.bytes_read, 8);
    assert_eq!(
        content(&repo2, third.snapshot.tree, &src.join("sub/small.txt")).await,
        b"changed\n"
    );

    // Without a parent every file is read.
    let mut o = BackupOptions::default();
    o.parent = ParentChoice::None;
    let fourth = backup(
        &repo2,
        BackupSource::Paths(vec![src.clone()]),
        &o,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(fourth.snapshot.summary.bytes_read, 2 * big.len() as u64 + 8);
    assert!(fourth.snapshot.summary.blobs_added <= depth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_failing_commands() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path()).await;
    let data = pseudo_random(700_000, 9);
    let out = backup(
        &repo,
        BackupSource::Reader {
            name: "dump.sql".into(),
            reader: Box::new(std::io::Cursor::new(data.clone())),
        },
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(
        content(&repo, out.snapshot.tree, Path::new("/dump.sql")).await,
        data
    );

    let ok = backup(
        &repo,
        BackupSource::Command {
            name: "out.txt".into(),
            argv: vec!["sh".into(), "-c".into(), "echo from-command".into()],
        },
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(
        content(&repo, ok.snapshot.tree, Path::new("/out.txt")).await,
        b"from-command\n"
    );

    let before = repo.list_snapshots().await.unwrap().len();
    let failed = backup(
        &repo,
        BackupSource::Command {
            name: "x".into(),
            argv: vec!["sh".into(), "-c".into(), "echo partial; exit 3".into()],
        },
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await;
    assert!(
        matches!(failed, Err(Error::Failed(ref m)) if m.contains("no snapshot")),
        "{failed:?}"
    );
    assert_eq!(
        repo.list_snapshots().await.unwrap().len(),
        before,
        "a failed command writes no snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excludes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("cache")).unwrap();
    std::fs::create_dir_all(src.join("keep")).unwrap();
    std::fs::write(src.join("a.tmp"), b"x").unwrap();
    std::fs::write(src.join("big"), vec![1u8; 5000]).unwrap();
    std::fs::write(src.join("keep/file"), b"y").unwrap();
    std::fs::write(src.join("cache/CACHEDIR.TAG"), b"tag").unwrap();
    std::fs::write(src.join("cache/junk"), b"z").unwrap();
    let repo = repo(dir.path()).await;
    let mut o = BackupOptions::default();
    o.exclude = vec!["*.tmp".into()];
    o.exclude_if_present = vec!["CACHEDIR.TAG".into()];
    o.exclude_larger_than = Some(1000);
    let out = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        &o,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let (_, tree) = cairn::walk::resolve_tree(&repo, out.snapshot.tree, src.to_str().unwrap())
        .await
        .unwrap();
    let names: Vec<_> = tree
        .nodes
        .iter()
        .map(|n| String::from_utf8_lossy(&n.name).into_owned())
        .collect();
    assert_eq!(names, vec!["cache", "keep"]);
    let (_, cache) = cairn::walk::resolve_tree(
        &repo,
        out.snapshot.tree,
        src.join("cache").to_str().unwrap(),
    )
    .await
    .unwrap();
    assert!(cache.nodes.is_empty());
    let missing = backup(
        &repo,
        BackupSource::Paths(vec![dir.path().join("nope")]),
        &o,
        Arc::new(NoProgress),
    )
    .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cache_holds_index_and_trees_and_survives_damage() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("a/f"), b"cached").unwrap();
    let repo = repo(dir.path()).await;
    let out = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let cache = dir.path().join("cache");
    let cached = Repository::open(repo.storage().clone(), b"pw")
        .await
        .unwrap()
        .with_cache(Some(cache.clone()));
    assert_eq!(
        content(&cached, out.snapshot.tree, &src.join("a/f")).await,
        b"cached"
    );
    let repo_dir = cache.join(cairn::format::id::hex_encode(&repo.config().repo_id));
    let count = |sub: &str| {
        std::fs::read_dir(repo_dir.join(sub))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert!(count("index") >= 1, "index files cached");
    assert!(count("trees") >= 2, "trees cached");
    // Damage every cached tree and index file: reads still succeed (entries are re-fetched and
    // replaced).
    for sub in ["trees", "index"] {
        for e in std::fs::read_dir(repo_dir.join(sub)).unwrap() {
            std::fs::write(e.unwrap().path(), b"garbage").unwrap();
        }
    }
    let again = Repository::open(repo.storage().clone(), b"pw")
        .await
        .unwrap()
        .with_cache(Some(cache.clone()));
    assert_eq!(
        content(&again, out.snapshot.tree, &src.join("a/f")).await,
        b"cached"
    );
    let sample = std::fs::read_dir(repo_dir.join("trees"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_ne!(std::fs::read(sample).unwrap(), b"garbage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_dot_in_paths_is_resolved_lexically() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let repo = repo(dir.path()).await;
    let out = backup(
        &repo,
        BackupSource::Paths(vec![src.join("sub/..")]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(
        out.snapshot.paths,
        vec![src.to_str().unwrap().as_bytes().to_vec()]
    );
    assert_eq!(
        content(&repo, out.snapshot.tree, &src.join("f")).await,
        b"x"
    );
}

/// Trees reachable from `root` (root included).
async fn count_trees(repo: &Repository, root: cairn::format::BlobId) -> u64 {
    let mut todo = vec![root];
    let mut n = 0;
    while let Some(id) = todo.pop() {
        n += 1;
        let tree = repo.read_tree(&id).await.unwrap();
        todo.extend(tree.nodes.iter().filter_map(|node| node.subtree));
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebackup_reads_each_index_file_and_parent_tree_once() {
    // A backup locates its parent's trees in its own index: the handle's index is not loaded
    // a second time (which doubled both the reads and the index memory of a backup).
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in ["a/b/c", "a/d", "e"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
        std::fs::write(src.join(d).join("f.txt"), d.as_bytes()).unwrap();
    }
    let repo = repo(dir.path()).await;
    let opts = BackupOptions::default();
    let paths = || BackupSource::Paths(vec![src.clone()]);
    let first = backup(&repo, paths(), &opts, Arc::new(NoProgress))
        .await
        .unwrap();
    // A second snapshot so that the repository has several index files.
    std::fs::write(src.join("e/new.txt"), b"new").unwrap();
    let second = backup(&repo, paths(), &opts, Arc::new(NoProgress))
        .await
        .unwrap();
    let index_files = repo.storage().list("index").await.unwrap().len() as u64;
    let snapshots = repo.storage().list("snapshots").await.unwrap().len() as u64;
    assert!(index_files >= 2, "{index_files}");
    assert_ne!(first.snapshot.tree, second.snapshot.tree);
    let trees = count_trees(&repo, second.snapshot.tree).await;

    let counting = Arc::new(CountingStorage::new(repo.storage().clone()));
    let fresh = Repository::open(counting.clone(), b"pw").await.unwrap();
    let before = counting.counts().gets;
    let third = backup(&fresh, paths(), &opts, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(third.snapshot.summary.bytes_read, 0);
    let gets = counting.counts().gets - before;
    assert_eq!(
        gets,
        index_files + snapshots + trees,
        "{index_files} index files, {snapshots} snapshots, {trees} parent trees"
    );
}

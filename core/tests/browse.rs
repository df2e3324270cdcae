//! Browsing snapshots: ls, find, diff and stats over crafted trees, with exact results and
//! exact tree-read counts (identical subtrees are read once, or not at all).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use cairn::format::{NodeKind, Snapshot, SnapshotId};
use cairn::storage::CountingStorage;
use cairn::{
    BackupOptions, BackupSource, ChangeKind, Error, FindOptions, NoProgress, Repository, StatsMode,
    backup, diff, find, ls, stats,
};
use cairn_testkit::{init_repo, pseudo_random, small_options};
use filetime::FileTime;

const T0: i64 = 1_600_000_000;
const T1: i64 = 1_700_000_000;

async fn repo(dir: &Path) -> Repository {
    init_repo(dir, small_options(512 * 1024, 128 * 1024)).await
}

fn write(path: &Path, data: &[u8], mode: u32, mtime: i64) {
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    filetime::set_file_mtime(path, FileTime::from_unix_time(mtime, 0)).unwrap();
}

fn touch_dir(path: &Path, mtime: i64) {
    filetime::set_file_mtime(path, FileTime::from_unix_time(mtime, 0)).unwrap();
}

struct Fixture {
    _repo_dir: tempfile::TempDir,
    _src_dir: tempfile::TempDir,
    src: String,
    repo: Repository,
    s1: (SnapshotId, Snapshot),
    s2: (SnapshotId, Snapshot),
}

/// `src` before:                      after:
///   a.txt    "alpha\n"                 a.txt    "alpha two\n" (new mtime)
///   b.txt    "bravo\n" 0644            b.txt    0600
///   c.txt    "charlie\n"               (removed)
///   gone/x   "x-ray\n"                 (removed with gone/)
///   kind     file "kind\n"             kind/    dir with inner "inner\n"
///   link  -> a.txt                     link  -> a.txt
///   same/    one.txt "alpha\n", empty, two.bin (10000 random bytes)   unchanged
///                                      sub/new.txt "new\n"
async fn fixture() -> Fixture {
    let repo_dir = tempfile::tempdir().unwrap();
    let src_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("src");
    std::fs::create_dir_all(src.join("gone")).unwrap();
    std::fs::create_dir_all(src.join("same")).unwrap();
    write(&src.join("a.txt"), b"alpha\n", 0o644, T0);
    write(&src.join("b.txt"), b"bravo\n", 0o644, T0);
    write(&src.join("c.txt"), b"charlie\n", 0o644, T0);
    write(&src.join("gone/x"), b"x-ray\n", 0o644, T0);
    write(&src.join("kind"), b"kind\n", 0o644, T0);
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    filetime::set_symlink_file_times(
        src.join("link"),
        FileTime::from_unix_time(T0, 0),
        FileTime::from_unix_time(T0, 0),
    )
    .unwrap();
    write(&src.join("same/one.txt"), b"alpha\n", 0o644, T0);
    write(&src.join("same/empty"), b"", 0o644, T0);
    write(
        &src.join("same/two.bin"),
        &pseudo_random(10_000, 7),
        0o644,
        T0,
    );
    for d in ["gone", "same", ""] {
        touch_dir(&src.join(d), T0);
    }
    let repo = repo(repo_dir.path()).await;
    let run = |repo: Repository, src: std::path::PathBuf| async move {
        let out = backup(
            &repo,
            BackupSource::Paths(vec![src]),
            &BackupOptions::default(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        (out.id, out.snapshot)
    };
    let s1 = run(repo.clone(), src.clone()).await;

    write(&src.join("a.txt"), b"alpha two\n", 0o644, T1);
    std::fs::set_permissions(src.join("b.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(src.join("c.txt")).unwrap();
    std::fs::remove_dir_all(src.join("gone")).unwrap();
    std::fs::remove_file(src.join("kind")).unwrap();
    std::fs::create_dir(src.join("kind")).unwrap();
    write(&src.join("kind/inner"), b"inner\n", 0o644, T1);
    std::fs::create_dir(src.join("sub")).unwrap();
    write(&src.join("sub/new.txt"), b"new\n", 0o644, T1);
    for d in ["kind", "sub", ""] {
        touch_dir(&src.join(d), T1);
    }
    let s2 = run(repo.clone(), src.clone()).await;
    Fixture {
        src: src.to_str().unwrap().to_owned(),
        _repo_dir: repo_dir,
        _src_dir: src_dir,
        repo,
        s1,
        s2,
    }
}

/// A fresh handle counting storage calls, with its index loaded (so that every later `get`
/// is a tree read).
async fn counting(repo: &Repository) -> (Repository, Arc<CountingStorage>) {
    let counting = Arc::new(CountingStorage::new(repo.storage().clone()));
    let r = Repository::open(counting.clone(), b"pw").await.unwrap();
    r.index().await.unwrap();
    (r, counting)
}

/// Directories from the root down to `src` included.
fn depth(src: &str) -> u64 {
    cairn::walk::components(src).len() as u64
}

fn rel<'a>(src: &str, path: &'a str) -> &'a str {
    path.strip_prefix(src).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_lists_exactly() {
    let f = fixture().await;
    let (_, s1) = &f.s1;

    let top = ls(&f.repo, s1, &f.src, false).await.unwrap();
    let got: Vec<(&str, NodeKind)> = top
        .iter()
        .map(|e| (rel(&f.src, &e.path), e.node.kind))
        .collect();
    assert_eq!(
        got,
        [
            ("/a.txt", NodeKind::File),
            ("/b.txt", NodeKind::File),
            ("/c.txt", NodeKind::File),
            ("/gone", NodeKind::Dir),
            ("/kind", NodeKind::File),
            ("/link", NodeKind::Symlink),
            ("/same", NodeKind::Dir),
        ]
    );
    let sizes: Vec<u64> = top.iter().map(|e| e.node.size).collect();
    assert_eq!([sizes[0], sizes[1], sizes[2], sizes[4]], [6, 6, 8, 5]);
    assert_eq!(top[5].node.target, b"a.txt");
    assert_eq!(top[0].raw_path, format!("{}/a.txt", f.src).into_bytes());
    assert_eq!(top[0].node.mtime.secs, T0);
    assert_eq!(top[0].node.mode & 0o777, 0o644);

    let all = ls(&f.repo, s1, &format!("{}/", f.src), true).await.unwrap();
    let got: Vec<&str> = all.iter().map(|e| rel(&f.src, &e.path)).collect();
    assert_eq!(
        got,
        [
            "/a.txt",
            "/b.txt",
            "/c.txt",
            "/gone",
            "/gone/x",
            "/kind",
            "/link",
            "/same",
            "/same/empty",
            "/same/one.txt",
            "/same/two.bin",
        ]
    );

    // A file lists itself; the root lists the first component of the backed-up path.
    let one = ls(&f.repo, s1, &format!("{}/same/two.bin", f.src), true)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].node.size, 10_000);
    let first = cairn::walk::components(&f.src)[0].to_vec();
    let root = ls(&f.repo, s1, "/", false).await.unwrap();
    assert_eq!(root.len(), 1);
    assert_eq!(root[0].raw_path, [b"/".as_slice(), &first].concat());
    let whole = ls(&f.repo, s1, "", true).await.unwrap();
    assert_eq!(whole.len() as u64, depth(&f.src) - 1 + all.len() as u64 + 1);

    let missing = ls(&f.repo, s1, &format!("{}/nope", f.src), false).await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    let through_file = ls(&f.repo, s1, &format!("{}/a.txt/x", f.src), false).await;
    assert!(matches!(through_file, Err(Error::NotFound { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_reports_each_change_and_skips_equal_subtrees() {
    let f = fixture().await;
    let (repo, counts) = counting(&f.repo).await;
    let before = counts.counts().gets;
    let changes = diff(&repo, &f.s1.1, &f.s2.1).await.unwrap();
    let reads = counts.counts().gets - before;

    let mine: Vec<(&str, ChangeKind)> = changes
        .iter()
        .filter(|c| c.path.starts_with(&f.src))
        .map(|c| (rel(&f.src, &c.path), c.kind))
        .collect();
    let modified = |content, metadata| ChangeKind::Modified { content, metadata };
    let expected = [
        ("", modified(false, true)),
        ("/a.txt", modified(true, true)),
        ("/b.txt", modified(false, true)),
        ("/c.txt", ChangeKind::Removed),
        ("/gone", ChangeKind::Removed),
        ("/gone/x", ChangeKind::Removed),
        ("/kind", ChangeKind::TypeChanged),
        ("/sub", ChangeKind::Added),
        ("/sub/new.txt", ChangeKind::Added),
    ];
    assert_eq!(mine, expected);
    // Ancestors of src may differ (their mtimes are not ours), nothing else may.
    for c in &changes {
        assert!(
            c.path.starts_with(&f.src) || f.src.starts_with(&c.path),
            "{c:?}"
        );
        assert_eq!(c.raw_path, c.path.as_bytes());
    }
    // Tree reads: both sides of the path down to src (root included), then gone/ and sub/
    // once each; same/ (equal ids) and kind (type change) are not read.
    assert_eq!(reads, 2 * (depth(&f.src) + 1) + 2);

    // Backwards, added and removed swap.
    let back = diff(&repo, &f.s2.1, &f.s1.1).await.unwrap();
    let mine: Vec<(&str, ChangeKind)> = back
        .iter()
        .filter(|c| c.path.starts_with(&f.src))
        .map(|c| (rel(&f.src, &c.path), c.kind))
        .collect();
    let swapped: Vec<(&str, ChangeKind)> = expected
        .iter()
        .map(|&(p, k)| {
            let k = match k {
                ChangeKind::Added => ChangeKind::Removed,
                ChangeKind::Removed => ChangeKind::Added,
                k => k,
            };
            (p, k)
        })
        .collect();
    assert_eq!(mine, swapped);

    // A snapshot against itself: nothing, and nothing read.
    let before = counts.counts().gets;
    assert!(diff(&repo, &f.s1.1, &f.s1.1).await.unwrap().is_empty());
    assert_eq!(counts.counts().gets, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_matches_names_and_paths_reading_each_tree_once() {
    let f = fixture().await;
    let (repo, counts) = counting(&f.repo).await;
    let both = [f.s1.clone(), f.s2.clone()];
    let before = counts.counts().gets;
    let found = find(&repo, &both, "*.txt", &FindOptions::default())
        .await
        .unwrap();
    let reads = counts.counts().gets - before;
    let got: Vec<(SnapshotId, &str)> = found
        .iter()
        .map(|(id, e)| (*id, rel(&f.src, &e.path)))
        .collect();
    let (i1, i2) = (f.s1.0, f.s2.0);
    assert_eq!(
        got,
        [
            (i1, "/a.txt"),
            (i1, "/b.txt"),
            (i1, "/c.txt"),
            (i1, "/same/one.txt"),
            (i2, "/a.txt"),
            (i2, "/b.txt"),
            (i2, "/same/one.txt"),
            (i2, "/sub/new.txt"),
        ]
    );
    assert_eq!(found[3].1.node.size, 6);
    // Distinct trees: the path down to src in each snapshot, gone/ and same/ in the first,
    // kind/ and sub/ in the second; same/ is shared and read once.
    assert_eq!(reads, 2 * (depth(&f.src) + 1) + 4);

    // The same snapshot twice costs no more reads than once.
    let (repo, counts) = counting(&f.repo).await;
    let before = counts.counts().gets;
    let twice = find(
        &repo,
        &[f.s1.clone(), f.s1.clone()],
        "x",
        &FindOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(counts.counts().gets - before, depth(&f.src) + 1 + 2);
    assert_eq!(twice.len(), 2);
    assert!(
        twice
            .iter()
            .all(|(_, e)| e.path == format!("{}/gone/x", f.src))
    );

    // Paths: relative patterns match at any depth, `*` stays within a component.
    let same = find(&repo, &both, "same/*.txt", &FindOptions::default())
        .await
        .unwrap();
    assert_eq!(same.len(), 2);
    let direct = find(
        &repo,
        &both[1..],
        &format!("{}/*", f.src),
        &FindOptions::default(),
    )
    .await
    .unwrap();
    let got: Vec<&str> = direct.iter().map(|(_, e)| rel(&f.src, &e.path)).collect();
    assert_eq!(got, ["/a.txt", "/b.txt", "/kind", "/link", "/same", "/sub"]);
    let deep = find(
        &repo,
        &both[1..],
        &format!("{}/**/*.txt", f.src),
        &FindOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(deep.len(), 4);

    // Case.
    let mut o = FindOptions::default();
    assert!(find(&repo, &both, "*.TXT", &o).await.unwrap().is_empty());
    o.ignore_case = true;
    assert_eq!(find(&repo, &both, "*.TXT", &o).await.unwrap().len(), 8);
    // Directories match too.
    let dirs = find(&repo, &both, "s*", &FindOptions::default())
        .await
        .unwrap();
    let got: Vec<&str> = dirs
        .iter()
        .filter(|(_, e)| e.path.starts_with(&f.src))
        .map(|(_, e)| rel(&f.src, &e.path))
        .collect();
    assert_eq!(got, ["", "/same", "", "/same", "/sub"]);
    assert!(matches!(
        find(&repo, &both, "a[", &FindOptions::default()).await,
        Err(Error::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_exactly() {
    let f = fixture().await;
    let d = depth(&f.src);
    let two_bin = 10_000u64;

    let (repo, counts) = counting(&f.repo).await;
    let before = counts.counts().gets;
    let one = stats(&repo, std::slice::from_ref(&f.s1.1), StatsMode::RawData)
        .await
        .unwrap();
    assert_eq!(counts.counts().gets - before, d + 1 + 2);
    assert_eq!(one.snapshots, 1);
    // a, b, c, gone/x, kind, same/{one.txt, empty, two.bin}
    assert_eq!(one.files, 8);
    // The directories down to src (src included), gone/, same/.
    assert_eq!(one.dirs, d + 2);
    assert_eq!(one.others, 1);
    assert_eq!(one.total_size, 6 + 6 + 8 + 6 + 5 + 6 + two_bin);
    // Files under the minimum chunk size are one blob each; one.txt is a.txt again and the
    // empty file has none.
    assert_eq!(one.data_blobs, 6);
    assert_eq!(one.data_plain_bytes, 6 + 6 + 8 + 6 + 5 + two_bin);
    assert_eq!(one.tree_blobs, d + 1 + 2);
    assert_eq!(one.missing_blobs, 0);
    assert_eq!(one.stored_bytes, stored(&repo, &f.s1.1).await);
    assert!(one.stored_bytes > one.data_plain_bytes); // random data does not compress
    assert!(
        (one.dedup_ratio() - (one.total_size as f64 / one.data_plain_bytes as f64)).abs() < 1e-9
    );
    assert!(one.dedup_ratio() > 1.0);
    assert!(
        (one.compression_ratio() - (one.plain_bytes() as f64 / one.stored_bytes as f64)).abs()
            < 1e-9
    );

    let both = stats(
        &f.repo,
        &[f.s1.1.clone(), f.s2.1.clone()],
        StatsMode::RawData,
    )
    .await
    .unwrap();
    assert_eq!(both.snapshots, 2);
    // a, b, kind/inner, same/{one.txt, empty, two.bin}, sub/new.txt
    assert_eq!(both.files, 8 + 7);
    assert_eq!(both.dirs, (d + 2) + (d + 3));
    assert_eq!(both.others, 2);
    assert_eq!(
        both.total_size,
        one.total_size + 10 + 6 + 6 + 6 + two_bin + 4
    );
    // New contents: "alpha two\n", "inner\n", "new\n".
    assert_eq!(both.data_blobs, 6 + 3);
    assert_eq!(both.data_plain_bytes, one.data_plain_bytes + 10 + 6 + 4);
    assert_eq!(both.tree_blobs, 2 * (d + 1) + 4);

    let quick = stats(
        &f.repo,
        &[f.s1.1.clone(), f.s2.1.clone()],
        StatsMode::RestoreSize,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            quick.files,
            quick.dirs,
            quick.total_size,
            quick.blobs(),
            quick.stored_bytes
        ),
        (both.files, both.dirs, both.total_size, 0, 0)
    );
    assert_eq!(
        stats(&f.repo, &[], StatsMode::RawData)
            .await
            .unwrap()
            .snapshots,
        0
    );
}

/// Stored bytes of every distinct blob of a snapshot, from the index, computed independently.
async fn stored(repo: &Repository, s: &Snapshot) -> u64 {
    let mut ids = std::collections::HashSet::new();
    ids.insert(s.tree);
    for e in ls(repo, s, "/", true).await.unwrap() {
        ids.extend(e.node.content.iter().copied());
        ids.extend(e.node.subtree);
    }
    let mut total = 0;
    for id in ids {
        total += u64::from(repo.locate(&id).await.unwrap().stored_len);
    }
    total
}

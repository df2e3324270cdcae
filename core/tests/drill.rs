//! Restore drills: a clean drill passes with the right RPO and a measured RTO and leaves no
//! scratch behind; a drill over a repository with a corrupted pack fails and names exactly the
//! files that pack's blobs belong to; the verification catches metadata, content, symlink and
//! extra-entry differences in a restored tree; non-empty targets and base backups are refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cairn::drill::{DrillOptions, DrillSnapshot, verify_restored};
use cairn::format::{NodeKind, Snapshot, SnapshotKind};
use cairn::{
    BackupOptions, BackupSource, Error, NoProgress, Repository, RestoreOptions, Verdict, backup,
    drill_files, restore,
};
use cairn_testkit::{init_repo, noise, small_options};

async fn snap(repo: &Repository, src: &Path) -> Snapshot {
    let out = backup(
        repo,
        BackupSource::Paths(vec![src.to_path_buf()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    out.snapshot
}

/// A tree with every kind of entry a drill checks: files of several chunks, an empty file,
/// a hard link, a symlink, a fifo, nested directories with their own modes.
fn make_tree(src: &Path) {
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::write(src.join("big"), noise(1_500_000, 1)).unwrap();
    fs::write(src.join("sub/mid"), noise(300_000, 2)).unwrap();
    fs::write(src.join("sub/deeper/small"), b"small file").unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    fs::hard_link(src.join("sub/mid"), src.join("mid-link")).unwrap();
    std::os::unix::fs::symlink("sub/mid", src.join("sym")).unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    fs::set_permissions(src.join("sub/deeper"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(src.join("big"), fs::Permissions::from_mode(0o600)).unwrap();
}

fn options(target: Option<PathBuf>, keep: bool) -> DrillOptions {
    let mut o = DrillOptions::default();
    o.target = target;
    o.keep = keep;
    o
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn snapshot_secs(s: &Snapshot) -> f64 {
    s.time.secs as f64 + f64::from(s.time.nanos) / 1e9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_drill_passes_measures_and_removes_its_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let repo = init_repo(dir.path(), small_options(512 << 10, 64 << 10)).await;
    let s = snap(&repo, &src).await;
    // The data is at least this old when the drill starts.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let before = now_secs();
    let r = drill_files(
        &repo,
        &DrillSnapshot::Named("latest".into()),
        &options(None, false),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let after = now_secs();
    assert_eq!(r.verdict, Verdict::Ok, "{r:#?}");
    assert!(
        r.mismatches.is_empty() && r.restore_errors.is_empty(),
        "{r:#?}"
    );
    // RPO: drill start minus snapshot time.
    assert_eq!(r.snapshot_time, snapshot_secs(&s));
    assert!(r.started >= before && r.started <= after, "{r:#?}");
    assert!(
        (r.rpo_secs - (r.started - r.snapshot_time)).abs() < 1e-6,
        "{r:#?}"
    );
    assert!(r.rpo_secs >= 1.2 && r.rpo_secs < 60.0, "{r:#?}");
    // RTO: nonzero, restore plus verify.
    assert!(r.restore_secs > 0.0 && r.verify_secs > 0.0, "{r:#?}");
    assert!((r.rto_secs - (r.restore_secs + r.verify_secs)).abs() < 1e-9);
    assert!(r.finished >= r.started + r.rto_secs - 1e-3, "{r:#?}");
    // Everything counted: big, mid, small, empty (the hard link once, as a link).
    assert_eq!(r.files, 4, "{r:#?}");
    assert_eq!(r.bytes, 1_500_000 + 300_000 + 10, "{r:#?}");
    assert_eq!((r.hardlinks, r.symlinks, r.special), (1, 1, 1), "{r:#?}");
    assert_eq!(
        r.snapshot,
        repo.find_snapshot("latest").await.unwrap().0.to_hex()
    );
    // The scratch was in the system's temporary directory and is gone.
    let scratch = PathBuf::from(&r.scratch);
    assert_eq!(scratch.parent().unwrap(), std::env::temp_dir());
    assert!(!r.kept && !scratch.exists(), "{r:#?}");
    // The report serializes as the journal and metrics will want it.
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["verdict"], "ok");
    assert!(v["rto_secs"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_keeps_the_scratch_and_a_given_target_is_emptied_or_removed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let repo = init_repo(dir.path(), small_options(512 << 10, 64 << 10)).await;
    snap(&repo, &src).await;
    let latest = DrillSnapshot::Named("latest".into());

    // --keep: the restored tree stays, complete.
    let kept = dir.path().join("kept");
    let r = drill_files(
        &repo,
        &latest,
        &options(Some(kept.clone()), true),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(r.verdict, Verdict::Ok, "{r:#?}");
    assert!(r.kept && r.cleanup_secs == 0.0);
    let big = kept.join(src.strip_prefix("/").unwrap()).join("big");
    assert_eq!(fs::read(big).unwrap(), noise(1_500_000, 1));

    // An absent target is created and removed afterwards.
    let absent = dir.path().join("absent");
    let r = drill_files(
        &repo,
        &latest,
        &options(Some(absent.clone()), false),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(r.verdict, Verdict::Ok, "{r:#?}");
    assert!(!absent.exists());

    // An empty existing target is emptied again, and stays.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let r = drill_files(
        &repo,
        &latest,
        &options(Some(empty.clone()), false),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(r.verdict, Verdict::Ok, "{r:#?}");
    assert!(empty.is_dir() && fs::read_dir(&empty).unwrap().next().is_none());

    // A non-empty target is refused and left as it was.
    let busy = dir.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("precious"), b"mine").unwrap();
    let e = drill_files(
        &repo,
        &latest,
        &options(Some(busy.clone()), false),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    assert_eq!(e.exit_code(), 7);
    assert_eq!(fs::read(busy.join("precious")).unwrap(), b"mine");
    assert_eq!(fs::read_dir(&busy).unwrap().count(), 1);
}

/// Every regular file below `src` in the snapshot with its content blobs (snapshot paths).
async fn file_blobs(
    repo: &Repository,
    s: &Snapshot,
    src: &Path,
) -> Vec<(String, Vec<cairn::format::BlobId>)> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let (_, tree) = cairn::walk::resolve_tree(repo, s.tree, d.to_str().unwrap())
            .await
            .unwrap();
        for n in tree.nodes {
            let p = d.join(OsStr::from_bytes(&n.name));
            match n.kind {
                NodeKind::Dir => dirs.push(p),
                NodeKind::File => out.push((p.to_str().unwrap().to_owned(), n.content)),
                _ => {}
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_pack_fails_the_drill_naming_exactly_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..24u64 {
        let sub = if i % 2 == 0 { "" } else { "d/" };
        fs::write(
            src.join(format!("{sub}f{i:02}")),
            noise(40_000 + 9_000 * i as usize, 100 + i),
        )
        .unwrap();
    }
    // Small data packs: the files' blobs spread over several of them.
    let repo = init_repo(dir.path(), small_options(256 << 10, 64 << 10)).await;
    let s = snap(&repo, &src).await;
    let files = file_blobs(&repo, &s, &src).await;
    let index = repo.index().await.unwrap();
    let pack_of = |b: &cairn::format::BlobId| index.read().unwrap().get(b).unwrap();
    // The pack of the first file's first blob; the files with any blob in it.
    let victim = pack_of(&files[0].1[0]).pack;
    let expected: BTreeSet<String> = files
        .iter()
        .filter(|(_, blobs)| blobs.iter().any(|b| pack_of(b).pack == victim))
        .map(|(p, _)| p.clone())
        .collect();
    assert!(
        !expected.is_empty() && expected.len() < files.len(),
        "the test needs a pack holding some files, not all: {expected:?}"
    );
    // Corrupt every blob of that pack (one byte in the middle of each envelope).
    let pack = dir
        .path()
        .join("repo")
        .join(cairn::repo::pack_name(&victim));
    let mut bytes = fs::read(&pack).unwrap();
    for (_, at) in index
        .read()
        .unwrap()
        .iter()
        .filter(|(_, at)| at.pack == victim)
    {
        bytes[(at.offset + at.stored_len / 2) as usize] ^= 0x20;
    }
    fs::write(&pack, bytes).unwrap();

    let scratch = dir.path().join("scratch");
    let r = drill_files(
        &repo,
        &DrillSnapshot::Named("latest".into()),
        &options(Some(scratch.clone()), false),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(r.verdict, Verdict::Failed);
    let named: BTreeSet<String> = r.mismatches.iter().map(|m| m.path.clone()).collect();
    assert_eq!(named, expected, "{r:#?}");
    assert!(r.mismatches.iter().all(|m| m.reason == "missing"), "{r:#?}");
    // The restore's own account names the same files, by their snapshot paths.
    assert_eq!(r.restore_errors.len(), expected.len(), "{r:#?}");
    for p in &expected {
        assert!(
            r.restore_errors
                .iter()
                .any(|e| e.starts_with(&format!("{p}: "))),
            "{p} not in {:#?}",
            r.restore_errors
        );
    }
    assert_eq!(r.files as usize, files.len() - expected.len());
    // Removed on failure too.
    assert!(!scratch.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_catches_what_differs_in_a_restored_tree() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let repo = init_repo(dir.path(), small_options(512 << 10, 64 << 10)).await;
    let s = snap(&repo, &src).await;
    let out = dir.path().join("out");
    let o = restore(
        &repo,
        &s,
        &out,
        &RestoreOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(o.errors.is_empty(), "{o:?}");
    let v = verify_restored(&repo, &s, &out, None, Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(v.mismatches.is_empty(), "{v:#?}");
    assert_eq!(v.files, 4);

    // Now change the restored tree behind the restore's back.
    let r = out.join(src.strip_prefix("/").unwrap());
    // Entries are replaced below: the directories' times are put back at the end.
    let dir_times: Vec<_> = [r.clone(), r.join("sub")]
        .into_iter()
        .map(|d| {
            let t = filetime::FileTime::from_last_modification_time(&fs::metadata(&d).unwrap());
            (d, t)
        })
        .collect();
    let mtime =
        |p: &Path| filetime::FileTime::from_last_modification_time(&fs::metadata(p).unwrap());
    // Same size, same times, one byte of content different (in the second chunk or later).
    let big = r.join("big");
    let t = mtime(&big);
    let mut data = fs::read(&big).unwrap();
    data[1_400_000] ^= 1;
    fs::write(&big, data).unwrap();
    fs::set_permissions(&big, fs::Permissions::from_mode(0o600)).unwrap();
    filetime::set_file_mtime(&big, t).unwrap();
    // Mode only.
    fs::set_permissions(
        r.join("sub/deeper/small"),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    // Modification time only.
    filetime::set_file_mtime(r.join("empty"), filetime::FileTime::from_unix_time(1, 0)).unwrap();
    // A symlink pointing elsewhere (same times).
    let t = filetime::FileTime::from_last_modification_time(
        &fs::symlink_metadata(r.join("sym")).unwrap(),
    );
    fs::remove_file(r.join("sym")).unwrap();
    std::os::unix::fs::symlink("elsewhere", r.join("sym")).unwrap();
    filetime::set_symlink_file_times(r.join("sym"), t, t).unwrap();
    // The hard link broken into a copy (its first name in the snapshot's order is
    // `mid-link`, so the second, `sub/mid`, is the one found not linked).
    let link = r.join("sub/mid");
    let t = mtime(&link);
    let copy = fs::read(&link).unwrap();
    fs::remove_file(&link).unwrap();
    fs::write(&link, copy).unwrap();
    filetime::set_file_mtime(&link, t).unwrap();
    // The fifo removed, and something the snapshot does not have.
    fs::remove_file(r.join("fifo")).unwrap();
    fs::write(r.join("sub/stray"), b"?").unwrap();
    for (d, t) in dir_times {
        filetime::set_file_mtime(d, t).unwrap();
    }

    let v = verify_restored(&repo, &s, &out, None, Arc::new(NoProgress))
        .await
        .unwrap();
    let src_s = src.to_str().unwrap();
    let mut got: Vec<(String, String)> = v
        .mismatches
        .iter()
        .map(|m| {
            (
                m.path.strip_prefix(src_s).unwrap().to_owned(),
                m.reason.clone(),
            )
        })
        .collect();
    got.sort();
    let small_mode = fs::metadata(src.join("sub/deeper/small"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    let empty_mtime = mtime(&src.join("empty"));
    let mut want = vec![
        ("/big".to_owned(), "content differs in chunk".to_owned()),
        (
            "/empty".to_owned(),
            format!(
                "modification time 1.000000000, expected {}.{:09}",
                empty_mtime.unix_seconds(),
                empty_mtime.nanoseconds()
            ),
        ),
        ("/fifo".to_owned(), "missing".to_owned()),
        (
            "/sub/mid".to_owned(),
            format!("not a hard link of {src_s}/mid-link"),
        ),
        (
            "/sub/deeper/small".to_owned(),
            format!("mode 666, expected {small_mode:o}"),
        ),
        ("/sub/stray".to_owned(), "not in the snapshot".to_owned()),
        (
            "/sym".to_owned(),
            "points to elsewhere, expected sub/mid".to_owned(),
        ),
    ];
    want.sort();
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for ((gp, gr), (wp, wr)) in got.iter().zip(&want) {
        assert_eq!(gp, wp, "{got:#?}");
        assert!(gr.starts_with(wr.as_str()), "{gp}: {gr:?}, want {wr:?}");
    }
    // Files that differ are not counted as verified: of big, empty, small and mid-link (the
    // hard-linked inode, once), only mid-link still matches.
    assert_eq!(v.files, 1, "{v:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_backups_are_refused_and_random_picks_file_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    let repo = init_repo(dir.path(), small_options(512 << 10, 64 << 10)).await;
    let files = snap(&repo, &src).await;
    // A base backup's snapshot record (its tree is beside the point: it is refused first).
    let mut pg = Snapshot::new(SnapshotKind::PgBaseBackup, cairn::repo::now(), files.tree);
    pg.time.secs += 10;
    let pg_id = repo.save_snapshot(&pg).await.unwrap();
    let e = drill_files(
        &repo,
        &DrillSnapshot::Named(pg_id.to_hex()),
        &DrillOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, Error::Invalid(ref m) if m.contains("PostgreSQL base backup")),
        "{e}"
    );
    // `latest` is the base backup here, so --random must find the file snapshot every time.
    let files_id = repo.list_snapshots().await.unwrap()[0].0.to_hex();
    for _ in 0..5 {
        let r = drill_files(
            &repo,
            &DrillSnapshot::Random,
            &DrillOptions::default(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        assert_eq!(r.snapshot, files_id);
        assert_eq!(r.verdict, Verdict::Ok, "{r:#?}");
    }
}

/// Runs the drill of `read_only_directories_are_removed_by_a_non_root_drill` over the
/// repository in `dir` and checks that it passed and left no scratch.
async fn drill_read_only_tree(dir: &Path) {
    let repo = Repository::open(
        cairn::open_existing_storage(dir.join("repo").to_str().unwrap()).unwrap(),
        cairn_testkit::PASSWORD,
    )
    .await
    .unwrap();
    let r = drill_files(
        &repo,
        &DrillSnapshot::Named("latest".into()),
        &DrillOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(r.verdict, Verdict::Ok, "{r:#?}");
    assert!(!Path::new(&r.scratch).exists(), "{r:#?}");
}

/// Gives `path` and everything below it to `uid`.
fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// A snapshot with a directory without write permission (0555): a drill run by a user other
/// than root restores it with that mode and must still remove its scratch. Run as root, the
/// drill runs in a child process (this test again) as `nobody`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_directories_are_removed_by_a_non_root_drill() {
    const CHILD: &str = "CAIRN_TEST_DRILL_CHILD_DIR";
    if let Ok(dir) = std::env::var(CHILD) {
        drill_read_only_tree(Path::new(&dir)).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("ro/inner")).unwrap();
    fs::write(src.join("ro/inner/f"), b"file in a read-only directory").unwrap();
    fs::write(src.join("ro/g"), b"another").unwrap();
    for d in ["ro/inner", "ro"] {
        fs::set_permissions(src.join(d), fs::Permissions::from_mode(0o555)).unwrap();
    }
    let repo = init_repo(dir.path(), small_options(512 << 10, 64 << 10)).await;
    snap(&repo, &src).await;
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    if !nix::unistd::geteuid().is_root() {
        // Not root: the drill runs here (its scratch in the default temporary directory).
        drill_read_only_tree(dir.path()).await;
        return;
    }
    let nobody = 65534;
    chown_tree(dir.path(), nobody);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "read_only_directories_are_removed_by_a_non_root_drill",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, dir.path())
        .env("TMPDIR", &tmp)
        .uid(nobody)
        .gid(nobody)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child drill as nobody failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The child really ran the drill (one test passed), and its scratch is gone.
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
}

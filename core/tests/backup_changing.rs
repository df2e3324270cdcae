//! A file that changes while a backup reads it: read again; one that keeps changing is stored
//! with a warning and stamped so that the next backup reads it again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use cairn::{BackupOptions, BackupSource, NoProgress, backup};
use cairn_testkit::{init_repo, noise, read_file, small_options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_keeps_changing_is_flagged_and_read_again_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path(), small_options(1 << 20, 256 * 1024)).await;
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let busy = src.join("busy.log");
    let calm = src.join("calm");
    std::fs::write(&busy, noise(6_000_000, 1)).unwrap();
    std::fs::write(&calm, noise(100_000, 2)).unwrap();

    // Another process rewrites a byte and moves the modification time, over and over.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (stop.clone(), busy.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(&busy).unwrap();
            let mut i = 0u64;
            let base = SystemTime::now();
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                f.seek(SeekFrom::Start((i * 4099) % 6_000_000)).unwrap();
                f.write_all(&[i as u8]).unwrap();
                f.set_modified(base + Duration::from_millis(i)).unwrap();
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    let out = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains("busy.log")
            && out.warnings[0].contains("changed while being read"),
        "{:?}",
        out.warnings
    );
    assert_eq!(
        read_file(&repo, out.snapshot.tree, &calm).await,
        noise(100_000, 2)
    );

    // Now still: the next backup reads the file again (its stored times are older than the
    // file's) and stores exactly what is on disk, without a warning.
    let again = backup(
        &repo,
        BackupSource::Paths(vec![src.clone()]),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert_eq!(
        again.snapshot.summary.files_changed, 1,
        "{:?}",
        again.snapshot.summary
    );
    assert_eq!(again.snapshot.summary.files_unchanged, 1);
    assert_eq!(
        read_file(&repo, again.snapshot.tree, &busy).await,
        std::fs::read(&busy).unwrap()
    );
}

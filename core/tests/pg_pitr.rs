//! End-to-end point-in-time recovery against a real PostgreSQL (15 in CI): archive_command wired
//! to `cairn-wal push`, pgbench load, a Cairn base backup, more load, a recorded time and table
//! checksums, more load, then a restore to that time whose checksums must equal the recorded
//! ones; then a timeline switch (promote, keep archiving on timeline 2, restore again along
//! timeline 2); and a second base backup that stores far less than the first.

mod pg_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn::pg::basebackup::{BaseBackupOptions, base_backup};
use cairn::pg::restore::{PgRestoreOptions, RecoveryTarget, restore_base_backup};
use cairn::{NoProgress, Repository};
use pg_support::{ArchiveRepo, ClusterOptions, PgCluster, PgDir, chown_to_pg, pg_bindir};

const PASSWORD: &str = "pitr-test-password";

/// Table checksums that any lost or extra transaction changes.
fn checksums(c: &PgCluster) -> String {
    c.psql(
        "SELECT (SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts) || ' ' || \
                (SELECT md5(string_agg(tid || ':' || tbalance, ',' ORDER BY tid)) FROM pgbench_tellers) || ' ' || \
                (SELECT count(*) FROM pgbench_history)",
    )
}

fn conninfo(c: &PgCluster) -> String {
    format!(
        "host={} port={} user=postgres dbname=postgres",
        c.dir.display(),
        c.port
    )
}

#[allow(clippy::too_many_arguments)]
/// Restores the base backup `snapshot` into `dir/name` with `recovery`, starts it, waits until
/// it has promoted.
fn restore_and_start(
    rt: &tokio::runtime::Runtime,
    repo: &Repository,
    snapshot: &cairn::format::Snapshot,
    bindir: &Path,
    dir: &Path,
    name: &str,
    recovery: RecoveryTarget,
    restore_command: &str,
) -> PgCluster {
    let mut o = PgRestoreOptions::default();
    o.recovery = Some(recovery);
    o.target_action = Some("promote".into());
    o.target_timeline = Some("latest".into());
    o.restore_command = Some(restore_command.to_owned());
    let target = dir.join(name);
    let out = rt
        .block_on(restore_base_backup(
            repo,
            snapshot,
            &target,
            &o,
            Arc::new(NoProgress),
        ))
        .expect("restore");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert!(target.join("recovery.signal").exists());
    assert!(target.join("backup_label").exists());
    chown_to_pg(&target);
    let mut c = PgCluster::at(bindir, dir, name);
    c.configure(&ClusterOptions::default());
    c.start();
    c.wait_promoted(Duration::from_secs(300));
    c
}

#[test]
fn point_in_time_recovery_and_timeline_switch() {
    let Some(bindir) = pg_bindir() else {
        return;
    };
    let root = PgDir::new("cairn-pitr-");
    let dir = root.path();
    let ar = ArchiveRepo::new(&root, PASSWORD);
    let (rt, repo) = (&ar.rt, &ar.repo);
    let wal_cmd = |verb: &str| ar.wal_cmd(verb);

    let mut primary = PgCluster::init(
        &bindir,
        dir,
        "primary",
        &ClusterOptions {
            archive_command: Some(wal_cmd("push %p")),
            // Autovacuum off so that the second-backup measurement sees the load's own page
            // changes, not a vacuum that happens to rewrite every page of this tiny database.
            extra_conf: vec!["autovacuum = off".into()],
            ..Default::default()
        },
    );
    primary.start();
    primary.pgbench(&["-i", "-s", "2", "-q"]);
    primary.pgbench(&["-t", "300", "-c", "2"]);

    // Base backup (Cairn, through the library, as the CLI does).
    let mut bo = BaseBackupOptions::default();
    bo.conninfo = conninfo(&primary);
    let first = rt
        .block_on(base_backup(repo, &bo, Arc::new(NoProgress)))
        .expect("base backup");
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    assert_eq!(first.info.system_identifier, primary.system_id());

    // A second base backup after some load stores far less than the first: unchanged blocks
    // dedup against the first, changed ones are patches against it. (Measured here: 1/5 with
    // whole blocks only, 1/48 with patches: 2.85 MB then 59 KB; see benches/README.md.)
    primary.pgbench(&["-t", "50", "-c", "1", "-n"]);
    let second = rt
        .block_on(base_backup(repo, &bo, Arc::new(NoProgress)))
        .expect("second base backup");
    let (a, b) = (
        first.snapshot.summary.bytes_added_stored,
        second.snapshot.summary.bytes_added_stored,
    );
    eprintln!(
        "first base backup stored {a} bytes ({} plain), second {b} ({} plain)",
        first.snapshot.summary.bytes_added_plain, second.snapshot.summary.bytes_added_plain
    );
    assert!(b * 20 < a, "second base backup stored {b} bytes, first {a}");
    assert_eq!(
        second.snapshot.parent,
        Some(first.id),
        "compared with the first"
    );

    // More load, then the recovery point.
    primary.pgbench(&["-t", "300", "-c", "2"]);
    std::thread::sleep(Duration::from_millis(1100));
    let target_time = primary.psql("SELECT now()::text");
    let expected = checksums(&primary);
    std::thread::sleep(Duration::from_millis(1100));
    primary.pgbench(&["-t", "300", "-c", "2"]);
    assert_ne!(
        checksums(&primary),
        expected,
        "the load after the target must change the data"
    );
    let last = primary.switch_wal();
    primary.wait_archived(&last, Duration::from_secs(300));

    primary.stop();

    // Restore to the recorded time: exactly the recorded data.
    let restore_cmd = wal_cmd("fetch %f %p");
    let restored = restore_and_start(
        rt,
        repo,
        &first.snapshot,
        &bindir,
        dir,
        "restored",
        RecoveryTarget::Time(target_time.clone()),
        &restore_cmd,
    );
    assert_eq!(
        checksums(&restored),
        expected,
        "PITR to {target_time} gave other data"
    );
    let tli = restored.psql("SELECT timeline_id FROM pg_control_checkpoint()");
    eprintln!("restored cluster on timeline {tli}");

    // Keep working on timeline 2 (the restored cluster archives into the same repository).
    restored.psql("CHECKPOINT");
    restored.pgbench(&["-t", "200", "-c", "2"]);
    std::thread::sleep(Duration::from_millis(1100));
    let target2 = restored.psql("SELECT now()::text");
    let expected2 = checksums(&restored);
    std::thread::sleep(Duration::from_millis(1100));
    restored.pgbench(&["-t", "200", "-c", "2"]);
    // A few more segments on timeline 2 (the continuity check below needs an interior one).
    for _ in 0..3 {
        restored.psql(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 0, now())",
        );
        restored.switch_wal();
    }
    let last2 = restored.switch_wal();
    assert!(last2.starts_with("00000002"), "{last2}");
    restored.wait_archived(&last2, Duration::from_secs(300));
    drop(restored);

    // Restore the same base backup along timeline 2 (history file from the archive).
    let again = restore_and_start(
        rt,
        repo,
        &first.snapshot,
        &bindir,
        dir,
        "again",
        RecoveryTarget::Time(target2.clone()),
        &restore_cmd,
    );
    assert_eq!(
        checksums(&again),
        expected2,
        "PITR along timeline 2 to {target2} gave other data"
    );
    drop(again);

    // WAL retention: once the first base backup is forgotten, WAL older than the second one's
    // start goes; timeline history files stay; the second base backup's WAL is intact.
    rt.block_on(
        repo.storage()
            .delete(&cairn::repo::snapshot_name(&first.id)),
    )
    .expect("forget");
    let dry = rt
        .block_on(cairn::pg::retention::prune_wal(repo, true))
        .expect("dry run");
    let done = rt
        .block_on(cairn::pg::retention::prune_wal(repo, false))
        .expect("prune wal");
    assert_eq!(dry.deleted, done.deleted);
    assert!(!done.deleted.is_empty(), "{done:?}");
    let keep_from = cairn::format::wal::SegmentName::parse(&second.info.start_wal)
        .expect("start wal")
        .segno(16 * 1024 * 1024)
        .expect("segno");
    for name in &done.deleted {
        assert!(!name.ends_with(".history"), "{name}");
        let seg = cairn::format::wal::SegmentName::parse(&name[..24]).expect("segment name");
        assert!(
            seg.segno(16 * 1024 * 1024).expect("segno") < keep_from,
            "{name} deleted but needed"
        );
    }
    let wal_repo = cairn::pg::wal::WalRepo::from(repo);
    let left = rt
        .block_on(cairn::pg::wal::list(
            &wal_repo,
            first.info.system_identifier,
        ))
        .expect("list");
    assert!(
        left.iter().any(|f| f.name == second.info.start_wal),
        "the second backup's first segment is kept"
    );
    assert!(left.iter().any(|f| f.name.ends_with(".history")));

    // check follows WAL continuity: clean now; a segment taken out of the middle is reported.
    let structure = cairn::CheckOptions::default();
    let report = rt
        .block_on(cairn::check(repo, &structure, Arc::new(NoProgress)))
        .expect("check");
    assert!(
        report.is_ok() && report.wal_systems == 1,
        "{:?}",
        report.problems
    );
    let mut segments: Vec<&str> = left
        .iter()
        .map(|f| f.name.as_str())
        .filter(|n| n.len() == 24 && n.starts_with("00000002"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let victim = segments[segments.len() / 2];
    rt.block_on(repo.storage().delete(&cairn::pg::wal::object_name(
        first.info.system_identifier,
        victim,
    )))
    .expect("delete segment");
    let report = rt
        .block_on(cairn::check(repo, &structure, Arc::new(NoProgress)))
        .expect("check");
    assert!(
        report.problems.iter().any(|p| p.message.contains(victim)),
        "missing {victim} not reported: {:?}",
        report.problems
    );
}

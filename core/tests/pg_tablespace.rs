//! A cluster with a tablespace outside PGDATA, against a real PostgreSQL (15 in CI): two base
//! backups (the second patched against the first, tablespace included), more load, then a
//! restore of the second backup with the tablespace moved to a new location; the restored
//! cluster replays the archived WAL and has exactly the primary's data, read through the
//! tablespace's new location.

mod pg_support;

use std::sync::Arc;
use std::time::Duration;

use cairn::NoProgress;
use cairn::pg::basebackup::{BaseBackupOptions, base_backup};
use cairn::pg::restore::{PgRestoreOptions, RecoveryTarget, restore_base_backup};
use pg_support::{ArchiveRepo, ClusterOptions, PgCluster, PgDir, chown_to_pg, pg_bindir};

const PASSWORD: &str = "tablespace-test-password";

fn digest(c: &PgCluster) -> String {
    c.psql("SELECT count(*) || ' ' || md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM t")
}

#[test]
fn tablespace_is_backed_up_and_restored_to_a_new_location() {
    let Some(bindir) = pg_bindir() else {
        return;
    };
    let root = PgDir::new("cairn-spc-");
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
            ..Default::default()
        },
    );
    primary.start();
    let spc = dir.join("spc");
    std::fs::create_dir(&spc).expect("tablespace dir");
    chown_to_pg(&spc);
    primary.psql(&format!(
        "CREATE TABLESPACE ts LOCATION '{}'",
        spc.display()
    ));
    primary.psql("CREATE TABLE t (id int PRIMARY KEY, v text) TABLESPACE ts");
    primary
        .psql("INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 20000) g");
    let oid = primary.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'");

    let conninfo = format!(
        "host={} port={} user=postgres dbname=postgres",
        primary.dir.display(),
        primary.port
    );
    let mut bo = BaseBackupOptions::default();
    bo.conninfo = conninfo;
    let first = rt
        .block_on(base_backup(repo, &bo, Arc::new(NoProgress)))
        .expect("base backup");
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    primary.psql("UPDATE t SET v = v || 'x' WHERE id % 50 = 0");
    primary.psql("CHECKPOINT");
    let second = rt
        .block_on(base_backup(repo, &bo, Arc::new(NoProgress)))
        .expect("second base backup");
    assert_eq!(second.snapshot.parent, Some(first.id));
    let (a, b) = (
        first.snapshot.summary.bytes_added_stored,
        second.snapshot.summary.bytes_added_stored,
    );
    eprintln!("first base backup stored {a} bytes, second {b}");
    assert!(b * 4 < a, "second stored {b} bytes, first {a}");

    // More load after the backup, all archived.
    primary.psql("INSERT INTO t SELECT g, 'after' FROM generate_series(20001, 21000) g");
    primary.psql("DELETE FROM t WHERE id % 7 = 0");
    let expected = digest(&primary);
    let last = primary.switch_wal();
    primary.wait_archived(&last, Duration::from_secs(300));
    // The original location stays in use by the primary: the restore must go elsewhere.
    primary.stop();

    let moved = dir.join("spc-restored");
    let mut o = PgRestoreOptions::default();
    o.recovery = Some(RecoveryTarget::Latest);
    o.target_action = Some("promote".into());
    o.restore_command = Some(wal_cmd("fetch %f %p"));
    o.tablespace_map = vec![(oid.clone(), moved.clone())];
    let target = dir.join("restored");
    let out = rt
        .block_on(restore_base_backup(
            repo,
            &second.snapshot,
            &target,
            &o,
            Arc::new(NoProgress),
        ))
        .expect("restore");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let link = std::fs::read_link(target.join("pg_tblspc").join(&oid)).expect("symlink");
    assert_eq!(link, moved);
    assert!(!target.join(".cairn-tablespaces").exists());
    let map = std::fs::read_to_string(target.join("tablespace_map")).expect("tablespace_map");
    assert!(map.contains(&format!("{oid} {}", moved.display())), "{map}");
    chown_to_pg(&target);
    chown_to_pg(&moved);
    let mut restored = PgCluster::at(&bindir, dir, "restored");
    restored.configure(&ClusterOptions::default());
    restored.start();
    restored.wait_promoted(Duration::from_secs(300));
    assert_eq!(digest(&restored), expected);
    let location = restored.psql(&format!("SELECT pg_tablespace_location({oid})"));
    assert_eq!(location, moved.display().to_string());
}

//! A base backup whose data is damaged, against a real PostgreSQL (15 in CI): the restore names
//! the relation file it could not restore, leaves it out, and writes no recovery settings and
//! no `recovery.signal`, so that the incomplete data directory does not start.

mod pg_support;

use std::sync::Arc;

use cairn::NoProgress;
use cairn::pg::basebackup::{BaseBackupOptions, base_backup};
use cairn::pg::restore::{PgRestoreOptions, RecoveryTarget, restore_base_backup};
use pg_support::{ClusterOptions, PgCluster, PgDir, chown_to_pg, pg_bindir};

#[test]
fn damaged_base_backup_is_not_made_ready_to_start() {
    let Some(bindir) = pg_bindir() else {
        return;
    };
    let root = PgDir::new("cairn-pg-incomplete-");
    let dir = root.path();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let repo_dir = dir.join("repo");
    let repo = rt.block_on(async {
        let mut o = cairn::InitOptions::default();
        o.kdf = cairn::format::KdfParams::INSECURE_FOR_TESTS;
        cairn::Repository::init(
            cairn::open_storage(repo_dir.to_str().expect("path")).expect("storage"),
            b"pw",
            o,
        )
        .await
        .expect("init")
    });
    let mut primary = PgCluster::init(&bindir, dir, "primary", &ClusterOptions::default());
    primary.start();
    primary.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    primary.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g");
    primary.psql("CHECKPOINT");
    let relation = primary.psql("SELECT pg_relation_filepath('t')");
    let mut bo = BaseBackupOptions::default();
    bo.conninfo = format!(
        "host={} port={} user=postgres dbname=postgres",
        primary.dir.display(),
        primary.port
    );
    let backup = rt
        .block_on(base_backup(&repo, &bo, Arc::new(NoProgress)))
        .expect("base backup");
    primary.stop();

    // Damage the first block of the table's file.
    let node = rt
        .block_on(cairn::walk::resolve(
            &repo,
            backup.snapshot.tree,
            &format!("/{relation}"),
        ))
        .expect("resolve")
        .expect("the table's file is in the snapshot");
    let first = node.content.first().copied().expect("a block");
    let index = rt.block_on(repo.index()).expect("index");
    let at = index.read().expect("lock").get(&first).expect("located");
    let pack = repo_dir.join(cairn::repo::pack_name(&at.pack));
    let mut bytes = std::fs::read(&pack).expect("pack");
    let i = usize::try_from(at.offset + at.stored_len / 2).expect("offset");
    if let Some(b) = bytes.get_mut(i) {
        *b ^= 0x01;
    }
    std::fs::write(&pack, bytes).expect("write pack");

    let mut o = PgRestoreOptions::default();
    o.recovery = Some(RecoveryTarget::Immediate);
    o.restore_command = Some("false".into());
    let target = dir.join("restored");
    let out = rt
        .block_on(restore_base_backup(
            &repo,
            &backup.snapshot,
            &target,
            &o,
            Arc::new(NoProgress),
        ))
        .expect("restore");
    let damaged = target.join(&relation);
    assert!(
        out.errors
            .iter()
            .any(|e| e.starts_with(&format!("{}: not restored", damaged.display()))),
        "{:?}",
        out.errors
    );
    assert!(out.failed_files >= 1, "{out:?}");
    assert!(!damaged.exists(), "the damaged relation file is left out");
    assert!(!target.join("recovery.signal").exists());
    let auto = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap_or_default();
    assert!(!auto.contains("restore_command"), "{auto}");
    // PostgreSQL does not start on it.
    chown_to_pg(&target);
    let mut restored = PgCluster::at(&bindir, dir, "restored");
    restored.configure(&ClusterOptions::default());
    assert!(!restored.try_start(), "{}", restored.log_tail(20));
    let log = restored.log_tail(20);
    assert!(
        log.contains("could not locate required checkpoint record"),
        "{log}"
    );
}

//! WAL archiving against a real PostgreSQL (15 in CI), through the `cairn-wal` binary exactly as
//! PostgreSQL runs it: `archive_command = 'cairn-wal ... push %p'`, `restore_command =
//! 'cairn-wal ... fetch %f %p'`. Skipped (with a message) when PostgreSQL is not installed,
//! except under `CI`.

mod pg_support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cairn::format::{KdfParams, SegmentHeader};
use cairn::pg::wal::{self, WalRepo};
use cairn::{InitOptions, Repository, open_storage};
use pg_support::{
    ClusterOptions, PgCluster, PgDir, cairn_wal_binary, chown_to_pg, pg_bindir, pg_command, run,
};

const PASSWORD: &str = "wal-test-password";

/// Creates a repository at `path` (fast KDF) owned by the PostgreSQL user, and a key file for
/// it written by `cairn-wal key-export` as that user.
fn make_repo(bin: &Path, path: &Path, key: &Path) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let storage = open_storage(path.to_str().expect("utf-8 path")).expect("storage");
        let mut o = InitOptions::default();
        o.kdf = KdfParams::INSECURE_FOR_TESTS;
        Repository::init(storage, PASSWORD.as_bytes(), o)
            .await
            .expect("init");
    });
    chown_to_pg(path);
    let out = run(pg_command(bin)
        .arg("--repo")
        .arg(path)
        .arg("key-export")
        .arg(key)
        .env("CAIRN_PASSWORD", PASSWORD));
    assert!(out.status.success(), "key-export: {out:?}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(key).expect("key file").mode() & 0o777,
        0o600
    );
}

/// `cairn-wal --repo R --key-file K <args>` as the PostgreSQL user, in `cwd`.
fn wal(bin: &Path, repo: &Path, key: &Path, cwd: &Path, args: &[&str]) -> Output {
    run(pg_command(bin)
        .arg("--repo")
        .arg(repo)
        .arg("--key-file")
        .arg(key)
        .args(args)
        .current_dir(cwd)
        .env_remove("CAIRN_PASSWORD")
        .env("CAIRN_WAL_RETRY_SECS", "10"))
}

/// A port on 127.0.0.1 that nothing listens on.
fn free_closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The number after `"key":` in a line of compact JSON.
fn json_number(line: &str, key: &str) -> Option<f64> {
    let rest = line.split(&format!("\"{key}\":")).nth(1)?;
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The repository opened with its password through the library (the tests run as root and
/// the key file belongs to the PostgreSQL user, so the CLI's key file checks refuse root).
fn lib_repo(path: &Path) -> (tokio::runtime::Runtime, WalRepo) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let repo = rt.block_on(async {
        let storage = open_storage(path.to_str().expect("path")).expect("storage");
        Repository::open(storage, PASSWORD.as_bytes())
            .await
            .expect("open")
    });
    (rt, WalRepo::from(&repo))
}

fn is_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|c| c.is_ascii_hexdigit())
}

#[test]
fn archive_and_restore_with_real_postgres() {
    let Some(bindir) = pg_bindir() else {
        return;
    };
    let root = PgDir::new("cairn-pg-wal-");
    let dir = root.path();
    let bin = root.install_binary(&cairn_wal_binary());
    let repo = dir.join("repo");
    let key = dir.join("key");
    make_repo(&bin, &repo, &key);
    let push_log = dir.join("push.log");
    let archive_command = format!(
        "{} --repo {} --key-file {} --json push %p --look-ahead 2 >> {}",
        bin.display(),
        repo.display(),
        key.display(),
        push_log.display()
    );

    // A primary archiving through cairn-wal, and a base backup of it taken before any data.
    let mut primary = PgCluster::init(
        &bindir,
        dir,
        "primary",
        &ClusterOptions {
            archive_command: Some(archive_command.clone()),
            ..Default::default()
        },
    );
    primary.start();
    primary.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    let restored = primary.base_backup(dir, "restored");

    // Dense WAL (pgbench data) and sparse segments (switches after small inserts).
    let t = Instant::now();
    let mut rows_at_point = String::new();
    primary.pgbench(&["-i", "-s", "4", "-q"]);
    for i in 0..18 {
        primary.psql(&format!(
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series({}, {}) g",
            i * 1000,
            i * 1000 + 999
        ));
        if i == 9 {
            // A recovery target in the middle of a segment: recovery stops there, so the
            // restored server's timeline 2 starts inside that segment (its first page copied
            // from timeline 1) and timeline 1's segment is archived as `.partial`.
            rows_at_point = primary.psql("SELECT count(*) FROM t");
            primary.psql("SELECT pg_create_restore_point('cairn_test')");
            primary.psql("INSERT INTO t VALUES (-2, 'after the restore point')");
        }
        primary.switch_wal();
    }
    let last = primary.switch_wal();
    primary.wait_archived(&last, Duration::from_secs(300));
    eprintln!(
        "generated and archived WAL up to {last} in {:?}",
        t.elapsed()
    );
    let sysid = primary.system_id();

    // Everything PostgreSQL marked archived is listed; the archive is continuous.
    let pgdata = primary.pgdata.clone();
    let (rt, lib) = lib_repo(&repo);
    let files = rt.block_on(wal::list(&lib, sysid)).expect("list");
    let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    let done: Vec<String> = std::fs::read_dir(pgdata.join("pg_wal/archive_status"))
        .expect("archive_status")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".done")
                .map(str::to_owned)
        })
        .collect();
    assert!(done.len() > 10, "{done:?}");
    for d in &done {
        assert!(
            names.contains(d),
            "{d} archived by PostgreSQL but not listed"
        );
    }
    let segments: Vec<&String> = names.iter().filter(|n| is_segment(n)).collect();
    assert!(segments.len() >= 20, "{segments:?}");
    assert!(names.iter().any(|n| n.ends_with(".backup")), "{names:?}");
    let report = rt.block_on(wal::verify(&lib, sysid, None)).expect("verify");
    assert!(report.is_ok(), "{report:?}");
    // The same through the command line (sysid from pg_control in the working directory).
    let listed = wal(&bin, &repo, &key, &pgdata, &["list"]);
    assert_eq!(code(&listed), 0, "{listed:?}");
    for d in &done {
        assert!(
            stdout(&listed).contains(d.as_str()),
            "{d} not in cairn-wal list"
        );
    }
    let verify = wal(&bin, &repo, &key, &pgdata, &["verify"]);
    assert_eq!(code(&verify), 0, "{verify:?}");
    assert!(stdout(&verify).contains("ok: the archived WAL is continuous"));
    let verify = wal(&bin, &repo, &key, &pgdata, &["--json", "verify"]);
    assert!(stdout(&verify).contains("\"ok\":true"), "{verify:?}");
    let pushes: Vec<f64> = std::fs::read_to_string(&push_log)
        .expect("push log")
        .lines()
        .filter_map(|l| json_number(l, "ms"))
        .collect();
    eprintln!(
        "archive_command: {} pushes, in-process ms (open + look-ahead + push): mean {:.1}, max {:.1}",
        pushes.len(),
        pushes.iter().sum::<f64>() / pushes.len().max(1) as f64,
        pushes.iter().cloned().fold(0.0, f64::max)
    );

    // Fetch 20 archived segments (restore_command's path), then time pushing them, one
    // process per segment as PostgreSQL runs it, into a fresh repository.
    let fetched = dir.join("fetched");
    std::fs::create_dir(&fetched).expect("mkdir");
    chown_to_pg(&fetched);
    let sample: Vec<&String> = segments.iter().rev().take(20).rev().copied().collect();
    for name in &sample {
        let dest = fetched.join(name);
        let o = wal(
            &bin,
            &repo,
            &key,
            &pgdata,
            &["fetch", name, dest.to_str().expect("path")],
        );
        assert_eq!(code(&o), 0, "fetch {name}: {o:?}");
    }
    let repo2 = dir.join("repo2");
    let key2 = dir.join("key2");
    make_repo(&bin, &repo2, &key2);
    let pgdata_arg = format!("--pgdata={}", pgdata.display());
    for (label, expect) in [("new", "stored"), ("again", "identical")] {
        let mut ms = Vec::new();
        for name in &sample {
            let path = fetched.join(name);
            let t = Instant::now();
            let o = wal(
                &bin,
                &repo2,
                &key2,
                dir,
                &[&pgdata_arg, "--json", "push", path.to_str().expect("path")],
            );
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(code(&o), 0, "push {name}: {o:?}");
            assert!(
                stdout(&o).contains(&format!("\"outcome\":\"{expect}\"")),
                "{o:?}"
            );
        }
        let mut sorted = ms.clone();
        sorted.sort_by(f64::total_cmp);
        eprintln!(
            "push timing ({label}, 16 MiB segments, whole process incl. runuser): per segment ms {:?}; mean {:.1}, median {:.1}, max {:.1}",
            ms.iter().map(|m| m.round() as u64).collect::<Vec<_>>(),
            ms.iter().sum::<f64>() / ms.len() as f64,
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1]
        );
    }

    // Same content again into the archive: 0. Different content under an existing name: 1,
    // and the stored object is unchanged.
    let name = sample[sample.len() / 2].clone();
    let original = std::fs::read(fetched.join(&name)).expect("read");
    let dup = wal(
        &bin,
        &repo,
        &key,
        &pgdata,
        &["push", fetched.join(&name).to_str().expect("path")],
    );
    assert_eq!(code(&dup), 0, "{dup:?}");
    let changed_dir = dir.join("changed");
    std::fs::create_dir(&changed_dir).expect("mkdir");
    let mut changed = original.clone();
    changed[1_000_000] ^= 0xFF;
    std::fs::write(changed_dir.join(&name), &changed).expect("write");
    chown_to_pg(&changed_dir);
    let refused = wal(
        &bin,
        &repo,
        &key,
        &pgdata,
        &["push", changed_dir.join(&name).to_str().expect("path")],
    );
    assert_eq!(code(&refused), 1, "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refusing to overwrite a different"),
        "{refused:?}"
    );
    let again = dir.join("again");
    let o = wal(
        &bin,
        &repo,
        &key,
        &pgdata,
        &["fetch", &name, again.to_str().expect("path")],
    );
    assert_eq!(code(&o), 0, "{o:?}");
    assert!(
        std::fs::read(&again).expect("read") == original,
        "stored object changed"
    );
    // Another cluster's segment: refused.
    let other = wal(
        &bin,
        &repo,
        &key,
        dir,
        &[
            "--system-id",
            "0000000000000001",
            "push",
            fetched.join(&name).to_str().expect("path"),
        ],
    );
    assert_eq!(code(&other), 1, "{other:?}");
    // A segment the archive does not have: 1 (end of WAL for PostgreSQL).
    let missing = wal(
        &bin,
        &repo,
        &key,
        &pgdata,
        &[
            "fetch",
            "00000001000000FF000000FF",
            dir.join("x").to_str().expect("path"),
        ],
    );
    assert_eq!(code(&missing), 1, "{missing:?}");
    assert!(!dir.join("x").exists());
    let accounts = primary.psql("SELECT count(*) FROM pgbench_accounts");
    primary.stop();

    // Point-in-time recovery from the archive: restore_command = cairn-wal fetch (with
    // prefetch) up to the restore point, then promotion to timeline 2, which is archived too
    // (its first segment starts with a page of timeline 1).
    let mut restored = restored;
    // First with the store unreachable: restore_command exits 126 and PostgreSQL aborts
    // recovery instead of taking the failure as the end of the WAL and promoting.
    let closed_port = free_closed_port();
    restored.configure(&ClusterOptions {
        archive_command: None,
        extra_conf: vec![format!(
            "restore_command = 'env AWS_ENDPOINT=http://127.0.0.1:{closed_port} AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=y AWS_REGION=us-east-1 CAIRN_WAL_RETRY_SECS=1 {} --repo s3://nobucket --key-file {} fetch %f %p'",
            bin.display(),
            key.display()
        )],
        ..Default::default()
    });
    restored.write_file("recovery.signal", "");
    assert!(
        !restored.try_start(),
        "recovery went on with the store unreachable"
    );
    let log = std::fs::read_to_string(&restored.log).unwrap_or_default();
    assert!(log.contains("could not restore file"), "{log}");
    assert!(restored.pgdata.join("recovery.signal").exists());
    assert!(!restored.pgdata.join("pg_wal/00000002.history").exists());
    restored.configure(&ClusterOptions {
        archive_command: Some(archive_command),
        extra_conf: vec![
            format!(
                "restore_command = '{} --repo {} --key-file {} fetch %f %p --prefetch 4'",
                bin.display(),
                repo.display(),
                key.display()
            ),
            "recovery_target_name = 'cairn_test'".into(),
            "recovery_target_action = 'promote'".into(),
        ],
        ..Default::default()
    });
    let t = Instant::now();
    restored.start();
    restored.wait_promoted(Duration::from_secs(300));
    eprintln!("recovery from the archive took {:?}", t.elapsed());
    assert_eq!(restored.psql("SELECT count(*) FROM t"), rows_at_point);
    assert_eq!(
        restored.psql("SELECT count(*) FROM pgbench_accounts"),
        accounts
    );
    assert_eq!(
        restored.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"),
        "00000002"
    );
    restored.psql("INSERT INTO t VALUES (-1, 'after promotion')");
    let tl2 = restored.switch_wal();
    assert!(tl2.starts_with("00000002"), "{tl2}");
    restored.wait_archived(&tl2, Duration::from_secs(120));
    let log = std::fs::read_to_string(&restored.log).unwrap_or_default();
    let after_restart = log
        .rsplit("database system was interrupted")
        .next()
        .unwrap_or("");
    assert!(!after_restart.contains("FATAL"), "{log}");
    eprintln!(
        "prefetch spool present after recovery: {}",
        restored.pgdata.join("pg_wal/.cairn-prefetch").exists()
    );

    let report = rt.block_on(wal::verify(&lib, sysid, None)).expect("verify");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.timelines.len(), 2, "{report:?}");
    let tl2 = &report.timelines[1];
    assert_eq!(tl2.timeline, 2);
    assert_eq!(tl2.branched_from.map(|b| b.0), Some(1), "{report:?}");
    assert!(tl2.segments >= 1, "{report:?}");
    let tl2_first = tl2.first.expect("a timeline 2 segment");
    let verify = wal(&bin, &repo, &key, &restored.pgdata, &["verify"]);
    assert_eq!(code(&verify), 0, "{verify:?}");
    let names: Vec<String> = rt
        .block_on(wal::list(&lib, sysid))
        .expect("list")
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert!(names.iter().any(|n| n == "00000002.history"), "{names:?}");
    // No `.partial`: the last timeline-1 segment came from the archive (PostgreSQL marks such
    // segments done). Timeline 2's first segment is the one holding the switch point, and its
    // first page, copied from timeline 1, has timeline 1 in its header: push accepted it.
    let first_tl2 = tl2_first.to_string();
    assert!(names.contains(&first_tl2), "{first_tl2} not in {names:?}");
    assert!(
        names.contains(&format!("00000001{}", &first_tl2[8..])),
        "{names:?}"
    );
    let copy = dir.join("tl2-first");
    let o = wal(
        &bin,
        &repo,
        &key,
        &restored.pgdata,
        &["fetch", &first_tl2, copy.to_str().expect("path")],
    );
    assert_eq!(code(&o), 0, "{o:?}");
    let header = SegmentHeader::parse(&std::fs::read(&copy).expect("read")).expect("header");
    assert_eq!(header.timeline, 1, "{header:?}");
    eprintln!("timeline 2 starts in {first_tl2}, whose first page header says timeline 1");
}

/// A store that cannot be reached is not "not found": fetch exits 126 (PostgreSQL aborts
/// recovery), push exits 6, both within the retry budget.
#[test]
fn unreachable_store_is_not_end_of_wal() {
    let root = PgDir::new("cairn-wal-unreachable-");
    let dir = root.path();
    let bin = cairn_wal_binary();
    // A key file for some repository (opened by the current user).
    let repo = dir.join("repo");
    let key = dir.join("key");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let storage = open_storage(repo.to_str().expect("path")).expect("storage");
        let mut o = InitOptions::default();
        o.kdf = KdfParams::INSECURE_FOR_TESTS;
        let r = Repository::init(storage, PASSWORD.as_bytes(), o)
            .await
            .expect("init");
        wal::export_key_file(&WalRepo::from(&r), &key).expect("key file");
    });
    let closed_port = free_closed_port();
    let unreachable = |args: &[&str]| {
        let t = Instant::now();
        let o = run(Command::new(&bin)
            .args(["--repo", "s3://nobucket/prefix", "--key-file"])
            .arg(&key)
            .args(["--system-id", "00000000000000aa"])
            .args(args)
            .current_dir(dir)
            .env("AWS_ENDPOINT", format!("http://127.0.0.1:{closed_port}"))
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "dummy")
            .env("AWS_SECRET_ACCESS_KEY", "dummy")
            .env("AWS_REGION", "us-east-1")
            .env("CAIRN_WAL_RETRY_SECS", "2"));
        (o, t.elapsed())
    };
    let dest = dir.join("RECOVERYXLOG");
    let (o, took) = unreachable(&[
        "fetch",
        "000000010000000000000001",
        dest.to_str().expect("p"),
    ]);
    assert_eq!(code(&o), 126, "{o:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(!dest.exists());
    eprintln!("fetch from an unreachable store: exit 126 after {took:?}");
    let seg = dir.join("000000010000000000000001");
    std::fs::write(&seg, vec![0u8; 1 << 20]).expect("write");
    let (o, took) = unreachable(&["push", seg.to_str().expect("p")]);
    assert_eq!(code(&o), 6, "{o:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");

    // Misconfigured restore_command (bad arguments, unreadable key file): 126, never 1.
    let o = run(Command::new(&bin).args(["fetch", "000000010000000000000001"]));
    assert_eq!(code(&o), 126, "{o:?}");
    let o = run(Command::new(&bin)
        .args(["--repo"])
        .arg(&repo)
        .args([
            "--key-file",
            "/nonexistent/key",
            "--system-id",
            "00000000000000aa",
            "fetch",
        ])
        .arg("000000010000000000000001")
        .arg(&dest));
    assert_eq!(code(&o), 126, "{o:?}");
    // A key file others can read is refused.
    pg_support::set_mode(&key, 0o644);
    let o = run(Command::new(&bin)
        .args(["--repo"])
        .arg(&repo)
        .arg("--key-file")
        .arg(&key)
        .args(["--system-id", "00000000000000aa", "list"]));
    assert_ne!(code(&o), 0, "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("chmod 600"),
        "{o:?}"
    );
}

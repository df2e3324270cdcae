//! `cairn-wal verify --ping-url` against a real HTTP server on 127.0.0.1: a continuous archive
//! pings start and success, an archive with a gap pings fail naming the missing segments, and
//! `push` sends no ping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use cairn_testkit::http::{Answer, HttpServer};

const SYSID: u64 = 0x1234_5678_9abc_def0;
const SEG: u32 = 1024 * 1024;

fn run(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn-wal"))
        .env_remove("CAIRN_REPOSITORY")
        .env_remove("CAIRN_PASSWORD_FILE")
        .env_remove("CAIRN_PASSWORD_COMMAND")
        .env_remove("CAIRN_KEY_FILE")
        .env_remove("CAIRN_PING_URL")
        .env_remove("CAIRN_PING_TIMEOUT")
        .env("CAIRN_PASSWORD", "pw")
        .arg("--repo")
        .arg(repo)
        .arg("--system-id")
        .arg(format!("{SYSID:016x}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A 1 MiB segment of timeline 1 with a valid long page header (PostgreSQL 17 magic).
fn write_segment(dir: &Path, segno: u64) -> String {
    let name = format!("00000001{:08X}{:08X}", segno / 4096, segno % 4096);
    let mut b = vec![0u8; SEG as usize];
    b[0..2].copy_from_slice(&0xD116u16.to_le_bytes());
    b[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    b[8..16].copy_from_slice(&(segno * u64::from(SEG)).to_le_bytes());
    b[24..32].copy_from_slice(&SYSID.to_le_bytes());
    b[32..36].copy_from_slice(&SEG.to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    let path = dir.join(&name);
    std::fs::write(&path, b).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn verify_pings_success_or_fail_with_the_gap_and_push_never_pings() {
    let dir = tempfile::tempdir().unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(cairn_testkit::init_repo(
            dir.path(),
            cairn_testkit::fast_options(),
        ));
    let repo = dir.path().join("repo");
    let pg_wal = dir.path().join("pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    let server = HttpServer::start(Answer::Status(200));

    for segno in [1, 2] {
        let seg = write_segment(&pg_wal, segno);
        let out = run(&repo, &["push", &seg, "--ping-url", &server.url()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert!(server.requests().is_empty(), "push pinged");

    let out = run(&repo, &["verify", "--ping-url", &server.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let paths: Vec<_> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/start", "/"]);

    // Segment 3 never archived: verify exits 5 and the failure ping names the gap.
    let seg = write_segment(&pg_wal, 4);
    let out = run(&repo, &["push", &seg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&repo, &["verify", "--ping-url", &server.url()]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let got = server.requests();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        (got[2].path.as_str(), got[3].path.as_str()),
        ("/start", "/fail")
    );
    assert!(
        got[3].body.contains("MISSING 000000010000000000000003"),
        "{}",
        got[3].body
    );
    assert!(got[3].body.contains("exit code 5"), "{}", got[3].body);
}

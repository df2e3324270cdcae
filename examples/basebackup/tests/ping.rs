//! `cairn-basebackup --ping-url` against a real HTTP server on 127.0.0.1: `expire` pings start
//! and success, a `push` that cannot reach PostgreSQL pings fail with the error; other commands
//! send nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use cairn_testkit::http::{Answer, HttpServer};

fn run(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn-basebackup"))
        .env_remove("CAIRN_REPOSITORY")
        .env_remove("CAIRN_PASSWORD_FILE")
        .env_remove("CAIRN_PASSWORD_COMMAND")
        .env_remove("CAIRN_KEY_FILE")
        .env_remove("CAIRN_PING_URL")
        .env_remove("CAIRN_PING_TIMEOUT")
        .env("CAIRN_PASSWORD", "pw")
        .arg("--repo")
        .arg(repo)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn expire_and_push_ping_start_then_success_or_fail() {
    let dir = tempfile::tempdir().unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(cairn_testkit::init_repo(
            dir.path(),
            cairn_testkit::fast_options(),
        ));
    let repo = dir.path().join("repo");
    let server = HttpServer::start(Answer::Status(200));
    let url = format!("{}/hc/base", server.url());

    let out = run(&repo, &["expire", "--keep-last", "2", "--ping-url", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let paths: Vec<_> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hc/base/start", "/hc/base"]);

    // A server socket that is not PostgreSQL's: push fails, the failure ping carries the error.
    let socket_dir = tempfile::tempdir().unwrap();
    let conninfo = format!("host={} port=1 user=postgres", socket_dir.path().display());
    let out = run(
        &repo,
        &["push", "--conninfo", &conninfo, "--ping-url", &url],
    );
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = server.requests();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        (got[2].path.as_str(), got[3].path.as_str()),
        ("/hc/base/start", "/hc/base/fail")
    );
    assert_eq!(got[3].method, "POST");
    let error = stderr(&out)
        .lines()
        .rfind(|l| l.starts_with("cairn-basebackup: "))
        .unwrap()
        .to_owned();
    assert!(got[3].body.contains(&error), "{:?} / {error}", got[3].body);

    // Listing is not monitored.
    let out = run(&repo, &["list", "--ping-url", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(server.requests().len(), 4);
}

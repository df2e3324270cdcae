//! `--ping-url` / `CAIRN_PING_URL` through the `cairn-files` binary, against a real HTTP server
//! on 127.0.0.1 started by each test: start and success pings around a good backup, the
//! failure ping with the error in its body, a server that never answers or a closed port costing
//! a warning and at most the ping timeout, never the exit code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_testkit::http::{Answer, HttpServer, refused_url};

struct Env {
    dir: tempfile::TempDir,
    repo: PathBuf,
    src: PathBuf,
}

impl Env {
    /// A fresh repository and a small source tree.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.txt"), b"some content").unwrap();
        let env = Self { dir, repo, src };
        let out = env.run(&["--kdf-memory-kib", "8", "--kdf-passes", "1", "init"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        env
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn-files"));
        c.env_remove("CAIRN_REPOSITORY")
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("CAIRN_PASSWORD_COMMAND")
            .env_remove("CAIRN_PING_URL")
            .env_remove("CAIRN_PING_TIMEOUT")
            .env("CAIRN_PASSWORD", "pw")
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .arg("--repo")
            .arg(&self.repo)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn src(&self) -> &str {
        self.src.to_str().unwrap()
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn method_paths(server: &HttpServer) -> Vec<(String, String)> {
    server
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect()
}

fn pair(m: &str, p: &str) -> (String, String) {
    (m.to_owned(), p.to_owned())
}

#[test]
fn a_good_backup_pings_start_then_success() {
    let env = Env::new();
    let server = HttpServer::start(Answer::Status(200));
    let url = format!("{}/ping/abc", server.url());
    let out = env.run(&["backup", "--ping-url", &url, env.src()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        method_paths(&server),
        [pair("GET", "/ping/abc/start"), pair("GET", "/ping/abc")]
    );
    assert!(!stderr(&out).contains("ping"), "{}", stderr(&out));

    // forget is monitored too.
    let out = env.run(&["forget", "--keep-last", "1", "--ping-url", &url]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(server.requests().len(), 4);
    assert_eq!(server.requests()[3].path, "/ping/abc");

    // Commands that are not monitored send nothing, even with the URL in the environment.
    let out = env
        .cmd(&["snapshots"])
        .env("CAIRN_PING_URL", &url)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn a_failing_stream_backup_pings_fail_with_the_error() {
    let env = Env::new();
    let server = HttpServer::start(Answer::Status(200));
    let out = env.run(&[
        "backup",
        "--ping-url",
        &server.url(),
        "--stdin-from-command",
        "--stdin-filename",
        "dump.sql",
        "--",
        "sh",
        "-c",
        "echo partial; exit 1",
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let got = server.requests();
    let seen: Vec<_> = got
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(seen, [pair("GET", "/start"), pair("POST", "/fail")]);
    // The body holds the error the user saw on stderr, and the exit code.
    let error_line = stderr(&out)
        .lines()
        .rfind(|l| l.starts_with("cairn-files: "))
        .unwrap()
        .trim_start_matches("cairn-files: ")
        .to_owned();
    assert!(got[1].body.contains(&error_line), "{got:?} / {error_line}");
    assert!(got[1].body.contains("exit code 1"), "{}", got[1].body);
}

#[test]
fn check_problems_go_into_the_failure_body() {
    let env = Env::new();
    let out = env.run(&["backup", env.src()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Lose a pack: check finds the snapshot's data missing and exits 5.
    let pack = find_file(&env.repo.join("data")).expect("a pack file");
    std::fs::remove_file(&pack).unwrap();
    let server = HttpServer::start(Answer::Status(200));
    let out = env.run(&["--json", "check", "--ping-url", &server.url()]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let got = server.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].path, "/fail");
    let pack_name = pack.file_name().unwrap().to_str().unwrap();
    assert!(got[1].body.contains(pack_name), "{}", got[1].body);
    assert!(got[1].body.contains("exit code 5"), "{}", got[1].body);
    // --json: stdout stays one JSON document; the ping outcomes are JSON lines on stderr.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let pings: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["event"] == "ping")
        .collect();
    assert_eq!(pings.len(), 2, "{}", stderr(&out));
    assert_eq!(pings[1]["kind"], "fail");
    assert_eq!(pings[1]["result"], "sent");
}

#[test]
fn a_silent_server_costs_at_most_the_timeout_and_a_warning() {
    let env = Env::new();
    // Baseline: the same kind of backup without pings.
    let t = Instant::now();
    let out = env.run(&["backup", env.src()]);
    let baseline = t.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let server = HttpServer::start(Answer::Never);
    let t = Instant::now();
    let out = env
        .cmd(&["backup", env.src()])
        .env("CAIRN_PING_URL", server.url())
        .env("CAIRN_PING_TIMEOUT", "2")
        .output()
        .unwrap();
    let took = t.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // One timeout (2 s) is the most the pings may add; allow a lot for a busy machine.
    assert!(
        took < baseline + Duration::from_secs(10),
        "took {took:?}, without pings {baseline:?}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("warning: start ping") && err.contains("warning: success ping"),
        "{err}"
    );
    // The server did get the start ping; only the answers were missing.
    assert!(
        server
            .requests()
            .first()
            .is_some_and(|r| r.path == "/start")
    );
}

#[test]
fn a_closed_port_or_a_bad_url_is_a_warning_only() {
    let env = Env::new();
    let out = env.run(&["backup", "--ping-url", &refused_url(), env.src()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("warning: success ping"), "{err}");
    assert!(err.contains("run's result is unchanged"), "{err}");

    let out = env.run(&["backup", "--ping-url", "ftp://example.invalid/x", env.src()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: no health pings"),
        "{}",
        stderr(&out)
    );
}

fn find_file(dir: &Path) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p) {
                return Some(f);
            }
        } else {
            return Some(p);
        }
    }
    None
}

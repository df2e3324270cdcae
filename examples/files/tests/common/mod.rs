//! The harness the `cairn-files` end-to-end tests share: a temporary, initialised repository
//! and the binary run against it with a clean environment.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A temporary directory holding a repository (`repo/`), the cache and the scratch space.
pub struct Env {
    /// The test's directory.
    pub dir: tempfile::TempDir,
    /// The repository inside it.
    pub repo: PathBuf,
}

impl Env {
    /// A fresh, initialised repository (cheap key derivation).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let env = Self { dir, repo };
        let out = env.run(&["--kdf-memory-kib", "8", "--kdf-passes", "1", "init"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        env
    }

    /// A path inside the test's directory.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The binary with `args`, against the repository, with the password in the environment
    /// and nothing else of the caller's Cairn settings; temporary files go to the test's
    /// directory.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn-files"));
        c.env_remove("CAIRN_REPOSITORY")
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("CAIRN_PASSWORD_COMMAND")
            .env_remove("CAIRN_PING_URL")
            .env_remove("CAIRN_PING_TIMEOUT")
            .env("CAIRN_PASSWORD", "pw")
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("TMPDIR", self.dir.path().join("tmp"))
            .arg("--repo")
            .arg(&self.repo)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs the binary; returns what it did.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs with `--json` and expects success; returns stdout parsed.
    pub fn json_ok(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Runs with `--json`, expects exit code `want`; returns stdout parsed and stderr.
    pub fn json(&self, want: i32, args: &[&str]) -> (Value, String) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_eq!(code(&out), want, "{args:?}: {}", stderr(&out));
        (serde_json::from_slice(&out.stdout).unwrap(), stderr(&out))
    }
}

/// The exit code (-1 when killed by a signal).
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

//! The CLI side of the safety guarantees: exit codes of refused work, the minimum grace period,
//! prune refusing on damage, and the slow-backup sequence run as a user would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

mod common;

use common::{Env, code, stderr};

impl Env {
    fn file(&self, name: &str, len: usize, seed: u8) -> PathBuf {
        let p = self.dir.path().join(name);
        let mut x = u64::from(seed) | 1;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect();
        std::fs::write(&p, data).unwrap();
        p
    }
}

/// `backup` of a shell command's output, stored as `d.bin`.
fn stream_backup(script: &str) -> [&str; 8] {
    [
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "d.bin",
        "--",
        "sh",
        "-c",
        script,
    ]
}

#[test]
fn grace_below_the_minimum_is_a_usage_error_unless_allowed() {
    let env = Env::new();
    let out = env.run(&["prune", "--grace", "10s"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("minimum"), "{}", stderr(&out));
    env.ok(&["prune", "--grace", "10s", "--allow-short-grace"]);
    env.ok(&["prune", "--grace", "5m"]);
}

#[test]
fn a_failing_stream_command_exits_1_not_the_usage_code() {
    let env = Env::new();
    let out = env.run(&[
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "echo x; exit 3",
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("no snapshot"), "{}", stderr(&out));
}

/// The reproduction: a backup of D1 still running (its command sleeps) while
/// `forget --keep-last 1` and two prunes delete D1's packs. It must fail with exit 1, and the
/// repository checks clean with the data read.
#[test]
fn slow_backup_beside_forget_and_prune_fails_and_saves_nothing() {
    let env = Env::new();
    let d1 = env.file("D1", 3_000_000, 1);
    let d2 = env.file("D2", 500_000, 2);
    let cat = |p: &Path| format!("cat {}", p.display());
    for d in [&d1, &d2] {
        env.ok(&stream_backup(&cat(d)));
    }
    let gate = env.dir.path().join("gate");
    // The slow backup reads D1, then waits for the gate file before its command ends.
    let slow_cmd = format!(
        "{}; while [ ! -e {} ]; do sleep 0.05; done",
        cat(&d1),
        gate.display()
    );
    let slow = env
        .cmd(&stream_backup(&slow_cmd))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it load its index and read D1 (it cannot finish before the gate opens).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    env.ok(&["forget", "--keep-last", "1"]);
    let grace = ["--grace", "0s", "--allow-short-grace"];
    env.ok(&[&["prune"], &grace[..]].concat());
    env.ok(&[&["prune"], &grace[..]].concat());
    std::fs::write(&gate, b"").unwrap();
    let out = slow.wait_with_output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("deleted by prune"),
        "{}",
        stderr(&out)
    );
    let listed = env.ok(&["--json", "snapshots"]);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{listed}");
    env.ok(&["check", "--read-data"]);
    // The next backup stores D1 again and restores byte for byte.
    env.ok(&stream_backup(&cat(&d1)));
    env.ok(&["check", "--read-data"]);
    let out = env.run(&["dump", "latest", "d.bin"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        out.stdout == std::fs::read(&d1).unwrap(),
        "dump differs from D1"
    );
}

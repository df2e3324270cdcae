//! `cairn-files` with one damaged object: the commands skip and name it, with documented exit
//! codes, and `forget ID` / `key remove ID` remove it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;

use common::{Env, code, stderr};

impl Env {
    /// Flips one bit of byte `at` of a local object.
    fn flip(&self, object: &str, at: usize) {
        let path = self.repo.join(object);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at] ^= 0x10;
        std::fs::write(&path, bytes).unwrap();
    }

    /// The names of the objects in a folder of the repository, sorted.
    fn objects(&self, folder: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.repo.join(folder))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn damaged_snapshot_is_listed_skipped_and_forgotten_by_id() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"one").unwrap();
    let (first, _) = env.json(0, &["backup", s(&src)]);
    std::fs::write(src.join("a"), b"two").unwrap();
    let (second, _) = env.json(0, &["backup", s(&src)]);
    let bad = second["id"].as_str().unwrap().to_owned();
    env.flip(&format!("snapshots/{bad}"), 40);

    // The listing shows the readable snapshot, names the damaged one and exits 5.
    let (list, err) = env.json(5, &["snapshots"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["id"], first["id"]);
    assert_eq!(list[1]["id"], bad.as_str());
    assert_eq!(list[1]["damaged"], true);
    assert_eq!(list[1]["kind"], "corrupt");
    assert!(err.is_empty() || !err.contains("panicked"), "{err}");
    let text = env.run(&["snapshots"]);
    assert_eq!(code(&text), 5);
    assert!(String::from_utf8_lossy(&text.stdout).contains("1 snapshot(s)"));
    assert!(
        stderr(&text).contains(&format!("snapshots/{bad}")),
        "{}",
        stderr(&text)
    );

    // A backup takes the readable snapshot as its parent.
    std::fs::write(src.join("a"), b"three").unwrap();
    let (third, _) = env.json(0, &["backup", s(&src)]);
    assert_eq!(third["parent"], first["id"]);
    // Commands over every snapshot search the readable ones, say what they skipped, exit 5.
    let (found, err) = env.json(5, &["find", "a"]);
    assert_eq!(found.as_array().unwrap().len(), 2, "{found}");
    assert!(err.contains(&format!("snapshots/{bad}")), "{err}");
    let (stats, _) = env.json(5, &["stats"]);
    assert_eq!(stats["snapshots"], 2, "{stats}");

    // A policy keeps the damaged snapshot, says so, and does not fail.
    let (done, err) = env.json(0, &["forget", "--keep-last", "1"]);
    assert_eq!(done["removed"], 1);
    assert_eq!(
        done["damaged"][0]["object"],
        format!("snapshots/{bad}").as_str()
    );
    assert!(err.is_empty(), "json mode reports in the document: {err}");
    let out = env.run(&["forget", "--keep-last", "1"]);
    assert_eq!(code(&out), 0);
    assert!(stderr(&out).contains(&format!("snapshots/{bad}")));
    assert!(env.objects("snapshots").contains(&bad));

    // Ids and keep rules together are a usage error; an id that is not there is "not found".
    assert_eq!(code(&env.run(&["forget", "--keep-last", "1", &bad])), 2);
    assert_eq!(code(&env.run(&["forget", "abcdef0123"])), 3);
    // `forget ID` removes it (dry run first: nothing goes).
    let (dry, _) = env.json(0, &["forget", "--dry-run", &bad[..12]]);
    assert_eq!(dry["forgotten"][0], bad.as_str());
    assert!(env.objects("snapshots").contains(&bad));
    let (gone, _) = env.json(0, &["forget", &bad[..12]]);
    assert_eq!(gone["removed"], 1);
    assert!(!env.objects("snapshots").contains(&bad));
    let (list, _) = env.json(0, &["snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(code(&env.run(&["check"])), 0);
}

#[test]
fn check_reports_a_damaged_key_slot_and_key_remove_removes_it() {
    let env = Env::new();
    let pw2 = env.path("pw2");
    std::fs::write(&pw2, "second").unwrap();
    let add = env.run(&[
        "--kdf-memory-kib",
        "8",
        "--kdf-passes",
        "1",
        "--json",
        "key",
        "add",
        "--new-password-file",
        s(&pw2),
    ]);
    assert_eq!(code(&add), 0, "{}", stderr(&add));
    let added: Value = serde_json::from_slice(&add.stdout).unwrap();
    let other = added["added"].as_str().unwrap().to_owned();
    assert_eq!(code(&env.run(&["check"])), 0);
    env.flip(&format!("keys/{other}"), 30);

    // check names the slot and exits 5; the other slot still opens the repository.
    let (report, _) = env.json(5, &["check"]);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["object"], format!("keys/{other}").as_str());
    // key list shows it as damaged (exit 5) instead of failing.
    let (keys, _) = env.json(5, &["key", "list"]);
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let bad: Vec<_> = keys.iter().filter(|k| k["damaged"] == true).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["id"], other.as_str());
    // key remove removes it; then everything is clean.
    let (removed, _) = env.json(0, &["key", "remove", &other[..8]]);
    assert_eq!(removed["removed"], other.as_str());
    assert_eq!(env.json(0, &["key", "list"]).0.as_array().unwrap().len(), 1);
    assert_eq!(code(&env.run(&["check"])), 0);
}

/// `n` pseudo-random bytes (xorshift64): incompressible, different per seed.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect()
}

#[test]
fn repair_index_salvages_a_truncated_pack() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // Twelve files below the minimum chunk size: one blob each, all in one data pack.
    for i in 0..12 {
        std::fs::write(src.join(format!("f{i:02}")), noise(400_000, i)).unwrap();
    }
    let (snap, _) = env.json(0, &["backup", s(&src)]);
    let id = snap["id"].as_str().unwrap().to_owned();
    let biggest = env
        .objects("data")
        .into_iter()
        .max_by_key(|p| {
            std::fs::metadata(env.repo.join("data").join(p))
                .unwrap()
                .len()
        })
        .unwrap();
    let path = env.repo.join("data").join(&biggest);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

    // Repair keeps what still authenticates and says what is lost.
    let (r, _) = env.json(0, &["repair", "index"]);
    let salvage = &r["salvage"][0];
    assert_eq!(salvage["pack"], biggest.as_str(), "{r}");
    // (Backups fill several data packs at once: the pack holds some of the twelve blobs.)
    let listed = salvage["listed"].as_u64().unwrap();
    let salvaged = salvage["salvaged"].as_u64().unwrap();
    let lost = salvage["lost"].as_array().unwrap().len() as u64;
    assert_eq!(salvaged + lost, listed);
    assert!(salvaged >= 1 && lost >= 1, "{r}");

    // check --read-data names only the lost blobs (one file each), and exits 5.
    let (report, _) = env.json(5, &["check", "--read-data"]);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len() as u64, lost, "{report}");
    for p in problems {
        assert!(
            p["message"].as_str().unwrap().contains("not in the index"),
            "{p}"
        );
    }
    // Every file whose blob survived (in this pack or another) dumps byte for byte; the others
    // fail.
    let mut dumped = 0;
    for i in 0..12 {
        let out = env.run(&["dump", &id, &format!("{}/f{i:02}", s(&src))]);
        if code(&out) == 0 {
            assert_eq!(out.stdout, noise(400_000, i), "f{i:02}");
            dumped += 1;
        }
    }
    assert_eq!(dumped, 12 - lost);
}

#[test]
fn reading_a_missing_repository_creates_nothing_and_a_file_is_refused() {
    let env = Env::new();
    let run = |repo: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cairn-files"))
            .env_remove("CAIRN_REPOSITORY")
            .env("CAIRN_PASSWORD", "pw")
            .env("XDG_CACHE_HOME", env.path("cache"))
            .arg("--repo")
            .arg(repo)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let missing = env.path("missing/repo");
    for args in [
        &["snapshots"][..],
        &["check"],
        &["ls", "latest"],
        &["key", "list"],
    ] {
        let out = run(&missing, args);
        assert_eq!(code(&out), 3, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no Cairn repository"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!env.path("missing").exists());

    let file = env.path("a-file");
    std::fs::write(&file, b"x").unwrap();
    for args in [&["snapshots"][..], &["--kdf-memory-kib", "8", "init"]] {
        let out = run(&file, args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));
    }
    // init creates it.
    let out = run(
        &missing,
        &["--kdf-memory-kib", "8", "--kdf-passes", "1", "init"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&run(&missing, &["snapshots"])), 0);
}

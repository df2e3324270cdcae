//! The `cairn-files` binary end to end against temporary repositories.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

mod common;

use common::{Env, code, stderr};

impl Env {
    fn snapshot_count(&self) -> usize {
        self.json_ok(&["snapshots"]).as_array().unwrap().len()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small tree: a.txt, sub/b.txt, sub/big.bin (300 KiB, several chunks), link -> a.txt.
fn tree(env: &Env) -> PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"hello cairn\n").unwrap();
    std::fs::write(src.join("sub/b.txt"), b"second file\n").unwrap();
    let big: Vec<u8> = (0..300 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("sub/big.bin"), big).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    src
}

#[test]
fn backup_snapshots_ls_dump_find_diff_stats() {
    let env = Env::new();
    let src = tree(&env);
    let out = env.json_ok(&["backup", s(&src), "--tag", "t1", "--host", "h1"]);
    assert_eq!(out["files_new"], 3, "{out}");
    assert_eq!(out["total_bytes"], 12 + 12 + 300 * 1024);
    assert_eq!(out["warnings"].as_array().unwrap().len(), 0);
    assert_eq!(out["exit_code"], 0);
    let id = out["id"].as_str().unwrap().to_owned();

    let snaps = env.json_ok(&["snapshots"]);
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], id.as_str());
    assert_eq!(snaps[0]["host"], "h1");
    assert_eq!(snaps[0]["tags"][0], "t1");
    assert_eq!(snaps[0]["paths"][0], s(&src));
    assert!(snaps[0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        env.json_ok(&["snapshots", "--tag", "nope"]),
        Value::Array(vec![])
    );
    assert_eq!(
        env.json_ok(&["snapshots", "--host", "h1", "--path", s(&src)])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let table = env.ok(&["snapshots"]);
    assert!(table.contains(&id[..8]), "{table}");
    assert!(table.contains("1 snapshot(s)"), "{table}");

    let listing = env.ok(&["ls", "latest", s(&src)]);
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.rsplit(s(&src)).next().unwrap())
        .collect();
    assert_eq!(names, ["/a.txt", "/link -> a.txt", "/sub"], "{listing}");
    let deep = env.json_ok(&["ls", &id[..10], s(&src), "--recursive"]);
    let paths: Vec<&str> = deep
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    let want: Vec<String> = ["/a.txt", "/link", "/sub", "/sub/b.txt", "/sub/big.bin"]
        .iter()
        .map(|p| format!("{}{p}", s(&src)))
        .collect();
    assert_eq!(paths, want);

    let dumped = env.run(&["dump", "latest", s(&src.join("sub/big.bin"))]);
    assert_eq!(code(&dumped), 0);
    assert_eq!(
        dumped.stdout,
        std::fs::read(src.join("sub/big.bin")).unwrap()
    );
    assert_eq!(
        env.ok(&["dump", "latest", s(&src.join("a.txt"))]),
        "hello cairn\n"
    );

    // A second snapshot: one file changed, one added.
    std::fs::write(src.join("a.txt"), b"hello again\n").unwrap();
    std::fs::write(src.join("new.txt"), b"new\n").unwrap();
    let second = env.json_ok(&["backup", s(&src), "--host", "h1"]);
    assert_eq!(second["parent"], id.as_str());
    assert_eq!(second["files_unchanged"], 2);
    let id2 = second["id"].as_str().unwrap().to_owned();

    let found = env.json_ok(&["find", "*.txt"]);
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 2 + 3, "{found:?}");
    assert_eq!(found[0]["snapshot"], id.as_str());
    let only = env.json_ok(&["find", "sub/*.bin", "--snapshot", &id2]);
    assert_eq!(only.as_array().unwrap().len(), 1);

    let d = env.json_ok(&["diff", &id, &id2]);
    let mine: Vec<(String, String)> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["path"].as_str().unwrap().starts_with(s(&src)))
        .map(|c| {
            (
                c["path"].as_str().unwrap()[s(&src).len()..].to_owned(),
                c["change"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("", "modified"),
        ("/a.txt", "modified"),
        ("/new.txt", "added"),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect();
    assert_eq!(mine, want);
    let text = env.ok(&["diff", &id, &id2]);
    assert!(
        text.contains(&format!("+    {}/new.txt", s(&src))),
        "{text}"
    );

    let st = env.json_ok(&["stats"]);
    assert_eq!(st["snapshots"], 2);
    assert_eq!(st["files"], 3 + 4);
    assert_eq!(st["missing_blobs"], 0);
    assert!(st["dedup_ratio"].as_f64().unwrap() > 1.5, "{st}");
    let one = env.json_ok(&["stats", "latest", "--mode", "restore-size"]);
    assert_eq!(one["total_size"], 12 + 12 + 300 * 1024 + 4);
    assert!(one.get("stored_bytes").is_none());
}

#[test]
fn restore_round_trip() {
    let env = Env::new();
    let src = tree(&env);
    env.ok(&["backup", s(&src)]);
    let target = env.path("restored");
    let out = env.json_ok(&["restore", "latest", "--target", s(&target)]);
    assert_eq!(out["files"], 3, "{out}");
    assert_eq!(out["symlinks"], 1);
    assert_eq!(out["errors"].as_array().unwrap().len(), 0);
    let back = target.join(src.strip_prefix("/").unwrap());
    for f in ["a.txt", "sub/b.txt", "sub/big.bin"] {
        assert_eq!(
            std::fs::read(back.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read_link(back.join("link")).unwrap(),
        Path::new("a.txt")
    );
    // Only one path, into a fresh target.
    let partial = env.path("partial");
    let sub = src.join("sub");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        s(&partial),
        "--include",
        s(&sub),
    ]);
    let back = partial.join(src.strip_prefix("/").unwrap());
    assert!(back.join("sub/b.txt").exists());
    assert!(!back.join("a.txt").exists());
    // Not into a non-empty directory without --overwrite.
    let again = env.run(&["restore", "latest", "--target", s(&target)]);
    assert_eq!(code(&again), 7, "{}", stderr(&again));
    env.ok(&["restore", "latest", "--target", s(&target), "--overwrite"]);
}

#[test]
fn streams_from_commands() {
    let env = Env::new();
    let out = env.json_ok(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "dump.sql",
        "--",
        "sh",
        "-c",
        "printf 'create table t;\\n'",
    ]);
    assert_eq!(out["files_new"], 1, "{out}");
    assert_eq!(
        env.ok(&["dump", "latest", "/dump.sql"]),
        "create table t;\n"
    );
    assert_eq!(env.snapshot_count(), 1);

    let failed = env.run(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "dump.sql",
        "--",
        "sh",
        "-c",
        "echo partial; exit 3",
    ]);
    assert_ne!(code(&failed), 0);
    assert!(stderr(&failed).contains("failed"), "{}", stderr(&failed));
    assert_eq!(env.snapshot_count(), 1);

    // Standard input.
    let mut child = env
        .cmd(&["backup", "--stdin", "--stdin-filename", "in.txt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"from stdin").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(env.ok(&["dump", "latest", "/in.txt"]), "from stdin");
}

#[test]
fn exit_codes() {
    let env = Env::new();
    let src = tree(&env);
    // Wrong password: 4.
    let wrong = env
        .cmd(&["snapshots"])
        .env("CAIRN_PASSWORD", "nope")
        .output()
        .unwrap();
    assert_eq!(code(&wrong), 4, "{}", stderr(&wrong));
    // No repository there: 3, also as JSON on stdout.
    let missing = env
        .cmd(&["--json", "snapshots"])
        .arg("--repo")
        .arg(env.path("nothing-here"))
        .output()
        .unwrap();
    assert_eq!(code(&missing), 3, "{}", stderr(&missing));
    let err: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(err["exit_code"], 3);
    // Unknown snapshot: 3. Usage: 2.
    assert_eq!(code(&env.run(&["ls", "deadbeef"])), 3);
    assert_eq!(code(&env.run(&["backup"])), 2);
    assert_eq!(code(&env.run(&["backup", "--stdin", s(&src)])), 2);
    assert_eq!(
        code(&env.run(&["backup", "--exclude-larger-than", "ten", s(&src)])),
        2
    );
    // Already exists: 7.
    assert_eq!(
        code(&env.run(&["--kdf-memory-kib", "8", "--kdf-passes", "1", "init"])),
        7
    );
    let help = env.ok(&["--help"]);
    assert!(help.contains("8  backup: snapshot written but some files could not be read"));

    // A file that cannot be read: the snapshot is written anyway, exit 8. As root, a mode of
    // 000 does not stop reads; /proc/1/mem usually still does (skipped where it does not).
    let secret = src.join("secret");
    std::fs::write(&secret, b"x").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let mut paths = vec![s(&src).to_owned()];
    if std::fs::File::open(&secret).is_ok() {
        std::fs::remove_file(&secret).unwrap();
        if std::fs::File::open("/proc/1/mem").is_ok() {
            eprintln!("every file is readable here: skipping the unreadable-file case");
            return;
        }
        paths.push("/proc/1/mem".into());
    }
    let mut args = vec!["--json", "backup"];
    args.extend(paths.iter().map(String::as_str));
    let out = env.run(&args);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["exit_code"], 8);
    assert_eq!(env.snapshot_count(), 1);
    let text = env.run(&args[1..]);
    assert_eq!(code(&text), 8);
    assert!(
        stderr(&text).contains("snapshot written but 1 file(s) or folder(s) could not be read"),
        "{}",
        stderr(&text)
    );
}

#[test]
fn json_progress_goes_to_stderr() {
    let env = Env::new();
    let src = tree(&env);
    let out = env.run(&["--json", "backup", s(&src)]);
    assert_eq!(code(&out), 0);
    let events: Vec<Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["event"], "start");
    assert_eq!(events.last().unwrap()["event"], "finish");
    assert!(events.iter().any(|e| e["event"] == "progress"));
    // Summary: exactly one JSON object on stdout.
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["id"].is_string());
    // Without a terminal and without --json, only the summary.
    let quiet = env.run(&["backup", s(&src)]);
    assert_eq!(code(&quiet), 0);
    assert!(quiet.stderr.is_empty(), "{}", stderr(&quiet));
    assert!(String::from_utf8_lossy(&quiet.stdout).contains("snapshot "));
}

#[test]
fn check_and_forget() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), vec![7u8; 200_000]).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("b"), b"second").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let report = env.json_ok(&["check", "--read-data"]);
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["packs_read"].as_u64().unwrap() >= 2, "{report}");
    let all = report["packs"].as_u64().unwrap();
    assert_eq!(
        env.json_ok(&["check", "--read-data-subset", "100%"])["packs_read"]
            .as_u64()
            .unwrap(),
        all
    );
    assert_eq!(
        env.json_ok(&["check", "--read-data-subset", "0%"])["packs_read"]
            .as_u64()
            .unwrap(),
        0
    );
    assert!(
        env.json_ok(&["check", "--read-data-subset", "1K"])["packs_read"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let halves: u64 = ["1/2", "2/2"]
        .iter()
        .map(|s| {
            env.json_ok(&["check", "--read-data-subset", s])["packs_read"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(halves, all, "the subsets of 2 cover every pack once");

    // Dry run keeps everything; the real run forgets the older snapshot.
    let plan = env.json_ok(&["forget", "--keep-last", "1", "--dry-run"]);
    let decisions = plan["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions.iter().filter(|d| d["keep"] == false).count(), 1);
    assert_eq!(env.json_ok(&["snapshots"]).as_array().unwrap().len(), 2);
    let done = env.json_ok(&["forget", "--keep-last", "1"]);
    assert_eq!(done["removed"], 1);
    assert_eq!(env.json_ok(&["snapshots"]).as_array().unwrap().len(), 1);
    // A permanent snapshot survives any policy.
    let id = env.json_ok(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tagged = env.json_ok(&["tag", &id, "--add", "permanent"]);
    std::fs::write(src.join("c"), b"third").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["forget", "--keep-last", "1"]);
    let left = env.json_ok(&["snapshots"]);
    assert_eq!(left.as_array().unwrap().len(), 2, "{left}");
    assert!(
        left.as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == tagged["new"])
    );
    // No rule at all is refused rather than forgetting everything.
    assert_eq!(code(&env.run(&["forget"])), 2);

    // A flipped byte in a pack is found and named by check --read-data (exit 5).
    let pack = std::fs::read_dir(env.repo.join("data"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&pack, bytes).unwrap();
    let out = env.run(&["--json", "check", "--read-data"]);
    assert_eq!(code(&out), 5);
    // The report comes first; the error object follows on its own line.
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["object"].as_str().unwrap().contains(name)),
        "{v}"
    );
}

#[test]
fn key_file_opens_without_password() {
    let env = Env::new();
    let src = tree(&env);
    let key = env.path("repo.key");
    let v = env.json_ok(&["key", "export", s(&key)]);
    assert_eq!(v["key_file"], s(&key));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // Never overwritten: 7.
    assert_eq!(code(&env.run(&["key", "export", s(&key)])), 7);

    // Back up and list with the key file alone: no password anywhere.
    let with_key = |args: &[&str]| {
        env.cmd(args)
            .env_remove("CAIRN_PASSWORD")
            .env("CAIRN_KEY_FILE", &key)
            .output()
            .unwrap()
    };
    let out = with_key(&["--json", "backup", s(&src)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = with_key(&["--json", "snapshots"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let snaps: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    // The password opens what the key file wrote.
    assert_eq!(env.snapshot_count(), 1);
    // The last key slot cannot be removed, not even by a handle without a password.
    let keys = env.json_ok(&["key", "list"]);
    let only = keys[0]["id"].as_str().unwrap().to_owned();
    let out = with_key(&["key", "remove", &only]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("last key"), "{}", stderr(&out));
    assert_eq!(env.json_ok(&["key", "list"]).as_array().unwrap().len(), 1);
    // Changing a password needs the password.
    let out = with_key(&["key", "passwd", "--new-password-file", s(&key)]);
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("without a password"),
        "{}",
        stderr(&out)
    );

    // A key file others can read is refused, and so is one for another repository.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = with_key(&["snapshots"]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let other = Env::new();
    let out = other
        .cmd(&["snapshots"])
        .env_remove("CAIRN_PASSWORD")
        .env("CAIRN_KEY_FILE", &key)
        .output()
        .unwrap();
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("does not open"), "{}", stderr(&out));
}

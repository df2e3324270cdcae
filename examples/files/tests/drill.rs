//! `cairn-files drill`: a clean drill exits 0 with the report (RTO, RPO, verdict) and leaves no
//! scratch; `--keep` keeps it; a non-empty `--target` is refused (exit 7); a drill over a
//! repository with a corrupted pack exits 5 and names exactly the files whose data was in it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cairn::format::BlobType;
use cairn::{Repository, open_existing_storage};

mod common;

use common::{Env, code, stderr};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Pseudo-random, incompressible bytes (xorshift64).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

#[test]
fn clean_drill_keep_and_non_empty_target() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::create_dir_all(env.path("tmp")).unwrap();
    std::fs::write(src.join("a"), noise(2_500_000, 1)).unwrap();
    std::fs::write(src.join("d/b"), b"bee").unwrap();
    std::os::unix::fs::symlink("d/b", src.join("link")).unwrap();
    let (snap, _) = env.json(0, &["backup", s(&src)]);

    let (r, _) = env.json(0, &["drill"]);
    assert_eq!(r["verdict"], "ok", "{r}");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["snapshot"], snap["id"]);
    assert_eq!(r["files"], 2, "{r}");
    assert_eq!(r["bytes"], 2_500_003, "{r}");
    assert_eq!(r["symlinks"], 1, "{r}");
    assert!(r["rto_secs"].as_f64().unwrap() > 0.0, "{r}");
    let rpo = r["rpo_secs"].as_f64().unwrap();
    let expected = r["started"].as_f64().unwrap() - r["snapshot_time"].as_f64().unwrap();
    assert!(rpo >= 0.0 && (rpo - expected).abs() < 1e-6, "{r}");
    // The scratch was made in $TMPDIR and removed.
    let scratch = PathBuf::from(r["scratch"].as_str().unwrap());
    assert_eq!(scratch.parent().unwrap(), env.path("tmp"));
    assert!(!scratch.exists());
    assert_eq!(std::fs::read_dir(env.path("tmp")).unwrap().count(), 0);

    // Text: the summary with RTO, RPO and the verdict.
    let out = env.run(&["drill", snap["id"].as_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["RTO ", "RPO ", "verdict           ok", "removed"] {
        assert!(text.contains(want), "{want:?} in {text}");
    }

    // --keep with --target: the restored tree stays.
    let kept = env.path("kept");
    let (r, _) = env.json(0, &["drill", "--random", "--keep", "--target", s(&kept)]);
    assert_eq!(r["kept"], true);
    let restored = kept.join(src.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(restored.join("d/b")).unwrap(), b"bee");

    // A non-empty target is refused (it is `kept` now) and left alone.
    let (e, _) = env.json(7, &["drill", "--target", s(&kept)]);
    assert!(e["error"].as_str().unwrap().contains("not empty"), "{e}");
    assert_eq!(std::fs::read(restored.join("d/b")).unwrap(), b"bee");
}

#[test]
fn corrupted_pack_fails_the_drill_with_exit_5_naming_its_files() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(env.path("tmp")).unwrap();
    std::fs::write(src.join("old-1"), noise(300_000, 1)).unwrap();
    std::fs::write(src.join("old-2"), noise(300_000, 2)).unwrap();
    env.json(0, &["backup", s(&src)]);
    let packs_before = packs(&env);
    // The second backup's data pack holds only the new files' content (the old is deduplicated).
    std::fs::write(src.join("new-1"), noise(200_000, 3)).unwrap();
    std::fs::write(src.join("new-2"), noise(200_000, 4)).unwrap();
    env.json(0, &["backup", s(&src)]);
    corrupt_new_data_packs(&env, &packs_before);

    let (r, err) = env.json(5, &["drill"]);
    assert_eq!(r["verdict"], "failed", "{r}");
    assert_eq!(r["exit_code"], 5);
    let named: BTreeSet<String> = r["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = ["new-1", "new-2"]
        .iter()
        .map(|n| s(&src.join(n)).to_owned())
        .collect();
    assert_eq!(named, expected, "{r}\n{err}");
    assert_eq!(r["files"], 2, "the old files verify: {r}");
    assert_eq!(std::fs::read_dir(env.path("tmp")).unwrap().count(), 0);

    // Text: each file named on standard error, the verdict on standard output.
    let out = env.run(&["drill"]);
    assert_eq!(code(&out), 5);
    let err = stderr(&out);
    for p in &expected {
        assert!(err.contains(&format!("mismatch: {p}: missing")), "{err}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("verdict           FAILED"));
}

/// Every object below the repository's `data/`.
fn packs(env: &Env) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![env.repo.join("data")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p);
            }
        }
    }
    out
}

/// Flips a byte in every data blob of the packs written since `before`.
fn corrupt_new_data_packs(env: &Env, before: &BTreeSet<PathBuf>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = rt.block_on(async {
        Repository::open(open_existing_storage(s(&env.repo)).unwrap(), b"pw")
            .await
            .unwrap()
    });
    let index = rt.block_on(repo.index()).unwrap();
    let index = index.read().unwrap();
    let mut corrupted = 0;
    for (_, at) in index.iter() {
        let path = env.repo.join(cairn::repo::pack_name(&at.pack));
        if at.blob_type != BlobType::Data || before.contains(&path) {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(at.offset + at.stored_len / 2) as usize] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
        corrupted += 1;
    }
    assert!(corrupted > 0);
}

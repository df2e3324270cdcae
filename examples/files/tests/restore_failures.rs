//! `cairn-files restore` when files cannot be written: run under a file size limit
//! (`RLIMIT_FSIZE`, so that writes past it fail with EFBIG, as a full disk fails them with
//! ENOSPC; no root needed), the files that do not fit must be absent, listed, and counted as not
//! restored, the others exact; `--overwrite` must keep what a failed file would replace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cairn_testkit::noise;
use serde_json::Value;

/// The file size limit the restores run under.
const LIMIT: u64 = 300_000;

fn cairn(repo: &Path, limit: Option<u64>, args: &[&str]) -> Output {
    let bin = env!("CARGO_BIN_EXE_cairn-files");
    let mut c = match limit {
        // SIGXFSZ would kill the process at the first write past the limit: ignored (the
        // disposition survives exec), writes fail with EFBIG instead.
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("trap '' XFSZ; exec prlimit --fsize={n} \"$@\""))
                .arg("sh")
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    c.env_remove("CAIRN_REPOSITORY")
        .env_remove("CAIRN_PASSWORD_FILE")
        .env_remove("CAIRN_PASSWORD_COMMAND")
        .env("CAIRN_PASSWORD", "pw")
        .env("XDG_CACHE_HOME", repo.with_extension("cache"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Names below `dir` (recursively) that carry the temporary-file mark.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().contains(".cairn-restore-") {
                out.push(e.path());
            }
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
        }
    }
    out
}

#[test]
fn files_that_cannot_be_written_are_left_out_and_reported() {
    let probe = Command::new("prlimit").arg("--version").output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "prlimit (util-linux) is needed"
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let out = cairn(
        &repo,
        None,
        &["--kdf-memory-kib", "8", "--kdf-passes", "1", "init"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    // Fit: below the limit. Too large: above it (one past 8 MiB, written with O_DIRECT where
    // the file system allows it).
    let mut small = Vec::new();
    let mut large = Vec::new();
    for i in 0..6u64 {
        let p = src
            .join(if i % 2 == 0 { "sub" } else { "" })
            .join(format!("small{i}"));
        std::fs::write(&p, noise(20_000 + i as usize * 40_000, i)).unwrap();
        small.push(p);
    }
    for (i, len) in [400_000usize, 700_000, 1_500_000, 9 << 20]
        .into_iter()
        .enumerate()
    {
        let p = src.join(format!("large{i}"));
        std::fs::write(&p, noise(len, 100 + i as u64)).unwrap();
        large.push(p);
    }
    let out = cairn(&repo, None, &["backup", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let at = |target: &Path, p: &Path| target.join(p.strip_prefix("/").unwrap());

    let target = dir.path().join("out");
    let t = target.to_str().unwrap();
    let out = cairn(&repo, Some(LIMIT), &["restore", "latest", "--target", t]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(5), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("INCOMPLETELY: 6 files") && stdout.contains("NOT restored: 4 files"),
        "{stdout}"
    );
    for p in &small {
        let (got, want) = (at(&target, p), std::fs::metadata(p).unwrap());
        assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(p).unwrap());
        let md = std::fs::metadata(&got).unwrap();
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (want.mtime(), want.mtime_nsec())
        );
    }
    for p in &large {
        let got = at(&target, p);
        assert!(!got.exists(), "{} left at its name", got.display());
        let line = format!("error: {}: not restored", got.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&line) && l.contains("too large")),
            "{line} missing: {stderr}"
        );
    }
    // Failed writes, not only failed creations.
    assert!(stderr.contains("write at offset"), "{stderr}");
    assert_eq!(temporaries(&target), Vec::<PathBuf>::new());

    // The same with --json, over the user's own versions of two large files: kept as they were.
    std::fs::write(at(&target, &large[0]), b"mine").unwrap();
    std::fs::write(at(&target, &large[3]), b"mine too").unwrap();
    let out = cairn(
        &repo,
        Some(LIMIT),
        &["--json", "restore", "latest", "--target", t, "--overwrite"],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 6, "{v}");
    assert_eq!(v["failed_files"], 4, "{v}");
    assert_eq!(v["errors"].as_array().unwrap().len(), 4, "{v}");
    assert_eq!(v["exit_code"], 5, "{v}");
    assert_eq!(std::fs::read(at(&target, &large[0])).unwrap(), b"mine");
    assert_eq!(std::fs::read(at(&target, &large[3])).unwrap(), b"mine too");
    assert!(!at(&target, &large[1]).exists());
    assert_eq!(temporaries(&target), Vec::<PathBuf>::new());

    // Without the limit, the same restore completes and replaces them.
    let out = cairn(
        &repo,
        None,
        &["restore", "latest", "--target", t, "--overwrite"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for p in small.iter().chain(&large) {
        assert_eq!(
            std::fs::read(at(&target, p)).unwrap(),
            std::fs::read(p).unwrap()
        );
    }
}

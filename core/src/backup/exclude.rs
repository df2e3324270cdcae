//! Which paths a backup leaves out.

use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Compiled exclusion rules.
#[derive(Debug, Clone)]
pub struct Excludes {
    by_path: GlobSet,
    by_name: GlobSet,
    if_present: Vec<String>,
    larger_than: Option<u64>,
}

impl Excludes {
    /// Compiles glob patterns. A pattern with a `/` matches the whole absolute path (`/var/cache/**`);
    /// one without matches the file name at any depth (`*.tmp`, `node_modules`). Lines of
    /// exclude files are patterns too; blank lines and lines starting with `#` are ignored.
    pub fn new(
        patterns: &[String],
        exclude_files: &[std::path::PathBuf],
        if_present: &[String],
        larger_than: Option<u64>,
    ) -> Result<Self> {
        let mut all: Vec<String> = patterns.to_vec();
        for f in exclude_files {
            let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
            all.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        let mut by_path = GlobSetBuilder::new();
        let mut by_name = GlobSetBuilder::new();
        for p in &all {
            let glob = Glob::new(p.trim_end_matches('/'))
                .map_err(|e| Error::Invalid(format!("exclude pattern {p:?}: {e}")))?;
            if p.trim_end_matches('/').contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Invalid(format!("exclude patterns: {e}")))
        };
        Ok(Self {
            by_path: build(by_path)?,
            by_name: build(by_name)?,
            if_present: if_present.to_vec(),
            larger_than,
        })
    }

    /// No exclusions.
    pub fn none() -> Self {
        Self {
            by_path: GlobSet::empty(),
            by_name: GlobSet::empty(),
            if_present: Vec::new(),
            larger_than: None,
        }
    }

    /// True when `path` (a file of `size` bytes, or a directory) is excluded by a pattern or by size.
    pub fn excludes(&self, path: &Path, is_file: bool, size: u64) -> bool {
        if is_file && self.larger_than.is_some_and(|max| size > max) {
            return true;
        }
        if self.by_path.is_match(path) {
            return true;
        }
        path.file_name()
            .is_some_and(|n| self.by_name.is_match(Path::new(n)))
    }

    /// True when a directory holds one of the marker files (e.g. `.nobackup`, `CACHEDIR.TAG`).
    pub fn excludes_dir_contents(&self, dir: &Path) -> bool {
        self.if_present.iter().any(|m| dir.join(m).exists())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let e = Excludes::new(
            &[
                "*.tmp".into(),
                "/var/cache/**".into(),
                "node_modules".into(),
            ],
            &[],
            &[],
            Some(10),
        )
        .unwrap();
        assert!(e.excludes(Path::new("/home/a/x.tmp"), true, 1));
        assert!(e.excludes(Path::new("/var/cache/apt/a"), true, 1));
        assert!(e.excludes(Path::new("/src/node_modules"), false, 0));
        assert!(!e.excludes(Path::new("/src/main.rs"), true, 5));
        assert!(e.excludes(Path::new("/src/big"), true, 11));
        assert!(!e.excludes(Path::new("/src/dir"), false, 11));
        assert!(matches!(
            Excludes::new(&["a[".into()], &[], &[], None),
            Err(Error::Invalid(_))
        ));
    }
}

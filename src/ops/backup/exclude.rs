//! Exclude patterns, and the same globs for `lifeboat find` (one matcher for both, so a
//! pattern means the same thing to `backup --exclude` and to `find`).
//!
//! A pattern without `/` matches an entry's file name anywhere in the tree (`*.log`,
//! `node_modules`); a pattern with `/` matches the absolute path (`/var/cache/**`,
//! `/home/*/tmp`), where `*` stays within one path component and `**` crosses components.
//! Lines of an exclude file: one pattern each; blank lines and lines starting with `#` are
//! ignored.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// A compiled set of exclude patterns.
#[derive(Debug, Clone)]
pub struct Excludes {
    by_name: GlobSet,
    by_path: GlobSet,
    empty: bool,
}

impl Excludes {
    /// Compiles patterns; an invalid one is an error naming it.
    pub fn new(patterns: &[String]) -> Result<Self> {
        Self::build(patterns, "exclude pattern", false)
    }

    /// Compiles patterns, `what` naming them in errors ("exclude pattern", "pattern"), matching
    /// letters regardless of case with `ignore_case`.
    pub fn build(patterns: &[String], what: &str, ignore_case: bool) -> Result<Self> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for p in patterns {
            let trimmed = p.trim_end_matches('/');
            let glob = GlobBuilder::new(trimmed)
                .literal_separator(true)
                .backslash_escape(true)
                .case_insensitive(ignore_case)
                .build()
                .map_err(|e| Error::Invalid(format!("{what} {p:?} is invalid: {e}")))?;
            if trimmed.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Invalid(format!("{what}s: {e}")))
        };
        Ok(Excludes {
            by_name: build(by_name)?,
            by_path: build(by_path)?,
            empty: patterns.is_empty(),
        })
    }

    /// Reads patterns from an exclude file.
    pub fn read_file(path: &Path) -> Result<Vec<String>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io("read exclude file", path, e))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect())
    }

    /// Whether the entry at absolute `path` is excluded.
    pub fn is_excluded(&self, path: &Path) -> bool {
        if self.empty {
            return false;
        }
        if let Some(name) = path.file_name() {
            if self.by_name.is_match(Path::new(name)) {
                return true;
            }
        }
        self.by_path.is_match(path)
    }

    /// Whether a pattern without `/` matches the entry name `name` (bytes, as a listing has
    /// it).
    pub fn matches_name(&self, name: &[u8]) -> bool {
        self.by_name.is_match(Path::new(OsStr::from_bytes(name)))
    }

    /// Whether a pattern with `/` matches the absolute path `path` (bytes).
    pub fn matches_path(&self, path: &[u8]) -> bool {
        self.by_path.is_match(Path::new(OsStr::from_bytes(path)))
    }

    /// Whether any pattern has a `/` (so that a match depends on where an entry is, not only
    /// on its name).
    pub fn has_path_patterns(&self) -> bool {
        !self.by_path.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let ex = Excludes::new(&[
            "*.log".into(),
            "cache".into(),
            "/srv/*/tmp".into(),
            "/var/lib/**/skip".into(),
        ])
        .expect("valid");
        assert!(ex.is_excluded(Path::new("/a/b/x.log")));
        assert!(ex.is_excluded(Path::new("/a/cache")));
        assert!(!ex.is_excluded(Path::new("/a/cached")));
        assert!(ex.is_excluded(Path::new("/srv/app/tmp")));
        assert!(!ex.is_excluded(Path::new("/srv/app/x/tmp")));
        assert!(ex.is_excluded(Path::new("/var/lib/a/b/skip")));
        assert!(!ex.is_excluded(Path::new("/a/x.logs")));
        assert!(Excludes::new(&["a[".into()]).is_err());
    }
}

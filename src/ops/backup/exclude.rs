//! Exclude patterns.
//!
//! A pattern without `/` matches an entry's file name anywhere in the tree (`*.log`,
//! `node_modules`); a pattern with `/` matches the absolute path (`/var/cache/**`,
//! `/home/*/tmp`), where `*` stays within one path component and `**` crosses components.
//! Lines of an exclude file: one pattern each; blank lines and lines starting with `#` are
//! ignored.

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
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for p in patterns {
            let trimmed = p.trim_end_matches('/');
            let glob = GlobBuilder::new(trimmed)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Invalid(format!("exclude pattern {p:?} is invalid: {e}")))?;
            if trimmed.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Invalid(format!("exclude patterns: {e}")))
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

//! Where the data files come from, in order:
//! 1. `--data-dir DIR` (given to [`DataLocator::new`]),
//! 2. the environment variable `BURNQ_DATA_DIR`,
//! 3. the cache folder (`artifacts/data/` by convention),
//! 4. a download into the cache, checked against the published content
//!    (feature `download`, on by default; off when the locator is built offline).
//!
//! Each folder holds `mnist/` and `fashion-mnist/`, each with the four standard
//! `*-idx?-ubyte` files, gzip-compressed (`.gz`) or raw.

use std::path::{Path, PathBuf};

use crate::{DataError, DatasetKind};

/// Environment variable naming a folder that holds `mnist/` and `fashion-mnist/`.
pub const DATA_DIR_ENV: &str = "BURNQ_DATA_DIR";

/// Resolves data files through the sources listed in the module docs.
#[derive(Debug, Clone)]
pub struct DataLocator {
    roots: Vec<PathBuf>,
    cache: PathBuf,
    download: bool,
}

impl DataLocator {
    /// A locator looking in `data_dir` (the flag), then `$BURNQ_DATA_DIR`, then `cache`;
    /// downloading into `cache` when `download` is true and the `download` feature is built.
    pub fn new(data_dir: Option<PathBuf>, cache: PathBuf, download: bool) -> Self {
        let env = std::env::var_os(DATA_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Self::from_roots(data_dir.into_iter().chain(env).collect(), cache, download)
    }

    /// A locator searching exactly `roots`, then `cache` (no environment lookup).
    pub fn from_roots(mut roots: Vec<PathBuf>, cache: PathBuf, download: bool) -> Self {
        roots.push(cache.clone());
        Self {
            roots,
            cache,
            download,
        }
    }

    /// The folders searched, in order (the cache last).
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The path of `stem` (e.g. `train-images-idx3-ubyte`) for `kind`, gzip preferred.
    pub fn find(&self, kind: DatasetKind, stem: &str) -> Result<PathBuf, DataError> {
        let mut searched = Vec::new();
        for root in &self.roots {
            for name in [format!("{stem}.gz"), stem.to_owned()] {
                let candidate = root.join(kind.dir_name()).join(name);
                if candidate.is_file() {
                    return Ok(candidate);
                }
                searched.push(candidate.display().to_string());
            }
        }
        self.fetch(kind, stem, searched)
    }

    #[cfg(feature = "download")]
    fn fetch(
        &self,
        kind: DatasetKind,
        stem: &str,
        searched: Vec<String>,
    ) -> Result<PathBuf, DataError> {
        if !self.download {
            return Err(self.not_found(kind, stem, searched, "; downloading is switched off"));
        }
        crate::download::download_into(&self.cache, kind, stem)
    }

    #[cfg(not(feature = "download"))]
    fn fetch(
        &self,
        kind: DatasetKind,
        stem: &str,
        searched: Vec<String>,
    ) -> Result<PathBuf, DataError> {
        let _ = self.download;
        Err(self.not_found(
            kind,
            stem,
            searched,
            "; this build has no downloader (cargo feature `download`)",
        ))
    }

    fn not_found(
        &self,
        kind: DatasetKind,
        stem: &str,
        searched: Vec<String>,
        download_hint: &'static str,
    ) -> DataError {
        DataError::NotFound {
            file: format!("{}/{stem}[.gz]", kind.dir_name()),
            searched: searched.join(", "),
            cache: cache_dir_for(&self.cache, kind),
            download_hint,
        }
    }
}

/// The data folder the test suites use: `$BURNQ_DATA_DIR` when set, else the
/// repository's sibling `../shared/data` (where CI and developers keep the files).
pub fn test_data_dir() -> PathBuf {
    std::env::var_os(DATA_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// A locator for tests: [`test_data_dir`] only, no cache, no download.
pub fn test_locator() -> DataLocator {
    DataLocator::from_roots(Vec::new(), test_data_dir(), false)
}

/// The folder of `kind` inside a root folder.
pub fn cache_dir_for(root: &Path, kind: DatasetKind) -> PathBuf {
    root.join(kind.dir_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_in_order_and_prefers_the_flag() {
        let a = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        for root in [a.path(), cache.path()] {
            std::fs::create_dir_all(root.join("mnist")).unwrap();
            std::fs::write(root.join("mnist/t10k-labels-idx1-ubyte"), b"x").unwrap();
        }
        let loc = DataLocator::from_roots(vec![a.path().into()], cache.path().into(), false);
        assert_eq!(
            loc.find(DatasetKind::Mnist, "t10k-labels-idx1-ubyte")
                .unwrap(),
            a.path().join("mnist/t10k-labels-idx1-ubyte")
        );
        let loc = DataLocator::from_roots(Vec::new(), cache.path().into(), false);
        assert!(loc.roots().last().unwrap() == cache.path());
        assert!(
            loc.find(DatasetKind::Mnist, "t10k-labels-idx1-ubyte")
                .is_ok()
        );
    }

    #[test]
    fn missing_file_names_the_three_ways() {
        let cache = tempfile::tempdir().unwrap();
        let loc = DataLocator::from_roots(vec!["/nonexistent".into()], cache.path().into(), false);
        let err = loc
            .find(DatasetKind::FashionMnist, "train-images-idx3-ubyte")
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::NotFound { .. }));
        for needle in [
            "fashion-mnist/train-images-idx3-ubyte",
            "--data-dir",
            "BURNQ_DATA_DIR",
            "/nonexistent/fashion-mnist",
        ] {
            assert!(msg.contains(needle), "{needle} missing from: {msg}");
        }
    }
}

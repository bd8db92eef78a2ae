//! Download of a missing data file into the cache, checked against the SHA-256 of
//! its *decompressed* content (mirrors recompress; the content is what must match).
//! The file is written to a temporary name and renamed only once verified.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{DataError, DatasetKind, idx};

/// Largest download accepted (the biggest file, train images, is ~10 MB gzipped).
const MAX_DOWNLOAD_BYTES: u64 = 64 << 20;

/// Mirrors, tried in order; the file name `<stem>.gz` is appended.
fn mirrors(kind: DatasetKind) -> &'static [&'static str] {
    match kind {
        DatasetKind::Mnist => &[
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ],
        DatasetKind::FashionMnist => {
            &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
        }
    }
}

/// SHA-256 of the decompressed IDX file, as published (MNIST's match the original MD5s).
pub fn expected_sha256(kind: DatasetKind, stem: &str) -> Option<&'static str> {
    Some(match (kind, stem) {
        (DatasetKind::Mnist, "train-images-idx3-ubyte") => {
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
        }
        (DatasetKind::Mnist, "train-labels-idx1-ubyte") => {
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
        }
        (DatasetKind::Mnist, "t10k-images-idx3-ubyte") => {
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
        }
        (DatasetKind::Mnist, "t10k-labels-idx1-ubyte") => {
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
        }
        (DatasetKind::FashionMnist, "train-images-idx3-ubyte") => {
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
        }
        (DatasetKind::FashionMnist, "train-labels-idx1-ubyte") => {
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
        }
        (DatasetKind::FashionMnist, "t10k-images-idx3-ubyte") => {
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
        }
        (DatasetKind::FashionMnist, "t10k-labels-idx1-ubyte") => {
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
        }
        _ => return None,
    })
}

/// Checks that the file at `path` (gzip or raw) decompresses to the published content.
pub fn verify(path: &Path, kind: DatasetKind, stem: &str) -> Result<(), DataError> {
    let content = idx::read_maybe_gzip(path)?;
    let found = hex(&Sha256::digest(&content));
    let expected = expected_sha256(kind, stem).unwrap_or("(unknown file)");
    if found != expected {
        return Err(DataError::Checksum {
            path: path.to_owned(),
            expected: expected.to_owned(),
            found,
        });
    }
    Ok(())
}

/// Downloads `<stem>.gz` of `kind` into `cache/<kind>/`, verifies it, and returns its path.
pub fn download_into(cache: &Path, kind: DatasetKind, stem: &str) -> Result<PathBuf, DataError> {
    let dir = cache.join(kind.dir_name());
    std::fs::create_dir_all(&dir).map_err(|source| DataError::Io {
        path: dir.clone(),
        source,
    })?;
    let target = dir.join(format!("{stem}.gz"));
    let partial = dir.join(format!("{stem}.gz.partial"));
    let mut failures = Vec::new();
    for base in mirrors(kind) {
        let url = format!("{base}{stem}.gz");
        eprintln!("downloading {url}");
        match fetch(&url).and_then(|bytes| store_verified(&bytes, &partial, &target, kind, stem)) {
            Ok(()) => return Ok(target),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let _ = std::fs::remove_file(&partial);
    Err(DataError::Download {
        url: format!("{}/{stem}.gz", kind.dir_name()),
        message: failures.join("; "),
    })
}

/// Writes `bytes` to `partial`, verifies its content, then renames it to `target`.
fn store_verified(
    bytes: &[u8],
    partial: &Path,
    target: &Path,
    kind: DatasetKind,
    stem: &str,
) -> Result<(), DataError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DataError::Io { path, source }
    };
    std::fs::write(partial, bytes).map_err(io(partial))?;
    verify(partial, kind, stem)?;
    std::fs::rename(partial, target).map_err(io(target))
}

fn fetch(url: &str) -> Result<Vec<u8>, DataError> {
    let err = |message: String| DataError::Download {
        url: url.to_owned(),
        message,
    };
    let response = ureq::get(url).call().map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(MAX_DOWNLOAD_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_a_checksum() {
        for kind in DatasetKind::ALL {
            for split in [crate::Split::Train, crate::Split::Test] {
                assert!(expected_sha256(kind, split.images_file()).is_some());
                assert!(expected_sha256(kind, split.labels_file()).is_some());
            }
        }
    }

    #[test]
    fn store_verified_keeps_good_content_and_nothing_of_bad() {
        let real = crate::locate::test_data_dir().join("mnist/t10k-labels-idx1-ubyte.gz");
        let bytes = std::fs::read(&real)
            .unwrap_or_else(|e| panic!("{}: {e} (set BURNQ_DATA_DIR)", real.display()));
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("x.partial");
        let target = dir.path().join("x.gz");
        let stem = "t10k-labels-idx1-ubyte";
        store_verified(&bytes, &partial, &target, DatasetKind::Mnist, stem).unwrap();
        assert!(target.is_file() && !partial.exists());

        let target2 = dir.path().join("y.gz");
        let mut corrupt = crate::idx::read_maybe_gzip(&real).unwrap();
        corrupt[100] ^= 1;
        let err =
            store_verified(&corrupt, &partial, &target2, DatasetKind::Mnist, stem).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
        assert!(!target2.exists());
        // A label file is not an image file: wrong content for that name.
        assert!(verify(&real, DatasetKind::Mnist, "t10k-images-idx3-ubyte").is_err());
    }

    #[test]
    fn shared_files_match_the_published_checksums() {
        for kind in DatasetKind::ALL {
            for split in [crate::Split::Train, crate::Split::Test] {
                for stem in [split.images_file(), split.labels_file()] {
                    let path = crate::locate::test_data_dir()
                        .join(kind.dir_name())
                        .join(format!("{stem}.gz"));
                    verify(&path, kind, stem).unwrap();
                }
            }
        }
    }
}

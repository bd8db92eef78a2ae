//! The IDX file format of MNIST (LeCun et al.), gzip-compressed or raw.
//!
//! Layout, all integers big-endian: a 4-byte magic number `0x00 0x00 type ndim`
//! (type `0x08` = unsigned byte), then `ndim` u32 dimensions, then the data in
//! row-major order. Images are `0x00000803` (n, rows, cols), labels `0x00000801` (n).
//!
//! The reader never trusts a header to size an allocation: the decompressed bytes
//! are read first (bounded by what the stream really holds) and the header is then
//! checked against them.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::DataError;

/// Magic number of an IDX file of u8 images (3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels (1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Images of one IDX file: `count` images of `rows × cols` u8 pixels, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: u32,
    pub cols: u32,
    pub pixels: Vec<u8>,
}

/// Reads a file whole, inflating it when it starts with the gzip magic bytes.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_owned(),
        source,
    })?;
    if raw.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|source| DataError::Gzip {
                path: path.to_owned(),
                source,
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX image file held in memory; `path` is only used in errors.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages, DataError> {
    let header = parse_header(bytes, path, IMAGES_MAGIC, "images", 3)?;
    let (count, rows, cols) = (header[0], header[1], header[2]);
    if rows != 28 || cols != 28 {
        return Err(DataError::WrongImageSize {
            path: path.to_owned(),
            rows,
            cols,
        });
    }
    let data = check_length(bytes, 16, u64::from(count) * 28 * 28, path)?;
    Ok(IdxImages {
        count: count as usize,
        rows,
        cols,
        pixels: data.to_vec(),
    })
}

/// Parses an IDX label file held in memory and checks every label is a digit class 0..=9.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    let header = parse_header(bytes, path, LABELS_MAGIC, "labels", 1)?;
    let data = check_length(bytes, 8, u64::from(header[0]), path)?;
    if let Some((index, &label)) = data.iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(DataError::BadLabel {
            path: path.to_owned(),
            index,
            label,
        });
    }
    Ok(data.to_vec())
}

/// Reads the magic number and `ndim` big-endian u32 dimensions.
fn parse_header(
    bytes: &[u8],
    path: &Path,
    want: u32,
    expected: &'static str,
    ndim: usize,
) -> Result<Vec<u32>, DataError> {
    let header_len = 4 + 4 * ndim;
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if bytes.len() >= 4 && word(0) != want {
        return Err(DataError::BadMagic {
            path: path.to_owned(),
            expected,
            found: word(0),
            want,
        });
    }
    if bytes.len() < header_len {
        return Err(DataError::WrongLength {
            path: path.to_owned(),
            expected: header_len as u64,
            found: bytes.len() as u64,
        });
    }
    let words: Vec<u32> = (0..=ndim).map(|i| word(4 * i)).collect();
    Ok(words[1..].to_vec())
}

/// Returns the data after the header when its length is exactly `expected` bytes.
fn check_length<'a>(
    bytes: &'a [u8],
    header_len: usize,
    expected: u64,
    path: &Path,
) -> Result<&'a [u8], DataError> {
    let data = &bytes[header_len..];
    if data.len() as u64 != expected {
        return Err(DataError::WrongLength {
            path: path.to_owned(),
            expected,
            found: data.len() as u64,
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn images_file(count: u32, rows: u32, cols: u32, fill: u8) -> Vec<u8> {
        let mut b = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [count, rows, cols] {
            b.extend(d.to_be_bytes());
        }
        b.extend(std::iter::repeat_n(fill, (count * rows * cols) as usize));
        b
    }

    fn labels_file(labels: &[u8]) -> Vec<u8> {
        let mut b = LABELS_MAGIC.to_be_bytes().to_vec();
        b.extend((labels.len() as u32).to_be_bytes());
        b.extend(labels);
        b
    }

    fn p() -> PathBuf {
        PathBuf::from("x-idx3-ubyte")
    }

    #[test]
    fn parses_valid_images_and_labels() {
        let img = parse_images(&images_file(3, 28, 28, 7), &p()).unwrap();
        assert_eq!((img.count, img.rows, img.cols), (3, 28, 28));
        assert_eq!(img.pixels.len(), 3 * 784);
        assert!(img.pixels.iter().all(|&v| v == 7));
        assert_eq!(
            parse_labels(&labels_file(&[0, 9, 4]), &p()).unwrap(),
            vec![0, 9, 4]
        );
    }

    #[test]
    fn rejects_wrong_magic() {
        let err = parse_images(&labels_file(&[1, 2]), &p()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadMagic {
                    found: LABELS_MAGIC,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("x-idx3-ubyte"));
    }

    #[test]
    fn rejects_truncated_and_overlong_data() {
        let mut f = images_file(2, 28, 28, 0);
        f.pop();
        assert!(matches!(
            parse_images(&f, &p()),
            Err(DataError::WrongLength {
                expected: 1568,
                found: 1567,
                ..
            })
        ));
        let mut f = labels_file(&[1, 2]);
        f.push(3);
        assert!(matches!(
            parse_labels(&f, &p()),
            Err(DataError::WrongLength {
                expected: 2,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            parse_images(&[0, 0, 8], &p()),
            Err(DataError::WrongLength { .. })
        ));
    }

    #[test]
    fn forged_count_does_not_allocate() {
        // A header claiming 2^32-1 images over a few bytes of data is refused by length.
        let mut f = images_file(0, 28, 28, 0);
        f[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            parse_images(&f, &p()),
            Err(DataError::WrongLength { .. })
        ));
    }

    #[test]
    fn rejects_wrong_image_size_and_bad_labels() {
        assert!(matches!(
            parse_images(&images_file(1, 32, 32, 0), &p()),
            Err(DataError::WrongImageSize {
                rows: 32,
                cols: 32,
                ..
            })
        ));
        assert!(matches!(
            parse_labels(&labels_file(&[1, 10]), &p()),
            Err(DataError::BadLabel {
                index: 1,
                label: 10,
                ..
            })
        ));
    }

    #[test]
    fn reads_gzip_and_raw_files_and_reports_corrupt_gzip() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let content = labels_file(&[3, 1, 4]);
        let raw = dir.path().join("raw");
        std::fs::write(&raw, &content).unwrap();
        assert_eq!(read_maybe_gzip(&raw).unwrap(), content);

        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&content).unwrap();
        let gz_bytes = enc.finish().unwrap();
        let gz = dir.path().join("f.gz");
        std::fs::write(&gz, &gz_bytes).unwrap();
        assert_eq!(read_maybe_gzip(&gz).unwrap(), content);

        let cut = dir.path().join("cut.gz");
        std::fs::write(&cut, &gz_bytes[..gz_bytes.len() / 2]).unwrap();
        let err = read_maybe_gzip(&cut).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err}");
        assert!(err.to_string().contains("cut.gz"));

        let mut flipped = gz_bytes.clone();
        let mid = flipped.len() - 6; // inside the CRC-32 trailer
        flipped[mid] ^= 0xff;
        let bad = dir.path().join("bad.gz");
        std::fs::write(&bad, &flipped).unwrap();
        assert!(matches!(read_maybe_gzip(&bad), Err(DataError::Gzip { .. })));

        assert!(matches!(
            read_maybe_gzip(&dir.path().join("missing")),
            Err(DataError::Io { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(img) = parse_images(&bytes, &p()) {
                proptest::prop_assert_eq!(img.pixels.len(), img.count * 784);
            }
            if let Ok(labels) = parse_labels(&bytes, &p()) {
                proptest::prop_assert!(labels.iter().all(|&l| l <= 9));
            }
        }
    }
}

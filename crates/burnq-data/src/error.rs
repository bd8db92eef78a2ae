//! Typed errors of the data crate. Every variant names the file it is about.

use std::path::PathBuf;

/// What can go wrong while finding, downloading or parsing a data set file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The gzip stream is corrupt or cut short.
    #[error("{path}: corrupt or truncated gzip data: {source}")]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The IDX header carries the wrong magic number for this kind of file.
    #[error(
        "{path}: not an IDX {expected} file (magic number {found:#010x}, expected {want:#010x})"
    )]
    BadMagic {
        path: PathBuf,
        expected: &'static str,
        found: u32,
        want: u32,
    },
    /// The file is shorter or longer than its header says.
    #[error("{path}: header promises {expected} bytes of data but the file holds {found}")]
    WrongLength {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// Images that are not 28×28.
    #[error("{path}: images are {rows}x{cols}, expected 28x28")]
    WrongImageSize { path: PathBuf, rows: u32, cols: u32 },
    /// A label outside 0..=9.
    #[error("{path}: label {label} at index {index} is outside 0..=9")]
    BadLabel {
        path: PathBuf,
        index: usize,
        label: u8,
    },
    /// Image and label files disagree on the number of items.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        n_images: usize,
        n_labels: usize,
    },
    /// No source had the file.
    #[error(
        "data file {file} not found (looked in: {searched}).\n\
         Provide it in one of three ways:\n  \
         1. pass --data-dir DIR, where DIR holds mnist/ and fashion-mnist/ with the four *-idx?-ubyte[.gz] files each;\n  \
         2. set the environment variable BURNQ_DATA_DIR to such a folder;\n  \
         3. copy the files into {cache}{download_hint}"
    )]
    NotFound {
        file: String,
        searched: String,
        cache: PathBuf,
        download_hint: &'static str,
    },
    /// A downloaded or cached file does not have the published content.
    #[error("{path}: SHA-256 of the decompressed data is {found}, expected {expected}")]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// An image file that is not a readable PGM or PNG.
    #[error("{path}: not a readable image ({message}); burnq reads PGM (P2/P5) and PNG")]
    Image { path: PathBuf, message: String },
    /// The download itself failed.
    #[error("download of {url} failed: {message}")]
    Download { url: String, message: String },
}

//! MNIST and Fashion-MNIST for burnq, with no Burn dependency.
//!
//! - [`idx`] parses the IDX format (gzip-compressed or raw) and validates every header field.
//! - [`dataset`] names the two data sets, their splits and their normalization constants,
//!   and holds a split in memory as raw `u8` pixels ([`ImageSet`]): the float pipeline
//!   normalizes them, the integer engine reads them as they are.
//! - [`digit`] turns any PGM/PNG picture of a digit into a 28×28 MNIST-like image;
//! - [`locate`] finds the files: `--data-dir`, then `BURNQ_DATA_DIR`, then the cache under
//!   `artifacts/data/`, then (feature `download`, on by default) a checked download.

pub mod dataset;
pub mod digit;
#[cfg(feature = "download")]
pub mod download;
pub mod error;
pub mod idx;
pub mod locate;

pub use dataset::{DatasetKind, IMAGE_PIXELS, IMAGE_SIDE, ImageSet, Normalization, Split};
pub use error::DataError;
pub use locate::{DATA_DIR_ENV, DataLocator};

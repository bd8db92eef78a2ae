//! The two data sets, their splits, normalization constants, and a split held in memory.

use std::path::Path;

pub use burnq_arch::Normalization;

use crate::{DataError, DataLocator, idx};

/// Side of a square image, in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels in one image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;

/// Which data set: both are 28×28 grayscale, 10 classes, 60,000 + 10,000 images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
}

/// Which split of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

impl DatasetKind {
    /// All kinds, in a fixed order.
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Mnist, DatasetKind::FashionMnist];

    /// The folder name under a data directory, also used on the command line.
    pub fn dir_name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// Parses a folder name as printed by [`DatasetKind::dir_name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.dir_name() == name)
    }

    /// Mean and standard deviation of `p/255` over the 47,040,000 training pixels.
    ///
    /// MNIST uses the tutorial's rounded constants 0.1307 / 0.3081 (exact values
    /// 0.130660 / 0.308108). Fashion-MNIST's were computed the same way from its
    /// training set: 0.286041 / 0.353024, rounded here to four decimals. A test
    /// recomputes both from the files.
    pub fn normalization(self) -> Normalization {
        match self {
            DatasetKind::Mnist => Normalization::MNIST,
            DatasetKind::FashionMnist => Normalization::FASHION_MNIST,
        }
    }

    /// Human-readable class names, index = label.
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            DatasetKind::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetKind::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
        }
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dir_name())
    }
}

impl Split {
    /// File name stem of the split's images, as in the original distribution.
    pub fn images_file(self) -> &'static str {
        match self {
            Split::Train => "train-images-idx3-ubyte",
            Split::Test => "t10k-images-idx3-ubyte",
        }
    }

    /// File name stem of the split's labels.
    pub fn labels_file(self) -> &'static str {
        match self {
            Split::Train => "train-labels-idx1-ubyte",
            Split::Test => "t10k-labels-idx1-ubyte",
        }
    }

    /// Lower-case name (`train` / `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// One split in memory: `len()` images of 28×28 raw u8 pixels and their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    pub kind: DatasetKind,
    pub split: Split,
    /// `len() × 784` raw pixels, row-major per image.
    pub pixels: Vec<u8>,
    /// One label in 0..=9 per image.
    pub labels: Vec<u8>,
}

impl ImageSet {
    /// Finds and loads a split through `locator` (see [`DataLocator`]).
    pub fn load(locator: &DataLocator, kind: DatasetKind, split: Split) -> Result<Self, DataError> {
        let images = locator.find(kind, split.images_file())?;
        let labels = locator.find(kind, split.labels_file())?;
        Self::from_files(kind, split, &images, &labels)
    }

    /// Loads a split from an image file and a label file (gzip or raw), checking that they agree.
    pub fn from_files(
        kind: DatasetKind,
        split: Split,
        images_path: &Path,
        labels_path: &Path,
    ) -> Result<Self, DataError> {
        let images = idx::parse_images(&idx::read_maybe_gzip(images_path)?, images_path)?;
        let labels = idx::parse_labels(&idx::read_maybe_gzip(labels_path)?, labels_path)?;
        if images.count != labels.len() {
            return Err(DataError::CountMismatch {
                images: images_path.to_owned(),
                labels: labels_path.to_owned(),
                n_images: images.count,
                n_labels: labels.len(),
            });
        }
        Ok(Self {
            kind,
            split,
            pixels: images.pixels,
            labels,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The raw pixels of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        &self.pixels[index * IMAGE_PIXELS..(index + 1) * IMAGE_PIXELS]
    }

    /// Keeps only the first `n` images (no-op when `n >= len()`).
    pub fn truncate(&mut self, n: usize) {
        self.labels.truncate(n);
        self.pixels.truncate(self.labels.len() * IMAGE_PIXELS);
    }
}

//! Burn's view of the data: a [`Dataset`] over an in-memory [`ImageSet`] and a
//! [`Batcher`] that normalizes pixels, `x = (p/255 − mean)/std`, with the data set's
//! constants from `burnq-data` (the one place they are defined).

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::prelude::*;
use burnq_data::{IMAGE_PIXELS, IMAGE_SIDE, ImageSet, Normalization};

/// One image and its label.
#[derive(Debug, Clone)]
pub struct ImageItem {
    /// 784 raw pixels, row-major.
    pub pixels: Vec<u8>,
    /// Class in 0..=9.
    pub label: u8,
}

/// A Burn dataset over a shared [`ImageSet`].
#[derive(Debug, Clone)]
pub struct ImageDataset {
    set: Arc<ImageSet>,
}

impl ImageDataset {
    /// Wraps a loaded split.
    pub fn new(set: Arc<ImageSet>) -> Self {
        Self { set }
    }
}

impl Dataset<ImageItem> for ImageDataset {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        if index >= self.set.len() {
            return Err(DatasetError::new(std::io::Error::other(format!(
                "index {index} out of range for {} images",
                self.set.len()
            ))));
        }
        Ok(ImageItem {
            pixels: self.set.image(index).to_vec(),
            label: self.set.labels[index],
        })
    }

    fn len(&self) -> usize {
        self.set.len()
    }
}

/// A batch: normalized images and their class indices.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// `[n, 1, 28, 28]`.
    pub images: Tensor<4>,
    /// `[n]`, class indices.
    pub targets: Tensor<1, Int>,
}

/// Turns items into an [`ImageBatch`], normalizing pixels.
#[derive(Debug, Clone)]
pub struct ImageBatcher {
    /// `norm.apply(p)` for every byte `p`: looked up, since batching runs on the training
    /// loop's thread while the data-parallel shards wait (two divisions per pixel were 4 % of
    /// a two-thread epoch).
    table: [f32; 256],
}

impl ImageBatcher {
    /// A batcher normalizing with `norm`.
    pub fn new(norm: Normalization) -> Self {
        Self {
            table: std::array::from_fn(|p| norm.apply(p as u8)),
        }
    }

    /// Normalizes raw pixels of `n` images into a `[n, 1, 28, 28]` tensor on `device`.
    pub fn images(&self, pixels: &[u8], device: &Device) -> Tensor<4> {
        let mut values = Vec::with_capacity(pixels.len());
        self.normalize_into(&mut values, pixels);
        self.tensor(values, device)
    }

    /// Appends the normalized `pixels` to `values`.
    fn normalize_into(&self, values: &mut Vec<f32>, pixels: &[u8]) {
        values.extend(pixels.iter().map(|&p| self.table[usize::from(p)]));
    }

    /// Normalized pixels of whole images as a `[n, 1, 28, 28]` tensor on `device`.
    fn tensor(&self, values: Vec<f32>, device: &Device) -> Tensor<4> {
        let n = values.len() / IMAGE_PIXELS;
        Tensor::from_data(
            TensorData::new(values, [n, 1, IMAGE_SIDE, IMAGE_SIDE]),
            device,
        )
    }
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let mut values = Vec::with_capacity(items.len() * IMAGE_PIXELS);
        for item in &items {
            self.normalize_into(&mut values, &item.pixels);
        }
        let targets: Vec<i64> = items.iter().map(|i| i64::from(i.label)).collect();
        let n = targets.len();
        ImageBatch {
            images: self.tensor(values, device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
        }
    }
}

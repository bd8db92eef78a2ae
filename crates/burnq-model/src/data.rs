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
    norm: Normalization,
}

impl ImageBatcher {
    /// A batcher normalizing with `norm`.
    pub fn new(norm: Normalization) -> Self {
        Self { norm }
    }

    /// Normalizes raw pixels of `n` images into a `[n, 1, 28, 28]` tensor on `device`.
    pub fn images(&self, pixels: &[u8], device: &Device) -> Tensor<4> {
        let n = pixels.len() / IMAGE_PIXELS;
        let values: Vec<f32> = pixels.iter().map(|&p| self.norm.apply(p)).collect();
        Tensor::from_data(
            TensorData::new(values, [n, 1, IMAGE_SIDE, IMAGE_SIDE]),
            device,
        )
    }
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let pixels: Vec<u8> = items
            .iter()
            .flat_map(|i| i.pixels.iter().copied())
            .collect();
        let targets: Vec<i64> = items.iter().map(|i| i64::from(i.label)).collect();
        let n = targets.len();
        ImageBatch {
            images: self.images(&pixels, device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
        }
    }
}

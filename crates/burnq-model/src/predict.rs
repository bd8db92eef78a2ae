//! A ready-to-run float model on one device, for callers that must not speak Burn
//! (the benchmark, the report): raw u8 pixels in, predicted classes out.

use burn::module::Quantizer;
use burn::prelude::*;
use burn::tensor::quantization::{Calibration, QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burnq_data::Normalization;

use crate::Net;
use crate::data::ImageBatcher;

/// A float model, its device and its input normalization.
#[derive(Debug, Clone)]
pub struct Predictor {
    model: Net,
    device: Device,
    batcher: ImageBatcher,
}

impl Predictor {
    /// Wraps `model` (moved to inference mode) for `device`.
    pub fn new(model: &Net, device: Device, norm: Normalization) -> Self {
        Self {
            model: model.valid().to_device(&device),
            device,
            batcher: ImageBatcher::new(norm),
        }
    }

    /// The same model with its weights quantized by Burn's own [`Quantizer`]: symmetric
    /// signed 8-bit (`Q8S`, values in [−127, 127]), one f32 scale per tensor from the
    /// tensor's min/max. Burn dequantizes to f32 to compute: it is a storage format, not
    /// integer arithmetic; activations stay float.
    pub fn burn_q8_weights(&self) -> Self {
        let scheme = QuantScheme::default()
            .with_value(QuantValue::Q8S)
            .with_store(QuantStore::Native)
            .per_tensor(ScaleDtype::F32);
        let mut quantizer = Quantizer::new(Calibration::MinMax, scheme);
        Self {
            model: self.model.clone().quantize_weights(&mut quantizer),
            ..self.clone()
        }
    }

    /// Class probabilities (softmax) of each image in `pixels`, `[n × classes]` row-major.
    pub fn probabilities(&self, pixels: &[u8]) -> Vec<f32> {
        let logp = self
            .model
            .forward(self.batcher.images(pixels, &self.device));
        logp.exp()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 data converts to f32")
    }

    /// The predicted class of each image in `pixels` (`n × 784` raw bytes), computed as
    /// one batch; returns only once the device has finished.
    pub fn predict(&self, pixels: &[u8]) -> Vec<u8> {
        let logp = self
            .model
            .forward(self.batcher.images(pixels, &self.device));
        logp.argmax(1)
            .into_data()
            .iter::<i64>()
            .map(|p| p as u8)
            .collect()
    }
}
